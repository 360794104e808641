"""The frame engine on a fake byte stream: RFC 6455 rules, limits, pings, close, backpressure."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from pounce.protocols.websocket import EngineOptions
from pounce.protocols.websocket.engine import WEBSOCKET_DEADLINE, WebSocketEngine
from pounce.protocols.websocket.handshake import DeflateParams


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


class FakeStream:
    def __init__(self) -> None:
        self.written = bytearray()
        self.write_paused = False
        self.reading = True
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    async def drain(self) -> None:
        return None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def set_deadline_at(self, kind: int, when: float) -> None:
        self.deadline = when


class FakeSink:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.queued = 0
        self.closed_with: tuple[int, str] | None = None
        self.cancelled = False

    def message_received(self, data: str | bytes) -> None:
        self.messages.append(data)
        self.queued += 1

    def connection_closed(self, code: int, reason: str) -> None:
        assert self.closed_with is None, "reported twice"
        self.closed_with = (code, reason)

    def force_close(self) -> None:
        self.cancelled = True

    def take(self) -> str | bytes:
        self.queued -= 1
        return self.messages.pop(0)


def options(**changes: Any) -> EngineOptions:
    values: dict[str, Any] = {
        "max_size": 1 << 20, "max_queue": 32, "ping_interval": None, "ping_timeout": None,
    }
    values.update(changes)
    return EngineOptions(**values)


def make(
    deflate: DeflateParams | None = None, buffered: bytes = b"", **changes: Any
) -> tuple[WebSocketEngine, FakeStream, FakeSink, FakeLoop]:
    loop, stream, sink = FakeLoop(), FakeStream(), FakeSink()
    engine = WebSocketEngine(loop, stream, sink, options(**changes), deflate, buffered)  # type: ignore[arg-type]
    return engine, stream, sink, loop


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True,
          rsv1: bool = False) -> bytes:
    """A client frame built by hand: the tests need frames no library would send."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | int(opcode)
    length = len(data)
    if length < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
    if not mask:
        return head + data
    key = b"\x12\x34\x56\x78"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def server_frames(data: bytes, deflate: PerMessageDeflate | None = None) -> list[Frame]:
    """Parse what the engine wrote, as a client would."""
    client = Protocol(Side.CLIENT, max_size=None)
    if deflate is not None:
        client.extensions = [deflate]
    client.receive_data(bytes(data))
    return [event for event in client.events_received() if isinstance(event, Frame)]


def close_code(stream: FakeStream) -> int:
    frames = [f for f in server_frames(stream.written) if f.opcode is Opcode.CLOSE]
    assert frames, "no close frame was written"
    return int(struct.unpack("!H", frames[-1].data[:2])[0])


def test_messages_both_ways_and_fragments_with_interleaved_ping() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.data_received(
        frame(Opcode.TEXT, b"hel", fin=False)
        + frame(Opcode.PING, b"p1")
        + frame(Opcode.CONT, b"lo", fin=False)
        + frame(Opcode.CONT, b"!")
        + frame(Opcode.BINARY, b"\x00\x01")
    )
    assert sink.messages == ["hello!", b"\x00\x01"]
    frames = server_frames(stream.written)
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.PONG, b"p1")]
    engine.send_text("héllo")
    engine.send_bytes(b"xyz")
    frames = server_frames(stream.written)
    assert [(f.opcode, f.data) for f in frames[1:]] == [
        (Opcode.TEXT, "héllo".encode()), (Opcode.BINARY, b"xyz"),
    ]


