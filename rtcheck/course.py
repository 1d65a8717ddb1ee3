"""The course model: what a treatment course is, once its DICOM-RT files have been read.

Everything downstream (geometry, dose, rules, reports) works on these objects, never on
pydicom datasets, so that a rule can be tested without touching a file and so that the
slow parts of reading (contour coordinates, dose pixels) happen once, lazily, in one place.

Units follow DICOM: lengths in mm, doses in Gy. Conversions to the protocol's units
(cGy, cc, ...) happen in the rules, never here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SourceFile:
    """One DICOM file that went into a course, identified the way an auditor needs it."""

    path: Path
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    sha256: str


@dataclass(frozen=True)
class Contour:
    """One planar (or point) contour of a ROI, as drawn in the planning system.

    ``points`` is an (N, 3) float64 array in patient coordinates (mm). For a
    CLOSED_PLANAR contour the closing segment from the last to the first point is
    implied (DICOM does not repeat the first point).
    """

    geometric_type: str
    points: np.ndarray

    @property
    def z(self) -> float:
        """The contour's plane (mean z): only meaningful for planar contours."""
        return float(self.points[:, 2].mean())


@dataclass
class Roi:
    """A region of interest of a structure set."""

    number: int
    name: str
    interpreted_type: str | None
    contours: tuple[Contour, ...]
    frame_of_reference_uid: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.contours

    @property
    def is_point(self) -> bool:
        return bool(self.contours) and all(c.geometric_type == "POINT" for c in self.contours)


@dataclass
class StructureSet:
    """An RT Structure Set: ROIs keyed by ROI number."""

    source: SourceFile
    frame_of_reference_uid: str | None
    rois: dict[int, Roi]
    label: str = ""

    def by_name(self, name: str) -> Roi | None:
        """The ROI called ``name`` (case-insensitive), or None."""
        wanted = name.casefold()
        for roi in self.rois.values():
            if roi.name.casefold() == wanted:
                return roi
        return None


@dataclass(frozen=True)
class BeamDose:
    """A beam's contribution to a fraction group (DICOM stores Gy per fraction)."""

    beam_number: int
    dose_gy: float | None
    meaning: str | None


@dataclass(frozen=True)
class DoseReference:
    """An item of the plan's DoseReferenceSequence (prescription module)."""

    number: int
    structure_type: str | None
    dose_reference_type: str | None
    description: str
    referenced_roi_number: int | None
    target_prescription_dose_gy: float | None
    delivery_maximum_dose_gy: float | None


@dataclass(frozen=True)
class Prescription:
    """A prescribed dose per fraction, and where in the plan it was found.

    ``source`` is one of ``dose_reference``, ``fraction_group_dose_reference``,
    ``beam_dose`` so that the report can say how far down the fallback chain it went.
    """

    dose_per_fraction_gy: float
    total_gy: float
    source: str
    detail: str


@dataclass
class FractionGroup:
    """A fraction group of a plan: the unit the trial's components map onto."""

    number: int
    fractions_planned: int | None
    beam_doses: tuple[BeamDose, ...]
    referenced_dose_reference_numbers: tuple[int, ...]
    referenced_target_prescription_gy: float | None  # total, from ReferencedDoseReferenceSequence
    prescription: Prescription | None = None


@dataclass
class Plan:
    """An RT Plan."""

    source: SourceFile
    label: str
    name: str
    description: str
    frame_of_reference_uid: str | None
    referenced_structure_set_uid: str | None
    fraction_groups: tuple[FractionGroup, ...]
    dose_references: tuple[DoseReference, ...]
    patient_id: str = ""
    patient_name: str = ""
    study_instance_uid: str = ""

    @property
    def uid(self) -> str:
        return self.source.sop_instance_uid

    @property
    def display_name(self) -> str:
        return self.label or self.name or self.uid


@dataclass
class DoseFile:
    """An RT Dose object's header: what it is the dose of, without the pixels.

    The pixel grid is loaded on demand by :mod:`rtcheck.dose` so that indexing a folder
    never reads dose voxels.
    """

    source: SourceFile
    summation_type: str | None
    units: str | None
    dose_type: str | None
    frame_of_reference_uid: str | None
    #: Plans this dose belongs to: one, or several for a MULTI_PLAN dose.
    referenced_plan_uids: tuple[str, ...]
    referenced_fraction_group_numbers: tuple[int, ...]
    referenced_beam_numbers: tuple[int, ...] = ()

    @property
    def referenced_plan_uid(self) -> str | None:
        """The single plan of this dose, or None when it references none or several."""
        return self.referenced_plan_uids[0] if len(self.referenced_plan_uids) == 1 else None


@dataclass(frozen=True)
class ComponentPart:
    """One fraction group of one plan, assigned to a protocol component."""

    plan: Plan
    fraction_group: FractionGroup


@dataclass
class Component:
    """A protocol component (e.g. the 3-fraction SFRT peaks) as found in a course.

    A component is made of one or more fraction groups that share a fractionation;
    its dose is the sum of their doses.
    """

    name: str
    parts: list[ComponentPart] = field(default_factory=list)

    @property
    def fractions(self) -> set[int | None]:
        return {p.fraction_group.fractions_planned for p in self.parts}


@dataclass
class Course:
    """All plans of one patient that share a structure set, with their doses.

    ``problems`` lists what assembly found missing or inconsistent (a dose without a
    plan, a plan whose structure set is absent, ...). Rules that need what is missing
    become ``not_evaluable``.
    """

    patient_id: str
    patient_name: str
    plans: list[Plan]
    structure_set: StructureSet | None
    doses: list[DoseFile]
    other_files: list[SourceFile] = field(default_factory=list)

    @property
    def files(self) -> list[SourceFile]:
        out = [p.source for p in self.plans]
        if self.structure_set is not None:
            out.append(self.structure_set.source)
        out.extend(d.source for d in self.doses)
        return out

    @property
    def label(self) -> str:
        return " + ".join(p.display_name for p in self.plans) or "(no plan)"

    def fraction_groups(self) -> Iterator[ComponentPart]:
        for plan in self.plans:
            for fg in plan.fraction_groups:
                yield ComponentPart(plan, fg)
