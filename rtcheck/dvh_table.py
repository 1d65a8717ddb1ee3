"""``rtcheck dvh``: rtcheck's DVH metrics of every structure, for any export.

A physicist who wants to compare rtcheck's DVHs with a planning system's (or run them on a
structure set and a dose exported without a plan, as published DVH benchmarks are) gets
one row per closed structure: volume, Dmin/Dmean/Dmax, D99/D95/D5/D1, D0.03cc and
V-levels, all in Gy, cc and %, from the same engine the protocol rules use. The samples of
each row also convert to :class:`dicompylercore.dvh.DVH` (:func:`dicompyler_dvhs`).

A structure that cannot be measured keeps its row, with the reason in ``note`` and empty
metrics: a table with a structure silently missing would be read as complete.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dicompylercore.dvh import DVH

from .dicomio import dose_header_from_dataset, read_dataset, structure_set_from_dataset
from .dose import DoseError, DoseGrid, sum_doses
from .dvh import COVERAGE_TOLERANCE_CC, StructureDose, structure_dose
from .errors import ExitCode, InputError
from .geometry import GeometryError, SolidCache
from .names import canonical
from .terminal import printable

#: Near-minimum, near-maximum and coverage levels every row reports (% of the volume).
PERCENT_LEVELS = (99.0, 95.0, 5.0, 1.0)
#: The small absolute volume of a near-maximum dose (ICRU 83 practice for serial organs).
SMALL_VOLUME_CC = 0.03
#: Dose levels (Gy) of the V-metrics when none are asked for.
DEFAULT_V_LEVELS_GY = (5.0, 10.0, 20.0)


@dataclass
class StructureMetrics:
    """One structure's row: name, volume and doses (Gy), or why there are none."""

    name: str
    number: int
    volume_cc: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""
    dose: StructureDose | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "roi_number": self.number,
            "volume_cc": self.volume_cc,
            **self.metrics,
            "note": self.note,
        }


def _key(value: float) -> str:
    return f"{value:g}".replace(".", "_")


def metric_names(v_levels_gy: Sequence[float]) -> list[str]:
    """The metric columns, in order: Gy doses, then V-levels in cc and %."""
    names = ["dmin", "dmean", "dmax", *(f"d{_key(p)}" for p in PERCENT_LEVELS), f"d{_key(SMALL_VOLUME_CC)}cc"]
    for level in v_levels_gy:
        names += [f"v{_key(level)}gy_cc", f"v{_key(level)}gy_percent"]
    return names


def measure(sd: StructureDose, v_levels_gy: Sequence[float]) -> dict[str, float]:
    """Every metric of one structure's dose, rounded to what the DVH resolves."""
    values = {"dmin": sd.dmin, "dmean": sd.dmean, "dmax": sd.dmax}
    values.update({f"d{_key(p)}": sd.d_percent(p) for p in PERCENT_LEVELS})
    values[f"d{_key(SMALL_VOLUME_CC)}cc"] = sd.d_cc(SMALL_VOLUME_CC) if sd.volume_cc > SMALL_VOLUME_CC else sd.dmax
    out = {k: round(float(v), 4) for k, v in values.items()}
    for level in v_levels_gy:
        out[f"v{_key(level)}gy_cc"] = round(float(sd.v_gy(level)), 3)
        out[f"v{_key(level)}gy_percent"] = round(float(sd.v_percent(level)), 2)
    return out


