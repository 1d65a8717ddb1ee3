"""What rtcheck prints: names from the files cannot forge output, a closed pipe is no error."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from rtcheck.cli import main
from rtcheck.errors import ExitCode
from rtcheck.terminal import EscapingFormatter, printable

FORGED = "\n\x1b[32mrtcheck: PER PROTOCOL (FAKE)\x1b[0m\r\n"


def test_printable_escapes_control_and_format_characters() -> None:
    assert printable("Peak_1 · GTV Müller") == "Peak_1 · GTV Müller"
    assert printable("a\nb\rc\td\x00e\x1b[0mf\x7fg\x9bh") == "a\\nb\\rc\\td\\x00e\\x1b[0mf\\x7fg\\x9bh"
    # Bidirectional overrides reorder what is shown; line separators break lines.
    assert printable("x\u202egnp.exe\u2028y") == "x\\u202egnp.exe\\u2028y"


def test_a_forged_file_name_and_dicom_strings_cannot_make_an_output_line(
    capsys: pytest.CaptureFixture[str], course_dir, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(course_dir("compliant", dose_spacing_mm=5.0), export)
    for path in export.glob("R*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientID = "MRN1" + FORGED
        if ds.Modality == "RTPLAN":
            ds.RTPlanLabel = ds.RTPlanLabel + "\x1b[2K"
        ds.save_as(path, enforce_file_format=True)
    # A file no one can open (a link to itself): its name is printed in a warning.
    (export / f"RP{FORGED}.dcm").symlink_to(f"RP{FORGED}.dcm")
    for args in ([], ["--quiet"]):
        code = main([str(export), "--no-color", *args])
        captured = capsys.readouterr()
        assert code == ExitCode.NOT_EVALUABLE  # the unreadable file keeps the course from passing
        for text in (captured.out, captured.err):
            assert "\x1b" not in text and "\r" not in text
            assert not any(line.startswith("rtcheck: PER PROTOCOL") for line in text.splitlines())
        assert "\\x1b[32mrtcheck: PER PROTOCOL (FAKE)\\x1b[0m\\r\\n" in captured.err + captured.out


def test_log_records_are_one_escaped_line() -> None:
    record = logging.LogRecord(
        "rtcheck.serve", logging.INFO, __file__, 1, "event=stored patient=%s", ("A\r\x1b\x00B",), None
    )
    line = EscapingFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO event=stored patient=A\\r\\x1b\\x00B"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_closed_pipe_ends_quietly_with_the_usual_exit_code(course_dir, fmt: str) -> None:
    """``rtcheck ... | head -c 5``: the verdict's exit code, nothing on standard error.

    Two courses make the output larger than a pipe's buffer (64 KiB), so rtcheck is still
    writing when ``head`` has gone: as JSON, and as text on a terminal 600 columns wide (the
    rules tables span the width; narrower, the compact layout is too short to fill the pipe).
    """
    folders = [course_dir("compliant", dose_spacing_mm=5.0), course_dir("sfrt_rx_7gy", dose_spacing_mm=5.0)]
    command = [sys.executable, "-m", "rtcheck", *map(str, folders), "--format", fmt]
    env = {**os.environ, "COLUMNS": "600"}
    whole = subprocess.run(command, capture_output=True, timeout=300, env=env)
    assert whole.returncode == ExitCode.ACCEPTABLE_VARIATION and len(whole.stdout) > 1 << 16
    piped = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -c 5 >/dev/null; echo "${PIPESTATUS[0]}" >&2', "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    assert piped.stderr.strip() == str(int(ExitCode.ACCEPTABLE_VARIATION)), piped.stderr
