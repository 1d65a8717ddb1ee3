"""Running a check in a worker process, and writing its report in the node."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom

from ..durable import atomic_write
from .ledger import Claim

if TYPE_CHECKING:
    from ..assembly import CourseFiles
    from ..protocol import Protocol
    from ..report import Report
    from ..reports.figures import Figures
    from ..workspace import Workspace

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
    from ..api import load_protocol

    if path not in _PROTOCOLS:
        _PROTOCOLS[path] = load_protocol(path)
    return _PROTOCOLS[path]


def run_check_job(job: CheckJob) -> CheckOutcome:
    """Check a course (or report it incomplete) and return its report.

    A check that raises still gets its report: not evaluable, with the reason, so a
    course that breaks the checker is seen by a person instead of vanishing from the queue.
    The DICOM report (figures and PDF: a second or two) is made here too, in the worker;
    the HTML report comes after the report is on disk (:func:`render_page_job`).
    The cyclic garbage collector pauses meanwhile (a report sooner); what the check leaves
    is collected after it.
    """
    gc.disable()
    try:
        return _check(job)
    finally:
        gc.enable()


def _check(job: CheckJob) -> CheckOutcome:
    from ..api import check_workspace, error_report, incomplete_report, open_workspace

    started = time.monotonic()
    protocol = load_protocol_cached(job.protocol_path)
    error = None
    workspace = None
    if job.complete:
        try:
            workspace = open_workspace(job.course, protocol, job.arm)
            report = check_workspace(workspace)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            report = error_report(job.course, protocol, error)
            workspace = None
    else:
        report = incomplete_report(job.course, protocol)
    return _outcome(job, report, error, started, workspace)


def failure_outcome(job: CheckJob, reason: str) -> CheckOutcome:
    """The report of a course whose check crashed its worker process (made in the node itself).

    Its DICOM report has no figures: drawing them may be what crashed the worker.
    """
    from ..api import error_report

    started = time.monotonic()
    protocol = load_protocol_cached(job.protocol_path)
    report = error_report(job.course, protocol, reason)
    return _outcome(job, report, reason, started, None)


def _outcome(
    job: CheckJob, report: Report, error: str | None, started: float, workspace: Workspace | None
) -> CheckOutcome:
    from ..reports.figures import build_figures
    from ..reports.text import render_text

    dicom, dicom_error = None, None
    if job.dicom_report:
        # From the workspace the rules measured in; build_figures never raises for a figure.
        drawn = build_figures(report, workspace) if workspace is not None else None
        dicom, dicom_error = dicom_report(job.course, report, drawn)
    return CheckOutcome(
        verdict=str(report.verdict),
        error=error,
        seconds=time.monotonic() - started,
        json_text=report.model_dump_json(indent=2),
        txt_text=render_text(report),
        dicom=dicom,
        dicom_error=dicom_error,
    )


def dicom_report(course: CourseFiles, report: Report, drawn: Figures | None) -> tuple[bytes | None, str | None]:
    """(Encapsulated PDF file bytes, None), or (None, why it could not be made).

    Filed under the patient and study of the course's first plan, with the figures drawn
    for the report (none for a course that was not measured). Never raises: a report
    whose PDF cannot be made still has its JSON and text, and the node logs the reason.
    """
    from ..reports.dicom import encapsulate_pdf
    from ..reports.pdf import render_pdf

    try:
        # A report of an incomplete course, or of a check that failed, lists no files:
        # the plan to take the patient and study from is then the course's own.
        plan = None if report.files else pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
        ds = encapsulate_pdf(report, render_pdf(report, drawn), plan)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return buffer.getvalue(), None


def render_page_job(job: CheckJob, report_json: str, figures: bool) -> str:
    """The HTML report of a course whose report is already on disk, with its figures.

    The second step of a check, run in a worker after the JSON and text reports are written:
    drawing and embedding the figures takes about as long again as the check, and the
    report must not wait for them. The course is opened anew and measured only as far as
    the figures need. ``figures`` is False for a course that was not measured (incomplete,
    or its check failed): its page says why instead.
    """
    from ..api import open_workspace
    from ..report import Report
    from ..reports.figures import Figures, build_figures
    from ..reports.html import render_html

    report = Report.model_validate_json(report_json)
    drawn = None
    if figures:
        try:
            workspace = open_workspace(job.course, load_protocol_cached(job.protocol_path), job.arm)
            drawn = build_figures(report, workspace)
        except Exception as exc:  # the files changed or vanished since the check
            drawn = Figures.unavailable(f"the figures could not be drawn: {type(exc).__name__}: {exc}")
    return render_html(report, drawn)


def write_report(claim: Claim, outcome: CheckOutcome) -> None:
    """Write the .txt, the .dcm (if any), then the .json (the file that marks a report as
    there), each atomically. The .html follows (see :func:`render_page_job`)."""
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
    """Import the checker and read the protocol in a fresh worker, before the first course.

    What this loads lives as long as the worker: it is moved out of the cyclic garbage
    collector's sight (:func:`gc.freeze`), so that collections walk only what checks make.
    """
    from .. import api  # noqa: F401
    from ..reports import text  # noqa: F401

    name = load_protocol_cached(protocol_path).protocol.name
    gc.freeze()
    return name
