"""The interpolated surface against analytic solids and doses: the accuracy rtcheck promises.

Every expected value is computed here in closed form (or as a 1-D integral with SciPy) from
the analytic solid, never from rtcheck. The bounds are the clinical ones the project set:

* margins and distances between spheres (peaks 8-20 mm across inside GTVs of 50-80 mm, any
  direction, 1-3 mm planes, centres on and between planes) within 0.3 mm where the closest
  points lie between contour planes, within half a spacing where one of them lies in a cap
  (beyond the last plane of its structure, where nothing was drawn);
* volumes of solids of 1 cc and more within 3 % at planes up to 3 mm;
* under a linear dose gradient along z, D95 within 3 %, D99 within 5 % and Dmean within
  0.5 % for spheres, cones and cylinders lying across z, at 2-3 mm planes.

A flat end perpendicular to z (a cylinder or a cone standing along z) lies somewhere
between the last contour plane and the next one: no method can know where, and rtcheck
puts it half a spacing beyond the last plane. Such ends are therefore known to half a
spacing, and the solids here lie across z or are long enough for that not to matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import shapely
from scipy.integrate import quad
from scipy.optimize import brentq

from rtcheck import geometry as g
from rtcheck.course import Contour, Roi
from rtcheck.dose import DoseGrid
from rtcheck.dvh import structure_dose
from rtcheck.interpolation import median

VERTICES = 128  # vertices per round contour: 0.04 % less area than the circle


def ring(points_xy: np.ndarray, z: float) -> Contour:
    return Contour("CLOSED_PLANAR", np.c_[points_xy, np.full(len(points_xy), z)])


def planes(z_min: float, z_max: float, spacing: float, phase: float = 0.0) -> np.ndarray:
    """Contour planes k * spacing + phase strictly inside (z_min, z_max)."""
    k = np.arange(math.floor((z_min - phase) / spacing), math.ceil((z_max - phase) / spacing) + 1)
    z = k * spacing + phase
    return z[(z > z_min) & (z < z_max)]


@dataclass(frozen=True)
class Analytic:
    """A solid with a known section area A(z), contoured as a planning system would."""

    name: str
    z_range: tuple[float, float]
    area: Callable[[float], float]  # mm² at height z
    section: Callable[[float], np.ndarray | None]  # polygon (N, 2) at height z, None if too small

    def roi(self, spacing: float, phase: float = 0.0) -> Roi:
        contours = []
        for z in planes(*self.z_range, spacing, phase):
            pts = self.section(float(z))
            if pts is not None:
                contours.append(ring(pts, float(z)))
        return Roi(1, self.name, None, tuple(contours))

    @property
    def volume_mm3(self) -> float:
        return quad(self.area, *self.z_range, limit=200)[0]

    def above(self, zeta: float) -> float:
        """Fraction of the volume above height zeta."""
        return quad(self.area, zeta, self.z_range[1], limit=200)[0] / self.volume_mm3

    def mean_z(self) -> float:
        return quad(lambda z: z * self.area(z), *self.z_range, limit=200, epsabs=1e-3)[0] / self.volume_mm3


def _circle(cx: float, cy: float, r: float) -> np.ndarray | None:
    if r < 0.5:  # a plane that grazes the solid gets no contour
        return None
    t = np.linspace(0.0, 2 * math.pi, VERTICES, endpoint=False)
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]


def sphere(r: float, c=(0.0, 0.0, 0.0)) -> Analytic:
    cx, cy, cz = c
    return Analytic(
        f"sphere r{r:g}",
        (cz - r, cz + r),
        lambda z: math.pi * max(r * r - (z - cz) ** 2, 0.0),
        lambda z: _circle(cx, cy, math.sqrt(max(r * r - (z - cz) ** 2, 0.0))),
    )


def ellipsoid(a: float, b: float, c: float) -> Analytic:
    def scale(z: float) -> float:
        return math.sqrt(max(1 - (z / c) ** 2, 0.0))

    def section(z: float) -> np.ndarray | None:
        k = scale(z)
        if k * min(a, b) < 0.5:
            return None
        t = np.linspace(0.0, 2 * math.pi, VERTICES, endpoint=False)
        return np.c_[k * a * np.cos(t), k * b * np.sin(t)]

    return Analytic(f"ellipsoid {a:g}x{b:g}x{c:g}", (-c, c), lambda z: math.pi * a * b * scale(z) ** 2, section)


def cylinder_along_z(r: float, length: float) -> Analytic:
    ends = (-length / 2, length / 2)
    return Analytic(f"cylinder r{r:g} along z", ends, lambda z: math.pi * r * r, lambda z: _circle(0, 0, r))


def cylinder_across_z(r: float, length: float, azimuth_deg: float) -> Analytic:
    """Axis in the x-y plane at ``azimuth_deg``: each section a rectangle of width 2 sqrt(r² - z²)."""
    u = np.array([math.cos(math.radians(azimuth_deg)), math.sin(math.radians(azimuth_deg))])
    v = np.array([-u[1], u[0]])

    def half_width(z: float) -> float:
        return math.sqrt(max(r * r - z * z, 0.0))

    def section(z: float) -> np.ndarray | None:
        w = half_width(z)
        if w < 0.25:
            return None
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        return np.array([s * length / 2 * u + q * w * v for s, q in corners])

    return Analytic(f"cylinder r{r:g} across z", (-r, r), lambda z: 2 * half_width(z) * length, section)


def cone_across_z(base_r: float, height: float, azimuth_deg: float) -> Analytic:
    """A cone lying in the x-y plane: apex at the origin, axis at ``azimuth_deg``, base of
    radius ``base_r`` at ``height``. The section at z is bounded by a hyperbola and the base."""
    u = np.array([math.cos(math.radians(azimuth_deg)), math.sin(math.radians(azimuth_deg))])
    v = np.array([-u[1], u[0]])
    slope = base_r / height

    def area(z: float) -> float:
        s0 = abs(z) / slope
        return quad(lambda s: 2 * math.sqrt(max((slope * s) ** 2 - z * z, 0.0)), s0, height)[0] if s0 < height else 0.0

    def section(z: float) -> np.ndarray | None:
        s0 = abs(z) / slope
        if height - s0 < 0.5:
            return None
        w = np.linspace(0.0, 1.0, VERTICES)
        s = s0 + (height - s0) * w**2  # dense near the hyperbola's tip
        q = np.sqrt(np.maximum((slope * s) ** 2 - z * z, 0.0))
        upper = s[:, None] * u + q[:, None] * v
        lower = s[::-1, None] * u - q[::-1, None] * v
        return np.vstack([upper, lower[:-1]])

    return Analytic(f"cone r{base_r:g} h{height:g} across z", (-base_r, base_r), area, section)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


# -- margins and distances -----------------------------------------------------------------
def last_planes(centre_z: float, r: float, spacing: float) -> tuple[float, float]:
    """The lowest and highest plane k * spacing that cut a sphere in a contour."""
    z = planes(centre_z - r, centre_z + r, spacing)
    z = z[r * r - (z - centre_z) ** 2 >= 0.25]
    return float(z.min()), float(z.max())


def in_cap(point_z: float, centre_z: float, r: float, spacing: float) -> bool:
    lo, hi = last_planes(centre_z, r, spacing)
    return not lo <= point_z <= hi


def sphere_solid(r: float, centre: np.ndarray, spacing: float) -> g.Solid:
    return g.solid_from_roi(sphere(r, tuple(centre)).roi(spacing))


CASES = 24


@pytest.mark.parametrize("case", range(CASES))
def test_peak_margin_inside_gtv_within_0_3_mm(case: int) -> None:
    """Peak (8-20 mm across) inside a GTV (50-80 mm across), displaced in a random direction."""
    rng = np.random.default_rng(1000 + case)
    spacing = [1.0, 2.0, 2.5, 3.0][case % 4]
    gtv_r = rng.uniform(25.0, 40.0)
    peak_r = rng.uniform(4.0, 10.0)
    on_plane = case % 3 == 0
    gtv_c = np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), 0.0 if on_plane else rng.uniform(0, spacing)])
    u = unit(rng.normal(size=3)) if case % 6 != 5 else unit([rng.normal(0, 0.1), rng.normal(0, 0.1), 1.0])
    margin = rng.uniform(3.0, 14.0)
    peak_c = gtv_c + u * (gtv_r - peak_r - margin)
    if case % 3 == 1:  # peak centre on a plane as well
        peak_c[2] = round(peak_c[2] / spacing) * spacing
        margin = gtv_r - np.linalg.norm(peak_c - gtv_c) - peak_r
        u = unit(peak_c - gtv_c)
    gtv, peak = sphere_solid(gtv_r, gtv_c, spacing), sphere_solid(peak_r, peak_c, spacing)
    measured = g.margin_mm(peak, gtv)
    cap = in_cap(peak_c[2] + peak_r * u[2], peak_c[2], peak_r, spacing) or in_cap(
        gtv_c[2] + gtv_r * u[2], gtv_c[2], gtv_r, spacing
    )
    bound = spacing / 2 if cap else 0.3
    assert abs(measured - margin) <= bound, (spacing, gtv_r, peak_r, u, margin, measured, cap)
    assert g.is_inside(peak, gtv, margin=measured - 0.01) and not g.is_inside(peak, gtv, margin=measured + 0.01)


@pytest.mark.parametrize("case", range(12))
def test_distance_between_spheres_within_0_3_mm(case: int) -> None:
    """Surface distance between two peaks, or a peak and a structure outside it."""
    rng = np.random.default_rng(2000 + case)
    spacing = [1.0, 2.0, 2.5, 3.0][case % 4]
    r1, r2 = rng.uniform(4.0, 10.0), rng.uniform(4.0, 40.0)
    u = unit(rng.normal(size=3)) if case % 4 != 3 else unit([0.05, 0.02, 1.0])
    gap = rng.uniform(1.0, 15.0)
    c1 = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.0 if case % 2 else rng.uniform(0, spacing)])
    c2 = c1 + u * (r1 + r2 + gap)
    a, b = sphere_solid(r1, c1, spacing), sphere_solid(r2, c2, spacing)
    measured = g.min_distance_mm(a, b)
    cap = in_cap(c1[2] + r1 * u[2], c1[2], r1, spacing) or in_cap(c2[2] - r2 * u[2], c2[2], r2, spacing)
    assert abs(measured - gap) <= (spacing / 2 if cap else 0.3), (spacing, r1, r2, u, gap, measured, cap)
    assert measured == pytest.approx(g.min_distance_mm(b, a), abs=1e-9)


@pytest.mark.parametrize("spacing", [1.0, 2.5, 3.0])
def test_margin_along_z_cap_to_cap_within_half_a_spacing(spacing: float) -> None:
    rng = np.random.default_rng(int(spacing * 10))
    for _ in range(4):
        gtv_c = np.array([0.0, 0.0, rng.uniform(0, spacing)])
        gtv_r, peak_r = rng.uniform(25.0, 40.0), rng.uniform(4.0, 10.0)
        margin = rng.uniform(3.0, 12.0)
        peak_c = gtv_c + np.array([0.0, 0.0, gtv_r - peak_r - margin])
        measured = g.margin_mm(sphere_solid(peak_r, peak_c, spacing), sphere_solid(gtv_r, gtv_c, spacing))
        assert abs(measured - margin) <= spacing / 2


# -- volumes --------------------------------------------------------------------------------
SOLIDS = [
    sphere(6.5),  # 1.15 cc
    sphere(12.0, (0.3, -0.2, 0.7)),
    sphere(35.0, (1.0, 2.0, 1.3)),
    ellipsoid(20.0, 12.0, 30.0),
    ellipsoid(8.0, 10.0, 5.0),
    # a flat end is known to half a spacing (nothing says where between two planes it is):
    # along z, a cylinder is within 3 % when it is longer than a spacing / 3 %
    cylinder_along_z(8.0, 120.0),
    cylinder_across_z(10.0, 40.0, 30.0),
    cylinder_across_z(6.0, 20.0, 0.0),
    # a cone standing along z has a flat base, known to half a spacing like any flat end
    cone_across_z(15.0, 30.0, 20.0),
    cone_across_z(10.0, 25.0, 110.0),
]


@pytest.mark.parametrize("spacing", [1.0, 2.0, 2.5, 3.0])
@pytest.mark.parametrize("solid", SOLIDS, ids=lambda s: s.name)
def test_volumes_within_3_percent(solid: Analytic, spacing: float) -> None:
    truth = solid.volume_mm3 / 1000.0
    assert truth >= 1.0
    for phase in (0.0, 0.37 * spacing, 0.5 * spacing):
        measured = g.solid_from_roi(solid.roi(spacing, phase)).volume_cc
        assert measured == pytest.approx(truth, rel=0.03), phase


# -- DVHs under a linear gradient along z ---------------------------------------------------
def linear_grid(solid: Analytic, gradient_gy_per_mm: float, centre_gy: float, step: float = 2.0) -> DoseGrid:
    z0, z1 = solid.z_range
    reach = max(abs(z0), abs(z1), 45.0) + 3 * step
    x = np.arange(-reach, reach + 1e-9, step) + 0.1
    z = np.arange(z0 - 3 * step, z1 + 3 * step + 1e-9, step) + 0.2
    dose = np.broadcast_to((centre_gy + gradient_gy_per_mm * z)[:, None, None], (z.size, x.size, x.size))
    return DoseGrid(np.ascontiguousarray(dose, dtype=np.float32), x, x, z, "1.2.3", (), "linear dose along z")


DVH_SOLIDS = [
    sphere(10.0),
    sphere(20.0, (0.0, 0.0, 0.6)),
    cone_across_z(15.0, 30.0, 20.0),
    cone_across_z(12.0, 24.0, 110.0),
    cylinder_across_z(10.0, 40.0, 30.0),
    cylinder_across_z(12.0, 30.0, 90.0),
]


@pytest.mark.parametrize("spacing", [2.0, 2.5, 3.0])
@pytest.mark.parametrize("solid", DVH_SOLIDS, ids=lambda s: s.name)
def test_dvh_under_a_gradient_along_z(solid: Analytic, spacing: float) -> None:
    """Dose 20 Gy at z = 0 rising 0.5 Gy per mm: D95, D99 and Dmean against the analytic DVH."""
    centre, gradient = 20.0, 0.5
    drawn = g.solid_from_roi(solid.roi(spacing))
    dvh = structure_dose(linear_grid(solid, gradient, centre), drawn)
    assert dvh.covered_volume_cc == pytest.approx(drawn.volume_cc, rel=1e-6)  # the DVH's volume is the solid's

    def dose_at(percent: float) -> float:
        zeta = brentq(lambda z: solid.above(z) - percent / 100.0, *solid.z_range, xtol=1e-9)
        return centre + gradient * zeta

    assert dvh.d_percent(95) == pytest.approx(dose_at(95), rel=0.03)
    assert dvh.d_percent(99) == pytest.approx(dose_at(99), rel=0.05)
    assert dvh.dmean == pytest.approx(centre + gradient * solid.mean_z(), rel=0.005)


@pytest.mark.parametrize("size", [1, 2, 7, 40, 41])
def test_median_is_numpys(size: int) -> None:
    values = np.random.default_rng(size).normal(10.0, 3.0, size)
    assert median(values) == float(np.median(values))
    assert median(np.round(values)) == float(np.median(np.round(values)))


def sphere_with_holes(
    radius: float, bubbles: list[tuple[float, float, float, float]], spacing: float, phase: float = 0.4
) -> Roi:
    """A sphere with spherical holes (x, y, z, r) inside it, contoured on planes every ``spacing``:
    the outer circle and each hole's circle (even-odd: a hole) on every plane."""
    contours = []
    for z in planes(-radius, radius, spacing, phase):
        outer = _circle(0.0, 0.0, math.sqrt(max(radius**2 - z**2, 0.0)))
        if outer is None:
            continue
        contours.append(ring(outer, float(z)))
        for bx, by, bz, br in bubbles:
            hole = _circle(bx, by, math.sqrt(max(br**2 - (z - bz) ** 2, 0.0)))
            if hole is not None:
                contours.append(ring(hole, float(z)))
    return Roi(1, "bubbles", None, tuple(contours))


