"""Geometric checks: where structures are, how big, how far apart (see :mod:`rtcheck.geometry`).

SFRT is a geometric technique: where the peaks sit decides both efficacy and toxicity.
Each check measures every structure of a role as an item (one peak, one target), so the
report names the worst one and keeps the per-structure table as evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..geometry import (
    GeometryError,
    Solid,
    TiltedPlanesError,
    centre_distance_mm,
    margin_mm,
    min_distance_mm,
    overlap_fraction,
    overlap_volume_cc,
    union,
)
from ..protocol import RuleSpec
from ..units import Quantity
from .base import CheckContext, Item, Measurement, NotEvaluable, check


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RolesParams(_Params):
    roles: list[str] = Field(min_length=1)


class ContainerParams(RolesParams):
    #: A role or derived structure the ROIs of ``roles`` are measured against.
    container: str


def _solids(ctx: CheckContext, roles: list[str]) -> list[Solid]:
    solids = [s for role in roles for s in ctx.workspace.role_solids(role)]
    if not solids:
        raise NotEvaluable(f"no structure with a volume as {' / '.join(roles)}")
    return solids


def _container(ctx: CheckContext, name: str) -> Solid:
    solid = ctx.workspace.structure(name)
    if solid is None:
        raise NotEvaluable(f"no {name} structure to measure against")
    return solid


def _measure(func: Callable[..., float], *args: Solid) -> float:
    try:
        return float(func(*args))
    except GeometryError as exc:
        raise NotEvaluable(str(exc)) from exc


@check("geometry.inside", Quantity.PERCENT, ContainerParams)
def inside(ctx: CheckContext, spec: RuleSpec, params: ContainerParams) -> Measurement:
    """Percentage of each structure's volume that lies inside the container."""
    container = _container(ctx, params.container)
    items = [
        Item(s.name, 100.0 * _measure(overlap_fraction, s, container), {"volume_cc": round(s.volume_cc, 3)})
        for s in _solids(ctx, params.roles)
    ]
    outside = [i.name for i in items if (i.value or 0.0) < 100.0 - 1e-6]
    message = f"{len(items) - len(outside)} of {len(items)} inside {container.name}" + (
        f"; partly or wholly outside: {', '.join(outside)}" if outside else ""
    )
    return Measurement(message=message, items=items, structures=[*(i.name for i in items), container.name])


@check("geometry.margin", Quantity.LENGTH, ContainerParams)
def margin(ctx: CheckContext, spec: RuleSpec, params: ContainerParams) -> Measurement:
    """Each structure's smallest distance to the container's surface (negative: it sticks out)."""
    container = _container(ctx, params.container)
    items = [Item(s.name, _measure(margin_mm, s, container)) for s in _solids(ctx, params.roles)]
    worst = min(items, key=lambda i: i.value or 0.0)
    message = f"smallest margin to {container.name}: {worst.name} {worst.value:.1f} mm"
    return Measurement(message=message, items=items, structures=[*(i.name for i in items), container.name])


@check("geometry.spacing", Quantity.LENGTH, RolesParams)
def spacing(ctx: CheckContext, spec: RuleSpec, params: RolesParams) -> Measurement:
    """Centre-to-centre distance from each structure to its nearest neighbour of the same roles."""
    solids = _solids(ctx, params.roles)
    if len(solids) < 2:
        raise NotEvaluable(f"{len(solids)} structure as {' / '.join(params.roles)}: no spacing to measure")
    n = len(solids)
    dist = np.full((n, n), np.inf)
    for i, j in combinations(range(n), 2):
        dist[i, j] = dist[j, i] = _measure(centre_distance_mm, solids[i], solids[j])
    nearest = dist.argmin(axis=1)
    items = [
        Item(s.name, float(dist[i, nearest[i]]), {"nearest": solids[nearest[i]].name}) for i, s in enumerate(solids)
    ]
    worst = min(items, key=lambda i: i.value or 0.0)
    message = f"closest pair: {worst.name} - {worst.detail['nearest']} {worst.value:.1f} mm centre to centre"
    return Measurement(message=message, items=items, structures=[i.name for i in items])


