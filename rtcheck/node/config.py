"""Settings of ``rtcheck serve``: command-line options, the YAML config file, and their merge.

A node that runs for months is configured once, in a file under version control, and
started by systemd; the command line is for trying things out. Both carry the same
settings under the same names (``--max-associations`` on the command line is
``max_associations`` in YAML) and the command line wins, so a one-off override never
needs an edited file. Relative paths in the YAML file are relative to the file itself,
so the unit's working directory does not matter.

Every setting is validated here, before the node opens a port: a typo in the config
file stops the start with a message naming the key, instead of a node that silently
runs with a default.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..send import Destination
from ..settings import Settings, SettingsError, add_arguments

__all__ = ["AllowRule", "ServeSettings", "SettingsError", "add_serve_arguments", "load_settings"]


@dataclass(frozen=True)
class AllowRule:
    """One ``--allow`` entry: a calling AE title, optionally bound to the peer's host.

    ``hosts`` holds the resolved IP addresses of ``host`` (a name may resolve to several);
    an empty ``hosts`` means any host.
    """

    ae_title: str
    host: str | None = None
    hosts: frozenset[str] = frozenset()

    def admits(self, calling_ae: str, peer_ip: str) -> bool:
        if calling_ae.strip() != self.ae_title:
            return False
        return self.host is None or normalise_ip(peer_ip) in self.hosts

    def __str__(self) -> str:
        return self.ae_title if self.host is None else f"{self.ae_title}@{self.host}"


_SECONDS_A_DAY = 24 * 3600


class ServeSettings(Settings):
    """Everything the node needs to run; built only by :func:`load_settings`."""

    ae_title: str = Field("RTCHECK", description="AE title of this node (default RTCHECK)")
    port: int = Field(11112, ge=1, le=65535, description="TCP port to listen on (default 11112)")
    bind: str = Field("127.0.0.1", description="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    storage: Path = Field(description="folder where received objects are kept (required)")
    reports: Path = Field(description="folder where reports are written (required)")
    protocol: Path | None = Field(None, description="protocol YAML (default: the bundled trial protocol)")
    arm: str | None = Field(None, description="force the protocol arm instead of detecting it")
    tls_cert: Path | None = Field(None, description="PEM certificate of this node: enables TLS")
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert")
    tls_ca: Path | None = Field(
        None, description="PEM CA bundle: peers must present a certificate it signed (mutual TLS)"
    )
    max_object_mb: float = Field(
        1024.0, ge=0.001, le=1024 * 1024, description="largest object accepted, in MiB (default 1024); larger ones fail"
    )
    max_associations: int = Field(
        16, ge=1, le=1000, description="simultaneous associations (default 16); more are rejected"
    )
    max_associations_per_peer: int = Field(
        8, ge=1, le=1000, description="simultaneous associations from one IP address (default 8); more are rejected"
    )
    max_pending_connections: int = Field(
        64,
        ge=1,
        le=10000,
        description="connections that have not yet sent their association request (default 64); more are closed",
    )
    max_pdu: int = Field(
        131072,
        description="largest PDU this node receives, bytes (default 131072; 0 = 16 MiB); a larger one disconnects",
    )
    request_timeout: float = Field(
        5.0, ge=0.1, le=600, description="seconds from TCP connect to a complete association request (default 5)"
    )
    pdu_timeout: float = Field(
        10.0,
        ge=0.1,
        le=3600,
        description="seconds one PDU may take from its first byte, plus its size at --min-transfer-kib-s (default 10)",
    )
    min_transfer_kib_s: float = Field(
        64.0, ge=0.001, le=1024 * 1024, description="slowest transfer accepted within a PDU, KiB/s (default 64)"
    )
    acse_timeout: float = Field(
        30.0, ge=1, le=_SECONDS_A_DAY, description="seconds to wait for association messages (default 30)"
    )
    dimse_timeout: float = Field(
        60.0, ge=1, le=_SECONDS_A_DAY, description="seconds to wait for DIMSE messages (default 60)"
    )
    network_timeout: float = Field(
        60.0, ge=1, le=_SECONDS_A_DAY, description="seconds an idle association is kept open (default 60)"
    )
    quiet_period: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="seconds without a new object of a course before its report is written (default 2)",
    )
    incomplete_timeout: float = Field(
        600.0,
        ge=0,
        le=7 * _SECONDS_A_DAY,
        description="seconds an incomplete course waits before its not-evaluable report (default 600)",
    )
    workers: int = Field(2, ge=1, le=64, description="processes running checks (default 2)")
    report_to: Destination | None = Field(
        None,
        description="AE@host:port of the record system (PACS, archive, TPS) that gets every report as an "
        "Encapsulated PDF in the plan's study; reports wait on disk while it is down",
    )
    report_calling_ae: str | None = Field(
        None, description="AE title the node calls --report-to with (default: --ae-title)"
    )
    report_retry_max: float = Field(
        60.0,
        ge=1,
        le=_SECONDS_A_DAY,
        description="longest wait, in seconds, between attempts to reach --report-to while it is down (default 60)",
    )
    log_level: str = Field("info", description="debug, info, warning or error (default info)")
    allow: tuple[AllowRule, ...] = Field(
        (),
        description="calling AE title allowed to connect, optionally only from HOST (repeatable); "
        "without any --allow every peer is accepted",
    )

    @property
    def max_object_bytes(self) -> int:
        return int(self.max_object_mb * 1024 * 1024)

    @property
    def report_calling_ae_title(self) -> str:
        """The AE title the node calls ``report_to`` with: its own, unless told otherwise."""
        return self.report_calling_ae or self.ae_title

    @field_validator(
        "port",
        "max_object_mb",
        "max_associations",
        "max_associations_per_peer",
        "max_pending_connections",
        "max_pdu",
        "request_timeout",
        "pdu_timeout",
        "min_transfer_kib_s",
        "acse_timeout",
        "dimse_timeout",
        "network_timeout",
        "quiet_period",
        "incomplete_timeout",
        "workers",
        "report_retry_max",
        mode="before",
    )
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML reads yes/no as booleans, which pydantic would take for 1/0
            raise ValueError("expected a number")
        return value

    @field_validator("ae_title", "report_calling_ae")
    @classmethod
    def _an_ae_title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or len(value) > 16 or "\\" in value or not value.isascii():
            raise ValueError("an AE title is 1 to 16 ASCII characters, no backslash")
        return value

    @field_validator("max_pdu")
    @classmethod
    def _a_pdu_size(cls, value: int) -> int:
        if value != 0 and not 4096 <= value <= 2**32 - 1:
            raise ValueError(f"must be 0 (no limit) or between 4096 and {2**32 - 1}")
        return value

    @field_validator("log_level")
    @classmethod
    def _a_log_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("use debug, info, warning or error")
        return value.lower()

    @field_validator("bind")
    @classmethod
    def _an_address_here(cls, value: str) -> str:
        try:
            socket.getaddrinfo(value, None)
        except socket.gaierror as exc:
            raise ValueError(f"not an address of this machine ({exc})") from exc
        return value

    @field_validator("report_to", mode="before")
    @classmethod
    def _a_destination(cls, value: Any) -> Any:
        return Destination.parse(str(value).strip()) if isinstance(value, str) else value

    @field_validator("allow", mode="before")
    @classmethod
    def _allow_rules(cls, value: Any) -> Any:
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, (list, tuple)) or not all(isinstance(e, (str, AllowRule)) for e in entries):
            raise ValueError("must be a list of AE or AE@host strings")
        return tuple(e if isinstance(e, AllowRule) else parse_allow(e) for e in entries)

    @model_validator(mode="after")
    def _consistent(self) -> ServeSettings:
        if self.report_calling_ae is not None and self.report_to is None:
            raise ValueError("report_calling_ae needs report_to (the destination it calls)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key (this node must present a certificate too)")
        for name, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key), ("tls_ca", self.tls_ca)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path}: no such file")
        storage, reports = self.storage.resolve(), self.reports.resolve()
        if storage.is_relative_to(reports) or reports.is_relative_to(storage):
            raise ValueError(
                f"storage {storage} and reports {reports} must be separate folders, neither inside the other"
            )
        return self


_METAVARS = {"report_to": "AE@HOST:PORT", "report_calling_ae": "AE", "report_retry_max": "SECONDS"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``rtcheck serve`` to ``parser``: one per setting, and ``--config``."""
    parser.add_argument("--config", type=Path, help="YAML file with these settings (options given here win)")
    options = [name for name in ServeSettings.model_fields if name != "allow"]
    add_arguments(parser, ServeSettings, options, _METAVARS)
    parser.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="AE[@HOST]",
        help=ServeSettings.model_fields["allow"].description,
    )


def load_settings(args: argparse.Namespace) -> ServeSettings:
    """Merge the config file (if any) under the command-line options and validate the result."""
    config_file = getattr(args, "config", None)
    return ServeSettings.from_args(args, Path(config_file) if config_file is not None else None)


def parse_allow(entry: str) -> AllowRule:
    """Parse ``AE`` or ``AE@host``; a host name is resolved now, once, to its addresses."""
    ae_title, sep, host = entry.partition("@")
    ae_title = ae_title.strip()
    if not ae_title or len(ae_title) > 16 or "\\" in ae_title or not ae_title.isascii():
        raise SettingsError(f"{entry!r}: the AE title must be 1 to 16 ASCII characters")
    if not sep:
        return AllowRule(ae_title)
    host = host.strip()
    if not host:
        raise SettingsError(f"{entry!r}: nothing after '@' (give a host or drop the '@')")
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SettingsError(f"{entry!r}: cannot resolve host {host!r} ({exc})") from exc
    return AllowRule(ae_title, host, frozenset(normalise_ip(str(info[4][0])) for info in infos))


def normalise_ip(text: str) -> str:
    """One spelling per address, so that ``::ffff:10.0.0.5`` and ``10.0.0.5`` compare equal."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
