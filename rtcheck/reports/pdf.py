"""The compliance report as a PDF on A4, for the patient's record.

The same content, in the same order, as the HTML report (:mod:`rtcheck.reports.html`):
verdict with the count per status, what needs attention, the arm, every rule by family
with per-item tables, integrity findings, the figures and the inputs. Laid out with
reportlab's platypus (tables that split across pages, a header row repeated on each page,
a footer with patient, verdict and page number on every page).

Fonts are DejaVu Sans and DejaVu Sans Mono, embedded from matplotlib's own data folder:
the PDF base-14 fonts have no glyphs for "≥", "≤", "✓" or "✗", and every machine that has
rtcheck has matplotlib. Text stays text (pdftotext finds every rule id and the verdict).
Figures are embedded as PNG at 150 dpi (about 190 dpi once scaled to the page width).
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import matplotlib
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from ..report import Report, RuleResult, Status
from .figures import Figures
from .html import BADGE, fraction_groups_text, item_detail
from .text import format_limits, format_value, summary_line

FIGURE_DPI = 150
_MARGIN = 14 * mm
_WIDTH = A4[0] - 2 * _MARGIN

_STATUS_COLOUR = {
    Status.PER_PROTOCOL: colors.HexColor("#1b7a36"),
    Status.ACCEPTABLE_VARIATION: colors.HexColor("#9a6700"),
    Status.UNACCEPTABLE_DEVIATION: colors.HexColor("#b3141d"),
    Status.NOT_EVALUABLE: colors.HexColor("#7a2a8f"),
}
_ROW_TINT = {
    Status.ACCEPTABLE_VARIATION: colors.HexColor("#fdf8ec"),
    Status.UNACCEPTABLE_DEVIATION: colors.HexColor("#fdf0f0"),
    Status.NOT_EVALUABLE: colors.HexColor("#f8f2fa"),
}
_LINE = colors.HexColor("#d9dde5")
_HEAD_BG = colors.HexColor("#f1f3f6")
_MUTE = colors.HexColor("#5b6475")


@cache
def _fonts() -> tuple[str, str, str]:
    """Register DejaVu (regular, bold, mono) from matplotlib's data folder, once."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("RtDejaVu", "RtDejaVu-Bold", "RtDejaVuMono")
    files = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf")
    for name, file in zip(names, files, strict=True):
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    pdfmetrics.registerFontFamily(names[0], normal=names[0], bold=names[1], italic=names[0], boldItalic=names[1])
    return names


@cache
def _styles() -> dict[str, ParagraphStyle]:
    regular, bold, mono = _fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=8.5, leading=10.5, alignment=TA_LEFT)
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.2, leading=8.8, textColor=_MUTE),
        "source": ParagraphStyle("source", parent=base, fontSize=6.6, leading=8, textColor=_MUTE),
        "mono": ParagraphStyle("mono", parent=base, fontName=mono, fontSize=7.2, leading=8.8),
        # rule ids are never split: a reader (and pdftotext) must find them whole
        "id": ParagraphStyle("id", parent=base, fontName=mono, fontSize=6.8, leading=8.4, splitLongWords=0),
        "monosmall": ParagraphStyle("monosmall", parent=base, fontName=mono, fontSize=6.2, leading=7.6),
        "num": ParagraphStyle("num", parent=base, alignment=TA_RIGHT),
        "h1": ParagraphStyle("h1", parent=base, fontName=bold, fontSize=17, leading=21, textColor=colors.white),
        "banner": ParagraphStyle("banner", parent=base, fontSize=9, leading=12, textColor=colors.white),
        "h2": ParagraphStyle("h2", parent=base, fontName=bold, fontSize=12.5, leading=15, spaceBefore=10, spaceAfter=4),
        "h3": ParagraphStyle("h3", parent=base, fontName=bold, fontSize=10, leading=12, spaceBefore=6, spaceAfter=3),
        "badge": ParagraphStyle("badge", parent=base, fontName=bold, fontSize=7.2, leading=8.6),
    }


