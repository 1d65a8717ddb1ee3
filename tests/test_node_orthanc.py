"""``rtcheck serve`` among a hospital's systems, with Orthanc as the archive and router.

Courses are stored in Orthanc; Orthanc forwards each study to the node the way a DICOM
router does (one association per study); the node checks it, writes its reports and its
page of recent checks, and files the report back into Orthanc (``--report-to``), where
the test reads it through Orthanc's REST API. Orthanc and the node run on free ports of
127.0.0.1 and are stopped by PID at the end. A test that needs Orthanc (or the browser)
fails, instead of skipping, when the environment variable CI is set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pydicom
from browser import PHONE, chromium
from peers import Orthanc, free_port, orthanc
from pynetdicom.sop_class import EncapsulatedPDFStorage
from test_serve_report_to import Node, wait_for

from rtcheck.api import find_courses

#: Three courses of three patients, forwarded in this order, with the verdicts the phantom builds in.
COURSES = [("compliant", "per_protocol"), ("sfrt_rx_6gy", "unacceptable_deviation"), ("control_arm", "per_protocol")]


def pdf_text(data: bytes, folder: Path) -> str:
    """The text of a PDF, as poppler's ``pdftotext`` reads it."""
    path = folder / "report.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def reports_in(archive: Orthanc, plan: pydicom.Dataset) -> list[dict]:
    """The Encapsulated PDF instances Orthanc holds in the plan's study."""
    found = archive.instances_of_study(plan.StudyInstanceUID)
    return [i for i in found if i["SOPClassUID"] == EncapsulatedPDFStorage]


class _Links(HTMLParser):
    """The report links of the page of recent checks, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and (a.get("class") or "").startswith("v-"):
            self.rows.append([str(a["class"])])
        elif tag == "a" and self.rows:
            self.rows[-1].append(str(a["href"]))


def index_rows(reports: Path) -> list[list[str]]:
    """[verdict class, report link] per row of ``reports/index.html`` (none if it is not there)."""
    try:
        page = (reports / "index.html").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    parser = _Links()
    parser.feed(page)
    return parser.rows


def test_courses_forwarded_by_orthanc_come_back_as_reports(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folders = [course_dir(variant, dose_spacing_mm=5.0) for variant, _ in COURSES]
    plans = [pydicom.dcmread(find_courses([f])[0].plans[0].path, stop_before_pixels=True) for f in folders]
    node_port = free_port()
    with orthanc(tmp_path / "orthanc", {"rtcheck": ("RTCHECK", node_port)}) as archive:
        node = Node(tmp_path / "node", "--report-to", archive.address, "--allow", f"{archive.ae_title}@127.0.0.1")
        node.port = node_port
        try:
            node.start()
            for folder, plan in zip(folders, plans, strict=True):
                files = sorted(folder.glob("*.dcm"))
                (study,) = archive.upload(files)
                sent = archive.forward("rtcheck", study)
                assert (sent["InstancesCount"], sent["FailedInstancesCount"]) == (len(files), 0)
                wait_for(lambda p=plan: reports_in(archive, p), f"the report of {plan.PatientID} in Orthanc")
            # each report's HTML page is drawn right after its JSON and text reports are written
            wait_for(
                lambda: [link.endswith(".html") for _, link in index_rows(node.reports)] == [True] * len(COURSES),
                "three rows in index.html, each with its HTML report",
            )
        finally:
            node.stop()
        # one association per study, each from Orthanc's AE title
        associations = [line for line in node.log().splitlines() if "event=association" in line]
        assert len(associations) == len(COURSES), associations
        for line, folder in zip(associations, folders, strict=True):
            assert "calling_ae=ORTHANC" in line and f"stored={len(list(folder.glob('*.dcm')))} " in line, line

        for (_, verdict), plan in zip(COURSES, plans, strict=True):
            (stored,) = reports_in(archive, plan)
            assert (stored["PatientID"], stored["StudyInstanceUID"]) == (plan.PatientID, plan.StudyInstanceUID)
            (on_disk,) = node.reports_of(plan.PatientID, ".json")
            assert json.loads(on_disk.read_text(encoding="utf-8"))["verdict"] == verdict
            assert stored["SOPInstanceUID"] == pydicom.dcmread(on_disk.with_suffix(".dcm")).SOPInstanceUID
            # the PDF as Orthanc serves it reads as this course's report
            pdf = archive.get_bytes(f"/instances/{stored['ID']}/pdf")
            text = pdf_text(pdf, tmp_path)
            assert f"Verdict: {verdict.replace('_', ' ').upper()}" in text
            assert f"Patient {plan.PatientID}" in text

    # The page of recent checks: newest first, each row linking to the course's HTML report.
    rows = index_rows(node.reports)
    expected = [(f"v-{verdict}", plan.PatientID) for (_, verdict), plan in zip(COURSES, plans, strict=True)][::-1]
    assert [(cls, Path(link).parts[0]) for cls, link in rows] == expected
    for _, link in rows:
        assert link.endswith(".html") and (node.reports / link).is_file()

    # Rebuilt from the reports on disk at the next start, whatever became of it.
    (node.reports / "index.html").write_text("left over", encoding="utf-8")
    node.start()
    try:
        wait_for(lambda: index_rows(node.reports) == rows, "index.html rebuilt at start")
    finally:
        node.stop()

    # What the node wrote opens whole in a browser: the page, and each report with its figures.
    with chromium() as browser:
        page = browser.open(node.reports / "index.html", PHONE)
        assert page.console_errors() == []
        for _, link in rows:
            report = browser.open(node.reports / link)
            assert report.console_errors() == []
            figures = report.figures()
            assert figures and all(f.shown for f in figures), figures
