"""Indexing and course assembly on real files: references decide, file names and folders do not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from rtcheck.assembly import discover, find_courses, load_course
from rtcheck.dicomio import contour_points, index_paths, read_dataset
from rtcheck.errors import InputError
from rtcheck.phantom import write_ct_series, write_dose_without_plan, write_truncated_copy


def test_compliant_course_is_assembled_from_its_references(course_dir) -> None:
    (course,) = find_courses([course_dir("compliant")])
    assert sorted(course.plan_labels) == ["LDRT", "SFRT"]
    assert course.structure_set is not None and len(course.doses) == 2
    assert course.complete and not course.missing
    # Each dose belongs to the plan it references.
    plan_uids = set(course.plan_uids)
    assert {uid for d in course.doses for uid in d.referenced_plan_uids} == plan_uids


def test_ct_slices_are_skipped_header_only(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "export")
    write_ct_series(tmp_path / "export" / "CT", 300, rows=64, cols=64)
    index = index_paths([tmp_path / "export"])
    assert index.skipped == 300
    assert sorted(f.modality for f in index.files) == ["RTDOSE", "RTDOSE", "RTPLAN", "RTPLAN", "RTSTRUCT"]
    (course,) = find_courses([tmp_path / "export"])
    assert course.complete


def test_file_names_do_not_matter(course_dir, tmp_path: Path) -> None:
    for i, path in enumerate(sorted(course_dir("compliant").iterdir())):
        nested = tmp_path / f"dir{i % 2}"
        nested.mkdir(exist_ok=True)
        shutil.copy(path, nested / f"object{i}.bin")
    (course,) = find_courses([tmp_path])
    assert sorted(course.plan_labels) == ["LDRT", "SFRT"] and course.complete


def test_a_dose_without_plan_is_an_orphan(tmp_path: Path) -> None:
    write_dose_without_plan(tmp_path)
    found = discover([tmp_path])
    assert found.courses == []
    assert len([o for o in found.orphans if "RTDOSE references plan" in o]) == 2
    assert any("RTSTRUCT is not referenced by any plan" in o for o in found.orphans)


def test_missing_dose_makes_the_course_incomplete(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    (tmp_path / "c" / "RD.LDRT.dcm").unlink()
    (course,) = find_courses([tmp_path / "c"])
    assert not course.complete
    assert len(course.missing) == 1 and "no RTDOSE" in course.missing[0] and "LDRT" in course.missing[0]


def test_truncated_files_are_detected_not_silently_shortened(course_dir, tmp_path: Path) -> None:
    for name, fraction in (("RP.SFRT.dcm", 0.5), ("RS.dcm", 0.7), ("RD.SFRT.dcm", 0.9)):
        cut = write_truncated_copy(course_dir("compliant") / name, tmp_path / name, keep_fraction=fraction)
        with pytest.raises(InputError, match="truncated"):
            read_dataset(cut)


def test_contour_points_parse_raw_bytes_like_pydicom(course_dir) -> None:
    path = course_dir("compliant") / "RS.dcm"
    fast = read_dataset(path)
    slow = pydicom.dcmread(path)
    item_fast = fast.ROIContourSequence[0].ContourSequence[0]
    item_slow = slow.ROIContourSequence[0].ContourSequence[0]
    expected = [float(v) for v in item_slow.ContourData]
    assert contour_points(item_fast).ravel().tolist() == pytest.approx(expected, abs=0)


def test_load_course_reads_prescriptions_and_contours(course_dir) -> None:
    (files,) = find_courses([course_dir("compliant")])
    course, integrity = load_course(files)
    assert [f for f in integrity if f.severity == "error"] == []
    by_label = {p.label: p for p in course.plans}
    sfrt = by_label["SFRT"].fraction_groups[0]
    assert sfrt.fractions_planned == 3
    assert sfrt.prescription is not None and sfrt.prescription.dose_per_fraction_gy == pytest.approx(10.0)
    assert course.structure_set is not None
    gtv = course.structure_set.by_name("GTV_SFRT")
    assert gtv is not None and gtv.contours and gtv.contours[0].points.shape[1] == 3


def test_a_replan_with_the_same_label_supersedes_the_old_export(course_dir, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    shutil.copytree(course_dir("compliant"), folder)
    plan = pydicom.dcmread(folder / "RP.SFRT.dcm")
    dose = pydicom.dcmread(folder / "RD.SFRT.dcm")
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    plan.RTPlanDate, plan.RTPlanTime = "20991231", "120000"
    plan.FractionGroupSequence[0].NumberOfFractionsPlanned = 4
    dose.SOPInstanceUID = dose.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    plan.save_as(folder / "RP.SFRT.replan.dcm")
    dose.save_as(folder / "RD.SFRT.replan.dcm")
    (course,) = find_courses([folder])
    assert sorted(p.path.name for p in course.plans) == ["RP.LDRT.dcm", "RP.SFRT.replan.dcm"]
    assert sorted(d.path.name for d in course.doses) == ["RD.LDRT.dcm", "RD.SFRT.replan.dcm"]
    (line,) = course.superseded
    assert "RP.SFRT.dcm" in line and "superseded" in line
    checked, _ = load_course(course)
    sfrt = next(p for p in checked.plans if p.label == "SFRT")
    assert sfrt.fraction_groups[0].fractions_planned == 4
