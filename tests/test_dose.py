"""RTDOSE reading, summing and the choice of doses for a component, on RTDOSE files written
here with pydicom (every variant of the attributes that decide where a voxel is and what
its value means) and on the synthetic phantom course."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, generate_uid

from rtcheck.assembly import find_courses, load_course
from rtcheck.course import BeamDose, ComponentPart, Course, DoseFile, FractionGroup, Plan, SourceFile
from rtcheck.dicomio import dose_header_from_dataset
from rtcheck.dose import DoseError, component_dose, load_dose_grid, select_doses, sum_doses
from rtcheck.dvh import structure_dose
from rtcheck.geometry import solid_from_roi
from rtcheck.phantom import build_spec, write_course

HFS = (1, 0, 0, 0, 1, 0)


def linear(x, y, z):
    return 5 + 0.1 * x + 0.2 * y + 0.3 * z


def write_rtdose(
    path: Path,
    field: Callable = linear,
    *,
    shape: tuple[int, int, int] = (6, 5, 7),  # frames, rows, columns
    position: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    spacing: tuple[float, float] = (2.0, 2.5),  # between rows, between columns
    offsets: list[float] | None = None,
    orientation: tuple[float, ...] = HFS,
    bits: int = 32,
    signed: bool = False,
    scaling: float = 1e-5,
    attributes: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
    summation: str = "PLAN",
    plan_uids: tuple[str, ...] = ("1.2.3.100",),
    fraction_groups: tuple[int, ...] = (),
    beams: tuple[int, ...] = (),
    frame_of_reference: str = "1.2.3.4",
) -> DoseFile:
    """Write an RT Dose of ``field`` (Gy) sampled where the attributes put each voxel."""
    frames, rows, columns = shape
    offsets = [2.5 * k for k in range(frames)] if offsets is None else offsets
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    pos = np.array(position)
    off = np.array(offsets, dtype=float)
    if off.size != frames:  # a deliberately wrong vector: place the voxels as if it were right
        off = 2.5 * np.arange(frames)
    absolute = off[0] != 0
    f, r, c = np.meshgrid(np.arange(frames), np.arange(rows), np.arange(columns), indexing="ij")
    xyz = pos + c[..., None] * spacing[1] * row_dir + r[..., None] * spacing[0] * col_dir
    xyz = xyz + (off[f] - (pos[2] if absolute else 0))[..., None] * normal
    values = np.rint(field(xyz[..., 0], xyz[..., 1], xyz[..., 2]) / scaling)
    dtype = {(16, False): np.uint16, (16, True): np.int16, (32, False): np.uint32, (32, True): np.int32}[(bits, signed)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTDoseStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTDOSE"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.ImagePositionPatient = [f"{v:g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in spacing]
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", summation
    ds.DoseGridScaling = f"{scaling:g}"
    refs = []
    for uid in plan_uids:
        ref = Dataset()
        ref.ReferencedSOPInstanceUID = uid
        if fraction_groups:
            groups = []
            for n in fraction_groups:
                item = Dataset()
                item.ReferencedFractionGroupNumber = n
                if beams:
                    beam_items = []
                    for b in beams:
                        beam = Dataset()
                        beam.ReferencedBeamNumber = b
                        beam_items.append(beam)
                    item.ReferencedBeamSequence = beam_items
                groups.append(item)
            ref.ReferencedFractionGroupSequence = groups
        refs.append(ref)
    ds.ReferencedRTPlanSequence = refs
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    for keyword in drop:
        delattr(ds, keyword)
    ds.PixelData = values.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return dose_header_from_dataset(path, pydicom.dcmread(path, stop_before_pixels=True))


# ------------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("bits", "signed", "scaling"), [(16, False, 1e-3), (32, False, 1e-6), (32, True, 2e-7), (16, True, 5e-4)]
)
def test_reads_voxels_in_gy_at_their_positions(tmp_path: Path, bits: int, signed: bool, scaling: float) -> None:
    dose = write_rtdose(tmp_path / "rd.dcm", bits=bits, signed=signed, scaling=scaling)
    grid = load_dose_grid(dose)
    assert grid.dose_gy.dtype == np.float32 and grid.dose_gy.shape == (6, 5, 7)
    np.testing.assert_allclose(grid.x_mm, -10 + 2.5 * np.arange(7))
    np.testing.assert_allclose(grid.y_mm, -20 + 2.0 * np.arange(5))
    np.testing.assert_allclose(grid.z_mm, 30 + 2.5 * np.arange(6))
    zz, yy, xx = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    np.testing.assert_allclose(grid.dose_gy, linear(xx, yy, zz), atol=scaling * 0.51 + 1e-5)
    assert grid.frame_of_reference_uid == "1.2.3.4" and grid.sources == (dose.source,)


@pytest.mark.parametrize(
    "offsets",
    [[0, 2.5, 5, 7.5, 10, 12.5], [30, 32.5, 35, 37.5, 40, 42.5], [0, -2.5, -5, -7.5, -10, -12.5], [0, 2, 5, 9, 10, 16]],
    ids=["relative", "absolute", "decreasing", "non-uniform"],
)
def test_grid_frame_offset_vector_forms(tmp_path: Path, offsets: list[float]) -> None:
    dose = write_rtdose(tmp_path / "rd.dcm", offsets=offsets)
    grid = load_dose_grid(dose)
    relative = np.array(offsets) - (offsets[0] if offsets[0] != 0 else 0)
    np.testing.assert_allclose(grid.z_mm, np.sort(30 + relative))
    zz, yy, xx = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    np.testing.assert_allclose(grid.dose_gy, linear(xx, yy, zz), atol=1e-4)
    if offsets == [0, 2, 5, 9, 10, 16]:
        assert "non-uniform frame spacing" in grid.note


@pytest.mark.parametrize(
    "orientation", [(-1, 0, 0, 0, -1, 0), (-1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0)], ids=["HFP", "FFS", "FFP"]
)
def test_axis_flips_are_undone(tmp_path: Path, orientation: tuple[int, ...]) -> None:
    """Rows or columns running along -x or -y: the grid comes back with increasing axes and
    every voxel where the file says it is (frames follow row x column)."""
    grid = load_dose_grid(write_rtdose(tmp_path / "rd.dcm", orientation=orientation))
    for axis in (grid.x_mm, grid.y_mm, grid.z_mm):
        assert np.all(np.diff(axis) > 0)
    zz, yy, xx = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    np.testing.assert_allclose(grid.dose_gy, linear(xx, yy, zz), atol=1e-4)
    assert grid.x_mm[0 if orientation[0] > 0 else -1] == pytest.approx(-10)


def test_rescale_slope_is_ignored(tmp_path: Path) -> None:
    dose = write_rtdose(tmp_path / "rd.dcm", attributes={"RescaleSlope": "2.5", "RescaleIntercept": "-3"})
    grid = load_dose_grid(dose)
    assert float(grid.dose_gy[0, 0, 0]) == pytest.approx(linear(-10, -20, 30), abs=1e-4)
    assert "RescaleSlope ignored" in grid.note


@pytest.mark.parametrize(
    ("options", "attribute", "message"),
    [
        ({"orientation": (0.98481, 0.17365, 0, -0.17365, 0.98481, 0)}, "ImageOrientationPatient", "oblique/non-axial"),
        ({"orientation": (0, 1, 0, 1, 0, 0)}, "ImageOrientationPatient", "oblique/non-axial"),
        ({"attributes": {"DoseUnits": "RELATIVE"}}, "DoseUnits", "RELATIVE"),
        ({"drop": ("DoseUnits",)}, "DoseUnits", "must be GY, found nothing"),
        ({"attributes": {"DoseType": "ERROR"}}, "DoseType", "uncertainties"),
        ({"drop": ("DoseGridScaling",)}, "DoseGridScaling", "missing"),
        ({"attributes": {"DoseGridScaling": "0"}}, "DoseGridScaling", "must be positive"),
        ({"offsets": [5, 7.5, 10, 12.5, 15, 17.5]}, "GridFrameOffsetVector", "neither 0"),
        ({"offsets": [0, 2.5, 5]}, "GridFrameOffsetVector", "has 3 values, expected 6"),
        ({"offsets": [0, 2.5, 2.5, 5, 7.5, 10]}, "GridFrameOffsetVector", "same plane"),
        (
            {"orientation": (-1, 0, 0, 0, -1, 0), "offsets": [30, 32.5, 35, 37.5, 40, 42.5]},
            "GridFrameOffsetVector",
            "only defined for",
        ),
        ({"shape": (1, 5, 7), "offsets": [0]}, "NumberOfFrames", "no thickness"),
        ({"drop": ("PixelSpacing",)}, "PixelSpacing", "missing"),
    ],
)
def test_unusable_doses_name_file_and_attribute(tmp_path: Path, options: dict, attribute: str, message: str) -> None:
    dose = write_rtdose(tmp_path / "bad.dcm", **options)
    with pytest.raises(DoseError, match=message) as raised:
        load_dose_grid(dose)
    assert raised.value.attribute == attribute
    assert str(raised.value).startswith(f"{tmp_path / 'bad.dcm'}: {attribute}: ")


def test_trilinear_sampling(tmp_path: Path) -> None:
    grid = load_dose_grid(write_rtdose(tmp_path / "rd.dcm", offsets=[0, 2, 5, 9, 10, 16]))
    rng = np.random.default_rng(7)
    lo = [grid.x_mm[0] - 1.25, grid.y_mm[0] - 1.0, grid.z_mm[0] - 1.0]
    hi = [grid.x_mm[-1], grid.y_mm[-1], grid.z_mm[-1]]
    points = rng.uniform(lo, hi, size=(500, 3))
    inside = np.all(points >= [grid.x_mm[0], grid.y_mm[0], grid.z_mm[0]], axis=1)
    got = grid.sample(points)
    np.testing.assert_allclose(got[inside], linear(*points[inside].T), atol=1e-4)
    assert not np.isnan(got).any()  # the outer half voxel holds the edge value
    assert np.isnan(grid.sample([[0, 0, 100.0], [-12, -20, 30]])).all()


# ------------------------------------------------------------------------ summing


def test_sum_resamples_onto_the_finest_grid_and_crops(tmp_path: Path) -> None:
    """Two linear fields on grids of 2.5 and 2.0 mm, offset: trilinear resampling of a linear
    field is exact, so the sum is exact where both grids have a dose."""
    coarse = write_rtdose(tmp_path / "coarse.dcm", shape=(8, 8, 8), spacing=(2.5, 2.5), position=(-10, -10, 30))
    fine = write_rtdose(
        tmp_path / "fine.dcm",
        field=lambda x, y, z: 2 - 0.05 * x + 0.1 * z,
        shape=(9, 9, 9),
        spacing=(2.0, 2.0),
        offsets=[2.0 * k for k in range(9)],
        position=(-7.3, -12.1, 31.4),
    )
    grid = sum_doses([coarse, fine])
    assert grid.spacing_mm == pytest.approx((2.0, 2.0))
    assert grid.x_mm[0] == pytest.approx(-7.3) and grid.x_mm[-1] <= -10 + 7 * 2.5 + 1.25
    assert grid.y_mm[0] >= -10 - 1.25 and grid.z_mm[-1] <= 30 + 7 * 2.5 + 1.25
    zz, yy, xx = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    expected = linear(xx, yy, zz) + 2 - 0.05 * xx + 0.1 * zz
    inner = (xx >= -10) & (yy >= -10) & (zz >= 30) & (xx <= 7.5) & (yy <= 7.5) & (zz <= 47.5)
    np.testing.assert_allclose(grid.dose_gy[inner], expected[inner], atol=2e-4)
    assert "cropped" in grid.note and "resampled" in grid.note
    assert grid.sources == (coarse.source, fine.source)


def test_sum_on_equal_grids_adds_voxels(tmp_path: Path) -> None:
    a = write_rtdose(tmp_path / "a.dcm")
    b = write_rtdose(tmp_path / "b.dcm", field=lambda x, y, z: 1 + 0 * x)
    grid = sum_doses([a, b])
    np.testing.assert_allclose(grid.dose_gy, load_dose_grid(a).dose_gy + 1, atol=1e-5)
    assert "resampled" not in grid.note and "cropped" not in grid.note


def test_sum_refuses_different_frames_of_reference(tmp_path: Path) -> None:
    a = write_rtdose(tmp_path / "a.dcm")
    b = write_rtdose(tmp_path / "b.dcm", frame_of_reference="9.9.9")
    with pytest.raises(DoseError, match="different frames of reference"):
        sum_doses([a, b])


# ------------------------------------------------------------------------ choosing doses


def fraction_group(number: int, fractions: int, beams: tuple[int, ...] = (1, 2)) -> FractionGroup:
    return FractionGroup(number, fractions, tuple(BeamDose(b, 1.0, None) for b in beams), (), None)


def plan(uid: str, *groups: FractionGroup) -> Plan:
    source = SourceFile(Path(f"{uid}.dcm"), "RTPLAN", "1.2.840.10008.5.1.4.1.1.481.5", uid, "")
    return Plan(source, uid, uid, "", "1.2.3.4", None, groups, ())


def course(plans: list[Plan], doses: list[DoseFile]) -> Course:
    return Course("PAT", "PAT", plans, None, doses)


def names(doses) -> list[str]:
    return sorted(d.source.path.name for d in doses)


def test_plan_dose_for_a_whole_plan(tmp_path: Path) -> None:
    p = plan("1.2.3.100", fraction_group(1, 3))
    rd = write_rtdose(tmp_path / "plan.dcm")
    chosen = select_doses(course([p], [rd]), [ComponentPart(p, p.fraction_groups[0])])
    assert names(chosen.doses) == ["plan.dcm"] and chosen.fractions == 3
    assert "PLAN dose plan.dcm" in chosen.explanation


def test_plan_dose_mixing_fraction_groups_is_refused_unless_fraction_doses_exist(tmp_path: Path) -> None:
    p = plan("1.2.3.100", fraction_group(1, 3), fraction_group(2, 5, beams=(3, 4)))
    whole = write_rtdose(tmp_path / "plan.dcm")
    only_plan = course([p], [whole])
    with pytest.raises(DoseError, match="fraction groups not in this component"):
        select_doses(only_plan, [ComponentPart(p, p.fraction_groups[1])])
    fg1 = write_rtdose(tmp_path / "fg1.dcm", summation="FRACTION", fraction_groups=(1,))
    fg2 = write_rtdose(tmp_path / "fg2.dcm", summation="FRACTION", fraction_groups=(2,))
    both = course([p], [whole, fg1, fg2])
    chosen = select_doses(both, [ComponentPart(p, p.fraction_groups[1])])
    assert names(chosen.doses) == ["fg2.dcm"] and chosen.fractions == 5
    with pytest.raises(DoseError, match="share a positive number of fractions"):
        select_doses(both, [ComponentPart(p, g) for g in p.fraction_groups])


def test_beam_doses_are_summed_per_fraction_group(tmp_path: Path) -> None:
    p = plan("1.2.3.100", fraction_group(1, 3, beams=(1, 2)), fraction_group(2, 3, beams=(3,)))
    b1 = write_rtdose(tmp_path / "b1.dcm", summation="BEAM", fraction_groups=(1,), beams=(1,))
    b2 = write_rtdose(tmp_path / "b2.dcm", summation="BEAM", fraction_groups=(1,), beams=(2,))
    b3 = write_rtdose(tmp_path / "b3.dcm", summation="BEAM", fraction_groups=(2,), beams=(3,))
    c = course([p], [b1, b2, b3])
    dose = component_dose(c, [ComponentPart(p, p.fraction_groups[0])])
    assert names(dose.selection.doses) == ["b1.dcm", "b2.dcm"]
    np.testing.assert_allclose(dose.total.dose_gy, 2 * load_dose_grid(b1).dose_gy, rtol=1e-6)
    np.testing.assert_allclose(dose.per_fraction.dose_gy, dose.total.dose_gy / 3, rtol=1e-6)
    with pytest.raises(DoseError, match=r"cover beams \[1\], not exactly its beams \[1, 2\]"):
        select_doses(course([p], [b1, b3]), [ComponentPart(p, p.fraction_groups[0])])
    both = select_doses(c, [ComponentPart(p, g) for g in p.fraction_groups])
    assert names(both.doses) == ["b1.dcm", "b2.dcm", "b3.dcm"]


def test_multi_plan_dose_only_for_exactly_its_plans(tmp_path: Path) -> None:
    a = plan("1.2.3.100", fraction_group(1, 5))
    b = plan("1.2.3.200", fraction_group(1, 5))
    c = plan("1.2.3.300", fraction_group(1, 5))
    multi = write_rtdose(tmp_path / "multi.dcm", summation="MULTI_PLAN", plan_uids=("1.2.3.100", "1.2.3.200"))
    plan_a = write_rtdose(tmp_path / "a.dcm", plan_uids=("1.2.3.100",))
    chosen = select_doses(
        course([a, b], [multi]), [ComponentPart(a, a.fraction_groups[0]), ComponentPart(b, b.fraction_groups[0])]
    )
    assert names(chosen.doses) == ["multi.dcm"] and "MULTI_PLAN" in chosen.explanation
    # plan a has its own dose, plan b only shares the MULTI_PLAN one: still exactly a + b
    chosen = select_doses(course([a, b], [plan_a, multi]), [ComponentPart(p, p.fraction_groups[0]) for p in (a, b)])
    assert names(chosen.doses) == ["multi.dcm"]
    with pytest.raises(DoseError, match="no dose of exactly this component"):
        select_doses(course([a, b], [multi]), [ComponentPart(a, a.fraction_groups[0])])
    with pytest.raises(DoseError, match="no dose of exactly this component"):
        select_doses(course([a, b, c], [multi]), [ComponentPart(p, p.fraction_groups[0]) for p in (a, b, c)])


def test_two_plan_doses_of_one_plan_are_ambiguous(tmp_path: Path) -> None:
    p = plan("1.2.3.100", fraction_group(1, 3))
    docs = [write_rtdose(tmp_path / f"rd{i}.dcm") for i in (1, 2)]
    with pytest.raises(DoseError, match="cannot tell which to use"):
        select_doses(course([p], docs), [ComponentPart(p, p.fraction_groups[0])])


# ------------------------------------------------------------------------ the phantom course


@pytest.fixture(scope="module")
def phantom_course(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Course]:
    """A variant of the phantom course, written once per module and read into a Course."""

    def load(variant: str) -> Course:
        folder = tmp_path_factory.mktemp(variant)
        write_course(folder, variant)
        (files,) = find_courses([folder])
        return load_course(files)[0]

    return load


def part(c: Course, label: str, number: int = 1) -> ComponentPart:
    p = next(p for p in c.plans if p.label == label)
    return ComponentPart(p, next(fg for fg in p.fraction_groups if fg.number == number))


def test_phantom_component_doses_match_the_dose_model(phantom_course) -> None:
    """The SFRT component of the example course: its PLAN dose, per fraction, equals the
    phantom's analytic dose at the voxel centres (to the 16-bit quantisation), and a peak's
    D95 per fraction is the delivered 10.3 Gy."""
    c = phantom_course("compliant")
    sfrt = component_dose(c, [part(c, "SFRT")])
    assert sfrt.fractions == 3 and names(sfrt.selection.doses) == ["RD.SFRT.dcm"]
    grid = sfrt.per_fraction
    spec = build_spec("compliant")
    zz, yy, xx = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    window = (slice(50, 70), slice(30, 60), slice(100, 130))
    xyz = np.stack([xx[window], yy[window], zz[window]], axis=-1)
    truth = spec.dose_per_fraction_gy("SFRT", xyz)
    np.testing.assert_allclose(grid.dose_gy[window], truth, atol=3 * 10.3 / 65000)
    peak = structure_dose(grid, solid_from_roi(c.structure_set.by_name("Peak_1")))
    assert peak.d_percent(95) == pytest.approx(10.3, abs=0.01)
    assert peak.volume_cc == pytest.approx(4 / 3 * math.pi * 7.5**3 / 1000, rel=0.03)


def test_phantom_fraction_doses_and_multi_plan_refusal(phantom_course) -> None:
    c = phantom_course("single_plan_two_groups")
    ldrt = select_doses(c, [part(c, "SFRT_LDRT", 2)])
    assert [d.summation_type for d in ldrt.doses] == ["FRACTION"] and ldrt.fractions == 5
    assert ldrt.doses[0].referenced_fraction_group_numbers == (2,)
    multi = phantom_course("multi_plan_dose")
    with pytest.raises(DoseError, match="no dose of exactly this component"):
        select_doses(multi, [part(multi, "SFRT")])
