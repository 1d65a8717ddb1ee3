"""The node's log: one ``event=... key=value`` line per association, object and report."""

from __future__ import annotations

import logging
from typing import Any

from ..terminal import printable

LOG = logging.getLogger("rtcheck.serve")


def log_event(level: int, event: str, **fields: Any) -> None:
    """One structured log line: ``event=... key=value ...`` (values quoted when needed)."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            # Control characters from a sender (CR, ESC, NUL in a PatientID) are escaped:
            # one event is one line, and it cannot move a terminal's cursor or colour.
            text = '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
        parts.append(f"{key}={text}")
    LOG.log(level, " ".join(parts))
