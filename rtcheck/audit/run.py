"""``rtcheck audit``: protocol compliance across the centres of a trial, for trial QA.

::

    rtcheck audit SUBMISSIONS/ --out audit/ --centre-level 1

walks the submission folders (any layout, CT slices and all), indexes every file header
only, assembles every course exactly as ``rtcheck check`` does, checks each course against
the protocol (in parallel: ``-j N``, default all cores; or on a Dask cluster:
``--scheduler tcp://host:8786``) and writes, in ``--out``:

``reports/<pseudonym>/<course>.json``
    the JSON report of each course (as ``rtcheck check --format json`` gives it, scrubbed);
``courses.csv``
    one row per course: centre, how the centre was decided, pseudonymous patient, course,
    arm, verdict, and per rule ``<rule>.status`` and ``<rule>.value_<unit>``;
``summary.json``
    compliance by centre (counts and rates of per protocol / acceptable variation /
    unacceptable deviation / not evaluable), the rules that fail most (and at which
    centres), and the distribution of every measured value by centre;
``summary.html``
    the same for people, self-contained (inline CSS and SVG figures);
``audit.sqlite``
    the results database that makes the audit incremental and resumable;
``pseudonym.key``
    the key of the patient pseudonyms, when ``--pseudonym-key`` is not given (mode 0600;
    keep it with the audit, and keep it secret: it is what links a pseudonym to a patient id).

Which centre a course comes from
--------------------------------
Decided per course from its (first) RT Plan file, the first rule that applies winning:

1. ``--centres FILE.csv``, a ``patient_id`` row: the course's DICOM PatientID is mapped to
   a centre;
2. ``--centres FILE.csv``, a ``path_prefix`` row: the plan file lies below that prefix
   (relative to ROOT, ``/``-separated, whole folder names; with several ROOTs start it with
   the ROOT's folder name; an absolute path also works). The longest matching prefix wins;
3. ``--centre-level N``: the N-th folder below ROOT names the centre (``1``: the folders
   directly in ROOT, as in ``ROOT/<centre>/<patient>/...``);
4. the InstitutionName (0008,0080) of the course's files;
5. ``unknown``.

The centres CSV has a header line with a ``centre`` column and a ``path_prefix`` and/or
``patient_id`` column; every data line gives a centre and a prefix or a patient id (lines
starting with ``#`` are comments)::

    path_prefix,patient_id,centre
    incoming/hospital-a,,Hospital A
    incoming/uni-b/2024,,University B
    ,MRN0042,Hospital A

``courses.csv`` says for each course which of these rules decided (``centre_source``:
``patient_id``, ``path_prefix``, ``folder_level``, ``institution_name`` or ``unknown``).

Incremental and resumable
-------------------------
Each result is stored under the SHA-256 of the course's files' contents, the protocol's
hash and rtcheck's version, and committed as soon as the course is checked. Running the
same command again checks only what is new or changed (and what failed for a reason of
rtcheck's own, not of the files); an audit that was interrupted, even killed, resumes
where it stopped. ``--recheck`` checks everything again. A course that cannot be read is a
recorded result (not evaluable, with the reason), never the end of the audit; a course
missing a file gets the not-evaluable report of an incomplete course.

Privacy
-------
No output holds a patient name or an original patient id: the patient id becomes
``pt-`` + 16 hex digits of HMAC-SHA256 with the audit's key (the same patient has the same
pseudonym in every run with that key), names are removed, file paths are written relative
to ROOT, and any patient id or name in a path or message is replaced. The database holds
only scrubbed reports; its cache of file hashes is keyed by a keyed hash of each path.
An audit folder refuses a different key than the one it was made with.

On a Dask cluster
-----------------
``--scheduler ADDRESS`` sends the checking to an existing Dask distributed scheduler
(``pip install "rtcheck[cluster]"``). Its workers need rtcheck installed and must see the
submission files at the same paths (a shared file system); discovery, hashing and the
outputs stay on this machine, which also keeps the database.

The exit code is that of the worst course, as for ``rtcheck check``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .._version import __version__
from ..api import error_report, incomplete_report, load_protocol
from ..assembly import CourseFiles
from ..dicomio import UnreadableFile
from ..durable import atomic_write, make_folders
from ..errors import ExitCode, InputError, RtcheckError
from ..protocol import Protocol
from ..report import Status, worst
from ..settings import Settings
from ..terminal import configure_logging, printable
from .db import AuditDatabase, StoredResult, now
from .discovery import (
    AuditCourse,
    CentreMap,
    Discovery,
    Root,
    content_hashes,
    find_submissions,
    list_files,
    load_centres_csv,
    make_roots,
    root_of,
)
from .executors import DaskExecutor, Executor, PoolExecutor, SerialExecutor, default_jobs
from .html import render_html
from .privacy import PseudonymKey, Scrubber, load_or_create_key, scrubber_for
from .summary import (
    AuditRow,
    centre_order,
    courses_csv,
    metric_values,
    rule_columns,
    summarise,
)
from .work import check_one

__all__ = ["DESCRIPTION", "add_audit_arguments", "run_audit"]

#: One line for ``--help`` and the subcommand list.
#: How a submission nothing of which could be read is named in the outputs.
UNREADABLE_PREFIX = "unreadable-"

DESCRIPTION = "Protocol compliance across the centres of a trial: check every submitted course, summarise by centre."


class AuditUsageError(RtcheckError):
    """The audit's options do not fit together (or another audit holds the folder)."""

    exit_code = ExitCode.USAGE_ERROR


