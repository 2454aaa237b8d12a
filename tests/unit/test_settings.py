"""Every setting is documented once, with help text, and listed in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from polis.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_has_help_and_is_in_the_readme(name: str) -> None:
    field = Settings.model_fields[name]
    assert field.description and len(field.description) > 15
    assert f"POLIS_{name.upper()}" in README


def test_environment_variables_set_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLIS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POLIS_MAX_LIMIT", "50")
    settings = Settings()
    assert settings.data_dir == tmp_path and settings.max_limit == 50
    assert settings.database_path == tmp_path / "polis.duckdb"


def test_datasets_default_to_the_shared_folder() -> None:
    assert (Settings().datasets_dir / "traffic" / "los-loop" / "los_speed.csv").is_file()


def test_every_choice_setting_can_be_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment gives strings: POLIS_OD_WINDOW_HOURS=8 once failed every start (Literal[24, 8]).
    monkeypatch.setenv("POLIS_OD_WINDOW_HOURS", "8")
    monkeypatch.setenv("POLIS_FLOWS_UNIT", "station")
    settings = Settings()
    assert (settings.od_window_hours, settings.flows_unit) == (8, "station")
    monkeypatch.setenv("POLIS_OD_WINDOW_HOURS", "12")
    with pytest.raises(ValueError, match="24 or 8"):
        Settings()
