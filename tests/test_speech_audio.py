"""PCM helpers: sample format, resampling (frequency, amplitude, no aliasing), WAV files."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from adapters.speech.audio import (
    StreamResampler,
    read_wav,
    resample,
    to_float32,
    to_int16,
    wav_bytes,
)
from adapters.speech.samples import noise, tone

RATE_PAIRS = [(22050, 16000), (48000, 16000), (16000, 48000), (22050, 24000), (24000, 16000)]


def fit_sine(x: npt.NDArray[np.generic], hz: float, rate: int) -> tuple[float, float]:
    """(amplitude, residual rms) of the best sine at `hz`: a small residual means the
    signal is that frequency and nothing else."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], axis=1)
    y = x.astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(residual**2)))


def dominant_hz(x: npt.NDArray[np.generic], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def rms(x: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_int16_float32_round_trip_is_exact_and_in_range() -> None:
    pcm = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    x = to_float32(pcm)
    assert x.dtype == np.float32
    assert x.min() == -1.0 and x.max() < 1.0
    assert np.array_equal(to_int16(x), pcm)


def test_to_int16_clips_instead_of_wrapping() -> None:
    out = to_int16(np.array([-2.0, 1.5, 0.5], dtype=np.float32))
    assert out.tolist() == [-32768, 32767, 16384]


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_a_sine_keeps_its_frequency_and_amplitude(from_rate: int, to_rate: int, dtype: str) -> None:
    x = tone(1000, 1000, amplitude=10000, rate=from_rate)
    signal = x if dtype == "int16" else to_float32(x)
    y = resample(signal, from_rate, to_rate)
    assert y.dtype == signal.dtype
    assert len(y) == to_rate  # one second in, one second out
    pcm = y if dtype == "int16" else to_int16(np.asarray(y, dtype=np.float32))
    body = pcm[200:-200]  # away from the edges
    assert dominant_hz(body, to_rate) == pytest.approx(1000, abs=2)
    amplitude, residual = fit_sine(body, 1000, to_rate)
    assert amplitude == pytest.approx(10000, rel=0.005)
    assert residual < 10  # below -60 dB: nothing but the tone


@pytest.mark.parametrize(("from_rate", "to_rate", "hz"), [
    (24000, 16000, 10000),  # would alias to 6 kHz
    (48000, 16000, 9000),  # would alias to 7 kHz
    (22050, 16000, 9500),  # would alias to 6.5 kHz
])
def test_downsampling_removes_a_tone_above_the_new_nyquist(from_rate: int, to_rate: int,
                                                           hz: int) -> None:
    x = tone(hz, 1000, amplitude=10000, rate=from_rate)
    y = resample(x, from_rate, to_rate)[200:-200]
    assert rms(y) < 0.001 * rms(x)  # at least 60 dB down: no alias spike
    # Without a low-pass the same tone folds back at full strength (the test can fail).
    naive = x[np.arange(0, len(x), from_rate / to_rate).astype(int)]
    alias = to_rate - hz
    assert dominant_hz(naive, to_rate) == pytest.approx(alias, abs=3)
    assert rms(naive) > 0.5 * rms(x)


def test_speech_band_is_flat_after_downsampling_to_16k() -> None:
    for hz in (200, 1000, 3000, 5000):
        y = resample(tone(hz, 1000, rate=48000), 48000, 16000)[200:-200]
        assert fit_sine(y, hz, 16000)[0] == pytest.approx(10000, rel=0.01), hz


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
def test_chunked_stream_equals_one_shot(from_rate: int, to_rate: int) -> None:
    x = noise(700, sigma=3000, rate=from_rate, seed=3)
    one_shot = resample(x, from_rate, to_rate)
    stream = StreamResampler(from_rate, to_rate)
    rng = np.random.default_rng(7)
    parts, at = [], 0
    while at < len(x):
        n = int(rng.integers(1, 1500))
        parts.append(stream.push(x[at : at + n]))
        at += n
    parts.append(stream.flush())
    chunked = np.concatenate(parts)
    assert chunked.dtype == np.int16
    assert len(chunked) == -(-len(x) * to_rate // from_rate)
    assert np.array_equal(chunked, one_shot)


def test_same_rate_is_a_copy() -> None:
    x = tone(440, 100)
    y = resample(x, 16000, 16000)
    assert np.array_equal(x, y) and y is not x


def test_stream_rejects_bad_input() -> None:
    stream = StreamResampler(22050, 16000)
    with pytest.raises(ValueError, match="mono"):
        stream.push(np.zeros((10, 2), dtype=np.int16))
    with pytest.raises(TypeError, match="int16 or float32"):
        stream.push(np.zeros(10, dtype=np.float64))  # type: ignore[arg-type]
    stream.push(np.zeros(10, dtype=np.int16))
    with pytest.raises(TypeError, match="one dtype"):
        stream.push(np.zeros(10, dtype=np.float32))
    stream.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)


def test_wav_round_trip_through_bytes_and_files(tmp_path: Path) -> None:
    pcm = noise(250, sigma=5000, rate=22050, seed=1)
    data = wav_bytes(pcm, 22050)
    assert data[:4] == b"RIFF"
    rate, back = read_wav(data)
    assert rate == 22050 and back.dtype == np.int16 and np.array_equal(back, pcm)
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    assert read_wav(path)[0] == 22050 and np.array_equal(read_wav(str(path))[1], pcm)


def test_read_wav_mixes_stereo_down_and_rejects_8_bit() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.array([100, 300, -50, -150], dtype="<i2").tobytes())
    assert read_wav(buf.getvalue())[1].tolist() == [200, -100]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80\x80")
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(buf.getvalue())
    with pytest.raises(TypeError, match="int16"):
        wav_bytes(np.zeros(4, dtype=np.float32), 8000)
