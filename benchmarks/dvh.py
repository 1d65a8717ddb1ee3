"""How fast and how accurate are rtcheck's RTDOSE reader and DVH engine on the example course?

A plain script that prints numbers. It writes the example course of :mod:`rtcheck.phantom`
(variant ``compliant``: 18 structures contoured every 2.5 mm, an SFRT and an LDRT plan, one
PLAN dose each) with its 2.5 mm dose grids, and again with 1.25 mm grids, then for each:

* times reading the two RTDOSE files (:func:`rtcheck.dose.load_dose_grid`);
* computes the DVH of every structure on both doses (36 DVHs) with the metrics a protocol
  asks (Dmean, D95%, D2%, D0.03cc, V at half the maximum), and times each structure;
* compares volumes and metrics with the analytic truth: the phantom's solids and dose
  model sampled on a fine jittered grid (about 2 million points per structure);
* runs, in the same process, a naive DVH (the voxel centres inside the nearest contour
  plane, found with matplotlib ``Path.contains_points``, each voxel all in or all out) and
  prints its time and errors next to ours.

Run: ``python benchmarks/dvh.py`` (add ``--no-fine`` to skip the 1.25 mm grids, ``--keep DIR``
to keep the course, e.g. for the dicompyler-core comparison in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from matplotlib.path import Path as MplPath

from rtcheck.assembly import find_courses, load_course
from rtcheck.dose import DoseGrid, load_dose_grid
from rtcheck.dvh import voxelise
from rtcheck.geometry import Solid, solid_from_roi
from rtcheck.phantom import PhantomSpec, build_spec, write_course

TRUTH_POINTS = 2_000_000
REPEATS = 3
METRICS = ("volume", "Dmean", "D95", "D90", "D10", "D2", "D0.03cc")


@dataclass
class Timed:
    """The metrics of one structure on each plan's dose, and the CPU time they took."""

    values: dict[str, dict[str, float]]
    seconds: float


def metrics(dose: np.ndarray, weight_cc: np.ndarray) -> dict[str, float]:
    """Metrics of weighted samples, with the engine's midpoint convention (for the truth and
    the naive DVH alike)."""
    levels, inverse = np.unique(dose, return_inverse=True)
    w = np.bincount(inverse, weights=weight_cc)[::-1]
    levels = levels[::-1].astype(float)
    total = float(w.sum())
    mid = np.cumsum(w) - w / 2
    return {
        "volume": total,
        "Dmean": float(np.dot(dose, weight_cc) / total),
        **{f"D{p}": float(np.interp(p / 100 * total, mid, levels)) for p in (95, 90, 10, 2)},
        "D0.03cc": float(np.interp(min(0.03, total), mid, levels)),
    }


def ours(grids: dict[str, DoseGrid], solid: Solid) -> Timed:
    """rtcheck: voxelise once on the grids' common geometry, then one DVH per dose."""
    start = time.process_time()
    voxels = voxelise(next(iter(grids.values())), solid)
    values = {}
    for plan, grid in grids.items():
        sd = voxels.dose(grid)
        values[plan] = {
            "volume": sd.volume_cc,
            "Dmean": sd.dmean,
            **{f"D{p}": sd.d_percent(p) for p in (95, 90, 10, 2)},
            "D0.03cc": sd.d_cc(min(0.03, sd.volume_cc)),
        }
        sd.v_gy(sd.dmax / 2)
    return Timed(values, time.process_time() - start)


def naive(grids: dict[str, DoseGrid], solid: Solid) -> Timed:
    """Voxel centres inside the contour of the nearest plane, each a whole voxel (the mask is
    made once and used for every dose, as ours is)."""
    start = time.process_time()
    grid = next(iter(grids.values()))
    dx, dy = grid.spacing_mm
    dz = np.diff(grid.z_edges_mm)
    voxels, weights = [], []
    for k, z in enumerate(grid.z_mm):
        slab = solid.slab_at(float(z))
        if slab is None:
            continue
        x0, y0, x1, y1 = slab.shape.bounds
        i = np.flatnonzero((grid.x_mm >= x0) & (grid.x_mm <= x1))
        j = np.flatnonzero((grid.y_mm >= y0) & (grid.y_mm <= y1))
        if not i.size or not j.size:
            continue
        xx, yy = np.meshgrid(grid.x_mm[i], grid.y_mm[j])
        centres = np.c_[xx.ravel(), yy.ravel()]
        inside = np.zeros(len(centres), dtype=bool)
        for polygon in shapely.get_parts(slab.shape):
            inside ^= MplPath(np.asarray(polygon.exterior.coords)).contains_points(centres)
            for hole in polygon.interiors:
                inside ^= MplPath(np.asarray(hole.coords)).contains_points(centres)
        jj, ii = np.meshgrid(j, i, indexing="ij")
        voxels.append(((k * grid.y_mm.size + jj) * grid.x_mm.size + ii).ravel()[inside])
        weights.append(np.full(int(inside.sum()), dx * dy * dz[k] / 1000))
    voxel, weight = np.concatenate(voxels), np.concatenate(weights)
    values = {plan: metrics(g.dose_gy.reshape(-1)[voxel], weight) for plan, g in grids.items()}
    return Timed(values, time.process_time() - start)