def test_bytes_before_accept_wait_and_reading_pauses() -> None:
    engine, stream, sink, _ = make(buffered=frame(Opcode.TEXT, b"early"))
    engine.data_received(frame(Opcode.TEXT, b"later"))
    assert sink.messages == []
    assert not stream.reading
    engine.start()
    assert sink.messages == ["early", "later"]
    assert stream.reading


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(Opcode.TEXT, b"x", mask=False), 1002),  # clients must mask
        (frame(Opcode.TEXT, b"x", rsv1=True), 1002),  # reserved bit without an extension
        (bytes([0x83, 0x80]) + b"\x00" * 4, 1002),  # unknown opcode 3
        (frame(Opcode.PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(Opcode.PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(Opcode.CONT, b"x"), 1002),  # continuation without a start
        (frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.TEXT, b"b"), 1002),
        (frame(Opcode.CLOSE, struct.pack("!H", 999)), 1002),  # invalid close code
        (frame(Opcode.CLOSE, struct.pack("!H", 1005)), 1002),  # reserved close code
        (frame(Opcode.CLOSE, b"\x03"), 1002),  # one-byte close payload
        # A 64-bit length must have its top bit clear (§5.2): invalid, not just too big.
        (struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + b"\x00" * 4, 1002),
        (frame(Opcode.TEXT, b"\xff"), 1007),
        (frame(Opcode.TEXT, b"ok \xe2\x82", fin=False) + frame(Opcode.CONT, b"\x28"), 1007),
        (frame(Opcode.TEXT, b"\xe2\x82", fin=False) + frame(Opcode.CONT, b"", fin=True), 1007),
        (frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),  # close reason
    ],
)
def test_protocol_violations_close_with_the_right_code(data: bytes, code: int) -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.data_received(data)
    assert close_code(stream) == code
    assert stream.closed  # a failed connection is closed by the server at once
    assert sink.closed_with is not None and sink.closed_with[0] == code
    assert sink.messages == []


def test_utf8_split_across_fragments_is_accepted() -> None:
    engine, _, sink, _ = make()
    engine.start()
    euro = "€".encode()
    engine.data_received(frame(Opcode.TEXT, euro[:1], fin=False))
    engine.data_received(frame(Opcode.CONT, euro[1:2], fin=False))
    engine.data_received(frame(Opcode.CONT, euro[2:]))
    assert sink.messages == ["€"]


def test_invalid_utf8_fails_on_the_fragment_not_at_the_end() -> None:
    engine, stream, _sink, _ = make()
    engine.start()
    engine.data_received(frame(Opcode.TEXT, b"\xc0\xaf", fin=False))
    assert close_code(stream) == 1007


def test_max_size_refuses_before_reading_the_payload() -> None:
    engine, stream, _sink, _ = make(max_size=1000)
    engine.start()
    # Only the header of a 1 GiB frame: the engine must not wait for (or buffer) the payload.
    engine.data_received(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 30) + b"\x00" * 4)
    assert close_code(stream) == 1009
    assert stream.closed


def test_max_size_counts_every_fragment() -> None:
    engine, stream, sink, _ = make(max_size=1000)
    engine.start()
    engine.data_received(frame(Opcode.BINARY, b"x" * 600, fin=False))
    engine.data_received(frame(Opcode.CONT, b"x" * 600))
    assert close_code(stream) == 1009
    assert sink.messages == []


def deflate_params(**changes: Any) -> DeflateParams:
    values: dict[str, Any] = {
        "server_no_context_takeover": False, "client_no_context_takeover": False,
        "server_max_window_bits": 12, "client_max_window_bits": 15, "response": b"",
    }
    values.update(changes)
    return DeflateParams(**values)


