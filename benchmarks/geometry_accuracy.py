"""How close is rtcheck's surface to analytic solids? A plain script that prints a table.

For spheres (8-70 mm across), ellipsoids, cylinders along and across z and cones (standing
along z, lying across it), contoured on planes 1, 2, 2.5, 3 and 5 mm apart with random
centres and directions, it prints the largest error against the closed-form truth of

* the margin of a peak (8-20 mm across) inside a GTV (50-70 mm across), and the surface
  distance between two spheres, in random directions;
* volumes;
* the holes of a drawn valley: two spherical holes (a peak's sphere grown by 5 mm, 8-12 mm
  in radius) inside a sphere of 30-40 mm, their volume taken as the plain sphere's minus
  the holed one's (each contoured alike), against the holes' closed-form volume;
* the DVH's D99, D95 and Dmean under linear dose gradients along z (every family) and
  along x (spheres, ellipsoids, cylinders along z: the families whose distribution along
  x is closed-form);

for the interpolated surface (rtcheck today) and, in the same run, for the staircase that
rtcheck used before: each contour plane a slab reaching half-way to its neighbours, half a
spacing beyond the last plane. The analytic solids and their truths are those of the
acceptance tests (tests/test_surface.py), computed without rtcheck.

Run: ``python benchmarks/geometry_accuracy.py [--cases 6]`` from the repository root.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from rtcheck import geometry as g
from rtcheck.dose import DoseGrid
from rtcheck.dvh import structure_dose

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# the acceptance tests' analytic solids
from test_surface import (
    Analytic,
    cone_across_z,
    cylinder_across_z,
    cylinder_along_z,
    ellipsoid,
    sphere,
    sphere_with_holes,
    unit,
)

SPACINGS = (1.0, 2.0, 2.5, 3.0, 5.0)


def staircase(solid: g.Solid) -> g.Solid:
    """The same contours under the previous convention: one slab per contour plane."""
    surface = solid.slabs
    z, shapes, h = surface.plane_z, surface.shapes, surface.spacing_mm
    half = np.diff(z) / 2
    half = np.where(half > 0.75 * h, h / 2, half)
    lo, hi = z - np.r_[h / 2, half], z + np.r_[half, h / 2]
    slabs = tuple(g.Slab(float(a), float(b), float(c), s) for a, b, c, s in zip(z, lo, hi, shapes, strict=True))
    return g.Solid(solid.name, slabs, plane_spacing_mm=h)


def both(roi) -> tuple[g.Solid, g.Solid]:  # type: ignore[no-untyped-def]
    drawn = g.solid_from_roi(roi)
    return drawn, staircase(drawn)


def margins(spacing: float, rng: np.random.Generator, cases: int) -> tuple[float, float]:
    worst = [0.0, 0.0]
    for _ in range(cases):
        gtv_r, peak_r = rng.uniform(25.0, 35.0), rng.uniform(4.0, 10.0)
        gtv_c = np.array([*rng.uniform(-2, 2, 2), rng.uniform(0, spacing)])
        u = unit(rng.normal(size=3))
        margin = rng.uniform(3.0, 12.0)
        peak_c = gtv_c + u * (gtv_r - peak_r - margin)
        gtvs = both(sphere(gtv_r, tuple(gtv_c)).roi(spacing))
        peaks = both(sphere(peak_r, tuple(peak_c)).roi(spacing))
        for k in range(2):
            worst[k] = max(worst[k], abs(g.margin_mm(peaks[k], gtvs[k]) - margin))
    return worst[0], worst[1]


def distances(spacing: float, rng: np.random.Generator, cases: int) -> tuple[float, float]:
    worst = [0.0, 0.0]
    for _ in range(cases):
        r1, r2 = rng.uniform(4.0, 35.0), rng.uniform(4.0, 35.0)
        c1 = np.array([*rng.uniform(-2, 2, 2), rng.uniform(0, spacing)])
        u = unit(rng.normal(size=3))
        gap = rng.uniform(1.0, 15.0)
        a = both(sphere(r1, tuple(c1)).roi(spacing))
        b = both(sphere(r2, tuple(c1 + u * (r1 + r2 + gap))).roi(spacing))
        for k in range(2):
            worst[k] = max(worst[k], abs(g.min_distance_mm(a[k], b[k]) - gap))
    return worst[0], worst[1]


def holes(spacing: float, rng: np.random.Generator, cases: int) -> tuple[float, float]:
    """Largest |relative error| (%) of the holes' volume, interpolated and staircase."""
    worst = [0.0, 0.0]
    for _ in range(cases):
        radius, phase = rng.uniform(30.0, 40.0), rng.uniform(0, spacing)
        # on opposite sides of the centre along a random direction, 3 mm inside the sphere
        u = unit(rng.normal(size=3))
        bubbles = []
        for side in (1.0, -1.0):
            r = rng.uniform(8.0, 12.0)
            c = side * u * rng.uniform(r + 1.5, radius - r - 3.0)
            bubbles.append((float(c[0]), float(c[1]), float(c[2]), r))
        truth = sum(4 / 3 * math.pi * b[3] ** 3 for b in bubbles) / 1000
        plain = both(sphere_with_holes(radius, [], spacing, phase))
        holed = both(sphere_with_holes(radius, bubbles, spacing, phase))
        for k in range(2):
            worst[k] = max(worst[k], 100 * abs((plain[k].volume_cc - holed[k].volume_cc) / truth - 1))
    return worst[0], worst[1]


def _cap(s: float) -> float:
    """Fraction of a ball (or an ellipsoid, in its own units) beyond coordinate s in [-1, 1]."""
    s = min(max(s, -1.0), 1.0)
    return (1 - s) ** 2 * (2 + s) / 4


