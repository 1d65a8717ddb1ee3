"""The HTML report and its figures, on phantom courses whose answers are known.

Each variant breaks one rule (:mod:`rtcheck.phantom`): the HTML must show every rule with its
status, the verdict first, and figures computed from the course (or the reason one is
missing); it must be one self-contained file that parses and escapes what it quotes.
"""

from __future__ import annotations

import base64
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rtcheck.api import check_workspace, find_courses, load_protocol, open_workspace
from rtcheck.assembly import load_course
from rtcheck.geometry import SolidCache
from rtcheck.report import Status
from rtcheck.reports.figures import Figures, _coronal_section, build_figures
from rtcheck.reports.html import BADGE, render_html, report_stem, write_html

VARIANTS = ["compliant", "sfrt_rx_6gy", "peak_near_gtv_edge", "peaks_underdosed_6gy", "control_arm"]
_VOID = {"meta", "img", "br", "col", "hr", "link", "input"}


@pytest.fixture(scope="module")
def drawn(measured) -> Callable[[str], Figures]:
    """The figures of a phantom variant, drawn once per module."""
    done: dict[str, Figures] = {}

    def get(variant: str) -> Figures:
        if variant not in done:
            report, workspace = measured(variant)
            done[variant] = build_figures(report, workspace)
        return done[variant]

    return get


