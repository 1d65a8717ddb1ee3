"""DICOM-RT integrity: is what rtcheck reads there, consistent and sane?

Two layers, both before any protocol rule:

* Conformance: Type 1 and Type 2 attributes of the IOD's modules, taken from the tables of
  the DICOM standard that highdicom generates from the standard; the RT IODs' part ships
  with rtcheck (:mod:`rtcheck.standard_tables`), so the check works
  offline, on a hospital machine without internet, and nothing is typed by hand. Mandatory
  modules are always checked; user/conditional modules when their top-level attributes are
  present; nested sequences whenever they are present.
* RT sanity of what rtcheck uses: dose units, type, summation, scaling, grid offsets,
  fraction numbers, contour geometry, and references between the objects of a course.

A finding is an ``error`` when it touches an attribute rtcheck relies on (the rules that
need it become not evaluable) and a ``warning`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from . import standard_tables
from .course import Course, StructureSet
from .encoded import (
    CONTOUR_DATA,
    CONTOUR_SEQUENCE,
    NUMBER_OF_CONTOUR_POINTS,
    REFERENCED_ROI_NUMBER,
    ROI_CONTOUR_SEQUENCE,
    EncodedItem,
    decimal_string,
    encoded_items,
    frame_count,
    integer_string,
)
from .planes import COPLANAR_TOLERANCE_MM, ContourPlane, contour_plane, on_axial_planes
from .report import IntegrityFinding
from .wellformed import MalformedDataset

#: Attributes rtcheck reads: a conformance problem with one of these is an error.
USED_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "PatientID",
        "FrameOfReferenceUID",
        "FractionGroupSequence",
        "FractionGroupNumber",
        "NumberOfFractionsPlanned",
        "ReferencedStructureSetSequence",
        "ReferencedSOPInstanceUID",
        "StructureSetROISequence",
        "ROINumber",
        "ROIName",
        "ROIContourSequence",
        "ReferencedROINumber",
        "ContourSequence",
        "ContourGeometricType",
        "NumberOfContourPoints",
        "ContourData",
        "RTROIObservationsSequence",
        "DoseUnits",
        "DoseType",
        "DoseSummationType",
        "DoseGridScaling",
        "GridFrameOffsetVector",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "ReferencedRTPlanSequence",
        "ReferencedFractionGroupSequence",
        "ReferencedFractionGroupNumber",
    }
)

_IOD_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.481.5": "rt-plan",
    "1.2.840.10008.5.1.4.1.1.481.8": "rt-ion-plan",
    "1.2.840.10008.5.1.4.1.1.481.3": "rt-structure-set",
    "1.2.840.10008.5.1.4.1.1.481.2": "rt-dose",
}

DOSE_UNITS = {"GY", "RELATIVE"}
DOSE_TYPES = {"PHYSICAL", "EFFECTIVE", "ERROR"}
SUMMATION_TYPES = {
    "PLAN",
    "MULTI_PLAN",
    "PLAN_OVERVIEW",
    "FRACTION",
    "BEAM",
    "BRACHY",
    "FRACTION_SESSION",
    "BEAM_SESSION",
    "BRACHY_SESSION",
    "CONTROL_POINT",
    "RECORD",
}
GEOMETRIC_TYPES = {"POINT", "OPEN_PLANAR", "OPEN_NONPLANAR", "CLOSED_PLANAR", "CLOSEDPLANAR_XOR"}
_PLANAR_TYPES = frozenset({"OPEN_PLANAR", "CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})


def _tag_text(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else ""


class _Findings:
    """Collects findings of one file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.items: list[IntegrityFinding] = []

    def add(self, keyword: str, message: str, *, error: bool | None = None) -> None:
        severity = "error" if (error if error is not None else keyword in USED_KEYWORDS) else "warning"
        self.items.append(
            IntegrityFinding(
                severity=severity, file=self.path, keyword=keyword, tag=_tag_text(keyword), message=message
            )
        )


