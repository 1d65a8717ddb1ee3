"""The DVH engine against closed-form answers: spheres, cylinders and polygons in linear and
Gaussian dose fields, on in-memory dose grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from rtcheck.course import Contour, Roi
from rtcheck.dose import DoseError, DoseGrid
from rtcheck.dvh import point_doses_gy, structure_dose, voxelise
from rtcheck.geometry import Slab, Solid

SPACING = 2.5


def make_grid(field, x, y, z) -> DoseGrid:
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return DoseGrid(field(xx, yy, zz).astype(np.float32), x, y, z, "1.2.3", (), "in-memory test grid")


def cube_grid(field, half: float = 45.0, spacing: float = SPACING, offset: float = 0.3) -> DoseGrid:
    axis = np.arange(-half, half + 1e-9, spacing) + offset
    return make_grid(field, axis, axis, axis)


def prism(name: str, shape, z_planes: np.ndarray, spacing: float) -> Solid:
    """A solid with the same cross-section on every plane (slabs of the given spacing)."""
    return Solid(name, tuple(Slab(z, z - spacing / 2, z + spacing / 2, shape) for z in z_planes))


def sphere(radius: float, centre, spacing: float = SPACING, name: str = "sphere") -> Solid:
    """A sphere contoured on planes k * spacing, as a planning system would draw it."""
    cx, cy, cz = centre
    k = np.arange(math.ceil((cz - radius) / spacing), math.floor((cz + radius) / spacing) + 1)
    slabs = []
    for z in k * spacing:
        r2 = radius**2 - (z - cz) ** 2
        if r2 > 0:
            circle = shapely.Point(cx, cy).buffer(math.sqrt(r2), quad_segs=64)
            slabs.append(Slab(z, z - spacing / 2, z + spacing / 2, circle))
    return Solid(name, tuple(slabs))


def sphere_cap_fraction(s: float) -> float:
    """Fraction of a unit sphere's volume with coordinate u >= s along any axis."""
    return (1 - s) ** 2 * (2 + s) / 4


def sphere_cap_inverse(fraction: float) -> float:
    lo, hi = -1.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sphere_cap_fraction(mid) > fraction else (lo, mid)
    return (lo + hi) / 2


def rel(a: float, b: float) -> float:
    return abs(a / b - 1)


# ------------------------------------------------------------------------ spheres, closed form

GRADIENT = np.array([1.0, 0.5, 0.3]) / np.linalg.norm([1.0, 0.5, 0.3])
CENTRES = {5.0: (0.7, -0.4, 0.2), 6.0: (-1.1, 0.9, 0.6), 8.0: (0.3, 1.2, -0.9), 10.6: (1.0, -0.2, 0.4),
           12.0: (-0.6, -1.0, 1.1), 16.0: (0.2, 0.8, -0.3), 20.0: (-1.2, 0.1, 0.9)}  # fmt: skip


@pytest.mark.parametrize("radius", sorted(CENTRES))
def test_sphere_in_linear_gradient(radius: float) -> None:
    c = np.array(CENTRES[radius])
    g = 0.4  # Gy/mm along an oblique direction
    grid = cube_grid(
        lambda x, y, z: 20 + g * ((x - c[0]) * GRADIENT[0] + (y - c[1]) * GRADIENT[1] + (z - c[2]) * GRADIENT[2])
    )
    sd = structure_dose(grid, sphere(radius, c))
    volume = 4 / 3 * math.pi * radius**3 / 1000
    big = volume >= 5
    tol = 0.02 if big else 0.05
    if big:
        assert rel(sd.volume_cc, volume) < 0.01
    assert rel(sd.dmean, 20.0) < (0.01 if big else 0.02)
    for p in (95, 5):
        expected = 20 + g * radius * sphere_cap_inverse(p / 100)
        assert rel(sd.d_percent(p), expected) < tol, p


@pytest.mark.parametrize("radius", sorted(CENTRES))
def test_sphere_in_gaussian_peak(radius: float) -> None:
    """An SFRT vertex: a Gaussian dose peak centred on the sphere (60 % of the peak at its edge
    for the larger spheres, 70 % for the small ones)."""
    c = np.array(CENTRES[radius])
    sigma, peak = max(6.0, radius), 10.0
    grid = cube_grid(
        lambda x, y, z: peak * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * sigma**2))
    )
    sd = structure_dose(grid, sphere(radius, c))
    volume = 4 / 3 * math.pi * radius**3 / 1000
    big = volume >= 5
    rho = np.linspace(0, radius, 20001)
    dmean = peak * 3 / radius**3 * np.trapezoid(rho**2 * np.exp(-(rho**2) / (2 * sigma**2)), rho)
    assert rel(sd.dmean, dmean) < (0.01 if big else 0.02)
    for p in (95, 5):
        expected = peak * math.exp(-((radius * (p / 100) ** (1 / 3)) ** 2) / (2 * sigma**2))
        assert rel(sd.d_percent(p), expected) < (0.02 if big else 0.05), p