def truth(spec: PhantomSpec, plan: str, roi: str, rng: np.random.Generator) -> dict[str, float]:
    """Metrics of the analytic dose over the analytic solid, on a jittered fine grid."""
    shape = spec.roi(roi).shape
    x0, y0, x1, y1 = shape.xy_bounds()
    z0, z1 = shape.z_extent()
    step = ((x1 - x0) * (y1 - y0) * (z1 - z0) / TRUTH_POINTS) ** (1 / 3)
    axes = [np.arange(lo + step / 2, hi, step) for lo, hi in ((x0, x1), (y0, y1), (z0, z1))]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    xyz = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
    xyz += rng.uniform(-step / 2, step / 2, xyz.shape)
    xyz = xyz[shape.contains(xyz)]
    dose = spec.plan_dose_gy(plan, xyz)
    out = metrics(dose, np.full(len(dose), step**3 / 1000))
    out["volume"] = getattr(shape, "volume_cc", out["volume"])
    return out


def error(value: float, reference: float, scale: float) -> float:
    """Difference in % of ``scale`` (the structure's volume, or the dose's maximum)."""
    return 100 * (value - reference) / scale


def run(folder: Path, spacing: float, spec: PhantomSpec, check_truth: bool) -> None:
    write_course(folder, "compliant", dose_spacing_mm=spacing)
    (files,) = find_courses([folder])
    course, _ = load_course(files)
    grids = {}
    for d in course.doses:
        start = time.process_time()
        grid = load_dose_grid(d)
        seconds = time.process_time() - start
        plan = next(p.label for p in course.plans if p.uid in d.referenced_plan_uids)
        grids[plan] = grid
        print(f"  read {d.source.path.name}: {grid.dose_gy.size / 1e6:.2f} M voxels in {seconds * 1000:.0f} ms")
    start = time.process_time()
    solids = {roi.name: solid_from_roi(roi) for roi in course.structure_set.rois.values()}
    print(f"  {len(solids)} solids built in {(time.process_time() - start) * 1000:.0f} ms (geometry, not timed below)")

    mine: dict[str, Timed] = {}
    for _ in range(REPEATS):  # best of REPEATS, all structures back to back as a check would run them
        for name, solid in solids.items():
            result = ours(grids, solid)
            if name not in mine or result.seconds < mine[name].seconds:
                mine[name] = result
    base = {name: naive(grids, solid) for name, solid in solids.items()}
    t_ours = sum(t.seconds for t in mine.values())
    t_naive = sum(t.seconds for t in base.values())
    print(f"  CPU time per structure, {len(grids)} DVHs each (ours: best of {REPEATS}):")
    print(f"    {'structure':12s} {'cc':>9s} {'ours ms':>8s} {'naive ms':>9s}")
    for name in solids:
        volume = mine[name].values[next(iter(grids))]["volume"]
        print(f"    {name:12s} {volume:9.2f} {mine[name].seconds * 1000:8.1f} {base[name].seconds * 1000:9.1f}")
    n = len(grids) * len(solids)
    print(
        f"  total for {n} DVHs: ours {t_ours * 1000:.0f} ms ({t_ours / n * 1000:.1f} ms per DVH), "
        f"naive {t_naive * 1000:.0f} ms: ours is {t_naive / t_ours:.1f}x faster"
    )
    if not check_truth:
        return
    rng = np.random.default_rng(0)
    worst = {m: [0.0, 0.0] for m in METRICS}
    print("  errors vs the analytic truth, ours / naive (volume in % of the volume, doses in % of the plan's max):")
    print(f"    {'plan':5s} {'structure':12s} " + " ".join(f"{m:>15s}" for m in METRICS))
    for plan, grid in grids.items():
        dose_scale = float(grid.dose_gy.max())
        for name in solids:
            ref = truth(spec, plan, name, rng)
            cells = ""
            for m in METRICS:
                scale = ref["volume"] if m == "volume" else dose_scale
                errors = [error(t[name].values[plan][m], ref[m], scale) for t in (mine, base)]
                worst[m] = [max(w, abs(e)) for w, e in zip(worst[m], errors, strict=True)]
                cells += f" {errors[0]:+6.2f} /{errors[1]:+6.2f}"
            print(f"    {plan:5s} {name:12s}{cells}")
    print("  largest |error| vs analytic, ours / naive:")
    for m in METRICS:
        unit = "% of volume" if m == "volume" else "% of the plan's max dose"
        print(f"    {m:8s} {worst[m][0]:6.2f} / {worst[m][1]:6.2f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fine", action="store_true", help="skip the 1.25 mm dose grids")
    parser.add_argument("--no-truth", action="store_true", help="skip the comparison with the analytic truth")
    parser.add_argument("--keep", type=Path, help="write the courses below this folder and keep them")
    args = parser.parse_args()
    spec = build_spec("compliant")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for spacing in (2.5,) if args.no_fine else (2.5, 1.25):
            print(f"example course, dose grids of {spacing} mm:")
            run(root / f"dose_{spacing}mm", spacing, spec, not args.no_truth)
    print(f"(truth: {TRUTH_POINTS / 1e6:.0f} M jittered points per structure; math.pi = {math.pi:.5f})")


if __name__ == "__main__":
    main()
