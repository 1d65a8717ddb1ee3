"""The synthetic phantom: valid DICOM-RT, deterministic bytes, and the ground truth it claims.

Every other module is tested against these courses, so these tests read the written files
back with plain pydicom and compare them with closed-form geometry and dose.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import shapely
from peers import require
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from rtcheck.phantom import (
    GTV_SFRT,
    VARIANTS,
    Sphere,
    build_spec,
    contour_planes,
    grid_axes,
    write_course,
    write_ct_series,
    write_dose_without_plan,
    write_non_dicom,
    write_plan_without_structure_set,
    write_truncated_copy,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Small output options for tests that only need the files to exist.
COARSE = {"dose_spacing_mm": 10.0}


def _make_fixtures_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _contours(rs: pydicom.Dataset) -> dict[str, list[tuple[str, np.ndarray]]]:
    names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for rc in rs.ROIContourSequence:
        items = rc.get("ContourSequence", [])
        out[names[rc.ReferencedROINumber]] = [
            (c.ContourGeometricType, np.asarray(c.ContourData, float).reshape(-1, 3)) for c in items
        ]
    return out


def _dose(path: Path) -> tuple[np.ndarray, np.ndarray, pydicom.Dataset]:
    """Dose values (z, y, x) and the (z, y, x, 3) node coordinates of an RT Dose file."""
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    x = x0 + dx * np.arange(ds.Columns)
    y = y0 + dy * np.arange(ds.Rows)
    z = z0 + np.asarray(ds.GridFrameOffsetVector, float)
    nodes = np.stack(np.meshgrid(z, y, x, indexing="ij")[::-1], axis=-1)
    return values, nodes, ds


def _sample_nodes(values: np.ndarray, nodes: np.ndarray, n: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Every node with dose plus a fixed random sample of the rest (analytic evaluation of
    a whole grid is slower than the test is worth)."""
    flat_v, flat_p = values.ravel(), nodes.reshape(-1, 3)
    rng = np.random.default_rng(7)
    pick = np.union1d(np.flatnonzero(flat_v > 0), rng.choice(flat_v.size, n, replace=False))
    return flat_v[pick], flat_p[pick]


def _points_inside(shape, n: int = 60000) -> np.ndarray:
    rng = np.random.default_rng(3)
    x0, y0, x1, y1 = shape.xy_bounds()
    z0, z1 = shape.z_extent()
    p = rng.uniform([x0, y0, z0], [x1, y1, z1], (n, 3))
    return p[shape.contains(p)]


