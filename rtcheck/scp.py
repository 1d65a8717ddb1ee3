"""``rtcheck serve``: a DICOM Storage SCP that checks every course a planning system exports.

The planning system sends its RT objects (and the images it sends along) to this node
as to any DICOM destination. The node

1. answers C-ECHO, and C-STORE for RT Plan, RT Ion Plan, RT Structure Set, RT Dose and
   CT/MR/PET images (see :data:`rtcheck.storage.FOLDER_BY_SOP_CLASS`); other SOP classes
   are refused when the association is negotiated;
2. writes each object to disk atomically, as received, *before* answering success
   (:mod:`rtcheck.storage`), so an acknowledged object survives any crash;
3. when an association ends, assembles the courses of the patients it touched; a
   complete course is checked in a worker process, and its report is written once no
   object of the course arrived for the quiet period (the check starts right away and is
   thrown away if the course changes meanwhile); a course that stays incomplete gets a
   not-evaluable report after the incomplete-course timeout;
4. with ``--report-to AE@host:port``, also makes each report as an Encapsulated PDF in the
   plan's study (in the worker, with the figures), writes it next to the JSON as ``.dcm``,
   queues a copy in ``<reports>/.rtcheck/outbox`` and sends it to the record system
   (:class:`rtcheck.send.Outbox`: oldest first, retried with backoff while the
   destination is down, kept across restarts).

Checks never run in an association's thread: a slow check cannot make a sender time out.
All state is on disk (:class:`rtcheck.storage.Ledger`), so a restart picks up every check
still owed. Logs are one ``key=value`` line per association, per object and per report.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import os
import queue
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from .errors import ExitCode, RtcheckError
from .send import Outbox
from .serve_config import ServeSettings, SettingsError, add_serve_arguments, load_settings
from .storage import (
    FOLDER_BY_SOP_CLASS,
    RT_FOLDERS,
    STATUS_OUT_OF_RESOURCES,
    CheckJob,
    CheckOutcome,
    Claim,
    Ledger,
    ObjectStore,
    StoreError,
    course_fingerprint,
    failure_outcome,
    folder_state,
    init_worker,
    make_folders,
    quiet_pydicom,
    read_header,
    remove_temporary_files,
    run_check_job,
    warm_up,
    write_report,
)

__all__ = ["StorageNode", "add_serve_arguments", "main", "run_serve"]

LOG = logging.getLogger("rtcheck.serve")

#: How long SIGTERM waits for open associations to finish before aborting them.
SHUTDOWN_GRACE_S = 30.0
#: Retry delay after course assembly itself failed (unreadable folder, disk error, ...).
RETRY_S = 60.0
#: First wait after the report destination could not be reached (doubling up to report_retry_max).
REPORT_RETRY_FIRST_S = 2.0

_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
#: Image compression kept as received. RT objects are offered only the uncompressed
#: syntaxes: a compressed RT Dose would reach the checker as pixels it may not decode,
#: and a sender that proposes several syntaxes then falls back to an uncompressed one.
_COMPRESSED = [
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEG2000MCLossless,
    JPEG2000MC,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]


def _log(level: int, event: str, **fields: Any) -> None:
    """One structured log line: ``event=... key=value ...`` (values quoted when needed)."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    LOG.log(level, " ".join(parts))


def _error_comment(reason: str) -> str:
    """A reason as an Error Comment (LO: at most 64 printable characters, no backslash)."""
    text = "".join(c if c.isprintable() and c != "\\" else " " for c in reason)
    return text[:64]


# ---------------------------------------------------------------------------------------
# Networking


class _NodeServer(ThreadedAssociationServer):
    """pynetdicom's server with the socket handling a long-running node needs.

    - TCP_NODELAY on every accepted socket: without it each small object (an RT Plan is a
      few kB) stalls ~90 ms on Nagle's algorithm against the peer's delayed ACK.
    - A timeout on every accepted socket, so a peer that stops mid-PDU frees its thread.
    - The TLS handshake runs in the connection's own thread (not the accept loop), so one
      slow or hostile peer cannot stall every other sender.
    """

    io_timeout: float = 60.0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.io_timeout)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:
                _log(logging.WARNING, "tls_refused", peer=_peer(client_address), reason=exc)
                self.shutdown_request(request)
                return
            subject = dict(item[0] for item in (request.getpeercert() or {}).get("subject", ()))
            _log(logging.DEBUG, "tls", peer=_peer(client_address), cipher=request.cipher()[0], subject=subject)
        super().finish_request(request, client_address)

    def shutdown(self) -> None:
        # The node owns this server (it is not in the AE's server list): stop and close it.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _peer(address: Any) -> str:
    try:
        return f"{address[0]}:{address[1]}"
    except (TypeError, IndexError):
        return str(address)


