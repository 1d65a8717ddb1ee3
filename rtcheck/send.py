"""Sending reports to a DICOM destination: a C-STORE SCU, and an outbox that loses nothing.

:func:`send_file` stores one file at a destination (``rtcheck send FILE --to AE@host:port``)
and returns the C-STORE status. :class:`Outbox` is for a node that writes reports while
the destination may be down (``rtcheck serve --report-to``): :meth:`Outbox.enqueue` copies a
file into a queue folder atomically (a temporary name, fsync, rename, so a crash leaves
either the whole file or nothing), and a sender thread (:meth:`Outbox.start`) sends what is
queued, oldest first, removing a file only after the destination answered with a status
that means stored (success, or one of the standard's "stored with coercion" warnings).
While the destination cannot be reached, or is out of resources, it retries with
exponential backoff, capped. A file the destination will never take (it accepts no
Encapsulated PDF from this AE title, or answers with a lasting failure) is set aside in
``refused/`` with one error line, and queued again at the next start. The queue is the
folder itself, so it survives restarts.

Delivery is *at least once*: when the destination stored a file but its answer was lost
(the association broke, the node died), the file is sent again, under the same SOP
Instance UID, so a record system that files objects by UID keeps one copy.

Every association is opened with TCP_NODELAY: without it each small object stalls about
90 ms on Nagle's algorithm and delayed ACKs (measured against DCMTK).
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event

from .durable import atomic_copy, fsync_folder, make_folders
from .errors import ExitCode, InputError, RtcheckError
from .terminal import printable

log = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "RTCHECK"
DEFAULT_TIMEOUT_S = 30.0
#: C-STORE statuses that mean the object was stored: success, and the warnings
#: "coercion of data elements" (B000), "elements discarded" (B007), "data set does not
#: match SOP class" (B006) (PS3.4 B.2.3), plus the 0001/0107/0116 warnings of PS3.7 C.
STORED_STATUSES = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
#: Presentation contexts one association may propose (PS3.8: at most 128).
_MAX_CONTEXTS = 128
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default repertoire without backslash


class SendError(RtcheckError):
    """The destination could not be reached, refused the association, or did not store a file."""

    exit_code = ExitCode.SEND_FAILED


class SendRefused(SendError):
    """The destination answered, and will not take these objects from us: trying again cannot help."""


def is_permanent_failure(status: int) -> bool:
    """A C-STORE failure that will come back on every attempt: everything but "out of
    resources" (A7xx) and "processing failure" (0110), which may pass (PS3.4 B.2.3, PS3.7 C)."""
    return status not in STORED_STATUSES and not (0xA700 <= status <= 0xA7FF or status == 0x0110)


@dataclass(frozen=True)
class Destination:
    """A DICOM destination, written ``AE@host:port`` on the command line."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@host:port`` (an IPv6 host in brackets: ``AE@[::1]:104``); ValueError if malformed."""
        match = re.fullmatch(r"(?P<ae>[^@]+)@(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d{1,5})", text)
        if match is None:
            raise ValueError(f"{text!r} is not AE@host:port (e.g. PACS@127.0.0.1:104)")
        ae = match["ae"].strip()
        if not _AE_TITLE.match(ae) or not ae:
            raise ValueError(f"{ae!r} is not an AE title (1-16 printable characters, no backslash)")
        port = int(match["port"])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
        return cls(ae, match["v6"] or match["host"], port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True)
class SendResult:
    """What became of one file: its C-STORE status, or None with the reason it got none."""

    path: Path
    status: int | None
    problem: str = ""

    @property
    def stored(self) -> bool:
        return self.status in STORED_STATUSES


def _file_contexts(path: Path) -> tuple[str, str]:
    """(SOP class, transfer syntax) of a DICOM file, from its file meta information."""
    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except (OSError, InvalidDicomError) as exc:
        raise InputError(path, f"not a DICOM file with file meta information: {exc}") from exc
    sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if not sop_class or not syntax:
        raise InputError(path, "the file meta information lacks MediaStorageSOPClassUID or TransferSyntaxUID")
    return sop_class, syntax


