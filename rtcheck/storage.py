"""What ``rtcheck serve`` keeps on disk: received objects, the ledger of checks, the reports.

The node must lose nothing it acknowledged and skip no check it owes, through crashes,
power cuts and ``kill -9``. So every piece of state lives on disk, written atomically (a
temporary file in the destination folder, fsync, rename, fsync of the folder), and
memory only ever caches what the disk says:

- ``<storage>/<patient>/<StudyInstanceUID>/<RTPLAN|RTSTRUCT|RTDOSE|CT|MR|PT>/<SOPInstanceUID>.dcm``
  holds each received object exactly as it arrived (file meta + the sender's bytes).
  ``<patient>`` is a hash of the Patient ID: names on disk come from validated UIDs and
  hashes only, never from free text a sender controls. One patient's objects share a
  folder so that a course whose plan and structure set sit in different studies still
  assembles.
- ``<reports>/<PatientID>/<plan labels>_<time>.json`` and ``.txt``: one report per course
  per (re)export; with ``--report-to`` also ``.dcm``, the report as an Encapsulated PDF.
- ``<reports>/.rtcheck/<patient>/``: the ledger. A check is *claimed* (``pending/``) with its
  report names before the report is written and *done* (``done/``) after, keyed by the
  course's fingerprint (course key + SHA-256 and mtime of each file). After a crash a
  pending claim is re-run into the same names, so a course never gets two reports for one
  export, and never none. ``resolved.json`` records the folder state in which every course
  of the patient had its report, so a restart skips unchanged patients with a ``stat``
  walk instead of re-reading months of objects.
- ``<reports>/.rtcheck/outbox/``: copies of the ``.dcm`` reports waiting for the
  ``--report-to`` destination (:class:`rtcheck.send.Outbox` sends and removes them). A
  report is queued exactly once, even across ``kill -9``: its copy is first written under a
  staging name the sender ignores, then the claim records it as queued, then the copy is
  renamed to its queue name (fixed when the check was claimed). A crash before the record
  leaves a staging file the re-run overwrites; a crash after it leaves one that the next
  start renames. Either way no report is sent twice or never.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.datadict import dictionary_VR

if TYPE_CHECKING:
    from .assembly import CourseFiles
    from .protocol import Protocol
    from .report import Report

#: Folder (under the study) for each SOP class the node accepts. Derived from the
#: negotiated SOP class, not from the dataset's Modality, so a sender cannot steer where
#: an object lands and every RT object is where course assembly looks for it.
FOLDER_BY_SOP_CLASS: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",  # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",  # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4": "MR",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3": "MR",  # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128": "PT",  # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.130": "PT",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.128.1": "PT",  # Legacy Converted Enhanced PET Image
}
RT_FOLDERS = ("RTPLAN", "RTSTRUCT", "RTDOSE")

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TEMP_SUFFIX = ".rtcheck-tmp"


class StoreError(Exception):
    """An object cannot be stored; ``status`` is the C-STORE failure status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# C-STORE failure statuses (PS3.4 B.2.3): A7xx out of resources, A9xx data set does not
# match SOP class, Cxxx cannot understand.
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_INVALID_UID = 0xC001
STATUS_MALFORMED = 0xC002
STATUS_UID_MISMATCH = 0xC003


def uid_problem(value: object) -> str | None:
    """Why ``value`` is not a valid DICOM UID (PS3.5 9.1), or None if it is one."""
    text = str(value) if value is not None else ""
    if not text:
        return "is empty"
    if len(text) > 64:
        return f"is {len(text)} characters long (at most 64)"
    if not _UID.fullmatch(text):
        return "is not dot-separated numbers without leading zeros"
    return None


# ---------------------------------------------------------------------------------------
# Well-formedness of a received data set


class MalformedDataset(ValueError):
    """The encoded data set is not a well-formed sequence of DICOM data elements."""


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_MAX_DEPTH = 32