class AuditSettings(Settings):
    """What ``rtcheck audit`` is asked to do: the command line over ``--config FILE`` (YAML)."""

    roots: list[Path] = Field(default_factory=list, description="submission folders (walked recursively)")
    out: Path = Field(description="output folder (created if needed)")
    protocol: Path | None = Field(None, description="protocol YAML (default: the bundled trial protocol)")
    centres: Path | None = Field(None, description="CSV mapping path_prefix and/or patient_id to centre")
    centre_level: int | None = Field(
        None, ge=1, description="the N-th folder below ROOT names the centre (1 = top level)"
    )
    jobs: int | None = Field(None, ge=1, description="worker processes for indexing and checking (default: all cores)")
    scheduler: str | None = Field(None, description="check on this Dask distributed scheduler (e.g. tcp://host:8786)")
    recheck: bool = Field(False, description="check every course again, ignoring stored results")
    no_progress: bool = Field(False, description="no progress bar")
    pseudonym_key: Path | None = Field(
        None,
        description="file holding the secret key of the patient pseudonyms (default: DIR/pseudonym.key, made once)",
    )
    headline_rules: list[str] | None = Field(
        None,
        description="comma-separated rule ids (glob patterns) plotted by centre (default: the protocol's "
        "report.headline_rules)",
    )

    @field_validator("headline_rules", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_roots(self) -> AuditSettings:
        if not self.roots:
            raise ValueError("no submission folder: give ROOT on the command line or roots in the config file")
        return self


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rtcheck audit``: one per :class:`AuditSettings` field, and ``--config``."""

    def option(group: argparse._ActionsContainer, name: str, *flags: str, **kwargs: Any) -> None:
        field = AuditSettings.model_fields[name]
        group.add_argument(*flags, dest=name, default=None, help=field.description, **kwargs)

    parser.add_argument(
        "roots", nargs="*", type=Path, metavar="ROOT", help=AuditSettings.model_fields["roots"].description
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML file with these settings (options given here win)"
    )
    option(parser, "out", "--out", type=Path, metavar="DIR")
    option(parser, "protocol", "--protocol", type=Path)
    centre = parser.add_argument_group("centres (first match wins: CSV patient_id, CSV path_prefix, level, DICOM)")
    option(centre, "centres", "--centres", type=Path, metavar="FILE.csv")
    option(centre, "centre_level", "--centre-level", type=int, metavar="N")
    run = parser.add_argument_group("running")
    option(run, "jobs", "-j", "--jobs", type=int, metavar="N")
    option(run, "scheduler", "--scheduler", metavar="ADDRESS")
    option(run, "recheck", "--recheck", action="store_true")
    option(run, "no_progress", "--no-progress", action="store_true")
    run.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    out = parser.add_argument_group("outputs")
    option(out, "pseudonym_key", "--pseudonym-key", type=Path, metavar="FILE")
    option(out, "headline_rules", "--headline-rules", metavar="PATTERNS")


# --------------------------------------------------------------------------- progress


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed * 60:,.0f} {task.fields.get('unit', '')}/min" if speed else "", style="cyan")


class _Progress:
    """A rich progress display on a terminal, nothing otherwise."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
            )
            if enabled
            else None
        )

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int, unit: str) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, unit=unit, note="")

    def advance(self, task: TaskID | None, n: int = 1, note: str | None = None) -> None:
        if self._progress is not None and task is not None:
            if note is None:
                self._progress.advance(task, n)
            else:
                self._progress.update(task, advance=n, note=note)


