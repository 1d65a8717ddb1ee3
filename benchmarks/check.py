"""End to end: ``rtcheck`` on the example course, every rule of the trial protocol.

Target: at most 2.7 times the baseline measured in the same run, best of 5. The baseline
is the time Python takes to start, import pydicom and read every file of the course once
(what any checker has to pay), so the ratio shows what the checking itself costs: imports
beyond pydicom, the protocol, the course model, the rules and the report. The two
commands take turns, so both see the same load from anything else running on the machine.
The CPU time (user + system) of each is printed too: on a machine busy with other work it
is the steadier of the two measures.

    python benchmarks/check.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import compileall
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rtcheck
from rtcheck.phantom import write_course

_READ_ONLY = "import sys, pydicom; [pydicom.dcmread(p) for p in sys.argv[1:]]"

#: The most ``rtcheck`` may cost, in multiples of the baseline.
TARGET_RATIO = 2.7


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1, 2, 3):
        raise SystemExit(proc.stderr.decode())
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "course"
        files = write_course(folder, "compliant")
        check_cmd = [sys.executable, "-m", "rtcheck", str(folder), "--quiet"]
        read_cmd = [sys.executable, "-c", _READ_ONLY, *map(str, files)]
        # rtcheck as installed runs from compiled bytecode (pip compiles it on install), as
        # pydicom in the baseline does; a source checkout under PYTHONDONTWRITEBYTECODE would
        # otherwise compile every rtcheck module again in every measured run.
        compileall.compile_dir(Path(rtcheck.__file__).parent, quiet=1)
        _run(check_cmd)  # once unmeasured: the files and the package in the page cache
        checks, reads = [], []
        for _ in range(args.repeats):
            checks.append(_run(check_cmd))
            reads.append(_run(read_cmd))
    check, read = min(c[0] for c in checks), min(r[0] for r in reads)
    check_cpu, read_cpu = min(c[1] for c in checks), min(r[1] for r in reads)
    ratio = check / read
    print(f"example course: {len(files)} files; best of {args.repeats}, the two commands taking turns")
    print(f"rtcheck, all rules, end to end: {check:.2f} s ({check_cpu:.2f} s CPU)")
    print(f"baseline, start Python and read every file with pydicom: {read:.2f} s ({read_cpu:.2f} s CPU)")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"ratio: {ratio:.1f}x the cost of reading the files (target at most {TARGET_RATIO}x: {verdict})")
    print(f"ratio of CPU times: {check_cpu / read_cpu:.1f}x")


if __name__ == "__main__":
    main()
