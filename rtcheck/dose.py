"""RT Dose grids: reading an RTDOSE into Gy, and the dose of a protocol component.

A :class:`DoseGrid` is a dose in Gy on an axis-aligned grid whose x, y and z coordinates
(voxel centres, mm) all increase: whatever the file's row/column directions and frame order,
the reader puts the voxels in that one order, so that the DVH engine and the resampler never
have to think about orientation.

Conventions
-----------
* A grid's dose is defined on its *voxel box*: the union of the voxels, each centre plus or
  minus half a spacing (in z, half-way to the neighbouring planes; half the neighbouring
  spacing beyond the end planes). Outside it the dose is unknown. :meth:`DoseGrid.sample`
  and the resampler interpolate trilinearly, holding the value constant in the outer half
  voxel (the DVH reconstructs the dose inside a voxel its own way: :mod:`rtcheck.dvh`).
* Only axial grids are read: ImageOrientationPatient with rows along +-x and columns along
  +-y, i.e. (1,0,0,0,1,0) (head-first supine), (-1,0,0,0,-1,0) (head-first prone) and the two
  feet-first variants. Reversed axes are flipped, which loses nothing; an oblique grid would
  need resampling that the planning system never did, so it is refused. Relative
  GridFrameOffsetVector values run along the image normal (row x column direction), which
  points to -z for the two feet-first variants; the absolute form (first value =
  ImagePositionPatient z) is accepted only for (1,0,0,0,1,0), as the standard says.
* Frames may come in any order and with uneven spacing: they are sorted by z, and the
  spacing is kept per plane.
* DoseGridScaling is the only scaling applied: Rescale Slope/Intercept are ignored when
  present (the RT Dose module defines the dose as pixel value x DoseGridScaling; Orthanc had
  to learn this the hard way).
* Doses of one component that come on different grids are resampled (trilinear) onto the
  finest of them (smallest voxel; the first in selection order on a tie), cropped to the
  region every grid covers, so that the sum is never taken where one term is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .course import ComponentPart, Course, DoseFile, Plan, SourceFile
from .encoded import frame_count
from .errors import ExitCode, RtcheckError

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"

#: Coordinates that differ by less than this (mm) are the same grid position.
_SAME_POSITION_MM = 1e-3


class DoseError(RtcheckError):
    """A dose cannot be used as asked: a rule that needs it is not evaluable.

    The message names the file (when there is one) and the attribute or object at fault.
    """

    exit_code = ExitCode.NOT_EVALUABLE

    def __init__(self, path: Path | str | None, attribute: str, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.attribute = attribute
        self.problem = problem
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{attribute}: {problem}")


@dataclass(frozen=True, eq=False)
class DoseGrid:
    """A dose in Gy on an axis-aligned grid (see the module docstring for the conventions).

    ``dose_gy`` is float32, shaped (nz, ny, nx); ``x_mm``, ``y_mm`` and ``z_mm`` are the voxel
    centres, strictly increasing, x and y evenly spaced, z possibly not.
    """

    dose_gy: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    frame_of_reference_uid: str | None
    sources: tuple[SourceFile, ...]
    note: str
    dose_type: str = "PHYSICAL"

    def __post_init__(self) -> None:
        shape = (self.z_mm.size, self.y_mm.size, self.x_mm.size)
        if self.dose_gy.dtype != np.float32 or self.dose_gy.shape != shape:
            raise ValueError(f"dose_gy must be float32 of shape {shape}, not {self.dose_gy.dtype} {self.dose_gy.shape}")
        for name, axis in (("x_mm", self.x_mm), ("y_mm", self.y_mm), ("z_mm", self.z_mm)):
            if axis.size < 2 or not np.all(np.diff(axis) > 0):
                raise ValueError(f"{name} must hold at least 2 strictly increasing coordinates")
        for name, axis in (("x_mm", self.x_mm), ("y_mm", self.y_mm)):
            step = np.diff(axis)
            if np.ptp(step) > _SAME_POSITION_MM:
                raise ValueError(f"{name} must be evenly spaced")

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """In-plane voxel size (dx, dy)."""
        return float(self.x_mm[1] - self.x_mm[0]), float(self.y_mm[1] - self.y_mm[0])

    @property
    def x_edges_mm(self) -> np.ndarray:
        return voxel_edges(self.x_mm)

    @property
    def y_edges_mm(self) -> np.ndarray:
        return voxel_edges(self.y_mm)

    @property
    def z_edges_mm(self) -> np.ndarray:
        return voxel_edges(self.z_mm)

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x_mm, self.y_mm, self.z_mm

    def contains(self, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Whether each point lies in the voxel box (boundary included)."""
        xe, ye, ze = self.x_edges_mm, self.y_edges_mm, self.z_edges_mm
        return (
            (x_mm >= xe[0]) & (x_mm <= xe[-1]) & (y_mm >= ye[0]) & (y_mm <= ye[-1]) & (z_mm >= ze[0]) & (z_mm <= ze[-1])
        )

    def sample(self, points_mm: np.ndarray) -> np.ndarray:
        """Trilinear dose (Gy, float64) at (N, 3) points; NaN outside the voxel box."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return self.sample_xyz(p[:, 0], p[:, 1], p[:, 2])

    def sample_xyz(self, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """:meth:`sample` for coordinates given as three arrays of equal shape."""
        x_mm, y_mm, z_mm = (np.asarray(a, dtype=np.float64) for a in (x_mm, y_mm, z_mm))
        out = self._trilinear(
            _fractional_index(self.x_mm, x_mm),
            _fractional_index(self.y_mm, y_mm),
            _fractional_index(self.z_mm, z_mm),
        )
        out[~self.contains(x_mm, y_mm, z_mm)] = np.nan
        return out

    def _trilinear(self, fi: np.ndarray, fj: np.ndarray, fk: np.ndarray) -> np.ndarray:
        """Trilinear dose at fractional voxel indices (x, y, z order), which must lie in range."""
        nz, ny, nx = self.dose_gy.shape
        flat = self.dose_gy.reshape(-1)
        i0, wi = _split_index(fi, nx)
        j0, wj = _split_index(fj, ny)
        k0, wk = _split_index(fk, nz)
        base = (k0 * ny + j0) * nx + i0
        wi, wj, wk = (w.astype(np.float32) for w in (wi, wj, wk))

        def lerp_x(offset: int) -> np.ndarray:
            low = flat[base + offset]
            return low + (flat[base + offset + 1] - low) * wi

        def lerp_xy(offset: int) -> np.ndarray:
            low = lerp_x(offset)
            return low + (lerp_x(offset + nx) - low) * wj

        low = lerp_xy(0)
        return (low + (lerp_xy(ny * nx) - low) * wk).astype(np.float64)

    def scaled(self, factor: float, note: str) -> DoseGrid:
        """This dose times ``factor`` (a new grid), e.g. a course total divided by its fractions."""
        return DoseGrid(
            dose_gy=(self.dose_gy * np.float32(factor)).astype(np.float32, copy=False),
            x_mm=self.x_mm,
            y_mm=self.y_mm,
            z_mm=self.z_mm,
            frame_of_reference_uid=self.frame_of_reference_uid,
            sources=self.sources,
            note=note,
            dose_type=self.dose_type,
        )


def voxel_edges(centres: np.ndarray) -> np.ndarray:
    """Voxel boundaries along an axis: half-way between centres, half a step beyond the ends."""
    mid = (centres[1:] + centres[:-1]) / 2
    first = centres[0] - (centres[1] - centres[0]) / 2
    last = centres[-1] + (centres[-1] - centres[-2]) / 2
    return np.concatenate(([first], mid, [last]))


def same_axes(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """Whether two grids' voxel centres (x, y, z axes) coincide."""
    return all(
        u.shape == v.shape and np.allclose(u, v, rtol=0, atol=_SAME_POSITION_MM) for u, v in zip(a, b, strict=True)
    )


