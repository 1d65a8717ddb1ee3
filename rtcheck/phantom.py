"""A synthetic thorax phantom: deterministic DICOM-RT courses with a known answer.

rtcheck is tested against courses whose every number is known in closed form: structures
are analytic solids (spheres, ellipsoids, elliptic cylinders), the dose of each fraction
group is an analytic function of position, and each *variant* of the course breaks exactly
one protocol rule. The files are real DICOM-RT (RT Plan, RT Structure Set, RT Dose, and
optionally CT) that ``dciodvfy`` accepts, written with fixed dates and UIDs derived from a
hash of the variant, so that writing a course twice gives byte-identical files.

Geometry (patient coordinates, mm, head first supine: +x patient left, +y posterior,
+z superior)
--------------------------------------------------------------------------------------
=============  ====================  =======================================================
ROI            interpreted type      shape
=============  ====================  =======================================================
BODY           EXTERNAL              elliptic cylinder 340 x 220 mm, z -120..120, then a
                                     head 150 x 190 mm, z 120..200 (planes on z = 120
                                     belong to the thorax)
Lung_L         ORGAN                 ellipsoid centre (95, 0, 10), semi-axes (55, 80, 110)
Lung_R         ORGAN                 ellipsoid centre (-95, 0, 10), semi-axes (55, 80, 110)
Heart          ORGAN                 ellipsoid centre (0, -35, -40), semi-axes (40, 40, 50)
Esophagus      ORGAN                 cylinder r 8 about (0, 20), z -110..120
SpinalCord     ORGAN                 cylinder r 6 about (0, 80), z -120..130
VB             ORGAN                 cylinder r 18 about (0, 50), z -120..120 (bone)
A_Aorta        ORGAN                 cylinder r 11 about (28, 25), z -100..60
Brain          ORGAN                 ellipsoid centre (0, 5, 165), semi-axes (60, 75, 30)
GTV_SFRT       GTV                   sphere r 35 at (95, 0, 20) in Lung_L (179.59 cc)
Peak_1..4      PTV (Peak_4: empty)   spheres r 7.5 (1.767 cc each, 3.94 % of GTV_SFRT in
                                     all) at the vertices of a regular tetrahedron 15 mm
                                     from the GTV_SFRT centre: edge 24.49 mm, margin to the
                                     GTV_SFRT surface 12.5 mm
GTV_LDRT_1     GTV                   sphere r 15 at (-95, 0, 60) in Lung_R
GTV_LDRT_2     GTV                   sphere r 12 at (95, 10, -60) in Lung_L
GTV_Brain_1    GTV                   sphere r 8 at (25, -10, 170) in Brain
GTV_Bone_1     GTV                   sphere r 10 at (0, 50, -30) in VB
=============  ====================  =======================================================

Peak centres (mm): GTV_SFRT centre + 15/sqrt(3) x (+1,+1,+1), (+1,-1,-1), (-1,+1,-1),
(-1,-1,+1), i.e. (103.66, 8.66, 28.66), (103.66, -8.66, 11.34), (86.34, 8.66, 11.34),
(86.34, -8.66, 28.66). The control arm has GTV (the GTV_SFRT sphere) and PTV (r 45, same
centre) instead of GTV_SFRT, the peaks and the LDRT targets.

Contours are CLOSED_PLANAR polygons with their vertices on the true surface, on the planes
z = k x ``slice_spacing_mm`` (2.5 mm by default), one plane per contour; a plane cutting a
sphere in a circle smaller than 0.5 mm radius gets no contour. A round section gets as
many vertices as keep each chord within ``chord_error_mm`` (0.05 mm) of the curve, 32 to
128 by default (a 7.5 mm circle: 32 vertices, 0.64 % less area than the circle).

Dose model (per fraction, Gy)
-----------------------------
Each fraction group's dose is the maximum over its *dose blobs*; a blob is a sphere with a
level and a radial profile, and is exactly 0 further than ``R + 8 sigma`` from its centre:

* ``gaussian`` (SFRT peaks): ``level`` up to ``R`` = sphere radius + 1.5 mm, then
  ``level * exp(-(d - R)^2 / (2 sigma^2))`` with sigma 2.5 mm. Peak level 10.3 Gy for a
  10 Gy prescription (3 % above it), so every peak's D95 is 10.3 Gy, even on a 4 mm grid;
  half-way between two peaks (12.25 mm from each centre) the SFRT dose is 4.43 Gy and at
  the GTV_SFRT centre 0.58 Gy: a clear valley.
* ``erf`` (LDRT, valley, conventional): ``level * erfc((d - R) / (sigma sqrt 2)) / 2`` with
  R = sphere radius + 5 mm and sigma 2.5 mm: 0.977 x level on the target surface, level
  in its interior, exactly 0 at Brain, GTV_Brain_1, GTV_Bone_1, VB and SpinalCord.

The LDRT plan delivers 2 Gy/fx to GTV_SFRT (the valley), GTV_LDRT_1 and GTV_LDRT_2; the
control arm's CONV plan 2 Gy/fx to the PTV. A stored RT Dose holds the dose of all
fractions of what it sums (PLAN: every fraction group of its plan; FRACTION: one fraction
group; MULTI_PLAN: every plan), in Gy, on a grid of ``dose_spacing_mm`` (2.5 mm) that
covers the BODY unless a plan crops it. :meth:`PhantomSpec.dose_per_fraction_gy` gives the
exact value anywhere; the variants and their ground truth are in :data:`VARIANTS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pydicom
import shapely
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    generate_uid,
)

Vec3 = tuple[float, float, float]
Box = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]

#: Sections of a curved surface smaller than this radius get no contour (a planning
#: system draws nothing on a slice that only grazes a sphere).
MIN_SECTION_RADIUS_MM = 0.5
#: A blob is exactly zero beyond R + this many sigmas (below any stored pixel value).
BLOB_CUTOFF_SIGMAS = 8.0
#: Fixed file-meta identity, so that files do not change with the pydicom version.
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["rtcheck synthetic phantom"])
IMPLEMENTATION_VERSION_NAME = "RTCHECK_PHANTOM"
#: Fixed dates and times: every file of every course claims the same moment.
STUDY_DATE = "20240115"
STUDY_TIME = "093000"


# --------------------------------------------------------------------------- shapes


class Shape(Protocol):
    """An analytic solid that can be contoured, tested for membership and rasterised."""

    def z_extent(self) -> tuple[float, float]: ...

    def xy_bounds(self) -> tuple[float, float, float, float]: ...

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        """The solid's section on plane ``z`` as closed rings ((N, 2) arrays, mm)."""
        ...

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        """Which of the points (..., 3) lie inside (boundary included)."""
        ...


class Solid(Shape, Protocol):
    """A shape whose volume is known in closed form (what a compound adds up)."""

    @property
    def volume_cc(self) -> float: ...


@dataclass(frozen=True)
class Sampling:
    """How finely a round section is drawn: as many vertices as keep every chord within
    ``chord_error_mm`` of the curve, between ``min_points`` and ``max_points``."""

    chord_error_mm: float
    min_points: int
    max_points: int

    def points_for(self, radius_mm: float) -> int:
        ratio = min(self.chord_error_mm / radius_mm, 1.0)
        n = math.ceil(math.pi / math.acos(1.0 - ratio))
        return int(min(max(n, self.min_points), self.max_points))


def _ellipse_ring(cx: float, cy: float, a: float, b: float, sampling: Sampling) -> np.ndarray:
    """Counter-clockwise polygon with its vertices on the ellipse (sampled for its larger
    semi-axis)."""
    t = np.linspace(0.0, 2.0 * np.pi, sampling.points_for(max(a, b)), endpoint=False)
    return np.column_stack((cx + a * np.cos(t), cy + b * np.sin(t)))


