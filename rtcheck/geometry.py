"""Structures as solids: stacks of planar shapes with a thickness (shapely 2).

A planning system draws a structure as planar contours on image slices. rtcheck turns each
ROI into a :class:`Solid`: one :class:`Slab` per contour plane, whose shape is the even-odd
combination of that plane's contours and whose thickness is the structure's own slice
spacing around that plane (the "slab" convention that the volume, the DVH and every
distance in rtcheck share).

Slab convention
---------------
For the sorted contour planes ``z_1 < ... < z_n`` of a ROI, slab ``i`` spans
``[z_i - below_i, z_i + above_i]`` where ``below_i`` is half the distance to the previous
plane and ``above_i`` half the distance to the next one. At the end caps, and across a gap
wider than 1.5 times the structure's typical spacing, the half-thickness is half the typical
spacing. A sphere contoured every 2.5 mm therefore has the volume of the midpoint rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import shapely


@dataclass(frozen=True)
class Slab:
    """The cross-section of a solid on one contour plane, and the z-range it stands for."""

    z: float
    z_min: float
    z_max: float
    shape: shapely.Geometry  # Polygon or MultiPolygon in (x, y) mm

    @property
    def thickness(self) -> float:
        return self.z_max - self.z_min


@dataclass(frozen=True)
class Solid:
    """A structure (drawn or derived) as a stack of slabs sorted by z."""

    name: str
    slabs: tuple[Slab, ...]

    def slab_at(self, z: float) -> Slab | None:
        """The slab whose z-range contains ``z`` (lower bound inclusive), or None."""
        for slab in self.slabs:
            if slab.z_min <= z < slab.z_max:
                return slab
        return None