def test_small_uniform_sphere_d95_is_the_dose() -> None:
    """0.9 cc at a uniform 10 Gy: dicompyler-core's look-up returns D95 = 0 here (a tie in its bin look-up)."""
    sd = structure_dose(cube_grid(lambda x, y, z: np.full_like(x, 10.0)), sphere(6.0, (0.7, -0.4, 0.2)))
    assert 0.85 < sd.volume_cc < 0.95
    for p in (0, 2, 50, 95, 98, 100):
        assert sd.d_percent(p) == pytest.approx(10.0, abs=1e-5)
    assert sd.dmean == pytest.approx(10.0, abs=1e-5)
    assert sd.d_cc(0.03) == pytest.approx(10.0, abs=1e-5)
    assert sd.v_percent(10.0) == pytest.approx(100.0)
    assert sd.v_gy(10.001) == 0.0


# ------------------------------------------------------------------------ cylinders and polygons


def circle_segment_area(radius: float, distance: float) -> float:
    """Area of the part of a disc beyond a chord at ``distance`` from its centre."""
    d = np.clip(distance, -radius, radius)
    return radius**2 * math.acos(d / radius) - d * math.sqrt(radius**2 - d**2)


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.8, 1.25])
def test_cord_sized_cylinder_in_steep_gradient(offset: float) -> None:
    """A 6 mm-radius cylinder (a spinal cord) on 2.5 mm grids, dose rising 2 Gy/mm along x:
    the volume is exact, and every D_x is within a quarter voxel of the closed form."""
    radius, length, cx, g = 6.0, 100.0, 0.8, 2.0
    planes = np.arange(-50 + 1.25, 50, 2.5)
    solid = prism("cord", shapely.Point(cx, 0.4).buffer(radius, quad_segs=128), planes, 2.5)
    grid = cube_grid(lambda x, y, z: 30 + g * x, half=60, offset=offset)
    sd = structure_dose(grid, solid)
    exact = math.pi * radius**2 * length / 1000
    assert rel(sd.volume_cc, exact) < 0.03
    assert rel(sd.covered_volume_cc, sd.volume_cc) < 1e-12
    assert sd.dmean == pytest.approx(30 + g * cx, abs=0.005)
    for p in (2, 5, 50, 95, 98):
        lo, hi = -radius, radius  # chord position leaving p % of the disc on its +x side
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if circle_segment_area(radius, mid) > p / 100 * math.pi * radius**2 else (lo, mid)
        assert sd.d_percent(p) == pytest.approx(30 + g * (cx + lo), abs=g * SPACING / 4), p
    for x_cut in (-5.0, -2.0, 0.0, 1.7, 4.0):
        expected = circle_segment_area(radius, x_cut) * length / 1000
        assert sd.v_gy(30 + g * (cx + x_cut)) == pytest.approx(expected, abs=0.05 * exact)


@pytest.mark.parametrize("radius", [6.0, 15.0])
def test_cylinder_in_gaussian_dose(radius: float) -> None:
    """A cylinder along z under a dose peaked on its axis, D0 exp(-rho^2 / 2 sigma^2): the
    fraction of the volume within rho is (rho / r)^2, so D_p% and Dmean are closed forms."""
    sigma, peak, length, c = 8.0, 10.0, 60.0, (0.6, -0.9)
    planes = np.arange(-30 + 1.25, 30, 2.5)
    solid = prism("cylinder", shapely.Point(*c).buffer(radius, quad_segs=128), planes, 2.5)
    grid = cube_grid(lambda x, y, z: peak * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * sigma**2)), half=40)
    sd = structure_dose(grid, solid)
    volume = math.pi * radius**2 * length / 1000
    tol = 0.02 if volume >= 5 else 0.05
    assert rel(sd.volume_cc, volume) < (0.01 if volume >= 5 else 0.03)
    dmean = peak * 2 * sigma**2 / radius**2 * (1 - math.exp(-(radius**2) / (2 * sigma**2)))
    assert rel(sd.dmean, dmean) < 0.01
    for p in (95, 50, 5):
        expected = peak * math.exp(-((radius * math.sqrt(p / 100)) ** 2) / (2 * sigma**2))
        assert rel(sd.d_percent(p), expected) < tol, p


