"""The real programs the tests run against: DCMTK, dicom3tools, poppler, Orthanc.

A test that needs one skips on a developer machine without it, and fails in CI (``CI``
set), where `.ci/run` installs them: a missing install step must not turn into a green run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.request import Request, urlopen

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


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Ask a peer we started to end (SIGTERM), and kill it if it has not within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def storescp(port: int, folder: Path, ae_title: str = "STORESCP") -> Iterator[subprocess.Popen[bytes]]:
    """DCMTK storescp on ``port`` (it listens on every interface: send only to 127.0.0.1)."""
    binary = dcmtk("storescp")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "-aet", ae_title, "-od", str(folder), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},  # without it Nagle costs ~89 ms per small object
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
        _stop(proc, grace_s=5)


def received(folder: Path) -> list[pydicom.Dataset]:
    """The objects storescp has finished writing into ``folder``."""
    out = []
    for path in sorted(folder.glob("*")):
        try:
            out.append(pydicom.dcmread(path))
        except Exception:
            continue  # still being written
    return out


# --------------------------------------------------------------------------- Orthanc


class Orthanc:
    """A running Orthanc: its DICOM address and its REST API on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[bytes], ae_title: str, dicom_port: int, http_port: int) -> None:
        self.proc = proc
        self.ae_title = ae_title
        self.dicom_port = dicom_port
        self.http_port = http_port

    @property
    def address(self) -> str:
        """``AE@host:port`` as ``rtcheck serve --report-to`` and ``rtcheck send --to`` take it."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def _call(self, method: str, path: str, body: bytes | None = None, timeout: float = 60.0) -> bytes:
        request = Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    def get(self, path: str) -> Any:
        """GET a REST resource that answers JSON."""
        return json.loads(self._call("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._call("GET", path)

    def post(self, path: str, body: object, timeout: float = 60.0) -> Any:
        """POST JSON (or raw bytes) and decode the JSON answer."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        return json.loads(self._call("POST", path, data, timeout))

    def upload(self, files: list[Path]) -> set[str]:
        """Store DICOM files through the REST API; returns the Orthanc ids of their studies."""
        return {self.post("/instances", path.read_bytes())["ParentStudy"] for path in files}

    def forward(self, modality: str, study: str, timeout_s: float = 60.0) -> Any:
        """Send one study to a DICOM modality Orthanc knows, as a router does: one association."""
        job = {"Resources": [study], "Synchronous": True, "Timeout": int(timeout_s)}
        return self.post(f"/modalities/{modality}/store", job, timeout=timeout_s + 5)

    def instances_of_study(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """The instances (simplified tags, with their Orthanc ``ID``) of the study with this UID."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_instance_uid}, "Expand": True}
        out = []
        for instance in self.post("/tools/find", query):
            tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
            out.append({**tags, "ID": instance["ID"]})
        return out


def orthanc_binary() -> str:
    """Debian's Orthanc server (``/usr/sbin``, not on every user's PATH)."""
    found = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if os.access(p, os.X_OK)), None)
    if found is None:
        missing("Orthanc not found (apt-get install orthanc)")
    return str(found)


@contextmanager
def orthanc(folder: Path, modalities: dict[str, tuple[str, int]], ae_title: str = "ORTHANC") -> Iterator[Orthanc]:
    """An Orthanc of its own: free loopback ports, a generated configuration, storage in ``folder``.

    ``modalities`` maps a name to the (AE title, port on 127.0.0.1) of a DICOM peer it may
    send to. Its REST API refuses every host but this one and asks for no password; no
    plug-in or script from the system's configuration is loaded. The DICOM port listens on
    every interface (Orthanc has no bind address): send to it only on 127.0.0.1. Stopped by
    its PID when the block ends.
    """
    binary = orthanc_binary()
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "rtcheck-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()},
        "Plugins": [],
        "LuaScripts": [],
        "OrthancPeers": {},
        "HttpProxy": "",
        "SaveJobs": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        # Close each outgoing association when its job ends (the default keeps it 5 s for
        # reuse): a forwarded study is then one association, released at once.
        "DicomAssociationCloseDelay": 0,
        "TcpNoDelay": True,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log_path = folder / "orthanc.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(proc, ae_title, dicom_port, http_port)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            assert proc.poll() is None, f"Orthanc ended: {log_path.read_text(errors='replace')[-2000:]}"
            try:
                if server.get("/system").get("DicomPort") == dicom_port:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Orthanc's REST API did not answer"
            time.sleep(0.05)
        yield server
    finally:
        _stop(proc, grace_s=10)
