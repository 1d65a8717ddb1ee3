"""The contours of an RT Structure Set read straight from the encoded ROI Contour Sequence.

A structure set holds one sequence item per contour, hundreds to tens of thousands of them.
pydicom turns each item into a :class:`~pydicom.dataset.Dataset` (about 40 µs apiece, more
than parsing the contour's points), although the course model needs three values of it:
the contour's geometric type, its points, and the ROI it belongs to. When pydicom has kept
the sequence as bytes (a sequence of defined length, read lazily), this module walks those
bytes once and hands back exactly those values. A sequence pydicom has already parsed (one
of undefined length is parsed while the file is read) is left to the dataset path of
:mod:`rtcheck.dicomio`.

The bytes are those of a file already found well formed (:mod:`rtcheck.wellformed`), so the
walk checks lengths only as far as it needs to stay inside the value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from .wellformed import MalformedDataset, sequence_end

ROI_CONTOUR_SEQUENCE = 0x30060039
_REFERENCED_ROI_NUMBER = 0x30060084
_CONTOUR_SEQUENCE = 0x30060040
_CONTOUR_GEOMETRIC_TYPE = 0x30060042
_CONTOUR_DATA = 0x30060050

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


@dataclass(frozen=True)
class RawContour:
    """One item of a Contour Sequence: its ContourGeometricType and ContourData as encoded."""

    geometric_type: str
    data: bytes


@dataclass(frozen=True)
class RawRoiContour:
    """One item of the ROI Contour Sequence: the ReferencedROINumber as encoded, and its contours."""

    referenced_roi_number: str
    contours: list[RawContour]


def encoded_roi_contours(ds: Dataset) -> list[RawRoiContour] | None:
    """The ROI Contour Sequence's items from its encoded bytes; None when pydicom holds it parsed.

    Raises :class:`~rtcheck.wellformed.MalformedDataset` when the bytes are not a sequence
    of items.
    """
    raw = ds.get_item(ROI_CONTOUR_SEQUENCE)
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return None
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    walk = _Walk(raw.value, bool(implicit), little)
    try:
        return _read(walk, len(raw.value))
    except _Unusual:
        return None


def _read(walk: _Walk, length: int) -> list[RawRoiContour]:
    return [
        RawRoiContour(
            walk.text(elements.get(_REFERENCED_ROI_NUMBER)),
            [
                RawContour(walk.text(contour.get(_CONTOUR_GEOMETRIC_TYPE)), walk.value(contour.get(_CONTOUR_DATA)))
                for contour in walk.items(elements.get(_CONTOUR_SEQUENCE))
            ],
        )
        for elements in walk.items((0, length, False))
    ]


class _Unusual(Exception):
    """An encoding this walk leaves to pydicom (a value of VR UN, whose content pydicom
    decodes by the data dictionary)."""


#: Where an element's value lies in the walked bytes: (start, end, undefined length).
_Span = tuple[int, int, bool]


class _Walk:
    """Element headers of one encoded sequence value, read by offset."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data, self.implicit, self.little = data, implicit, little
        self.tag = struct.Struct("<HH" if little else ">HH")
        self.u32 = struct.Struct("<I" if little else ">I")
        self.u16 = struct.Struct("<H" if little else ">H")

    def value(self, span: _Span | None) -> bytes:
        return b"" if span is None else self.data[span[0] : span[1]]

    def text(self, span: _Span | None) -> str:
        return self.value(span).decode("ascii", "replace").strip(" \x00")

    def items(self, span: _Span | None) -> list[dict[int, _Span]]:
        """The elements of each item of the sequence whose value is ``span``."""
        if span is None:
            return []
        pos, end, undefined = span
        out = []
        while pos < end:
            group, element = self.tag.unpack_from(self.data, pos)
            (length,) = self.u32.unpack_from(self.data, pos + 4)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END and undefined:
                break
            if tag != _ITEM:
                raise MalformedDataset(f"expected an item in the ROI Contour Sequence at offset {pos - 8}")
            elements, pos = self._item(pos, end if length == _UNDEFINED else pos + length, length == _UNDEFINED)
            out.append(elements)
        return out

    def _item(self, pos: int, end: int, undefined: bool) -> tuple[dict[int, _Span], int]:
        """The elements of one item (first occurrence of each tag) and where the item ends."""
        elements: dict[int, _Span] = {}
        while pos < end:
            group, element = self.tag.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                return elements, pos + 8
            if self.implicit:
                (length,) = self.u32.unpack_from(self.data, pos + 4)
                vr, pos = None, pos + 8
            else:
                vr = self.data[pos + 4 : pos + 6]
                if vr == b"UN":
                    raise _Unusual
                if vr in _LONG_VRS:
                    (length,) = self.u32.unpack_from(self.data, pos + 8)
                    pos += 12
                else:
                    (length,) = self.u16.unpack_from(self.data, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                stop = sequence_end(self.data, pos, self.implicit, self.little)
                elements.setdefault(tag, (pos, stop, True))
                pos = stop
            else:
                if pos + length > len(self.data):
                    raise MalformedDataset(f"({group:04X},{element:04X}) runs past the ROI Contour Sequence")
                elements.setdefault(tag, (pos, pos + length, False))
                pos += length
        if undefined:
            raise MalformedDataset("an item of the ROI Contour Sequence has no delimiter")
        return elements, pos
