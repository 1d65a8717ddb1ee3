"""Files that survive a crash or a power cut, and the hash that names what a file holds.

The node must lose nothing it acknowledged, its outbox must send every report once, and an
audit killed half-way must leave no half-written report. All of them write the same way:
into a temporary file in the destination folder, fsync, rename over the destination, fsync
of the folder. A reader then sees the old content or the new, never a mix, and once the
call returns the new content is on disk even if the power goes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: Suffix of the temporary files; :func:`remove_temporary_files` deletes what a crash left.
TEMP_SUFFIX = ".rtcheck-tmp"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new content."""
    _write_atomically(path, lambda fh: fh.write(data))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` the way :func:`atomic_write` writes (in 1 MiB blocks)."""
    with source.open("rb") as src:
        _write_atomically(path, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with open(fd, "wb", closefd=True) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def make_folders(folder: Path) -> None:
    """``mkdir -p`` whose new folders survive a power cut (each new entry's parent is fsync'd)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue
        fsync_folder(new.parent)


def fsync_folder(folder: Path) -> None:
    """Make the creation, rename or removal of an entry of ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporary_files(root: Path) -> int:
    """Delete the temporary files a crash left below ``root`` (never renamed, so never complete)."""
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes: how reports, audits and the node identify exactly what was checked."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
