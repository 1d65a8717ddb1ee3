"""What a person sees: a report readable at 80 columns, one line per warning, clear -o, cited sources."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom import config
from pydicom.dataelem import DataElement

from rtcheck.api import load_protocol
from rtcheck.assembly import CourseFiles
from rtcheck.cli import main
from rtcheck.errors import ExitCode, ProtocolError
from rtcheck.protocol import bundled_protocol_path
from rtcheck.report import Report
from rtcheck.reports.html import render_html
from rtcheck.reports.text import render_text


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 120])
def test_report_fits_the_terminal_and_keeps_every_detail(
    width: int, checked: Callable[[str], tuple[CourseFiles, Report]]
) -> None:
    _, report = checked("sfrt_rx_6gy")
    text = render_text(report, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    # no line ends in the space it was wrapped at: a script or a diff reads no padding
    assert [line for line in text.splitlines() if line != line.rstrip()] == []
    flat = _words(text)
    for rule in report.rules:
        if rule.status != "per_protocol":
            # Details are whole words on whole lines, not one character per line.
            assert _words(rule.message)[:60] in flat, (width, rule.id)
    assert "FAIL sfrt.prescription  600.0 cGy" in text


def test_a_wide_terminal_gets_the_table(checked: Callable[[str], tuple[CourseFiles, Report]]) -> None:
    _, report = checked("sfrt_rx_6gy")
    text = render_text(report, width=160)
    assert max(len(line) for line in text.splitlines()) <= 160
    assert "per protocol" in text and "detail" in text


def test_narrow_report_puts_details_under_the_rule(checked: Callable[[str], tuple[CourseFiles, Report]]) -> None:
    _, report = checked("sfrt_rx_6gy")
    lines = render_text(report, width=80).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("FAIL sfrt.prescription"))
    assert lines[head + 1].strip().startswith("per protocol 800–1200 cGy · acceptable 700–1300 cGy")
    assert not any(len(line.strip()) == 1 for line in lines)  # no column squeezed to one character


def test_one_file_for_several_courses_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path
) -> None:
    both = tmp_path / "both"
    shutil.copytree(course_dir("compliant"), both / "a")
    shutil.copytree(course_dir("control_arm"), both / "b")
    code = main([str(both), "--format", "html", "-o", str(tmp_path / "report.html")])
    assert code == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert "2 courses found" in err and "-o" in err
    assert not (tmp_path / "report.html").exists()


def test_a_pydicom_warning_is_one_line_and_quiet_means_quiet(
    capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path
) -> None:
    folder = tmp_path / "odd"
    shutil.copytree(course_dir("control_arm"), folder)
    plan = next(folder.glob("RP*.dcm"))
    ds = pydicom.dcmread(plan)
    modes = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        ds[0x00200052] = DataElement(0x00200052, "UI", "UNKNOWN")  # not a UID
        ds.save_as(plan)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = modes
    main([str(folder), "--format", "json"])
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "Invalid value for VR UI" in line]) == 1, err
    main([str(folder), "--quiet"])
    assert "Invalid value" not in capsys.readouterr().err


def test_every_source_cites_listed_primary_references() -> None:
    text = bundled_protocol_path().read_text()
    assert "domain.md" not in text
    protocol = load_protocol()
    cited: set[str] = set()
    for rule in protocol.rules:
        keys = set(re.findall(r"\[([A-Za-z0-9][A-Za-z0-9.\-]*)\]", rule.source)) - {"inference"}
        assert keys, f"{rule.id} cites no reference"
        cited |= keys
    assert cited == set(protocol.references)  # each listed once, each used


def test_a_report_carries_the_references_its_sources_cite(
    checked: Callable[[str], tuple[CourseFiles, Report]],
) -> None:
    _, report = checked("compliant")
    heart = report.rule("oar.heart_mean")
    assert heart is not None and heart.source.startswith("[NCCN-NSCLC]")
    assert "Non-Small Cell Lung Cancer" in report.protocol.references["NCCN-NSCLC"]
    html = render_html(report)
    assert "<h2>References</h2>" in html and "<b>[NCCN-NSCLC]</b> NCCN Clinical Practice Guidelines" in html
    assert '<td class="id">Lung_L</td><td>lungs</td>' in html  # which drawn name plays which role


def test_an_unlisted_reference_is_a_protocol_error(tmp_path: Path) -> None:
    data = yaml.safe_load(bundled_protocol_path().read_text())
    data["rules"][0]["source"] = "[NO-SUCH-PAPER] somewhere"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProtocolError, match=r"cites \[NO-SUCH-PAPER\]"):
        load_protocol(path)
