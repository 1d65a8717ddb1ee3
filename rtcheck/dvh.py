"""Dose-volume histograms: the dose a structure receives, as weighted dose samples.

rtcheck computes its own DVHs (dicompyler-core's calculator does not run under pydicom 3,
and its look-ups are not interpolated). :func:`voxelise` turns a
:class:`~rtcheck.geometry.Solid` into (voxel, offset, volume) samples on a dose grid's
geometry that together are exactly the solid's part inside the grid; :meth:`VoxelisedStructure.dose`
gives them the dose of any grid of that geometry (each plan, component, per fraction), and
:class:`StructureDose` computes every metric from the weighted samples.
:func:`structure_dose` does both steps at once.

Voxelisation
------------
The solid is the stack of thin slabs of :mod:`rtcheck.geometry` (its interpolated surface);
a dose voxel is the box around its centre (:mod:`rtcheck.dose`). The volume of solid in a
voxel is the sum, over the slabs overlapping the voxel's z-range, of the z-overlap times the
in-plane area of the slab's shape in the voxel's square. The in-plane areas come from a
scan-line fill at ``n`` sub-rows per voxel row (``subdivisions``: 4, or 2 for structures
over 100 cc): on each sub-row the shape's boundary crossings give the exact x-intervals
inside it (even-odd rule, so holes and separate parts are exact), so areas are exact in x
and sampled at ``n`` mid-lines in y.

* A voxel column fully inside on all ``n`` sub-rows is *interior*: it is decided as a whole,
  from runs of such columns. Slabs sharing a voxel are merged into one sample at the voxel
  centre (or at the z-centroid of the slab pieces when they do not fill the voxel's
  thickness). In a structure of at most INTERIOR_SAMPLE_BUDGET / 8 interior voxels, each is
  split into s x s x s sub-voxels (s up to 4), so that small structures are resolved below
  the voxel size everywhere.
* Every other voxel touched by the shape is a *boundary* voxel, supersampled: each sub-row
  strip that is fully inside is one sample, and each partly covered strip is cut into
  ``n`` sub-columns, each piece one sample at its exact centroid in x (z: the centre of the
  slab piece).
* The boundary samples of each polygon are scaled so that its area matches the exact
  (shapely) area of the polygon inside the grid: volumes agree with
  :attr:`Solid.volume_cc <rtcheck.geometry.Solid.volume_cc>` to float precision, and the
  scan line only distributes that volume among doses.

Dose at a sample
----------------
A voxel's value holds at its centre; an offset sample gets the voxel's value plus, along
each axis, the voxel's limited slope times the offset (:func:`_reconstruct`). This is exact
for a dose linear in space, keeps every voxel's mean at its value, and never overshoots
the neighbouring values (no spurious hot spot at the edge of a dose plateau).

Parts of the solid outside the grid's voxel box have no dose: they are reported as
``uncovered_cc``, and metrics refuse to run on an incompletely covered structure unless
the caller asks for :meth:`StructureDose.covered_part` explicitly.

Metrics
-------
``v_gy(x)`` is the volume of samples with dose >= x. ``d_cc(v)`` and ``d_percent(p)``
invert the cumulative DVH with linear interpolation between dose levels, each level's volume
centred on its dose (the distinct sample doses in decreasing order, level ``i`` with volume
``w_i`` placed at cumulative volume ``C_i - w_i / 2``): a uniform dose gives that dose for
every ``D_x``, and the result does not jump with one voxel more or less.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import shapely
from dicompylercore.dvh import DVH

from .course import Roi
from .dose import DoseError, DoseGrid, same_axes
from .geometry import Solid

#: Uncovered volume (cc) below which a structure counts as fully inside the dose grid.
COVERAGE_TOLERANCE_CC = 1e-3
#: Sub-rows (and sub-columns) per voxel in boundary voxels: SMALL_SUBDIVISIONS for
#: structures up to LARGE_STRUCTURE_CC, LARGE_SUBDIVISIONS above (where boundary voxels
#: hold a small part of the volume and their number a large part of the work).
SMALL_SUBDIVISIONS = 4
LARGE_SUBDIVISIONS = 2
LARGE_STRUCTURE_CC = 100.0
#: The interior voxels of a structure are split into s x s x s sub-voxels, s as large as this
#: budget of samples allows (up to MAX_REFINEMENT): small structures get sub-voxel dose
#: resolution everywhere, large ones (where a voxel is a small part of the volume) none.
INTERIOR_SAMPLE_BUDGET = 1 << 16
MAX_REFINEMENT = 4


@dataclass(frozen=True, eq=False)
class StructureDose:
    """The dose of a structure as weighted samples, and the metrics computed from them.

    ``dose_gy`` (float32) and ``weight_cc`` (float64) are the samples; they cover
    ``covered_volume_cc`` of the structure's ``volume_cc`` (slab convention).
    """

    name: str
    dose_gy: np.ndarray
    weight_cc: np.ndarray
    volume_cc: float
    covered_volume_cc: float
    grid_note: str
    partial: bool = False

    @property
    def uncovered_cc(self) -> float:
        return max(self.volume_cc - self.covered_volume_cc, 0.0)

    def covered_part(self) -> StructureDose:
        """The same samples, accepted as the DVH of only the part inside the dose grid.

        Percent metrics then refer to the covered volume. Use it where a partial answer is
        still meaningful (e.g. the maximum dose of a BODY longer than the dose grid).
        """
        return replace(self, partial=True)

    def scaled(self, factor: float) -> StructureDose:
        """The same structure under the dose times ``factor`` (e.g. 1 / fractions)."""
        return replace(self, dose_gy=(self.dose_gy * np.float32(factor)).astype(np.float32, copy=False))

    # -- metrics ------------------------------------------------------------------------------
    def _usable(self) -> None:
        where = f"structure '{self.name}'"
        if self.weight_cc.size == 0:
            raise DoseError(None, where, f"lies entirely outside the dose grid ({self.grid_note})")
        if not self.partial and self.uncovered_cc > COVERAGE_TOLERANCE_CC:
            raise DoseError(
                None,
                where,
                f"{self.uncovered_cc:.3g} cc of its {self.volume_cc:.3g} cc lie outside the dose grid "
                f"({self.grid_note}): its DVH would be incomplete",
            )

    @cached_property
    def _total_cc(self) -> float:
        self._usable()
        return float(self.weight_cc.sum())

    @cached_property
    def _bins(self) -> _DoseBins:
        self._usable()
        return _DoseBins(self.dose_gy, self.weight_cc)

    @property
    def dmean(self) -> float:
        """Mean dose (Gy), volume-weighted.

        Summed by numpy's pairwise summation, not a BLAS dot product: that one splits the
        sum over threads (its result then depends on the machine's cores), and on a busy
        machine its threads wait on each other for tens of milliseconds per structure.
        """
        return float((self.dose_gy.astype(np.float64) * self.weight_cc).sum()) / self._total_cc

    @property
    def dmax(self) -> float:
        """Largest dose sample (Gy). Protocols should prefer a near-maximum such as D0.03cc."""
        self._usable()
        return float(self.dose_gy.max())

    @property
    def dmin(self) -> float:
        """Smallest dose sample (Gy)."""
        self._usable()
        return float(self.dose_gy.min())

    def d_cc(self, volume_cc: float) -> float:
        """Dose (Gy) received by the hottest ``volume_cc`` of the structure, e.g. D0.03cc."""
        if not 0 <= volume_cc <= self._total_cc:
            raise DoseError(
                None,
                f"structure '{self.name}'",
                f"D{volume_cc:g}cc asked of a structure of {self._total_cc:.3g} cc",
            )
        return self._bins.dose_at(volume_cc)

    def d_percent(self, percent: float) -> float:
        """Dose (Gy) received by at least ``percent`` % of the volume, e.g. D95%."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must lie in [0, 100], not {percent}")
        return self.d_cc(min(self._total_cc * percent / 100, self._total_cc))

    def v_gy(self, dose_gy: float) -> float:
        """Volume (cc) receiving at least ``dose_gy``."""
        self._usable()
        return float(self.weight_cc[self.dose_gy >= dose_gy].sum())

    def v_percent(self, dose_gy: float) -> float:
        """Percentage of the volume receiving at least ``dose_gy``."""
        return 100 * self.v_gy(dose_gy) / self._total_cc

    def to_dicompyler(self, bin_gy: float = 0.01) -> DVH:
        """A cumulative, absolute-volume dicompyler-core DVH (bins of ``bin_gy`` Gy).

        For interoperability (plots, exports); rtcheck's own metrics come from the samples.
        """
        self._usable()
        index = np.clip(np.floor(self.dose_gy / bin_gy).astype(np.int64), 0, None)
        differential = np.bincount(index, weights=self.weight_cc)
        cumulative = differential[::-1].cumsum()[::-1]
        bins = np.arange(cumulative.size + 1) * bin_gy
        return DVH(cumulative, bins, dvh_type="cumulative", dose_units="Gy", volume_units="cm3", name=self.name)


