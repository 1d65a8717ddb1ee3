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
:func:`interpolated_slabs` returns thin slabs: each interval between planes is cut into
as many sub-slabs as keep the in-plane step between successive sections below
``MAX_STEP_MM`` (no cut where two sections are the same shape, e.g. a cylinder along z),
each sub-slab holding the interpolated section at its middle (midpoint rule). Everything
in :mod:`rtcheck.geometry` (volumes, distances, margins, booleans, expansions, components)
and :mod:`rtcheck.dvh` works on these slabs, so all measures see the same surface.

Libraries
---------
The sections at intermediate heights are the filled iso-contours of the blended distance
sampled on a grid (``GRID_NODES`` along a block's longer side, exact distances at the
nodes, so marching squares places the outline to hundredths of a millimetre on smooth
shapes): contourpy, the marching-squares engine matplotlib already depends on, traces
them with their holes. Distances to an outline come from a SciPy k-d tree over the outline
resampled every ``OUTLINE_STEP_MM``; SciPy's binary dilation marks the grid nodes that can
matter; shapely gives inside/outside, areas, inradii and the clipping of what is traced.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import shapely
from contourpy import FillType, LineType, SerialContourGenerator, ZInterp
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

#: Largest in-plane move of the outline between two successive sub-slabs (mm).
MAX_STEP_MM = 0.3
#: Thinnest sub-slab between two planes (mm).
MIN_SUBSLAB_MM = 0.2
#: Thickest sub-slab of a dome cap (mm); caps are cut into at most MAX_CAP_SLABS.
CAP_STEP_MM = 0.25
MAX_CAP_SLABS = 12
#: Grid nodes along the longer side of a block's sections (at least MIN_GRID_MM apart).
GRID_NODES = 24
MIN_GRID_MM = 0.05
#: Outlines are resampled this finely for distances (the distance error is at most half).
OUTLINE_STEP_MM = 0.1
#: Two sections whose outlines are closer than this (Hausdorff) are the same shape.
SAME_SHAPE_MM = 0.02
#: Segments per quarter circle of the caps' erosions.
_QUAD_SEGS = 16

Slab = tuple[float, float, float, shapely.Geometry]  # z, z_min, z_max, shape


def interpolated_slabs(
    plane_z: np.ndarray, shapes: np.ndarray, spacing_mm: float, gap_factor: float = 1.5
) -> list[Slab]:
    """Thin slabs of the interpolated surface of sections ``shapes`` on sorted planes ``plane_z``.

    Empty shapes keep their plane's place: a block of planes ends before them, as it ends
    at a gap wider than ``gap_factor`` spacings. ``spacing_mm`` (the ROI's typical spacing)
    sets the caps' reach.
    """
    plane_z = np.asarray(plane_z, dtype=np.float64)
    nonempty = ~shapely.is_empty(shapes)
    breaks = np.r_[True, (np.diff(plane_z) > gap_factor * spacing_mm) | ~nonempty[1:] | ~nonempty[:-1]]
    out: list[Slab] = []
    starts = np.flatnonzero(breaks)
    for a, b in zip(starts, np.r_[starts[1:], len(plane_z)], strict=True):
        keep = nonempty[a:b]
        if keep.any():
            out += _Block(plane_z[a:b][keep], shapes[a:b][keep], spacing_mm).slabs()
    return out


def gaps_between_blocks(plane_z: np.ndarray, spacing_mm: float, gap_factor: float = 1.5) -> list[tuple[float, float]]:
    """The pairs of successive planes further apart than ``gap_factor`` spacings (z in mm)."""
    z = np.asarray(plane_z, dtype=np.float64)
    wide = np.flatnonzero(np.diff(z) > gap_factor * spacing_mm)
    return [(float(z[i]), float(z[i + 1])) for i in wide]


