"""The page of recent checks (``reports/index.html``), built from report JSON files on disk.

Reports of phantom courses whose verdicts are known are laid out as the node writes them
(``<reports>/<PatientID>/<labels>_<time>.json`` beside ``.html`` and ``.txt``); the page must
list them newest first, each with its verdict, the rules that need attention and a link to
its HTML report, and read well in a real browser on a phone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import DESKTOP, PHONE, Browser, chromium

from rtcheck.api import incomplete_report, load_protocol
from rtcheck.node.ledger import patient_folder_name
from rtcheck.report import Report, Status
from rtcheck.reports import recent
from rtcheck.reports.html import render_html
from rtcheck.reports.recent import RecentChecks

NOW = datetime.fromisoformat("2026-12-02T10:00:00+00:00")


class _Rows(HTMLParser):
    """The table rows of the page: their class, cell texts and link targets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and self.rows is not None and a.get("class", "").startswith("v-"):
            self.rows.append({"class": a["class"], "cells": [], "links": []})
        elif tag == "td" and self.rows:
            self.cell = []
        elif tag == "a" and self.rows:
            self.rows[-1]["links"].append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parse_rows(page: str) -> list[dict]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows


def file_report(reports: Path, report: Report, stem: str, written_s: float, html: bool = True) -> Path:
    """Write a report as the node does (text, HTML, then JSON), with the JSON written at ``written_s``."""
    folder = reports / re.sub(r"[^A-Za-z0-9._+-]+", "_", report.patient_id)  # as the node names it, roughly
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.with_suffix(".txt").write_text("text report\n", encoding="utf-8")
    if html:
        path.with_suffix(".html").write_text(render_html(report), encoding="utf-8")
    path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    os.utime(path, (written_s, written_s))
    return path


