"""Structure checks by name and role: presence, counts, and which ROIs a component targets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..protocol import RuleSpec
from ..units import Quantity
from .base import CheckContext, Item, Measurement, NotEvaluable, check


class RolesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[str] = Field(min_length=1)


def _require_structure_set(ctx: CheckContext) -> None:
    if ctx.course.structure_set is None:
        raise NotEvaluable("the course has no structure set")


@check("structures.required", Quantity.COUNT, RolesParams)
def required(ctx: CheckContext, spec: RuleSpec, params: RolesParams) -> Measurement:
    """Number of required roles with no non-empty ROI (each role's matches are in the evidence)."""
    _require_structure_set(ctx)
    found: dict[str, list[str]] = {}
    missing, empty = [], []
    for role in params.roles:
        rois = ctx.roles.rois(role)
        found[role] = [r.name for r in rois]
        if not rois:
            missing.append(role)
        elif all(r.is_empty for r in rois):
            empty.append(role)
    parts = []
    if missing:
        parts.append("missing: " + ", ".join(missing))
    if empty:
        parts.append("drawn but empty: " + ", ".join(f"{r} ({', '.join(found[r])})" for r in empty))
    message = "; ".join(parts) or f"all {len(params.roles)} required structures found"
    names = sorted({n for v in found.values() for n in v})
    return Measurement(
        value=len(missing) + len(empty),
        message=message,
        structures=names,
        evidence={"matches": found},
    )


@check("structures.count", Quantity.COUNT, RolesParams)
def count(ctx: CheckContext, spec: RuleSpec, params: RolesParams) -> Measurement:
    """Number of non-empty ROIs playing any of the given roles."""
    _require_structure_set(ctx)
    rois = {r.number: r for role in params.roles for r in ctx.roles.rois(role) if not r.is_empty}
    names = [r.name for r in sorted(rois.values(), key=lambda r: r.number)]
    return Measurement(
        value=len(names),
        message=f"{len(names)} structure(s) as {' / '.join(params.roles)}: {', '.join(names) or 'none'}",
        structures=names,
    )


class ExclusionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: ROIs of these roles are targets of the component whatever the plan says...
    target_roles: list[str] = Field(min_length=1)
    #: ...and so are the ROIs the component's dose references point at.
    component: str | None = None
    #: A target playing any of these roles is a violation.
    excluded_roles: list[str] = Field(min_length=1)


@check("structures.target_exclusion", Quantity.COUNT, ExclusionParams)
def target_exclusion(ctx: CheckContext, spec: RuleSpec, params: ExclusionParams) -> Measurement:
    """Number of targets of a component that are structures the protocol excludes (by name/role)."""
    _require_structure_set(ctx)
    targets = ctx.workspace.component_targets(params.target_roles, params.component)
    excluded = {r.number for role in params.excluded_roles for r in ctx.roles.rois(role)}
    items = []
    for number, (roi, how) in sorted(targets.items()):
        roles = [role for role in params.excluded_roles if any(r.number == number for r in ctx.roles.rois(role))]
        items.append(Item(roi.name, 1.0 if number in excluded else 0.0, {"excluded_roles": roles, "target_by": how}))
    bad = [i.name for i in items if i.value]
    message = (
        f"{len(bad)} of {len(items)} target(s) are excluded structures: {', '.join(bad)}"
        if bad
        else f"none of {len(items)} target(s) is an excluded structure"
    )
    return Measurement(value=float(len(bad)), message=message, items=items, structures=[i.name for i in items])
