"""The node's ledger: which course exports have their report, kept on disk.

See :mod:`rtcheck.node.store` for the layout under ``<reports>/.rtcheck``: a check is
claimed (``pending/``) with its report names before its report is written and done
(``done/``) after, so a crash never loses a check and never writes two reports for one export.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..durable import atomic_write, file_sha256, fsync_folder, make_folders
from ..reports.recent import INDEX_PAGE
from .store import safe_name

if TYPE_CHECKING:
    from ..assembly import CourseFiles

# ---------------------------------------------------------------------------------------
# The ledger of checks


def course_fingerprint(course: CourseFiles) -> tuple[str, list[dict[str, Any]], int]:
    """(fingerprint, per-file record, newest mtime in ns) of a course as it is on disk now.

    The fingerprint changes whenever any file of the course is written again, even with
    identical bytes: a re-export is a new export and gets its own report.
    """
    records: list[dict[str, Any]] = []
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

    @property
    def html_path(self) -> Path:
        """The HTML report, beside the JSON (named from it, so claims made before it existed agree)."""
        return self.json_path.with_suffix(".html")


def patient_folder_name(patient_id: str) -> str:
    """The folder of a patient's reports: :func:`safe_name` of the Patient ID, never the
    name of the page of recent checks that shares the reports folder."""
    name = safe_name(patient_id, "unknown-patient")
    if name.lower() == INDEX_PAGE:
        name += "_" + hashlib.sha256(patient_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return name


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
        folder = self.reports / patient_folder_name(course.patient_id)
        make_folders(folder)
        label = safe_name("+".join(course.plan_labels), "no-plan")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            stem = f"{label}_{stamp}" if n == 1 else f"{label}_{stamp}-{n}"
            paths = [folder / f"{stem}{suffix}" for suffix in (".json", ".txt", ".dcm", ".html")]
            if paths[0].name not in taken and not any(p.exists() for p in paths):
                break
        # Outbox names sort oldest first, like those of rtcheck.send.Outbox.enqueue.
        queue_name = f"{time.time_ns():020d}-{fingerprint[:16]}.dcm"
        json_path, txt_path, dcm_path, _ = paths
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
            waiting = queued.get(staged.name)
            if waiting is not None:
                self.release(waiting)
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
