"""Shared pytest fixtures: phantom courses written once per session.

``course_dir(variant, **overrides)`` writes a course of :mod:`rtcheck.phantom` into a
session temporary folder the first time it is asked for and returns that folder; later
calls with the same arguments return the same folder. The folders are shared by every
test of the session: read them, never modify them (copy first).

``fixtures_dir`` is the folder of the committed courses (``tests/fixtures/<variant>/``,
see ``tests/fixtures/make_fixtures.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rtcheck.api import check_course, check_workspace, find_courses, load_protocol, open_workspace
from rtcheck.assembly import CourseFiles
from rtcheck.phantom import write_course
from rtcheck.report import Report
from rtcheck.workspace import Workspace

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def course_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    written: dict[str, Path] = {}

    def make(variant: str = "compliant", **overrides: object) -> Path:
        key = f"{variant}|{sorted(overrides.items())!r}"
        if key not in written:
            folder = tmp_path_factory.mktemp(variant)
            write_course(folder, variant, **overrides)
            written[key] = folder
        return written[key]

    return make


@pytest.fixture(scope="session")
def checked(course_dir: Callable[..., Path]) -> Callable[[str], tuple[CourseFiles, Report]]:
    """Course files and report of a phantom variant, checked once per session."""
    protocol = load_protocol()
    done: dict[str, tuple[CourseFiles, Report]] = {}

    def get(variant: str) -> tuple[CourseFiles, Report]:
        if variant not in done:
            course = find_courses([course_dir(variant)])[0]
            done[variant] = (course, check_course(course, protocol))
        return done[variant]

    return get


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def measured(course_dir: Callable[..., Path]) -> Callable[[str], tuple[Report, Workspace]]:
    """Report and workspace of a phantom variant (what figures are drawn from), made per call.

    Not kept for the session: a workspace holds the course's doses and DVH samples.
    """
    protocol = load_protocol()

    def get(variant: str) -> tuple[Report, Workspace]:
        workspace = open_workspace(find_courses([course_dir(variant)])[0], protocol)
        return check_workspace(workspace), workspace

    return get