#: Sets of samples at most this large are sorted directly when a DVH is inverted.
_DIRECT_SAMPLES = 2048


class _DoseBins:
    """The cumulative DVH of weighted samples, inverted exactly without sorting them all.

    Sorting a million samples with their weights (an argsort) costs more than building the
    DVH; a fine histogram finds the bin that holds a queried volume, and only that bin is
    looked into (again by a histogram while it is large). The answer is the one a full sort
    would give.
    """

    def __init__(self, dose: np.ndarray, weight: np.ndarray) -> None:
        self.dose, self.weight = dose, weight
        lo, hi = dose.min(), dose.max()
        self.single = bool(lo == hi)
        if self.single or dose.size <= _DIRECT_SAMPLES:
            return  # inverted directly
        n = int(np.clip(dose.size // 8, 2, 1 << 16))
        scale = np.float32(n / (hi - lo))
        # float32 arithmetic is monotonic in the dose, which is all the binning needs; the
        # lowest and highest doses fall in the first and last bins
        self.index = np.minimum(((dose - lo) * scale).astype(np.int64), n - 1)
        per_bin = np.bincount(self.index, weights=weight, minlength=n)
        self.filled = np.flatnonzero(np.bincount(self.index, minlength=n))
        self.above = np.cumsum(per_bin[::-1])[::-1] - per_bin  # volume in higher bins
        self.from_top = np.cumsum(per_bin[::-1])  # volume in the top t + 1 bins
        self.inner: dict[int, _DoseBins] = {}  # bins looked into, kept for the next query

    def dose_at(
        self,
        volume: float,
        higher: tuple[float, float] | None = None,
        lower: tuple[float, float] | None = None,
    ) -> float:
        """The dose at cumulative volume ``volume`` (module docstring: midpoint rule).

        ``higher`` and ``lower`` are the (dose, volume) of the levels just outside this set of
        samples, when it is part of a larger one.
        """
        if self.single or self.dose.size <= _DIRECT_SAMPLES:
            return _interpolate(self.dose, self.weight, volume, higher, lower)
        top = self.from_top.size - 1
        b = top - min(int(np.searchsorted(self.from_top, volume, side="left")), top)
        p = int(np.searchsorted(self.filled, b))
        if p + 1 < self.filled.size:
            higher = self._edge_level(int(self.filled[p + 1]), lowest=True)
        if p > 0:
            lower = self._edge_level(int(self.filled[p - 1]), lowest=False)
        if b not in self.inner:
            mine = self.index == b
            self.inner[b] = _DoseBins(self.dose[mine], self.weight[mine])
        return self.inner[b].dose_at(volume - self.above[b], higher, lower)

    def _edge_level(self, b: int, *, lowest: bool) -> tuple[float, float]:
        """The lowest (or highest) dose of bin ``b`` and the volume at exactly that dose."""
        mine = self.index == b
        dose = self.dose[mine]
        level = dose.min() if lowest else dose.max()
        return float(level), float(self.weight[mine][dose == level].sum())


def _interpolate(
    dose: np.ndarray,
    weight: np.ndarray,
    volume: float,
    higher: tuple[float, float] | None,
    lower: tuple[float, float] | None,
) -> float:
    """The midpoint-rule inversion on a small (or single-dose) set of samples."""
    if dose.min() == dose.max():
        levels, volumes = dose[:1].astype(np.float64), np.array([weight.sum()])
    else:
        levels, inverse = np.unique(dose, return_inverse=True)  # equal doses are one level
        levels, volumes = levels[::-1].astype(np.float64), np.bincount(inverse, weights=weight)[::-1]
    midpoints = np.cumsum(volumes) - volumes / 2
    if higher is not None:
        levels, midpoints = np.insert(levels, 0, higher[0]), np.insert(midpoints, 0, -higher[1] / 2)
    if lower is not None:
        levels = np.append(levels, lower[0])
        midpoints = np.append(midpoints, volumes.sum() + lower[1] / 2)
    return float(np.interp(volume, midpoints, levels))


# -- rasterisation ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VoxelisedStructure:
    """A structure on a dose grid's geometry: where its volume lies, as weighted samples.

    It depends on the grid's voxel positions only, not on the dose, so one voxelisation
    serves every dose on that grid (each plan, each component, per fraction or in total).
    Samples are either at a voxel centre (``centre_voxel``) or at an offset from the centre
    of voxel ``offset_voxel[offset_owner]`` (``offset_mm``, shape (3, n)); ``weight_cc``
    lists the centre samples' volumes first, then the offset samples'.
    """

    name: str
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    centre_voxel: np.ndarray
    offset_voxel: np.ndarray
    offset_owner: np.ndarray
    offset_mm: np.ndarray
    weight_cc: np.ndarray
    volume_cc: float
    covered_volume_cc: float

    def dose(self, grid: DoseGrid) -> StructureDose:
        """The structure's dose samples under ``grid``'s dose (which must share the geometry)."""
        if not same_axes(grid.axes, self.axes):
            raise ValueError(f"structure '{self.name}' was voxelised on another grid than {grid.note}")
        values = grid.dose_gy.reshape(-1)
        offset_dose = _reconstruct(grid, self.offset_voxel, self.offset_owner, self.offset_mm)
        dose = np.concatenate((values[self.centre_voxel], offset_dose))
        return StructureDose(
            name=self.name,
            dose_gy=dose,
            weight_cc=self.weight_cc,
            volume_cc=self.volume_cc,
            covered_volume_cc=self.covered_volume_cc,
            grid_note=grid.note,
        )


def structure_dose(grid: DoseGrid, solid: Solid, *, subdivisions: int | None = None) -> StructureDose:
    """The dose samples of ``solid`` on ``grid``: :func:`voxelise`, then its dose."""
    return voxelise(grid, solid, subdivisions=subdivisions).dose(grid)


def voxelise(grid: DoseGrid, solid: Solid, *, subdivisions: int | None = None) -> VoxelisedStructure:
    """The samples of ``solid`` on ``grid``'s geometry (see the module docstring for the method).

    ``subdivisions`` (sub-rows per voxel in boundary voxels) defaults by the structure's size.
    """
    if subdivisions is not None and not 1 <= subdivisions <= 16:
        raise ValueError(f"subdivisions must lie in 1..16, not {subdivisions}")
    s = _SlabParts.of(solid, grid)
    active = (s.overlap_z > 0) & (s.inside > 0)
    if subdivisions is None:
        subdivisions = SMALL_SUBDIVISIONS if s.volume_cc <= LARGE_STRUCTURE_CC else LARGE_SUBDIVISIONS
    raster = _Raster(grid, subdivisions)
    if active.any():
        centre, weight_centre, voxel, offset, weight = raster.samples(
            s.parts[active], s.part_slab[active], s.z_lo, s.z_hi, s.inside[active]
        )
    else:
        centre, voxel = np.empty(0, np.int64), np.empty(0, np.int64)
        weight_centre, weight, offset = np.empty(0), np.empty(0), np.empty((3, 0), np.float32)
    keep = weight > 0
    unique_voxel, owner = np.unique(voxel[keep], return_inverse=True)
    return VoxelisedStructure(
        name=solid.name,
        axes=grid.axes,
        centre_voxel=centre,
        offset_voxel=unique_voxel,
        offset_owner=owner,
        offset_mm=offset[:, keep],
        weight_cc=np.concatenate((weight_centre, weight[keep])) / 1000,
        volume_cc=s.volume_cc,
        covered_volume_cc=s.covered_volume_cc,
    )


def uncovered_cc(grid: DoseGrid, solid: Solid) -> float:
    """Volume (cc) of ``solid`` outside ``grid``'s voxel box: what :func:`voxelise` would
    leave out, from the slabs alone (a coverage check needs no samples)."""
    s = _SlabParts.of(solid, grid)
    return max(s.volume_cc - s.covered_volume_cc, 0.0)


@dataclass(frozen=True)
class _SlabParts:
    """The polygons of a solid's (bulk) slabs, with how much of each lies in a grid's box."""

    parts: np.ndarray
    part_slab: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    inside: np.ndarray  # in-plane area (mm2) of each part within the box
    overlap_z: np.ndarray  # z-length (mm) of each part's slab within the box
    volume_cc: float
    covered_volume_cc: float

    @classmethod
    def of(cls, solid: Solid, grid: DoseGrid) -> _SlabParts:
        slabs = [s for s in solid.bulk.slabs if s.z_max > s.z_min and not s.shape.is_empty]
        if not slabs:
            raise DoseError(None, f"structure '{solid.name}'", "has no volume (no closed planar contour)")
        shapes = np.empty(len(slabs), dtype=object)
        shapes[:] = [s.shape for s in slabs]
        z_lo = np.array([s.z_min for s in slabs])
        z_hi = np.array([s.z_max for s in slabs])
        parts, part_slab = shapely.get_parts(shapes, return_index=True)
        polygons = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
        parts, part_slab = parts[polygons], part_slab[polygons]
        area = shapely.area(parts)
        xe, ye, ze = grid.x_edges_mm, grid.y_edges_mm, grid.z_edges_mm
        overlap_z = np.clip(np.minimum(z_hi, ze[-1]) - np.maximum(z_lo, ze[0]), 0, None)[part_slab]
        inside = area.copy()
        bounds = shapely.bounds(parts)
        sticks_out = (bounds[:, 0] < xe[0]) | (bounds[:, 1] < ye[0]) | (bounds[:, 2] > xe[-1]) | (bounds[:, 3] > ye[-1])
        if sticks_out.any():
            box = shapely.box(xe[0], ye[0], xe[-1], ye[-1])
            inside[sticks_out] = shapely.area(shapely.intersection(parts[sticks_out], box))
        return cls(
            parts=parts,
            part_slab=part_slab,
            z_lo=z_lo,
            z_hi=z_hi,
            inside=inside,
            overlap_z=overlap_z,
            volume_cc=float(np.dot(area, (z_hi - z_lo)[part_slab])) / 1000,
            covered_volume_cc=float(np.dot(inside, overlap_z)) / 1000,
        )


def _reconstruct(grid: DoseGrid, voxel: np.ndarray, owner: np.ndarray, offset_mm: np.ndarray) -> np.ndarray:
    """Dose (float32) at offsets from the centres of voxels ``voxel[owner]``: the voxel's
    value plus, along each axis, its limited slope times the offset.

    The slope along an axis is the one-sided difference (per mm) of smaller magnitude, or 0
    where the two sides disagree in sign and at the grid's edge (minmod). The reconstruction
    is exact for a dose linear in space, keeps each voxel's mean at its value, and never
    goes beyond the neighbours' values: a dose plateau gets no spurious hot spot at its edge.
    """
    values = grid.dose_gy.reshape(-1)
    nz, ny, nx = grid.dose_gy.shape
    node = values[voxel]
    dose = node[owner]
    index = (voxel % nx, (voxel // nx) % ny, voxel // (nx * ny))
    for axis, (coords, stride, n) in enumerate(((grid.x_mm, 1, nx), (grid.y_mm, nx, ny), (grid.z_mm, nx * ny, nz))):
        step = np.diff(coords).astype(np.float32)
        up_step = np.append(step, np.float32(np.inf))  # to the next voxel; inf at the edge
        down_step = np.insert(step, 0, np.float32(np.inf))
        i = index[axis]
        forward = (values[voxel + np.where(i < n - 1, stride, 0)] - node) / up_step[i]
        backward = (node - values[voxel - np.where(i > 0, stride, 0)]) / down_step[i]
        smaller = np.where(np.abs(forward) < np.abs(backward), forward, backward)
        slope = np.where(forward * backward > 0, smaller, np.float32(0))
        dose += slope[owner] * offset_mm[axis]
    return dose


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items repeated ``counts`` times: each copy's item index and its rank in the item."""
    owner = np.repeat(np.arange(counts.size), counts)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, rank


def _snap(u: np.ndarray) -> np.ndarray:
    """Grid coordinates within rounding of an integer are that integer (no sliver pieces)."""
    r = np.rint(u)
    return np.where(np.abs(u - r) < 1e-9, r, u)


class _Raster:
    """The scan-line rasteriser of one structure on one grid geometry."""

    def __init__(self, grid: DoseGrid, n: int) -> None:
        self.grid = grid
        self.n = n
        self.dx, self.dy = grid.spacing_mm
        self.h = self.dy / n  # sub-row height
        self.nz, self.ny, self.nx = grid.dose_gy.shape
        self.x0 = float(grid.x_edges_mm[0])
        self.y0 = float(grid.y_edges_mm[0])
        self.rows = self.ny * n  # sub-rows over the grid

    def samples(
        self, parts: np.ndarray, part_slab: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray, exact_area: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """The samples of the polygons ``parts``, each the part of slab ``part_slab`` (whose
        z-range is ``z_lo``..``z_hi``) with in-grid area ``exact_area``: voxel and volume
        (mm3) of the samples at voxel centres, then voxel, offset (3, n) and volume of the
        others."""
        part, row, a, b = self._intervals(parts)
        pairs = self._slab_planes(z_lo, z_hi)
        interior, strips, pieces = self._classify(part, row, a, b)
        widths = interior[3] - interior[2]
        interior_area = np.asarray(np.bincount(interior[0], weights=widths, minlength=parts.size), float)
        interior_area *= self.dx * self.dy
        bx, by, barea, bpart = self._boundary_samples(strips, pieces)
        boundary_area = np.bincount(bpart, weights=barea, minlength=parts.size)
        factor = np.ones(parts.size)
        has = boundary_area > 0
        factor[has] = np.clip(exact_area[has] - interior_area[has], 0, None) / boundary_area[has]
        centre, w_centre, v_in, o_in, w_in = self._interior_samples((part_slab[interior[0]], *interior[1:]), pairs)
        v_bd, o_bd, w_bd = self._boundary_in_planes(bx, by, barea * factor[bpart], part_slab[bpart], pairs)
        return (
            centre,
            w_centre,
            np.concatenate((v_in, v_bd)),
            np.concatenate((o_in, o_bd), axis=1),
            np.concatenate((w_in, w_bd)),
        )

    # -- scan lines ---------------------------------------------------------------------------
    def _intervals(self, parts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Inside x-intervals [a, b) per (polygon, sub-row), clipped to the grid, even-odd rule."""
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        xy, coord_ring = shapely.get_coordinates(rings, return_index=True)
        linked = coord_ring[:-1] == coord_ring[1:]
        p, q = xy[:-1][linked], xy[1:][linked]
        edge_part = ring_part[coord_ring[:-1][linked]]
        lo, hi = np.minimum(p[:, 1], q[:, 1]), np.maximum(p[:, 1], q[:, 1])
        # sub-row m (centre y0 + (m + 1/2) h) crosses an edge when lo <= y < hi: a vertex shared
        # by two edges is counted once, so every ring crosses every sub-row an even number of times
        first = np.clip(np.ceil((lo - self.y0) / self.h - 0.5), 0, self.rows).astype(np.int64)
        stop = np.clip(np.ceil((hi - self.y0) / self.h - 0.5), 0, self.rows).astype(np.int64)
        edge, rank = _expand(np.maximum(stop - first, 0))
        m = first[edge] + rank
        y = self.y0 + (m + 0.5) * self.h
        p, q = p[edge], q[edge]
        x = p[:, 0] + (y - p[:, 1]) * (q[:, 0] - p[:, 0]) / (q[:, 1] - p[:, 1])
        key = edge_part[edge] * self.rows + m
        order = np.lexsort((x, key))
        x, key = x[order], key[order]
        a = np.maximum(x[0::2], self.x0)
        b = np.minimum(x[1::2], self.x0 + self.nx * self.dx)
        key = key[0::2]
        keep = b > a
        key = key[keep]
        return key // self.rows, key % self.rows, a[keep], b[keep]

    def _classify(
        self, part: np.ndarray, row: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Split the intervals into interior runs, fully covered boundary strips, partial pieces.

        A sweep along each (polygon, voxel row) adds 2**s where sub-row s starts covering whole
        voxels and subtracts it where it stops: the running sum is the bit mask of the sub-rows
        that cover a voxel fully, all of them for an interior voxel.
        """
        n = self.n
        ua, ub = _snap((a - self.x0) / self.dx), _snap((b - self.x0) / self.dx)
        ia, ib = np.floor(ua).astype(np.int64), np.floor(ub).astype(np.int64)
        full_from = np.where(ua == ia, ia, ia + 1)
        has_full = ib > full_from
        vrow = part * self.ny + row // n  # (polygon, voxel row)
        bit = np.left_shift(1, row % n)
        ev_row = np.concatenate((vrow[has_full], vrow[has_full]))
        ev_pos = np.concatenate((full_from[has_full], ib[has_full]))
        ev_bit = np.concatenate((bit[has_full], -bit[has_full]))
        order = np.lexsort((ev_pos, ev_row))
        ev_row, ev_pos = ev_row[order], ev_pos[order]
        mask = np.cumsum(ev_bit[order])[:-1]
        seg = (ev_row[:-1] == ev_row[1:]) & (ev_pos[1:] > ev_pos[:-1]) & (mask > 0)
        s_row, s_lo, s_hi, s_mask = ev_row[:-1][seg], ev_pos[:-1][seg], ev_pos[1:][seg], mask[seg]
        whole = s_mask == (1 << n) - 1
        interior = (s_row[whole] // self.ny, s_row[whole] % self.ny, s_lo[whole], s_hi[whole])
        strips = (s_row[~whole], s_lo[~whole], s_hi[~whole], s_mask[~whole])
        # partial pieces: the interval's ends in voxels it does not cover whole
        single = ib == ia
        left = (ua > ia) | single  # starts inside voxel ia, or lies within it
        right = (ub > ib) & ~single
        pa = np.concatenate((a[left], self.x0 + ib[right] * self.dx))
        pb = np.concatenate((np.where(single, b, self.x0 + (ia + 1) * self.dx)[left], b[right]))
        pieces = (np.concatenate((part[left], part[right])), np.concatenate((row[left], row[right])), pa, pb)
        return interior, strips, pieces

    def _boundary_samples(
        self, strips: tuple[np.ndarray, ...], pieces: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, ...]:
        """x, y, area (mm2) and polygon of every boundary sample."""
        n, dx, h = self.n, self.dx, self.h
        s_row, s_lo, s_hi, s_mask = strips
        seg, sub = np.nonzero((s_mask[:, None] >> np.arange(n)) & 1)
        owner, rank = _expand((s_hi - s_lo)[seg])
        seg, sub = seg[owner], sub[owner]
        strip_x = self.x0 + (s_lo[seg] + rank + 0.5) * dx
        strip_y = self.y0 + ((s_row[seg] % self.ny) * n + sub + 0.5) * h
        strip_part = s_row[seg] // self.ny
        p_part, p_row, pa, pb = pieces
        w = dx / n
        ca = np.floor(_snap((pa - self.x0) / w)).astype(np.int64)
        cb = np.ceil(_snap((pb - self.x0) / w)).astype(np.int64)
        owner, rank = _expand(cb - ca)
        c = ca[owner] + rank
        lo = np.maximum(pa[owner], self.x0 + c * w)
        hi = np.minimum(pb[owner], self.x0 + (c + 1) * w)
        return (
            np.concatenate((strip_x, (lo + hi) / 2)),
            np.concatenate((strip_y, self.y0 + (p_row[owner] + 0.5) * h)),
            np.concatenate((np.full(strip_x.size, dx * h), (hi - lo) * h)),
            np.concatenate((strip_part, p_part[owner])),
        )

    # -- z ------------------------------------------------------------------------------------
    def _slab_planes(self, z_lo: np.ndarray, z_hi: np.ndarray) -> tuple[np.ndarray, ...]:
        """(slab, plane, z-overlap, z-centre) for every dose plane each slab overlaps, by slab."""
        ze = self.grid.z_edges_mm
        first = np.clip(np.searchsorted(ze, z_lo, side="right") - 1, 0, self.nz - 1)
        last = np.clip(np.searchsorted(ze, z_hi, side="left") - 1, 0, self.nz - 1)
        slab, rank = _expand(np.maximum(last - first + 1, 0))
        k = first[slab] + rank
        lo = np.maximum(z_lo[slab], ze[k])
        hi = np.minimum(z_hi[slab], ze[k + 1])
        keep = hi > lo
        return slab[keep], k[keep], (hi - lo)[keep], ((hi + lo) / 2)[keep]

    def _per_slab(self, item_slab: np.ndarray, pairs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Every (item, slab-plane pair) combination of items belonging to slabs."""
        pair_slab = pairs[0]
        count = np.bincount(pair_slab, minlength=item_slab.max(initial=-1) + 1)
        first = np.cumsum(count) - count
        item, rank = _expand(count[item_slab])
        return item, first[item_slab[item]] + rank

    def _interior_samples(
        self, interior: tuple[np.ndarray, ...], pairs: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, ...]:
        """The samples of voxels touched by interior runs: runs of all slabs are merged per
        (plane, row) by a sweep that sums their z-overlaps and z-moments. A voxel the slabs
        fill in z is one sample at its centre; one they fill partly, one sample at the
        centroid of the pieces; in a small structure, every such voxel is split into s x s x s
        sub-voxels (INTERIOR_SAMPLE_BUDGET)."""
        slab, vrow, lo, hi = interior
        run, pair = self._per_slab(slab, pairs)
        k, t, zc = pairs[1][pair], pairs[2][pair], pairs[3][pair]
        dz = zc - self.grid.z_mm[k]
        key = np.concatenate((k * self.ny + vrow[run],) * 2)
        pos = np.concatenate((lo[run], hi[run]))
        thick = np.concatenate((t, -t))
        moment = np.concatenate((t * dz, -t * dz))
        order = np.lexsort((pos, key))
        key, pos = key[order], pos[order]
        thick, moment = np.cumsum(thick[order])[:-1], np.cumsum(moment[order])[:-1]
        seg = (key[:-1] == key[1:]) & (pos[1:] > pos[:-1]) & (thick > 1e-9)
        key, lo, hi, thick, moment = key[:-1][seg], pos[:-1][seg], pos[1:][seg], thick[seg], moment[seg]
        k, j = key // self.ny, key % self.ny
        seg, rank = _expand(hi - lo)
        voxel = ((k * self.ny + j) * self.nx + lo)[seg] + rank
        weight = (thick * self.dx * self.dy)[seg]
        dzc = (moment / thick)[seg]  # centroid of the slab pieces, from the voxel centre
        s = int(np.clip(np.floor(np.cbrt(INTERIOR_SAMPLE_BUDGET / max(voxel.size, 1))), 1, MAX_REFINEMENT))
        if s == 1:
            off = np.abs(dzc) > 1e-6
            offset = np.zeros((3, int(off.sum())), dtype=np.float32)
            offset[2] = dzc[off]
            return voxel[~off], weight[~off], voxel[off], offset, weight[off]
        u = (np.arange(s) + 0.5) / s - 0.5
        ux, uy, uz = (g.reshape(-1) for g in np.meshgrid(u, u, u, indexing="ij"))
        offset = np.stack(
            (
                np.broadcast_to(ux * self.dx, (voxel.size, ux.size)),
                np.broadcast_to(uy * self.dy, (voxel.size, ux.size)),
                dzc[:, None] + thick[seg][:, None] * uz,  # sub-voxels of the covered z-range
            )
        ).reshape(3, -1)
        empty = np.empty(0, np.int64)
        return empty, np.empty(0), np.repeat(voxel, s**3), offset.astype(np.float32), np.repeat(weight / s**3, s**3)

    def _boundary_in_planes(
        self, x: np.ndarray, y: np.ndarray, area: np.ndarray, slab: np.ndarray, pairs: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, ...]:
        """Each boundary sample on each dose plane its slab overlaps: the voxel it lies in, its
        offset from the voxel's centre (z: the centre of the slab's piece), its volume."""
        sample, pair = self._per_slab(slab, pairs)
        x, y, k = x[sample], y[sample], pairs[1][pair]
        i = np.clip(np.rint((x - self.grid.x_mm[0]) / self.dx).astype(np.int64), 0, self.nx - 1)
        j = np.clip(np.rint((y - self.grid.y_mm[0]) / self.dy).astype(np.int64), 0, self.ny - 1)
        offset = np.stack((x - self.grid.x_mm[i], y - self.grid.y_mm[j], pairs[3][pair] - self.grid.z_mm[k]))
        return (k * self.ny + j) * self.nx + i, offset.astype(np.float32), area[sample] * pairs[2][pair]


def point_doses_gy(grid: DoseGrid, roi: Roi) -> np.ndarray:
    """Trilinear dose (Gy) at each point of a POINT ROI; DoseError if one is off the grid."""
    if not roi.is_point:
        raise DoseError(None, f"ROI '{roi.name}'", "is not a POINT ROI")
    points = np.vstack([c.points for c in roi.contours])
    dose = grid.sample(points)
    if np.isnan(dose).any():
        raise DoseError(None, f"ROI '{roi.name}'", f"a point lies outside the dose grid ({grid.note})")
    return dose