# --------------------------------------------------------------------------- the audit


@dataclass
class _Course:
    """A course of this run: where it is, what its result is stored under, how it is named."""

    found: AuditCourse
    key: str
    pseudonym: str
    name: str
    scrubber: Scrubber
    problem: str = ""  # a file of the course could not be hashed, or nothing of it could be read
    error_kind: str = "internal"  # of ``problem``: "input" when trying again cannot help

    @property
    def report_path(self) -> str:
        return f"reports/{self.pseudonym}/{self.name}.json"


def _safe_name(text: str, limit: int = 80) -> str:
    """File-name-safe text (letters, digits, ``.``, ``_``, ``-``, ``+``)."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._+-") else "_" for ch in text)
    return cleaned.strip("._")[:limit] or "course"


def _result_key(course: AuditCourse, hashes: dict[Path, str], protocol: Protocol) -> str:
    """SHA-256 of what decides the result: file contents, protocol, rtcheck version."""
    digest = sha256(f"rtcheck audit|{__version__}|{protocol.sha256}|{course.files.complete}\n".encode())
    for h in sorted(hashes[p] for p in course.files.files):
        digest.update(h.encode() + b"\n")
    # What could not be read decides too: once it can be, the course is checked again.
    for line in sorted(course.files.unreadable):
        digest.update(b"unreadable\0" + line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _write(path: Path, text: str) -> None:
    """Write atomically and durably: a reader (or a killed audit) never sees half a file."""
    make_folders(path.parent)
    atomic_write(path, text.encode("utf-8"))


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One audit at a time per output folder (where the OS offers file locks)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with (out / ".audit.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditUsageError(f"{out}: another rtcheck audit is running in this folder") from None
        yield


@dataclass(frozen=True)
class _Settings:
    """The settings made ready to run: folders, protocol and centre map read and checked."""

    roots: list[Root]
    out: Path
    protocol: Protocol
    centres: CentreMap
    headline: list[str]
    jobs: int
    recheck: bool

    @classmethod
    def prepare(cls, settings: AuditSettings) -> _Settings:
        roots = make_roots(settings.roots)
        out = settings.out.expanduser().resolve()
        for root in roots:
            if out.is_relative_to(root.path):
                raise AuditUsageError(f"--out {settings.out} lies inside the submission folder {root.path}")
        prefixes, patients = load_centres_csv(settings.centres) if settings.centres else ([], {})
        protocol = load_protocol(settings.protocol)
        headline = settings.headline_rules
        return cls(
            roots=roots,
            out=out,
            protocol=protocol,
            centres=CentreMap(level=settings.centre_level, prefixes=prefixes, patients=patients),
            headline=list(protocol.report.headline_rules) if headline is None else headline,
            jobs=settings.jobs if settings.jobs is not None else default_jobs(),
            recheck=settings.recheck,
        )

    @property
    def root_prefixes(self) -> list[tuple[str, str]]:
        """What the scrubber replaces each root's absolute prefix with."""
        return [(r.prefix, f"{r.label}/" if r.label else "") for r in self.roots]


def run_audit(args: argparse.Namespace) -> int:
    """Run ``rtcheck audit`` (options of :func:`add_audit_arguments`); the exit code of the worst course."""
    started = time.perf_counter()
    given = AuditSettings.from_args(args, args.config)
    settings = _Settings.prepare(given)
    make_folders(settings.out)
    console = Console(stderr=True)
    with _exclusive(settings.out):
        key = load_or_create_key(settings.out, given.pseudonym_key)
        db = AuditDatabase.open(settings.out, key.fingerprint)
        local: Executor = PoolExecutor(settings.jobs) if settings.jobs > 1 else SerialExecutor()
        checker: Executor = local
        try:
            if given.scheduler:
                checker = DaskExecutor(given.scheduler)
            with _Progress(console, not given.no_progress and console.is_terminal) as progress:
                audit = _Audit(settings, key, db, local, checker, progress, started)
                exit_code = audit.run()
        finally:
            local.close()
            if checker is not local:
                checker.close()
            db.close()
    _print_summary(audit.result_rows, audit.run_info, settings.out)
    return exit_code


