"""The PDF report: what pdftotext reads back from it is what the reviewer must see.

Needs poppler's pdftotext: the tests fail, instead of skipping, when the environment
variable CI is set.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from peers import require

from rtcheck.report import Status
from rtcheck.reports.figures import build_figures
from rtcheck.reports.pdf import render_pdf, write_pdf


def pdf_text(path: Path) -> str:
    pdftotext = require("pdftotext", "poppler-utils")
    out = subprocess.run([pdftotext, "-layout", str(path), "-"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pdf_pages(path: Path) -> int:
    out = subprocess.run([require("pdfinfo", "poppler-utils"), str(path)], capture_output=True, text=True, timeout=60)
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


def test_pdf_with_figures_is_a4_and_reads_well(measured, tmp_path: Path) -> None:
    report, workspace = measured("compliant")
    figures = build_figures(report, workspace)
    pdf = render_pdf(report, figures)
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    pdfinfo = require("pdfinfo", "poppler-utils")
    info = subprocess.run([pdfinfo, str(path)], capture_output=True, text=True, timeout=60).stdout
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


def test_pdf_of_a_course_without_figures_says_why(measured, tmp_path: Path) -> None:
    report, workspace = measured("multi_plan_dose")
    figures = build_figures(report, workspace)
    path = write_pdf(report, figures, tmp_path / "report.pdf")
    text = " ".join(pdf_text(path).split())
    assert "not drawn — no dose for component peak" in text
    assert "Verdict: NOT EVALUABLE" in text