@pytest.mark.parametrize(
    "shape",
    [
        shapely.Polygon([(-20, -15), (20, -15), (20, 15), (-20, 15), (-20, 5), (10, 5), (10, -5), (-20, -5)]),  # C
        shapely.Point(0, 0).buffer(18).difference(shapely.Point(2, 1).buffer(8)),  # ring with a hole
        shapely.MultiPolygon([shapely.box(-25, -10, -12, 10), shapely.Point(12, 3).buffer(9)]),
    ],
    ids=["concave", "hole", "two-parts"],
)
def test_polygons_in_linear_field_match_clipped_areas(shape) -> None:
    """For D = a + g x, V(D >= d) is the thickness times the area of the shape right of a line:
    a closed form computed here with shapely clipping, independently of the scan-line fill.
    (Interior voxels are split into sub-voxels of a third of a voxel here, so a threshold
    along a voxel column is resolved to that: 2 % of these volumes.)"""
    planes = np.arange(-10, 10.1, 2.0)
    solid = prism("polygon", shape, planes, 2.0)
    grid = cube_grid(lambda x, y, z: 10 + 0.5 * x)
    sd = structure_dose(grid, solid)
    thickness = 2.0 * planes.size
    assert sd.volume_cc == pytest.approx(shape.area * thickness / 1000, rel=1e-9)
    assert sd.dmean == pytest.approx(10 + 0.5 * shape.centroid.x, rel=2e-4)
    for x_cut in np.linspace(-20, 20, 9):
        right = shapely.clip_by_rect(shape, x_cut, -100, 100, 100).area * thickness / 1000
        assert sd.v_gy(10 + 0.5 * x_cut) == pytest.approx(right, abs=0.02 * sd.volume_cc)


def test_thin_misaligned_slabs_in_z_gradient() -> None:
    """1 mm slabs against 2.5 mm dose planes: slab pieces are merged per voxel and the dose is
    interpolated to their z-centroid, so a dose linear in z gives the closed form."""
    z0, z1 = -12.3, 17.7  # 30 planes of 1 mm
    planes = np.arange(z0 + 0.5, z1, 1.0)
    solid = prism("thin", shapely.box(-10, -10, 10, 10), planes, 1.0)
    grid = cube_grid(lambda x, y, z: 5 + 0.2 * z)
    sd = structure_dose(grid, solid)
    assert sd.volume_cc == pytest.approx(0.4 * 30 / 1, rel=1e-9)
    assert sd.dmean == pytest.approx(5 + 0.2 * (z0 + z1) / 2, rel=1e-5)
    for p in (2, 50, 95):
        assert sd.d_percent(p) == pytest.approx(5 + 0.2 * (z1 - p / 100 * (z1 - z0)), abs=0.2 * 2.5 * 0.5)


def test_non_uniform_dose_planes() -> None:
    x = y = np.arange(-30, 30.1, 2.5)
    z = np.array([-30, -26, -21, -18, -15.5, -13, -10, -5, 0, 2.5, 5, 7.5, 12, 20, 30], dtype=float)
    grid = make_grid(lambda x, y, z: 5 + 0.3 * z + 0.1 * x, x, y, z)
    planes = np.arange(-19.5, 19.6, 3.0)
    solid = prism("box", shapely.box(-8, -8, 8, 8), planes, 3.0)
    sd = structure_dose(grid, solid)
    assert sd.volume_cc == pytest.approx(16 * 16 * 3 * planes.size / 1000, rel=1e-9)
    assert sd.dmean == pytest.approx(5 + 0.3 * planes.mean(), rel=1e-5)


# ------------------------------------------------------------------------ coverage and errors


