"""Plan-level checks: what can be read from the RTPLAN itself (fractionation, prescription)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..arms import part_name
from ..course import Component
from ..protocol import RuleSpec
from ..units import Quantity
from .base import CheckContext, Item, Measurement, NotEvaluable, check


class ComponentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The protocol component (as named under ``components:``) the rule is about.
    component: str


def _component(ctx: CheckContext, name: str) -> Component:
    if name not in ctx.protocol.components:
        raise NotEvaluable(f"the protocol has no component {name!r}")
    if not ctx.course.plans:
        raise NotEvaluable("the course has no RTPLAN: fractionation and prescription are in the plan")
    comp = ctx.component(name)
    if comp is None:
        raise NotEvaluable(f"no fraction group of the course was recognised as component {name!r}")
    return comp


def _files(comp: Component) -> list[str]:
    return sorted({str(p.plan.source.path) for p in comp.parts})


@check("plan.fractions", Quantity.FRACTIONS, ComponentParams)
def fractions(ctx: CheckContext, spec: RuleSpec, params: ComponentParams) -> Measurement:
    """NumberOfFractionsPlanned of each fraction group of a component."""
    comp = _component(ctx, params.component)
    items = [
        Item(
            part_name(p),
            None if p.fraction_group.fractions_planned is None else p.fraction_group.fractions_planned,
        )
        for p in comp.parts
    ]
    listed = ", ".join(f"{i.name}" for i in items)
    return Measurement(message=f"planned fractions of {params.component}: {listed}", items=items, files=_files(comp))


@check("plan.prescription", Quantity.DOSE, ComponentParams)
def prescription(ctx: CheckContext, spec: RuleSpec, params: ComponentParams) -> Measurement:
    """Prescribed dose per fraction of each fraction group of a component, with its source."""
    comp = _component(ctx, params.component)
    items = []
    for p in comp.parts:
        rx = p.fraction_group.prescription
        if rx is None:
            items.append(
                Item(
                    part_name(p),
                    None,
                    {"reason": "no prescription in DoseReferenceSequence, fraction group or beam doses"},
                )
            )
        else:
            items.append(
                Item(
                    part_name(p),
                    rx.dose_per_fraction_gy,
                    {"source": rx.source, "detail": rx.detail, "total_gy": rx.total_gy},
                )
            )
    sources = sorted({i.detail["source"] for i in items if "source" in i.detail})
    message = f"prescription per fraction of {params.component} (from {', '.join(sources) or 'nowhere'})"
    return Measurement(message=message, items=items, files=_files(comp), evidence={"sources": sources})
