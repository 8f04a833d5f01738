"""PCM helpers shared by VAD, STT and TTS: sample format, sample rate and WAV files.

Why our own resampler: the three engines disagree on rates (espeak 22.05 kHz, silero and
pocketsphinx 16 kHz, WebRTC 48 kHz, playback 24 kHz) and `audioop.ratecv` is removed in
Python 3.13. This is a windowed-sinc (Kaiser) polyphase FIR in numpy: the kernel's cutoff
is just below the lower of the two Nyquist frequencies, so downsampling filters out what
would otherwise alias. The kernel is centred (no group delay) and `StreamResampler` keeps
enough history that chunked output equals one-shot output sample for sample.
"""

from __future__ import annotations

import io
import math
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]
PcmArray = npt.NDArray[np.int16] | npt.NDArray[np.float32]

_ZERO_CROSSINGS = 16  # kernel half-width, in zero crossings of the sinc: quality vs cost
_ROLLOFF = 0.92  # cutoff as a fraction of the lower Nyquist: room for the transition band
_KAISER_BETA = 8.6  # about 80 dB stopband
_BLOCK = 4096  # outputs computed per vectorised block: bounds temporary memory


def to_float32(pcm: Int16Array) -> Float32Array:
    """int16 PCM → float32 in [-1, 1), the format silero expects."""
    return (np.asarray(pcm, dtype=np.int16).astype(np.float32)) / np.float32(32768.0)


