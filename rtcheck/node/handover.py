"""The pipe on which worker processes hand the node each report as soon as it is checked.

A worker checks a course and then, in the same call and from the same workspace, draws
its figures and renders the HTML page and the PDF: about half as long again as the check.
The JSON and text reports must not wait for that, and the figures must not be drawn from
a second reading of the course. So the worker sends the checked report down this pipe
first, and the node writes it while the figures are being drawn; the rendered page and
PDF come back with the call's result.

One pipe serves every worker of a pool: the node holds its reading end and a writing
end, which each worker process receives when it starts; a lock shared by the workers
keeps their messages whole. When the pool has ended, the node closes its writing end,
and the reading thread stops once it has delivered whatever the workers sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.synchronize import Lock


@dataclass(frozen=True)
class CheckedReport:
    """A course's report as soon as it is checked, before its figures are drawn.

    ``token`` names the submission it belongs to (the node numbers them); ``seconds`` is the
    time the check took in the worker.
    """

    token: int
    verdict: str
    error: str | None
    seconds: float
    json_text: str
    txt_text: str


@dataclass(frozen=True)
class HandoverEnd:
    """The writing end of the pipe, as a worker process holds it."""

    connection: Connection
    lock: Lock

    def send(self, report: CheckedReport) -> None:
        with self.lock:
            self.connection.send(report)


class ReportHandover:
    """The node's end: a thread that passes each checked report to ``deliver``."""

    def __init__(self, context: SpawnContext, deliver: Callable[[CheckedReport], None]) -> None:
        self._reader, writer = context.Pipe(duplex=False)
        self.end = HandoverEnd(writer, context.Lock())
        self._deliver = deliver
        self._thread = threading.Thread(target=self._forward, name="rtcheck-handover", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        try:
            while True:
                self._deliver(self._reader.recv())
        except (EOFError, OSError):  # every writing end is closed: the pool has ended
            pass
        finally:
            self._reader.close()

    def close(self, *, wait: bool) -> None:
        """Close the node's writing end, once the pool's processes have ended or are ending.

        ``wait``: return only when every report the workers sent has been delivered (the
        pool's processes must have exited, or the thread waits for them).
        """
        self.end.connection.close()
        if wait:
            self._thread.join()
