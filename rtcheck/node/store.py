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
  assembles. ``<storage>/.instances/<SOPInstanceUID>`` names the file of each instance, so
  an instance re-sent under another patient (a corrected PatientID) replaces its old file
  instead of leaving a second copy in the old patient's folder.
- ``<reports>/<PatientID>/<plan labels>_<time>.json`` and ``.txt``: one report per course
  per (re)export, written as soon as the course is checked; then ``.html``, the HTML report
  with its figures, and with ``--report-to`` ``.dcm``, the report as an Encapsulated PDF,
  both drawn from what the check measured while the JSON is being written. The claim is
  done only once all are written: a crash in between re-runs the check into the same names.
- ``<reports>/index.html``: the page of recent checks (:mod:`rtcheck.reports.recent`),
  rebuilt from the report JSON files after each report and at start.
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
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..durable import TEMP_SUFFIX, atomic_write, fsync_folder, make_folders, remove_temporary_files
from .wire import STATUS_INVALID_UID, STATUS_SOP_CLASS_MISMATCH, ObjectHeader, StoreError, uid_problem

if TYPE_CHECKING:
    pass


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

INSTANCE_INDEX = ".instances"


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
        """Write ``encoded`` atomically (see :meth:`store_file`)."""
        path = self.path_for(header)
        make_folders(path.parent)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            tmp.write_bytes(encoded)  # store_file makes it durable
            return self.store_file(header, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def store_file(self, header: ObjectHeader, received: Path) -> StoredObject:
        """Move a received file (in the storage folder) into place; returns once it is on disk.

        The file is fsync'd and renamed, never copied. An object re-sent under the same SOP
        Instance UID replaces the old file only once the new one is safely in place, also
        when its study or its patient changed (the old file goes).
        """
        path = self.path_for(header)
        make_folders(path.parent)
        replaced = path.exists()
        stale = tuple(dict.fromkeys(p for p in self._same_instance(path) if p != path))
        with received.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(received, path)
        fsync_folder(path.parent)
        self._record_instance(path)
        for old in stale:
            old.unlink(missing_ok=True)
            fsync_folder(old.parent)
        return StoredObject(path, replaced, stale)

    def _record_instance(self, path: Path) -> None:
        index = self.root / INSTANCE_INDEX
        make_folders(index)
        atomic_write(index / path.stem, str(path.relative_to(self.root)).encode("ascii"))

    def _indexed(self, sop_instance_uid: str) -> Path | None:
        try:
            text = (self.root / INSTANCE_INDEX / sop_instance_uid).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None
        recorded = (self.root / text.strip()).resolve()
        return recorded if recorded.is_relative_to(self.root) and recorded.is_file() else None

    def _same_instance(self, path: Path) -> Iterator[Path]:
        """Files of the instance ``path`` names: where the index says, and in this patient's folders
        (objects stored before the index existed)."""
        indexed = self._indexed(path.stem)
        if indexed is not None:
            yield indexed
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
