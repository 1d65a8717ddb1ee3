"""Arm detection: which arm of the trial a course belongs to, with the evidence.

Each fraction group is matched to the protocol component it most resembles: its plan
label (strong evidence), its number of fractions, and the roles of the structures its
dose references target. An arm's score adds up its fraction groups' matches and is
penalised for required components that are absent and for fraction groups it cannot
place. The fractionation itself is *not* required to match exactly — a 5-fraction plan
labelled SFRT is still the SFRT component, so that ``sfrt.fractions`` can flag it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .course import Component, ComponentPart, Course, Plan
from .protocol import ComponentSpec, Protocol
from .roles import RoleMatches

_LABEL_SCORE = 2
_FRACTIONS_SCORE = 1
_TARGET_SCORE = 2
_MISSING_COMPONENT_PENALTY = 3
_UNASSIGNED_PENALTY = 2


@dataclass
class ArmAssignment:
    arm: str | None
    components: dict[str, Component]
    unassigned: list[ComponentPart] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    overridden: bool = False


def part_name(part: ComponentPart) -> str:
    fx = part.fraction_group.fractions_planned
    fractions = "fractions not stated" if fx is None else f"{fx} fx"
    return f"{part.plan.display_name} / fraction group {part.fraction_group.number} ({fractions})"


def target_roi_numbers(plan: Plan, part: ComponentPart) -> set[int]:
    """ROI numbers the fraction group's dose references point at."""
    wanted = set(part.fraction_group.referenced_dose_reference_numbers)
    single = len(plan.fraction_groups) == 1
    return {
        r.referenced_roi_number
        for r in plan.dose_references
        if r.referenced_roi_number is not None and (r.number in wanted or (single and not wanted))
    }


def _score(part: ComponentPart, spec: ComponentSpec, roles: RoleMatches) -> tuple[int, list[str]]:
    score, why = 0, []
    plan = part.plan
    if spec.labels and spec.label_matches(plan.label, plan.name):
        score += _LABEL_SCORE
        why.append(f"label '{plan.label or plan.name}'")
    fx = part.fraction_group.fractions_planned
    if spec.fractions is not None and fx is not None and spec.fractions.contains(fx):
        score += _FRACTIONS_SCORE
        why.append(f"{fx} fractions")
    if spec.target_roles:
        targets = target_roi_numbers(plan, part)
        hit = sorted({r.name for role in spec.target_roles for r in roles.rois(role) if r.number in targets})
        if hit:
            score += _TARGET_SCORE
            why.append("targets " + ", ".join(hit))
    return score, why


def _fraction_distance(part: ComponentPart, spec: ComponentSpec) -> float:
    """How many fractions the group lies outside the component's range (0 inside, inf unknown)."""
    fx = part.fraction_group.fractions_planned
    limits = spec.fractions
    if limits is None:
        return 0.0
    if fx is None:
        return float("inf")
    below = limits.min - fx if limits.min is not None else 0.0
    above = fx - limits.max if limits.max is not None else 0.0
    return max(0.0, below, above)


def _closest(part: ComponentPart, names: list[str], protocol: Protocol) -> str:
    """The component whose fractionation the group misses by the fewest fractions."""
    return min(names, key=lambda n: _fraction_distance(part, protocol.components[n]))


def _assign(
    course: Course, protocol: Protocol, arm: str, roles: RoleMatches, *, forced: bool = False
) -> tuple[int, ArmAssignment]:
    """Place every fraction group in the arm's best-scoring component.

    A group that scores nothing is left unassigned, unless the arm is ``forced``: then the
    user has said what the course is, and the group goes to the component whose
    fractionation it misses by the least, so the rules grade the deviation instead of
    calling it not evaluable.
    """
    spec = protocol.arms[arm]
    names = [*spec.components, *spec.optional_components]
    components = {n: Component(n) for n in names}
    out = ArmAssignment(arm, components)
    total = 0
    for part in course.fraction_groups():
        scored = [(_score(part, protocol.components[n], roles), n) for n in names]
        (best, why), best_name = max(scored, key=lambda s: s[0][0])
        if best <= 0:
            if not forced:
                out.unassigned.append(part)
                total -= _UNASSIGNED_PENALTY
                continue
            best_name = _closest(part, names, protocol)
            why = [f"forced: closest fractionation of arm {arm}"]
        components[best_name].parts.append(part)
        out.evidence.append(f"{part_name(part)} -> {best_name} ({', '.join(why)})")
        total += best
    for n in spec.components:
        if not components[n].parts:
            total -= _MISSING_COMPONENT_PENALTY
            out.evidence.append(f"no fraction group found for required component {n}")
    for part in out.unassigned:
        out.evidence.append(f"{part_name(part)} matches no component of arm {arm}")
    return total, out


def closest_arm(course: Course, protocol: Protocol, roles: RoleMatches) -> str:
    """One line: which arm a course that matches none comes closest to, and why it misses.

    Closest means fewest required components without a fraction group, then fewest
    fractions outside the components' ranges, when every group is placed where it fits best.
    """
    parts = list(course.fraction_groups())
    if not parts:
        return "the course has no plan, so no fractionation to match an arm with"
    ranked = []
    for arm in protocol.arms:
        _, assignment = _assign(course, protocol, arm, roles, forced=True)
        spec = protocol.arms[arm]
        missing = [n for n in spec.components if not assignment.components[n].parts]
        misses = []
        distance = 0.0
        for name, comp in assignment.components.items():
            cspec = protocol.components[name]
            for part in comp.parts:
                d = _fraction_distance(part, cspec)
                distance += d
                label = part.plan.label or part.plan.name
                if d > 0 and cspec.fractions is not None:
                    misses.append(
                        f"{part_name(part)} against {name} {cspec.fractions.text('fx')}"
                        + (f", label '{label}' not {'/'.join(cspec.labels)}" if cspec.labels else "")
                    )
        ranked.append((len(missing), distance, arm, missing, misses))
    _, _, arm, missing, misses = min(ranked, key=lambda r: (r[0], r[1]))
    why = [*misses, *(f"no fraction group for {n}" for n in missing)]
    because = "; ".join(why) or "its components score no evidence"
    return f"closest arm: {arm} ({because}); give --arm {arm} to judge it so"


def detect_arm(course: Course, protocol: Protocol, roles: RoleMatches, forced: str | None = None) -> ArmAssignment:
    """The best-scoring arm (or ``forced``), with its component assignment and evidence."""
    if forced is not None:
        _, assignment = _assign(course, protocol, forced, roles, forced=True)
        assignment.overridden = True
        assignment.evidence.insert(0, f"arm {forced} given on the command line")
        return assignment
    best: tuple[int, ArmAssignment] | None = None
    for arm in protocol.arms:
        scored = _assign(course, protocol, arm, roles)
        if best is None or scored[0] > best[0]:
            best = scored
    assert best is not None  # a protocol has at least one arm
    score, assignment = best
    if not any(c.parts for c in assignment.components.values()):
        return ArmAssignment(None, {}, assignment.unassigned, [closest_arm(course, protocol, roles)])
    assignment.evidence.insert(0, f"arm {assignment.arm} scored {score} (highest of {len(protocol.arms)} arms)")
    return assignment
