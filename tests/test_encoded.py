"""Contours read from the ROI Contour Sequence's bytes are the contours pydicom reads, and
are checked the same way.

The structure set is re-encoded the ways planning systems write it (implicit and explicit
VR, big endian, items and nested sequences of undefined length) and each encoding is read
twice: through the bytes (:mod:`rtcheck.encoded`) and through pydicom's datasets. The
course model and the integrity findings must agree.
"""

from __future__ import annotations

import io
import lzma
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rtcheck.course import StructureSet
from rtcheck.dicomio import roi_contour_items, structure_set_from_dataset
from rtcheck.encoded import encoded_items, encoded_roi_contours
from rtcheck.errors import InputError
from rtcheck.integrity import conformance, structure_sanity

REAL = Path(__file__).parent / "fixtures" / "real"


def _encode(ds: Dataset, syntax: pydicom.uid.UID) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    pydicom.dcmwrite(
        out, ds, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian, force_encoding=True
    )
    return out.getvalue()


def _read(path: Path, ds: Dataset) -> tuple[StructureSet, list[str]]:
    """The structure set and its integrity findings, as the course reader makes them."""
    contours = roi_contour_items(path, ds)
    ss = structure_set_from_dataset(path, ds, None, contours)
    findings = conformance(path, ds, contours) + structure_sanity(path, ds, ss, contours)
    return ss, [f"{f.severity} {f.keyword}: {f.message}" for f in findings]


def _both_ways(path: Path, data: bytes) -> tuple[StructureSet, StructureSet]:
    """The structure set read through the encoded bytes, and through pydicom's datasets;
    their integrity findings are required to be the same."""
    ds = pydicom.dcmread(io.BytesIO(data))
    assert encoded_roi_contours(ds) is not None  # the bytes path is taken
    through_bytes, bytes_findings = _read(path, ds)
    parsed = pydicom.dcmread(io.BytesIO(data))
    _ = parsed.ROIContourSequence  # parsed by pydicom: the dataset path is taken
    assert encoded_roi_contours(parsed) is None
    through_datasets, dataset_findings = _read(path, parsed)
    assert bytes_findings == dataset_findings
    return through_bytes, through_datasets


def _assert_same(a: StructureSet, b: StructureSet) -> int:
    assert a.rois.keys() == b.rois.keys()
    count = 0
    for number, roi in a.rois.items():
        other = b.rois[number].contours
        assert len(roi.contours) == len(other)
        for x, y in zip(roi.contours, other, strict=True):
            assert x.geometric_type == y.geometric_type
            assert np.array_equal(x.points, y.points)
            count += 1
    return count


def _undefined_lengths(ds: Dataset) -> None:
    """Contour Sequences and their items of undefined length, inside ROI Contour items of
    defined length (what pydicom keeps as bytes)."""
    for roi in ds.ROIContourSequence:
        roi["ContourSequence"].is_undefined_length = True
        for contour in roi.ContourSequence:
            contour.is_undefined_length_sequence_item = True


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_every_encoding_gives_the_contours_pydicom_reads(course_dir, syntax, undefined: bool) -> None:
    path = course_dir("compliant") / "RS.dcm"
    ds = pydicom.dcmread(path)
    if undefined:
        _undefined_lengths(ds)
    a, b = _both_ways(path, _encode(ds, syntax))
    assert _assert_same(a, b) == sum(len(r.contours) for r in b.rois.values()) > 100


def test_faulty_contour_items_give_the_same_findings_both_ways(course_dir, tmp_path: Path) -> None:
    path = course_dir("compliant") / "RS.dcm"
    ds = pydicom.dcmread(path)
    first, second, third = (roi.ContourSequence for roi in ds.ROIContourSequence[:3])
    first[0].NumberOfContourPoints = int(first[0].NumberOfContourPoints) + 1  # a count that lies
    del second[0].ContourGeometricType  # Type 1 missing
    third[0].ContourData = []  # Type 1 empty (and no points)
    ds.ROIContourSequence[3].ReferencedROINumber = 999  # references no ROI
    out = tmp_path / "RS.dcm"
    ds.save_as(out)
    data = out.read_bytes()
    through_bytes, _ = _both_ways(out, data)
    _, findings = _read(out, pydicom.dcmread(io.BytesIO(data)))
    wanted = (
        "NumberOfContourPoints",
        "ContourGeometricType is missing in ROIContourSequence > ContourSequence",
        "ContourData is empty",
        "unknown ROI number 999",
    )
    for text in wanted:
        assert any(text in f for f in findings), (text, findings)
    assert 999 not in through_bytes.rois


