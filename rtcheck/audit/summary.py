"""What an audit tells the trial QA office: ``courses.csv`` and ``summary.json``.

One row per course (centre, pseudonym, arm, verdict, then each rule's status and measured
value), and the aggregates behind the questions a QA office asks: how compliant each
centre is, which rules fail most (and where), and how each measured value is distributed
by centre. Everything here works on scrubbed report data only.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..protocol import Protocol
from ..report import Status

STATUSES = [s.value for s in Status]


@dataclass
class AuditRow:
    """One course of the audit, as the outputs see it (scrubbed)."""

    centre: str
    centre_source: str
    patient: str
    course: str
    outcome: str  # report | incomplete | error
    error: str
    report: dict[str, Any]
    report_path: str

    @property
    def verdict(self) -> str:
        return str(self.report["verdict"])

    @property
    def arm(self) -> str:
        return str(self.report.get("arm", {}).get("arm") or "")


def centre_order(rows: Sequence[AuditRow]) -> list[str]:
    """Centres by name, ``unknown`` last."""
    names = {r.centre for r in rows}
    return sorted(names, key=lambda c: (c == "unknown", c.lower()))


def rule_columns(protocol: Protocol, rows: Sequence[AuditRow]) -> list[tuple[str, str]]:
    """``(rule id, unit)`` in protocol order, then rules only the reports know, by id."""
    units = {r.id: r.unit.value for r in protocol.rules}
    for row in rows:
        for rule in row.report.get("rules", []):
            units.setdefault(rule["id"], rule.get("unit", ""))
    in_protocol = list(dict.fromkeys(r.id for r in protocol.rules))
    extra = sorted(set(units) - set(in_protocol))
    return [(rid, units[rid]) for rid in [*in_protocol, *extra]]


def _unit_suffix(unit: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", unit.replace("%", "pct"))


def courses_csv(rows: Sequence[AuditRow], columns: Sequence[tuple[str, str]]) -> str:
    """``courses.csv``: one row per course, then per rule ``<id>.status`` and ``<id>.value_<unit>``."""
    head = ["centre", "centre_source", "patient", "course", "arm", "verdict", "outcome", "error", "report"]
    rule_head = []
    for rid, unit in columns:
        suffix = _unit_suffix(unit)
        rule_head += [f"{rid}.status", f"{rid}.value_{suffix}" if suffix else f"{rid}.value"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head + rule_head)
    for row in sorted(rows, key=lambda r: (r.centre.lower(), r.patient, r.course)):
        by_id = {rule["id"]: rule for rule in row.report.get("rules", [])}
        cells: list[Any] = [
            row.centre,
            row.centre_source,
            row.patient,
            row.course,
            row.arm,
            row.verdict,
            row.outcome,
            row.error,
            row.report_path,
        ]
        for rid, _ in columns:
            rule = by_id.get(rid)
            value = rule.get("value") if rule else None
            cells += [rule["status"] if rule else "", "" if value is None else f"{value:.6g}"]
        writer.writerow(cells)
    return buffer.getvalue()


def _rates(counts: dict[str, int], total: int) -> dict[str, float]:
    return {s: (counts.get(s, 0) / total if total else 0.0) for s in STATUSES}


def _stats(values: list[float]) -> dict[str, float | int]:
    a = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(a, [25, 50, 75])
    return {
        "n": int(a.size),
        "min": float(a.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def is_headline(rule_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rule_id, p) for p in patterns)


def metric_values(rows: Sequence[AuditRow]) -> dict[str, dict[str, list[float]]]:
    """Measured values by rule id, then by centre (courses whose rule gave a value)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for rule in row.report.get("rules", []):
            if rule.get("value") is not None:
                values[rule["id"]][row.centre].append(float(rule["value"]))
    return {rid: dict(by_centre) for rid, by_centre in values.items()}


