"""Durable files: what the node, the outbox and the audit rely on when a process dies mid-write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rtcheck.durable import (
    TEMP_SUFFIX,
    _write_atomically,
    atomic_copy,
    atomic_write,
    file_sha256,
    make_folders,
    remove_temporary_files,
)


def test_atomic_write_replaces_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_write_that_fails_half_way_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write(target, b"complete old report")

    def half_then_fail(fh) -> None:
        fh.write(b"half of a new rep")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"complete old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_copy_copies_large_files_exactly(tmp_path: Path) -> None:
    source = tmp_path / "source.dcm"
    source.write_bytes(bytes(range(256)) * 20_000)  # several copy blocks
    atomic_copy(source, tmp_path / "copy.dcm")
    assert (tmp_path / "copy.dcm").read_bytes() == source.read_bytes()


def test_temporary_files_a_crash_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    make_folders(tmp_path / "a" / "b")
    leftover = tmp_path / "a" / "b" / f".report.json.0123456789ab{TEMP_SUFFIX}"
    leftover.write_bytes(b"partial")
    kept = tmp_path / "a" / "b" / "report.json"
    kept.write_bytes(b"whole")
    assert remove_temporary_files(tmp_path) == 1
    assert not leftover.exists() and kept.read_bytes() == b"whole"


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = b"\x00rtcheck\xff" * 300_000  # more than one read block
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
