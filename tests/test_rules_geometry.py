"""The protocol's geometric rules on generated courses: each violation caught by its rule id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtcheck.api import check_course, load_protocol
from rtcheck.assembly import find_courses
from rtcheck.phantom import build_spec
from rtcheck.report import Report

GEOMETRY_RULES = {
    "peaks.inside_gtv",
    "peaks.margin_to_gtv",
    "peaks.spacing",
    "peaks.diameter",
    "peaks.volume_fraction",
    "peaks.distance_to_oar",
    "sfrt.single_lesion",
    "ldrt.excludes_brain_bone",
    "structures.integrity",
}


def check(folder: Path) -> Report:
    (course,) = find_courses([folder])
    return check_course(course, load_protocol())


def test_compliant_course_geometry_is_per_protocol(course_dir) -> None:
    report = check(course_dir("compliant"))
    for rule_id in GEOMETRY_RULES:
        rule = report.rule(rule_id)
        assert rule is not None and rule.status == "per_protocol", (rule_id, rule and rule.message)
    margin = report.rule("peaks.margin_to_gtv")
    assert margin is not None and len(margin.items) == 4
    # Tetrahedron of peaks 15 mm from the GTV centre: margin 35 - 15 - 7.5 = 12.5 mm.
    assert margin.value == pytest.approx(12.5, abs=0.3)
    spacing = report.rule("peaks.spacing")
    assert spacing is not None and spacing.value == pytest.approx(15 * (8 / 3) ** 0.5, abs=0.5)
    diameter = report.rule("peaks.diameter")
    assert diameter is not None and all(i.value == pytest.approx(15.0, rel=0.03) for i in diameter.items)
    fraction = report.rule("peaks.volume_fraction")
    assert fraction is not None and fraction.value == pytest.approx(100 * 4 * 7.5**3 / 35**3, rel=0.03)


@pytest.mark.parametrize(
    ("variant", "rule_ids"),
    [
        ("peak_near_gtv_edge", ["peaks.margin_to_gtv"]),
        ("peaks_too_close", ["peaks.spacing"]),
        ("peak_outside_gtv", ["peaks.inside_gtv", "peaks.margin_to_gtv"]),
        ("second_sfrt_lesion", ["sfrt.single_lesion"]),
        ("two_sfrt_lesions", ["sfrt.single_lesion"]),
        ("ldrt_overlaps_bone_met", ["ldrt.excludes_brain_bone"]),
    ],
)
def test_each_geometric_violation_is_caught_by_its_rule(course_dir, variant: str, rule_ids: list[str]) -> None:
    report = check(course_dir(variant))
    got = {r.id: r.status for r in report.rules}
    for rule_id in rule_ids:
        assert got[rule_id] == "unacceptable_deviation", (rule_id, report.rule(rule_id))
    assert {got[r] for r in GEOMETRY_RULES - set(rule_ids)} == {"per_protocol"}, got


def test_worst_peak_is_named_and_every_peak_kept(course_dir) -> None:
    rule = check(course_dir("peak_near_gtv_edge")).rule("peaks.margin_to_gtv")
    assert rule is not None and len(rule.items) == 4
    worst = min(rule.items, key=lambda i: i.value or 0)
    assert rule.value == worst.value and worst.status == "unacceptable_deviation"
    assert worst.value == pytest.approx(4.0, abs=0.3)
    assert sum(1 for i in rule.items if i.status == "per_protocol") == 3


@pytest.mark.parametrize(
    ("variant", "status"), [("peak_margin_10_4mm", "per_protocol"), ("peak_margin_9_4mm", "acceptable_variation")]
)
def test_peak_margin_near_the_threshold_decides_the_verdict(course_dir, variant: str, status: str) -> None:
    """A peak displaced obliquely towards the GTV surface, 10.4 or 9.4 mm inside it, while
    the rule's threshold is 10 mm: the surface between contour planes decides the verdict."""
    spec = build_spec(variant)
    gtv = spec.roi("GTV_SFRT").shape
    peaks = {r.name: r.shape for r in spec.rois if r.name.startswith("Peak_")}
    analytic = {
        name: gtv.radius_mm - float(np.linalg.norm(np.subtract(p.centre, gtv.centre))) - p.radius_mm
        for name, p in peaks.items()
    }
    moved = np.subtract(peaks["Peak_1"].centre, gtv.centre)
    assert np.all(np.abs(moved) > 5.0)  # oblique: not along an axis
    assert min(analytic, key=analytic.get) == "Peak_1"
    report = check(course_dir(variant))
    rule = report.rule("peaks.margin_to_gtv")
    assert rule is not None and rule.status == status, rule
    measured = {i.name: i.value for i in rule.items}
    for name, value in analytic.items():
        assert measured[name] == pytest.approx(value, abs=0.3), name
    got = {r.id: r.status for r in report.rules}
    assert {got[r] for r in GEOMETRY_RULES - {"peaks.margin_to_gtv"}} == {"per_protocol"}, got


def test_bone_overlap_reports_volume_and_structure(course_dir) -> None:
    rule = check(course_dir("ldrt_overlaps_bone_met")).rule("ldrt.excludes_brain_bone")
    assert rule is not None
    (bad,) = [i for i in rule.items if i.value]
    assert "GTV_Bone_1" in bad.detail["overlap_cc"] and bad.detail["overlap_cc"]["GTV_Bone_1"] > 0


def test_contour_problems_are_structure_integrity_errors(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RS.dcm"
    ds = pydicom.dcmread(path)
    numbers = {item.ROIName: item.ROINumber for item in ds.StructureSetROISequence}
    for item in ds.ROIContourSequence:
        if item.ReferencedROINumber == numbers["GTV_SFRT"]:
            item.ContourSequence[5].ContourGeometricType = "OPEN_PLANAR"
        if item.ReferencedROINumber == numbers["Heart"]:
            del item.ContourSequence  # drawn but empty
    ds.save_as(path)
    rule = check(tmp_path / "c").rule("structures.integrity")
    assert rule is not None and rule.status == "unacceptable_deviation"
    assert rule.value == 2
    errors = " ".join(rule.evidence["errors"])
    assert "GTV_SFRT" in errors and "Heart" in errors and "empty" in errors


def test_geometric_rules_without_peaks_are_not_evaluable(course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    path = tmp_path / "c" / "RS.dcm"
    ds = pydicom.dcmread(path)
    for item in ds.StructureSetROISequence:
        if item.ROIName.startswith("Peak"):
            item.ROIName = item.ROIName.replace("Peak", "Blob")
    ds.save_as(path)
    report = check(tmp_path / "c")
    for rule_id in ("peaks.inside_gtv", "peaks.margin_to_gtv", "peaks.spacing", "peaks.diameter"):
        rule = report.rule(rule_id)
        assert rule is not None and rule.status == "not_evaluable", rule_id
