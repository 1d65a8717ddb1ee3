"""Rule checks: the measuring side of the protocol's rules, one module per family.

A protocol rule names a *check* (``check: plan.fractions``) and gives the thresholds; the
check measures, the engine grades. Checks register themselves with
:func:`rtcheck.rules.base.check` when their family's module is imported (here, all built-in
families); third-party rule packs plug in through the ``rtcheck.checks`` entry-point group
(a module whose import registers its checks), so a new family never touches the engine.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ..protocol import RuleSpec
from . import dose, geometry, integrity, plan, structures  # noqa: F401  (importing a family registers its checks)
from .base import Check, registered, rule_problems

_packs_loaded = False


def registry() -> dict[str, Check]:
    """All checks: the built-in families, then any installed rule packs."""
    global _packs_loaded
    if not _packs_loaded:
        for ep in entry_points(group="rtcheck.checks"):
            ep.load()
        _packs_loaded = True
    return registered()


def validate_rule_params(rule: RuleSpec) -> list[tuple[tuple[Any, ...], str]]:
    """Problems with a rule's check, unit and params against every known check."""
    return rule_problems(rule, registry())
