"""Is an encoded DICOM data set whole? One walk over its element headers, values skipped.

pydicom reads lazily and forgives a data set cut short: a file or a C-STORE cut inside a
sequence or inside the pixel data decodes without complaint, shorter. Both the node (a
received object, before it is acknowledged) and the reader of files (before a file is
checked) walk the encoded bytes with :func:`check_well_formed`, so a truncated or
malformed data set is refused, never measured.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from pydicom.datadict import dictionary_VR


class MalformedDataset(ValueError):
    """The encoded data set is not a well-formed sequence of DICOM data elements."""


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_MAX_DEPTH = 32


@dataclass(frozen=True)
class _Order:
    """The integer layouts of one byte order."""

    tag: struct.Struct
    u32: struct.Struct
    u16: struct.Struct


_LITTLE = _Order(struct.Struct("<HH"), struct.Struct("<I"), struct.Struct("<H"))
_BIG = _Order(struct.Struct(">HH"), struct.Struct(">I"), struct.Struct(">H"))
#: How much of a data set a file reader holds at once: the walk reads element headers only.
_WINDOW = 1 << 20
#: Top-level values longer than this are not kept by :func:`walk` (UIDs and ids are short).
_MAX_CAPTURED = 1024


class Reader:
    """Bytes of a data set by offset, for a walk that only moves forward; ``length`` in bytes."""

    length: int

    def read(self, pos: int, size: int) -> bytes:
        raise NotImplementedError


class _BufferReader(Reader):
    def __init__(self, data: bytes | memoryview) -> None:
        self._buf = memoryview(data)
        self.length = len(self._buf)

    def read(self, pos: int, size: int) -> bytes:
        return bytes(self._buf[pos : pos + size])


class FileReader(Reader):
    """A data set in a file from ``offset``, read through a 1 MiB window (never loaded whole)."""

    def __init__(self, fh: BinaryIO, offset: int, length: int) -> None:
        self._fh, self._offset, self.length = fh, offset, length
        self._base, self._buf = 0, b""

    def read(self, pos: int, size: int) -> bytes:
        if not (self._base <= pos and pos + size <= self._base + len(self._buf)):
            self._fh.seek(self._offset + pos)
            self._base, self._buf = pos, self._fh.read(max(size, _WINDOW))
        start = pos - self._base
        return self._buf[start : start + size]


class InflatingReader(Reader):
    """A deflated data set in a file from ``offset``, inflated as the walk moves forward:
    never more than a window of it in memory. ``length`` is its inflated size
    (:func:`inflated_size`)."""

    def __init__(self, fh: BinaryIO, offset: int, length: int) -> None:
        fh.seek(offset)
        self._fh, self.length = fh, length
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._base, self._buf = 0, b""

    def _more(self) -> bytes:
        while True:
            if self._inflater.unconsumed_tail:
                chunk = self._inflater.decompress(self._inflater.unconsumed_tail, _WINDOW)
            else:
                raw = self._fh.read(_WINDOW)
                if not raw:
                    return self._inflater.flush()
                chunk = self._inflater.decompress(raw, _WINDOW)
            if chunk:
                return chunk

    def read(self, pos: int, size: int) -> bytes:
        if pos < self._base:
            raise MalformedDataset("the walk went back in a deflated data set")
        if pos > self._base + len(self._buf):  # skip a value: inflate it and drop it
            self._base += len(self._buf)
            self._buf = b""
            while True:
                chunk = self._more()
                if not chunk:
                    return b""
                if self._base + len(chunk) > pos:
                    self._buf = chunk
                    break
                self._base += len(chunk)
        self._buf = self._buf[pos - self._base :]
        self._base = pos
        while len(self._buf) < size:
            chunk = self._more()
            if not chunk:
                break
            self._buf += chunk
        return self._buf[:size]


def inflated_size(fh: BinaryIO, offset: int, limit: int) -> int:
    """Bytes a deflated data set (from ``offset`` in ``fh``) inflates to; :class:`TooLarge` beyond ``limit``.

    A deflate bomb is a few kB or MB on the wire and gigabytes inflated: the data are
    inflated a window at a time and counted, never held.
    """
    fh.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while True:
            raw = inflater.unconsumed_tail or fh.read(_WINDOW)
            total += len(inflater.decompress(raw, _WINDOW) if raw else inflater.flush())
            if total > limit:
                raise TooLarge(f"inflates to more than {limit} bytes")
            if not raw:
                return total
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate ({exc})") from exc


def data_set_start(data: bytes | memoryview) -> int:
    """Where the data set of a file starts: after the preamble, ``DICM`` and the file meta.

    The file meta group (always explicit VR little endian) is walked element by element
    rather than trusted to its group length, which writers get wrong or leave out; a file
    without preamble or file meta is a data set from its first byte.
    """
    pos = 132 if bytes(data[128:132]) == b"DICM" else 0
    while pos + 8 <= len(data) and _LITTLE.u16.unpack_from(data, pos)[0] == 0x0002:
        if bytes(data[pos + 4 : pos + 6]) in _LONG_VRS:
            pos += 12 + _LITTLE.u32.unpack_from(data, pos + 8)[0]
        else:
            pos += 8 + _LITTLE.u16.unpack_from(data, pos + 6)[0]
    return pos


def check_well_formed(data: bytes | memoryview, implicit_vr: bool, little_endian: bool = True) -> None:
    """Walk every element, item and fragment of a data set without decoding values.

    pydicom reads lazily and forgives a data set cut short, so a truncated object would
    decode "fine" (and be acknowledged, or checked as if whole); this walk checks that each
    length fits in what remains and that every sequence and item is closed. It costs one
    pass over the element headers (values are skipped, not converted).
    """
    walk(_BufferReader(data), implicit_vr, little_endian)


def walk(
    reader: Reader, implicit_vr: bool, little_endian: bool = True, capture: frozenset[int] = frozenset()
) -> dict[int, bytes]:
    """:func:`check_well_formed` over a :class:`Reader` (a file, or a deflated file inflated as it
    goes, in bounded memory); returns the raw top-level elements (header and value) whose
    tags are in ``capture``."""
    captured: dict[int, bytes] = {}
    order = _LITTLE if little_endian else _BIG
    _walk_dataset(reader, 0, reader.length, implicit_vr, order, 0, False, captured, capture)
    return captured


def sequence_end(data: bytes | memoryview, pos: int, implicit_vr: bool, little_endian: bool = True) -> int:
    """Where an undefined-length sequence whose items start at ``pos`` ends (after its delimiter)."""
    return _walk_sequence(
        _BufferReader(data), pos, len(data), implicit_vr, _LITTLE if little_endian else _BIG, 1, defined=False
    )


def _walk_dataset(
    rd: Reader,
    pos: int,
    end: int,
    implicit: bool,
    order: _Order,
    depth: int,
    until_delimiter: bool,
    captured: dict[int, bytes] | None = None,
    capture: frozenset[int] = frozenset(),
) -> int:
    while pos < end:
        if end - pos < 8:
            raise MalformedDataset(f"{end - pos} stray bytes at offset {pos} (truncated?)")
        head = rd.read(pos, 12 if end - pos >= 12 else 8)
        group, element = order.tag.unpack_from(head)
        tag = group << 16 | element
        if tag == _ITEM_END:
            if not until_delimiter:
                raise MalformedDataset(f"item delimiter outside an item at offset {pos}")
            return pos + 8
        if group == 0xFFFE:
            raise MalformedDataset(f"unexpected ({group:04X},{element:04X}) at offset {pos}")
        start = pos
        if implicit:
            vr = None
            (length,) = order.u32.unpack_from(head, 4)
            pos += 8
        else:
            vr = head[4:6]
            if not (vr.isalpha() and vr.isupper()):
                raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} has no valid VR")
            if vr in _LONG_VRS:
                if end - pos < 12:
                    raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} is cut short")
                (length,) = order.u32.unpack_from(head, 8)
                pos += 12
            else:
                (length,) = order.u16.unpack_from(head, 6)
                pos += 8
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and not implicit:
                pos = _walk_fragments(rd, pos, end, order)
            elif implicit or vr == b"SQ":
                pos = _walk_sequence(rd, pos, end, implicit, order, depth + 1, defined=False)
            elif vr == b"UN":  # an undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2)
                pos = _walk_sequence(rd, pos, end, True, order, depth + 1, defined=False)
            else:
                raise MalformedDataset(f"({group:04X},{element:04X}) has undefined length with VR {vr!r}")
            continue
        if length > end - pos:
            raise MalformedDataset(
                f"({group:04X},{element:04X}) at offset {start} claims {length} bytes, "
                f"only {end - pos} remain (truncated?)"
            )
        if vr == b"SQ" or (implicit and _is_sequence(tag)):
            _walk_sequence(rd, pos, pos + length, implicit, order, depth + 1, defined=True)
        elif captured is not None and tag in capture and length <= _MAX_CAPTURED:
            captured[tag] = rd.read(start, pos + length - start)
        pos += length
    if until_delimiter:
        raise MalformedDataset("an undefined-length item has no delimiter (truncated?)")
    return pos


def _walk_sequence(rd: Reader, pos: int, end: int, implicit: bool, order: _Order, depth: int, defined: bool) -> int:
    if depth > _MAX_DEPTH:
        raise MalformedDataset(f"sequences nested deeper than {_MAX_DEPTH}")
    while not (defined and pos == end):
        if end - pos < 8:
            raise MalformedDataset(f"sequence cut short at offset {pos} (truncated?)")
        head = rd.read(pos, 8)
        tag = order.tag.unpack_from(head)
        tag_value = tag[0] << 16 | tag[1]
        (length,) = order.u32.unpack_from(head, 4)
        pos += 8
        if tag_value == _SEQUENCE_END:
            return pos
        if tag_value != _ITEM:
            raise MalformedDataset(f"expected an item in a sequence at offset {pos - 8}")
        if length == _UNDEFINED:
            pos = _walk_dataset(rd, pos, end, implicit, order, depth, until_delimiter=True)
        elif length > end - pos:
            raise MalformedDataset(f"item at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
        else:
            _walk_dataset(rd, pos, pos + length, implicit, order, depth, until_delimiter=False)
            pos += length
    return pos


def _walk_fragments(rd: Reader, pos: int, end: int, order: _Order) -> int:
    while True:
        if end - pos < 8:
            raise MalformedDataset(f"encapsulated pixel data cut short at offset {pos} (truncated?)")
        head = rd.read(pos, 8)
        tag = order.tag.unpack_from(head)
        (length,) = order.u32.unpack_from(head, 4)
        pos += 8
        if (tag[0] << 16 | tag[1]) == _SEQUENCE_END:
            return pos
        if (tag[0] << 16 | tag[1]) != _ITEM or length == _UNDEFINED or length > end - pos:
            raise MalformedDataset(f"bad pixel data fragment at offset {pos - 8}")
        pos += length


@lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown: opaque bytes, its length was checked
        return False


class TooLarge(MalformedDataset):
    """A deflated data set inflates to more than it may."""


def inflate(data: bytes | memoryview, limit: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set, refusing more than ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate ({exc})") from exc
    if len(out) > limit:
        raise TooLarge(f"inflates to more than {limit} bytes")
    return out
