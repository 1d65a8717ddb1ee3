"""``rtcheck audit`` on generated submissions from three centres.

The submissions: North Hospital names the spinal cord "Myelon" (handled by a protocol
alias), South Hospital sent a course with a truncated structure set, and the third
centre (mapped by patient id and by InstitutionName) a course without its dose. Patients
have realistic names and ids, and folders named after them, so that the privacy checks
have something to find.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import yaml

from rtcheck.api import check_course, find_courses, load_protocol
from rtcheck.audit.discovery import CentreMap, CentreMapError, Root, index_all, list_files, load_centres_csv
from rtcheck.audit.executors import ClusterError, DaskExecutor, PoolExecutor, SerialExecutor
from rtcheck.audit.privacy import PseudonymKey, scrubber_for
from rtcheck.audit.run import add_audit_arguments, run_audit
from rtcheck.errors import ExitCode
from rtcheck.phantom import build_spec, write_spec, write_truncated_copy
from rtcheck.protocol import bundled_protocol_path

COARSE = {"dose_spacing_mm": 4.0}


@dataclasses.dataclass(frozen=True)
class Patient:
    folder: str  # below ROOT
    variant: str
    patient_id: str
    name: str
    verdict: str
    institution: str = ""
    myelon: bool = False  # SpinalCord renamed Myelon (North Hospital's convention)
    truncate_rs: bool = False
    no_dose: bool = False


PATIENTS = [
    Patient("north/MRN40011", "compliant", "MRN40011", "Kowalski^Agnieszka", "per_protocol", myelon=True),
    Patient("north/MRN40012", "compliant", "MRN40012", "Okafor^Chidubem", "per_protocol", myelon=True),
    Patient("north/MRN40013", "sfrt_rx_7gy", "MRN40013", "Lindqvist^Majken", "acceptable_variation", myelon=True),
    Patient("south/Duarte_Ximena_MRN40021", "compliant", "MRN40021", "Duarte^Ximena", "per_protocol"),
    Patient("south/MRN40022", "ldrt_3_fractions", "MRN40022", "Haddad^Samira", "unacceptable_deviation"),
    Patient("south/MRN40023", "compliant", "MRN40023", "Nakamura^Yuriko", "not_evaluable", truncate_rs=True),
    Patient("other/MRN40031/plan", "control_arm", "MRN40031", "Brennan^Siobhan", "per_protocol"),
    Patient("other/MRN40032", "compliant", "MRN40032", "Moreau^Lucienne", "not_evaluable", "East Clinic", no_dose=True),
]
CENTRES_CSV = "path_prefix,patient_id,centre\nnorth,,North Hospital\nsouth,,South Hospital\n,MRN40031,East Clinic\n"
EXPECTED = {
    "North Hospital": {"per_protocol": 2, "acceptable_variation": 1},
    "South Hospital": {"per_protocol": 1, "unacceptable_deviation": 1, "not_evaluable": 1},
    "East Clinic": {"per_protocol": 1, "not_evaluable": 1},
}


def write_patient(root: Path, p: Patient) -> None:
    overrides = dict(COARSE, omit_modalities=("RTDOSE",)) if p.no_dose else COARSE
    spec = dataclasses.replace(build_spec(p.variant, **overrides), uid_seed=f"audit|{p.patient_id}")
    folder = root / p.folder
    for path in write_spec(folder, spec):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = p.patient_id, p.name
        if p.institution:
            ds.InstitutionName = p.institution
        if p.myelon and ds.Modality == "RTSTRUCT":
            for item in ds.StructureSetROISequence:
                if item.ROIName == "SpinalCord":
                    item.ROIName = "Myelon"
            for item in ds.RTROIObservationsSequence:
                if item.ROIObservationLabel == "SpinalCord":
                    item.ROIObservationLabel = "Myelon"
        ds.save_as(path, enforce_file_format=True)
    if p.truncate_rs:
        write_truncated_copy(folder / "RS.dcm", folder / "RS.dcm", keep_fraction=0.5)


def alias_protocol(path: Path) -> Path:
    """The trial protocol with "Myelon" added to the spinal cord role."""
    data = yaml.safe_load(bundled_protocol_path().read_text(encoding="utf-8"))
    data["roles"]["spinal_cord"]["patterns"].append("Myelon")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@dataclasses.dataclass
class Setup:
    root: Path
    protocol: Path
    centres: Path
    key: Path
    base: Path

    def args(self, out: Path, *extra: str, root: Path | None = None) -> list[str]:
        return [
            str(root or self.root),
            "--out",
            str(out),
            "--protocol",
            str(self.protocol),
            "--centres",
            str(self.centres),
            "--no-progress",
            *extra,
        ]


def audit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    return run_audit(parser.parse_args(argv))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("audit")
    root = base / "submissions"
    for p in PATIENTS:
        write_patient(root, p)
    (root / "south" / "transfer-notes.txt").write_text("sent by courier\n", encoding="utf-8")
    protocol = alias_protocol(base / "protocol-myelon.yaml")
    centres = base / "centres.csv"
    centres.write_text(CENTRES_CSV, encoding="utf-8")
    key = base / "trial.key"
    key.write_text("9f1c2a7d4e8b6053a1d2c3b4e5f60718293a4b5c6d7e8f90\n", encoding="ascii")
    return Setup(root, protocol, centres, key, base)


@pytest.fixture(scope="module")
def local_run(setup: Setup) -> Path:
    out = setup.base / "out-local"
    code = audit(setup.args(out, "-j", "2", "--pseudonym-key", str(setup.key)))
    assert code == ExitCode.NOT_EVALUABLE  # the worst course: unreadable / incomplete
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def db_rows(out: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(out / "audit.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the audit


def test_audit_counts_courses_per_centre(setup: Setup, local_run: Path) -> None:
    summary = json.loads((local_run / "summary.json").read_text(encoding="utf-8"))
    for centre, verdicts in EXPECTED.items():
        entry = summary["centres"][centre]
        assert entry["courses"] == sum(verdicts.values())
        assert {k: v for k, v in entry["verdicts"].items() if v} == verdicts
        assert entry["rates"]["per_protocol"] == pytest.approx(verdicts["per_protocol"] / entry["courses"])
    assert set(summary["centres"]) == set(EXPECTED)
    assert summary["centres"]["South Hospital"]["errors"] == 1
    assert summary["centres"]["East Clinic"]["incomplete"] == 1
    assert summary["totals"]["courses"] == len(PATIENTS)
    assert summary["run"]["checked"] == len(PATIENTS) and summary["run"]["reused"] == 0
    assert summary["run"]["not_dicom_files"] == 1  # the transfer note, counted but no error

    rows = read_csv(local_run / "courses.csv")
    assert len(rows) == len(PATIENTS)
    sources = {r["centre"]: set() for r in rows}
    for r in rows:
        sources[r["centre"]].add(r["centre_source"])
    assert sources == {
        "North Hospital": {"path_prefix"},
        "South Hospital": {"path_prefix"},
        "East Clinic": {"patient_id", "institution_name"},
    }
    key = PseudonymKey(setup.key.read_bytes().strip())
    by_patient = {r["patient"]: r for r in rows}
    for p in PATIENTS:
        row = by_patient[key.pseudonym(p.patient_id)]
        assert row["verdict"] == p.verdict, p
        report = json.loads((local_run / row["report"]).read_text(encoding="utf-8"))
        assert report["verdict"] == p.verdict and report["patient_id"] == row["patient"]
        if p.myelon:  # the alias made the renamed cord count
            assert row["structures.required.status"] == "per_protocol"
            assert row["oar.spinal_cord_max.status"] == "per_protocol"
        if p.truncate_rs:
            assert row["outcome"] == "error" and "truncated" in row["error"]
            assert row["error"].startswith("south/MRN40023/RS.dcm") or "RS.dcm" in row["error"]
        if p.no_dose:
            assert row["outcome"] == "incomplete" and report["rules"][0]["id"] == "course.complete"
    # Per rule: its status and its measured value, in the rule's unit.
    rx = by_patient[key.pseudonym("MRN40013")]
    assert rx["sfrt.prescription.status"] == "acceptable_variation"
    assert float(rx["sfrt.prescription.value_cGy"]) == pytest.approx(700.0)


def test_the_alias_is_what_accepts_the_renamed_cord(setup: Setup) -> None:
    (course,) = find_courses([setup.root / "north" / "MRN40011"])
    plain = check_course(course, load_protocol())
    assert plain.rule("structures.required").status != "per_protocol"
    assert check_course(course, load_protocol(setup.protocol)).rule("structures.required").status == "per_protocol"


def test_summary_html_is_self_contained(local_run: Path) -> None:
    page = (local_run / "summary.html").read_text(encoding="utf-8")
    summary = json.loads((local_run / "summary.json").read_text(encoding="utf-8"))
    assert page.count("<svg") == 2 + len(summary["headline_metrics"])
    assert "sfrt.prescription" in summary["headline_metrics"] and "sfrt.pvdr" in summary["headline_metrics"]
    for centre in EXPECTED:
        assert centre in page
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "src=" not in lowered
    assert summary["rules_failing_most"][0] in {"valley.fractions", "ldrt.fractions"}
    assert summary["metrics"]["sfrt.prescription"]["by_centre"]["North Hospital"]["min"] == pytest.approx(700.0)


def test_rerun_checks_only_what_is_new(setup: Setup, local_run: Path, tmp_path: Path) -> None:
    # The same submissions somewhere else (paths change, contents do not) and the audit folder with them.
    root, out = tmp_path / "moved", tmp_path / "out"
    shutil.copytree(setup.root, root)
    shutil.copytree(local_run, out)
    before = db_rows(out, "SELECT result_key, checked_at FROM results ORDER BY result_key")
    assert audit(setup.args(out, "-j", "2", "--pseudonym-key", str(setup.key), root=root)) == ExitCode.NOT_EVALUABLE
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["run"]["checked"], summary["run"]["reused"]) == (0, len(PATIENTS))
    assert db_rows(out, "SELECT result_key, checked_at FROM results ORDER BY result_key") == before
    assert read_csv(out / "courses.csv") == read_csv(local_run / "courses.csv")

    # A new submission: only it is checked.
    write_patient(root, Patient("south/MRN40024", "sfrt_rx_6gy", "MRN40024", "Ferreira^Joaquim", ""))
    audit(setup.args(out, "-j", "1", "--pseudonym-key", str(setup.key), root=root))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["run"]["checked"], summary["run"]["reused"]) == (1, len(PATIENTS))
    assert summary["centres"]["South Hospital"]["verdicts"]["unacceptable_deviation"] == 2
    runs = db_rows(out, "SELECT status, checked, reused FROM runs ORDER BY run_id")
    assert runs == [("complete", 8, 0), ("complete", 0, 8), ("complete", 1, 8)]


def test_a_killed_audit_resumes_without_duplicates(setup: Setup, local_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rtcheck.audit", *setup.args(out, "-j", "1")]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path
    )
    committed = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "audit.sqlite").exists():
                try:
                    committed = db_rows(out, "SELECT COUNT(*) FROM results")[0][0]
                except sqlite3.OperationalError:
                    committed = 0  # the schema is being created
                if committed:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    committed = db_rows(out, "SELECT COUNT(*) FROM results")[0][0]
    assert 1 <= committed < len(PATIENTS)
    assert stat.S_IMODE((out / "pseudonym.key").stat().st_mode) == 0o600

    audit(setup.args(out, "-j", "1"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["run"]["checked"] == len(PATIENTS) - committed
    assert db_rows(out, "SELECT COUNT(*), COUNT(DISTINCT course_key) FROM results") == [(8, 8)]
    assert db_rows(out, "SELECT status FROM runs ORDER BY run_id") == [("interrupted",), ("complete",)]
    rows = read_csv(out / "courses.csv")
    assert len({(r["patient"], r["course"]) for r in rows}) == len(rows) == len(PATIENTS)
    # Another key, other pseudonyms, the same verdicts.
    local = read_csv(local_run / "courses.csv")
    assert {r["patient"] for r in rows}.isdisjoint({r["patient"] for r in local})
    assert sorted(r["verdict"] for r in rows) == sorted(r["verdict"] for r in local)
    assert len(list((out / "reports").rglob("*.json"))) == len(PATIENTS)


def test_dask_cluster_gives_the_same_results(setup: Setup, local_run: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = setup.base / "out-dask"
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        code = audit(setup.args(out, "--scheduler", cluster.scheduler_address, "--pseudonym-key", str(setup.key)))
    assert code == ExitCode.NOT_EVALUABLE
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["run"]["executor"].startswith("dask")
    assert read_csv(out / "courses.csv") == read_csv(local_run / "courses.csv")
    assert db_rows(out, "SELECT DISTINCT worker FROM results WHERE outcome = 'report'") != db_rows(
        local_run, "SELECT DISTINCT worker FROM results WHERE outcome = 'report'"
    )


def test_no_patient_name_or_id_in_any_output(setup: Setup, local_run: Path) -> None:
    forbidden = {str(setup.root).encode()}
    for p in PATIENTS:
        forbidden.add(p.patient_id.lower().encode())
        forbidden.add(p.name.lower().encode())
        forbidden.update(part.lower().encode() for part in p.name.split("^"))
    outputs = [local_run]
    if (setup.base / "out-dask").exists():
        outputs.append(setup.base / "out-dask")
    files = [f for out in outputs for f in out.rglob("*") if f.is_file()]
    assert any(f.name == "audit.sqlite" for f in files) and any(f.suffix == ".json" for f in files)
    for f in files:
        data = f.read_bytes().lower()
        found = [w.decode() for w in forbidden if w in data]
        assert not found, f"{f.relative_to(f.parents[1])} contains {found}"
    # Paths are relative to ROOT, with the patient folder replaced by the pseudonym.
    rows = read_csv(local_run / "courses.csv")
    key = PseudonymKey(setup.key.read_bytes().strip())
    report = json.loads((local_run / next(r["report"] for r in rows if r["verdict"] == "per_protocol")).read_text())
    assert report["patient_name"] == ""
    assert all(not f["path"].startswith("/") for f in report["files"])
    south = json.loads(
        (local_run / next(r["report"] for r in rows if r["patient"] == key.pseudonym("MRN40021"))).read_text()
    )
    assert {Path(f["path"]).parent.as_posix() for f in south["files"]} == {
        f"south/[name]_[name]_{key.pseudonym('MRN40021')}"
    }


# --------------------------------------------------------------------------- the parts


def test_centre_mapping_rules(tmp_path: Path) -> None:
    root = Root(tmp_path, "")
    plan = tmp_path / "site-a" / "2024" / "P1" / "RP.dcm"
    assert CentreMap(level=1).centre(root, plan, "P1", "Inst") == ("site-a", "folder_level")
    assert CentreMap(level=2).centre(root, plan, "P1", "Inst") == ("2024", "folder_level")
    # Not deep enough for the level: the institution, else unknown.
    assert CentreMap(level=4).centre(root, plan, "P1", "Inst") == ("Inst", "institution_name")
    assert CentreMap(level=4).centre(root, plan, "P1", " ") == ("unknown", "unknown")
    csv_file = tmp_path / "centres.csv"
    csv_file.write_text("# the trial's centres\npath_prefix,patient_id,centre\nsite-a,,A\nsite-a/2024,,A-2024\n,P9,Z\n")
    prefixes, patients = load_centres_csv(csv_file)
    rules = CentreMap(level=1, prefixes=prefixes, patients=patients)
    assert rules.centre(root, plan, "P1", "") == ("A-2024", "path_prefix")  # the longest prefix wins
    assert rules.centre(root, plan, "P9", "") == ("Z", "patient_id")
    assert rules.centre(root, tmp_path / "site-ab" / "P2" / "RP.dcm", "P2", "") == ("site-ab", "folder_level")
    bad = tmp_path / "bad.csv"
    bad.write_text("folder,centre\nx,y\n")
    with pytest.raises(CentreMapError, match="'centre' column and a 'path_prefix' and/or 'patient_id'"):
        load_centres_csv(bad)
    bad.write_text("path_prefix,centre\nx,\n")
    with pytest.raises(CentreMapError, match="data line 1"):
        load_centres_csv(bad)


def test_indexing_in_worker_processes_finds_what_one_process_finds(setup: Setup) -> None:
    files = list_files([Root(setup.root, "")])
    serial = index_all(files, SerialExecutor(), 1, lambda n: None)
    pool = PoolExecutor(2)
    try:
        done: list[int] = []
        parallel = index_all(files, pool, 2, done.append, min_parallel=0)
    finally:
        pool.close()
    assert sum(done) == len(files) and len(done) > 1
    assert parallel == serial
    assert (len(serial.files), serial.not_dicom, serial.unreadable) == (36, 1, [])  # 6 x (RS, 2 RP, 2 RD) + 2 x 3 files


def test_scrubber_replaces_ids_names_and_roots() -> None:
    key = PseudonymKey(b"0123456789abcdef0123")
    assert key.pseudonym("MRN1") == PseudonymKey(b"0123456789abcdef0123").pseudonym("MRN1")
    assert key.pseudonym("MRN1") != PseudonymKey(b"another key of 20 b").pseudonym("MRN1")
    scrub = scrubber_for(key, [("/data/in/", "")], [("MRN1", "Doe^Jane")])
    pid = key.pseudonym("MRN1")
    assert scrub.path("/data/in/c1/mrn1/Doe_Jane/RP.dcm") == f"c1/{pid}/[name]_[name]/RP.dcm"
    assert scrub.text("Jane Doe's plan; Doerte and Janet stay") == "[name] [name]'s plan; Doerte and Janet stay"
    assert scrub.data({"files": ["/data/in/x/MRN1.dcm"], "MRN1": 3}) == {"files": [f"x/{pid}.dcm"], pid: 3}


def test_scheduler_without_dask_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"--scheduler needs Dask: pip install"):
        DaskExecutor("tcp://127.0.0.1:8786")
