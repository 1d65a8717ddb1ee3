"""DICOM conformance tables and integrity findings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from rtcheck.assembly import find_courses, load_course
from rtcheck.cli import main
from rtcheck.errors import ExitCode
from rtcheck.standard_tables import OUTPUT, build


def test_shipped_standard_tables_match_highdicom() -> None:
    """The shipped RT module tables are exactly what the generator derives from highdicom."""
    shipped = json.loads(OUTPUT.read_text())
    assert shipped == json.loads(json.dumps(build()))


def test_missing_type1_attribute_is_found(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    plan = tmp_path / "c" / "RP.SFRT.dcm"
    ds = pydicom.dcmread(plan)
    del ds.Modality  # Type 1 in the RT Series module
    ds.FractionGroupSequence[0].NumberOfBeams = None  # Type 1 and now empty
    ds.save_as(plan)
    (files,) = find_courses([tmp_path / "c"])
    _, findings = load_course(files)
    mine = [f for f in findings if f.file.endswith("RP.SFRT.dcm")]
    assert any(f.keyword == "Modality" and "missing" in f.message and f.tag == "(0008,0060)" for f in mine)
    assert any(f.keyword == "NumberOfBeams" and "empty" in f.message for f in mine)


def test_contour_count_mismatch_and_degenerate_contour(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RS.dcm"
    ds = pydicom.dcmread(path)
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    contour.NumberOfContourPoints = int(contour.NumberOfContourPoints) + 1
    degenerate = ds.ROIContourSequence[1].ContourSequence[0]
    degenerate.ContourData = list(degenerate.ContourData)[:6]
    degenerate.NumberOfContourPoints = 2
    ds.save_as(path)
    (files,) = find_courses([tmp_path / "c"])
    _, findings = load_course(files)
    errors = [f for f in findings if f.severity == "error"]
    assert any(f.keyword == "NumberOfContourPoints" for f in errors)
    assert any(f.keyword == "ContourData" and "at least 3" in f.message for f in errors)


def test_compliant_course_has_no_integrity_findings(course_dir) -> None:
    (files,) = find_courses([course_dir("compliant")])
    _, findings = load_course(files)
    assert findings == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom's, on reading the bad value
def test_roi_observations_naming_no_known_roi_are_errors_not_crashes(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RS.dcm"
    ds = pydicom.dcmread(path)
    first, second = ds.RTROIObservationsSequence[:2]
    # an IS value that is not a number, kept as written (pydicom would refuse to write it)
    first[0x30060084] = RawDataElement(Tag(0x30060084), "IS", 2, b"x ", 0, False, True)
    second.ReferencedROINumber = 999
    ds.save_as(path)
    (files,) = find_courses([tmp_path / "c"])
    _, findings = load_course(files)
    messages = [f.message for f in findings if f.keyword == "ReferencedROINumber" and f.severity == "error"]
    assert "RT ROI observation references ROI number 'x', not an integer" in messages
    assert "RT ROI observation references unknown ROI number 999" in messages
    assert main([str(tmp_path / "c"), "--quiet"]) == ExitCode.NOT_EVALUABLE


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom's, on reading the bad value
@pytest.mark.parametrize(
    ("tag", "vr", "finding"),
    [
        (0x00280008, "IS", "NumberOfFrames is 'abc', not an integer"),
        (0x3004000E, "DS", "DoseGridScaling is 'abc': pixel values cannot be turned into dose"),
    ],
)
def test_a_dose_value_that_is_not_a_number_is_an_error_not_a_crash(
    course_dir, tmp_path: Path, capsys: pytest.CaptureFixture[str], tag: int, vr: str, finding: str
) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RD.SFRT.dcm"
    ds = pydicom.dcmread(path)
    ds[tag] = RawDataElement(Tag(tag), vr, 4, b"abc ", 0, False, True)
    ds.save_as(path)
    (files,) = find_courses([tmp_path / "c"])
    _, findings = load_course(files)
    assert any(f.message == finding and f.file.endswith("RD.SFRT.dcm") for f in findings)
    assert main([str(tmp_path / "c"), "--format", "json"]) == ExitCode.NOT_EVALUABLE
    rules = {r["id"]: r for r in json.loads(capsys.readouterr().out)["reports"][0]["rules"]}
    peak = rules["sfrt.peak_dose"]  # the SFRT dose is that file's: no dose rule on it may pass
    assert peak["status"] == "not_evaluable" and "RD.SFRT.dcm" in peak["message"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom's, on reading the bad value
def test_a_number_of_fractions_that_is_not_a_number_is_an_error_not_a_crash(
    course_dir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RP.LDRT.dcm"
    ds = pydicom.dcmread(path)
    tag = 0x300A0078  # NumberOfFractionsPlanned
    ds.FractionGroupSequence[0][tag] = RawDataElement(Tag(tag), "IS", 4, b"abc ", 0, False, True)
    ds.save_as(path)
    (files,) = find_courses([tmp_path / "c"])
    _, findings = load_course(files)
    assert any(f.message == "fraction group 1: NumberOfFractionsPlanned is 'abc'" for f in findings)
    assert main([str(tmp_path / "c"), "--format", "json"]) == ExitCode.NOT_EVALUABLE
    rules = {r["id"]: r for r in json.loads(capsys.readouterr().out)["reports"][0]["rules"]}
    assert rules["ldrt.fractions"]["status"] == "not_evaluable"
    assert "fractions not stated" in rules["ldrt.fractions"]["message"]
