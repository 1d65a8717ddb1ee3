"""Contour planes: is a contour coplanar, and is its plane axial?

DICOM asks the points of a planar contour to be coplanar (PS3.3 C.8.8.6), not to lie on
an axial plane: an image set acquired or reconstructed tilted (a gantry tilt, an oblique
MR) gives contours on planes whose normal is not the z axis. Whether a contour is valid is
therefore decided by its distance from its own best plane; whether rtcheck can measure it
is a separate question (its solids are stacks of axial planes: :mod:`rtcheck.geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Points further than this from their contour's best plane make it non-planar (mm):
#: well above the rounding of exported coordinates, well below a slice spacing.
COPLANAR_TOLERANCE_MM = 0.05
#: A contour plane whose normal leans further than this from z is tilted (degrees).
AXIAL_TOLERANCE_DEG = 0.1


@dataclass(frozen=True)
class ContourPlane:
    """The best plane through a contour's points: unit normal (z >= 0) and worst distance from it."""

    normal: np.ndarray
    deviation_mm: float

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane's normal and the z axis."""
        return float(np.degrees(np.arccos(np.clip(abs(self.normal[2]), 0.0, 1.0))))

    @property
    def is_axial(self) -> bool:
        return self.tilt_deg <= AXIAL_TOLERANCE_DEG

    def describe(self) -> str:
        n = self.normal
        return f"normal ({n[0]:.3f}, {n[1]:.3f}, {n[2]:.3f}), {self.tilt_deg:.1f} deg from axial"


def contour_plane(points: np.ndarray) -> ContourPlane | None:
    """The least-squares plane of (N, 3) points, or None when they define none (fewer than 3,
    or all on one line)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 3:
        return None
    centred = pts - pts.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    if singular[1] <= 1e-9 * max(1.0, singular[0]):
        return None  # collinear
    normal = vt[2] if vt[2][2] >= 0 else -vt[2]
    deviation = float(np.abs(centred @ normal).max())
    return ContourPlane(normal, deviation)


def on_axial_planes(point_sets: Sequence[np.ndarray]) -> np.ndarray:
    """Per (N, 3) point set, whether all its points have the same z (False when empty).

    Such a contour lies on an axial plane by construction: it is coplanar and axial
    without fitting a plane, which (one singular value decomposition per contour) is most
    of the cost of checking a structure set of thousands of contours. One pass over all
    the sets' z values answers for every contour at once.
    """
    sizes = np.fromiter((len(p) for p in point_sets), dtype=np.intp, count=len(point_sets))
    flat = np.zeros(len(point_sets), dtype=bool)
    filled = sizes > 0
    if filled.any():
        z = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3)[:, 2] for p in point_sets if len(p)])
        starts = np.cumsum(sizes[filled]) - sizes[filled]
        flat[filled] = np.maximum.reduceat(z, starts) == np.minimum.reduceat(z, starts)
    return flat
