"""The workspace of one course under check: what rules and renderers measure, each built once.

A course is read once (:func:`rtcheck.assembly.read_course`: every file opened once, its
RTDOSE pixels kept until a dose grid is made of them), its ROIs matched to the protocol's
roles and its arm detected. Everything measured from it after that is built on first use
and kept, keyed by the identity of what it was built from: the solids of the structure
set, the protocol's derived structures, each RTDOSE's grid, each component's dose (with the
frame-of-reference check every dose use needs), each structure's voxelisation on a grid
geometry and its dose samples under a grid. So the rules and the figures of one report
look at the same objects, and nothing is read or computed twice.

Asking for something the course cannot give raises :class:`rtcheck.errors.NotEvaluable`
with the reason; the answer is remembered, so a second asker gets the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from pydicom.dataset import Dataset

from .arms import ArmAssignment, detect_arm, target_roi_numbers
from .assembly import CourseFiles, read_course
from .course import Component, ComponentPart, Course, DoseFile, Roi, SourceFile, StructureSet
from .dose import (
    ComponentDose,
    DoseError,
    DoseGrid,
    DoseReader,
    component_dose,
    load_dose_grid,
    planless_doses,
    resample,
    same_axes,
    sum_doses,
    without_pixels,
)
from .dvh import StructureDose, VoxelisedStructure, voxelise
from .errors import NotEvaluable
from .geometry import GeometryError, Solid, SolidCache, contract, difference, expand, intersection, union
from .protocol import Protocol
from .report import IntegrityFinding
from .roles import RoleMatches, match_roles

_T = TypeVar("_T")


@dataclass(frozen=True)
class ComponentDoses:
    """A component's dose as the rules use it: per fraction, and how it was chosen."""

    per_fraction: DoseGrid
    fractions: int
    #: Which RTDOSE objects make it, and why (for captions and evidence).
    explanation: str


@dataclass(frozen=True, eq=False)
class CompositeDose:
    """The course's total dose, physical or EQD2, defined point by point from its fractionations.

    EQD2 is a function of the dose per fraction at a point, so the composite at a dose sample
    of a structure is computed from each fractionation's dose per fraction at that same sample
    (:meth:`at`), the samples its own DVHs use. The rules need the composite nowhere else, so
    it is never made on a whole grid (a 1.7 M-voxel grid took three passes per fractionation
    and per alpha/beta).
    """

    #: Each fractionation's dose per fraction, all on one grid geometry, with its number of
    #: fractions (None without a plan, when the dose is the course's total).
    parts: tuple[tuple[DoseGrid, int | None], ...]
    alpha_beta_gy: float | None
    note: str

    @property
    def sources(self) -> tuple[SourceFile, ...]:
        return tuple(s for grid, _ in self.parts for s in grid.sources)

    def at(self, per_fraction_gy: Sequence[np.ndarray]) -> np.ndarray:
        """The composite (Gy, float32) at samples, from each fractionation's dose per fraction there."""
        total = np.zeros_like(per_fraction_gy[0])
        for dose, (_, n) in zip(per_fraction_gy, self.parts, strict=True):
            if n is None:
                total += dose  # no plan: the dose is already the total (physical only)
            elif self.alpha_beta_gy is None:
                total += dose * np.float32(n)
            else:
                ab = np.float32(self.alpha_beta_gy)
                total += np.float32(n) * dose * (dose + ab) / (np.float32(2.0) + ab)
        return total


@dataclass(frozen=True)
class _Failed:
    """A measurement that could not be made: the reason is kept and raised again."""

    reason: str


