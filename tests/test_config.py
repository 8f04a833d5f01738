"""config.yaml: embedded defaults, clear errors, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config import ConfigError, Settings, apply_env, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_equals_the_embedded_defaults() -> None:
    shipped = load_settings(ROOT / "config.yaml")
    defaults = Settings()
    assert shipped.server == defaults.server
    assert shipped.voice == defaults.voice
    assert shipped.speech == defaults.speech
    assert [Path(c).resolve() for c in shipped.charts] == [Path(c).resolve()
                                                           for c in defaults.charts]


@pytest.mark.parametrize(("text", "fragment"), [
    ("server: {port: 99999}", "server.port"),
    ("server: {hots: x}", "server.hots"),
    ("speech: {tts_wpm: 5}", "speech.tts_wpm"),
    ("responder: {kind: openai}", "base_url"),
    ("log: {level: LOUD}", "log.level"),
    ("- a list", "mapping"),
    ("server: [", "invalid YAML"),
])
def test_bad_config_says_what_and_where(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server: {port: 6000}\n")
    settings = apply_env(load_settings(path), {"TURNCHART_PORT": "7000",
                                               "TURNCHART_LOG_LEVEL": "DEBUG"})
    assert settings.server.port == 7000
    assert settings.log.level == "DEBUG"
    with pytest.raises(ConfigError, match=r"server\.port"):
        apply_env(settings, {"TURNCHART_PORT": "lots"})


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("charts: [my.yaml]\nresponder: {knowledge_path: facts.yaml}\n")
    settings = load_settings(path)
    assert settings.charts == [str(tmp_path / "my.yaml")]
    assert settings.responder.knowledge_path == str(tmp_path / "facts.yaml")
