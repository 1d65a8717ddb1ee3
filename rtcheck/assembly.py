"""Course assembly: which RT objects belong together, decided by UID references alone.

RTPLAN -> RTSTRUCT through ReferencedStructureSetSequence, RTDOSE -> RTPLAN through
ReferencedRTPlanSequence. Plans of one patient that share a structure set form one course
(an SFRT plan of 3 fractions and an LDRT plan of 5 are one course). File names and folder
layout mean nothing: planning systems name exports as they like.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from .course import Course
from .dicomio import (
    NOT_DICOM,
    Index,
    IndexedFile,
    UnreadableFile,
    dose_header_from_dataset,
    index_file,
    index_paths,
    plan_from_dataset,
    read_file,
    roi_contour_items,
    structure_set_from_dataset,
)
from .errors import InputError
from .integrity import conformance, course_consistency, dose_sanity, plan_sanity, structure_sanity
from .report import IntegrityFinding


@dataclass
class CourseFiles:
    """The files of one course, found by indexing, and what its reference chain lacks."""

    plans: list[IndexedFile]
    structure_set: IndexedFile | None
    doses: list[IndexedFile]
    missing: list[str] = field(default_factory=list)
    #: Older exports of a plan (same label) that this course leaves out, one line each.
    superseded: list[str] = field(default_factory=list)
    #: Files and folders in the course's folder that could not be read, one line each:
    #: any of them may be a newer plan, so the course cannot be called compliant.
    unreadable: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A stable identifier of the course: its plan UIDs, sorted (without a plan: its other objects')."""
        if self.plans:
            return "+".join(sorted(p.sop_instance_uid for p in self.plans))
        others = [*([self.structure_set] if self.structure_set else []), *self.doses]
        return "+".join(sorted(f.sop_instance_uid for f in others))

    @property
    def _first(self) -> IndexedFile | None:
        return next(iter([*self.plans, *([self.structure_set] if self.structure_set else []), *self.doses]), None)

    @property
    def patient_id(self) -> str:
        return self._first.patient_id if self._first else ""

    @property
    def patient_name(self) -> str:
        return self._first.patient_name if self._first else ""

    @property
    def plan_labels(self) -> list[str]:
        return [p.plan_label or p.sop_instance_uid for p in self.plans]

    @property
    def plan_uids(self) -> list[str]:
        return [p.sop_instance_uid for p in self.plans]

    @property
    def files(self) -> list[Path]:
        out = [p.path for p in self.plans]
        if self.structure_set is not None:
            out.append(self.structure_set.path)
        out.extend(d.path for d in self.doses)
        return out

    @property
    def complete(self) -> bool:
        """Plan, its structure set and a dose for every plan are all present."""
        return not self.missing


@dataclass
class Assembly:
    """Courses found below some paths, and what could not be placed in any course."""

    courses: list[CourseFiles]
    orphans: list[str]
    #: What could not be read and lies in no course's folder (those a course claims are in
    #: its :attr:`CourseFiles.unreadable`).
    unreadable: list[UnreadableFile]
    skipped: int
    not_dicom: int


