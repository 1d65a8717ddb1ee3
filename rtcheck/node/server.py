"""``rtcheck serve``: a DICOM Storage SCP that checks every course a planning system exports.

The planning system sends its RT objects (and the images it sends along) to this node
as to any DICOM destination. The node

1. answers C-ECHO, and C-STORE for RT Plan, RT Ion Plan, RT Structure Set, RT Dose and
   CT/MR/PET images (see :data:`rtcheck.node.store.FOLDER_BY_SOP_CLASS`); other SOP classes
   are refused when the association is negotiated;
2. writes each object to disk atomically, as received, *before* answering success
   (:mod:`rtcheck.node.store`), so an acknowledged object survives any crash;
3. when an association ends, assembles the courses of the patients it touched; a
   complete course is checked in a worker process. Its report is written as soon as the
   check ends when the sender released (A-RELEASE) the association that brought every
   object of the course; otherwise (a course spread over several associations, an
   association aborted or cut) once no object of the course arrived for the quiet period
   (the check starts right away and is thrown away if the course changes meanwhile). A
   course that stays incomplete gets a not-evaluable report after the incomplete-course
   timeout;
4. with ``--report-to AE@host:port``, also makes each report as an Encapsulated PDF in the
   plan's study (in the worker, with the figures), writes it next to the JSON as ``.dcm``,
   queues a copy in ``<reports>/.rtcheck/outbox`` and sends it to the record system
   (:class:`rtcheck.send.Outbox`: oldest first, retried with backoff while the
   destination is down, kept across restarts).

Checks never run in an association's thread: a slow check cannot make a sender time out.
All state is on disk (:class:`rtcheck.node.ledger.Ledger`), so a restart picks up every check
still owed. Logs are one ``key=value`` line per association, per object and per report.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # named at import by pynetdicom
from pynetdicom.transport import ThreadedAssociationServer

from ..durable import make_folders, remove_temporary_files
from ..errors import ExitCode, RtcheckError
from ..send import Outbox
from ..terminal import EscapingFormatter
from .admission import (
    UNLIMITED_PDU_CAP,
    AssociationRequest,
    Gate,
    GuardedSocket,
    GuardedSSLSocket,
    guarded,
    peer_ip,
    pynetdicom_noise_filter,
    read_request,
    reject_pdu,
)
from .config import ServeSettings, SettingsError, add_serve_arguments, load_settings
from .events import LOG, log_event
from .incoming import Incoming
from .ledger import Ledger
from .scheduler import CheckScheduler
from .store import FOLDER_BY_SOP_CLASS, RT_FOLDERS, ObjectStore
from .wire import STATUS_OUT_OF_RESOURCES, StoreError, read_header
from .worker import (
    quiet_pydicom,
)

__all__ = ["StorageNode", "add_serve_arguments", "main", "run_serve"]

#: How long SIGTERM waits for open associations to finish before aborting them.
SHUTDOWN_GRACE_S = 30.0
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
    - Admission before pynetdicom sees the connection (:mod:`rtcheck.node.admission`): the
      association request must be complete within ``request_timeout`` of the accept, and
      the allow-list, the called AE title and the limits per peer and in total are decided
      on it, in the connection's own thread, before any association slot is held.
    - Every socket is guarded: each PDU has a deadline and a size cap, and an idle
      association is closed after the network timeout.
    - The TLS handshake runs in the connection's own thread (not the accept loop), so one
      slow or hostile peer cannot stall every other sender.
    """

    io_timeout: float = 60.0
    gate: Gate

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.io_timeout)
        if not self.gate.open_pending():
            client.close()
            self.gate.log_rejection(
                "connection_refused", _peer(address), None, "too many connections without an association request"
            )
            raise OSError("too many pending connections")  # socketserver drops the request
        accepted = time.monotonic()
        request: GuardedSocket | GuardedSSLSocket
        if self.ssl_context:  # its sslsocket_class is GuardedSSLSocket (_ssl_context)
            request = cast(
                GuardedSSLSocket,
                self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False),
            )
        else:
            request = guarded(client)
            request.settimeout(self.io_timeout)
        request.accepted_at = accepted  # type: ignore[union-attr]
        return request, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        peer = _peer(client_address)
        settings = self.gate.settings
        try:
            deadline = request.accepted_at + settings.request_timeout
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(max(0.001, deadline - time.monotonic()))
                    request.do_handshake()
                except (OSError, ValueError) as exc:
                    log_event(logging.WARNING, "tls_refused", peer=peer, reason=exc)
                    self.shutdown_request(request)
                    return
                subject = dict(item[0] for item in (request.getpeercert() or {}).get("subject", ()))  # type: ignore[misc]
                cipher = request.cipher()
                log_event(logging.DEBUG, "tls", peer=peer, cipher=cipher[0] if cipher else None, subject=subject)
            try:
                pdu = read_request(request, deadline)
                association_request = AssociationRequest.parse(pdu)
            except (OSError, ValueError) as exc:  # too slow, not DICOM, or gone
                self.gate.log_rejection("connection_closed", peer, None, str(exc))
                self.shutdown_request(request)
                return
        finally:
            self.gate.close_pending()
        refusal = self.gate.admit(association_request, peer_ip(client_address))
        if refusal is not None:
            (result, source, reason), why = refusal
            try:
                request.settimeout(1.0)
                request.sendall(reject_pdu(result, source, reason))
            except OSError:
                pass
            self.gate.log_rejection("association_rejected", peer, association_request, why)
            self.shutdown_request(request)
            return
        ip = peer_ip(client_address)
        request.guard(
            settings,
            self.io_timeout,
            on_close=lambda: self.gate.release(ip),
            pushback=pdu if isinstance(request, ssl.SSLSocket) else b"",
        )
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
    #: The files it stored: a released association that brought a whole course ends its wait.
    files: set[Path] = field(default_factory=set)
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
    context.sslsocket_class = GuardedSSLSocket  # per-PDU deadlines, and the request handed back
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
        self.incoming = Incoming(self.store.root, settings.max_object_bytes)
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
        # The gate (rtcheck.node.admission) enforces max_associations before pynetdicom sees a
        # connection; pynetdicom's own count, which includes associations still closing,
        # is only a backstop.
        ae.maximum_associations = 2 * s.max_associations
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
            log_event(logging.INFO, "cleanup", temporary_files_removed=removed)
        self._start_outbox()
        self.scheduler.start()
        self.incoming.install()
        handlers: list[EventHandlerType] = [
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
        assert isinstance(server, _NodeServer)
        server.io_timeout = s.network_timeout
        server.gate = Gate(s)
        self._server = server
        self._accept_thread = threading.Thread(target=server.serve_forever, name="rtcheck-accept", daemon=True)
        self._accept_thread.start()
        host, port = server.server_address[:2]
        log_event(
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
            log_event(logging.WARNING, "open_node", reason="no --allow: any AE on the network may store here")
        for rule in s.allow:
            if rule.host is None:
                log_event(
                    logging.WARNING, "allow_any_host", allow=rule, reason=f"give {rule}@HOST to bind it to a host"
                )

    def _start_outbox(self) -> None:
        """Finish the queueing a crash interrupted, then start sending what waits in the outbox."""
        released, removed = self.ledger.release_staged()
        waiting = len(self.outbox.pending()) if self.outbox is not None else _queued(self.ledger)
        if released or removed:
            log_event(logging.INFO, "outbox_recovered", queued=released, staged_removed=removed)
        if self.outbox is None:
            if waiting:
                log_event(logging.WARNING, "outbox_waiting", reports=waiting, reason="no report_to: they are not sent")
            return
        destination = self.settings.report_to
        assert destination is not None
        try:
            socket.getaddrinfo(destination.host, destination.port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:  # DNS may be down at boot: keep reports queued, say so
            log_event(logging.WARNING, "report_to_unresolved", report_to=destination, reason=exc)
        self.outbox.start(destination)
        log_event(
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
        log_event(logging.INFO, "stopping")
        if self._server is not None:
            self._server.shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self._acceptors() and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._acceptors():
            log_event(logging.WARNING, "abort_on_shutdown", peer=f"{assoc.requestor.address}:{assoc.requestor.port}")
            assoc.abort()
        for assoc in self._acceptors():
            assoc.join(timeout=10)  # a store handler finishes its write before the thread ends
        self.scheduler.stop()
        if self.outbox is not None:
            self.outbox.stop()  # queued reports stay queued for the next start
        log_event(logging.INFO, "stopped")

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
        """The gate admitted this peer already (allow-list, called AE title, limits)."""
        primitive = event.assoc.requestor.primitive
        self._session(event.assoc).calling_ae = str(primitive.calling_ae_title).strip() if primitive else ""

    def _on_accepted(self, event: evt.Event) -> None:
        session = self._session(event.assoc)
        session.calling_ae = event.assoc.requestor.ae_title
        log_event(
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
        log_event(
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
            files = set(session.files) if session.outcome == "released" else None
        log_event(
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
            released = None if files is None else frozenset(f for f in files if folder in f.parents)
            self.scheduler.touch(folder, released=released)
        # A transfer cut short leaves its incoming file: one idle longer than any PDU may take is dead.
        s = self.settings
        self.incoming.sweep(idle_s=s.pdu_timeout + (s.max_pdu or UNLIMITED_PDU_CAP) / (s.min_transfer_kib_s * 1024) + 5)

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
        assert isinstance(request, C_STORE)  # the data set itself is on disk: see rtcheck.node.incoming
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        received = self.incoming.take(event.dataset_path)
        size = received.received if received is not None else 0
        fields: dict[str, Any] = {
            "calling_ae": session.calling_ae,
            "peer": session.peer,
            "sop_class": UID(sop_class).name if sop_class else "",
            "sop_uid": sop_uid[:80],
            "bytes": size,
            "transfer_syntax": event.context.transfer_syntax,
        }
        try:
            if received is None:
                raise StoreError(STATUS_OUT_OF_RESOURCES, "the received data set went missing")
            if received.oversize:
                raise StoreError(
                    STATUS_OUT_OF_RESOURCES,
                    f"object of {size} bytes exceeds max_object_mb ({self.settings.max_object_mb:g} MiB)",
                )
            received.close()
            header = read_header(
                Path(received.name),
                event.context.transfer_syntax,
                sop_class,
                sop_uid,
                inflate_limit=self.settings.max_object_bytes,
            )
            stored = self.store.store_file(header, Path(received.name))
        except StoreError as exc:
            return self._store_failed(session, fields, exc.status, exc.reason, started)
        except OSError as exc:
            return self._store_failed(
                session, fields, STATUS_OUT_OF_RESOURCES, f"cannot write: {exc.strerror or exc}", started
            )
        except Exception as exc:  # never let one object take the association down
            LOG.exception("unexpected error storing %s", sop_uid[:80])
            return self._store_failed(session, fields, STATUS_OUT_OF_RESOURCES, f"internal error: {exc}", started)
        finally:
            if received is not None:  # stored (renamed away) or refused: nothing stays in incoming
                received.close()
                Path(received.name).unlink(missing_ok=True)
        patient = stored.path.parents[2]
        # An instance that moved to another patient (a corrected PatientID) changed that patient's course too.
        others = {old.parents[2] for old in stored.moved_from} - {patient}
        with session.lock:
            session.stored += 1
            session.bytes += size
            session.patients.add(patient)
            session.patients.update(others)
            session.files.add(stored.path)
            late = session.closed  # the peer left while we were writing: trigger checks ourselves
        log_event(
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
            for folder in {patient, *others}:
                self.scheduler.touch(folder)
        return 0x0000

    def _store_failed(
        self, session: _Session, fields: dict[str, Any], status: int, reason: str, started: float
    ) -> Dataset:
        with session.lock:
            session.failed += 1
        log_event(
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
# Entry points


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # pynetdicom narrates every PDU at INFO; its warnings and errors are still worth seeing.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("pynetdicom").addFilter(pynetdicom_noise_filter)
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
        from ..api import load_protocol

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
        log_event(logging.INFO, "signal", name=signal.Signals(signum).name)
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
