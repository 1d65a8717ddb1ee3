"""DICOM conformance tables and integrity findings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom

from rtcheck.assembly import find_courses, load_course
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
