"""``rtcheck dvh``: every structure's DVH metrics on a structure set and a dose, with no plan needed."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from rtcheck.cli import main
from rtcheck.dvh_table import dicompyler_dvhs, structure_metrics
from rtcheck.errors import ExitCode

#: GTV_SFRT of the phantom: a sphere of radius 35 mm.
GTV_SFRT_CC = 4 / 3 * math.pi * 35.0**3 / 1000


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main(["dvh", *(str(a) for a in args)])
    return code, capsys.readouterr().out


def test_every_structure_of_a_planless_pair(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    folder = course_dir("compliant")
    code, out = _run(capsys, folder / "RS.dcm", folder / "RD.LDRT.dcm", "--format", "json")
    assert code == ExitCode.PER_PROTOCOL
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"BODY", "Lung_L", "Heart", "SpinalCord", "GTV_SFRT", "GTV_LDRT_1", "Peak_1", "Brain"} <= set(rows)
    gtv = rows["GTV_SFRT"]
    assert gtv["volume_cc"] == pytest.approx(GTV_SFRT_CC, rel=0.01)
    # The LDRT plan: 2 Gy x 5 inside its targets (1.95 Gy x 5 on their surface), nothing at the brain.
    ldrt = rows["GTV_LDRT_1"]
    assert 9.75 - 0.1 <= ldrt["d95"] <= ldrt["dmean"] <= ldrt["dmax"] == pytest.approx(10.0, abs=0.05)
    assert rows["Brain"]["dmax"] == 0.0 and rows["Brain"]["v5gy_cc"] == 0.0
    for key in ("dmin", "dmean", "dmax", "d99", "d95", "d5", "d1", "d0_03cc", "v5gy_cc", "v20gy_percent"):
        assert key in gtv


def test_selected_structures_csv_and_table(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    folder = course_dir("compliant")
    pair = (folder / "RS.dcm", folder / "RD.LDRT.dcm")
    code, out = _run(
        capsys, *pair, "--structure", "gtv ldrt 1", "--structure", "LUNG L", "--v", "9.5", "--format", "csv"
    )
    assert code == ExitCode.PER_PROTOCOL
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == ["Lung_L", "GTV_LDRT_1"]
    assert float(rows[1]["v9_5gy_percent"]) == pytest.approx(100.0)
    code, out = _run(capsys, *pair, "--structure", "Heart")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["structure", "cc", "Dmin", "Dmean"]
    assert lines[2].startswith("Heart ")


def test_an_unknown_structure_is_an_input_error(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    folder = course_dir("compliant")
    code = main(["dvh", str(folder / "RS.dcm"), str(folder / "RD.LDRT.dcm"), "--structure", "Liver"])
    assert code == ExitCode.INPUT_ERROR
    assert "no structure named Liver" in capsys.readouterr().err


def test_the_same_numbers_as_dicompyler_core_dvhs(course_dir) -> None:
    folder = course_dir("compliant")
    rows, _ = structure_metrics(folder / "RS.dcm", [folder / "RD.SFRT.dcm"], ["Peak_1", "GTV_SFRT"])
    dvhs = dicompyler_dvhs(rows)
    for row in rows:
        dvh = dvhs[row.name]
        assert dvh.volume == pytest.approx(row.volume_cc, abs=1e-3)
        assert dvh.mean == pytest.approx(row.metrics["dmean"], abs=0.01)  # 1 cGy bins
        assert dvh.max == pytest.approx(row.metrics["dmax"], abs=0.011)


def test_a_planless_course_is_checked_as_far_as_it_can_be(
    capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path
) -> None:
    folder = course_dir("compliant")
    code = main([str(folder / "RS.dcm"), str(folder / "RD.SFRT.dcm"), str(folder / "RD.LDRT.dcm"), "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert code == ExitCode.NOT_EVALUABLE
    rules = {r["id"]: r for r in report["rules"]}
    assert "no plan" in rules["course.arm"]["message"]
    assert rules["structures.integrity"]["status"] == "per_protocol"
    # EQD2 needs the fractions: the physical dose is measured and said, the grade withheld.
    heart = rules["oar.heart_mean"]
    assert heart["status"] == "not_evaluable" and "Gy physical" in heart["message"]
    assert "number of fractions is unknown" in heart["message"]
