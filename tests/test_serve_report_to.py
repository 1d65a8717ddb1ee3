"""``rtcheck serve --report-to``: every automatic report goes back into the record system.

The node runs as a subprocess on a free port of 127.0.0.1; the record system is DCMTK's
``storescp`` (it listens on all interfaces, but is only ever sent to on 127.0.0.1); the
planning system is DCMTK's ``storescu``. Processes started here are ended in ``finally``.
A test that needs DCMTK fails, instead of skipping, when the environment variable CI is set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from peers import dcmtk, free_port, received, storescp
from pynetdicom.sop_class import EncapsulatedPDFStorage

from rtcheck.api import find_courses
from rtcheck.node.config import SettingsError, load_settings
from rtcheck.node.ledger import Ledger, course_fingerprint
from rtcheck.node.store import safe_name
from rtcheck.node.worker import CheckJob, outcome_without_figures, run_check_job
from rtcheck.reports.dicom import encapsulated_pdf
from rtcheck.send import Destination

DEADLINE_S = 30.0
QUIET_S = "0.5"


# --------------------------------------------------------------------------- helpers


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    assert condition(), f"{what}: not within {timeout_s} s"


class Node:
    """``rtcheck serve`` as a subprocess on 127.0.0.1, with its own storage and reports."""

    def __init__(self, base: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.storage, self.reports, self.log_path = base / "storage", base / "reports", base / "node.log"
        self.outbox = self.reports / ".rtcheck" / "outbox"
        self.port = free_port()
        self.extra = list(extra)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        args = [sys.executable, "-m", "rtcheck", "serve", "--storage", str(self.storage),
                "--reports", str(self.reports), "--bind", "127.0.0.1", "--port", str(self.port),
                "--quiet-period", QUIET_S, "--workers", "1", *self.extra]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for(lambda: "event=listening" in self.log(offset) or self.proc.poll() is not None, "node start")
            assert "event=listening" in self.log(offset), self.log(offset)
        except AssertionError:
            self.stop()
            raise
        return self

    def log(self, offset: int = 0) -> str:
        try:
            return self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("the node did not stop on SIGTERM") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def reports_of(self, patient_id: str, suffix: str) -> list[Path]:
        return sorted((self.reports / safe_name(patient_id, "")).glob(f"*{suffix}"))

    def queued(self) -> list[Path]:
        return sorted(p for p in self.outbox.glob("*.dcm") if not p.name.startswith("."))


def storescu(port: int, files: list[Path]) -> None:
    args = [dcmtk("storescu"), "-aet", "TPS", "-aec", "RTCHECK", "127.0.0.1", str(port), *map(str, files)]
    result = subprocess.run(args, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def plan_of(folder: Path) -> pydicom.Dataset:
    """The plan whose patient and study the course's report is filed under: its first."""
    (course,) = find_courses([folder])
    return pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)


def assert_is_the_report_of(got: pydicom.Dataset, plan: pydicom.Dataset, on_disk: Path) -> None:
    """``got`` is the Encapsulated PDF written next to the JSON report, in the plan's study."""
    assert got.SOPClassUID == EncapsulatedPDFStorage
    assert (got.PatientID, got.StudyInstanceUID) == (plan.PatientID, plan.StudyInstanceUID)
    written = pydicom.dcmread(on_disk)
    assert got.SOPInstanceUID == written.SOPInstanceUID
    assert encapsulated_pdf(got).startswith(b"%PDF-") and encapsulated_pdf(got) == encapsulated_pdf(written)
    verdict = json.loads(on_disk.with_suffix(".json").read_text(encoding="utf-8"))["verdict"]
    assert verdict.replace("_", " ") in got.DocumentTitle.lower()


# --------------------------------------------------------------------------- the node, end to end


