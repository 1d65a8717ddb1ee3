"""Reading DICOM files: a header-only index of what is there, and full readers for RT objects.

A planning-system export folder holds a few RT objects among hundreds of image slices, so
indexing reads as little as it can: the file meta of every file (enough to recognise and
skip an image), and only the top-level header tags course assembly needs for RT objects.
Full reads happen later, for the files of one course, and turn datasets into the course
model of :mod:`rtcheck.course`. Contour coordinates are parsed from the raw element bytes
with numpy, because letting pydicom build one DS object per coordinate is the slow part
of loading a structure set (measured: about 1 s per 600 k coordinates).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from .course import (
    BeamDose,
    Contour,
    DoseFile,
    DoseReference,
    FractionGroup,
    Plan,
    Prescription,
    Roi,
    SourceFile,
    StructureSet,
)
from .durable import file_sha256
from .encoded import (
    CONTOUR_DATA,
    CONTOUR_GEOMETRIC_TYPE,
    CONTOUR_SEQUENCE,
    REFERENCED_ROI_NUMBER,
    EncodedItem,
    decimal_string,
    encoded_roi_contours,
    integer_string,
)
from .errors import InputError
from .wellformed import MalformedDataset, check_well_formed, data_set_start, inflate

#: SOP classes rtcheck assembles, by the modality they stand for.
RT_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",  # RT Plan Storage
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",  # RT Ion Plan Storage
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",  # RT Dose Storage
}

#: Top-level tags course assembly needs; everything else is skipped when indexing.
_INDEX_TAGS = [
    Tag(k)
    for k in (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "Modality",
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "InstitutionName",
        "RTPlanLabel",
        "RTPlanDate",
        "RTPlanTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "ReferencedStructureSetSequence",
        "ReferencedRTPlanSequence",
        "DoseSummationType",
    )
]


@dataclass(frozen=True)
class IndexedFile:
    """What indexing learnt about one DICOM file from its header."""

    path: Path
    modality: str  # RTPLAN, RTSTRUCT, RTDOSE, or OTHER for anything rtcheck does not assemble
    sop_class_uid: str
    sop_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    institution_name: str = ""
    plan_label: str = ""
    #: When the object was made (RTPlanDate/Time, else InstanceCreationDate/Time), as
    #: "YYYYMMDDHHMMSS.ffffff" text that sorts in time order; empty when the file does not say.
    created: str = ""
    referenced_structure_set_uid: str = ""
    referenced_plan_uids: tuple[str, ...] = ()
    summation_type: str = ""


@dataclass(frozen=True)
class UnreadableFile:
    """A file that could not be indexed, and why (one line, for people)."""

    path: Path
    problem: str


@dataclass
class Index:
    """The outcome of indexing: RT objects, how many other DICOM files were skipped, and failures."""

    files: list[IndexedFile] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    skipped: int = 0
    not_dicom: int = 0


def iter_candidate_files(
    paths: Iterable[Path], unreadable: list[UnreadableFile] | None = None
) -> Iterator[tuple[Path, bool]]:
    """Yield ``(file, explicit)`` for each file given or found below a given folder.

    ``explicit`` is True for files named on the command line, whose problems are errors;
    files found in folders that are not DICOM are skipped silently (exports hold notes,
    thumbnails, DICOMDIRs). Hidden files and folders are ignored; order is deterministic.

    A folder that cannot be listed, and a symbolic link to a folder (not followed: links
    can loop), may hide a plan, so each is appended to ``unreadable`` (when given) instead
    of being passed over in silence: a re-plan nobody can see must not let the old plan pass.
    """

    def cannot_list(exc: OSError) -> None:
        if unreadable is not None:
            where = Path(exc.filename) if exc.filename else Path(".")
            unreadable.append(UnreadableFile(where, f"cannot list this folder ({exc.strerror or exc})"))

    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path, onerror=cannot_list):
                visible = sorted(d for d in dirs if not d.startswith("."))
                dirs[:] = [d for d in visible if not os.path.islink(os.path.join(root, d))]
                if unreadable is not None:
                    unreadable.extend(
                        UnreadableFile(Path(root) / d, "a symbolic link to a folder, not followed")
                        for d in visible
                        if d not in dirs
                    )
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name, False
        elif path.exists() or path.is_symlink():
            yield path, True
        else:
            raise InputError(path, "no such file or folder")


def index_paths(paths: Iterable[Path]) -> Index:
    """Index the DICOM files below ``paths`` header-only.

    Raises :class:`InputError` only for a path that does not exist or for an explicitly
    named file that is not DICOM; everything else is recorded in the index, including
    folders that could not be listed.
    """
    unreadable: list[UnreadableFile] = []
    index = _index(iter_candidate_files(paths, unreadable))
    index.unreadable.extend(unreadable)
    return index


def index_files(files: Iterable[Path]) -> Index:
    """Index files found in folders: none is an error, each problem is recorded in the index."""
    return _index((path, False) for path in files)


def _index(candidates: Iterable[tuple[Path, bool]]) -> Index:
    index = Index()
    for path, explicit in candidates:
        try:
            entry = index_file(path)
        except InputError as exc:
            if explicit:
                raise
            if exc.problem == NOT_DICOM:
                index.not_dicom += 1
            else:
                index.unreadable.append(UnreadableFile(path, exc.problem))
            continue
        if entry.modality == "OTHER":
            index.skipped += 1
        else:
            index.files.append(entry)
    return index


NOT_DICOM = "not a DICOM file (no DICM preamble and no readable DICOM header)"


def index_file(path: Path) -> IndexedFile:
    """Index one file: file meta first, the RT header only when the SOP class is an RT one.

    A file that cannot be opened (no permission, a dangling or looping link) and anything
    that is not a regular file (a FIFO would block the read forever) raise
    :class:`InputError`: the caller records them, since such a file may be a plan.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError(path, "not a regular file (a FIFO, socket or device), not read")
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputError(path, f"cannot open ({exc.strerror or exc})") from exc
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
        sop_uid = str(meta.get("MediaStorageSOPInstanceUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, AttributeError):
        meta = None
        sop_class = sop_uid = ""
    if meta is not None and sop_class and sop_class not in RT_SOP_CLASSES:
        return IndexedFile(path, "OTHER", sop_class, sop_uid)
    try:
        ds = pydicom.dcmread(path, force=meta is None, specific_tags=_INDEX_TAGS)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise InputError(path, f"cannot read DICOM header ({_short(exc)})") from exc
    sop_class = str(ds.get("SOPClassUID", sop_class))
    if not sop_class:
        raise InputError(path, NOT_DICOM)
    modality = RT_SOP_CLASSES.get(sop_class, "OTHER")
    sop_uid = str(ds.get("SOPInstanceUID", sop_uid))
    if modality == "OTHER":
        return IndexedFile(path, "OTHER", sop_class, sop_uid)
    if not sop_uid:
        raise InputError(path, "SOPInstanceUID (0008,0018) is missing")
    return IndexedFile(
        path=path,
        modality=modality,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_uid,
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        institution_name=str(ds.get("InstitutionName", "") or ""),
        plan_label=str(ds.get("RTPlanLabel", "") or ""),
        created=_created(ds),
        referenced_structure_set_uid=_first_ref(ds, "ReferencedStructureSetSequence"),
        referenced_plan_uids=tuple(
            str(item.get("ReferencedSOPInstanceUID", ""))
            for item in ds.get("ReferencedRTPlanSequence", [])
            if item.get("ReferencedSOPInstanceUID")
        ),
        summation_type=str(ds.get("DoseSummationType", "") or ""),
    )


def _created(ds: Dataset) -> str:
    for date_kw, time_kw in (("RTPlanDate", "RTPlanTime"), ("InstanceCreationDate", "InstanceCreationTime")):
        date = str(ds.get(date_kw, "") or "").strip()
        if date:
            return date + str(ds.get(time_kw, "") or "").strip().ljust(6, "0")
    return ""


def _first_ref(ds: Dataset, keyword: str) -> str:
    seq = ds.get(keyword)
    if not seq:
        return ""
    return str(seq[0].get("ReferencedSOPInstanceUID", "") or "")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


@dataclass(frozen=True)
class ReadFile:
    """A whole DICOM file, read once: its dataset and the SHA-256 of its bytes."""

    path: Path
    dataset: Dataset
    sha256: str


def read_file(path: Path) -> ReadFile:
    """Read a whole file once: parse its dataset and hash its bytes from the same read.

    Every failure becomes a one-line :class:`InputError`. pydicom returns a shortened
    dataset, without complaint, for a file cut inside a sequence or inside the pixel data,
    so the bytes are walked too (:func:`check_whole`).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise InputError(path, f"truncated or corrupt DICOM ({_short(exc)})") from exc
    if "SOPClassUID" not in ds:
        raise InputError(path, NOT_DICOM)
    check_whole(path, data, ds)
    return ReadFile(path, ds, hashlib.sha256(data).hexdigest())


def read_dataset(path: Path) -> Dataset:
    """The dataset of :func:`read_file`."""
    return read_file(path).dataset


#: What a deflated file may inflate to: far above any RT object, far below a deflate bomb.
_INFLATE_LIMIT = 4 << 30


def check_whole(path: Path, data: bytes, ds: Dataset) -> None:
    """Raise :class:`InputError` when the file's data set is cut short or malformed.

    ``ds`` is the file as pydicom read it, which says how the data set is encoded.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    implicit, little = ds.original_encoding
    body = memoryview(data)[data_set_start(data) :]
    try:
        if syntax is not None and UID(syntax).is_deflated:
            check_well_formed(inflate(body, _INFLATE_LIMIT), implicit_vr=False)
        else:
            check_well_formed(body, implicit_vr=bool(implicit), little_endian=little is not False)
    except MalformedDataset as exc:
        raise InputError(path, f"truncated or corrupt DICOM ({exc})") from exc


def source_file(path: Path, ds: Dataset, modality: str, sha256: str | None = None) -> SourceFile:
    """The file a model object was read from; ``sha256`` when its bytes were hashed already."""
    return SourceFile(
        path=path,
        modality=modality,
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sha256=sha256 or file_sha256(path),
    )


def plan_from_dataset(path: Path, ds: Dataset, sha256: str | None = None) -> Plan:
    """Build the course model of an RT (Ion) Plan, with each fraction group's prescription."""
    dose_refs = tuple(
        DoseReference(
            number=integer_string(item.get("DoseReferenceNumber")) or 0,
            structure_type=str(item.get("DoseReferenceStructureType", "") or "") or None,
            dose_reference_type=str(item.get("DoseReferenceType", "") or "") or None,
            description=str(item.get("DoseReferenceDescription", "") or ""),
            referenced_roi_number=integer_string(item.get("ReferencedROINumber")),
            target_prescription_dose_gy=decimal_string(item.get("TargetPrescriptionDose")),
            delivery_maximum_dose_gy=decimal_string(item.get("DeliveryMaximumDose")),
        )
        for item in ds.get("DoseReferenceSequence", [])
    )
    groups = []
    fg_seq = ds.get("FractionGroupSequence", [])
    for fg in fg_seq:
        ref_numbers = []
        ref_target_total = None
        for ref in fg.get("ReferencedDoseReferenceSequence", []):
            number = integer_string(ref.get("ReferencedDoseReferenceNumber"))
            if number is not None:
                ref_numbers.append(number)
            dose = decimal_string(ref.get("TargetPrescriptionDose"))
            if dose is not None:
                ref_target_total = max(dose, ref_target_total or 0.0)
        beam_doses = tuple(
            BeamDose(
                beam_number=integer_string(b.get("ReferencedBeamNumber")) or 0,
                dose_gy=decimal_string(b.get("BeamDose")),
                meaning=str(b.get("BeamDoseMeaning", "") or "") or None,
            )
            for b in fg.get("ReferencedBeamSequence", [])
        )
        group = FractionGroup(
            number=integer_string(fg.get("FractionGroupNumber")) or 0,
            fractions_planned=integer_string(fg.get("NumberOfFractionsPlanned")),
            beam_doses=beam_doses,
            referenced_dose_reference_numbers=tuple(ref_numbers),
            referenced_target_prescription_gy=ref_target_total,
        )
        group.prescription = resolve_prescription(group, dose_refs, single_group=len(fg_seq) == 1)
        groups.append(group)
    ref_ss = _first_ref(ds, "ReferencedStructureSetSequence")
    return Plan(
        source=source_file(path, ds, "RTPLAN", sha256),
        label=str(ds.get("RTPlanLabel", "") or ""),
        name=str(ds.get("RTPlanName", "") or ""),
        description=str(ds.get("RTPlanDescription", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        referenced_structure_set_uid=ref_ss or None,
        fraction_groups=tuple(groups),
        dose_references=dose_refs,
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
    )


def resolve_prescription(
    group: FractionGroup, dose_refs: tuple[DoseReference, ...], *, single_group: bool
) -> Prescription | None:
    """The fraction group's prescribed dose per fraction, walking the fallback chain.

    Real exports differ in where they put the prescription, so rtcheck looks, in order,
    at (1) the TARGET items of the DoseReferenceSequence that this fraction group
    references (all of them when the plan has a single fraction group), (2) the fraction
    group's own ReferencedDoseReferenceSequence target dose, and (3) the sum of the beam
    doses (BeamDose is per fraction). Target doses are totals over the fraction group's
    fractions, as planning systems write them. Several targets: the highest prescription
    is the group's (the others are lower-dose targets of the same group).
    """
    n = group.fractions_planned
    if not n or n <= 0:
        return None
    wanted = set(group.referenced_dose_reference_numbers)
    targets = [
        r
        for r in dose_refs
        if r.target_prescription_dose_gy is not None
        and (r.dose_reference_type in (None, "TARGET"))
        and (r.number in wanted or (single_group and not wanted))
    ]
    if targets:
        top = max(targets, key=lambda r: r.target_prescription_dose_gy or 0.0)
        total = float(top.target_prescription_dose_gy or 0.0)
        numbers = ", ".join(str(r.number) for r in targets)
        return Prescription(
            total / n,
            total,
            "dose_reference",
            f"TargetPrescriptionDose {total:g} Gy of DoseReference {top.number}"
            f" (highest of dose references {numbers}) / {n} fractions",
        )
    if group.referenced_target_prescription_gy is not None:
        total = group.referenced_target_prescription_gy
        return Prescription(
            total / n,
            total,
            "fraction_group_dose_reference",
            f"fraction group {group.number} ReferencedDoseReferenceSequence "
            f"TargetPrescriptionDose {total:g} Gy / {n} fractions",
        )
    beam = [b.dose_gy for b in group.beam_doses if b.dose_gy is not None]
    if beam:
        per_fx = float(sum(beam))
        return Prescription(
            per_fx,
            per_fx * n,
            "beam_dose",
            f"sum of {len(beam)} BeamDose values of fraction group {group.number} = {per_fx:g} Gy per fraction",
        )
    return None


def contour_points(item: Dataset) -> np.ndarray:
    """ContourData of one contour item as an (N, 3) float64 array, parsed with numpy.

    Raises ValueError when the value count is not a multiple of three.
    """
    raw = item.get_item(CONTOUR_DATA)
    if raw is None:
        return np.empty((0, 3))
    value = raw.value
    if value is None:
        return np.empty((0, 3))
    if isinstance(value, bytes | bytearray):
        return encoded_contour_points(bytes(value))
    # already converted by pydicom (e.g. a dataset built in memory)
    flat = np.asarray(value if isinstance(value, list | tuple) else [value], dtype=np.float64)
    return _triples(flat)


def encoded_contour_points(value: bytes) -> np.ndarray:
    """ContourData as encoded (decimal strings separated by backslashes) as an (N, 3) array."""
    text = value.strip(b" \x00")
    if not text:
        return np.empty((0, 3))
    return _triples(np.array(text.split(b"\\"), dtype=np.float64))


def _triples(flat: np.ndarray) -> np.ndarray:
    if flat.size % 3:
        raise ValueError(f"ContourData holds {flat.size} values, not a multiple of 3")
    return flat.reshape(-1, 3)


def structure_set_from_dataset(
    path: Path, ds: Dataset, sha256: str | None = None, contours: list[EncodedItem] | None = None
) -> StructureSet:
    """Build the course model of an RT Structure Set (contours as numpy arrays).

    ``contours`` are the ROI Contour Sequence's items as :func:`roi_contour_items` read
    them, when the caller has them already; otherwise they are read here.
    """
    names: dict[int, tuple[str, str | None]] = {}
    for item in ds.get("StructureSetROISequence", []):
        number = integer_string(item.get("ROINumber"))
        if number is not None:
            names[number] = (
                str(item.get("ROIName", "") or ""),
                str(item.get("ReferencedFrameOfReferenceUID", "") or "") or None,
            )
    interpreted: dict[int, str | None] = {}
    for item in ds.get("RTROIObservationsSequence", []):
        number = integer_string(item.get("ReferencedROINumber"))
        if number is not None:
            interpreted[number] = str(item.get("RTROIInterpretedType", "") or "").strip() or None
    by_roi = _roi_contours(path, ds, contours if contours is not None else roi_contour_items(path, ds))
    rois = {
        number: Roi(
            number=number,
            name=name,
            interpreted_type=interpreted.get(number),
            contours=tuple(by_roi.get(number, ())),
            frame_of_reference_uid=for_uid,
        )
        for number, (name, for_uid) in names.items()
    }
    for_uids = [
        str(item.get("FrameOfReferenceUID", ""))
        for item in ds.get("ReferencedFrameOfReferenceSequence", [])
        if item.get("FrameOfReferenceUID")
    ]
    return StructureSet(
        source=source_file(path, ds, "RTSTRUCT", sha256),
        frame_of_reference_uid=for_uids[0] if for_uids else None,
        rois=rois,
        label=str(ds.get("StructureSetLabel", "") or ""),
    )


def roi_contour_items(path: Path, ds: Dataset) -> list[EncodedItem] | None:
    """The ROI Contour Sequence's items read from its bytes, or None where pydicom holds it
    parsed (:func:`rtcheck.encoded.encoded_roi_contours`); bytes that are not a
    sequence of items are an :class:`InputError` naming the file."""
    try:
        return encoded_roi_contours(ds)
    except MalformedDataset as exc:
        raise InputError(path, f"ROIContourSequence: {exc}") from exc


def _roi_contours(path: Path, ds: Dataset, encoded: list[EncodedItem] | None) -> dict[int, list[Contour]]:
    """Each ROI's contours, from the encoded items when there are any, else from pydicom's."""
    contours: dict[int, list[Contour]] = {}
    if encoded is not None:
        for roi in encoded:
            number = integer_string(roi.value(REFERENCED_ROI_NUMBER))
            if number is None:
                continue
            out = contours.setdefault(number, [])
            for c in roi.items(CONTOUR_SEQUENCE):
                try:
                    out.append(
                        Contour(c.text(CONTOUR_GEOMETRIC_TYPE), encoded_contour_points(c.value(CONTOUR_DATA) or b""))
                    )
                except ValueError as exc:
                    raise InputError(path, f"ROI {number}: {exc}") from exc
        return contours
    for item in ds.get("ROIContourSequence", []):
        number = integer_string(item.get("ReferencedROINumber"))
        if number is None:
            continue
        out = contours.setdefault(number, [])
        for c in item.get("ContourSequence", []):
            try:
                pts = contour_points(c)
            except ValueError as exc:
                raise InputError(path, f"ROI {number}: {exc}") from exc
            out.append(Contour(str(c.get("ContourGeometricType", "") or ""), pts))
    return contours


def dose_header_from_dataset(path: Path, ds: Dataset, sha256: str | None = None) -> DoseFile:
    """Build the header-only course model of an RT Dose object."""
    plan_uids: list[str] = []
    groups: list[int] = []
    beams: list[int] = []
    for ref in ds.get("ReferencedRTPlanSequence", []):
        uid = str(ref.get("ReferencedSOPInstanceUID", "") or "")
        if uid:
            plan_uids.append(uid)
        for fg in ref.get("ReferencedFractionGroupSequence", []):
            number = integer_string(fg.get("ReferencedFractionGroupNumber"))
            if number is not None:
                groups.append(number)
            for beam in fg.get("ReferencedBeamSequence", []):
                b = integer_string(beam.get("ReferencedBeamNumber"))
                if b is not None:
                    beams.append(b)
    return DoseFile(
        source=source_file(path, ds, "RTDOSE", sha256),
        summation_type=str(ds.get("DoseSummationType", "") or "") or None,
        units=str(ds.get("DoseUnits", "") or "") or None,
        dose_type=str(ds.get("DoseType", "") or "") or None,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        referenced_plan_uids=tuple(plan_uids),
        referenced_fraction_group_numbers=tuple(groups),
        referenced_beam_numbers=tuple(beams),
    )


def is_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID."""
    return bool(value) and UID(value).is_valid
