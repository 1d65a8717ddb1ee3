"""``rtcheck serve`` against real DICOM peers: DCMTK's storescu/echoscu and pynetdicom.

Every test talks to the node as a separate process on a free port of 127.0.0.1 (never any
other address), with phantom courses written by :mod:`rtcheck.phantom`. A test that needs
DCMTK fails, instead of skipping, when the environment variable CI is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from peers import dcmtk, free_port
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    Verification,
)

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.node.config import SettingsError, load_settings
from rtcheck.node.store import ObjectStore, safe_name
from rtcheck.node.wire import ObjectHeader, uid_problem
from rtcheck.phantom import write_course, write_ct_series
from rtcheck.wellformed import check_well_formed

RT_CLASSES = [RTPlanStorage, RTStructureSetStorage, RTDoseStorage]
QUIET_S = 0.5
REPORT_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- helpers


class Node:
    """``rtcheck serve`` as a subprocess on 127.0.0.1, with its own storage and reports."""

    def __init__(self, base: Path, *extra: str) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.storage = base / "storage"
        self.reports = base / "reports"
        self.log_path = base / "node.log"
        self.extra = list(extra)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        args = [
            sys.executable,
            "-m",
            "rtcheck",
            "serve",
            "--storage",
            str(self.storage),
            "--reports",
            str(self.reports),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--quiet-period",
            str(QUIET_S),
            "--workers",
            "1",
            *self.extra,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "event=listening" in self.log(offset):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the node did not start:\n{self.log(offset)}")

    def log(self, offset: int = 0) -> str:
        try:
            return self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("the node did not stop on SIGTERM") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def reports_of(self, patient_id: str) -> list[Path]:
        return sorted((self.reports / safe_name(patient_id, "")).glob("*.json"))

    def wait_for_reports(self, patient_id: str, count: int, timeout: float = REPORT_TIMEOUT_S) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.reports_of(patient_id)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no report for {patient_id} after {timeout} s; node log:\n{self.log()[-4000:]}")

    def stored(self, sop_uid: str) -> Path:
        found = list(self.storage.rglob(f"{sop_uid}.dcm"))
        assert len(found) == 1, f"{sop_uid}: stored {len(found)} times"
        return found[0]


@pytest.fixture(scope="module")
def courses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder per phantom variant used here; each variant is a different patient."""
    root = tmp_path_factory.mktemp("courses")
    variants = [
        "compliant",
        "sfrt_5_fractions",
        "control_arm",
        "ldrt_3_fractions",
        "sfrt_rx_7gy",
        "valley_4gy",
        "peaks_too_close",
        "no_dose_reference",
        "multi_plan_dose",
        "dose_32bit",
        "ldrt_rx_4gy",
        "peaks_overdosed_14gy",
        "peak_outside_gtv",
        "single_plan_two_groups",
        "sfrt_rx_6gy",
        "ldrt_irradiates_brain_met",
    ]
    out = {}
    for variant in dict.fromkeys(variants):
        # A 5 mm dose grid (instead of 2.5) keeps the others small; the example course is as shipped.
        write_course(root / variant, variant, **({} if variant == "compliant" else {"dose_spacing_mm": 5.0}))
        out[variant] = root / variant
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The node most tests share; senders outside --allow are turned away."""
    allow = ["STORESCU", "ECHOSCU", "SENDER", "LIMITED@192.0.2.1"]
    extra = [arg for entry in allow for arg in ("--allow", entry)]
    n = Node(tmp_path_factory.mktemp("node"), *extra, "--max-object-mb", "8", "--incomplete-timeout", "3")
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def raw_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends files as they are on disk (no decode and re-encode)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file, after preamble and file meta."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", path
    (group_length,) = struct.unpack_from("<I", data, 140)
    return data[144 + group_length :]


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def course_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def expected_verdict(folder: Path) -> tuple[str, str]:
    """(course key, verdict) of the course in ``folder``, checked in this process."""
    (course,) = find_courses([folder])
    return course.key, str(check_course(course, load_protocol(None)).verdict)


def storescu(node: Node, files: list[Path], *options: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    args = [dcmtk("storescu"), *options, "-aec", "RTCHECK", "127.0.0.1", str(node.port), *map(str, files)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_course_sent_whole_is_reported_when_the_sender_releases(
    tmp_path: Path, courses: dict[str, Path], raw_send: None
) -> None:
    """A-RELEASE says the sender sent what it meant to: no quiet period for a course it brought whole."""
    node = Node(tmp_path / "node", "--quiet-period", "60")
    whole, spread = course_files(courses["sfrt_rx_7gy"]), course_files(courses["control_arm"])
    try:
        node.start()
        assert send_files(scu(), node.port, whole) == [0] * len(whole)
        released = time.monotonic()
        node.wait_for_reports("PHANTOM_sfrt_rx_7gy", 1, timeout=40)
        assert time.monotonic() - released < 40  # well inside the 60 s quiet period
        plan = next(f for f in spread if f.name.startswith("RP."))
        assert send_files(scu(), node.port, [f for f in spread if f != plan]) == [0] * (len(spread) - 1)
        assert send_files(scu(), node.port, [plan]) == [0]
        aborted = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert aborted.is_established and aborted.send_c_store(whole[0]).Status == 0
        aborted.abort()
        time.sleep(3.0)  # the check of the spread course has started; its quiet period is not over
        assert "early=yes" in node.log()
        assert not node.reports_of("PHANTOM_control_arm")
        assert len(node.reports_of("PHANTOM_sfrt_rx_7gy")) == 1  # an aborted re-send waits too
    finally:
        node.stop()


def scu(calling: str = "SENDER", contexts: list[tuple[str, list[str]]] | None = None) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for sop_class, syntaxes in contexts or [(c, [ExplicitVRLittleEndian]) for c in RT_CLASSES]:
        ae.add_requested_context(sop_class, syntaxes)
    return ae


def send_files(ae: AE, port: int, files: list[Path]) -> list[int]:
    assoc = ae.associate("127.0.0.1", port, ae_title="RTCHECK")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(f).Status) for f in files]
    finally:
        assoc.release()


def assert_stored_identical(node: Node, files: list[Path]) -> None:
    for f in files:
        assert dataset_bytes(node.stored(sop_uid(f))) == dataset_bytes(f), f


def report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- DCMTK


def test_echoscu_gets_success(node: Node) -> None:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aec", "RTCHECK", "127.0.0.1", str(node.port)],
        capture_output=True,
        timeout=30,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_storescu_course_gets_the_verdict_of_check_course(node: Node, courses: dict[str, Path], tmp_path: Path) -> None:
    folder = courses["compliant"]
    ct = write_ct_series(tmp_path / "ct", 3, rows=64, cols=64)
    files = course_files(folder)
    sender = storescu(node, [*files, *ct])
    out, _ = sender.communicate(timeout=60)
    assert sender.returncode == 0, out.decode()

    (path,) = node.wait_for_reports("PHANTOM_compliant", 1)
    key, verdict = expected_verdict(folder)
    data = report(path)
    assert (data["course_key"], data["verdict"]) == (key, verdict)
    assert path.with_suffix(".txt").read_text(encoding="utf-8").startswith("VERDICT")
    assert_stored_identical(node, files)
    for f in ct:  # images are stored, as received, but not checked
        assert node.stored(sop_uid(f)).parent.name == "CT"
        assert dataset_bytes(node.stored(sop_uid(f))) == dataset_bytes(f)


def test_eight_senders_at_once(node: Node, courses: dict[str, Path]) -> None:
    variants = [
        "control_arm",
        "ldrt_3_fractions",
        "sfrt_rx_7gy",
        "valley_4gy",
        "peaks_too_close",
        "no_dose_reference",
        "multi_plan_dose",
        "dose_32bit",
    ]
    senders = [storescu(node, course_files(courses[v]), "-aet", "SENDER") for v in variants]
    for sender in senders:
        out, _ = sender.communicate(timeout=90)
        assert sender.returncode == 0, out.decode()

    for v in variants:
        files = course_files(courses[v])
        patient = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
        (path,) = node.wait_for_reports(patient, 1)
        (course,) = find_courses([courses[v]])
        assert report(path)["course_key"] == course.key
        assert_stored_identical(node, files)
    time.sleep(QUIET_S + 0.5)  # a second report would have been written by now
    for v in variants:
        patient = str(pydicom.dcmread(course_files(courses[v])[0], stop_before_pixels=True).PatientID)
        assert len(node.reports_of(patient)) == 1, v


def test_malformed_objects_fail_while_a_good_sender_completes(
    node: Node, courses: dict[str, Path], tmp_path: Path, raw_send: None
) -> None:
    good = storescu(node, course_files(courses["ldrt_rx_4gy"]))
    plan = next(f for f in course_files(courses["peak_outside_gtv"]) if f.name.startswith("RP."))
    data = plan.read_bytes()
    (group_length,) = struct.unpack_from("<I", data, 140)
    meta_end = 144 + group_length
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: meta_end + (len(data) - meta_end) * 2 // 3])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(data[:meta_end] + b"\x08\x00\x18\x00UI" + b"\xff" * 300)

    statuses = send_files(scu(contexts=[(RTPlanStorage, [ExplicitVRLittleEndian])]), node.port, [truncated, garbage])
    assert all(0xC000 <= s <= 0xCFFF for s in statuses), [hex(s) for s in statuses]
    assert not list(node.storage.rglob(f"{sop_uid(plan)}.dcm"))

    out, _ = good.communicate(timeout=60)
    assert good.returncode == 0, out.decode()
    node.wait_for_reports("PHANTOM_ldrt_rx_4gy", 1)
    log = node.log()
    assert "reason=" in log and "malformed data set" in log and "calling_ae=SENDER" in log


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.filterwarnings("ignore:The value length")
def test_invalid_uids_are_refused_and_nothing_leaves_storage(node: Node) -> None:
    source = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    cases = [
        ("../../../../evil", None),  # the SOP Instance UID (and so the request) climbs out
        ("1.2.abc", None),
        (generate_uid(), "../../evil"),  # the study UID climbs out
        (generate_uid(), "1." + "2" * 70),  # too long
    ]
    assoc = scu(contexts=[(RTPlanStorage, [ImplicitVRLittleEndian])]).associate(
        "127.0.0.1", node.port, ae_title="RTCHECK"
    )
    assert assoc.is_established
    try:
        for instance, study in cases:
            ds = source.copy()
            ds.SOPInstanceUID = instance
            if study is not None:
                ds.StudyInstanceUID = study
            status = assoc.send_c_store(ds)
            assert status.Status == 0xC001, (instance, study, hex(status.Status))
    finally:
        assoc.release()
    assert not list(node.base.parent.rglob("evil*"))
    for path in node.storage.rglob("*"):
        assert path.resolve().is_relative_to(node.storage.resolve())


def test_too_large_object_fails_and_is_not_written(node: Node) -> None:
    ds = _ct_dataset(rows=2100, cols=2100)  # 8.8 MB of pixels > --max-object-mb 8
    assoc = scu(contexts=[(CTImageStorage, [ExplicitVRLittleEndian])]).associate(
        "127.0.0.1", node.port, ae_title="RTCHECK"
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0xA700
    finally:
        assoc.release()
    assert not list(node.storage.rglob(f"{ds.SOPInstanceUID}.dcm"))


def test_deflated_and_compressed_objects_are_kept_as_received(node: Node, raw_send: None) -> None:
    mr = Path(get_testdata_file("MR_small_jp2klossless.dcm"))
    contexts = [(MRImageStorage, [JPEG2000Lossless])]
    assert send_files(scu(contexts=contexts), node.port, [mr]) == [0]
    stored = node.stored(sop_uid(mr))
    assert dataset_bytes(stored) == dataset_bytes(mr)
    assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_deflated_plan_is_stored_deflated(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = scu(contexts=[(RTPlanStorage, [DeflatedExplicitVRLittleEndian])]).associate(
        "127.0.0.1", node.port, ae_title="RTCHECK"
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    stored = pydicom.dcmread(node.stored(ds.SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert stored.RTPlanLabel == ds.RTPlanLabel and stored.PatientID == ds.PatientID


# --------------------------------------------------------------------------- pynetdicom


def test_pynetdicom_course_gets_the_verdict_of_check_course(
    node: Node, courses: dict[str, Path], raw_send: None
) -> None:
    folder = courses["sfrt_5_fractions"]
    files = course_files(folder)
    assert send_files(scu(), node.port, files) == [0] * len(files)
    (path,) = node.wait_for_reports("PHANTOM_sfrt_5_fractions", 1)
    key, verdict = expected_verdict(folder)
    assert (report(path)["course_key"], report(path)["verdict"]) == (key, verdict)
    assert_stored_identical(node, files)


def test_reexport_gets_a_fresh_report_and_the_old_one_stays(
    node: Node, courses: dict[str, Path], raw_send: None
) -> None:
    files = course_files(courses["sfrt_rx_6gy"])
    assert send_files(scu(), node.port, files) == [0] * len(files)
    (first,) = node.wait_for_reports("PHANTOM_sfrt_rx_6gy", 1)
    first_text = first.read_text(encoding="utf-8")

    plan = next(f for f in files if f.name.startswith("RP."))
    assert send_files(scu(), node.port, [plan]) == [0]  # the same plan, exported again
    found = node.wait_for_reports("PHANTOM_sfrt_rx_6gy", 2)
    assert first in found and first.read_text(encoding="utf-8") == first_text
    assert f"sop_uid={sop_uid(plan)}" in node.log() and "replaced=yes" in node.log()
    time.sleep(QUIET_S + 1.0)
    assert len(node.reports_of("PHANTOM_sfrt_rx_6gy")) == 2


def test_incomplete_course_waits_then_is_not_evaluable(node: Node, courses: dict[str, Path], raw_send: None) -> None:
    files = course_files(courses["ldrt_irradiates_brain_met"])
    doses = [f for f in files if f.name.startswith("RD.")]
    started = time.monotonic()
    assert send_files(scu(), node.port, [f for f in files if f not in doses]) == [0] * (len(files) - len(doses))
    (path,) = node.wait_for_reports("PHANTOM_ldrt_irradiates_brain_met", 1)
    assert time.monotonic() - started >= 3.0  # --incomplete-timeout 3
    data = report(path)
    assert data["verdict"] == "not_evaluable"
    assert any("RTDOSE" in note and "references plan" in note for note in data["notes"])

    assert send_files(scu(), node.port, doses) == [0] * len(doses)  # the rest arrives: checked afresh
    found = node.wait_for_reports("PHANTOM_ldrt_irradiates_brain_met", 2)
    key, verdict = expected_verdict(courses["ldrt_irradiates_brain_met"])
    (second,) = [p for p in found if p != path]
    assert (report(second)["course_key"], report(second)["verdict"]) == (key, verdict)


def test_unknown_calling_ae_or_host_is_rejected(node: Node) -> None:
    for calling in ("INTRUDER", "LIMITED"):  # LIMITED is allowed only from 192.0.2.1
        assoc = scu(calling, [(Verification, [ImplicitVRLittleEndian])]).associate(
            "127.0.0.1", node.port, ae_title="RTCHECK"
        )
        assert assoc.is_rejected, calling
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    assoc = scu("SENDER", [(Verification, [ImplicitVRLittleEndian])]).associate(
        "127.0.0.1", node.port, ae_title="RTCHECK"
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert "event=association_rejected calling_ae=INTRUDER" in node.log()


def test_unsupported_sop_class_is_refused_at_negotiation(node: Node) -> None:
    from pynetdicom.sop_class import RTBeamsTreatmentRecordStorage

    assoc = scu(contexts=[(RTBeamsTreatmentRecordStorage, [ExplicitVRLittleEndian])]).associate(
        "127.0.0.1", node.port, ae_title="RTCHECK"
    )
    assert not assoc.is_established  # no context accepted: pynetdicom aborts


# --------------------------------------------------------------------------- restart and TLS


def test_restarts_lose_no_acknowledged_object_and_no_check(
    tmp_path: Path, courses: dict[str, Path], raw_send: None
) -> None:
    node = Node(tmp_path / "node", "--quiet-period", "1.0")
    a, b, c, d = (
        course_files(courses[v])
        for v in ("peaks_overdosed_14gy", "peak_outside_gtv", "single_plan_two_groups", "valley_4gy")
    )
    acknowledged: list[Path] = []
    try:
        node.start()
        plans = [f for f in a if f.name.startswith("RP.")]
        others = [f for f in a if f not in plans]
        assert send_files(scu(), node.port, others) == [0] * len(others)
        # Complete now, but spread over two associations: more may be on the way (quiet period).
        assert send_files(scu(), node.port, plans) == [0] * len(plans)
        assert send_files(scu(), node.port, plans[:1]) == [0]  # within the quiet period: still one export
        acknowledged += a
        node.wait_for_reports("PHANTOM_peaks_overdosed_14gy", 1)
        assert "event=check_dropped" in node.log()  # the check started after the first association

        killed_sender = scu()
        killed_sender.dimse_timeout = 3  # pynetdicom waits this long for a reply that never comes
        assoc = killed_sender.associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert assoc.is_established
        for f in c[:2]:
            assert assoc.send_c_store(f).Status == 0
            acknowledged.append(f)
        statuses: list[int] = []
        last = threading.Thread(target=lambda: statuses.extend(_try_store(assoc, f) for f in c[2:]))
        last.start()  # C's last objects are in flight while B arrives
        assert send_files(scu(), node.port, b) == [0] * len(b)  # complete, but still in its quiet period
        acknowledged += b
        node.kill9()  # C's association is open, maybe mid-object
        assoc.abort()
        last.join(timeout=30)
        acknowledged += [f for f, s in zip(c[2:], statuses, strict=False) if s == 0]
        assert not node.reports_of("PHANTOM_peak_outside_gtv")

        node.start()
        assert_stored_identical(node, acknowledged)
        assert not [p for p in node.storage.rglob(".*") if p.is_file()], "temporary files left behind"
        node.wait_for_reports("PHANTOM_peak_outside_gtv", 1)

        rest = [f for f in c if f not in acknowledged]
        if rest:
            assert send_files(scu(), node.port, rest) == [0] * len(rest)
        node.wait_for_reports("PHANTOM_single_plan_two_groups", 1)
        time.sleep(1.0)  # the restart re-examined A and B long ago: a duplicate would be there now
        for patient in ("PHANTOM_peaks_overdosed_14gy", "PHANTOM_peak_outside_gtv", "PHANTOM_single_plan_two_groups"):
            assert len(node.reports_of(patient)) == 1, patient

        # SIGTERM: the node stops accepting but lets the open association finish.
        assoc = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert assoc.is_established
        assert assoc.send_c_store(d[0]).Status == 0
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert [assoc.send_c_store(f).Status for f in d[1:]] == [0] * (len(d) - 1)
        assoc.release()
        assert node.proc.wait(timeout=30) == 0
        assert scu().associate("127.0.0.1", node.port, ae_title="RTCHECK").is_established is False
        node.start()  # the check owed when it stopped is made now
        node.wait_for_reports("PHANTOM_valley_4gy", 1)
        assert_stored_identical(node, d)
    finally:
        node.stop()


def _worker_pids(node_pid: int) -> list[int]:
    """The node's worker processes (children running multiprocessing's spawn_main)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == node_pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to find the worker processes")
