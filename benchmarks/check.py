"""End to end: ``rtcheck`` on the example course, every rule of the trial protocol.

Target: under 3 s from the command line. The baseline measured in the same run is the
time Python takes to start, import pydicom and read every file of the course once
(what any checker has to pay), so the ratio shows what the checking itself costs.

    python benchmarks/check.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtcheck.phantom import write_course

_READ_ONLY = "import sys, pydicom; [pydicom.dcmread(p) for p in sys.argv[1:]]"


def _wall(cmd: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
        if proc.returncode not in (0, 1, 2, 3):
            raise SystemExit(proc.stderr.decode())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "course"
        files = write_course(folder, "compliant")
        check = _wall([sys.executable, "-m", "rtcheck", str(folder), "--quiet"], args.repeats)
        read = _wall([sys.executable, "-c", _READ_ONLY, *map(str, files)], args.repeats)
    print(f"example course: {len(files)} files")
    print(f"rtcheck, all rules, end to end: {check:.2f} s  (target < 3 s)")
    print(f"baseline, start Python and read every file with pydicom: {read:.2f} s")
    print(f"ratio: {check / read:.1f}x the cost of reading the files")


if __name__ == "__main__":
    main()
