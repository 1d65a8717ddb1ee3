"""What a received object must be before the node stores it: well formed, with valid UIDs.

A sender controls every byte of a C-STORE. These checks run on the encoded data set before
anything reaches the disk, and say which C-STORE failure status to answer with, so a
malformed or lying object is refused instead of acknowledged.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from typing import TYPE_CHECKING

import pydicom
from pydicom.datadict import dictionary_VR

if TYPE_CHECKING:
    pass

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class StoreError(Exception):
    """An object cannot be stored; ``status`` is the C-STORE failure status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# C-STORE failure statuses (PS3.4 B.2.3): A7xx out of resources, A9xx data set does not
# match SOP class, Cxxx cannot understand.
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_INVALID_UID = 0xC001
STATUS_MALFORMED = 0xC002
STATUS_UID_MISMATCH = 0xC003


def uid_problem(value: object) -> str | None:
    """Why ``value`` is not a valid DICOM UID (PS3.5 9.1), or None if it is one."""
    text = str(value) if value is not None else ""
    if not text:
        return "is empty"
    if len(text) > 64:
        return f"is {len(text)} characters long (at most 64)"
    if not _UID.fullmatch(text):
        return "is not dot-separated numbers without leading zeros"
    return None


# ---------------------------------------------------------------------------------------
# Well-formedness of a received data set


class MalformedDataset(ValueError):
    """The encoded data set is not a well-formed sequence of DICOM data elements."""


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_MAX_DEPTH = 32


def check_well_formed(data: bytes | memoryview, implicit_vr: bool) -> None:
    """Walk every element, item and fragment of a little-endian data set without decoding values.

    pydicom reads lazily and forgives a data set cut short, so a truncated object would
    decode "fine" and be acknowledged; this walk checks that each length fits in what
    remains and that every sequence and item is closed. It costs one pass over the
    element headers (values are skipped, not converted).
    """
    buf = memoryview(data)
    _walk_dataset(buf, 0, len(buf), implicit_vr, 0, until_delimiter=False)


