"""Which WebSocket frame library Pounce builds on: wsproto or websockets' sans-I/O protocol.

Measures what a server does per message once the handshake is over: parse one masked frame a
client sent (unmask, UTF-8 check for text), then frame one unmasked reply. Both libraries run
post-handshake, server side, without compression, on the same pre-built client frames.

    PYTHONPATH=src python benchmarks/bench_ws_codec.py [--seconds 1.0]

Prints messages per second (receive + send) for 16 B text and 64 KiB binary messages.
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from collections.abc import Callable


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, unfragmented frame as a client sends it."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def wsproto_round(frame: bytes, text: bool) -> Callable[[], None]:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, TextMessage

    conn = Connection(ConnectionType.SERVER)

    def run() -> None:
        conn.receive_data(frame)
        for event in conn.events():
            if text:
                conn.send(TextMessage(data=event.data))
            else:
                conn.send(BytesMessage(data=event.data))

    return run


def websockets_round(frame: bytes, text: bool) -> Callable[[], None]:
    from websockets.protocol import Protocol, Side

    proto = Protocol(Side.SERVER, max_size=None)

    def run() -> None:
        proto.receive_data(frame)
        for event in proto.events_received():
            if text:
                proto.send_text(event.data)
            else:
                proto.send_binary(event.data)
        proto.data_to_send()

    return run


def measure(run: Callable[[], None], seconds: float) -> float:
    for _ in range(100):
        run()
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(50):
            run()
        count += 50
        now = time.perf_counter()
        if now >= end:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import websockets
    import wsproto

    try:
        import websockets.speedups

        speedups = "with C speedups"
    except ImportError:
        speedups = "WITHOUT C speedups"
    print(f"wsproto {wsproto.__version__}, websockets {websockets.__version__} ({speedups})")
    cases = [
        ("16 B text", client_frame(0x1, b"x" * 16), True),
        ("64 KiB binary", client_frame(0x2, os.urandom(65536)), False),
    ]
    for label, frame, text in cases:
        for name, factory in (("wsproto", wsproto_round), ("websockets", websockets_round)):
            best = max(measure(factory(frame, text), args.seconds) for _ in range(args.repeat))
            print(f"{label:>14}  {name:<10}  {best:>10,.0f} msg/s")


if __name__ == "__main__":
    main()
