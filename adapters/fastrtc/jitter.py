"""The server's receive-side jitter buffer for audio: one packet, not aiortc's four.

aiortc gives every incoming audio track `JitterBuffer(capacity=16, prefetch=4)`: a frame
leaves it only once four later packets have arrived, so everything the caller says
reaches the VAD, STT and the barge-in detector 80 ms late (a 20 ms packet plus 60 ms of
waiting). The server plays none of this audio, so that wait buys nothing: the buffer still
puts packets in order and still waits for a missing one (up to `capacity`) whatever the
prefetch, because a frame leaves only when the packet after it is there. With a prefetch
of 1 a frame leaves as soon as its successor arrives (20 ms). Measured with `turnchart
bench caller` (README, "What a caller experiences").
"""

from __future__ import annotations

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer

AUDIO_PREFETCH = 1
_ORIGINAL = JitterBuffer


def _server_jitter_buffer(capacity: int, prefetch: int = 0,
                          is_video: bool = False) -> JitterBuffer:
    if not is_video:
        prefetch = min(prefetch, AUDIO_PREFETCH)
    return _ORIGINAL(capacity, prefetch=prefetch, is_video=is_video)


def shorten_audio_jitter_buffer() -> None:
    """Idempotent; every WebRTC receiver this process creates afterwards."""
    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", _server_jitter_buffer)  # noqa: B010


def restore_jitter_buffer() -> None:
    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", _ORIGINAL)  # noqa: B010
