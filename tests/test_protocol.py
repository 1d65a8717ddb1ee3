"""The protocol YAML: the bundled one is valid and cited; mistakes are reported with their line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rtcheck.api import load_protocol
from rtcheck.errors import ProtocolError
from rtcheck.protocol import bundled_protocol_path
from rtcheck.rules import registry


def test_bundled_protocol_is_valid_and_every_rule_is_cited() -> None:
    protocol = load_protocol()
    assert protocol.protocol.name and protocol.sha256
    checks = registry()
    for rule in protocol.rules:
        assert rule.check in checks
        assert len(rule.source) > 10, rule.id
        assert rule.unit.quantity is checks[rule.check].quantity
    ids = {r.id for r in protocol.rules}
    # The ids the trial's plan-level rules are known by.
    assert {
        "sfrt.fractions",
        "valley.fractions",
        "ldrt.fractions",
        "sfrt.prescription",
        "ldrt.prescription",
        "sfrt.single_lesion",
        "structures.required",
        "ldrt.excludes_brain_bone",
    } <= ids


@pytest.mark.parametrize(
    ("name", "role", "matches"),
    [
        ("GTV_SFRT", "sfrt_gtv", True),
        ("gtv_sfrt", "sfrt_gtv", True),
        ("GTV_SFRT_Valley", "sfrt_gtv", False),
        ("GTV_SFRT_Valley", "valley", True),
        ("Peak_3", "peak", True),
        ("PTV_Peak12", "peak", True),
        ("Vertex_1", "peak", True),
        ("GTV_LDRT_1", "ldrt_target", True),
        ("PTV_LDRT_adrenal", "ldrt_target", True),
        ("GTV_Brain_1", "brain_met", True),
        ("GTV_LDRT_Brain", "brain_met", True),
        ("Brain", "brain_met", False),
        ("Brain-GTV", "brain_met", False),
        ("GTV_Bone_1", "bone_met", True),
        ("VB", "bone", True),
        ("Rib05_L", "bone", True),
        ("Lung_L", "lungs", True),
        ("SpinalCord", "spinal_cord", True),
        ("External", "body", True),
        ("PTV_6000", "conventional_target", True),
        ("GTV_SFRT", "conventional_target", False),
    ],
)
def test_default_role_names(name: str, role: str, matches: bool) -> None:
    assert load_protocol().roles[role].matches(name) is matches


def test_interpreted_type_narrows_but_empty_type_never_excludes(tmp_path: Path) -> None:
    data = yaml.safe_load(bundled_protocol_path().read_text())
    data["roles"]["peak"]["interpreted_types"] = ["PTV"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    role = load_protocol(path).roles["peak"]
    assert role.matches("Peak_1", "PTV") and role.matches("Peak_1", None)
    assert not role.matches("Peak_1", "ORGAN")


def _broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(bundled_protocol_path().read_text())
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "where", "line_has", "message"),
    [
        (
            lambda d: d["rules"][1].update(per_protcol={"min": 3}),
            "rules[1].per_protcol",
            "per_protcol",
            "Extra",
        ),
        (lambda d: d["rules"][1].update(unit="cGy"), "rules[1].unit", "unit: cGy", "measures a fractions"),
        (lambda d: d["rules"][2].update(unit="furlong"), "rules[2].unit", "unit: furlong", "Input should be"),
        (
            lambda d: d["rules"][3].update(check="plan.nonsense"),
            "rules[3].check",
            "plan.nonsense",
            "unknown check",
        ),
        (
            lambda d: d["rules"][4].update(per_protocol={"min": 1200, "max": 800}),
            "rules[4].per_protocol",
            "per_protocol:",
            "greater than max",
        ),
        (
            lambda d: d["rules"][4].update(acceptable_variation={"min": 900, "max": 1000}),
            "rules[4]",
            "id: sfrt.prescription",
            "must contain the per_protocol range",
        ),
        (
            lambda d: d["rules"][1]["params"].update(component="pek"),
            "rules[1].params.component",
            "component: pek",
            "unknown component",
        ),
        (
            lambda d: d["rules"][6]["params"].update(roles=["sfrt_gtv", "lung"]),
            "rules[6].params.roles",
            "roles:",
            "unknown role",
        ),
        (lambda d: d["rules"][1].pop("source"), "rules[1].source", "id: sfrt.fractions", "Field required"),
        (
            lambda d: d["rules"][1].update(id="SFRT Fractions"),
            "rules[1].id",
            "SFRT Fractions",
            "must look like",
        ),
        (
            lambda d: d["arms"]["control"].update(components=["nope"]),
            "(top level)",
            None,
            "unknown component",
        ),
    ],
)
def test_malformed_protocol_names_yaml_path_and_line(
    tmp_path: Path, edit, where: str, line_has: str | None, message: str
) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(ProtocolError) as exc:
        load_protocol(path)
    text = str(exc.value)
    assert str(path) in text and message in text and f"at {where}" in text
    if line_has is not None:
        line = int(re.search(rf"{re.escape(str(path))}:(\d+):", text).group(1))
        assert line_has in path.read_text().splitlines()[line - 1], text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("protocol:\n  name: x\n  version: [1\nroles: {}\n")
    with pytest.raises(ProtocolError, match=r"p\.yaml: line \d+: YAML syntax error"):
        load_protocol(path)


def test_duplicate_rule_id_for_the_same_arm(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda d: d["rules"].append(dict(d["rules"][1])))
    with pytest.raises(ProtocolError, match="is used twice"):
        load_protocol(path)


def test_missing_protocol_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot read protocol"):
        load_protocol(tmp_path / "absent.yaml")
