"""Indexing an export folder: 300 CT slices plus the RT objects of the example course.

Prints the time rtcheck's header-only indexing takes and, as the baseline measured in the
same run, the time of the naive approach (a full ``pydicom.dcmread`` of every file).
Target: well under 2 s for the folder.

    python benchmarks/indexing.py [--slices 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from rtcheck.assembly import find_courses
from rtcheck.phantom import write_course, write_ct_series


def _best_of(repeats: int, func) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        write_course(folder, "compliant")
        write_ct_series(folder / "CT", args.slices)
        files = [p for p in folder.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 1e6

        def ours() -> None:
            (course,) = find_courses([folder])
            assert course.complete

        def naive() -> None:
            for path in files:
                pydicom.dcmread(path)

        t_ours = _best_of(args.repeats, ours)
        t_naive = _best_of(args.repeats, naive)
    print(f"folder: {len(files)} files ({args.slices} CT slices), {size_mb:.0f} MB")
    print(f"rtcheck header-only index + assembly: {t_ours:.3f} s  (target < 2 s)")
    print(f"baseline, full dcmread of every file: {t_naive:.3f} s")
    print(f"speed-up: {t_naive / t_ours:.1f}x")


if __name__ == "__main__":
    main()
