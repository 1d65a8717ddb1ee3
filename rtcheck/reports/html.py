"""The compliance report as one self-contained HTML file, for a dosimetrist's browser.

Everything is inside the file: CSS inline, figures as ``data:`` URIs (SVG, so they print
sharply), no script, no network access. It reads top-down the way a reviewer works: the
verdict and the count per status, what needs attention, the arm and why, every rule by
family with its measured value against its limits (and per-item tables for peaks and
targets), DICOM integrity findings, the figures, and last the inputs (patient, plans,
UIDs, file hashes, protocol) that make the report traceable. Status badges carry a word and
a symbol as well as a colour, so a grey print still says which rule failed; ``@page``
rules lay it out on A4.

Every string from a DICOM file or the protocol goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..report import ItemResult, Report, RuleResult, Status
from .text import format_limits, format_value, summary_line

if TYPE_CHECKING:  # drawing needs matplotlib; the page of recent checks must not load it
    from .figures import Figures

#: Badge text per status: a symbol and a word, readable without colour.
BADGE = {
    Status.PER_PROTOCOL: "✓ PASS",
    Status.ACCEPTABLE_VARIATION: "~ VARIATION",
    Status.UNACCEPTABLE_DEVIATION: "✗ FAIL",
    Status.NOT_EVALUABLE: "? NOT EVALUABLE",
}

_CSS = """
:root { --pass:#1b7a36; --var:#9a6700; --fail:#b3141d; --ne:#7a2a8f; --ink:#1d2330; --mute:#5b6475;
        --line:#d9dde5; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1180px; padding: 20px 28px 40px; }
h1, h2, h3 { line-height: 1.2; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.verdict { border-radius: 8px; padding: 14px 18px; color: #fff; margin-bottom: 10px; }
.verdict h1 { margin: 0 0 6px; font-size: 26px; letter-spacing: .02em; }
.verdict p { margin: 2px 0; }
.v-per_protocol { background: var(--pass); } .v-acceptable_variation { background: var(--var); }
.v-unacceptable_deviation { background: var(--fail); } .v-not_evaluable { background: var(--ne); }
.counts span { display: inline-block; margin: 4px 8px 0 0; padding: 2px 8px; border-radius: 10px;
               background: rgba(255,255,255,.18); border: 1px solid rgba(255,255,255,.5); }
.meta { color: var(--mute); margin: 4px 0 0; }
.summary { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; background: var(--bg);
           padding: 8px 10px; border-radius: 6px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 10px; }
table.rules { table-layout: fixed; }
td.id { overflow-wrap: anywhere; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--bg); font-weight: 600; font-size: 12px; color: var(--mute); }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
td.nowrap { white-space: nowrap; }
.desc { color: var(--mute); font-size: 12px; }
.src { color: var(--mute); font-size: 11px; font-style: italic; }
.badge { display: inline-block; white-space: nowrap; font-weight: 700; font-size: 11.5px; padding: 1px 7px;
         border-radius: 4px; border: 1.5px solid currentColor; }
.s-per_protocol { color: var(--pass); } .s-acceptable_variation { color: var(--var); border-style: dashed; }
.s-unacceptable_deviation { color: #fff; background: var(--fail); border-color: var(--fail); }
.s-not_evaluable { color: var(--ne); border-style: dotted; }
tr.bad td { background: #fdf3f3; } tr.var td { background: #fdf8ec; } tr.ne td { background: #f8f2fa; }
table.items { width: auto; min-width: 60%; margin: 2px 0 4px 14px; }
table.items td, table.items th { padding: 2px 8px; font-size: 12.5px; }
tr.items > td { border-bottom: 1px solid var(--line); padding-top: 0; background: transparent; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 11.5px; overflow-wrap: anywhere; }
figure { margin: 12px 0 22px; break-inside: avoid; page-break-inside: avoid; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--mute); font-size: 12.5px; margin-top: 4px; }
.missing { border: 1px dashed var(--mute); border-radius: 6px; padding: 10px 12px; color: var(--mute);
           background: var(--bg); }
ul.evidence { margin: 4px 0; padding-left: 20px; color: var(--mute); font-size: 13px; }
footer { margin-top: 30px; color: var(--mute); font-size: 12px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr, .verdict { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  td.id { font-size: 9pt; }
}
"""


def render_html(report: Report, figures: Figures | None = None) -> str:
    """The report as one self-contained HTML document (figures omitted when None)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(f'rtcheck {report.verdict.label} — {report.patient_id} {_course(report)}')}</title>",
        f"<style>{_CSS}</style></head><body>",
        _verdict(report),
        _attention(report),
        _arm(report),
        _rules(report),
        _integrity(report),
        _figures(figures),
        _references(report),
        _inputs(report),
        f'<footer><p class="summary">{_e(summary_line(report))}</p>'
        f"<p>rtcheck {_e(report.rtcheck_version)} · report schema {_e(report.schema_version)} · "
        f"created {_e(report.created)}</p></footer>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(report: Report, figures: Figures | None, path: Path | str) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(render_html(report, figures), encoding="utf-8")
    return path


def report_stem(report: Report) -> str:
    """A file name (without suffix) for a course's report: patient ID and plan labels.

    For writing several courses' reports into one folder; only characters that are safe in
    file names on every system are kept.
    """
    raw = f"{report.patient_id}_{'+'.join(p.label or p.name for p in report.plans) or 'course'}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("._") or "report"


# --------------------------------------------------------------------------- sections


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _course(report: Report) -> str:
    return " + ".join(p.label or p.name or p.sop_instance_uid for p in report.plans) or report.course_key


def badge(status: Status) -> str:
    return f'<span class="badge s-{status.value}" title="{_e(status.label)}">{_e(BADGE[status])}</span>'


def _verdict(report: Report) -> str:
    counts = "".join(f"<span>{report.counts.get(s.value, 0)} {_e(s.label)}</span>" for s in Status)
    return (
        f'<header class="verdict v-{report.verdict.value}">'
        f"<h1>Verdict: {_e(report.verdict.label.upper())}</h1>"
        f'<p class="counts">{counts}</p>'
        f"<p>Patient {_e(report.patient_id)}"
        + (f" ({_e(report.patient_name)})" if report.patient_name else "")
        + f" · course {_e(_course(report))}</p>"
        f"<p>Protocol {_e(report.protocol.name)} v{_e(report.protocol.version)} · arm {_e(_arm_text(report))}"
        f" · checked {_e(report.created)}</p>"
        "</header>"
    )


def _row_class(status: Status) -> str:
    return {
        Status.UNACCEPTABLE_DEVIATION: ' class="bad"',
        Status.ACCEPTABLE_VARIATION: ' class="var"',
        Status.NOT_EVALUABLE: ' class="ne"',
    }.get(status, "")


_RULE_HEAD = (
    '<colgroup><col style="width:11%"><col style="width:19%"><col style="width:10%"><col style="width:11%">'
    '<col style="width:11%"><col style="width:38%"></colgroup>'
    "<thead><tr><th>status</th><th>rule</th><th>measured</th><th>per protocol</th>"
    "<th>acceptable</th><th>finding</th></tr></thead>"
)


def _rule_row(rule: RuleResult, *, with_items: bool, with_source: bool) -> str:
    detail = f'{_e(rule.message)}<div class="desc">{_e(rule.description)}</div>'
    if rule.structures:
        detail += f'<div class="desc">structures: {_e(", ".join(rule.structures))}</div>'
    if with_source and rule.source:
        detail += f'<div class="src">source: {_e(rule.source)}</div>'
    row = (
        f'<tr{_row_class(rule.status)}><td>{badge(rule.status)}</td><td class="id">{_e(rule.id)}</td>'
        f'<td class="num">{_e(format_value(rule.value, rule.unit))}</td>'
        f'<td class="nowrap">{_e(format_limits(rule.per_protocol, rule.unit))}</td>'
        f'<td class="nowrap">{_e(format_limits(rule.acceptable_variation, rule.unit))}</td>'
        f"<td>{detail}</td></tr>"
    )
    if with_items and _has_item_table(rule):
        row += f'<tr class="items"><td></td><td colspan="5">{_items_table(rule)}</td></tr>'
    return row


def _has_item_table(rule: RuleResult) -> bool:
    """Items are worth a table when there are several, or one that says more than the rule."""
    return len(rule.items) > 1 or any(i.detail for i in rule.items)


def _items_table(rule: RuleResult) -> str:
    rows = "".join(
        f"<tr{_row_class(item.status)}><td>{badge(item.status)}</td><td>{_e(item.name)}</td>"
        f'<td class="num">{_e(format_value(item.value, rule.unit))}</td><td>{_e(item_detail(item))}</td></tr>'
        for item in rule.items
    )
    return (
        '<table class="items"><thead><tr><th>status</th><th>item</th><th>measured</th><th>detail</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def item_detail(item: ItemResult) -> str:
    """An item's detail as one line ("volume cc: 1.778; nearest: Peak_4"), empty values left out."""
    return "; ".join(
        f"{k.replace('_', ' ')}: {_plain(v)}" for k, v in item.detail.items() if v not in (None, "", [], {})
    )


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "none"
    return str(value)


def _attention(report: Report) -> str:
    bad = sorted(
        (r for r in report.rules if r.status is not Status.PER_PROTOCOL), key=lambda r: (-r.status.severity, r.id)
    )
    if not bad:
        return f"<h2>Needs attention</h2><p>Nothing: all {len(report.rules)} rules are per protocol.</p>"
    rows = "".join(_rule_row(r, with_items=False, with_source=False) for r in bad)
    return f'<h2>Needs attention (worst first)</h2><table class="rules">{_RULE_HEAD}<tbody>{rows}</tbody></table>'


def _arm_text(report: Report) -> str:
    arm = report.arm
    return "none detected" if arm.arm is None else f"{arm.arm} ({'given' if arm.overridden else 'detected'})"


def _arm(report: Report) -> str:
    arm = report.arm
    how = _arm_text(report)
    evidence = "".join(f"<li>{_e(line)}</li>" for line in arm.evidence)
    comps = "".join(
        f'<tr><td class="id">{_e(name)}</td><td>{_e("; ".join(parts) or "—")}</td></tr>'
        for name, parts in arm.components.items()
    )
    table = (
        f"<table><thead><tr><th>component</th><th>fraction groups</th></tr></thead><tbody>{comps}</tbody></table>"
        if comps
        else ""
    )
    return f'<h2>Arm: {_e(how)}</h2><ul class="evidence">{evidence}</ul>{table}{_structure_roles(report)}'


def _structure_roles(report: Report) -> str:
    """Which drawn structure played which role of the protocol, and how when not by its name."""
    if not report.structure_roles:
        return ""
    rows = "".join(
        f'<tr><td class="id">{_e(name)}</td><td>{_e(", ".join(roles))}</td></tr>'
        for name, roles in report.structure_roles.items()
    )
    return (
        "<h3>Structures and their roles</h3>"
        f"<table><thead><tr><th>drawn as</th><th>role</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _families(rules: Iterable[RuleResult]) -> dict[str, list[RuleResult]]:
    out: dict[str, list[RuleResult]] = {}
    for rule in rules:
        out.setdefault(rule.family, []).append(rule)
    return out


def _rules(report: Report) -> str:
    sections = ["<h2>All rules, by family</h2>"]
    for family, rules in _families(report.rules).items():
        worst = max((r.status for r in rules), key=lambda s: s.severity)
        rows = "".join(_rule_row(r, with_items=True, with_source=True) for r in rules)
        sections.append(
            f'<h3 id="family-{_e(family)}">{_e(family)} {badge(worst)}</h3>'
            f'<table class="rules">{_RULE_HEAD}<tbody>{rows}</tbody></table>'
        )
    return "".join(sections)


def _references(report: Report) -> str:
    """The literature the rules' sources cite by [key], listed once."""
    if not report.protocol.references:
        return ""
    items = "".join(
        f'<li id="ref-{_e(key)}"><b>[{_e(key)}]</b> {_e(text)}</li>' for key, text in report.protocol.references.items()
    )
    return f'<h2>References</h2><ul class="evidence">{items}</ul>'


def _integrity(report: Report) -> str:
    if not report.integrity and not report.notes:
        return ""
    rows = "".join(
        f'<tr><td class="nowrap">{_e(f.severity)}</td><td class="mono">{_e(f.file)}</td>'
        f'<td class="nowrap">{_e(f.keyword)} {_e(f.tag)}</td><td>{_e(f.message)}</td></tr>'
        for f in report.integrity
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.notes)
    out = "<h2>DICOM integrity and notes</h2>"
    if rows:
        out += (
            "<table><thead><tr><th>severity</th><th>file</th><th>attribute</th><th>problem</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    if notes:
        out += f'<ul class="evidence">{notes}</ul>'
    return out


def _figures(figures: Figures | None) -> str:
    if figures is None:
        return ""
    out = ["<h2>Figures</h2>"]
    for plot in figures:
        if plot.figure is None:
            out.append(
                f'<figure><div class="missing"><strong>{_e(plot.title)}</strong>: not drawn — {_e(plot.reason)}</div>'
                "</figure>"
            )
            continue
        data = base64.b64encode(plot.svg().encode("utf-8")).decode("ascii")
        out.append(
            f'<figure><img alt="{_e(plot.title)}" src="data:image/svg+xml;base64,{data}">'
            f"<figcaption><strong>{_e(plot.title)}.</strong> {_e(plot.caption)}</figcaption></figure>"
        )
    return "".join(out)


def _inputs(report: Report) -> str:
    patient = (
        "<table><tbody>"
        f"<tr><th>patient ID</th><td>{_e(report.patient_id)}</td></tr>"
        f"<tr><th>patient name</th><td>{_e(report.patient_name or '—')}</td></tr>"
        f'<tr><th>course</th><td class="mono">{_e(report.course_key)}</td></tr>'
        f'<tr><th>protocol</th><td>{_e(report.protocol.name)} v{_e(report.protocol.version)}<div class="mono">'
        f'sha256 {_e(report.protocol.sha256)}</div><div class="mono">{_e(report.protocol.path)}</div></td></tr>'
        "</tbody></table>"
    )
    plans = "".join(
        f'<tr><td>{_e(p.label)}</td><td>{_e(p.name)}</td><td class="mono">{_e(p.sop_instance_uid)}</td>'
        f"<td>{_e(fraction_groups_text(p.fraction_groups))}</td></tr>"
        for p in report.plans
    )
    files = "".join(
        f'<tr><td>{_e(f.modality)}</td><td class="mono">{_e(f.path)}</td>'
        f'<td class="mono">{_e(f.sop_instance_uid)}</td><td class="mono">{_e(f.sha256)}</td></tr>'
        for f in report.files
    )
    out = f"<h2>Inputs</h2>{patient}"
    if plans:
        out += (
            "<h3>Plans</h3><table><thead><tr><th>label</th><th>name</th><th>SOP Instance UID</th>"
            f"<th>fraction groups</th></tr></thead><tbody>{plans}</tbody></table>"
        )
    if files:
        out += (
            "<h3>Files</h3><table><thead><tr><th>modality</th><th>path</th><th>SOP Instance UID</th>"
            f"<th>SHA-256</th></tr></thead><tbody>{files}</tbody></table>"
        )
    return out


def fraction_groups_text(groups: list[dict[str, Any]]) -> str:
    """A plan's fraction groups in one line: "group 1: 3 fx × 1000 cGy (dose_reference)"."""
    out = []
    for g in groups:
        rx = g.get("prescription_gy_per_fraction")
        text = f"group {g.get('number')}: {g.get('fractions_planned')} fx"
        if rx is not None:
            text += f" × {rx * 100:g} cGy ({g.get('prescription_source')})"
        out.append(text)
    return "; ".join(out)