@pytest.mark.parametrize("spacing", [2.0, 3.0])
def test_small_holes_do_not_set_a_large_structures_sampling(spacing: float) -> None:
    # a lung-sized sphere with vessel-sized holes that start and end between planes
    radius = 45.0
    bubbles = [(-20.0, 5.0, -12.3, 3.0), (15.0, -10.0, 4.1, 2.5), (0.0, 22.0, 17.7, 3.5), (8.0, 8.0, -25.2, 2.0)]
    truth = 4 / 3 * math.pi * (radius**3 - sum(b[3] ** 3 for b in bubbles)) / 1000
    solid = g.solid_from_roi(sphere_with_holes(radius, bubbles, spacing))
    assert solid.bulk.volume_cc == pytest.approx(truth, rel=0.005)
    assert solid.volume_cc == pytest.approx(truth, rel=0.005)
    # the holes appear and vanish far from the outline: the bulk sampling is the one of the
    # sphere without them (more sub-slabs would not change the volume beyond the bound above)
    plain = g.solid_from_roi(sphere_with_holes(radius, [], spacing))
    assert len(solid.bulk.slabs) == len(plain.bulk.slabs)


def test_a_part_or_hole_that_meets_nothing_keeps_its_section_to_the_middle() -> None:
    """A hole drawn on a plane but not on the next ends between them at the classic half
    spacing, as a part that meets nothing does; so does a hole that starts. Blended with the
    distance to the outline, 14 mm away, the ending hole would close a quarter of the way
    (a drawn valley would then take in its peak's steep dose). Up to the middle each keeps
    its section, drawn in by less than a grid cell as its distances fade."""
    ending, starting, part = (6.0, 0.0, 5.0), (-8.0, 0.0, 4.0), (30.0, 0.0, 3.0)  # (x, y, r)
    contours = []
    for z in (0.0, 3.0, 6.0, 9.0, 12.0):
        contours.append(ring(_circle(0.0, 0.0, 20.0), z))
        for (x, y, r), drawn in ((ending, z <= 3.0), (starting, 6.0 <= z <= 9.0), (part, z <= 3.0)):
            if drawn:
                contours.append(ring(_circle(x, y, r), z))
    solid = g.solid_from_roi(Roi(1, "holes", None, tuple(contours)))

    def around(z: float, where: tuple[float, float, float]) -> float:
        """Area of the section's hole or part around ``where`` (0 where there is none)."""
        section = next(s.shape for s in solid.slabs if s.z_min <= z < s.z_max)
        pieces = shapely.get_parts(section)
        holes = [shapely.Polygon(hole) for piece in pieces for hole in piece.interiors]
        point = shapely.Point(where[:2])
        return sum(p.area for p in [*holes, *pieces] if p.contains(point) and p.area < 200)

    drawn = {where: shapely.Polygon(_circle(*where)).area for where in (ending, starting, part)}
    for t, kept in ((0.05, 0.97), (0.2, 0.9), (0.45, 0.8)):  # fractions of the interval from z = 3 to z = 6
        for where in (ending, part):
            assert kept * drawn[where] <= around(3.0 + 3.0 * t, where) <= 1.01 * drawn[where]
        assert kept * drawn[starting] <= around(6.0 - 3.0 * t, starting) <= 1.01 * drawn[starting]
        assert around(3.0 + 3.0 * t, starting) == around(6.0 - 3.0 * t, ending) == around(6.0 - 3.0 * t, part) == 0.0


@pytest.mark.parametrize("spacing", [2.0, 3.0])
def test_large_holes_keep_setting_the_sampling(spacing: float) -> None:
    # a GTV with peak-sized holes (a drawn valley): the holes are a tenth of its volume
    radius = 35.0
    bubbles = [(-14.0, 0.0, -6.2, 9.0), (14.0, 0.0, 7.9, 9.0), (0.0, 14.0, 0.3, 9.0)]
    truth = 4 / 3 * math.pi * (radius**3 - sum(b[3] ** 3 for b in bubbles)) / 1000
    solid = g.solid_from_roi(sphere_with_holes(radius, bubbles, spacing))
    assert solid.bulk.volume_cc == pytest.approx(truth, rel=0.005)
    assert len(solid.bulk.slabs) > len(solid.slabs) / 2
