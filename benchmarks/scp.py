"""How fast does ``rtcheck serve`` receive, and how soon is a report on disk? Prints numbers.

1. Receiving: 20 phantom courses (20 variants, ~8 MB each: RTSTRUCT, RTPLANs, RTDOSEs)
   sent by DCMTK ``storescu`` in one association, to ``rtcheck serve`` and, in the same
   run and under the same settings (128 KiB PDU, TCP_NODELAY), to DCMTK ``storescp``.
   Files/s and MB/s are wall-clock times of the whole storescu run. For rtcheck, also
   the time until all 20 reports are on disk.
2. Latency: the example course (``compliant``) sent again and again, each time whole in
   one association; the time from storescu's exit (it has released the association) to
   the report's JSON on disk, with the node's default settings. A course that came whole
   in a released association is checked at once, without the quiet period (2 s), so this
   is about the check time. Target: under 1 s. Each send waits until the node has
   finished the reports before it (their HTML pages, drawn after the JSON, included), so
   that it measures a course arriving at a node with nothing else to do; the same runs
   sent back to back, while the previous page is still being drawn, are printed too.

Everything listens on and sends to 127.0.0.1 only, except storescp, which cannot bind
to one address (it listens on all interfaces; we send to 127.0.0.1 only).

Receiving is measured with the node's quiet period set to an hour (no check competes for
the CPU) and the two receivers take turns ``--repeats`` times, so both see the same load
from anything else running on the machine; the best run of each is printed.

Run: ``python benchmarks/scp.py [--courses 20] [--repeats 3] [--latency-runs 5] [--receive-only]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtcheck.phantom import VARIANTS, write_course

PDU = 131072


def dcmtk(tool: str) -> str:
    """The DCMTK binary (pynetdicom installs Python apps of the same names on PATH)."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = Path(folder) / tool
        if os.access(candidate, os.X_OK):
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(candidate)
    sys.exit(f"DCMTK {tool} not found (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def send(port: int, files: list[Path], called: str) -> float:
    """Seconds storescu takes to send ``files`` in one association."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    args = [dcmtk("storescu"), "-aec", called, "-pdu", str(PDU), "127.0.0.1", str(port), *map(str, files)]
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_rtcheck(base: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "rtcheck", "serve", "--storage", str(base / "storage")]
    args += ["--reports", str(base / "reports"), "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--max-pdu", str(PDU), *extra]
    log = (base / "node.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return proc


def start_storescp(out: Path, port: int) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    args = [dcmtk("storescp"), "-pdu", str(PDU), "-od", str(out), str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def reports(base: Path) -> list[Path]:
    return list((base / "reports").glob("*/*.json"))


def wait_reports(base: Path, count: int, timeout: float = 600.0) -> float:
    started = time.perf_counter()
    while len(reports(base)) < count:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {len(reports(base))} of {count} reports after {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - started


def pages(base: Path) -> list[Path]:
    return list((base / "reports").glob("*/*.html"))


def wait_idle(base: Path, timeout: float = 120.0) -> None:
    """Wait until every report on disk has its HTML page and its log line."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if len(pages(base)) >= len(reports(base)) and len(report_lines(base)) >= len(reports(base)):
            return
        time.sleep(0.01)


def latency(base: Path, port: int, files: list[Path], *, idle: bool) -> float:
    """Seconds from storescu's exit to the course's report JSON on disk.

    ``idle``: first wait until every earlier report has its HTML page (the node is done with them).
    """
    before = len(reports(base))
    if idle:
        wait_idle(base)
    send(port, files, "RTCHECK")
    started = time.perf_counter()
    wait_reports(base, before + 1, timeout=120)
    return time.perf_counter() - started


def report_lines(base: Path) -> list[dict[str, str]]:
    """The node's ``event=report`` log lines as dicts (check_s, since_last_object_s, ...)."""
    out = []
    for line in (base / "node.log").read_text(errors="replace").splitlines():
        if "event=report " in line:
            out.append(dict(field.split("=", 1) for field in line.split() if "=" in field))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="receiving runs per receiver (alternating)")
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--receive-only", action="store_true", help="measure receiving only (part 1)")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rtcheck-scp-bench-"))
    try:
        variants = list(VARIANTS)[: options.courses]
        files: list[Path] = []
        for v in variants:
            files += write_course(work / "courses" / v, v)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(variants)} courses, {len(files)} files, {megabytes:.0f} MB; storescu -pdu {PDU}, TCP_NODELAY=1")

        # 1. Receiving only: rtcheck with a quiet period of an hour, so no check competes for the CPU.
        #    The receivers take turns, so both see the same load from whatever else runs here.
        timings: dict[str, list[float]] = {"DCMTK storescp": [], "rtcheck serve": []}
        for run in range(options.repeats):
            port = free_port()
            scp = start_storescp(work / f"storescp{run}", port)  # listens on all interfaces
            try:
                timings["DCMTK storescp"].append(send(port, files, "STORESCP"))
            finally:
                stop(scp)
            port = free_port()
            base = work / f"receive{run}"
            base.mkdir()
            node = start_rtcheck(base, port, "--quiet-period", "3600", "--workers", "1")
            try:
                timings["rtcheck serve"].append(send(port, files, "RTCHECK"))
            finally:
                stop(node)
        print(f"{'receiver':<18}{'best s':>8}{'median s':>10}{'files/s':>9}{'MB/s':>8}  (best run)")
        for name, runs in timings.items():
            best = min(runs)
            print(
                f"{name:<18}{best:>8.2f}{statistics.median(runs):>10.2f}"
                f"{len(files) / best:>9.1f}{megabytes / best:>8.1f}"
            )

        if options.receive_only:
            return
        # 2. Checks: a node with its defaults (quiet period 2 s, 2 workers).
        port = free_port()
        node_dir = work / "rtcheck"
        node_dir.mkdir()
        node = start_rtcheck(node_dir, port)
        try:
            time.sleep(3.0)  # let the worker processes import the checker first
            send(port, files, "RTCHECK")
            until = wait_reports(node_dir, len(variants))
            checks = [float(r["check_s"]) for r in report_lines(node_dir)]
            print(
                f"{len(variants)} courses in one association: all reports on disk {until:.2f} s after the "
                f"last C-STORE (check in the worker: median {statistics.median(checks):.2f} s per course)"
            )

            # 3. Latency of the example course, sent again and again (each re-export gets a report):
            #    back to back, then each time to a node that has finished the reports before it.
            example = sorted((work / "courses" / "compliant").glob("*.dcm"))
            back_to_back = [latency(node_dir, port, example, idle=False) for _ in range(options.latency_runs)]
            latencies = [latency(node_dir, port, example, idle=True) for _ in range(options.latency_runs)]
            print(
                f"example course sent back to back (the previous report's page still being drawn), "
                f"{len(back_to_back)} runs: median {statistics.median(back_to_back):.2f} s, "
                f"max {max(back_to_back):.2f} s"
            )
            wait_idle(node_dir)  # each report's log line follows its page
            lines = report_lines(node_dir)[-options.latency_runs :]
            check_s = statistics.median(float(r["check_s"]) for r in lines)
            on_disk_s = statistics.median(float(r["since_last_object_s"]) for r in lines)
            median = statistics.median(latencies)
            print(
                f"example course, storescu released the association -> report on disk, {len(latencies)} runs: "
                f"median {median:.2f} s, max {max(latencies):.2f} s (target under 1 s: "
                f"{'met' if median < 1.0 else 'NOT met'})"
            )
            print(
                f"  last object written -> report on disk: median {on_disk_s:.2f} s = check {check_s:.2f} s "
                f"+ node {on_disk_s - check_s:.2f} s (no quiet period: the course came whole, then A-RELEASE)"
            )
            renders = [float(r["render_s"]) for r in lines if "render_s" in r]
            if renders:
                print(
                    f"  then, in the same worker, the HTML page with its figures drawn from the check's workspace: "
                    f"median {statistics.median(renders):.2f} s per report"
                )
        finally:
            stop(node)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
