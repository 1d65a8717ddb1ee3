"""rtcheck's stable Python API, for planning-system scripts and other programs.

    >>> import rtcheck
    >>> protocol = rtcheck.load_protocol()            # the bundled trial protocol
    >>> for course in rtcheck.find_courses(["export/"]):
    ...     report = rtcheck.check_course(course, protocol)
    ...     print(report.verdict, [r.id for r in report.rules if r.status != "per_protocol"])

Everything here keeps its name and signature across minor versions; the report's JSON
schema only ever gains fields (``Report.schema_version``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ._version import __version__
from .arms import part_name
from .assembly import CourseFiles, find_courses
from .engine import run_rules
from .errors import InputError
from .protocol import Protocol, aliases_beside, read_protocol, with_aliases
from .report import (
    ArmResult,
    InputFile,
    IntegrityFinding,
    PlanSummary,
    ProtocolRef,
    Report,
    RuleResult,
    Status,
    worst,
)
from .rules import validate_rule_params
from .rules.base import CheckContext
from .workspace import Workspace

__all__ = [
    "check_course",
    "check_paths",
    "check_workspace",
    "error_report",
    "find_courses",
    "incomplete_report",
    "load_protocol",
    "open_workspace",
]


def load_protocol(path: Path | str | None = None, aliases: Sequence[Path | str] = ()) -> Protocol:
    """Load and validate a protocol YAML.

    Every rule's check, unit and params are validated against the registered checks, so a
    typo fails here and not in a report.

    Parameters
    ----------
    path
        The protocol YAML; None for the bundled trial protocol.
    aliases
        Files of a centre's own structure names, added to the roles (after the aliases file
        beside the protocol, ``<name>.aliases.yaml``, when there is one).

    Returns
    -------
    Protocol
        The validated protocol, with the SHA-256 of its text (reports cite it).

    Raises
    ------
    ProtocolError
        A file cannot be read or is invalid; the message names the file, the YAML path and
        the line of the first problems found.
    """
    protocol = read_protocol(path, validate_rule_params)
    files = [aliases_beside(Path(protocol.path)), *(Path(a) for a in aliases)]
    files = [f for i, f in enumerate(files) if (i > 0 or f.is_file()) and f not in files[:i]]
    return with_aliases(protocol, files) if files else protocol


def _protocol_ref(protocol: Protocol) -> ProtocolRef:
    return ProtocolRef(
        name=protocol.protocol.name,
        version=protocol.protocol.version,
        sha256=protocol.sha256,
        path=protocol.path,
        alias_files=protocol.alias_files,
        references=protocol.references,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _counts(rules: list[RuleResult]) -> dict[str, int]:
    return {s.value: sum(1 for r in rules if r.status is s) for s in Status}


def check_course(
    course_files: CourseFiles, protocol: Protocol, arm: str | None = None, *, debug: bool = False
) -> Report:
    """Check one course against the protocol and return its report.

    To draw figures of the report as well, use :func:`open_workspace` and
    :func:`check_workspace`, which keep what was read and measured for the renderers.

    Parameters
    ----------
    course_files
        A course as :func:`find_courses` returns it.
    protocol
        The protocol (:func:`load_protocol`).
    arm
        The arm to check against; None detects it from the plans (the report says how).
    debug
        Let a check that breaks raise instead of making its rule not evaluable.

    Returns
    -------
    Report
        Every rule of the arm with its status, measured value, unit and limits; the verdict
        is the worst status. Anything less drastic than an unreadable file (a missing
        structure set, an unusable dose) makes rules not evaluable, never a pass.

    Raises
    ------
    InputError
        ``arm`` is not an arm of the protocol, or a file of the course cannot be read at all.
    """
    return check_workspace(open_workspace(course_files, protocol, arm), debug=debug)


def open_workspace(course_files: CourseFiles, protocol: Protocol, arm: str | None = None) -> Workspace:
    """Read one course (each file once) into the workspace its rules and figures measure in.

    ``arm`` forces the arm instead of detecting it. Raises :class:`rtcheck.errors.InputError`
    for an unknown arm or when a file of the course cannot be read at all.
    """
    if arm is not None and arm not in protocol.arms:
        raise InputError(None, f"unknown arm {arm!r}; the protocol's arms are {', '.join(protocol.arms)}")
    return Workspace.open(course_files, protocol, arm)


def check_workspace(workspace: Workspace, *, debug: bool = False) -> Report:
    """Run the protocol's rules in an opened workspace and return the course's report.

    The workspace keeps everything the rules measured (doses, solids, DVHs), so that the
    report's figures (:func:`rtcheck.reports.figures.build_figures`) are drawn from the
    same objects without reading a file again.
    """
    course_files, protocol, course = workspace.files, workspace.protocol, workspace.course
    integrity, assignment = workspace.integrity, workspace.arm
    arm_result = ArmResult(
        arm=assignment.arm,
        overridden=assignment.overridden,
        evidence=assignment.evidence,
        components={name: [part_name(p) for p in comp.parts] for name, comp in assignment.components.items()},
    )
    notes = list(workspace.roles.refused)
    # Without an arm, the rules every arm shares (integrity, organs at risk) still run: the
    # course's doses and structures can be judged even when its fractionation cannot.
    rules = run_rules(CheckContext(workspace), debug=debug)
    if assignment.arm is None:
        reason = assignment.evidence[0] if assignment.evidence else "no arm of the protocol matches this course"
        arm_rule = RuleResult(
            id="course.arm",
            family="course",
            description="The course matches an arm of the protocol",
            status=Status.NOT_EVALUABLE,
            unit="",
            message=f"no arm matches; {reason}",
            evidence={"evidence": assignment.evidence},
        )
        rules = [arm_rule, *rules]
    unreadable = _unreadable_rule(course_files)
    if unreadable is not None:
        rules.insert(0, unreadable)
    notes.extend(course_files.missing)
    notes.extend(course_files.superseded)
    notes.extend(course_files.unreadable)
    return Report(
        rtcheck_version=__version__,
        created=_now(),
        protocol=_protocol_ref(protocol),
        patient_id=course.patient_id,
        patient_name=course.patient_name,
        course_key=course_files.key,
        plans=[
            PlanSummary(
                label=p.label,
                name=p.name,
                sop_instance_uid=p.uid,
                fraction_groups=[
                    {
                        "number": fg.number,
                        "fractions_planned": fg.fractions_planned,
                        "prescription_gy_per_fraction": fg.prescription.dose_per_fraction_gy
                        if fg.prescription
                        else None,
                        "prescription_source": fg.prescription.source if fg.prescription else None,
                    }
                    for fg in p.fraction_groups
                ],
            )
            for p in course.plans
        ],
        files=[
            InputFile(
                path=str(f.path),
                modality=f.modality,
                sop_class_uid=f.sop_class_uid,
                sop_instance_uid=f.sop_instance_uid,
                sha256=f.sha256,
            )
            for f in course.files
        ],
        arm=arm_result,
        verdict=worst([r.status for r in rules]),
        counts=_counts(rules),
        rules=rules,
        integrity=integrity,
        notes=notes,
        structure_roles=workspace.roles.assignments(),
    )


def _unreadable_rule(course_files: CourseFiles) -> RuleResult | None:
    """Not evaluable when something in the course's folder could not be read.

    The rules may all pass on the files that were read, but the unread one may be a
    re-plan that supersedes them: such a course must reach a person, never pass.
    """
    if not course_files.unreadable:
        return None
    n = len(course_files.unreadable)
    return RuleResult(
        id="course.inputs_readable",
        family="course",
        description="Every file and folder in the course's folder could be read",
        status=Status.NOT_EVALUABLE,
        unit="",
        message=f"{n} file(s) or folder(s) in this course's folder could not be read and may hold a newer "
        f"plan, dose or structure set: {'; '.join(course_files.unreadable)}",
        evidence={"unreadable": list(course_files.unreadable)},
    )


def incomplete_report(course_files: CourseFiles, protocol: Protocol) -> Report:
    """The not-evaluable report of a course whose reference chain never became complete.

    Parameters
    ----------
    course_files
        The course, with what is missing in :attr:`CourseFiles.missing`.
    protocol
        The protocol the course would have been checked against.

    Returns
    -------
    Report
        One rule, ``course.complete``, not evaluable and naming what is missing.
    """
    missing = course_files.missing or ["the course is incomplete"]
    rule = RuleResult(
        id="course.complete",
        family="course",
        description="The course holds its plan(s), their structure set and their dose(s)",
        status=Status.NOT_EVALUABLE,
        unit="",
        message="; ".join(missing),
        files=[str(p) for p in course_files.files],
    )
    return _unchecked_report(
        course_files, protocol, rule, [*missing, *course_files.unreadable], "not detected: the course is incomplete"
    )


def error_report(course_files: CourseFiles, protocol: Protocol, reason: str) -> Report:
    """The not-evaluable report of a course whose check could not run (e.g. unreadable files).

    A course that breaks the checker must still reach a person, with the reason, instead of
    vanishing from an automatic queue.

    Parameters
    ----------
    course_files
        The course.
    protocol
        The protocol it was to be checked against.
    reason
        Why the check could not run, in one line.

    Returns
    -------
    Report
        One rule, ``course.check``, not evaluable, with the reason.
    """
    rule = RuleResult(
        id="course.check",
        family="course",
        description="The course could be read and checked",
        status=Status.NOT_EVALUABLE,
        unit="",
        message=f"the check could not run: {reason}",
        files=[str(p) for p in course_files.files],
    )
    return _unchecked_report(
        course_files, protocol, rule, [rule.message, *course_files.unreadable], "not detected: the check could not run"
    )


def _unchecked_report(
    course_files: CourseFiles, protocol: Protocol, rule: RuleResult, problems: list[str], arm_note: str
) -> Report:
    return Report(
        rtcheck_version=__version__,
        created=_now(),
        protocol=_protocol_ref(protocol),
        patient_id=course_files.patient_id,
        patient_name=course_files.patient_name,
        course_key=course_files.key,
        files=[],
        arm=ArmResult(arm=None, evidence=[arm_note]),
        verdict=Status.NOT_EVALUABLE,
        counts=_counts([rule]),
        rules=[rule],
        integrity=[IntegrityFinding(severity="error", file="", message=m) for m in problems],
        notes=problems,
    )


def check_paths(paths: Sequence[Path | str], protocol: Protocol | None = None, arm: str | None = None) -> list[Report]:
    """Find every course below ``paths`` and check each.

    Parameters
    ----------
    paths
        Files and folders (searched recursively).
    protocol
        The protocol; None for the bundled trial protocol.
    arm
        The arm to check against; None detects it per course.

    Returns
    -------
    list of Report
        One report per course, in a stable order.

    Raises
    ------
    InputError
        No plan was found, or a file cannot be read (see :func:`find_courses`).
    ProtocolError
        The bundled protocol is invalid (an installation problem).
    """
    protocol = protocol or load_protocol()
    courses = find_courses([Path(p) for p in paths])
    if not courses:
        raise InputError(None, f"no RTPLAN found in {', '.join(str(p) for p in paths)}")
    return [check_course(c, protocol, arm) for c in courses]
