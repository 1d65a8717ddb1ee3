"""Numbers that are not numbers: every IS and DS value of the example course, spoiled one at
a time, must end in a documented outcome (a finding, a not-evaluable rule, an input error
naming the file), never in an internal error.

pydicom keeps a value it cannot convert as written (with a warning) or, for some, raises
while converting it on first access; either reaches rtcheck wherever the value is read.
Each (file kind, attribute) is spoiled at its first occurrence, inside the first item of
any sequence on the way.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from rtcheck.cli import main
from rtcheck.errors import ExitCode

Path_ = tuple[int, ...]  # tags, with the item index 0 after each sequence's tag


def _numeric_elements(ds: Dataset, path: Path_ = ()) -> Iterator[Path_]:
    for element in ds:
        if element.VR in ("IS", "DS"):
            yield (*path, element.tag)
        elif element.VR == "SQ" and len(element.value):
            yield from _numeric_elements(element.value[0], (*path, element.tag, 0))


def _spoil(ds: Dataset, path: Path_, payload: bytes) -> None:
    node = ds
    steps = list(path[:-1])
    while steps:
        tag, index = steps.pop(0), steps.pop(0)
        node = node[tag].value[index]
    tag = path[-1]
    node[tag] = RawDataElement(Tag(tag), node[tag].VR, len(payload), payload, 0, False, True)


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom's, on reading each spoiled value
@pytest.mark.parametrize("payload", [b"abc ", b"1e999 ", b"1\\2 "], ids=["text", "overflow", "two-values"])
def test_no_spoiled_number_ends_in_an_internal_error(
    course_dir, tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: bytes
) -> None:
    course = course_dir("compliant")
    seen: set[tuple[str, int]] = set()
    crashes = []
    for file in sorted(course.glob("*.dcm")):
        for path in _numeric_elements(pydicom.dcmread(file)):
            if (file.name[:2], path[-1]) in seen:
                continue
            seen.add((file.name[:2], path[-1]))
            work = tmp_path / "c"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(course, work)
            ds = pydicom.dcmread(work / file.name)
            _spoil(ds, path, payload)
            ds.save_as(work / file.name)
            code = main([str(work), "--quiet"])
            err = capsys.readouterr().err
            what = f"{file.name} {pydicom.datadict.keyword_for_tag(path[-1])}"
            if code == ExitCode.INTERNAL_ERROR:
                crashes.append(f"{what}: {err.strip().splitlines()[-1]}")
            elif code == ExitCode.INPUT_ERROR:
                assert file.name in err, what  # the one-line error names the file
    assert len(seen) > 40  # the plan's, the structure set's and the doses' numbers were all tried
    assert crashes == []