def compressed(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_deflate_both_ways() -> None:
    engine, stream, sink, _ = make(deflate=deflate_params())
    engine.start()
    engine.data_received(frame(Opcode.TEXT, compressed(b"a" * 5000), rsv1=True))
    assert sink.messages == ["a" * 5000]
    engine.send_text("b" * 5000)
    client = PerMessageDeflate(False, False, 12, 15)
    [reply] = server_frames(stream.written, client)
    assert reply.data == b"b" * 5000
    assert len(stream.written) < 200  # it really was compressed


def test_decompression_bomb_stops_at_max_size() -> None:
    engine, stream, sink, _ = make(deflate=deflate_params(), max_size=64 * 1024)
    engine.start()
    bomb = compressed(b"\x00" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 70 * 1024
    engine.data_received(frame(Opcode.BINARY, bomb[:60000], rsv1=True))
    assert close_code(stream) == 1009
    assert sink.messages == []


def test_ping_interval_and_timeout_drop_a_dead_peer() -> None:
    engine, stream, sink, loop = make(ping_interval=5.0, ping_timeout=2.0)
    engine.start()
    assert engine.deadline == 105.0
    loop.now = 105.0
    engine.on_deadline(WEBSOCKET_DEADLINE)
    [ping] = server_frames(stream.written)
    assert ping.opcode is Opcode.PING
    assert engine.deadline == 107.0  # the pong is due before the next ping
    loop.now = 107.0
    engine.on_deadline(WEBSOCKET_DEADLINE)
    assert stream.aborted
    assert sink.closed_with == (1006, "")


def test_pong_in_time_keeps_the_connection() -> None:
    engine, stream, sink, loop = make(ping_interval=5.0, ping_timeout=2.0)
    engine.start()
    loop.now = 105.0
    engine.on_deadline(WEBSOCKET_DEADLINE)
    [ping] = server_frames(stream.written)
    engine.data_received(frame(Opcode.PONG, ping.data))
    assert engine.deadline == 110.0  # just the next ping
    loop.now = 107.5
    engine.on_deadline(WEBSOCKET_DEADLINE)
    assert not stream.closed and sink.closed_with is None


def test_client_close_is_answered_and_reported() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.data_received(frame(Opcode.CLOSE, struct.pack("!H", 4000) + b"bye"))
    assert close_code(stream) == 4000
    assert stream.closed
    assert sink.closed_with == (4000, "bye")


def test_server_close_waits_for_the_answer_then_times_out() -> None:
    engine, stream, sink, loop = make(ping_timeout=3.0)
    engine.start()
    engine.close(1000, "done")
    assert close_code(stream) == 1000
    assert not stream.closed
    assert engine.deadline == 103.0
    loop.now = 103.0
    engine.on_deadline(WEBSOCKET_DEADLINE)
    assert stream.aborted
    assert sink.closed_with == (1006, "")


def test_server_close_answered_closes_tcp() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.close(1000, "")
    engine.data_received(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert stream.closed and not stream.aborted
    assert sink.closed_with == (1000, "")


def test_shutdown_sends_going_away() -> None:
    engine, stream, _sink, _ = make()
    engine.start()
    engine.shutdown()
    assert close_code(stream) == 1001


def test_shutdown_before_accept_closes_right_after_accept() -> None:
    engine, stream, _sink, _ = make()
    engine.shutdown()
    assert stream.written == b""
    engine.start()
    assert close_code(stream) == 1001


def test_max_queue_stops_reading_until_the_app_catches_up() -> None:
    engine, stream, sink, _ = make(max_queue=2)
    engine.start()
    engine.data_received(frame(Opcode.TEXT, b"1"))
    assert stream.reading
    engine.data_received(frame(Opcode.TEXT, b"2"))
    assert not stream.reading
    sink.take()
    engine.message_consumed()
    assert stream.reading


def test_eof_without_close_is_abnormal() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.eof_received()
    assert sink.closed_with == (1006, "")
    assert stream.closed


def test_force_close_cancels_the_app_and_aborts() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.force_close()
    assert sink.cancelled and stream.aborted


def test_shutdown_waits_at_most_half_the_graceful_period_for_the_answer() -> None:
    engine, stream, sink, loop = make(ping_timeout=20.0, graceful_shutdown=4.0)
    engine.start()
    engine.shutdown()
    assert engine.deadline == 102.0
    loop.now = 102.0
    engine.on_deadline(WEBSOCKET_DEADLINE)
    assert stream.aborted
    assert sink.closed_with == (1006, "")


def test_close_between_fragments_is_a_normal_close() -> None:
    engine, stream, sink, _ = make()
    engine.start()
    engine.data_received(frame(Opcode.TEXT, b"never ", fin=False))
    engine.data_received(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert close_code(stream) == 1000
    assert stream.closed and not stream.aborted
    assert sink.closed_with == (1000, "")
    assert sink.messages == []
