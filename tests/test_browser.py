"""rtcheck's pages in a real browser: headless Chromium, as a dosimetrist opens them.

The HTML report of a course and the audit's ``summary.html`` must open without a console
error, show every figure (an image that decoded, or an inline SVG that drew something),
and put what a reader looks for first (the verdict; the compliance by centre) in the first
screen, on a desktop and on a phone. A deliberately broken page proves the checks fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import DESKTOP, PHONE, Browser, Page, chromium

from rtcheck.reports.figures import build_figures
from rtcheck.reports.html import write_html


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def assert_page_is_whole(page: Page, figures_expected: int) -> None:
    """No console error, as many figures as the page was made with, and every one shown."""
    assert page.console_errors() == []
    figures = page.figures()
    assert len(figures) == figures_expected, figures
    not_shown = [f for f in figures if not f.shown]
    assert not_shown == [], f"figures not shown: {not_shown}"


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.script("return document.documentElement.scrollWidth <= window.innerWidth + 1"))


@pytest.mark.parametrize("variant", ["compliant", "sfrt_rx_6gy"])
def test_html_report_opens_whole_with_the_verdict_first(
    variant: str, measured: Callable, browser: Browser, tmp_path: Path
) -> None:
    report, workspace = measured(variant)
    figures = build_figures(report, workspace)
    # DVHs, axial and coronal dose, profile through the peaks, LDRT targets' doses.
    assert len(figures) >= 4
    path = write_html(report, figures, tmp_path / "report.html")
    for size in (DESKTOP, PHONE):
        page = browser.open(path, size)
        assert_page_is_whole(page, len(figures))
        assert page.bottom_of(".verdict") <= page.viewport_height(), f"verdict below the first screen at {size}"
        assert report.verdict.label.upper() in page.script("return document.querySelector('.verdict').innerText")


def test_audit_summary_opens_whole(fixtures_dir: Path, browser: Browser, tmp_path: Path) -> None:
    root = tmp_path / "submissions"
    for centre, variant in [("north", "compliant"), ("north", "sfrt_rx_7gy"), ("south", "ldrt_3_fractions")]:
        shutil.copytree(fixtures_dir / variant, root / centre / variant)
    out = tmp_path / "audit"
    args = [sys.executable, "-m", "rtcheck", "audit", str(root), "--out", str(out), "--centre-level", "1",
            "-j", "1", "--no-progress"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # worst course: unacceptable deviation
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    page = browser.open(out / "summary.html", DESKTOP)
    # compliance by centre, rules failing most, one box plot per headline rule
    assert_page_is_whole(page, 2 + len(summary["headline_metrics"]))
    assert page.bottom_of("table") <= page.viewport_height(), "compliance by centre below the first screen"


def test_the_checks_catch_a_broken_page(browser: Browser, tmp_path: Path) -> None:
    """A figure that does not decode, one that is missing and a script error are all seen."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>broken</title></head><body>"
        "<figure><img alt='bad' src='data:image/svg+xml;base64,bm90IGFuIFNWRw=='><figcaption>bad</figcaption></figure>"
        "<figure><img alt='gone' src='no-such-figure.png'><figcaption>gone</figcaption></figure>"
        "<figure><svg width='10' height='10'></svg><figcaption>empty</figcaption></figure>"
        "<script>undefinedFunction()</script></body></html>",
        encoding="utf-8",
    )
    page = browser.open(broken)
    figures = page.figures()
    assert [f.shown for f in figures] == [False, False, False]
    errors = page.console_errors()
    assert any("undefinedFunction" in e for e in errors), errors
    assert any("no-such-figure.png" in e for e in errors), errors
    with pytest.raises(AssertionError):
        assert_page_is_whole(browser.open(broken), 3)
