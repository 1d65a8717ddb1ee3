"""A real planning-system export that rtcheck did not write: dicompyler-core's example course.

The course (BSD licence; an Eclipse breast boost "B1", 7 fractions, SITE dose reference of
14 Gy) ships in dicompyler-core's source distribution, which pip fetches from PyPI. Its
RTDOSE carries the DVHs the planning system computed itself, so rtcheck's reader and DVH
engine are compared with a planning system's own numbers, not only with our phantom.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from peers import missing

from rtcheck.api import check_course, load_protocol
from rtcheck.assembly import find_courses, load_course
from rtcheck.cli import main
from rtcheck.dose import load_dose_grid
from rtcheck.dvh import structure_dose
from rtcheck.errors import ExitCode
from rtcheck.geometry import SolidCache

SDIST = "dicompyler-core==0.5.6"
EXAMPLE = "tests/testdata/example_data"


@pytest.fixture(scope="session")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example course's folder (RTPLAN, RTSTRUCT, RTDOSE and one CT slice)."""
    folder = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", folder],
        capture_output=True,
        text=True,
        timeout=300,
    )
    archives = sorted(folder.glob("dicompyler*core-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        missing(f"could not download {SDIST} from PyPI: {proc.stderr.strip()[-200:]}")
    out = folder / "course"
    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if f"/{EXAMPLE}/" in m.name and m.isfile()]
        for member in members:
            member.name = Path(member.name).name
            tar.extract(member, out, filter="data")
    return out


def tps_dvh_means(dose_path: Path) -> dict[int, tuple[float, float]]:
    """ROI number -> (volume cc, mean dose Gy) from the planning system's cumulative DVHs."""
    ds = pydicom.dcmread(dose_path)
    out = {}
    for item in ds.DVHSequence:
        data = np.asarray(item.DVHData, dtype=float)
        widths, cumulative = data[0::2], data[1::2]
        centres = np.cumsum(widths) - widths / 2
        differential = -np.diff(np.append(cumulative, 0.0))
        mean = float((differential * centres).sum() / cumulative[0] * float(item.DVHDoseScaling))
        out[int(item.DVHReferencedROISequence[0].ReferencedROINumber)] = (float(cumulative[0]), mean)
    return out


def test_real_export_is_assembled_and_read(export: Path) -> None:
    (files,) = find_courses([export])
    assert files.complete and files.plan_labels == ["B1"]
    course, integrity = load_course(files)
    assert not [f for f in integrity if f.severity == "error"]
    (fg,) = course.plans[0].fraction_groups
    assert fg.fractions_planned == 7
    assert fg.prescription is not None and fg.prescription.source == "dose_reference"
    assert fg.prescription.dose_per_fraction_gy == pytest.approx(14.0 / 7)


def test_dvhs_agree_with_the_planning_systems_own(export: Path) -> None:
    (files,) = find_courses([export])
    course, _ = load_course(files)
    assert course.structure_set is not None
    grid = load_dose_grid(course.doses[0])
    solids = SolidCache(course.structure_set)
    compared = 0
    for number, (tps_cc, tps_mean) in tps_dvh_means(course.doses[0].source.path).items():
        if tps_cc < 10 or course.structure_set.rois[number].name == "BODY":
            continue  # the planning system's BODY is cut to its CT; tiny ROIs are wires and scars
        ours = structure_dose(grid, solids.get(number))
        name = course.structure_set.rois[number].name
        # The planning system's volumes are those of a surface that ends at the first and
        # last contour planes; rtcheck's continues beyond them (a dome where the sections
        # shrink, half a spacing where they do not): 0.5 cc more on the 13 cc tumour bed.
        assert ours.volume_cc == pytest.approx(tps_cc, rel=0.04), name
        assert ours.dmean == pytest.approx(tps_mean, rel=0.02, abs=0.02), name
        compared += 1
    assert compared >= 5


def test_a_breast_boost_is_not_called_compliant(export: Path) -> None:
    (files,) = find_courses([export])
    report = check_course(files, load_protocol())
    assert report.verdict == "not_evaluable" and report.arm.arm is None
    arm_rule = report.rule("course.arm")
    assert arm_rule is not None
    # One line that says which arm came closest and why it is missed.
    assert "\n" not in arm_rule.message
    assert "closest arm: control" in arm_rule.message and "(7 fx) against conventional >= 10 fx" in arm_rule.message
    # The organ-at-risk rules every arm shares are still evaluated on the course's dose.
    heart = report.rule("oar.heart_mean")
    assert heart is not None and heart.status == "per_protocol"


def test_judged_as_the_control_arm(export: Path) -> None:
    """Forced to the control arm, a 7 x 2 Gy course is graded, not called not evaluable."""
    (files,) = find_courses([export])
    report = check_course(files, load_protocol(), "control")
    rules = {r.id: r for r in report.rules}
    assert (rules["control.fractions"].status, rules["control.fractions"].value) == ("acceptable_variation", 7)
    assert rules["control.dose_per_fraction"].status == "per_protocol"
    assert rules["control.dose_per_fraction"].value == pytest.approx(200.0)
    # The composite uses the course's PLAN dose, and says so.
    heart = rules["oar.heart_mean"]
    assert heart.status == "per_protocol" and "rtdose.dcm (7 fx)" in heart.message
    _, tps_mean = tps_dvh_means(files.doses[0].path)[5]  # ROI 5 is the Heart
    assert heart.evidence["physical_gy"] == pytest.approx(tps_mean, rel=0.03)
    # EQD2 (alpha/beta 3 Gy) voxel by voxel, D (d + 3) / 5: with every d far below 2 Gy it
    # lies between the linear term 3D/5 and the physical dose.
    physical = heart.evidence["physical_gy"]
    assert 0.6 * physical < heart.value < physical
    for lung_rule in ("oar.lungs_v20", "oar.lungs_mean"):
        assert rules[lung_rule].status == "per_protocol", rules[lung_rule].message
        assert rules[lung_rule].structures == ["lungs_minus_targets"]
    assert report.structure_roles["Lt Lung"] == ["lungs"]
    assert report.structure_roles["Tumor Bed"] == ["conventional_target (RTROIInterpretedType CTV)"]
    required = rules["structures.required"]
    assert required.value == 2 and required.message == "missing: esophagus, spinal_cord"


def test_dvh_command_on_the_structure_set_and_dose_alone(capsys: pytest.CaptureFixture[str], export: Path) -> None:
    """rtcheck dvh needs no plan: every structure gets its row, exit 0, the TPS's means agree."""
    code = main(["dvh", str(export / "rtss.dcm"), str(export / "rtdose.dcm"), "--format", "json"])
    assert code == ExitCode.PER_PROTOCOL
    rows = {r["roi_number"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 10
    heart_cc, heart_mean = tps_dvh_means(export / "rtdose.dcm")[5]
    assert rows[5]["name"] == "Heart" and rows[5]["volume_cc"] == pytest.approx(heart_cc, rel=0.03)
    assert rows[5]["dmean"] == pytest.approx(heart_mean, rel=0.03)
    assert rows[2]["name"] == "Areola" and rows[2]["note"]  # drawn without contours: kept, with the reason


def test_structure_set_and_dose_without_the_plan(capsys: pytest.CaptureFixture[str], export: Path) -> None:
    code = main([str(export / "rtss.dcm"), str(export / "rtdose.dcm"), "--arm", "control", "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    rules = {r["id"]: r for r in report["rules"]}
    assert code == ExitCode.NOT_EVALUABLE
    assert "the course has no RTPLAN" in rules["control.fractions"]["message"]
    heart = rules["oar.heart_mean"]
    assert heart["status"] == "not_evaluable" and "0.65 Gy physical" in heart["message"]
