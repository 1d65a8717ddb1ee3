"""Who gets an association, decided before anything is held for them; and how fast they must talk.

pynetdicom starts an association (a thread, and one of ``max_associations`` slots) for
every TCP connection as soon as it is accepted, and only then waits up to the ACSE timeout
for the association request. Sixteen connections that never send a byte therefore lock
every sender out, and an allow-list checked in that association comes too late. So the
node reads the A-ASSOCIATE-RQ itself first, within ``request_timeout`` of the TCP accept,
in the connection's own thread:

- a connection that does not deliver a complete request in time is closed, and one that
  sends something else is closed;
- the called AE title must be the node's; with ``--allow``, the calling AE title and the
  peer's address must match an entry; a stranger gets an A-ASSOCIATE-RJ and its
  rejections are logged once per address per minute, not once per attempt;
- the limits on associations per peer address and in total are checked here too, so a
  rejected peer never held a slot.

Only then does pynetdicom see the connection, with the request still unread (peeked, on a
plain socket; buffered and handed back, on a TLS one).

During the association every PDU must arrive within ``pdu_timeout`` seconds of its first
byte plus its length at ``min_transfer_kib_s``, and may not exceed the largest PDU the
node announced: a peer that dribbles a byte every few seconds, or announces a 4 GB PDU,
is disconnected instead of holding a thread, a slot and the memory of its PDU forever.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ServeSettings, normalise_ip
from .events import log_event

_ASSOCIATE_RQ = 0x01
_HEADER = struct.Struct(">BBL")
#: An A-ASSOCIATE-RQ holds AE titles and presentation contexts: a few kB. User identity
#: negotiation (a Kerberos ticket, a SAML assertion) is the only large item.
MAX_REQUEST_BYTES = 64 * 1024
#: The largest PDU accepted when the node announces no maximum (``max_pdu 0``).
UNLIMITED_PDU_CAP = 16 * 1024 * 1024
#: While part of a request has arrived, how often to look whether the rest has.
_PEEK_INTERVAL_S = 0.02
#: Rejections of one peer address are logged at most this often.
REJECTION_LOG_INTERVAL_S = 60.0


class PeerTooSlow(TimeoutError):
    """A PDU did not arrive within its deadline."""


class PeerBrokeProtocol(ConnectionError):
    """A peer sent a PDU larger than the node announced, or something that is no request."""


@dataclass(frozen=True)
class AssociationRequest:
    """The parts of an A-ASSOCIATE-RQ the admission decision needs (PS3.8 9.3.2)."""

    called_ae: str
    calling_ae: str

    @classmethod
    def parse(cls, pdu: bytes) -> AssociationRequest:
        if len(pdu) < 74 or pdu[0] != _ASSOCIATE_RQ:
            raise PeerBrokeProtocol("not an A-ASSOCIATE-RQ")
        return cls(_ae(pdu[10:26]), _ae(pdu[26:42]))


def _ae(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \x00")


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return _HEADER.pack(0x03, 0, 4) + bytes((0, result, source, reason))


# (result, source, reason) of the rejections the gate gives.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
REJECT_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded


@dataclass
class _Counts:
    total: int = 0
    pending: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)


class Gate:
    """The admission decision and the counts it is made on (thread-safe)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._counts = _Counts()
        self._lock = threading.Lock()
        self._last_logged: dict[str, tuple[float, int]] = {}

    # -- connections that have not yet sent their request ------------------------------------

    def open_pending(self) -> bool:
        """Count a new connection; False when too many are already waiting for their request."""
        with self._lock:
            if self._counts.pending >= self.settings.max_pending_connections:
                return False
            self._counts.pending += 1
            return True

    def close_pending(self) -> None:
        with self._lock:
            self._counts.pending -= 1

    # -- associations ---------------------------------------------------------------------------

    def admit(self, request: AssociationRequest, peer_ip: str) -> tuple[tuple[int, int, int], str] | None:
        """None, and the association is counted; or the rejection and its reason."""
        s = self.settings
        if request.called_ae != s.ae_title:
            return REJECT_CALLED_AE, f"called AE title {request.called_ae!r} is not this node's ({s.ae_title})"
        if s.allow and not any(rule.admits(request.calling_ae, peer_ip) for rule in s.allow):
            return REJECT_CALLING_AE, "calling AE title/host not in --allow"
        peer = normalise_ip(peer_ip)
        with self._lock:
            if self._counts.total >= s.max_associations:
                return REJECT_LIMIT, f"too many associations ({s.max_associations})"
            if self._counts.by_peer.get(peer, 0) >= s.max_associations_per_peer:
                return REJECT_LIMIT, f"too many associations from {peer} ({s.max_associations_per_peer})"
            self._counts.total += 1
            self._counts.by_peer[peer] = self._counts.by_peer.get(peer, 0) + 1
        return None

    def release(self, peer_ip: str) -> None:
        peer = normalise_ip(peer_ip)
        with self._lock:
            self._counts.total -= 1
            left = self._counts.by_peer.get(peer, 1) - 1
            if left:
                self._counts.by_peer[peer] = left
            else:
                self._counts.by_peer.pop(peer, None)

    @property
    def associations(self) -> int:
        with self._lock:
            return self._counts.total

    # -- logging ------------------------------------------------------------------------------

    def log_rejection(self, event: str, peer: str, request: AssociationRequest | None, reason: str) -> None:
        """One log line per peer address per minute: a scanner must not flood the log."""
        ip = peer.rsplit(":", 1)[0]
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last_logged.get(ip, (-REJECTION_LOG_INTERVAL_S, 0))
            if now - last < REJECTION_LOG_INTERVAL_S:
                self._last_logged[ip] = (last, suppressed + 1)
                return
            self._last_logged[ip] = (now, 0)
            if len(self._last_logged) > 10_000:  # forget the oldest peers: bounded memory
                for key in sorted(self._last_logged, key=lambda k: self._last_logged[k][0])[:5_000]:
                    del self._last_logged[key]
        log_event(
            logging.WARNING,
            event,
            calling_ae=request.calling_ae if request else None,
            called_ae=request.called_ae if request else None,
            peer=peer,
            reason=reason,
            suppressed_since_last=suppressed or None,
        )


