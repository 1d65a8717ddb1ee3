"""Dose checks: DVH metrics of a component's dose per fraction, PVDR, composite OAR doses.

Doses per fraction are evaluated per component (the 3-fraction peaks, the 5-fraction
valley/LDRT), never on the course total, because the trial prescribes per fraction and
the components differ in fractionation. Organ-at-risk constraints are evaluated on the
composite of all components, physically and as EQD2 (the linear-quadratic dose in 2-Gy
fractions, with the alpha/beta of the role), because 3- and 5-fraction doses do not add
biologically.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..dose import DoseGrid
from ..dvh import COVERAGE_TOLERANCE_CC, StructureDose, uncovered_cc
from ..geometry import Solid
from ..protocol import RuleSpec
from ..units import Quantity
from .base import CheckContext, Item, Measurement, NotEvaluable, check

_METRIC = re.compile(r"^(Dmean|Dmax|Dmin|D(\d+(?:\.\d+)?)(%|cc))$")


def dose_metric(sd: StructureDose, metric: str) -> float:
    """A dose metric (Gy) by its TG-263 name: Dmean, Dmax, Dmin, D95%, D0.03cc, ..."""
    m = _METRIC.match(metric)
    if m is None:
        raise ValueError(f"unknown dose metric {metric!r}")
    if metric == "Dmean":
        return sd.dmean
    if metric == "Dmax":
        return sd.dmax
    if metric == "Dmin":
        return sd.dmin
    amount = float(m.group(2))
    return sd.d_percent(amount) if m.group(3) == "%" else sd.d_cc(amount)


def _check_metric(value: str) -> str:
    if not _METRIC.match(value):
        raise ValueError(f"unknown dose metric {value!r}: use Dmean, Dmax, Dmin, D<x>% or D<x>cc")
    return value


#: A dose metric name, validated when the protocol loads.
MetricName = Annotated[str, AfterValidator(_check_metric)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricParams(_Params):
    #: The component whose dose per fraction is evaluated.
    component: str
    #: Each ROI of these roles is evaluated as an item...
    roles: list[str] = []
    #: ...or one structure (a role taken as a whole, or a derived structure)...
    structure: str | None = None
    #: ...and, if that is absent, this one (e.g. the derived valley when none was drawn).
    fallback: str | None = None
    metric: MetricName = "Dmean"
    #: Volume (cc) of a structure that may lie outside the dose grid before it is not evaluable.
    coverage_tolerance_cc: float = Field(default=COVERAGE_TOLERANCE_CC, ge=0.0)


def _per_fraction(ctx: CheckContext, component: str) -> tuple[DoseGrid, int]:
    """The component's dose per fraction and its number of fractions."""
    dose = ctx.workspace.component_dose(component)
    return dose.per_fraction, dose.fractions


def _evaluate(sd: StructureDose, metric: str, tolerance_cc: float) -> tuple[float | None, dict[str, object]]:
    """The metric, or None with the reason when the structure is not covered by the grid."""
    detail: dict[str, object] = {"volume_cc": round(sd.volume_cc, 3)}
    if sd.uncovered_cc > tolerance_cc:
        detail["reason"] = f"{sd.uncovered_cc:.2f} cc of {sd.volume_cc:.2f} cc lie outside the dose grid"
        detail["uncovered_cc"] = round(sd.uncovered_cc, 3)
        return None, detail
    if sd.uncovered_cc > 0:
        sd = sd.covered_part()
        detail["uncovered_cc"] = round(sd.uncovered_cc, 3)
    detail.update({"dmean_gy": round(sd.dmean, 4), "dmax_gy": round(sd.dmax, 4), "d95_gy": round(sd.d_percent(95), 4)})
    return dose_metric(sd, metric), detail


def _targets(ctx: CheckContext, params: MetricParams) -> list[Solid]:
    if params.roles:
        solids = [s for role in params.roles for s in ctx.workspace.role_solids(role)]
        if not solids:
            raise NotEvaluable(f"no structure as {' / '.join(params.roles)}")
        return solids
    for name in (params.structure, params.fallback):
        if name is not None:
            solid = ctx.workspace.structure(name)
            if solid is not None:
                return [solid]
    raise NotEvaluable(f"no {params.structure} structure" + (f" and no {params.fallback}" if params.fallback else ""))


