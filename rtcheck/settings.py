"""Settings of a long-running command: a YAML file under version control, the command line on top.

``rtcheck serve`` and ``rtcheck audit`` are configured the same way, as the protocol is: a
pydantic model declares every setting once (its type, range and help), and both the
command line and a YAML file fill it. The names are the same (``--max-associations`` on the
command line is ``max_associations`` or ``max-associations`` in YAML); the command line
wins, so a one-off override never needs an edited file; relative paths in a file are
relative to the file itself, so the working directory of a service does not matter. A
typo or a value out of range stops the command with one line naming the setting.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ExitCode, RtcheckError


class SettingsError(RtcheckError, ValueError):
    """A setting is missing, unknown or out of range; the message names it.

    A ValueError too, so that a validator may raise it and pydantic reports it as the
    setting's problem.
    """

    exit_code = ExitCode.USAGE_ERROR


class Settings(BaseModel):
    """Base of a command's settings. Build one with :meth:`load`."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def load(cls, given: dict[str, Any], config_file: Path | None = None) -> Self:
        """Validate the settings of ``config_file`` (if any) overridden by ``given`` (None: not given)."""
        from_file = _read_file(cls, config_file) if config_file is not None else {}
        from_command_line = {name: value for name, value in given.items() if value is not None}
        try:
            return cls.model_validate({**from_file, **from_command_line})
        except ValidationError as exc:
            in_file = config_file if set(from_file) - set(from_command_line) else None
            raise SettingsError(_describe(cls, exc, in_file, set(from_command_line))) from exc

    @classmethod
    def from_args(cls, args: argparse.Namespace, config_file: Path | None = None) -> Self:
        """:meth:`load` with the parsed options named as the fields.

        An option left at None was not given; so was a repeatable or positional one that
        argparse left empty (it gives ``[]`` for ``nargs="*"`` even with a None default).
        """
        given = {name: getattr(args, name, None) for name in cls.model_fields}
        return cls.load({name: value for name, value in given.items() if value != []}, config_file)


def add_arguments(
    parser: argparse._ActionsContainer,
    model: type[Settings],
    names: Iterable[str],
    metavars: dict[str, str] | None = None,
) -> None:
    """Add ``--<name>`` for each of ``names``, typed and documented as the model's field.

    Every default is None so that :meth:`Settings.load` can tell an option that was given
    from one that was not, and let the config file fill the latter; the defaults live on
    the model only.
    """
    for name in names:
        field = model.model_fields[name]
        kind = _scalar_type(field.annotation)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind if kind in (int, float, Path) else str,
            default=None,
            help=field.description,
            metavar=(metavars or {}).get(name),
        )


def _scalar_type(annotation: Any) -> Any:
    """``int`` for ``int | None``, ``Path`` for ``list[Path]``, ...: the type one value has."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar_type(args[0])
    if origin in (list, tuple) and args:
        return _scalar_type(args[0])
    return annotation


def _read_file(model: type[Settings], path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the config file must be a mapping of setting: value")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in model.model_fields:
            known = ", ".join(sorted(model.model_fields))
            raise SettingsError(f"{path}: unknown setting {raw_key!r}; known: {known}")
        if value is None:
            continue  # written but left empty: the default, as when not written at all
        if _scalar_type(model.model_fields[key].annotation) is Path:
            value = _relative_to(path.parent, value)
        out[key] = value
    return out


def _relative_to(folder: Path, value: Any) -> Any:
    """A path (or list of paths) of a config file, relative paths taken from the file's folder."""
    if isinstance(value, list):
        return [_relative_to(folder, v) for v in value]
    if not isinstance(value, str):
        return value  # the model says what is wrong with it
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _describe(model: type[Settings], exc: ValidationError, config_file: Path | None, given: set[str]) -> str:
    """The first problem, in one line: ``[file: ]setting value: what is wrong``.

    The file is named when the problem may lie in it: a setting it gave, or a rule between
    settings with some of them from the file.
    """
    err = exc.errors()[0]
    message = str(err["msg"]).removeprefix("Value error, ")
    loc = [str(part) for part in err["loc"]]
    name = loc[0] if loc else None
    prefix = f"{config_file}: " if config_file is not None and name not in given else ""
    if name is None:
        return prefix + message
    if err["type"] == "missing":
        return f"--{name.replace('_', '-')} is required (on the command line or in the config file)"
    if err["type"] in ("greater_than_equal", "less_than_equal") and name in model.model_fields:
        message = _range(model, name) or message
    return f"{prefix}{name} {err['input']!r}: {message}"


def _range(model: type[Settings], name: str) -> str | None:
    """``must be between 1 and 65535`` (or ``at least``, ``at most``) from the field's ``ge`` and ``le``."""
    bounds = {type(m).__name__: m for m in model.model_fields[name].metadata}
    low, high = getattr(bounds.get("Ge"), "ge", None), getattr(bounds.get("Le"), "le", None)
    if low is not None and high is not None:
        return f"must be between {low} and {high}"
    if low is not None:
        return f"must be at least {low}"
    return f"must be at most {high}" if high is not None else None
