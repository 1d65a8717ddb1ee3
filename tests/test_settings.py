"""Settings of the node and the audit: one YAML file, the command line on top, one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rtcheck.audit.run import AuditSettings, add_audit_arguments
from rtcheck.errors import ExitCode
from rtcheck.node.config import add_serve_arguments, load_settings
from rtcheck.settings import SettingsError


def _serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def _audit(*argv: str) -> AuditSettings:
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    args = parser.parse_args(argv)
    return AuditSettings.from_args(args, args.config)


def test_yaml_numbers_are_taken_and_booleans_refused(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("storage: s\nreports: r\nworkers: 4\nquiet_period: 0.5\n")
    settings = load_settings(_serve("--config", str(config)))
    assert settings.workers == 4 and settings.quiet_period == 0.5
    config.write_text("storage: s\nreports: r\nworkers: yes\n")  # YAML's yes is True, not a count
    with pytest.raises(SettingsError, match=rf"^{config}: workers True: expected a number$"):
        load_settings(_serve("--config", str(config)))


def test_a_problem_names_the_file_only_when_the_file_gave_the_value(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("storage: s\nreports: r\nworkers: 65\n")
    with pytest.raises(SettingsError, match=rf"^{config}: workers 65: must be between 1 and 64$"):
        load_settings(_serve("--config", str(config)))
    with pytest.raises(SettingsError, match=r"^workers 0: must be between 1 and 64$"):
        load_settings(_serve("--config", str(config), "--workers", "0"))


def test_a_setting_left_empty_in_the_file_keeps_its_default(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("storage: s\nreports: r\nprotocol:\nport:\n")
    settings = load_settings(_serve("--config", str(config)))
    assert settings.protocol is None and settings.port == 11112


def test_required_settings_say_where_they_may_come_from() -> None:
    with pytest.raises(SettingsError, match=r"^--storage is required \(on the command line or in the config file\)$"):
        load_settings(_serve("--reports", "r"))


def test_settings_errors_end_the_command_as_usage_errors() -> None:
    assert SettingsError("x").exit_code == ExitCode.USAGE_ERROR


def test_audit_settings_from_a_file_and_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text(
        "roots: [submissions]\nout: results\ncentre-level: 2\njobs: 3\nheadline_rules: [dose.*, geometry.peak*]\n"
    )
    settings = _audit("--config", str(config))
    assert settings.roots == [tmp_path / "submissions"] and settings.out == tmp_path / "results"
    assert settings.centre_level == 2 and settings.jobs == 3
    assert settings.headline_rules == ["dose.*", "geometry.peak*"]

    given = _audit("--config", str(config), "elsewhere", "-j", "1", "--headline-rules", "plan.*, dose.pvdr")
    assert given.roots == [Path("elsewhere")] and given.jobs == 1  # the command line wins
    assert given.headline_rules == ["plan.*", "dose.pvdr"] and given.out == tmp_path / "results"


def test_audit_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^jobs 0: must be at least 1$"):
        _audit("sub", "--out", "o", "-j", "0")
    with pytest.raises(SettingsError, match=r"^centre_level 0: must be at least 1$"):
        _audit("sub", "--out", "o", "--centre-level", "0")
    with pytest.raises(SettingsError, match="no submission folder"):
        _audit("--out", "o")
    config = tmp_path / "audit.yaml"
    config.write_text("roots: [s]\nout: o\ncenter_level: 1\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'center_level'; known: .*centre_level"):
        _audit("--config", str(config))
