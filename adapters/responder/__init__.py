"""Answers to what the user said: intent and retrieval side by side, then the reply.

`BuiltinResponder` is offline and rule based; `OpenAICompatibleResponder`
streams from any chat-completions server. Both implement
`engine.runtime.ports.Responder`; `build_responder` picks one from settings.
"""

from adapters.responder.builtin import BuiltinResponder
from adapters.responder.errors import KnowledgeError, ResponderConfigError, ResponderError
from adapters.responder.intents import IntentResult, detect_intent, grammar_phrases
from adapters.responder.knowledge import Hit, Knowledge
from adapters.responder.openai_http import OpenAICompatibleResponder
from adapters.responder.settings import ResponderSettings, build_responder

__all__ = [
    "BuiltinResponder",
    "Hit",
    "IntentResult",
    "Knowledge",
    "KnowledgeError",
    "OpenAICompatibleResponder",
    "ResponderConfigError",
    "ResponderError",
    "ResponderSettings",
    "build_responder",
    "detect_intent",
    "grammar_phrases",
]
