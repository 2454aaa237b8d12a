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
