"""The page of recent checks: ``reports/index.html`` of the DICOM node.

A dosimetrist opens one page to see what the node has checked lately, newest first: one row
per course report with the patient, the plans, the arm, the verdict in colour (and as a word
and a symbol, for grey prints and colour-blind readers), the rules that need attention, the
time of the check, and a link to the course's HTML report.

The page is rebuilt from the report JSON files on disk, never from memory, so it is the
same after a restart or a ``kill -9`` as before it; reading is cached by file name, size
and modification time, so rebuilding it after every report reads only the new one. Like
the reports themselves it is one self-contained file: CSS inline, no script, no network
access; on a narrow screen each row becomes a card.

The patient is shown by Patient ID, as the node shows it in its report folders and its log;
names are left to the reports themselves. Every string from a report goes through
:func:`html.escape`.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from ..report import Report, Status
from .html import BADGE

#: The page's file name in the reports folder (patient folders never take it).
INDEX_PAGE = "index.html"
#: Rows shown; older reports stay on disk and are counted at the foot of the page.
MAX_ROWS = 200
#: Rules listed per row; the rest are counted ("+3 more").
MAX_RULES = 6
#: Seconds between reloads of the page (an HTML meta refresh, not a script).
REFRESH_S = 60

_CSS = """
:root { --pass:#1b7a36; --var:#9a6700; --fail:#b3141d; --ne:#7a2a8f; --ink:#1d2330; --mute:#5b6475;
        --line:#d9dde5; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1280px; padding: 16px 20px 32px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: var(--mute); margin: 0 0 14px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 7px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--bg); font-size: 12px; color: var(--mute); font-weight: 600; }
td.when, td.plans { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.patient, .rule { overflow-wrap: anywhere; }
.badge { display: inline-block; white-space: nowrap; font-weight: 700; font-size: 12px; padding: 2px 8px;
         border-radius: 4px; border: 1.5px solid currentColor; }
.s-per_protocol { color: #fff; background: var(--pass); border-color: var(--pass); }
.s-acceptable_variation { color: #fff; background: var(--var); border-color: var(--var); }
.s-unacceptable_deviation { color: #fff; background: var(--fail); border-color: var(--fail); }
.s-not_evaluable { color: #fff; background: var(--ne); border-color: var(--ne); }
.rule { display: block; width: max-content; max-width: 100%; margin: 0 0 3px;
        font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; padding: 1px 6px; border-radius: 4px;
        border-left: 4px solid currentColor; background: var(--bg); }
.rule.r-acceptable_variation { color: var(--var); } .rule.r-unacceptable_deviation { color: var(--fail); }
.rule.r-not_evaluable { color: var(--ne); }
.none { color: var(--mute); }
a.open { font-weight: 600; white-space: nowrap; }
tr.v-unacceptable_deviation { background: #fdf3f3; } tr.v-not_evaluable { background: #f8f2fa; }
tr.v-acceptable_variation { background: #fdf8ec; }
.empty { border: 1px dashed var(--mute); border-radius: 6px; padding: 12px; color: var(--mute); }
footer { color: var(--mute); font-size: 12.5px; margin-top: 14px; }
@media (max-width: 920px) {
  body { padding: 10px 10px 24px; font-size: 15px; }
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border: 1px solid var(--line); border-radius: 8px; margin: 0 0 10px; overflow: hidden; }
  td, td.plans { border: 0; padding: 4px 10px; white-space: normal; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--mute); font-size: 12px; }
  td.verdict, td.when { display: inline-block; width: auto; padding-top: 8px; }
}
"""


@dataclass(frozen=True)
class Row:
    """One course report as the page lists it."""

    href: str  # the HTML report (the text report when there is none), relative to the reports folder
    patient: str
    plans: str
    arm: str
    verdict: Status
    attention: list[tuple[str, Status, str]]  # rule id, status, its message
    checked: str
    written_ns: int


def _row(path: Path, reports: Path, written_ns: int) -> Row | None:
    """The row of one report JSON, or None if the file is not a report this version can read."""
    try:
        report = Report.model_validate_json(path.read_bytes())
    except (OSError, ValueError, ValidationError):
        return None
    page = path.with_suffix(".html")
    target = page if page.exists() else path.with_suffix(".txt")
    attention: list[tuple[str, Status, str]] = [
        (r.id, r.status, r.message)
        for r in sorted(report.rules, key=lambda r: (-r.status.severity, r.id))
        if r.status is not Status.PER_PROTOCOL
    ]
    # A course that was never checked (incomplete, unreadable) lists no plans in its report;
    # the node named the report after them: ``<plan labels>_<time>``.
    plans = " + ".join(p.label or p.name for p in report.plans) or path.stem.rsplit("_", 1)[0].replace("+", " + ")
    return Row(
        href=target.relative_to(reports).as_posix(),
        patient=report.patient_id,
        plans=plans,
        arm=report.arm.arm or "",
        verdict=report.verdict,
        attention=attention,
        checked=report.created,
        written_ns=written_ns,
    )


class RecentChecks:
    """The rows of the page, read from ``<reports>/<patient>/*.json``.

    Remembers what it read, by file name, size and modification time (and whether the HTML
    report is there yet), so each rebuild reads only new or changed reports; files that
    vanished drop out.
    """

    def __init__(self, reports: Path) -> None:
        self.reports = reports
        self._read: dict[Path, tuple[tuple[int, int, bool], Row | None]] = {}

    def _report_files(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        for folder in self.reports.iterdir() if self.reports.is_dir() else []:
            if folder.name.startswith(".") or not folder.is_dir():
                continue  # .rtcheck: the ledger and the outbox
            for path in folder.glob("*.json"):
                try:
                    out.append((path, path.stat()))
                except FileNotFoundError:
                    continue
        return out

    def rows(self) -> tuple[list[Row], int]:
        """The newest :data:`MAX_ROWS` rows, newest first, and how many reports there are."""
        files = self._report_files()
        files.sort(key=lambda f: (f[1].st_mtime_ns, f[0].name), reverse=True)
        rows = []
        for path, st in files[:MAX_ROWS]:
            key = (st.st_mtime_ns, st.st_size, path.with_suffix(".html").exists())
            known = self._read.get(path)
            if known is None or known[0] != key:
                known = (key, _row(path, self.reports, st.st_mtime_ns))
                self._read[path] = known
            if known[1] is not None:
                rows.append(known[1])
        shown = {path for path, _ in files[:MAX_ROWS]}
        for path in [p for p in self._read if p not in shown]:
            del self._read[path]
        return rows, len(files)

    def render(self, now: datetime | None = None) -> str:
        rows, total = self.rows()
        return render_page(rows, total, now or datetime.now().astimezone())


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(iso: str) -> str:
    """``2026-12-02T11:17:04+01:00`` as ``2026-12-02 11:17`` (the node's local time)."""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _verdict_badge(status: Status) -> str:
    return f'<span class="badge s-{status.value}" title="{_e(status.label)}">{_e(BADGE[status])}</span>'


def _attention(row: Row) -> str:
    if not row.attention:
        return '<span class="none">none</span>'
    parts = []
    for rule_id, status, message in row.attention[:MAX_RULES]:
        tip = f"{status.label}: {message}" if message else status.label
        parts.append(f'<span class="rule r-{status.value}" title="{_e(tip[:300])}">{_e(rule_id)}</span>')
    more = len(row.attention) - MAX_RULES
    if more > 0:
        parts.append(f'<span class="none">+{more} more</span>')
    return "".join(parts)


def _table_row(row: Row) -> str:
    return (
        f'<tr class="v-{row.verdict.value}">'
        f'<td class="verdict">{_verdict_badge(row.verdict)}</td>'
        f'<td class="when" data-label="checked">{_e(_when(row.checked))}</td>'
        f'<td class="patient" data-label="patient">{_e(row.patient) or "—"}</td>'
        f'<td class="plans" data-label="plans">{_e(row.plans) or "—"}</td>'
        f'<td data-label="arm">{_e(row.arm) or "—"}</td>'
        f'<td data-label="needs attention">{_attention(row)}</td>'
        f'<td><a class="open" href="{_e(row.href)}">open report</a></td>'
        "</tr>"
    )


def render_page(rows: list[Row], total: int, now: datetime) -> str:
    """The whole page: ``rows`` newest first, ``total`` reports on disk."""
    head = (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>rtcheck — recent checks</title><style>{_CSS}</style></head><body>"
        "<h1>Recent checks</h1>"
        f'<p class="meta">{len(rows)} course report(s), newest first · updated {_e(now.strftime("%Y-%m-%d %H:%M"))}'
        " · a course's verdict is its worst rule</p>"
    )
    if rows:
        body = (
            "<table><thead><tr><th>verdict</th><th>checked</th><th>patient</th><th>plans</th><th>arm</th>"
            "<th>needs attention</th><th>report</th></tr></thead><tbody>"
            + "".join(_table_row(r) for r in rows)
            + "</tbody></table>"
        )
    else:
        body = '<p class="empty">No course has been checked yet.</p>'
    older = max(0, total - MAX_ROWS)
    foot = "<footer>"
    if older > 0:
        foot += f"<p>{older} older report(s) are not listed; they stay in their folders.</p>"
    foot += "<p>Each report is also kept as JSON and text beside its HTML page.</p></footer>"
    return head + body + foot + "</body></html>\n"