def conformance(path: Path, ds: Dataset, contours: list[EncodedItem] | None = None) -> list[IntegrityFinding]:
    """Type 1/2 presence (and Type 1 non-emptiness) per the standard's module tables.

    ``contours`` are a structure set's ROI Contour Sequence items read from their bytes
    (:func:`rtcheck.dicomio.roi_contour_items`): they are checked as they are, rather than
    through one pydicom dataset per contour.
    """
    out = _Findings(path)
    iod = _IOD_BY_SOP_CLASS.get(str(ds.get("SOPClassUID", "")))
    if iod is None:
        return []
    for module in standard_tables.load()["iods"][iod]:
        levels = _levels(module["key"])
        present = module["usage"] == "M" or any(
            a.tag is not None and a.tag in ds for a in levels.get((), ()) if a.type == "1"
        )
        if present:
            _check_level(_DatasetLevel(ds, contours), levels, (), module["key"], out)
    return out.items


@dataclass(frozen=True)
class _Attribute:
    """One Type 1 or 2 attribute of a module table, with what checking it needs looked up once."""

    keyword: str
    tag: int | None  # None: a keyword pydicom does not know (never present in a dataset)
    type: str
    is_sequence: bool
    is_text: bool


@cache
def _levels(module: str) -> dict[tuple[str, ...], list[_Attribute]]:
    """A module's attributes by the sequence path they sit in (table order kept).

    A structure set holds thousands of contour items: looking up each item's attributes
    by its path, rather than filtering the whole table per item, keeps the check cheap.
    The tables hold only what can give a finding (Type 1 and 2 attributes, and sequences
    whose items are checked in turn), so no item is asked for anything else.
    """
    levels: dict[tuple[str, ...], list[_Attribute]] = {}
    for attr in standard_tables.load()["modules"].get(module, []):
        tag = tag_for_keyword(attr["keyword"])
        vr = dictionary_VR(tag) if tag is not None else ""
        levels.setdefault(tuple(attr["path"]), []).append(
            _Attribute(attr["keyword"], tag, attr["type"], vr == "SQ", vr in _TEXT_VRS)
        )
    return levels


class _DatasetLevel:
    """A pydicom dataset as :func:`_check_level` reads it; at the top level of a structure
    set, the ROI Contour Sequence's items may come from its bytes instead."""

    def __init__(self, ds: Dataset, contours: list[EncodedItem] | None = None) -> None:
        self.ds, self.contours = ds, contours

    def element(self, attr: _Attribute) -> tuple[bool, bool, list[_DatasetLevel | EncodedItem]]:
        """Whether the attribute is present, whether it is empty, and its items if a sequence."""
        # get_item returns the raw element: converting values (e.g. every ContourData
        # coordinate into a DS object) only to see whether they are empty costs seconds.
        raw = self.ds.get_item(attr.tag) if attr.tag is not None else None
        if raw is None or attr.tag is None:
            return False, True, []
        if attr.is_sequence:
            items: list[_DatasetLevel | EncodedItem]
            if attr.tag == ROI_CONTOUR_SEQUENCE and self.contours is not None:
                items = list(self.contours)
            else:
                encoded = _encoded_items(self.ds, attr.tag)
                if encoded is not None:
                    items = list(encoded)
                else:
                    items = [_DatasetLevel(item) for item in self.ds[attr.tag].value or []]
            return True, not items, items
        return True, _is_empty(getattr(raw, "value", None), attr), []


def _encoded_items(ds: Dataset, tag: int) -> list[EncodedItem] | None:
    """A sequence's items from its bytes where pydicom kept them (a plan's control points,
    a structure set's contours: one pydicom dataset per item would cost most of the check);
    None where pydicom holds the sequence parsed, or its bytes are not items (pydicom then
    says what it makes of them)."""
    try:
        return encoded_items(ds, tag)
    except MalformedDataset:
        return None


def _encoded_element(item: EncodedItem, attr: _Attribute) -> tuple[bool, bool, list[_DatasetLevel | EncodedItem]]:
    """:meth:`_DatasetLevel.element` of an item read from its bytes."""
    if attr.tag is None or attr.tag not in item:
        return False, True, []
    if attr.is_sequence:
        items: list[_DatasetLevel | EncodedItem] = list(item.items(attr.tag))
        return True, not items, items
    return True, _is_empty(item.value(attr.tag), attr), []


