"""Structure roles: which ROIs of a structure set play which part in the protocol.

Names come first: RTROIInterpretedType is Type 2 in DICOM and often empty in real exports,
so it can only narrow a name match, never make one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .course import Roi, StructureSet
from .protocol import Protocol


@dataclass(frozen=True)
class RoleMatches:
    """ROIs per role name (a ROI may play several roles, e.g. an organ and an avoidance)."""

    by_role: dict[str, tuple[Roi, ...]]

    def rois(self, role: str) -> tuple[Roi, ...]:
        return self.by_role.get(role, ())


def match_roles(protocol: Protocol, structure_set: StructureSet | None) -> RoleMatches:
    """Match every ROI of the structure set against every role of the protocol."""
    by_role: dict[str, tuple[Roi, ...]] = {}
    rois = [] if structure_set is None else sorted(structure_set.rois.values(), key=lambda r: r.number)
    for name, role in protocol.roles.items():
        by_role[name] = tuple(r for r in rois if role.matches(r.name, r.interpreted_type))
    return RoleMatches(by_role)