@dataclass(frozen=True)
class Ellipsoid:
    centre: Vec3
    semi_axes_mm: Vec3

    def z_extent(self) -> tuple[float, float]:
        return self.centre[2] - self.semi_axes_mm[2], self.centre[2] + self.semi_axes_mm[2]

    def xy_bounds(self) -> tuple[float, float, float, float]:
        (cx, cy, _), (a, b, _) = self.centre, self.semi_axes_mm
        return cx - a, cy - b, cx + a, cy + b

    def section_scale(self, z: float) -> float:
        """Ratio of the section's semi-axes to the equator's (0 outside)."""
        u = (z - self.centre[2]) / self.semi_axes_mm[2]
        return math.sqrt(1.0 - u * u) if abs(u) < 1.0 else 0.0

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        k = self.section_scale(z)
        a, b = k * self.semi_axes_mm[0], k * self.semi_axes_mm[1]
        if min(a, b) < MIN_SECTION_RADIUS_MM:
            return []
        return [_ellipse_ring(self.centre[0], self.centre[1], a, b, sampling)]

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        u = (np.asarray(xyz, dtype=float) - self.centre) / self.semi_axes_mm
        return np.einsum("...i,...i->...", u, u) <= 1.0

    @property
    def volume_cc(self) -> float:
        return 4.0 / 3.0 * math.pi * math.prod(self.semi_axes_mm) / 1000.0


class Sphere(Ellipsoid):
    """A sphere: an ellipsoid with equal semi-axes, built from a centre and a radius."""

    def __init__(self, centre: Sequence[float] | np.ndarray, radius_mm: float) -> None:
        c = tuple(float(v) for v in centre)
        object.__setattr__(self, "centre", c)
        object.__setattr__(self, "semi_axes_mm", (float(radius_mm),) * 3)

    @property
    def radius_mm(self) -> float:
        return self.semi_axes_mm[0]

    def __repr__(self) -> str:
        return f"Sphere(centre={self.centre}, radius_mm={self.radius_mm})"


@dataclass(frozen=True)
class EllipticCylinder:
    """An elliptic cylinder along z; planes on ``z_min`` and ``z_max`` are inside."""

    centre_xy: tuple[float, float]
    semi_axes_mm: tuple[float, float]
    z_min: float
    z_max: float

    def z_extent(self) -> tuple[float, float]:
        return self.z_min, self.z_max

    def xy_bounds(self) -> tuple[float, float, float, float]:
        (cx, cy), (a, b) = self.centre_xy, self.semi_axes_mm
        return cx - a, cy - b, cx + a, cy + b

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        if not self.z_min <= z <= self.z_max:
            return []
        return [_ellipse_ring(*self.centre_xy, *self.semi_axes_mm, sampling)]

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        p = np.asarray(xyz, dtype=float)
        u = (p[..., 0] - self.centre_xy[0]) / self.semi_axes_mm[0]
        v = (p[..., 1] - self.centre_xy[1]) / self.semi_axes_mm[1]
        return (u * u + v * v <= 1.0) & (p[..., 2] >= self.z_min) & (p[..., 2] <= self.z_max)

    @property
    def volume_cc(self) -> float:
        return math.pi * math.prod(self.semi_axes_mm) * (self.z_max - self.z_min) / 1000.0


def cylinder(centre_xy: tuple[float, float], radius_mm: float, z_min: float, z_max: float) -> EllipticCylinder:
    return EllipticCylinder(centre_xy, (radius_mm, radius_mm), z_min, z_max)


class _Compound:
    """What a shape made of ``parts`` derives from them: extent, inside test, volume."""

    parts: tuple[Solid, ...]

    def z_extent(self) -> tuple[float, float]:
        ext = np.array([p.z_extent() for p in self.parts])
        return ext[:, 0].min(), ext[:, 1].max()

    def xy_bounds(self) -> tuple[float, float, float, float]:
        b = np.array([p.xy_bounds() for p in self.parts])
        return b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        return np.logical_or.reduce([p.contains(xyz) for p in self.parts])

    @property
    def volume_cc(self) -> float:
        return sum(p.volume_cc for p in self.parts)


@dataclass(frozen=True)
class Stack(_Compound):
    """Elliptic cylinders stacked end to end (a body outline that narrows at the neck).

    ``parts`` go from inferior to superior and touch; a plane on a shared boundary belongs
    to the lower part, so each plane has exactly one outline.
    """

    parts: tuple[EllipticCylinder, ...]

    def _part_at(self, z: float) -> EllipticCylinder | None:
        return next((p for p in self.parts if p.z_min <= z <= p.z_max), None)

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        part = self._part_at(z)
        return part.rings(z, sampling) if part else []


@dataclass(frozen=True)
class Union(_Compound):
    """Disjoint solids drawn as one ROI (a GTV in two pieces)."""

    parts: tuple[Ellipsoid, ...]

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        return [r for p in self.parts for r in p.rings(z, sampling)]


@dataclass(frozen=True)
class Difference:
    """A solid minus other solids: the SFRT valley, a GTV with holes around its peaks.

    Each section is the base section minus the union of the holes' sections, written as
    an outer ring (counter-clockwise) and one ring per hole (clockwise): nested contours
    that a reader must combine even-odd (or XOR). Overlapping holes are merged first, so
    no point is inside two hole rings.
    """

    base: Ellipsoid
    holes: tuple[Ellipsoid, ...]

    def z_extent(self) -> tuple[float, float]:
        return self.base.z_extent()

    def xy_bounds(self) -> tuple[float, float, float, float]:
        return self.base.xy_bounds()

    def rings(self, z: float, sampling: Sampling) -> list[np.ndarray]:
        outer = self.base.rings(z, sampling)
        if not outer:
            return []
        holes = [shapely.Polygon(r) for h in self.holes for r in h.rings(z, sampling)]
        shape = shapely.Polygon(outer[0]).difference(shapely.union_all(holes))
        out = []
        for poly in getattr(shape, "geoms", [shape]):
            poly = shapely.geometry.polygon.orient(poly, 1.0)
            out.append(np.asarray(poly.exterior.coords)[:-1])
            out.extend(np.asarray(i.coords)[:-1] for i in poly.interiors)
        return out

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        inside_hole = np.logical_or.reduce([h.contains(xyz) for h in self.holes])
        return self.base.contains(xyz) & ~inside_hole


# --------------------------------------------------------------------------- dose model


_erfc = np.frompyfunc(math.erfc, 1, 1)


@dataclass(frozen=True)
class DoseBlob:
    """A spherical dose cloud of one fraction group, per fraction.

    ``profile`` is ``gaussian`` (flat ``level_gy`` up to ``R``, Gaussian shoulder outside) or
    ``erf`` (``level_gy * erfc((d - R) / (sigma sqrt 2)) / 2``), with ``R`` the sphere's radius
    plus ``margin_mm``. The blob is exactly 0 beyond ``R + 8 sigma``.
    """

    sphere: Sphere
    level_gy: float
    profile: str
    margin_mm: float
    sigma_mm: float

    @property
    def plateau_radius_mm(self) -> float:
        return self.sphere.radius_mm + self.margin_mm

    @property
    def reach_mm(self) -> float:
        return self.plateau_radius_mm + BLOB_CUTOFF_SIGMAS * self.sigma_mm

    def dose_at_distance_gy(self, d: np.ndarray) -> np.ndarray:
        """Dose per fraction at distance ``d`` (mm) from the centre."""
        d = np.asarray(d, dtype=float)
        excess = d - self.plateau_radius_mm
        if self.profile == "gaussian":
            shoulder = np.exp(-0.5 * (np.maximum(excess, 0.0) / self.sigma_mm) ** 2)
        elif self.profile == "erf":
            shoulder = 0.5 * np.asarray(_erfc(excess / (self.sigma_mm * math.sqrt(2.0))), dtype=float)
        else:
            raise ValueError(f"unknown dose profile {self.profile!r}: use 'gaussian' or 'erf'")
        return np.where(d > self.reach_mm, 0.0, self.level_gy * shoulder)


def peak_blob(peak: Sphere, level_gy: float) -> DoseBlob:
    return DoseBlob(peak, level_gy, "gaussian", margin_mm=1.5, sigma_mm=2.5)


