"""The audio handler hands each WebRTC frame to the speech detector as soon as it
arrives (adapters/fastrtc/handler.py `resample`): FastRTC's own resampler held 48 kHz
20 ms frames until 60 ms of 16 kHz audio had gathered, so speech onsets (barge-in) and
ends were decided up to 40 ms late."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from av import AudioFrame
from fastrtc.tracks import StreamHandlerBase

from adapters.fastrtc.handler import TurnStreamHandler


def webrtc_frames(n: int) -> list[AudioFrame]:
    """n 20 ms frames of a 440 Hz tone at 48 kHz, as aiortc decodes them."""
    t = np.arange(960 * n) / 48_000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frames = []
    for i in range(n):
        frame = AudioFrame.from_ndarray(pcm[None, 960 * i:960 * (i + 1)], format="s16",
                                        layout="mono")
        frame.sample_rate, frame.pts = 48_000, 960 * i
        frames.append(frame)
    return frames


def samples_out(resample: Any, frames: list[AudioFrame]) -> list[int]:
    return [sum(out.samples for out in resample(frame)) for frame in frames]


def test_every_20_ms_frame_reaches_the_detector_at_once() -> None:
    handler = TurnStreamHandler(cast(Any, None))
    out = samples_out(handler.resample, webrtc_frames(6))
    assert all(n > 0 for n in out), out
    assert out[1:] == [320] * 5   # 20 ms at 16 kHz each (the first one less the filter delay)
    pcm = np.concatenate([o.to_ndarray().reshape(-1)
                          for f in webrtc_frames(3) for o in handler.resample(f)])
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 4000   # the tone, not silence


def test_fastrtc_alone_would_hold_them_to_60_ms() -> None:
    handler = TurnStreamHandler(cast(Any, None))
    out = samples_out(lambda f: StreamHandlerBase.resample(handler, f), webrtc_frames(6))
    assert out[:3] == [0, 0, 0] and 960 in out, out