class _Audit:
    """One run of the audit: discover, plan, check what is new, write the outputs."""

    def __init__(
        self,
        settings: _Settings,
        key: PseudonymKey,
        db: AuditDatabase,
        local: Executor,
        checker: Executor,
        progress: _Progress,
        started: float,
    ) -> None:
        self.s = settings
        self.key = key
        self.db = db
        self.local = local
        self.checker = checker
        self.progress = progress
        self.started = started
        self.seconds: dict[str, float] = {}
        self.result_rows: list[AuditRow] = []
        self.run_info: dict[str, Any] = {}

    def run(self) -> int:
        run_id = self.db.start_run(self.s.protocol.sha256, __version__, self.checker.name)
        started_at = now()
        t = time.perf_counter()
        discovery = self.discover()
        self.seconds["discovery"] = time.perf_counter() - t
        t = time.perf_counter()
        courses = self.plan(discovery)
        self.seconds["hashing"] = time.perf_counter() - t
        t = time.perf_counter()
        checked = self.check(courses, run_id)
        self.seconds["checking"] = time.perf_counter() - t
        run: dict[str, Any] = {
            "run_id": run_id,
            "started": started_at,
            "finished": "",
            "rtcheck_version": __version__,
            "executor": self.checker.name,
            "jobs": self.s.jobs,
            "courses": len(courses),
            "checked": sum(c.key in checked for c in courses),
            "reused": sum(c.key not in checked for c in courses),
            "files": discovery.files,
            "skipped_files": discovery.skipped,
            "not_dicom_files": discovery.not_dicom,
            "unreadable_files": len(discovery.unreadable),
            "seconds": self.seconds,
        }
        rows = self.rows(courses)
        exit_code = self.write_outputs(rows, discovery, run)
        self.db.finish_run(
            run_id,
            courses=len(courses),
            checked=run["checked"],
            reused=run["reused"],
            errors=sum(r.outcome == "error" for r in rows),
        )
        self.result_rows, self.run_info = rows, run
        return exit_code

    def discover(self) -> Discovery:
        unlisted: list[UnreadableFile] = []
        files = list_files(self.s.roots, unlisted)
        task = self.progress.task("Indexing", len(files), "files")
        found = find_submissions(
            self.s.roots,
            files,
            self.s.centres,
            self.local,
            self.s.jobs,
            lambda n: self.progress.advance(task, n),
            unlisted,
        )
        if not found.courses and not found.unreadable:
            where = ", ".join(str(r.path) for r in self.s.roots)
            raise InputError(None, f"no RTPLAN found below {where} ({len(files)} files looked at)")
        return found

    def plan(self, discovery: Discovery) -> list[_Course]:
        """Hash every course's files (from the cache when unchanged) and name its result."""
        paths = [p for c in discovery.courses for p in c.files.files]
        hashes, new_rows, problems = content_hashes(
            paths, self.db.file_hashes(), self.key.digest, self.local, self.s.jobs
        )
        self.db.store_file_hashes(new_rows)
        courses = []
        for found in discovery.courses:
            cf = found.files
            entries = [*cf.plans, *([cf.structure_set] if cf.structure_set else []), *cf.doses]
            scrubber = scrubber_for(self.key, self.s.root_prefixes, {(f.patient_id, f.patient_name) for f in entries})
            labels = "+".join(scrubber.text(label) for label in cf.plan_labels)
            name = f"{_safe_name(labels, 60)}-{sha256(cf.key.encode()).hexdigest()[:8]}"
            bad = [p for p in cf.files if p in problems]
            if bad:
                problem = "; ".join(f"{p}: {problems[p]}" for p in bad)
                result_key = self.key.digest("unhashable|" + "|".join(sorted(str(p) for p in cf.files)))
            else:
                problem, result_key = "", _result_key(found, hashes, self.s.protocol)
            courses.append(_Course(found, result_key, self.key.pseudonym(cf.patient_id), name, scrubber, problem))
        return courses + self.unreadable_submissions(discovery)

    def unreadable_submissions(self, discovery: Discovery) -> list[_Course]:
        """What could not be read and lies in no course's folder, as not-evaluable courses.

        One per folder: a patient folder that cannot be listed, or whose plan cannot be
        opened, is most likely one course nobody can check, and it must count against its
        centre instead of vanishing. Nothing of it could be read, so neither its patient id
        nor its name is known to the scrubber: it is named by a keyed hash of its folder
        only, and its message holds no path.
        """
        by_folder: dict[Path, list[tuple[str, UnreadableFile]]] = {}
        for centre, item in discovery.unreadable:
            by_folder.setdefault(item.path.parent, []).append((centre, item))
        out = []
        for folder, items in sorted(by_folder.items()):
            root = root_of(self.s.roots, items[0][1].path)
            centre, source = items[0][0], "folder_level" if self.s.centres.level else "unknown"
            pseudonym = UNREADABLE_PREFIX + self.key.digest(str(folder))[:16]
            problems = sorted({_pathless(item) for _, item in items})
            problem = f"{len(items)} file(s) or folder(s) could not be read: {'; '.join(problems)}"
            files = CourseFiles(plans=[], structure_set=None, doses=[], unreadable=[problem])
            key = self.key.digest("unreadable|" + "|".join(sorted(f"{i.path}|{i.problem}" for _, i in items)))
            found = AuditCourse(files, root, centre, source, "")
            scrubber = Scrubber(self.s.root_prefixes)
            out.append(_Course(found, key, pseudonym, "unreadable", scrubber, problem, error_kind="input"))
        return out

    def check(self, courses: list[_Course], run_id: int) -> set[str]:
        """Check every course without a standing result; returns the keys checked."""
        final = set() if self.s.recheck else self.db.final_keys()
        todo: dict[str, _Course] = {}
        for c in courses:
            if c.key not in final:
                todo.setdefault(c.key, c)  # the same files twice (a copied submission): once
        task = self.progress.task("Checking", len(todo), "courses")
        tally = {"deviations": 0, "errors": 0}

        def record(course: _Course, outcome: dict[str, Any]) -> None:
            result = self.store(course, outcome, run_id)
            tally["errors"] += result.outcome == "error"
            tally["deviations"] += result.verdict == Status.UNACCEPTABLE_DEVIATION.value
            self.progress.advance(task, 1, f"deviations {tally['deviations']} · unreadable {tally['errors']}")

        to_check = []
        for c in todo.values():
            if c.problem:
                record(c, {"outcome": "error", "error_kind": c.error_kind, "error": c.problem})
            elif not c.found.files.complete:
                record(c, {"outcome": "incomplete"})
            else:
                to_check.append(c)
        runner = self.checker if len(to_check) > 1 or self.checker is not self.local else SerialExecutor()
        for i, outcome in runner.map_unordered(check_one, [c.found.files for c in to_check], self.s.protocol):
            if isinstance(outcome, BaseException):  # the machinery failed, not the course: tried again next run
                outcome = {
                    "outcome": "error",
                    "error_kind": "internal",
                    "error": f"{type(outcome).__name__}: {outcome}",
                }
            record(to_check[i], outcome)
        return set(todo)

    def store(self, course: _Course, outcome: dict[str, Any], run_id: int) -> StoredResult:
        """Scrub one outcome, commit it, and write its report file."""
        protocol = self.s.protocol
        if outcome["outcome"] == "report":
            report, error = outcome["report"], ""
        elif outcome["outcome"] == "incomplete":
            report, error = incomplete_report(course.found.files, protocol).model_dump(mode="json"), ""
        else:
            error = outcome["error"]
            report = error_report(course.found.files, protocol, error).model_dump(mode="json")
        data = course.scrubber.data(report)
        data["patient_id"], data["patient_name"] = course.pseudonym, ""
        text = json.dumps(data, ensure_ascii=False, indent=1)
        result = StoredResult(
            result_key=course.key,
            course_key=course.found.files.key,
            patient=course.pseudonym,
            course_name=course.name,
            outcome=outcome["outcome"],
            error_kind=outcome.get("error_kind"),
            error=course.scrubber.text(error) or None,
            verdict=str(data["verdict"]),
            arm=(data.get("arm") or {}).get("arm"),
            report_json=text,
            checked_at=now(),
            duration_s=outcome.get("duration_s"),
            worker=outcome.get("worker"),
            run_id=run_id,
        )
        self.db.put(result)
        _write(self.s.out / course.report_path, text)
        return result

    def rows(self, courses: Sequence[_Course]) -> list[AuditRow]:
        stored = {r.result_key: r for r in self.db.results(c.key for c in courses)}
        rows = []
        for c in courses:
            result = stored[c.key]
            path = self.s.out / c.report_path
            if not path.exists():  # deleted, or the result came from a copy of the same files
                _write(path, result.report_json)
            rows.append(
                AuditRow(
                    centre=c.scrubber.text(c.found.centre),
                    centre_source=c.found.centre_source,
                    patient=c.pseudonym,
                    course=c.name,
                    outcome=result.outcome,
                    error=result.error or "",
                    report=json.loads(result.report_json),
                    report_path=c.report_path,
                )
            )
        return rows

    def write_outputs(self, rows: list[AuditRow], discovery: Discovery, run: dict[str, Any]) -> int:
        """courses.csv, summary.json and summary.html; returns the exit code of the worst course."""
        t = time.perf_counter()
        unreadable: list[tuple[str, str, str]] = []
        orphans: list[str] = []
        if discovery.unreadable or discovery.orphans:
            everyone = scrubber_for(self.key, self.s.root_prefixes, discovery.patients)
            unreadable = [
                (
                    everyone.text(c),
                    UNREADABLE_PREFIX + self.key.digest(str(u.path.parent))[:16],
                    everyone.text(_pathless(u)),
                )
                for c, u in discovery.unreadable
            ]
            orphans = [everyone.text(o) for o in discovery.orphans]
        protocol = self.s.protocol
        _write(self.s.out / "courses.csv", courses_csv(rows, rule_columns(protocol, rows)))
        run["finished"] = now()
        summary = summarise(rows, protocol, run, unreadable, orphans, self.s.headline)
        page = render_html(summary, metric_values(rows), centre_order(rows))
        self.seconds["outputs"] = time.perf_counter() - t
        self.seconds["total"] = time.perf_counter() - self.started
        _write(self.s.out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False))
        _write(self.s.out / "summary.html", page)
        return int(ExitCode[worst([Status(r.verdict) for r in rows]).name])