def erf_blob(target: Sphere, level_gy: float) -> DoseBlob:
    return DoseBlob(target, level_gy, "erf", margin_mm=5.0, sigma_mm=2.5)


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class RoiSpec:
    """A structure of the structure set; ``interpreted_type`` "" is written empty (Type 2)."""

    name: str
    shape: Shape
    interpreted_type: str
    color: tuple[int, int, int] = (255, 255, 0)
    geometric_type: str = "CLOSED_PLANAR"


@dataclass(frozen=True)
class FractionGroupSpec:
    """One fraction group: what is prescribed (dose references, beams) and what is delivered.

    ``targets`` are the ROIs of its TARGET dose references, each prescribed
    ``rx_per_fraction_gy``; ``blobs`` are the dose per fraction actually delivered.
    """

    component: str
    fractions: int
    rx_per_fraction_gy: float
    targets: tuple[str, ...]
    blobs: tuple[DoseBlob, ...]
    gantry_angles: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)

    @property
    def beam_dose_gy(self) -> float:
        return self.rx_per_fraction_gy / len(self.gantry_angles)


@dataclass(frozen=True)
class PlanSpec:
    """An RT Plan; ``dose_extent`` (mm box) crops its dose grid, None covers the spec's."""

    label: str
    description: str
    fraction_groups: tuple[FractionGroupSpec, ...]
    dose_extent: Box | None = None