def _check_level(
    level: _DatasetLevel | EncodedItem,
    levels: dict[tuple[str, ...], list[_Attribute]],
    path: tuple[str, ...],
    module: str,
    out: _Findings,
) -> None:
    where = " > ".join(path)
    for attr in levels.get(path, ()):
        present, empty, items = (
            level.element(attr) if isinstance(level, _DatasetLevel) else _encoded_element(level, attr)
        )
        if not present:
            if attr.type in ("1", "2"):
                inside = f" in {where}" if where else ""
                out.add(attr.keyword, f"Type {attr.type} attribute {attr.keyword} is missing{inside} (module {module})")
            continue
        if attr.type == "1" and empty:
            out.add(attr.keyword, f"Type 1 attribute {attr.keyword} is empty (module {module})")
        for item in items:
            _check_level(item, levels, (*path, attr.keyword), module, out)


_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


def _is_empty(value: object, attr: _Attribute) -> bool:
    if isinstance(value, bytes):
        # Text values are padded with spaces (UIDs with NUL); binary ones only empty if zero-length.
        return not value.strip(b" \x00") if attr.is_text else not value
    if isinstance(value, str):
        return not value.strip()
    return value is None


def plan_sanity(path: Path, ds: Dataset) -> list[IntegrityFinding]:
    out = _Findings(path)
    groups = ds.get("FractionGroupSequence")
    if not groups:
        out.add("FractionGroupSequence", "plan has no fraction group: fractionation cannot be read", error=True)
        return out.items
    numbers = []
    for fg in groups:
        number = fg.get("FractionGroupNumber")
        if integer_string(number) is None:
            out.add("FractionGroupNumber", f"fraction group number {str(number)!r} is not an integer")
        numbers.append(str(number))  # as written: a value with several numbers is not hashable
        n = fg.get("NumberOfFractionsPlanned")
        if (integer_string(n) or 0) <= 0:  # absent, empty, not an integer, or not positive
            out.add("NumberOfFractionsPlanned", f"fraction group {number}: NumberOfFractionsPlanned is {n!r}")
    if len(set(numbers)) != len(numbers):
        out.add("FractionGroupNumber", f"fraction group numbers are not unique: {numbers}")
    if not ds.get("ReferencedStructureSetSequence"):
        out.add("ReferencedStructureSetSequence", "plan references no structure set")
    return out.items


def structure_sanity(
    path: Path, ds: Dataset, ss: StructureSet, contours: list[EncodedItem] | None = None
) -> list[IntegrityFinding]:
    """Contour geometry, declared point counts and ROI references of a structure set
    (``contours``: its ROI Contour Sequence items read from their bytes, if at hand)."""
    out = _Findings(path)
    tilted: dict[str, ContourPlane] = {}
    for roi in ss.rois.values():
        # A contour on one axial plane is coplanar and axial: only the others need a plane fit.
        axial = on_axial_planes([c.points for c in roi.contours])
        for i, contour in enumerate(roi.contours):
            gt = contour.geometric_type
            label = f"ROI {roi.name!r} contour {i + 1}"
            if gt not in GEOMETRIC_TYPES:
                out.add("ContourGeometricType", f"{label}: unknown ContourGeometricType {gt!r}")
                continue
            pts = contour.points
            if gt in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR") and len(pts) < 3:
                out.add("ContourData", f"{label}: closed contour with {len(pts)} point(s) (at least 3 needed)")
            plane = contour_plane(pts) if gt in _PLANAR_TYPES and len(pts) and not axial[i] else None
            if plane is not None and plane.deviation_mm > COPLANAR_TOLERANCE_MM:
                out.add(
                    "ContourData",
                    f"{label}: planar contour is not coplanar (a point lies {plane.deviation_mm:.2f} mm off"
                    " its best plane)",
                )
            elif plane is not None and not plane.is_axial and gt in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR"):
                tilted.setdefault(roi.name, plane)
    for roi_number, declared, count in _point_counts(ds, contours):
        if count != 3 * declared:
            out.add(
                "NumberOfContourPoints",
                f"ROI {roi_number}: NumberOfContourPoints {declared} but ContourData holds {count} values",
            )
    if tilted:
        first = next(iter(tilted.values()))
        names = ", ".join(tilted)
        # Valid DICOM, stated once: the rules that measure these structures say they cannot.
        out.add(
            "ContourData",
            f"closed contours of {len(tilted)} ROI(s) ({names}) lie on tilted planes ({first.describe()}):"
            " rtcheck measures structures drawn on axial planes only",
            error=False,
        )
    known = set(ss.rois)
    for item in ds.get("RTROIObservationsSequence", []):
        ref = item.get("ReferencedROINumber")
        if ref is None:
            continue
        number = integer_string(ref)
        if number is None:
            out.add("ReferencedROINumber", f"RT ROI observation references ROI number {str(ref)!r}, not an integer")
        elif number not in known:
            out.add("ReferencedROINumber", f"RT ROI observation references unknown ROI number {ref}")
    for ref in _contour_roi_numbers(ds, contours):
        if ref not in known:
            out.add("ReferencedROINumber", f"ROI contour references unknown ROI number {ref}")
    return out.items


