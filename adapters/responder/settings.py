"""The `responder:` settings block and the one place a `Responder` is built from it.

Mistakes are caught when the server starts, not at the first question: an
`openai` responder without a URL or model is a validation error, and a named
key variable that is unset fails `build_responder`. The key itself never
appears in settings, only the name of the environment variable holding it.
A broken knowledge file is reported but does not stop the server: the
assistant still answers its intents.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.responder.errors import KnowledgeError, ResponderConfigError
from adapters.responder.flow import BuiltinFlowResponder
from adapters.responder.knowledge import DEFAULT_KNOWLEDGE, Knowledge
from adapters.responder.openai_http import DEFAULT_SYSTEM_PROMPT, OpenAICompatibleResponder
from adapters.responder.timeofday import local_now
from adapters.responder.understanding import knowledge_retriever, rule_detector
from engine.runtime.ports import Responder

logger = logging.getLogger("turnchart.responder")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ResponderSettings(BaseModel):
    """How the assistant thinks of its answers: offline rules or an HTTP LLM."""

    # hide_input_in_errors: a key pasted into api_key_env must not be echoed back.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    kind: Literal["builtin", "openai"] = "builtin"
    knowledge_path: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=600)
    system_prompt: str | None = None

    @field_validator("api_key_env")
    @classmethod
    def _is_a_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("api_key_env is the NAME of an environment variable holding the "
                             "key (like OPENAI_API_KEY), not the key itself")
        return value

    @model_validator(mode="after")
    def _openai_is_complete(self) -> ResponderSettings:
        problems = openai_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def openai_problems(settings: ResponderSettings) -> list[str]:
    """What an `openai` responder is missing; empty for `builtin` or a complete block."""
    if settings.kind != "openai":
        return []
    return [f"kind 'openai' needs {name} ({example})" for name, example in (
        ("base_url", "e.g. http://127.0.0.1:8000/v1"), ("model", "the served model's name"))
        if not getattr(settings, name)]


def build_responder(settings: ResponderSettings, *, environ: Mapping[str, str] | None = None,
                    on_problem: Callable[[str], None] | None = None,
                    clock_now: Callable[[], datetime] = local_now) -> Responder:
    """The configured responder; `ResponderConfigError` says what to fix when it cannot be."""
    problems = openai_problems(settings)
    if problems:
        raise ResponderConfigError("responder: " + "; ".join(problems))
    knowledge = load_knowledge(settings.knowledge_path, on_problem or logger.error)
    if settings.kind == "builtin":   # converses in a chart's dialogue states too
        return BuiltinFlowResponder(knowledge, clock_now)
    assert settings.base_url is not None and settings.model is not None  # openai_problems
    return OpenAICompatibleResponder(
        settings.base_url, settings.model,
        api_key=_api_key(settings.api_key_env, os.environ if environ is None else environ),
        timeout_s=settings.timeout_s,
        system_prompt=settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
        detect=rule_detector(), retrieve=knowledge_retriever(knowledge), clock_now=clock_now)


def load_knowledge(path: str | Path | None, on_problem: Callable[[str], None]) -> Knowledge:
    """The knowledge at `path` (shipped default when None); empty after reporting a problem."""
    source = Path(path) if path is not None else DEFAULT_KNOWLEDGE
    try:
        return Knowledge.load(source)
    except KnowledgeError as exc:
        on_problem(f"responder knowledge not loaded, answering without it:\n{exc}")
        return Knowledge([], source=str(source))


def _api_key(name: str | None, environ: Mapping[str, str]) -> str | None:
    if name is None:
        return None
    key = environ.get(name, "").strip()
    if not key:
        raise ResponderConfigError(f"responder: api_key_env names ${name}, but that "
                                   f"environment variable is not set or is empty")
    return key
