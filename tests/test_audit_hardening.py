"""The audit under hostile conditions: unreadable submissions, names the scrubber must catch
in any Unicode form, and a SIGKILL of the audit itself.

Unreadable here means a real OS error for every user, root included: a symbolic link to
itself fails to open with ELOOP. The permission case (``chmod 000``) runs rtcheck in a
subprocess without root's power to read through permission bits (see test_unreadable.py).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pydicom
import pytest
from test_unreadable import run_without_override, write_replan

from rtcheck.audit.run import UNREADABLE_PREFIX, add_audit_arguments, run_audit
from rtcheck.errors import ExitCode
from rtcheck.phantom import build_spec, write_spec


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@dataclasses.dataclass(frozen=True)
class Patient:
    folder: str  # below ROOT, as the file system holds it
    patient_id: str
    name: str  # as DICOM holds it


PATIENTS = [
    # macOS writes file names decomposed: the folder is NFD, the DICOM name NFC.
    Patient(nfd("north/MRN50011_Müller_Jürgen"), "MRN50011", "Müller^Jürgen"),
    # The id in another case inside a longer folder name; the name in capitals in DICOM.
    Patient("south/Ærø_Søren_mrn50021-CT", "MRN50021", "ÆRØ^SØREN"),
]
#: A course whose only file cannot be opened: nothing in DICOM names its patient.
UNREADABLE = Patient("south/MRN50022_Nakamura_Yuriko", "MRN50022", "Nakamura^Yuriko")


def write_patient(root: Path, p: Patient) -> Path:
    spec = dataclasses.replace(build_spec("compliant", dose_spacing_mm=5.0), uid_seed=f"hardening|{p.patient_id}")
    folder = root / p.folder
    for path in write_spec(folder, spec):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = p.patient_id, p.name
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.save_as(path, enforce_file_format=True)
    return folder


def audit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    return run_audit(parser.parse_args(argv))


def forbidden_words() -> set[str]:
    words = set()
    for p in [*PATIENTS, UNREADABLE]:
        words.add(p.patient_id)
        words.update(part for part in p.name.split("^"))
    return {form for w in words for form in (w.lower(), nfd(w).lower(), w.casefold(), nfd(w.casefold()))}


def test_no_name_id_or_unreadable_course_in_any_output(tmp_path: Path) -> None:
    root = tmp_path / "submissions"
    muller = write_patient(root, PATIENTS[0])
    write_patient(root, PATIENTS[1])
    (muller / "replan").symlink_to("replan")  # a folder no one can open, in Müller's course folder
    (root / UNREADABLE.folder).mkdir(parents=True)
    (root / UNREADABLE.folder / "RP.dcm").symlink_to("RP.dcm")
    out = tmp_path / "audit"
    code = audit([str(root), "--out", str(out), "--centre-level", "1", "--no-progress", "-j", "2"])
    assert code == ExitCode.NOT_EVALUABLE

    with (out / "courses.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["centre"], r["verdict"]) for r in rows) == [
        ("north", "not_evaluable"),  # the unreadable folder beside its plan
        ("south", "not_evaluable"),  # the course nothing of which could be read
        ("south", "per_protocol"),
    ]
    lost = next(r for r in rows if r["patient"].startswith(UNREADABLE_PREFIX))
    assert lost["centre"] == "south" and "could not be read" in lost["error"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["centres"]["south"]["unreadable_files"] == 1

    dump = out / "audit.sql"
    with sqlite3.connect(out / "audit.sqlite") as conn:
        dump.write_text("\n".join(conn.iterdump()), encoding="utf-8")
    forbidden = forbidden_words() | {str(root).lower()}
    outputs = [f for f in out.rglob("*") if f.is_file() and f.name != "pseudonym.key"]
    assert {f.suffix for f in outputs} >= {".json", ".csv", ".html", ".sqlite", ".sql"}
    for f in outputs:
        text = f.read_bytes().decode("utf-8", "replace")
        for form in (text.lower(), nfd(text).lower(), text.casefold(), nfd(text.casefold())):
            found = sorted(w for w in forbidden if w in form)
            assert not found, f"{f.name} holds {found}"


def test_unreadable_replan_folder_fails_the_audit_closed(tmp_path: Path) -> None:
    root = tmp_path / "submissions"
    folder = write_patient(root, PATIENTS[1])
    write_replan(folder, folder / "replan")
    out = tmp_path / "audit"
    argv = [root, "--out", out, "--centre-level", "1", "--no-progress", "-j", "2"]
    readable = run_without_override("audit", *argv)
    assert readable.returncode == ExitCode.UNACCEPTABLE_DEVIATION, readable.stderr
    (folder / "replan").chmod(0o000)
    try:
        unreadable = run_without_override("audit", *argv)
    finally:
        (folder / "replan").chmod(0o755)
    assert unreadable.returncode == ExitCode.NOT_EVALUABLE, unreadable.stderr
    assert "could not be read" in unreadable.stderr
    (report,) = [json.loads(p.read_text()) for p in (out / "reports").rglob("*.json") if p.stat().st_mtime > 0][-1:]
    with (out / "courses.csv").open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["verdict"] == "not_evaluable"
    report = json.loads((out / row["report"]).read_text(encoding="utf-8"))
    rule = next(r for r in report["rules"] if r["id"] == "course.inputs_readable")
    assert "cannot list this folder (Permission denied)" in rule["message"]


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_process_of_a_killed_audit_survives(tmp_path: Path) -> None:
    root = tmp_path / "submissions"
    for i in range(6):
        write_patient(root, Patient(f"c{i % 2}/P{i}", f"P{i}", f"Name{i}^Given{i}"))
    audit_proc = subprocess.Popen(
        [sys.executable, "-m", "rtcheck", "audit", root, "--out", tmp_path / "out", "--no-progress", "-j", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # The audit, its fork server and two workers (a resource tracker may come too).
        while len(session_processes(audit_proc.pid)) < 4 and audit_proc.poll() is None:
            assert time.monotonic() < deadline, "the audit never started its workers"
            time.sleep(0.1)
        assert audit_proc.poll() is None, "the audit ended before its workers could be seen"
        audit_proc.send_signal(signal.SIGKILL)
        audit_proc.wait(timeout=10)
        killed_at = time.monotonic()
        while session_processes(audit_proc.pid) and time.monotonic() - killed_at < 10:
            time.sleep(0.1)
        survivors = session_processes(audit_proc.pid)
        assert not survivors, f"alive 10 s after the audit was killed: {survivors}"
    finally:
        for pid in session_processes(audit_proc.pid):
            os.kill(pid, signal.SIGKILL)
