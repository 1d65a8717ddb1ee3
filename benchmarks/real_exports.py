"""Real exports that the tests cannot carry: checked by hand where GitHub is reachable.

Some public exports may not be committed (AGPL-3.0: livingag/pyTG43) and tests cannot fetch
them (CI reaches only PyPI and Debian). This script downloads them to a folder, runs rtcheck
on each and checks what a physicist expects, printing one line per check; exit 1 when one
fails. The files stay in that folder as downloaded inputs; nothing of them enters rtcheck.

    python benchmarks/real_exports.py [--data DIR]

* ``pyTG43/examples/rotated`` — an ARIA PDR brachytherapy plan with its structure set on a
  tilted image set (closed contours coplanar, about 6 degrees from axial; applicators as
  OPEN_NONPLANAR): no integrity error for the coplanar contours, one warning for the set,
  and the rules that would measure a tilted structure not evaluable, saying why.
* ``pyTG43/examples/HDR`` — an HDR plan whose files hold a UID of 'UNKNOWN': one warning line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from rtcheck.cli import main

RAW = "https://raw.githubusercontent.com/livingag/pyTG43/master/examples"
FILES = {"rotated": ("RP.dcm", "RS.dcm"), "HDR": ("RP.HDR.dcm", "RS.HDR.dcm")}


def download(data: Path) -> None:
    for folder, names in FILES.items():
        (data / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            target = data / folder / name
            if not target.exists():
                urllib.request.urlretrieve(f"{RAW}/{folder}/{name}", target)


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def checks(data: Path) -> list[tuple[str, bool]]:
    results = []
    code, out, _ = run(str(data / "rotated"), "--format", "json")
    (report,) = json.loads(out)["reports"]
    contour_errors = [f for f in report["integrity"] if f["severity"] == "error" and f["keyword"] == "ContourData"]
    tilted = [f for f in report["integrity"] if "tilted planes" in f["message"]]
    rules = {r["id"]: r for r in report["rules"]}
    results.append(("rotated: no integrity error for coplanar contours", not contour_errors))
    results.append(("rotated: one warning names the tilted planes", len(tilted) == 1))
    results.append(
        (
            "rotated: structures.integrity not evaluable, saying why",
            rules["structures.integrity"]["status"] == "not_evaluable"
            and "tilted planes" in rules["structures.integrity"]["message"],
        )
    )
    results.append(("rotated: ends in a verdict, not a traceback", code in (0, 1, 2, 3)))
    code, _, err = run(str(data / "HDR"))
    odd = [line for line in err.splitlines() if "Invalid value for VR UI" in line]
    results.append(("HDR: one warning line per pydicom problem", len(odd) == 1))
    results.append(("HDR: ends in a verdict, not a traceback", code in (0, 1, 2, 3)))
    return results


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="keep the downloads here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        download(data)
        results = checks(data)
    for name, ok in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main_())
