"""What rtcheck prints to a terminal or a log: escaped text, and quiet ends of closed pipes.

File names, folder names and DICOM strings (PatientID, plan labels, ROI names) come from
whoever made the export or sent the object. Printed raw, a newline in a file name starts a
line of its own and ANSI escape sequences colour it: a file named
``x\\n\\x1b[32mrtcheck: PER PROTOCOL`` would forge a green verdict among the real output,
and CR, ESC or NUL bytes in a PatientID would corrupt a log. Every such string is therefore
printed through :func:`printable`, which writes control and formatting characters as
visible escapes.

A TPS script or a person may read only the head of rtcheck's output (``rtcheck ... |
head``). The reader closing the pipe is not an error of the check: :func:`closed_pipes_end_quietly`
drops the rest of the output and lets the command finish with its usual exit code.
"""

from __future__ import annotations

import logging
import os
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

#: Unicode categories that must not reach a terminal as they are: control characters
#: (C0, DEL, C1: newline, CR, ESC, NUL, ...), format characters (bidirectional overrides
#: that reorder what is shown, zero-width characters), line and paragraph separators,
#: surrogates, private-use and unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` as one line of visible characters: control and format characters escaped."""
    value = str(text)
    if value.isprintable():  # the common case, and fast: no control, format or separator characters
        return value
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in value)


class EscapingFormatter(logging.Formatter):
    """A log formatter that escapes the message, so that one record is one log line.

    Tracebacks (``--debug``) keep their line breaks: rtcheck writes them, not a sender.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = printable(record.getMessage())
        return super().formatMessage(safe)


def configure_logging(level: int, fmt: str = "%(levelname)s %(message)s") -> None:
    """Log to standard error, one escaped line per record."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _DropWhenReaderGone:
    """A text stream that drops its output once the reading end of its pipe has closed.

    The file descriptor is then pointed at ``/dev/null``, so the interpreter's own flush at
    exit does not fail a second time either.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not backed by a file descriptor (a test's capture): nothing to redirect
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def closed_pipes_end_quietly() -> Iterator[None]:
    """Within this block, a closed standard output or error drops what follows instead of failing."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _DropWhenReaderGone(saved[0])
    sys.stderr = _DropWhenReaderGone(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved
