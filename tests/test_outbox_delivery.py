"""What the outbox promises a record system: delivery at least once, and no endless retry of a refusal.

The destinations are pynetdicom SCPs in this process, on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from peers import free_port
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, EncapsulatedPDFStorage
from test_send import report_file  # noqa: F401 (the fixture)

from rtcheck.send import Destination, Outbox


@contextmanager
def destination(port: int, sop_class: str, on_store) -> Iterator[None]:  # type: ignore[no-untyped-def]
    ae = AE(ae_title="ARCHIVE")
    ae.add_supported_context(sop_class)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield
    finally:
        server.shutdown()


def test_a_report_whose_answer_was_lost_is_sent_again_with_the_same_uid(
    report_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """At least once: the destination stored the report, then the association broke before its
    answer came back. The outbox cannot tell, so it sends the report again, under the same SOP
    Instance UID: a record system that files by UID keeps one copy."""
    got: list[str] = []

    def on_store(event: evt.Event) -> int:
        got.append(str(event.dataset.SOPInstanceUID))
        if len(got) == 1:
            event.assoc.abort()  # stored, but the answer never leaves
        return 0x0000

    port = free_port()
    outbox = Outbox(tmp_path / "outbox", calling_ae="RTCHECK", timeout_s=10)
    outbox.enqueue(report_file)
    with destination(port, EncapsulatedPDFStorage, on_store):
        target = Destination("ARCHIVE", "127.0.0.1", port)
        assert outbox.send_pending(target) == 0 and len(outbox.pending()) == 1  # no answer: still queued
        assert outbox.send_pending(target) == 1 and outbox.pending() == []
    uid = str(pydicom.dcmread(report_file).SOPInstanceUID)
    assert got == [uid, uid]


def test_a_destination_that_refuses_pdf_is_not_retried_forever(
    report_file: Path,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    outbox = Outbox(tmp_path / "outbox", calling_ae="RTCHECK", timeout_s=10)
    queued = outbox.enqueue(report_file)
    with destination(port, CTImageStorage, lambda event: 0x0000), caplog.at_level(logging.INFO, "rtcheck.send"):
        assert outbox.send_pending(Destination("ARCHIVE", "127.0.0.1", port)) == 0
    assert outbox.pending() == []  # nothing left to retry: the sender sleeps until a new report
    assert (outbox.refused_folder / queued.name).is_file()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "rtcheck.send" and r.levelno == logging.ERROR]
    assert "accepts none of these objects (Encapsulated PDF Storage) from AE RTCHECK" in line
    assert "aborted" not in line
    # The next start (the destination may have been configured meanwhile) queues it again.
    assert outbox.requeue_refused() == 1 and [p.name for p in outbox.pending()] == [queued.name]