def _walk_dataset(buf: memoryview, pos: int, end: int, implicit: bool, depth: int, until_delimiter: bool) -> int:
    while pos < end:
        if end - pos < 8:
            raise MalformedDataset(f"{end - pos} stray bytes at offset {pos} (truncated?)")
        group, element = struct.unpack_from("<HH", buf, pos)
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
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if not (vr.isalpha() and vr.isupper()):
                raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} has no valid VR")
            if vr in _LONG_VRS:
                if end - pos < 12:
                    raise MalformedDataset(f"({group:04X},{element:04X}) at offset {start} is cut short")
                (length,) = struct.unpack_from("<I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and not implicit:
                pos = _walk_fragments(buf, pos, end)
            elif implicit or vr == b"SQ":
                pos = _walk_sequence(buf, pos, end, implicit, depth + 1, defined=False)
            elif vr == b"UN":  # an undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2)
                pos = _walk_sequence(buf, pos, end, True, depth + 1, defined=False)
            else:
                raise MalformedDataset(f"({group:04X},{element:04X}) has undefined length with VR {vr!r}")
            continue
        if length > end - pos:
            raise MalformedDataset(
                f"({group:04X},{element:04X}) at offset {start} claims {length} bytes, "
                f"only {end - pos} remain (truncated?)"
            )
        if vr == b"SQ" or (implicit and _is_sequence(tag)):
            _walk_sequence(buf, pos, pos + length, implicit, depth + 1, defined=True)
        pos += length
    if until_delimiter:
        raise MalformedDataset("an undefined-length item has no delimiter (truncated?)")
    return pos


def _walk_sequence(buf: memoryview, pos: int, end: int, implicit: bool, depth: int, defined: bool) -> int:
    if depth > _MAX_DEPTH:
        raise MalformedDataset(f"sequences nested deeper than {_MAX_DEPTH}")
    while not (defined and pos == end):
        if end - pos < 8:
            raise MalformedDataset(f"sequence cut short at offset {pos} (truncated?)")
        tag = struct.unpack_from("<HH", buf, pos)
        tag_value = tag[0] << 16 | tag[1]
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8
        if tag_value == _SEQUENCE_END:
            return pos
        if tag_value != _ITEM:
            raise MalformedDataset(f"expected an item in a sequence at offset {pos - 8}")
        if length == _UNDEFINED:
            pos = _walk_dataset(buf, pos, end, implicit, depth, until_delimiter=True)
        elif length > end - pos:
            raise MalformedDataset(f"item at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
        else:
            _walk_dataset(buf, pos, pos + length, implicit, depth, until_delimiter=False)
            pos += length
    return pos


def _walk_fragments(buf: memoryview, pos: int, end: int) -> int:
    while True:
        if end - pos < 8:
            raise MalformedDataset(f"encapsulated pixel data cut short at offset {pos} (truncated?)")
        tag = struct.unpack_from("<HH", buf, pos)
        (length,) = struct.unpack_from("<I", buf, pos + 4)
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


def inflate(data: bytes | memoryview, limit: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set, refusing more than ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate ({exc})") from exc
    if len(out) > limit:
        raise StoreError(STATUS_OUT_OF_RESOURCES, f"inflates to more than {limit} bytes")
    return out


# ---------------------------------------------------------------------------------------
# Received objects


@dataclass(frozen=True)
class ObjectHeader:
    """The few attributes of a received object the node needs, validated."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str


_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "PatientID"]


def read_header(
    encoded: bytes, transfer_syntax: str, request_sop_class: str, request_sop_instance: str, inflate_limit: int
) -> ObjectHeader:
    """Check a received object (file meta + data set) and return its header.

    ``transfer_syntax`` is the one of the presentation context the object came in.
    ``inflate_limit`` caps what a deflated data set may inflate to (a deflate bomb is a
    few kB on the wire). Raises :class:`StoreError` with the status to answer when the
    data set is malformed, a UID is invalid, or the data set contradicts its request.
    """
    body = memoryview(encoded)[_file_meta_end(encoded) :]
    syntax = pydicom.uid.UID(transfer_syntax)
    try:
        if syntax.is_deflated:
            check_well_formed(inflate(body, inflate_limit), implicit_vr=False)
        elif syntax.is_little_endian:
            check_well_formed(body, implicit_vr=syntax.is_implicit_VR)
        else:
            raise StoreError(STATUS_MALFORMED, f"transfer syntax {syntax} is not accepted")
        ds = pydicom.dcmread(BytesIO(encoded), specific_tags=_HEADER_TAGS, stop_before_pixels=True)
        header = ObjectHeader(
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
        )
    except MalformedDataset as exc:
        raise StoreError(STATUS_MALFORMED, f"malformed data set: {exc}") from exc
    except StoreError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged input
        raise StoreError(STATUS_MALFORMED, f"data set unreadable ({exc})") from exc
    for name, value in (
        ("SOPClassUID", header.sop_class_uid),
        ("SOPInstanceUID", header.sop_instance_uid),
        ("StudyInstanceUID", header.study_instance_uid),
    ):
        problem = uid_problem(value)
        if problem:
            raise StoreError(STATUS_INVALID_UID, f"{name} {value[:80]!r} {problem}")
    if header.sop_class_uid != request_sop_class:
        raise StoreError(
            STATUS_SOP_CLASS_MISMATCH,
            f"SOPClassUID {header.sop_class_uid} differs from the request's {request_sop_class}",
        )
    if header.sop_instance_uid != request_sop_instance:
        raise StoreError(
            STATUS_UID_MISMATCH,
            f"SOPInstanceUID {header.sop_instance_uid} differs from the request's {request_sop_instance}",
        )
    return header


def _file_meta_end(encoded: bytes) -> int:
    """Offset of the data set in preamble + 'DICM' + file meta, from (0002,0000) group length."""
    if len(encoded) < 144 or encoded[128:132] != b"DICM" or encoded[132:136] != b"\x02\x00\x00\x00":
        raise StoreError(STATUS_MALFORMED, "file meta without a group length")
    (group_length,) = struct.unpack_from("<I", encoded, 140)
    return 144 + group_length
