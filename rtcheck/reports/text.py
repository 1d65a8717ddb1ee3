"""Renderers: the report for people (terminal) and for programs (JSON).

The terminal report is read by a dosimetrist at the end of a long day: the verdict first,
then what needs attention (worst first, with the measured value against its limits), then
every rule grouped by family. The last line is a one-line summary a planning-system
script can show in its console.

Every string that came from the files (patient id, plan labels, ROI names, paths, and the
messages that quote them) is escaped with :func:`rtcheck.terminal.printable` and given to
rich as plain :class:`~rich.text.Text`, never as markup: a name cannot start a line of its
own, colour the output or inject rich markup.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..report import LimitsOut, Report, RuleResult, Status
from ..terminal import printable

if TYPE_CHECKING:  # rich is imported by the functions that draw with it: a one-line verdict needs none
    from rich.console import Console, ConsoleOptions, Group, RenderResult
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

_STYLE = {
    Status.PER_PROTOCOL: "bold green",
    Status.ACCEPTABLE_VARIATION: "bold yellow",
    Status.UNACCEPTABLE_DEVIATION: "bold red",
    Status.NOT_EVALUABLE: "bold magenta",
}
_ICON = {
    Status.PER_PROTOCOL: "PASS",
    Status.ACCEPTABLE_VARIATION: "VAR ",
    Status.UNACCEPTABLE_DEVIATION: "FAIL",
    Status.NOT_EVALUABLE: "N/E ",
}


def render_json(report: Report) -> str:
    return report.model_dump_json(indent=2)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("count", "fx"):
        text = f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"
        return f"{text} fx" if unit == "fx" else text
    text = f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}" if unit and unit != "ratio" else text


def format_limits(limits: LimitsOut | None, unit: str) -> str:
    if limits is None:
        return "—"
    u = "" if unit in ("count", "ratio") else f" {unit}"
    lo, hi = limits.min, limits.max
    if lo is not None and hi is not None:
        return f"{lo:g}{u}" if lo == hi else f"{lo:g}–{hi:g}{u}"
    if lo is not None:
        return f"≥ {lo:g}{u}"
    return f"≤ {hi:g}{u}"


def _plain(value: object, style: str = "") -> Text:
    """Text from the files, escaped, for rich to show as it is (not as markup)."""
    from rich.text import Text

    return Text(printable(value), style=style)


def _badge(status: Status) -> Text:
    from rich.text import Text

    return Text(_ICON[status], style=_STYLE[status])


def summary_line(report: Report) -> str:
    """One line for a script console: verdict, and the rules that are not per protocol."""
    bad = sorted((r for r in report.rules if r.status is not Status.PER_PROTOCOL), key=_severity_key)
    head = f"rtcheck: {report.verdict.label.upper()} ({printable(report.patient_id)} {_course_label(report)})"
    if not bad:
        return f"{head}: all {len(report.rules)} rules per protocol"
    shown = [
        f"{r.id} {r.status.label}"
        + (
            f" ({format_value(r.value, r.unit)} vs {format_limits(r.per_protocol, r.unit)})"
            if r.value is not None
            else ""
        )
        for r in bad[:4]
    ]
    more = f", +{len(bad) - 4} more" if len(bad) > 4 else ""
    return f"{head}: " + "; ".join(shown) + more


def _course_label(report: Report) -> str:
    label = " + ".join(p.label or p.name or p.sop_instance_uid for p in report.plans) or report.course_key
    return printable(label)


def _severity_key(rule: RuleResult) -> tuple[int, str]:
    return (-rule.status.severity, rule.id)


def _rules_table(rules: Iterable[RuleResult], *, title: str, with_items: bool, by_family: bool) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", pad_edge=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("per protocol", no_wrap=True)
    table.add_column("acceptable", no_wrap=True)
    table.add_column("detail", overflow="fold")
    family = None
    for rule in rules:
        if by_family and rule.family != family:
            if family is not None:
                table.add_section()
            family = rule.family
        table.add_row(
            _badge(rule.status),
            _plain(rule.id),
            _plain(format_value(rule.value, rule.unit)),
            _plain(format_limits(rule.per_protocol, rule.unit)),
            _plain(format_limits(rule.acceptable_variation, rule.unit)),
            _plain(rule.message),
        )
        if with_items and len(rule.items) > 1:
            for item in rule.items:
                extra = item.detail.get("reason", "") if item.value is None else ""
                table.add_row(
                    _badge(item.status),
                    _plain(f"  {item.name}", style="dim"),
                    _plain(format_value(item.value, rule.unit)),
                    "",
                    "",
                    _plain(extra, style="dim"),
                )
    return table


#: Below this width the rules are listed compactly (details under each rule) instead of
#: as a table whose detail column would be squeezed to a few characters per line.
WIDE_LAYOUT_COLUMNS = 150


class _Rules:
    """Rules as a table on a wide console, as a compact list on a narrow one (a pipe, a CI log)."""

    def __init__(self, rules: Iterable[RuleResult], *, title: str, with_items: bool, by_family: bool) -> None:
        self.rules = list(rules)
        self.title, self.with_items, self.by_family = title, with_items, by_family

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        if options.max_width >= WIDE_LAYOUT_COLUMNS:
            yield _rules_table(self.rules, title=self.title, with_items=self.with_items, by_family=self.by_family)
            return
        yield Text(self.title, style="bold")
        family = None
        for rule in self.rules:
            if self.by_family and rule.family != family and family is not None:
                yield Text("")
            family = rule.family
            yield from _compact_rule(rule, with_items=self.with_items)


def _compact_rule(rule: RuleResult, *, with_items: bool) -> Iterator[Text | Padding]:
    """One rule in two or more short lines: status, id and value; then its limits and detail, indented."""
    from rich.padding import Padding
    from rich.text import Text

    head = _badge(rule.status) + Text(" ") + _plain(rule.id)
    head.append(f"  {format_value(rule.value, rule.unit)}" if rule.value is not None else "")
    yield head
    limits = f"per protocol {format_limits(rule.per_protocol, rule.unit)}"
    if rule.acceptable_variation is not None:
        limits += f" · acceptable {format_limits(rule.acceptable_variation, rule.unit)}"
    lines = [limits, rule.message] if rule.per_protocol is not None else [rule.message]
    for line in lines:
        if line:
            yield Padding(_plain(line, style="dim"), (0, 0, 0, 5), expand=False)
    if with_items and len(rule.items) > 1:
        for item in rule.items:
            extra = f" ({item.detail.get('reason', '')})" if item.value is None and item.detail.get("reason") else ""
            text = _badge(item.status) + _plain(f" {item.name}: {format_value(item.value, rule.unit)}{extra}")
            yield Padding(text, (0, 0, 0, 5), expand=False)


def report_renderable(report: Report) -> Group:
    from rich.console import Group
    from rich.text import Text

    parts: list[object] = []
    verdict = Text("VERDICT: ", style="bold")
    verdict.append(report.verdict.label.upper(), style=_STYLE[report.verdict])
    counts = " · ".join(f"{n} {Status(s).label}" for s, n in report.counts.items() if n)
    parts.append(verdict + Text(f"   {counts}"))
    arm = report.arm
    arm_text = "none detected" if arm.arm is None else arm.arm + (" (given)" if arm.overridden else " (detected)")
    parts.append(_plain(f"Patient {report.patient_id} · course {_course_label(report)} · arm {arm_text}", style="dim"))
    parts.append(
        _plain(
            f"Protocol {report.protocol.name} v{report.protocol.version} (sha256 {report.protocol.sha256[:12]})",
            style="dim",
        )
    )
    for line in arm.evidence:
        parts.append(_plain(f"  {line}", style="dim"))
    if report.structure_roles:
        played = "; ".join(f"{name} → {', '.join(roles)}" for name, roles in report.structure_roles.items())
        parts.append(_plain(f"Structures: {played}", style="dim"))
    attention = sorted((r for r in report.rules if r.status is not Status.PER_PROTOCOL), key=_severity_key)
    if attention:
        parts.append(Text(""))
        parts.append(_Rules(attention, title="Needs attention (worst first)", with_items=True, by_family=False))
    order = {family: i for i, family in enumerate(dict.fromkeys(r.family for r in report.rules))}
    by_family = sorted(report.rules, key=lambda r: order[r.family])
    parts.append(Text(""))
    parts.append(_Rules(by_family, title="All rules, by family", with_items=False, by_family=True))
    errors = [f for f in report.integrity if f.severity == "error"]
    warnings = [f for f in report.integrity if f.severity != "error"]
    if errors or warnings:
        parts.append(Text(""))
        parts.append(Text(f"DICOM integrity: {len(errors)} error(s), {len(warnings)} warning(s)", style="bold"))
        for f in errors[:20]:
            where = f" {f.keyword}{f.tag}" if f.keyword else ""
            parts.append(_plain(f"  error  {f.file}{where}: {f.message}", style="red"))
        for f in warnings[:5]:
            where = f" {f.keyword}{f.tag}" if f.keyword else ""
            parts.append(_plain(f"  warn   {f.file}{where}: {f.message}", style="yellow"))
        if len(warnings) > 5:
            parts.append(Text(f"  ... {len(warnings) - 5} more warning(s) in the JSON report", style="dim"))
    parts.append(Text(""))
    parts.append(Text(summary_line(report), style=_STYLE[report.verdict]))
    return Group(*parts)  # type: ignore[arg-type]


def print_report(report: Report, console: Console) -> None:
    if console.is_terminal:
        console.print(report_renderable(report))
        return
    # A wrapped line keeps the space it was broken at; in a file or a pipe (a planning
    # system's script, a diff) those trailing spaces are noise, so they are dropped.
    with console.capture() as captured:
        console.print(report_renderable(report))
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def render_text(report: Report, width: int = 120) -> str:
    """The terminal report as plain text (no colour), e.g. for a .txt next to the JSON."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, color_system=None, highlight=False)
    print_report(report, console)
    return buffer.getvalue()
