"""DICOM-RT integrity as a rule, so that it shows in the verdict like any other finding."""

from __future__ import annotations

from ..protocol import RuleSpec
from ..report import Status
from ..units import Quantity
from .base import CheckContext, Measurement, NoParams, check


@check("integrity.dicom", Quantity.COUNT)
def dicom_integrity(ctx: CheckContext, spec: RuleSpec, params: NoParams) -> Measurement:
    """Number of integrity errors (references, frames of reference, attributes rtcheck reads).

    Errors mean rtcheck cannot trust what it read, so the rule is not evaluable rather
    than a deviation of the plan; warnings (conformance of attributes rtcheck does not
    use) are listed in the evidence and do not change the status.
    """
    errors = [f for f in ctx.integrity if f.severity == "error"]
    warnings = [f for f in ctx.integrity if f.severity != "error"]
    first = errors[0].message if errors else ""
    message = (
        f"{len(errors)} error(s), {len(warnings)} warning(s); first error: {first}"
        if errors
        else f"no integrity errors ({len(warnings)} warning(s))"
    )
    return Measurement(
        value=float(len(errors)),
        message=message,
        files=sorted({f.file for f in ctx.integrity if f.file}),
        evidence={
            "errors": [f.model_dump() for f in errors],
            "warnings": [f.model_dump() for f in warnings],
        },
        status=Status.NOT_EVALUABLE if errors else None,
    )
