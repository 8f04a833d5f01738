"""`config.yaml`: what `turnchart serve` runs with. Every key has an embedded default,
so the server starts with no config file at all (in-memory bus, offline speech)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.responder.settings import ResponderSettings
from adapters.speech.models import SpeechSettings

DEFAULT_CHART = Path(__file__).resolve().parent.parent / "charts" / "voice_turn.yaml"
BUS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
"""`bus:` is `memory` or a Redis URL with one of these schemes (see docs/redis.md)."""


def bus_problem(bus: str) -> str | None:
    """Why `bus` names no bus turnchart has (None when it is usable). Only the scheme is
    quoted: the rest of a URL may hold a password."""
    if bus == "memory":
        return None
    scheme, sep, rest = bus.partition("://")
    if not sep:
        return (f"{bus!r} is not a bus: write memory, or a Redis URL such as "
                "redis://127.0.0.1:6379/0")
    if scheme.lower() not in BUS_SCHEMES:
        return (f"unknown bus URL scheme {scheme + '://'!r}: write memory, or a Redis URL ("
                + ", ".join(s + "://" for s in BUS_SCHEMES) + ")")
    if not rest:
        return f"{scheme}:// names no Redis server (write {scheme}://host:port)"
    return None


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(5204, ge=1, le=65535)
    # Admin endpoints (POST /charts/{name}/reload, ...) are off unless a token is set
    # (or TURNCHART_ADMIN_TOKEN); clients send it as `Authorization: Bearer <token>`.
    admin_token: str | None = Field(None, min_length=16)
    watch_charts: bool = True                  # reload a chart when its file changes
    # Web pages from these origins (scheme://host[:port]) may open calls and POST, besides
    # the server's own pages (adapters/server/origin.py); TURNCHART_ALLOWED_ORIGINS: a, b.
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        from adapters.server.origin import normalise_origin
        for origin in value:
            if normalise_origin(origin) is None:
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], "
                                 "e.g. https://app.example.com, with no path")
        return value


class LimitsSettings(BaseModel):
    """Input limits of the HTTP and WebSocket side (hardening)."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_ws_message_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    offers_per_minute: int = Field(30, ge=1, le=100_000)   # per client address


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class OtelSettings(BaseModel):
    """OpenTelemetry export of sessions, turns and activities (adapters/telemetry.py)."""

    model_config = ConfigDict(extra="forbid")
    # None: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
    enabled: bool | None = None
    service_name: str = "turnchart"
    endpoint: str | None = None     # the OTLP/HTTP traces URL; None: the OTEL_* variables'


DEFAULT_BACKCHANNELS = ("uh-huh", "mm-hmm", "mm-hm", "mhm", "mhmm", "mm", "hmm", "yeah", "yep",
                        "yes", "okay", "ok", "right", "sure", "i see", "got it", "uh", "um")
"""What a listener says to mean "go on" (`voice.backchannels`)."""
BACKCHANNEL_MAX_MS = 1200.0   # speech over the answer this long barges in, words unread
BACKCHANNEL_END_MS = 200.0    # silence that ends a possible backchannel