@dataclass(eq=False)
class Workspace:
    """One course, its protocol reading (roles, arm) and everything measured from it.

    Build it with :meth:`open`. Rules reach it as ``ctx.workspace``; the report renderers
    are handed it together with the report.
    """

    files: CourseFiles
    protocol: Protocol
    course: Course
    integrity: list[IntegrityFinding]
    roles: RoleMatches
    arm: ArmAssignment
    #: RTDOSE datasets as read with the course, by SOP Instance UID; their pixel data is
    #: dropped once the grid is made.
    _dose_datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)
    #: RTPLAN datasets as read with the course, by SOP Instance UID.
    _plan_datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)
    _solids: SolidCache | None = field(default=None, repr=False)
    _structures: dict[str, Solid | _Failed | None] = field(default_factory=dict, repr=False)
    _grids: dict[str, DoseGrid | DoseError] = field(default_factory=dict, repr=False)
    _component_doses: dict[str, ComponentDoses | _Failed] = field(default_factory=dict, repr=False)
    _doses_of_parts: dict[frozenset[tuple[str, int]], ComponentDose] = field(default_factory=dict, repr=False)
    _voxelised_of: dict[int, list[tuple[Solid, VoxelisedStructure]]] = field(default_factory=dict, repr=False)
    _structure_doses: dict[tuple[int, int], tuple[DoseGrid | CompositeDose, Solid, StructureDose]] = field(
        default_factory=dict, repr=False
    )
    _composites: dict[float | None, CompositeDose | _Failed] = field(default_factory=dict, repr=False)
    _common: tuple[tuple[DoseGrid, int | None], ...] | _Failed | None = field(default=None, repr=False)
    _course_doses: list[tuple[DoseGrid, int | None]] | _Failed | None = field(default=None, repr=False)

    @classmethod
    def open(cls, files: CourseFiles, protocol: Protocol, arm: str | None = None) -> Workspace:
        """Read the course's files once, match its ROIs to roles and detect (or force) its arm.

        Raises :class:`rtcheck.errors.InputError` when a file cannot be read at all.
        """
        loaded = read_course(files)
        roles = match_roles(protocol, loaded.course.structure_set)
        assignment = detect_arm(loaded.course, protocol, roles, arm)
        return cls(
            files=files,
            protocol=protocol,
            course=loaded.course,
            integrity=loaded.integrity,
            roles=roles,
            arm=assignment,
            _dose_datasets=dict(loaded.dose_datasets),
            _plan_datasets=dict(loaded.plan_datasets),
        )

    def plan_header(self, sop_instance_uid: str) -> Dataset | None:
        """An RTPLAN dataset as read with the course (the patient and study a DICOM report
        is filed under), or None for a plan that is not the course's."""
        return self._plan_datasets.get(sop_instance_uid)

    # ------------------------------------------------------------------ components

    def component(self, name: str) -> Component | None:
        """The component of the detected arm, if any fraction group of the course is it."""
        comp = self.arm.components.get(name)
        return comp if comp is not None and comp.parts else None

    @property
    def components(self) -> list[str]:
        """Names of the arm's components that the course has, in protocol order."""
        return [name for name, comp in self.arm.components.items() if comp.parts]

    # ------------------------------------------------------------------ structures

    @property
    def structure_set(self) -> StructureSet:
        ss = self.course.structure_set
        if ss is None:
            raise NotEvaluable("the course has no structure set")
        return ss

    @property
    def solids(self) -> SolidCache:
        """The structure set's solids, each built once."""
        if self._solids is None:
            self._solids = SolidCache(self.structure_set)
        return self._solids

    def solid(self, roi_number: int) -> Solid:
        """The solid of one ROI; a contour it cannot be built from makes it not evaluable."""
        try:
            return self.solids.get(roi_number)
        except GeometryError as exc:
            raise NotEvaluable(str(exc)) from exc

    def role_rois(self, role: str) -> list[Roi]:
        """Non-empty ROIs playing ``role``, by ROI number."""
        return [r for r in self.roles.rois(role) if not r.is_empty]

    def role_solids(self, role: str) -> list[Solid]:
        """One solid per non-empty ROI of ``role`` that has a volume."""
        return [s for s in (self.solid(roi.number) for roi in self.role_rois(role)) if s.has_volume]

    def structure(self, name: str) -> Solid | None:
        """A role (its ROIs together) or a derived structure of the protocol; None if absent.

        Derived structures are registered with the solids under their protocol name, so a
        DVH and a distance of the valley are of the same object.
        """
        if name not in self._structures:
            try:
                self._structures[name] = self._build_structure(name)
            except NotEvaluable as exc:
                self._structures[name] = _Failed(str(exc))
        return _unwrap(self._structures[name])

    def _build_structure(self, name: str) -> Solid | None:
        if name in self.protocol.roles:
            solids = self.role_solids(name)
            return None if not solids else solids[0] if len(solids) == 1 else union(*solids, name=name)
        result = self._derive(name)
        if result is not None:
            self.solids.add(result)
        return result

    def _derive(self, name: str) -> Solid | None:
        spec = self.protocol.derived[name]
        operands: list[Solid] = []
        for i, operand in enumerate(spec.operands):
            base = self.structure(operand.role)
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

    def component_targets(self, target_roles: list[str], component: str | None) -> dict[int, tuple[Roi, str]]:
        """Targets of a component: ROIs of the target roles, plus those its dose references point at.

        Returns ROI number -> (ROI, how it was identified as a target).
        """
        ss = self.structure_set
        targets: dict[int, tuple[Roi, str]] = {}
        for role in target_roles:
            for roi in self.roles.rois(role):
                targets[roi.number] = (roi, f"name (role {role})")
        comp = self.component(component) if component else None
        if comp is not None:
            for part in comp.parts:
                for number in target_roi_numbers(part.plan, part):
                    if number in ss.rois and number not in targets:
                        targets[number] = (ss.rois[number], f"dose reference of plan {part.plan.display_name}")
        return targets

    # ------------------------------------------------------------------ doses

    def dose_grid(self, dose: DoseFile) -> DoseGrid:
        """One RTDOSE's grid in Gy, made once from the dataset read with the course."""
        uid = dose.source.sop_instance_uid
        if uid not in self._grids:
            ds = self._dose_datasets.get(uid)
            try:
                self._grids[uid] = load_dose_grid(dose, ds)
            except DoseError as exc:
                # Kept without its traceback, whose frames would hold the workspace itself.
                self._grids[uid] = exc.with_traceback(None)
            if ds is not None:
                self._dose_datasets[uid] = without_pixels(ds)
        cached = self._grids[uid]
        if isinstance(cached, DoseError):
            raise cached
        return cached

    def dose_header(self, dose: DoseFile) -> Dataset | None:
        """The RTDOSE dataset read with the course (without its pixels once the grid is made)."""
        return self._dose_datasets.get(dose.source.sop_instance_uid)

    def component_dose(self, name: str) -> ComponentDoses:
        """The component's dose per fraction, in the structures' frame of reference.

        Not evaluable when no fraction group of the course is the component, when its
        RTDOSE objects cannot be chosen or read, or when the dose lies in another frame of
        reference than the structures (its coordinates would then mean other places).
        """
        if name not in self._component_doses:
            try:
                self._component_doses[name] = self._build_component_dose(name)
            except NotEvaluable as exc:
                self._component_doses[name] = _Failed(str(exc))
        return _unwrap(self._component_doses[name])

    def _build_component_dose(self, name: str) -> ComponentDoses:
        comp = self.component(name)
        if comp is None:
            raise NotEvaluable(f"no fraction group of the course was recognised as component {name!r}")
        try:
            dose = self._dose_of(comp.parts)
        except DoseError as exc:
            raise NotEvaluable(str(exc)) from exc
        ss = self.course.structure_set
        structures_for = ss.frame_of_reference_uid if ss is not None else None
        dose_for = dose.total.frame_of_reference_uid
        if structures_for and dose_for and structures_for != dose_for:
            raise NotEvaluable(
                f"the {name} dose is in frame of reference {dose_for}, the structures in {structures_for}"
            )
        explanation = f"{dose.selection.explanation}, divided by {dose.fractions} fractions"
        return ComponentDoses(dose.per_fraction, dose.fractions, explanation)

    def _dose_of(self, parts: list[ComponentPart]) -> ComponentDose:
        """The dose of a set of fraction groups, made once: a component and the course's
        fractionation of the same fraction groups share it (and its dose per fraction)."""
        key = frozenset((part.plan.uid, part.fraction_group.number) for part in parts)
        if key not in self._doses_of_parts:
            self._doses_of_parts[key] = component_dose(self.course, parts, _WorkspaceDoses(self))
        return self._doses_of_parts[key]

    def course_doses(self) -> list[tuple[DoseGrid, int | None]]:
        """The course's doses whatever arm or component was recognised: (grid, fractions) pairs.

        With plans: one dose per fractionation (the fraction groups that share a number of
        fractions), per fraction, from their PLAN, MULTI_PLAN or summed FRACTION/BEAM doses.
        Without a plan: the total of the course's doses, its number of fractions unknown (None).
        """
        if self._course_doses is None:
            try:
                self._course_doses = self._build_course_doses()
            except NotEvaluable as exc:
                self._course_doses = _Failed(str(exc))
        return _unwrap(self._course_doses)

    def _build_course_doses(self) -> list[tuple[DoseGrid, int | None]]:
        by_fractions: dict[int | None, list[ComponentPart]] = {}
        for part in self.course.fraction_groups():
            by_fractions.setdefault(part.fraction_group.fractions_planned, []).append(part)
        if not by_fractions:
            doses = planless_doses(self.course)
            if not doses:
                raise NotEvaluable("the course has no dose")
            try:
                total = sum_doses(doses, _WorkspaceDoses(self))
            except DoseError as exc:
                raise NotEvaluable(str(exc)) from exc
            self._same_frame(total, "the course's dose")
            return [(replace(total, note=f"{total.note} (no plan: number of fractions unknown)"), None)]
        out: list[tuple[DoseGrid, int | None]] = []
        for fractions, parts in sorted(by_fractions.items(), key=lambda kv: kv[0] or 0):
            try:
                dose = self._dose_of(parts)
            except DoseError as exc:
                raise NotEvaluable(f"the course's {fractions}-fraction dose: {exc}") from exc
            self._same_frame(dose.total, f"the course's {fractions}-fraction dose")
            out.append((dose.per_fraction, dose.fractions))
        return out

    def _same_frame(self, grid: DoseGrid, what: str) -> None:
        ss = self.course.structure_set
        structures_for = ss.frame_of_reference_uid if ss is not None else None
        dose_for = grid.frame_of_reference_uid
        if structures_for and dose_for and structures_for != dose_for:
            raise NotEvaluable(f"{what} is in frame of reference {dose_for}, the structures in {structures_for}")

    def course_dose_summary(self) -> str:
        """Which RTDOSE files the composite is made of, and their fractions, in a few words."""
        parts = self.course_doses()
        names = ", ".join(sorted({s.path.name for g, _ in parts for s in g.sources}))
        return f"{names} ({' + '.join('? fx' if n is None else f'{n} fx' for _, n in parts)})"

    def composite_dose(self, alpha_beta_gy: float | None) -> CompositeDose:
        """Physical total (``alpha_beta_gy`` None) or EQD2 total of the course.

        Made of :meth:`course_doses`, so it needs no recognised component. Its geometry is
        the finest of their grids, cropped to where every one has a dose (the rule
        :func:`rtcheck.dose.sum_doses` follows). EQD2 needs the number of fractions, which
        only a plan gives.
        """
        if alpha_beta_gy not in self._composites:
            try:
                self._composites[alpha_beta_gy] = self._build_composite(alpha_beta_gy)
            except NotEvaluable as exc:
                self._composites[alpha_beta_gy] = _Failed(str(exc))
        return _unwrap(self._composites[alpha_beta_gy])

    def _build_composite(self, alpha_beta_gy: float | None) -> CompositeDose:
        parts = self._common_grid()
        if alpha_beta_gy is not None and any(n is None for _, n in parts):
            raise NotEvaluable(
                "EQD2 needs the dose per fraction, and without a plan the number of fractions is unknown"
            )
        kind = "physical" if alpha_beta_gy is None else f"EQD2 (alpha/beta {alpha_beta_gy:g} Gy)"
        note = "; ".join(g.note for g, _ in parts)
        return CompositeDose(parts, alpha_beta_gy, note=f"composite {kind} dose of the course: {note}")

    def _common_grid(self) -> tuple[tuple[DoseGrid, int | None], ...]:
        """Every fractionation's dose on one grid geometry, with its fractions."""
        if self._common is None:
            try:
                self._common = self._build_common_grid()
            except NotEvaluable as exc:
                self._common = _Failed(str(exc))
        return _unwrap(self._common)

    def _build_common_grid(self) -> tuple[tuple[DoseGrid, int | None], ...]:
        grids = self.course_doses()
        target = min((g for g, _ in grids), key=lambda g: g.spacing_mm[0] * g.spacing_mm[1])
        axes = []
        for i, axis in enumerate(target.axes):
            keep = np.ones(axis.size, dtype=bool)
            for g, _ in grids:
                edges = (g.x_edges_mm, g.y_edges_mm, g.z_edges_mm)[i]
                keep &= (axis >= edges[0] - 1e-3) & (axis <= edges[-1] + 1e-3)
            if keep.sum() < 2:
                raise NotEvaluable("the dose grids of the course's fractionations do not overlap")
            axes.append(axis[keep])
        x, y, z = axes
        # The fractionations usually share one grid: their doses are then taken as they are.
        return tuple((g if same_axes(g.axes, (x, y, z)) else _resampled(g, x, y, z), n) for g, n in grids)

    # ------------------------------------------------------------------ DVHs

    def structure_dose(self, dose: DoseGrid | CompositeDose, solid: Solid) -> StructureDose:
        """The solid's dose samples under a dose grid or the course's composite.

        Each solid is voxelised once per grid geometry: components usually share one grid
        geometry (per fraction and in total too), so one voxelisation serves every dose
        of the course on it. A composite's samples are made from its fractionations'
        samples (:class:`CompositeDose`).
        """
        key = (id(dose), id(solid))
        if key not in self._structure_doses:
            if isinstance(dose, CompositeDose):
                parts = [self.structure_dose(grid, solid) for grid, _ in dose.parts]
                samples = replace(parts[0], dose_gy=dose.at([p.dose_gy for p in parts]), grid_note=dose.note)
            else:
                samples = self.voxelised(dose, solid).dose(dose)
            # The dose and solid are kept with the answer, so their ids cannot be reused.
            self._structure_doses[key] = (dose, solid, samples)
        return self._structure_doses[key][2]

    def voxelised(self, grid: DoseGrid, solid: Solid) -> VoxelisedStructure:
        """The solid's samples on ``grid``'s geometry, made once per geometry."""
        known = self._voxelised_of.setdefault(id(solid), [])
        for owner, vox in known:
            if owner is solid and same_axes(vox.axes, grid.axes):
                return vox
        vox = voxelise(grid, solid)
        known.append((solid, vox))
        return vox


class _WorkspaceDoses(DoseReader):
    """RTDOSE headers and grids from the workspace instead of from the files again."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace

    def header(self, dose: DoseFile) -> Dataset:
        ds = self._workspace.dose_header(dose)
        return ds if ds is not None else super().header(dose)

    def grid(self, dose: DoseFile) -> DoseGrid:
        return self._workspace.dose_grid(dose)


def _resampled(grid: DoseGrid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> DoseGrid:
    """``grid``'s dose interpolated (trilinear) onto the voxel centres ``x``, ``y``, ``z``."""
    note = f"{grid.note}; resampled onto the finest grid"
    return replace(grid, dose_gy=resample(grid, x, y, z), x_mm=x, y_mm=y, z_mm=z, note=note)


def _unwrap(value: _T | _Failed) -> _T:
    if isinstance(value, _Failed):
        raise NotEvaluable(value.reason)
    return value
