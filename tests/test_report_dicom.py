"""The report as an Encapsulated PDF object and a Basic Text SR, filed in the plan's patient and study.

``dciodvfy`` (dicom3tools) must find no error in it; the tests fail, instead of skipping,
when dciodvfy is missing and the environment variable CI is set.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from peers import require

from rtcheck.api import find_courses, incomplete_report, load_protocol
from rtcheck.errors import InputError
from rtcheck.phantom import write_plan_without_structure_set
from rtcheck.reports.dicom import (
    BASIC_TEXT_SR_STORAGE,
    ENCAPSULATED_PDF_STORAGE,
    encapsulate_pdf,
    encapsulated_pdf,
    write_dicom,
    write_findings_sr,
)
from rtcheck.reports.figures import build_figures
from rtcheck.reports.pdf import render_pdf


def dciodvfy(path: Path) -> str:
    found = require("dciodvfy", "dicom3tools")
    out = subprocess.run([found, str(path)], capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


@pytest.mark.parametrize("variant", ["compliant", "peak_near_gtv_edge"])
def test_report_object_is_valid_and_filed_with_the_plan(variant: str, measured, tmp_path: Path) -> None:
    report, workspace = measured(variant)
    figures = build_figures(report, workspace) if variant == "compliant" else None
    path = write_dicom(report, figures, tmp_path / "report.dcm")

    verdict = dciodvfy(path)
    assert "EncapsulatedPDF" in verdict  # dciodvfy recognised the IOD
    problems = [line for line in verdict.splitlines() if line.startswith(("Error", "Warning"))]
    assert problems == []

    ds = pydicom.dcmread(path)
    plan = pydicom.dcmread(workspace.files.plans[0].path, stop_before_pixels=True)
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "DOC"
    for keyword in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyID"):
        assert ds[keyword].value == plan[keyword].value, keyword
    assert ds.SeriesInstanceUID != plan.SeriesInstanceUID
    assert ds.SOPInstanceUID not in {f.sop_instance_uid for f in report.files}
    referenced = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.SourceInstanceSequence}
    assert {(f.sop_class_uid, f.sop_instance_uid) for f in report.files} == referenced
    assert {p.sop_instance_uid for p in report.plans} <= {uid for _, uid in referenced}
    assert report.verdict.label in ds.DocumentTitle
    pdf = encapsulated_pdf(ds)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(pdf) == ds.EncapsulatedDocumentLength


def test_encapsulated_bytes_are_the_pdf_exactly(checked, tmp_path: Path) -> None:
    _, report = checked("sfrt_rx_6gy")
    pdf = render_pdf(report, None)
    for document in (pdf, pdf + b"\n"):  # an odd and an even length: DICOM pads the odd one
        ds = encapsulate_pdf(report, document)
        path = tmp_path / f"r{len(document)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        back = pydicom.dcmread(path)
        assert len(back.EncapsulatedDocument) % 2 == 0
        assert encapsulated_pdf(back) == document
    first, second = encapsulate_pdf(report, pdf), encapsulate_pdf(report, pdf)
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SeriesInstanceUID != second.SeriesInstanceUID


def test_refuses_what_it_cannot_file(checked, tmp_path: Path) -> None:
    _, report = checked("compliant")
    with pytest.raises(ValueError, match="not a PDF"):
        encapsulate_pdf(report, b"<html></html>")
    moved = report.model_copy(
        update={"files": [f.model_copy(update={"path": str(tmp_path / "gone.dcm")}) for f in report.files]}
    )
    with pytest.raises(InputError, match=r"gone\.dcm: cannot read the plan"):
        encapsulate_pdf(moved, b"%PDF-1.4\n%%EOF\n")


def test_report_of_an_incomplete_course_is_filed_under_the_plan_given(tmp_path: Path) -> None:
    write_plan_without_structure_set(tmp_path / "course")
    course = find_courses([tmp_path / "course"])[0]
    assert course.missing
    report = incomplete_report(course, load_protocol())
    with pytest.raises(InputError, match="lists no RTPLAN"):
        encapsulate_pdf(report, render_pdf(report, None))
    plan = pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
    path = tmp_path / "report.dcm"
    encapsulate_pdf(report, render_pdf(report, None), plan).save_as(path, enforce_file_format=True)
    assert [line for line in dciodvfy(path).splitlines() if line.startswith(("Error", "Warning"))] == []
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == plan.StudyInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence] == [plan.SOPInstanceUID]
    assert "not evaluable" in ds.DocumentTitle


def test_findings_sr_lists_every_rule_and_references_the_inputs(checked, tmp_path: Path) -> None:
    course, report = checked("peak_near_gtv_edge")
    path = write_findings_sr(report, tmp_path / "findings.dcm")
    assert [line for line in dciodvfy(path).splitlines() if line.startswith(("Error", "Warning"))] == []
    ds = pydicom.dcmread(path)
    plan = pydicom.dcmread(course.plans[0].path, stop_before_pixels=True)
    assert ds.SOPClassUID == BASIC_TEXT_SR_STORAGE and ds.Modality == "SR"
    assert (ds.PatientID, ds.StudyInstanceUID) == (plan.PatientID, plan.StudyInstanceUID)
    texts = [item.TextValue for item in ds.ContentSequence]
    assert texts[0] == "unacceptable deviation"
    for rule in report.rules:
        assert any(t.startswith(f"{rule.id}: {rule.status.label};") for t in texts), rule.id
    margin = report.rule("peaks.margin_to_gtv")
    assert margin is not None and margin.value == pytest.approx(4.0, abs=0.3)  # Peak_1's surface is 4 mm inside
    line = f"peaks.margin_to_gtv: unacceptable deviation; measured {margin.value:.2f} mm (per protocol ≥ 10 mm)"
    assert line in "\n".join(texts)
    referenced = {
        ref.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert referenced == {f.sop_instance_uid for f in report.files}
