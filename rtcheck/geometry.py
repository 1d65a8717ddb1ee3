"""Structures as solids: stacks of thin planar slabs on an interpolated surface (shapely 2).

A planning system draws a structure as planar contours on image slices. rtcheck turns each
ROI into a :class:`Solid`: its sections on the contour planes (the even-odd combination of
each plane's contours), and between and beyond them the surface that
:mod:`rtcheck.interpolation` reconstructs (shape-based interpolation of the sections'
signed distances, domed or flat end caps). The solid holds that surface as thin
:class:`Slab` s: z-ranges that tile the structure, each with the interpolated section at
its middle. Distances, margins, the inside test, expansion and contraction use slabs
between which the outline moves at most ``MAX_STEP_MM``; volume, centroid, overlaps,
booleans, connected components and the DVH (:mod:`rtcheck.dvh`) use :attr:`Solid.bulk`,
the same surface sampled with a step relative to the structure's size, so the DVH's
structure volume is the solid's volume.

Accuracy
--------
Slabs are cut so that the outline moves by at most ``MAX_STEP_MM`` (0.3 mm) from one to
the next; a slab's section stands for its whole z-range, so in-plane positions are known
to half of that. Measured on analytic spheres (tests/test_surface.py asserts the bounds,
benchmarks/geometry_accuracy.py prints the errors): margins and surface distances between
spheres within 0.12 mm in any direction at 1-5 mm planes (the tests' bound is 0.3 mm where
the closest points lie between contour planes, half a spacing where one lies beyond a
structure's last plane, in a cap); volumes of solids of 1 cc and more within 1.8 % at
planes up to 3 mm. A flat end perpendicular to z (a cylinder along z) is known to half a
spacing only: nothing says where between the last plane and the next it lies.

The typical spacing of a ROI is the median distance between its own planes: a ROI drawn
on every other CT slice has a coarser surface, not gaps. A ROI with a single plane has no
spacing of its own and borrows the one given by the caller (the structure set's, see
:class:`SolidCache`); it is a flat slab of that thickness. A step wider than 1.5 typical
spacings is a gap: the structure ends on both sides of it.

The surface of a drawn structure is built when a measure first needs it
(:class:`Surface`): the integrity check of a structure set reads every ROI's contours but
the surface of only those a rule measures.

Distances
---------
Distances, margins, expansion and contraction treat each slab's shape as standing for
its own middle plane, except that the first and last slab of a contiguous block reach out
to the slab's edge (the tip of a cap, the sides of a gap); slabs whose z-ranges overlap
are compared in-plane. Between two slabs the surface then lies where balls around the two
sections put it, which on slabs this thin is within hundredths of a millimetre of the
interpolated surface.

Contours
--------
Contours of one plane are combined even-odd (XOR), as planning systems do, so a contour
inside another is a hole and a contour inside that hole an island; CLOSEDPLANAR_XOR is
the same rule made explicit. A self-intersecting contour is split even-odd too
(``shapely.make_valid``) and reported. POINT contours become :attr:`Solid.points_mm` of a
solid without slabs. Whatever cannot become part of a closed shape (open contours, fewer
than three points, a contour spread over several planes) is left out and reported as a
:class:`GeometryIssue` kept on the solid, so that a rule can refuse to evaluate a
structure whose geometry is not what was drawn. A plane whose contours cancel out ends the
structure on both sides, as a gap does.

Derived structures
------------------
:func:`union`, :func:`intersection` and :func:`difference` combine the slabs of their
inputs (the common refinement of their z-ranges), so they follow the inputs' surfaces.
:func:`expand` and :func:`contract` roll a ball of radius ``m`` over the input's surface:
they compute sections on planes of the input's contour spacing, or a multiple of it up to
half the margin (the union, or intersection, of the input's sheets buffered by
``sqrt(m**2 - dz**2)``) and interpolate between them as for a drawn structure. A 5 mm
expansion of a 35 mm sphere is within 1 % of the 40 mm sphere's volume.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import numpy as np
import shapely

from rtcheck.course import Contour, Roi, StructureSet
from rtcheck.errors import RtcheckError
from rtcheck.interpolation import InterpolatedSurface, gaps_between_blocks, median, polygonal
from rtcheck.lazy import lazy
from rtcheck.planes import COPLANAR_TOLERANCE_MM, contour_plane

#: Contours whose mean z differ by less than this lie on the same plane.
PLANE_TOLERANCE_MM = 0.01
#: Slab boundaries closer than this are the same boundary when solids are combined.
_Z_MERGE_MM = 1e-4
#: Segments per quarter circle when buffering (0.16 % area deficit on a circle).
_QUAD_SEGS = 16
#: Directions of the shapes' extents that bound in-plane distances from below (32: the
#: bound is within 0.5 % of the distance between two convex shapes).
_DIRECTIONS = np.c_[np.cos(np.arange(32) * np.pi / 16), np.sin(np.arange(32) * np.pi / 16)]

_CLOSED_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})
_OPEN_TYPES = frozenset({"OPEN_PLANAR", "OPEN_NONPLANAR"})


class GeometryError(RtcheckError):
    """A structure cannot give the measure asked for (no volume, unknown name, ...)."""


class TiltedPlanesError(GeometryError):
    """A ROI drawn on coplanar contours whose planes are not axial (a tilted image set).

    Valid DICOM, but rtcheck's solids are stacks of axial planes: rather than measure a
    projection, every rule that needs the ROI is not evaluable, with this reason.
    """


def _refuse_tilted(points: np.ndarray, name: str) -> None:
    """Raise :class:`TiltedPlanesError` when a contour is coplanar on a non-axial plane."""
    plane = contour_plane(points)
    if plane is not None and plane.deviation_mm <= COPLANAR_TOLERANCE_MM and not plane.is_axial:
        raise TiltedPlanesError(
            f"ROI '{name}' is drawn on tilted planes ({plane.describe()}): rtcheck builds solids and DVHs"
            " from axial planes only, so it does not measure structures of a tilted image set"
        )


@dataclass(frozen=True)
class GeometryIssue:
    """Something about a ROI's contours that a reader of the report must know.

    ``severity`` is ``"error"`` when part of what was drawn is missing from the solid (the
    structure's measures cannot be trusted) and ``"warning"`` when rtcheck repaired the
    drawing in a way that keeps its meaning (a tiny self-intersection, a dropped
    degenerate contour).
    """

    roi: str
    severity: Literal["error", "warning"]
    message: str
    z_mm: float | None = None

    def __str__(self) -> str:
        where = f" at z = {self.z_mm:.2f} mm" if self.z_mm is not None else ""
        return f"ROI '{self.roi}'{where}: {self.message}"


@dataclass(frozen=True)
class Slab:
    """A thin piece of a solid: its cross-section at ``z`` (the middle of the range, or a
    contour plane for slabs built by hand) and the z-range that section stands for."""

    z: float
    z_min: float
    z_max: float
    shape: shapely.Geometry  # Polygon or MultiPolygon in (x, y) mm

    @property
    def thickness(self) -> float:
        return self.z_max - self.z_min


def _empty_points() -> np.ndarray:
    return np.empty((0, 3), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Solid:
    """A structure (drawn or derived) as a stack of slabs sorted by z.

    A POINT ROI is a solid without slabs whose ``points_mm`` (an (N, 3) array) hold the
    points; it has a centroid and distances but no volume. ``issues`` are the integrity
    findings of the contours it was built from (carried over into derived solids).
    """

    name: str
    slabs: Sequence[Slab]
    points_mm: np.ndarray = field(default_factory=_empty_points)
    issues: tuple[GeometryIssue, ...] = ()
    #: Distance between the contour planes the solid stands on (None: its slabs' median thickness).
    plane_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        points = np.asarray(self.points_mm, dtype=np.float64).reshape(-1, 3)
        object.__setattr__(self, "points_mm", points)
        if isinstance(self.slabs, LazySlabs):
            return  # built sorted, when first needed
        lo, hi = self._lo, self._hi
        if np.any(hi <= lo) or np.any(lo[1:] < hi[:-1] - _Z_MERGE_MM):
            raise ValueError(f"solid '{self.name}': slabs must have positive thickness and be sorted by z")

    # -- arrays over slabs, computed once ------------------------------------------------
    @lazy
    def _lo(self) -> np.ndarray:
        return np.array([s.z_min for s in self.slabs], dtype=np.float64)

    @lazy
    def _hi(self) -> np.ndarray:
        return np.array([s.z_max for s in self.slabs], dtype=np.float64)

    @lazy
    def _geoms(self) -> np.ndarray:
        out = np.empty(len(self.slabs), dtype=object)
        out[:] = [s.shape for s in self.slabs]
        return out

    @lazy
    def _areas(self) -> np.ndarray:
        return shapely.area(self._geoms)

    @lazy
    def _boundaries(self) -> np.ndarray:
        return shapely.boundary(self._geoms)

    @lazy
    def _xy_bounds(self) -> np.ndarray:
        return shapely.bounds(self._geoms).reshape(-1, 4)

    @lazy
    def _extents(self) -> np.ndarray:
        return _extents(self._geoms)

    @lazy
    def _z(self) -> np.ndarray:
        return np.array([s.z for s in self.slabs], dtype=np.float64)

    @lazy
    def _surface_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """The z-range each shape stands for in distances: its plane, reaching out to the
        slab's edge on the side of a cap or a gap (see the module docstring)."""
        lo, hi = self._lo, self._hi
        opens = np.r_[True, lo[1:] - hi[:-1] > _Z_MERGE_MM]  # first slab of a contiguous block
        closes = np.r_[opens[1:], True]
        return np.where(opens, lo, self._z), np.where(closes, hi, self._z)

    @lazy
    def _voids(self) -> tuple[np.ndarray, np.ndarray]:
        """z-intervals where the solid is absent: below it, in its gaps, above it."""
        lo, hi = self._lo, self._hi
        gap = np.flatnonzero(lo[1:] - hi[:-1] > _Z_MERGE_MM)
        return np.r_[-np.inf, hi[gap], hi[-1]], np.r_[lo[0], lo[gap + 1], np.inf]

    @lazy
    def bulk(self) -> Solid:
        """The solid for measures of its volume (volume, centroid, DVH, overlaps, components):
        a drawn structure's surface sampled with a step relative to its size
        (:meth:`rtcheck.interpolation.InterpolatedSurface.bulk`), a boolean of the inputs'
        bulk slabs; any other solid is its own bulk. Distances, margins, the inside test and
        expansions and contractions (whose surface is a distance from the input's) keep the
        fine slabs."""
        if isinstance(self.slabs, LazySlabs):
            return Solid(self.name, self.slabs.bulk, self.points_mm, self.issues, self.plane_spacing_mm)
        return self

    # -- what it is -------------------------------------------------------------------------
    @property
    def has_volume(self) -> bool:
        return bool(self.slabs)

    @property
    def is_point(self) -> bool:
        return not self.slabs and len(self.points_mm) > 0

    @property
    def errors(self) -> tuple[GeometryIssue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    def slab_at(self, z: float) -> Slab | None:
        """The slab whose z-range contains ``z`` (lower bound inclusive), or None. O(log n)."""
        i = int(np.searchsorted(self._lo, z, side="right")) - 1
        if i >= 0 and z < self._hi[i]:
            return self.slabs[i]
        return None

    @lazy
    def typical_spacing_mm(self) -> float:
        """The spacing of the contour planes (for a derived solid, of its inputs'): the step
        of the planes of an expansion or contraction."""
        self._require_volume("slice spacing")
        if self.plane_spacing_mm is not None:
            return self.plane_spacing_mm
        return median(self._hi - self._lo)

    def gaps_mm(self) -> list[tuple[float, float]]:
        """z-intervals between two parts of the solid where nothing was drawn (a gap)."""
        if isinstance(self.slabs, Surface):
            return self.slabs.gaps_mm()
        lo, hi = self._lo, self._hi
        gap = np.flatnonzero(lo[1:] - hi[:-1] > 1e-3)
        return [(float(hi[i]), float(lo[i + 1])) for i in gap]

    # -- measures ---------------------------------------------------------------------------
    @lazy
    def volume_cc(self) -> float:
        self._require_volume("volume")
        b = self.bulk
        return float(np.sum(b._areas * (b._hi - b._lo))) / 1000.0

    @lazy
    def centroid_mm(self) -> np.ndarray:
        """Centre of mass (x, y, z) in mm; the mean of the points for a POINT ROI."""
        if not self.slabs:
            if self.is_point:
                return self.points_mm.mean(axis=0)
            self._require_volume("centroid")
        b = self.bulk
        w = b._areas * (b._hi - b._lo)
        c = shapely.centroid(b._geoms)
        xyz = np.c_[shapely.get_x(c), shapely.get_y(c), (b._lo + b._hi) / 2.0]
        keep = w > 0
        return (xyz[keep] * w[keep, None]).sum(axis=0) / w[keep].sum()

    @lazy
    def bounds_mm(self) -> np.ndarray:
        """[[x_min, y_min, z_min], [x_max, y_max, z_max]] in mm (z from the slab ranges)."""
        if not self.slabs:
            if self.is_point:
                return np.array([self.points_mm.min(axis=0), self.points_mm.max(axis=0)])
            self._require_volume("bounding box")
        b = self.bulk
        x0, y0, x1, y1 = shapely.total_bounds(b._geoms)
        return np.array([[x0, y0, b._lo[0]], [x1, y1, b._hi[-1]]])

    @property
    def equivalent_sphere_diameter_mm(self) -> float:
        """Diameter of the sphere of the same volume."""
        return float((6.0 * self.volume_cc * 1000.0 / np.pi) ** (1.0 / 3.0))

    @property
    def n_components(self) -> int:
        return len(self.components())

    def components(self) -> tuple[Solid, ...]:
        """The connected 3-D parts (e.g. the lesions of a multi-lesion ROI), largest first.

        Two polygons of adjacent slabs belong to one part when the slabs' z-ranges touch
        and the polygons' interiors overlap; polygons of one slab never join directly.
        Each part keeps the slabs' z-ranges, so the parts' volumes add up to the whole's.
        """
        return self._components

    @lazy
    def _components(self) -> tuple[Solid, ...]:
        self._require_volume("connected components")
        b = self.bulk
        parts, slab_of = shapely.get_parts(b._geoms, return_index=True)
        label = np.unique(_connected_labels(parts, slab_of, b._lo, b._hi), return_inverse=True)[1]
        if label.max() == 0:
            return (self,)
        thickness = (b._hi - b._lo)[slab_of]
        volume = np.bincount(label, weights=shapely.area(parts) * thickness)
        out = []
        for k, comp in enumerate(np.argsort(-volume, kind="stable")):
            mine = label == comp
            slab_idx = np.unique(slab_of[mine])
            grouped = _group_union(parts[mine], np.searchsorted(slab_idx, slab_of[mine]), len(slab_idx))
            slabs = tuple(
                Slab(b.slabs[i].z, b.slabs[i].z_min, b.slabs[i].z_max, g)
                for i, g in zip(slab_idx, grouped, strict=True)
            )
            name = f"{self.name} #{k + 1}"
            out.append(Solid(name, slabs, issues=self.issues, plane_spacing_mm=self.plane_spacing_mm))
        return tuple(out)

    def _require_volume(self, what: str) -> None:
        if not self.slabs:
            kind = "is a POINT ROI" if self.is_point else "has no closed planar contour"
            detail = "; ".join(str(i) for i in self.errors)
            raise GeometryError(
                f"no {what} for structure '{self.name}': it {kind}" + (f" ({detail})" if detail else "")
            )


# ---------------------------------------------------------------------------------------------
# Building solids from contours
# ---------------------------------------------------------------------------------------------
class _IssueLog:
    """Collects the issues of one ROI while its solid is built."""

    def __init__(self, roi: str) -> None:
        self.roi = roi
        self.issues: list[GeometryIssue] = []

    def __call__(self, severity: Literal["error", "warning"], message: str, z: float | None = None) -> None:
        self.issues.append(GeometryIssue(self.roi, severity, message, None if z is None else float(z)))


def solid_from_roi(roi: Roi, typical_spacing_mm: float | None = None) -> Solid:
    """The solid of a ROI, with the integrity issues of its contours in ``Solid.issues``.

    ``typical_spacing_mm`` is used only when the ROI has a single plane (no spacing of its
    own); without it such a ROI raises :class:`GeometryError`.
    """
    report = _IssueLog(roi.name)

    closed: list[np.ndarray] = []
    points: list[np.ndarray] = []
    for n, contour in enumerate(roi.contours, start=1):
        pts = _contour_points(contour)
        kind = contour.geometric_type
        if pts is None:
            report("error", f"contour {n} ({kind}) has no usable (N, 3) coordinates; left out")
        elif kind == "POINT":
            points.append(pts)
        elif kind in _CLOSED_TYPES:
            closed.append(pts)
        elif kind in _OPEN_TYPES:
            report("error", f"contour {n} is {kind}, not a closed shape; left out", float(pts[:, 2].mean()))
        else:
            report("error", f"contour {n} has unknown geometric type '{kind}'; left out")
    if not roi.contours:
        report("error", "the ROI has no contours")
    if points and closed:
        report("warning", "the ROI mixes POINT and closed contours; both are kept")

    slabs = _slabs_from_closed(closed, typical_spacing_mm, roi.name, report) if closed else ()
    if not slabs and not points and roi.contours:
        report("error", "no closed planar contour with an area: the ROI has no volume")
    pts = np.concatenate(points) if points else _empty_points()
    spacing = slabs.spacing_mm if isinstance(slabs, Surface) else None
    return Solid(roi.name, slabs, pts, tuple(report.issues), spacing)


class LazySlabs(Sequence[Slab]):
    """Slabs built when a measure first needs them, sampled two ways: fine (the sequence
    itself, for distances and margins) and :attr:`bulk` (for volumes, DVHs and booleans)."""

    @abstractmethod
    def _fine(self) -> tuple[Slab, ...]: ...

    @abstractmethod
    def _bulk(self) -> tuple[Slab, ...]: ...

    @lazy
    def _slabs(self) -> tuple[Slab, ...]:
        return self._fine()

    @lazy
    def bulk(self) -> tuple[Slab, ...]:
        """The same structure sampled for measures of the volume (see :attr:`Solid.bulk`)."""
        return self._bulk()

    def __bool__(self) -> bool:
        return len(self.bulk) > 0

    def __len__(self) -> int:
        return len(self._slabs)

    @overload
    def __getitem__(self, index: int) -> Slab: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Slab, ...]: ...

    def __getitem__(self, index: int | slice) -> Slab | tuple[Slab, ...]:
        return self._slabs[index]

    def __iter__(self) -> Iterator[Slab]:
        return iter(self._slabs)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Surface(LazySlabs):
    """The slabs of a drawn structure: its sections on the contour planes, interpolated
    between them (:mod:`rtcheck.interpolation`) when first needed.

    A structure set has many ROIs that no measure ever asks for the surface of (the
    integrity check only reads their contours); they cost nothing more than their sections.
    """

    def __init__(self, plane_z: np.ndarray, shapes: np.ndarray, spacing_mm: float, empty_z: np.ndarray) -> None:
        self.plane_z, self.shapes, self.spacing_mm = plane_z, shapes, spacing_mm
        self.empty_z = empty_z  # planes whose contours cancel out: they end a block

    @lazy
    def _interpolated(self) -> InterpolatedSurface:
        z = np.r_[self.plane_z, self.empty_z]
        shapes = np.r_[self.shapes, np.full(len(self.empty_z), shapely.Polygon(), dtype=object)]
        order = np.argsort(z, kind="stable")
        return InterpolatedSurface(z[order], shapes[order], self.spacing_mm)

    def _fine(self) -> tuple[Slab, ...]:
        return tuple(Slab(*slab) for slab in self._interpolated.fine())

    def _bulk(self) -> tuple[Slab, ...]:
        return tuple(Slab(*slab) for slab in self._interpolated.bulk())

    def gaps_mm(self) -> list[tuple[float, float]]:
        return gaps_between_blocks(self.plane_z, self.spacing_mm)

    def __bool__(self) -> bool:
        return len(self.plane_z) > 0


class _Combined(LazySlabs):
    """The slabs of a union, intersection or difference: of the inputs' fine slabs for the
    fine sampling, of their bulk slabs for the bulk one, each combined when first needed."""

    def __init__(self, solids: list[Solid], op: str) -> None:
        self.solids, self.op = solids, op

    def _fine(self) -> tuple[Slab, ...]:
        return _combine_slabs(self.solids, self.op)

    def _bulk(self) -> tuple[Slab, ...]:
        return _combine_slabs([s.bulk for s in self.solids], self.op)


def _contour_points(contour: Contour) -> np.ndarray | None:
    pts = np.asarray(contour.points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0 or not np.isfinite(pts).all():
        return None
    return pts


def _slabs_from_closed(
    closed: list[np.ndarray], spacing_fallback: float | None, name: str, report: _IssueLog
) -> Surface | tuple[()]:
    counts = np.array([len(c) for c in closed])
    xyz = np.concatenate(closed)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    ends = starts + counts - 1

    # A repeated closing point is not a vertex: DICOM implies the closing segment.
    repeated = (counts > 1) & np.all(np.abs(xyz[starts] - xyz[ends]) < 1e-9, axis=1)
    keep_pt = np.ones(len(xyz), dtype=bool)
    keep_pt[ends[repeated]] = False
    counts = counts - repeated
    contour_id = np.repeat(np.arange(len(closed)), counts + repeated)[keep_pt]
    xyz = xyz[keep_pt]
    starts = np.r_[0, np.cumsum(counts)[:-1]]

    z_mean = np.add.reduceat(xyz[:, 2], starts) / counts
    z_spread = np.maximum.reduceat(xyz[:, 2], starts) - np.minimum.reduceat(xyz[:, 2], starts)
    usable = counts >= 3
    for i in np.flatnonzero(~usable):
        report("warning", f"a closed contour with {counts[i]} distinct point(s) has no area; left out", z_mean[i])

    # A contour spread over several z cannot be placed on one plane unless the spread is a
    # small fraction of the spacing (rounding in the export).
    planes = _group_planes(z_mean[usable])
    own_spacing = _median_spacing(planes)
    tilted = usable & (z_spread > PLANE_TOLERANCE_MM)
    limit = own_spacing / 2.0 if own_spacing is not None else PLANE_TOLERANCE_MM
    for i in np.flatnonzero(tilted):
        spread = f"its points span {z_spread[i]:.2f} mm in z"
        if z_spread[i] < limit:
            report(
                "warning",
                f"a closed contour is not planar ({spread}); projected onto z = {z_mean[i]:.2f} mm",
                z_mean[i],
            )
        else:
            _refuse_tilted(closed[i], name)
            report("error", f"a closed contour is not planar ({spread}); left out", z_mean[i])
            usable[i] = False
    if not usable.any():
        return ()

    # One ring per usable contour, built in one call.
    sel = usable[contour_id]
    ids = np.unique(contour_id[sel], return_inverse=True)[1]
    rings = shapely.linearrings(xyz[sel, :2], indices=ids)
    polys = shapely.polygons(rings)
    z_used = z_mean[usable]

    invalid = np.flatnonzero(~shapely.is_valid(polys))
    for i in invalid:
        reason = shapely.is_valid_reason(polys[i])
        repaired = polygonal(shapely.make_valid(polys[i], method="linework"))
        polys[i] = repaired
        if repaired.is_empty:
            report("warning", f"a degenerate closed contour ({reason}) has no area; left out", z_used[i])
        else:
            report(
                "warning",
                f"a contour intersects itself ({reason}); split even-odd, area {repaired.area:.1f} mm²",
                z_used[i],
            )

    # Planes: contours within PLANE_TOLERANCE_MM of each other in z.
    order = np.argsort(z_used, kind="stable")
    zs = z_used[order]
    plane_id = np.r_[0, np.cumsum(np.diff(zs) > PLANE_TOLERANCE_MM)]
    n_planes = int(plane_id[-1]) + 1
    plane_z = np.bincount(plane_id, weights=zs) / np.bincount(plane_id)
    shapes = _combine_even_odd(polys[order], plane_id, n_planes, plane_z, report)

    # A plane whose contours cancel out was still drawn: it keeps its place in the spacing.
    nonempty = ~shapely.is_empty(shapes)
    if not nonempty.any():
        return ()
    spacing = _median_spacing(plane_z)
    if spacing is None:
        if spacing_fallback is None:
            raise GeometryError(
                f"ROI '{name}' is drawn on a single plane (z = {plane_z[0]:.2f} mm) and no slice spacing "
                "is known to give it a thickness"
            )
        spacing = float(spacing_fallback)
    return Surface(plane_z[nonempty], shapes[nonempty], spacing, plane_z[~nonempty])


def _group_planes(z: np.ndarray) -> np.ndarray:
    zs = np.sort(z)
    if len(zs) == 0:
        return zs
    return zs[np.r_[True, np.diff(zs) > PLANE_TOLERANCE_MM]]


def _median_spacing(planes: np.ndarray) -> float | None:
    return median(np.diff(planes)) if len(planes) > 1 else None


def _combine_even_odd(
    polys: np.ndarray, plane_id: np.ndarray, n_planes: int, plane_z: np.ndarray, report: _IssueLog
) -> np.ndarray:
    """One shape per plane: the XOR of the plane's polygons; duplicates and overlaps reported."""
    counts = np.bincount(plane_id, minlength=n_planes)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    shapes = polys[first].copy()
    multi = np.flatnonzero(counts > 1)
    if len(multi) == 0:
        return shapes
    in_multi = np.isin(plane_id, multi)
    idx = np.flatnonzero(in_multi)
    sub = polys[idx]
    tree = shapely.STRtree(sub)
    for predicate, what in (("overlaps", "overlap partially"), ("covers", "coincide")):
        a, b = tree.query(sub, predicate=predicate)
        same = (plane_id[idx[a]] == plane_id[idx[b]]) & (a < b)
        if predicate == "covers":
            same &= shapely.covers(sub[b], sub[a])  # both ways: the same shape twice
        for p in np.unique(plane_id[idx[a[same]]]):
            effect = "they cancel out" if predicate == "covers" else "the overlap is left out"
            report(
                "error" if predicate == "covers" else "warning",
                f"two contours {what}; combined even-odd, so {effect}",
                float(plane_z[p]),
            )
    # XOR column by column: one vectorised call per rank, over all planes that have it.
    rank = np.arange(len(polys)) - first[plane_id]
    for r in range(1, int(counts.max())):
        here = rank == r
        planes = plane_id[here]
        shapes[planes] = shapely.symmetric_difference(shapes[planes], polys[here])
    return shapes


def _group_union(geoms: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Union of ``geoms`` per group index (0..n_groups-1), vectorised over groups."""
    counts = np.bincount(group, minlength=n_groups)
    order = np.argsort(group, kind="stable")
    g = group[order]
    rank = np.arange(len(g)) - np.r_[0, np.cumsum(counts)[:-1]][g]
    grid = np.full((n_groups, max(int(counts.max(initial=0)), 1)), None, dtype=object)
    grid[g, rank] = geoms[order]
    return shapely.union_all(grid, axis=1)


def _connected_labels(parts: np.ndarray, slab_of: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Connected-component label per polygon part (parts of slabs that touch in z and overlap)."""
    a, b = shapely.STRtree(parts).query(parts)  # bounding boxes meet
    sa, sb = slab_of[a], slab_of[b]
    adjacent = (sb == sa + 1) & (np.abs(lo[sb] - hi[sa]) < _Z_MERGE_MM)
    a, b = a[adjacent], b[adjacent]
    # Interiors must meet, not just boundaries. An inner point of one part inside the other
    # settles most pairs cheaply; only the rest need the full (slow) topological tests.
    inner = shapely.point_on_surface(parts)
    shapely.prepare(parts)
    linked = shapely.contains_properly(parts[b], inner[a]) | shapely.contains_properly(parts[a], inner[b])
    rest = np.flatnonzero(~linked)
    pa, pb = parts[a[rest]], parts[b[rest]]
    linked[rest] = shapely.intersects(pa, pb) & ~shapely.touches(pa, pb)
    a, b = a[linked], b[linked]
    label = np.arange(len(parts))
    while True:
        new = label.copy()
        m = np.minimum(label[a], label[b])
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


# ---------------------------------------------------------------------------------------------
# Relations between two structures
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pieces:
    """A solid's slabs and points as arrays: slab ranges, surface ranges, shapes."""

    lo: np.ndarray
    hi: np.ndarray
    surf_lo: np.ndarray
    surf_hi: np.ndarray
    geoms: np.ndarray
    extents: np.ndarray

    @classmethod
    def of(cls, solid: Solid) -> _Pieces:
        pts = solid.points_mm
        if not solid.slabs and not len(pts):
            raise GeometryError(f"structure '{solid.name}' has neither a closed contour nor a point")
        z = pts[:, 2]
        geoms = np.concatenate([solid._geoms, shapely.points(pts[:, :2])]) if len(pts) else solid._geoms
        surf_lo, surf_hi = solid._surface_ranges
        extents = np.concatenate([solid._extents, _project(pts[:, :2])])
        return cls(np.r_[solid._lo, z], np.r_[solid._hi, z], np.r_[surf_lo, z], np.r_[surf_hi, z], geoms, extents)

    def z_gaps(self, other: _Pieces) -> np.ndarray:
        """(n, m) z-distance used by every distance: 0 where slab ranges overlap, else
        the gap between surface ranges."""
        stair = _overlap_len(self.lo, self.hi, other.lo, other.hi) > _Z_MERGE_MM
        return np.where(stair, 0.0, _z_gap(self.surf_lo, self.surf_hi, other.surf_lo, other.surf_hi))


def _z_gap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """(na, nb) distance in z between ranges [lo_a, hi_a] and [lo_b, hi_b], 0 where they meet."""
    return np.maximum(0.0, np.maximum(lo_b[None, :] - hi_a[:, None], lo_a[:, None] - hi_b[None, :]))


def _overlap_len(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """(na, nb) length of the overlap of z-ranges (negative: the gap between them)."""
    return np.minimum(hi_a[:, None], hi_b[None, :]) - np.maximum(lo_a[:, None], lo_b[None, :])


def _box_gap(ba: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """In-plane distance between bounding boxes (..., 4) broadcast together: a lower bound."""
    gx = np.maximum(0.0, np.maximum(bb[..., 0] - ba[..., 2], ba[..., 0] - bb[..., 2]))
    gy = np.maximum(0.0, np.maximum(bb[..., 1] - ba[..., 3], ba[..., 1] - bb[..., 3]))
    return np.hypot(gx, gy)


def _extents(geoms: np.ndarray) -> np.ndarray:
    """(n, K) largest projection of each shape's vertices on each of the _DIRECTIONS."""
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    out = np.full((len(geoms), len(_DIRECTIONS)), -np.inf)
    if len(coords):
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        out[idx[starts]] = np.maximum.reduceat(_project(coords), starts, axis=0)
    return out


def _project(xy: np.ndarray) -> np.ndarray:
    """(n, K) projections of points on the _DIRECTIONS, as two broadcast products: a matrix
    product would go to BLAS, whose threads then spin on the other core for a while after
    every call (a quarter of a check's CPU time on the example course)."""
    return xy[:, :1] * _DIRECTIONS[:, 0] + xy[:, 1:2] * _DIRECTIONS[:, 1]


def _extent_gap(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """(na, nb) lower bound of in-plane distances: the widest separation along a direction."""
    opposite = np.roll(eb, len(_DIRECTIONS) // 2, axis=1)  # b's extent along -u, per u
    return np.maximum(0.0, (-opposite[None, :, :] - ea[:, None, :]).max(axis=2))


def overlap_volume_cc(a: Solid, b: Solid) -> float:
    """Volume common to ``a`` and ``b`` (slab pairs times their z-overlap)."""
    a._require_volume("overlap")
    b._require_volume("overlap")
    a, b = a.bulk, b.bulk
    ov = _overlap_len(a._lo, a._hi, b._lo, b._hi)
    i, j = np.nonzero(ov > _Z_MERGE_MM)
    near = _box_gap(a._xy_bounds[i], b._xy_bounds[j]) == 0
    i, j = i[near], j[near]
    area = shapely.area(shapely.intersection(a._geoms[i], b._geoms[j]))
    return float(np.sum(area * ov[i, j])) / 1000.0


def overlap_fraction(a: Solid, b: Solid) -> float:
    """Fraction of ``a``'s volume that lies inside ``b`` (0..1)."""
    return overlap_volume_cc(a, b) / a.volume_cc


def centre_distance_mm(a: Solid, b: Solid) -> float:
    """Distance between the centroids (centre-to-centre spacing of two peaks)."""
    return float(np.linalg.norm(a.centroid_mm - b.centroid_mm))


def min_distance_mm(a: Solid, b: Solid) -> float:
    """Smallest 3-D distance between ``a`` and ``b`` (0 when they touch or overlap).

    Minimises ``sqrt(d_xy**2 + dz**2)`` over pairs of slabs (and points): ``d_xy`` is the
    in-plane distance between the two shapes, ``dz`` the distance between their surface
    ranges (see the module docstring). Pairs are visited in order of a lower bound (the
    shapes' extents along 16 directions, and ``dz``), and only while that bound can still
    beat the best distance found.
    """
    pa, pb = _Pieces.of(a), _Pieces.of(b)
    dz = pa.z_gaps(pb)
    bound = np.hypot(dz, _extent_gap(pa.extents, pb.extents))
    return _minimise(bound, lambda i, j: np.hypot(dz[i, j], shapely.distance(pa.geoms[i], pb.geoms[j])))


def _minimise(bound: np.ndarray, exact: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """min over (i, j) of exact(i, j), given bound <= exact, evaluating as few pairs as possible.

    The 16 pairs with the lowest bounds give a first minimum; then every pair whose bound
    is below the current minimum is evaluated in one vectorised call, until none is left.
    """
    flat = bound.ravel()
    order = np.argsort(flat, kind="stable")
    best, done = np.inf, 0
    while done < len(order):
        stop = min(16, len(order)) if done == 0 else done + int(np.searchsorted(flat[order[done:]], best))
        if stop <= done:
            break
        i, j = np.unravel_index(order[done:stop], bound.shape)
        best = min(best, float(np.min(exact(i, j))))
        done = stop
    return best


def margin_mm(a: Solid, b: Solid) -> float:
    """Signed margin of ``a`` inside ``b``, in mm.

    When ``a`` lies inside ``b``: the smallest 3-D distance from ``a`` to the outside of
    ``b`` through its sides, its caps and any gap between its slabs, i.e. the largest
    ``m`` for which ``a`` lies inside ``b`` contracted by ``m``. For each pair of slabs it
    is ``sqrt(dz**2 + d**2)``, ``d`` being the in-plane distance from ``a``'s shape to
    ``b``'s boundary when ``a``'s shape lies inside ``b``'s (0 otherwise); beyond ``b``'s
    caps (and in its gaps) the outside is the whole plane, so there ``d`` is 0 and ``dz``
    is the distance to the cap's edge.

    When part of ``a`` lies outside ``b`` (slab by slab): minus the largest
    distance from that part to ``b`` (how far ``a`` sticks out), evaluated at the
    vertices of the protruding polygons.
    """
    b._require_volume("margin inside it")
    pa = _Pieces.of(a)
    shapely.prepare(b._geoms)
    void_lo, void_hi = b._voids
    # Inside, slab by slab: no slab of a reaches into a void of b (a point of a
    # must not lie strictly inside one), and a's shape is within b's wherever they face.
    thick = (pa.hi > pa.lo)[:, None]
    in_void = _overlap_len(pa.lo, pa.hi, void_lo, void_hi) > np.where(thick, _Z_MERGE_MM, 0.0)
    in_void &= thick | ((pa.lo[:, None] > void_lo) & (pa.lo[:, None] < void_hi))
    facing = _overlap_len(pa.lo, pa.hi, b._lo, b._hi) > np.where(thick, _Z_MERGE_MM, -_Z_MERGE_MM)
    fi, fj = np.nonzero(facing)
    if in_void.any() or not shapely.contains(b._geoms[fj], pa.geoms[fi]).all():
        return -_protrusion_mm(a, b)

    best_void = float(_z_gap(pa.surf_lo, pa.surf_hi, void_lo, void_hi).min())
    dz = pa.z_gaps(_Pieces.of(b))
    # A lower bound of the in-plane distance from a's shape i to b's outline j, where a's
    # shape lies inside b's: the distance from a point c inside b's shape to b's outline,
    # less the farthest reach of a's shape from c.
    c = a.centroid_mm[:2]
    coords, idx = shapely.get_coordinates(pa.geoms, return_index=True)
    reach = np.zeros(len(pa.geoms))
    np.maximum.at(reach, idx, np.hypot(coords[:, 0] - c[0], coords[:, 1] - c[1]))
    centre = shapely.points(c)
    depth = np.where(shapely.contains_xy(b._geoms, *c), shapely.distance(centre, b._boundaries), 0.0)
    in_plane = np.maximum(depth[None, :] - reach[:, None], 0.0)

    def exact(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        inside = shapely.contains(b._geoms[j], pa.geoms[i])  # b's shapes are prepared
        d = np.zeros(len(i))
        d[inside] = shapely.distance(pa.geoms[i[inside]], b._boundaries[j[inside]])
        return np.hypot(dz[i, j], d)

    bound = np.where(dz < best_void, np.hypot(dz, in_plane), np.inf)
    if not np.isfinite(bound).any():
        return best_void
    return min(best_void, _minimise(bound, exact))


def is_inside(a: Solid, b: Solid, margin: float = 0.0) -> bool:
    """Whether ``a`` lies inside ``b`` contracted by ``margin`` mm (3-D, through the caps)."""
    return margin_mm(a, b) >= margin - 1e-9


def _protrusion_mm(a: Solid, b: Solid) -> float:
    """Largest distance from the part of ``a`` outside ``b`` to ``b`` (at polygon vertices)."""
    samples = [a.points_mm]
    if a.has_volume:
        outside = difference(a, b, name="outside")
        if outside.slabs:
            coords, idx = shapely.get_coordinates(outside._geoms, return_index=True)
            surf_lo, surf_hi = outside._surface_ranges
            samples += [np.c_[coords, surf_lo[idx]], np.c_[coords, surf_hi[idx]]]
    xyz = np.concatenate(samples)
    return float(np.max(_point_distances(xyz, b))) if len(xyz) else 0.0


def _point_distances(xyz: np.ndarray, b: Solid) -> np.ndarray:
    """3-D distance from each point to solid ``b``, in the surface model."""
    pts = shapely.points(xyz[:, :2])
    z = xyz[:, 2]
    stair = _overlap_len(z, z, b._lo, b._hi) >= -_Z_MERGE_MM
    surf_lo, surf_hi = b._surface_ranges
    dz = np.where(stair, 0.0, _z_gap(z, z, surf_lo, surf_hi))
    nearest = np.argmin(dz, axis=1)
    upper = np.hypot(dz[np.arange(len(z)), nearest], shapely.distance(pts, b._geoms[nearest]))
    i, j = np.nonzero(dz < upper[:, None])
    out = upper.copy()
    np.minimum.at(out, i, np.hypot(dz[i, j], shapely.distance(pts[i], b._geoms[j])))
    return out


# ---------------------------------------------------------------------------------------------
# Derived structures
# ---------------------------------------------------------------------------------------------
def _refine(solids: list[Solid]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Common refinement of the solids' slab ranges: (lo, hi, slab index per solid or -1)."""
    edges = np.sort(np.concatenate([np.r_[s._lo, s._hi] for s in solids]))
    edges = edges[np.r_[True, np.diff(edges) > _Z_MERGE_MM]]
    lo, hi = edges[:-1], edges[1:]
    mid = (lo + hi) / 2.0
    idx = np.empty((len(mid), len(solids)), dtype=np.intp)
    for k, s in enumerate(solids):
        i = np.searchsorted(s._lo, mid, side="right") - 1
        ok = (i >= 0) & (mid < s._hi[np.maximum(i, 0)])
        idx[:, k] = np.where(ok, i, -1)
    present = (idx >= 0).any(axis=1)
    return lo[present], hi[present], idx[present]


def _representative_z(
    solids: list[Solid], lo: np.ndarray, hi: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A contour plane of the first input present in each range, else the range's middle;
    and which ranges hold such a plane."""
    z = (lo + hi) / 2.0
    chosen = np.zeros(len(lo), dtype=bool)
    for k, s in enumerate(solids):
        has = idx[:, k] >= 0
        planes = s._z[np.maximum(idx[:, k], 0)] if s.slabs else z
        ok = has & ~chosen & (planes >= lo) & (planes < hi)
        z[ok] = planes[ok]
        chosen |= ok
    return z, chosen


def _issues_of(sources: Iterable[Solid]) -> tuple[GeometryIssue, ...]:
    """The contour findings of a derived solid's inputs, each once, in order."""
    return tuple(dict.fromkeys(i for s in sources for i in s.issues))


def _plane_spacing(sources: Iterable[Solid]) -> float | None:
    """The finest contour-plane spacing among the inputs of a derived solid."""
    spacings = [s.plane_spacing_mm for s in sources if s.plane_spacing_mm is not None]
    return min(spacings) if spacings else None


def _combine(solids: list[Solid], op: str, name: str) -> Solid:
    for s in solids:
        s._require_volume(op)
    return Solid(name, _Combined(solids, op), issues=_issues_of(solids), plane_spacing_mm=_plane_spacing(solids))


def _combine_slabs(solids: list[Solid], op: str) -> tuple[Slab, ...]:
    """The slabs of ``op`` over the slabs of ``solids``, on the common refinement of their
    z-ranges (see :func:`_refine`)."""
    lo, hi, idx = _refine(solids)
    grid = np.full(idx.shape, None, dtype=object)
    for k, s in enumerate(solids):
        has = idx[:, k] >= 0
        grid[has, k] = s._geoms[idx[has, k]]
    if op == "union":
        shapes = np.asarray(shapely.union_all(grid, axis=1), dtype=object)
        alone = (idx >= 0).sum(axis=1) == 1  # one input here: its own shape, unchanged
        shapes[alone] = grid[alone, np.argmax(idx[alone] >= 0, axis=1)]
    elif op == "intersection":
        every = (idx >= 0).all(axis=1)
        lo, hi, idx, grid = lo[every], hi[every], idx[every], grid[every]
        shapes = shapely.intersection_all(grid, axis=1) if len(grid) else np.empty(0, dtype=object)
    else:  # difference of the first and the union of the others
        first = idx[:, 0] >= 0
        lo, hi, idx, grid = lo[first], hi[first], idx[first], grid[first]
        others = np.asarray(shapely.union_all(grid[:, 1:], axis=1), dtype=object)
        untouched = ~shapely.intersects(grid[:, 0], others)  # nothing taken away here
        shapes = np.asarray(shapely.difference(grid[:, 0], others), dtype=object)
        shapes[untouched] = grid[untouched, 0]
    z, on_plane = _representative_z(solids, lo, hi, idx)
    lo, hi, z, shapes = _merge_unchanged(lo, hi, z, on_plane, np.asarray(shapes, dtype=object))
    mixed = ~np.isin(shapely.get_type_id(shapes), [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    shapes[mixed] = [polygonal(g) for g in shapes[mixed]]  # drop lines where shapes only touch
    keep = ~shapely.is_empty(shapes)
    ranges = zip(z[keep], lo[keep], hi[keep], shapes[keep], strict=True)
    return tuple(Slab(float(c), float(a), float(b), g) for c, a, b, g in ranges)


def _merge_unchanged(
    lo: np.ndarray, hi: np.ndarray, z: np.ndarray, on_plane: np.ndarray, shapes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent ranges that kept the very same input shape (one input slab that the common
    refinement cut where another input has slab edges, but nothing changed it there) as
    one range again: the result has no more slabs than its inputs need."""
    if len(lo) < 2:
        return lo, hi, z, shapes
    same = np.array([a is b for a, b in zip(shapes[1:], shapes[:-1], strict=True)]) & (lo[1:] - hi[:-1] <= _Z_MERGE_MM)
    start = np.r_[True, ~same]
    first = np.flatnonzero(start)
    last = np.r_[first[1:] - 1, len(lo) - 1]
    # a contour plane chosen for a piece of a run stands for the whole run
    group = np.cumsum(start) - 1
    z_run = (lo[first] + hi[last]) / 2.0
    planed = np.flatnonzero(on_plane)[::-1]  # reversed: the first piece's plane is written last
    z_run[group[planed]] = z[planed]
    return lo[first], hi[last], z_run, shapes[first]


def union(*solids: Solid, name: str | None = None) -> Solid:
    """Everything inside any of ``solids``."""
    return _combine(list(solids), "union", name or " | ".join(s.name for s in solids))


def intersection(*solids: Solid, name: str | None = None) -> Solid:
    """What is inside all of ``solids``."""
    return _combine(list(solids), "intersection", name or " & ".join(s.name for s in solids))


def difference(a: Solid, *others: Solid, name: str | None = None) -> Solid:
    """What is inside ``a`` and inside none of ``others`` (e.g. a GTV minus its peaks)."""
    return _combine([a, *others], "difference", name or " - ".join(s.name for s in (a, *others)))


def expand(solid: Solid, margin: float, name: str | None = None) -> Solid:
    """``solid`` grown by ``margin`` mm in every direction (dilation by a ball).

    The result stands on planes of the input's contour spacing (:func:`_derived_step`),
    from ``margin`` below its lowest point to ``margin`` above its highest, and is
    interpolated between them like a drawn structure. A plane's section is the union,
    over the input's sheets (its slabs' shapes, taken every :func:`_sheet_step` in z)
    closer than ``margin``, of the sheet buffered by ``sqrt(margin**2 - dz**2)``.
    """
    if margin < 0:
        raise ValueError(f"expand: margin must be >= 0 mm (got {margin}); use contract()")
    solid._require_volume("expansion")
    name = name or f"{solid.name} + {margin:g} mm"
    if margin == 0:
        return Solid(name, solid.slabs, issues=solid.issues, plane_spacing_mm=solid.plane_spacing_mm)
    if isinstance(solid.slabs, _Combined) and solid.slabs.op == "union":
        # growing distributes over a union: each input grown on its own keeps one part per
        # plane (a dome cap and an area curve of its own) where the union's planes hold many
        return union(*(expand(s, margin) for s in solid.slabs.solids), name=name)
    step = _derived_step(solid, margin)
    z = _planes(solid, solid._lo[0] - margin, solid._hi[-1] + margin, step)
    sheets = _sheets(solid, _sheet_step(margin))
    dz = _plane_gaps(solid, sheets, z)
    k, j = np.nonzero(dz < margin)
    radius = np.sqrt(margin**2 - dz[k, j] ** 2)
    grown = shapely.buffer(solid._geoms[sheets][j], radius, quad_segs=_QUAD_SEGS)
    shapes = _group_union(grown, k, len(z))
    return _surface_solid(name, z, shapes, step, [solid])


def contract(solid: Solid, margin: float, name: str | None = None) -> Solid:
    """``solid`` shrunk by ``margin`` mm in every direction (erosion by a ball).

    The result stands on planes of the input's contour spacing (:func:`_derived_step`)
    and is interpolated between them. A plane keeps a point only if the ball of radius ``margin`` around it lies inside
    the solid: its section is the intersection, over the input's sheets closer than
    ``margin`` in z, of the sheet buffered by ``-sqrt(margin**2 - dz**2)``, and it is empty
    where the ball would reach beyond the solid's ends or into a gap.
    """
    if margin < 0:
        raise ValueError(f"contract: margin must be >= 0 mm (got {margin}); use expand()")
    solid._require_volume("contraction")
    name = name or f"{solid.name} - {margin:g} mm"
    if margin == 0:
        return Solid(name, solid.slabs, issues=solid.issues, plane_spacing_mm=solid.plane_spacing_mm)
    step = _derived_step(solid, margin)
    z = _planes(solid, solid._lo[0] + margin, solid._hi[-1] - margin, step)
    void_lo, void_hi = solid._voids
    covered = np.asarray((_overlap_len(z - margin, z + margin, void_lo, void_hi) <= _Z_MERGE_MM).all(axis=1))
    sheets = _sheets(solid, _sheet_step(margin))
    dz = _plane_gaps(solid, sheets, z)
    k, j = np.nonzero((dz <= margin) & covered[:, None])
    radius = np.sqrt(np.maximum(margin**2 - dz[k, j] ** 2, 0.0))
    shrunk = shapely.buffer(solid._geoms[sheets][j], -radius, quad_segs=_QUAD_SEGS)
    counts = np.bincount(k, minlength=len(z))
    grid = np.full((len(z), max(int(counts.max(initial=0)), 1)), None, dtype=object)
    grid[k, np.arange(len(k)) - np.r_[0, np.cumsum(counts)[:-1]][k]] = shrunk
    shapes = np.full(len(z), shapely.Polygon(), dtype=object)
    shapes[covered] = shapely.intersection_all(grid[covered], axis=1)
    return _surface_solid(name, z, shapes, step, [solid])


def _derived_step(solid: Solid, margin: float) -> float:
    """Plane spacing of an expansion or contraction: the input's, or half the margin where
    that is coarser (a surface rolled over by a ball of radius ``margin`` is smooth at that
    scale, and the interpolation between planes follows it)."""
    spacing = solid.typical_spacing_mm
    return spacing * max(1, math.floor(margin / 2 / spacing))


def _planes(solid: Solid, z_min: float, z_max: float, step: float) -> np.ndarray:
    """Planes every ``step`` mm within [z_min, z_max], aligned with the solid's own planes."""
    ref = solid.slabs.plane_z[0] if isinstance(solid.slabs, Surface) else solid.slabs[0].z
    k0, k1 = math.ceil((z_min - ref) / step - 1e-9), math.floor((z_max - ref) / step + 1e-9)
    return ref + step * np.arange(k0, k1 + 1, dtype=np.float64)


def _plane_gaps(solid: Solid, sheets: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(planes, sheets) z-distance from each plane to each sheet's surface range; 0 where the
    plane lies within the sheet's slab (as :func:`_point_distances` measures)."""
    surf_lo, surf_hi = (r[sheets] for r in solid._surface_ranges)
    within = _overlap_len(z, z, solid._lo[sheets], solid._hi[sheets]) >= -_Z_MERGE_MM
    return np.where(within, 0.0, _z_gap(z, z, surf_lo, surf_hi))


def _sheet_step(margin: float) -> float:
    """Spacing of the input sheets a ball of radius ``margin`` is rolled over: a quarter of
    the margin leaves scallops of at most margin / 128 between two balls."""
    return margin / 4.0


def _sheets(solid: Solid, step: float) -> np.ndarray:
    """Indices of slabs whose outlines are about ``step`` apart (in z, or in equivalent
    radius where the section changes fast), keeping the first and last of every block
    (where the surface reaches out to the slab's edge)."""
    lo, hi, z = solid._lo, solid._hi, solid._z
    radius = np.sqrt(solid._areas / np.pi)
    ends = np.r_[True, lo[1:] - hi[:-1] > _Z_MERGE_MM]
    ends |= np.r_[ends[1:], True]
    keep, last = [], 0
    for i in range(len(z)):
        if ends[i] or z[i] - z[last] >= step or abs(radius[i] - radius[last]) >= step:
            keep.append(i)
            last = i
    return np.asarray(keep, dtype=np.intp)


def _surface_solid(name: str, z: np.ndarray, shapes: np.ndarray, step: float, sources: list[Solid]) -> Solid:
    """A derived solid from its sections on planes ``z``, interpolated like a drawn one."""
    shapes = np.array([polygonal(g) if not g.is_empty else g for g in shapes], dtype=object)
    empty = shapely.is_empty(shapes)
    slabs: Surface | tuple[()] = Surface(z[~empty], shapes[~empty], step, z[empty]) if (~empty).any() else ()
    return Solid(name, slabs, issues=_issues_of(sources), plane_spacing_mm=step)


# ---------------------------------------------------------------------------------------------
# One build per structure and course
# ---------------------------------------------------------------------------------------------
class SolidCache:
    """The solids of one structure set, each built once, by ROI number or name.

    Derived solids (a valley, expanded peaks) can be added by name so that every rule of
    a course sees the same object.
    """

    def __init__(self, structure_set: StructureSet) -> None:
        self.structure_set = structure_set
        self._solids: dict[int, Solid] = {}
        self._derived: dict[str, Solid] = {}

    @lazy
    def typical_spacing_mm(self) -> float | None:
        """Median plane spacing over all ROIs: the thickness of single-plane ROIs."""
        diffs = []
        for roi in self.structure_set.rois.values():
            z = [
                float(c.points[:, 2].mean())
                for c in roi.contours
                if c.geometric_type in _CLOSED_TYPES and len(c.points)
            ]
            planes = _group_planes(np.asarray(z))
            diffs.append(np.diff(planes))
        all_diffs = np.concatenate(diffs) if diffs else np.empty(0)
        return median(all_diffs) if len(all_diffs) else None

    def _roi(self, key: int | str) -> Roi:
        by_number = isinstance(key, int)
        roi = self.structure_set.rois.get(key) if isinstance(key, int) else self.structure_set.by_name(key)
        if roi is None:
            what = f"ROI number {key}" if by_number else f"ROI named '{key}'"
            raise GeometryError(f"structure set {self.structure_set.source.path}: no {what}")
        return roi

    def get(self, key: int | str) -> Solid:
        """The solid of a ROI (by number or case-insensitive name) or of an added derived solid."""
        if isinstance(key, str) and key.casefold() in self._derived:
            return self._derived[key.casefold()]
        roi = self._roi(key)
        if roi.number not in self._solids:
            fallback = None
            planes = {round(c.z, 2) for c in roi.contours if c.geometric_type in _CLOSED_TYPES and len(c.points)}
            if len(planes) == 1:
                fallback = self.typical_spacing_mm
            self._solids[roi.number] = solid_from_roi(roi, fallback)
        return self._solids[roi.number]

    __getitem__ = get

    def add(self, solid: Solid) -> Solid:
        """Register a derived solid under its name (which must not be a ROI's name)."""
        if self.structure_set.by_name(solid.name) is not None:
            raise ValueError(f"derived structure '{solid.name}' has the name of a ROI of the structure set")
        self._derived[solid.name.casefold()] = solid
        return solid

    def issues(self) -> list[GeometryIssue]:
        """The integrity issues of every ROI built so far."""
        return [i for s in self._solids.values() for i in s.issues]
