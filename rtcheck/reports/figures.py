"""Figures of a compliance report: what a dosimetrist looks at before reading the numbers.

The report holds numbers only, so the figures are drawn from the report and from the
workspace its rules measured in (:class:`rtcheck.workspace.Workspace`): the same component
doses, solids and DVH samples, nothing read or assembled again. Which roles are drawn as
what (organs at risk, peaks, the lesion, low-dose targets) is the protocol's ``report:``
section:

* one cumulative DVH per protocol component (dose per fraction, cGy), targets and organs
  at risk, with the dose limits of the component's rules drawn on it;
* an axial and a coronal dose slice through the SFRT lesion (the course's first target
  when it has none), one row per component, with the GTV, peak and valley outlines: the
  outlines are the solids' slabs cut by the plane, i.e. exactly what the DVH integrates;
* a dose profile along a path through the peak centres, with the per-protocol bands of
  the components (e.g. peaks 800–1200 cGy, valley 100–300 cGy per fraction);
* for the low-dose (LDRT) component, each target's and each structure's that must receive
  no low dose (brain, bone) mean and maximum dose per fraction against the component's band.

Every figure fails soft: when the dose, a structure or the structure set is missing, the
figure becomes a sentence saying why, and the report is written all the same.

Matplotlib is used without pyplot (``Figure`` + the Agg canvas), so nothing global is
touched and figures may be drawn in any thread.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import shapely
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..dose import DoseError, DoseGrid
from ..dvh import COVERAGE_TOLERANCE_CC, StructureDose
from ..errors import NotEvaluable, RtcheckError
from ..geometry import GeometryError, Solid
from ..protocol import Protocol, ReportSpec, RuleSpec
from ..report import Report
from .text import format_limits

if TYPE_CHECKING:  # the workspace is handed in: renderers import nothing that builds one
    from ..workspace import Workspace

log = logging.getLogger(__name__)

#: Units of rules whose limits are doses per fraction (the protocol's convention).
_DOSE_UNITS = {"cGy": 1.0, "Gy": 100.0}
#: Margin (mm) around the lesion in the dose slices, and beyond the end peaks of the profile.
SLICE_MARGIN_MM = 15.0
PROFILE_EXTENSION_MM = 20.0
PROFILE_STEP_MM = 0.5
_COMPONENT_COLOURS = ("#1f4e9c", "#c2571a", "#2a7f3f", "#7b3fa0")
_DPI = 150


class FigureUnavailable(Exception):
    """A figure cannot be drawn; the message is the sentence shown in its place."""


@dataclass(eq=False)
class Plot:
    """One figure of the report, or the reason it could not be drawn (``figure`` None)."""

    key: str
    title: str
    caption: str = ""
    figure: Figure | None = None
    reason: str | None = None
    _svg: str | None = field(default=None, repr=False)
    _png: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def available(self) -> bool:
        return self.figure is not None

    def svg(self) -> str:
        """The figure as a standalone SVG document (text drawn as paths: no font needed)."""
        if self.figure is None:
            raise ValueError(f"figure {self.key} is not available: {self.reason}")
        if self._svg is None:
            buffer = io.StringIO()
            self.figure.savefig(buffer, format="svg", metadata={"Date": None})
            self._svg = buffer.getvalue()
        return self._svg

    def png(self, dpi: int = _DPI) -> bytes:
        """The figure as PNG bytes at ``dpi``."""
        if self.figure is None:
            raise ValueError(f"figure {self.key} is not available: {self.reason}")
        if dpi not in self._png:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=dpi)
            self._png[dpi] = buffer.getvalue()
        return self._png[dpi]


@dataclass
class Figures:
    """The figures of one report, in reading order."""

    plots: list[Plot] = field(default_factory=list)

    def __iter__(self) -> Iterator[Plot]:
        return iter(self.plots)

    def __len__(self) -> int:
        return len(self.plots)

    def get(self, key: str) -> Plot | None:
        return next((p for p in self.plots if p.key == key), None)

    @classmethod
    def unavailable(cls, reason: str) -> Figures:
        return cls([Plot("figures", "Figures", reason=reason)])


# --------------------------------------------------------------------------- the scene


@dataclass
class _Marker:
    """Per-protocol dose limits (cGy per fraction) of a component's rules, to draw on its plots.

    Rules with the same limits share one marker (``rule_ids``), so a band is shaded once.
    """

    rule_ids: list[str]
    low: float | None
    high: float | None
    volume_percent: float | None  # the DVH point the rules limit (D95% -> 95), when they say
    text: str  # the limits as the rules write them, e.g. "800–1200 cGy"

    @property
    def label(self) -> str:
        return f"{', '.join(self.rule_ids)} {self.text}"


@dataclass
class _Scene:
    """Everything the figures of one course share, each computed once."""

    workspace: Workspace
    components: list[str]
    doses: dict[str, DoseGrid]
    explanations: dict[str, str]
    missing_dose: dict[str, str]
    markers: dict[str, list[_Marker]]

    def dose(self, component: str) -> DoseGrid:
        if component not in self.doses:
            raise FigureUnavailable(f"no dose for component {component}: {self.missing_dose.get(component, '?')}")
        return self.doses[component]

    @property
    def protocol(self) -> Protocol:
        return self.workspace.protocol

    @property
    def vocabulary(self) -> ReportSpec:
        """Which roles the figures draw as what (the protocol's ``report:`` section)."""
        return self.workspace.protocol.report

    def structure_dose(self, component: str, solid: Solid) -> StructureDose:
        return self.workspace.structure_dose(self.dose(component), solid)

    def band(self, component: str) -> tuple[float, float] | None:
        """The component's dose band: its first two-sided per-protocol range (a prescription's
        or a mean dose's before a Dxx%'s, which limits one point of the DVH only)."""
        ranges = [m for m in self.markers.get(component, []) if m.low is not None and m.high is not None]
        if not ranges:
            return None
        m = min(ranges, key=lambda m: m.volume_percent is not None)  # stable: protocol order otherwise
        assert m.low is not None and m.high is not None
        return m.low, m.high

    def solids(self, role: str | None) -> list[Solid]:
        """One solid per ROI playing ``role`` ([] when the protocol has no such role)."""
        if role is None or role not in self.protocol.roles:
            return []
        return self.workspace.role_solids(role)

    def structure(self, name: str | None) -> Solid | None:
        if name is None or (name not in self.protocol.roles and name not in self.protocol.derived):
            return None
        return self.workspace.structure(name)


def build_figures(report: Report, workspace: Workspace) -> Figures:
    """The figures of ``report``, drawn from the workspace its rules measured in.

    Never raises for a figure: whatever cannot be drawn becomes a :class:`Plot` whose
    ``reason`` says why (and the whole set becomes one such sentence if the course
    has nothing to draw).
    """
    try:
        scene = _scene(report, workspace)
    except FigureUnavailable as exc:
        return Figures.unavailable(str(exc))
    except Exception as exc:
        log.warning("figures of %s not drawn", workspace.files.key, exc_info=True)
        return Figures.unavailable(f"the figures could not be drawn: {_reason(exc)}")
    protocol = workspace.protocol
    peaks = protocol.report.peaks
    plots = [
        _soft(f"dvh_{name}", f"DVH — {name} (dose per fraction)", partial(_dvh_plot, scene, name))
        for name in scene.components
    ]
    plots.append(_soft("slices", "Dose slices through the lesion", lambda: _slices_plot(scene)))
    if peaks is not None and any(peaks in protocol.components[c].target_roles for c in scene.components):
        plots.append(_soft("profile", "Dose profile through the peak centres", lambda: _profile_plot(scene)))
    ldrt = _ldrt_component(scene)
    if ldrt is not None:
        plots.append(_soft("ldrt", f"LDRT targets and brain/bone — {ldrt}", lambda: _ldrt_plot(scene, ldrt)))
    return Figures(plots)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RtcheckError | NotEvaluable | FigureUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _soft(key: str, title: str, draw: Callable[[], tuple[Figure, str]]) -> Plot:
    try:
        figure, caption = draw()
    except (FigureUnavailable, NotEvaluable, RtcheckError) as exc:
        return Plot(key, title, reason=str(exc))
    except Exception as exc:
        log.warning("figure %s not drawn", key, exc_info=True)
        return Plot(key, title, reason=f"the figure could not be drawn: {_reason(exc)}")
    return Plot(key, title, caption=caption, figure=figure)


def _scene(report: Report, workspace: Workspace) -> _Scene:
    protocol = workspace.protocol
    if workspace.files.missing:
        raise FigureUnavailable(f"no figures: the course is incomplete ({'; '.join(workspace.files.missing)})")
    if report.arm.arm is None or report.arm.arm not in protocol.arms:
        raise FigureUnavailable("no figures: the course matches no arm of the protocol")
    if workspace.course.structure_set is None:
        raise FigureUnavailable("no figures: the course has no structure set")
    components = workspace.components
    doses: dict[str, DoseGrid] = {}
    explanations: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in components:
        try:
            dose = workspace.component_dose(name)
        except NotEvaluable as exc:
            missing[name] = str(exc)
            continue
        doses[name] = dose.per_fraction
        explanations[name] = dose.explanation
    return _Scene(workspace, components, doses, explanations, missing, _markers(report, protocol, report.arm.arm))


def _markers(report: Report, protocol: Protocol, arm: str) -> dict[str, list[_Marker]]:
    """Per component, the per-protocol limits of its dose rules, in cGy per fraction.

    Only rules with a ``component`` parameter are per-fraction doses of one component;
    composite rules (summed over components, EQD2) have no place on a per-fraction plot.
    """
    specs: dict[str, RuleSpec] = {r.id: r for r in protocol.rules_for(arm)}
    out: dict[str, list[_Marker]] = {}
    for rule in report.rules:
        spec = specs.get(rule.id)
        factor = _DOSE_UNITS.get(rule.unit)
        if spec is None or factor is None or rule.per_protocol is None:
            continue
        component = spec.params.get("component")
        if not isinstance(component, str):
            continue
        low, high = rule.per_protocol.min, rule.per_protocol.max
        low, high = (None if low is None else low * factor), (None if high is None else high * factor)
        level = _dvh_level(spec)
        markers = out.setdefault(component, [])
        same = next((m for m in markers if (m.low, m.high, m.volume_percent) == (low, high, level)), None)
        if same is not None:
            same.rule_ids.append(rule.id)
        else:
            markers.append(_Marker([rule.id], low, high, level, format_limits(rule.per_protocol, rule.unit)))
    return out


_D_LEVEL = re.compile(r"^D(\d+(?:\.\d+)?)%$")


def _dvh_level(spec: RuleSpec) -> float | None:
    """The volume percentage of a 'Dxx%' rule (D95% -> 95), from its metric parameter."""
    match = _D_LEVEL.search(str(spec.params.get("metric", "")))
    if match and 0 < float(match.group(1)) <= 100:
        return float(match.group(1))
    return None


def _ldrt_component(scene: _Scene) -> str | None:
    role = scene.vocabulary.low_dose_targets
    if role is None:
        return None
    return next((name for name in scene.components if role in scene.protocol.components[name].target_roles), None)


# --------------------------------------------------------------------------- DVH


@dataclass
class _Curve:
    name: str
    kind: str  # "target", "oar", "excluded"
    dose: StructureDose
    partial: bool


def _component_structures(scene: _Scene, component: str) -> list[tuple[Solid, str]]:
    """The solids a component's DVH shows: its targets, the lesion, organs at risk."""
    ws, words = scene.workspace, scene.vocabulary
    spec = scene.protocol.components[component]
    chosen: dict[str, tuple[Solid, str]] = {}
    targets = ws.component_targets([r for r in spec.target_roles if r in scene.protocol.roles], component)
    for number, _ in sorted(targets.items()):
        solid = _solid_or_none(partial(ws.solids.get, number))
        if solid is not None and solid.has_volume:
            chosen.setdefault(solid.name, (solid, "target"))
    if words.peaks is not None and words.peaks in spec.target_roles:
        for solid in scene.solids(words.lesion):
            chosen.setdefault(solid.name, (solid, "target"))
    if chosen and any(role is not None and role in spec.target_roles for role in (words.peaks, words.lesion)):
        valley = _valley(scene)
        if valley is not None:
            chosen.setdefault(valley.name, (valley, "target"))
    for role in words.organs_at_risk:
        for solid in scene.solids(role):
            chosen.setdefault(solid.name, (solid, "oar"))
    return list(chosen.values())


def _solid_or_none(get: Callable[[], Solid]) -> Solid | None:
    try:
        return get()
    except GeometryError:
        return None


def _valley(scene: _Scene) -> Solid | None:
    """The first valley of the protocol's list (drawn, else derived) the course has, or None."""
    for name in scene.vocabulary.valley:
        try:
            if name in scene.protocol.roles:
                drawn = scene.solids(name)
                if drawn:
                    return drawn[0]
            else:
                valley = scene.structure(name)
                if valley is not None:
                    return valley
        except (NotEvaluable, GeometryError):
            continue
    return None


def _curves(scene: _Scene, component: str, solids: Iterable[tuple[Solid, str]]) -> tuple[list[_Curve], list[str]]:
    curves, skipped = [], []
    for solid, kind in solids:
        try:
            sd = scene.structure_dose(component, solid)
        except DoseError as exc:
            skipped.append(f"{solid.name}: {exc.problem}")
            continue
        if sd.weight_cc.size == 0:
            skipped.append(f"{solid.name}: outside the dose grid")
            continue
        partial = sd.uncovered_cc > COVERAGE_TOLERANCE_CC
        curves.append(_Curve(solid.name, kind, sd.covered_part() if partial else sd, partial))
    return curves, skipped


def _cumulative(sd: StructureDose, edges_cgy: np.ndarray) -> np.ndarray:
    """Percentage of the (covered) volume receiving at least each dose of ``edges_cgy``."""
    hist, _ = np.histogram(sd.dose_gy.astype(np.float64) * 100.0, bins=edges_cgy, weights=sd.weight_cc)
    above = hist[::-1].cumsum()[::-1]
    return 100.0 * np.append(above, 0.0) / sd.weight_cc.sum()


def _dvh_plot(scene: _Scene, component: str) -> tuple[Figure, str]:
    scene.dose(component)  # fail first, with the reason, when the component has no dose
    solids = _component_structures(scene, component)
    if not solids:
        raise FigureUnavailable(f"no structure of component {component} could be drawn")
    curves, skipped = _curves(scene, component, solids)
    if not curves:
        raise FigureUnavailable(f"no structure of component {component} lies in its dose grid: {'; '.join(skipped)}")
    top = max(float(c.dose.dose_gy.max()) * 100.0 for c in curves)
    markers = scene.markers.get(component, [])
    limit_top = max((v for m in markers for v in (m.low, m.high) if v is not None), default=0.0)
    top = max(top, limit_top, 1.0) * 1.08
    edges = np.linspace(0.0, top, 600)
    fig = _figure(9.0, 4.6)
    ax = fig.add_axes((0.08, 0.12, 0.62, 0.8))
    colours = _palette(len(curves))
    styles = {"target": "-", "oar": "--", "excluded": ":"}
    for curve, colour in zip(curves, colours, strict=True):
        label = curve.name + (" (part in grid)" if curve.partial else "")
        ax.plot(edges, _cumulative(curve.dose, edges), styles[curve.kind], color=colour, lw=1.6, label=label)
    ax.set_xlim(0, top)
    for i, m in enumerate(markers):
        _draw_limits(ax, m, i)
    ax.set_ylim(0, 102)
    ax.set_xlabel("dose per fraction (cGy)")
    ax.set_ylabel("volume (%)")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fx = _fractions_text(scene, component)
    caption = (
        f"Cumulative DVHs of component {component}{fx}: solid lines targets, dashed organs at risk. "
        f"Dose: {scene.explanations[component]}."
    )
    if markers:
        caption += (
            " Green: per-protocol limits of "
            + ", ".join(i for m in markers for i in m.rule_ids)
            + " (a diamond marks the DVH point a D% rule limits)."
        )
    if skipped:
        caption += " Not drawn: " + "; ".join(skipped) + "."
    return fig, caption


def _draw_limits(ax: Axes, m: _Marker, index: int) -> None:
    """Rules' per-protocol limits: a shaded band between two limits, a line at a single one,
    and a diamond at the DVH point a 'Dxx%' rule limits."""
    colour = "#2a7f3f"
    if m.low is not None and m.high is not None:
        ax.axvspan(m.low, m.high, color=colour, alpha=0.10, lw=0)
    for value in (m.low, m.high):
        if value is None:
            continue
        ax.axvline(value, color=colour, lw=0.9, ls="-" if m.low is not None and m.high is not None else "-.")
        if m.volume_percent is not None:
            ax.plot([value], [m.volume_percent], marker="D", ms=6, color=colour, mec="black", mew=0.6)
    x = m.low if m.low is not None else m.high
    right = x is not None and x > 0.55 * ax.get_xlim()[1]  # label to the left of the line, inside the axes
    ax.annotate(
        m.label,
        xy=(x, 99 - 5 * index),
        xytext=(-3 if right else 3, -2),
        textcoords="offset points",
        fontsize=7,
        color=colour,
        va="top",
        ha="right" if right else "left",
    )


def _fractions_text(scene: _Scene, component: str) -> str:
    comp = scene.workspace.arm.components.get(component)
    if comp is None:
        return ""
    fx = sorted(f for f in comp.fractions if f is not None)
    return f" ({', '.join(str(f) for f in fx)} fx)" if fx else ""


# --------------------------------------------------------------------------- slices


def _lesion(scene: _Scene) -> tuple[Solid, list[Solid]]:
    """The SFRT lesion and its peaks; without one, the first target of the first component."""
    lesion = scene.structure(scene.vocabulary.lesion)
    if lesion is not None:
        return lesion, scene.solids(scene.vocabulary.peaks)
    for component in scene.components:
        solids = [s for s, kind in _component_structures(scene, component) if kind == "target"]
        if solids:
            return solids[0], []
    raise FigureUnavailable("the course has no SFRT lesion and no target to show")


def _plane(values: list[tuple[float, float, float]], default: float) -> float:
    """The coordinate (among the peaks' centres) whose plane cuts the most peaks.

    ``values`` holds (centre, low, high) per peak; ties go to the centre nearest ``default``.
    """
    if not values:
        return default
    centres = np.array([v[0] for v in values])
    lows = np.array([v[1] for v in values])
    highs = np.array([v[2] for v in values])
    cuts = ((centres[:, None] >= lows[None, :]) & (centres[:, None] < highs[None, :])).sum(axis=1)
    order = np.lexsort((np.abs(centres - default), -cuts))
    return float(centres[order[0]])


def _axial_rings(solid: Solid, z: float) -> list[np.ndarray]:
    slab = solid.bulk.slab_at(z)  # the drawing needs no finer sampling than the DVH
    return [] if slab is None else _rings(slab.shape)


def _coronal_section(solid: Solid, y: float) -> shapely.Geometry:
    """The solid cut by the plane at ``y``, in (x, z): each slab's chord times its z-range."""
    solid = solid.bulk
    if not solid.slabs:
        return shapely.Polygon()
    shapes = np.array([s.shape for s in solid.slabs], dtype=object)
    x0, _, _ = solid.bounds_mm[0]
    x1 = solid.bounds_mm[1][0]
    line = shapely.LineString([(x0 - 1.0, y), (x1 + 1.0, y)])
    cuts = shapely.intersection(shapes, line)
    parts, slab = shapely.get_parts(cuts, return_index=True)
    if parts.size == 0:
        return shapely.Polygon()
    bounds = shapely.bounds(parts)
    lo = np.array([s.z_min for s in solid.slabs])[slab]
    hi = np.array([s.z_max for s in solid.slabs])[slab]
    keep = bounds[:, 2] > bounds[:, 0]
    boxes = shapely.box(bounds[keep, 0], lo[keep], bounds[keep, 2], hi[keep])
    return shapely.union_all(boxes, grid_size=1e-6)


def _rings(geom: shapely.Geometry) -> list[np.ndarray]:
    rings = shapely.get_rings(shapely.get_parts(geom))
    return [shapely.get_coordinates(r) for r in rings]


def _slices_plot(scene: _Scene) -> tuple[Figure, str]:
    lesion, peaks = _lesion(scene)
    components = [c for c in scene.components if c in scene.doses]
    if not components:
        reasons = "; ".join(f"{c}: {r}" for c, r in scene.missing_dose.items())
        raise FigureUnavailable(f"no dose to show: {reasons}")
    valley = _valley(scene) if peaks else None
    lo, hi = lesion.bounds_mm
    centre = lesion.centroid_mm
    z0 = _plane([(float(p.centroid_mm[2]), p.bounds_mm[0][2], p.bounds_mm[1][2]) for p in peaks], float(centre[2]))
    y0 = _plane([(float(p.centroid_mm[1]), p.bounds_mm[0][1], p.bounds_mm[1][1]) for p in peaks], float(centre[1]))
    outlines = [(lesion, "white", "-", 1.6)] + [(p, "black", "-", 1.0) for p in peaks]
    if valley is not None:
        outlines.append((valley, "#f0f0f0", "--", 1.0))
    rows = len(components)
    fig = _figure(9.0, 3.9 * rows)
    for row, component in enumerate(components):
        grid = scene.dose(component)
        bottom = 1.0 - (row + 1) / rows
        height = 1.0 / rows
        box = (bottom + 0.13 * height, 0.76 * height)
        ax_axial = fig.add_axes((0.07, box[0], 0.37, box[1]))
        ax_cor = fig.add_axes((0.51, box[0], 0.37, box[1]))
        cax = fig.add_axes((0.90, box[0], 0.015, box[1]))
        window = (lo - SLICE_MARGIN_MM, hi + SLICE_MARGIN_MM)
        axial = _sample_plane(grid, window, "z", z0)
        coronal = _sample_plane(grid, window, "y", y0)
        vmax = max(np.nanmax(axial[0]) if np.isfinite(axial[0]).any() else 0.0, 1.0)
        vmax = max(vmax, np.nanmax(coronal[0]) if np.isfinite(coronal[0]).any() else 0.0)
        image = _show(ax_axial, axial, vmax, flip_vertical=True)
        _show(ax_cor, coronal, vmax, flip_vertical=False)
        for solid, colour, style, width in outlines:
            for ring in _axial_rings(solid, z0):
                ax_axial.plot(ring[:, 0], ring[:, 1], style, color=colour, lw=width)
            for ring in _rings(_coronal_section(solid, y0)):
                ax_cor.plot(ring[:, 0], ring[:, 1], style, color=colour, lw=width)
        ax_axial.set_title(f"{component}: axial, z = {z0:.1f} mm", fontsize=9)
        ax_cor.set_title(f"{component}: coronal, y = {y0:.1f} mm", fontsize=9)
        ax_axial.set_xlabel("x (mm)  R → L", fontsize=8)
        ax_axial.set_ylabel("y (mm)  anterior ↑", fontsize=8)
        ax_cor.set_xlabel("x (mm)  R → L", fontsize=8)
        ax_cor.set_ylabel("z (mm)  superior ↑", fontsize=8)
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("cGy per fraction", fontsize=8)
    names = [lesion.name] + [p.name for p in peaks]
    caption = (
        "Dose per fraction of each component in the planes through the most peak centres. "
        f"Outlines: {lesion.name} white, peaks black"
        + (f", {valley.name} dashed" if valley is not None else "")
        + f" ({', '.join(names[:6])}{'…' if len(names) > 6 else ''}); the outlines are the contours' slabs "
        "(the same solids the DVHs integrate). Radiological view: patient's right on the left."
    )
    return fig, caption


def _sample_plane(
    grid: DoseGrid, window: tuple[np.ndarray, np.ndarray], axis: str, at: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Dose (cGy) on a plane z = ``at`` (axial: rows y, columns x) or y = ``at`` (coronal: rows z)."""
    lo, hi = window
    step = min(grid.spacing_mm) / 2.0
    xs = np.arange(lo[0], hi[0] + step, step)
    if axis == "z":
        vs = np.arange(lo[1], hi[1] + step, step)
        gx, gv = np.meshgrid(xs, vs)
        dose = grid.sample_xyz(gx, gv, np.full_like(gx, at))
    else:
        vs = np.arange(lo[2], hi[2] + step, step)
        gx, gv = np.meshgrid(xs, vs)
        dose = grid.sample_xyz(gx, np.full_like(gx, at), gv)
    half = step / 2.0
    return dose * 100.0, (xs[0] - half, xs[-1] + half, vs[0] - half, vs[-1] + half)


def _show(
    ax: Axes, plane: tuple[np.ndarray, tuple[float, float, float, float]], vmax: float, *, flip_vertical: bool
) -> AxesImage:
    dose, (x0, x1, v0, v1) = plane
    extent = (x0, x1, v1, v0) if flip_vertical else (x0, x1, v0, v1)
    image = ax.imshow(
        np.ma.masked_invalid(dose),
        cmap="turbo",
        vmin=0.0,
        vmax=vmax,
        origin="upper" if flip_vertical else "lower",
        extent=extent,
        interpolation="nearest",
    )
    ax.set_facecolor("#404040")
    ax.tick_params(labelsize=7)
    return image


# --------------------------------------------------------------------------- profile


def _peak_path(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A polyline through every peak centre: from the outermost, always to the nearest next,
    extended beyond both ends so that the profile shows where the lesion's dose falls off.

    Returns the path's vertices and the order in which it visits the peaks."""
    remaining = list(range(len(centres)))
    start = int(np.argmax(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
    order = [start]
    remaining.remove(start)
    while remaining:
        last = centres[order[-1]]
        nearest = min(remaining, key=lambda i: float(np.linalg.norm(centres[i] - last)))
        order.append(nearest)
        remaining.remove(nearest)
    path = centres[order]
    if len(path) == 1:
        before, after = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])
    else:
        before = path[0] - path[1]
        after = path[-1] - path[-2]
    ext = PROFILE_EXTENSION_MM
    start_point = path[0] + ext * before / np.linalg.norm(before)
    end_point = path[-1] + ext * after / np.linalg.norm(after)
    return np.vstack([start_point, path, end_point]), np.array(order)


def _inside(solid: Solid, points: np.ndarray) -> np.ndarray:
    """Whether each point lies inside the solid's slabs."""
    solid = solid.bulk
    lo = np.array([s.z_min for s in solid.slabs])
    hi = np.array([s.z_max for s in solid.slabs])
    index = np.clip(np.searchsorted(lo, points[:, 2], side="right") - 1, 0, len(solid.slabs) - 1)
    in_z = (points[:, 2] >= lo[index]) & (points[:, 2] < hi[index])
    shapes = np.array([s.shape for s in solid.slabs], dtype=object)[index]
    return in_z & shapely.contains_xy(shapes, points[:, 0], points[:, 1])


def _profile_plot(scene: _Scene) -> tuple[Figure, str]:
    lesion, peaks = _lesion(scene)
    if not peaks:
        raise FigureUnavailable("the course has no peaks to draw a profile through")
    components = [c for c in scene.components if c in scene.doses]
    if not components:
        reasons = "; ".join(f"{c}: {r}" for c, r in scene.missing_dose.items())
        raise FigureUnavailable(f"no dose to show: {reasons}")
    centres = np.array([p.centroid_mm for p in peaks])
    vertices, order = _peak_path(centres)
    seg = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    at = np.concatenate(([0.0], np.cumsum(seg)))
    s = np.arange(0.0, at[-1] + PROFILE_STEP_MM / 2, PROFILE_STEP_MM)
    points = np.column_stack([np.interp(s, at, vertices[:, k]) for k in range(3)])
    fig = _figure(9.0, 4.2)
    ax = fig.add_axes((0.08, 0.13, 0.7, 0.72))
    inside = _inside(lesion, points)
    _shade_runs(ax, s, inside, f"inside {lesion.name}")
    top = 0.0
    for i, component in enumerate(components):
        colour = _COMPONENT_COLOURS[i % len(_COMPONENT_COLOURS)]
        dose = scene.dose(component).sample(points) * 100.0
        top = max(top, float(np.nanmax(dose)) if np.isfinite(dose).any() else 0.0)
        ax.plot(s, dose, color=colour, lw=1.8, label=f"{component}{_fractions_text(scene, component)}")
        band = scene.band(component)
        if band is not None:
            ax.axhspan(band[0], band[1], color=colour, alpha=0.12, lw=0)
            ax.axhline(band[0], color=colour, lw=0.7, ls="--")
            ax.axhline(band[1], color=colour, lw=0.7, ls="--")
            ax.annotate(
                f"{component} per protocol {band[0]:g}–{band[1]:g} cGy",
                xy=(1.0, band[1]),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=7,
                color=colour,
                va="center",
            )
            top = max(top, band[1])
    for k, index in enumerate(order):
        x = at[k + 1]
        ax.axvline(x, color="black", lw=0.7, ls=":")
        ax.annotate(
            peaks[index].name,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.set_xlim(0, s[-1])
    ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)
    ax.set_xlabel("distance along the path through the peak centres (mm)")
    ax.set_ylabel("dose per fraction (cGy)")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    caption = (
        f"Dose per fraction along a path through the {len(peaks)} peak centre(s), extended "
        f"{PROFILE_EXTENSION_MM:g} mm beyond the end peaks; grey: inside {lesion.name}. Shaded bands: each "
        "component's per-protocol dose range (peaks for the high-dose component, valley/LDRT for the low-dose one)."
    )
    return fig, caption


def _shade_runs(ax: Axes, s: np.ndarray, mask: np.ndarray, label: str) -> None:
    edges = np.flatnonzero(np.diff(np.r_[False, mask, False].astype(np.int8)))
    for k, (a, b) in enumerate(zip(edges[0::2], edges[1::2], strict=True)):
        ax.axvspan(s[a], s[b - 1], color="#bbbbbb", alpha=0.35, lw=0, label=label if k == 0 else None)


# --------------------------------------------------------------------------- LDRT


def _ldrt_plot(scene: _Scene, component: str) -> tuple[Figure, str]:
    scene.dose(component)
    spec = scene.protocol.components[component]
    targets = [(s, kind) for s, kind in _component_structures(scene, component) if kind == "target"]
    excluded = [(s, "excluded") for role in scene.vocabulary.no_low_dose for s in scene.solids(role)]
    unique: dict[str, tuple[Solid, str]] = {}
    for solid, kind in targets + excluded:
        unique.setdefault(solid.name, (solid, kind))
    rows = list(unique.values())
    if not rows:
        raise FigureUnavailable(f"no target of component {component} ({', '.join(spec.target_roles)}) is drawn")
    curves, skipped = _curves(scene, component, rows)
    if not curves:
        raise FigureUnavailable("no target or brain/bone structure lies in the dose grid: " + "; ".join(skipped))
    names = [c.name + (" *" if c.partial else "") for c in curves]
    means = np.array([c.dose.dmean * 100.0 for c in curves])
    maxima = np.array([c.dose.dmax * 100.0 for c in curves])
    fig = _figure(9.0, 0.9 + 0.32 * len(curves))
    ax = fig.add_axes((0.22, 0.9 / (0.9 + 0.32 * len(curves)) * 0.75, 0.6, 1 - 0.9 / (0.9 + 0.32 * len(curves))))
    y = np.arange(len(curves))[::-1]
    colours = ["#1f4e9c" if c.kind == "target" else "#a01c1c" for c in curves]
    ax.barh(y, means, color=colours, alpha=0.75, height=0.6)
    ax.plot(maxima, y, "|", color="black", ms=12, mew=2)
    band = scene.band(component)
    if band is not None:
        ax.axvspan(band[0], band[1], color="#2a7f3f", alpha=0.12, lw=0)
        ax.axvline(band[0], color="#2a7f3f", lw=0.8, ls="--")
        ax.axvline(band[1], color="#2a7f3f", lw=0.8, ls="--")
    ceilings = [m for m in scene.markers.get(component, []) if m.low is None and m.high is not None]
    for m in ceilings:
        assert m.high is not None
        ax.axvline(m.high, color="#a01c1c", lw=0.9, ls="-.")
        ax.annotate(
            m.label,
            xy=(m.high, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, 2),
            textcoords="offset points",
            fontsize=7,
            color="#a01c1c",
        )
    ax.set_yticks(y, names, fontsize=8)
    top = max(float(maxima.max()), band[1] if band else 0.0, 1.0) * 1.1
    ax.set_xlim(0, top)
    for yi, mean, mx in zip(y, means, maxima, strict=True):
        ax.annotate(
            f"{mean:.0f} / {mx:.0f}", xy=(mx, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7
        )
    ax.set_xlabel("dose per fraction (cGy): bar mean, tick maximum")
    ax.grid(True, axis="x", color="#dddddd", lw=0.6)
    caption = (
        f"Component {component}{_fractions_text(scene, component)}: mean (bar) and maximum (tick) dose per fraction "
        "of each target (blue) and of each brain/bone structure (red), which must receive no LDRT dose"
        + (f"; shaded: per-protocol range {band[0]:g}–{band[1]:g} cGy" if band else "")
        + "".join(f"; red line: {m.label}" for m in ceilings)
        + ". * only the part inside the dose grid."
    )
    if skipped:
        caption += " Not drawn: " + "; ".join(skipped) + "."
    return fig, caption


# --------------------------------------------------------------------------- helpers


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _palette(n: int) -> list[str]:
    base = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
        "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173",
    ]  # fmt: skip
    return [base[i % len(base)] for i in range(n)]
