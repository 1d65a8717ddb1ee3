"""Audit throughput: generated submissions from 4 centres, checked with -j 1 and with all cores.

Writes the courses once (phantom variants on a coarse 5 mm dose grid, each with a small CT
series so that indexing has images to skip), then in the same run measures courses per
minute of a fresh audit with ``-j 1`` and with every core, and the time of a re-run with
nothing new (which should take seconds: every result is already in the database).

    python benchmarks/audit.py [--courses 200] [--ct-slices 25] [--data DIR]

``--data DIR`` keeps the generated submissions in DIR and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rtcheck.audit.executors import default_jobs
from rtcheck.audit.run import add_audit_arguments, run_audit
from rtcheck.phantom import build_spec, write_ct_series, write_spec

#: Each centre's case mix: the variants its courses cycle through.
CENTRES = {
    "centre-1": ["compliant", "compliant", "control_arm", "no_dose_reference"],
    "centre-2": ["compliant", "sfrt_rx_7gy", "single_plan_two_groups", "control_arm"],
    "centre-3": ["ldrt_3_fractions", "compliant", "missing_spinal_cord", "sfrt_rx_6gy"],
    "centre-4": ["peaks_too_close", "compliant", "valley_4gy", "ldrt_rx_4gy"],
}
DOSE_SPACING_MM = 5.0
CT_SIZE = 64


def write_submission(job: tuple[Path, str, str, int]) -> None:
    folder, variant, patient, ct_slices = job
    spec = build_spec(variant, dose_spacing_mm=DOSE_SPACING_MM)
    # A patient of its own: identity and UIDs from the patient, the rest from the variant.
    spec = dataclasses.replace(spec, variant=patient, uid_seed=f"benchmark|{patient}")
    write_spec(folder / "RT", spec)
    if ct_slices:
        write_ct_series(folder / "CT", ct_slices, rows=CT_SIZE, cols=CT_SIZE, variant=variant)


def generate(data: Path, courses: int, ct_slices: int) -> float:
    marker = data / f".complete-{courses}-{ct_slices}"
    if marker.exists():
        return 0.0
    start = time.perf_counter()
    jobs = []
    names = list(CENTRES)
    for i in range(courses):
        centre = names[i % len(names)]
        mix = CENTRES[centre]
        variant = mix[(i // len(names)) % len(mix)]
        patient = f"{centre}-{i:04d}"
        jobs.append((data / centre / patient, variant, patient, ct_slices))
    with ProcessPoolExecutor(default_jobs()) as pool:
        list(pool.map(write_submission, jobs, chunksize=4))
    marker.touch()
    return time.perf_counter() - start


def audit(data: Path, out: Path, jobs: int) -> tuple[float, dict]:
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    args = parser.parse_args([str(data), "--out", str(out), "--centre-level", "1", "-j", str(jobs), "--no-progress"])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the audit's own summary lines
        run_audit(args)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads((out / "summary.json").read_text(encoding="utf-8"))["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=200)
    parser.add_argument("--ct-slices", type=int, default=25, help="CT slices per course (64 x 64 pixels)")
    parser.add_argument("--data", type=Path, help="keep (and reuse) the generated submissions here")
    args = parser.parse_args()
    cores = default_jobs()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "submissions"
        data.mkdir(parents=True, exist_ok=True)
        t_gen = generate(data, args.courses, args.ct_slices)
        if t_gen:
            print(f"generated {args.courses} courses ({args.ct_slices} CT slices each) in {t_gen:.1f} s")
        results = []
        for label, jobs in (("-j 1", 1), (f"-j {cores}", cores)):
            elapsed, run = audit(data, Path(tmp) / f"out{jobs}", jobs)
            results.append((label, elapsed, run))
        rerun, run_again = audit(data, Path(tmp) / f"out{cores}", cores)
    print(f"{args.courses} courses, {results[0][2]['files']} files, 4 centres, {cores} core(s)")
    for label, elapsed, run in results:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in run["seconds"].items() if k != "total")
        print(f"audit {label:6s}: {elapsed:6.1f} s, {60 * run['checked'] / elapsed:6.1f} courses/min  ({stages})")
    print(f"re-run, nothing new: {rerun:.1f} s (checked {run_again['checked']}, reused {run_again['reused']})")


if __name__ == "__main__":
    main()