def summarise(
    rows: Sequence[AuditRow],
    protocol: Protocol,
    run: dict[str, Any],
    unreadable: Sequence[tuple[str, str, str]],
    orphans: Sequence[str],
    headline: Sequence[str],
) -> dict[str, Any]:
    """``summary.json``: compliance by centre, rules that fail most, metric distributions.

    ``unreadable`` holds (centre, scrubbed path, problem) of files that could not be indexed.
    """
    centres = centre_order(rows)
    by_centre: dict[str, Any] = {}
    for centre in [*centres, None]:
        mine = [r for r in rows if centre is None or r.centre == centre]
        counts = Counter(r.verdict for r in mine)
        entry = {
            "courses": len(mine),
            "verdicts": {s: counts.get(s, 0) for s in STATUSES},
            "rates": _rates(counts, len(mine)),
            "errors": sum(r.outcome == "error" for r in mine),
            "incomplete": sum(r.outcome == "incomplete" for r in mine),
            "unreadable_files": sum(1 for c, _, _ in unreadable if centre is None or c == centre),
            "arms": dict(Counter(r.arm or "none" for r in mine)),
        }
        if centre is None:
            total = entry
        else:
            by_centre[centre] = entry

    rules: dict[str, dict[str, Any]] = {}
    for row in rows:
        for rule in row.report.get("rules", []):
            stats = rules.setdefault(
                rule["id"],
                {
                    "id": rule["id"],
                    "family": rule.get("family", ""),
                    "description": rule.get("description", ""),
                    "unit": rule.get("unit", ""),
                    "courses": 0,
                    "statuses": dict.fromkeys(STATUSES, 0),
                    "by_centre": {},
                },
            )
            stats["courses"] += 1
            stats["statuses"][rule["status"]] += 1
            centre_counts = stats["by_centre"].setdefault(row.centre, dict.fromkeys(STATUSES, 0))
            centre_counts[rule["status"]] += 1
    for stats in rules.values():
        st = stats["statuses"]
        stats["not_per_protocol"] = stats["courses"] - st[Status.PER_PROTOCOL.value]
        stats["deviation_rate"] = st[Status.UNACCEPTABLE_DEVIATION.value] / stats["courses"]
    failing = sorted(
        (e for e in rules.values() if e["not_per_protocol"]),
        key=lambda e: (
            -e["statuses"][Status.UNACCEPTABLE_DEVIATION.value],
            -e["statuses"][Status.ACCEPTABLE_VARIATION.value],
            -e["statuses"][Status.NOT_EVALUABLE.value],
            e["id"],
        ),
    )

    metrics: dict[str, Any] = {}
    limits = _limits_by_rule(rows)
    values = metric_values(rows)
    for rid in [rid for rid, _ in rule_columns(protocol, rows) if rid in values]:
        by_c = values[rid]
        meta = rules[rid]
        metrics[rid] = {
            "unit": meta["unit"],
            "description": meta["description"],
            "headline": is_headline(rid, headline),
            "per_protocol": limits.get(rid, (None, None))[0],
            "acceptable_variation": limits.get(rid, (None, None))[1],
            "by_centre": {c: _stats(by_c[c]) for c in centres if c in by_c},
        }

    return {
        "schema_version": "1.0",
        "protocol": {"name": protocol.protocol.name, "version": protocol.protocol.version, "sha256": protocol.sha256},
        "run": run,
        "totals": total,
        "centres": by_centre,
        "rules_failing_most": [e["id"] for e in failing],
        "rules": [rules[rid] for rid, _ in rule_columns(protocol, rows) if rid in rules],
        "metrics": metrics,
        "headline_rules": list(headline),
        #: the headline rules that measured something, in the order the patterns name them
        "headline_metrics": list(
            dict.fromkeys(rid for pattern in headline for rid in metrics if is_headline(rid, [pattern]))
        ),
        "unreadable_files": [{"centre": c, "path": p, "problem": m} for c, p, m in unreadable],
        "orphans": list(orphans),
    }


def _limits_by_rule(rows: Sequence[AuditRow]) -> dict[str, tuple[Any, Any]]:
    """The per-protocol and acceptable-variation limits of each rule, as its reports give them."""
    found: dict[str, tuple[Any, Any]] = {}
    for row in rows:
        for rule in row.report.get("rules", []):
            if rule["id"] not in found and (rule.get("per_protocol") or rule.get("acceptable_variation")):
                found[rule["id"]] = (rule.get("per_protocol"), rule.get("acceptable_variation"))
    return found