@check("dose.metric", Quantity.DOSE, MetricParams)
def metric(ctx: CheckContext, spec: RuleSpec, params: MetricParams) -> Measurement:
    """A DVH metric of the component's dose per fraction, per structure."""
    if not params.roles and params.structure is None:
        raise NotEvaluable("the rule names neither roles nor a structure")
    grid, fractions = _per_fraction(ctx, params.component)
    items = []
    for solid in _targets(ctx, params):
        value, detail = _evaluate(
            ctx.workspace.structure_dose(grid, solid), params.metric, params.coverage_tolerance_cc
        )
        items.append(Item(solid.name, value, detail))
    return Measurement(
        message=f"{params.metric} per fraction of the {params.component} dose ({fractions} fx)",
        items=items,
        structures=[i.name for i in items],
        files=[str(s.path) for s in grid.sources],
        evidence={"dose": grid.note},
    )


class PvdrParams(_Params):
    component: str
    peak_roles: list[str] = Field(min_length=1)
    #: The valley: drawn (a role) or derived.
    valley: str
    valley_fallback: str | None = None
    #: The SFRT lesion, for D10/D90.
    lesion: str
    #: Which ratio is graded: mean peak Dmean over valley Dmean, or D10/D90 of the lesion.
    definition: Literal["peak_valley_mean", "lesion_d10_d90"] = "peak_valley_mean"


@check("dose.pvdr", Quantity.RATIO, PvdrParams)
def pvdr(ctx: CheckContext, spec: RuleSpec, params: PvdrParams) -> Measurement:
    """Peak-to-valley dose ratio of a component, with D10/D90 of the lesion beside it.

    No single PVDR definition is standard (domain notes §1): both are reported and the
    protocol names the one it grades.
    """
    grid, _ = _per_fraction(ctx, params.component)
    peaks = [s for role in params.peak_roles for s in ctx.workspace.role_solids(role)]
    valley = ctx.workspace.structure(params.valley) or (
        ctx.workspace.structure(params.valley_fallback) if params.valley_fallback else None
    )
    lesion = ctx.workspace.structure(params.lesion)
    if not peaks or valley is None or lesion is None:
        raise NotEvaluable("PVDR needs peaks, a valley (drawn or derived) and the lesion")
    peak_means = []
    for p in peaks:
        value, detail = _evaluate(ctx.workspace.structure_dose(grid, p), "Dmean", COVERAGE_TOLERANCE_CC)
        if value is None:
            raise NotEvaluable(f"{p.name}: {detail['reason']}")
        peak_means.append(value)
    valley_mean, _ = _evaluate(ctx.workspace.structure_dose(grid, valley), "Dmean", COVERAGE_TOLERANCE_CC)
    lesion_sd = ctx.workspace.structure_dose(grid, lesion)
    if valley_mean is None or lesion_sd.uncovered_cc > COVERAGE_TOLERANCE_CC:
        raise NotEvaluable("the valley or the lesion lies partly outside the dose grid")
    d10, d90 = lesion_sd.d_percent(10), lesion_sd.d_percent(90)
    # A ratio over a zero dose is undefined (None), not infinite: JSON has no infinity.
    ratios = {
        "peak_valley_mean": float(np.mean(peak_means)) / valley_mean if valley_mean > 0 else None,
        "lesion_d10_d90": d10 / d90 if d90 > 0 else None,
    }
    value = ratios[params.definition]
    if value is None:
        raise NotEvaluable(f"the ratio {params.definition} is undefined: its denominator receives no dose")
    d10_d90 = "undefined" if ratios["lesion_d10_d90"] is None else f"{ratios['lesion_d10_d90']:.2f}"
    return Measurement(
        value=value,
        message=(
            f"PVDR ({params.definition}) {value:.2f}: mean peak Dmean {np.mean(peak_means):.2f} Gy / valley "
            f"({valley.name}) Dmean {valley_mean:.2f} Gy; {lesion.name} D10/D90 = {d10:.2f}/{d90:.2f} Gy "
            f"= {d10_d90}"
        ),
        structures=[*(p.name for p in peaks), valley.name, lesion.name],
        files=[str(s.path) for s in grid.sources],
        evidence={
            "ratios": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
            "peak_dmean_gy": [round(v, 3) for v in peak_means],
            "valley_dmean_gy": round(valley_mean, 3),
            "lesion_d10_gy": round(d10, 3),
            "lesion_d90_gy": round(d90, 3),
        },
    )


# --- composite (all components) ---------------------------------------------------------------


class CompositeParams(_Params):
    #: The organ at risk: a role (its ROIs together) or a derived structure.
    structure: str
    metric: MetricName = "Dmean"
    #: Graded on EQD2 with this alpha/beta (Gy), or on the physical dose when absent.
    alpha_beta_gy: float | None = Field(default=None, gt=0)


def _oar(ctx: CheckContext, name: str) -> Solid:
    solid = ctx.workspace.structure(name)
    if solid is None:
        raise NotEvaluable(f"no {name} structure")
    return solid


