"""One truncation check for files and received objects: the walk over a data set's element headers.

The node walks what a sender sends before acknowledging it (tests/test_scp.py); the file
reader walks every RT file before it is measured. These tests cover the encodings a file
may come in, whole and cut short: with file meta or without (some planning systems write
a bare data set), implicit or explicit VR, little or big endian, deflated.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from rtcheck.dicomio import read_dataset
from rtcheck.errors import InputError
from rtcheck.wellformed import MalformedDataset, check_well_formed, data_set_start


def _plan(fixtures_dir: Path) -> pydicom.Dataset:
    return pydicom.dcmread(fixtures_dir / "compliant" / "RS.dcm")


def _encoded(ds: pydicom.Dataset, path: Path, syntax: str | None) -> Path:
    if syntax is None:  # a bare data set: no preamble, no file meta, implicit VR little endian
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    elif syntax == ExplicitVRBigEndian:  # retired, still read by pydicom: rewriting needs forcing
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    "syntax",
    [None, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
    ids=["bare", "implicit", "big-endian", "deflated"],
)
def test_every_encoding_reads_whole_and_is_refused_cut_short(fixtures_dir: Path, tmp_path: Path, syntax) -> None:
    source = _plan(fixtures_dir)
    path = _encoded(source, tmp_path / "RS.dcm", syntax)
    ds = read_dataset(path)
    assert len(ds.ROIContourSequence) == len(source.ROIContourSequence)
    data = path.read_bytes()
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{fraction}.dcm"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(InputError, match=r"cut\d.*: truncated or corrupt DICOM"):
            read_dataset(cut)


def test_the_data_set_starts_after_the_file_meta_even_without_its_group_length(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    path = fixtures_dir / "compliant" / "RP.SFRT.dcm"
    data = path.read_bytes()
    start = data_set_start(data)
    assert data[start : start + 2] == b"\x08\x00"  # (0008,xxxx): the first element of the data set
    without_length = data[:132] + data[144:]  # (0002,0000) removed
    assert without_length[data_set_start(without_length) :] == data[start:]
    assert data_set_start(data[start:]) == 0  # a bare data set starts at its first byte


def test_a_length_running_past_the_end_is_named() -> None:
    element = b"\x08\x00\x16\x00UI\x1a\x00" + b"1.2.840.10008.5.1.4.1.1.48"  # 26 bytes claimed, 26 given
    check_well_formed(element, implicit_vr=False)
    with pytest.raises(MalformedDataset, match=r"\(0008,0016\) at offset 0 claims 26 bytes, only 20 remain"):
        check_well_formed(element[:-6], implicit_vr=False)