def test_a_sequence_pydicom_parsed_while_reading_is_read_from_its_datasets(course_dir) -> None:
    path = course_dir("compliant") / "RS.dcm"
    ds = pydicom.dcmread(path)
    ds["ROIContourSequence"].is_undefined_length = True
    reread = pydicom.dcmread(io.BytesIO(_encode(ds, ExplicitVRLittleEndian)))
    assert encoded_roi_contours(reread) is None
    expected = structure_set_from_dataset(path, pydicom.dcmread(path))
    assert _assert_same(structure_set_from_dataset(path, reread), expected) > 100


def test_a_raystation_structure_set_reads_the_same_both_ways(tmp_path: Path) -> None:
    (packed,) = (REAL / "raystation_proton_ramp").glob("RS*.dcm.xz")
    path = tmp_path / "RS.dcm"
    path.write_bytes(lzma.decompress(packed.read_bytes()))
    a, b = _both_ways(path, path.read_bytes())
    assert _assert_same(a, b) > 0


def test_a_broken_item_inside_the_sequence_is_an_input_error(course_dir) -> None:
    path = course_dir("compliant") / "RS.dcm"
    data = bytearray(path.read_bytes())
    ds = pydicom.dcmread(path)
    raw = ds.get_item("ROIContourSequence")
    start = raw.value_tell
    assert data[start : start + 4] == b"\xfe\xff\x00\xe0"  # the first item's tag
    data[start : start + 4] = b"\x08\x00\x16\x00"
    with pytest.raises(InputError, match="ROIContourSequence: expected a sequence item"):
        structure_set_from_dataset(path, pydicom.dcmread(io.BytesIO(bytes(data))))


def _fully_parsed(data: bytes) -> Dataset:
    """The data set with every sequence, at every depth, parsed by pydicom (none left as bytes)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    ds.walk(lambda _ds, elem: elem.value)
    return ds


def _plans() -> dict[str, bytes]:
    return {
        "monaco": (REAL / "monaco_plan" / "06MV_plan.dcm").read_bytes(),
        "raystation": lzma.decompress((REAL / "raystation_proton_ramp" / "ramped_2Gy_ver2_full.dcm.xz").read_bytes()),
    }


@pytest.mark.parametrize(
    ("name", "walked"),
    # Monaco writes its sequences with undefined lengths: pydicom parses them as it reads
    [("phantom", True), ("monaco", False), ("raystation", True)],
)
def test_plans_conform_the_same_read_from_bytes_or_parsed(course_dir, name: str, walked: bool) -> None:
    data = (course_dir("compliant") / "RP.SFRT.dcm").read_bytes() if name == "phantom" else _plans()[name]
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    sequences = [tag for tag in list(ds.keys()) if dictionary_has_tag(tag) and dictionary_VR(tag) == "SQ"]
    assert any(encoded_items(ds, tag) is not None for tag in sequences) is walked
    through_bytes = [f.message for f in conformance(Path(name), ds)]
    assert through_bytes == [f.message for f in conformance(Path(name), _fully_parsed(data))]


def test_a_missing_attribute_deep_in_a_plan_is_found_both_ways(course_dir, tmp_path: Path) -> None:
    ds = pydicom.dcmread(course_dir("compliant") / "RP.SFRT.dcm")
    control_point = ds.BeamSequence[0].ControlPointSequence[1]
    del control_point.ControlPointIndex  # Type 1 in every control point
    ds.BeamSequence[0].ControlPointSequence[0].NominalBeamEnergy = ""  # Type 1C: not checked
    out = io.BytesIO()
    ds.save_as(out)
    data = out.getvalue()
    through_bytes = [f.message for f in conformance(tmp_path / "RP.dcm", pydicom.dcmread(io.BytesIO(data)))]
    assert through_bytes == [f.message for f in conformance(tmp_path / "RP.dcm", _fully_parsed(data))]
    assert any("ControlPointIndex is missing in BeamSequence > ControlPointSequence" in m for m in through_bytes)
