"""The engine's grading: a measurement in canonical units against a rule's limits, in the rule's unit.

The phantom tests show whole courses graded; these pin the rules of grading itself: the
boundaries belong to the range they close, the acceptable band lies between the
per-protocol range and the acceptable-variation range, units are converted before any
comparison, and whatever cannot be measured is not evaluable, never a pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.engine import grade, to_result
from rtcheck.protocol import Limits, RuleSpec
from rtcheck.report import Status
from rtcheck.rules.base import Check, Item, Measurement, NoParams, NotEvaluable, registered
from rtcheck.units import Quantity

PP, AV, UD, NE = (
    Status.PER_PROTOCOL,
    Status.ACCEPTABLE_VARIATION,
    Status.UNACCEPTABLE_DEVIATION,
    Status.NOT_EVALUABLE,
)


def _rule(unit: str = "Gy", pp: dict[str, float] | None = None, av: dict[str, float] | None = None) -> RuleSpec:
    fields: dict[str, Any] = {
        "id": "test.rule",
        "check": "dose.metric",
        "description": "a rule under test",
        "unit": unit,
        "source": "test protocol",
    }
    if pp is not None:
        fields["per_protocol"] = Limits(**pp)
    if av is not None:
        fields["acceptable_variation"] = Limits(**av)
    return RuleSpec(**fields)


# A peak dose per fraction: 20 Gy per protocol from 19 to 21 Gy, acceptable from 18 to 22 Gy.
PEAK = _rule(pp={"min": 19, "max": 21}, av={"min": 18, "max": 22})


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (20.0, PP),
        (19.0, PP),  # a bound belongs to the range it closes
        (21.0, PP),
        (18.0, AV),
        (22.0, AV),
        (18.99, AV),
        (21.01, AV),
        (17.99, UD),
        (22.01, UD),
        (0.0, UD),
    ],
)
def test_grade_against_per_protocol_and_acceptable_ranges(value: float, status: Status) -> None:
    assert grade(value, PEAK) is status


def test_a_value_computed_onto_a_bound_is_on_it() -> None:
    """0.07 Gy is 7.000000000000001 cGy in floating point: still at a 7 cGy bound."""
    rule = _rule(unit="cGy", pp={"max": 7})
    assert 0.07 * 100 > 7.0
    assert to_result(rule, Measurement(value=0.07)).status is PP
    assert to_result(rule, Measurement(value=0.0701)).status is UD


def test_one_sided_limits() -> None:
    coverage = _rule(unit="%", pp={"min": 95}, av={"min": 90})
    assert [grade(v, coverage) for v in (100, 95, 92, 90, 89.9)] == [PP, PP, AV, AV, UD]
    cord = _rule(pp={"max": 8})
    assert [grade(v, cord) for v in (0, 8, 8.1)] == [PP, PP, UD]  # no acceptable band: outside is a deviation


def test_a_rule_without_limits_reports_its_value_as_per_protocol() -> None:
    rule = _rule()
    result = to_result(rule, Measurement(value=12.5))
    assert result.status is PP and result.value == 12.5 and result.per_protocol is None


def test_units_are_converted_before_grading() -> None:
    in_cgy = _rule(unit="cGy", pp={"min": 1900, "max": 2100}, av={"min": 1800, "max": 2200})
    result = to_result(in_cgy, Measurement(value=21.5))  # checks measure in Gy
    assert result.unit == "cGy" and result.value == pytest.approx(2150.0) and result.status is AV
    in_cm = _rule(unit="cm", pp={"min": 2})
    result = to_result(in_cm, Measurement(value=19.0))  # checks measure in mm
    assert result.value == pytest.approx(1.9) and result.status is UD


def test_the_worst_item_decides_and_is_the_rule_value() -> None:
    items = [Item("peak 1", 20.0), Item("peak 2", 21.5), Item("peak 3", 23.0), Item("peak 4", 19.5)]
    result = to_result(PEAK, Measurement(items=items))
    assert [i.status for i in result.items] == [PP, AV, UD, PP]
    assert result.status is UD and result.value == 23.0


def test_among_equally_bad_items_the_furthest_outside_is_the_value() -> None:
    items = [Item("peak 1", 17.0), Item("peak 2", 25.0), Item("peak 3", 22.5)]
    result = to_result(PEAK, Measurement(items=items))
    assert result.status is UD and result.value == 25.0  # 4 Gy above beats 2 Gy below


def test_an_item_that_could_not_be_measured_makes_the_rule_not_evaluable() -> None:
    result = to_result(PEAK, Measurement(items=[Item("peak 1", 20.0), Item("peak 2", None)]))
    assert [i.status for i in result.items] == [PP, NE]
    assert result.status is NE


def test_a_summary_value_outside_the_limits_is_not_hidden_by_good_items() -> None:
    result = to_result(PEAK, Measurement(value=25.0, items=[Item("peak 1", 20.0)]))
    assert result.status is UD and result.value == 25.0


def test_nothing_measured_is_not_evaluable() -> None:
    result = to_result(PEAK, Measurement(message="no dose grid"))
    assert result.status is NE and result.value is None and result.message == "no dose grid"


def test_a_status_decided_by_the_check_is_kept() -> None:
    result = to_result(_rule(unit="count"), Measurement(status=Status.UNACCEPTABLE_DEVIATION, message="3 errors"))
    assert result.status is UD


def test_the_result_carries_limits_source_and_where_it_was_measured() -> None:
    measured = Measurement(value=20.2, structures=["Peak_1"], files=["RD.SFRT.dcm"], evidence={"grid_mm": 2.5})
    result = to_result(PEAK, measured)
    assert result.per_protocol is not None and (result.per_protocol.min, result.per_protocol.max) == (19, 21)
    assert result.acceptable_variation is not None and result.acceptable_variation.max == 22
    assert result.structures == ["Peak_1"] and result.files == ["RD.SFRT.dcm"]
    assert result.source == "test protocol" and result.evidence == {"grid_mm": 2.5}


def test_checks_that_fail_are_not_evaluable_with_the_reason(course_dir) -> None:
    """Fail closed: a check that raises, on purpose or not, has not evaluated anything."""

    def missing_input(ctx: Any, spec: RuleSpec, params: Any) -> Measurement:
        raise NotEvaluable("the course has no valley structure")

    def broken(ctx: Any, spec: RuleSpec, params: Any) -> Measurement:
        raise ZeroDivisionError("division by zero")

    added = {
        "test.missing": Check("test.missing", Quantity.DOSE, NoParams, missing_input, ""),
        "test.broken": Check("test.broken", Quantity.DOSE, NoParams, broken, ""),
    }
    rules = [RuleSpec(id=f"t.{n}", check=n, description="d", unit="Gy", source="test") for n in added]
    protocol = load_protocol().model_copy(update={"rules": rules})
    (course,) = find_courses([course_dir("compliant")])
    registered().update(added)
    try:
        report = check_course(course, protocol)
    finally:
        for name in added:
            del registered()[name]
    missing, failed = report.rules
    assert missing.status is NE and missing.message == "the course has no valley structure"
    assert failed.status is NE and "ZeroDivisionError: division by zero" in failed.message