@check("geometry.diameter", Quantity.LENGTH, RolesParams)
def diameter(ctx: CheckContext, spec: RuleSpec, params: RolesParams) -> Measurement:
    """Equivalent-sphere diameter of each structure."""
    items = [
        Item(s.name, s.equivalent_sphere_diameter_mm, {"volume_cc": round(s.volume_cc, 3)})
        for s in _solids(ctx, params.roles)
    ]
    lo, hi = min(i.value or 0 for i in items), max(i.value or 0 for i in items)
    message = f"{len(items)} structure(s), equivalent diameters {lo:.1f}–{hi:.1f} mm"
    return Measurement(message=message, items=items, structures=[i.name for i in items])


@check("geometry.volume_ratio", Quantity.PERCENT, ContainerParams)
def volume_ratio(ctx: CheckContext, spec: RuleSpec, params: ContainerParams) -> Measurement:
    """Total volume of the structures as a percentage of the container's volume."""
    container = _container(ctx, params.container)
    solids = _solids(ctx, params.roles)
    total = sum(s.volume_cc for s in solids)
    ratio = 100.0 * total / container.volume_cc
    return Measurement(
        value=ratio,
        message=f"{len(solids)} structure(s), {total:.2f} cc of {container.name} {container.volume_cc:.1f} cc",
        structures=[*(s.name for s in solids), container.name],
        evidence={"total_cc": round(total, 3), "container_cc": round(container.volume_cc, 3)},
    )


class DistanceParams(RolesParams):
    #: Distances are measured from the union of ``roles`` to each structure of these roles.
    to_roles: list[str] = Field(min_length=1)


@check("geometry.distance", Quantity.LENGTH, DistanceParams)
def distance(ctx: CheckContext, spec: RuleSpec, params: DistanceParams) -> Measurement:
    """Smallest surface distance from any structure of ``roles`` to each structure of ``to_roles``."""
    sources = _solids(ctx, params.roles)
    targets = [s for role in params.to_roles for s in ctx.workspace.role_solids(role)]
    if not targets:
        raise NotEvaluable(f"none of {', '.join(params.to_roles)} is contoured")
    items = []
    for target in targets:
        distances = [(_measure(min_distance_mm, s, target), s.name) for s in sources]
        d, closest = min(distances)
        items.append(Item(target.name, d, {"closest": closest}))
    worst = min(items, key=lambda i: i.value or 0.0)
    message = f"closest: {worst.detail['closest']} to {worst.name} {worst.value:.1f} mm"
    return Measurement(message=message, items=items, structures=[*(s.name for s in sources), *(i.name for i in items)])


class LesionParams(RolesParams):
    #: Structures (e.g. peaks) whose lesion is reported.
    members_role: str | None = None


@check("geometry.lesion_count", Quantity.COUNT, LesionParams)
def lesion_count(ctx: CheckContext, spec: RuleSpec, params: LesionParams) -> Measurement:
    """Number of separate lesions (connected 3-D components) drawn as the given roles."""
    solids = [s for role in params.roles for s in ctx.workspace.role_solids(role)]
    if not solids:
        return Measurement(value=0.0, message=f"no structure as {' / '.join(params.roles)}")
    together = solids[0] if len(solids) == 1 else union(*solids, name=" + ".join(s.name for s in solids))
    lesions = together.components()
    members = ctx.workspace.role_solids(params.members_role) if params.members_role else []
    evidence: list[dict[str, Any]] = []
    for k, lesion in enumerate(lesions, 1):
        inside = [m.name for m in members if overlap_fraction(m, lesion) > 0.5]
        evidence.append({"lesion": k, "volume_cc": round(lesion.volume_cc, 2), "members": inside})
    holding = sum(1 for e in evidence if e["members"])
    detail = "; ".join(f"lesion {e['lesion']}: {e['volume_cc']} cc, {len(e['members'])} member(s)" for e in evidence)
    return Measurement(
        value=float(len(lesions)),
        message=f"{len(lesions)} lesion(s) in {', '.join(s.name for s in solids)} ({detail})",
        structures=[s.name for s in solids],
        evidence={"lesions": evidence, "lesions_holding_members": holding},
    )


class ExclusionParams(_Params):
    target_roles: list[str] = Field(min_length=1)
    component: str | None = None
    excluded_roles: list[str] = Field(min_length=1)
    #: Overlap volume (cc) with an excluded structure above which a target counts as overlapping.
    max_overlap_cc: float = Field(default=0.0, ge=0.0)