def _nodelay(event: Event) -> None:
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_files(
    paths: Sequence[Path | str],
    destination: Destination,
    calling_ae: str = DEFAULT_CALLING_AE,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[SendResult]:
    """Store ``paths`` at ``destination`` over one association, in order.

    Raises :class:`InputError` for a file that is not DICOM (before connecting) and
    :class:`SendError` when no association can be had; a file the destination refuses gets
    its failure status in its :class:`SendResult`.
    """
    files = [Path(p) for p in paths]
    contexts = {p: _file_contexts(p) for p in files}
    if len(set(contexts.values())) > _MAX_CONTEXTS:
        raise SendError(f"{len(set(contexts.values()))} kinds of objects: more than one association can carry")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    for sop_class, syntax in dict.fromkeys(contexts.values()):
        ae.add_requested_context(sop_class, syntax)
    connected = threading.Event()  # set once the TCP connection is open: tells refused from rejected
    no_context = threading.Event()  # the association was accepted, but none of its presentation contexts

    def on_open(event: Event) -> None:
        connected.set()
        _nodelay(event)

    def on_accepted(event: Event) -> None:
        if not event.assoc.accepted_contexts:
            no_context.set()  # pynetdicom aborts such an association itself

    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ACCEPTED, on_accepted)],
    )
    if not assoc.is_established:
        if no_context.is_set():
            kinds = ", ".join(sorted({UID(c).name for c, _ in contexts.values()}))
            raise SendRefused(
                f"{destination} accepts none of these objects ({kinds}) from AE {calling_ae}: "
                "configure it to accept them from this AE title"
            )
        if assoc.is_rejected:
            why = f"rejected the association (calling AE {calling_ae}; check both AE titles)"
        elif connected.is_set():
            why = "aborted the association"
        else:
            why = f"could not be reached (connection refused, or none within {timeout_s:g} s)"
        raise SendError(f"{destination} {why}")
    results = []
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        for path in files:
            if contexts[path] not in accepted:
                results.append(SendResult(path, None, "the destination accepted no presentation context for it"))
                continue
            try:
                response = assoc.send_c_store(path)
            except (OSError, ValueError, RuntimeError) as exc:
                results.append(SendResult(path, None, f"{type(exc).__name__}: {exc}"))
                continue
            if "Status" in response:
                results.append(SendResult(path, int(response.Status)))
            else:
                results.append(SendResult(path, None, "no response (timeout, or the association was aborted)"))
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    sent = {r.path for r in results}
    results += [SendResult(p, None, "the association ended before it was sent") for p in files if p not in sent]
    return results


def send_file(
    path: Path | str,
    ae_title: str,
    host: str,
    port: int,
    calling_ae: str = DEFAULT_CALLING_AE,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Store one file at ``ae_title@host:port`` and return the C-STORE status (0 = success).

    Raises :class:`SendError` when the destination cannot be reached or gives no status.
    """
    result = send_files([path], Destination(ae_title, host, port), calling_ae, timeout_s=timeout_s)[0]
    if result.status is None:
        raise SendError(f"{path}: not stored at {ae_title}@{host}:{port}: {result.problem}")
    return result.status


# --------------------------------------------------------------------------- outbox


class Outbox:
    """A folder of files waiting to be stored at a destination, and the thread that sends them.

    ``enqueue`` may be called from any thread (and by other processes sharing the folder);
    files are sent oldest first. Backoff after a failed round starts at
    ``initial_backoff_s`` and doubles up to ``max_backoff_s``; when the queue is empty the
    sender sleeps until the next ``enqueue`` (or ``poll_s``, for files other processes
    queue).
    """

    SUFFIX = ".dcm"

    def __init__(
        self,
        folder: Path | str,
        *,
        calling_ae: str = DEFAULT_CALLING_AE,
        initial_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        poll_s: float = 30.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.folder = Path(folder)
        make_folders(self.folder)
        self.calling_ae = calling_ae
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, path: Path | str) -> Path:
        """Copy ``path`` into the queue (atomically, durably) and return the queued file."""
        source = Path(path)
        _file_contexts(source)  # refuse what could never be sent, now rather than forever
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{self.SUFFIX}"
        queued = self.folder / name
        atomic_copy(source, queued)
        self._wake.set()
        return queued

    def wake(self) -> None:
        """Look at the queue now: for files put there by rename rather than :meth:`enqueue`."""
        self._wake.set()

    def pending(self) -> list[Path]:
        """The queued files, oldest first."""
        return sorted(p for p in self.folder.glob(f"*{self.SUFFIX}") if not p.name.startswith("."))

    @property
    def refused_folder(self) -> Path:
        """Where files the destination will never take wait for a person (see :meth:`refuse`)."""
        return self.folder / "refused"

    def send_pending(self, destination: Destination) -> int:
        """One round: try to store every queued file; return how many were stored (and removed).

        Raises :class:`SendError` when the destination cannot be reached at all. A file the
        destination refuses for good (it accepts no such object from us, or answers with a
        failure other than "out of resources") is moved to :attr:`refused_folder` instead of
        being sent again and again.
        """
        pending = self.pending()
        if not pending:
            return 0
        stored = 0
        for batch in _batches(pending, _MAX_CONTEXTS):
            try:
                results = send_files(batch, destination, self.calling_ae, timeout_s=self.timeout_s)
            except SendRefused as exc:
                for path in batch:
                    self.refuse(path, str(exc))
                continue
            for result in results:
                if result.stored:
                    result.path.unlink(missing_ok=True)
                    stored += 1
                    log.info("report %s stored at %s (status 0x%04X)", result.path.name, destination, result.status)
                elif result.status is not None and is_permanent_failure(result.status):
                    self.refuse(result.path, f"{destination} answered status 0x{result.status:04X}")
                else:
                    status = "no status" if result.status is None else f"status 0x{result.status:04X}"
                    log.warning("report %s not stored at %s: %s %s", result.path.name, destination, status,
                                result.problem)  # fmt: skip
        if stored:
            fsync_folder(self.folder)
        return stored

    def refuse(self, path: Path, reason: str) -> None:
        """Set a file aside that the destination will not take; it is queued again at the next start."""
        self.refused_folder.mkdir(exist_ok=True)
        path.replace(self.refused_folder / path.name)
        fsync_folder(self.folder)
        log.error(
            "report %s refused: %s; kept in %s and queued again when the node next starts",
            path.name,
            reason,
            self.refused_folder,
        )

    def requeue_refused(self) -> int:
        """Queue again what was refused (the destination may have been configured since)."""
        refused = sorted(self.refused_folder.glob(f"*{self.SUFFIX}")) if self.refused_folder.is_dir() else []
        for path in refused:
            path.replace(self.folder / path.name)
        if refused:
            fsync_folder(self.folder)
            log.info("outbox: %d refused report(s) queued again", len(refused))
        return len(refused)

    # -- the sender thread ------------------------------------------------------------------
    def start(self, destination: Destination) -> None:
        """Start the sender thread (a daemon) for ``destination``."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the outbox's sender is already running")
        self.requeue_refused()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(destination,), name=f"outbox-{destination}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the sender thread (after the file it is sending, if any); queued files stay queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def next_delay_s(self) -> float:
        """Seconds until the next round: the capped exponential backoff after failures."""
        if self.failures == 0:
            return 0.0
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** (self.failures - 1))

    def _run(self, destination: Destination) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.send_pending(destination)
                ok = not self.pending()
            except SendError as exc:
                log.warning("outbox: %s; %d report(s) waiting", exc, len(self.pending()))
                ok = False
            except Exception:
                log.exception("outbox: sending failed")
                ok = False
            self.failures = 0 if ok else self.failures + 1
            delay = self.next_delay_s() if not ok else self.poll_s
            if ok:
                self._wake.wait(delay)  # a new file wakes the sender at once
            else:
                self._stop.wait(delay)  # after a failure, back off even if files arrive


