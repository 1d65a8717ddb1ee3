"""Structure names across centres: canonical forms, roles by type, aliases, fail-closed exclusion."""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rtcheck.api import load_protocol
from rtcheck.assembly import CourseFiles
from rtcheck.course import Contour, Roi, SourceFile, StructureSet
from rtcheck.errors import ProtocolError
from rtcheck.names import canonical, glob_matches
from rtcheck.report import Report
from rtcheck.roles import match_roles


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Lung_L", "lung_l"),
        ("Lt Lung", "lung_l"),
        ("LEFT LUNG", "lung_l"),
        ("Lung Left", "lung_l"),
        ("L_Lung", "lung_l"),
        ("lung-lt", "lung_l"),
        ("Rt Lung", "lung_r"),
        ("Right Lung", "lung_r"),
        ("Spinal Cord", "spinalcord"),
        ("Spinal_Cord", "spinalcord"),
        ("ESOPHAGUS", "esophagus"),
        ("L", "l"),  # a lone letter is a name, not a laterality
    ],
)
def test_canonical_form(name: str, expected: str) -> None:
    assert canonical(name) == expected


def test_glob_matching_is_fnmatch_on_the_name_as_written_and_in_canonical_form() -> None:
    """Patterns shaped name, name*, *name, *name* are matched without fnmatch: same answers."""
    patterns = ["Lung_L", "lung*", "*lung", "*LUNG*", "*", "**", "", "lu?g", "l[ua]ng*", "*lu*ng*", "[!x]ung", "ptv_*"]
    names = ["Lung_L", "Lt Lung", "lungs", "left lung", "LUNG", "lu", "", " lung ", "lu\nng", "lung*", "PTV_LDRT"]
    for pattern, name in itertools.product(patterns, names):
        expected = fnmatch.fnmatchcase(name.strip().casefold(), pattern.casefold()) or fnmatch.fnmatchcase(
            canonical(name), canonical(pattern)
        )
        assert glob_matches(pattern, name) is expected, (pattern, name)


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("Lt Lung", "lungs"),
        ("Rt Lung", "lungs"),
        ("Lung Right", "lungs"),
        ("L Lung", "lungs"),
        ("Spinal Cord", "spinal_cord"),
        ("ESOPHAGUS", "esophagus"),
        ("External", "body"),
        ("Body", "body"),
        ("Brachial Plexus", None),
        ("Heart", "heart"),
    ],
)
def test_organs_are_found_whatever_the_spelling(name: str, role: str | None) -> None:
    protocol = load_protocol()
    found = [r for r, spec in protocol.roles.items() if spec.matches(name)]
    assert found == ([role] if role else [])


def _roi(number: int, name: str, itype: str | None) -> Roi:
    square = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]], dtype=float)
    return Roi(number, name, itype, (Contour("CLOSED_PLANAR", square),))


def _structure_set(*rois: Roi) -> StructureSet:
    source = SourceFile(Path("RS.dcm"), "RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3", "1.2.3", "0" * 64)
    return StructureSet(source, "1.2.3.4", {r.number: r for r in rois})


def test_targets_by_interpreted_type_but_never_a_possible_bone_or_brain_structure() -> None:
    ss = _structure_set(
        _roi(1, "Tumor Bed", "CTV"),
        _roi(2, "T5 Vertebra met", "GTV"),
        _roi(3, "Rib 7 lesion", "PTV"),
        _roi(4, "Brain Met 1", "GTV"),
        _roi(5, "Scar", "AVOIDANCE"),
        _roi(6, "PTV_6000", "PTV"),
    )
    roles = match_roles(load_protocol(), ss)
    assert [r.name for r in roles.rois("conventional_target")] == ["Tumor Bed", "PTV_6000"]
    assert roles.how[("conventional_target", 1)] == "RTROIInterpretedType CTV"
    assert roles.how[("conventional_target", 6)] == "name"
    refused = "\n".join(roles.refused)
    for name in ("T5 Vertebra met", "Rib 7 lesion"):
        assert name in refused
    assert [r.name for r in roles.rois("brain_met")] == ["Brain Met 1"]  # excluded from targets by name
    assert roles.assignments()["Tumor Bed"] == ["conventional_target (RTROIInterpretedType CTV)"]


def test_a_centres_aliases_file_adds_names(tmp_path: Path) -> None:
    aliases = tmp_path / "centre.yaml"
    aliases.write_text("aliases:\n  spinal_cord: [Moelle]\n  heart: ['Coeur*']\n")
    protocol = load_protocol(None, [aliases])
    ss = _structure_set(_roi(1, "moelle", "ORGAN"), _roi(2, "Coeur entier", "ORGAN"))
    roles = match_roles(protocol, ss)
    assert [r.name for r in roles.rois("spinal_cord")] == ["moelle"]
    assert roles.how[("heart", 2)] == "alias 'Coeur*'"
    assert str(aliases) in protocol.alias_files[0]
    assert not load_protocol().roles["spinal_cord"].matches("moelle")


def test_the_aliases_file_beside_the_protocol_is_read(tmp_path: Path) -> None:
    bundled = load_protocol()
    path = tmp_path / "trial.yaml"
    path.write_text(Path(bundled.path).read_text())
    (tmp_path / "trial.aliases.yaml").write_text("aliases:\n  lungs: [Poumons]\n")
    assert load_protocol(path).roles["lungs"].matches("POUMONS")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aliases:\n  lung: [Poumons]\n", "unknown role 'lung'"),
        ("aliases: [Poumons]\n", "write aliases: {role: [name, ...]}"),
    ],
)
def test_a_bad_aliases_file_is_a_protocol_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=str(path)) as err:
        load_protocol(None, [path])
    assert message in str(err.value)


def test_phantom_with_another_centres_names_is_per_protocol(
    checked: Callable[[str], tuple[CourseFiles, Report]],
) -> None:
    _, report = checked("centre_names")
    assert report.verdict == "per_protocol", [(r.id, r.message) for r in report.rules if r.status != "per_protocol"]
    roles = report.structure_roles
    assert roles["Lt Lung"] == ["lungs"] and roles["Rt Lung"] == ["lungs"]
    assert roles["Spinal Cord"] == ["spinal_cord"] and roles["ESOPHAGUS"] == ["esophagus"]
    assert roles["External"] == ["body"]
    # The names really reached the rules: the OAR doses were measured on them.
    assert report.rule("oar.spinal_cord_max").structures == ["Spinal Cord"]  # type: ignore[union-attr]
