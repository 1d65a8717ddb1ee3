"""Structure names as centres write them, reduced to one comparable form.

Centres of one trial name the same organ in many ways: ``Lung_L`` (TG-263), ``Lt Lung``,
``LUNG LEFT``, ``L_Lung`` (TG-263's reverse order), ``Spinal Cord`` and ``SpinalCord``.
TG-263 exists because of this; a check shared across centres has to see through it. The
canonical form of a name:

* ignores case and surrounding blanks;
* treats spaces, ``_``, ``-`` and ``.`` as the same separator and then drops them, so that
  ``Spinal Cord``, ``Spinal_Cord`` and ``SpinalCord`` coincide;
* takes a laterality written as ``L``/``Lt``/``Left`` or ``R``/``Rt``/``Right``, as a word
  before or after the organ, and writes it the TG-263 way, as a ``_l``/``_r`` suffix.

Protocol patterns (shell-style globs) go through the same reduction, so a pattern written
in TG-263 form (``Lung_L``, ``Esophagus_*``) matches every spelling that reduces to it.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

_SEPARATORS = re.compile(r"[\s_\-.]+")
_LEFT = frozenset({"l", "lt", "left"})
_RIGHT = frozenset({"r", "rt", "right"})


@lru_cache(maxsize=4096)
def canonical(name: str) -> str:
    """The comparable form of a structure name or a glob pattern (``*``/``?`` pass through).

    Remembered: every ROI name is compared with every pattern of every role, so each
    name and pattern would otherwise be reduced dozens of times per course.
    """
    words = [w for w in _SEPARATORS.split(name.strip().casefold()) if w]
    side = ""
    if len(words) > 1:
        for index in (-1, 0):
            if words[index] in _LEFT or words[index] in _RIGHT:
                side = "_l" if words[index] in _LEFT else "_r"
                del words[index]
                break
    return "".join(words) + side


def glob_matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the shell-style ``pattern``, as written or in canonical form."""
    if _matches(name.strip().casefold(), pattern.casefold()):
        return True
    return _matches(canonical(name), canonical(pattern))


def _matches(name: str, pattern: str) -> bool:
    """:func:`fnmatch.fnmatchcase`, without a regular expression where a string test is the same.

    Nearly every pattern of a protocol is a name, ``name*``, ``*name`` or ``*name*``, and
    each is tried in a few forms: fnmatch would compile a regular expression for each form
    (some 100 per check, 2-3 ms at every start of the program).
    """
    core = pattern.strip("*")
    if "*" in core or "?" in core or "[" in core:
        return fnmatch.fnmatchcase(name, pattern)
    if pattern.startswith("*"):
        return core in name if pattern.endswith("*") else name.endswith(core)
    return name.startswith(core) if pattern.endswith("*") else name == core