#: Dose grid covering BODY and Brain, aligned with the 2.5, 1.25 and 1 mm contour planes.
BODY_DOSE_EXTENT: Box = ((-175.0, 175.0), (-115.0, 115.0), (-125.0, 205.0))


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that defines one course; the writer derives every byte from it.

    Output options (all overridable through :func:`write_course`):
    ``slice_spacing_mm`` contour planes; ``chord_error_mm``, ``min_points_per_contour`` and
    ``max_points_per_contour`` how many vertices a round section gets (see :class:`Sampling`);
    ``dose_spacing_mm`` and ``dose_extent`` the dose grid; ``bits`` 16 or 32 bit dose pixels;
    ``dose_units`` GY or RELATIVE (RELATIVE stores dose / the plan's prescribed total);
    ``dose_layout`` ``plan`` (one PLAN dose per plan), ``fraction_group`` (one FRACTION
    dose per fraction group) or ``multi_plan`` (one MULTI_PLAN dose of all plans);
    ``dose_references`` False drops DoseReferenceSequence and the fraction groups'
    ReferencedDoseReferenceSequence; ``omit_modalities`` leaves out whole objects
    (e.g. ``("RTPLAN",)`` for a dose whose plan is absent); ``uid_seed`` feeds every UID.
    """

    variant: str
    arm: str
    rois: tuple[RoiSpec, ...]
    plans: tuple[PlanSpec, ...]
    slice_spacing_mm: float = 2.5
    chord_error_mm: float = 0.05
    min_points_per_contour: int = 32
    max_points_per_contour: int = 128
    dose_spacing_mm: float = 2.5
    dose_extent: Box = BODY_DOSE_EXTENT
    bits: int = 16
    dose_units: str = "GY"
    dose_layout: str = "plan"
    dose_references: bool = True
    omit_modalities: tuple[str, ...] = ()
    transfer_syntax_uid: str = ExplicitVRLittleEndian
    uid_seed: str = ""

    @property
    def patient_id(self) -> str:
        return f"PHANTOM_{self.variant}"[:64]

    def roi(self, name: str) -> RoiSpec:
        for r in self.rois:
            if r.name == name:
                return r
        raise KeyError(f"variant {self.variant!r} has no ROI {name!r}")

    def fraction_group(self, component: str) -> FractionGroupSpec:
        groups = [fg for p in self.plans for fg in p.fraction_groups if fg.component == component]
        if len(groups) != 1:
            known = sorted({fg.component for p in self.plans for fg in p.fraction_groups})
            raise KeyError(f"variant {self.variant!r}: no single fraction group {component!r} (has {known})")
        return groups[0]

    def dose_per_fraction_gy(self, component: str, xyz: np.ndarray) -> np.ndarray:
        """Exact dose per fraction of ``component`` (SFRT, LDRT or CONV) at points (..., 3)."""
        p = np.asarray(xyz, dtype=float)
        out = np.zeros(p.shape[:-1])
        for blob in self.fraction_group(component).blobs:
            d = np.linalg.norm(p - blob.sphere.centre, axis=-1)
            out = np.maximum(out, blob.dose_at_distance_gy(d))
        return out

    def plan_dose_gy(self, label: str, xyz: np.ndarray) -> np.ndarray:
        """Exact dose of all fractions of plan ``label`` at points (..., 3)."""
        plan = next((p for p in self.plans if p.label == label), None)
        if plan is None:
            raise KeyError(f"variant {self.variant!r} has no plan {label!r}")
        return sum(
            (fg.fractions * self.dose_per_fraction_gy(fg.component, xyz) for fg in plan.fraction_groups),
            start=np.zeros(np.shape(xyz)[:-1]),
        )


# --------------------------------------------------------------------------- the phantom

_ORGAN_COLOURS = {
    "BODY": (0, 255, 0),
    "Lung_L": (0, 128, 255),
    "Lung_R": (0, 160, 255),
    "Heart": (255, 0, 128),
    "Esophagus": (160, 80, 0),
    "SpinalCord": (255, 255, 0),
    "VB": (220, 220, 220),
    "A_Aorta": (200, 0, 0),
    "Brain": (255, 180, 200),
}

GTV_SFRT = Sphere((95.0, 0.0, 20.0), 35.0)
PEAK_RADIUS_MM = 7.5
PEAK_OFFSET_MM = 15.0
_TETRAHEDRON = np.array([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)]) / math.sqrt(3.0)
GTV_SFRT_2 = Sphere((-95.0, 0.0, -40.0), 35.0)
GTV_LDRT_1 = Sphere((-95.0, 0.0, 60.0), 15.0)
GTV_LDRT_2 = Sphere((95.0, 10.0, -60.0), 12.0)
GTV_BRAIN_1 = Sphere((25.0, -10.0, 170.0), 8.0)
GTV_BONE_1 = Sphere((0.0, 50.0, -30.0), 10.0)
#: Peak level for a prescription: 3 % hot, as a plan normalised to cover the peaks would be.
PEAK_HOTSPOT = 1.03


def tetrahedron_peaks(gtv: Sphere, offset_mm: float = PEAK_OFFSET_MM) -> list[Sphere]:
    """Four peaks at the vertices of a regular tetrahedron ``offset_mm`` from the GTV centre."""
    centres = np.asarray(gtv.centre) + offset_mm * _TETRAHEDRON
    return [Sphere(c, PEAK_RADIUS_MM) for c in centres]


def _anatomy() -> list[RoiSpec]:
    shapes: dict[str, tuple[Shape, str]] = {
        "BODY": (
            Stack(
                (
                    EllipticCylinder((0.0, 0.0), (170.0, 110.0), -120.0, 120.0),
                    EllipticCylinder((0.0, 0.0), (75.0, 95.0), 120.0, 200.0),
                )
            ),
            "EXTERNAL",
        ),
        "Lung_L": (Ellipsoid((95.0, 0.0, 10.0), (55.0, 80.0, 110.0)), "ORGAN"),
        "Lung_R": (Ellipsoid((-95.0, 0.0, 10.0), (55.0, 80.0, 110.0)), "ORGAN"),
        "Heart": (Ellipsoid((0.0, -35.0, -40.0), (40.0, 40.0, 50.0)), "ORGAN"),
        "Esophagus": (cylinder((0.0, 20.0), 8.0, -110.0, 120.0), "ORGAN"),
        "SpinalCord": (cylinder((0.0, 80.0), 6.0, -120.0, 130.0), "ORGAN"),
        "VB": (cylinder((0.0, 50.0), 18.0, -120.0, 120.0), "ORGAN"),
        "A_Aorta": (cylinder((28.0, 25.0), 11.0, -100.0, 60.0), "ORGAN"),
        "Brain": (Ellipsoid((0.0, 5.0, 165.0), (60.0, 75.0, 30.0)), "ORGAN"),
    }
    return [RoiSpec(n, s, t, _ORGAN_COLOURS[n]) for n, (s, t) in shapes.items()]


def _target(name: str, shape: Shape, interpreted_type: str = "GTV") -> RoiSpec:
    return RoiSpec(name, shape, interpreted_type, (255, 0, 0), "CLOSED_PLANAR")


@dataclass(frozen=True)
class _Design:
    """The knobs the variants turn; :func:`_experimental` turns a design into a spec."""

    peaks: tuple[Sphere, ...] = tuple(tetrahedron_peaks(GTV_SFRT))
    gtv_sfrt: Sphere | Union = GTV_SFRT
    second_lesion: bool = False
    ldrt_2: Sphere = GTV_LDRT_2
    sfrt_fractions: int = 3
    sfrt_rx_gy: float = 10.0
    peak_level_gy: float | None = None  # None: PEAK_HOTSPOT x prescription
    ldrt_fractions: int = 5
    ldrt_rx_gy: float = 2.0
    valley_level_gy: float | None = None  # None: the LDRT prescription
    ldrt_targets_brain_met: bool = False
    ldrt_doses_brain_met: bool = False
    drop_spinal_cord: bool = False
    valley_geometric_type: str | None = None  # draw GTV_Valley with this contour type
    ldrt_dose_extent: Box | None = None
    one_plan: bool = False
    dose_layout: str = "plan"
    dose_references: bool = True
    #: Anatomy drawn under other names (TG-263 name -> the centre's name).
    renamed: tuple[tuple[str, str], ...] = ()


def _experimental(variant: str, d: _Design) -> PhantomSpec:
    rois = [r for r in _anatomy() if not (d.drop_spinal_cord and r.name == "SpinalCord")]
    names = dict(d.renamed)
    rois = [dataclasses.replace(r, name=names.get(r.name, r.name)) for r in rois]
    rois.append(_target("GTV_SFRT", d.gtv_sfrt))
    peaks = list(d.peaks)
    peak_names = [f"Peak_{i + 1}" for i in range(len(peaks))]
    # The valley dose covers every piece of the SFRT GTV(s).
    lesions: list[Sphere] = []
    for lesion in d.gtv_sfrt.parts if isinstance(d.gtv_sfrt, Union) else (d.gtv_sfrt,):
        assert isinstance(lesion, Sphere), "a lesion's dose cloud is spherical"
        lesions.append(lesion)
    lesion_names = ["GTV_SFRT"] * len(lesions)
    if d.second_lesion:
        rois.append(_target("GTV_SFRT_2", GTV_SFRT_2))
        more = tetrahedron_peaks(GTV_SFRT_2)
        peak_names += [f"Peak_{len(peaks) + i + 1}" for i in range(len(more))]
        peaks += more
        lesions.append(GTV_SFRT_2)
        lesion_names.append("GTV_SFRT_2")
    # Peak_4 keeps an empty RTROIInterpretedType: planning systems export that (Type 2).
    rois += [_target(n, p, "" if n == "Peak_4" else "PTV") for n, p in zip(peak_names, peaks, strict=True)]
    if d.valley_geometric_type:
        holes = tuple(Sphere(p.centre, p.radius_mm + 5.0) for p in peaks[:4])
        rois.append(
            dataclasses.replace(
                _target("GTV_Valley", Difference(GTV_SFRT, holes)), geometric_type=d.valley_geometric_type
            )
        )
    rois += [_target("GTV_LDRT_1", GTV_LDRT_1), _target("GTV_LDRT_2", d.ldrt_2)]
    rois += [_target("GTV_Brain_1", GTV_BRAIN_1), _target("GTV_Bone_1", GTV_BONE_1)]
    if d.ldrt_targets_brain_met:
        rois.append(_target("GTV_LDRT_Brain", GTV_BRAIN_1))

    peak_level = d.peak_level_gy if d.peak_level_gy is not None else PEAK_HOTSPOT * d.sfrt_rx_gy
    sfrt = FractionGroupSpec(
        "SFRT",
        d.sfrt_fractions,
        d.sfrt_rx_gy,
        tuple(peak_names),
        tuple(peak_blob(p, peak_level) for p in peaks),
        gantry_angles=(30.0, 90.0, 150.0, 330.0),
    )
    valley_level = d.valley_level_gy if d.valley_level_gy is not None else d.ldrt_rx_gy
    ldrt_targets = [*dict.fromkeys(lesion_names), "GTV_LDRT_1", "GTV_LDRT_2"]
    ldrt_blobs = [erf_blob(s, valley_level) for s in lesions]
    ldrt_blobs += [erf_blob(GTV_LDRT_1, d.ldrt_rx_gy), erf_blob(d.ldrt_2, d.ldrt_rx_gy)]
    if d.ldrt_targets_brain_met:
        ldrt_targets.append("GTV_Brain_1")
    if d.ldrt_targets_brain_met or d.ldrt_doses_brain_met:
        ldrt_blobs.append(erf_blob(GTV_BRAIN_1, d.ldrt_rx_gy))
    ldrt = FractionGroupSpec("LDRT", d.ldrt_fractions, d.ldrt_rx_gy, tuple(ldrt_targets), tuple(ldrt_blobs))

    sfrt_text = f"SFRT peaks {d.sfrt_rx_gy:g} Gy x {d.sfrt_fractions}"
    ldrt_text = f"LDRT and valley {d.ldrt_rx_gy:g} Gy x {d.ldrt_fractions}"
    plans: tuple[PlanSpec, ...]
    if d.one_plan:
        plans = (PlanSpec("SFRT_LDRT", f"{sfrt_text}; {ldrt_text}", (sfrt, ldrt), d.ldrt_dose_extent),)
    else:
        plans = (
            PlanSpec("SFRT", sfrt_text, (sfrt,)),
            PlanSpec("LDRT", ldrt_text, (ldrt,), d.ldrt_dose_extent),
        )
    return PhantomSpec(
        variant=variant,
        arm="experimental",
        rois=tuple(rois),
        plans=plans,
        dose_layout=d.dose_layout,
        dose_references=d.dose_references,
        uid_seed=variant,
    )


# --------------------------------------------------------------------------- variants

#: Every named course. Each builder's docstring says what is wrong with it and which rule
#: should catch it; rules and tests elsewhere refer to these names.
VARIANTS: dict[str, Callable[[], PhantomSpec]] = {}


def _variant(fn: Callable[[], PhantomSpec]) -> Callable[[], PhantomSpec]:
    VARIANTS[fn.__name__.removeprefix("_v_")] = fn
    return fn


def _design(name: str, **knobs: object) -> PhantomSpec:
    return _experimental(name, _Design(**knobs))  # type: ignore[arg-type]


def _moved_peak(index: int, centre: np.ndarray) -> tuple[Sphere, ...]:
    peaks = tetrahedron_peaks(GTV_SFRT)
    peaks[index] = Sphere(centre, PEAK_RADIUS_MM)
    return tuple(peaks)


@_variant
def _v_compliant() -> PhantomSpec:
    """Per protocol. SFRT plan: Peak_1..4 10 Gy x 3 (delivered 10.3 Gy/fx in every peak);
    LDRT plan: GTV_SFRT (valley), GTV_LDRT_1, GTV_LDRT_2 2 Gy x 5 (interior 2.0 Gy/fx,
    surface 1.95 Gy/fx); 0 Gy at Brain, brain and bone metastases. Every rule passes."""
    return _design("compliant")


@_variant
def _v_control_arm() -> PhantomSpec:
    """Control arm: plan CONV, PTV (GTV + 10 mm) 2 Gy x 30 = 60 Gy, no peaks, no LDRT
    targets. The SFRT and LDRT rules do not apply; the arm must be recognised as control."""
    rois = _anatomy()
    ptv = Sphere(GTV_SFRT.centre, 45.0)
    rois += [_target("GTV", GTV_SFRT), _target("PTV", ptv, "PTV")]
    rois += [_target("GTV_Brain_1", GTV_BRAIN_1), _target("GTV_Bone_1", GTV_BONE_1)]
    conv = FractionGroupSpec("CONV", 30, 2.0, ("PTV",), (erf_blob(ptv, 2.0),), (0.0, 60.0, 120.0, 180.0))
    plan = PlanSpec("CONV", "Conventional 2 Gy x 30", (conv,))
    return PhantomSpec("control_arm", "control", tuple(rois), (plan,), uid_seed="control_arm")


@_variant
def _v_sfrt_5_fractions() -> PhantomSpec:
    """The peak plan is planned in 5 fractions (10 Gy x 5): fractionation rule, SFRT
    component must have 3 fractions -> unacceptable."""
    return _design("sfrt_5_fractions", sfrt_fractions=5)


@_variant
def _v_ldrt_3_fractions() -> PhantomSpec:
    """The LDRT plan is planned in 3 fractions (2 Gy x 3): LDRT fractionation rule
    (5 fractions) -> unacceptable."""
    return _design("ldrt_3_fractions", ldrt_fractions=3)


@_variant
def _v_sfrt_rx_7gy() -> PhantomSpec:
    """Peaks prescribed (and delivered, 7.21 Gy/fx) 7 Gy x 3: below the 8-12 Gy/fx window
    but within an acceptable-variation band -> peak prescription rule: acceptable variation."""
    return _design("sfrt_rx_7gy", sfrt_rx_gy=7.0)


@_variant
def _v_sfrt_rx_6gy() -> PhantomSpec:
    """Peaks prescribed (and delivered, 6.18 Gy/fx) 6 Gy x 3 -> peak prescription rule:
    unacceptable."""
    return _design("sfrt_rx_6gy", sfrt_rx_gy=6.0)


@_variant
def _v_ldrt_rx_4gy() -> PhantomSpec:
    """LDRT (and valley) prescribed and delivered 4 Gy x 5, above the 1-3 Gy/fx window
    -> LDRT prescription rule (and valley dose): unacceptable."""
    return _design("ldrt_rx_4gy", ldrt_rx_gy=4.0)


@_variant
def _v_two_sfrt_lesions() -> PhantomSpec:
    """SFRT to two lesions: GTV_SFRT_2 (r 35 at (-95, 0, -40), in Lung_R) with Peak_5..8
    in it, all prescribed 10 Gy x 3 -> "SFRT to one lesion only" rule."""
    return _design("two_sfrt_lesions", second_lesion=True)


@_variant
def _v_missing_spinal_cord() -> PhantomSpec:
    """No SpinalCord ROI -> required-structure rule (and the cord dose limit is
    not evaluable)."""
    return _design("missing_spinal_cord", drop_spinal_cord=True)


@_variant
def _v_ldrt_targets_brain_met() -> PhantomSpec:
    """The LDRT plan has a dose reference on GTV_Brain_1 (and delivers 2 Gy/fx to it), and
    an ROI GTV_LDRT_Brain (the same sphere) exists -> "no LDRT to brain or bone metastases"."""
    return _design("ldrt_targets_brain_met", ldrt_targets_brain_met=True)


@_variant
def _v_no_dose_reference() -> PhantomSpec:
    """No DoseReferenceSequence in either plan (nor ReferencedDoseReferenceSequence): the
    prescription is only in BeamDose (4 x 2.5 Gy SFRT, 4 x 0.5 Gy LDRT). Prescription
    rules must still pass, reporting the beam-dose fallback."""
    return _design("no_dose_reference", dose_references=False)


@_variant
def _v_centre_names() -> PhantomSpec:
    """As compliant, with the organs named as another centre writes them: Lt Lung, Rt Lung,
    Spinal Cord, ESOPHAGUS, External. Names are matched across spellings: per protocol."""
    renamed = (
        ("Lung_L", "Lt Lung"),
        ("Lung_R", "Rt Lung"),
        ("SpinalCord", "Spinal Cord"),
        ("Esophagus", "ESOPHAGUS"),
        ("BODY", "External"),
    )
    return _design("centre_names", renamed=renamed)


@_variant
def _v_single_plan_two_groups() -> PhantomSpec:
    """One RT Plan "SFRT_LDRT": fraction group 1 = peaks 10 Gy x 3, group 2 = LDRT/valley
    2 Gy x 5, one FRACTION dose per group. Compliant: rules must work per fraction group."""
    return _design("single_plan_two_groups", one_plan=True, dose_layout="fraction_group")


@_variant
def _v_multi_plan_dose() -> PhantomSpec:
    """Plans as compliant, but only one MULTI_PLAN dose (SFRT 3 fx + LDRT 5 fx summed):
    per-fraction dose rules cannot split it and must say so (not evaluable)."""
    return _design("multi_plan_dose", dose_layout="multi_plan")


@_variant
def _v_peak_near_gtv_edge() -> PhantomSpec:
    """Peak_1 moved out to 23.5 mm from the GTV_SFRT centre: its surface is 4 mm from the
    GTV surface -> peak margin rule (>= 10 mm)."""
    return _design("peak_near_gtv_edge", peaks=_moved_peak(0, np.add(GTV_SFRT.centre, 23.5 * _TETRAHEDRON[0])))


def peak_offset_for_margin(margin_mm: float) -> float:
    """Distance from the GTV_SFRT centre that leaves a peak ``margin_mm`` inside its surface."""
    return GTV_SFRT.radius_mm - PEAK_RADIUS_MM - margin_mm


@_variant
def _v_peak_margin_10_4mm() -> PhantomSpec:
    """Peak_1 moved out along its oblique lattice direction (1, 1, 1)/sqrt 3 to 17.1 mm from
    the GTV_SFRT centre: its surface is 10.4 mm inside the GTV surface, with the closest
    points between contour planes. Per protocol (>= 10 mm): a compliant plan whose peak
    sits where a planner puts it, just past the threshold."""
    centre = np.add(GTV_SFRT.centre, peak_offset_for_margin(10.4) * _TETRAHEDRON[0])
    return _design("peak_margin_10_4mm", peaks=_moved_peak(0, centre))


@_variant
def _v_peak_margin_9_4mm() -> PhantomSpec:
    """Peak_1 moved out along (1, 1, 1)/sqrt 3 to 18.1 mm from the GTV_SFRT centre: its
    surface is 9.4 mm inside the GTV surface -> peak margin rule: acceptable variation
    (5-10 mm)."""
    centre = np.add(GTV_SFRT.centre, peak_offset_for_margin(9.4) * _TETRAHEDRON[0])
    return _design("peak_margin_9_4mm", peaks=_moved_peak(0, centre))


@_variant
def _v_peaks_too_close() -> PhantomSpec:
    """Peak_2 moved to 12 mm (centre to centre) from Peak_1 along their edge (the spheres
    overlap by 3 mm) -> peak spacing rule (>= 20 mm)."""
    p1 = tetrahedron_peaks(GTV_SFRT)[0].centre
    p2 = tetrahedron_peaks(GTV_SFRT)[1].centre
    u = np.subtract(p2, p1) / np.linalg.norm(np.subtract(p2, p1))
    return _design("peaks_too_close", peaks=_moved_peak(1, np.add(p1, 12.0 * u)))


@_variant
def _v_peak_outside_gtv() -> PhantomSpec:
    """Peak_1 centred 40 mm from the GTV_SFRT centre, 5 mm outside the GTV -> peak
    containment rule."""
    return _design("peak_outside_gtv", peaks=_moved_peak(0, np.add(GTV_SFRT.centre, 40.0 * _TETRAHEDRON[0])))


@_variant
def _v_second_sfrt_lesion() -> PhantomSpec:
    """GTV_SFRT is drawn as two disconnected spheres (the r 35 lesion plus r 12 at
    (95, 30, 85)) -> "one SFRT lesion" / connected-GTV rule."""
    return _design("second_sfrt_lesion", gtv_sfrt=Union((GTV_SFRT, Sphere((95.0, 30.0, 85.0), 12.0))))


@_variant
def _v_ldrt_overlaps_bone_met() -> PhantomSpec:
    """GTV_LDRT_2 moved to (0, 50, -15), 15 mm from GTV_Bone_1 (overlapping it), with its
    LDRT dose -> "no LDRT to bone metastases" (overlap and dose on GTV_Bone_1)."""
    return _design("ldrt_overlaps_bone_met", ldrt_2=Sphere((0.0, 50.0, -15.0), GTV_LDRT_2.radius_mm))


@_variant
def _v_peaks_overdosed_14gy() -> PhantomSpec:
    """Peaks prescribed 10 Gy x 3 but delivered 14 Gy/fx (D95 14 Gy) -> peak D95 rule."""
    return _design("peaks_overdosed_14gy", peak_level_gy=14.0)


@_variant
def _v_peaks_underdosed_6gy() -> PhantomSpec:
    """Peaks prescribed 10 Gy x 3 but delivered 6 Gy/fx (D95 6 Gy) -> peak D95 rule."""
    return _design("peaks_underdosed_6gy", peak_level_gy=6.0)


@_variant
def _v_valley_4gy() -> PhantomSpec:
    """The LDRT plan delivers 4 Gy/fx to GTV_SFRT (prescription still 2 Gy x 5) -> valley
    dose rule (1-3 Gy/fx)."""
    return _design("valley_4gy", valley_level_gy=4.0)


@_variant
def _v_ldrt_irradiates_brain_met() -> PhantomSpec:
    """The LDRT dose covers GTV_Brain_1 with 2 Gy/fx although no dose reference names it
    -> "no LDRT dose on brain metastases" (a dose rule, not a prescription rule)."""
    return _design("ldrt_irradiates_brain_met", ldrt_doses_brain_met=True)


@_variant
def _v_dose_grid_misses_ldrt_target() -> PhantomSpec:
    """The LDRT dose grid starts at x = -50 mm: GTV_LDRT_1 (x -110..-80) is outside it
    -> dose-grid coverage rule; its LDRT dose rules are not evaluable."""
    extent = ((-50.0, 175.0), BODY_DOSE_EXTENT[1], BODY_DOSE_EXTENT[2])
    return _design("dose_grid_misses_ldrt_target", ldrt_dose_extent=extent)


@_variant
def _v_dose_32bit() -> PhantomSpec:
    """Compliant, with 32-bit dose pixels (what most planning systems write)."""
    return dataclasses.replace(_design("dose_32bit"), bits=32)


@_variant
def _v_relative_dose_units() -> PhantomSpec:
    """Dose Units RELATIVE (dose / the plan's prescribed total): absolute dose rules must
    refuse it (not evaluable), never read it as Gy."""
    return dataclasses.replace(_design("relative_dose_units"), dose_units="RELATIVE")


@_variant
def _v_valley_contoured() -> PhantomSpec:
    """Compliant plus GTV_Valley = GTV_SFRT minus (peaks + 5 mm), drawn as nested
    CLOSED_PLANAR contours (outer ring and holes, even-odd)."""
    return _design("valley_contoured", valley_geometric_type="CLOSED_PLANAR")


@_variant
def _v_valley_xor() -> PhantomSpec:
    """As ``valley_contoured`` with GTV_Valley's contours typed CLOSEDPLANAR_XOR."""
    return _design("valley_xor", valley_geometric_type="CLOSEDPLANAR_XOR")


def build_spec(variant: str = "compliant", **overrides: object) -> PhantomSpec:
    """The spec of ``variant`` with output options replaced (see :class:`PhantomSpec`).

    Overrides also change every UID, so a course written with other options never shares
    a SOP Instance UID with the default one.
    """
    try:
        spec = VARIANTS[variant]()
    except KeyError:
        raise KeyError(f"unknown phantom variant {variant!r}; known: {', '.join(VARIANTS)}") from None
    if overrides:
        seed = f"{spec.uid_seed}|{sorted(overrides.items())!r}"
        spec = dataclasses.replace(spec, **overrides, uid_seed=seed)  # type: ignore[arg-type]
    return spec


# --------------------------------------------------------------------------- DICOM


def _ds(value: float) -> str:
    """A DS string that is the same on every machine (no float repr surprises)."""
    return f"{round(value, 6) + 0.0:.10g}"


class _Uids:
    """Deterministic UIDs: a hash of the spec's seed and the object's role."""

    def __init__(self, seed: str) -> None:
        self.seed = seed

    def __call__(self, *parts: object) -> str:
        return generate_uid(PYDICOM_ROOT_UID, [self.seed, *map(str, parts)])


def _base(spec: PhantomSpec, uid: _Uids, sop_class: str, modality: str, series: int, key: str) -> Dataset:
    """Patient, General Study, (RT) Series, General Equipment and SOP Common modules."""
    ds = Dataset()
    ds.InstanceCreationDate, ds.InstanceCreationTime = STUDY_DATE, STUDY_TIME
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid("instance", key)
    ds.StudyDate, ds.StudyTime = STUDY_DATE, STUDY_TIME
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "rtcheck"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOM"
    ds.SeriesDescription = f"{modality} {key}"
    ds.ManufacturerModelName = "synthetic thorax phantom"
    ds.OperatorsName = ""
    ds.PatientName = f"Phantom^{spec.variant}"
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION_NAME
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series", key)
    ds.StudyID = "1"
    ds.SeriesNumber = series
    ds.SeriesDate, ds.SeriesTime = STUDY_DATE, STUDY_TIME
    return ds


def _save(ds: Dataset, path: Path, spec: PhantomSpec) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(spec.transfer_syntax_uid)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def contour_planes(z_min: float, z_max: float, spacing_mm: float) -> np.ndarray:
    """The planes z = k x spacing inside [z_min, z_max]."""
    k0, k1 = math.ceil(z_min / spacing_mm - 1e-9), math.floor(z_max / spacing_mm + 1e-9)
    return np.round(np.arange(k0, k1 + 1) * spacing_mm, 6)


def _contour_data(ring: np.ndarray, z: float) -> RawDataElement:
    """ContourData as a ready-encoded element: formatting ~10^6 coordinates through
    pydicom's DS objects takes seconds, a single format string a fraction of that."""
    pts = np.column_stack((ring, np.full(len(ring), z)))
    flat = (np.round(pts, 2) + 0.0).ravel().tolist()
    text = (("%.2f\\" * len(flat)) % tuple(flat))[:-1].encode("ascii")
    if len(text) % 2:
        text += b" "
    return RawDataElement(Tag(0x30060050), "DS", len(text), text, 0, False, True)


def _rtstruct(spec: PhantomSpec, uid: _Uids) -> Dataset:
    ds = _base(spec, uid, RTStructureSetStorage, "RTSTRUCT", 2, "RS")
    for_uid = uid("frame of reference")
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "Thorax"
    ds.StructureSetName = "Thorax phantom"
    ds.StructureSetDate, ds.StructureSetTime = STUDY_DATE, STUDY_TIME
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = for_uid
    ds.ReferencedFrameOfReferenceSequence = [ref_for]
    ssroi, contours, observations = [], [], []
    sampling = Sampling(spec.chord_error_mm, spec.min_points_per_contour, spec.max_points_per_contour)
    for number, roi in enumerate(spec.rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = for_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = "MANUAL"
        ssroi.append(item)

        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(roi.color)
        roi_contour.ReferencedROINumber = number
        seq = []
        for z in contour_planes(*roi.shape.z_extent(), spec.slice_spacing_mm):
            for ring in roi.shape.rings(float(z), sampling):
                c = Dataset()
                c.set_original_encoding(False, True, "iso8859")
                c.ContourGeometricType = roi.geometric_type
                c.NumberOfContourPoints = len(ring)
                c[0x30060050] = _contour_data(ring, float(z))
                seq.append(c)
        roi_contour.ContourSequence = seq
        contours.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.ROIObservationLabel = roi.name
        obs.RTROIInterpretedType = roi.interpreted_type
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = ssroi
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    _approval(ds)
    return ds


def _approval(ds: Dataset) -> None:
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate, ds.ReviewTime = STUDY_DATE, STUDY_TIME
    ds.ReviewerName = "Physicist^Phantom"


def _isocentre(fg: FractionGroupSpec) -> list[str]:
    centres = np.array([b.sphere.centre for b in fg.blobs])
    return [_ds(v) for v in np.round(centres.mean(axis=0), 1)]


def _beam(fg: FractionGroupSpec, number: int, gantry: float) -> Dataset:
    beam = Dataset()
    beam.Manufacturer = "rtcheck"
    beam.TreatmentMachineName = "PHANTOM_LINAC"
    beam.PrimaryDosimeterUnit = "MU"
    beam.SourceAxisDistance = "1000"
    limits = []
    for kind in ("ASYMX", "ASYMY"):
        lim = Dataset()
        lim.RTBeamLimitingDeviceType = kind
        lim.NumberOfLeafJawPairs = 1
        limits.append(lim)
    beam.BeamLimitingDeviceSequence = limits
    beam.BeamNumber = number
    beam.BeamName = f"{fg.component}_G{int(gantry):03d}"
    beam.BeamDescription = f"{fg.component} static field, gantry {gantry:g}"
    beam.BeamType = "STATIC"
    beam.RadiationType = "PHOTON"
    beam.TreatmentDeliveryType = "TREATMENT"
    beam.NumberOfWedges = 0
    beam.NumberOfCompensators = 0
    beam.NumberOfBoli = 0
    beam.NumberOfBlocks = 0
    beam.FinalCumulativeMetersetWeight = "1"
    beam.NumberOfControlPoints = 2
    first = Dataset()
    first.ControlPointIndex = 0
    first.NominalBeamEnergy = "6"
    first.DoseRateSet = "600"
    positions = []
    for kind in ("ASYMX", "ASYMY"):
        pos = Dataset()
        pos.RTBeamLimitingDeviceType = kind
        pos.LeafJawPositions = ["-50", "50"]
        positions.append(pos)
    first.BeamLimitingDevicePositionSequence = positions
    first.GantryAngle = _ds(gantry)
    first.GantryRotationDirection = "NONE"
    first.BeamLimitingDeviceAngle = "0"
    first.BeamLimitingDeviceRotationDirection = "NONE"
    first.PatientSupportAngle = "0"
    first.PatientSupportRotationDirection = "NONE"
    first.TableTopEccentricAngle = "0"
    first.TableTopEccentricRotationDirection = "NONE"
    first.TableTopVerticalPosition = ""
    first.TableTopLongitudinalPosition = ""
    first.TableTopLateralPosition = ""
    first.IsocenterPosition = _isocentre(fg)
    first.CumulativeMetersetWeight = "0"
    last = Dataset()
    last.ControlPointIndex = 1
    last.CumulativeMetersetWeight = "1"
    beam.ControlPointSequence = [first, last]
    beam.ReferencedPatientSetupNumber = 1
    return beam


def _rtplan(spec: PhantomSpec, uid: _Uids, plan: PlanSpec, series: int) -> Dataset:
    ds = _base(spec, uid, RTPlanStorage, "RTPLAN", series, f"RP.{plan.label}")
    ds.FrameOfReferenceUID = uid("frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = plan.label
    ds.RTPlanName = plan.label
    ds.RTPlanDescription = plan.description
    ds.RTPlanDate, ds.RTPlanTime = STUDY_DATE, STUDY_TIME
    ds.PlanIntent = "PALLIATIVE" if spec.arm == "experimental" else "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    ref_ss = Dataset()
    ref_ss.ReferencedSOPClassUID = RTStructureSetStorage
    ref_ss.ReferencedSOPInstanceUID = uid("instance", "RS")
    ds.ReferencedStructureSetSequence = [ref_ss]
    ds.PrescriptionDescription = plan.description

    roi_numbers = {r.name: i for i, r in enumerate(spec.rois, start=1)}
    dose_refs, groups, beams = [], [], []
    ref_number, beam_number = 0, 0
    for fg_number, fg in enumerate(plan.fraction_groups, start=1):
        group = Dataset()
        group.FractionGroupNumber = fg_number
        group.FractionGroupDescription = fg.component
        total_gy = _ds(fg.rx_per_fraction_gy * fg.fractions)
        refs = []
        for target in fg.targets:
            ref_number += 1
            dr = Dataset()
            dr.ReferencedROINumber = roi_numbers[target]
            dr.DoseReferenceNumber = ref_number
            dr.DoseReferenceUID = uid("dose reference", plan.label, ref_number)
            dr.DoseReferenceStructureType = "VOLUME"
            dr.DoseReferenceDescription = target
            dr.DoseReferenceType = "TARGET"
            dr.TargetPrescriptionDose = total_gy
            dose_refs.append(dr)
            ref = Dataset()
            ref.TargetPrescriptionDose = total_gy
            ref.ReferencedDoseReferenceNumber = ref_number
            refs.append(ref)
        if spec.dose_references:
            group.ReferencedDoseReferenceSequence = refs
        group.NumberOfFractionsPlanned = fg.fractions
        group.NumberOfBeams = len(fg.gantry_angles)
        group.NumberOfBrachyApplicationSetups = 0
        ref_beams = []
        for gantry in fg.gantry_angles:
            beam_number += 1
            rb = Dataset()
            rb.BeamDose = _ds(fg.beam_dose_gy)
            rb.BeamMeterset = _ds(round(fg.beam_dose_gy * 110.0, 1))
            rb.ReferencedBeamNumber = beam_number
            ref_beams.append(rb)
            beams.append(_beam(fg, beam_number, gantry))
        group.ReferencedBeamSequence = ref_beams
        groups.append(group)
    if spec.dose_references:
        ds.DoseReferenceSequence = dose_refs
    ds.FractionGroupSequence = groups
    ds.BeamSequence = beams
    setup = Dataset()
    setup.PatientPosition = "HFS"
    setup.PatientSetupNumber = 1
    ds.PatientSetupSequence = [setup]
    _approval(ds)
    return ds


@dataclass(frozen=True)
class _DoseObject:
    """One RT Dose to write: which fraction groups of which plans it sums."""

    name: str
    summation: str
    parts: tuple[tuple[PlanSpec, tuple[int, ...]], ...]  # plan, fraction group numbers
    extent: Box


def _dose_objects(spec: PhantomSpec) -> list[_DoseObject]:
    every = tuple((p, tuple(range(1, len(p.fraction_groups) + 1))) for p in spec.plans)
    if spec.dose_layout == "plan":
        return [
            _DoseObject(f"RD.{p.label}", "PLAN", (pf,), p.dose_extent or spec.dose_extent)
            for p, pf in zip(spec.plans, every, strict=True)
        ]
    if spec.dose_layout == "fraction_group":
        return [
            _DoseObject(f"RD.{p.label}.FG{n}", "FRACTION", ((p, (n,)),), p.dose_extent or spec.dose_extent)
            for p in spec.plans
            for n in range(1, len(p.fraction_groups) + 1)
        ]
    if spec.dose_layout == "multi_plan":
        return [_DoseObject("RD.MULTI_PLAN", "MULTI_PLAN", every, spec.dose_extent)]
    raise ValueError(f"dose_layout {spec.dose_layout!r}: use 'plan', 'fraction_group' or 'multi_plan'")


def grid_axes(extent: Box, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node coordinates (x, y, z) of a dose grid from the low corner of ``extent``."""
    return tuple(  # type: ignore[return-value]
        lo + spacing_mm * np.arange(math.floor((hi - lo) / spacing_mm + 1e-9) + 1) for lo, hi in extent
    )


def _dose_array(spec: PhantomSpec, dose: _DoseObject) -> np.ndarray:
    """Total dose (Gy) on the grid, (z, y, x); each blob is evaluated in its reach only."""
    axes = grid_axes(dose.extent, spec.dose_spacing_mm)
    total = np.zeros((len(axes[2]), len(axes[1]), len(axes[0])))
    for plan, numbers in dose.parts:
        for n in numbers:
            fg = plan.fraction_groups[n - 1]
            per_fx = np.zeros_like(total)
            for blob in fg.blobs:
                c, reach = blob.sphere.centre, blob.reach_mm
                idx = [np.flatnonzero(np.abs(a - ci) <= reach) for a, ci in zip(axes, c, strict=True)]
                if any(len(i) == 0 for i in idx):
                    continue
                sx, sy, sz = (slice(i[0], i[-1] + 1) for i in idx)
                x, y, z = axes[0][sx] - c[0], axes[1][sy] - c[1], axes[2][sz] - c[2]
                d = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2)
                per_fx[sz, sy, sx] = np.maximum(per_fx[sz, sy, sx], blob.dose_at_distance_gy(d))
            total += fg.fractions * per_fx
    return total


def _rtdose(spec: PhantomSpec, uid: _Uids, dose: _DoseObject, series: int) -> Dataset:
    ds = _base(spec, uid, RTDoseStorage, "RTDOSE", series, dose.name)
    ds.FrameOfReferenceUID = uid("frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    ds.InstanceNumber = 1
    x, y, z = grid_axes(dose.extent, spec.dose_spacing_mm)
    ds.ImagePositionPatient = [_ds(x[0]), _ds(y[0]), _ds(z[0])]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceThickness = _ds(spec.dose_spacing_mm)
    ds.PixelSpacing = [_ds(spec.dose_spacing_mm), _ds(spec.dose_spacing_mm)]
    ds.NumberOfFrames = len(z)
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.GridFrameOffsetVector = [_ds(v - z[0]) for v in z]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = len(y), len(x)
    ds.BitsAllocated = ds.BitsStored = spec.bits
    ds.HighBit = spec.bits - 1
    ds.PixelRepresentation = 0

    values = _dose_array(spec, dose)
    if spec.dose_units == "RELATIVE":
        rx_total = sum(
            p.fraction_groups[n - 1].fractions * p.fraction_groups[n - 1].rx_per_fraction_gy
            for p, ns in dose.parts
            for n in ns
        )
        values = values / rx_total
    elif spec.dose_units != "GY":
        raise ValueError(f"dose_units {spec.dose_units!r}: use 'GY' or 'RELATIVE'")
    dtype = {16: np.uint16, 32: np.uint32}[spec.bits]
    top = 65000.0 if spec.bits == 16 else 2.0e9
    scaling = f"{max(values.max(), 1e-6) / top:.6g}"
    pixels = np.rint(values / float(scaling)).astype(dtype)
    ds.DoseUnits = spec.dose_units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = dose.summation
    ds.DoseGridScaling = scaling
    ds.TissueHeterogeneityCorrection = "IMAGE"
    plan_refs = []
    for plan, numbers in dose.parts:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RTPlanStorage
        ref.ReferencedSOPInstanceUID = uid("instance", f"RP.{plan.label}")
        if dose.summation == "FRACTION":
            fgs = []
            for n in numbers:
                fg_ref = Dataset()
                fg_ref.ReferencedFractionGroupNumber = n
                fgs.append(fg_ref)
            ref.ReferencedFractionGroupSequence = fgs
        plan_refs.append(ref)
    ds.ReferencedRTPlanSequence = plan_refs
    ds.PixelData = pixels.tobytes()
    return ds


def write_course(outdir: Path, variant: str = "compliant", **overrides: object) -> list[Path]:
    """Write one course of ``variant`` into ``outdir`` (created if needed).

    Files: ``RS.dcm``, ``RP.<label>.dcm`` per plan, ``RD.<label>.dcm`` per plan (or
    ``RD.<label>.FG<n>.dcm`` per fraction group, or ``RD.MULTI_PLAN.dcm``), in that order.
    ``overrides`` replace output options of the spec (see :class:`PhantomSpec`).
    """
    spec = build_spec(variant, **overrides)
    return write_spec(Path(outdir), spec)


def write_spec(outdir: Path, spec: PhantomSpec) -> list[Path]:
    """Write the course a spec describes (see :func:`write_course`)."""
    outdir.mkdir(parents=True, exist_ok=True)
    uid = _Uids(spec.uid_seed or spec.variant)
    written = []
    if "RTSTRUCT" not in spec.omit_modalities:
        written.append(_save(_rtstruct(spec, uid), outdir / "RS.dcm", spec))
    if "RTPLAN" not in spec.omit_modalities:
        for i, plan in enumerate(spec.plans):
            written.append(_save(_rtplan(spec, uid, plan, 10 + i), outdir / f"RP.{plan.label}.dcm", spec))
    if "RTDOSE" not in spec.omit_modalities:
        for i, dose in enumerate(_dose_objects(spec)):
            written.append(_save(_rtdose(spec, uid, dose, 20 + i), outdir / f"{dose.name}.dcm", spec))
    return written


# --------------------------------------------------------------------------- CT


def write_ct_series(
    outdir: Path, n_slices: int, rows: int = 512, cols: int = 512, variant: str = "compliant"
) -> list[Path]:
    """CT Image Storage slices of the course's patient, study and frame of reference.

    Slices are 2.5 mm apart from the bottom of the BODY over a 500 mm field of view; the
    pixels show BODY (0 HU), lungs (-800 HU) and VB (700 HU) and are reused between
    identical slices, so that a few hundred slices write in about a second.
    """
    spec = build_spec(variant)
    uid = _Uids(spec.uid_seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pixel_mm = 500.0 / max(rows, cols)
    xs = (np.arange(cols) - (cols - 1) / 2.0) * pixel_mm
    ys = (np.arange(rows) - (rows - 1) / 2.0) * pixel_mm
    painted = [("BODY", 1024), ("Lung_L", 224), ("Lung_R", 224), ("VB", 1724)]
    shapes = [(spec.roi(name).shape, value) for name, value in painted]

    ds = _base(spec, uid, CTImageStorage, "CT", 1, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "CHEST"
    ds.FrameOfReferenceUID = uid("frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    ds.SliceThickness = "2.5"
    ds.PixelSpacing = [_ds(pixel_mm), _ds(pixel_mm)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    z0 = spec.roi("BODY").shape.z_extent()[0]
    written = []
    for i in range(n_slices):
        z = z0 + 2.5 * i
        image = np.zeros((rows, cols), np.uint16)
        for shape, value in shapes:
            x0, y0, x1, y1 = shape.xy_bounds()
            cx = np.flatnonzero((xs >= x0) & (xs <= x1))
            cy = np.flatnonzero((ys >= y0) & (ys <= y1))
            if len(cx) == 0 or len(cy) == 0:
                continue
            pts = np.stack(np.broadcast_arrays(xs[None, cx], ys[cy, None], z), axis=-1)
            mask = shape.contains(pts)
            image[cy[0] : cy[-1] + 1, cx[0] : cx[-1] + 1][mask] = value
        ds.SOPInstanceUID = uid("instance", "CT", i)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [_ds(xs[0]), _ds(ys[0]), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.PixelData = image.tobytes()
        written.append(_save(ds, outdir / f"CT.{i + 1:04d}.dcm", spec))
    return written


# --------------------------------------------------------------------------- bad input


def write_truncated_copy(src: Path, dst: Path, keep_fraction: float = 0.5) -> Path:
    """A copy of ``src`` cut off after ``keep_fraction`` of its bytes (an interrupted transfer)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(dst)


def write_non_dicom(path: Path) -> Path:
    """A file with a .dcm name that is not DICOM (a stray export log)."""
    Path(path).write_text("Export log\nPatient exported without errors.\n", encoding="utf-8")
    return Path(path)


def write_dose_without_plan(outdir: Path, variant: str = "compliant") -> list[Path]:
    """The structure set and doses of ``variant`` without its plans: the doses reference
    plans that are absent."""
    return write_course(outdir, variant, omit_modalities=("RTPLAN",))


def write_plan_without_structure_set(outdir: Path, variant: str = "compliant") -> list[Path]:
    """The plans and doses of ``variant`` without its structure set."""
    return write_course(outdir, variant, omit_modalities=("RTSTRUCT",))