def _point_counts(ds: Dataset, contours: list[EncodedItem] | None) -> Iterator[tuple[object, int, int]]:
    """(ROI number, declared NumberOfContourPoints, values in ContourData) of each contour
    that has both."""
    if contours is not None:
        for roi in contours:
            for c in roi.items(CONTOUR_SEQUENCE):
                declared, data = _declared_points(c.value(NUMBER_OF_CONTOUR_POINTS)), c.value(CONTOUR_DATA)
                if declared is not None and data is not None:
                    yield roi.text(REFERENCED_ROI_NUMBER), declared, _value_count(data)
        return
    for item in ds.get("ROIContourSequence", []):
        for c in item.get("ContourSequence", []):
            raw = c.get_item(NUMBER_OF_CONTOUR_POINTS)
            declared = _declared_points(raw.value if raw is not None else None)
            data = c.get_item(CONTOUR_DATA)
            if declared is None or data is None:
                continue
            value = data.value
            count = _value_count(value) if isinstance(value, bytes) or value is None else len(c.ContourData)
            yield item.get("ReferencedROINumber"), declared, count


def _value_count(encoded: bytes | None) -> int:
    """How many values a multi-valued string element holds, as encoded (none when empty)."""
    return encoded.count(b"\\") + 1 if encoded and encoded.strip(b" \x00") else 0


def _contour_roi_numbers(ds: Dataset, contours: list[EncodedItem] | None) -> Iterator[int]:
    """The ReferencedROINumber of each ROI Contour Sequence item that has one."""
    if contours is not None:
        texts: Iterable[object] = (roi.text(REFERENCED_ROI_NUMBER) for roi in contours)
    else:
        texts = (item.get("ReferencedROINumber") for item in ds.get("ROIContourSequence", []))
    for text in texts:
        number = integer_string(text)
        if number is not None:
            yield number


def _declared_points(value: object) -> int | None:
    """NumberOfContourPoints, encoded or as pydicom converted it.

    The usual value, a few digits as encoded, is parsed directly: pydicom's conversion of
    thousands of IS values costs more than the rest of the contour checks together.
    Anything else goes through :func:`~rtcheck.encoded.integer_string`.
    """
    if isinstance(value, bytes):
        digits = value.strip(b" \x00")
        if len(digits) <= 9 and digits.isdigit():
            return int(digits)
    return integer_string(value)