def _fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points: |p|^2 = 2 c.p + (r^2 - |c|^2)."""
    a = np.column_stack((2 * points, np.ones(len(points))))
    sol, *_ = np.linalg.lstsq(a, (points**2).sum(axis=1), rcond=None)
    centre = sol[:3]
    return centre, math.sqrt(sol[3] + centre @ centre)


# ---------------------------------------------------------------- validity and determinism


@pytest.mark.parametrize("variant", ["compliant", "control_arm", "single_plan_two_groups", "multi_plan_dose"])
def test_dciodvfy_reports_no_errors(course_dir, variant):
    dciodvfy = require("dciodvfy", "dicom3tools")
    files = sorted(course_dir(variant).glob("*.dcm"))
    assert {f.name[:2] for f in files} == {"RS", "RP", "RD"}
    for f in files:
        out = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        # dciodvfy names the IOD it recognised; without that line it did not read the file.
        assert {"RTPlan", "RTStructureSet", "RTDose"} & set(lines), f"{f.name}: {lines}"
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{f.name}: {errors}"


def test_ct_slices_are_valid_and_fast(tmp_path, course_dir):
    start = time.perf_counter()
    slices = write_ct_series(tmp_path, 300)
    elapsed = time.perf_counter() - start
    assert len(slices) == 300
    assert elapsed < 15.0, f"300 CT slices took {elapsed:.1f} s"
    ct = pydicom.dcmread(slices[40])
    rs = pydicom.dcmread(course_dir("compliant") / "RS.dcm")
    assert ct.StudyInstanceUID == rs.StudyInstanceUID
    assert ct.FrameOfReferenceUID == rs.FrameOfReferenceUID
    assert ct.PatientID == rs.PatientID
    hu = ct.pixel_array.astype(int) - 1024
    assert set(np.unique(hu)) == {-1024, -800, 0, 700}
    out = subprocess.run([require("dciodvfy", "dicom3tools"), str(slices[40])], capture_output=True, text=True)
    assert "CTImage" in out.stdout + out.stderr
    assert not [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_writing_twice_gives_identical_bytes(tmp_path):
    first = write_course(tmp_path / "a", "single_plan_two_groups")
    second = write_course(tmp_path / "b", "single_plan_two_groups")
    assert [f.name for f in first] == [f.name for f in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_uids_are_unique_across_variants_and_options(tmp_path):
    """Two courses never share a SOP Instance UID, so any mix of them can be indexed together."""
    seen: dict[str, str] = {}
    for variant in VARIANTS:
        assert VARIANTS[variant].__doc__, f"{variant} must say what is wrong with it"
        for f in write_course(tmp_path / variant, variant, **COARSE):
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            assert uid not in seen, f"{variant}/{f.name} reuses the UID of {seen.get(uid)}"
            seen[uid] = f"{variant}/{f.name}"
    other = write_course(tmp_path / "finer", "compliant", **COARSE, slice_spacing_mm=1.25)
    assert all(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID not in seen for f in other)


def test_deflated_course_holds_the_same_data(course_dir):
    """Deflated Explicit VR Little Endian is an option for reader tests (dciodvfy cannot read it)."""
    plain = course_dir("compliant", **COARSE)
    deflated = course_dir("compliant", **COARSE, transfer_syntax_uid=DeflatedExplicitVRLittleEndian)
    rs = pydicom.dcmread(deflated / "RS.dcm")
    assert rs.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert _contours(rs)["Peak_1"][3][1] == pytest.approx(_contours(pydicom.dcmread(plain / "RS.dcm"))["Peak_1"][3][1])
    dose = pydicom.dcmread(deflated / "RD.SFRT.dcm").pixel_array
    assert np.array_equal(dose, pydicom.dcmread(plain / "RD.SFRT.dcm").pixel_array)


def test_committed_fixtures_equal_a_fresh_generation(tmp_path):
    make_fixtures = _make_fixtures_module()
    fresh = make_fixtures.write_fixtures(tmp_path)
    fresh_names = sorted(str(f.relative_to(tmp_path)) for f in fresh)
    committed = sorted(str(f.relative_to(FIXTURES)) for f in FIXTURES.glob("*/*.dcm"))
    assert committed == fresh_names, "run: python tests/fixtures/make_fixtures.py"
    for name in fresh_names:
        assert (FIXTURES / name).read_bytes() == (tmp_path / name).read_bytes(), name
    sizes = {v: sum(f.stat().st_size for f in (FIXTURES / v).glob("*.dcm")) for v in make_fixtures.COMMITTED}
    assert max(sizes.values()) <= 2.0e6, sizes
    assert sum(sizes.values()) <= 20.0e6, sizes


# ---------------------------------------------------------------- structure set


def test_structure_set_lists_the_phantom(course_dir):
    rs = pydicom.dcmread(course_dir("compliant") / "RS.dcm")
    names = [r.ROIName for r in rs.StructureSetROISequence]
    assert names == [
        *("BODY", "Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord", "VB", "A_Aorta", "Brain"),
        *("GTV_SFRT", "Peak_1", "Peak_2", "Peak_3", "Peak_4", "GTV_LDRT_1", "GTV_LDRT_2"),
        *("GTV_Brain_1", "GTV_Bone_1"),
    ]
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
    by_name = {r.ROIName: types[r.ROINumber] for r in rs.StructureSetROISequence}
    assert by_name["BODY"] == "EXTERNAL"
    assert by_name["Peak_1"] == "PTV"
    assert by_name["GTV_SFRT"] == "GTV"
    assert by_name["Peak_4"] in ("", None)  # Type 2, present but empty
    assert "RTROIInterpretedType" in next(o for o in rs.RTROIObservationsSequence if o.ReferencedROINumber == 14)
    for_uid = rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert {r.ReferencedFrameOfReferenceUID for r in rs.StructureSetROISequence} == {for_uid}


@pytest.mark.parametrize("spacing", [2.5, 1.25, 1.0])
def test_sphere_contours_lie_on_the_analytic_sphere(course_dir, spacing):
    options = {} if spacing == 2.5 else {"slice_spacing_mm": spacing, **COARSE}
    spec = build_spec("compliant", **options)
    contours = _contours(pydicom.dcmread(course_dir("compliant", **options) / "RS.dcm"))
    for name in ("GTV_SFRT", "Peak_1", "Peak_4", "GTV_LDRT_1", "GTV_LDRT_2", "GTV_Brain_1", "GTV_Bone_1"):
        sphere = spec.roi(name).shape
        planes = contour_planes(*sphere.z_extent(), spacing)
        expected = [z for z in planes if sphere.radius_mm**2 - (z - sphere.centre[2]) ** 2 >= 0.25]
        got = contours[name]
        assert {t for t, _ in got} == {"CLOSED_PLANAR"}
        assert [float(p[0, 2]) for _, p in got] == pytest.approx(expected, abs=1e-9)
        pts = np.concatenate([p for _, p in got])
        dist = np.linalg.norm(pts - sphere.centre, axis=1)
        assert np.abs(dist - sphere.radius_mm).max() < 0.01, name  # coordinates carry 0.01 mm
        centre, radius = _fit_sphere(pts)
        assert centre == pytest.approx(sphere.centre, abs=0.01)
        assert radius == pytest.approx(sphere.radius_mm, abs=0.01)
        # Each section is a regular polygon inscribed in its circle: n/2 rho^2 sin(2 pi / n).
        rho2 = sphere.radius_mm**2 - (np.array(expected) - sphere.centre[2]) ** 2
        n = np.array([len(p) for _, p in got])
        polygon_areas = n / 2 * rho2 * np.sin(2 * np.pi / n)
        areas = np.array([shapely.Polygon(p[:, :2]).area for _, p in got])
        rounding = 2 * np.pi * np.sqrt(rho2) * 0.005 * math.sqrt(2)  # perimeter x 0.01 mm grid
        assert (np.abs(areas - polygon_areas) <= rounding).all(), name
        # Slabs of one spacing per plane lose part of the caps: r 10 mm centred on a 2.5 mm
        # plane comes out 2.2 % small, so the slab volume is within 3 % of 4/3 pi r^3.
        assert areas.sum() * spacing / 1000 == pytest.approx(sphere.volume_cc, rel=0.03), name


def test_body_outline_steps_to_the_head_at_z_120(course_dir):
    contours = _contours(pydicom.dcmread(course_dir("compliant") / "RS.dcm"))
    by_z = {round(float(p[0, 2]), 3): p for _, p in contours["BODY"]}
    assert len(by_z) == len(contours["BODY"]) == 129  # one outline per plane, z -120..200
    assert np.abs(by_z[120.0][:, 0]).max() == pytest.approx(170.0, abs=0.01)
    assert np.abs(by_z[122.5][:, 0]).max() == pytest.approx(75.0, abs=0.01)


def test_anatomy_is_consistent():
    """Targets lie inside their organ and the BODY; organs do not overlap each other."""
    spec = build_spec("compliant")
    body = spec.roi("BODY").shape
    hosts = {
        "GTV_SFRT": "Lung_L",
        "Peak_1": "GTV_SFRT",
        "Peak_2": "GTV_SFRT",
        "Peak_3": "GTV_SFRT",
        "Peak_4": "GTV_SFRT",
        "GTV_LDRT_1": "Lung_R",
        "GTV_LDRT_2": "Lung_L",
        "GTV_Brain_1": "Brain",
        "GTV_Bone_1": "VB",
    }
    for target, host in hosts.items():
        pts = _points_inside(spec.roi(target).shape)
        assert spec.roi(host).shape.contains(pts).all(), f"{target} leaves {host}"
    organs = ["Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord", "VB", "A_Aorta", "Brain"]
    samples = {o: _points_inside(spec.roi(o).shape) for o in organs}
    for o in organs:
        assert body.contains(samples[o]).all(), f"{o} leaves BODY"
    for a, b in itertools.combinations(organs, 2):
        assert not spec.roi(b).shape.contains(samples[a]).any(), f"{a} overlaps {b}"
    for target in ("GTV_LDRT_1", "GTV_LDRT_2", "GTV_Brain_1", "GTV_Bone_1", "GTV_SFRT"):
        pts = _points_inside(spec.roi(target).shape)
        others = [o for o in organs if o != hosts[target]]
        assert not any(spec.roi(o).shape.contains(pts).any() for o in others), target


def test_peak_lattice_geometry():
    peaks = [build_spec("compliant").roi(f"Peak_{i}").shape for i in range(1, 5)]
    centres = np.array([p.centre for p in peaks])
    spacing = [np.linalg.norm(a - b) for a, b in itertools.combinations(centres, 2)]
    assert spacing == pytest.approx([15 * math.sqrt(8 / 3)] * 6)  # 24.49 mm, regular tetrahedron
    margins = GTV_SFRT.radius_mm - np.linalg.norm(centres - GTV_SFRT.centre, axis=1) - 7.5
    assert margins == pytest.approx([12.5] * 4)
    assert sum(p.volume_cc for p in peaks) / GTV_SFRT.volume_cc == pytest.approx(4 * 7.5**3 / 35**3)


def _margin_mm(peak: Sphere) -> float:
    return GTV_SFRT.radius_mm - float(np.linalg.norm(np.subtract(peak.centre, GTV_SFRT.centre))) - peak.radius_mm


def test_geometry_variants_break_what_they_claim(course_dir):
    assert _margin_mm(build_spec("peak_near_gtv_edge").roi("Peak_1").shape) == pytest.approx(4.0)
    close = build_spec("peaks_too_close")
    gap = np.subtract(close.roi("Peak_1").shape.centre, close.roi("Peak_2").shape.centre)
    assert np.linalg.norm(gap) == pytest.approx(12.0)
    outside = build_spec("peak_outside_gtv").roi("Peak_1").shape
    assert not GTV_SFRT.contains(np.array(outside.centre))
    assert np.linalg.norm(np.subtract(outside.centre, GTV_SFRT.centre)) == pytest.approx(40.0)
    bone = build_spec("ldrt_overlaps_bone_met")
    ldrt_2, met = bone.roi("GTV_LDRT_2").shape, bone.roi("GTV_Bone_1").shape
    assert np.linalg.norm(np.subtract(ldrt_2.centre, met.centre)) == pytest.approx(15.0)  # < 12 + 10
    two = _contours(pydicom.dcmread(course_dir("second_sfrt_lesion", **COARSE) / "RS.dcm"))["GTV_SFRT"]
    z = sorted(float(p[0, 2]) for _, p in two)
    assert max(np.diff(z)) > 10.0  # two pieces: planes -12.5..52.5 and 75..95
    lesions = _contours(pydicom.dcmread(course_dir("two_sfrt_lesions", **COARSE) / "RS.dcm"))
    assert {"GTV_SFRT_2", "Peak_5", "Peak_8"} <= lesions.keys()


@pytest.mark.parametrize("variant", ["valley_contoured", "valley_xor"])
def test_valley_is_drawn_with_holes(course_dir, variant):
    spec = build_spec(variant)
    valley = spec.roi("GTV_Valley").shape
    contours = _contours(pydicom.dcmread(course_dir(variant) / "RS.dcm"))["GTV_Valley"]
    kind = "CLOSEDPLANAR_XOR" if variant == "valley_xor" else "CLOSED_PLANAR"
    assert {t for t, _ in contours} == {kind}
    plane = [p for _, p in contours if abs(p[0, 2] - 20.0) < 1e-6]
    assert len(plane) >= 3  # the GTV outline and merged hole outlines
    area_even_odd = 0.0
    for ring in plane:  # even-odd: a ring inside an odd number of others is a hole
        poly = shapely.Polygon(ring[:, :2])
        depth = sum(shapely.Polygon(o[:, :2]).contains(poly) for o in plane if o is not ring)
        area_even_odd += poly.area * (-1 if depth % 2 else 1)
    # Count the fine grid points inside the analytic solid on that plane.
    g = np.arange(55.05, 135.0, 0.1)
    xy = np.stack(np.meshgrid(g, g - 95.0), axis=-1).reshape(-1, 2)
    inside = valley.contains(np.column_stack((xy, np.full(len(xy), 20.0))))
    assert area_even_odd == pytest.approx(inside.sum() * 0.01, rel=0.01)


# ---------------------------------------------------------------- plans


PLANS = [
    # variant, plan label, fractions of each group, prescription per fraction of each group, n dose refs
    ("compliant", "SFRT", [3], [10.0], 4),
    ("compliant", "LDRT", [5], [2.0], 3),
    ("control_arm", "CONV", [30], [2.0], 1),
    ("sfrt_5_fractions", "SFRT", [5], [10.0], 4),
    ("ldrt_3_fractions", "LDRT", [3], [2.0], 3),
    ("sfrt_rx_7gy", "SFRT", [3], [7.0], 4),
    ("sfrt_rx_6gy", "SFRT", [3], [6.0], 4),
    ("ldrt_rx_4gy", "LDRT", [5], [4.0], 3),
    ("two_sfrt_lesions", "SFRT", [3], [10.0], 8),
    ("two_sfrt_lesions", "LDRT", [5], [2.0], 4),
    ("ldrt_targets_brain_met", "LDRT", [5], [2.0], 4),
    ("no_dose_reference", "SFRT", [3], [10.0], 0),
    ("single_plan_two_groups", "SFRT_LDRT", [3, 5], [10.0, 2.0], 7),
]


@pytest.mark.parametrize(("variant", "label", "fractions", "rx_gy", "n_refs"), PLANS)
def test_plans_prescribe_what_the_variant_says(course_dir, variant, label, fractions, rx_gy, n_refs):
    folder = course_dir(variant, **COARSE)
    plan = pydicom.dcmread(folder / f"RP.{label}.dcm")
    rs = pydicom.dcmread(folder / "RS.dcm")
    assert plan.RTPlanLabel == label
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert plan.FrameOfReferenceUID == rs.FrameOfReferenceUID
    groups = plan.FractionGroupSequence
    assert [g.NumberOfFractionsPlanned for g in groups] == fractions
    beams = {b.BeamNumber for b in plan.BeamSequence}
    for group, rx in zip(groups, rx_gy, strict=True):
        assert sum(float(b.BeamDose) for b in group.ReferencedBeamSequence) == pytest.approx(rx)
        assert {b.ReferencedBeamNumber for b in group.ReferencedBeamSequence} <= beams
    refs = plan.get("DoseReferenceSequence", [])
    assert len(refs) == n_refs
    roi_names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    for ref in refs:
        assert ref.DoseReferenceType == "TARGET" and ref.DoseReferenceStructureType == "VOLUME"
        assert roi_names[ref.ReferencedROINumber] == ref.DoseReferenceDescription
    if n_refs:
        totals = {r.DoseReferenceNumber: float(r.TargetPrescriptionDose) for r in refs}
        for group, n, rx in zip(groups, fractions, rx_gy, strict=True):
            for ref in group.ReferencedDoseReferenceSequence:
                assert totals[ref.ReferencedDoseReferenceNumber] == pytest.approx(n * rx)
    else:
        assert all("ReferencedDoseReferenceSequence" not in g for g in groups)


def test_ldrt_plan_targets_the_brain_met_in_that_variant(course_dir):
    folder = course_dir("ldrt_targets_brain_met", **COARSE)
    plan = pydicom.dcmread(folder / "RP.LDRT.dcm")
    names = [r.DoseReferenceDescription for r in plan.DoseReferenceSequence]
    assert names == ["GTV_SFRT", "GTV_LDRT_1", "GTV_LDRT_2", "GTV_Brain_1"]
    rs = pydicom.dcmread(folder / "RS.dcm")
    assert "GTV_LDRT_Brain" in [r.ROIName for r in rs.StructureSetROISequence]


# ---------------------------------------------------------------- dose


DOSES = [
    # variant, file, summation type, plan labels referenced, fraction groups, dose function
    ("compliant", "RD.SFRT.dcm", "PLAN", ["SFRT"], None, lambda s, p: s.plan_dose_gy("SFRT", p)),
    ("compliant", "RD.LDRT.dcm", "PLAN", ["LDRT"], None, lambda s, p: s.plan_dose_gy("LDRT", p)),
    ("control_arm", "RD.CONV.dcm", "PLAN", ["CONV"], None, lambda s, p: 30 * s.dose_per_fraction_gy("CONV", p)),
    (
        "single_plan_two_groups",
        "RD.SFRT_LDRT.FG2.dcm",
        "FRACTION",
        ["SFRT_LDRT"],
        [2],
        lambda s, p: 5 * s.dose_per_fraction_gy("LDRT", p),
    ),
    (
        "multi_plan_dose",
        "RD.MULTI_PLAN.dcm",
        "MULTI_PLAN",
        ["SFRT", "LDRT"],
        None,
        lambda s, p: 3 * s.dose_per_fraction_gy("SFRT", p) + 5 * s.dose_per_fraction_gy("LDRT", p),
    ),
    ("dose_32bit", "RD.SFRT.dcm", "PLAN", ["SFRT"], None, lambda s, p: s.plan_dose_gy("SFRT", p)),
    ("relative_dose_units", "RD.LDRT.dcm", "PLAN", ["LDRT"], None, lambda s, p: s.plan_dose_gy("LDRT", p) / 10.0),
    ("valley_4gy", "RD.LDRT.dcm", "PLAN", ["LDRT"], None, lambda s, p: 5 * s.dose_per_fraction_gy("LDRT", p)),
]


@pytest.mark.parametrize(("variant", "name", "summation", "labels", "groups", "expected"), DOSES)
def test_stored_dose_is_the_analytic_dose(course_dir, variant, name, summation, labels, groups, expected):
    folder = course_dir(variant)
    values, nodes, ds = _dose(folder / name)
    spec = build_spec(variant)
    assert ds.DoseSummationType == summation
    assert ds.DoseUnits == ("RELATIVE" if variant == "relative_dose_units" else "GY")
    assert ds.DoseType == "PHYSICAL"
    assert ds.BitsAllocated == (32 if variant == "dose_32bit" else 16)
    assert ds.GridFrameOffsetVector[0] == 0
    plan_uids = {pydicom.dcmread(folder / f"RP.{label}.dcm").SOPInstanceUID for label in labels}
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedRTPlanSequence} == plan_uids
    if groups:
        fgs = ds.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence
        assert [g.ReferencedFractionGroupNumber for g in fgs] == groups
    got, points = _sample_nodes(values, nodes)
    want = expected(spec, points)
    assert np.abs(got - want).max() <= float(ds.DoseGridScaling) * 0.5 + 1e-9
    assert values.max() == pytest.approx(want.max(), rel=1e-3)


def test_dose_grid_covers_body_and_brain(course_dir):
    _, nodes, _ = _dose(course_dir("compliant") / "RD.LDRT.dcm")
    lo, hi = nodes.reshape(-1, 3).min(axis=0), nodes.reshape(-1, 3).max(axis=0)
    spec = build_spec("compliant")
    x0, y0, x1, y1 = spec.roi("BODY").shape.xy_bounds()
    z0, z1 = spec.roi("BODY").shape.z_extent()
    assert (lo <= [x0, y0, z0]).all() and (hi >= [x1, y1, z1]).all()
    assert float(nodes[0, 0, 1, 0] - nodes[0, 0, 0, 0]) == 2.5


def test_dose_grid_misses_ldrt_target():
    spec = build_spec("dose_grid_misses_ldrt_target")
    extent = next(p for p in spec.plans if p.label == "LDRT").dose_extent
    x = grid_axes(extent, spec.dose_spacing_mm)[0]
    target = spec.roi("GTV_LDRT_1").shape
    assert target.xy_bounds()[2] < x[0]  # whole target left of the grid
    assert spec.roi("GTV_LDRT_2").shape.xy_bounds()[0] > x[0]


def test_per_fraction_dose_ground_truth():
    spec = build_spec("compliant")
    peaks = [spec.roi(f"Peak_{i}").shape for i in range(1, 5)]
    for peak in peaks:
        surface = np.add(peak.centre, [[7.5, 0, 0], [0, -7.5, 0], [0, 0, 7.5]])
        assert spec.dose_per_fraction_gy("SFRT", surface) == pytest.approx([10.3] * 3)
    midpoint = np.mean([peaks[0].centre, peaks[1].centre], axis=0)
    valley = 10.3 * math.exp(-0.5 * ((15 * math.sqrt(8 / 3) / 2 - 9.0) / 2.5) ** 2)
    assert spec.dose_per_fraction_gy("SFRT", midpoint) == pytest.approx(valley)  # 4.43 Gy
    assert spec.dose_per_fraction_gy("SFRT", np.array(GTV_SFRT.centre)) < 0.6
    edge = 0.5 * math.erfc(-5.0 / (2.5 * math.sqrt(2.0)))  # 0.977 on the target surface
    for name in ("GTV_SFRT", "GTV_LDRT_1", "GTV_LDRT_2"):
        target = spec.roi(name).shape
        on_surface = np.add(target.centre, [target.radius_mm, 0, 0])
        assert spec.dose_per_fraction_gy("LDRT", on_surface) == pytest.approx(2.0 * edge)
        assert spec.dose_per_fraction_gy("LDRT", np.array(target.centre)) == pytest.approx(2.0)
    for name in ("Brain", "GTV_Brain_1", "GTV_Bone_1", "VB", "SpinalCord"):
        pts = _points_inside(spec.roi(name).shape, 20000)
        for component in ("SFRT", "LDRT"):
            assert spec.dose_per_fraction_gy(component, pts).max() == 0.0, (name, component)


@pytest.mark.parametrize(
    ("variant", "component", "roi", "dose_gy"),
    [
        ("peaks_overdosed_14gy", "SFRT", "Peak_2", 14.0),
        ("peaks_underdosed_6gy", "SFRT", "Peak_2", 6.0),
        ("sfrt_rx_7gy", "SFRT", "Peak_3", 7.21),
        ("valley_4gy", "LDRT", "GTV_SFRT", 4.0),
        ("valley_4gy", "LDRT", "GTV_LDRT_1", 2.0),
        ("ldrt_rx_4gy", "LDRT", "GTV_LDRT_2", 4.0),
        ("ldrt_irradiates_brain_met", "LDRT", "GTV_Brain_1", 2.0),
        ("ldrt_targets_brain_met", "LDRT", "GTV_Brain_1", 2.0),
        ("ldrt_overlaps_bone_met", "LDRT", "GTV_LDRT_2", 2.0),
        ("control_arm", "CONV", "GTV", 2.0),
    ],
)
def test_dose_variants_deliver_what_they_claim(variant, component, roi, dose_gy):
    spec = build_spec(variant)
    centre = np.array(spec.roi(roi).shape.centre)
    assert spec.dose_per_fraction_gy(component, centre) == pytest.approx(dose_gy)


def test_bone_met_gets_ldrt_dose_when_the_target_overlaps_it():
    spec = build_spec("ldrt_overlaps_bone_met")
    pts = _points_inside(spec.roi("GTV_Bone_1").shape, 20000)
    assert spec.dose_per_fraction_gy("LDRT", pts).max() == pytest.approx(2.0, abs=0.01)


# ---------------------------------------------------------------- bad input


def test_bad_input_helpers(tmp_path, course_dir):
    rs = course_dir("compliant") / "RS.dcm"
    cut = write_truncated_copy(rs, tmp_path / "cut.dcm")
    assert cut.stat().st_size == rs.stat().st_size // 2
    assert cut.read_bytes() == rs.read_bytes()[: cut.stat().st_size]
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(write_non_dicom(tmp_path / "log.dcm"))

    orphans = write_dose_without_plan(tmp_path / "orphan")
    assert sorted(f.name for f in orphans) == ["RD.LDRT.dcm", "RD.SFRT.dcm", "RS.dcm"]
    present = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in orphans}
    dose = pydicom.dcmread(tmp_path / "orphan" / "RD.SFRT.dcm", stop_before_pixels=True)
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID not in present

    lonely = write_plan_without_structure_set(tmp_path / "lonely")
    assert "RS.dcm" not in [f.name for f in lonely]
    plan = pydicom.dcmread(tmp_path / "lonely" / "RP.SFRT.dcm")
    present = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in lonely}
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID not in present


def test_unknown_variant_is_named_in_the_error():
    with pytest.raises(KeyError, match="no_such_variant"):
        build_spec("no_such_variant")
