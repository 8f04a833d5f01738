"""The server's audio receive buffer hands a frame on as soon as the next packet is there
(adapters/fastrtc/jitter.py): 20 ms of input latency instead of aiortc's 80 ms."""

from __future__ import annotations

from collections.abc import Iterator

import aiortc.rtcrtpreceiver
import pytest
from aiortc.rtp import RtpPacket

from adapters.fastrtc.jitter import restore_jitter_buffer, shorten_audio_jitter_buffer


@pytest.fixture
def shortened() -> Iterator[None]:
    shorten_audio_jitter_buffer()
    try:
        yield
    finally:
        restore_jitter_buffer()


def packets_until_first_frame(buffer: object) -> int:
    for n in range(1, 10):
        packet = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n)
        packet._data = b"x"   # what the receiver sets before adding (the depayloaded frame)
        _pli, frame = buffer.add(packet)  # type: ignore[attr-defined]
        if frame is not None:
            assert frame.timestamp == 960   # the first frame, in order
            return n
    raise AssertionError("no frame left the buffer")


def test_aiortc_waits_for_four_more_packets() -> None:
    buffer = aiortc.rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4)
    assert packets_until_first_frame(buffer) == 5


def test_the_server_waits_for_one(shortened: None) -> None:
    audio = aiortc.rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4)
    assert packets_until_first_frame(audio) == 2
    video = aiortc.rtcrtpreceiver.JitterBuffer(capacity=128, is_video=True)
    assert video._prefetch == 0   # video untouched


def test_a_missing_packet_is_still_waited_for(shortened: None) -> None:
    buffer = aiortc.rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4)
    out = []
    for n in (1, 3, 4, 2, 5):   # 2 arrives late
        packet = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n)
        packet._data = b"x"
        _pli, frame = buffer.add(packet)
        if frame is not None:
            out.append(frame.timestamp // 960)
    assert out == [1, 2]   # 1 only once the late 2 is there, then 2: in order, none skipped
