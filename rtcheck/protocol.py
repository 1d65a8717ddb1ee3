"""The protocol: a trial's rules as YAML, validated with pydantic.

Rules live in YAML, never in code, so that another centre or trial can write its own
protocol without touching Python. A protocol names structure *roles* (matched by ROI name
patterns), *components* (the fractionation parts of a course, such as the 3-fraction SFRT
peaks), *arms* (which components an arm is made of) and *rules*: each rule has a stable id,
the check (a plug-in of :mod:`rtcheck.rules`) that measures it, explicit units, a
per-protocol range, a wider acceptable-variation range and the source of its thresholds.

A malformed protocol fails with the YAML path and line of the mistake, because the person
who reads the error is a physicist editing that file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ProtocolError
from .names import glob_matches
from .units import Unit


class _Strict(BaseModel):
    """Unknown keys are mistakes (a misspelt ``per_protcol`` must not be silently ignored).

    Empty lists and mappings are plain defaults (``= []``), which pydantic copies for every
    instance: a ``default_factory=list`` costs more where it counts, at every start of the
    program, because pydantic inspects each factory's signature when it builds the models.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """A closed interval; either bound may be open-ended."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.min is None and self.max is None:
            raise ValueError("give at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self

    def contains(self, value: float) -> bool:
        # A relative tolerance of 1e-9 keeps 30 Gy / 3 fractions inside a 10 Gy bound.
        tol = 1e-9 * max(1.0, abs(value))
        if self.min is not None and value < self.min - tol:
            return False
        return not (self.max is not None and value > self.max + tol)

    def text(self, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        if self.min is not None and self.max is not None:
            if self.min == self.max:
                return f"= {self.min:g}{u}"
            return f"{self.min:g}–{self.max:g}{u}"
        if self.min is not None:
            return f">= {self.min:g}{u}"
        return f"<= {self.max:g}{u}"


class ProtocolInfo(_Strict):
    name: str
    version: str
    description: str = ""
    references: list[str] = []


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    """``re:...`` is a regular expression; anything else a shell-style glob. Both ignore case."""
    if pattern.startswith("re:"):
        return re.compile(pattern[3:], re.IGNORECASE)
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


class Role(_Strict):
    """A kind of structure the rules talk about, found in a structure set by its name.

    Names are compared in canonical form (:mod:`rtcheck.names`: case, separators and
    laterality do not matter), so the TG-263 pattern ``Lung_L`` also finds ``Lt Lung``.
    """

    description: str = ""
    patterns: list[str] = Field(min_length=1)
    exclude: list[str] = []
    #: A centre's own names for this role (from an aliases file); matched like ``patterns``.
    aliases: list[str] = []
    #: When given, a ROI whose RTROIInterpretedType is set must have one of these types;
    #: an empty type (allowed by DICOM, common in real exports) never disqualifies.
    interpreted_types: list[str] = []
    #: A ROI of one of these RTROIInterpretedTypes plays the role whatever its name (a
    #: target typed CTV but named "Tumor Bed"), unless ``exclude`` or ``unless_roles`` says no.
    by_interpreted_type: list[str] = []
    #: Roles a ROI found only by its type must not possibly be: if its name contains any of
    #: those roles' patterns, it is left out (fail closed: a bone metastasis typed GTV is no
    #: silent target).
    unless_roles: list[str] = []

    @field_validator("patterns", "exclude", "aliases")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        # Only regular expressions can be invalid: fnmatch translates any glob into a valid one.
        for p in patterns:
            if not p.startswith("re:"):
                continue
            try:
                _compile_pattern(p)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {p!r}: {exc}") from exc
        return patterns

    def matches(self, name: str, interpreted_type: str | None = None) -> bool:
        """Whether the ROI plays this role by its name (patterns or aliases)."""
        return self.match_reason(name, interpreted_type) is not None and not self._typed_only(name)

    def match_reason(self, name: str, interpreted_type: str | None = None) -> str | None:
        """How a ROI plays this role ("name", "alias 'X'", "RTROIInterpretedType CTV"), or None."""
        if _any_match(self.exclude, name):
            return None
        allowed = {t.upper() for t in self.interpreted_types}
        if allowed and interpreted_type and interpreted_type.upper() not in allowed:
            return None
        if _any_match(self.patterns, name):
            return "name"
        alias = next((a for a in self.aliases if _pattern_matches(a, name)), None)
        if alias is not None:
            return f"alias '{alias}'"
        itype = (interpreted_type or "").strip().upper()
        if itype and itype in {t.upper() for t in self.by_interpreted_type}:
            return f"RTROIInterpretedType {itype}"
        return None

    def _typed_only(self, name: str) -> bool:
        return not _any_match(self.patterns, name) and not _any_match(self.aliases, name)

    def could_be(self, name: str) -> bool:
        """Whether any of this role's patterns or aliases occurs inside the name (for fail-closed checks)."""
        inner = [p for p in (*self.patterns, *self.aliases) if not p.startswith("re:")]
        return any(glob_matches(f"*{p.strip('*')}*", name) for p in inner) or _any_match(self.patterns, name)


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return _compile_pattern(pattern).fullmatch(name.strip()) is not None
    return glob_matches(pattern, name)


def _any_match(patterns: list[str], name: str) -> bool:
    return any(_pattern_matches(p, name) for p in patterns)


class ComponentSpec(_Strict):
    """A fractionation part of a course, recognised by its fractions, plan label and targets."""

    description: str = ""
    fractions: Limits | None = None
    labels: list[str] = []
    target_roles: list[str] = []

    def label_matches(self, *texts: str) -> bool:
        compiled = [_compile_pattern(p) for p in self.labels]
        return any(p.fullmatch(t.strip()) for p in compiled for t in texts if t)


class Operand(_Strict):
    """A role (all its ROIs together), grown (margin > 0) or shrunk (margin < 0) in 3-D."""

    role: str
    margin_mm: float = 0.0


class DerivedSpec(_Strict):
    """A structure the protocol builds from drawn ones, e.g. the valley when none was drawn.

    ``difference`` keeps what is inside the first operand and inside none of the others.
    """

    description: str = ""
    op: Literal["union", "intersection", "difference"]
    operands: list[Operand] = Field(min_length=1)


class ArmSpec(_Strict):
    description: str = ""
    components: list[str] = Field(min_length=1)
    optional_components: list[str] = []


class ReportSpec(_Strict):
    """How reports show the trial: the roles its figures draw as what, the rules an audit plots.

    Reports speak the protocol's vocabulary, so which structures are organs at risk, peaks
    or low-dose targets is written here, not in the renderers. Every entry is optional; a
    figure whose roles are not named is left out.
    """

    #: The lesion the dose slices and the peak profile are centred on (a role).
    lesion: str | None = None
    #: The high-dose spheres: outlined on the slices, the profile runs through their centres.
    peaks: str | None = None
    #: The valley: the first of these (roles or derived structures) that the course has.
    valley: list[str] = []
    #: Roles drawn as organs at risk on every DVH.
    organs_at_risk: list[str] = []
    #: The role whose component gets the low-dose targets figure.
    low_dose_targets: str | None = None
    #: Roles that must receive no low-dose dose, shown beside the low-dose targets.
    no_low_dose: list[str] = []
    #: Rule ids (glob patterns allowed) whose values an audit plots by centre.
    headline_rules: list[str] = []

    def roles(self) -> list[tuple[str, str]]:
        """(where, role) of every entry that must name a role of the protocol."""
        singles = [("lesion", self.lesion), ("peaks", self.peaks), ("low_dose_targets", self.low_dose_targets)]
        out = [(where, role) for where, role in singles if role is not None]
        out += [("organs_at_risk", r) for r in self.organs_at_risk]
        return out + [("no_low_dose", r) for r in self.no_low_dose]


_RULE_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class RuleSpec(_Strict):
    """One rule of the protocol, as written in the YAML."""

    id: str
    check: str
    description: str
    arms: list[str] = []
    unit: Unit
    per_protocol: Limits | None = None
    acceptable_variation: Limits | None = None
    source: str = Field(min_length=3)
    params: dict[str, Any] = {}

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} must look like 'family.name' (lower case, dots)")
        return value

    @model_validator(mode="after")
    def _variation_contains_protocol(self) -> RuleSpec:
        pp, av = self.per_protocol, self.acceptable_variation
        if pp is not None and av is not None:
            lo_ok = av.min is None or (pp.min is not None and pp.min >= av.min)
            hi_ok = av.max is None or (pp.max is not None and pp.max <= av.max)
            if not (lo_ok and hi_ok):
                raise ValueError("acceptable_variation must contain the per_protocol range")
        return self

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]


