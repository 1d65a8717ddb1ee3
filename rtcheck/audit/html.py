"""``summary.html``: the audit for people, in one self-contained file.

The file is mailed around and opened offline, so it carries its CSS inline and its
figures as inline SVG (matplotlib's object API, no pyplot: no global backend state, safe
in any host program). Three questions, in this order: which centres need help
(compliance by centre), what goes wrong (rules that fail most), and how far off the
measured values are (box plots of each headline rule's value by centre, over the
protocol's per-protocol and acceptable-variation bands).
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..report import Status
from .summary import STATUSES

COLOURS = {
    Status.PER_PROTOCOL.value: "#2e7d32",
    Status.ACCEPTABLE_VARIATION.value: "#f9a825",
    Status.UNACCEPTABLE_DEVIATION.value: "#c62828",
    Status.NOT_EVALUABLE.value: "#7b1fa2",
}
LABELS = {s.value: s.label for s in Status}
#: How many rows the "rules that fail most" figure shows (the table shows them all).
TOP_RULES = 12
#: Unreadable files and orphans listed in the page (summary.json has them all).
MAX_LISTED = 200

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin-bottom:.2em}
.meta{color:#555;font-size:.9em}table{border-collapse:collapse;font-size:.9em;margin:.8em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.per_protocol{color:#2e7d32}.acceptable_variation{color:#a67c00}.unacceptable_deviation{color:#c62828}
.not_evaluable{color:#7b1fa2}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
svg{max-width:100%;height:auto}code{font-size:.9em}.small{font-size:.85em;color:#555}
"""


def _svg(fig: Any) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no timestamp)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "rtcheck-audit"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def compliance_figure(summary: dict[str, Any], centres: Sequence[str]) -> str:
    """Stacked bars: the share of each centre's courses in each verdict."""
    fig = _figure(8.0, 0.45 * len(centres) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(centres))[::-1]
    left = np.zeros(len(centres))
    for status in STATUSES:
        share = np.array([summary["centres"][c]["rates"][status] * 100 for c in centres])
        ax.barh(y, share, left=left, color=COLOURS[status], label=LABELS[status], height=0.7)
        left += share
    ax.set_yticks(y, [f"{c} (n={summary['centres'][c]['courses']})" for c in centres])
    ax.set_xlim(0, 100)
    ax.set_xlabel("courses (%)")
    ax.legend(ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    return _svg(fig)


def failing_rules_figure(rules: Sequence[dict[str, Any]]) -> str:
    """Stacked bars: for the rules that fail most, how many courses in each non-passing status."""
    shown = list(rules[:TOP_RULES])
    fig = _figure(8.0, 0.4 * len(shown) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(shown))[::-1]
    left = np.zeros(len(shown))
    for status in STATUSES[1:]:
        n = np.array([r["statuses"][status] for r in shown], dtype=float)
        ax.barh(y, n, left=left, color=COLOURS[status], label=LABELS[status], height=0.7)
        left += n
    ax.set_yticks(y, [r["id"] for r in shown])
    ax.set_xlabel("courses")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    return _svg(fig)


def _interval(limits: dict[str, Any] | None, lo: float, hi: float) -> tuple[float, float] | None:
    if not limits:
        return None
    bottom = limits.get("min")
    top = limits.get("max")
    return (lo if bottom is None else bottom, hi if top is None else top)


def _bands(ax: Any, metric: dict[str, Any], lo: float, hi: float) -> None:
    """Shade the per-protocol range green and the acceptable variation beyond it yellow."""
    pp = _interval(metric.get("per_protocol"), lo, hi)
    av = _interval(metric.get("acceptable_variation"), lo, hi)
    yellow = COLOURS[Status.ACCEPTABLE_VARIATION.value]
    if av is not None:
        spans = [av] if pp is None else [(av[0], pp[0]), (pp[1], av[1])]
        label: str | None = "acceptable variation"
        for bottom, top in spans:
            if top > bottom:
                ax.axhspan(bottom, top, color=yellow, alpha=0.2, lw=0, label=label, zorder=0)
                label = None
    if pp is not None:
        ax.axhspan(*pp, color=COLOURS[Status.PER_PROTOCOL.value], alpha=0.15, lw=0, label="per protocol", zorder=0)


def metric_figure(rule_id: str, metric: dict[str, Any], values: dict[str, list[float]], centres: Sequence[str]) -> str:
    """Box plot of a rule's measured value by centre, every course a dot, over the limits."""
    present = [c for c in centres if values.get(c)]
    fig = _figure(max(4.0, 1.1 * len(present) + 2.0), 3.2)
    ax = fig.add_subplot()
    data = [values[c] for c in present]
    everything = np.concatenate([np.asarray(d, dtype=float) for d in data])
    bounds = [
        v
        for lim in (metric.get("per_protocol"), metric.get("acceptable_variation"))
        if lim
        for v in (lim.get("min"), lim.get("max"))
        if v is not None
    ]
    lo, hi = float(min(everything.min(), *bounds)), float(max(everything.max(), *bounds))
    pad = 0.08 * (hi - lo) if hi > lo else max(1.0, abs(hi) * 0.1)
    lo, hi = lo - pad, hi + pad
    _bands(ax, metric, lo, hi)
    ax.boxplot(data, showfliers=False, widths=0.5, medianprops={"color": "#222"})
    rng = np.random.default_rng(0)  # deterministic jitter: the same audit draws the same figure
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color="#1565c0", alpha=0.7, lw=0, zorder=3)
    ax.set_xticks(range(1, len(present) + 1), [f"{c}\n(n={len(values[c])})" for c in present], fontsize=8)
    ax.set_ylim(lo, hi)
    unit = metric.get("unit") or ""
    ax.set_ylabel(f"{rule_id} ({unit})" if unit else rule_id, fontsize=9)
    if metric.get("per_protocol") or metric.get("acceptable_variation"):
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    return _svg(fig)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _limits_text(limits: dict[str, Any] | None, unit: str) -> str:
    if not limits:
        return "—"
    lo, hi = limits.get("min"), limits.get("max")
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g} {unit}".strip()
    return (f"≥ {lo:g} {unit}" if lo is not None else f"≤ {hi:g} {unit}").strip()