class _Field:
    """The in-plane signed distance of one section, evaluated lazily on the block's grid.

    A query asks for distances up to a reach; farther ones are cut to it (the nodes that
    decide where an interpolated outline lies are never far from the outlines, and a k-d
    tree of an outline answers far queries slowly). A later query with a longer reach
    computes again what was cut.
    """

    def __init__(self, shape: shapely.Geometry, xs: np.ndarray, ys: np.ndarray) -> None:
        self.shape = shape
        outline = shapely.segmentize(shapely.boundary(shape), OUTLINE_STEP_MM)
        self.tree = cKDTree(shapely.get_coordinates(outline))
        self.xs, self.ys = xs, ys
        self.values = np.full((len(ys), len(xs)), np.nan)
        self.cut = np.full((len(ys), len(xs)), np.inf)  # the reach a value was cut at
        shapely.prepare(shape)

    @cached_property
    def _inside(self) -> np.ndarray:
        x, y = np.meshgrid(self.xs, self.ys)
        return shapely.contains_xy(self.shape, x, y)

    def inside(self, rows: slice, cols: slice) -> np.ndarray:
        return self._inside[rows, cols]

    def at(self, rows: slice, cols: slice, mask: np.ndarray, reach: float) -> np.ndarray:
        """Signed distances on the window ``rows`` x ``cols`` where ``mask`` is set."""
        window, cut = self.values[rows, cols], self.cut[rows, cols]
        todo = mask & (np.isnan(window) | ((np.abs(window) >= cut) & (cut < reach)))
        if todo.any():
            r, c = np.nonzero(todo)
            x, y = self.xs[cols][c], self.ys[rows][r]
            d = np.minimum(self.tree.query(np.c_[x, y], distance_upper_bound=reach)[0], reach)
            window[r, c] = np.where(self._inside[rows, cols][r, c], -d, d)
            cut[r, c] = reach
        return window