@pytest.fixture(scope="module")
def reports(checked: Callable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three course reports written one after another, and the ledger the node keeps beside them."""
    folder = tmp_path_factory.mktemp("reports")
    _, compliant = checked("compliant")
    _, low_dose = checked("sfrt_rx_6gy")
    _, control = checked("control_arm")
    hostile = compliant.model_copy(update={"patient_id": "<b>MRN&1</b>"})
    file_report(folder, compliant, "SFRT+LDRT_20261202-0900", 1_000_000)
    file_report(folder, low_dose, "SFRT+LDRT_20261202-0910", 1_000_100)
    file_report(folder, control, "CONV_20261202-0920", 1_000_200)
    file_report(folder, hostile, "SFRT+LDRT_20261202-0930", 1_000_300, html=False)
    ledger = folder / ".rtcheck" / "abc" / "done"
    ledger.mkdir(parents=True)
    (ledger / "f.json").write_text("{}", encoding="utf-8")
    (folder / "notes.json").write_text("{}", encoding="utf-8")  # not in a patient folder: not a report
    return folder


def test_rows_are_newest_first_with_verdict_attention_and_link(reports: Path, checked: Callable) -> None:
    page = RecentChecks(reports).render(NOW)
    rows = parse_rows(page)
    assert len(rows) == 4
    order = [checked(v)[1].verdict for v in ("compliant", "control_arm", "sfrt_rx_6gy", "compliant")]
    assert [r["class"] for r in rows] == [f"v-{v.value}" for v in order]
    newest, control, low_dose, oldest = rows
    assert newest["cells"][2] == "<b>MRN&1</b>"  # shown as text, never as markup
    assert "<b>MRN&amp;1</b>" not in page and "&lt;b&gt;MRN&amp;1&lt;/b&gt;" in page
    assert newest["links"] == ["_b_MRN_1_b_/SFRT+LDRT_20261202-0930.txt"]  # no HTML report: the text one
    _, report = checked("sfrt_rx_6gy")
    needing = [r.id for r in report.rules if r.status is not Status.PER_PROTOCOL]
    assert needing and all(rule_id in low_dose["cells"][5] for rule_id in needing[: recent.MAX_RULES])
    assert low_dose["cells"][0] == "✗ FAIL"
    assert low_dose["cells"][2] == report.patient_id and low_dose["cells"][4] == report.arm.arm
    assert low_dose["cells"][3] == " + ".join(p.label for p in report.plans)
    assert control["cells"][4] == "control" and control["cells"][5] == "none"
    for row in (control, low_dose, oldest):
        (link,) = row["links"]
        assert link.endswith(".html") and (reports / link).is_file()
    assert oldest["cells"][1] == datetime.fromisoformat(checked("compliant")[1].created).strftime("%Y-%m-%d %H:%M")


def test_page_is_self_contained_and_made_for_phones(reports: Path) -> None:
    page = RecentChecks(reports).render(NOW).lower()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<script" not in page and "<link" not in page and "src=" not in page and "url(" not in page
    assert re.search(r"@media \(max-width: \d+px\)", page)


def test_the_page_follows_the_disk(reports: Path, tmp_path: Path, checked: Callable) -> None:
    """New, removed and rewritten reports show at the next rebuild; older ones beyond the cap are counted."""
    import shutil

    folder = tmp_path / "reports"
    shutil.copytree(reports, folder)
    page = RecentChecks(folder)
    assert len(page.rows()[0]) == 4
    _, report = checked("control_arm")
    added = file_report(folder, report, "CONV_20261202-1000", 1_000_400)
    assert page.rows()[0][0].href == added.with_suffix(".html").relative_to(folder).as_posix()
    added.unlink()
    rows, total = page.rows()
    assert (len(rows), total) == (4, 4)
    first = rows[0].href
    assert first.endswith(".txt")
    (folder / first).with_suffix(".html").write_text("<html></html>", encoding="utf-8")
    assert page.rows()[0][0].href.endswith(".html")  # the HTML report came after its JSON


def test_older_reports_beyond_the_cap_are_counted(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recent, "MAX_ROWS", 2)
    text = RecentChecks(reports).render(NOW)
    assert len(parse_rows(text)) == 2
    assert "2 older report(s) are not listed" in text


def test_no_reports_yet(tmp_path: Path) -> None:
    text = RecentChecks(tmp_path / "reports").render(NOW)
    assert parse_rows(text) == [] and "No course has been checked yet." in text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_page_reads_on_a_phone(reports: Path, browser: Browser, tmp_path: Path) -> None:
    path = tmp_path / "index.html"
    path.write_text(RecentChecks(reports).render(NOW), encoding="utf-8")
    for size in (DESKTOP, (768, 1024)):  # no sideways scrolling on a desktop or a tablet either
        assert browser.open(path, size).script("return document.documentElement.scrollWidth") <= size[0]
    page = browser.open(path, PHONE)
    assert page.console_errors() == []
    assert page.script("return document.documentElement.scrollWidth") <= PHONE[0]
    # the newest course's verdict and link are on the first screen
    assert page.bottom_of("tbody tr a") <= page.viewport_height()
    assert page.script("return getComputedStyle(document.querySelector('thead')).display") == "none"


def test_a_course_never_checked_shows_its_plans_and_why(checked: Callable, tmp_path: Path) -> None:
    """An incomplete course's report lists no plans: the row takes them from the report's name."""
    course, _ = checked("compliant")
    report = incomplete_report(course, load_protocol())
    file_report(tmp_path, report, "LDRT+SFRT_20261202-0940-2", 1_000_000)
    (row,) = parse_rows(RecentChecks(tmp_path).render(NOW))
    assert row["class"] == "v-not_evaluable"
    assert row["cells"][3] == "LDRT + SFRT" and row["cells"][4] == "—"
    assert row["cells"][5] == "course.complete"


def test_no_patient_folder_takes_the_page_name() -> None:
    assert patient_folder_name("MRN40011") == "MRN40011"
    for patient_id in ("index.html", "INDEX.html"):
        assert patient_folder_name(patient_id).lower() != recent.INDEX_PAGE
        assert patient_folder_name(patient_id).startswith(patient_id + "_")