@dataclass
class _Session:
    """What one association did: for its log line, and for the checks it triggers."""

    peer: str
    calling_ae: str = ""
    started: float = field(default_factory=time.monotonic)
    outcome: str = "closed"
    stored: int = 0
    failed: int = 0
    bytes: int = 0
    echoes: int = 0
    patients: set[Path] = field(default_factory=set)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _report_outbox(settings: ServeSettings, ledger: Ledger) -> Outbox | None:
    if settings.report_to is None:
        return None
    make_folders(ledger.outbox)
    return Outbox(
        ledger.outbox,
        calling_ae=settings.report_calling_ae_title,
        initial_backoff_s=min(REPORT_RETRY_FIRST_S, settings.report_retry_max),
        max_backoff_s=settings.report_retry_max,
    )


def _queued(ledger: Ledger) -> int:
    """Reports in the outbox folder (without a sender to ask)."""
    if not ledger.outbox.is_dir():
        return 0
    return sum(1 for p in ledger.outbox.glob(f"*{Outbox.SUFFIX}") if not p.name.startswith("."))


def _ssl_context(settings: ServeSettings) -> ssl.SSLContext | None:
    """TLS 1.2+ with this node's certificate; with a CA, peers must present one it signed."""
    if settings.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    if settings.tls_ca is not None:
        context.load_verify_locations(cafile=str(settings.tls_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StorageNode:
    """The running node: the association server, the object store and the check scheduler."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.store = ObjectStore(settings.storage)
        self.ledger = Ledger(settings.reports)
        self.outbox = _report_outbox(settings, self.ledger)
        self.scheduler = CheckScheduler(self.store, self.ledger, settings, self.outbox)
        # Weak keys: a session cannot outlive its association, whatever events pynetdicom skips.
        self._sessions: weakref.WeakKeyDictionary[Association, _Session] = weakref.WeakKeyDictionary()
        self._sessions_lock = threading.Lock()
        self._server: _NodeServer | None = None
        self._accept_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        for sop_class, folder in FOLDER_BY_SOP_CLASS.items():
            syntaxes = _UNCOMPRESSED if folder in RT_FOLDERS else _UNCOMPRESSED + _COMPRESSED
            ae.add_supported_context(sop_class, syntaxes)
        return ae

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Clean up after any crash, queue the checks still owed, then open the port."""
        s = self.settings
        removed = remove_temporary_files(self.store.root) + remove_temporary_files(self.ledger.reports)
        if removed:
            _log(logging.INFO, "cleanup", temporary_files_removed=removed)
        self._start_outbox()
        self.scheduler.start()
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server = self.ae.make_server(
            (s.bind, s.port),
            ssl_context=_ssl_context(s),
            evt_handlers=handlers,
            server_class=_NodeServer,
        )
        server.io_timeout = s.network_timeout
        self._server = server
        self._accept_thread = threading.Thread(target=server.serve_forever, name="rtcheck-accept", daemon=True)
        self._accept_thread.start()
        host, port = server.server_address[:2]
        _log(
            logging.INFO,
            "listening",
            ae_title=s.ae_title,
            address=f"{host}:{port}",
            tls="mutual" if s.tls_ca else ("on" if s.tls_cert else "off"),
            allow=",".join(str(r) for r in s.allow) or "any",
            storage=self.store.root,
            reports=self.ledger.reports,
            report_to=s.report_to,
            workers=s.workers,
        )
        if not s.allow and host not in ("127.0.0.1", "::1"):
            _log(logging.WARNING, "open_node", reason="no --allow: any AE on the network may store here")

    def _start_outbox(self) -> None:
        """Finish the queueing a crash interrupted, then start sending what waits in the outbox."""
        released, removed = self.ledger.release_staged()
        waiting = len(self.outbox.pending()) if self.outbox is not None else _queued(self.ledger)
        if released or removed:
            _log(logging.INFO, "outbox_recovered", queued=released, staged_removed=removed)
        if self.outbox is None:
            if waiting:
                _log(logging.WARNING, "outbox_waiting", reports=waiting, reason="no report_to: they are not sent")
            return
        destination = self.settings.report_to
        assert destination is not None
        try:
            socket.getaddrinfo(destination.host, destination.port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:  # DNS may be down at boot: keep reports queued, say so
            _log(logging.WARNING, "report_to_unresolved", report_to=destination, reason=exc)
        self.outbox.start(destination)
        _log(
            logging.INFO,
            "outbox_started",
            report_to=destination,
            calling_ae=self.outbox.calling_ae,
            waiting=waiting or None,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    def shutdown(self) -> None:
        """Stop accepting, let open associations finish (bounded), then finish running checks."""
        _log(logging.INFO, "stopping")
        if self._server is not None:
            self._server.shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self._acceptors() and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._acceptors():
            _log(logging.WARNING, "abort_on_shutdown", peer=f"{assoc.requestor.address}:{assoc.requestor.port}")
            assoc.abort()
        for assoc in self._acceptors():
            assoc.join(timeout=10)  # a store handler finishes its write before the thread ends
        self.scheduler.stop()
        if self.outbox is not None:
            self.outbox.stop()  # queued reports stay queued for the next start
        _log(logging.INFO, "stopped")

    def _acceptors(self) -> list[Association]:
        return [a for a in self.ae.active_associations if a.is_acceptor]

    # -- association events -------------------------------------------------------------

    def _session(self, assoc: Association) -> _Session:
        with self._sessions_lock:
            session = self._sessions.get(assoc)
            if session is None:
                session = _Session(peer=f"{assoc.requestor.address}:{assoc.requestor.port}")
                self._sessions[assoc] = session
            return session

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        session = self._session(assoc)
        session.calling_ae = calling
        rules = self.settings.allow
        if rules and not any(rule.admits(calling, assoc.requestor.address) for rule in rules):
            session.outcome = "rejected"
            _log(
                logging.WARNING,
                "association_rejected",
                calling_ae=calling,
                peer=session.peer,
                reason="calling AE title/host not in --allow",
            )
            # rejected-permanent, service-user, calling-AE-title-not-recognised (PS3.8 9.3.4)
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()

    def _on_accepted(self, event: evt.Event) -> None:
        session = self._session(event.assoc)
        session.calling_ae = event.assoc.requestor.ae_title
        _log(
            logging.DEBUG,
            "association_accepted",
            calling_ae=session.calling_ae,
            peer=session.peer,
            contexts=len(event.assoc.accepted_contexts),
        )

    def _on_rejected(self, event: evt.Event) -> None:
        session = self._session(event.assoc)
        session.outcome = "rejected"
        rj = event.assoc.acceptor.primitive
        _log(
            logging.WARNING,
            "association_rejected",
            calling_ae=session.calling_ae,
            peer=session.peer,
            result=getattr(rj, "result", None),
            source=getattr(rj, "result_source", None),
            diagnostic=getattr(rj, "diagnostic", None),
            reason="too many associations" if getattr(rj, "diagnostic", None) == 2 else None,
        )

    def _on_ended(self, event: evt.Event, outcome: str) -> None:
        self._finish(event.assoc, outcome)

    def _on_conn_close(self, event: evt.Event) -> None:
        self._finish(event.assoc, None)

    def _finish(self, assoc: Association, outcome: str | None) -> None:
        """The association is over (released, aborted or its connection closed; first wins):
        log it and let the scheduler look at the patients it stored objects of."""
        with self._sessions_lock:
            session = self._sessions.pop(assoc, None)
        if session is None:
            return
        if outcome is not None and session.outcome != "rejected":
            session.outcome = outcome
        with session.lock:
            session.closed = True
            patients = set(session.patients)
        _log(
            logging.INFO,
            "association",
            calling_ae=session.calling_ae or None,
            peer=session.peer,
            outcome=session.outcome,
            stored=session.stored,
            failed=session.failed,
            echoes=session.echoes or None,
            bytes=session.bytes,
            seconds=f"{time.monotonic() - session.started:.3f}",
        )
        for folder in patients:
            self.scheduler.touch(folder)

    def _on_echo(self, event: evt.Event) -> int:
        self._session(event.assoc).echoes += 1
        return 0x0000

    def _on_store(self, event: evt.Event) -> int | Dataset:
        """Store one object; answer success only once it is safely on disk."""
        started = time.monotonic()
        with self._sessions_lock:
            session = self._sessions.get(event.assoc)
        if session is None:  # the association already ended (peer aborted): nobody else will trigger checks
            session = _Session(peer=f"{event.assoc.requestor.address}:{event.assoc.requestor.port}", closed=True)
        request = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        with request.DataSet.getbuffer() as view:
            size = view.nbytes
        fields: dict[str, Any] = {
            "calling_ae": session.calling_ae,
            "peer": session.peer,
            "sop_class": UID(sop_class).name if sop_class else "",
            "sop_uid": sop_uid[:80],
            "bytes": size,
            "transfer_syntax": event.context.transfer_syntax,
        }
        try:
            if size > self.settings.max_object_bytes:
                raise StoreError(
                    STATUS_OUT_OF_RESOURCES,
                    f"object of {size} bytes exceeds max_object_mb ({self.settings.max_object_mb:g} MiB)",
                )
            encoded = event.encoded_dataset()
            header = read_header(
                encoded,
                event.context.transfer_syntax,
                sop_class,
                sop_uid,
                inflate_limit=self.settings.max_object_bytes,
            )
            stored = self.store.store(header, encoded)
        except StoreError as exc:
            return self._store_failed(session, fields, exc.status, exc.reason, started)
        except OSError as exc:
            return self._store_failed(
                session, fields, STATUS_OUT_OF_RESOURCES, f"cannot write: {exc.strerror or exc}", started
            )
        except Exception as exc:  # never let one object take the association down
            LOG.exception("unexpected error storing %s", sop_uid[:80])
            return self._store_failed(session, fields, STATUS_OUT_OF_RESOURCES, f"internal error: {exc}", started)
        patient = stored.path.parents[2]
        with session.lock:
            session.stored += 1
            session.bytes += size
            session.patients.add(patient)
            late = session.closed  # the peer left while we were writing: trigger checks ourselves
        _log(
            logging.INFO,
            "store",
            **fields,
            status="0x0000",
            study_uid=header.study_instance_uid,
            path=stored.path.relative_to(self.store.root),
            replaced="yes" if stored.replaced else None,
            moved_from=",".join(str(p.relative_to(self.store.root)) for p in stored.moved_from) or None,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
        if late:
            self.scheduler.touch(patient)
        return 0x0000

    def _store_failed(
        self, session: _Session, fields: dict[str, Any], status: int, reason: str, started: float
    ) -> Dataset:
        with session.lock:
            session.failed += 1
        _log(
            logging.WARNING,
            "store",
            **fields,
            status=f"0x{status:04X}",
            reason=reason,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
        response = Dataset()
        response.Status = status
        response.ErrorComment = _error_comment(reason)
        return response


# ---------------------------------------------------------------------------------------
# Checks


@dataclass
class _Job:
    """A check in a worker process, or its finished report waiting to be wanted.

    ``claim`` is None while the check is *early*: started as soon as the course was
    complete, before its quiet period ended. Its report is written only if the course
    is unchanged when the quiet period ends (then the claim is made); otherwise it is
    dropped. So a report reaches the disk about max(quiet period, check time) after the
    last object instead of their sum.
    """

    fingerprint: str
    job: CheckJob
    folder: Path
    newest: float
    claim: Claim | None = None
    outcome: CheckOutcome | None = None
    attempts: int = 1


class CheckScheduler:
    """Decides when each course is checked, and runs the checks in worker processes.

    Only this object's thread touches its state; other threads talk to it through a
    queue. Every decision is re-derived from disk (file mtimes, the ledger), so the
    in-memory state is a cache a restart can lose.
    """

    def __init__(
        self, store: ObjectStore, ledger: Ledger, settings: ServeSettings, outbox: Outbox | None = None
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.settings = settings
        self.outbox = outbox
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._due: dict[Path, float] = {}
        self._jobs: dict[str, _Job] = {}
        self._executor = self._new_executor()
        self._thread = threading.Thread(target=self._run, name="rtcheck-checks", daemon=True)

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn: the node is multi-threaded, and forking a threaded process is unsafe.
        # Workers are recycled now and then so a long-running node does not grow.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.settings.workers,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=200,
            initializer=init_worker,
            initargs=(os.getpid(),),
        )

    def start(self) -> None:
        for _ in range(self.settings.workers):
            self._executor.submit(warm_up, self.settings.protocol)
        now = time.time()
        owed = 0
        for folder in self.store.patient_folders():
            if self.ledger.resolved_state(folder.name) != list(folder_state(folder)):
                self._due[folder] = now
                owed += 1
        _log(logging.INFO, "startup_scan", patients=len(self.store.patient_folders()), to_examine=owed)
        self._thread.start()

    def touch(self, folder: Path) -> None:
        """An association stored objects of this patient: look at its courses again."""
        self._queue.put(("touch", folder))

    def stop(self) -> None:
        """Finish the checks already running; checks not started stay owed on disk."""
        self._queue.put(("stop", None))
        self._thread.join()
        self._executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "done":
                self._safely(self._finished, *payload)

    def _safely(self, action: Any, *args: Any) -> None:
        """Run ``action``; a bug in it is logged, and never stops this thread (the node's checks)."""
        try:
            action(*args)
        except Exception:
            LOG.exception("internal error in the check scheduler")

    def _run(self) -> None:
        while True:
            now = time.time()
            wait = min((t - now for t in self._due.values()), default=60.0)
            try:
                kind, payload = self._queue.get(timeout=min(max(wait, 0.0), 60.0))
            except queue.Empty:
                kind, payload = "", None
            while kind:
                if kind == "stop":
                    return
                if kind == "touch":
                    self._due[payload] = time.time()
                elif kind == "done":
                    self._safely(self._finished, *payload)
                try:
                    kind, payload = self._queue.get_nowait()
                except queue.Empty:
                    kind = ""
            now = time.time()
            for folder in [f for f, t in self._due.items() if t <= now]:
                del self._due[folder]
                try:
                    self._evaluate(folder)
                except Exception:
                    LOG.exception("cannot examine %s; retrying in %.0f s", folder, RETRY_S)
                    self._due[folder] = time.time() + RETRY_S

    def _evaluate(self, folder: Path) -> None:
        """Check every course of one patient that is due; note when the others will be."""
        from .assembly import find_courses

        key = folder.name
        state = folder_state(folder)
        rt_folders = self.store.rt_folders(folder)
        courses = find_courses(rt_folders) if rt_folders else []
        pending = self.ledger.pending(key)
        now = time.time()
        next_due: float | None = None
        unresolved = False
        live: set[str] = set()
        for course in courses:
            try:
                newest = max(p.stat().st_mtime_ns for p in course.files) / 1e9
            except (FileNotFoundError, ValueError):  # replaced while we looked: look again soon
                next_due, unresolved = _earliest(next_due, now + self.settings.quiet_period), True
                continue
            wait = self.settings.quiet_period if course.complete else self.settings.incomplete_timeout
            due = now >= newest + wait
            if not due:
                next_due, unresolved = _earliest(next_due, newest + wait), True
                if not course.complete:
                    continue  # an incomplete course may still grow: nothing to start yet
            fingerprint, records, _ = course_fingerprint(course)
            live.add(fingerprint)
            if self.ledger.is_done(key, fingerprint):
                continue
            unresolved = True
            job = self._jobs.get(fingerprint)
            if job is None:
                job = _Job(fingerprint, self._check_job(course), folder, newest)
                self._start(job)
                _log(
                    logging.INFO,
                    "check_started",
                    patient_id=course.patient_id,
                    plans="+".join(course.plan_labels),
                    complete="yes" if course.complete else "no",
                    missing="; ".join(course.missing) or None,
                    early="yes" if not due else None,
                    resumed="yes" if fingerprint in pending else None,
                )
            if due and job.claim is None:
                job.claim = pending.get(fingerprint) or self.ledger.claim(
                    key, fingerprint, course, records, course.complete
                )
                if job.outcome is not None:
                    self._complete(job)
        for fingerprint, job in list(self._jobs.items()):
            if job.folder == folder and job.claim is None and fingerprint not in live:
                del self._jobs[fingerprint]  # more objects arrived: that early check is moot
                _log(logging.INFO, "check_dropped", reason="the course changed before its quiet period ended")
        for fingerprint, claim in pending.items():
            if fingerprint not in live and fingerprint not in self._jobs:
                self.ledger.drop(claim)  # that export was superseded before its report existed
        if not unresolved and not any(j.folder == folder for j in self._jobs.values()):
            self.ledger.mark_resolved(key, state)
        if next_due is not None:
            self._due[folder] = min(self._due.get(folder, next_due), next_due)

    def _check_job(self, course: Any) -> CheckJob:
        s = self.settings
        return CheckJob(
            course=course,
            complete=course.complete,
            protocol_path=s.protocol,
            arm=s.arm,
            dicom_report=s.report_to is not None,
        )

    def _start(self, job: _Job) -> None:
        self._jobs[job.fingerprint] = job
        try:
            future = self._executor.submit(run_check_job, job.job)
        except BrokenProcessPool:  # a worker died while idle (OOM killer, operator): new pool
            self._replace_broken_executor()
            future = self._executor.submit(run_check_job, job.job)
        future.add_done_callback(lambda f, j=job: self._queue.put(("done", (j, f))))

    def _finished(self, job: _Job, future: concurrent.futures.Future[CheckOutcome]) -> None:
        if self._jobs.get(job.fingerprint) is not job:
            return  # dropped meanwhile
        try:
            job.outcome = future.result()
        except concurrent.futures.CancelledError:
            del self._jobs[job.fingerprint]  # shutting down: a claim stays owed on disk
            return
        except BrokenProcessPool:
            if job.attempts == 1:
                # Some check killed its worker (and with it every check in flight): retry once.
                _log(logging.ERROR, "worker_died", fingerprint=job.fingerprint[:12], action="retrying")
                self._replace_broken_executor()
                job.attempts += 1
                self._start(job)
                return
            job.outcome = failure_outcome(job.job, "the check crashed its worker process twice")
        except Exception as exc:  # the worker could not even build a report: say so in one
            LOG.exception("check of %s failed", job.fingerprint[:12])
            job.outcome = failure_outcome(job.job, f"{type(exc).__name__}: {exc}")
        if job.claim is not None:
            self._complete(job)

    def _complete(self, job: _Job) -> None:
        """Write the report of a claimed, finished check, queue its DICOM copy, and record it
        in the ledger (in that order: a crash anywhere re-runs the claim, see ``_write``)."""
        assert job.claim is not None and job.outcome is not None
        del self._jobs[job.fingerprint]
        claim, outcome = job.claim, job.outcome
        try:
            queued = self._write(claim, outcome)
        except OSError as exc:  # disk full, permissions: the claim stays owed, try again later
            _log(logging.ERROR, "report_failed", report=claim.json_path, reason=exc, retry_s=RETRY_S)
            self._due[job.folder] = time.time() + RETRY_S
            return
        self.ledger.finish(claim, outcome.verdict, outcome.error, dicom=queued is not None)
        _log(
            logging.ERROR if outcome.error else logging.INFO,
            "report",
            verdict=outcome.verdict,
            path=claim.json_path.relative_to(self.ledger.reports),
            dicom=claim.dcm_path.name if queued is not None else None,
            queued=queued.name if queued is not None else None,
            check_s=f"{outcome.seconds:.2f}",
            since_last_object_s=f"{time.time() - job.newest:.2f}",
            error=outcome.error,
        )
        if outcome.dicom_error and queued is None:
            _log(logging.ERROR, "report_dicom_failed", path=claim.json_path.name, reason=outcome.dicom_error)
        self._due[job.folder] = time.time()  # look again: new objects, or all resolved

    def _write(self, claim: Claim, outcome: CheckOutcome) -> Path | None:
        """Write the report's files and queue its DICOM copy exactly once; returns the queued file.

        A claim re-run after a crash that had already recorded its copy as queued keeps the
        files it wrote then (the ``.dcm`` on disk is the one sent) and only finishes the queueing.
        """
        if not claim.queued:
            write_report(claim, outcome)
            if outcome.dicom is None:
                return None
            self.ledger.stage(claim, outcome.dicom)
            claim = self.ledger.mark_queued(claim)
        queued = self.ledger.release(claim)
        if self.outbox is not None:
            self.outbox.wake()
        return queued

    def _replace_broken_executor(self) -> None:
        """Start a new worker pool if the current one is broken (several failures share one pool)."""
        try:
            self._executor.submit(warm_up, self.settings.protocol)
        except BrokenProcessPool:
            _log(logging.WARNING, "worker_pool_restarted")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)


# ---------------------------------------------------------------------------------------
# Entry points


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # pynetdicom narrates every PDU at INFO; its warnings and errors are still worth seeing.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    if level != "debug":
        quiet_pydicom()


def run_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM or SIGINT; returns the process exit code."""
    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"rtcheck serve: {exc}", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    _configure_logging(settings.log_level)
    try:
        from .protocol import load_protocol

        load_protocol(settings.protocol)  # a bad protocol stops the start, not the first check
        node = StorageNode(settings)
        node.start()
    except RtcheckError as exc:
        print(f"rtcheck serve: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ssl.SSLError) as exc:
        print(f"rtcheck serve: cannot start: {exc}", file=sys.stderr)
        return ExitCode.USAGE_ERROR

    def stop(signum: int, _frame: Any) -> None:
        _log(logging.INFO, "signal", name=signal.Signals(signum).name)
        node.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.wait()
    node.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtcheck serve", description=__doc__.splitlines()[0])
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
