"""End-to-end checks of `rtcheck PATH` on generated DICOM-RT courses (plan-level rules)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from rtcheck.cli import main
from rtcheck.errors import ExitCode
from rtcheck.phantom import write_non_dicom, write_truncated_copy

PLAN_LEVEL_RULES = {
    "dicom.integrity",
    "sfrt.fractions",
    "valley.fractions",
    "ldrt.fractions",
    "sfrt.prescription",
    "ldrt.prescription",
    "sfrt.single_lesion",
    "structures.required",
    "ldrt.excludes_brain_bone",
}


def run_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict]:
    code = main([*(str(a) for a in args), "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def statuses(report: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in report["rules"]}


def test_compliant_course_is_per_protocol(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("compliant"))
    assert code == ExitCode.PER_PROTOCOL
    (report,) = payload["reports"]
    assert report["arm"]["arm"] == "experimental"
    assert set(statuses(report)) >= PLAN_LEVEL_RULES
    assert {statuses(report)[r] for r in PLAN_LEVEL_RULES} == {"per_protocol"}
    rx = next(r for r in report["rules"] if r["id"] == "sfrt.prescription")
    assert rx["unit"] == "cGy" and rx["value"] == pytest.approx(1000.0)
    assert rx["per_protocol"] == {"min": 800.0, "max": 1200.0}
    # Every input is identified by UID and hash, the protocol by name and hash.
    assert {f["modality"] for f in report["files"]} == {"RTPLAN", "RTSTRUCT", "RTDOSE"}
    assert all(len(f["sha256"]) == 64 for f in report["files"])
    assert len(report["protocol"]["sha256"]) == 64


@pytest.mark.parametrize(
    ("variant", "rule_ids", "status", "code"),
    [
        ("sfrt_5_fractions", ["sfrt.fractions"], "unacceptable_deviation", ExitCode.UNACCEPTABLE_DEVIATION),
        (
            "ldrt_3_fractions",
            ["ldrt.fractions", "valley.fractions"],
            "unacceptable_deviation",
            ExitCode.UNACCEPTABLE_DEVIATION,
        ),
        ("sfrt_rx_7gy", ["sfrt.prescription"], "acceptable_variation", ExitCode.ACCEPTABLE_VARIATION),
        ("sfrt_rx_6gy", ["sfrt.prescription"], "unacceptable_deviation", ExitCode.UNACCEPTABLE_DEVIATION),
        ("ldrt_rx_4gy", ["ldrt.prescription"], "unacceptable_deviation", ExitCode.UNACCEPTABLE_DEVIATION),
        (
            "two_sfrt_lesions",
            ["sfrt.single_lesion"],
            "unacceptable_deviation",
            ExitCode.UNACCEPTABLE_DEVIATION,
        ),
        (
            # Without a cord its dose constraint cannot be evaluated either: the worst is N/E.
            "missing_spinal_cord",
            ["structures.required"],
            "unacceptable_deviation",
            ExitCode.NOT_EVALUABLE,
        ),
        (
            "ldrt_targets_brain_met",
            ["ldrt.excludes_brain_bone"],
            "unacceptable_deviation",
            ExitCode.UNACCEPTABLE_DEVIATION,
        ),
    ],
)
def test_each_plan_level_violation_is_caught_by_its_rule(
    capsys: pytest.CaptureFixture[str], course_dir, variant: str, rule_ids: list[str], status: str, code: int
) -> None:
    got_code, payload = run_json(capsys, course_dir(variant))
    (report,) = payload["reports"]
    got = statuses(report)
    for rule_id in rule_ids:
        assert got[rule_id] == status, (rule_id, got)
    # The violation is reported by its own rule and nowhere else among the plan-level rules.
    others = {got[r] for r in PLAN_LEVEL_RULES - set(rule_ids)}
    assert others == {"per_protocol"}, got
    assert report["arm"]["arm"] == "experimental"
    assert got_code == code


def test_deviation_reports_measured_value_limits_and_files(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    _, payload = run_json(capsys, course_dir("sfrt_rx_6gy"))
    rule = next(r for r in payload["reports"][0]["rules"] if r["id"] == "sfrt.prescription")
    assert rule["value"] == pytest.approx(600.0)
    assert rule["acceptable_variation"] == {"min": 700.0, "max": 1300.0}
    assert rule["files"] and rule["files"][0].endswith(".dcm")
    assert rule["items"][0]["detail"]["source"] == "dose_reference"


def test_prescription_falls_back_to_beam_doses_and_says_so(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("no_dose_reference"))
    rule = next(r for r in payload["reports"][0]["rules"] if r["id"] == "sfrt.prescription")
    assert rule["status"] == "per_protocol"
    assert rule["value"] == pytest.approx(1000.0)
    assert rule["evidence"]["sources"] == ["beam_dose"]
    assert code == ExitCode.PER_PROTOCOL


def test_single_plan_with_two_fraction_groups(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("single_plan_two_groups"))
    (report,) = payload["reports"]
    assert len(report["plans"]) == 1
    assert [fg["fractions_planned"] for fg in report["plans"][0]["fraction_groups"]] == [3, 5]
    components = report["arm"]["components"]
    assert len(components["peak"]) == 1 and "(3 fx)" in components["peak"][0]
    assert len(components["low_dose"]) == 1 and "(5 fx)" in components["low_dose"][0]
    assert {statuses(report)[r] for r in PLAN_LEVEL_RULES} == {"per_protocol"}
    assert code == ExitCode.PER_PROTOCOL


def test_control_arm_is_detected_as_control(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("control_arm"))
    (report,) = payload["reports"]
    assert report["arm"]["arm"] == "control" and not report["arm"]["overridden"]
    got = statuses(report)
    assert got["control.dose_per_fraction"] == "per_protocol"
    assert got["control.fractions"] == "per_protocol"
    assert got["control.no_peaks"] == "per_protocol"
    assert "sfrt.fractions" not in got
    assert code == ExitCode.PER_PROTOCOL


def test_arm_override_judges_the_course_as_that_arm(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("compliant"), "--arm", "control")
    (report,) = payload["reports"]
    assert report["arm"]["arm"] == "control" and report["arm"]["overridden"]
    got = statuses(report)
    assert got["control.no_peaks"] == "unacceptable_deviation"  # the SFRT peaks are there
    # Forced: both plans are graded as the conventional component, 3 fx (SFRT) below the
    # acceptable 5, 5 fx (LDRT) an acceptable variation, 10 Gy per fraction far outside.
    fractions = {i["name"]: (i["value"], i["status"]) for i in _rule(report, "control.fractions")["items"]}
    assert fractions == {
        "SFRT / fraction group 1 (3 fx)": (3, "unacceptable_deviation"),
        "LDRT / fraction group 1 (5 fx)": (5, "acceptable_variation"),
    }
    assert got["control.dose_per_fraction"] == "unacceptable_deviation"
    assert code == ExitCode.UNACCEPTABLE_DEVIATION


def _rule(report: dict, rule_id: str) -> dict:
    return next(r for r in report["rules"] if r["id"] == rule_id)


def test_one_plan_file_brings_its_siblings(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    folder = course_dir("compliant")
    plan = next(p for p in sorted(folder.iterdir()) if p.name.startswith("RP.SFRT"))
    code, payload = run_json(capsys, plan)
    (report,) = payload["reports"]
    assert sorted(p["label"] for p in report["plans"]) == ["LDRT", "SFRT"]
    assert code == ExitCode.PER_PROTOCOL


def test_several_courses_give_one_report_each(capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path) -> None:
    for variant in ("compliant", "sfrt_rx_6gy"):
        shutil.copytree(course_dir(variant), tmp_path / variant)
    code, payload = run_json(capsys, tmp_path)
    verdicts = sorted(r["verdict"] for r in payload["reports"])
    assert verdicts == ["per_protocol", "unacceptable_deviation"]
    assert code == payload["exit_code"] == ExitCode.UNACCEPTABLE_DEVIATION


def test_terminal_report_shows_verdict_first_and_failing_rule(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code = main([str(course_dir("sfrt_rx_6gy")), "--no-color"])
    out = capsys.readouterr().out
    assert out.lstrip().startswith("VERDICT: UNACCEPTABLE DEVIATION")
    attention = out.index("Needs attention")
    assert out.index("sfrt.prescription", attention) < out.index("All rules")
    assert "600.0 cGy" in out and "800–1200 cGy" in out
    assert code == ExitCode.UNACCEPTABLE_DEVIATION
    assert main([str(course_dir("sfrt_rx_6gy")), "--quiet"]) == code
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("rtcheck: UNACCEPTABLE DEVIATION") and "sfrt.prescription" in line


def test_json_output_file(course_dir, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main([str(course_dir("compliant")), "--format", "json", "-o", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["schema_version"] == "1.0" and payload["reports"][0]["verdict"] == "per_protocol"


# --- bad input: one line naming the file, a documented exit code, no traceback -------------------


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("rtcheck: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def test_not_dicom_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_non_dicom(tmp_path / "notes.dcm")
    assert main([str(path)]) == ExitCode.INPUT_ERROR
    line = _one_error_line(capsys)
    assert str(path) in line and "not a DICOM file" in line


def test_truncated_plan(capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    plan = tmp_path / "c" / "RP.SFRT.dcm"
    write_truncated_copy(plan, plan, keep_fraction=0.6)
    assert main([str(tmp_path / "c")]) == ExitCode.INPUT_ERROR
    line = _one_error_line(capsys)
    assert "RP.SFRT.dcm" in line and "truncated" in line


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == ExitCode.INPUT_ERROR
    assert "no RTPLAN found" in _one_error_line(capsys)


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(tmp_path / "nope")]) == ExitCode.INPUT_ERROR
    assert "no such file or folder" in _one_error_line(capsys)


def test_dose_without_its_plan(capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path) -> None:
    shutil.copy(course_dir("compliant") / "RD.SFRT.dcm", tmp_path)
    assert main([str(tmp_path)]) == ExitCode.INPUT_ERROR
    line = _one_error_line(capsys)
    assert "RD.SFRT.dcm" in line and "not among the files" in line


def test_plan_without_its_structure_set(capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    (tmp_path / "c" / "RS.dcm").unlink()
    code, payload = run_json(capsys, tmp_path / "c")
    assert code == ExitCode.NOT_EVALUABLE
    got = statuses(payload["reports"][0])
    assert got["structures.required"] == "not_evaluable"
    assert got["dicom.integrity"] == "not_evaluable"
    assert got["sfrt.prescription"] == "per_protocol"  # what the plan says can still be checked


def test_relative_dose_units_are_not_evaluable(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    code, payload = run_json(capsys, course_dir("relative_dose_units"))
    integrity = next(r for r in payload["reports"][0]["rules"] if r["id"] == "dicom.integrity")
    assert integrity["status"] == "not_evaluable"
    assert any(e["keyword"] == "DoseUnits" for e in integrity["evidence"]["errors"])
    assert code == ExitCode.NOT_EVALUABLE


def test_frame_of_reference_mismatch_is_an_integrity_error(
    capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path
) -> None:
    shutil.copytree(course_dir("compliant"), tmp_path / "c")
    dose_path = tmp_path / "c" / "RD.LDRT.dcm"
    ds = pydicom.dcmread(dose_path)
    ds.FrameOfReferenceUID = "1.2.3.4.5.6.7"
    ds.save_as(dose_path)
    _, payload = run_json(capsys, tmp_path / "c")
    integrity = next(r for r in payload["reports"][0]["rules"] if r["id"] == "dicom.integrity")
    assert integrity["status"] == "not_evaluable"
    assert any(
        e["keyword"] == "FrameOfReferenceUID" and e["file"].endswith("RD.LDRT.dcm")
        for e in integrity["evidence"]["errors"]
    )
    # Dose and structures in different coordinates: no dose rule may pretend to know.
    valley = next(r for r in payload["reports"][0]["rules"] if r["id"] == "valley.dose")
    assert valley["status"] == "not_evaluable" and "frame of reference" in valley["message"]


def test_malformed_protocol(capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol: {name: x, version: '1'}\nroles: [\n")
    assert main([str(course_dir("compliant")), "--protocol", str(bad)]) == ExitCode.PROTOCOL_ERROR
    line = _one_error_line(capsys)
    assert str(bad) in line and "line" in line


def test_unknown_arm_and_usage_errors(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    assert main([str(course_dir("compliant")), "--arm", "nonsense"]) == ExitCode.INPUT_ERROR
    assert "unknown arm" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main([str(course_dir("compliant")), "--format", "xml"])
    assert exc.value.code == ExitCode.USAGE_ERROR


def test_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    path = write_non_dicom(tmp_path / "x.dcm")
    proc = subprocess.run(
        [sys.executable, "-m", "rtcheck", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == ExitCode.INPUT_ERROR
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_installed_command_delivers_its_whole_output_before_it_ends(course_dir, tmp_path: Path) -> None:
    """A check ends without the interpreter's teardown: what it printed and wrote is complete."""
    course, out = course_dir("compliant"), tmp_path / "report.json"
    command = [sys.executable, "-m", "rtcheck", str(course), "--format", "json"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    written = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert printed.returncode == written.returncode == ExitCode.PER_PROTOCOL
    assert written.stdout == "" and printed.stderr == written.stderr == ""
    from_stdout, from_file = json.loads(printed.stdout), json.loads(out.read_text(encoding="utf-8"))
    assert from_stdout["exit_code"] == from_file["exit_code"] == ExitCode.PER_PROTOCOL
    assert len(from_stdout["reports"][0]["rules"]) == len(from_file["reports"][0]["rules"]) == 28


def test_example_command_writes_a_checkable_course(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["example", str(tmp_path / "ex")]) == 0
    capsys.readouterr()
    code, payload = run_json(capsys, tmp_path / "ex")
    assert code == ExitCode.PER_PROTOCOL
    assert payload["reports"][0]["arm"]["arm"] == "experimental"
    assert {statuses(payload["reports"][0])[r] for r in PLAN_LEVEL_RULES} == {"per_protocol"}


def test_file_formats_need_an_output(capsys: pytest.CaptureFixture[str], course_dir) -> None:
    assert main([str(course_dir("compliant")), "--format", "html"]) == ExitCode.INPUT_ERROR
    assert "-o FILE" in _one_error_line(capsys)


def test_html_and_dicom_reports_from_the_command_line(course_dir, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    assert main([str(course_dir("sfrt_rx_6gy")), "--format", "html", "-o", str(html)]) == 2
    text = html.read_text()
    assert "sfrt.prescription" in text and "unacceptable deviation" in text.lower()
    out = tmp_path / "dicom"
    out.mkdir()
    code = main([str(course_dir("compliant")), str(course_dir("sfrt_rx_6gy")), "--format", "dicom", "-o", str(out)])
    assert code == ExitCode.UNACCEPTABLE_DEVIATION
    written = sorted(out.glob("*.dcm"))
    assert len(written) == 2
    plans = {pydicom.dcmread(p).PatientID: pydicom.dcmread(p) for p in written}
    for patient_id, ds in plans.items():
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
        assert patient_id.startswith("PHANTOM_")


@pytest.mark.parametrize(("folder", "arm"), [("compliant", "experimental"), ("control_arm", "control")])
def test_committed_example_courses_are_per_protocol(
    capsys: pytest.CaptureFixture[str], fixtures_dir: Path, folder: str, arm: str
) -> None:
    """The small courses committed under tests/fixtures pass every rule of their arm."""
    code, payload = run_json(capsys, fixtures_dir / folder)
    (report,) = payload["reports"]
    assert report["arm"]["arm"] == arm
    assert {r["status"] for r in report["rules"]} == {"per_protocol"}
    assert code == ExitCode.PER_PROTOCOL


def _threads_after_numpy(prelude: str, **env: str) -> int:
    """Threads of a fresh Python that runs ``prelude`` and then imports numpy."""
    code = f"{prelude}\nimport os, numpy\nprint(len(os.listdir('/proc/self/task')))"
    # the variables OpenBLAS reads for its thread count, left to the test to set
    chosen = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    environ = {k: v for k, v in os.environ.items() if k not in chosen} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ)
    return int(out.stdout)


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir() or len(os.sched_getaffinity(0)) < 2,
    reason="threads are counted in /proc, and one core gets one thread anyway",
)
def test_the_program_keeps_numpy_to_one_thread_unless_told_otherwise() -> None:
    # The program sets the variable before numpy's first import, which must not come with the CLI module.
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, rtcheck.cli; print('numpy' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "False"
    assert _threads_after_numpy("") > 1  # what numpy does by itself on this machine
    assert _threads_after_numpy("from rtcheck.cli import _one_blas_thread; _one_blas_thread()") == 1
    own_choice = _threads_after_numpy(
        "from rtcheck.cli import _one_blas_thread; _one_blas_thread()", OPENBLAS_NUM_THREADS="2"
    )
    assert own_choice == 2