def assemble(index: Index, *, without_plan: bool = False) -> Assembly:
    """Group indexed RT objects into courses by their UID references.

    With ``without_plan``, a structure set that no plan references becomes a course of its
    own together with the doses of its patient whose plan is absent (a structure set and a
    dose exported without the plan, as DVH benchmarks are published): its dose rules can be
    evaluated, its plan rules cannot.
    """
    plans = [f for f in index.files if f.modality == "RTPLAN"]
    structure_sets = {f.sop_instance_uid: f for f in index.files if f.modality == "RTSTRUCT"}
    doses = [f for f in index.files if f.modality == "RTDOSE"]
    plans = _unique(plans)

    groups: dict[tuple[str, str], list[IndexedFile]] = {}
    for plan in plans:
        # Plans without a structure-set reference cannot share one: each is its own course.
        ss_key = plan.referenced_structure_set_uid or f"(none:{plan.sop_instance_uid})"
        groups.setdefault((plan.patient_id, ss_key), []).append(plan)

    plan_uids = {p.sop_instance_uid for p in plans}
    courses = []
    for (_, ss_uid), group in sorted(groups.items(), key=lambda kv: _sort_key(kv[1])):
        course_plans, superseded = _latest_per_label(group)
        missing: list[str] = []
        ss = structure_sets.get(ss_uid)
        for plan in course_plans:
            name = plan.plan_label or plan.sop_instance_uid
            if not plan.referenced_structure_set_uid:
                missing.append(f"{plan.path}: plan {name} references no structure set")
            elif ss is None:
                missing.append(
                    f"{plan.path}: plan {name} references RTSTRUCT {plan.referenced_structure_set_uid},"
                    " which is not among the files"
                )
        uids = {p.sop_instance_uid for p in course_plans}
        course_doses = _unique([d for d in doses if uids.intersection(d.referenced_plan_uids)])
        for plan in course_plans:
            if not any(plan.sop_instance_uid in d.referenced_plan_uids for d in course_doses):
                name = plan.plan_label or plan.sop_instance_uid
                missing.append(f"{plan.path}: no RTDOSE among the files references plan {name}")
        courses.append(CourseFiles(course_plans, ss, course_doses, missing, superseded))

    orphans = []
    for d in doses:
        if not d.referenced_plan_uids:
            orphans.append(f"{d.path}: RTDOSE references no plan (ReferencedRTPlanSequence)")
        elif not plan_uids.intersection(d.referenced_plan_uids):
            orphans.append(
                f"{d.path}: RTDOSE references plan {', '.join(d.referenced_plan_uids)}, which is not among the files"
            )
    used_ss = {c.structure_set.sop_instance_uid for c in courses if c.structure_set}
    unused = [ss for uid, ss in structure_sets.items() if uid not in used_ss]
    if without_plan:
        planless_doses = [d for d in doses if not plan_uids.intersection(d.referenced_plan_uids)]
        planless = _courses_without_plan(unused, planless_doses)
        courses.extend(planless)
        placed = {f.path for c in planless for f in [c.structure_set, *c.doses] if f is not None}
        orphans = [o for o in orphans if not any(o.startswith(f"{path}:") for path in placed)]
        unused = [ss for ss in unused if ss.path not in placed]
    for ss in unused:
        orphans.append(f"{ss.path}: RTSTRUCT is not referenced by any plan among the files")
    unclaimed = claim_unreadable(courses, index.unreadable)
    return Assembly(courses, orphans, unclaimed, index.skipped, index.not_dicom)


def course_folder(course: CourseFiles) -> Path | None:
    """The deepest folder holding all of the course's files (None when they share none)."""
    try:
        return Path(os.path.commonpath([str(p.parent) for p in course.files]))
    except ValueError:  # absolute and relative paths mixed, or different drives
        return None


def claim_unreadable(courses: list[CourseFiles], unreadable: list[UnreadableFile]) -> list[UnreadableFile]:
    """Give each unreadable file or folder to the courses whose folder holds it; return the rest.

    What cannot be read cannot say which course it belongs to. One that lies inside a
    course's folder (the deepest folder holding all its files) may be that course's
    re-plan, a newer dose or structure set, so the course records it and is not
    evaluable. One that lies in no course's folder (a whole patient folder that cannot
    be listed) is left for the caller to report on its own.
    """
    homes = [(course, course_folder(course)) for course in courses]
    unclaimed = []
    for item in unreadable:
        owners = [c for c, home in homes if home is not None and item.path.parent.is_relative_to(home)]
        for course in owners:
            course.unreadable.append(f"{item.path}: {item.problem}")
        if not owners:
            unclaimed.append(item)
    return unclaimed