def dose_sanity(path: Path, ds: Dataset) -> list[IntegrityFinding]:
    out = _Findings(path)
    units = str(ds.get("DoseUnits", "") or "")
    if units not in DOSE_UNITS:
        out.add("DoseUnits", f"DoseUnits {units!r} is not GY or RELATIVE")
    elif units == "RELATIVE":
        out.add("DoseUnits", "DoseUnits RELATIVE: not an absolute dose, dose rules cannot use it")
    dose_type = str(ds.get("DoseType", "") or "")
    if dose_type not in DOSE_TYPES:
        out.add("DoseType", f"DoseType {dose_type!r} is not one of {sorted(DOSE_TYPES)}")
    elif dose_type == "ERROR":
        out.add("DoseType", "DoseType ERROR: this grid is a dose difference, not a dose")
    summation = str(ds.get("DoseSummationType", "") or "")
    if summation not in SUMMATION_TYPES:
        out.add("DoseSummationType", f"DoseSummationType {summation!r} is not a defined term")
    scaling = ds.get("DoseGridScaling")
    if "PixelData" in ds and not (decimal_string(scaling) or 0.0) > 0:  # absent, not a number, or not positive
        out.add("DoseGridScaling", f"DoseGridScaling is {scaling!r}: pixel values cannot be turned into dose")
    frames = frame_count(ds)
    if frames is None:
        out.add("NumberOfFrames", f"NumberOfFrames is {str(ds.get('NumberOfFrames'))!r}, not an integer")
        frames = 1
    declared_offsets = ds.get("GridFrameOffsetVector")
    offsets = _decimals(declared_offsets)
    if frames > 1:
        if offsets is None or len(offsets) != frames:
            n = (
                "absent"
                if declared_offsets in (None, "")
                else "not numbers"
                if offsets is None
                else f"{len(offsets)} value(s)"
            )
            out.add("GridFrameOffsetVector", f"GridFrameOffsetVector is {n} for {frames} frames")
        elif not (np.all(np.diff(offsets) > 0) or np.all(np.diff(offsets) < 0)):
            out.add("GridFrameOffsetVector", "GridFrameOffsetVector is not strictly monotonic")
    if summation == "FRACTION" and not any(
        ref.get("ReferencedFractionGroupSequence") for ref in ds.get("ReferencedRTPlanSequence", [])
    ):
        out.add(
            "ReferencedFractionGroupSequence",
            "DoseSummationType FRACTION without ReferencedFractionGroupSequence: which fraction group?",
        )
    if not ds.get("ReferencedRTPlanSequence") and summation not in ("", "RECORD"):
        out.add("ReferencedRTPlanSequence", "dose references no plan")
    return out.items


def _error(path: Path, keyword: str, message: str) -> IntegrityFinding:
    return IntegrityFinding(severity="error", file=str(path), keyword=keyword, tag=_tag_text(keyword), message=message)


def course_consistency(course: Course) -> list[IntegrityFinding]:
    """Cross-object checks: frames of reference, and references from plans into the structure set."""
    items: list[IntegrityFinding] = []
    ss = course.structure_set
    if ss is None:
        return items
    ss_for = ss.frame_of_reference_uid
    for dose in course.doses:
        if ss_for and dose.frame_of_reference_uid and dose.frame_of_reference_uid != ss_for:
            message = (
                f"dose frame of reference {dose.frame_of_reference_uid} differs from the structure set's "
                f"{ss_for}: dose and structures are not in the same coordinates"
            )
            items.append(_error(dose.source.path, "FrameOfReferenceUID", message))
    for plan in course.plans:
        if ss_for and plan.frame_of_reference_uid and plan.frame_of_reference_uid != ss_for:
            message = f"plan frame of reference {plan.frame_of_reference_uid} differs from the structure set's"
            message += f" {ss_for}"
            items.append(_error(plan.source.path, "FrameOfReferenceUID", message))
        for ref in plan.dose_references:
            if ref.referenced_roi_number is not None and ref.referenced_roi_number not in ss.rois:
                message = (
                    f"dose reference {ref.number} targets ROI number {ref.referenced_roi_number}, "
                    "which the structure set does not have"
                )
                items.append(_error(plan.source.path, "ReferencedROINumber", message))
    return items


def _decimals(value: object) -> np.ndarray | None:
    """A DS value of one or several numbers as floats; None when absent or not all numbers."""
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]
    try:
        return np.asarray(items, dtype=float)
    except (TypeError, ValueError):
        return None
