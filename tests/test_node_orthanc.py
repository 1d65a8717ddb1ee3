"""``rtcheck serve`` among a hospital's systems, with Orthanc as the archive and router.

A course is stored in Orthanc; Orthanc forwards the study to the node the way a DICOM
router does (one association for the study); the node checks it and files its report
back into Orthanc (``--report-to``), where the test reads it through Orthanc's REST API.
Orthanc and the node run on free ports of 127.0.0.1 and are stopped by PID at the end.
A test that needs Orthanc fails, instead of skipping, when the environment variable CI is set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
from peers import free_port, orthanc
from pynetdicom.sop_class import EncapsulatedPDFStorage
from test_serve_report_to import Node, wait_for

from rtcheck.api import find_courses


def pdf_text(data: bytes, folder: Path) -> str:
    """The text of a PDF, as poppler's ``pdftotext`` reads it."""
    path = folder / "report.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_course_forwarded_by_orthanc_comes_back_as_a_report(tmp_path: Path, course_dir: Callable[..., Path]) -> None:
    folder = course_dir("compliant", dose_spacing_mm=5.0)
    files = sorted(folder.glob("*.dcm"))
    (course,) = find_courses([folder])
    plan = pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
    node_port = free_port()
    with orthanc(tmp_path / "orthanc", {"rtcheck": ("RTCHECK", node_port)}) as archive:
        node = Node(tmp_path / "node", "--report-to", archive.address, "--allow", f"{archive.ae_title}@127.0.0.1")
        node.port = node_port
        try:
            node.start()
            (study,) = archive.upload(files)
            sent = archive.forward("rtcheck", study)
            assert (sent["InstancesCount"], sent["FailedInstancesCount"]) == (len(files), 0)

            def report_in_archive() -> list[dict]:
                return [
                    i
                    for i in archive.instances_of_study(plan.StudyInstanceUID)
                    if i["SOPClassUID"] == EncapsulatedPDFStorage
                ]

            wait_for(report_in_archive, "the report in Orthanc")
            log = node.log()
        finally:
            node.stop()
        (stored,) = report_in_archive()
        # one association for the whole study, from Orthanc's AE title
        associations = [line for line in log.splitlines() if "event=association" in line]
        assert len(associations) == 1 and "calling_ae=ORTHANC" in associations[0], associations
        assert f"stored={len(files)}" in associations[0]

        assert (stored["PatientID"], stored["StudyInstanceUID"]) == (plan.PatientID, plan.StudyInstanceUID)
        (on_disk,) = node.reports_of(plan.PatientID, ".json")
        verdict = json.loads(on_disk.read_text(encoding="utf-8"))["verdict"]
        assert verdict == "per_protocol"
        written = pydicom.dcmread(on_disk.with_suffix(".dcm"))
        assert stored["SOPInstanceUID"] == written.SOPInstanceUID
        # the PDF as Orthanc serves it is the one the node wrote, and reads as the report
        pdf = archive.get_bytes(f"/instances/{stored['ID']}/pdf")
        assert pdf.startswith(b"%PDF-")
        text = pdf_text(pdf, tmp_path)
        assert "Verdict: PER PROTOCOL" in text
        assert f"Patient {plan.PatientID}" in text
