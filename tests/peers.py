"""The real programs the tests run against: DCMTK, dicom3tools, poppler.

A test that needs one skips on a developer machine without it, and fails in CI (``CI``
set), where `.ci/run` installs them: a missing install step must not turn into a green run.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pydicom
import pytest


def missing(message: str) -> NoReturn:
    """Skip (fail in CI) because something a test needs is not there."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(tool: str, package: str) -> str:
    """The path of ``tool`` (from Debian's ``package``)."""
    found = shutil.which(tool)
    if found is None:
        missing(f"{tool} not found (apt-get install {package})")
    return str(found)


def dcmtk(tool: str) -> str:
    """The DCMTK binary ``tool``: pynetdicom installs Python apps of the same names on PATH."""
    found = _find_dcmtk(tool)
    if found is None:
        missing(f"DCMTK {tool} not found (apt-get install dcmtk)")
    return str(found)


@functools.cache
def _find_dcmtk(tool: str) -> str | None:
    candidates = [str(Path(d) / tool) for d in os.environ.get("PATH", "").split(os.pathsep)]
    for candidate in [*candidates, f"/usr/bin/{tool}"]:
        if not os.access(candidate, os.X_OK):
            continue
        try:
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return candidate
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def storescp(port: int, folder: Path, ae_title: str = "STORESCP") -> Iterator[subprocess.Popen[bytes]]:
    """DCMTK storescp on ``port`` (it listens on every interface: send only to 127.0.0.1)."""
    binary = dcmtk("storescp")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "-aet", ae_title, "-od", str(folder), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},  # tooling.md: Nagle costs ~89 ms per small object
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while True:
            assert proc.poll() is None, "storescp ended"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "storescp did not start listening"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def received(folder: Path) -> list[pydicom.Dataset]:
    """The objects storescp has finished writing into ``folder``."""
    out = []
    for path in sorted(folder.glob("*")):
        try:
            out.append(pydicom.dcmread(path))
        except Exception:
            continue  # still being written
    return out