def test_structure_partly_outside_grid_reports_uncovered_volume() -> None:
    grid = cube_grid(lambda x, y, z: 10 + 0.1 * z, half=20, offset=0.0)  # voxel box [-21.25, 21.25]^3
    planes = np.arange(-10, 40.1, 2.5)  # slabs [-11.25, 41.25]: 20 mm above the grid
    shape = shapely.box(0, -5, 30, 5)  # 8.75 mm beyond the grid in x
    sd = structure_dose(grid, prism("long", shape, planes, 2.5))
    expected_covered = 21.25 * 10 * (21.25 + 11.25) / 1000
    assert sd.volume_cc == pytest.approx(30 * 10 * 52.5 / 1000)
    assert sd.covered_volume_cc == pytest.approx(expected_covered)
    assert sd.uncovered_cc == pytest.approx(sd.volume_cc - expected_covered)
    with pytest.raises(DoseError, match="lie outside the dose grid"):
        sd.d_percent(95)
    with pytest.raises(DoseError, match="'long'"):
        _ = sd.dmean
    part = sd.covered_part()
    assert float(part.weight_cc.sum()) == pytest.approx(expected_covered)
    assert part.dmean == pytest.approx(10 + 0.1 * (21.25 - 11.25) / 2, rel=1e-4)


def test_structure_outside_grid_and_empty_structure() -> None:
    grid = cube_grid(lambda x, y, z: np.ones_like(x), half=10)
    far = structure_dose(grid, prism("far", shapely.box(100, 100, 110, 110), np.array([0.0]), 2.5))
    assert far.covered_volume_cc == 0 and far.uncovered_cc == pytest.approx(0.25)
    with pytest.raises(DoseError, match="entirely outside"):
        far.covered_part().d_percent(50)
    with pytest.raises(DoseError, match="no volume"):
        structure_dose(grid, Solid("empty", ()))


def test_metric_edges_and_scaling() -> None:
    grid = cube_grid(lambda x, y, z: 20 + 0.5 * x)
    sd = structure_dose(grid, sphere(12.0, (0.0, 0.0, 0.0)))
    assert sd.d_percent(0) == pytest.approx(sd.dmax)
    assert sd.d_percent(100) == pytest.approx(sd.dmin)
    assert sd.dmax <= 20 + 0.5 * 12 and sd.dmin >= 20 - 0.5 * 12
    assert sd.d_cc(0.03) <= sd.dmax
    assert sd.v_percent(sd.dmin) == pytest.approx(100)
    with pytest.raises(DoseError, match="D20cc asked"):
        sd.d_cc(20)
    third = sd.scaled(1 / 3)
    assert third.d_percent(95) == pytest.approx(sd.d_percent(95) / 3, rel=1e-6)
    assert third.volume_cc == sd.volume_cc


def test_dicompyler_export_agrees_with_samples() -> None:
    grid = cube_grid(lambda x, y, z: 20 + 0.5 * x)
    sd = structure_dose(grid, sphere(12.0, (0.0, 0.0, 0.0), name="GTV"))
    dvh = sd.to_dicompyler()
    assert dvh.dvh_type == "cumulative" and dvh.volume_units == "cm3" and dvh.name == "GTV"
    assert dvh.volume == pytest.approx(sd.volume_cc)
    assert dvh.mean == pytest.approx(sd.dmean, abs=0.01)
    assert float(dvh.counts[int(20 / 0.01)]) == pytest.approx(sd.v_gy(20.0), abs=1e-9)


def test_point_doses() -> None:
    grid = cube_grid(lambda x, y, z: 1 + 0.1 * x + 0.2 * y + 0.3 * z)
    roi = Roi(1, "REF", "MARKER", (Contour("POINT", np.array([[1.1, -2.2, 3.3]])),))
    assert point_doses_gy(grid, roi)[0] == pytest.approx(1 + 0.11 - 0.44 + 0.99)
    far = Roi(2, "FAR", "MARKER", (Contour("POINT", np.array([[100.0, 0.0, 0.0]])),))
    with pytest.raises(DoseError, match="outside the dose grid"):
        point_doses_gy(grid, far)


def test_one_voxelisation_serves_every_dose_of_the_grid() -> None:
    """Voxelising depends on the grid's geometry only: the plan doses of a course share it."""
    solid = sphere(8.0, (0.7, -0.4, 0.2))
    gradient = cube_grid(lambda x, y, z: 20 + 0.5 * x)
    uniform = cube_grid(lambda x, y, z: np.full_like(x, 3.0))
    voxels = voxelise(gradient, solid)
    assert voxels.dose(uniform).d_percent(95) == pytest.approx(3.0)
    assert voxels.dose(gradient).d_percent(95) == structure_dose(gradient, solid).d_percent(95)
    with pytest.raises(ValueError, match="voxelised on another grid"):
        voxels.dose(cube_grid(lambda x, y, z: x, spacing=2.0))
