"""rtcheck: checks radiotherapy plans (DICOM-RT) against a clinical-trial protocol.

The stable Python API is re-exported here (see :mod:`rtcheck.api`)::

    import rtcheck
    reports = rtcheck.check_paths(["export/"])  # one Report per course, bundled protocol
"""

from ._version import __version__
from .api import check_course, check_paths, error_report, find_courses, incomplete_report, load_protocol
from .errors import ExitCode, InputError, ProtocolError, RtcheckError
from .report import Report, RuleResult, Status

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