def _print_summary(rows: Sequence[AuditRow], run: dict[str, Any], out: Path) -> None:
    centres = centre_order(rows)
    print(
        f"rtcheck audit: {len(rows)} course(s) from {len(centres)} centre(s); checked {run['checked']}, "
        f"reused {run['reused']} -> {printable(out / 'summary.html')}"
    )
    for centre in centres:
        mine = [r for r in rows if r.centre == centre]
        counts = {s: sum(r.verdict == s.value for r in mine) for s in Status}
        text = ", ".join(f"{n} {s.label}" for s, n in counts.items() if n)
        print(f"  {printable(centre)}: {len(mine)} course(s): {text}")
    unreadable = [r for r in rows if r.patient.startswith(UNREADABLE_PREFIX) or _has_unreadable(r)]
    if unreadable:
        print(
            f"rtcheck audit: warning: {len(unreadable)} course(s) hold files or folders that could not be read "
            "and are not evaluable (their pseudonyms are in courses.csv; `find ROOT ! -readable` lists them)",
            file=sys.stderr,
        )


def _has_unreadable(row: AuditRow) -> bool:
    return any(rule.get("id") == "course.inputs_readable" for rule in row.report.get("rules", []))


def _pathless(item: UnreadableFile) -> str:
    """What went wrong with an unreadable file or folder, without its path (which may name
    a patient the scrubber does not know)."""
    return item.problem.replace(str(item.path), "…")


def main(argv: Sequence[str] | None = None) -> int:
    """``rtcheck audit`` on its own (``python -m rtcheck.audit``)."""
    parser = argparse.ArgumentParser(prog="rtcheck audit", description=DESCRIPTION)
    add_audit_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.debug else logging.WARNING)
    try:
        return run_audit(args)
    except RtcheckError as exc:
        if args.debug:
            raise
        print(f"rtcheck audit: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