def _courses_without_plan(structure_sets: list[IndexedFile], doses: list[IndexedFile]) -> list[CourseFiles]:
    """One course per patient who has exactly one unreferenced structure set, with that patient's planless doses.

    Two unreferenced structure sets of one patient leave the doses ambiguous: then each
    structure set is a course without dose, and the rules that need a dose say so.
    """
    by_patient: dict[str, list[IndexedFile]] = {}
    for ss in structure_sets:
        by_patient.setdefault(ss.patient_id, []).append(ss)
    courses = []
    for patient, sets in sorted(by_patient.items()):
        own = _unique([d for d in doses if d.patient_id == patient]) if len(sets) == 1 else []
        for ss in sorted(sets, key=lambda f: str(f.path)):
            missing = ["no RTPLAN among the files: rules that need the plan are not evaluable"]
            if not own:
                missing.append(f"{ss.path}: no RTDOSE of this patient without its plan among the files")
            courses.append(CourseFiles([], ss, own, missing))
    return courses


def _latest_per_label(plans: list[IndexedFile]) -> tuple[list[IndexedFile], list[str]]:
    """Keep the newest plan of each label: a re-plan exported beside the old one replaces it.

    Planning systems export a re-plan under a new SOP Instance UID with the same label and
    structure set; checking both together would mix two versions of one course. Newest is
    by the plan's date and time, then by file modification time.
    """
    by_label: dict[str, list[IndexedFile]] = {}
    for plan in plans:
        by_label.setdefault(plan.plan_label or plan.sop_instance_uid, []).append(plan)
    kept, superseded = [], []
    for label, versions in by_label.items():
        versions.sort(key=lambda p: (p.created, p.path.stat().st_mtime, str(p.path)))
        newest = versions[-1]
        kept.append(newest)
        for old in versions[:-1]:
            superseded.append(
                f"{old.path}: plan {label} ({old.created or 'undated'}) is superseded by {newest.path}"
                f" ({newest.created or 'undated'}), the newest export with that label, and is not checked"
            )
    kept.sort(key=lambda p: str(p.path))
    return kept, superseded


def _unique(files: list[IndexedFile]) -> list[IndexedFile]:
    """One entry per SOP Instance UID (the same object exported twice is one object)."""
    seen: dict[str, IndexedFile] = {}
    for f in files:
        seen.setdefault(f.sop_instance_uid, f)
    return list(seen.values())


def _sort_key(plans: list[IndexedFile]) -> tuple[str, str]:
    return (plans[0].patient_id, min(str(p.path) for p in plans))


def find_courses(paths: Sequence[Path], *, without_plan: bool = False) -> list[CourseFiles]:
    """Index ``paths`` (files and folders) and return the courses found, in a stable order.

    Only file headers are read. A plan file given on its own brings its siblings: its
    folder is indexed too, and only the courses holding a plan that was named are returned.

    Parameters
    ----------
    paths
        Files and folders (searched recursively).
    without_plan
        Also return each structure set that no plan references as a course of its own, with
        the doses of its patient whose plan is absent (see :func:`assemble`).

    Returns
    -------
    list of CourseFiles
        One entry per course: its plans, structure set and doses, and what is missing.

    Raises
    ------
    InputError
        A file or folder cannot be read and lies in no course's folder (those inside one
        make that course not evaluable): nothing below ``paths`` is skipped in silence.
    """
    found = discover(paths, without_plan=without_plan)
    if found.unreadable:
        first = found.unreadable[0]
        more = f" (and {len(found.unreadable) - 1} more)" if len(found.unreadable) > 1 else ""
        raise InputError(first.path, first.problem + more)
    return found.courses


def discover(paths: Sequence[Path], *, without_plan: bool = False) -> Assembly:
    """Like :func:`find_courses`, but also returns what could not be assembled."""
    paths = [Path(p) for p in paths]
    named_files = [p for p in paths if p.is_file()]
    folders = [p for p in paths if p.is_dir()]
    index = index_paths(paths)
    named_plan_uids = {f.sop_instance_uid for f in index.files if f.modality == "RTPLAN" and f.path in set(named_files)}
    if named_plan_uids:
        sibling_dirs = sorted({p.parent for p in named_files} - set(folders))
        known = {f.path for f in index.files}
        _index_siblings(sibling_dirs, known, index)
    assembly = assemble(index, without_plan=without_plan)
    if named_plan_uids and not folders:
        assembly.courses = [c for c in assembly.courses if named_plan_uids.intersection(c.plan_uids)]
        assembly.orphans = []
    return assembly


