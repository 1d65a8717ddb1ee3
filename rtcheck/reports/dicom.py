"""The compliance report back into the patient's record: an Encapsulated PDF Storage object.

The PDF of :mod:`rtcheck.reports.pdf` is wrapped in an Encapsulated PDF instance
(SOP class 1.2.840.10008.5.1.4.1.1.104.1) that a PACS or the planning system's archive files
next to the plan it judges:

* Patient and General Study modules copied from the checked RT Plan (PatientName,
  PatientID, PatientBirthDate, PatientSex, StudyInstanceUID, StudyDate/Time, StudyID,
  AccessionNumber, ReferringPhysicianName), so the report lands in the plan's study;
* a new series of its own (Modality DOC) and a new SOP Instance UID on every write;
* the Encapsulated Document module's SourceInstanceSequence lists every object the report
  was derived from (the plans, the structure set, the doses), by SOP class and instance UID:
  that is how the standard says which instances a document was made from;
* DocumentTitle carries the verdict, VerificationFlag is UNVERIFIED (no person has signed
  the report), BurnedInAnnotation is YES (the PDF names the patient);
* EncapsulatedDocumentLength holds the PDF's byte count: the value is padded to an even
  length as DICOM requires, and the length gives the PDF back exactly.

Dates and times are the report's creation time in UTC, with TimezoneOffsetFromUTC +0000.

:func:`findings_sr` writes the same findings as a Basic Text SR (one TEXT item per rule,
under the verdict), for archives and viewers that index structured reports; its evidence
(CurrentRequestedProcedureEvidenceSequence) is the same set of plans, structure set and
doses, grouped by study and series as the SR Document General module requires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .._version import __version__
from ..errors import InputError
from ..report import Report
from .figures import Figures
from .pdf import render_pdf
from .text import format_limits, format_value

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"
#: Concepts of the SR (DICOM's own DCM codes, PS3.16 Annex D).
_CODES = {
    "report": ("121070", "DCM", "Findings"),
    "verdict": ("121076", "DCM", "Conclusion"),
    "protocol": ("121106", "DCM", "Comment"),
    "arm": ("121106", "DCM", "Comment"),
    "finding": ("121071", "DCM", "Finding"),
}
#: Series number of rtcheck's report series (a number the planning system's series rarely use).
SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "rtcheck protocol compliance report"

#: Copied from the plan: Patient module, then General Study module.
_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
_STUDY = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
#: Type 2 attributes of those modules: present even when the plan lacks them (then empty).
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


def filed_under(report: Report) -> str | None:
    """The SOP Instance UID of the plan whose patient and study a DICOM report copies: the
    report's first RT Plan (None when it lists none)."""
    return next((f.sop_instance_uid for f in report.files if f.modality == "RTPLAN"), None)