def check_well_formed(data: bytes | memoryview, implicit_vr: bool) -> None:
    """Walk every element, item and fragment of a little-endian data set without decoding values.

    pydicom reads lazily and forgives a data set cut short, so a truncated object would
    decode "fine" and be acknowledged; this walk checks that each length fits in what
    remains and that every sequence and item is closed. It costs one pass over the
    element headers (values are skipped, not converted).
    """
    buf = memoryview(data)
    _walk_dataset(buf, 0, len(buf), implicit_vr, 0, until_delimiter=False)


def _walk_dataset(buf: memoryview, pos: int, end: int, implicit: bool, depth: int, until_delimiter: bool) -> int:
    while pos < end:
        if end - pos < 8:
            raise MalformedDataset(f"{end - pos} stray bytes at offset {pos} (truncated?)")
        group, element = struct.unpack_from("<HH", buf, pos)
        tag = group << 16 | element
        if tag == _ITEM_END:
            if not until_delimiter:
                raise MalformedDataset(f"item delimiter outside an item at offset {pos}")
            return pos + 8
        if group == 0xFFFE:
            raise MalformedDataset(f"unexpected ({group:04X},{element:04X}) at offset {pos}")
        start = pos
        if implicit:
            vr = None
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if not (vr.isalpha() and vr.isupper()):
                raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} has no valid VR")
            if vr in _LONG_VRS:
                if end - pos < 12:
                    raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} is cut short")
                (length,) = struct.unpack_from("<I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and not implicit:
                pos = _walk_fragments(buf, pos, end)
            elif implicit or vr == b"SQ":
                pos = _walk_sequence(buf, pos, end, implicit, depth + 1, defined=False)
            elif vr == b"UN":  # an undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2)
                pos = _walk_sequence(buf, pos, end, True, depth + 1, defined=False)
            else:
                raise MalformedDataset(f"({group:04X},{element:04X}) has undefined length with VR {vr!r}")
            continue
        if length > end - pos:
            raise MalformedDataset(
                f"({group:04X},{element:04X}) at offset {start} claims {length} bytes, "
                f"only {end - pos} remain (truncated?)"
            )
        if vr == b"SQ" or (implicit and _is_sequence(tag)):
            _walk_sequence(buf, pos, pos + length, implicit, depth + 1, defined=True)
        pos += length
    if until_delimiter:
        raise MalformedDataset("an undefined-length item has no delimiter (truncated?)")
    return pos


def _walk_sequence(buf: memoryview, pos: int, end: int, implicit: bool, depth: int, defined: bool) -> int:
    if depth > _MAX_DEPTH:
        raise MalformedDataset(f"sequences nested deeper than {_MAX_DEPTH}")
    while not (defined and pos == end):
        if end - pos < 8:
            raise MalformedDataset(f"sequence cut short at offset {pos} (truncated?)")
        tag = struct.unpack_from("<HH", buf, pos)
        tag_value = tag[0] << 16 | tag[1]
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8
        if tag_value == _SEQUENCE_END:
            return pos
        if tag_value != _ITEM:
            raise MalformedDataset(f"expected an item in a sequence at offset {pos - 8}")
        if length == _UNDEFINED:
            pos = _walk_dataset(buf, pos, end, implicit, depth, until_delimiter=True)
        elif length > end - pos:
            raise MalformedDataset(f"item at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
        else:
            _walk_dataset(buf, pos, pos + length, implicit, depth, until_delimiter=False)
            pos += length
    return pos


def _walk_fragments(buf: memoryview, pos: int, end: int) -> int:
    while True:
        if end - pos < 8:
            raise MalformedDataset(f"encapsulated pixel data cut short at offset {pos} (truncated?)")
        tag = struct.unpack_from("<HH", buf, pos)
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8
        if (tag[0] << 16 | tag[1]) == _SEQUENCE_END:
            return pos
        if (tag[0] << 16 | tag[1]) != _ITEM or length == _UNDEFINED or length > end - pos:
            raise MalformedDataset(f"bad pixel data fragment at offset {pos - 8}")
        pos += length


@lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown: opaque bytes, its length was checked
        return False


def inflate(data: bytes | memoryview, limit: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set, refusing more than ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate ({exc})") from exc
    if len(out) > limit:
        raise StoreError(STATUS_OUT_OF_RESOURCES, f"inflates to more than {limit} bytes")
    return out


# ---------------------------------------------------------------------------------------
# Received objects


@dataclass(frozen=True)
class ObjectHeader:
    """The few attributes of a received object the node needs, validated."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str


_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "PatientID"]


def read_header(
    encoded: bytes, transfer_syntax: str, request_sop_class: str, request_sop_instance: str, inflate_limit: int
) -> ObjectHeader:
    """Check a received object (file meta + data set) and return its header.

    ``transfer_syntax`` is the one of the presentation context the object came in.
    ``inflate_limit`` caps what a deflated data set may inflate to (a deflate bomb is a
    few kB on the wire). Raises :class:`StoreError` with the status to answer when the
    data set is malformed, a UID is invalid, or the data set contradicts its request.
    """
    body = memoryview(encoded)[_file_meta_end(encoded) :]
    syntax = pydicom.uid.UID(transfer_syntax)
    try:
        if syntax.is_deflated:
            check_well_formed(inflate(body, inflate_limit), implicit_vr=False)
        elif syntax.is_little_endian:
            check_well_formed(body, implicit_vr=syntax.is_implicit_VR)
        else:
            raise StoreError(STATUS_MALFORMED, f"transfer syntax {syntax} is not accepted")
        ds = pydicom.dcmread(BytesIO(encoded), specific_tags=_HEADER_TAGS, stop_before_pixels=True)
        header = ObjectHeader(
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
        )
    except MalformedDataset as exc:
        raise StoreError(STATUS_MALFORMED, f"malformed data set: {exc}") from exc
    except StoreError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged input
        raise StoreError(STATUS_MALFORMED, f"data set unreadable ({exc})") from exc
    for name, value in (
        ("SOPClassUID", header.sop_class_uid),
        ("SOPInstanceUID", header.sop_instance_uid),
        ("StudyInstanceUID", header.study_instance_uid),
    ):
        problem = uid_problem(value)
        if problem:
            raise StoreError(STATUS_INVALID_UID, f"{name} {value[:80]!r} {problem}")
    if header.sop_class_uid != request_sop_class:
        raise StoreError(
            STATUS_SOP_CLASS_MISMATCH,
            f"SOPClassUID {header.sop_class_uid} differs from the request's {request_sop_class}",
        )
    if header.sop_instance_uid != request_sop_instance:
        raise StoreError(
            STATUS_UID_MISMATCH,
            f"SOPInstanceUID {header.sop_instance_uid} differs from the request's {request_sop_instance}",
        )
    return header


def _file_meta_end(encoded: bytes) -> int:
    """Offset of the data set in preamble + 'DICM' + file meta, from (0002,0000) group length."""
    if len(encoded) < 144 or encoded[128:132] != b"DICM" or encoded[132:136] != b"\x02\x00\x00\x00":
        raise StoreError(STATUS_MALFORMED, "file meta without a group length")
    (group_length,) = struct.unpack_from("<I", encoded, 140)
    return 144 + group_length


def patient_key(patient_id: str) -> str:
    """The folder name of a patient: a hash, so the name never depends on free text."""
    return hashlib.sha256(patient_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class StoredObject:
    path: Path
    replaced: bool
    moved_from: tuple[Path, ...]


class ObjectStore:
    """Received objects on disk, one file per SOP Instance UID."""

    def __init__(self, root: Path) -> None:
        make_folders(root.absolute())
        self.root = root.resolve()

    def path_for(self, header: ObjectHeader) -> Path:
        folder = FOLDER_BY_SOP_CLASS.get(header.sop_class_uid)
        if folder is None:
            raise StoreError(STATUS_SOP_CLASS_MISMATCH, f"SOP class {header.sop_class_uid} is not stored here")
        for name, value in (
            ("SOPInstanceUID", header.sop_instance_uid),
            ("StudyInstanceUID", header.study_instance_uid),
        ):
            problem = uid_problem(value)
            if problem:  # read_header checked already; the layout must not depend on that
                raise StoreError(STATUS_INVALID_UID, f"{name} {value[:80]!r} {problem}")
        path = self.root / patient_key(header.patient_id) / header.study_instance_uid / folder
        path = path / f"{header.sop_instance_uid}.dcm"
        if not path.resolve().is_relative_to(self.root):
            raise StoreError(STATUS_INVALID_UID, f"{path} is outside the storage folder")
        return path

    def store(self, header: ObjectHeader, encoded: bytes) -> StoredObject:
        """Write ``encoded`` atomically; returns once it is on disk (fsync'd file and folder).

        An object re-sent under the same SOP Instance UID replaces the old file only once the
        new one is safely written, including when its study changed (the old file goes).
        """
        path = self.path_for(header)
        make_folders(path.parent)
        replaced = path.exists()
        stale = tuple(p for p in self._same_instance(path) if p != path)
        atomic_write(path, encoded)
        for old in stale:
            old.unlink(missing_ok=True)
            fsync_folder(old.parent)
        return StoredObject(path, replaced, stale)

    def _same_instance(self, path: Path) -> Iterator[Path]:
        patient = path.parents[2]
        for study in _subfolders(patient):
            for folder in _subfolders(study):
                candidate = folder / path.name
                if candidate.exists():
                    yield candidate

    def patient_folders(self) -> list[Path]:
        return _subfolders(self.root)

    def rt_folders(self, patient: Path) -> list[Path]:
        """The folders of one patient that hold RT objects: all course assembly needs to read."""
        return [f for study in _subfolders(patient) for f in _subfolders(study) if f.name in RT_FOLDERS]

    def remove_temporary_files(self) -> int:
        """Delete temporary files a crash left behind (never acknowledged, never complete)."""
        return remove_temporary_files(self.root)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def folder_state(folder: Path) -> tuple[int, int, int]:
    """(number of files, total bytes, newest mtime in ns) below ``folder``: a cheap change detector."""
    count = size = newest = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            count += 1
            size += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return count, size, newest


# ---------------------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new content."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with open(fd, "wb", closefd=True) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def make_folders(folder: Path) -> None:
    """``mkdir -p`` whose new folders survive a power cut (each new entry's parent is fsync'd)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue
        fsync_folder(new.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporary_files(root: Path) -> int:
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------
# The ledger of checks


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def course_fingerprint(course: CourseFiles) -> tuple[str, list[dict[str, Any]], int]:
    """(fingerprint, per-file record, newest mtime in ns) of a course as it is on disk now.

    The fingerprint changes whenever any file of the course is written again, even with
    identical bytes: a re-export is a new export and gets its own report.
    """
    records = []
    for path in sorted(course.files):
        st = path.stat()
        records.append({"path": str(path), "sha256": file_sha256(path), "mtime_ns": st.st_mtime_ns})
    text = "\n".join([course.key, *(f"{r['path']} {r['sha256']} {r['mtime_ns']}" for r in records)])
    newest = max((r["mtime_ns"] for r in records), default=0)
    return hashlib.sha256(text.encode()).hexdigest(), records, newest


@dataclass(frozen=True)
class Claim:
    """A check the ledger owes: which course, and the report names reserved for it.

    ``queue_name`` is the name the report's DICOM copy gets in the outbox; ``queued`` is
    True once the claim recorded that copy as made (see the module docstring).
    """

    fingerprint: str
    patient_key: str
    json_path: Path
    txt_path: Path
    dcm_path: Path
    queue_name: str
    queued: bool = False


_STAGED_SUFFIX = ".staged"


class Ledger:
    """Which course exports have their report, on disk under ``<reports>/.rtcheck``."""

    def __init__(self, reports: Path) -> None:
        make_folders(reports.absolute() / ".rtcheck")
        self.reports = reports.resolve()
        self.root = self.reports / ".rtcheck"
        #: Reports waiting for the ``--report-to`` destination.
        self.outbox = self.root / "outbox"

    def _folder(self, key: str, kind: str) -> Path:
        folder = self.root / key / kind
        make_folders(folder)
        return folder

    def _pending_path(self, claim: Claim) -> Path:
        return self.root / claim.patient_key / "pending" / f"{claim.fingerprint}.json"

    def is_done(self, key: str, fingerprint: str) -> bool:
        return (self.root / key / "done" / f"{fingerprint}.json").exists()

    def pending(self, key: str) -> dict[str, Claim]:
        """Claims of this patient that have no completed report yet, by fingerprint."""
        out = {}
        folder = self.root / key / "pending"
        for entry in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out[entry.stem] = _claim(key, entry.stem, json.loads(entry.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                entry.unlink(missing_ok=True)  # a claim is re-made from the files when needed
        return out

    def claim(
        self, key: str, fingerprint: str, course: CourseFiles, records: list[dict[str, Any]], complete: bool
    ) -> Claim:
        """Reserve report names for a course export and record the claim before any report exists."""
        taken = {c.json_path.name for c in self.pending(key).values()}
        folder = self.reports / safe_name(course.patient_id, "unknown-patient")
        make_folders(folder)
        label = safe_name("+".join(course.plan_labels), "no-plan")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            stem = f"{label}_{stamp}" if n == 1 else f"{label}_{stamp}-{n}"
            paths = [folder / f"{stem}{suffix}" for suffix in (".json", ".txt", ".dcm")]
            if paths[0].name not in taken and not any(p.exists() for p in paths):
                break
        # Outbox names sort oldest first, like those of rtcheck.send.Outbox.enqueue.
        queue_name = f"{time.time_ns():020d}-{fingerprint[:16]}.dcm"
        json_path, txt_path, dcm_path = paths
        claim = Claim(fingerprint, key, json_path, txt_path, dcm_path, queue_name)
        entry = {
            "fingerprint": fingerprint,
            "course_key": course.key,
            "patient_id": course.patient_id,
            "plan_labels": course.plan_labels,
            "complete": complete,
            "files": records,
            "report_json": str(claim.json_path),
            "report_txt": str(claim.txt_path),
            "report_dcm": str(claim.dcm_path),
            "queue_name": queue_name,
            "queued": False,
            "claimed": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        atomic_write(self._folder(key, "pending") / f"{fingerprint}.json", _json(entry))
        return claim

    def finish(self, claim: Claim, verdict: str, error: str | None, dicom: bool = False) -> None:
        """Record the report as written, then drop the claim (in that order: crash-safe).

        ``dicom``: the report's ``.dcm`` was written (and queued) too.
        """
        pending = self._pending_path(claim)
        try:
            entry = json.loads(pending.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entry = {"fingerprint": claim.fingerprint, "report_json": str(claim.json_path)}
        entry.update(
            verdict=verdict,
            error=error,
            finished=datetime.now().astimezone().isoformat(timespec="seconds"),
        )
        if not dicom:
            entry.pop("report_dcm", None)
            entry.pop("queue_name", None)
            entry.pop("queued", None)
        atomic_write(self._folder(claim.patient_key, "done") / f"{claim.fingerprint}.json", _json(entry))
        pending.unlink(missing_ok=True)

    def drop(self, claim: Claim) -> None:
        """Forget a claim whose export was superseded before its report was written."""
        self._pending_path(claim).unlink(missing_ok=True)

    # -- the outbox: each report's DICOM copy queued exactly once -----------------------

    def _staged(self, claim: Claim) -> Path:
        return self.outbox / f".{claim.queue_name}{_STAGED_SUFFIX}"

    def stage(self, claim: Claim, data: bytes) -> None:
        """Write the copy to be queued under a name the outbox's sender ignores."""
        make_folders(self.outbox)
        atomic_write(self._staged(claim), data)

    def mark_queued(self, claim: Claim) -> Claim:
        """Record in the claim that its staged copy is the one to send (the point of no return)."""
        path = self._pending_path(claim)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable: what the claim knows is enough to go on
            entry = {"fingerprint": claim.fingerprint, "report_json": str(claim.json_path),
                     "report_txt": str(claim.txt_path), "report_dcm": str(claim.dcm_path),
                     "queue_name": claim.queue_name}  # fmt: skip
        entry["queued"] = True
        atomic_write(path, _json(entry))
        return replace(claim, queued=True)

    def release(self, claim: Claim) -> Path:
        """Rename the claim's staged copy to its queue name (a no-op once done); returns that path."""
        queued = self.outbox / claim.queue_name
        staged = self._staged(claim)
        if staged.exists():
            os.replace(staged, queued)
            fsync_folder(self.outbox)
        return queued

    def release_staged(self) -> tuple[int, int]:
        """At start: queue the staged copies that claims recorded as queued, delete the others.

        Returns (released, removed). A staged copy no claim recorded was cut short by a
        crash before the record; its claim is still pending and its re-run stages it anew.
        """
        if not self.outbox.is_dir():
            return 0, 0
        queued = {}
        for entry in self.root.glob("*/pending/*.json"):
            try:
                claim = _claim(entry.parent.parent.name, entry.stem, json.loads(entry.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if claim.queued:
                queued[self._staged(claim).name] = claim
        released = removed = 0
        for staged in self.outbox.glob(f".*{_STAGED_SUFFIX}"):
            claim = queued.get(staged.name)
            if claim is not None:
                self.release(claim)
                released += 1
            else:
                staged.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_folder(self.outbox)
        return released, removed

    def resolved_state(self, key: str) -> list[int] | None:
        try:
            return json.loads((self.root / key / "resolved.json").read_text(encoding="utf-8"))["state"]
        except (OSError, ValueError, KeyError):
            return None

    def mark_resolved(self, key: str, state: tuple[int, int, int]) -> None:
        folder = self.root / key
        make_folders(folder)
        atomic_write(folder / "resolved.json", _json({"state": list(state)}))


def _claim(key: str, fingerprint: str, data: dict[str, Any]) -> Claim:
    """A claim as its pending entry records it (entries from before ``--report-to`` lack the
    DICOM fields: their names follow from the JSON report's)."""
    json_path = Path(data["report_json"])
    return Claim(
        fingerprint,
        key,
        json_path,
        Path(data["report_txt"]),
        Path(data.get("report_dcm") or json_path.with_suffix(".dcm")),
        str(data.get("queue_name") or f"{fingerprint}.dcm"),
        bool(data.get("queued", False)),
    )


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str, empty: str) -> str:
    """A file or folder name for free text (Patient ID, plan labels).

    Anything but letters, digits and ``._+-`` becomes ``_``; a name that had to change
    gets a short hash of the original, so two IDs that differ only in such characters
    never share a folder.
    """
    cleaned = _UNSAFE.sub("_", text).strip("._") or empty
    cleaned = cleaned[:64]
    if cleaned != text:
        cleaned += "_" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return cleaned


# ---------------------------------------------------------------------------------------
# Running a check (in a worker process) and writing its report (in the node)


@dataclass(frozen=True)
class CheckJob:
    """Everything a worker process needs to check one course.

    ``dicom_report``: also make the report as an Encapsulated PDF (for ``--report-to``).
    """

    course: CourseFiles
    complete: bool
    protocol_path: Path | None
    arm: str | None
    dicom_report: bool = False


@dataclass(frozen=True)
class CheckOutcome:
    """A finished check: the report as JSON and as text, not yet written anywhere.

    Workers return the report instead of writing it so that the node decides whether it
    is still wanted: a check started before the quiet period ended is thrown away if
    more objects of the course arrive meanwhile. ``dicom`` is the Encapsulated PDF file
    when the job asked for it, or None with ``dicom_error`` saying why it could not be made.
    """

    verdict: str
    error: str | None
    seconds: float
    json_text: str
    txt_text: str
    dicom: bytes | None = None
    dicom_error: str | None = None


_PROTOCOLS: dict[Path | None, Protocol] = {}


def load_protocol_cached(path: Path | None) -> Protocol:
    """The protocol, read once per worker process (a node checks many courses against one)."""
    from .protocol import load_protocol

    if path not in _PROTOCOLS:
        _PROTOCOLS[path] = load_protocol(path)
    return _PROTOCOLS[path]


def run_check_job(job: CheckJob) -> CheckOutcome:
    """Check a course (or report it incomplete) and return its report.

    A check that raises still gets its report: not evaluable, with the reason, so a
    course that breaks the checker is seen by a person instead of vanishing from the queue.
    The DICOM report (figures and PDF: a second or two) is made here too, in the worker.
    """
    from .api import check_course, error_report, incomplete_report

    started = time.monotonic()
    protocol = load_protocol_cached(job.protocol_path)
    error = None
    if job.complete:
        try:
            report = check_course(job.course, protocol, job.arm)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            report = error_report(job.course, protocol, error)
    else:
        report = incomplete_report(job.course, protocol)
    return _outcome(job, report, protocol, error, started, figures=job.complete and error is None)


def failure_outcome(job: CheckJob, reason: str) -> CheckOutcome:
    """The report of a course whose check crashed its worker process (made in the node itself).

    Its DICOM report has no figures: drawing them may be what crashed the worker.
    """
    from .api import error_report

    started = time.monotonic()
    protocol = load_protocol_cached(job.protocol_path)
    report = error_report(job.course, protocol, reason)
    return _outcome(job, report, protocol, reason, started, figures=False)


def _outcome(
    job: CheckJob, report: Report, protocol: Protocol, error: str | None, started: float, figures: bool
) -> CheckOutcome:
    from .render import render_text

    dicom, dicom_error = dicom_report(job.course, report, protocol, figures) if job.dicom_report else (None, None)
    return CheckOutcome(
        verdict=str(report.verdict),
        error=error,
        seconds=time.monotonic() - started,
        json_text=report.model_dump_json(indent=2),
        txt_text=render_text(report),
        dicom=dicom,
        dicom_error=dicom_error,
    )


def dicom_report(
    course: CourseFiles, report: Report, protocol: Protocol, figures: bool
) -> tuple[bytes | None, str | None]:
    """(Encapsulated PDF file bytes, None), or (None, why it could not be made).

    Filed under the patient and study of the course's first plan. Never raises: a report
    whose PDF cannot be made still has its JSON and text, and the node logs the reason.
    """
    from .figures import build_figures
    from .report_dicom import encapsulate_pdf
    from .report_pdf import render_pdf

    try:
        # A report of an incomplete course, or of a check that failed, lists no files:
        # the plan to take the patient and study from is then the course's own.
        plan = None if report.files else pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
        drawn = build_figures(course, report, protocol) if figures else None
        ds = encapsulate_pdf(report, render_pdf(report, drawn), plan)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return buffer.getvalue(), None


def write_report(claim: Claim, outcome: CheckOutcome) -> None:
    """Write the .txt, the .dcm (if any), then the .json (the file that marks a report as
    there), each atomically."""
    atomic_write(claim.txt_path, outcome.txt_text.encode("utf-8"))
    if outcome.dicom is not None:
        atomic_write(claim.dcm_path, outcome.dicom)
    atomic_write(claim.json_path, outcome.json_text.encode("utf-8"))


def quiet_pydicom() -> None:
    """Keep pydicom's per-value warnings (odd UIDs, DS formatting) out of the node's log.

    The checker reports what matters about a file in the report itself; hundreds of
    repeated value warnings per export would bury the log lines an operator needs.
    Used in the node and as the initializer of its worker processes.
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def init_worker(node_pid: int) -> None:
    """Set up a worker process: quiet pydicom, and exit if the node dies.

    A node killed with SIGKILL cannot stop its workers, and orphans would keep running
    (and holding files) forever; each worker checks once a second that its parent is
    still the node. A check cut short that way leaves only a temporary file, and its
    claim in the ledger is re-run by the next start.
    """
    import threading

    quiet_pydicom()

    def watch() -> None:
        while os.getppid() == node_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="rtcheck-node-watch", daemon=True).start()


def warm_up(protocol_path: Path | None) -> str:
    """Import the checker and read the protocol in a fresh worker, before the first course."""
    from . import api, render  # noqa: F401

    return load_protocol_cached(protocol_path).protocol.name