def _batches(paths: list[Path], size: int) -> list[list[Path]]:
    """Groups of files whose (SOP class, transfer syntax) pairs fit one association."""
    out: list[list[Path]] = []
    kinds: set[tuple[str, str]] = set()
    for path in paths:
        try:
            kind = _file_contexts(path)
        except InputError as exc:
            log.error("outbox: %s (left in the queue)", exc)
            continue
        if not out or (kind not in kinds and len(kinds) >= size):
            out.append([])
            kinds = set()
        out[-1].append(path)
        kinds.add(kind)
    return out


# --------------------------------------------------------------------------- command line


def _destination(text: str) -> Destination:
    try:
        return Destination.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rtcheck send FILE... --to AE@host:port``."""
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="DICOM file(s) to store, e.g. a report")
    parser.add_argument(
        "--to", required=True, type=_destination, metavar="AE@HOST:PORT", help="the destination (a PACS, an archive)"
    )
    parser.add_argument("--calling-ae", default=DEFAULT_CALLING_AE, help=f"our AE title (default {DEFAULT_CALLING_AE})")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the destination (default 30)"
    )


def run_send(args: argparse.Namespace) -> int:
    """Store every FILE at ``--to``; one line per file. Exit 0 when all were stored.

    Raises :class:`InputError` (a FILE is missing or not DICOM) or :class:`SendError` (the
    destination cannot be reached, or did not store a file): the CLI prints it as one line.
    """
    destination: Destination = args.to
    if not getattr(args, "debug", False):
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the one-line error says it all
    results = send_files(args.files, destination, args.calling_ae, timeout_s=args.timeout)
    failed = []
    for r in results:
        if r.stored:
            print(f"stored {printable(r.path)} at {destination} (status 0x{r.status:04X})")
        else:
            why = f"status 0x{r.status:04X}" if r.status is not None else r.problem
            failed.append(f"{r.path} ({why})")
    if failed:
        raise SendError(f"not stored at {destination}: " + "; ".join(failed))
    return ExitCode.PER_PROTOCOL
