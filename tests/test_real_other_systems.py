"""Real exports of other planning systems, committed under tests/fixtures/real/ with their licences.

* RayStation 14 (CC BY 4.0, ``raystation_proton_ramp/SOURCE.md``): a proton phantom plan of
  two opposed ramped fields whose sum is a flat 2 Gy in the target, with the planning
  system's PLAN dose and its two BEAM doses. It is no lung-trial course, so no arm matches;
  forced to the control arm its one fraction is graded, not skipped.
* Monaco (Apache 2.0, ``monaco_plan/SOURCE.md``): an RT Plan alone, without file meta; its
  structure set and dose are absent, which the report must say without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
from pathlib import Path

import pytest

from rtcheck.api import check_course, load_protocol
from rtcheck.assembly import find_courses, load_course
from rtcheck.cli import main
from rtcheck.dvh_table import structure_metrics
from rtcheck.errors import ExitCode

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
FIXTURE = REAL / "raystation_proton_ramp"
MONACO_PLAN = REAL / "monaco_plan" / "06MV_plan.dcm"
PLAN_DOSE = "RD1.2.752.243.1.1.20250523160113556.3000.73252.dcm"
BEAM_DOSES = (
    "RD1.2.752.243.1.1.20250523160113556.4000.16653.dcm",
    "RD1.2.752.243.1.1.20250523160113556.5000.84138.dcm",
)
STRUCTURES = "RS1.2.752.243.1.1.20250522124652761.2000.43711.dcm"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export as published (decompressed, checked against the published SHA-256)."""
    folder = tmp_path_factory.mktemp("raystation")
    published = {
        line.split()[1]: line.split()[0]
        for line in (FIXTURE / "SOURCE.md").read_text().splitlines()
        if line.endswith(".dcm") and len(line.split()) == 2
    }
    for packed in FIXTURE.glob("*.dcm.xz"):
        data = lzma.decompress(packed.read_bytes())
        assert hashlib.sha256(data).hexdigest() == published[packed.name.removesuffix(".xz")]
        (folder / packed.name.removesuffix(".xz")).write_bytes(data)
    return folder


def test_assembled_without_integrity_errors(export: Path) -> None:
    (files,) = find_courses([export])
    assert files.complete and files.plan_labels == ["Slope101010E_o_1"] and len(files.doses) == 3
    course, findings = load_course(files)
    assert not [f for f in findings if f.severity == "error"]
    (fg,) = course.plans[0].fraction_groups
    assert fg.fractions_planned == 1
    # No dose reference with a prescription: the per-fraction dose is the sum of the beam doses.
    assert fg.prescription is not None and fg.prescription.source == "beam_dose"
    assert fg.prescription.dose_per_fraction_gy == pytest.approx(0.943323 + 0.9349596)


def test_no_arm_matches_and_the_closest_is_named(export: Path) -> None:
    (files,) = find_courses([export])
    report = check_course(files, load_protocol())
    assert report.verdict == "not_evaluable" and report.arm.arm is None
    message = report.rule("course.arm").message  # type: ignore[union-attr]
    assert "closest arm: control" in message and "(1 fx) against conventional >= 10 fx" in message
    assert report.structure_roles["Cube101010"] == ["conventional_target (RTROIInterpretedType PTV)"]
    assert report.structure_roles["External"] == ["body"]


def test_forced_to_the_control_arm(export: Path) -> None:
    (files,) = find_courses([export])
    report = check_course(files, load_protocol(), "control")
    rules = {r.id: r for r in report.rules}
    assert (rules["control.fractions"].status, rules["control.fractions"].value) == ("unacceptable_deviation", 1)
    dpf = rules["control.dose_per_fraction"]
    assert dpf.status == "per_protocol" and dpf.value == pytest.approx(187.8, abs=0.1)
    assert rules["structures.integrity"].status == "per_protocol"
    required = rules["structures.required"]
    assert required.value == 4 and required.message == "missing: lungs, heart, esophagus, spinal_cord"


def test_dvh_of_the_flat_sum_and_plan_equals_sum_of_beams(export: Path) -> None:
    names = ["Cube101010", "Slope101004"]
    plan, _ = structure_metrics(export / STRUCTURES, [export / PLAN_DOSE], names)
    beams, grid = structure_metrics(export / STRUCTURES, [export / b for b in BEAM_DOSES], names)
    assert "sum of 2 doses" in grid.note
    for p, b in zip(plan, beams, strict=True):
        assert not p.note and p.metrics.keys() == b.metrics.keys()
        for key, value in p.metrics.items():
            if key.endswith("_percent"):
                assert b.metrics[key] == pytest.approx(value, abs=0.5), (p.name, key)
            elif not key.endswith("_cc"):
                assert b.metrics[key] == pytest.approx(value, abs=0.01), (p.name, key)
    cube = plan[0]
    # The cube's contours lie on its faces every 5 mm: 1000 cc, plus half a slice beyond each
    # end plane under rtcheck's slab convention (at most 1050 cc).
    assert 1000.0 <= cube.volume_cc <= 1050.0  # type: ignore[operator]
    # Two opposed ramps add up to a flat 2 Gy across the target.
    assert cube.metrics["dmean"] == pytest.approx(2.0, rel=0.05)
    assert cube.metrics["d95"] >= 0.95 * 2.0 - 0.05
    assert cube.metrics["dmax"] <= 1.12 * 2.0


def test_the_structure_set_and_plan_dose_alone(export: Path, tmp_path: Path) -> None:
    shutil.copy(export / STRUCTURES, tmp_path)
    shutil.copy(export / PLAN_DOSE, tmp_path)
    (files,) = find_courses([tmp_path], without_plan=True)
    report = check_course(files, load_protocol())
    rules = {r.id: r for r in report.rules}
    assert "no plan" in rules["course.arm"].message
    assert rules["structures.integrity"].status == "per_protocol"


def test_a_monaco_plan_alone(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(MONACO_PLAN), "--format", "json"])
    captured = capsys.readouterr()
    assert code == ExitCode.NOT_EVALUABLE and "Traceback" not in captured.err
    (report,) = json.loads(captured.out)["reports"]
    rules = {r["id"]: r for r in report["rules"]}
    assert "references RTSTRUCT" in rules["dicom.integrity"]["message"]
    assert rules["structures.integrity"]["message"] == "the course has no structure set"
    assert "(1 fx) against conventional >= 10 fx" in rules["course.arm"]["message"]


def test_a_monaco_plan_forced_to_the_control_arm(capsys: pytest.CaptureFixture[str]) -> None:
    main([str(MONACO_PLAN), "--arm", "control", "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    rules = {r["id"]: r for r in report["rules"]}
    # The SITE dose reference: 2.00 Gy in 1 fraction.
    assert rules["control.dose_per_fraction"]["status"] == "per_protocol"
    assert rules["control.dose_per_fraction"]["value"] == pytest.approx(200.0)
    assert (rules["control.fractions"]["status"], rules["control.fractions"]["value"]) == ("unacceptable_deviation", 1)
    assert rules["oar.heart_mean"]["status"] == "not_evaluable"
