"""When each received course is checked: the node's scheduler and its worker processes."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable import atomic_write
from ..reports.recent import INDEX_PAGE, RecentChecks
from ..send import Outbox
from .config import ServeSettings
from .events import LOG, log_event
from .handover import CheckedReport, ReportHandover
from .ledger import Claim, Ledger, course_fingerprint
from .store import ObjectStore, folder_state
from .worker import (
    CheckJob,
    CheckOutcome,
    failure_outcome,
    init_worker,
    outcome_without_figures,
    pool_works,
    run_check_job,
    write_report,
)

#: Retry delay after course assembly itself failed (unreadable folder, disk error, ...).
RETRY_S = 60.0


@dataclass
class _Job:
    """A check in a worker process, or its finished report waiting to be wanted.

    ``claim`` is None while the check is *early*: started as soon as the course was
    complete, before its quiet period ended. Its report is written only if the course
    is unchanged when the quiet period ends, or at once when a released association
    brought all of it (then the claim is made); otherwise it is dropped. So a report
    reaches the disk about max(quiet period, check time) after the last object instead of
    their sum, and the check time after such a release.

    ``checked`` is the report as the worker handed it over before drawing its figures
    (``token`` names that submission); ``written`` the time its JSON reached the disk,
    before the HTML page and the PDF (``outcome``) are done.
    """

    fingerprint: str
    job: CheckJob
    folder: Path
    newest: float
    claim: Claim | None = None
    token: int = 0
    checked: CheckedReport | None = None
    written: float | None = None
    outcome: CheckOutcome | None = None
    attempts: int = 1


class CheckScheduler:
    """Decides when each course is checked, and runs the checks in worker processes.

    Only this object's thread touches its state; other threads talk to it through a
    queue. Every decision is re-derived from disk (file mtimes, the ledger), so the
    in-memory state is a cache a restart can lose.
    """

    def __init__(
        self, store: ObjectStore, ledger: Ledger, settings: ServeSettings, outbox: Outbox | None = None
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.settings = settings
        self.outbox = outbox
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._due: dict[Path, float] = {}
        #: Per patient, the files of each association released since its courses were last examined.
        self._released: dict[Path, list[frozenset[Path]]] = {}
        self._jobs: dict[str, _Job] = {}
        self._recent = RecentChecks(ledger.reports)
        self._tokens = itertools.count(1)
        self._executor, self._handover = self._new_executor()
        self._thread = threading.Thread(target=self._run, name="rtcheck-checks", daemon=True)

    def _new_executor(self) -> tuple[concurrent.futures.ProcessPoolExecutor, ReportHandover]:
        """A pool of worker processes, and the pipe its workers hand checked reports over on.

        spawn: the node is multi-threaded, and forking a threaded process is unsafe.
        Workers are recycled now and then so a long-running node does not grow; each
        imports the checker and reads the protocol as it starts (:func:`init_worker`).
        """
        context = multiprocessing.get_context("spawn")
        handover = ReportHandover(context, lambda checked: self._queue.put(("checked", checked)))
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.settings.workers,
            mp_context=context,
            max_tasks_per_child=200,
            initializer=init_worker,
            initargs=(os.getpid(), handover.end, self.settings.protocol, self.settings.report_to is not None),
        )
        return executor, handover

    def start(self) -> None:
        for _ in range(self.settings.workers):  # a pool starts its workers on demand: now, before any course
            self._executor.submit(pool_works)
        now = time.time()
        owed = 0
        for folder in self.store.patient_folders():
            if self.ledger.resolved_state(folder.name) != list(folder_state(folder)):
                self._due[folder] = now
                owed += 1
        log_event(logging.INFO, "startup_scan", patients=len(self.store.patient_folders()), to_examine=owed)
        self._update_index()  # whatever a crash left of it, the page matches the reports on disk
        self._thread.start()

    def touch(self, folder: Path, *, released: frozenset[Path] | None = None) -> None:
        """An association stored objects of this patient: look at its courses again.

        ``released``: the files of this patient it stored, when the sender ended it with an
        A-RELEASE (it has sent what it meant to send). A complete course whose every file
        came in that association is then checked and reported without the quiet period,
        which stays for courses that arrive otherwise: spread over several associations
        (more may be on the way), or in one that was aborted or cut.
        """
        self._queue.put(("touch", (folder, released)))

    def stop(self) -> None:
        """Finish the checks already running; checks not started stay owed on disk."""
        self._queue.put(("stop", None))
        self._thread.join()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._handover.close(wait=True)  # every report handed over is in the queue now
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "checked":
            self._safely(self._checked, payload)
        elif kind == "done":
            self._safely(self._finished, *payload)

    def _safely(self, action: Any, *args: Any) -> None:
        """Run ``action``; a bug in it is logged, and never stops this thread (the node's checks)."""
        try:
            action(*args)
        except Exception:
            LOG.exception("internal error in the check scheduler")

    def _run(self) -> None:
        while True:
            now = time.time()
            wait = min((t - now for t in self._due.values()), default=60.0)
            try:
                kind, payload = self._queue.get(timeout=min(max(wait, 0.0), 60.0))
            except queue.Empty:
                kind, payload = "", None
            while kind:
                if kind == "stop":
                    return
                if kind == "touch":
                    folder, released = payload
                    self._due[folder] = time.time()
                    if released:
                        self._released.setdefault(folder, []).append(released)
                else:
                    self._handle(kind, payload)
                try:
                    kind, payload = self._queue.get_nowait()
                except queue.Empty:
                    kind = ""
            now = time.time()
            for folder in [f for f, t in self._due.items() if t <= now]:
                del self._due[folder]
                try:
                    self._evaluate(folder)
                except Exception:
                    LOG.exception("cannot examine %s; retrying in %.0f s", folder, RETRY_S)
                    self._due[folder] = time.time() + RETRY_S

    def _evaluate(self, folder: Path) -> None:
        """Check every course of one patient that is due; note when the others will be."""
        from ..assembly import find_courses

        key = folder.name
        releases = self._released.pop(folder, [])
        state = folder_state(folder)
        rt_folders = self.store.rt_folders(folder)
        courses = find_courses(rt_folders) if rt_folders else []
        pending = self.ledger.pending(key)
        now = time.time()
        next_due: float | None = None
        unresolved = False
        live: set[str] = set()
        for course in courses:
            try:
                newest = max(p.stat().st_mtime_ns for p in course.files) / 1e9
            except (FileNotFoundError, ValueError):  # replaced while we looked: look again soon
                next_due, unresolved = _earliest(next_due, now + self.settings.quiet_period), True
                continue
            wait = self.settings.quiet_period if course.complete else self.settings.incomplete_timeout
            sent_whole = course.complete and any(set(course.files) <= files for files in releases)
            due = sent_whole or now >= newest + wait
            if not due:
                next_due, unresolved = _earliest(next_due, newest + wait), True
                if not course.complete:
                    continue  # an incomplete course may still grow: nothing to start yet
            fingerprint, records, _ = course_fingerprint(course)
            live.add(fingerprint)
            if self.ledger.is_done(key, fingerprint):
                continue
            unresolved = True
            job = self._jobs.get(fingerprint)
            if job is None:
                job = _Job(fingerprint, self._check_job(course), folder, newest)
                self._start(job)
                log_event(
                    logging.INFO,
                    "check_started",
                    patient_id=course.patient_id,
                    plans="+".join(course.plan_labels),
                    complete="yes" if course.complete else "no",
                    missing="; ".join(course.missing) or None,
                    early="yes" if not due else None,
                    resumed="yes" if fingerprint in pending else None,
                )
            if due and job.claim is None:
                job.claim = pending.get(fingerprint) or self.ledger.claim(
                    key, fingerprint, course, records, course.complete
                )
                if job.outcome is not None:
                    self._complete(job)
                elif job.checked is not None:
                    self._write_json(job)
        for fingerprint, job in list(self._jobs.items()):
            if job.folder == folder and job.claim is None and fingerprint not in live:
                del self._jobs[fingerprint]  # more objects arrived: that early check is moot
                log_event(logging.INFO, "check_dropped", reason="the course changed before its quiet period ended")
        for fingerprint, claim in pending.items():
            if fingerprint not in live and fingerprint not in self._jobs:
                self.ledger.drop(claim)  # that export was superseded before its report existed
        if not unresolved and not any(j.folder == folder for j in self._jobs.values()):
            self.ledger.mark_resolved(key, state)
        if next_due is not None:
            self._due[folder] = min(self._due.get(folder, next_due), next_due)

    def _check_job(self, course: Any) -> CheckJob:
        s = self.settings
        return CheckJob(
            course=course,
            complete=course.complete,
            protocol_path=s.protocol,
            arm=s.arm,
            dicom_report=s.report_to is not None,
        )

    def _start(self, job: _Job) -> None:
        self._jobs[job.fingerprint] = job
        job.token, job.checked = next(self._tokens), None
        try:
            future = self._executor.submit(run_check_job, job.job, job.token)
        except BrokenProcessPool:  # a worker died while idle (OOM killer, operator): new pool
            self._replace_broken_executor()
            future = self._executor.submit(run_check_job, job.job, job.token)
        future.add_done_callback(lambda f: self._queue.put(("done", (job, f))))

    def _checked(self, checked: CheckedReport) -> None:
        """A worker handed over a report before drawing its figures: write it if it is wanted."""
        job = next((j for j in self._jobs.values() if j.token == checked.token), None)
        if job is None or job.outcome is not None:
            return  # dropped meanwhile, or finished already (the whole outcome came first)
        job.checked = checked
        if job.claim is not None:
            self._write_json(job)

    def _write_json(self, job: _Job) -> None:
        """Write the JSON and text reports of a claimed check, before its page and PDF exist."""
        assert job.claim is not None and job.checked is not None
        if job.written is not None or job.claim.queued:
            return  # a claim re-run after a crash that had queued its copy keeps what it wrote
        try:
            write_report(job.claim, job.checked)
        except OSError as exc:  # disk full, permissions: the claim stays owed, try again later
            del self._jobs[job.fingerprint]
            log_event(logging.ERROR, "report_failed", report=job.claim.json_path, reason=exc, retry_s=RETRY_S)
            self._due[job.folder] = time.time() + RETRY_S
            return
        job.written = time.time()
        self._update_index()

    def _finished(self, job: _Job, future: concurrent.futures.Future[CheckOutcome]) -> None:
        if self._jobs.get(job.fingerprint) is not job:
            return  # dropped meanwhile
        try:
            job.outcome = future.result()
        except concurrent.futures.CancelledError:
            del self._jobs[job.fingerprint]  # shutting down: a claim stays owed on disk
            return
        except BrokenProcessPool:
            if job.checked is None and job.attempts == 1:
                # Some check killed its worker (and with it every check in flight): retry once.
                log_event(logging.ERROR, "worker_died", fingerprint=job.fingerprint[:12], action="retrying")
                self._replace_broken_executor()
                job.attempts += 1
                self._start(job)
                return
            died = "while drawing the figures" if job.checked is not None else "twice"
            log_event(logging.ERROR, "worker_died", fingerprint=job.fingerprint[:12], action="reporting")
            job.outcome = self._made_here(job, f"the check's worker process died {died}")
        except Exception as exc:  # the worker could not even return a report: say so in one
            LOG.exception("check of %s failed", job.fingerprint[:12])
            job.outcome = self._made_here(job, f"{type(exc).__name__}: {exc}")
        if job.claim is not None:
            self._complete(job)

    def _made_here(self, job: _Job, reason: str) -> CheckOutcome:
        """The outcome of a check whose worker returned none, made in the node: the report the
        worker handed over, rendered without figures; else a not-evaluable report saying why."""
        if job.checked is not None:
            return outcome_without_figures(job.job, job.checked, f"the figures could not be drawn: {reason}")
        return failure_outcome(job.job, job.token, reason)

    def _complete(self, job: _Job) -> None:
        """Write the report of a claimed, finished check, its page, queue its DICOM copy, and
        record it in the ledger (in that order: a crash anywhere re-runs the claim, see ``_write``)."""
        assert job.claim is not None and job.outcome is not None
        claim, outcome = job.claim, job.outcome
        if job.checked is None:
            job.checked = outcome.report  # the whole outcome came before the handover, or without one
        self._write_json(job)
        if self._jobs.get(job.fingerprint) is not job:
            return  # the JSON could not be written: retried later
        del self._jobs[job.fingerprint]
        try:
            queued = self._write(claim, outcome)
        except OSError as exc:  # disk full, permissions: the claim stays owed, try again later
            log_event(logging.ERROR, "report_failed", report=claim.json_path, reason=exc, retry_s=RETRY_S)
            self._due[job.folder] = time.time() + RETRY_S
            return
        self.ledger.finish(claim, outcome.report.verdict, outcome.report.error, dicom=queued is not None)
        written = job.written if job.written is not None else time.time()
        log_event(
            logging.ERROR if outcome.report.error else logging.INFO,
            "report",
            verdict=outcome.report.verdict,
            path=claim.json_path.relative_to(self.ledger.reports),
            html=claim.html_path.name if outcome.html is not None else None,
            dicom=claim.dcm_path.name if queued is not None else None,
            queued=queued.name if queued is not None else None,
            check_s=f"{outcome.report.seconds:.2f}",
            render_s=f"{outcome.render_seconds:.2f}",
            since_last_object_s=f"{written - job.newest:.2f}",
            error=outcome.report.error,
        )
        if outcome.html_error:
            log_event(logging.ERROR, "report_html_failed", path=claim.html_path.name, reason=outcome.html_error)
        if outcome.dicom_error and queued is None:
            log_event(logging.ERROR, "report_dicom_failed", path=claim.json_path.name, reason=outcome.dicom_error)
        self._update_index()
        self._due[job.folder] = time.time()  # look again: new objects, or all resolved

    def _update_index(self) -> None:
        """Rewrite the page of recent checks from the reports on disk, atomically.

        A page that cannot be written is logged and left for the next report: the reports
        themselves are what the node owes.
        """
        try:
            atomic_write(self.ledger.reports / INDEX_PAGE, self._recent.render().encode("utf-8"))
        except OSError as exc:
            log_event(logging.ERROR, "index_failed", page=INDEX_PAGE, reason=exc)

    def _write(self, claim: Claim, outcome: CheckOutcome) -> Path | None:
        """Write the report's page and DICOM file (its JSON and text are on disk already) and
        queue its DICOM copy exactly once; returns the queued file.

        A claim re-run after a crash that had already recorded its copy as queued keeps the
        files it wrote then (the ``.dcm`` on disk is the one sent) and only finishes the queueing.
        A page that cannot be written is logged: the JSON and text reports stand without it.
        """
        if not claim.queued:
            if outcome.html is not None:
                try:
                    atomic_write(claim.html_path, outcome.html.encode("utf-8"))
                except OSError as exc:
                    log_event(logging.ERROR, "report_html_failed", path=claim.html_path.name, reason=exc)
            if outcome.dicom is None:
                return None
            atomic_write(claim.dcm_path, outcome.dicom)
            self.ledger.stage(claim, outcome.dicom)
            claim = self.ledger.mark_queued(claim)
        queued = self.ledger.release(claim)
        if self.outbox is not None:
            self.outbox.wake()
        return queued

    def _replace_broken_executor(self) -> None:
        """Start a new worker pool if the current one is broken (several failures share one pool)."""
        try:
            self._executor.submit(pool_works)
        except BrokenProcessPool:
            log_event(logging.WARNING, "worker_pool_restarted")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._handover.close(wait=False)  # its thread ends once the old workers are gone
            self._executor, self._handover = self._new_executor()


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)