class _Page(HTMLParser):
    """Collects table rows as text, the h1, image sources, and checks that tags nest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.rows: list[str] = []
        self.row: list[str] | None = None
        self.h1: list[str] = []
        self.in_h1 = False
        self.images: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag in _VOID:
            return
        self.stack.append(tag)
        if tag == "tr":
            self.row = []
        self.in_h1 = self.in_h1 or tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "tr" and self.row is not None:
            self.rows.append(" ".join(self.row))
            self.row = None
        if tag == "h1":
            self.in_h1 = False

    def handle_data(self, data: str) -> None:
        if self.row is not None:
            self.row.append(data.strip())
        if self.in_h1:
            self.h1.append(data)


def _parse(text: str, *, whole: bool = True) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == ([] if whole else ["html", "body"]), f"unclosed tags: {page.stack}"
    return page


@pytest.mark.parametrize("variant", VARIANTS)
def test_html_shows_every_rule_with_its_status(variant: str, checked, drawn, tmp_path: Path) -> None:
    _, report = checked(variant)
    figures = drawn(variant) if variant in ("compliant", "peaks_underdosed_6gy") else None
    path = write_html(report, figures, tmp_path / f"{report_stem(report)}.html")
    page = _parse(path.read_text(encoding="utf-8"))
    assert report.verdict.label.upper() in "".join(page.h1)
    for rule in report.rules:
        rows = [r for r in page.rows if re.search(rf"(^|\s){re.escape(rule.id)}(\s|$)", r)]
        assert any(BADGE[rule.status] in r for r in rows), f"{rule.id}: no row with {BADGE[rule.status]}"
    for status in Status:
        assert f"{report.counts[status.value]} {status.label}" in path.read_text(encoding="utf-8")


def test_violations_are_reported_as_the_phantom_says(checked) -> None:
    expected = {
        "sfrt_rx_6gy": "sfrt.prescription",
        "peak_near_gtv_edge": "peaks.margin_to_gtv",
        "peaks_underdosed_6gy": "sfrt.peak_dose",
    }
    for variant, rule_id in expected.items():
        _, report = checked(variant)
        rule = report.rule(rule_id)
        assert rule is not None and rule.status is Status.UNACCEPTABLE_DEVIATION, (variant, rule)
        text = render_html(report, None)
        attention = _parse(text[: text.index("<h2>Arm")], whole=False).rows  # the "Needs attention" table
        assert any(rule_id in row and BADGE[Status.UNACCEPTABLE_DEVIATION] in row for row in attention)


def test_html_is_self_contained_and_embeds_the_figures(checked, drawn) -> None:
    _, report = checked("compliant")
    figures = drawn("compliant")
    text = render_html(report, figures)
    page = _parse(text)
    assert not {"script", "link", "iframe"} & page.tags
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "@media print" in text and "size: A4" in text
    available = [p for p in figures if p.available]
    assert {p.key for p in available} == {"dvh_peak", "dvh_low_dose", "slices", "profile", "ldrt"}
    assert len(page.images) == len(available)
    for src in page.images:
        assert src.startswith("data:image/svg+xml;base64,")
        svg = ET.fromstring(base64.b64decode(src.split(",", 1)[1]))
        assert svg.tag.endswith("svg")


def test_everything_quoted_is_escaped(checked) -> None:
    _, report = checked("compliant")
    evil = '<script>alert("x")</script>&'
    rules = [r.model_copy(update={"message": evil}) for r in report.rules]
    hostile = report.model_copy(update={"patient_name": evil, "rules": rules})
    text = render_html(hostile, None)
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    _parse(text)


def test_figures_of_the_compliant_course_match_the_phantom(drawn) -> None:
    figures = drawn("compliant")
    dvh = figures.get("dvh_peak")
    assert dvh is not None and dvh.figure is not None
    lines = {line.get_label(): line for line in dvh.figure.axes[0].lines}
    # every peak receives 10.3 Gy/fx throughout: 100 % of its volume gets >= 800 cGy, none 1100
    for name in ("Peak_1", "Peak_2", "Peak_3"):
        x, y = lines[name].get_data()
        assert np.interp(800.0, x, y) == pytest.approx(100.0, abs=0.5)
        assert np.interp(1100.0, x, y) == pytest.approx(0.0, abs=0.5)
    # the lesion's LDRT dose is 2 Gy/fx inside: its whole volume gets >= 150 cGy
    ldrt = figures.get("dvh_low_dose")
    assert ldrt is not None and ldrt.figure is not None
    x, y = {line.get_label(): line for line in ldrt.figure.axes[0].lines}["GTV_SFRT"].get_data()
    assert np.interp(150.0, x, y) == pytest.approx(100.0, abs=0.5)
    profile = figures.get("profile")
    assert profile is not None and profile.figure is not None
    doses = {line.get_label(): line.get_ydata() for line in profile.figure.axes[0].lines if line.get_label()[0] != "_"}
    peak = np.asarray(doses["peak (3 fx)"])
    assert peak.max() == pytest.approx(1030.0, rel=0.01)  # 10.3 Gy/fx at the peak centres
    assert 300.0 < np.asarray(peak[len(peak) // 3 : 2 * len(peak) // 3]).min() < 700.0  # a valley between peaks


def test_coronal_outline_is_the_slab_section(checked) -> None:
    course_files, _ = checked("compliant")
    course, _ = load_course(course_files)
    assert course.structure_set is not None
    gtv = SolidCache(course.structure_set).get("GTV_SFRT")  # sphere r 35 at (95, 0, 20)
    section = _coronal_section(gtv, 0.0)
    assert section.area == pytest.approx(np.pi * 35.0**2, rel=0.02)
    x0, z0, x1, z1 = section.bounds
    assert (x0, x1) == (pytest.approx(60.0, abs=0.2), pytest.approx(130.0, abs=0.2))
    assert (z0, z1) == (pytest.approx(-15.0, abs=1.3), pytest.approx(55.0, abs=1.3))
    assert _coronal_section(gtv, 40.0).is_empty


def test_a_missing_dose_replaces_figures_by_the_reason(course_dir, tmp_path: Path) -> None:
    workspace = open_workspace(find_courses([course_dir("multi_plan_dose")])[0], load_protocol())
    report = check_workspace(workspace)
    figures = build_figures(report, workspace)
    assert figures.get("dvh_peak") is not None and not figures.get("dvh_peak").available  # type: ignore[union-attr]
    reasons = [p.reason or "" for p in figures if not p.available]
    assert reasons and all("no dose" in r for r in reasons)
    text = write_html(report, figures, tmp_path / "r.html").read_text(encoding="utf-8")
    _parse(text)
    assert "not drawn — no dose for component peak" in text


def test_figures_are_fast(measured) -> None:
    report, workspace = measured("peak_near_gtv_edge")
    start = time.perf_counter()
    figures = build_figures(report, workspace)
    render_html(report, figures)
    elapsed = time.perf_counter() - start
    assert all(p.available for p in figures)
    assert elapsed < 6.0  # about 1.5 s here; a generous bound for a busy shared machine
