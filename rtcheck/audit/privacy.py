"""Pseudonyms and scrubbing for the audit's outputs.

A trial QA office shares audit results with people who must not see who the patients
are, so nothing the audit writes may hold a patient's name or original patient id: the
id becomes a keyed hash (HMAC-SHA256) that is the same in every run made with the same
key, the name disappears, and file paths are written relative to the submission root.
Reports are scrubbed as data (every string, keys included), not by pattern-matching the
rendered JSON, so that escaping can never hide an occurrence from the replacement.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..errors import RtcheckError

KEY_FILE = "pseudonym.key"
PSEUDONYM_PREFIX = "pt-"
NAME_PLACEHOLDER = "[name]"
#: Name components shorter than this (initials) are left alone: replacing every "J" would
#: wreck the text and identify nobody.
_MIN_NAME_TOKEN = 2


class PseudonymKeyError(RtcheckError):
    """The pseudonym key cannot be read, or is not the key this audit folder was made with."""


@dataclass(frozen=True)
class PseudonymKey:
    """The secret of the keyed hash; ``fingerprint`` identifies it without revealing it."""

    secret: bytes

    def pseudonym(self, patient_id: str) -> str:
        digest = hmac.new(self.secret, patient_id.encode("utf-8"), sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:16]

    def digest(self, text: str) -> str:
        """A keyed hash of any text (file paths in the hash cache), full length."""
        return hmac.new(self.secret, b"path\0" + text.encode("utf-8"), sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        return hmac.new(self.secret, b"rtcheck audit key fingerprint", sha256).hexdigest()[:16]


def load_or_create_key(out_dir: Path, key_file: Path | None) -> PseudonymKey:
    """The key from ``key_file``, else the audit's own key (created once, mode 0600)."""
    if key_file is not None:
        try:
            secret = key_file.read_bytes().strip()
        except OSError as exc:
            raise PseudonymKeyError(f"{key_file}: cannot read the pseudonym key ({exc.strerror or exc})") from exc
        if len(secret) < 16:
            raise PseudonymKeyError(f"{key_file}: a pseudonym key needs at least 16 characters (e.g. 64 hex digits)")
        return PseudonymKey(secret)
    path = out_dir / KEY_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    return PseudonymKey(path.read_bytes().strip())


def name_variants(patient_name: str) -> list[str]:
    """The components of a DICOM person name (``Family^Given^Middle^Prefix^Suffix``, with
    ``=``-separated alphabetic/ideographic/phonetic groups), longest first."""
    parts = re.split(r"[\^=\s,]+", patient_name)
    return sorted({p for p in parts if len(p) >= _MIN_NAME_TOKEN}, key=len, reverse=True)


def _fold(text: str) -> tuple[str, Sequence[int]]:
    """The canonical caseless form of ``text`` (NFD of the case-folded NFD, per character),
    and for each of its characters the index of the character of ``text`` it came from.

    Comparing folded forms matches ``Müller`` whether it was written composed (NFC, as
    most systems write DICOM) or decomposed (NFD, as macOS writes file names), and in any
    case (``MÜLLER``, ``Straße``/``STRASSE``).
    """
    if text.isascii():  # the common case: one folded character per character
        return text.lower(), range(len(text))
    parts: list[str] = []
    origin: list[int] = []
    for i, char in enumerate(text):
        folded = unicodedata.normalize("NFD", unicodedata.normalize("NFD", char).casefold())
        parts.append(folded)
        origin.extend([i] * len(folded))
    return "".join(parts), origin


def caseless(text: str) -> str:
    """``text`` in the form patient ids and names are compared in (see :func:`_fold`)."""
    return _fold(text)[0]


def _is_word_char(text: str, index: int) -> bool:
    return 0 <= index < len(text) and text[index].isalnum()


@dataclass
class Scrubber:
    """Replaces root prefixes, patient ids and patient names in text.

    ``roots`` maps an absolute folder prefix (ending with a separator) to what replaces it
    (``""``, or the root's folder name when the audit has several roots). Patient ids are
    replaced wherever they occur, since a folder named ``MRN123_CT`` identifies the patient
    as well as one named ``MRN123``. Name components are replaced where they stand as words
    (between characters that are not letters or digits, so ``Doe_Jane`` loses both): inside
    another word they are some other word. Both are matched caseless and whatever the
    Unicode normalisation (:func:`_fold`); the text comes back in NFC.
    """

    roots: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._roots = [(unicodedata.normalize("NFC", prefix), replacement) for prefix, replacement in self.roots]
        self._ids = sorted(
            ((caseless(k), v) for k, v in self.ids.items() if k.strip()), key=lambda kv: len(kv[0]), reverse=True
        )
        self._names = [(n, NAME_PLACEHOLDER) for n in sorted({caseless(n) for n in self.names if n}, key=len)[::-1]]

    def text(self, value: str) -> str:
        value = unicodedata.normalize("NFC", value)
        for prefix, replacement in self._roots:
            if prefix in value:
                value = value.replace(prefix, replacement)
            if value == prefix.rstrip("/\\"):
                value = replacement.rstrip("/\\") or "."
        value = _replace(value, self._ids, whole_words=False)
        return _replace(value, self._names, whole_words=True)

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, strings, numbers) with every string scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def path(self, path: Path | str) -> str:
        """A path relative to its root, with patient ids and names replaced, in POSIX form."""
        return self.text(str(path)).replace("\\", "/")


def _replace(text: str, needles: Sequence[tuple[str, str]], *, whole_words: bool) -> str:
    """``text`` with every caseless occurrence of each needle (already folded, longest first)
    replaced; with ``whole_words``, only occurrences not inside a longer word."""
    if not needles or not text:
        return text
    folded, origin = _fold(text)
    taken = bytearray(len(text))
    spans: list[tuple[int, int, str]] = []
    for needle, replacement in needles:
        at = folded.find(needle)
        while at != -1:
            end = at + len(needle)
            # Whole characters of the text only: not the "ss" of a "ß", not a "u" without its umlaut.
            whole = (at == 0 or origin[at - 1] != origin[at]) and (end == len(folded) or origin[end] != origin[end - 1])
            first, last = origin[at], origin[end - 1] + 1
            if (
                whole
                and not any(taken[first:last])
                and not (whole_words and (_is_word_char(text, first - 1) or _is_word_char(text, last)))
            ):
                spans.append((first, last, replacement))
                taken[first:last] = b"\x01" * (last - first)
            at = folded.find(needle, at + 1)
    if not spans:
        return text
    out, pos = [], 0
    for first, last, replacement in sorted(spans):
        out.append(text[pos:first] + replacement)
        pos = last
    out.append(text[pos:])
    return "".join(out)


def scrubber_for(key: PseudonymKey, roots: list[tuple[str, str]], patients: Iterable[tuple[str, str]]) -> Scrubber:
    """A scrubber for ``patients`` ((patient id, patient name) pairs)."""
    ids: dict[str, str] = {}
    names: set[str] = set()
    for patient_id, patient_name in patients:
        if patient_id:
            ids[patient_id] = key.pseudonym(patient_id)
        names.update(name_variants(patient_name))
    return Scrubber(roots, ids, sorted(names, key=len, reverse=True))