def _fractional_index(centres: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Fractional index of coordinates along an increasing axis, clamped to the end voxels."""
    return np.interp(coords, centres, np.arange(centres.size, dtype=np.float64))


def _split_index(f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour and interpolation weight of fractional indices in [0, n - 1]."""
    lower = np.clip(np.floor(f).astype(np.int64), 0, n - 2)
    return lower, f - lower


# --------------------------------------------------------------------------- reading


_GRID_FRAME_OFFSET_VECTOR = 0x3004000C
_AXIAL = {(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0), (-1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0)}


@dataclass(frozen=True)
class _Geometry:
    """Where an RTDOSE's voxels are, and how to reorder its pixel array to increasing x, y, z."""

    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    flip_x: bool
    flip_y: bool
    frame_order: np.ndarray
    notes: tuple[str, ...]


def _numbers(ds: Dataset, keyword: str, path: Path, count: int | None = None) -> np.ndarray:
    """A numeric (multi-)value as float64, or a DoseError naming the attribute."""
    if keyword not in ds or ds[keyword].value in (None, ""):
        raise DoseError(path, keyword, "missing")
    value = ds[keyword].value
    try:
        arr = np.atleast_1d(np.asarray(value if not isinstance(value, str) else [value], dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise DoseError(path, keyword, f"not numeric ({value!r})") from exc
    if count is not None and arr.size != count:
        raise DoseError(path, keyword, f"has {arr.size} values, expected {count}")
    if not np.all(np.isfinite(arr)):
        raise DoseError(path, keyword, f"not finite ({value!r})")
    return arr


def _geometry(ds: Dataset, path: Path) -> _Geometry:
    orientation = _numbers(ds, "ImageOrientationPatient", path, 6)
    rounded = tuple(int(v) for v in np.rint(orientation))
    if rounded not in _AXIAL or np.abs(orientation - rounded).max() > 1e-4:
        text = "\\".join(f"{v:g}" for v in orientation)
        raise DoseError(
            path,
            "ImageOrientationPatient",
            f"oblique/non-axial dose grid not supported ({text}); only axial grids with rows "
            "along x and columns along y can be evaluated",
        )
    row_x, col_y = rounded[0], rounded[4]
    position = _numbers(ds, "ImagePositionPatient", path, 3)
    spacing = _numbers(ds, "PixelSpacing", path, 2)  # (between rows, between columns)
    if np.any(spacing <= 0):
        raise DoseError(path, "PixelSpacing", f"must be positive ({spacing[0]:g}\\{spacing[1]:g})")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 2 or columns < 2:
        raise DoseError(path, "Rows/Columns", f"a dose grid needs at least 2 x 2 voxels, not {rows} x {columns}")
    frames = frame_count(ds)
    if frames is None:
        raise DoseError(path, "NumberOfFrames", f"not an integer ({str(ds.get('NumberOfFrames'))!r})")
    if frames < 2:
        raise DoseError(path, "NumberOfFrames", f"{frames} frame: a single dose plane has no thickness, so no volume")
    pointer = ds.get("FrameIncrementPointer")
    if pointer is not None and [int(t) for t in np.atleast_1d(pointer)] != [_GRID_FRAME_OFFSET_VECTOR]:
        raise DoseError(path, "FrameIncrementPointer", f"must point to GridFrameOffsetVector, not {pointer}")
    offsets = _numbers(ds, "GridFrameOffsetVector", path, frames)
    notes: list[str] = []
    normal_z = row_x * col_y  # (row direction x column direction) . z for an axial grid
    if offsets[0] == 0:
        z = position[2] + normal_z * offsets
    elif abs(offsets[0] - position[2]) <= _SAME_POSITION_MM:
        if rounded != (1, 0, 0, 0, 1, 0):
            raise DoseError(
                path,
                "GridFrameOffsetVector",
                "absolute offsets (first element = ImagePositionPatient z) are only defined for "
                "ImageOrientationPatient 1\\0\\0\\0\\1\\0",
            )
        z = offsets.copy()
        notes.append("GridFrameOffsetVector holds absolute z")
    else:
        raise DoseError(
            path,
            "GridFrameOffsetVector",
            f"first element {offsets[0]:g} is neither 0 (relative offsets) nor ImagePositionPatient z "
            f"{position[2]:g} (absolute z)",
        )
    order = np.argsort(z, kind="stable")
    z = z[order]
    steps = np.diff(z)
    if np.any(steps <= _SAME_POSITION_MM):
        raise DoseError(path, "GridFrameOffsetVector", "two frames lie on the same plane")
    if np.ptp(steps) > _SAME_POSITION_MM:
        notes.append(f"non-uniform frame spacing {steps.min():g}-{steps.max():g} mm")
    x = position[0] + row_x * spacing[1] * np.arange(columns)
    y = position[1] + col_y * spacing[0] * np.arange(rows)
    return _Geometry(
        x_mm=x[::row_x],
        y_mm=y[::col_y],
        z_mm=z,
        flip_x=row_x < 0,
        flip_y=col_y < 0,
        frame_order=order,
        notes=tuple(notes),
    )


def _read(path: Path, *, pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise DoseError(path, "file", f"cannot be read as DICOM ({exc})") from exc


def without_pixels(ds: Dataset) -> Dataset:
    """The dataset's header: every element but the pixel data (which a grid has been made of)."""
    return Dataset({tag: elem for tag, elem in ds.items() if tag != _PIXEL_DATA})


_PIXEL_DATA = 0x7FE00010


class DoseReader:
    """Where RTDOSE headers and grids come from: the files, read when asked.

    A caller that already holds the datasets (the workspace of a course, which reads each
    file once) hands in its own reader, so that summing and selecting doses never open a
    file again.
    """

    def header(self, dose: DoseFile) -> Dataset:
        """The RTDOSE's attributes (pixel data not needed)."""
        return _read(dose.source.path, pixels=False)

    def grid(self, dose: DoseFile) -> DoseGrid:
        """The RTDOSE's voxels in Gy."""
        return load_dose_grid(dose)


def _check_header(ds: Dataset, dose: DoseFile) -> tuple[str, float]:
    """Units, type and scaling: the attributes that decide whether voxels mean Gy."""
    path = dose.source.path
    if str(ds.get("SOPClassUID", "")) != RT_DOSE_STORAGE:
        raise DoseError(path, "SOPClassUID", f"not an RT Dose ({ds.get('SOPClassUID', 'missing')})")
    uid = str(ds.get("SOPInstanceUID", ""))
    if dose.source.sop_instance_uid and uid != dose.source.sop_instance_uid:
        raise DoseError(path, "SOPInstanceUID", "the file has changed since the course was read")
    units = str(ds.get("DoseUnits", "") or "").strip().upper()
    if units == "RELATIVE":
        raise DoseError(path, "DoseUnits", "RELATIVE: the dose is relative to an unstated reference, not in Gy")
    if units != "GY":
        raise DoseError(path, "DoseUnits", f"must be GY, found {units or 'nothing'}")
    dose_type = str(ds.get("DoseType", "") or "").strip().upper()
    if dose_type == "ERROR":
        raise DoseError(path, "DoseType", "ERROR: the grid holds dose uncertainties, not a dose")
    if dose_type not in ("PHYSICAL", "EFFECTIVE"):
        raise DoseError(path, "DoseType", f"must be PHYSICAL or EFFECTIVE, found {dose_type or 'nothing'}")
    scaling = float(_numbers(ds, "DoseGridScaling", path, 1)[0])
    if scaling <= 0:
        raise DoseError(path, "DoseGridScaling", f"must be positive, found {scaling:g}")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DoseError(path, "SamplesPerPixel", "must be 1")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (16, 32):
        raise DoseError(path, "BitsAllocated", f"must be 16 or 32, found {bits}")
    return dose_type, scaling


def load_dose_grid(dose: DoseFile, ds: Dataset | None = None) -> DoseGrid:
    """Read an RTDOSE's voxels into Gy (float32) on increasing x, y, z.

    ``ds`` is the RTDOSE's dataset when it has already been read (with its pixel data);
    otherwise the file is read. Raises :class:`DoseError` for anything that would make the
    numbers mean something else than absolute dose at known positions: RELATIVE or missing
    units, an ERROR dose type, a missing or non-positive DoseGridScaling, an oblique grid,
    inconsistent frame offsets.
    """
    path = dose.source.path
    if ds is None:
        ds = _read(path, pixels=True)
    dose_type, scaling = _check_header(ds, dose)
    geometry = _geometry(ds, path)
    if "PixelData" not in ds:
        raise DoseError(path, "PixelData", "missing")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # truncated or inconsistent pixel data
        raise DoseError(path, "PixelData", f"cannot be decoded ({exc})") from exc
    expected = (geometry.z_mm.size, geometry.y_mm.size, geometry.x_mm.size)
    if pixels.shape != expected:
        raise DoseError(path, "PixelData", f"has shape {pixels.shape}, expected {expected} (frames, rows, columns)")
    if geometry.flip_x:
        pixels = pixels[:, :, ::-1]
    if geometry.flip_y:
        pixels = pixels[:, ::-1, :]
    if not np.array_equal(geometry.frame_order, np.arange(geometry.frame_order.size)):
        pixels = pixels[geometry.frame_order]
    values = np.multiply(pixels, np.float32(scaling), dtype=np.float32)
    notes = [f"{dose.summation_type or 'unknown summation'} dose, {dose_type}"]
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            notes.append(f"{keyword} ignored (DoseGridScaling applies)")
    notes.extend(geometry.notes)
    dx, dy = geometry.x_mm[1] - geometry.x_mm[0], geometry.y_mm[1] - geometry.y_mm[0]
    shape = "x".join(str(n) for n in expected[::-1])
    return DoseGrid(
        dose_gy=np.ascontiguousarray(values),
        x_mm=geometry.x_mm,
        y_mm=geometry.y_mm,
        z_mm=geometry.z_mm,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        sources=(dose.source,),
        note=f"{path.name}: {', '.join(notes)}; {shape} voxels of {dx:g}x{dy:g} mm in-plane",
        dose_type=dose_type,
    )


# --------------------------------------------------------------------------- summing


def resample(grid: DoseGrid, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """Trilinear dose of ``grid`` at the points of a rectilinear grid, as float32 (nz, ny, nx).

    Trilinear interpolation onto a rectilinear grid is separable, so it is done as three 1-D
    interpolations, one axis at a time. Every point must lie in ``grid``'s voxel box.
    """
    out = grid.dose_gy
    for axis, source, target in ((2, grid.x_mm, x_mm), (1, grid.y_mm, y_mm), (0, grid.z_mm, z_mm)):
        lower, weight = _split_index(_fractional_index(source, np.asarray(target, np.float64)), source.size)
        shape = [1, 1, 1]
        shape[axis] = -1
        w = weight.astype(np.float32).reshape(shape)
        out = np.take(out, lower, axis=axis) * (1 - w) + np.take(out, lower + 1, axis=axis) * w
    return out.astype(np.float32, copy=False)


def _inside(axis: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return (axis >= edges[0] - _SAME_POSITION_MM) & (axis <= edges[-1] + _SAME_POSITION_MM)


def _smallest_voxel_mm3(g: _Geometry) -> float:
    """What "finest grid" means when grids are summed."""
    dx, dy = g.x_mm[1] - g.x_mm[0], g.y_mm[1] - g.y_mm[0]
    return float(dx * dy * np.diff(voxel_edges(g.z_mm)).min())


def sum_doses(doses: Sequence[DoseFile], reader: DoseReader | None = None) -> DoseGrid:
    """Sum RTDOSE objects (already chosen), holding one loaded grid besides the total.

    Grids equal to the target are added as they are; others are resampled onto it. The target
    is the finest grid (see the module docstring), cropped to where every grid has a dose.
    ``reader`` gives the headers and grids (by default, read from the files).
    """
    reader = reader or DoseReader()
    if not doses:
        raise ValueError("no dose to sum")
    names = ", ".join(d.source.path.name for d in doses)
    if len({d.frame_of_reference_uid for d in doses}) > 1:
        raise DoseError(None, "FrameOfReferenceUID", f"the doses to sum ({names}) lie in different frames of reference")
    if len(doses) == 1:
        return reader.grid(doses[0])
    headers: list[_Geometry] = []
    types: set[str] = set()
    for d in doses:  # check every header before reading any voxel
        ds = reader.header(d)
        types.add(_check_header(ds, d)[0])
        headers.append(_geometry(ds, d.source.path))
    if len(types) > 1:
        raise DoseError(None, "DoseType", f"cannot sum {' and '.join(sorted(types))} doses ({names})")
    winner = min(range(len(doses)), key=lambda i: (_smallest_voxel_mm3(headers[i]), i))
    target = headers[winner]
    keep = [
        np.logical_and.reduce([_inside(axis, voxel_edges(h_axis)) for h_axis in h_axes])
        for axis, h_axes in zip(
            (target.x_mm, target.y_mm, target.z_mm),
            zip(*((h.x_mm, h.y_mm, h.z_mm) for h in headers), strict=True),
            strict=True,
        )
    ]
    if min(int(k.sum()) for k in keep) < 2:
        raise DoseError(None, "dose grids", f"{names} do not overlap: their sum is nowhere defined")
    x, y, z = target.x_mm[keep[0]], target.y_mm[keep[1]], target.z_mm[keep[2]]
    total = np.zeros((z.size, y.size, x.size), dtype=np.float32)
    resampled = False
    for d in doses:
        grid = reader.grid(d)
        if same_axes(grid.axes, (target.x_mm, target.y_mm, target.z_mm)):
            total += grid.dose_gy[np.ix_(keep[2], keep[1], keep[0])]
        else:
            total += resample(grid, x, y, z)
            resampled = True
        del grid  # one loaded grid at a time
    notes = [f"sum of {len(doses)} doses ({names}) on the grid of {doses[winner].source.path.name}"]
    if not all(k.all() for k in keep):
        notes.append("cropped to the region every grid covers")
    if resampled:
        notes.append("the others resampled (trilinear)")
    return DoseGrid(
        dose_gy=total,
        x_mm=x,
        y_mm=y,
        z_mm=z,
        frame_of_reference_uid=doses[0].frame_of_reference_uid,
        sources=tuple(d.source for d in doses),
        note=", ".join(notes),
        dose_type=types.pop(),
    )


# --------------------------------------------------------------------------- components


@dataclass(frozen=True)
class DoseSelection:
    """The RTDOSE objects whose sum is the dose of a set of fraction groups, and why."""

    doses: tuple[DoseFile, ...]
    fractions: int
    explanation: str


@dataclass(frozen=True, eq=False)
class ComponentDose:
    """The total dose of a protocol component (all its fractions), and how it was made."""

    total: DoseGrid
    fractions: int
    selection: DoseSelection

    @cached_property
    def per_fraction(self) -> DoseGrid:
        """The component's dose per fraction: its total divided by its number of fractions."""
        return self.total.scaled(1 / self.fractions, f"{self.total.note}; divided by {self.fractions} fractions")


_WHOLE_DELIVERY = ("PLAN", "MULTI_PLAN", "FRACTION", "BEAM")


def _plan_name(plan: Plan) -> str:
    return f"plan {plan.display_name}"


def _fractions(parts: Sequence[ComponentPart]) -> int:
    counts = {p.fraction_group.fractions_planned for p in parts}
    if len(counts) != 1 or None in counts or min(c or 0 for c in counts) < 1:
        listed = ", ".join(
            f"{_plan_name(p.plan)} group {p.fraction_group.number}: {p.fraction_group.fractions_planned}" for p in parts
        )
        raise DoseError(
            None,
            "NumberOfFractionsPlanned",
            f"the fraction groups of one component must share a positive number of fractions ({listed})",
        )
    return counts.pop() or 0


def _one(candidates: list[DoseFile], what: str) -> DoseFile | None:
    if len(candidates) > 1:
        names = ", ".join(d.source.path.name for d in candidates)
        raise DoseError(
            None, "DoseSummationType", f"{len(candidates)} {what} doses ({names}): cannot tell which to use"
        )
    return candidates[0] if candidates else None


def _fraction_group_doses(plan: Plan, number: int, doses: list[DoseFile]) -> tuple[list[DoseFile], str]:
    """The FRACTION dose of one fraction group, else its BEAM doses; ([], reason) if neither."""
    single = len(plan.fraction_groups) == 1

    def refers(d: DoseFile) -> bool:
        groups = d.referenced_fraction_group_numbers
        return number in groups if groups else single

    fraction = _one(
        [
            d
            for d in doses
            if d.summation_type == "FRACTION" and refers(d) and len(set(d.referenced_fraction_group_numbers)) <= 1
        ],
        f"FRACTION (fraction group {number})",
    )
    if fraction is not None:
        return [fraction], f"FRACTION dose {fraction.source.path.name}"
    group = next(fg for fg in plan.fraction_groups if fg.number == number)
    wanted_beams = {b.beam_number for b in group.beam_doses}
    beam_doses = [
        d
        for d in doses
        if d.summation_type == "BEAM"
        and refers(d)
        and d.referenced_beam_numbers
        and set(d.referenced_beam_numbers) <= wanted_beams
    ]
    covered = [b for d in beam_doses for b in d.referenced_beam_numbers]
    if wanted_beams and sorted(covered) == sorted(wanted_beams):
        names = ", ".join(d.source.path.name for d in beam_doses)
        return beam_doses, f"sum of BEAM doses {names}"
    if beam_doses:
        return [], (f"its BEAM doses cover beams {sorted(covered)}, not exactly its beams {sorted(wanted_beams)}")
    return [], "it has no FRACTION dose and no BEAM doses"


def select_doses(course: Course, parts: Iterable[ComponentPart]) -> DoseSelection:
    """Choose the RTDOSE objects whose sum is exactly the dose of ``parts``.

    Per plan: its PLAN dose when every fraction group of the plan is wanted; otherwise (or
    without one) a FRACTION dose per wanted fraction group, else that group's BEAM doses. When
    a plan is left unresolved, a MULTI_PLAN dose is used if it covers exactly the wanted plans
    (all their fraction groups wanted), or else exactly the unresolved ones. A dose that would
    mix in fraction groups that are not wanted is never used: the selection fails, saying why.
    """
    unique = list({(p.plan.uid, p.fraction_group.number): p for p in parts}.values())
    if not unique:
        raise ValueError("no fraction group given")
    fractions = _fractions(unique)
    plans: dict[str, Plan] = {}
    wanted: dict[str, set[int]] = {}
    for p in unique:
        plans[p.plan.uid] = p.plan
        wanted.setdefault(p.plan.uid, set()).add(p.fraction_group.number)
    usable = [d for d in course.doses if d.summation_type in _WHOLE_DELIVERY]
    chosen: list[DoseFile] = []
    how: list[str] = []
    unresolved: dict[str, str] = {}
    for uid, plan in plans.items():
        own = [d for d in usable if d.referenced_plan_uid == uid]
        plan_doses = [d for d in own if d.summation_type == "PLAN"]
        if wanted[uid] == {fg.number for fg in plan.fraction_groups} and plan_doses:
            plan_dose = _one(plan_doses, f"PLAN ({_plan_name(plan)})")
            assert plan_dose is not None  # plan_doses is not empty
            chosen.append(plan_dose)
            how.append(f"{_plan_name(plan)}: PLAN dose {plan_dose.source.path.name}")
            continue
        found: list[DoseFile] = []
        found_how: list[str] = []
        for number in sorted(wanted[uid]):
            picked, reason = _fraction_group_doses(plan, number, own)
            if not picked:
                mixed = " (its PLAN dose also holds fraction groups not in this component)" if plan_doses else ""
                unresolved[uid] = f"{_plan_name(plan)} fraction group {number}: {reason}{mixed}"
                break
            found.extend(picked)
            found_how.append(f"{_plan_name(plan)} fraction group {number}: {reason}")
        else:
            chosen.extend(found)
            how.extend(found_how)
    if unresolved:
        for uids in (set(plans), set(unresolved)):
            multi = _multi_plan(usable, uids, plans, wanted)
            if multi is not None:
                if uids == set(plans):
                    chosen, how = [], []
                chosen.append(multi)
                names = ", ".join(_plan_name(plans[u]) for u in plans if u in uids)
                how.append(f"{names}: MULTI_PLAN dose {multi.source.path.name}")
                break
        else:
            raise DoseError(None, "RTDOSE", "no dose of exactly this component: " + "; ".join(unresolved.values()))
    return DoseSelection(doses=tuple(chosen), fractions=fractions, explanation="; ".join(how))


def _multi_plan(
    usable: list[DoseFile], uids: set[str], plans: dict[str, Plan], wanted: dict[str, set[int]]
) -> DoseFile | None:
    """The MULTI_PLAN dose of exactly the plans ``uids``, each wanted whole, if there is one."""
    if any(wanted[u] != {fg.number for fg in plans[u].fraction_groups} for u in uids):
        return None
    groups = set().union(*(wanted[u] for u in uids))
    return _one(
        [
            d
            for d in usable
            if d.summation_type == "MULTI_PLAN"
            and set(d.referenced_plan_uids) == uids
            and (not d.referenced_fraction_group_numbers or set(d.referenced_fraction_group_numbers) == groups)
        ],
        "MULTI_PLAN",
    )


def component_dose(course: Course, parts: Iterable[ComponentPart], reader: DoseReader | None = None) -> ComponentDose:
    """The dose of a component: the selected RTDOSE objects, loaded and summed."""
    selection = select_doses(course, parts)
    total = sum_doses(selection.doses, reader)
    total = replace(total, note=f"{total.note}; {selection.explanation}")
    return ComponentDose(total=total, fractions=selection.fractions, selection=selection)


def planless_doses(course: Course) -> list[DoseFile]:
    """The doses whose sum is a plan-less course's total: per referenced plan, its PLAN dose,
    else its FRACTION doses, else its BEAM doses; a MULTI_PLAN dose stands for its plans.

    Without the plan rtcheck cannot tell which fraction groups or beams a partial dose
    covers, so it trusts the summation types, and the report names every file it summed.
    """
    multi = [d for d in course.doses if d.summation_type == "MULTI_PLAN"]
    if len(multi) == 1:
        return multi
    chosen: list[DoseFile] = []
    by_plan: dict[tuple[str, ...], list[DoseFile]] = {}
    for d in course.doses:
        by_plan.setdefault(d.referenced_plan_uids, []).append(d)
    for doses in by_plan.values():
        for kind in ("PLAN", "FRACTION", "BEAM"):
            found = [d for d in doses if d.summation_type == kind]
            if found:
                chosen.extend(found if kind != "PLAN" else found[:1])
                break
    return chosen