#: A citation in a rule's source: a reference key in square brackets.
_CITED = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9.\-]*)\]")


class Protocol(_Strict):
    """A whole protocol. Build it with :func:`rtcheck.api.load_protocol`, which also checks the rules' params."""

    protocol: ProtocolInfo
    roles: dict[str, Role]
    components: dict[str, ComponentSpec]
    derived: dict[str, DerivedSpec] = {}
    arms: dict[str, ArmSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(min_length=1)
    report: ReportSpec = Field(default_factory=ReportSpec)
    #: The literature the rules cite, each listed once: key -> full reference. A rule's
    #: ``source`` names keys in [brackets]; every bracketed key must be listed here.
    references: dict[str, str] = {}
    #: SHA-256 of the YAML text, so every report says exactly which protocol judged it.
    sha256: str = ""
    path: str = ""
    #: Aliases files merged into the roles, each as "path (sha256 ...)".
    alias_files: list[str] = []

    @model_validator(mode="after")
    def _cross_references(self) -> Protocol:
        for arm_name, arm in self.arms.items():
            for comp in [*arm.components, *arm.optional_components]:
                if comp not in self.components:
                    raise ValueError(f"arm {arm_name!r} names unknown component {comp!r}")
        for role_name, role in self.roles.items():
            for other in role.unless_roles:
                if other not in self.roles:
                    raise ValueError(f"role {role_name!r} names unknown role {other!r} in unless_roles")
        for comp_name, comp_spec in self.components.items():
            for target_role in comp_spec.target_roles:
                if target_role not in self.roles:
                    raise ValueError(f"component {comp_name!r} names unknown role {target_role!r}")
        for name, spec in self.derived.items():
            if name in self.roles:
                raise ValueError(f"derived structure {name!r} has the name of a role")
            for operand in spec.operands:
                if operand.role not in self.roles:
                    raise ValueError(f"derived structure {name!r} names unknown role {operand.role!r}")
        for where, named_role in self.report.roles():
            if named_role not in self.roles:
                raise ValueError(f"report.{where} names unknown role {named_role!r}")
        for name in self.report.valley:
            if name not in self.roles and name not in self.derived:
                raise ValueError(f"report.valley names {name!r}, which is neither a role nor a derived structure")
        if self.references:
            for rule in self.rules:
                unknown = [k for k in _CITED.findall(rule.source) if k not in self.references and k != "inference"]
                if unknown:
                    raise ValueError(
                        f"rule {rule.id!r} cites [{unknown[0]}], which the references: section does not list"
                    )
        seen: dict[str, set[str]] = {}
        for rule in self.rules:
            for arm_name in rule.arms:
                if arm_name not in self.arms:
                    raise ValueError(f"rule {rule.id!r} names unknown arm {arm_name!r}")
            arms = set(rule.arms or self.arms)
            if rule.id in seen and seen[rule.id] & arms:
                raise ValueError(f"rule id {rule.id!r} is used twice for arm(s) {sorted(seen[rule.id] & arms)}")
            seen.setdefault(rule.id, set()).update(arms)
        return self

    def rules_for(self, arm: str | None) -> list[RuleSpec]:
        """The rules of an arm; for no arm (none detected), the rules every arm shares."""
        return [r for r in self.rules if not r.arms or (arm is not None and arm in r.arms)]


BUNDLED_PROTOCOL = "sfrt_ldrt.yaml"

#: libyaml's safe loader when PyYAML was built with it (the wheels are), else the Python one.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Validates one rule against the check it names: (YAML location, message) per problem.
RuleProblems = Callable[[RuleSpec], list[tuple[tuple[Any, ...], str]]]


def bundled_protocol_path(name: str = BUNDLED_PROTOCOL) -> Path:
    """Where the trial protocol is: inside the installed package, or in the source tree."""
    packaged = resources.files("rtcheck") / "protocols" / name
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "protocols" / name


def aliases_beside(path: Path) -> Path:
    """Where a centre keeps its aliases for a protocol: ``<name>.aliases.yaml`` beside it."""
    return path.with_name(f"{path.stem}.aliases.yaml")


class _AliasesFile(_Strict):
    """A centre's names for the protocol's roles: ``aliases: {role: [pattern, ...]}``."""

    aliases: dict[str, list[str]]


def with_aliases(protocol: Protocol, files: Sequence[Path]) -> Protocol:
    """The protocol with the aliases of ``files`` added to its roles."""
    roles = dict(protocol.roles)
    listed = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            data = _AliasesFile.model_validate(yaml.safe_load(text))
        except OSError as exc:
            raise ProtocolError(f"{path}: cannot read aliases ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ProtocolError(f"{path}: YAML syntax error in aliases: {exc}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _yaml_path(tuple(first.get("loc", ())))
            hint = "write aliases: {role: [name, ...]}"
            raise ProtocolError(f"{path}: at {where}: {first.get('msg')}; {hint}") from exc
        for role, names in data.aliases.items():
            if role not in roles:
                raise ProtocolError(f"{path}: unknown role {role!r} in aliases; roles: {', '.join(roles)}")
            try:
                merged = {**roles[role].model_dump(), "aliases": [*roles[role].aliases, *names]}
                roles[role] = Role.model_validate(merged)
            except ValidationError as exc:
                raise ProtocolError(f"{path}: aliases of {role}: {exc.errors()[0].get('msg')}") from exc
        listed.append(f"{path} (sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]})")
    return protocol.model_copy(update={"roles": roles, "alias_files": [*protocol.alias_files, *listed]})


def read_protocol(path: Path | str | None, rule_problems: RuleProblems) -> Protocol:
    """Load and validate a protocol YAML (the bundled trial protocol when ``path`` is None).

    ``rule_problems`` validates one rule against the checks that measure it (its check,
    unit and params): the caller hands it in because the checks sit above the protocol
    (:func:`rtcheck.api.load_protocol` passes the rule registry's). Raises
    :class:`ProtocolError` naming the file, the YAML path and the line of the first
    problems found.
    """
    path = Path(path) if path is not None else bundled_protocol_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read protocol ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_FAST_LOADER)  # a safe loader (libyaml in C when present)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(f"{path}:{where}: YAML syntax error: {problem}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: a protocol is a YAML mapping with protocol, roles, components, arms, rules")
    data["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    data["path"] = str(path)
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(_describe(path, text, exc.errors())) from exc
    problems = []
    for i, rule in enumerate(protocol.rules):
        for loc, message in [*rule_problems(rule), *_unknown_names(protocol, rule)]:
            problems.append({"loc": ("rules", i, *loc), "msg": message})
    if problems:
        raise ProtocolError(_describe(path, text, problems))
    return protocol


#: Param names that refer to roles, structures (a role or a derived structure) or components
#: of the protocol, by convention of all checks.
_ROLE_PARAMS = ("roles", "target_roles", "excluded_roles", "to_roles", "members_role")
_STRUCTURE_PARAMS = ("structure", "container", "fallback")
_COMPONENT_PARAMS = ("component", "components")


def _unknown_names(protocol: Protocol, rule: RuleSpec) -> list[tuple[tuple[Any, ...], str]]:
    """Roles and components a rule's params name must exist: a typo must fail at load, not in a report."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    named: list[tuple[str, Mapping[str, object], str]] = [
        *((k, protocol.roles, "role") for k in _ROLE_PARAMS),
        *((k, {**protocol.roles, **protocol.derived}, "role or derived structure") for k in _STRUCTURE_PARAMS),
        *((k, protocol.components, "component") for k in _COMPONENT_PARAMS),
    ]
    for key, known, what in named:
        value = rule.params.get(key)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for name in names:
            if isinstance(name, str) and name not in known:
                problems.append((("params", key), f"unknown {what} {name!r}; defined: {', '.join(known)}"))
    return problems


def _describe(path: Path, text: str, errors: list[Any]) -> str:
    """One line per problem (at most three): ``file:line: at rules[3].unit: message``.

    The YAML is parsed again here, into nodes that know their lines: the pure-Python
    composer that keeps them is several times slower than the C loader, so a valid
    protocol never pays for it.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    parts = []
    for err in errors[:3]:
        loc = tuple(err.get("loc", ()))
        line = _line_of(root, loc)
        where = _yaml_path(loc)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{path}:{line}: at {where}: {msg}" if line else f"{path}: at {where}: {msg}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "union[")):
            out += f".{part}" if out else part
    return out or "(top level)"


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node along ``loc`` that exists."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
