"""The node under attack from the hospital network (all on 127.0.0.1): no lock-out, bounded memory.

Every test runs ``rtcheck serve`` as a subprocess (see :class:`test_scp.Node`) and attacks
it with raw sockets and real peers (DCMTK, pynetdicom), for a bounded time.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
from peers import dcmtk
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_scp import Node

ECHO_ENV = {**os.environ, "TCP_NODELAY": "1"}


def echo(node: Node, calling: str = "ECHOSCU", called: str = "RTCHECK") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(node.port)],
        capture_output=True,
        timeout=30,
        env=ECHO_ENV,
    )


class IdleConnections:
    """``count`` TCP connections that never send a byte, reopened as soon as the node closes one."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def _hold(self) -> None:
        self.sockets = [self._connect() for _ in range(self.count)]
        while not self.stop.wait(0.1):
            for i, sock in enumerate(self.sockets):
                sock.setblocking(False)
                try:
                    closed = sock.recv(1) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    sock.close()
                    self.sockets[i] = self._connect()
                    self.reopened += 1

    def __enter__(self) -> IdleConnections:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()


class Dribbler:
    """An allowed peer that associates, then sends a P-DATA PDU one byte a second, again and again."""

    PDU_BODY = 16 * 1024

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.associated = threading.Event()
        self.cut_after_s: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ae = AE(ae_title="DRIBBLER")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 60
        while not self.stop.is_set():
            assoc = ae.associate("127.0.0.1", self.port, ae_title="RTCHECK")
            if not assoc.is_established:
                time.sleep(0.2)
                continue
            self.associated.set()
            raw = assoc.dul.socket.socket
            started = time.monotonic()
            try:
                raw.sendall(struct.pack(">BBL", 0x04, 0, self.PDU_BODY))
                while not self.stop.wait(1.0) and assoc.is_established:
                    raw.sendall(b"\x00")
            except OSError:
                pass
            if not self.stop.is_set():
                self.cut_after_s.append(time.monotonic() - started)
            assoc.abort()

    def __enter__(self) -> Dribbler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def test_idle_and_dribbling_connections_do_not_lock_out_an_allowed_peer(tmp_path: Path) -> None:
    node = Node(
        tmp_path / "node",
        *("--allow", "ECHOSCU@127.0.0.1", "--allow", "DRIBBLER@127.0.0.1"),
        *("--request-timeout", "2", "--pdu-timeout", "4"),
    ).start()
    try:
        with IdleConnections(node.port, 16) as idle, Dribbler(node.port) as d1, Dribbler(node.port) as d2:
            with Dribbler(node.port) as d3, Dribbler(node.port) as d4:
                dribblers = [d1, d2, d3, d4]
                assert all(d.associated.wait(20) for d in dribblers), node.log()[-3000:]
                results = []
                for _ in range(5):
                    results.append(echo(node))
                    time.sleep(1.5)
                assert [r.returncode for r in results] == [0] * 5, node.log()[-6000:]
                # The node closed the idle connections (each time they came back) and cut the dribblers.
                deadline = time.monotonic() + 15
                while not all(d.cut_after_s for d in dribblers) and time.monotonic() < deadline:
                    time.sleep(0.2)
            assert idle.reopened >= 16
        cuts = [t for d in dribblers for t in d.cut_after_s]
        assert cuts and max(cuts) < 4 + Dribbler.PDU_BODY / (64 * 1024) + 3, cuts
        log = node.log()
        assert "event=pdu_deadline" in log
        # Idle connections are logged once per peer per minute, not once per attempt.
        assert log.count("event=connection_closed") == 1, log[-3000:]
    finally:
        node.stop()


