"""Running a check in a worker process, and writing its report in the node."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataset import Dataset

from ..durable import atomic_write
from .handover import CheckedReport, HandoverEnd
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
    """A finished check: the report, and every rendering of it, not yet written anywhere.

    Workers return the report instead of writing it so that the node decides whether it
    is still wanted: a check started before the quiet period ended is thrown away if
    more objects of the course arrive meanwhile. ``html`` is the HTML page, or None with
    ``html_error`` saying why it could not be made; ``dicom`` is the Encapsulated PDF file
    when the job asked for it, or None with ``dicom_error`` saying why it could not be made.
    ``render_seconds``: the time taken by the figures, the page and the PDF.
    """

    report: CheckedReport
    html: str | None
    html_error: str | None = None
    dicom: bytes | None = None
    dicom_error: str | None = None
    render_seconds: float = 0.0


_PROTOCOLS: dict[Path | None, Protocol] = {}
#: Where this worker process hands over each report as soon as it is checked (None outside the node).
_HANDOVER: HandoverEnd | None = None


def load_protocol_cached(path: Path | None) -> Protocol:
    """The protocol, read once per worker process (a node checks many courses against one)."""
    from ..api import load_protocol

    if path not in _PROTOCOLS:
        _PROTOCOLS[path] = load_protocol(path)
    return _PROTOCOLS[path]


def run_check_job(job: CheckJob, token: int = 0) -> CheckOutcome:
    """Check a course (or report it incomplete), hand its report over, then render it.

    A check that raises still gets its report: not evaluable, with the reason, so a
    course that breaks the checker is seen by a person instead of vanishing from the queue.
    The report goes to the node as soon as it exists (see :mod:`rtcheck.node.handover`), so
    the JSON reaches the disk before the figures are drawn; the figures then come from the
    workspace the rules measured in, once, for the HTML page and the PDF alike.
    The cyclic garbage collector pauses meanwhile (a report sooner); what the check and
    the figures leave (a figure is a web of references: figure, axes, artists) is
    collected after them, before the worker takes its next course.
    """
    gc.disable()
    try:
        outcome = _check_and_render(job, token)
    finally:
        gc.enable()
    gc.collect()
    return outcome


def _check_and_render(job: CheckJob, token: int) -> CheckOutcome:
    report, checked, workspace = _check(job, token)
    if _HANDOVER is not None:
        _HANDOVER.send(checked)
    return _render(job, report, checked, workspace)


def _check(job: CheckJob, token: int) -> tuple[Report, CheckedReport, Workspace | None]:
    from ..api import check_workspace, error_report, incomplete_report, open_workspace
    from ..reports.text import render_text

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
    checked = CheckedReport(
        token=token,
        verdict=str(report.verdict),
        error=error,
        seconds=time.monotonic() - started,
        json_text=report.model_dump_json(indent=2),
        txt_text=render_text(report),
    )
    return report, checked, workspace


def _render(
    job: CheckJob, report: Report, checked: CheckedReport, workspace: Workspace | None, *, why_no_figures: str = ""
) -> CheckOutcome:
    """The HTML page and (if asked) the Encapsulated PDF of a report, with one set of figures.

    The figures are drawn from the workspace the rules measured in; a course that was not
    measured (incomplete, or its check failed) has none, and its page says why instead.
    ``why_no_figures``: a reason to show in place of the figures of a measured course.
    """
    started = time.monotonic()
    drawn: Figures | None = None
    if why_no_figures or workspace is not None:
        from ..reports.figures import Figures, build_figures

        if why_no_figures:
            drawn = Figures.unavailable(why_no_figures)
        elif workspace is not None:
            try:  # build_figures never raises for one figure; this is for the unforeseen
                drawn = build_figures(report, workspace)
            except Exception as exc:
                drawn = Figures.unavailable(f"the figures could not be drawn: {type(exc).__name__}: {exc}")
    html, html_error = html_report(report, drawn)
    dicom, dicom_error = None, None
    if job.dicom_report:
        plan = _filing_plan(report, workspace) if workspace is not None else None
        dicom, dicom_error = dicom_report(job.course, report, drawn, plan)
    return CheckOutcome(checked, html, html_error, dicom, dicom_error, time.monotonic() - started)


def _filing_plan(report: Report, workspace: Workspace) -> Dataset | None:
    """The header of the plan the DICOM report is filed under, as read with the course."""
    from ..reports.dicom import filed_under

    uid = filed_under(report)
    return workspace.plan_header(uid) if uid is not None else None


def failure_outcome(job: CheckJob, token: int, reason: str) -> CheckOutcome:
    """The report of a course whose check crashed its worker process (made in the node itself).

    It has no figures: drawing them may be what crashed the worker.
    """
    from ..api import error_report
    from ..reports.text import render_text

    started = time.monotonic()
    report = error_report(job.course, load_protocol_cached(job.protocol_path), reason)
    json_text = report.model_dump_json(indent=2)
    checked = CheckedReport(
        token, str(report.verdict), reason, time.monotonic() - started, json_text, render_text(report)
    )
    return _render(job, report, checked, None)


def outcome_without_figures(job: CheckJob, checked: CheckedReport, reason: str) -> CheckOutcome:
    """The renderings of a checked report whose worker died while drawing its figures (made
    in the node itself): the page and the PDF of the same report, with the reason in
    place of the figures."""
    from ..report import Report

    report = Report.model_validate_json(checked.json_text)
    return _render(job, report, checked, None, why_no_figures=reason)


def html_report(report: Report, drawn: Figures | None) -> tuple[str | None, str | None]:
    """(the HTML page, None), or (None, why it could not be made): never raises, since the
    JSON and text reports stand without it."""
    from ..reports.html import render_html

    try:
        return render_html(report, drawn), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def dicom_report(
    course: CourseFiles, report: Report, drawn: Figures | None, plan: Dataset | None = None
) -> tuple[bytes | None, str | None]:
    """(Encapsulated PDF file bytes, None), or (None, why it could not be made).

    Filed under the patient and study of ``plan``: the header of the report's first plan as
    read with the course, or for a report that lists no files (an incomplete course, or a
    check that failed) the course's first plan, read here. With the figures drawn for the
    report (none for a course that was not measured). Never raises: a report whose PDF
    cannot be made still has its JSON and text, and the node logs the reason.
    """
    from ..reports.dicom import encapsulate_pdf
    from ..reports.pdf import render_pdf

    try:
        if plan is None and not report.files:
            plan = pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
        ds = encapsulate_pdf(report, render_pdf(report, drawn), plan)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return buffer.getvalue(), None


def write_report(claim: Claim, report: CheckedReport) -> None:
    """Write the .txt, then the .json (the file that marks a report as there), each atomically.

    The .html and the .dcm follow once rendered; until the ledger records the claim
    finished, a crash re-runs the check and writes all of them again.
    """
    atomic_write(claim.txt_path, report.txt_text.encode("utf-8"))
    atomic_write(claim.json_path, report.json_text.encode("utf-8"))


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


def init_worker(node_pid: int, handover: HandoverEnd, protocol_path: Path | None, dicom_report: bool) -> None:
    """Set up a worker process before its first check: quiet pydicom, exit if the node dies,
    keep the pipe that reports are handed over on, and import and read what checks need.

    A node killed with SIGKILL cannot stop its workers, and orphans would keep running
    (and holding files) forever; each worker checks once a second that its parent is
    still the node. A check cut short that way leaves only a temporary file, and its
    claim in the ledger is re-run by the next start.
    """
    import threading

    global _HANDOVER
    quiet_pydicom()
    _HANDOVER = handover

    def watch() -> None:
        while os.getppid() == node_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="rtcheck-node-watch", daemon=True).start()
    _warm_up(protocol_path, dicom_report)


def _warm_up(protocol_path: Path | None, dicom_report: bool) -> None:
    """Import the checker and its renderers and read the protocol, before the first course.

    Done as each worker process starts (also one that replaces a dead or retired worker), so
    that no check pays for it. What this loads lives as long as the worker: it is moved
    out of the cyclic garbage collector's sight (:func:`gc.freeze`), so that collections
    walk only what checks make. A protocol that cannot be read now is not an error here:
    each check reads it again and reports what is wrong.
    """
    from .. import api  # noqa: F401
    from ..reports import figures, html, text  # noqa: F401

    if dicom_report:
        from ..reports import dicom, pdf  # noqa: F401
    with contextlib.suppress(Exception):
        load_protocol_cached(protocol_path)
    gc.freeze()


def pool_works() -> None:
    """Nothing: submitting it tells whether a pool still takes work, and makes it start a worker."""
