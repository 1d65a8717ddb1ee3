"""The audit's memory: an SQLite database in the output folder.

A result is stored under the SHA-256 of what decided it: the content hashes of the
course's files, the protocol's hash and rtcheck's version. A re-run therefore checks only
courses that are new or whose files changed, and an audit that was stopped (even killed)
resumes where it stopped, because every course is committed as soon as it is checked
(WAL mode: a commit is one append, and readers never block the writer).

Nothing in the database names a patient: reports are stored already scrubbed, and the
cache of file hashes is keyed by a keyed hash of each path, not by the path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RtcheckError

DB_FILE = "audit.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path_digest TEXT PRIMARY KEY,  -- keyed hash of the absolute path
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    result_key TEXT PRIMARY KEY,   -- sha256 of file hashes + protocol hash + rtcheck version
    protocol_sha256 TEXT NOT NULL,
    rtcheck_version TEXT NOT NULL,
    course_key TEXT NOT NULL,      -- the course's plan UIDs
    patient TEXT NOT NULL,         -- pseudonym
    course_name TEXT NOT NULL,
    outcome TEXT NOT NULL,         -- report | incomplete | error
    error_kind TEXT,               -- input (kept) | internal (tried again next run)
    error TEXT,
    verdict TEXT NOT NULL,
    arm TEXT,
    report_json TEXT NOT NULL,     -- the scrubbed report
    checked_at TEXT NOT NULL,
    duration_s REAL,
    worker TEXT,
    run_id INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,          -- running | complete | interrupted
    protocol_sha256 TEXT NOT NULL,
    executor TEXT NOT NULL,
    courses INTEGER,
    checked INTEGER,
    reused INTEGER,
    errors INTEGER
);
"""


class AuditDatabaseError(RtcheckError):
    """The output folder holds a database rtcheck cannot use for this audit."""


@dataclass(frozen=True)
class StoredResult:
    result_key: str
    course_key: str
    patient: str
    course_name: str
    outcome: str
    error_kind: str | None
    error: str | None
    verdict: str
    arm: str | None
    report_json: str
    checked_at: str
    duration_s: float | None
    worker: str | None
    run_id: int | None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AuditDatabase:
    """One audit folder's database; open it with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        # What the current run judges with, stored with each result (set by start_run).
        self._protocol_sha256 = ""
        self._rtcheck_version = ""

    @classmethod
    def open(cls, out_dir: Path, key_fingerprint: str) -> AuditDatabase:
        """Open (or create) the database, refusing one made with another pseudonym key:
        its stored reports would carry pseudonyms that no longer match."""
        path = out_dir / DB_FILE
        try:
            conn = sqlite3.connect(path, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise AuditDatabaseError(f"{path}: not a usable audit database ({exc})") from exc
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            with conn:
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("key_fingerprint", key_fingerprint), ("created", now())],
                )
        elif meta.get("schema_version") != SCHEMA_VERSION:
            raise AuditDatabaseError(
                f"{path}: audit database schema {meta.get('schema_version')} (this rtcheck reads "
                f"{SCHEMA_VERSION}); use a new --out folder"
            )
        elif meta.get("key_fingerprint") != key_fingerprint:
            raise AuditDatabaseError(
                f"{path}: this audit folder was made with another pseudonym key; give that key "
                "(--pseudonym-key) or use a new --out folder"
            )
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- file hash cache

    def file_hashes(self) -> dict[str, tuple[int, int, str]]:
        rows = self.conn.execute("SELECT path_digest, size, mtime_ns, sha256 FROM file_hashes")
        return {d: (size, mtime, sha) for d, size, mtime, sha in rows}

    def store_file_hashes(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO file_hashes (path_digest, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                rows,
            )

    # ---------------------------------------------------------------- results

    def final_keys(self) -> set[str]:
        """Keys whose result stands: everything but internal errors (those are tried again)."""
        rows = self.conn.execute(
            "SELECT result_key FROM results WHERE NOT (outcome = 'error' AND error_kind = 'internal')"
        )
        return {k for (k,) in rows}

    def put(self, result: StoredResult) -> None:
        """Store one result and commit it at once (what makes an interrupted audit resumable)."""
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO results (result_key, protocol_sha256, rtcheck_version, course_key, "
                "patient, course_name, outcome, error_kind, error, verdict, arm, report_json, checked_at, "
                "duration_s, worker, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.result_key,
                    self._protocol_sha256,
                    self._rtcheck_version,
                    result.course_key,
                    result.patient,
                    result.course_name,
                    result.outcome,
                    result.error_kind,
                    result.error,
                    result.verdict,
                    result.arm,
                    result.report_json,
                    result.checked_at,
                    result.duration_s,
                    result.worker,
                    result.run_id,
                ),
            )

    def results(self, keys: Iterable[str]) -> Iterator[StoredResult]:
        """The stored results of ``keys`` (in no particular order; missing keys are skipped)."""
        wanted = list(dict.fromkeys(keys))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows = self.conn.execute(
                "SELECT result_key, course_key, patient, course_name, outcome, error_kind, error, verdict, arm, "
                "report_json, checked_at, duration_s, worker, run_id FROM results "
                f"WHERE result_key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for row in rows:
                yield StoredResult(*row)

    # ---------------------------------------------------------------- runs

    def start_run(self, protocol_sha256: str, rtcheck_version: str, executor: str) -> int:
        self._protocol_sha256 = protocol_sha256
        self._rtcheck_version = rtcheck_version
        with self.conn:
            # Only one audit runs in a folder at a time (the caller holds the lock), so a
            # run still marked running was stopped before it could finish.
            self.conn.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            cur = self.conn.execute(
                "INSERT INTO runs (started, status, protocol_sha256, executor) VALUES (?, 'running', ?, ?)",
                (now(), protocol_sha256, executor),
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, *, courses: int, checked: int, reused: int, errors: int) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished = ?, status = 'complete', courses = ?, checked = ?, reused = ?, "
                "errors = ? WHERE run_id = ?",
                (now(), courses, checked, reused, errors, run_id),
            )