def test_each_report_arrives_at_the_record_system(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = course_dir("compliant", dose_spacing_mm=5.0)
    plan = plan_of(folder)
    scp_port = free_port()
    node = Node(tmp_path / "node", "--report-to", f"STORESCP@127.0.0.1:{scp_port}")
    with storescp(scp_port, tmp_path / "in"):
        try:
            node.start()
            storescu(node.port, sorted(folder.glob("*.dcm")))
            wait_for(lambda: received(tmp_path / "in"), "the report at storescp")
            wait_for(lambda: not node.queued(), "the outbox emptied")
        finally:
            node.stop()
    (got,) = received(tmp_path / "in")
    (on_disk,) = node.reports_of(plan.PatientID, ".dcm")
    assert_is_the_report_of(got, plan, on_disk)
    assert "event=report " in node.log() and "queued=" in node.log()
    (done,) = (node.reports / ".rtcheck").glob("*/done/*.json")
    assert json.loads(done.read_text())["report_dcm"] == str(on_disk)


def test_a_report_waits_for_a_destination_that_is_down(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = course_dir("control_arm", dose_spacing_mm=5.0)
    plan = plan_of(folder)
    scp_port = free_port()  # nothing listens there yet
    node = Node(tmp_path / "node", "--report-to", f"STORESCP@127.0.0.1:{scp_port}", "--report-retry-max", "1")
    try:
        node.start()
        storescu(node.port, sorted(folder.glob("*.dcm")))
        wait_for(lambda: node.reports_of(plan.PatientID, ".json") and node.queued(), "the report queued")
        wait_for(lambda: "could not be reached" in node.log(), "a failed attempt")
        with storescp(scp_port, tmp_path / "in"):
            wait_for(lambda: received(tmp_path / "in"), "the report at storescp", 15.0)
            wait_for(lambda: not node.queued(), "the outbox emptied")
    finally:
        node.stop()
    (got,) = received(tmp_path / "in")
    (on_disk,) = node.reports_of(plan.PatientID, ".dcm")
    assert_is_the_report_of(got, plan, on_disk)


def test_queued_reports_survive_kill_9_and_are_sent_once(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = course_dir("ldrt_3_fractions", dose_spacing_mm=5.0)
    plan = plan_of(folder)
    scp_port = free_port()  # down until the node is killed
    node = Node(tmp_path / "node", "--report-to", f"STORESCP@127.0.0.1:{scp_port}", "--report-retry-max", "1")
    try:
        node.start()
        storescu(node.port, sorted(folder.glob("*.dcm")))
        wait_for(lambda: "event=report " in node.log(), "the report written, queued and recorded")
        node.kill9()
        assert len(node.queued()) == 1
        # Back to the state a kill between queueing the report and recording it done leaves:
        # the claim pending (and recorded as queued), the patient not resolved.
        ledger = node.reports / ".rtcheck"
        (done,) = ledger.glob("*/done/*.json")
        assert json.loads(done.read_text())["queued"] is True
        (done.parent.parent / "pending").mkdir(exist_ok=True)
        done.rename(done.parent.parent / "pending" / done.name)
        (done.parent.parent / "resolved.json").unlink(missing_ok=True)
        with storescp(scp_port, tmp_path / "in"):
            node.start()
            wait_for(lambda: received(tmp_path / "in"), "the report at storescp", 15.0)
            wait_for(lambda: not node.queued(), "the outbox emptied")
            wait_for(lambda: list(ledger.glob("*/done/*.json")) and not list(ledger.glob("*/pending/*")), "done")
            time.sleep(1.0)  # a second copy of the report would be on its way by now
    finally:
        node.stop()
    (got,) = received(tmp_path / "in")
    (on_disk,) = node.reports_of(plan.PatientID, ".dcm")
    assert_is_the_report_of(got, plan, on_disk)
    assert "waiting=1" in node.log() and "resumed=yes" in node.log()


#: Put first on the node's PYTHONPATH, so that the node and each worker process it spawns
#: count, through Python's audit hook (every ``open()`` of a file raises an "open" event),
#: which process opens which file below the node's storage.
_COUNT_OPENS = """
import os, sys

_log, _root = os.environ.get("RTCHECK_TEST_OPENS_LOG"), os.environ.get("RTCHECK_TEST_OPENS_UNDER")


def _count(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        path = os.path.realpath(args[0])
        if path.startswith(_root + os.sep) and path.endswith(".dcm") and os.sep + "." not in path[len(_root):]:
            with open(_log, "a", encoding="utf-8") as log:
                log.write(f"{os.getpid()} {path}\\n")


if _log and _root:
    sys.addaudithook(_count)
"""


def test_a_check_reads_each_file_once_for_every_rendering(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    """The JSON, the text, the HTML page with its figures and the PDF of one check all come
    from one reading of the course: the figures are drawn from the workspace the rules
    measured in, once, in the worker that checked the course."""
    folder = course_dir("compliant", dose_spacing_mm=5.0)
    hook, opens = tmp_path / "hook", tmp_path / "opens.log"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_COUNT_OPENS, encoding="utf-8")
    storage = (tmp_path / "node" / "storage").resolve()
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "RTCHECK_TEST_OPENS_LOG": str(opens),
           "RTCHECK_TEST_OPENS_UNDER": str(storage)}  # fmt: skip
    node = Node(tmp_path / "node", "--report-to", f"STORESCP@127.0.0.1:{free_port()}", env=env)
    try:
        node.start()
        storescu(node.port, sorted(folder.glob("*.dcm")))
        wait_for(lambda: "event=report " in node.log(), "the report, its page and its PDF written")
    finally:
        node.stop()
    assert node.proc is not None
    (page,) = node.reports_of(plan_of(folder).PatientID, ".html")
    html = page.read_text(encoding="utf-8")
    assert html.count("data:image/svg+xml;base64,") >= 4 and 'class="missing"' not in html  # every figure drawn
    (dcm,) = node.reports_of(plan_of(folder).PatientID, ".dcm")
    assert encapsulated_pdf(pydicom.dcmread(dcm)).startswith(b"%PDF-")
    stored = sorted(str(p.resolve()) for p in storage.rglob("*.dcm") if ".instances" not in p.parts)
    assert len(stored) == 5
    in_workers: dict[str, int] = {}
    for line in opens.read_text(encoding="utf-8").splitlines():
        pid, opened = line.split(" ", 1)
        if int(pid) != node.proc.pid:  # the node itself reads headers to assemble courses, hashes for its ledger
            in_workers[opened] = in_workers.get(opened, 0) + 1
    assert in_workers == dict.fromkeys(stored, 1)


# --------------------------------------------------------------------------- building blocks, in this process


def test_queueing_is_exactly_once_across_crashes(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    """The three steps of queueing a report (stage, record, rename), cut short after each."""
    (course,) = find_courses([course_dir("compliant", dose_spacing_mm=5.0)])
    fingerprint, records, _ = course_fingerprint(course)
    ledger = Ledger(tmp_path / "reports")
    claim = ledger.claim("p", fingerprint, course, records, True)
    assert claim.dcm_path == claim.json_path.with_suffix(".dcm") and not claim.queued

    ledger.stage(claim, b"first run")  # crash before the record: the next start deletes the copy
    assert Ledger(tmp_path / "reports").release_staged() == (0, 1)
    assert not list(ledger.outbox.iterdir())

    (again,) = ledger.pending("p").values()  # the claim re-runs under the same names
    assert again == claim
    ledger.stage(again, b"second run")
    ledger.mark_queued(again)  # crash after the record: the next start queues that copy
    restarted = Ledger(tmp_path / "reports")
    assert restarted.release_staged() == (1, 0)
    assert [p.read_bytes() for p in ledger.outbox.iterdir()] == [b"second run"]
    assert [p.name for p in ledger.outbox.iterdir()] == [claim.queue_name]

    (resumed,) = restarted.pending("p").values()
    assert resumed.queued  # its re-run writes and stages nothing: only the ledger's done mark is owed
    assert restarted.release(resumed) == ledger.outbox / claim.queue_name
    restarted.finish(resumed, "per_protocol", None, dicom=True)
    assert restarted.is_done("p", fingerprint) and not restarted.pending("p")
    assert [p.read_bytes() for p in ledger.outbox.iterdir()] == [b"second run"]


def test_incomplete_course_report_is_filed_under_its_plan(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = tmp_path / "plan_only"
    folder.mkdir()
    for path in course_dir("compliant", dose_spacing_mm=5.0).glob("RP.*.dcm"):
        (folder / path.name).write_bytes(path.read_bytes())
    (course,) = find_courses([folder])
    outcome = run_check_job(CheckJob(course, False, None, None, dicom_report=True))
    assert outcome.report.verdict == "not_evaluable" and outcome.dicom_error is None and outcome.dicom is not None
    (tmp_path / "report.dcm").write_bytes(outcome.dicom)
    ds, plan = pydicom.dcmread(tmp_path / "report.dcm"), plan_of(folder)
    assert (ds.PatientID, ds.StudyInstanceUID) == (plan.PatientID, plan.StudyInstanceUID)
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID


def test_a_report_whose_pdf_cannot_be_made_keeps_its_json(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = tmp_path / "course"
    folder.mkdir()
    for path in course_dir("compliant", dose_spacing_mm=5.0).glob("*.dcm"):
        (folder / path.name).write_bytes(path.read_bytes())
    (course,) = find_courses([folder])
    plan = pydicom.dcmread(course.plans[0].path)
    del plan.StudyInstanceUID  # nowhere to file the report
    plan.save_as(course.plans[0].path)
    (course,) = find_courses([folder])
    outcome = run_check_job(CheckJob(course, True, None, None, dicom_report=True))
    assert outcome.dicom is None and "StudyInstanceUID" in (outcome.dicom_error or "")
    assert json.loads(outcome.report.json_text)["verdict"] == outcome.report.verdict


def test_a_report_whose_figures_killed_its_worker_keeps_its_verdict(
    tmp_path: Path, course_dir: Callable[..., Path]
) -> None:
    """The node renders the report the worker handed over, without figures and saying why,
    instead of checking the course a second time."""
    (course,) = find_courses([course_dir("peaks_overdosed_14gy", dose_spacing_mm=5.0)])
    job = CheckJob(course, True, None, None, dicom_report=True)
    checked = run_check_job(job).report
    outcome = outcome_without_figures(job, checked, "the figures could not be drawn: the worker died")
    assert outcome.report is checked and checked.verdict == "unacceptable_deviation"
    assert outcome.html is not None and "not drawn — the figures could not be drawn: the worker died" in outcome.html
    assert outcome.dicom is not None and outcome.dicom_error is None
    (tmp_path / "report.dcm").write_bytes(outcome.dicom)
    (tmp_path / "report.pdf").write_bytes(encapsulated_pdf(pydicom.dcmread(tmp_path / "report.dcm")))
    text = subprocess.run(
        ["pdftotext", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    words = " ".join(text.split())
    assert "the worker died" in words and "UNACCEPTABLE DEVIATION" in words.upper()


def _args(*argv: str) -> object:
    import argparse

    from rtcheck.node.config import add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_report_to_settings(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("storage: s\nreports: r\nae_title: QA\nreport_to: ARIA@10.1.2.4:104\nreport_retry_max: 30\n")
    settings = load_settings(_args("--config", str(config)))
    assert settings.report_to == Destination("ARIA", "10.1.2.4", 104) and settings.report_retry_max == 30
    assert settings.report_calling_ae_title == "QA"  # the node's own AE title by default
    given = load_settings(_args("--config", str(config), "--report-calling-ae", "QA_OUT"))
    assert given.report_calling_ae_title == "QA_OUT"
    assert load_settings(_args("--storage", "s", "--reports", "r")).report_to is None

    for bad, message in [
        ("ARIA-10.1.2.4:104", "report_to 'ARIA-10.1.2.4:104': .* is not AE@host:port"),
        ("ARIA@10.1.2.4:0", "report_to .*port 0 is not between"),
        ("A_TITLE_LONGER_THAN_16@host:104", "report_to .*not an AE title"),
    ]:
        with pytest.raises(SettingsError, match=message):
            load_settings(_args("--storage", "s", "--reports", "r", "--report-to", bad))
    with pytest.raises(SettingsError, match="report_calling_ae needs report_to"):
        load_settings(_args("--storage", "s", "--reports", "r", "--report-calling-ae", "QA"))

    result = subprocess.run(
        [sys.executable, "-m", "rtcheck", "serve", "--config", str(config), "--report-to", "ARIA@host"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 64 and "report_to 'ARIA@host'" in result.stderr
