"""The workspace of a course: every file read once, one set of measurements for rules and figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rtcheck.api import check_workspace, find_courses, load_protocol, open_workspace
from rtcheck.errors import NotEvaluable, ProtocolError
from rtcheck.reports.figures import build_figures

#: Runs the command line in a fresh interpreter and counts, through Python's audit hook
#: (every ``open()`` of a file raises an "open" event), how often each course file is opened:
#: once for the whole command (``check``), and for indexing the folder alone (``index``).
_COUNT_OPENS = """
import json, os, sys
from collections import Counter
from pathlib import Path

watched = {os.path.realpath(p) for p in sys.argv[4:]}
opened = Counter()

def count(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        path = os.path.realpath(args[0])
        if path in watched:
            opened[path] += 1

sys.addaudithook(count)
folder, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
from rtcheck.assembly import discover
discover([Path(folder)])
index = dict(opened)
opened.clear()
from rtcheck.cli import main
code = main([folder, *options, "-o", out])
print(json.dumps({"code": code, "index": index, "check": dict(opened)}))
"""


@pytest.mark.parametrize(
    ("options", "written"),
    [(["--format", "html"], ["report.html"]), (["--format", "dicom"], ["report.dcm"])],
)
def test_each_file_is_read_once_per_command_even_with_figures(
    course_dir: Callable[..., Path], tmp_path: Path, options: list[str], written: list[str]
) -> None:
    folder = course_dir("compliant")
    files = sorted(str(p.resolve()) for p in folder.glob("*.dcm"))
    assert sum("RD." in Path(f).name for f in files) == 2
    out = tmp_path / written[0]
    run = subprocess.run(
        [sys.executable, "-c", _COUNT_OPENS, str(folder), str(out), json.dumps(options), *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["code"] == 0 and out.stat().st_size > 100_000  # a report with its figures
    assert all((tmp_path / name).is_file() for name in written)
    # Beyond indexing (header-only reads), every file, each RTDOSE included, is opened once:
    # checking, the figures' DVHs and dose slices and the report (an HTML page, or a PDF filed
    # under the plan's patient and study) all share one read.
    extra = {Path(f).name: counts["check"].get(f, 0) - counts["index"].get(f, 0) for f in files}
    assert extra == {Path(f).name: 1 for f in files}


def test_rules_and_figures_measure_the_same_objects(course_dir: Callable[..., Path]) -> None:
    workspace = open_workspace(find_courses([course_dir("compliant")])[0], load_protocol())
    report = check_workspace(workspace)
    peak_dose = workspace.component_dose("peak")
    valley = workspace.structure("valley_derived")
    assert valley is not None and workspace.structure("valley_derived") is valley
    sd = workspace.structure_dose(peak_dose.per_fraction, valley)
    figures = build_figures(report, workspace)
    assert all(plot.available for plot in figures)
    # Drawing the figures reused the rules' dose and the valley's DVH samples.
    assert workspace.component_dose("peak") is peak_dose
    assert workspace.structure_dose(peak_dose.per_fraction, valley) is sd
    valley_rule = report.rule("valley.dose")
    assert valley_rule is not None and valley_rule.items[0].name == valley.name


def test_what_cannot_be_measured_says_why_every_time(course_dir: Callable[..., Path]) -> None:
    workspace = open_workspace(find_courses([course_dir("multi_plan_dose")])[0], load_protocol())
    with pytest.raises(NotEvaluable, match="no dose of exactly this component") as first:
        workspace.component_dose("peak")
    with pytest.raises(NotEvaluable) as second:
        workspace.component_dose("peak")
    assert str(first.value) == str(second.value)
    with pytest.raises(NotEvaluable, match="no fraction group of the course was recognised as component"):
        workspace.component_dose("conventional")


def _protocol_with_report(tmp_path: Path, **report: object) -> Path:
    text = (Path(__file__).resolve().parent.parent / "protocols" / "sfrt_ldrt.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["report"] = report
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_figures_draw_the_protocols_vocabulary(course_dir: Callable[..., Path], tmp_path: Path) -> None:
    course = find_courses([course_dir("compliant")])[0]
    named = load_protocol(_protocol_with_report(tmp_path, lesion="sfrt_gtv", peaks="peak", organs_at_risk=["heart"]))
    workspace = open_workspace(course, named)
    figures = build_figures(check_workspace(workspace), workspace)
    assert [p.key for p in figures] == ["dvh_peak", "dvh_low_dose", "slices", "profile"]  # no low-dose figure
    slices = figures.get("slices")
    assert slices is not None and "Outlines: GTV_SFRT white" in slices.caption  # centred on the named lesion
    unnamed = load_protocol(_protocol_with_report(tmp_path))
    workspace = open_workspace(course, unnamed)
    figures = build_figures(check_workspace(workspace), workspace)
    assert [p.key for p in figures] == ["dvh_peak", "dvh_low_dose", "slices"]  # no peaks named: no profile
    slices = figures.get("slices")
    assert slices is not None and "GTV_SFRT" not in slices.caption  # no lesion named: the first target


def test_report_section_names_roles_of_the_protocol(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match=r"report\.organs_at_risk names unknown role 'heartt'"):
        load_protocol(_protocol_with_report(tmp_path, organs_at_risk=["heartt"]))
    with pytest.raises(ProtocolError, match=r"report\.valley names 'vally'"):
        load_protocol(_protocol_with_report(tmp_path, valley=["vally"]))
    with pytest.raises(ProtocolError, match=r"at report\.peak_role: Extra inputs are not permitted"):
        load_protocol(_protocol_with_report(tmp_path, peak_role="peak"))
