"""The rule engine: run the protocol's rules on a course and grade what they measure.

Checks measure in canonical units (Gy, mm, cc, ...) and never decide a status from a
threshold themselves; the engine converts each measurement into the rule's unit and
grades it against the rule's per-protocol and acceptable-variation ranges. So every
threshold lives in the protocol YAML, and every verdict carries the value it was based on.
"""

from __future__ import annotations

import logging

from .protocol import Limits, RuleSpec
from .report import ItemResult, LimitsOut, RuleResult, Status, worst
from .rules import registry
from .rules.base import CheckContext, Measurement, NotEvaluable

log = logging.getLogger(__name__)


def grade(value: float, spec: RuleSpec) -> Status:
    """Per protocol inside the per-protocol range, variation inside the wider range."""
    pp = spec.per_protocol
    av = spec.acceptable_variation or pp
    if pp is None:
        return Status.PER_PROTOCOL  # reported only: the protocol sets no limit
    if pp.contains(value):
        return Status.PER_PROTOCOL
    if av is not None and av.contains(value):
        return Status.ACCEPTABLE_VARIATION
    return Status.UNACCEPTABLE_DEVIATION


def _excess(value: float, limits: Limits | None) -> float:
    """How far outside the limits a value is (negative: how far inside, for ranking)."""
    if limits is None:
        return 0.0
    below = limits.min - value if limits.min is not None else float("-inf")
    above = value - limits.max if limits.max is not None else float("-inf")
    return max(below, above)


def _limits(limits: Limits | None) -> LimitsOut | None:
    return None if limits is None else LimitsOut(min=limits.min, max=limits.max)


def run_rules(ctx: CheckContext, *, debug: bool = False) -> list[RuleResult]:
    """Run every rule of the context's arm, in protocol order (without an arm: the shared rules)."""
    checks = registry()
    results = []
    for spec in ctx.protocol.rules_for(ctx.arm.arm):
        check = checks[spec.check]
        params = check.params.model_validate(spec.params)
        try:
            measured = check.func(ctx, spec, params)
        except NotEvaluable as exc:
            results.append(not_evaluable(spec, str(exc)))
            continue
        except Exception as exc:
            if debug:
                raise
            # Fail closed: a check that breaks on unexpected input has not evaluated anything.
            log.exception("check %s failed on rule %s", spec.check, spec.id)
            results.append(not_evaluable(spec, f"could not be evaluated: {type(exc).__name__}: {exc}"))
            continue
        results.append(to_result(spec, measured))
    return results


def not_evaluable(spec: RuleSpec, reason: str) -> RuleResult:
    return RuleResult(
        id=spec.id,
        family=spec.family,
        description=spec.description,
        status=Status.NOT_EVALUABLE,
        unit=spec.unit.value,
        per_protocol=_limits(spec.per_protocol),
        acceptable_variation=_limits(spec.acceptable_variation),
        message=reason,
        source=spec.source,
    )


def to_result(spec: RuleSpec, m: Measurement) -> RuleResult:
    """Convert a measurement into the rule's unit and grade it (items one by one)."""
    unit = spec.unit
    items = []
    for item in m.items:
        if item.value is None:
            items.append(ItemResult(name=item.name, value=None, status=Status.NOT_EVALUABLE, detail=item.detail))
        else:
            v = unit.from_canonical(item.value)
            items.append(ItemResult(name=item.name, value=v, status=grade(v, spec), detail=item.detail))
    value = unit.from_canonical(m.value) if m.value is not None else None
    if m.status is not None:
        status = m.status
    elif items:
        status = worst([i.status for i in items])
        if value is None:
            value = _worst_item(items, spec).value
    elif value is not None:
        status = grade(value, spec)
    else:
        status = Status.NOT_EVALUABLE
    if items and status is not Status.NOT_EVALUABLE and m.status is None and value is not None:
        status = worst([status, grade(value, spec)])
    return RuleResult(
        id=spec.id,
        family=spec.family,
        description=spec.description,
        status=status,
        value=value,
        unit=unit.value,
        per_protocol=_limits(spec.per_protocol),
        acceptable_variation=_limits(spec.acceptable_variation),
        message=m.message,
        structures=m.structures,
        files=m.files,
        items=items,
        evidence=m.evidence,
        source=spec.source,
    )


def _worst_item(items: list[ItemResult], spec: RuleSpec) -> ItemResult:
    """The item that decides the rule: worst status, then furthest outside (or closest to) a limit."""
    worst_status = worst([i.status for i in items])
    candidates = [i for i in items if i.status is worst_status and i.value is not None]
    if not candidates:
        return next(i for i in items if i.status is worst_status)
    return max(candidates, key=lambda i: _excess(i.value or 0.0, spec.per_protocol))
