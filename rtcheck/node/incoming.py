"""Objects as they arrive: written to disk fragment by fragment, with the size limit on the wire.

By default pynetdicom gathers every C-STORE data set in memory and hands the handler the
whole object; a 1 GB object then costs 1 GB of memory (more while it is copied), and
``max_object_mb`` could only be applied after the fact. With pynetdicom's
``STORE_RECV_CHUNKED_DATASET`` each P-DATA fragment is appended to a file instead, and the
handler gets the file's path. rtcheck gives pynetdicom that file (pynetdicom asks
``tempfile.NamedTemporaryFile`` for it, by that name in its ``dimse_messages`` module,
which this module replaces in the node's process): :class:`IncomingFile` lives in the
storage folder, so a stored object is renamed into place instead of copied, and it stops
keeping bytes as soon as the object exceeds the limit, so an oversized object costs
neither memory nor disk. The sender still gets a proper failure status once its data set
is complete (DICOM has no way to answer a C-STORE before that).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages

from ..durable import TEMP_SUFFIX, make_folders

INCOMING_FOLDER = ".incoming"


class IncomingFile:
    """The file one C-STORE data set is written into as it arrives (file meta included).

    It offers what pynetdicom uses of a ``NamedTemporaryFile``: ``name``, ``write``,
    ``file.flush`` and ``close``.
    """

    def __init__(self, folder: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".recv-", suffix=TEMP_SUFFIX)
        os.fchmod(fd, 0o644)  # it becomes the stored object: the mode stored objects always had
        self.file = os.fdopen(fd, "wb")
        self.name = name
        self.limit = limit
        self.received = 0
        self.oversize = False
        self.last_write = time.monotonic()

    def write(self, data: bytes | memoryview) -> int:
        n = len(data)
        self.received += n
        self.last_write = time.monotonic()
        if self.oversize:
            return n
        if self.received > self.limit:
            self.oversize = True  # keep counting, keep nothing: the sender gets 0xA700 at the end
            self.file.truncate(0)
            return n
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()


class Incoming:
    """The node's incoming folder and the files open in it (one per C-STORE in progress)."""

    def __init__(self, storage: Path, limit: int) -> None:
        self.folder = storage / INCOMING_FOLDER
        make_folders(self.folder)
        self.limit = limit
        self._open: dict[str, IncomingFile] = {}
        self._lock = threading.Lock()

    def new_file(self, *_args: Any, **_kwargs: Any) -> IncomingFile:
        """What pynetdicom calls instead of ``NamedTemporaryFile``."""
        incoming = IncomingFile(self.folder, self.limit)
        with self._lock:
            self._open[incoming.name] = incoming
        return incoming

    def take(self, path: Path | str) -> IncomingFile | None:
        """The file of a complete C-STORE data set, no longer tracked here."""
        with self._lock:
            return self._open.pop(str(path), None)

    def sweep(self, idle_s: float) -> int:
        """Delete the files of transfers that stopped (an aborted association leaves its file)."""
        now = time.monotonic()
        with self._lock:
            stale = [f for f in self._open.values() if now - f.last_write > idle_s]
            for f in stale:
                del self._open[f.name]
        for f in stale:
            f.close()
            Path(f.name).unlink(missing_ok=True)
        return len(stale)

    def install(self) -> None:
        """Make pynetdicom write every received data set into this folder (for this process)."""
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = self.new_file  # type: ignore[assignment]