def to_int16(x: npt.NDArray[np.floating]) -> Int16Array:
    """float in [-1, 1] → int16 PCM, rounded and clipped (exact inverse of `to_float32`)."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


@lru_cache(maxsize=32)
def _plan(from_rate: int, to_rate: int) -> tuple[int, int, int, npt.NDArray[np.float64]]:
    """(up, down, half, bank): the reduced ratio and the polyphase bank, one row per phase."""
    g = math.gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    cutoff = min(1.0, up / down) * _ROLLOFF  # relative to the input Nyquist
    half = math.ceil(_ZERO_CROSSINGS / cutoff)
    taps = 2 * half
    # Output n sits at input position n*down/up = i0 + p/up; tap k reads x[i0 - half + 1 + k].
    offsets = np.arange(up)[:, None] / up + (half - 1) - np.arange(taps)[None, :]
    ratio = np.clip(offsets / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    bank = cutoff * np.sinc(cutoff * offsets) * window
    bank /= bank.sum(axis=1, keepdims=True)  # unity DC gain for every phase
    bank.setflags(write=False)
    return up, down, half, bank


class StreamResampler:
    """Resamples a chunked stream; concatenated output equals one-shot `resample` output.

    Each output sample needs `half` input samples after it, so output lags input by about
    1-2 ms (e.g. 23 samples at 22.05 kHz → 16 kHz); `flush()` releases the tail.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} → {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._up, self._down, self._half, self._bank = _plan(from_rate, to_rate)
        self._buf = np.zeros(self._half, dtype=np.float64)  # zeros before the stream start
        self._buf_start = -self._half  # input index of _buf[0]
        self._next = 0  # next output index
        self._int: bool | None = None  # int16 (True) or float32 (False), set by the first chunk
        self._flushed = False

    def push(self, chunk: PcmArray) -> PcmArray:
        """Feed the next chunk; return every output sample it completes (same dtype)."""
        if self._flushed:
            raise RuntimeError("the stream was flushed; create a new StreamResampler")
        samples = self._accept(chunk)
        if self.from_rate == self.to_rate:
            return self._cast(samples)
        self._buf = np.concatenate([self._buf, samples])
        available = self._buf_start + len(self._buf)  # input samples known (global count)
        return self._emit(available - 1 - self._half)

    def flush(self) -> PcmArray:
        """Finish the stream: return the remaining samples (input assumed silent after it)."""
        if self._flushed or self.from_rate == self.to_rate:
            self._flushed = True
            return self._cast(np.zeros(0))
        self._flushed = True
        consumed = self._buf_start + len(self._buf)
        total_out = -(-consumed * self._up // self._down)  # ceil
        self._buf = np.concatenate([self._buf, np.zeros(self._half + 1)])
        out = self._emit(self._buf_start + len(self._buf) - 1 - self._half)
        return out[: max(0, total_out - (self._next - len(out)))]

    def _accept(self, chunk: PcmArray) -> npt.NDArray[np.float64]:
        """Check shape and dtype (fixed by the first chunk); return the samples as float64."""
        arr = np.asarray(chunk)
        if arr.ndim != 1:
            raise ValueError(f"expected mono 1-D PCM, got shape {arr.shape}")
        if arr.dtype not in (np.int16, np.float32):
            raise TypeError(f"expected int16 or float32 PCM, got {arr.dtype}")
        is_int = arr.dtype == np.int16
        if self._int is None:
            self._int = is_int
        elif is_int != self._int:
            raise TypeError(f"the stream's chunks must all have one dtype, got {arr.dtype}")
        return arr.astype(np.float64)

    def _cast(self, out: npt.NDArray[np.float64]) -> PcmArray:
        if self._int is False:
            return out.astype(np.float32)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def _emit(self, last_center: int) -> PcmArray:
        """Compute outputs whose centre input index i0 is ≤ last_center; trim used history."""
        up, down, half = self._up, self._down, self._half
        end = ((last_center + 1) * up + down - 1) // down if last_center >= 0 else 0
        n = np.arange(self._next, max(self._next, end), dtype=np.int64)
        out = np.empty(len(n), dtype=np.float64)
        taps = np.arange(2 * half, dtype=np.int64)
        for lo in range(0, len(n), _BLOCK):
            nb = n[lo : lo + _BLOCK]
            pos = nb * down
            i0, phase = pos // up, pos % up
            idx = (i0 - half + 1 - self._buf_start)[:, None] + taps[None, :]
            out[lo : lo + _BLOCK] = np.einsum("ij,ij->i", self._buf[idx], self._bank[phase])
        self._next = max(self._next, end)
        keep_from = (self._next * down) // up - half + 1  # first input the next output needs
        drop = max(0, keep_from - self._buf_start)
        if drop:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return self._cast(out)


def resample(pcm: PcmArray, from_rate: int, to_rate: int) -> PcmArray:
    """Resample a whole mono signal (int16 or float32 in, same dtype out)."""
    stream = StreamResampler(from_rate, to_rate)
    head = stream.push(pcm)
    return np.concatenate([head, stream.flush()]) if from_rate != to_rate else head


def pcm_bytes(pcm: Int16Array | bytes) -> bytes:
    """Little-endian int16 bytes of a frame given as bytes or a 1-D int16 array."""
    if isinstance(pcm, bytes):
        return pcm
    arr = np.asarray(pcm)
    if arr.ndim != 1 or arr.dtype != np.int16:
        raise TypeError(f"expected 1-D int16 PCM, got {arr.dtype} {arr.shape}")
    return arr.astype("<i2").tobytes()


def wav_bytes(pcm: Int16Array, rate: int) -> bytes:
    """Mono 16-bit WAV file contents, for tests, benchmarks and debugging dumps."""
    data = np.asarray(pcm)
    if data.dtype != np.int16:
        raise TypeError(f"WAV export expects int16 PCM, got {data.dtype}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())
    return buf.getvalue()


def read_wav(source: str | Path | bytes) -> tuple[int, Int16Array]:
    """(rate, int16 mono samples) from a 16-bit PCM WAV; multi-channel input is averaged."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with stream, wave.open(stream, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"only 16-bit PCM WAV is supported, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        mixed = frames.reshape(-1, channels).astype(np.int32).mean(axis=1)
        frames = np.rint(mixed).astype(np.int16)
    return rate, frames