class VoiceSettings(BaseModel):
    """The live audio side (FastRTC)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    chart: str = "voice_turn"                 # which loaded chart live sessions run
    concurrency_limit: int = Field(50, ge=1, le=10_000)
    false_interruption_ms: float = Field(0.0, ge=0, le=5_000)   # 0 = off
    # speech over a streaming answer pauses it; when the words are only these (normalised:
    # lower case, punctuation and hyphens stripped) the answer resumes, else it is a
    # barge-in (docs/design.md, "Backchannels"); [] = off: every such speech barges in
    backchannels: list[str] = Field(default_factory=lambda: list(DEFAULT_BACKCHANNELS))
    backchannel_max_ms: float = Field(BACKCHANNEL_MAX_MS, ge=0, le=5_000)
    backchannel_end_ms: float = Field(BACKCHANNEL_END_MS, ge=20, le=2_000)
    # how a state whose turn policy leaves `end` unset ends the caller's turn
    # (docs/chart-format.md, "Turn policy"): the words heard and Smart Turn together
    end_of_turn: Literal["silence", "smart", "hybrid"] = "hybrid"
    output_rate: int = Field(24_000, ge=8_000, le=48_000)


class TelephoneSettings(BaseModel):
    """The phone routes (/telephone/*, README "The phone"): who may use them."""

    model_config = ConfigDict(extra="forbid")
    # The NAME of the variable holding the Twilio auth token. When it has a value, every
    # request to /telephone/* must carry a valid X-Twilio-Signature (403 otherwise);
    # without it the routes are open and counted like other calls (limits.offers_per_minute).
    auth_token_env: str = Field("TWILIO_AUTH_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The public base URL Twilio calls (https://voice.example.com) when a proxy sits in
    # front: signatures are checked against it, and the TwiML's stream URL is built on it.
    public_url: str | None = Field(None, pattern=r"^https?://[^/?#\s]+$")


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
    otel: OtelSettings = OtelSettings()
    telephone: TelephoneSettings = TelephoneSettings()
    # Your own guards, effects and activities: `package.module:factory` returning an
    # engine.chart.registry.Registry (as `--registry`); TURNCHART_REGISTRY overrides it.
    registry: str | None = None

    @field_validator("bus")
    @classmethod
    def _bus(cls, value: str) -> str:
        problem = bus_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


def load_settings(path: str | Path | None) -> Settings:
    """Read `path` (chart paths resolved against its folder); None → embedded defaults."""
    if path is None:
        return Settings()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc.reason}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(p, exc)) from None
    except RecursionError:
        raise ConfigError(f"{p}: invalid YAML: the document nests too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{_at(p, root, ())}: the config must be a mapping")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{_at(p, root, e['loc'])}: {'.'.join(str(x) for x in e['loc'])}: "
                 f"{_message(e['msg'])}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    settings.charts = [str((p.parent / c).resolve()) if not Path(c).is_absolute() else c
                       for c in settings.charts]
    knowledge = settings.responder.knowledge_path
    if knowledge and not Path(knowledge).is_absolute():
        settings.responder = settings.responder.model_copy(
            update={"knowledge_path": str((p.parent / knowledge).resolve())})
    return settings


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """`PATH:LINE:COL: invalid YAML: …` at YAML's own position, as charts report it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        message = (exc.problem or "invalid YAML").strip()
        start = exc.context_mark
        if exc.context and start is not None and mark is not None and start.line != mark.line:
            message += (f" ({exc.context.strip()} that started at line {start.line + 1}, "
                        f"column {start.column + 1})")
        elif exc.context:
            message += f" ({exc.context.strip()})"
        return f"{where}: invalid YAML: {message}"
    return f"{path}: invalid YAML: {exc}"


def _message(msg: str) -> str:
    """pydantic's message without its `Value error, ` prefix (our validators' own words)."""
    return msg.removeprefix("Value error, ")


def _at(path: Path, root: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    """`PATH:LINE:COL` of the deepest node of `loc` the file has (`PATH` alone if none)."""
    node, found = root, root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                and key < len(node.value):
            node = node.value[key]
        else:
            node = None
        if node is None:
            break
        found = node
    if found is None:
        return str(path)
    return f"{path}:{found.start_mark.line + 1}:{found.start_mark.column + 1}"


ENV_OVERRIDES = {
    "TURNCHART_HOST": ("server", "host"),
    "TURNCHART_PORT": ("server", "port"),
    "TURNCHART_LOG_LEVEL": ("log", "level"),
    "TURNCHART_BUS": (None, "bus"),
    "TURNCHART_ADMIN_TOKEN": ("server", "admin_token"),
    "TURNCHART_ALLOWED_ORIGINS": ("server", "allowed_origins"),   # comma-separated
    "TURNCHART_REGISTRY": (None, "registry"),
}


def apply_env(settings: Settings, environ: dict[str, str]) -> Settings:
    """`TURNCHART_HOST`, `TURNCHART_PORT`, `TURNCHART_LOG_LEVEL`, `TURNCHART_BUS` win over
    the file (CLI flags win over both); a bad value is a ConfigError naming the variable."""
    data = settings.model_dump()
    for variable, (section, key) in ENV_OVERRIDES.items():
        if variable in environ:
            value: str | list[str] = environ[variable]
            if key == "allowed_origins":
                value = [o.strip() for o in environ[variable].split(",") if o.strip()]
            (data[section] if section else data)[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        named = [v for v, (section, key) in ENV_OVERRIDES.items() if v in environ
                 and ".".join(x for x in (section, key) if x) == where]
        who = f"{named[0]} ({where})" if named else f"environment override for {where}"
        raise ConfigError(f"{who}: {_message(first['msg'])}") from None
