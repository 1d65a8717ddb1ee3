"""What every check receives and returns, and how checks register.

A protocol rule names a *check* (``check: plan.fractions``) and gives the thresholds; the
check measures, the engine grades. The types here are all a check needs to know: the
:class:`CheckContext` it measures in, the :class:`Measurement` it returns (values in
canonical units), and :class:`NotEvaluable` when its inputs are missing or unusable. They
sit below both the checks and the engine, so neither has to import the other's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..arms import ArmAssignment
from ..course import Component, Course
from ..errors import NotEvaluable
from ..protocol import Protocol, RuleSpec
from ..report import IntegrityFinding, Status
from ..roles import RoleMatches
from ..units import Quantity
from ..workspace import Workspace

__all__ = ["Check", "CheckContext", "Item", "Measurement", "NoParams", "NotEvaluable", "check"]


@dataclass
class Item:
    """One measured item of a rule (a peak, a target), in canonical units."""

    name: str
    value: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """What a check returns: values in canonical units, and where they came from."""

    value: float | None = None
    message: str = ""
    structures: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    #: A status the check decides itself (only for findings without a numeric limit).
    status: Status | None = None


@dataclass
class CheckContext:
    """Everything a check may look at: the course's workspace, through which it measures."""

    workspace: Workspace

    @property
    def course(self) -> Course:
        return self.workspace.course

    @property
    def protocol(self) -> Protocol:
        return self.workspace.protocol

    @property
    def arm(self) -> ArmAssignment:
        return self.workspace.arm

    @property
    def roles(self) -> RoleMatches:
        return self.workspace.roles

    @property
    def integrity(self) -> list[IntegrityFinding]:
        return self.workspace.integrity

    def component(self, name: str) -> Component | None:
        return self.workspace.component(name)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Check:
    """A registered check: what it measures (its quantity) and the params it takes."""

    name: str
    quantity: Quantity
    params: type[BaseModel]
    func: Callable[[CheckContext, RuleSpec, Any], Measurement]
    doc: str


_REGISTRY: dict[str, Check] = {}


def check(
    name: str, quantity: Quantity, params: type[BaseModel] = NoParams
) -> Callable[[Callable[..., Measurement]], Callable[..., Measurement]]:
    """Register the decorated function as the check ``name``."""

    def register(func: Callable[..., Measurement]) -> Callable[..., Measurement]:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise RuntimeError(f"check {name!r} is registered twice")
        _REGISTRY[name] = Check(name, quantity, params, func, (func.__doc__ or "").strip())
        return func

    return register


def registered() -> dict[str, Check]:
    """The checks registered so far (:func:`rtcheck.rules.registry` loads them all first)."""
    return _REGISTRY


def rule_problems(rule: RuleSpec, checks: dict[str, Check]) -> list[tuple[tuple[Any, ...], str]]:
    """Problems with a rule's check, unit and params, as (YAML location, message) pairs."""
    found = checks.get(rule.check)
    if found is None:
        return [(("check",), f"unknown check {rule.check!r}; known checks: {', '.join(sorted(checks))}")]
    problems: list[tuple[tuple[Any, ...], str]] = []
    if rule.unit.quantity is not found.quantity:
        problems.append(
            (
                ("unit",),
                f"check {rule.check} measures a {found.quantity.value}; unit {rule.unit.value!r} is not one",
            )
        )
    try:
        found.params.model_validate(rule.params)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append((("params", *err["loc"]), err["msg"]))
    return problems
