"""Units, explicit everywhere: what a protocol may write and how rtcheck converts.

Inside rtcheck, measurements are in canonical units (Gy, mm, cc, %, fractions, counts,
plain ratios); a rule's YAML says in which unit its limits are written, and the engine
converts each measurement into that unit before comparing. Mixing cGy and Gy is the
classic error this module exists to make impossible.
"""

from __future__ import annotations

from enum import StrEnum


class Quantity(StrEnum):
    DOSE = "dose"
    LENGTH = "length"
    VOLUME = "volume"
    PERCENT = "percent"
    FRACTIONS = "fractions"
    COUNT = "count"
    RATIO = "ratio"


class Unit(StrEnum):
    """Units a protocol may use. Doses are physical dose unless a rule says otherwise."""

    GY = "Gy"
    CGY = "cGy"
    MM = "mm"
    CM = "cm"
    CC = "cc"
    PERCENT = "%"
    FRACTIONS = "fx"
    COUNT = "count"
    RATIO = "ratio"

    @property
    def quantity(self) -> Quantity:
        return _QUANTITY[self]

    def from_canonical(self, value: float) -> float:
        """Convert a value in the canonical unit of this unit's quantity into this unit."""
        return value * _FACTOR[self]


_QUANTITY = {
    Unit.GY: Quantity.DOSE,
    Unit.CGY: Quantity.DOSE,
    Unit.MM: Quantity.LENGTH,
    Unit.CM: Quantity.LENGTH,
    Unit.CC: Quantity.VOLUME,
    Unit.PERCENT: Quantity.PERCENT,
    Unit.FRACTIONS: Quantity.FRACTIONS,
    Unit.COUNT: Quantity.COUNT,
    Unit.RATIO: Quantity.RATIO,
}

#: Multiply a canonical value (Gy, mm, cc, ...) by this to express it in the unit.
_FACTOR = {
    Unit.GY: 1.0,
    Unit.CGY: 100.0,
    Unit.MM: 1.0,
    Unit.CM: 0.1,
    Unit.CC: 1.0,
    Unit.PERCENT: 1.0,
    Unit.FRACTIONS: 1.0,
    Unit.COUNT: 1.0,
    Unit.RATIO: 1.0,
}
