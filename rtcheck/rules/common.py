"""What several rule families share: structures by role or derivation, built once per course."""

from __future__ import annotations

from ..arms import target_roi_numbers
from ..course import Roi
from ..geometry import GeometryError, Solid, SolidCache, contract, difference, expand, intersection, union
from .base import CheckContext, NotEvaluable


def solid_cache(ctx: CheckContext) -> SolidCache:
    """The course's solids; every rule of a course shares them."""
    ss = ctx.course.structure_set
    if ss is None:
        raise NotEvaluable("the course has no structure set")
    cache = ctx.cache.get("solids")
    if cache is None:
        cache = ctx.cache["solids"] = SolidCache(ss)
    return cache


def role_rois(ctx: CheckContext, role: str) -> list[Roi]:
    """Non-empty ROIs playing ``role``, by ROI number."""
    return [r for r in ctx.roles.rois(role) if not r.is_empty]


def role_solids(ctx: CheckContext, role: str) -> list[Solid]:
    """One solid per non-empty ROI of ``role`` (each a structure with volume)."""
    cache = solid_cache(ctx)
    out = []
    for roi in role_rois(ctx, role):
        try:
            solid = cache.get(roi.number)
        except GeometryError as exc:
            raise NotEvaluable(str(exc)) from exc
        if solid.has_volume:
            out.append(solid)
    return out


def structure(ctx: CheckContext, name: str) -> Solid | None:
    """A role (its ROIs together) or a derived structure of the protocol, or None if absent.

    Derived structures are built once per course and kept in the solid cache under their
    protocol name, so a DVH and a distance of the valley are of the same object.
    """
    cache = solid_cache(ctx)
    key = f"structure:{name}"
    if key in ctx.cache:
        return ctx.cache[key]
    if name in ctx.protocol.roles:
        solids = role_solids(ctx, name)
        result = None if not solids else solids[0] if len(solids) == 1 else union(*solids, name=name)
    else:
        result = _derive(ctx, name)
        if result is not None:
            cache.add(result)
    ctx.cache[key] = result
    return result


def _derive(ctx: CheckContext, name: str) -> Solid | None:
    spec = ctx.protocol.derived[name]
    operands: list[Solid] = []
    for i, operand in enumerate(spec.operands):
        base = structure(ctx, operand.role)
        if base is None:
            if spec.op == "difference" and i > 0:
                continue  # nothing to take away
            return None
        if operand.margin_mm > 0:
            base = expand(base, operand.margin_mm)
        elif operand.margin_mm < 0:
            base = contract(base, -operand.margin_mm)
        operands.append(base)
    try:
        if spec.op == "union":
            return union(*operands, name=name)
        if spec.op == "intersection":
            return intersection(*operands, name=name)
        return difference(operands[0], *operands[1:], name=name) if len(operands) > 1 else operands[0]
    except GeometryError as exc:
        raise NotEvaluable(f"derived structure {name}: {exc}") from exc


def component_targets(ctx: CheckContext, target_roles: list[str], component: str | None) -> dict[int, tuple[Roi, str]]:
    """Targets of a component: ROIs of the target roles, plus those its dose references point at.

    Returns ROI number -> (ROI, how it was identified as a target).
    """
    ss = ctx.course.structure_set
    if ss is None:
        raise NotEvaluable("the course has no structure set")
    targets: dict[int, tuple[Roi, str]] = {}
    for role in target_roles:
        for roi in ctx.roles.rois(role):
            targets[roi.number] = (roi, f"name (role {role})")
    comp = ctx.component(component) if component else None
    if comp is not None:
        for part in comp.parts:
            for number in target_roi_numbers(part.plan, part):
                if number in ss.rois and number not in targets:
                    targets[number] = (ss.rois[number], f"dose reference of plan {part.plan.display_name}")
    return targets