def test_strangers_are_rejected_before_holding_a_slot_and_logged_once(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", "--allow", "ECHOSCU@127.0.0.1", "--max-associations-per-peer", "1").start()
    try:
        for _ in range(5):
            assert echo(node, calling="INTRUDER").returncode != 0
        assert echo(node, called="ANY-SCP").returncode != 0  # the called AE title is checked too
        assert echo(node).returncode == 0  # one slot for 127.0.0.1, and the strangers held none of it
        log = node.log()
        assert log.count("event=association_rejected") == 1, log  # the same address: once a minute
        assert "calling_ae=INTRUDER" in log
        # The per-peer limit: while one association from 127.0.0.1 is open, a second is refused.
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert held.is_established
        try:
            refused = echo(node)
            assert refused.returncode != 0 and b"Local Limit Exceeded" in refused.stdout + refused.stderr
        finally:
            held.release()
        assert echo(node).returncode == 0
    finally:
        node.stop()


def test_a_pdu_larger_than_announced_is_cut(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", "--allow", "ECHOSCU@127.0.0.1").start()
    try:
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        raw.sendall(struct.pack(">BBL", 0x04, 0, 4 * 1024**3 - 1))  # a 4 GB PDU (131072 bytes announced)
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established
        assert echo(node).returncode == 0
    finally:
        node.stop()


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\xff\xff\xff\xff"])
def test_junk_instead_of_a_request_is_closed(tmp_path: Path, junk: bytes) -> None:
    node = Node(tmp_path / "node").start()
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(junk)
            assert sock.recv(100) == b""  # closed, nothing sent back
        assert echo(node).returncode == 0
    finally:
        node.stop()


def _deflate_bomb(path: Path, inflated_bytes: int) -> Path:
    """An RT Plan in Deflated Explicit VR Little Endian: a valid header, then a private OB
    element of ``inflated_bytes`` zeros, which deflate about 1000:1."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, RTPlanStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = RTPlanStorage, generate_uid()
    ds.StudyInstanceUID, ds.PatientID = generate_uid(), "BOMB"
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_dataset(head, ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    private = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6) + b"BOMB  "
    element = struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, inflated_bytes)
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)
        fh.write(deflater.compress(head.getvalue() + private + element))
        zeros = bytes(1 << 20)
        for _ in range(inflated_bytes >> 20):
            fh.write(deflater.compress(zeros))
        fh.write(deflater.flush())
    return path


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the node's peak RSS from /proc")
def test_deflate_bombs_leave_memory_bounded_and_the_node_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    from pynetdicom import _config
    from pynetdicom.sop_class import RTPlanStorage

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes as they are
    bomb = _deflate_bomb(tmp_path / "bomb.dcm", 1 << 30)
    assert bomb.stat().st_size < 1.1 * 1024 * 1024  # about 1 MB on the wire, 1 GiB inflated
    node = Node(tmp_path / "node", "--allow", "ECHOSCU@127.0.0.1", "--allow", "SENDER@127.0.0.1").start()
    try:
        assert node.proc is not None
        before = peak_rss_mb(node.proc.pid)
        statuses: list[int] = []

        def send() -> None:
            ae = AE(ae_title="SENDER")
            ae.add_requested_context(RTPlanStorage, DeflatedExplicitVRLittleEndian)
            ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 120
            assoc = ae.associate("127.0.0.1", node.port, ae_title="RTCHECK")
            assert assoc.is_established
            try:
                statuses.append(int(assoc.send_c_store(bomb).Status))
            finally:
                assoc.release()

        senders = [threading.Thread(target=send) for _ in range(4)]  # four at once
        for t in senders:
            t.start()
        for t in senders:
            t.join(240)
        peak = peak_rss_mb(node.proc.pid)
        print(f"node peak RSS: {before:.0f} MB at start, {peak:.0f} MB after 4 deflate bombs")
        assert statuses == [0xA700] * 4  # refused: inflates beyond --max-object-mb (1024 MiB)
        assert peak < 600, f"peak RSS {peak:.0f} MB (at start {before:.0f} MB)"
        assert echo(node).returncode == 0
        assert not list((node.storage / ".incoming").iterdir())
    finally:
        node.stop()


def test_a_resent_instance_after_a_patient_id_correction_leaves_one_copy(tmp_path: Path) -> None:
    from pydicom.uid import RTPlanStorage, generate_uid

    from rtcheck.node.store import ObjectStore
    from rtcheck.node.wire import ObjectHeader

    store = ObjectStore(tmp_path / "storage")
    sop = generate_uid()
    wrong = store.store(ObjectHeader(RTPlanStorage, sop, "1.2.3", "MRN-WRONG"), b"as first sent")
    fixed = store.store(ObjectHeader(RTPlanStorage, sop, "1.2.3", "MRN-RIGHT"), b"corrected")
    assert fixed.path != wrong.path and fixed.moved_from == (wrong.path,)
    assert [p.read_bytes() for p in (tmp_path / "storage").rglob("*.dcm")] == [b"corrected"]
    # The old patient's folder is looked at again (its course lost a plan): the node touches it.
    assert wrong.path.parents[2] != fixed.path.parents[2]


def test_control_characters_from_a_sender_are_escaped_in_the_log(tmp_path: Path, course_dir) -> None:  # type: ignore[no-untyped-def]
    import shutil

    import pydicom

    folder = tmp_path / "course"
    shutil.copytree(course_dir("compliant", dose_spacing_mm=5.0), folder)
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientID = "MRN\r\x1b[2K\x00FAKE"
        if ds.Modality == "RTPLAN":
            ds.RTPlanLabel = ds.RTPlanLabel + "\n\x1b[32m"
        ds.save_as(path, enforce_file_format=True)
    node = Node(tmp_path / "node", "--allow", "STORESCU@127.0.0.1").start()
    try:
        sent = subprocess.run(
            [dcmtk("storescu"), "-aet", "STORESCU", "-aec", "RTCHECK", "127.0.0.1", str(node.port)]
            + [str(p) for p in sorted(folder.glob("*.dcm"))],
            capture_output=True,
            timeout=60,
            env=ECHO_ENV,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        deadline = time.monotonic() + 60
        while "event=check_started" not in node.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        node.stop()
    raw = node.log_path.read_bytes()
    assert b"event=check_started" in raw
    assert not any(c in raw for c in (b"\r", b"\x1b", b"\x00")), raw[-2000:]
    assert r'patient_id="MRN\r\x1b[2K\x00FAKE" plans="LDRT\n\x1b[32m+SFRT\n\x1b[32m"' in raw.decode()
    assert all(line.startswith(("20", " ", "\t", "Traceback")) or not line for line in raw.decode().splitlines())