@check("dose.composite", Quantity.DOSE, CompositeParams)
def composite(ctx: CheckContext, spec: RuleSpec, params: CompositeParams) -> Measurement:
    """A DVH metric of the course's composite dose (EQD2 or physical), from whichever doses it has."""
    solid = _oar(ctx, params.structure)
    values: dict[str, float] = {}
    for label, ab in (("physical", None), ("eqd2", params.alpha_beta_gy)):
        if label == "eqd2" and ab is None:
            continue
        try:
            grid = ctx.workspace.composite_dose(ab)
        except NotEvaluable as exc:
            if "physical" in values:
                measured = f"{params.metric} of {solid.name}: {values['physical']:.2f} Gy physical"
                raise NotEvaluable(f"{measured}; {exc}") from exc
            raise
        value, detail = _evaluate(ctx.workspace.structure_dose(grid, solid), params.metric, COVERAGE_TOLERANCE_CC)
        if value is None:
            raise NotEvaluable(f"{solid.name}: {detail['reason']}")
        values[label] = value
    graded = "eqd2" if params.alpha_beta_gy is not None else "physical"
    other = "physical" if graded == "eqd2" else None
    message = f"{params.metric} of {solid.name}: {values[graded]:.2f} Gy {graded.upper()}"
    if other:
        message += f" ({values[other]:.2f} Gy physical)"
    grid = ctx.workspace.composite_dose(None)
    return Measurement(
        value=values[graded],
        message=f"{message} from {ctx.workspace.course_dose_summary()}",
        structures=[solid.name],
        files=[str(s.path) for s in grid.sources],
        evidence={**{f"{k}_gy": round(v, 3) for k, v in values.items()}, "dose": grid.note},
    )


class VolumeParams(_Params):
    structure: str
    #: Dose level (Gy) of the V-metric, in the graded dose (EQD2 or physical).
    dose_gy: float = Field(gt=0)
    alpha_beta_gy: float | None = Field(default=None, gt=0)


@check("dose.composite_volume", Quantity.PERCENT, VolumeParams)
def composite_volume(ctx: CheckContext, spec: RuleSpec, params: VolumeParams) -> Measurement:
    """Percentage of a structure receiving at least ``dose_gy`` of the course's composite dose (VxGy)."""
    solid = _oar(ctx, params.structure)
    grid = ctx.workspace.composite_dose(params.alpha_beta_gy)
    sd = ctx.workspace.structure_dose(grid, solid)
    if sd.uncovered_cc > COVERAGE_TOLERANCE_CC:
        raise NotEvaluable(f"{solid.name}: {sd.uncovered_cc:.2f} cc lie outside the dose grid")
    value = sd.v_percent(params.dose_gy)
    kind = "EQD2" if params.alpha_beta_gy is not None else "physical"
    return Measurement(
        value=value,
        message=(
            f"V{params.dose_gy:g}Gy ({kind}) of {solid.name}: {value:.1f} % of {sd.volume_cc:.0f} cc"
            f" from {ctx.workspace.course_dose_summary()}"
        ),
        structures=[solid.name],
        files=[str(s.path) for s in grid.sources],
        evidence={"volume_cc": round(sd.volume_cc, 2), "v_cc": round(sd.v_gy(params.dose_gy), 2), "dose": grid.note},
    )


class CoverageParams(_Params):
    #: Structures of these roles must lie inside every component's dose grid.
    roles: list[str] = Field(min_length=1)


@check("dose.coverage", Quantity.VOLUME, CoverageParams)
def coverage(ctx: CheckContext, spec: RuleSpec, params: CoverageParams) -> Measurement:
    """Volume (cc) of each needed structure that lies outside a component's dose grid."""
    components = ctx.workspace.components
    solids = [s for role in params.roles for s in ctx.workspace.role_solids(role)]
    if not solids:
        raise NotEvaluable(f"no structure as {' / '.join(params.roles)}")
    uncovered: dict[str, float] = {s.name: 0.0 for s in solids}
    worst_component: dict[str, str] = {}
    for name in components:
        grid, _ = _per_fraction(ctx, name)
        for solid in solids:
            cc = uncovered_cc(grid, solid)  # from the slabs: no DVH is needed for this
            if cc > uncovered[solid.name]:
                uncovered[solid.name], worst_component[solid.name] = cc, name
    # Below the tolerance, an uncovered volume is rasterisation noise: it is reported as 0.
    items = [
        Item(n, cc if cc > COVERAGE_TOLERANCE_CC else 0.0, {"component": worst_component.get(n, "")})
        for n, cc in uncovered.items()
    ]
    bad = [i.name for i in items if i.value]
    message = f"outside a dose grid: {', '.join(bad)}" if bad else f"all {len(items)} structures inside every dose grid"
    return Measurement(message=message, items=items, structures=[i.name for i in items])
