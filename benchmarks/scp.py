"""How fast does ``rtcheck serve`` receive, and how soon is a report on disk? Prints numbers.

1. Receiving: 20 phantom courses (20 variants, ~8 MB each: RTSTRUCT, RTPLANs, RTDOSEs)
   sent by DCMTK ``storescu`` in one association, to ``rtcheck serve`` and, in the same
   run and under the same settings (128 KiB PDU, TCP_NODELAY), to DCMTK ``storescp``.
   Files/s and MB/s are wall-clock times of the whole storescu run. For rtcheck, also
   the time until all 20 reports are on disk.
2. Latency: the example course (``compliant``) sent again and again; the time from
   storescu's exit (the last C-STORE answered) to the report's JSON on disk, with the
   node's default quiet period of 2 s.

Everything listens on and sends to 127.0.0.1 only, except storescp, which cannot bind
to one address (it listens on all interfaces; we send to 127.0.0.1 only).

Run: ``python benchmarks/scp.py [--courses 20] [--latency-runs 5]``
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


def start_rtcheck(base: Path, port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "rtcheck", "serve", "--storage", str(base / "storage")]
    args += ["--reports", str(base / "reports"), "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--max-pdu", str(PDU)]
    log = (base / "node.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return proc


def reports(base: Path) -> list[Path]:
    return list((base / "reports").glob("*/*.json"))


def wait_reports(base: Path, count: int, timeout: float = 300.0) -> float:
    started = time.perf_counter()
    while len(reports(base)) < count:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {len(reports(base))} of {count} reports after {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=20)
    parser.add_argument("--latency-runs", type=int, default=5)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rtcheck-scp-bench-"))
    try:
        variants = list(VARIANTS)[: options.courses]
        files: list[Path] = []
        for v in variants:
            files += write_course(work / "courses" / v, v)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(variants)} courses, {len(files)} files, {megabytes:.0f} MB; storescu -pdu {PDU}, TCP_NODELAY=1")
        print(f"{'receiver':<28}{'seconds':>9}{'files/s':>10}{'MB/s':>8}")

        # DCMTK storescp: listens on every interface; we send to 127.0.0.1 only.
        port = free_port()
        out = work / "storescp"
        out.mkdir()
        env = {**os.environ, "TCP_NODELAY": "1"}
        scp = subprocess.Popen(
            [dcmtk("storescp"), "-pdu", str(PDU), "-od", str(out), str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            seconds = send(port, files, "STORESCP")
        finally:
            stop(scp)
        print(f"{'DCMTK storescp':<28}{seconds:>9.2f}{len(files) / seconds:>10.1f}{megabytes / seconds:>8.1f}")

        port = free_port()
        node_dir = work / "rtcheck"
        node_dir.mkdir()
        node = start_rtcheck(node_dir, port)
        try:
            time.sleep(3.0)  # let the worker processes import the checker first
            seconds = send(port, files, "RTCHECK")
            print(f"{'rtcheck serve':<28}{seconds:>9.2f}{len(files) / seconds:>10.1f}{megabytes / seconds:>8.1f}")
            until = wait_reports(node_dir, len(variants))
            print(f"  all {len(variants)} reports on disk {until:.2f} s after the last C-STORE")

            example = sorted((work / "courses" / "compliant").glob("*.dcm"))
            latencies = []
            for _ in range(options.latency_runs):
                before = len(reports(node_dir))
                send(port, example, "RTCHECK")
                started = time.perf_counter()
                wait_reports(node_dir, before + 1, timeout=60)
                latencies.append(time.perf_counter() - started)
            print(
                f"example course, last C-STORE -> report on disk (quiet period 2 s), {len(latencies)} runs: "
                f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
            )
        finally:
            stop(node)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