def render_html(summary: dict[str, Any], values: dict[str, dict[str, list[float]]], centres: Sequence[str]) -> str:
    """The whole page."""
    run, protocol, totals = summary["run"], summary["protocol"], summary["totals"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>rtcheck audit — {_e(protocol['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Protocol compliance audit — {_e(protocol['name'])} v{_e(protocol['version'])}</h1>",
        f"<p class='meta'>{totals['courses']} courses from {len(centres)} centres · generated "
        f"{_e(run['finished'])} by rtcheck {_e(run['rtcheck_version'])} · protocol sha256 "
        f"<code>{_e(protocol['sha256'][:12])}</code> · this run checked {run['checked']} course(s) and "
        f"reused {run['reused']} stored result(s)</p>",
        "<p class='small'>A course's verdict is its worst rule: <span class='per_protocol'>per protocol</span>, "
        "<span class='acceptable_variation'>acceptable variation</span>, <span class='unacceptable_deviation'>"
        "unacceptable deviation</span>, or <span class='not_evaluable'>not evaluable</span> (inputs missing or "
        "unusable, including courses that could not be read or lack a file). Patients appear only by pseudonym.</p>",
        "<h2>Compliance by centre</h2>",
        _centre_table(summary, centres),
        f"<figure>{compliance_figure(summary, centres)}<figcaption>Share of each centre's courses by verdict."
        "</figcaption></figure>",
        "<h2>Rules that fail most</h2>",
    ]
    failing = [next(r for r in summary["rules"] if r["id"] == rid) for rid in summary["rules_failing_most"]]
    if failing:
        parts.append(_rules_table(failing, centres))
        parts.append(
            f"<figure>{failing_rules_figure(failing)}<figcaption>Courses per rule that were not per protocol "
            f"(top {min(TOP_RULES, len(failing))}).</figcaption></figure>"
        )
    else:
        parts.append("<p>Every rule was per protocol in every course.</p>")
    parts.append("<h2>Measured values by centre</h2>")
    metrics = summary["metrics"]
    headline = summary["headline_metrics"]
    if not headline:
        parts.append("<p>No headline rule measured a value in any course.</p>")
    for rid in headline:
        m = metrics[rid]
        parts.append(
            f"<h3>{_e(rid)}</h3><figure>{metric_figure(rid, m, values[rid], centres)}<figcaption>"
            f"{_e(m['description'])}. Per protocol {_e(_limits_text(m['per_protocol'], m['unit']))}, acceptable "
            f"{_e(_limits_text(m['acceptable_variation'], m['unit']))}.</figcaption></figure>"
        )
    parts.append(_medians_table(metrics, centres))
    parts.append(_problem_files(summary))
    parts.append("</body></html>")
    return "\n".join(parts)


def _centre_table(summary: dict[str, Any], centres: Sequence[str]) -> str:
    head = "".join(f"<th class='{s}'>{_e(LABELS[s])}</th>" for s in STATUSES)
    rows = []
    for name, entry in [*((c, summary["centres"][c]) for c in centres), ("all centres", summary["totals"])]:
        cells = "".join(f"<td>{entry['verdicts'][s]} ({_pct(entry['rates'][s])})</td>" for s in STATUSES)
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{entry['courses']}</td>{cells}<td>{entry['errors']}</td>"
            f"<td>{entry['incomplete']}</td><td>{entry['unreadable_files']}</td></tr>"
        )
    return (
        f"<table><tr><th>centre</th><th>courses</th>{head}<th>unreadable courses</th><th>incomplete courses</th>"
        f"<th>unreadable files</th></tr>{''.join(rows)}</table>"
    )


def _rules_table(failing: Sequence[dict[str, Any]], centres: Sequence[str]) -> str:
    rows = []
    for r in failing:
        st = r["statuses"]
        worst = sorted(
            (
                (c, counts[Status.UNACCEPTABLE_DEVIATION.value] + counts[Status.ACCEPTABLE_VARIATION.value])
                for c, counts in r["by_centre"].items()
            ),
            key=lambda cn: (-cn[1], cn[0]),
        )
        where = ", ".join(f"{_e(c)} ({n})" for c, n in worst if n) or "—"
        rows.append(
            f"<tr><td><code>{_e(r['id'])}</code><br><span class='small'>{_e(r['description'])}</span></td>"
            f"<td>{r['courses']}</td>"
            + "".join(f"<td class='{s}'>{st[s]}</td>" for s in STATUSES[1:])
            + f"<td>{_pct(r['deviation_rate'])}</td><td>{where}</td></tr>"
        )
    head = "".join(f"<th class='{s}'>{_e(LABELS[s])}</th>" for s in STATUSES[1:])
    return (
        f"<table><tr><th>rule</th><th>courses</th>{head}<th>deviation rate</th>"
        f"<th>centres with deviations or variations (courses)</th></tr>{''.join(rows)}</table>"
    )


def _medians_table(metrics: dict[str, Any], centres: Sequence[str]) -> str:
    if not metrics:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in centres)
    rows = []
    for rid, m in metrics.items():
        cells = "".join(
            f"<td>{m['by_centre'][c]['median']:.4g} <span class='small'>(n={m['by_centre'][c]['n']})</span></td>"
            if c in m["by_centre"]
            else "<td>—</td>"
            for c in centres
        )
        rows.append(f"<tr><td><code>{_e(rid)}</code></td><td>{_e(m['unit'])}</td>{cells}</tr>")
    return (
        "<h3>Every measured rule: median by centre</h3>"
        f"<table><tr><th>rule</th><th>unit</th>{head}</tr>{''.join(rows)}</table>"
    )


def _problem_files(summary: dict[str, Any]) -> str:
    unreadable, orphans = summary["unreadable_files"], summary["orphans"]
    if not unreadable and not orphans:
        return ""
    items = [f"<li>{_e(u['centre'])}: <code>{_e(u['path'])}</code>: {_e(u['problem'])}</li>" for u in unreadable]
    items += [f"<li><code>{_e(o)}</code></li>" for o in orphans]
    more = len(items) - MAX_LISTED
    tail = f"<p class='small'>… and {more} more in summary.json</p>" if more > 0 else ""
    return (
        "<h2>Files no course could use</h2><p class='small'>Files that could not be read, and RT objects whose "
        f"references lead nowhere.</p><ul>{''.join(items[:MAX_LISTED])}</ul>{tail}"
    )
