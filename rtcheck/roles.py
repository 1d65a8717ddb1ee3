"""Structure roles: which ROIs of a structure set play which part in the protocol.

Names come first, in canonical form (:mod:`rtcheck.names`), then a centre's aliases, then,
for roles that allow it, RTROIInterpretedType: it is Type 2 in DICOM and often empty, but
when a planning system fills it with GTV/CTV/PTV it does say that the ROI is a target,
whatever it is called. A ROI found only by its type is never taken when its name could be
a structure the role must not be (a bone metastasis is no silent target).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .course import Roi, StructureSet
from .protocol import Protocol


@dataclass(frozen=True)
class RoleMatches:
    """ROIs per role name (a ROI may play several roles, e.g. an organ and an avoidance)."""

    by_role: dict[str, tuple[Roi, ...]]
    #: (role, ROI number) -> how the ROI was recognised ("name", "alias 'X'", ...).
    how: dict[tuple[str, int], str] = field(default_factory=dict)
    #: ROIs a role refused although their type would have fitted, one line each.
    refused: tuple[str, ...] = ()

    def rois(self, role: str) -> tuple[Roi, ...]:
        return self.by_role.get(role, ())

    def assignments(self) -> dict[str, list[str]]:
        """Drawn name -> the roles it plays, each with how it was recognised (for the report)."""
        out: dict[str, list[str]] = {}
        for role, rois in self.by_role.items():
            for roi in rois:
                how = self.how.get((role, roi.number), "name")
                out.setdefault(roi.name, []).append(role if how == "name" else f"{role} ({how})")
        return out


def match_roles(protocol: Protocol, structure_set: StructureSet | None) -> RoleMatches:
    """Match every ROI of the structure set against every role of the protocol."""
    by_role: dict[str, tuple[Roi, ...]] = {}
    how: dict[tuple[str, int], str] = {}
    refused: list[str] = []
    rois = [] if structure_set is None else sorted(structure_set.rois.values(), key=lambda r: r.number)
    for name, role in protocol.roles.items():
        found = []
        for roi in rois:
            reason = role.match_reason(roi.name, roi.interpreted_type)
            if reason is None:
                continue
            if reason.startswith("RTROIInterpretedType"):
                doubt = [u for u in role.unless_roles if protocol.roles[u].could_be(roi.name)]
                if doubt:
                    refused.append(
                        f"{roi.name} ({roi.interpreted_type}) is not taken as {name}: its name could be "
                        f"{' / '.join(doubt)}; rename it or add an alias"
                    )
                    continue
            found.append(roi)
            how[(name, roi.number)] = reason
        by_role[name] = tuple(found)
    return RoleMatches(by_role, how, tuple(refused))