def structure_metrics(
    structures_path: Path,
    dose_paths: Sequence[Path],
    names: Sequence[str] = (),
    v_levels_gy: Sequence[float] = DEFAULT_V_LEVELS_GY,
) -> tuple[list[StructureMetrics], DoseGrid]:
    """The rows of every ROI (or of those ``names`` pick, in canonical form) under the summed doses."""
    ds = read_dataset(structures_path)
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        raise InputError(structures_path, f"not an RT Structure Set (Modality {ds.get('Modality', 'missing')})")
    structure_set = structure_set_from_dataset(structures_path, ds)
    doses = []
    for path in dose_paths:
        dose_ds = read_dataset(path)
        if str(dose_ds.get("Modality", "")) != "RTDOSE":
            raise InputError(path, f"not an RT Dose (Modality {dose_ds.get('Modality', 'missing')})")
        doses.append(dose_header_from_dataset(path, dose_ds))
    try:
        grid = sum_doses(doses)
    except DoseError as exc:
        raise InputError(exc.path, f"{exc.attribute}: {exc.problem}") from exc
    rois = sorted(structure_set.rois.values(), key=lambda r: r.number)
    if names:
        wanted = {canonical(n) for n in names}
        rois = [r for r in rois if canonical(r.name) in wanted]
        found = {canonical(r.name) for r in rois}
        absent = [n for n in names if canonical(n) not in found]
        if absent:
            raise InputError(structures_path, f"no structure named {', '.join(absent)}")
    frames = (structure_set.frame_of_reference_uid, grid.frame_of_reference_uid)
    if all(frames) and frames[0] != frames[1]:
        raise InputError(None, f"the dose is in frame of reference {frames[1]}, the structures in {frames[0]}")
    solids = SolidCache(structure_set)
    rows = []
    for roi in rois:
        row = StructureMetrics(roi.name, roi.number)
        rows.append(row)
        try:
            solid = solids.get(roi.number)
        except GeometryError as exc:
            row.note = str(exc)
            continue
        if not solid.has_volume:
            errors = [i.message for i in solid.errors]
            row.note = "no closed planar contour with an area" + (f" ({errors[0]})" if errors else "")
            continue
        sd = structure_dose(grid, solid)
        row.volume_cc = round(sd.volume_cc, 3)
        if sd.uncovered_cc > COVERAGE_TOLERANCE_CC:
            row.note = (
                f"{sd.uncovered_cc:.2f} cc of {sd.volume_cc:.2f} cc lie outside the dose grid:"
                " doses and V-levels are of the part inside"
            )
            sd = sd.covered_part()
        row.metrics = measure(sd, v_levels_gy)
        row.dose = sd
    return rows, grid


def dicompyler_dvhs(rows: Sequence[StructureMetrics], bin_gy: float = 0.01) -> dict[str, DVH]:
    """The measured rows as dicompyler-core cumulative DVHs (absolute volume), by structure name."""
    return {r.name: r.dose.to_dicompyler(bin_gy) for r in rows if r.dose is not None}


def render_json(rows: Sequence[StructureMetrics]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2)


def render_csv(rows: Sequence[StructureMetrics], v_levels_gy: Sequence[float]) -> str:
    buffer = io.StringIO()
    columns = ["name", "roi_number", "volume_cc", *metric_names(v_levels_gy), "note"]
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.as_dict())
    return buffer.getvalue()


def render_table(rows: Sequence[StructureMetrics], v_levels_gy: Sequence[float]) -> str:
    """Fixed-width text: doses in Gy with two decimals, a note under a row that has one."""
    columns = ["volume_cc", "dmin", "dmean", "dmax", "d99", "d95", "d5", "d1", "d0_03cc"]
    columns += [f"v{_key(v)}gy_percent" for v in v_levels_gy]
    heads = ["cc", "Dmin", "Dmean", "Dmax", "D99", "D95", "D5", "D1", "D0.03cc", *(f"V{v:g}Gy%" for v in v_levels_gy)]
    width = max([len("structure"), *(len(printable(r.name)) for r in rows)])
    lines = [f"{'structure':<{width}} " + " ".join(f"{h:>7}" for h in heads), "(doses in Gy)"]
    for r in rows:
        values = {"volume_cc": r.volume_cc, **r.metrics}
        cells = [
            ("—" if values.get(c) is None else f"{values[c]:.1f}" if c == "volume_cc" else f"{values[c]:.2f}")
            for c in columns
        ]
        lines.append(f"{printable(r.name):<{width}} " + " ".join(f"{c:>7}" for c in cells))
        if r.note:
            lines.append(f"  {printable(r.note)}")
    return "\n".join(lines) + "\n"


def add_dvh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structures", type=Path, help="RTSTRUCT file")
    parser.add_argument("doses", type=Path, nargs="+", help="RTDOSE file(s); several are summed")
    parser.add_argument(
        "--structure",
        action="append",
        default=[],
        metavar="NAME",
        help="only this structure (repeatable; case, spaces and laterality spelling ignored)",
    )
    parser.add_argument(
        "--v",
        dest="v_levels",
        type=float,
        action="append",
        metavar="GY",
        help=f"V-level in Gy (repeatable; default {', '.join(f'{v:g}' for v in DEFAULT_V_LEVELS_GY)})",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")


def run_dvh(args: argparse.Namespace) -> int:
    levels = tuple(args.v_levels or DEFAULT_V_LEVELS_GY)
    rows, _ = structure_metrics(args.structures, args.doses, args.structure, levels)
    if args.format == "json":
        text = render_json(rows) + "\n"
    elif args.format == "csv":
        text = render_csv(rows, levels)
    else:
        text = render_table(rows, levels)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return ExitCode.PER_PROTOCOL