def test_a_dead_worker_is_replaced(node: Node, courses: dict[str, Path], raw_send: None) -> None:
    assert node.proc is not None
    deadline = time.monotonic() + 20
    while not (workers := _worker_pids(node.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    files = course_files(courses["peaks_overdosed_14gy"])
    assert send_files(scu(), node.port, files) == [0] * len(files)
    (path,) = node.wait_for_reports("PHANTOM_peaks_overdosed_14gy", 1)
    assert report(path)["verdict"] == expected_verdict(courses["peaks_overdosed_14gy"])[1]


def _try_store(assoc: object, path: Path) -> int:
    try:
        status = assoc.send_c_store(path)  # type: ignore[attr-defined]
        return int(status.Status) if "Status" in status else -1
    except Exception:
        return -1


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _certificates(folder: Path) -> None:
    """A throw-away CA, and a server and a client certificate it signed (EC keys: fast)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    folder.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=folder
    )
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip


def test_mutual_tls_and_the_association_limit(tmp_path: Path, courses: dict[str, Path], raw_send: None) -> None:
    certs = tmp_path / "certs"
    _certificates(certs)
    node = Node(
        tmp_path / "node",
        *("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")),
        *("--tls-ca", str(certs / "ca.pem")),
        *("--max-associations", "1"),
    )
    try:
        node.start()
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
        client.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        files = course_files(courses["ldrt_3_fractions"])
        assoc = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK", tls_args=(client, "127.0.0.1"))
        assert assoc.is_established
        second = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK", tls_args=(client, "127.0.0.1"))
        assert second.is_rejected  # --max-associations 1
        rj = second.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit
        assert [assoc.send_c_store(f).Status for f in files] == [0] * len(files)
        assoc.release()
        node.wait_for_reports("PHANTOM_ldrt_3_fractions", 1)

        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
        assoc = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK", tls_args=(anonymous, "127.0.0.1"))
        assert not assoc.is_established  # no client certificate
        assoc = scu().associate("127.0.0.1", node.port, ae_title="RTCHECK")
        assert not assoc.is_established  # no TLS at all
        assert "event=tls_refused" in node.log()
    finally:
        node.stop()


# --------------------------------------------------------------------------- settings and building blocks


def _ct_dataset(rows: int, cols: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "LARGE"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(rows * cols * 2)
    return ds


def _args(**values: object) -> object:
    import argparse

    from rtcheck.node.config import add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    argv: list[str] = []
    for key, value in values.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_config_file_fills_in_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "rtcheck.yaml"
    config.write_text(
        "ae_title: QA_NODE\nport: 4242\nstorage: store\nreports: /srv/reports\nallow: [TPS1, TPS2@127.0.0.1]\n"
        "quiet-period: 5\n"
    )
    settings = load_settings(_args(config=config, port=11113))
    assert settings.ae_title == "QA_NODE" and settings.port == 11113 and settings.quiet_period == 5
    assert settings.storage == tmp_path / "store"  # relative to the config file
    assert [str(r) for r in settings.allow] == ["TPS1", "TPS2@127.0.0.1"]
    assert settings.allow[1].admits("TPS2", "127.0.0.1") and not settings.allow[1].admits("TPS2", "10.1.1.1")

    config.write_text("storage: s\nreports: r\nmax_asociations: 3\n")
    with pytest.raises(SettingsError, match="unknown setting 'max_asociations'"):
        load_settings(_args(config=config))
    with pytest.raises(SettingsError, match="tls_cert and tls_key"):
        load_settings(_args(storage="s", reports="r", tls_cert=config))
    with pytest.raises(SettingsError, match="separate folders"):
        load_settings(_args(storage=tmp_path, reports=tmp_path / "reports"))


def test_serve_with_a_bad_setting_exits_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtcheck",
            "serve",
            "--storage",
            str(tmp_path),
            "--reports",
            str(tmp_path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 64 and "port 0: must be between 1 and 65535" in result.stderr


def test_uid_validation() -> None:
    assert uid_problem("1.2.840.10008.5.1.4.1.1.481.5") is None
    for bad in ("", "../x", "1.2.abc", "1.02", "1..2", "1." + "2" * 63):
        assert uid_problem(bad), bad


def test_well_formedness_walk_catches_truncation() -> None:
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    for implicit in (True, False):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        from io import BytesIO

        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
        body = dataset_bytes_from(buffer.getvalue())
        check_well_formed(body, implicit)
        for cut in (len(body) // 3, len(body) // 2, len(body) - 3):
            with pytest.raises(ValueError):
                check_well_formed(body[:cut], implicit)


def dataset_bytes_from(data: bytes) -> bytes:
    (group_length,) = struct.unpack_from("<I", data, 140)
    return data[144 + group_length :]


def test_safe_names_never_collide_or_escape() -> None:
    assert safe_name("PHANTOM_compliant", "x") == "PHANTOM_compliant"
    a, b = safe_name("A/B", "x"), safe_name("A_B", "x")
    assert a != b and "/" not in a
    assert safe_name("../..", "x").startswith("x_")


def test_a_resent_instance_replaces_the_old_file_even_in_another_study(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "storage")
    sop = generate_uid()
    first = ObjectHeader(RTPlanStorage, sop, "1.2.3", "P1")
    stored = store.store(first, b"first")
    assert not stored.replaced and stored.path.read_bytes() == b"first"
    again = store.store(first, b"again")
    assert again.replaced and again.path == stored.path and stored.path.read_bytes() == b"again"
    moved = store.store(ObjectHeader(RTPlanStorage, sop, "1.2.4", "P1"), b"moved")
    assert moved.moved_from == (stored.path,) and not stored.path.exists()
    assert [p.read_bytes() for p in (tmp_path / "storage").rglob("*.dcm")] == [b"moved"]