def read_request(sock: socket.socket, deadline: float) -> bytes:
    """The complete A-ASSOCIATE-RQ PDU that starts a connection, by ``deadline`` (monotonic).

    A plain socket is only peeked at: the bytes stay for pynetdicom to read. A TLS socket
    cannot be peeked; its bytes are read (past the guard) and handed back through
    :class:`GuardedSSLSocket`.
    """
    tls = isinstance(sock, ssl.SSLSocket)
    data = b""
    want = _HEADER.size
    while len(data) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTooSlow(f"no complete association request within the deadline ({len(data)} bytes came)")
        if tls:
            sock.settimeout(remaining)
            try:
                chunk = ssl.SSLSocket.recv(sock, want - len(data))  # type: ignore[arg-type]
            except TimeoutError:
                continue
            if not chunk:
                raise PeerBrokeProtocol("the connection closed before its association request")
            data += chunk
        else:
            if data:  # part of it is there, and stays readable: look again shortly
                time.sleep(min(_PEEK_INTERVAL_S, remaining))
            elif not select.select([sock], [], [], remaining)[0]:
                continue
            chunk = socket.socket.recv(sock, want, socket.MSG_PEEK)
            if not chunk:
                raise PeerBrokeProtocol("the connection closed before its association request")
            data = chunk
        if want == _HEADER.size and len(data) >= _HEADER.size:
            pdu_type, _, length = _HEADER.unpack_from(data)
            if pdu_type != _ASSOCIATE_RQ:
                raise PeerBrokeProtocol(f"PDU type 0x{pdu_type:02X} where an association request belongs")
            if length > MAX_REQUEST_BYTES:
                raise PeerBrokeProtocol(f"an association request of {length} bytes")
            want = _HEADER.size + length
    return data[:want]


