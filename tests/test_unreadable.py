"""Nothing below a given path is skipped in silence: what cannot be read fails closed.

The scenario that matters: a re-plan (600 cGy per fraction, an unacceptable deviation)
exported beside the old, compliant plan, in a subfolder rtcheck cannot read. Readable, the
re-plan supersedes the old plan and the course fails; unreadable, the old plan alone must
not pass.

How "cannot read" is made real: tests run as root in CI, and root reads through
``chmod 000`` because it holds CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. When the tests run
as root, rtcheck runs in a subprocess whose capability bounding set lacks those two
(``prctl(PR_CAPBSET_DROP)`` before exec: a root process then gets only what the bounding
set allows), so ``chmod 000`` gives it the same EACCES a hospital service account gets; as
an ordinary user the permission bits alone do it. In-process tests use a symbolic-link
loop, which fails to open with ELOOP for every user, root included, and a FIFO, which is
not a regular file (reading one would block forever).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.assembly import discover
from rtcheck.cli import main
from rtcheck.errors import ExitCode, InputError
from rtcheck.phantom import write_course

REPLAN_RX_FRACTION = 0.6  # 10 Gy x 3 -> 6 Gy x 3 = 600 cGy per fraction, below the 800-1200 cGy window


def write_replan(course: Path, folder: Path) -> None:
    """A re-plan of the course's SFRT plan (same label and structure set, a later date,
    600 cGy per fraction) and its dose, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = pydicom.dcmread(course / "RP.SFRT.dcm")
    new_uid = generate_uid(entropy_srcs=[plan.SOPInstanceUID, "re-plan"])
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID = new_uid
    plan.RTPlanDate = str(int(plan.RTPlanDate) + 1)
    for item in plan.DoseReferenceSequence:
        item.TargetPrescriptionDose = float(item.TargetPrescriptionDose) * REPLAN_RX_FRACTION
    plan.save_as(folder / "RP.SFRT.dcm", enforce_file_format=True)
    dose = pydicom.dcmread(course / "RD.SFRT.dcm")
    dose_uid = generate_uid(entropy_srcs=[dose.SOPInstanceUID, "re-plan"])
    dose.SOPInstanceUID = dose.file_meta.MediaStorageSOPInstanceUID = dose_uid
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = new_uid
    dose.save_as(folder / "RD.SFRT.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def export_with_replan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``export/``: the compliant course, and its re-plan in ``export/replan/``."""
    export = Path(tmp_path_factory.mktemp("unreadable")) / "export"
    write_course(export, "compliant", dose_spacing_mm=5.0)
    write_replan(export, export / "replan")
    return export


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_permission_override() -> None:
    """In the child, before exec: remove root's power to read through permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_without_override(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``rtcheck ARGS`` in a process that file permissions really stop."""
    return subprocess.run(
        [sys.executable, "-m", "rtcheck", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_drop_file_permission_override if os.geteuid() == 0 else None,
    )


def copy_readable(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, made deletable again after a test took permissions away."""
    yield tmp_path
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def test_readable_replan_supersedes_the_old_plan(capsys: pytest.CaptureFixture[str], export_with_replan: Path) -> None:
    code = main([str(export_with_replan), "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert code == ExitCode.UNACCEPTABLE_DEVIATION
    rx = next(r for r in report["rules"] if r["id"] == "sfrt.prescription")
    assert rx["status"] == "unacceptable_deviation" and rx["value"] == pytest.approx(600.0)


def test_unreadable_replan_folder_never_passes(export_with_replan: Path, scratch: Path) -> None:
    export = copy_readable(export_with_replan, scratch / "export")
    (export / "replan").chmod(0o000)
    done = run_without_override(export, "--format", "json")
    assert done.returncode == ExitCode.NOT_EVALUABLE, done.stderr
    (report,) = json.loads(done.stdout)["reports"]
    rule = next(r for r in report["rules"] if r["id"] == "course.inputs_readable")
    assert rule["status"] == "not_evaluable"
    assert "replan: cannot list this folder (Permission denied)" in rule["message"]
    assert report["verdict"] == "not_evaluable"
    # The person at the terminal is told too, in one line naming the folder.
    assert f"rtcheck: warning: {export / 'replan'}: cannot list this folder (Permission denied)" in done.stderr


def test_unreadable_replan_file_never_passes(export_with_replan: Path, scratch: Path) -> None:
    export = copy_readable(export_with_replan, scratch / "export")
    for path in (export / "replan").iterdir():
        path.chmod(0o000)
    done = run_without_override(export, "--quiet")
    assert done.returncode == ExitCode.NOT_EVALUABLE, done.stderr
    assert "RP.SFRT.dcm: cannot open (Permission denied)" in done.stderr
    assert "NOT EVALUABLE" in done.stdout


def test_unreadable_patient_folder_outside_any_course_is_an_input_error(
    export_with_replan: Path, scratch: Path
) -> None:
    """A folder that lies in no course's folder may be a course of its own: exit 4."""
    root = scratch / "exports"
    copy_readable(export_with_replan.parent / "export", root / "patient-a")
    shutil.rmtree(root / "patient-a" / "replan")
    (root / "patient-b").mkdir(mode=0o000)
    done = run_without_override(root, "--quiet")
    assert done.returncode == ExitCode.INPUT_ERROR, done.stderr
    assert "patient-b: cannot list this folder (Permission denied)" in done.stderr
    assert "PER PROTOCOL" in done.stdout  # patient-a is still checked and reported


def test_a_link_loop_and_a_fifo_are_recorded_not_skipped(export_with_replan: Path, tmp_path: Path) -> None:
    """ELOOP holds for root as well; a FIFO would block a reader forever."""
    export = copy_readable(export_with_replan, tmp_path / "export")
    shutil.rmtree(export / "replan")
    (export / "RP.new.dcm").symlink_to("RP.new.dcm")
    os.mkfifo(export / "RP.pipe.dcm")
    found = discover([export])
    (course,) = found.courses
    assert found.unreadable == []  # both lie in the course's folder: the course holds them
    assert sorted(course.unreadable) == [
        f"{export / 'RP.new.dcm'}: cannot open (Too many levels of symbolic links)",
        f"{export / 'RP.pipe.dcm'}: not a regular file (a FIFO, socket or device), not read",
    ]
    report = check_course(course, load_protocol())
    assert report.verdict == "not_evaluable"
    assert report.rules[0].id == "course.inputs_readable" and report.rules[0].status == "not_evaluable"


def test_find_courses_raises_for_what_no_course_holds(tmp_path: Path) -> None:
    write_course(tmp_path / "a", "compliant", dose_spacing_mm=5.0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "RP.dcm").symlink_to(tmp_path / "b" / "missing.dcm")  # dangling: ENOENT
    with pytest.raises(InputError, match=r"b/RP.dcm: cannot open \(No such file or directory\)"):
        find_courses([tmp_path])
