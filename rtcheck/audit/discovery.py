"""Finding the courses of many submissions, and the centre each one came from.

Submission trees hold tens of thousands of files, mostly CT slices. Indexing is header
only (:func:`rtcheck.dicomio.index_files`) and spread over worker processes in chunks
of files when there are enough of them to pay for the workers; course assembly is the
project's own :func:`rtcheck.assembly.assemble`, so an audit groups files exactly as
``rtcheck check`` does.

The centre of a course (see :mod:`rtcheck.audit.run` for the user's view) is decided, most
specific first: a ``patient_id`` row of the centres CSV, the longest matching
``path_prefix`` row, the folder ``--centre-level`` levels below the root, the
InstitutionName of the course's files, else ``unknown``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..assembly import CourseFiles, assemble
from ..dicomio import Index, UnreadableFile, index_files, iter_candidate_files
from ..errors import ExitCode, InputError, RtcheckError
from .executors import Executor, SerialExecutor
from .work import hash_files

UNKNOWN_CENTRE = "unknown"
#: Below this many files, indexing here beats starting worker processes: header-only
#: indexing of cached files runs at ~0.3 ms a file (5940 files: 1.8 s in this process,
#: 3.0 s through a fresh 2-worker pool). Beyond it, and on slow shares, workers pay.
PARALLEL_INDEX_MIN_FILES = 10_000
#: Below this many bytes to hash, likewise.
PARALLEL_HASH_MIN_BYTES = 256 * 1024 * 1024

Advance = Callable[[int], None]


class CentreMapError(RtcheckError):
    """The centres CSV cannot be used; the message names the file and line."""

    exit_code = ExitCode.USAGE_ERROR


@dataclass(frozen=True)
class Root:
    """A submission root: its absolute path, and the label its files' paths start with
    in the outputs (empty with a single root)."""

    path: Path
    label: str

    @property
    def prefix(self) -> str:
        return str(self.path).rstrip("/\\") + "/"


def make_roots(paths: Sequence[Path]) -> list[Root]:
    """Absolute roots; with several, each labelled by its folder name (made unique)."""
    roots: list[Root] = []
    seen: set[str] = set()
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not path.is_dir():
            raise InputError(given, "not a folder (rtcheck audit walks submission folders)")
        label = ""
        if len(paths) > 1:
            base = path.name or "root"
            label, n = base, 1
            while label in seen:
                n += 1
                label = f"{base}-{n}"
            seen.add(label)
        roots.append(Root(path, label))
    return roots


def root_of(roots: Sequence[Root], path: Path) -> Root:
    """The root a file was found below (the deepest one, if roots are nested)."""
    best = None
    for root in roots:
        if path.is_relative_to(root.path) and (best is None or len(root.path.parts) > len(best.path.parts)):
            best = root
    if best is None:
        raise ValueError(f"{path} is below none of the audit's roots")
    return best


@dataclass
class CentreMap:
    """How a course's centre is decided (module docstring): CSV rows, folder level, DICOM."""

    level: int | None = None
    prefixes: list[tuple[PurePosixPath, str]] = field(default_factory=list)
    patients: dict[str, str] = field(default_factory=dict)

    def centre(self, root: Root, path: Path, patient_id: str, institution: str) -> tuple[str, str]:
        """``(centre, how it was decided)`` for a file of a course."""
        if patient_id and patient_id in self.patients:
            return self.patients[patient_id], "patient_id"
        rel = PurePosixPath(path.relative_to(root.path).as_posix())
        labelled = PurePosixPath(root.label) / rel if root.label else rel
        for prefix, centre in self.prefixes:
            if labelled.is_relative_to(prefix) or rel.is_relative_to(prefix) or path.is_relative_to(prefix):
                return centre, "path_prefix"
        if self.level is not None and len(rel.parts) > self.level:
            return rel.parts[self.level - 1], "folder_level"
        if institution.strip():
            return institution.strip(), "institution_name"
        return UNKNOWN_CENTRE, "unknown"


