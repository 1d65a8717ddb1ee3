"""The surface of a structure between its contour planes: shape-based interpolation.

A structure set holds a structure as planar sections, one per contour plane. Between two
planes nothing was drawn; rtcheck fills that space the way the shape-based interpolation
of Raya & Udupa (1990) and Herman, Zheng & Bucholtz (1992) does: the in-plane *signed
distance* of each section (negative inside, positive outside) is blended along z, and the
structure at height ``z`` is where the blended distance is <= 0. Branching (one contour on
a plane, two on the next), holes and islands need no special case, because the distance
maps of whole sections are blended, never matched contour to contour.

A linear blend of two concentric circles moves the radius linearly (a frustum), which
cuts 0.35 mm off an 8 mm sphere between 3 mm planes. So the blend is offset so that each
section's area follows a smooth curve through the planes' areas: a cubic Hermite curve
with the slopes of the quadratic through three neighbouring planes, kept between the two
planes' areas unless the slopes say the area has an extremum between them (the equator of
a sphere whose centre lies between two planes). That is exact for any solid whose area is
quadratic in z (spheres, ellipsoids, cones) and close for the rest. Where a plane holds
several parts, their summed area says nothing about each, and the blend stays linear; a
part that meets nothing on the neighbouring plane (a lesion starting or ending between
planes) keeps its section up to the middle of the interval, the classic half spacing.
So does a hole that meets no hole on the neighbouring plane (a valley drawn around a peak,
at the peak's pole): blended with the distance to an outline far away, it would close
early and the valley would take in the peak's steep dose. Where a hole starts or ends,
the area jumps, so the intervals around it keep the linear blend.

End caps
--------
Beyond the last plane of a block (a block ends at the ROI's ends and at gaps wider than
1.5 spacings) nothing was drawn, but the structure does not stop at the plane either. The
squared inradius of a sphere's, an ellipsoid's, a cone's or a lying cylinder's sections is
quadratic in z, so the quadratic through the last three planes (with two planes, one that
bends as a sphere's does) says where the structure ends. The cap then continues the
outline's own movement from the previous plane, each point at its own speed (a lying
cylinder's flat ends stay, its sides close in), timed so that the inradius follows that
quadratic to zero. A cap that would end more than one spacing beyond the plane is cut off
(the next plane would otherwise have shown the structure), and where the sections do not
shrink (a cylinder's flat end) the cap is the classic half spacing of the last section:
with no trend to go by, the middle of the unknown interval is the least wrong guess.

Output
------
:class:`InterpolatedSurface` samples the surface as thin slabs, two ways from the same
distances and caps. :meth:`~InterpolatedSurface.fine` cuts each interval between planes
into as many sub-slabs as keep the in-plane step between successive sections below
``MAX_STEP_MM`` (no cut where two sections are the same shape, e.g. a cylinder along z),
each sub-slab holding the interpolated section at its middle (midpoint rule): distances,
margins and the inside test, which a 10 mm threshold makes sensitive to tenths of a
millimetre, use these. :meth:`~InterpolatedSurface.bulk` serves the measures of the
structure's volume (volume, DVH, overlaps, booleans): there a step relative to the
structure's size, ``BULK_RELATIVE_STEP`` of its equivalent radius (never finer than
``MAX_STEP_MM``), is enough, and an interval whose outline moves less than that step keeps
its two sections for half the interval each (the trapezoidal rule of the area, whose
error on a lung or a heart is far below a contouring error; a structure under ten plane
spacings in radius is always interpolated). Small targets, whose equivalent radius is
under 6 mm, get the same slabs both ways. Holes and extra parts that hold under
``MINOR_FEATURES`` of a block's area (vessels left out of a lung) are interpolated like the
rest, but the bulk sampling follows the largest part's outline, not them: a hole that
appears far from the outline would otherwise call for the finest sub-slabs all around.

Libraries
---------
The sections at intermediate heights are the filled iso-contours of the blended distance
sampled on a grid (``GRID_NODES`` along a block's longer side and at least ten nodes
across its typical smallest part or hole, exact distances at the nodes, so marching
squares places the outline to hundredths of a millimetre on smooth shapes): contourpy, the
marching-squares engine matplotlib already depends on, traces them with their holes. The
distances at the nodes are exact distances to the outline's segments, computed with numpy
for the nodes within reach of each segment (a window around it on the regular grid, so no
search structure is needed); shapely gives inside/outside, areas, inradii and the clipping
of what is traced.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from contourpy import FillType, LineType, SerialContourGenerator, ZInterp

from rtcheck.lazy import lazy

#: Largest in-plane move of the outline between two successive sub-slabs (mm).
MAX_STEP_MM = 0.3
#: The bulk sampling's step, as a fraction of the block's equivalent radius (never finer
#: than MAX_STEP_MM): 5 % puts a lung's outline (radius ~65 mm) within 1.7 mm of the
#: surface and a 35 mm GTV's within 0.45 mm; benchmarks/geometry_accuracy.py shows the
#: volumes and DVHs of analytic solids as close to the truth as with the fine slabs.
BULK_RELATIVE_STEP = 0.05
#: The bulk sampling keeps the two planes' sections (the trapezoidal rule of the area) only
#: for structures whose equivalent radius is this many plane spacings or more: the rule's
#: error on a sphere, h**2 / (6 r**2) of an interval's volume, is then under 0.2 %.
HALVES_RADIUS_SPACINGS = 10.0
#: Holes and extra parts that hold under this fraction of a block's area (summed over its
#: planes) do not set its bulk sampling: even kept for only half of each interval they end
#: in, they would move the structure's volume by at most half of it.
MINOR_FEATURES = 0.01
#: Thinnest sub-slab between two planes (mm).
MIN_SUBSLAB_MM = 0.2
#: Thickest sub-slab of a dome cap (mm); caps are cut into at most MAX_CAP_SLABS.
CAP_STEP_MM = 0.25
MAX_CAP_SLABS = 12
#: Grid nodes along the longer side of a block's sections (at least MIN_GRID_MM apart).
GRID_NODES = 24
MIN_GRID_MM = 0.05
#: Two sections whose outlines are closer than this (Hausdorff) are the same shape.
SAME_SHAPE_MM = 0.02
#: Segments per quarter circle of the caps' erosions.
_QUAD_SEGS = 16

#: Where an interval's area curve is sampled for its largest departure from the planes'.
_CURVE_SAMPLES = np.linspace(0.0, 1.0, 17)

Slab = tuple[float, float, float, shapely.Geometry]  # z, z_min, z_max, shape


class InterpolatedSurface:
    """The surface through sections ``shapes`` on sorted planes ``plane_z``, sampled as slabs.

    Empty shapes keep their plane's place: a block of planes ends before them, as it ends
    at a gap wider than ``gap_factor`` spacings. ``spacing_mm`` (the ROI's typical spacing)
    sets the caps' reach. Both samplings share the blocks' distances and caps, so asking
    for the second costs only the sections it adds.
    """

    def __init__(self, plane_z: np.ndarray, shapes: np.ndarray, spacing_mm: float, gap_factor: float = 1.5) -> None:
        plane_z = np.asarray(plane_z, dtype=np.float64)
        nonempty = ~shapely.is_empty(shapes)
        breaks = np.r_[True, (np.diff(plane_z) > gap_factor * spacing_mm) | ~nonempty[1:] | ~nonempty[:-1]]
        starts = np.flatnonzero(breaks)
        self._blocks = []
        for a, b in zip(starts, np.r_[starts[1:], len(plane_z)], strict=True):
            keep = nonempty[a:b]
            if keep.any():
                self._blocks.append(_Block(plane_z[a:b][keep], shapes[a:b][keep], spacing_mm))

    def fine(self) -> list[Slab]:
        """Slabs whose outline moves by at most ``MAX_STEP_MM`` from one to the next."""
        return [slab for block in self._blocks for slab in block.slabs(bulk=False)]

    def bulk(self) -> list[Slab]:
        """Slabs for measures of the volume: a step relative to the structure's size."""
        return [slab for block in self._blocks for slab in block.slabs(bulk=True)]


def gaps_between_blocks(plane_z: np.ndarray, spacing_mm: float, gap_factor: float = 1.5) -> list[tuple[float, float]]:
    """The pairs of successive planes further apart than ``gap_factor`` spacings (z in mm)."""
    z = np.asarray(plane_z, dtype=np.float64)
    wide = np.flatnonzero(np.diff(z) > gap_factor * spacing_mm)
    return [(float(z[i]), float(z[i + 1])) for i in wide]


def _outline_distances(shape: shapely.Geometry, xs: np.ndarray, ys: np.ndarray, reach: float) -> np.ndarray:
    """Exact distances (mm) from the nodes of the grid ``xs`` x ``ys`` to the outline of
    ``shape``, cut at ``reach``.

    Each segment of the outline is compared with the nodes of the window within ``reach``
    of it, and a node takes the smallest distance any segment gives it; where the windows
    would hold more than a quarter of the pairs of the whole grid and the segments (a reach
    of many nodes; gathering a window's pairs costs about three times comparing them),
    every node is compared with every segment instead.
    """
    ny, nx = len(ys), len(xs)
    lines = shapely.get_parts(shapely.boundary(shape))
    xy, ring = shapely.get_coordinates(lines, return_index=True)
    same = ring[:-1] == ring[1:]
    p0, p1 = xy[:-1][same], xy[1:][same]
    d = p1 - p0
    length2 = np.maximum((d * d).sum(axis=1), 1e-24)
    step = xs[1] - xs[0] if nx > 1 else 1.0
    lo, hi = np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach
    c0 = np.clip(np.ceil((lo[:, 0] - xs[0]) / step), 0, nx).astype(np.int64)
    c1 = np.clip(np.floor((hi[:, 0] - xs[0]) / step) + 1, 0, nx).astype(np.int64)
    r0 = np.clip(np.ceil((lo[:, 1] - ys[0]) / step), 0, ny).astype(np.int64)
    r1 = np.clip(np.floor((hi[:, 1] - ys[0]) / step) + 1, 0, ny).astype(np.int64)
    ncol, nrow = np.maximum(c1 - c0, 0), np.maximum(r1 - r0, 0)
    counts = ncol * nrow
    if 4 * counts.sum() > len(p0) * ny * nx:  # dense: every node against every segment
        return np.minimum(_dense_distances(xs, ys, p0, d, length2), reach)
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    col = c0[owner] + rank % ncol[owner]
    row = r0[owner] + rank // ncol[owner]
    px, py = xs[col] - p0[owner, 0], ys[row] - p0[owner, 1]
    dx, dy = d[owner, 0], d[owner, 1]
    t = np.clip((px * dx + py * dy) / length2[owner], 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    out = np.full(ny * nx, reach * reach)
    np.minimum.at(out, row * nx + col, ex * ex + ey * ey)
    return np.sqrt(out).reshape(ny, nx)


def _dense_distances(xs: np.ndarray, ys: np.ndarray, p0: np.ndarray, d: np.ndarray, length2: np.ndarray) -> np.ndarray:
    """Distances from every node of the grid ``xs`` x ``ys`` to the nearest of the segments
    from ``p0`` along ``d`` (squared lengths ``length2``).

    The (nodes x segments) arrays are in single precision, on coordinates taken from the
    grid's corner (at most a few hundred millimetres, so 1e-4 mm): half the memory traffic
    of double precision, which is what the comparison costs.
    """
    gx, gy = (xs - xs[0]).astype(np.float32), (ys - ys[0]).astype(np.float32)
    x0, y0 = (p0[:, 0] - xs[0]).astype(np.float32), (p0[:, 1] - ys[0]).astype(np.float32)
    dx, dy = d[:, 0].astype(np.float32), d[:, 1].astype(np.float32)
    inverse = (1.0 / length2).astype(np.float32)
    px = np.broadcast_to(gx, (len(ys), len(xs))).reshape(-1, 1) - x0
    py = np.broadcast_to(gy[:, None], (len(ys), len(xs))).reshape(-1, 1) - y0
    t = px * dx
    t += py * dy
    t *= inverse
    np.clip(t, 0.0, 1.0, out=t)
    ex, ey = px - t * dx, py - t * dy
    ex *= ex
    ey *= ey
    ex += ey
    return np.sqrt(ex.min(axis=1, initial=np.inf).astype(np.float64)).reshape(len(ys), len(xs))


class _Block:
    """Contiguous planes of one ROI (no gap): sub-slabs between them and the two caps."""

    def __init__(self, z: np.ndarray, shapes: np.ndarray, spacing: float) -> None:
        self.z, self.shapes, self.spacing = z, shapes, spacing
        self.areas = shapely.area(shapes)
        self.perimeters = shapely.length(shapes)
        self.single = shapely.get_type_id(shapes) == shapely.GeometryType.POLYGON
        self.plain = self.single & (shapely.get_num_interior_rings(shapes) == 0)  # no hole, one part
        x0, y0, x1, y1 = shapely.total_bounds(shapes)
        parts, plane = shapely.get_parts(shapes, return_index=True)
        smallest_part = np.full(len(shapes), np.inf)
        np.minimum.at(smallest_part, plane, shapely.area(parts))
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        ring_area = shapely.area(shapely.polygons(rings))
        ring_plane = plane[ring_part]
        smallest_ring = np.full(len(shapes), np.inf)
        np.minimum.at(smallest_ring, ring_plane, ring_area)
        # Holes and extra parts that hold so little of the structure (vessels left out of
        # a lung) that sampling them coarsely cannot matter are negligible: the largest
        # part then sets the bulk step below, and the sections count as plain (the largest
        # part's outline, not its distance to a hole that appears, decides the sub-slabs).
        exterior = np.r_[True, ring_part[1:] != ring_part[:-1]]  # each part's first ring
        largest = np.zeros(len(shapes))
        np.maximum.at(largest, ring_plane[exterior], ring_area[exterior])
        enclosed = float(ring_area[exterior].sum())
        minor = float(ring_area[~exterior].sum()) + enclosed - float(largest.sum())
        self.negligible = minor < MINOR_FEATURES * enclosed
        # GRID_NODES along the sections' longer side, and at least ten across the typical
        # smallest part (a small lesion drawn in one ROI with a large one) or, unless
        # negligible, hole (a valley's hole around a peak): marching squares on a coarser
        # grid cuts the corners of a hole's distances and shrinks it by step^2 / (8 r)
        feature = math.sqrt(median(smallest_part if self.negligible else smallest_ring))
        self.step = max(min(max(x1 - x0, y1 - y0) / GRID_NODES, feature / 10), MIN_GRID_MM)
        pad = 1.5 * self.step
        self.xs = np.arange(x0 - pad, x1 + pad + self.step, self.step)
        self.ys = np.arange(y0 - pad, y1 + pad + self.step, self.step)
        self.x, self.y = np.meshgrid(self.xs, self.ys)
        self.pad = pad
        # how far the outline moves from each plane to the next: the largest move of a
        # side of the bounding box or of the equivalent radius (cheap, and zero only for
        # the same shape)
        bounds = shapely.bounds(shapes).reshape(-1, 4)
        radius = np.sqrt(self.areas / np.pi)
        self.moves = np.maximum(np.abs(np.diff(bounds, axis=0)).max(axis=1, initial=0.0), np.abs(np.diff(radius)))
        # the bulk step follows the smallest feature: the equivalent radius of the typical
        # smallest ring, a hole (a valley's peaks) or a part (one of several lesions)
        self.radius = math.sqrt(median(largest if self.negligible else smallest_ring) / math.pi)
        self.bulk_step = max(MAX_STEP_MM, BULK_RELATIVE_STEP * self.radius)
        self.outline_plain = self.plain | self.negligible
        self._holes = shapely.polygons(rings[~exterior])
        self._hole_plane = ring_plane[~exterior]
        self._lone_hole: dict[tuple[int, int], np.ndarray] = {}
        self._lone_part: dict[tuple[int, int], np.ndarray] = {}
        self._near: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._inside: dict[int, np.ndarray] = {}
        self._signed: dict[int, tuple[float, np.ndarray]] = {}
        self._inradii: dict[int, float] = {}
        self._slope_at: dict[int, float] = {}
        self._sections: dict[tuple[int, float], shapely.Geometry] = {}

    def slabs(self, bulk: bool) -> list[Slab]:
        n = len(self.z)
        if n == 1:
            z = float(self.z[0])
            return [(z, z - self.spacing / 2, z + self.spacing / 2, self.shapes[0])]
        below, above = self._caps
        out = list(below)
        for i in range(n - 1):
            out += self._interval(i, self.bulk_step if bulk else MAX_STEP_MM, halves=bulk)
        out += above
        return _merge_halves(out) if bulk else out

    @lazy
    def _caps(self) -> tuple[list[Slab], list[Slab]]:
        """The caps below and above the block (the same for both samplings: a cap is where
        small errors in z matter most, for the volume of a small structure as for a margin)."""
        return self._cap(0, -1)[::-1], self._cap(len(self.z) - 1, +1)

    # -- the sections' fields -----------------------------------------------------------------
    def inside(self, j: int) -> np.ndarray:
        """Which grid nodes lie inside section j."""
        if j not in self._inside:
            shapely.prepare(self.shapes[j])
            self._inside[j] = shapely.contains_xy(self.shapes[j], self.x, self.y)
        return self._inside[j]

    def signed(self, j: int, reach: float) -> np.ndarray:
        """The signed distance of section j at the grid nodes (negative inside), cut at
        ``reach`` or farther (a field computed for a longer reach serves a shorter one)."""
        have = self._signed.get(j)
        if have is None or have[0] < reach:
            d = _outline_distances(self.shapes[j], self.xs, self.ys, reach)
            have = (reach, np.where(self.inside(j), -d, d))
            self._signed[j] = have
        return have[1]

    # -- between two planes ----------------------------------------------------------------
    def _interval(self, i: int, max_step: float, halves: bool) -> list[Slab]:
        z0, z1 = float(self.z[i]), float(self.z[i + 1])
        h = z1 - z0
        moves = self.moves
        flat_around = all(moves[j] < SAME_SHAPE_MM for j in (i - 1, i, i + 1) if 0 <= j < len(moves))
        if flat_around:  # a wall along z: the section holds all the way
            return [(0.5 * (z0 + z1), z0, z1, self.shapes[i])]
        move = moves[i]
        if halves and (move < max_step or not self.outline_plain[i : i + 2].all()):
            move = max(move, self._outline_move(i))
            if move < max_step and self.radius >= HALVES_RADIUS_SPACINGS * h:
                # each section for its half of the interval
                mid = 0.5 * (z0 + z1)
                return [(0.5 * (z0 + mid), z0, mid, self.shapes[i]), (0.5 * (mid + z1), mid, z1, self.shapes[i + 1])]
        k = int(np.clip(math.ceil(move / max_step), 1, max(1, math.floor(h / MIN_SUBSLAB_MM))))
        if self._holes_change(i):
            k += k % 2  # a hole that starts or ends does so in the middle: a sub-slab's edge
        t = (np.arange(k) + 0.5) / k
        sections = self._sections_between(i, t)
        return [
            (z0 + t[j] * h, z0 + j * h / k, z0 + (j + 1) * h / k, shape)
            for j, shape in enumerate(sections)
            if not shape.is_empty
        ]

    def _outline_move(self, i: int) -> float:
        """How far the outline moves from plane i to i + 1 (Hausdorff distance of the two
        outlines): the bounding boxes and areas that set ``moves`` do not see a hole or a
        small part that grows, shrinks or appears inside the section. Where holes and extra
        parts are negligible (``MINOR_FEATURES``), the outline is the largest part's."""
        if self.negligible:
            a, b = (_largest_exterior(shape) for shape in self.shapes[i : i + 2])
        else:
            a, b = shapely.boundary(self.shapes[i : i + 2])
        return float(shapely.hausdorff_distance(a, b))

    def _sections_between(self, i: int, t: np.ndarray) -> list[shapely.Geometry]:
        """The interpolated sections at fractions ``t`` of the interval from plane i to i + 1."""
        todo = [float(tj) for tj in t if (i, float(tj)) not in self._sections]
        if todo:
            for tj, shape in zip(todo, self._trace_between(i, np.array(todo)), strict=True):
                self._sections[(i, tj)] = shape
        return [self._sections[(i, float(tj))] for tj in t]

    def _trace_between(self, i: int, t: np.ndarray) -> list[shapely.Geometry]:
        target = self._area_curve(i, t)
        # an offset of the outline moves the area by about perimeter x offset: bounded by the
        # change of equivalent radius along the interval's area curve, it sets how far beyond
        # the outlines the fields matter (from the whole curve, so that a section does not
        # depend on which others are traced with it)
        radius = np.sqrt(self.areas[i : i + 2] / np.pi)
        curve = self._area_curve(i, _CURVE_SAMPLES)
        extra = float(np.abs(np.sqrt(curve / np.pi) - radius.min()).max()) if curve is not None else 0.0
        reach = 2 * self.moves[i] + extra + self.pad + self.step
        v1, v2 = self.signed(i, reach), self.signed(i + 1, reach)
        if self._lone_change(i):  # a lone part or hole: its own plane's distances, mirrored
            (part, hole), (part_up, hole_up) = self._near_lone(i, i + 1), self._near_lone(i + 1, i)
            v2 = np.where(part, np.abs(v1), np.where(hole, -np.abs(v1), v2))
            v1 = np.where(part_up, np.abs(v2), np.where(hole_up, -np.abs(v2), v1))
        simple = self.single[i] and self.single[i + 1] and shapely.intersects(self.shapes[i], self.shapes[i + 1])
        limit = None
        if not simple:
            # Marching squares cannot resolve a neck finer than the grid (two parts touching
            # at a point): what is traced is kept within the two sections, or within reach
            # of their union where the area's curve makes the surface bulge beyond both.
            either = shapely.union(self.shapes[i], self.shapes[i + 1])
            limit = shapely.buffer(either, extra, quad_segs=_QUAD_SEGS) if extra > 0 else either
            shapely.prepare(limit)
        grids = (1 - t)[:, None, None] * v1 + t[:, None, None] * v2  # one blend per section
        if target is not None:
            # the distances' blend, offset so that its area follows the areas' curve
            area, perimeter = self._area_perimeter(grids)
            ok = (area > 0) & (perimeter > 0)
            root = np.sqrt(area)
            offset = np.divide(2 * root * (np.sqrt(target) - root), perimeter, out=np.zeros_like(area), where=ok)
            grids -= np.clip(offset, -extra, extra)[:, None, None]
        out = []
        for grid in grids:
            shape = self._trace(grid)
            if limit is not None and not shapely.contains(limit, shape):
                shape = polygonal(shapely.intersection(shape, limit))
            out.append(shape)
        return out

    def _area_perimeter(self, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Area and perimeter of the regions grid <= 0 of a stack of grids, from the
        distances at the nodes: each node counts as inside by a ramp one node wide across
        the outline (exact for a straight outline), and the nodes within one step of it
        measure its length."""
        ramp = np.clip(0.5 - grids / self.step, 0.0, 1.0)
        tent = np.clip(1.0 - np.abs(grids) / self.step, 0.0, None)
        return ramp.sum(axis=(1, 2)) * self.step**2, tent.sum(axis=(1, 2)) * self.step

    def _lone_holes(self, i: int, j: int) -> np.ndarray:
        """The holes of section i (as polygons) that meet no hole of section j."""
        if (i, j) not in self._lone_hole:
            mine, theirs = self._holes[self._hole_plane == i], self._holes[self._hole_plane == j]
            if len(mine) and len(theirs):
                mine = mine[~shapely.intersects(mine[:, None], theirs[None, :]).any(axis=1)]
            self._lone_hole[(i, j)] = mine
        return self._lone_hole[(i, j)]

    def _lone_parts(self, i: int, j: int) -> np.ndarray:
        """The parts of section i that meet nothing on plane j."""
        if (i, j) not in self._lone_part:
            parts = shapely.get_parts(self.shapes[i])
            self._lone_part[(i, j)] = parts[~shapely.intersects(parts, self.shapes[j])]
        return self._lone_part[(i, j)]

    def _holes_change(self, i: int) -> bool:
        """Whether a hole starts or ends between planes i and i + 1."""
        return bool(len(self._lone_holes(i, i + 1)) or len(self._lone_holes(i + 1, i)))

    def _lone_change(self, i: int) -> bool:
        """Whether a part or a hole starts or ends between planes i and i + 1."""
        return bool(len(self._lone_parts(i, i + 1)) or len(self._lone_parts(i + 1, i)) or self._holes_change(i))

    def _near_lone(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Which grid nodes lie at a part of section i that meets nothing on plane j (a
        lesion ending, or starting, between the two planes), and which at a hole of
        section i that meets no hole there, where plane j is solid.

        Plane j's distance there is that of an unrelated outline. Blended with it, a hole
        would close early, at a fraction of the interval set by how far that outline is:
        near a valley's peak, the hole drawn around it would lose its end and the valley
        would take in the peak's steep dose. Both are instead given the classic half
        spacing: plane j's distance there is taken as section i's mirrored (a part's
        distances inside it made positive, a hole's made negative), so that the blend
        fades to zero at the middle of the interval. Up to there the grid's nodes keep
        their side, and the outline between them draws in by less than a grid cell.
        """
        if (i, j) not in self._near:
            masks = []
            for alone, where in (
                (self._lone_parts(i, j), ~self.inside(j)),
                (self._lone_holes(i, j), self.inside(j)),
            ):
                if len(alone) == 0:
                    masks.append(np.zeros(self.x.shape, dtype=bool))
                    continue
                region = shapely.buffer(shapely.union_all(alone), 2 * self.step)
                shapely.prepare(region)
                masks.append(shapely.contains_xy(region, self.x, self.y) & where)
            self._near[(i, j)] = (masks[0], masks[1])
        return self._near[(i, j)]

    def _area_curve(self, i: int, t: np.ndarray) -> np.ndarray | None:
        """The sections' areas at fractions ``t`` of interval i along a smooth curve, or
        None where a plane holds several parts (their summed area says nothing about each)
        or a hole starts or ends within an interval whose areas set the curve.

        Linear interpolation of two concentric circles' distances moves the radius linearly
        (a frustum) where a sphere's area is quadratic in z. The areas are interpolated by
        a cubic Hermite curve with the slopes of the quadratic through three planes (at the
        block's ends, the areas' trend), kept between the two planes' areas unless the
        slopes say the area has an extremum between them.
        """
        if not self.single[max(i - 1, 0) : i + 3].all():
            return None
        if any(self._holes_change(k) for k in range(max(i - 1, 0), min(i + 2, len(self.z) - 1))):
            return None  # the area jumps where a hole starts or ends: no smooth curve through it
        h = self.z[i + 1] - self.z[i]
        slope = self._slopes(i)
        a1, a2 = self.areas[i], self.areas[i + 1]
        curve = (2 * t**3 - 3 * t**2 + 1) * a1 + (t**3 - 2 * t**2 + t) * h * slope[0]
        curve += (-2 * t**3 + 3 * t**2) * a2 + (t**3 - t**2) * h * slope[1]
        bulge = h * abs(slope[0] - slope[1]) / 8 if slope[0] * slope[1] < 0 else 0.0
        return np.clip(curve, max(min(a1, a2) - bulge, 0.0), max(a1, a2) + bulge)

    def _slopes(self, i: int) -> tuple[float, float]:
        """dA/dz at planes i and i + 1 (each interval asks twice: for its sections and for
        the bound of their offsets)."""
        for j in (i, i + 1):
            if j not in self._slope_at:
                self._slope_at[j] = self._area_slope(j)
        return self._slope_at[i], self._slope_at[i + 1]

    def _area_slope(self, j: int) -> float:
        """dA/dz (mm² per mm) at plane j."""
        z, a, n = self.z, self.areas, len(self.z)
        if 0 < j < n - 1:
            ha, hb = z[j] - z[j - 1], z[j + 1] - z[j]
            sa, sb = (a[j] - a[j - 1]) / ha, (a[j + 1] - a[j]) / hb
            return float((sa * hb + sb * ha) / (ha + hb))
        direction = 1 if j == n - 1 else -1
        trend = self._inradius_trend(j, direction)
        if trend is None:
            return 0.0
        inradius = self.inradius(j)
        if inradius <= 0:
            return 0.0
        # dA = f x perimeter x d(inradius): f = 1 where the whole outline moves with the
        # inradius (a circle), less where part of it stays (the ends of a lying cylinder),
        # as the last two planes show
        k = j - direction
        moved = inradius - self.inradius(k)
        mean_perimeter = (self.perimeters[j] + self.perimeters[k]) / 2
        f = (self.areas[j] - self.areas[k]) / (mean_perimeter * moved) if abs(moved) > 1e-3 else 1.0
        return float(direction * np.clip(f, 0.0, 2.0) * self.perimeters[j] * trend[1] / (2 * inradius))

    def inradius(self, j: int) -> float:
        if j not in self._inradii:
            circle = shapely.maximum_inscribed_circle(self.shapes[j], 0.01 * self.spacing)
            self._inradii[j] = float(shapely.length(circle))
        return self._inradii[j]

    def _trace(self, grid: np.ndarray) -> shapely.Geometry:
        """The region grid <= 0 as (multi)polygons with holes."""
        if grid.min() > 0:
            return shapely.Polygon()
        # the generator class itself: contour_generator() would first look for masked or
        # invalid values, which a grid of exact distances never has (and which costs more
        # than the tracing on grids this small)
        gen = SerialContourGenerator(
            self.x,
            self.y,
            np.ascontiguousarray(grid, dtype=np.float64),
            np.zeros(grid.shape, dtype=bool),  # nothing masked
            corner_mask=False,
            line_type=LineType.Separate,
            fill_type=FillType.OuterOffset,
            quad_as_tri=False,
            z_interp=ZInterp.Linear,
        )
        filled = gen.filled(float(grid.min()) - 1.0, 0.0)
        polys = []
        for pts, offs in zip(filled[0], filled[1], strict=True):  # OuterOffset: points, offsets
            xy, cut = np.asarray(pts), np.asarray(offs)
            rings = [xy[cut[k] : cut[k + 1]] for k in range(len(cut) - 1)]
            polys.append(shapely.Polygon(rings[0], rings[1:]))
        shape = shapely.union_all(polys) if len(polys) > 1 else polys[0]
        return shape if shape.is_valid else shapely.make_valid(shape)

    # -- beyond the last plane --------------------------------------------------------------
    def _cap(self, i: int, direction: int) -> list[Slab]:
        """The slabs beyond plane ``i`` going ``direction`` (+1 up, -1 down), outward first.

        The outline keeps moving as it moved from the previous plane (each point at its own
        speed: the ends of a lying cylinder stay, its sides close in), timed so that the
        inradius follows its quadratic trend to zero.
        """
        z0 = float(self.z[i])
        section = self.shapes[i]
        h = self.spacing
        trend = self._inradius_trend(i, direction)
        end = _first_zero(trend, 4 * h) if trend is not None else None
        if trend is None or end is None:  # no shrinking trend: the classic half spacing
            return [_slab_between(z0, z0 + direction * h / 2, section)]
        height = end if end <= h else h / 2 + h * h / (2 * end)
        inradius = self.inradius(i)
        closed_in = inradius - self.inradius(i - direction)  # how far the inradius moved in
        n = int(np.clip(math.ceil(height / CAP_STEP_MM), 1, MAX_CAP_SLABS))
        # distances as deep as the inradius
        deep = inradius + 2 * self.pad
        here = self.signed(i, deep)
        before = self.signed(i - direction, deep)
        speed = here - before  # per plane step
        shapely.prepare(section)
        tau = (np.arange(n) + 0.5) * height / n
        rho = inradius - np.sqrt(np.maximum(np.polyval(trend, tau), 0.0))
        if closed_in < -1e-6:
            grids = here - speed * (rho / closed_in)[:, None, None]
        else:
            grids = here + rho[:, None, None]
        out = []
        for j, grid in enumerate(grids):
            shape = self._trace(grid)
            if not shapely.contains(section, shape):
                shape = polygonal(shapely.intersection(shape, section))
            if shape.is_empty:
                break
            out.append(_slab_between(z0 + direction * j * height / n, z0 + direction * (j + 1) * height / n, shape))
        return out

    def _inradius_trend(self, i: int, direction: int) -> np.ndarray | None:
        """The squared inradius (mm²) beyond plane i as a quadratic in the outward distance.

        A sphere's, an ellipsoid's, a cone's and a lying cylinder's squared inradius are all
        quadratic in z, so the quadratic through the last three planes finds where each
        ends. With two planes it bends as a sphere's does (second derivative -2), since a
        structure seen on two planes only is a small blob far more often than a slab.
        """
        idx = [i - direction * k for k in range(3) if 0 <= i - direction * k < len(self.z)]
        if len(idx) < 2:
            return None
        tau = (self.z[idx] - self.z[i]) * direction  # 0, then negative
        squared = np.array([self.inradius(j) ** 2 for j in idx])
        if len(idx) == 3:  # the quadratic through three points (Newton's divided differences)
            first = np.diff(squared) / np.diff(tau)
            a = (first[1] - first[0]) / (tau[2] - tau[0])
            b = first[0] - a * (tau[0] + tau[1])
            return np.array([a, b, squared[0] - a * tau[0] ** 2 - b * tau[0]])
        step = -tau[1]
        slope = (squared[0] - squared[1] - step * step) / step  # with Q'' = -2
        return np.array([-1.0, slope, squared[0]])


def _largest_exterior(shape: shapely.Geometry) -> shapely.Geometry:
    """The outer ring of the largest part of a (multi)polygon."""
    parts = shapely.get_parts(shape)
    return shapely.get_exterior_ring(parts[int(np.argmax(shapely.area(parts)))])


def _first_zero(quadratic: np.ndarray, limit: float) -> float | None:
    """Where a quadratic first reaches zero going outward (its minimum, when that comes
    within a few percent of zero without reaching it: a cone's apex), or None before
    ``limit``."""
    roots = np.roots(quadratic)
    real = roots[np.isreal(roots)].real if len(roots) else np.empty(0)
    ahead = real[(real > 0) & (real <= limit)]
    if len(ahead):
        return float(ahead.min())
    a, b, c = quadratic
    if a > 0 and 0 < -b / (2 * a) <= limit and np.polyval(quadratic, -b / (2 * a)) < 0.05 * c:
        return float(-b / (2 * a))
    return None


def _merge_halves(slabs: list[Slab]) -> list[Slab]:
    """Slabs with the same section that meet (the halves either side of a contour plane) as
    one, standing on that plane."""
    out = slabs[:1]
    for slab in slabs[1:]:
        _, lo, hi, shape = out[-1]
        if shape is slab[3] and abs(hi - slab[1]) < 1e-9:
            out[-1] = (slab[1], lo, slab[2], shape)
        else:
            out.append(slab)
    return out


def median(values: np.ndarray) -> float:
    """The median of a non-empty array, as ``np.median`` gives it; ``np.median`` itself
    imports ``numpy.ma`` on its first call (8 ms of every check)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=None)
    half = ordered.size // 2
    return float(ordered[half]) if ordered.size % 2 else float((ordered[half - 1] + ordered[half]) / 2)


def polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a geometry: an intersection may add the points or lines where
    shapes touch, make_valid the lines a ring collapsed to, nested in collections."""
    parts = shapely.get_parts(shapely.get_parts(geom))
    polys = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
    return shapely.union_all(polys) if len(polys) else shapely.Polygon()


def _slab_between(a: float, b: float, shape: shapely.Geometry) -> Slab:
    lo, hi = min(a, b), max(a, b)
    return (0.5 * (lo + hi), lo, hi, shape)