@check("geometry.target_exclusion", Quantity.COUNT, ExclusionParams)
def target_exclusion(ctx: CheckContext, spec: RuleSpec, params: ExclusionParams) -> Measurement:
    """Targets that are an excluded structure by name, or overlap one in space."""
    ws = ctx.workspace
    targets = ws.component_targets(params.target_roles, params.component)
    excluded = {roi.number: roi for role in params.excluded_roles for roi in ws.role_rois(role)}
    items = []
    for number, (roi, how) in sorted(targets.items()):
        detail: dict[str, object] = {"target_by": how}
        if number in excluded:
            detail["reason"] = "is itself an excluded structure"
            items.append(Item(roi.name, 1.0, detail))
            continue
        target = ws.solid(number)
        if not target.has_volume:
            raise NotEvaluable(f"target {roi.name} has no volume")
        overlaps, nearest = {}, (float("inf"), "")
        for other in excluded.values():
            solid = ws.solids.get(other.number)
            if not solid.has_volume:
                continue
            cc = overlap_volume_cc(target, solid)
            if cc > params.max_overlap_cc:
                overlaps[other.name] = round(cc, 3)
            # where the nearest one is, not a graded distance: the bulk surfaces suffice
            nearest = min(nearest, (min_distance_mm(target.bulk, solid.bulk), other.name))
        detail["overlap_cc"] = overlaps
        if nearest[1]:
            detail["nearest_excluded"] = nearest[1]
            detail["distance_mm"] = round(nearest[0], 1)
        items.append(Item(roi.name, 1.0 if overlaps else 0.0, detail))
    bad = [i for i in items if i.value]
    message = (
        "; ".join(
            f"{i.name} overlaps {', '.join(f'{k} ({v} cc)' for k, v in i.detail['overlap_cc'].items())}"
            if i.detail.get("overlap_cc")
            else f"{i.name} {i.detail['reason']}"
            for i in bad
        )
        if bad
        else f"none of {len(items)} target(s) is or overlaps an excluded structure"
    )
    return Measurement(value=float(len(bad)), message=message, items=items, structures=[i.name for i in items])


class IntegrityParams(_Params):
    #: Roles whose ROIs are checked; empty: every ROI of the structure set.
    roles: list[str] = []


@check("geometry.integrity", Quantity.COUNT, IntegrityParams)
def integrity(ctx: CheckContext, spec: RuleSpec, params: IntegrityParams) -> Measurement:
    """Contour problems that change the drawn shape: empty ROIs, open or unusable contours, gaps.

    Errors (a contour left out, an empty ROI the protocol uses) are counted; warnings
    (a self-intersection repaired, a slightly tilted contour) are listed as evidence.
    """
    cache = ctx.workspace.solids
    ss = cache.structure_set
    if params.roles:
        rois = {r.number: r for role in params.roles for r in ctx.roles.rois(role)}
    else:
        rois = dict(ss.rois)
    errors: list[str] = []
    warnings: list[str] = []
    tilted: list[str] = []
    for roi in sorted(rois.values(), key=lambda r: r.number):
        if roi.is_empty:
            errors.append(f"ROI '{roi.name}' is empty")
            continue
        try:
            solid = cache.get(roi.number)
        except TiltedPlanesError as exc:
            tilted.append(str(exc))
            continue
        except GeometryError as exc:
            errors.append(str(exc))
            continue
        for issue in solid.issues:
            (errors if issue.severity == "error" else warnings).append(str(issue))
        for lo, hi in solid.gaps_mm():
            warnings.append(f"ROI '{roi.name}': no contour between z = {lo:.2f} and {hi:.2f} mm (a gap)")
    if tilted and not errors:
        more = f" (and {len(tilted) - 1} more ROI(s))" if len(tilted) > 1 else ""
        raise NotEvaluable(tilted[0] + more)
    warnings.extend(tilted)
    message = f"{len(errors)} error(s), {len(warnings)} warning(s) in {len(rois)} structure(s)" + (
        f"; first: {errors[0]}" if errors else ""
    )
    return Measurement(
        value=float(len(errors)),
        message=message,
        structures=[r.name for r in rois.values()],
        evidence={"errors": errors, "warnings": warnings},
    )
