"""Sending reports: C-STORE to DCMTK's storescp, and the outbox that waits for a destination.

Every peer listens on 127.0.0.1 (storescp listens on all interfaces, but is only ever sent to
on 127.0.0.1), on a free port; processes started here are ended in ``finally``. A test that
needs DCMTK fails, instead of skipping, when the environment variable CI is set.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pydicom
import pytest
from peers import free_port, received, storescp
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.errors import InputError
from rtcheck.reports.dicom import encapsulate_pdf
from rtcheck.reports.pdf import render_pdf
from rtcheck.send import Destination, Outbox, SendError, add_send_arguments, run_send, send_file

DEADLINE_S = 20.0


def wait_for(condition, timeout_s: float = DEADLINE_S, step_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


@pytest.fixture(scope="module")
def report_file(course_dir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Encapsulated PDF report of the compliant phantom course."""
    course = find_courses([course_dir("compliant")])[0]
    report = check_course(course, load_protocol())
    path = tmp_path_factory.mktemp("report") / "report.dcm"
    encapsulate_pdf(report, render_pdf(report, None)).save_as(path, enforce_file_format=True)
    return path


def test_send_file_stores_the_report_at_storescp(report_file: Path, tmp_path: Path) -> None:
    port = free_port()
    with storescp(port, tmp_path / "in", "ARCHIVE"):
        status = send_file(report_file, "ARCHIVE", "127.0.0.1", port)
        assert status == 0x0000
        assert wait_for(lambda: len(received(tmp_path / "in")) == 1)
    sent = pydicom.dcmread(report_file)
    [got] = received(tmp_path / "in")
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.EncapsulatedDocument == sent.EncapsulatedDocument


def test_rtcheck_send_command(report_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_send_arguments(parser)
    port = free_port()
    with storescp(port, tmp_path / "in", "ARCHIVE"):
        args = parser.parse_args([str(report_file), "--to", f"ARCHIVE@127.0.0.1:{port}"])
        assert run_send(args) == 0
    assert f"stored {report_file} at ARCHIVE@127.0.0.1:{port} (status 0x0000)" in capsys.readouterr().out
    # the destination is down now: one line that names it, and a non-zero exit code
    with pytest.raises(SendError, match=rf"ARCHIVE@127\.0\.0\.1:{port} could not be reached") as caught:
        run_send(args)
    assert "\n" not in str(caught.value) and caught.value.exit_code != 0
    with pytest.raises(InputError, match="no such file"):
        run_send(parser.parse_args([str(tmp_path / "missing.dcm"), "--to", f"ARCHIVE@127.0.0.1:{port}"]))
    with pytest.raises(SystemExit):
        parser.parse_args([str(report_file), "--to", "ARCHIVE-127.0.0.1"])


def test_destination_syntax() -> None:
    assert Destination.parse("PACS@127.0.0.1:104") == Destination("PACS", "127.0.0.1", 104)
    assert Destination.parse("PACS@[::1]:11112") == Destination("PACS", "::1", 11112)
    assert str(Destination("PACS", "::1", 11112)) == "PACS@[::1]:11112"
    for bad in ("PACS@127.0.0.1", "@host:104", "PACS@host:0", "PACS@host:70000", "A_TITLE_LONGER_THAN_16@h:104"):
        with pytest.raises(ValueError):
            Destination.parse(bad)


def test_outbox_delivers_once_the_destination_comes_up(report_file: Path, tmp_path: Path) -> None:
    port = free_port()
    destination = Destination("ARCHIVE", "127.0.0.1", port)
    outbox = Outbox(tmp_path / "outbox", initial_backoff_s=0.1, max_backoff_s=0.4, timeout_s=5.0)
    outbox.start(destination)
    try:
        queued = outbox.enqueue(report_file)
        assert queued.read_bytes() == report_file.read_bytes()
        assert wait_for(lambda: outbox.failures >= 2, 10.0)  # nobody listens yet: it keeps trying
        assert outbox.pending() == [queued]
        assert outbox.next_delay_s() <= 0.4
        with storescp(port, tmp_path / "in", "ARCHIVE"):
            assert wait_for(lambda: not outbox.pending())
            assert wait_for(lambda: len(received(tmp_path / "in")) == 1)
    finally:
        outbox.stop()
    assert received(tmp_path / "in")[0].SOPInstanceUID == pydicom.dcmread(report_file).SOPInstanceUID
    assert outbox.failures == 0


class RefusingArchive:
    """A pynetdicom Storage SCP on 127.0.0.1 that refuses the first object (out of resources)."""

    def __init__(self) -> None:
        self.calls = 0
        self.stored: list[str] = []
        self.lock = threading.Lock()
        self.ae = AE(ae_title="ARCHIVE")
        self.ae.add_supported_context(EncapsulatedPDFStorage)
        self.port = free_port()

    def handle(self, event: evt.Event) -> int:
        with self.lock:
            self.calls += 1
            if self.calls == 1:
                return 0xA700
            self.stored.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

    def __enter__(self) -> RefusingArchive:
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.handle)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def test_outbox_keeps_a_file_until_it_is_stored_and_survives_restarts(report_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    queued = Outbox(folder).enqueue(report_file)
    assert not list(folder.glob(".*"))  # no temporary file left behind
    restarted = Outbox(folder, timeout_s=5.0)  # a new process finds the queue as it was left
    assert restarted.pending() == [queued]
    with RefusingArchive() as archive:
        destination = Destination("ARCHIVE", "127.0.0.1", archive.port)
        assert restarted.send_pending(destination) == 0  # refused (0xA700): it stays queued
        assert restarted.pending() == [queued]
        assert restarted.send_pending(destination) == 1
    assert restarted.pending() == []
    assert archive.stored == [str(pydicom.dcmread(report_file).SOPInstanceUID)]


def test_outbox_backoff_is_exponential_and_capped(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, initial_backoff_s=2.0, max_backoff_s=300.0)
    delays = []
    for failures in range(12):
        outbox.failures = failures
        delays.append(outbox.next_delay_s())
    assert delays[:5] == [0.0, 2.0, 4.0, 8.0, 16.0]
    assert max(delays) == 300.0 == delays[-1]
    with pytest.raises(InputError, match="not a DICOM file"):
        outbox.enqueue(Path(__file__))
    assert outbox.pending() == []
