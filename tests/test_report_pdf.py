"""The PDF report: what pdftotext reads back from it is what the reviewer must see.

Needs poppler's pdftotext: the tests fail, instead of skipping, when the environment
variable CI is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.assembly import CourseFiles
from rtcheck.figures import build_figures
from rtcheck.report import Report, Status
from rtcheck.report_pdf import render_pdf, write_pdf


@pytest.fixture(scope="module")
def checked(course_dir) -> Callable[[str], tuple[CourseFiles, Report]]:
    """Course files and report of a phantom variant, computed once per module."""
    done: dict[str, tuple[CourseFiles, Report]] = {}

    def get(variant: str) -> tuple[CourseFiles, Report]:
        if variant not in done:
            course = find_courses([course_dir(variant)])[0]
            done[variant] = (course, check_course(course, load_protocol()))
        return done[variant]

    return get


def tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (apt-get install poppler-utils)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def pdf_text(path: Path) -> str:
    out = subprocess.run([tool("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pdf_pages(path: Path) -> int:
    out = subprocess.run([tool("pdfinfo"), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    match = re.search(r"^Pages:\s+(\d+)", out.stdout, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


@pytest.mark.parametrize(
    ("variant", "failing"),
    [
        ("compliant", set()),
        ("sfrt_rx_6gy", {"sfrt.prescription"}),
        ("peak_near_gtv_edge", {"peaks.margin_to_gtv"}),
        ("peaks_underdosed_6gy", {"sfrt.peak_dose"}),
    ],
)
def test_pdf_names_the_verdict_and_every_failing_rule(variant: str, failing: set[str], checked, tmp_path) -> None:
    _, report = checked(variant)
    bad = {r.id for r in report.rules if r.status is not Status.PER_PROTOCOL}
    assert failing <= bad
    path = write_pdf(report, None, tmp_path / "report.pdf")
    assert path.read_bytes().startswith(b"%PDF-")
    text = pdf_text(path)
    assert f"Verdict: {report.verdict.label.upper()}" in text
    for rule in report.rules:  # every rule id, whole (never split across lines)
        assert re.search(rf"(^|\s){re.escape(rule.id)}(\s|$)", text, re.MULTILINE), rule.id
    lines = text.splitlines()
    for rule_id in bad:
        rule = report.rule(rule_id)
        assert rule is not None
        label = {
            Status.ACCEPTABLE_VARIATION: "~ VARIATION",
            Status.UNACCEPTABLE_DEVIATION: "✗ FAIL",
            Status.NOT_EVALUABLE: "? NOT EVALUABLE",
        }[rule.status]
        assert any(rule_id in line and label in line for line in lines), rule_id
    if not bad:
        assert "Nothing: all" in text


def test_pdf_with_figures_is_a4_and_reads_well(checked, tmp_path: Path) -> None:
    protocol = load_protocol()
    course, report = checked("compliant")
    figures = build_figures(course, report, protocol)
    pdf = render_pdf(report, figures)
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    info = subprocess.run([tool("pdfinfo"), str(path)], capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"Page size:\s+595\.\d+ x 841\.\d+ pts \(A4\)", info)
    assert pdf_pages(path) >= 3
    text = pdf_text(path)
    for plot in figures:
        assert plot.available
        assert plot.title.split(" — ")[0] in text  # each figure is there with its caption
    # the inputs that make the report traceable
    for f in report.files:
        assert f.sha256[:16] in text.replace("\n", "")
    assert report.protocol.sha256[:16] in text
    assert f"{report.counts['per_protocol']} per protocol · 0 acceptable variation" in text


def test_pdf_of_a_course_without_figures_says_why(checked, tmp_path: Path) -> None:
    protocol = load_protocol()
    course, report = checked("multi_plan_dose")
    figures = build_figures(course, report, protocol)
    path = write_pdf(report, figures, tmp_path / "report.pdf")
    text = " ".join(pdf_text(path).split())
    assert "not drawn — no dose for component peak" in text
    assert "Verdict: NOT EVALUABLE" in text