def plan_dataset(report: Report) -> Dataset:
    """The header of the report's first RT Plan, read from its file (the patient and study source).

    A caller that still has the plan as it was read for the check passes that instead
    (see :func:`filed_under`), so the plan is not read a second time.
    """
    plans = [f for f in report.files if f.modality == "RTPLAN"]
    if not plans:
        raise InputError(None, "the report lists no RTPLAN file: no patient or study to file the report under")
    path = Path(plans[0].path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise InputError(path, f"cannot read the plan to copy its patient and study: {exc}") from exc


def encapsulate_pdf(report: Report, pdf: bytes, plan: Dataset | None = None) -> Dataset:
    """An Encapsulated PDF Storage dataset (with file meta) of ``pdf``, filed under the plan's
    patient and study (``plan`` defaults to :func:`plan_dataset`)."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("the document to encapsulate is not a PDF (it does not start with %PDF-)")
    plan = plan_dataset(report) if plan is None else plan
    created = _created(report)
    ds = _document_header(report, plan)
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = generate_uid()
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    # SC Equipment
    ds.ConversionType = "WSD"
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate = created.strftime("%Y%m%d")
    ds.ContentTime = created.strftime("%H%M%S")
    ds.AcquisitionDateTime = created.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    ds.DocumentTitle = f"rtcheck {report.protocol.name}: {report.verdict.label}"[:64]
    ds.ConceptNameCodeSequence = []
    ds.VerificationFlag = "UNVERIFIED"
    sources = [(f.sop_class_uid, f.sop_instance_uid) for f in report.files]
    if not sources and plan.get("SOPInstanceUID"):  # a report of an incomplete course lists no files
        sources = [(str(plan.SOPClassUID), str(plan.SOPInstanceUID))]
    if sources:
        ds.SourceInstanceSequence = [_reference(*source) for source in sources]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.file_meta = _file_meta(ds)
    return ds


def _document_header(report: Report, plan: Dataset) -> Dataset:
    """What every rtcheck document shares: the plan's patient and study, rtcheck as the
    equipment, and the SOP Common creation time."""
    if not plan.get("StudyInstanceUID"):
        raise InputError(None, "the plan has no StudyInstanceUID: the report cannot be filed in its study")
    created = _created(report)
    ds = Dataset()
    text = [str(plan.get(k, "")) for k in _PATIENT + _STUDY]
    if not all(t.isascii() for t in text):
        ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in _PATIENT + _STUDY:
        if keyword in plan and plan[keyword].value not in (None, ""):
            setattr(ds, keyword, plan[keyword].value)
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.InstanceCreationTime = created.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.Manufacturer = "rtcheck"
    ds.SoftwareVersions = __version__
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = f"RTCHECK_{__version__}"[:16]
    return meta


def write_dicom(report: Report, figures: Figures | None, path: Path | str, plan: Dataset | None = None) -> Path:
    """Render the report as PDF, encapsulate it (:func:`encapsulate_pdf`) and save it at ``path``."""
    path = Path(path)
    ds = encapsulate_pdf(report, render_pdf(report, figures), plan)
    ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated_pdf(ds: Dataset) -> bytes:
    """The PDF bytes of an Encapsulated PDF dataset, without the padding byte."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return data[: int(length)] if length is not None else data


def findings_sr(report: Report, plan: Dataset | None = None) -> Dataset:
    """A Basic Text SR of the report's findings (with file meta), in the plan's study, in
    a new series: the verdict, protocol and arm, then one TEXT item per rule."""
    plan = plan_dataset(report) if plan is None else plan
    created = _created(report)
    ds = _document_header(report, plan)
    ds.SpecificCharacterSet = "ISO_IR 192"  # findings quote limits such as "≥ 10 mm"
    ds.SOPClassUID = BASIC_TEXT_SR_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER + 1
    ds.SeriesDescription = "rtcheck protocol compliance findings"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = created.strftime("%Y%m%d")
    ds.ContentTime = created.strftime("%H%M%S")
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(report, plan)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("report")]
    ds.ContinuityOfContent = "SEPARATE"
    arm = report.arm.arm or "none detected"
    items = [
        _text("verdict", report.verdict.label),
        _text(
            "protocol", f"protocol {report.protocol.name} v{report.protocol.version} (sha256 {report.protocol.sha256})"
        ),
        _text("arm", f"arm {arm}" + (" (given)" if report.arm.overridden else " (detected)")),
    ]
    for rule in report.rules:
        measured = format_value(rule.value, rule.unit)
        limits = format_limits(rule.per_protocol, rule.unit)
        items.append(
            _text(
                "finding",
                f"{rule.id}: {rule.status.label}; measured {measured} (per protocol {limits}); {rule.message}",
            )
        )
    ds.ContentSequence = items
    ds.file_meta = _file_meta(ds)
    return ds


def write_findings_sr(report: Report, path: Path | str, plan: Dataset | None = None) -> Path:
    """Save :func:`findings_sr` at ``path``."""
    path = Path(path)
    findings_sr(report, plan).save_as(path, enforce_file_format=True)
    return path


def _code(key: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = _CODES[key]
    return item


def _text(key: str, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(key)]
    item.TextValue = value
    return item


def _evidence(report: Report, plan: Dataset) -> list[Dataset]:
    """The report's input objects by study and series (read from their files' headers)."""
    series: dict[tuple[str, str], list[tuple[str, str]]] = {}
    headers: list[Dataset] = []
    for f in report.files:
        try:
            headers.append(
                pydicom.dcmread(
                    f.path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID"]
                )
            )
        except (OSError, InvalidDicomError) as exc:
            raise InputError(f.path, f"cannot read it to reference it as evidence: {exc}") from exc
    pairs = [(f.sop_class_uid, f.sop_instance_uid) for f in report.files]
    if not pairs:
        headers, pairs = [plan], [(str(plan.SOPClassUID), str(plan.SOPInstanceUID))]
    for header, pair in zip(headers, pairs, strict=True):
        key = (str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", "")))
        series.setdefault(key, []).append(pair)
    studies: dict[str, list[Dataset]] = {}
    for (study_uid, series_uid), refs in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = [_reference(*ref) for ref in refs]
        studies.setdefault(study_uid, []).append(item)
    out = []
    for study_uid, items in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = items
        out.append(study)
    return out


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _created(report: Report) -> datetime:
    """The report's creation time in UTC (now, if the report's timestamp cannot be read)."""
    try:
        created = datetime.fromisoformat(report.created)
    except ValueError:
        created = datetime.now().astimezone()
    if created.tzinfo is None:
        created = created.astimezone()
    return created.astimezone(UTC)
