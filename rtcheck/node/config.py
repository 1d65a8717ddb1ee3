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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from ..send import Destination


class SettingsError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


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
        return self.host is None or _normalise_ip(peer_ip) in self.hosts

    def __str__(self) -> str:
        return self.ae_title if self.host is None else f"{self.ae_title}@{self.host}"


@dataclass(frozen=True)
class ServeSettings:
    """Everything the node needs to run; built only by :func:`load_settings`."""

    storage: Path
    reports: Path
    ae_title: str = "RTCHECK"
    port: int = 11112
    bind: str = "127.0.0.1"
    protocol: Path | None = None
    arm: str | None = None
    allow: tuple[AllowRule, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_object_mb: float = 1024.0
    max_associations: int = 16
    max_pdu: int = 131072
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    quiet_period: float = 2.0
    incomplete_timeout: float = 600.0
    workers: int = 2
    report_to: Destination | None = None
    report_calling_ae: str | None = None
    report_retry_max: float = 60.0
    log_level: str = "info"
    config_file: Path | None = field(default=None, compare=False)

    @property
    def max_object_bytes(self) -> int:
        return int(self.max_object_mb * 1024 * 1024)

    @property
    def report_calling_ae_title(self) -> str:
        """The AE title the node calls ``report_to`` with: its own, unless told otherwise."""
        return self.report_calling_ae or self.ae_title


# name -> (type, help). The same names are the YAML keys; defaults live on ServeSettings.
_OPTIONS: dict[str, tuple[type, str]] = {
    "ae_title": (str, "AE title of this node (default RTCHECK)"),
    "port": (int, "TCP port to listen on (default 11112)"),
    "bind": (str, "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"),
    "storage": (Path, "folder where received objects are kept (required)"),
    "reports": (Path, "folder where reports are written (required)"),
    "protocol": (Path, "protocol YAML (default: the bundled trial protocol)"),
    "arm": (str, "force the protocol arm instead of detecting it"),
    "tls_cert": (Path, "PEM certificate of this node: enables TLS"),
    "tls_key": (Path, "PEM private key of --tls-cert"),
    "tls_ca": (Path, "PEM CA bundle: peers must present a certificate it signed (mutual TLS)"),
    "max_object_mb": (float, "largest object accepted, in MiB (default 1024); larger ones fail"),
    "max_associations": (int, "simultaneous associations (default 16); more are rejected"),
    "max_pdu": (int, "largest PDU this node receives, bytes (default 131072; 0 = no limit)"),
    "acse_timeout": (float, "seconds to wait for association messages (default 30)"),
    "dimse_timeout": (float, "seconds to wait for DIMSE messages (default 60)"),
    "network_timeout": (float, "seconds an idle association is kept open (default 60)"),
    "quiet_period": (float, "seconds without a new object of a course before its report is written (default 2)"),
    "incomplete_timeout": (
        float,
        "seconds an incomplete course waits before its not-evaluable report (default 600)",
    ),
    "workers": (int, "processes running checks (default 2)"),
    "report_to": (
        str,
        "AE@host:port of the record system (PACS, archive, TPS) that gets every report as an Encapsulated "
        "PDF in the plan's study; reports wait on disk while it is down",
    ),
    "report_calling_ae": (str, "AE title the node calls --report-to with (default: --ae-title)"),
    "report_retry_max": (
        float,
        "longest wait, in seconds, between attempts to reach --report-to while it is down (default 60)",
    ),
    "log_level": (str, "debug, info, warning or error (default info)"),
}


_METAVARS = {"report_to": "AE@HOST:PORT", "report_calling_ae": "AE", "report_retry_max": "SECONDS"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``rtcheck serve`` to ``parser``.

    Every default is None so that :func:`load_settings` can tell an option that was given
    from one that was not, and let the config file fill the latter.
    """
    parser.add_argument("--config", type=Path, help="YAML file with these settings (options given here win)")
    for name, (kind, help_text) in _OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=help_text,
            metavar=_METAVARS.get(name),
        )
    parser.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="AE[@HOST]",
        help="calling AE title allowed to connect, optionally only from HOST (repeatable); "
        "without any --allow every peer is accepted",
    )


def load_settings(args: argparse.Namespace) -> ServeSettings:
    """Merge the config file (if any) under the command-line options and validate the result."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        values.update(_read_config(Path(config_file)))
    for name in [*_OPTIONS, "allow"]:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if config_file is not None:
        values["config_file"] = Path(config_file)
    return _validate(values)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the config file must be a mapping of setting: value")
    out: dict[str, Any] = {}
    known = {*_OPTIONS, "allow"}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise SettingsError(f"{path}: unknown setting {raw_key!r}; known: {', '.join(sorted(known))}")
        if key == "allow":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{path}: 'allow' must be a list of AE or AE@host strings")
        elif value is not None:
            kind = _OPTIONS[key][0]
            value = _coerce(f"{path}: {key}", kind, value)
            if kind is Path:
                value = (path.parent / value) if not value.is_absolute() else value
        out[key] = value
    return out


def _coerce(where: str, kind: type, value: Any) -> Any:
    if kind is Path:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if kind in (int, float) and isinstance(value, bool):
        raise SettingsError(f"{where}: expected a number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise SettingsError(f"{where}: expected a whole number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: expected {kind.__name__}, got {value!r}") from exc


def _validate(values: dict[str, Any]) -> ServeSettings:
    for required in ("storage", "reports"):
        if values.get(required) is None:
            raise SettingsError(f"--{required} is required (on the command line or in the config file)")
    values = {k: v for k, v in values.items() if v is not None}
    ae_title = str(values.get("ae_title", "RTCHECK")).strip()
    if not ae_title or len(ae_title) > 16 or "\\" in ae_title or not ae_title.isascii():
        raise SettingsError(f"ae_title {ae_title!r}: an AE title is 1 to 16 ASCII characters, no backslash")
    values["ae_title"] = ae_title
    _check_report_to(values)
    _check_range(values, "port", 1, 65535)
    _check_range(values, "max_associations", 1, 1000)
    _check_range(values, "workers", 1, 64)
    _check_range(values, "max_object_mb", 0.001, 1024 * 1024)
    for name in ("acse_timeout", "dimse_timeout", "network_timeout"):
        _check_range(values, name, 1, 24 * 3600)
    _check_range(values, "quiet_period", 0, 3600)
    _check_range(values, "incomplete_timeout", 0, 7 * 24 * 3600)
    _check_range(values, "report_retry_max", 1, 24 * 3600)
    if "max_pdu" in values and values["max_pdu"] != 0:
        _check_range(values, "max_pdu", 4096, 2**32 - 1)
    level = str(values.get("log_level", "info")).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level {level!r}: use debug, info, warning or error")
    values["log_level"] = level
    try:
        socket.getaddrinfo(values.get("bind", "127.0.0.1"), None)
    except socket.gaierror as exc:
        raise SettingsError(f"bind {values.get('bind')!r}: not an address of this machine ({exc})") from exc
    _check_tls(values)
    storage, reports = Path(values["storage"]).resolve(), Path(values["reports"]).resolve()
    if storage.is_relative_to(reports) or reports.is_relative_to(storage):
        raise SettingsError(
            f"storage {storage} and reports {reports} must be separate folders, neither inside the other"
        )
    values["allow"] = tuple(parse_allow(entry) for entry in values.get("allow", ()))
    return ServeSettings(**values)


def _check_report_to(values: dict[str, Any]) -> None:
    """Parse ``report_to`` into a destination; check ``report_calling_ae`` is an AE title."""
    from ..send import Destination  # here, not at import: only ``serve`` needs pynetdicom

    if "report_to" in values:
        try:
            values["report_to"] = Destination.parse(str(values["report_to"]).strip())
        except ValueError as exc:
            raise SettingsError(f"report_to {values['report_to']!r}: {exc}") from exc
    if "report_calling_ae" in values:
        calling = str(values["report_calling_ae"]).strip()
        if not calling or len(calling) > 16 or "\\" in calling or not calling.isascii():
            raise SettingsError(f"report_calling_ae {calling!r}: an AE title is 1 to 16 ASCII characters, no backslash")
        if "report_to" not in values:
            raise SettingsError("report_calling_ae needs report_to (the destination it calls)")
        values["report_calling_ae"] = calling


def _check_range(values: dict[str, Any], name: str, low: float, high: float) -> None:
    if name in values and not low <= values[name] <= high:
        raise SettingsError(f"{name} {values[name]!r}: must be between {low} and {high}")


def _check_tls(values: dict[str, Any]) -> None:
    cert, key, ca = values.get("tls_cert"), values.get("tls_key"), values.get("tls_ca")
    if (cert is None) != (key is None):
        raise SettingsError("tls_cert and tls_key go together: give both or neither")
    if ca is not None and cert is None:
        raise SettingsError("tls_ca needs tls_cert and tls_key (this node must present a certificate too)")
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"{name} {path}: no such file")


def parse_allow(entry: str) -> AllowRule:
    """Parse ``AE`` or ``AE@host``; a host name is resolved now, once, to its addresses."""
    ae_title, sep, host = entry.partition("@")
    ae_title = ae_title.strip()
    if not ae_title or len(ae_title) > 16 or "\\" in ae_title or not ae_title.isascii():
        raise SettingsError(f"allow {entry!r}: the AE title must be 1 to 16 ASCII characters")
    if not sep:
        return AllowRule(ae_title)
    host = host.strip()
    if not host:
        raise SettingsError(f"allow {entry!r}: nothing after '@' (give a host or drop the '@')")
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SettingsError(f"allow {entry!r}: cannot resolve host {host!r} ({exc})") from exc
    return AllowRule(ae_title, host, frozenset(_normalise_ip(str(info[4][0])) for info in infos))


def _normalise_ip(text: str) -> str:
    """One spelling per address, so that ``::ffff:10.0.0.5`` and ``10.0.0.5`` compare equal."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
