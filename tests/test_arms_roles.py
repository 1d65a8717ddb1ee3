"""Role matching and arm detection on their own, on courses built in memory.

The phantom tests show the bundled courses land in their arms; these pin how the decision
is made: which ROIs play which role, and which evidence (plan label, number of fractions,
targeted roles) places a fraction group in a component and a course in an arm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtcheck.api import load_protocol
from rtcheck.arms import ArmAssignment, detect_arm
from rtcheck.course import (
    Contour,
    Course,
    DoseReference,
    FractionGroup,
    Plan,
    Roi,
    SourceFile,
    StructureSet,
)
from rtcheck.protocol import Protocol
from rtcheck.roles import match_roles


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol()


def _source(name: str, modality: str) -> SourceFile:
    return SourceFile(Path(name), modality, "1.2.840.10008.5.1.4.1.1.481", f"2.25.{sum(name.encode())}", "0" * 64)


def _structure_set(*names: str) -> StructureSet:
    square = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 10.0, 0.0], [0.0, 10.0, 0.0]])
    rois = {i: Roi(i, name, None, (Contour("CLOSED_PLANAR", square),)) for i, name in enumerate(names, start=1)}
    return StructureSet(_source("RS.dcm", "RTSTRUCT"), "2.25.1", rois)


def _plan(label: str, fractions: int | None, targets: list[int]) -> Plan:
    references = tuple(DoseReference(n, "VOLUME", "TARGET", "", roi, None, None) for n, roi in enumerate(targets, 1))
    group = FractionGroup(1, fractions, (), tuple(r.number for r in references), None)
    return Plan(_source(f"RP.{label}.dcm", "RTPLAN"), label, label, "", "2.25.1", None, (group,), references)


def _detect(protocol: Protocol, plans: list[Plan], ss: StructureSet, forced: str | None = None) -> ArmAssignment:
    course = Course("PAT", "Doe^Jane", plans, ss, [])
    return detect_arm(course, protocol, match_roles(protocol, ss), forced)


# ROI numbers:            1         2            3           4         5
ROIS = _structure_set("Peak_1", "GTV_SFRT", "GTV_LDRT1", "PTV_Chest", "SpinalCord")


def _parts(assignment: ArmAssignment) -> dict[str, list[str]]:
    return {name: [p.plan.label for p in comp.parts] for name, comp in assignment.components.items()}


def test_roles_of_each_roi_in_roi_number_order(protocol: Protocol) -> None:
    ss = _structure_set("Peak_2", "Bone_Met1", " Heart ", "Peak_1", "GTV_SFRT_Valley")
    roles = match_roles(protocol, ss)
    assert [r.name for r in roles.rois("peak")] == ["Peak_2", "Peak_1"]
    assert [r.number for r in roles.rois("bone")] == [2] and [r.number for r in roles.rois("bone_met")] == [2]
    assert [r.name for r in roles.rois("heart")] == [" Heart "]  # names are compared without outer spaces
    assert [r.name for r in roles.rois("valley")] == ["GTV_SFRT_Valley"]
    assert roles.rois("sfrt_gtv") == ()  # the valley is excluded from the lesion by name


def test_without_a_structure_set_every_role_is_empty(protocol: Protocol) -> None:
    roles = match_roles(protocol, None)
    assert set(roles.by_role) == set(protocol.roles) and not any(roles.by_role.values())
    assert roles.rois("not a role") == ()


def test_experimental_arm_from_labels_fractions_and_targets(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("SFRT", 3, [1]), _plan("LDRT", 5, [3])], ROIS)
    assert found.arm == "experimental" and not found.overridden
    assert _parts(found) == {"peak": ["SFRT"], "low_dose": ["LDRT"]}
    assert found.evidence[0] == "arm experimental scored 10 (highest of 2 arms)"
    assert any("-> peak (label 'SFRT', 3 fractions, targets Peak_1)" in e for e in found.evidence)


def test_control_arm(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("CONV_Chest", 10, [4])], ROIS)
    assert found.arm == "control" and _parts(found) == {"conventional": ["CONV_Chest"]}


def test_unlabelled_plans_are_placed_by_fractions_and_targets(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("Plan A", 3, [1]), _plan("Plan B", 5, [3])], ROIS)
    assert found.arm == "experimental" and _parts(found) == {"peak": ["Plan A"], "low_dose": ["Plan B"]}


def test_wrong_fractionation_keeps_the_component_so_the_rules_can_flag_it(protocol: Protocol) -> None:
    """A 5-fraction plan labelled SFRT aimed at the peaks is still the peak component."""
    found = _detect(protocol, [_plan("SFRT", 5, [1]), _plan("LDRT", 5, [3])], ROIS)
    assert found.arm == "experimental" and _parts(found) == {"peak": ["SFRT"], "low_dose": ["LDRT"]}


def test_a_missing_required_component_is_named(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("SFRT", 3, [1])], ROIS)
    assert found.arm == "experimental" and _parts(found) == {"peak": ["SFRT"], "low_dose": []}
    assert "no fraction group found for required component low_dose" in found.evidence


def test_no_arm_when_no_fraction_group_matches_any_component(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("Boost", 1, [5])], ROIS)
    assert found.arm is None and found.components == {}
    (closest,) = found.evidence  # the nearest arm by fractionation, for a person to force
    assert closest.startswith("closest arm: control (") and closest.endswith("give --arm control to judge it so")
    assert [p.plan.label for p in found.unassigned] == ["Boost"]


def test_a_forced_arm_is_used_and_said_to_be_given(protocol: Protocol) -> None:
    found = _detect(protocol, [_plan("SFRT", 3, [1]), _plan("LDRT", 5, [3])], ROIS, forced="control")
    assert found.arm == "control" and found.overridden
    assert found.evidence[0] == "arm control given on the command line"
