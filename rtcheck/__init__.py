"""rtcheck: checks radiotherapy plans (DICOM-RT) against a clinical-trial protocol.

The stable Python API is re-exported here (see :mod:`rtcheck.api`)::

    import rtcheck
    reports = rtcheck.check_paths(["export/"])  # one Report per course, bundled protocol

The names are imported when first used, so that a command that does not check a plan
(``rtcheck example``, ``rtcheck protocol``, ``rtcheck --version``) does not pay for
loading the checker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .api import check_course, check_paths, error_report, find_courses, incomplete_report, load_protocol
    from .errors import ExitCode, InputError, ProtocolError, RtcheckError
    from .report import Report, RuleResult, Status

#: Where each name of the stable API lives.
_API = {
    "check_course": "api",
    "check_paths": "api",
    "error_report": "api",
    "find_courses": "api",
    "incomplete_report": "api",
    "load_protocol": "api",
    "ExitCode": "errors",
    "InputError": "errors",
    "ProtocolError": "errors",
    "RtcheckError": "errors",
    "Report": "report",
    "RuleResult": "report",
    "Status": "report",
}

__all__ = [
    "ExitCode",
    "InputError",
    "ProtocolError",
    "Report",
    "RtcheckError",
    "RuleResult",
    "Status",
    "__version__",
    "check_course",
    "check_paths",
    "error_report",
    "find_courses",
    "incomplete_report",
    "load_protocol",
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'rtcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
