"""`config.yaml`: what `turnchart serve` runs with. Every key has an embedded default,
so the server starts with no config file at all (in-memory bus, offline speech)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.responder.settings import ResponderSettings
from adapters.speech.models import SpeechSettings

DEFAULT_CHART = Path(__file__).resolve().parent.parent / "charts" / "voice_turn.yaml"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(5204, ge=1, le=65535)
    # Admin endpoints (POST /charts/{name}/reload, ...) are off unless a token is set
    # (or TURNCHART_ADMIN_TOKEN); clients send it as `Authorization: Bearer <token>`.
    admin_token: str | None = Field(None, min_length=16)
    watch_charts: bool = True                  # reload a chart when its file changes


class LimitsSettings(BaseModel):
    """Input limits of the HTTP and WebSocket side (hardening)."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_ws_message_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    offers_per_minute: int = Field(30, ge=1, le=100_000)   # per client address


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class VoiceSettings(BaseModel):
    """The live audio side (FastRTC)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    chart: str = "voice_turn"                 # which loaded chart live sessions run
    concurrency_limit: int = Field(50, ge=1, le=10_000)
    false_interruption_ms: float = Field(0.0, ge=0, le=5_000)   # 0 = off
    output_rate: int = Field(24_000, ge=8_000, le=48_000)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: ServerSettings = ServerSettings()
    charts: list[str] = Field(default_factory=lambda: [str(DEFAULT_CHART)])
    bus: str = "memory"
    speech: SpeechSettings = SpeechSettings()
    responder: ResponderSettings = ResponderSettings()
    log: LogSettings = LogSettings()
    voice: VoiceSettings = VoiceSettings()
    limits: LimitsSettings = LimitsSettings()


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


def load_settings(path: str | Path | None) -> Settings:
    """Read `path` (chart paths resolved against its folder); None → embedded defaults."""
    if path is None:
        return Settings()
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the config must be a mapping")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{p}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    settings.charts = [str((p.parent / c).resolve()) if not Path(c).is_absolute() else c
                       for c in settings.charts]
    knowledge = settings.responder.knowledge_path
    if knowledge and not Path(knowledge).is_absolute():
        settings.responder = settings.responder.model_copy(
            update={"knowledge_path": str((p.parent / knowledge).resolve())})
    return settings


ENV_OVERRIDES = {
    "TURNCHART_HOST": ("server", "host"),
    "TURNCHART_PORT": ("server", "port"),
    "TURNCHART_LOG_LEVEL": ("log", "level"),
    "TURNCHART_BUS": (None, "bus"),
    "TURNCHART_ADMIN_TOKEN": ("server", "admin_token"),
}


def apply_env(settings: Settings, environ: dict[str, str]) -> Settings:
    """`TURNCHART_HOST`, `TURNCHART_PORT`, `TURNCHART_LOG_LEVEL`, `TURNCHART_BUS` win over
    the file (CLI flags win over both); a bad value is a ConfigError naming the variable."""
    data = settings.model_dump()
    for variable, (section, key) in ENV_OVERRIDES.items():
        if variable in environ:
            (data[section] if section else data)[key] = environ[variable]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"environment override for {where}: {first['msg']}") from None