def _p(text: str, style: str = "body") -> Paragraph:
    return Paragraph(escape(text), _styles()[style])


def _badge(status: Status) -> Paragraph:
    """A status as coloured bold text: symbol and word, so a grey print still reads it."""
    colour = _STATUS_COLOUR[status].hexval().replace("0x", "#")
    return Paragraph(f'<font color="{colour}">{escape(BADGE[status])}</font>', _styles()["badge"])


def render_pdf(report: Report, figures: Figures | None = None) -> bytes:
    """The report as PDF bytes (figures omitted when None)."""
    buffer = io.BytesIO()
    title = f"rtcheck report {report.patient_id} {_course(report)}: {report.verdict.label}"
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_MARGIN + 4 * mm,
        title=title,
        author=f"rtcheck {report.rtcheck_version}",
        subject=f"Protocol compliance: {report.protocol.name} v{report.protocol.version}",
        creator=f"rtcheck {report.rtcheck_version}",
    )
    story: list[Flowable] = []
    story += _verdict(report)
    story += _attention(report)
    story += _arm(report)
    story += _rules(report)
    story += _integrity(report)
    story += _figures(figures)
    story += _inputs(report)
    story += [Spacer(1, 8), _p(summary_line(report), "mono")]
    footer = f"rtcheck · {report.patient_id} · {_course(report)} · {report.verdict.label.upper()}"

    def on_page(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(_fonts()[0], 7)
        canvas.setFillColor(_MUTE)
        canvas.drawString(_MARGIN, _MARGIN - 2 * mm, footer)
        canvas.drawRightString(A4[0] - _MARGIN, _MARGIN - 2 * mm, f"page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


def write_pdf(report: Report, figures: Figures | None, path: Path | str) -> Path:
    """Write :func:`render_pdf` to ``path`` and return the path."""
    path = Path(path)
    path.write_bytes(render_pdf(report, figures))
    return path


# --------------------------------------------------------------------------- sections


def _course(report: Report) -> str:
    return " + ".join(p.label or p.name or p.sop_instance_uid for p in report.plans) or report.course_key


def _arm_text(report: Report) -> str:
    arm = report.arm
    return "none detected" if arm.arm is None else f"{arm.arm} ({'given' if arm.overridden else 'detected'})"


def _verdict(report: Report) -> list[Flowable]:
    counts = " · ".join(f"{report.counts.get(s.value, 0)} {s.label}" for s in Status)
    lines = [
        Paragraph(escape(f"Verdict: {report.verdict.label.upper()}"), _styles()["h1"]),
        _p(counts, "banner"),
        _p(
            f"Patient {report.patient_id}"
            + (f" ({report.patient_name})" if report.patient_name else "")
            + f" · course {_course(report)}",
            "banner",
        ),
        _p(
            f"Protocol {report.protocol.name} v{report.protocol.version} · arm {_arm_text(report)}"
            f" · checked {report.created}",
            "banner",
        ),
    ]
    box = Table([[line] for line in lines], colWidths=[_WIDTH])
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), _STATUS_COLOUR[report.verdict]),
                ("LEFTPADDING", (0, 0), (-1, -1), 10),
                ("TOPPADDING", (0, 0), (-1, 0), 8),
                ("BOTTOMPADDING", (0, -1), (-1, -1), 8),
            ]
        )
    )
    return [box, Spacer(1, 4)]


_COLS = [0.11, 0.22, 0.11, 0.12, 0.11, 0.33]


def _rule_cells(rule: RuleResult, *, with_source: bool) -> list[object]:
    finding: list[Flowable] = [_p(rule.message), _p(rule.description, "small")]
    if rule.structures:
        finding.append(_p("structures: " + ", ".join(rule.structures), "small"))
    if with_source and rule.source:
        finding.append(_p("source: " + rule.source, "source"))
    return [
        _badge(rule.status),
        _p(rule.id, "id"),
        _p(format_value(rule.value, rule.unit), "num"),
        _p(format_limits(rule.per_protocol, rule.unit)),
        _p(format_limits(rule.acceptable_variation, rule.unit)),
        finding,
    ]