class _PduClock:
    """Deadlines and a size cap for every PDU a guarded socket receives.

    The PDU framing (a 6-byte header giving the length) is followed in the byte stream
    itself, so the guard needs nothing from pynetdicom: each ``recv`` gets the time left
    for the current PDU as its timeout. The clock of a PDU starts when its first byte is
    asked for (pynetdicom asks only once the socket is readable): waiting between PDUs is
    the association's idle time, which the network timeout bounds.
    """

    _pdu_timeout: float = 10.0
    _bytes_per_s: float = 64 * 1024.0
    _max_body: int = UNLIMITED_PDU_CAP
    _io_timeout: float | None = 60.0
    _pushback: bytes = b""
    _header: bytes = b""
    _body_left: int = 0
    _started: float | None = None
    _deadline: float | None = None
    _on_close: Callable[[], None] | None = None
    _closed_once: bool = False
    _peer: str = "?"

    def guard(
        self,
        settings: ServeSettings,
        io_timeout: float | None,
        on_close: Callable[[], None] | None = None,
        pushback: bytes = b"",
    ) -> None:
        self._pdu_timeout = settings.pdu_timeout
        self._bytes_per_s = settings.min_transfer_kib_s * 1024
        self._max_body = settings.max_pdu or UNLIMITED_PDU_CAP
        self._io_timeout = io_timeout
        self._on_close = on_close
        self._pushback = pushback
        try:
            host, port = self.getpeername()[:2]  # type: ignore[attr-defined]
            self._peer = f"{host}:{port}"
        except OSError:
            self._peer = "?"

    def _guarded_recv(self, raw_recv: Callable[[int], bytes], bufsize: int) -> bytes:
        now = time.monotonic()
        if self._deadline is None:
            self._started, self._deadline = now, now + self._pdu_timeout
        if self._pushback:
            data, self._pushback = self._pushback[:bufsize], self._pushback[bufsize:]
            self._account(data)
            return data
        remaining = self._deadline - now
        try:
            if remaining <= 0:
                raise PeerTooSlow(self._too_slow())
            self.settimeout(remaining)  # type: ignore[attr-defined]
            try:
                data = raw_recv(bufsize)
            except TimeoutError:
                raise PeerTooSlow(self._too_slow()) from None
            finally:
                self.settimeout(self._io_timeout)  # type: ignore[attr-defined]
            self._account(data)
        except (PeerTooSlow, PeerBrokeProtocol) as exc:
            log_event(logging.WARNING, "pdu_deadline" if isinstance(exc, PeerTooSlow) else "pdu_refused",
                      peer=self._peer, reason=exc, action="disconnected")  # fmt: skip
            raise
        return data

    def _too_slow(self) -> str:
        if self._header or self._body_left == 0:
            return f"a PDU header took more than {self._pdu_timeout:g} s"
        return f"a PDU was still {self._body_left} bytes short at its deadline"

    def _account(self, data: bytes) -> None:
        """Follow the PDU framing through ``data``; set the deadline of each PDU once its length is known."""
        pos = 0
        while pos < len(data):
            if self._body_left == 0:
                take = data[pos : pos + _HEADER.size - len(self._header)]
                self._header += take
                pos += len(take)
                if len(self._header) == _HEADER.size:
                    _, _, length = _HEADER.unpack(self._header)
                    self._header = b""
                    if length > self._max_body:
                        raise PeerBrokeProtocol(f"a PDU of {length} bytes (at most {self._max_body} announced)")
                    self._body_left = length
                    assert self._started is not None
                    self._deadline = self._started + self._pdu_timeout + length / self._bytes_per_s
                    if length == 0:
                        self._deadline = None
            else:
                take_n = min(self._body_left, len(data) - pos)
                self._body_left -= take_n
                pos += take_n
                if self._body_left == 0:
                    self._deadline = None

    def pending(self) -> int:
        return len(self._pushback) + super().pending()  # type: ignore[misc]

    def _release_once(self) -> None:
        if not self._closed_once:
            self._closed_once = True
            if self._on_close is not None:
                self._on_close()


class GuardedSocket(_PduClock, socket.socket):
    """A plain TCP socket with per-PDU deadlines (see :class:`_PduClock`)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            return super().recv(bufsize, flags)
        return self._guarded_recv(super().recv, bufsize)

    def pending(self) -> int:  # plain sockets have no TLS buffer
        return len(self._pushback)

    def close(self) -> None:
        self._release_once()
        super().close()


class GuardedSSLSocket(_PduClock, ssl.SSLSocket):
    """A TLS socket with per-PDU deadlines, and the association request handed back."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if flags:
            return super().recv(buflen, flags)
        return self._guarded_recv(super().recv, buflen)

    def close(self) -> None:
        self._release_once()
        super().close()


def guarded(client: socket.socket) -> GuardedSocket:
    """The accepted plain socket as a :class:`GuardedSocket` (same file descriptor)."""
    return GuardedSocket(client.family, client.type, client.proto, fileno=client.detach())


def pynetdicom_noise_filter(record: logging.LogRecord) -> bool:
    """Drop pynetdicom's tracebacks for connections the gate cut (the node logs its own line)."""
    if record.exc_info and isinstance(record.exc_info[1], PeerTooSlow | PeerBrokeProtocol):
        return False
    return record.getMessage() != "Connection closed before the entire PDU was received"


def peer_ip(address: Any) -> str:
    try:
        return str(address[0])
    except (TypeError, IndexError):
        return str(address)
