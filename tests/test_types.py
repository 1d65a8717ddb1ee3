"""The package's types are checked, and the stable API documents what it takes and gives.

CI runs only the test command, so the type check runs here: ``mypy`` with the settings of
``pyproject.toml`` must find nothing. The stable API (``rtcheck.__all__``) is what scripts
in planning systems call; its docstrings follow numpydoc, and every parameter and every
field of the report is documented.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rtcheck

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_says_it_is_typed() -> None:
    """PEP 561: without py.typed, other projects' type checkers ignore rtcheck's annotations."""
    assert (ROOT / "rtcheck" / "py.typed").is_file()


def _section(doc: str, title: str) -> str | None:
    """The body of a numpydoc section (up to the next section or the end)."""
    match = re.search(rf"^{title}\n-{{{len(title)}}}\n(.*?)(?=^\w[\w ]*\n-+\n|\Z)", doc, re.M | re.S)
    return match.group(1) if match else None


def _documented_names(section: str) -> set[str]:
    """Names of the entries of a section: unindented lines, ``a, b`` naming several."""
    names: set[str] = set()
    for line in section.splitlines():
        if line and not line.startswith(" "):
            names.update(n.strip() for n in line.split(":")[0].split(","))
    return names


STABLE_FUNCTIONS: list[Callable[..., Any]] = [
    rtcheck.load_protocol,
    rtcheck.find_courses,
    rtcheck.check_course,
    rtcheck.check_paths,
    rtcheck.incomplete_report,
    rtcheck.error_report,
]


@pytest.mark.parametrize("func", STABLE_FUNCTIONS, ids=lambda f: f.__name__)
def test_stable_functions_document_parameters_and_returns(func: Callable[..., Any]) -> None:
    doc = inspect.getdoc(func) or ""
    parameters, returns = _section(doc, "Parameters"), _section(doc, "Returns")
    assert parameters is not None and returns is not None, f"{func.__name__}: numpydoc Parameters and Returns"
    assert _documented_names(parameters) == set(inspect.signature(func).parameters)
    assert returns.strip()


@pytest.mark.parametrize("model", [rtcheck.Report, rtcheck.RuleResult], ids=lambda m: m.__name__)
def test_report_models_document_every_field(model: Any) -> None:
    attributes = _section(inspect.getdoc(model) or "", "Attributes")
    assert attributes is not None
    assert _documented_names(attributes) == set(model.model_fields)