def load_centres_csv(path: Path) -> tuple[list[tuple[PurePosixPath, str]], dict[str, str]]:
    """Read a centres CSV: a ``centre`` column and ``path_prefix`` and/or ``patient_id``.

    Lines starting with ``#`` are comments. Prefixes come back longest first (the most
    specific wins).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CentreMapError(f"{path}: cannot read the centres CSV ({exc.strerror or exc})") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    columns = {c.strip() for c in reader.fieldnames or []}
    if "centre" not in columns or not columns & {"path_prefix", "patient_id"}:
        raise CentreMapError(
            f"{path}: a centres CSV needs a 'centre' column and a 'path_prefix' and/or 'patient_id' "
            f"column (found: {', '.join(sorted(columns)) or 'none'})"
        )
    prefixes: list[tuple[PurePosixPath, str]] = []
    patients: dict[str, str] = {}
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        centre, prefix, patient_id = row.get("centre", ""), row.get("path_prefix", ""), row.get("patient_id", "")
        if not centre or not (prefix or patient_id):
            raise CentreMapError(f"{path}: data line {n - 1}: give a centre and a path_prefix or patient_id")
        if prefix:
            prefixes.append((PurePosixPath(prefix.replace("\\", "/").rstrip("/")), centre))
        if patient_id:
            if patients.get(patient_id, centre) != centre:
                raise CentreMapError(f"{path}: data line {n - 1}: a patient_id is mapped to two centres")
            patients[patient_id] = centre
    prefixes.sort(key=lambda pc: len(pc[0].parts), reverse=True)
    return prefixes, patients


@dataclass
class AuditCourse:
    """A course found in the submissions, with where it came from."""

    files: CourseFiles
    root: Root
    centre: str
    centre_source: str
    institution: str


@dataclass
class Discovery:
    courses: list[AuditCourse]
    #: (patient id, patient name) of every RT object indexed, for scrubbing what no course owns
    patients: set[tuple[str, str]]
    #: (centre, file or folder) of what could not be read and lies in no course's folder
    #: (what lies in one is in that course's ``files.unreadable``)
    unreadable: list[tuple[str, UnreadableFile]]
    orphans: list[str]
    files: int
    skipped: int
    not_dicom: int


def list_files(roots: Sequence[Root], unreadable: list[UnreadableFile] | None = None) -> list[Path]:
    """Every file below the roots, in a deterministic order (hidden ones excepted).

    Folders that cannot be listed are appended to ``unreadable``.
    """
    return [p for p, _ in iter_candidate_files((r.path for r in roots), unreadable)]


def index_all(
    files: list[Path], executor: Executor, jobs: int, advance: Advance, min_parallel: int = PARALLEL_INDEX_MIN_FILES
) -> Index:
    """Index ``files`` header-only, in chunks on ``executor`` when there are at least ``min_parallel``."""
    if len(files) < min_parallel or jobs <= 1:
        executor = SerialExecutor()
        chunk = max(1, min(500, len(files)))
    else:
        chunk = max(1, min(500, math.ceil(len(files) / (jobs * 8))))
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    parts: dict[int, Index] = {}
    for i, result in executor.map_unordered(index_files, chunks):
        if isinstance(result, BaseException):
            # The indexing worker died: index that chunk here, where a failure is visible.
            result = index_files(chunks[i])
        parts[i] = result
        advance(len(chunks[i]))
    merged = Index()
    for i in range(len(chunks)):  # chunk order = file order: as deterministic as one pass
        merged.files.extend(parts[i].files)
        merged.unreadable.extend(parts[i].unreadable)
        merged.skipped += parts[i].skipped
        merged.not_dicom += parts[i].not_dicom
    return merged


def _institution(course: CourseFiles) -> str:
    entries = [*course.plans, *([course.structure_set] if course.structure_set else []), *course.doses]
    return next((f.institution_name for f in entries if f.institution_name.strip()), "")


def find_submissions(
    roots: Sequence[Root],
    files: list[Path],
    centres: CentreMap,
    executor: Executor,
    jobs: int,
    advance: Advance,
    unlisted: Sequence[UnreadableFile] = (),
) -> Discovery:
    """Index ``files`` (:func:`list_files` of the roots) and assemble every course, each with its centre.

    ``unlisted`` are the folders :func:`list_files` could not list: like unreadable files,
    they make the course whose folder holds them not evaluable.
    """
    index = index_all(files, executor, jobs, advance)
    index.unreadable.extend(unlisted)
    assembly = assemble(index)
    courses = []
    for course in assembly.courses:
        first = course.plans[0]
        institution = _institution(course)
        root = root_of(roots, first.path)
        centre, source = centres.centre(root, first.path, course.patient_id, institution)
        courses.append(AuditCourse(course, root, centre, source, institution))
    unreadable = [(centres.centre(root_of(roots, u.path), u.path, "", "")[0], u) for u in assembly.unreadable]
    patients = {(f.patient_id, f.patient_name) for f in index.files}
    return Discovery(courses, patients, unreadable, assembly.orphans, len(files), assembly.skipped, assembly.not_dicom)


def content_hashes(
    paths: Iterable[Path],
    cached: dict[str, tuple[int, int, str]],
    path_digest: Callable[[str], str],
    executor: Executor,
    jobs: int,
) -> tuple[dict[Path, str], list[tuple[str, int, int, str]], dict[Path, str]]:
    """SHA-256 of each file, from the cache when its size and mtime are unchanged.

    Returns the hashes, the new cache rows to store, and the files that could not be read.
    """
    hashes: dict[Path, str] = {}
    todo: list[tuple[Path, str, int, int]] = []
    problems: dict[Path, str] = {}
    for path in dict.fromkeys(paths):
        try:
            st = path.stat()
        except OSError as exc:
            problems[path] = f"cannot read ({exc.strerror or exc})"
            continue
        digest = path_digest(str(path))
        hit = cached.get(digest)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            hashes[path] = hit[2]
        else:
            todo.append((path, digest, st.st_size, st.st_mtime_ns))
    total = sum(t[2] for t in todo)
    if total < PARALLEL_HASH_MIN_BYTES or jobs <= 1:
        executor = SerialExecutor()
    per_chunk = max(1, math.ceil(len(todo) / (jobs * 4)))
    chunks = [todo[i : i + per_chunk] for i in range(0, len(todo), per_chunk)]
    rows: list[tuple[str, int, int, str]] = []
    for i, result in executor.map_unordered(hash_files, [[t[0] for t in c] for c in chunks]):
        if isinstance(result, BaseException):
            result = hash_files([t[0] for t in chunks[i]])
        for (path, digest, size, mtime), (_, sha, problem) in zip(chunks[i], result, strict=True):
            if sha is None:
                problems[path] = problem
            else:
                hashes[path] = sha
                rows.append((digest, size, mtime, sha))
    return hashes, rows, problems
