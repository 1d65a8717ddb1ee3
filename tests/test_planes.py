"""Contours on tilted planes: valid DICOM, flagged only when truly non-planar, never measured as axial."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtcheck.api import check_course, load_protocol
from rtcheck.assembly import find_courses, load_course
from rtcheck.course import Contour, Roi
from rtcheck.geometry import TiltedPlanesError, solid_from_roi
from rtcheck.planes import contour_plane, on_axial_planes

TILT_DEG = 6.0


def _tilt(points: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (N, 3) points about the x axis through the origin: planes z = c become tilted."""
    a = math.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return points @ rotation.T


def _tilted_course(course_dir, tmp_path: Path, bend_mm: float = 0.0) -> Path:
    """The compliant phantom with every contour rotated 6 degrees (an image set acquired tilted)."""
    folder = tmp_path / "tilted"
    shutil.copytree(course_dir("compliant"), folder)
    path = folder / "RS.dcm"
    ds = pydicom.dcmread(path)
    for item in ds.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            pts = _tilt(np.asarray(contour.ContourData, dtype=float).reshape(-1, 3), TILT_DEG)
            contour.ContourData = [f"{v:.4f}" for v in pts.ravel()]
    if bend_mm:
        bent = ds.ROIContourSequence[0].ContourSequence[0]
        values = list(bent.ContourData)
        values[2] = f"{float(values[2]) + bend_mm:.4f}"
        bent.ContourData = values
    ds.save_as(path)
    return folder


def test_contour_plane_of_tilted_and_bent_contours() -> None:
    square = np.array([[0, 0, 0], [40, 0, 0], [40, 40, 0], [0, 40, 0]], dtype=float)
    plane = contour_plane(_tilt(square, TILT_DEG))
    assert plane is not None and plane.deviation_mm < 1e-9
    assert plane.tilt_deg == pytest.approx(TILT_DEG) and not plane.is_axial
    bent = square.copy()
    bent[0, 2] = 1.0
    assert contour_plane(bent).deviation_mm == pytest.approx(0.25, abs=1e-3)  # type: ignore[union-attr]
    assert contour_plane(square[:2]) is None


def test_on_axial_planes_agrees_with_the_plane_fit(course_dir) -> None:
    """Contours the fit would call axial and coplanar are those on one z; the rest get fitted."""
    course, _ = load_course(find_courses([course_dir("compliant")])[0])
    assert course.structure_set is not None
    contours = [c.points for roi in course.structure_set.rois.values() for c in roi.contours]
    square = np.array([[0, 0, 5], [40, 0, 5], [40, 40, 5], [0, 40, 5]], dtype=float)
    bent = square.copy()
    bent[0, 2] = 5.01
    sets = [*contours, _tilt(square, TILT_DEG), bent, np.empty((0, 3)), square[:1]]
    flags = on_axial_planes(sets)
    assert flags.tolist() == [*[True] * len(contours), False, False, False, True]
    for points in contours:
        plane = contour_plane(points)
        assert plane is not None and plane.is_axial and plane.deviation_mm < 1e-9


def test_coplanar_tilted_contours_are_no_integrity_error(course_dir, tmp_path: Path) -> None:
    (files,) = find_courses([_tilted_course(course_dir, tmp_path)])
    _, findings = load_course(files)
    contour_findings = [f for f in findings if f.keyword == "ContourData"]
    assert [f.severity for f in contour_findings] == ["warning"]  # one line for the whole set
    assert "tilted planes" in contour_findings[0].message and "6.0 deg from axial" in contour_findings[0].message


def test_a_bent_contour_is_still_an_error(course_dir, tmp_path: Path) -> None:
    (files,) = find_courses([_tilted_course(course_dir, tmp_path, bend_mm=2.0)])
    _, findings = load_course(files)
    errors = [f for f in findings if f.severity == "error" and f.keyword == "ContourData"]
    assert len(errors) == 1 and "not coplanar" in errors[0].message


def test_rules_on_a_tilted_set_are_not_evaluable_with_the_reason(course_dir, tmp_path: Path) -> None:
    (files,) = find_courses([_tilted_course(course_dir, tmp_path)])
    report = check_course(files, load_protocol())
    assert report.arm.arm == "experimental"
    for rule_id in ("structures.integrity", "peaks.spacing", "sfrt.peak_dose", "oar.heart_mean"):
        rule = report.rule(rule_id)
        assert rule is not None and rule.status == "not_evaluable", rule_id
        assert "tilted planes" in rule.message, (rule_id, rule.message)
    # What needs no geometry is still graded.
    assert report.rule("sfrt.fractions").status == "per_protocol"  # type: ignore[union-attr]


def test_a_tilted_roi_is_refused_not_projected() -> None:
    square = np.array([[0, 0, 0], [40, 0, 0], [40, 40, 0], [0, 40, 0]], dtype=float)
    contours = tuple(
        Contour("CLOSED_PLANAR", _tilt(square + np.array([0.0, 0.0, z]), TILT_DEG)) for z in (0.0, 2.5, 5.0)
    )
    with pytest.raises(TiltedPlanesError, match="tilted planes"):
        solid_from_roi(Roi(1, "Box", "ORGAN", contours))
