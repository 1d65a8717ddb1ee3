"""Sequence items read straight from their encoded bytes: the long sequences of RT objects.

A structure set holds one sequence item per contour, hundreds to tens of thousands of them;
a VMAT plan one per control point. pydicom turns each item into a
:class:`~pydicom.dataset.Dataset` (about 40 µs apiece, more than parsing a contour's
points), although reading a course needs only a few values of each: the ROI a contour
belongs to, its geometric type and points, and for the conformance check which attributes
are present and whether they are empty. When pydicom has kept a sequence as bytes (a
sequence of defined length, read lazily), :func:`encoded_items` walks those bytes once into
:class:`EncodedItem` views. A sequence pydicom has already parsed (one of undefined length
is parsed while the file is read) is left to pydicom's datasets.

The bytes are those of a file already found well formed (:mod:`rtcheck.wellformed`), so the
walk checks lengths only as far as it needs to stay inside the value.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import IS

from .wellformed import MalformedDataset, sequence_end

#: The ROI Contour Module's tags that reading a course asks of the contour items.
ROI_CONTOUR_SEQUENCE = 0x30060039
REFERENCED_ROI_NUMBER = 0x30060084
CONTOUR_SEQUENCE = 0x30060040
CONTOUR_GEOMETRIC_TYPE = 0x30060042
NUMBER_OF_CONTOUR_POINTS = 0x30060046
CONTOUR_DATA = 0x30060050

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class _Span(NamedTuple):
    """Where an element's value lies in the walked bytes, and how its items are encoded."""

    start: int
    end: int
    undefined: bool
    #: The value's items are in implicit VR: the data set's encoding, or a value of VR UN
    #: (whose sequence items are implicit VR little endian, PS3.5 6.2.2).
    implicit: bool
    little: bool


def encoded_items(ds: Dataset, tag: int) -> list[EncodedItem] | None:
    """The items of the data set's sequence ``tag`` from its encoded bytes; None when
    pydicom holds it parsed, or it is absent.

    Raises :class:`~rtcheck.wellformed.MalformedDataset` when the bytes are not a sequence
    of items.
    """
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return None
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    walk = _Walk(raw.value, little)
    unknown = raw.VR == "UN"
    return walk.items(_Span(0, len(raw.value), False, bool(implicit) or unknown, little or unknown))


def encoded_roi_contours(ds: Dataset) -> list[EncodedItem] | None:
    """The ROI Contour Sequence's items (:func:`encoded_items`), each item's Contour
    Sequence walked too, so that a malformed one shows here."""
    rois = encoded_items(ds, ROI_CONTOUR_SEQUENCE)
    for roi in rois or ():
        roi.items(CONTOUR_SEQUENCE)
    return rois


def integer_string(value: object) -> int | None:
    """An IS value as an int, whether pydicom converted it or it is the encoded text; None
    when it is absent, empty or not an integer."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        if isinstance(value, str):
            value = value.strip(" \x00")
            value = IS(value) if value else None
        return None if value is None or value == "" else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):  # OverflowError: "1e999" is no integer either
        return None


def decimal_string(value: object) -> float | None:
    """A DS value as a float, whether pydicom converted it or not; None when it is absent,
    empty or not a number."""
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def frame_count(ds: Dataset) -> int | None:
    """NumberOfFrames of an image (1 when absent: a single frame), None when it is not an
    integer."""
    declared = ds.get("NumberOfFrames")
    return 1 if declared in (None, "") else integer_string(declared)


class EncodedItem:
    """One sequence item as the encoded values of its elements (the first of each tag).

    It answers what the course model and the integrity checks ask of an item: whether an
    element is present, its value as encoded, the items of a nested sequence.
    """

    def __init__(self, walk: _Walk, elements: dict[int, _Span]) -> None:
        self._walk, self._elements = walk, elements
        self._nested: dict[int, list[EncodedItem]] = {}

    def __contains__(self, tag: int) -> bool:
        return tag in self._elements

    def value(self, tag: int) -> bytes | None:
        """The element's value as encoded (an undefined-length sequence's items included);
        None when the element is absent."""
        span = self._elements.get(tag)
        return None if span is None else self._walk.data[span.start : span.end]

    def text(self, tag: int) -> str:
        """A string value without its padding ("" when absent)."""
        value = self.value(tag)
        return "" if value is None else value.decode("ascii", "replace").strip(" \x00")

    def items(self, tag: int) -> list[EncodedItem]:
        """The items of a nested sequence ([] when it is absent or empty)."""
        if tag not in self._nested:
            span = self._elements.get(tag)
            self._nested[tag] = [] if span is None else self._walk.items(span)
        return self._nested[tag]


class _Walk:
    """Element headers of one encoded sequence value, read by offset."""

    def __init__(self, data: bytes, little: bool) -> None:
        self.data, self.little = data, little
        self.tag = struct.Struct("<HH" if little else ">HH")
        self.u32 = struct.Struct("<I" if little else ">I")
        self.u16 = struct.Struct("<H" if little else ">H")

    def items(self, span: _Span) -> list[EncodedItem]:
        """The items of the sequence whose value is ``span``."""
        if span.little != self.little:
            return _Walk(self.data, span.little).items(span)
        pos, end = span.start, span.end
        out = []
        while pos < end:
            group, element = self.tag.unpack_from(self.data, pos)
            (length,) = self.u32.unpack_from(self.data, pos + 4)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END and span.undefined:
                break
            if tag != _ITEM:
                raise MalformedDataset(f"expected a sequence item at offset {pos - 8}")
            undefined = length == _UNDEFINED
            elements, pos = self._item(pos, end if undefined else pos + length, undefined, span.implicit)
            out.append(EncodedItem(self, elements))
        return out

    def _item(self, pos: int, end: int, undefined: bool, implicit: bool) -> tuple[dict[int, _Span], int]:
        """The elements of one item and where the item ends."""
        elements: dict[int, _Span] = {}
        while pos < end:
            group, element = self.tag.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                return elements, pos + 8
            content_implicit, content_little = implicit, self.little
            if implicit:
                (length,) = self.u32.unpack_from(self.data, pos + 4)
                pos += 8
            else:
                vr = self.data[pos + 4 : pos + 6]
                content_implicit = vr == b"UN"
                content_little = self.little or content_implicit
                if vr in _LONG_VRS:
                    (length,) = self.u32.unpack_from(self.data, pos + 8)
                    pos += 12
                else:
                    (length,) = self.u16.unpack_from(self.data, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                stop = sequence_end(self.data, pos, content_implicit, content_little)
                elements.setdefault(tag, _Span(pos, stop, True, content_implicit, content_little))
                pos = stop
            else:
                if pos + length > len(self.data):
                    raise MalformedDataset(f"({group:04X},{element:04X}) runs past the end of its sequence")
                elements.setdefault(tag, _Span(pos, pos + length, False, content_implicit, content_little))
                pos += length
        if undefined:
            raise MalformedDataset("a sequence item has no delimiter")
        return elements, pos