def _segment(d: float, r: float) -> float:
    """Fraction of a disc of radius r beyond the chord at distance d from its centre."""
    d = min(max(d, -r), r)
    return (r * r * math.acos(d / r) - d * math.sqrt(r * r - d * d)) / (math.pi * r * r)


AlongX = tuple[Callable[[float], float], float]  # fraction beyond x, mean x
Family = Callable[[np.random.Generator], tuple[Analytic, AlongX | None]]


def _sphere(rng: np.random.Generator) -> tuple[Analytic, AlongX]:
    r, c = rng.uniform(4.0, 35.0), rng.uniform(-1, 1, 3)
    return sphere(r, tuple(c)), (lambda x: _cap((x - c[0]) / r), float(c[0]))


def _ellipsoid(rng: np.random.Generator) -> tuple[Analytic, AlongX]:
    a, b, c = rng.uniform(6.0, 30.0, 3)
    return ellipsoid(a, b, c), (lambda x: _cap(x / a), 0.0)


def _cylinder_z(rng: np.random.Generator) -> tuple[Analytic, AlongX]:
    r = rng.uniform(5.0, 15.0)
    return cylinder_along_z(r, rng.uniform(100.0, 160.0)), (lambda x: _segment(x, r), 0.0)


#: Each family makes a solid and, where it is closed-form, the fraction of it beyond x.
FAMILIES: dict[str, Family] = {
    "spheres 8-70 mm": _sphere,
    "ellipsoids": _ellipsoid,
    "cylinders along z": _cylinder_z,
    "cylinders across z": lambda rng: (
        cylinder_across_z(rng.uniform(6.0, 15.0), rng.uniform(20.0, 60.0), rng.uniform(0, 180)),
        None,
    ),
    "cones across z": lambda rng: (
        cone_across_z(rng.uniform(8.0, 15.0), rng.uniform(20.0, 40.0), rng.uniform(0, 180)),
        None,
    ),
}

#: Dose: 20 Gy at the origin rising GRADIENT Gy/mm along x or z.
GRADIENT = 0.5


def grid(solid: Analytic, axis: int) -> DoseGrid:
    """The linear dose along x (axis 0) or z (axis 2) on 2 mm voxels around the solid."""
    z0, z1 = solid.z_range
    reach = max(abs(z0), abs(z1), 45.0) + 6
    xy = np.arange(-reach, reach + 1e-9, 2.0) + 0.1
    z = np.arange(z0 - 6, z1 + 6 + 1e-9, 2.0) + 0.2
    zz, _, xx = np.meshgrid(z, xy, xy, indexing="ij")
    dose = 20.0 + GRADIENT * (xx if axis == 0 else zz)
    return DoseGrid(dose.astype(np.float32), xy, xy, z, "1.2.3", (), "linear dose")


def dvh_truth(above: Callable[[float], float], span: tuple[float, float], mean: float) -> tuple[float, float, float]:
    """D99, D95 and Dmean (Gy) from the fraction of the volume beyond a coordinate."""

    def dose_at(p: float) -> float:
        return 20.0 + GRADIENT * brentq(lambda u: above(u) - p, *span, xtol=1e-9)

    return dose_at(0.99), dose_at(0.95), 20.0 + GRADIENT * mean


def volumes_and_dvh(spacing: float, rng: np.random.Generator, cases: int) -> dict[str, list[float]]:
    """Largest |relative error| (%) per quantity, interpolated and staircase."""
    out: dict[str, list[float]] = {}
    for family, make in FAMILIES.items():
        for _ in range(cases):
            solid, along_x = make(rng)
            truth_cc = solid.volume_mm3 / 1000
            if truth_cc < 1.0:
                continue
            solids = both(solid.roi(spacing, rng.uniform(0, spacing)))
            truths = {"z": dvh_truth(solid.above, solid.z_range, solid.mean_z())}
            if along_x is not None:
                truths["x"] = dvh_truth(along_x[0], (-200.0, 200.0), along_x[1])
            for k, s in enumerate(solids):
                cell = out.setdefault(f"volume, {family}", [0.0, 0.0])
                cell[k] = max(cell[k], 100 * abs(s.volume_cc / truth_cc - 1))
                for axis, (d99, d95, dmean) in truths.items():
                    dvh = structure_dose(grid(solid, 0 if axis == "x" else 2), s)
                    for name, got, want in (
                        ("D99", dvh.d_percent(99), d99),
                        ("D95", dvh.d_percent(95), d95),
                        ("Dmean", dvh.dmean, dmean),
                    ):
                        cell = out.setdefault(f"{name} along {axis}, {family}", [0.0, 0.0])
                        cell[k] = max(cell[k], 100 * abs(got / want - 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="random cases per quantity and spacing")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    holes_rng = np.random.default_rng(2027)  # its own draws: the other rows stay as they were
    rows: dict[str, dict[float, tuple[float, float]]] = {}
    for spacing in SPACINGS:
        rows.setdefault("margin, peak in GTV (mm)", {})[spacing] = margins(spacing, rng, args.cases)
        rows.setdefault("surface distance (mm)", {})[spacing] = distances(spacing, rng, args.cases)
        for name, cell in volumes_and_dvh(spacing, rng, max(2, args.cases // 2)).items():
            rows.setdefault(f"{name} (%)", {})[spacing] = (cell[0], cell[1])
        rows.setdefault("holes' volume, drawn valley (%)", {})[spacing] = holes(spacing, holes_rng, args.cases)
        print(f"  ... {spacing} mm done", file=sys.stderr)
    head = " | ".join(f"{s:g} mm" for s in SPACINGS)
    print(f"| largest error: interpolated / staircase | {head} |")
    print("|---|" + "---|" * len(SPACINGS))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in (cells[s] for s in SPACINGS)) + " |")


if __name__ == "__main__":
    main()
