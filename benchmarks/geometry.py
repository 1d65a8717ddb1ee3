"""How fast is rtcheck.geometry on a whole course? A plain script that prints numbers.

Builds two synthetic structure sets with numpy (no DICOM):

* ``example``: the trial's typical case: a GTV of radius 35 mm with 4 peaks of radius
  7.5 mm, two other metastases, lungs, heart, oesophagus, cord, trachea, body and a few
  more (18 ROIs) contoured every 2.5 mm;
* ``stress``: the same anatomy with 30 peaks, contoured every 1 mm.

and times what the protocol's geometric rules ask: building every solid (the contours;
the interpolated surface of a structure is built by the first measure that needs it, and
that time is counted there), volumes, pairwise peak spacing (centre-to-centre and
surface), the margin of each peak to the GTV edge, distances from the peaks to 5 organs
at risk, volumes and lesion counts of the targets, and the valley (GTV minus the peaks expanded by 5 mm). Times are
CPU times of this process (``time.process_time``), the best of ``--repeats`` runs, so that
other work on the machine disturbs them less. For comparison it times a naive
pure-Python version (nearest contour vertex, point by point) of the peak spacing and
margins in the same run. Accuracy against analytic solids: ``geometry_accuracy.py``.

Run: ``python benchmarks/geometry.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtcheck import geometry
from rtcheck.course import Contour, Roi

POINT_SPACING_MM = 1.8  # contour vertex spacing (planning systems export about 1-2 mm)


def _ellipse(cx: float, cy: float, ax: float, ay: float, z: float) -> np.ndarray:
    n = max(16, int(2 * math.pi * max(ax, ay) / POINT_SPACING_MM))
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.c_[cx + ax * np.cos(t), cy + ay * np.sin(t), np.full(n, z)]


def ellipsoid(number: int, name: str, centre, radii, spacing: float) -> Roi:
    cx, cy, cz = centre
    rx, ry, rz = radii
    zs = np.arange(math.ceil((cz - rz) / spacing), math.floor((cz + rz) / spacing) + 1) * spacing
    f = 1.0 - ((zs - cz) / rz) ** 2
    contours = tuple(
        Contour("CLOSED_PLANAR", _ellipse(cx, cy, rx * math.sqrt(k), ry * math.sqrt(k), z))
        for z, k in zip(zs, f, strict=True)
        if k > 1e-3
    )
    return Roi(number, name, None, contours)


def cylinder(number: int, name: str, centre_xy, radii, z_range, spacing: float) -> Roi:
    zs = np.arange(math.ceil(z_range[0] / spacing), math.floor(z_range[1] / spacing) + 1) * spacing
    contours = tuple(Contour("CLOSED_PLANAR", _ellipse(*centre_xy, *radii, z)) for z in zs)
    return Roi(number, name, None, contours)


def peak_centres(n: int) -> list[tuple[float, float, float]]:
    """n points inside the GTV at least 12.5 mm from its edge, on a jittered lattice."""
    if n == 4:
        return [(-11.0, -11.0, -8.0), (11.0, -11.0, 8.0), (-11.0, 11.0, 8.0), (11.0, 11.0, -8.0)]
    rng = np.random.default_rng(7)
    out: list[tuple[float, float, float]] = []
    while len(out) < n:
        p = rng.uniform(-20.0, 20.0, 3)
        if np.linalg.norm(p) <= 20.0 and all(np.linalg.norm(p - np.array(q)) >= 8.0 for q in out):
            out.append(tuple(float(v) for v in p))
    return out


def course(n_peaks: int, spacing: float) -> list[Roi]:
    gtv_c = (60.0, 0.0, 0.0)
    rois = [
        ellipsoid(1, "GTV_SFRT", gtv_c, (35, 35, 35), spacing),
        ellipsoid(2, "PTV_LDRT_1", (-80.0, 30.0, 40.0), (15, 15, 15), spacing),
        ellipsoid(3, "GTV_LDRT_2", (-60.0, -40.0, -60.0), (12, 10, 12), spacing),
        ellipsoid(4, "Lung_L", (80.0, 0.0, 0.0), (70, 90, 120), spacing),
        ellipsoid(5, "Lung_R", (-80.0, 0.0, 0.0), (70, 90, 120), spacing),
        ellipsoid(6, "Heart", (-10.0, -50.0, -60.0), (50, 45, 50), spacing),
        cylinder(7, "Esophagus", (0.0, 30.0), (8, 8), (-150, 150), spacing),
        cylinder(8, "SpinalCord", (0.0, 60.0), (6, 6), (-200, 200), spacing),
        cylinder(9, "Trachea", (0.0, 0.0), (10, 10), (40, 150), spacing),
        cylinder(10, "BODY", (0.0, 0.0), (200, 130), (-200, 200), spacing),
        cylinder(11, "GreatVessels", (-30.0, -10.0), (15, 15), (-50, 120), spacing),
        ellipsoid(12, "Liver", (-70.0, -30.0, -170.0), (90, 70, 40), spacing),
        cylinder(13, "Rib_L5", (150.0, 0.0), (5, 5), (-60, 60), spacing),
        ellipsoid(14, "ITV", gtv_c, (38, 38, 38), spacing),
    ]
    for k, c in enumerate(peak_centres(n_peaks)):
        centre = (gtv_c[0] + c[0], gtv_c[1] + c[1], gtv_c[2] + c[2])
        rois.append(ellipsoid(100 + k, f"Peak_{k + 1}", centre, (7.5, 7.5, 7.5), spacing))
    return rois


@dataclass
class Timer:
    rows: list[tuple[str, float]]

    def __call__(self, label: str, fn: Callable[[], object]) -> object:
        t0 = time.process_time()
        out = fn()
        self.rows.append((label, time.process_time() - t0))
        return out


def naive_nearest(a: list[tuple[float, float, float]], b: list[tuple[float, float, float]]) -> float:
    """Nearest vertex pair, point by point in pure Python (what a first script would do)."""
    best = math.inf
    for ax, ay, az in a:
        for bx, by, bz in b:
            d = (ax - bx) ** 2 + (ay - by) ** 2 + (az - bz) ** 2
            if d < best:
                best = d
    return math.sqrt(best)


def vertices(roi: Roi) -> list[tuple[float, float, float]]:
    return [tuple(p) for c in roi.contours for p in c.points.tolist()]


def run(label: str, n_peaks: int, spacing: float, naive_pairs: int, repeats: int) -> None:
    rois = course(n_peaks, spacing)
    n_coords = sum(c.points.size for r in rois for c in r.contours)
    print(f"\n== {label}: {len(rois)} ROIs, {n_peaks} peaks, {spacing} mm slices, {n_coords:,} coordinates")
    runs = [measure(rois, n_peaks) for _ in range(repeats)]
    best = min(runs, key=lambda r: sum(dt for _, dt in r[0].rows))
    t, _, peaks, gtv, pairs, margins = best
    total = sum(dt for _, dt in t.rows)
    for name, dt in t.rows:
        print(f"  {name:<42s} {dt * 1000:9.1f} ms")
    print(f"  {'TOTAL geometry (CPU, best of ' + str(repeats) + ')':<42s} {total * 1000:9.1f} ms")
    print(f"  margins (mm): min {min(margins):.2f}, max {max(margins):.2f}")
    naive(rois, peaks, gtv, pairs, n_peaks, naive_pairs)


def measure(rois: list[Roi], n_peaks: int):  # type: ignore[no-untyped-def]
    """One timed pass over the geometric questions, on freshly built solids."""
    t = Timer([])
    solids = t("build all solids", lambda: {r.name: geometry.solid_from_roi(r) for r in rois})
    targets = [s for name, s in solids.items() if name.startswith(("Peak_", "GTV", "PTV"))]
    t(
        "target volumes, centroids, ESD",
        lambda: [(s.volume_cc, s.centroid_mm, s.equivalent_sphere_diameter_mm) for s in targets],
    )
    peaks = [s for name, s in solids.items() if name.startswith("Peak_")]
    gtv = solids["GTV_SFRT"]
    pairs = list(itertools.combinations(peaks, 2))
    t(f"peak spacing, centre ({len(pairs)} pairs)", lambda: [geometry.centre_distance_mm(a, b) for a, b in pairs])
    t(f"peak spacing, surface ({len(pairs)} pairs)", lambda: [geometry.min_distance_mm(a, b) for a, b in pairs])
    margins = t("peak margins to GTV edge", lambda: [geometry.margin_mm(p, gtv) for p in peaks])
    oars = [solids[n] for n in ("SpinalCord", "Esophagus", "Heart", "Trachea", "GreatVessels")]
    t("peaks + GTV to 5 OARs", lambda: [geometry.min_distance_mm(p, o) for p in [*peaks, gtv] for o in oars])
    t("lesion counts (components of the targets)", lambda: [s.n_components for s in targets])
    t("peak volume / GTV volume", lambda: sum(p.volume_cc for p in peaks) / gtv.volume_cc)
    valley = t(
        "valley = GTV - (peaks + 5 mm)",
        lambda: geometry.difference(gtv, *[geometry.expand(p, 5.0) for p in peaks], name="Valley"),
    )
    t("valley volume, overlap with ITV", lambda: (valley.volume_cc, geometry.overlap_volume_cc(valley, solids["ITV"])))
    return t, solids, peaks, gtv, pairs, margins


def naive(rois, peaks, gtv, pairs, n_peaks: int, naive_pairs: int) -> None:  # type: ignore[no-untyped-def]
    """The naive version of the same peak questions, on a subset of pairs, in the same run."""
    sub = pairs[:naive_pairs]
    vert = {p.name: vertices(r) for r in rois for p in peaks if r.name == p.name}
    gtv_v = vertices(next(r for r in rois if r.name == "GTV_SFRT"))
    t0 = time.perf_counter()
    naive_d = [naive_nearest(vert[a.name], vert[b.name]) for a, b in sub]
    naive_m = [naive_nearest(vert[p.name], gtv_v) for p in peaks[:naive_pairs]]
    naive_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast_d = [geometry.min_distance_mm(a, b) for a, b in sub]
    fast_m = [geometry.margin_mm(p, gtv) for p in peaks[:naive_pairs]]
    fast_s = time.perf_counter() - t0
    print(
        f"  naive pure-Python nearest vertex, {len(sub)} pairs + {len(naive_m)} margins: {naive_s * 1000:9.1f} ms"
        f"  (rtcheck: {fast_s * 1000:.1f} ms, {naive_s / fast_s:.0f}x faster)"
    )
    # Both against the closed form: the peaks are spheres of radius 7.5 in a GTV of radius 35.
    centres = {f"Peak_{k + 1}": np.array(c) for k, c in enumerate(peak_centres(n_peaks))}
    true_d = [np.linalg.norm(centres[a.name] - centres[b.name]) - 15.0 for a, b in sub]
    true_m = [35.0 - np.linalg.norm(centres[p.name]) - 7.5 for p in peaks[:naive_pairs]]

    def worst(x: list[float], y: list[float]) -> float:
        return max(abs(a - b) for a, b in zip(x, y, strict=True))

    print(
        f"  largest error vs closed form: rtcheck distance {worst(fast_d, true_d):.2f} mm, margin "
        f"{worst(fast_m, true_m):.2f} mm; naive distance {worst(naive_d, true_d):.2f} mm, margin "
        f"{worst(naive_m, true_m):.2f} mm"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is printed")
    args = parser.parse_args()
    run("example course", n_peaks=4, spacing=2.5, naive_pairs=6, repeats=args.repeats)
    run("stress course", n_peaks=30, spacing=1.0, naive_pairs=4, repeats=args.repeats)
