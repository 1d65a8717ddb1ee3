"""Rule checks: the measuring side of the protocol's rules, one module per family.

A protocol rule names a *check* (``check: plan.fractions``) and gives the thresholds; the
check measures, the engine grades. Checks register themselves with :func:`check`; a module
per family is imported by :func:`registry`, and third-party rule packs plug in through the
``rtcheck.checks`` entry-point group (a module whose import registers its checks), so a new
family never touches the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..units import Quantity

if TYPE_CHECKING:
    from ..engine import CheckContext, Measurement
    from ..protocol import RuleSpec

BUILTIN_FAMILIES = ("plan", "structures", "integrity", "geometry", "dose")


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
_loaded = False


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


def registry() -> dict[str, Check]:
    """All checks: the built-in families, then any installed rule packs."""
    global _loaded
    if not _loaded:
        for family in BUILTIN_FAMILIES:
            importlib.import_module(f"{__name__}.{family}")
        for ep in entry_points(group="rtcheck.checks"):
            ep.load()
        _loaded = True
    return _REGISTRY


def validate_rule_params(rule: RuleSpec) -> list[tuple[tuple[Any, ...], str]]:
    """Problems with a rule's check, unit and params, as (YAML location, message) pairs."""
    checks = registry()
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
