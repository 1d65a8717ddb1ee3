"""What a received object must be before the node stores it: well formed, with valid UIDs.

A sender controls every byte of a C-STORE. These checks run on the encoded data set before
anything reaches the disk, and say which C-STORE failure status to answer with, so a
malformed or lying object is refused instead of acknowledged.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.filereader import read_dataset

from ..wellformed import FileReader, InflatingReader, MalformedDataset, Reader, TooLarge, inflated_size, walk

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
# Received objects


@dataclass(frozen=True)
class ObjectHeader:
    """The few attributes of a received object the node needs, validated."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str


#: The top-level elements the header is made of; SpecificCharacterSet decodes PatientID.
_HEADER_TAGS = frozenset({0x00080005, 0x00080016, 0x00080018, 0x0020000D, 0x00100020})


def read_header(
    path: Path, transfer_syntax: str, request_sop_class: str, request_sop_instance: str, inflate_limit: int
) -> ObjectHeader:
    """Check a received object (a file: preamble, file meta, data set) and return its header.

    ``transfer_syntax`` is the one of the presentation context the object came in. The data
    set is walked from the file a window at a time, and a deflated one is inflated as the
    walk goes, after a first pass made sure it inflates to no more than ``inflate_limit``
    bytes (a deflate bomb is a few kB on the wire): memory stays bounded whatever the size
    of the object. The header's elements, kept by the walk, are decoded by pydicom from
    their raw bytes. Raises :class:`StoreError` with the status to answer when the data set
    is malformed, a UID is invalid, or the data set contradicts its request.
    """
    syntax = pydicom.uid.UID(transfer_syntax)
    try:
        with path.open("rb") as fh:
            offset = _file_meta_end(fh.read(144))
            size = path.stat().st_size - offset
            if syntax.is_deflated:
                reader: Reader = InflatingReader(fh, offset, inflated_size(fh, offset, inflate_limit))
                implicit = False
            elif syntax.is_little_endian:
                reader, implicit = FileReader(fh, offset, size), bool(syntax.is_implicit_VR)
            else:
                raise StoreError(STATUS_MALFORMED, f"transfer syntax {syntax} is not accepted")
            raw = walk(reader, implicit, capture=_HEADER_TAGS)
        ds = read_dataset(BytesIO(b"".join(raw[t] for t in sorted(raw))), implicit, True)
        header = ObjectHeader(
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
        )
    except TooLarge as exc:
        raise StoreError(STATUS_OUT_OF_RESOURCES, f"deflated data set {exc}") from exc
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
    """Offset of the data set in preamble + 'DICM' + file meta, from (0002,0000) group length
    (``encoded``: at least its first 144 bytes)."""
    if len(encoded) < 144 or encoded[128:132] != b"DICM" or encoded[132:136] != b"\x02\x00\x00\x00":
        raise StoreError(STATUS_MALFORMED, "file meta without a group length")
    (group_length,) = struct.unpack_from("<I", encoded, 140)
    return 144 + group_length
