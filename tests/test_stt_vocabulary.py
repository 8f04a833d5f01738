"""Whisper's domain vocabulary comes from what the server knows: the responder's knowledge
questions and the deployer's `speech.stt_vocabulary` (adapters/server/voice_factory)."""

from __future__ import annotations

from pathlib import Path

from adapters.config import Settings
from adapters.responder.knowledge import Knowledge
from adapters.server.voice_factory import stt_vocabulary
from adapters.speech.models import SpeechModels, SpeechSettings
from adapters.speech.whisper import WhisperSTT

KNOWLEDGE = """\
- id: flux
  question: What is a flux capacitor?
  keywords: [flux]
  answer: It makes time travel possible.
- id: flux-again
  question: What is a flux capacitor?
  answer: The same question twice is shown once.
"""


def _settings(tmp_path: Path, **speech: object) -> Settings:
    path = tmp_path / "knowledge.yaml"
    path.write_text(KNOWLEDGE, encoding="utf-8")
    return Settings.model_validate({"responder": {"knowledge_path": str(path)},
                                    "speech": speech})


def test_the_vocabulary_is_the_responders_questions_then_the_setting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, stt_vocabulary=["Zorblax", "DeLorean"])
    assert stt_vocabulary(settings) == ["What is a flux capacitor?", "Zorblax", "DeLorean"]


def test_the_responders_questions_can_be_left_out(tmp_path: Path) -> None:
    settings = _settings(tmp_path, stt_vocabulary=["Zorblax"],
                         stt_vocabulary_from_responder=False)
    assert stt_vocabulary(settings) == ["Zorblax"]
    assert stt_vocabulary(Settings()) == Knowledge.default().questions()   # shipped default
    assert "What is a statechart?" in Knowledge.default().questions()


def test_a_broken_knowledge_file_gives_only_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("- id: [\n", encoding="utf-8")
    settings = Settings.model_validate({"responder": {"knowledge_path": str(path)},
                                        "speech": {"stt_vocabulary": ["Zorblax"]}})
    assert stt_vocabulary(settings) == ["Zorblax"]


def test_the_loaded_whisper_gets_the_vocabulary() -> None:
    models = SpeechModels.load(SpeechSettings(), [], ["What is a statechart?", "Zorblax"])
    try:
        assert isinstance(models.stt, WhisperSTT)
        assert models.stt.vocabulary.text == "What is a statechart? Zorblax"
        assert models.stt.vocabulary.key_words == {"statechart", "zorblax"}
    finally:
        models.close()
