"""The audit's units of work, run in worker processes or on Dask workers.

Each function takes and returns plain picklable values and never raises for a problem of
the input: a course that cannot be read comes back as an error record, because one bad
submission must never end an audit of thousands. Exceptions are turned into strings here,
in the worker, since not every exception survives being pickled back to the caller.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ..api import check_course
from ..assembly import CourseFiles
from ..durable import file_sha256
from ..errors import RtcheckError
from ..protocol import Protocol
from ..rules import registry

# Load every rule family now: the process pool's server imports this module once and
# forks its workers from it, so no worker pays for importing the checks again.
registry()


def hash_files(files: list[Path]) -> list[tuple[Path, str | None, str]]:
    """``(path, sha256, problem)`` per file; sha256 is None when the file cannot be read."""
    out: list[tuple[Path, str | None, str]] = []
    for path in files:
        try:
            out.append((path, file_sha256(path), ""))
        except OSError as exc:
            out.append((path, None, f"cannot read ({exc.strerror or exc})"))
    return out


def check_one(course: CourseFiles, protocol: Protocol) -> dict[str, Any]:
    """Check one complete course; the report as JSON-ready data, or an error record.

    ``error_kind`` is ``input`` for a problem of the files (it will not go away by trying
    again, so the audit keeps it) and ``internal`` for anything else (tried again on the
    next run).
    """
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        report = check_course(course, protocol)
    except RtcheckError as exc:
        return _error("input", str(exc), start, worker)
    except Exception as exc:  # fail closed, recorded: never the end of the audit
        return _error("internal", f"{type(exc).__name__}: {exc}", start, worker)
    return {
        "outcome": "report",
        "report": report.model_dump(mode="json"),
        "duration_s": time.perf_counter() - start,
        "worker": worker,
    }


def _error(kind: str, message: str, start: float, worker: str) -> dict[str, Any]:
    return {
        "outcome": "error",
        "error_kind": kind,
        "error": message,
        "duration_s": time.perf_counter() - start,
        "worker": worker,
    }
