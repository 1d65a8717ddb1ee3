"""The compliance report: one pydantic model, the only thing renderers and callers see.

The JSON form of :class:`Report` is a public interface (planning-system scripts parse it),
so it carries a schema version and changes only by adding fields.

Empty lists and mappings are plain defaults (``= []``), which pydantic copies for every
instance: a ``default_factory=list`` costs more where it counts, at every start of the
program, because pydantic inspects each factory's signature when it builds the models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel

SCHEMA_VERSION = "1.0"


class Status(StrEnum):
    """Trial QA categories (EORTC/NRG vocabulary), in order of severity."""

    PER_PROTOCOL = "per_protocol"
    ACCEPTABLE_VARIATION = "acceptable_variation"
    UNACCEPTABLE_DEVIATION = "unacceptable_deviation"
    #: Inputs missing or unusable: never a silent pass, and the worst outcome of all,
    #: because nobody has looked at what could not be evaluated.
    NOT_EVALUABLE = "not_evaluable"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def label(self) -> str:
        return _LABELS[self]


_SEVERITY = {
    Status.PER_PROTOCOL: 0,
    Status.ACCEPTABLE_VARIATION: 1,
    Status.UNACCEPTABLE_DEVIATION: 2,
    Status.NOT_EVALUABLE: 3,
}
_LABELS = {
    Status.PER_PROTOCOL: "per protocol",
    Status.ACCEPTABLE_VARIATION: "acceptable variation",
    Status.UNACCEPTABLE_DEVIATION: "unacceptable deviation",
    Status.NOT_EVALUABLE: "not evaluable",
}


def worst(statuses: list[Status]) -> Status:
    """The most severe status; an empty list is not evaluable (nothing was checked)."""
    if not statuses:
        return Status.NOT_EVALUABLE
    return max(statuses, key=lambda s: s.severity)


class LimitsOut(BaseModel):
    min: float | None = None
    max: float | None = None


class ItemResult(BaseModel):
    """A per-item measurement inside a rule (one peak, one LDRT target, one structure)."""

    name: str
    value: float | None
    status: Status
    detail: dict[str, Any] = {}


class RuleResult(BaseModel):
    """The verdict of one rule, with everything needed to check it by hand.

    Attributes
    ----------
    id, family, description
        The rule as the protocol names and describes it.
    status
        Per protocol, acceptable variation, unacceptable deviation or not evaluable.
    value, unit
        What was measured, in the unit the protocol writes the rule's limits in (None when
        nothing could be measured).
    per_protocol, acceptable_variation
        The limits the value was graded against.
    message
        What was found, or why the rule is not evaluable.
    structures, files
        Where it was measured.
    items
        Per-item results (each peak, each target) when the rule measures several.
    evidence
        Further numbers behind the verdict.
    source
        The protocol section or reference the rule comes from.
    """

    id: str
    family: str
    description: str
    status: Status
    value: float | None = None
    unit: str
    per_protocol: LimitsOut | None = None
    acceptable_variation: LimitsOut | None = None
    message: str
    structures: list[str] = []
    files: list[str] = []
    items: list[ItemResult] = []
    evidence: dict[str, Any] = {}
    source: str = ""


class InputFile(BaseModel):
    path: str
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    sha256: str


class ProtocolRef(BaseModel):
    name: str
    version: str
    sha256: str
    path: str
    #: A centre's aliases files that added structure names to the roles.
    alias_files: list[str] = []
    #: The literature the rules' sources cite by [key]: key -> full reference.
    references: dict[str, str] = {}


class ArmResult(BaseModel):
    """Which arm the course was judged as, and why."""

    arm: str | None
    overridden: bool = False
    evidence: list[str] = []
    #: component name -> "plan label / fraction group n (k fx)" entries assigned to it
    components: dict[str, list[str]] = {}


class IntegrityFinding(BaseModel):
    """A DICOM-RT integrity problem: which file, which attribute, what is wrong."""

    severity: str  # "error" (rtcheck cannot trust what it reads) or "warning"
    file: str
    keyword: str = ""
    tag: str = ""
    message: str


class PlanSummary(BaseModel):
    label: str
    name: str
    sop_instance_uid: str
    fraction_groups: list[dict[str, Any]]


class Report(BaseModel):
    """The compliance report of one course (its JSON is the report's exchange format).

    Attributes
    ----------
    schema_version, rtcheck_version, created
        Which schema and rtcheck wrote it, and when (UTC).
    protocol
        Name, version, SHA-256 and path of the protocol it was checked against.
    patient_id, patient_name, course_key
        Whose course, and the key that identifies it (its plans and structure set).
    plans, files
        The plans checked and every file read, with SHA-256.
    arm
        The arm the course was judged as, and the evidence.
    verdict
        The worst status of all rules.
    counts
        How many rules have each status.
    rules
        One result per rule of the arm, in protocol order.
    integrity, notes
        DICOM-RT integrity findings, and what else the reader should know.
    structure_roles
        Each drawn ROI name and the protocol roles it plays (and how it was recognised when
        not by its name).
    """

    schema_version: str = SCHEMA_VERSION
    rtcheck_version: str
    created: str
    protocol: ProtocolRef
    patient_id: str
    patient_name: str = ""
    course_key: str
    plans: list[PlanSummary] = []
    files: list[InputFile] = []
    arm: ArmResult
    verdict: Status
    counts: dict[str, int]
    rules: list[RuleResult]
    integrity: list[IntegrityFinding] = []
    notes: list[str] = []
    #: Drawn ROI name -> the protocol roles it plays, with how it was recognised when not by
    #: its name (an alias, its RTROIInterpretedType), so a reviewer sees every mapping.
    structure_roles: dict[str, list[str]] = {}

    def rule(self, rule_id: str) -> RuleResult | None:
        """The result of rule ``rule_id``, or None if the rule did not apply."""
        return next((r for r in self.rules if r.id == rule_id), None)
