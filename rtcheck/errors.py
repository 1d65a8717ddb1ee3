"""Exceptions and exit codes: the contract with people and with scripts that call rtcheck.

A planning-system script (ESAPI, RayStation) reads rtcheck's exit code, so the codes are
stable and documented in the README. Every exception carries a one-line message that names
the file (or protocol path) and the problem; tracebacks are only shown with ``--debug``.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes of the ``rtcheck`` command (worst course wins)."""

    PER_PROTOCOL = 0
    ACCEPTABLE_VARIATION = 1
    UNACCEPTABLE_DEVIATION = 2
    NOT_EVALUABLE = 3
    INPUT_ERROR = 4
    PROTOCOL_ERROR = 5
    SEND_FAILED = 6
    USAGE_ERROR = 64
    INTERNAL_ERROR = 70


class RtcheckError(Exception):
    """Base class of errors that end a run with a one-line message."""

    exit_code: ExitCode = ExitCode.INPUT_ERROR


class InputError(RtcheckError):
    """A file given to rtcheck cannot be used (not DICOM, truncated, missing references, ...)."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class UsageError(RtcheckError):
    """The command line asks for something that cannot be done as given."""

    exit_code = ExitCode.USAGE_ERROR


class ProtocolError(RtcheckError):
    """The protocol YAML is malformed; the message names the YAML path and line."""

    exit_code = ExitCode.PROTOCOL_ERROR


class NotEvaluable(Exception):
    """A measurement's inputs are missing or unusable; the message says which.

    Raised by the workspace of a course and by the checks that measure in it, and turned
    into a not-evaluable rule (never a pass) by the engine, or into a sentence in place of
    a figure by the renderers.
    """
