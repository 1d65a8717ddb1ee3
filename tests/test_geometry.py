"""rtcheck.geometry on analytic shapes: spheres, cylinders and rings contoured with numpy.

Expected values are closed forms (sphere and lens volumes, distances between spheres);
tolerances are the ones the module docstrings promise for the interpolated surface
(in-plane: half the largest outline step between sub-slabs, ``MAX_STEP_MM / 2``).
The acceptance bounds against analytic spheres, solids and doses are in test_surface.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely

from rtcheck import geometry as g
from rtcheck.course import Contour, Roi, SourceFile, StructureSet
from rtcheck.interpolation import MAX_STEP_MM

SPACING = 2.5
#: In-plane accuracy of a slab's section over its z-range: half the largest outline step.
IN_PLANE = MAX_STEP_MM / 2
N_POINTS = 128  # vertices per circle: the inscribed polygon loses 0.04 % of the area


def circle(radius: float, z: float, centre=(0.0, 0.0), n: int = N_POINTS) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.c_[centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t), np.full(n, z)]


def sphere_roi(name: str, r: float, centre=(0.0, 0.0, 0.0), spacing: float = SPACING, number: int = 1) -> Roi:
    """A sphere contoured on the planes k * spacing that cut it."""
    cx, cy, cz = centre
    zs = np.arange(math.ceil((cz - r) / spacing), math.floor((cz + r) / spacing) + 1) * spacing
    rr2 = r * r - (zs - cz) ** 2
    keep = rr2 > 1e-6
    contours = tuple(
        Contour("CLOSED_PLANAR", circle(math.sqrt(q), z, (cx, cy))) for z, q in zip(zs[keep], rr2[keep], strict=True)
    )
    return Roi(number, name, "GTV", contours)


def sphere(name: str, r: float, centre=(0.0, 0.0, 0.0), spacing: float = SPACING) -> g.Solid:
    solid = g.solid_from_roi(sphere_roi(name, r, centre, spacing))
    assert solid.issues == ()
    return solid


def ball_cc(r: float) -> float:
    return 4.0 / 3.0 * math.pi * r**3 / 1000.0


def lens_cc(r1: float, r2: float, d: float) -> float:
    """Volume common to two balls whose centres are d apart."""
    return (
        math.pi
        * (r1 + r2 - d) ** 2
        * (d * d + 2 * d * r2 - 3 * r2 * r2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1 * r1)
        / (12 * d)
        / 1000.0
    )


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


# -- volumes and the slab convention ------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 0.3, 1.25, 1.9])
def test_sphere_volume_within_1_percent(offset):
    s = sphere("GTV", 35.0, (3.0, -2.0, offset))
    assert s.volume_cc == pytest.approx(ball_cc(35.0), rel=0.01)
    assert s.equivalent_sphere_diameter_mm == pytest.approx(70.0, rel=0.004)
    np.testing.assert_allclose(s.centroid_mm, (3.0, -2.0, offset), atol=0.05)
    (x0, y0, z0), (x1, y1, z1) = s.bounds_mm
    assert (x0, x1, y0, y1) == pytest.approx((-32.0, 38.0, -37.0, 33.0), abs=IN_PLANE)
    assert z0 == pytest.approx(offset - 35.0, abs=SPACING / 2) and z1 == pytest.approx(offset + 35.0, abs=SPACING / 2)


def test_slabs_tile_the_interpolated_surface_from_pole_to_pole():
    s = sphere("GTV", 10.0, (0.0, 0.0, 1.0))  # poles at -9 and 11, planes -7.5 .. 10
    assert list(s.slabs.plane_z) == pytest.approx(np.arange(-7.5, 10.1, 2.5))
    lo = np.array([sl.z_min for sl in s.slabs])
    hi = np.array([sl.z_max for sl in s.slabs])
    np.testing.assert_allclose(lo[1:], hi[:-1])  # no gap, no overlap
    assert set(np.round(s.slabs.plane_z, 6)) <= set(np.round(lo, 6))  # planes are slab edges
    assert lo[0] == pytest.approx(-9.0, abs=0.1) and hi[-1] == pytest.approx(11.0, abs=0.1)  # domed caps
    # each slab's section is the sphere's at the slab's middle
    radius = np.sqrt([sl.shape.area / math.pi for sl in s.slabs])
    truth = np.sqrt(np.maximum(100.0 - (np.array([sl.z for sl in s.slabs]) - 1.0) ** 2, 0.0))
    assert np.abs(radius - truth).max() < 0.15


def test_irregular_spacing_and_gaps():
    # a cylinder of radius 20 on planes 0, 2, 3, 5, 7.5, 9 (no gap: all steps <= 1.5 x median 2),
    # then a gap and planes 20, 22: the gap ends both blocks with half the median spacing
    # (the sections do not shrink: a flat end, half a spacing beyond the last plane).
    planes = [0.0, 2.0, 3.0, 5.0, 7.5, 9.0, 20.0, 22.0]
    roi = Roi(1, "Cyl", "ORGAN", tuple(Contour("CLOSED_PLANAR", circle(20.0, z)) for z in planes))
    s = g.solid_from_roi(roi)
    area = shapely.Polygon(circle(20.0, 0)[:, :2]).area
    median = 2.0
    first_block = (9.0 - 0.0) + median  # half a median spacing beyond each end
    second_block = (22.0 - 20.0) + median
    assert s.volume_cc == pytest.approx(area * (first_block + second_block) / 1000.0, rel=1e-9)
    lo = [sl.z_min for sl in s.slabs]
    hi = [sl.z_max for sl in s.slabs]
    assert lo == pytest.approx([-1.0, 0.0, 2.0, 3.0, 5.0, 7.5, 9.0, 19.0, 20.0, 22.0])
    assert hi == pytest.approx([0.0, 2.0, 3.0, 5.0, 7.5, 9.0, 10.0, 20.0, 22.0, 23.0])
    assert s.gaps_mm() == [(9.0, 20.0)]
    assert s.n_components == 2  # the gap separates the two blocks


def test_irregular_sphere_volume():
    rng = np.random.default_rng(3)
    planes = np.cumsum(rng.uniform(1.5, 3.0, 60)) - 70.0
    planes = planes[np.abs(planes) < 35.0]
    roi = Roi(
        1,
        "GTV",
        "GTV",
        tuple(Contour("CLOSED_PLANAR", circle(math.sqrt(35.0**2 - z * z), z)) for z in planes),
    )
    assert g.solid_from_roi(roi).volume_cc == pytest.approx(ball_cc(35.0), rel=0.015)


def test_slab_at_is_lower_inclusive():
    s = sphere("GTV", 10.0)
    assert s.slab_at(0.0).z_min == 0.0  # the boundary belongs to the upper slab
    assert s.slab_at(-1e-9).z_max == 0.0
    assert s.slab_at(s.slabs[-1].z_max) is None
    assert s.slab_at(-100.0) is None


# -- contours: even-odd, repairs and what is reported --------------------------------------
def test_ring_with_island_even_odd():
    contours = []
    for z in (0.0, 2.5, 5.0):
        contours += [
            Contour("CLOSED_PLANAR", circle(20.0, z)),
            Contour("CLOSED_PLANAR", circle(10.0, z)[::-1]),  # orientation does not matter
            Contour("CLOSEDPLANAR_XOR", circle(4.0, z)),
        ]
    s = g.solid_from_roi(Roi(1, "Ring", "ORGAN", tuple(contours)))
    disc = shapely.Polygon(circle(1.0, 0)[:, :2]).area  # unit-radius polygon area
    expected_area = disc * (20.0**2 - 10.0**2 + 4.0**2)
    assert s.slabs.shapes[0].area == pytest.approx(expected_area, rel=1e-9)
    assert s.volume_cc == pytest.approx(expected_area * 7.5 / 1000.0, rel=1e-9)
    assert s.n_components == 2  # the island never touches the ring
    assert s.issues == ()


def test_duplicate_closing_point_is_not_a_vertex():
    pts = circle(10.0, 0.0, n=64)
    closed = np.r_[pts, pts[:1]]
    roi_a = Roi(1, "A", None, (Contour("CLOSED_PLANAR", pts), Contour("CLOSED_PLANAR", circle(10.0, 2.5, n=64))))
    roi_b = Roi(1, "B", None, (Contour("CLOSED_PLANAR", closed), Contour("CLOSED_PLANAR", circle(10.0, 2.5, n=64))))
    a, b = g.solid_from_roi(roi_a), g.solid_from_roi(roi_b)
    assert shapely.get_num_coordinates(b.slabs.shapes[0]) == 65  # 64 vertices + GEOS closing point
    assert b.volume_cc == a.volume_cc
    assert b.issues == ()


def test_self_intersecting_contour_is_repaired_and_reported():
    pts = circle(10.0, 5.0)
    pts[[40, 41]] = pts[[41, 40]]  # two swapped vertices: a tiny bow-tie in the outline
    roi = Roi(7, "PTV", "PTV", (Contour("CLOSED_PLANAR", circle(10.0, 2.5)), Contour("CLOSED_PLANAR", pts)))
    s = g.solid_from_roi(roi)
    assert all(shapely.is_valid(sl.shape) for sl in s.slabs)
    assert s.slabs.shapes[1].area == pytest.approx(s.slabs.shapes[0].area, rel=0.01)
    (issue,) = s.issues
    assert issue.severity == "warning" and issue.roi == "PTV" and issue.z_mm == pytest.approx(5.0)
    assert "intersects itself" in issue.message and "ROI 'PTV' at z = 5.00 mm" in str(issue)


def test_bow_tie_contour_becomes_two_triangles():
    bow = np.array([[0, 0, 0], [10, 10, 0], [10, 0, 0], [0, 10, 0]], dtype=float)
    roi = Roi(1, "X", None, (Contour("CLOSED_PLANAR", bow), Contour("CLOSED_PLANAR", bow + np.array([0.0, 0.0, 2.5]))))
    s = g.solid_from_roi(roi)
    assert s.slabs.shapes[0].area == pytest.approx(50.0)
    assert len(s.issues) == 2


def test_unusable_contours_are_reported_and_left_out():
    tilted = circle(10.0, 5.0)
    tilted[:, 2] = np.linspace(5.0, 9.0, len(tilted))  # spread over 4 mm of z
    roi = Roi(
        3,
        "Cord",
        "ORGAN",
        (
            Contour("CLOSED_PLANAR", circle(10.0, 0.0)),
            Contour("CLOSED_PLANAR", circle(10.0, 2.5)),
            Contour("OPEN_PLANAR", circle(10.0, 2.5)),
            Contour("CLOSED_PLANAR", circle(10.0, 7.5)[:2]),
            Contour("CLOSED_PLANAR", tilted),
        ),
    )
    s = g.solid_from_roi(roi)
    assert list(s.slabs.plane_z) == [0.0, 2.5]
    messages = {(i.severity, i.message.split(";")[0]) for i in s.issues}
    assert ("error", "contour 3 is OPEN_PLANAR, not a closed shape") in messages
    assert ("warning", "a closed contour with 2 distinct point(s) has no area") in messages
    assert ("error", "a closed contour is not planar (its points span 4.00 mm in z)") in messages


def test_slightly_tilted_contour_is_projected_with_a_warning():
    tilted = circle(10.0, 2.5)
    tilted[:, 2] += np.linspace(-0.1, 0.1, len(tilted))
    roi = Roi(1, "A", None, (Contour("CLOSED_PLANAR", circle(10.0, 0.0)), Contour("CLOSED_PLANAR", tilted)))
    s = g.solid_from_roi(roi)
    assert list(s.slabs.plane_z) == pytest.approx([0.0, 2.5])
    assert [i.severity for i in s.issues] == ["warning"]


def test_duplicated_contour_cancels_out_and_is_an_error():
    roi = Roi(
        1,
        "GTV",
        "GTV",
        (
            Contour("CLOSED_PLANAR", circle(10.0, 0.0)),
            Contour("CLOSED_PLANAR", circle(10.0, 0.0)[::-1]),
            Contour("CLOSED_PLANAR", circle(10.0, 2.5)),
            Contour("CLOSED_PLANAR", circle(10.0, 5.0)),
        ),
    )
    s = g.solid_from_roi(roi)
    assert list(s.slabs.plane_z) == [2.5, 5.0]
    assert 0.0 < s.slabs[0].z_min < 2.5  # the structure ends before the cancelled plane
    (issue,) = s.errors
    assert issue.z_mm == 0.0 and "cancel out" in issue.message


def test_point_roi_is_a_point_set():
    roi = Roi(9, "Ref", "MARKER", (Contour("POINT", np.array([[40.0, 0.0, 0.0]])),))
    p = g.solid_from_roi(roi)
    assert p.is_point and not p.has_volume and p.issues == ()
    np.testing.assert_allclose(p.centroid_mm, (40.0, 0.0, 0.0))
    gtv = sphere("GTV", 20.0)
    assert g.min_distance_mm(p, gtv) == pytest.approx(20.0, abs=IN_PLANE)
    assert g.min_distance_mm(gtv, p) == pytest.approx(20.0, abs=IN_PLANE)
    assert g.margin_mm(p, gtv) == pytest.approx(-20.0, abs=IN_PLANE)
    inside = g.solid_from_roi(Roi(9, "Iso", "ISOCENTER", (Contour("POINT", np.array([[5.0, 0.0, 0.0]])),)))
    assert g.margin_mm(inside, gtv) == pytest.approx(15.0, abs=IN_PLANE)
    with pytest.raises(g.GeometryError, match=r"'Ref'.*POINT ROI"):
        _ = p.volume_cc


def test_roi_without_closed_contour_fails_closed():
    roi = Roi(4, "Line", None, (Contour("OPEN_PLANAR", circle(5.0, 0.0)),))
    s = g.solid_from_roi(roi)
    assert not s.has_volume
    assert [i.severity for i in s.issues] == ["error", "error"]
    with pytest.raises(g.GeometryError, match=r"no volume for structure 'Line'.*OPEN_PLANAR"):
        _ = s.volume_cc
    empty = g.solid_from_roi(Roi(5, "Empty", None, ()))
    with pytest.raises(g.GeometryError, match="'Empty'"):
        g.min_distance_mm(empty, sphere("A", 5.0))


def test_single_plane_roi_needs_a_spacing():
    roi = Roi(1, "Flat", None, (Contour("CLOSED_PLANAR", circle(10.0, 0.0)),))
    with pytest.raises(g.GeometryError, match="'Flat' is drawn on a single plane"):
        g.solid_from_roi(roi)
    assert g.solid_from_roi(roi, typical_spacing_mm=3.0).slabs[0].thickness == 3.0


# -- components -----------------------------------------------------------------------------
def test_two_disjoint_spheres_are_two_components():
    a = sphere_roi("A", 10.0, (0.0, 0.0, 0.0))
    b = sphere_roi("B", 6.0, (30.0, 0.0, 10.0))
    s = g.solid_from_roi(Roi(1, "Mets", "GTV", a.contours + b.contours))
    parts = s.components()
    assert s.n_components == 2
    assert [p.name for p in parts] == ["Mets #1", "Mets #2"]  # largest first
    # A ends, and B starts, between planes that hold the other one only: each gets the
    # half-spacing end there; and where a plane holds both, their summed area says nothing
    # about each, so the surface between such planes is a frustum (rtcheck.interpolation)
    assert parts[0].volume_cc == pytest.approx(ball_cc(10.0), rel=0.04)
    assert parts[1].volume_cc == pytest.approx(ball_cc(6.0), rel=0.04)
    assert parts[0].volume_cc + parts[1].volume_cc == pytest.approx(s.volume_cc, rel=1e-12)
    np.testing.assert_allclose(parts[1].centroid_mm, (30.0, 0.0, 10.0), atol=0.1)


def test_spheres_touching_only_at_a_point_are_two_components():
    a = sphere_roi("A", 10.0, (0.0, 0.0, 0.0))
    b = sphere_roi("B", 10.0, (20.0, 0.0, 0.0))
    s = g.solid_from_roi(Roi(1, "Mets", "GTV", a.contours + b.contours))
    assert s.n_components == 2


# -- relations ------------------------------------------------------------------------------
def test_overlap_of_intersecting_spheres_is_the_lens():
    a = sphere("A", 20.0)
    b = sphere("B", 15.0, (25.0, 0.0, 0.0))
    assert g.overlap_volume_cc(a, b) == pytest.approx(lens_cc(20.0, 15.0, 25.0), rel=0.02)
    assert g.overlap_fraction(b, a) == pytest.approx(lens_cc(20.0, 15.0, 25.0) / ball_cc(15.0), rel=0.02)
    assert g.overlap_volume_cc(a, sphere("C", 5.0, (40.0, 0.0, 0.0))) == 0.0


def test_in_plane_distance_within_a_sub_slab_step():
    a = sphere("A", 10.0)
    b = sphere("B", 7.5, (40.0, 0.0, 0.0))
    assert g.min_distance_mm(a, b) == pytest.approx(22.5, abs=IN_PLANE)
    assert g.centre_distance_mm(a, b) == pytest.approx(40.0, abs=0.01)
    assert g.min_distance_mm(a, sphere("C", 15.0, (20.0, 0.0, 0.0))) == 0.0


def _directions(n: int, max_abs_uz: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        u = unit(rng.normal(size=3))
        if abs(u[2]) <= max_abs_uz:
            out.append(u)
    return out


@pytest.mark.parametrize("spacing", [2.5, 1.0])
def test_oblique_distances_within_half_spacing(spacing):
    """Up to 45 degrees from the slice plane, the distance is within half a spacing."""
    rng = np.random.default_rng(11)
    for u in _directions(10, math.sqrt(0.5), seed=int(spacing * 10)):
        c1 = rng.uniform(-2.0, 2.0, 3)
        gap = rng.uniform(3.0, 25.0)
        c2 = c1 + u * (7.5 + 10.0 + gap)
        d = g.min_distance_mm(sphere("A", 7.5, c1, spacing), sphere("B", 10.0, c2, spacing))
        assert d == pytest.approx(gap, abs=spacing / 2), u


def test_distance_along_z_within_one_spacing():
    """Two caps facing along z: each is known to +-half a spacing (the slab convention)."""
    for dz in (0.0, 0.4, 0.9, 1.6, 2.2):
        a = sphere("A", 7.5, (0.0, 0.0, 0.3))
        b = sphere("B", 10.0, (0.0, 0.0, 0.3 + 7.5 + 10.0 + 12.0 + dz))
        assert g.min_distance_mm(a, b) == pytest.approx(12.0 + dz, abs=SPACING)


@pytest.mark.parametrize(("spacing", "max_abs_uz", "tolerance"), [(2.5, 0.71, 1.25), (1.0, 0.71, 0.5), (2.5, 1.0, 2.5)])
def test_margin_inside_gtv(spacing, max_abs_uz, tolerance):
    """Peak (r 7.5) inside a GTV (r 35): margin = 35 - offset - 7.5.

    Within half a spacing up to 45 degrees from the slice plane; within one spacing in any
    direction (the peak's cap and the GTV's cap each known to +-half a spacing).
    """
    rng = np.random.default_rng(5)
    centre = np.array([0.4, -0.3, 0.2])
    gtv = sphere("GTV", 35.0, centre, spacing)
    for u in _directions(10, max_abs_uz, seed=int(spacing * 10)):
        off = rng.uniform(0.0, 20.0)
        peak = sphere("Peak", 7.5, centre + u * off, spacing)
        m = g.margin_mm(peak, gtv)
        assert m == pytest.approx(35.0 - off - 7.5, abs=tolerance), (u, off)
        assert g.is_inside(peak, gtv, margin=m - 0.01) and not g.is_inside(peak, gtv, margin=m + 0.01)


def test_margin_through_the_cap():
    gtv = sphere("GTV", 35.0, (0.0, 0.0, 1.25))  # poles mid-way between planes: caps exact
    peak = sphere("Peak", 7.5, (0.0, 0.0, 1.25 + 20.0))
    assert g.margin_mm(peak, gtv) == pytest.approx(7.5, abs=SPACING / 2)
    assert g.is_inside(peak, gtv, margin=5.0)
    assert not g.is_inside(peak, gtv, margin=10.0)


def test_protruding_peak_has_negative_margin():
    gtv = sphere("GTV", 35.0)
    peak = sphere("Peak", 7.5, (31.5, 0.0, 0.0))  # sticks out 4 mm in-plane
    assert g.margin_mm(peak, gtv) == pytest.approx(-4.0, abs=IN_PLANE)
    assert not g.is_inside(peak, gtv)
    u = unit((1.0, 1.0, 0.8))
    oblique = sphere("Peak", 7.5, u * 31.5)
    assert g.margin_mm(oblique, gtv) == pytest.approx(-4.0, abs=SPACING / 2)


# -- derived structures ---------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 0.7, 1.25])
def test_expansion_and_contraction_of_a_sphere(offset):
    s = sphere("GTV", 35.0, (0.0, 0.0, offset))
    grown = g.expand(s, 5.0)
    shrunk = g.contract(s, 5.0)
    assert grown.name == "GTV + 5 mm" and shrunk.name == "GTV - 5 mm"
    assert grown.volume_cc == pytest.approx(ball_cc(40.0), rel=0.01)
    assert shrunk.volume_cc == pytest.approx(ball_cc(30.0), rel=0.01)
    # both stand on planes of the input's spacing and are interpolated like drawn structures
    assert grown.slabs.plane_z[-1] - grown.slabs.plane_z[-2] == pytest.approx(SPACING)
    assert grown.bounds_mm[:, 2] == pytest.approx((offset - 40.0, offset + 40.0), abs=0.25)
    assert shrunk.bounds_mm[:, 2] == pytest.approx((offset - 30.0, offset + 30.0), abs=0.25)
    assert g.margin_mm(s, grown) == pytest.approx(5.0, abs=0.3)
    assert g.margin_mm(shrunk, s) == pytest.approx(5.0, abs=0.3)


def test_expansion_fills_a_gap_it_reaches_across():
    planes = [0.0, 2.5, 5.0, 15.0, 17.5, 20.0]  # a 10 mm gap
    roi = Roi(1, "Cyl", None, tuple(Contour("CLOSED_PLANAR", circle(10.0, z)) for z in planes))
    s = g.solid_from_roi(roi)
    assert s.n_components == 2
    assert g.expand(s, 5.0).n_components == 1
    assert g.expand(s, 2.0).n_components == 2


def test_contraction_stops_at_caps_and_gaps():
    planes = np.arange(0.0, 20.1, 2.5)
    roi = Roi(1, "Cyl", None, tuple(Contour("CLOSED_PLANAR", circle(10.0, z)) for z in planes))
    s = g.solid_from_roi(roi)  # z from -1.25 to 21.25 (flat ends), radius 10
    shrunk = g.contract(s, 3.0)  # z from 1.75 to 18.25: planes 2.5 .. 17.5
    assert list(shrunk.slabs.plane_z) == pytest.approx([2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5])
    area = shapely.Polygon(circle(7.0, 0)[:, :2]).area
    assert shrunk.slabs.shapes[0].area == pytest.approx(area, rel=0.005)
    assert g.contract(s, 12.0).slabs == ()


def test_valley_is_gtv_minus_expanded_peaks():
    gtv = sphere("GTV", 35.0)
    peaks = [sphere(f"Peak_{k}", 7.5, c) for k, c in enumerate([(-15.0, 0.0, 0.0), (15.0, 0.0, 0.0)])]
    grown = [g.expand(p, 5.0) for p in peaks]
    valley = g.difference(gtv, *grown, name="Valley")
    assert valley.name == "Valley"
    expected = ball_cc(35.0) - 2 * ball_cc(12.5)
    assert valley.volume_cc == pytest.approx(expected, rel=0.02)
    assert valley.volume_cc == pytest.approx(expected, rel=0.01)
    assert g.min_distance_mm(valley, peaks[0]) == pytest.approx(5.0, abs=0.3)
    assert g.overlap_volume_cc(valley, peaks[1]) == 0.0


def test_union_intersection_difference_volumes_agree():
    a = sphere("A", 20.0)
    b = sphere("B", 15.0, (25.0, 0.0, 1.0))
    inter = g.intersection(a, b)
    assert inter.volume_cc == pytest.approx(g.overlap_volume_cc(a, b), rel=1e-9)
    assert g.union(a, b).volume_cc == pytest.approx(a.volume_cc + b.volume_cc - inter.volume_cc, rel=1e-9)
    assert g.difference(a, b).volume_cc == pytest.approx(a.volume_cc - inter.volume_cc, rel=1e-9)
    assert g.union(a, b).name == "A | B" and inter.name == "A & B"
    assert g.intersection(a, sphere("C", 5.0, (60.0, 0.0, 0.0))).slabs == ()


def test_derived_solids_carry_the_issues_of_their_inputs():
    pts = circle(10.0, 2.5)
    pts[[40, 41]] = pts[[41, 40]]
    bad = g.solid_from_roi(
        Roi(1, "Bad", None, (Contour("CLOSED_PLANAR", circle(10.0, 0.0)), Contour("CLOSED_PLANAR", pts)))
    )
    assert g.expand(bad, 2.0).issues == bad.issues
    assert g.union(bad, sphere("A", 5.0)).issues == bad.issues


def test_solid_rejects_unsorted_slabs():
    box = shapely.box(0, 0, 1, 1)
    with pytest.raises(ValueError, match="sorted"):
        g.Solid("X", (g.Slab(5.0, 4.0, 6.0, box), g.Slab(0.0, -1.0, 1.0, box)))


# -- the cache ------------------------------------------------------------------------------
def _structure_set() -> StructureSet:
    source = SourceFile(Path("rs.dcm"), "RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3", "1.2.3", "0" * 64)
    flat = Roi(3, "Marker", "MARKER", (Contour("CLOSED_PLANAR", circle(2.0, 0.0)),))
    rois = {1: sphere_roi("GTV_SFRT", 20.0, number=1), 2: sphere_roi("Peak_1", 5.0, number=2), 3: flat}
    return StructureSet(source, "1.2.3.4", rois)


def test_cache_builds_each_structure_once():
    cache = g.SolidCache(_structure_set())
    gtv = cache.get("gtv_sfrt")
    assert cache.get(1) is gtv and cache["GTV_SFRT"] is gtv
    assert cache.get("Marker").slabs[0].thickness == pytest.approx(2.5)  # the structure set's spacing
    valley = cache.add(g.difference(gtv, g.expand(cache.get("Peak_1"), 5.0), name="Valley"))
    assert cache.get("valley") is valley
    with pytest.raises(g.GeometryError, match=r"rs\.dcm: no ROI named 'PTV'"):
        cache.get("PTV")
    with pytest.raises(g.GeometryError, match="no ROI number 7"):
        cache.get(7)
    with pytest.raises(ValueError, match="name of a ROI"):
        cache.add(g.expand(gtv, 1.0, name="Peak_1"))
    assert cache.issues() == []
