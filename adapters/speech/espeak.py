"""The process's one espeak-ng library, bound with ctypes (espeakng-loader ships no Python API).

Why one object guards everything: espeak keeps a single global voice, callback and
parameter set, and two threads inside `espeak_Synth` at once segfault the process. So the
library is initialised once (`EspeakEngine.shared()`), every call runs under one lock, and
async callers go through its one worker thread. It runs in SYNCHRONOUS mode, where the
audio callback fires on the synthesising thread: a 10-word sentence takes about 5 ms and
the first 60 ms chunk arrives after about 0.3 ms. Loading takes 5-35 ms and about 14 MB.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from adapters.speech.errors import SpeechConfigError
from adapters.speech.process_wide import ProcessWide

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path calls exit(1) in the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0
MIN_WPM, MAX_WPM = 80, 450


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

Sink = Callable[[npt.NDArray[np.int16]], bool]
"""Receives each chunk of int16 PCM as espeak makes it; returns False to stop synthesis."""


class EspeakEngine(ProcessWide):
    """espeak-ng, loaded once per process; `synthesize` is blocking and serialised."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise SpeechConfigError("TTS needs the 'espeakng-loader' package") from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        data_path = os.fsencode(espeakng_loader.get_data_path())
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise SpeechConfigError(f"espeak-ng failed to initialise with data at {data_path!r}")
        self._lib = lib
        self.sample_rate: int = rate
        self._lock = threading.Lock()
        self._sink: Sink | None = None
        self._sink_error: BaseException | None = None
        self._callback = _SynthCallback(self._on_audio)  # keep referenced: C holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self._wpm: int | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self.configure("en-us", 175)  # synthesis with no voice set returns junk

    def configure(self, voice: str, wpm: int) -> None:
        """Select voice and speed (global in espeak); raises SpeechConfigError if unknown."""
        with self._lock:
            self._configure(voice, wpm)

    def synthesize(self, text: str, voice: str, wpm: int, sink: Sink) -> None:
        """Speak `text`, handing chunks to `sink` on this thread; returns when done."""
        with self._lock:
            self._configure(voice, wpm)
            self._sink, self._sink_error = sink, None
            try:
                buf = ctypes.create_string_buffer(text.encode("utf-8"))
                err = self._lib.espeak_Synth(
                    buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                self._lib.espeak_Synchronize()
                error = self._sink_error
            finally:
                self._sink, self._sink_error = None, None
        if error is not None:
            raise error
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with code {err}")

    def _configure(self, voice: str, wpm: int) -> None:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
                self._voice = None
                raise SpeechConfigError(f"espeak-ng has no voice named {voice!r}")
            self._voice, self._wpm = voice, None  # a new voice resets the rate
        if wpm != self._wpm:
            if not MIN_WPM <= wpm <= MAX_WPM:
                raise SpeechConfigError(f"tts_wpm must be {MIN_WPM}..{MAX_WPM}, got {wpm}")
            self._lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
            self._wpm = wpm

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n: int, events: object) -> int:
        """ctypes callback: never raise here (it would be printed and lost); abort with 1."""
        sink = self._sink
        if sink is None or not wav or n <= 0:
            return 0
        try:
            pcm = np.ctypeslib.as_array(wav, shape=(n,)).astype(np.int16, copy=True)
            return 0 if sink(pcm) else 1
        except BaseException as exc:  # re-raised by synthesize() on the caller's thread
            self._sink_error = exc
            return 1
