"""Settings: every field documented, secrets refused outside dev."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from photoembed.config import Settings

REPO = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - listed == set()


def test_env_example_loads_as_settings():
    settings = Settings(_env_file=REPO / ".env.example")  # type: ignore[call-arg]
    assert settings.clip_model_name == "ViT-B-32"
    assert settings.clip_pretrained == "openai"
    assert settings.reference_dir == settings.clip_cache_dir / "references"


def test_api_refuses_placeholder_or_missing_keys_outside_dev():
    with pytest.raises(ValueError, match="API_KEYS"):
        Settings(env="production", api_keys=["change-me"]).check_api_keys()
    with pytest.raises(ValueError, match="API_KEYS"):
        Settings(env="production", api_keys=[]).check_api_keys()
    Settings(env="dev", api_keys=[]).check_api_keys()
    Settings(env="production", api_keys=["k1"]).check_api_keys()


def test_api_keys_are_read_as_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("API_KEYS", "one, two,,three")
    assert Settings().api_keys == ["one", "two", "three"]


def test_readme_configuration_table_is_the_generated_one():
    from photoembed.config import settings_table

    page = (REPO / "docs" / "configuration.md").read_text()
    start = page.index("<!-- settings-table -->\n") + len("<!-- settings-table -->\n")
    end = page.index("\n<!-- /settings-table -->")
    assert page[start:end] == settings_table(), (
        "run `photoembed settings` and paste it into docs/configuration.md"
    )
