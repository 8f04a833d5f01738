"""Errors raised while loading speech models, so start-up fails with a sentence, not a trace."""

from __future__ import annotations


class SpeechConfigError(Exception):
    """A speech backend that cannot be loaded as configured; the message says what to fix."""