class _Block:
    """Contiguous planes of one ROI (no gap): sub-slabs between them and the two caps."""

    def __init__(self, z: np.ndarray, shapes: np.ndarray, spacing: float) -> None:
        self.z, self.shapes, self.spacing = z, shapes, spacing
        self.areas = shapely.area(shapes)
        self.perimeters = shapely.length(shapes)
        self.single = shapely.get_type_id(shapes) == shapely.GeometryType.POLYGON
        x0, y0, x1, y1 = shapely.total_bounds(shapes)
        # GRID_NODES along the sections' longer side, and at least ten across the typical
        # smallest part (a small lesion drawn in one ROI with a large one)
        parts, plane = shapely.get_parts(shapes, return_index=True)
        smallest = np.full(len(shapes), np.inf)
        np.minimum.at(smallest, plane, shapely.area(parts))
        part_size = math.sqrt(float(np.median(smallest)))
        self.step = max(min(max(x1 - x0, y1 - y0) / GRID_NODES, part_size / 10), MIN_GRID_MM)
        pad = 1.5 * self.step
        self.xs = np.arange(x0 - pad, x1 + pad + self.step, self.step)
        self.ys = np.arange(y0 - pad, y1 + pad + self.step, self.step)
        self.pad = pad
        # how far the outline moves from each plane to the next: the largest move of a
        # side of the bounding box or of the equivalent radius (cheap, and zero only for
        # the same shape)
        bounds = shapely.bounds(shapes).reshape(-1, 4)
        radius = np.sqrt(self.areas / np.pi)
        self.moves = np.maximum(np.abs(np.diff(bounds, axis=0)).max(axis=1, initial=0.0), np.abs(np.diff(radius)))
        self._fields: dict[int, _Field] = {}
        self._inradii: dict[int, float] = {}

    def field(self, i: int) -> _Field:
        if i not in self._fields:
            self._fields[i] = _Field(self.shapes[i], self.xs, self.ys)
        return self._fields[i]

    def slabs(self) -> list[Slab]:
        n = len(self.z)
        if n == 1:
            z = float(self.z[0])
            return [(z, z - self.spacing / 2, z + self.spacing / 2, self.shapes[0])]
        out = self._cap(0, -1)[::-1]
        for i in range(n - 1):
            out += self._interval(i, self.moves)
        return out + self._cap(n - 1, +1)

    # -- between two planes ----------------------------------------------------------------
    def _interval(self, i: int, moves: np.ndarray) -> list[Slab]:
        z0, z1 = float(self.z[i]), float(self.z[i + 1])
        h = z1 - z0
        flat_around = all(moves[j] < SAME_SHAPE_MM for j in (i - 1, i, i + 1) if 0 <= j < len(moves))
        if flat_around:  # a wall along z: the section holds all the way
            return [(0.5 * (z0 + z1), z0, z1, self.shapes[i])]
        k = int(np.clip(math.ceil(moves[i] / MAX_STEP_MM), 1, max(1, math.floor(h / MIN_SUBSLAB_MM))))
        t = (np.arange(k) + 0.5) / k
        target = self._area_curve(i, t)
        # an offset of the outline moves the area by about perimeter x offset: bounded by the
        # change of equivalent radius, it sets how far beyond the outlines the grid matters
        radius = np.sqrt(self.areas[i : i + 2] / np.pi)
        extra = float(np.abs(np.sqrt(target / np.pi) - radius.min()).max(initial=0.0)) if target is not None else 0.0
        rows, cols, band = self._band(i, extra)
        reach = 2 * moves[i] + extra + 2 * self.pad + self.step
        v1 = self.field(i).at(rows, cols, band, reach)[band]
        v2 = self.field(i + 1).at(rows, cols, band, reach)[band]
        simple = self.single[i] and self.single[i + 1] and shapely.intersects(self.shapes[i], self.shapes[i + 1])
        limit = None
        if not simple:
            x, y = np.meshgrid(self.xs[cols], self.ys[rows])
            v2 = np.where(self._unmatched(i, i + 1, x[band], y[band]), np.abs(v1), v2)
            v1 = np.where(self._unmatched(i + 1, i, x[band], y[band]), np.abs(v2), v1)
            # Marching squares cannot resolve a neck finer than the grid (two parts touching
            # at a point): what is traced is kept within the two sections, or within reach
            # of their union where the area's curve makes the surface bulge beyond both.
            either = shapely.union(self.shapes[i], self.shapes[i + 1])
            limit = shapely.buffer(either, extra, quad_segs=_QUAD_SEGS) if extra > 0 else either
            shapely.prepare(limit)
        inside_both = self.field(i).inside(rows, cols) & self.field(i + 1).inside(rows, cols)
        far = np.where(inside_both, -self.pad, self.pad)

        out = []
        for j in range(k):
            grid = far.copy()
            grid[band] = (1 - t[j]) * v1 + t[j] * v2
            if target is not None:
                # the distances' blend, offset so that its area follows the areas' curve
                area, perimeter = self._area_perimeter(grid)
                if area > 0 and perimeter > 0:
                    offset = 2 * math.sqrt(area) * (math.sqrt(target[j]) - math.sqrt(area)) / perimeter
                    grid[band] -= float(np.clip(offset, -extra, extra))
            shape = self._trace(rows, cols, grid)
            if limit is not None and not shapely.contains(limit, shape):
                shape = _polygonal(shapely.intersection(shape, limit))
            if not shape.is_empty:
                out.append((z0 + t[j] * h, z0 + j * h / k, z0 + (j + 1) * h / k, shape))
        return out

    def _area_perimeter(self, grid: np.ndarray) -> tuple[float, float]:
        """Area and perimeter of the region grid <= 0, from the distances at the nodes: each
        node counts as inside by a ramp one node wide across the outline (exact for a
        straight outline), and the nodes within one step of it measure its length."""
        ramp = np.clip(0.5 - grid / self.step, 0.0, 1.0)
        tent = np.clip(1.0 - np.abs(grid) / self.step, 0.0, None)
        return float(ramp.sum()) * self.step**2, float(tent.sum()) * self.step

    def _unmatched(self, i: int, j: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points lie at a part of section i that meets nothing on plane j (a lesion
        ending, or starting, between the two planes).

        The other plane's distance there is that of an unrelated outline; the part is
        instead given the classic half spacing: it keeps its section up to the middle of
        the interval and stops.
        """
        parts = shapely.get_parts(self.shapes[i])
        alone = parts[~shapely.intersects(parts, self.shapes[j])]
        if len(alone) == 0:
            return np.zeros(len(x), dtype=bool)
        region = shapely.buffer(shapely.union_all(alone), 2 * self.step)
        shapely.prepare(region)
        return shapely.contains_xy(region, x, y) & ~shapely.contains_xy(self.shapes[j], x, y)

    def _area_curve(self, i: int, t: np.ndarray) -> np.ndarray | None:
        """The sections' areas at fractions ``t`` of interval i along a smooth curve, or
        None where a plane holds several parts (their summed area says nothing about each).

        Linear interpolation of two concentric circles' distances moves the radius linearly
        (a frustum) where a sphere's area is quadratic in z. The areas are interpolated by
        a cubic Hermite curve with the slopes of the quadratic through three planes (at the
        block's ends, the areas' trend), kept between the two planes' areas unless the
        slopes say the area has an extremum between them.
        """
        if not self.single[max(i - 1, 0) : i + 3].all():
            return None
        h = self.z[i + 1] - self.z[i]
        slope = [self._area_slope(j) for j in (i, i + 1)]
        a1, a2 = self.areas[i], self.areas[i + 1]
        curve = (2 * t**3 - 3 * t**2 + 1) * a1 + (t**3 - 2 * t**2 + t) * h * slope[0]
        curve += (-2 * t**3 + 3 * t**2) * a2 + (t**3 - t**2) * h * slope[1]
        bulge = h * abs(slope[0] - slope[1]) / 8 if slope[0] * slope[1] < 0 else 0.0
        return np.clip(curve, max(min(a1, a2) - bulge, 0.0), max(a1, a2) + bulge)

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

    def _band(self, i: int, extra: float) -> tuple[slice, slice, np.ndarray]:
        """The grid window around planes i and i + 1, and its nodes whose value matters:
        those within the pad (plus ``extra``) of either outline or of the space between the
        two sections."""
        pad = self.pad + extra
        x0, y0, x1, y1 = shapely.total_bounds(self.shapes[i : i + 2])
        c0, c1 = np.searchsorted(self.xs, [x0 - pad, x1 + pad])
        r0, r1 = np.searchsorted(self.ys, [y0 - pad, y1 + pad])
        rows, cols = slice(max(r0 - 1, 0), r1 + 1), slice(max(c0 - 1, 0), c1 + 1)
        a, b = self.field(i).inside(rows, cols), self.field(i + 1).inside(rows, cols)
        edge = a ^ b
        for m in (a, b):
            edge[:-1] |= m[:-1] != m[1:]
            edge[1:] |= m[:-1] != m[1:]
            edge[:, :-1] |= m[:, :-1] != m[:, 1:]
            edge[:, 1:] |= m[:, :-1] != m[:, 1:]
        reach = math.ceil(pad / self.step)
        band = binary_dilation(edge, np.ones((3, 3), bool), iterations=reach)
        band[[0, -1], :] = band[:, [0, -1]] = False  # the window's rim stays outside
        return rows, cols, band

    def _trace(self, rows: slice, cols: slice, grid: np.ndarray) -> shapely.Geometry:
        """The region grid <= 0 as (multi)polygons with holes."""
        if grid.min() > 0:
            return shapely.Polygon()
        x, y = np.meshgrid(self.xs[cols], self.ys[rows])
        # the generator class itself: contour_generator() would first look for masked or
        # invalid values, which a grid of exact distances never has (and which costs more
        # than the tracing on grids this small)
        gen = SerialContourGenerator(
            x,
            y,
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
        rows, cols, band = self._window(section)
        # distances as deep as the inradius
        deep = inradius + 2 * self.pad
        here = self.field(i).at(rows, cols, band, deep)[band]
        before = self.field(i - direction).at(rows, cols, band, deep)[band]
        speed = here - before  # per plane step
        far = np.full(band.shape, self.pad)
        far[self.field(i).inside(rows, cols) & ~band] = -self.pad
        shapely.prepare(section)
        out = []
        for j in range(n):
            tau = (j + 0.5) * height / n
            rho = inradius - math.sqrt(max(float(np.polyval(trend, tau)), 0.0))
            grid = far.copy()
            grid[band] = here - speed * (rho / closed_in) if closed_in < -1e-6 else here + rho
            shape = self._trace(rows, cols, grid)
            if not shapely.contains(section, shape):
                shape = _polygonal(shapely.intersection(shape, section))
            if shape.is_empty:
                break
            out.append(_slab_between(z0 + direction * j * height / n, z0 + direction * (j + 1) * height / n, shape))
        return out

    def _window(self, shape: shapely.Geometry) -> tuple[slice, slice, np.ndarray]:
        """The grid window around ``shape`` and its nodes within the pad of the shape."""
        x0, y0, x1, y1 = shapely.bounds(shape)
        c0, c1 = np.searchsorted(self.xs, [x0 - self.pad, x1 + self.pad])
        r0, r1 = np.searchsorted(self.ys, [y0 - self.pad, y1 + self.pad])
        rows, cols = slice(max(r0 - 1, 0), r1 + 1), slice(max(c0 - 1, 0), c1 + 1)
        x, y = np.meshgrid(self.xs[cols], self.ys[rows])
        near = shapely.buffer(shape, self.pad + self.step)
        shapely.prepare(near)
        band = shapely.contains_xy(near, x, y)
        band[[0, -1], :] = band[:, [0, -1]] = False
        return rows, cols, band

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
        if len(idx) == 3:
            return np.polyfit(tau, squared, 2)
        step = -tau[1]
        slope = (squared[0] - squared[1] - step * step) / step  # with Q'' = -2
        return np.array([-1.0, slope, squared[0]])


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


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a geometry (an intersection may add the points where shapes touch)."""
    parts = shapely.get_parts(geom)
    polys = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
    return shapely.multipolygons(polys) if len(polys) > 1 else polys[0] if len(polys) else shapely.Polygon()


def _slab_between(a: float, b: float, shape: shapely.Geometry) -> Slab:
    lo, hi = min(a, b), max(a, b)
    return (0.5 * (lo + hi), lo, hi, shape)