def _index_siblings(folders: list[Path], known: set[Path], index: Index) -> None:
    """Add to ``index`` the RT objects directly inside ``folders`` (not recursive), except
    those already indexed.

    A sibling that cannot be read is recorded, not passed over: it may be a newer export
    of the named plan.
    """
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path in known or path.is_dir() or path.name.startswith("."):
                continue
            try:
                entry = index_file(path)
            except InputError as exc:
                if exc.problem != NOT_DICOM:
                    index.unreadable.append(UnreadableFile(path, exc.problem))
                continue
            if entry.modality != "OTHER":
                index.files.append(entry)


@dataclass
class LoadedCourse:
    """A course read from its files: the model, its integrity findings, the RTDOSE
    datasets (pixel data included, by SOP Instance UID) so that no dose is read twice, and
    the RTPLAN datasets (by SOP Instance UID), whose patient and study a DICOM report copies."""

    course: Course
    integrity: list[IntegrityFinding]
    dose_datasets: dict[str, Dataset]
    plan_datasets: dict[str, Dataset] = field(default_factory=dict)


def load_course(files: CourseFiles) -> tuple[Course, list[IntegrityFinding]]:
    """Read the course's RT objects into the course model (see :func:`read_course`)."""
    loaded = read_course(files)
    return loaded.course, loaded.integrity


@contextmanager
def _convertible_values(path: Path) -> Iterator[None]:
    """pydicom converts a value the first time it is asked for. A value it keeps as written
    (a number that is not one) is the integrity check's to report; one it cannot hold at
    all (an IS of "1e999", which overflows its int) makes the file unusable: an InputError
    naming it, not an internal error."""
    try:
        yield
    except OverflowError as exc:
        raise InputError(path, f"a value cannot be read ({exc})") from exc


def read_course(files: CourseFiles) -> LoadedCourse:
    """Read each of the course's files once into the course model.

    Each dataset is checked for integrity right after it is read, while it is at hand, so
    the course model itself never needs to hold on to pydicom datasets; the RTDOSE datasets
    are handed back beside it for their voxels.
    """
    if not files.plans and files.structure_set is None:
        raise InputError(None, "a course needs at least one RTPLAN or a structure set")
    findings: list[IntegrityFinding] = []
    plans = []
    plan_datasets: dict[str, Dataset] = {}
    for f in files.plans:
        read = read_file(f.path)
        with _convertible_values(f.path):
            findings += conformance(f.path, read.dataset) + plan_sanity(f.path, read.dataset)
            plan = plan_from_dataset(f.path, read.dataset, read.sha256)
        plans.append(plan)
        plan_datasets[plan.uid] = read.dataset
    structure_set = None
    if files.structure_set is not None:
        path = files.structure_set.path
        read = read_file(path)
        contours = roi_contour_items(path, read.dataset)  # walked once, for the model and the checks
        with _convertible_values(path):
            structure_set = structure_set_from_dataset(path, read.dataset, read.sha256, contours)
            findings += conformance(path, read.dataset, contours)
            findings += structure_sanity(path, read.dataset, structure_set, contours)
    doses = []
    dose_datasets: dict[str, Dataset] = {}
    for f in files.doses:
        read = read_file(f.path)
        with _convertible_values(f.path):
            findings += conformance(f.path, read.dataset) + dose_sanity(f.path, read.dataset)
            dose = dose_header_from_dataset(f.path, read.dataset, read.sha256)
        doses.append(dose)
        dose_datasets[dose.source.sop_instance_uid] = read.dataset
    course = Course(
        patient_id=files.patient_id,
        patient_name=files.patient_name,
        plans=plans,
        structure_set=structure_set,
        doses=doses,
    )
    # Without a plan nothing references anything: what is absent is said once, not as a broken reference.
    severity = "error" if files.plans else "warning"
    for problem in files.missing:
        findings.append(IntegrityFinding(severity=severity, file="", message=problem))
    findings += course_consistency(course)
    return LoadedCourse(course, findings, dose_datasets, plan_datasets)