def _rules_table(rules: list[RuleResult], *, with_items: bool, with_source: bool) -> Table:
    head = [_p(h, "small") for h in ("status", "rule", "measured", "per protocol", "acceptable", "finding")]
    rows: list[list[Any]] = [head]
    style: list[Any] = [
        ("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.4, _LINE),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    for rule in rules:
        rows.append(_rule_cells(rule, with_source=with_source))
        tint = _ROW_TINT.get(rule.status)
        if tint is not None:
            style.append(("BACKGROUND", (0, len(rows) - 1), (-1, len(rows) - 1), tint))
        if with_items and (len(rule.items) > 1 or any(i.detail for i in rule.items)):
            rows.append(["", _items_table(rule), "", "", "", ""])
            style.append(("SPAN", (1, len(rows) - 1), (-1, len(rows) - 1)))
    table = Table(rows, colWidths=[w * _WIDTH for w in _COLS], repeatRows=1)
    table.setStyle(TableStyle(style))
    return table


def _items_table(rule: RuleResult) -> Table:
    rows: list[list[object]] = [[_p(h, "small") for h in ("status", "item", "measured", "detail")]]
    style: list[Any] = [
        ("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.3, _LINE),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
    ]
    for item in rule.items:
        rows.append(
            [_badge(item.status), _p(item.name), _p(format_value(item.value, rule.unit), "num"),
             _p(item_detail(item), "small")]
        )  # fmt: skip
        tint = _ROW_TINT.get(item.status)
        if tint is not None:
            style.append(("BACKGROUND", (0, len(rows) - 1), (-1, len(rows) - 1), tint))
    inner = sum(_COLS[1:]) * _WIDTH - 6
    table = Table(rows, colWidths=[0.16 * inner, 0.26 * inner, 0.16 * inner, 0.42 * inner])
    table.setStyle(TableStyle(style))
    return table


def _attention(report: Report) -> list[Flowable]:
    bad = sorted(
        (r for r in report.rules if r.status is not Status.PER_PROTOCOL), key=lambda r: (-r.status.severity, r.id)
    )
    if not bad:
        return [_p("Needs attention", "h2"), _p(f"Nothing: all {len(report.rules)} rules are per protocol.")]
    return [_p("Needs attention (worst first)", "h2"), _rules_table(bad, with_items=False, with_source=False)]


def _arm(report: Report) -> list[Flowable]:
    out: list[Flowable] = [_p(f"Arm: {_arm_text(report)}", "h2")]
    out += [_p("• " + line, "small") for line in report.arm.evidence]
    if report.arm.components:
        rows = [[_p("component", "small"), _p("fraction groups", "small")]]
        rows += [[_p(name, "mono"), _p("; ".join(parts) or "—")] for name, parts in report.arm.components.items()]
        table = Table(rows, colWidths=[0.25 * _WIDTH, 0.75 * _WIDTH])
        table.setStyle(
            TableStyle([("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG), ("LINEBELOW", (0, 0), (-1, -1), 0.4, _LINE)])
        )
        out += [Spacer(1, 4), table]
    return out


def _rules(report: Report) -> list[Flowable]:
    out: list[Flowable] = [_p("All rules, by family", "h2")]
    families: dict[str, list[RuleResult]] = {}
    for rule in report.rules:
        families.setdefault(rule.family, []).append(rule)
    for family, rules in families.items():
        worst = max((r.status for r in rules), key=lambda s: s.severity)
        colour = _STATUS_COLOUR[worst].hexval().replace("0x", "#")
        heading = Paragraph(
            f'{escape(family)}  <font color="{colour}" size="8">{escape(BADGE[worst])}</font>', _styles()["h3"]
        )
        out += [CondPageBreak(30 * mm), heading, _rules_table(rules, with_items=True, with_source=True)]
    return out


def _integrity(report: Report) -> list[Flowable]:
    if not report.integrity and not report.notes:
        return []
    out: list[Flowable] = [_p("DICOM integrity and notes", "h2")]
    if report.integrity:
        rows: list[list[object]] = [[_p(h, "small") for h in ("severity", "file", "attribute", "problem")]]
        rows += [
            [_p(f.severity), _p(f.file, "monosmall"), _p(f"{f.keyword} {f.tag}".strip(), "small"), _p(f.message)]
            for f in report.integrity
        ]
        table = Table(rows, colWidths=[w * _WIDTH for w in (0.1, 0.32, 0.18, 0.4)], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.4, _LINE),
                ]
            )
        )
        out.append(table)
    out += [_p("• " + note, "small") for note in report.notes]
    return out


def _figures(figures: Figures | None) -> list[Flowable]:
    if figures is None:
        return []
    out: list[Flowable] = []
    heading: list[Flowable] = [_p("Figures", "h2")]  # kept on the page of the first figure
    for plot in figures:
        if plot.figure is None:
            out.append(KeepTogether([*heading, _p(f"{plot.title}: not drawn — {plot.reason}"), Spacer(1, 6)]))
            heading = []
            continue
        width_in, height_in = plot.figure.get_size_inches()
        width = _WIDTH
        height = width * height_in / width_in
        limit = A4[1] - 2 * _MARGIN - 30 * mm
        if height > limit:
            width, height = width * limit / height, limit
        image = Image(io.BytesIO(plot.png(FIGURE_DPI)), width=width, height=height)
        caption = Paragraph(f"<b>{escape(plot.title)}.</b> {escape(plot.caption)}", _styles()["small"])
        out.append(KeepTogether([*heading, image, Spacer(1, 2), caption, Spacer(1, 8)]))
        heading = []
    return out


def _inputs(report: Report) -> list[Flowable]:
    out: list[Flowable] = [CondPageBreak(60 * mm), _p("Inputs", "h2")]
    info: list[list[Any]] = [
        ["patient ID", _p(report.patient_id)],
        ["patient name", _p(report.patient_name or "—")],
        ["course", _p(report.course_key, "monosmall")],
        ["protocol", [_p(f"{report.protocol.name} v{report.protocol.version}"),
                      _p(f"sha256 {report.protocol.sha256}", "monosmall"), _p(report.protocol.path, "monosmall")]],
    ]  # fmt: skip
    table = Table([[_p(k, "small"), v] for k, v in info], colWidths=[0.18 * _WIDTH, 0.82 * _WIDTH])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.4, _LINE)]))
    out.append(table)
    if report.plans:
        rows: list[list[object]] = [[_p(h, "small") for h in ("label", "name", "SOP Instance UID", "fraction groups")]]
        rows += [
            [_p(p.label), _p(p.name), _p(p.sop_instance_uid, "monosmall"), _p(fraction_groups_text(p.fraction_groups))]
            for p in report.plans
        ]
        out += [CondPageBreak(30 * mm), _p("Plans", "h3"), _table(rows, (0.12, 0.14, 0.4, 0.34))]
    if report.files:
        rows = [[_p(h, "small") for h in ("modality", "path / SOP Instance UID", "SHA-256")]]
        rows += [
            [_p(f.modality, "small"), [_p(f.path, "monosmall"), _p(f.sop_instance_uid, "monosmall")],
             _p(f.sha256, "monosmall")]
            for f in report.files
        ]  # fmt: skip
        out += [CondPageBreak(30 * mm), _p("Files", "h3"), _table(rows, (0.11, 0.52, 0.37))]
    return out


def _table(rows: list[list[object]], widths: tuple[float, ...]) -> Table:
    table = Table(rows, colWidths=[w * _WIDTH for w in widths], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.4, _LINE),
            ]
        )
    )
    return table
