"""The DICOM standard's module tables for RT objects, as shipped in ``_standard_tables.json``.

The Type 1/2 conformance check needs, for each RT IOD, its modules (with usage) and each
module's attributes (keyword, type, sequence path). highdicom ships these tables generated
from the standard itself, but as one 22 MB file for every IOD, which takes about a second to
parse. :func:`build` extracts the RT IODs' part, and of their attributes those the check can
report on: Type 1 and 2 attributes, and sequences (their items hold more). Regenerate the
shipped file after upgrading highdicom or pydicom (a test compares the two):

    python -m rtcheck.standard_tables
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

IODS = ("rt-plan", "rt-ion-plan", "rt-structure-set", "rt-dose")
OUTPUT = Path(__file__).resolve().parent / "_standard_tables.json"


@cache
def load() -> Any:
    """The shipped tables: ``{"iods": {iod: [module...]}, "modules": {module: [attribute...]}}``."""
    return json.loads((resources.files("rtcheck") / "_standard_tables.json").read_text(encoding="utf-8"))


def build() -> dict[str, Any]:
    """The tables, extracted from the installed highdicom (a test/development dependency)."""
    folder = resources.files("highdicom") / "_standard"
    iod_modules = json.loads((folder / "iod_module_map.json").read_text(encoding="utf-8"))
    module_attributes = json.loads((folder / "module_attribute_map.json").read_text(encoding="utf-8"))
    iods = {iod: [{"key": m["key"], "usage": m["usage"]} for m in iod_modules[iod]] for iod in IODS}
    modules = sorted({m["key"] for mods in iods.values() for m in mods})
    return {
        "source": f"highdicom {version('highdicom')} _standard tables (generated from the DICOM standard)",
        "iods": iods,
        "modules": {
            key: [
                {"keyword": a["keyword"], "type": a["type"], "path": a["path"]}
                for a in module_attributes[key]
                if _checked(a["keyword"], a["type"])
            ]
            for key in modules
        },
    }


def _checked(keyword: str, attribute_type: str) -> bool:
    """Whether the conformance check reads an attribute: Type 1 or 2, or a sequence.

    The others (Types 1C, 2C and 3) can give no finding themselves; leaving them out makes
    the shipped tables a fifth of their size, quicker to load for every check.
    """
    if attribute_type in ("1", "2"):
        return True
    tag = tag_for_keyword(keyword)
    return tag is not None and dictionary_VR(tag) == "SQ"


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
