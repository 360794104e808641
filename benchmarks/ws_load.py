#!/usr/bin/env python3
"""WebSocket echo load generator for the side-by-side benchmark.

wrk cannot speak WebSocket, and the Python WebSocket client libraries do far
more work per message than the servers under test (full frame objects,
per-frame masking in Python or C, queues, tasks), so this client works on raw
sockets with as little per-message work as possible:

* every connection sends the *same* pre-masked frame again and again (one
  ``transport.write`` of a ready ``bytes`` object: no masking, no framing, no
  allocation per message);
* the server's frames are not copied or decoded: only their 2-10 byte headers
  are read and the payload bytes are counted (control frames excepted); the
  exact bytes are checked once before the load by :func:`check_echo`;
* each connection is a plain ``asyncio.Protocol`` whose ``data_received``
  sends the next message as soon as the echo is complete: no task, future or
  coroutine switch per message.  uvloop is used when it is installed.

N connections each do send -> await the whole echo -> send for D seconds; the
output is one JSON object (messages/s, p50/p90/p99 latency, errors, the
client's own CPU use so a saturated client shows).

    python benchmarks/ws_load.py --port 8000 --size 16 --connections 64 --duration 5
    python benchmarks/ws_load.py --port 8000 --size 65536 --check   # one exact round trip
    python benchmarks/ws_load.py --ceiling --size 16                 # vs a do-nothing server

``--ceiling`` runs the same load against a built-in server that answers each
message with a precomputed frame and does nothing else: its messages/s is the
most this client can drive on the machine, to compare with real servers.

One mask key is reused for every frame of a run.  RFC 6455 wants fresh keys
to protect intermediaries from cache poisoning; there is no intermediary
here, and servers must unmask whatever key comes, so the work they do per
frame is the same.

Only the standard library is needed (uvloop optional), so the runner can
import :func:`check_echo` with any interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from typing import Any, cast

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------
# frames and handshake (shared by the load, the check and the ideal server)


def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def handshake_request(host: str, port: int, path: str, key: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def check_handshake_response(head: bytes, key: bytes) -> None:
    """Raise ValueError unless ``head`` (up to the blank line) accepts our upgrade."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise ValueError(f"upgrade refused: {lines[0].decode(errors='replace')!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept_token(key):
        raise ValueError("wrong or missing Sec-WebSocket-Accept in the 101 response")
    if b"sec-websocket-extensions" in headers:
        raise ValueError("server negotiated an extension the client did not offer")


def _frame_header(opcode: int, length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, mask_bit | length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, mask_bit | 126)) + struct.pack("!H", length)
    return bytes((0x80 | opcode, mask_bit | 127)) + struct.pack("!Q", length)


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte key, done as one big-integer XOR (fast enough off the loop)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def masked_frame(payload: bytes, mask: bytes, opcode: int = OP_BINARY) -> bytes:
    return _frame_header(opcode, len(payload), 0x80) + mask + apply_mask(payload, mask)


def unmasked_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    return _frame_header(opcode, len(payload), 0) + payload


def _close_frame(mask: bytes) -> bytes:
    return masked_frame(struct.pack("!H", 1000), mask, OP_CLOSE)


# ---------------------------------------------------------------------------
# one exact round trip (blocking, before any load)


def check_echo(host: str, port: int, size: int, timeout: float = 10.0, path: str = "/") -> None:
    """Send one binary message of ``size`` random bytes; raise RuntimeError unless the
    server echoes exactly those bytes back (as one binary message)."""
    key = base64.b64encode(os.urandom(16))
    payload = os.urandom(size)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(handshake_request(host, port, path, key))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(
                    f"connection closed during the WebSocket handshake ({buf[:80]!r})"
                )
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        try:
            check_handshake_response(head, key)
        except ValueError as exc:
            raise RuntimeError(f"WebSocket handshake: {exc}") from None
        sock.sendall(masked_frame(payload, os.urandom(4)))

        def need(n: int) -> bytes:
            nonlocal buf
            while len(buf) < n:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("connection closed before the whole echo arrived")
                buf += chunk
            out, buf = buf[:n], buf[n:]
            return out

        parts: list[bytes] = []
        first_opcode = None
        while True:
            b0, b1 = need(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", need(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", need(8))[0]
            mask = need(4) if b1 & 0x80 else b""
            data = need(length)
            if mask:
                raise RuntimeError("server sent a masked frame (RFC 6455 5.1 forbids it)")
            opcode = b0 & 0x0F
            if opcode == OP_PING:
                sock.sendall(masked_frame(data, os.urandom(4), OP_PONG))
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                raise RuntimeError(f"server closed the WebSocket instead of echoing ({data!r})")
            if first_opcode is None:
                first_opcode = opcode
            parts.append(data)
            if b0 & 0x80:
                break
        sock.sendall(_close_frame(os.urandom(4)))
    got = b"".join(parts)
    if first_opcode != OP_BINARY:
        raise RuntimeError(f"echo came back with opcode {first_opcode}, expected binary (2)")
    if got != payload:
        raise RuntimeError(f"echo differs: sent {size} bytes, got {len(got)} different bytes")


# ---------------------------------------------------------------------------
# the load


class _Run:
    """State shared by the connections of one load run (one event loop, one thread)."""

    def __init__(self, frame: bytes, size: int, close_frame: bytes) -> None:
        self.frame, self.size, self.close_frame = frame, size, close_frame
        self.deadline = float("inf")
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _EchoClient(asyncio.Protocol):
    """One connection: handshake, then send / wait for the whole echo / send ..."""

    def __init__(self, run: _Run, request: bytes, key: bytes) -> None:
        self.run, self.request, self.key = run, request, key
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.head = b""  # handshake bytes, then a frame header split across reads
        self.remaining = 0  # payload bytes of the current frame not seen yet
        self.opcode = 0
        self.fin = False
        self.control: bytearray | None = None  # payload of a control frame being read
        self.got = 0  # payload bytes of the current message so far
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.counted = 0  # echoes completed before the deadline

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))
        if not self.done.done():
            self.run.error("closed by server")
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self._refused(ValueError("handshake response larger than 64 KiB"))
                return
            try:
                check_handshake_response(self.head[:end], self.key)
            except ValueError as exc:
                self._refused(exc)
                return
            data, self.head, self.open = self.head[end + 4 :], b"", True
            self.ready.set_result(None)
            if not data:
                return
        self._frames(data)

    # -- frames

    def _frames(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                if self.control is not None:
                    self.control += data[pos : pos + take]
                self.remaining -= take
                pos += take
                if not self.remaining:
                    self._frame_done(take)
                elif self.control is None:
                    self.got += take
                continue
            if self.head:
                data, pos, self.head = self.head + data[pos:], 0, b""
                n = len(data)
            if n - pos < 2:
                self.head = data[pos:]
                return
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            hlen = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if n - pos < hlen:
                self.head = data[pos:]
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            pos += hlen
            self.opcode, self.fin = b0 & 0x0F, bool(b0 & 0x80)
            self.control = bytearray() if self.opcode & 0x8 else None
            self.remaining = length
            if not length:
                self._frame_done(0)

    def _frame_done(self, last_piece: int) -> None:
        if self.control is not None:
            payload, self.control = bytes(self.control), None
            if self.opcode == OP_PING and self.transport is not None:
                self.transport.write(masked_frame(payload, os.urandom(4), OP_PONG))
            elif self.opcode == OP_CLOSE:
                self._fail("closed by server")
            return
        self.got += last_piece
        if not self.fin:
            return
        now = time.perf_counter()
        if self.got != self.run.size:
            self.run.error("echo of the wrong size")
        elif now <= self.run.deadline:
            self.latencies.append(now - self.sent_at)
            self.counted += 1
        self.got = 0
        if now < self.run.deadline:
            self.sent_at = now
            assert self.transport is not None
            self.transport.write(self.run.frame)
        else:
            self._finish()

    # -- control

    def start(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.run.frame)

    def _finish(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.run.close_frame)
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def _refused(self, exc: Exception) -> None:
        # Counted once, by the connect() that awaits self.ready.
        self.ready.set_exception(exc)
        self.done.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, kind: str) -> None:
        self.run.error(kind)
        if self.transport is not None:
            self.transport.abort()
        if not self.done.done():
            self.done.set_result(None)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


async def run_load(
    host: str,
    port: int,
    *,
    size: int,
    connections: int,
    duration: float,
    path: str = "/",
    barrier: Any = None,
) -> dict[str, Any]:
    """One process's share of the load; the raw figures, for :func:`summarize`.

    ``barrier`` (a multiprocessing.Barrier) makes every client process open all its
    connections before any of them starts sending.
    """
    loop = asyncio.get_running_loop()
    mask = os.urandom(4)
    run = _Run(masked_frame(os.urandom(size), mask), size, _close_frame(mask))
    clients: list[_EchoClient] = []

    async def connect() -> None:
        key = base64.b64encode(os.urandom(16))
        request = handshake_request(host, port, path, key)
        try:
            _, proto = await loop.create_connection(
                lambda: _EchoClient(run, request, key), host, port
            )
            await asyncio.wait_for(proto.ready, 10)
        except (TimeoutError, OSError, ValueError):
            run.error("connect or handshake failed")
            return
        clients.append(proto)

    # Every connection is open before the clock starts: handshakes are not measured.
    await asyncio.gather(*(connect() for _ in range(connections)))
    if barrier is not None:
        await loop.run_in_executor(None, barrier.wait, 60)
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    run.deadline = start + duration
    for c in clients:
        c.start()
    stalled: set[Any] = set()
    if clients:
        _, stalled = await asyncio.wait({c.done for c in clients}, timeout=duration + 10)
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    for c in clients:
        if not c.done.done():
            c._fail("no echo within 10 s after the end")
    return {
        "messages": sum(c.counted for c in clients),
        "latencies": [x for c in clients for x in c.latencies],
        "connected": len(clients),
        "errors": run.errors,
        "stalled": len(stalled),
        "cpu_s": cpu,
        "wall_s": wall,
        "loop": type(loop).__module__.split(".")[0],
    }


def summarize(
    parts: list[dict[str, Any]], *, size: int, connections: int, duration: float
) -> dict[str, Any]:
    """The JSON line: raw figures of every client process merged."""
    lat = sorted(x for part in parts for x in part["latencies"])
    messages = sum(part["messages"] for part in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for kind, n in part["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    connected = sum(part["connected"] for part in parts)
    if not connected:
        raise RuntimeError(f"no connection could be opened: {errors}")
    ms = 1000.0

    def pct(p: float) -> float | None:
        v = _percentile(lat, p)
        return None if v is None else round(v * ms, 4)

    return {
        "msgs_per_s": round(messages / duration, 1),
        "messages": messages,
        "size": size,
        "connections": connections,
        "connected": connected,
        "duration_s": duration,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(lat[-1] * ms, 4) if lat else None,
        "avg_ms": round(sum(lat) / len(lat) * ms, 4) if lat else None,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "stalled": sum(part["stalled"] for part in parts),
        # The client's own CPU over the run (100 = one core), all its processes together:
        # near 100 per process means the client, not the server, set the pace.
        "client_cpu_pct": round(sum(100 * part["cpu_s"] / part["wall_s"] for part in parts), 1),
        "processes": len(parts),
        "loop": parts[0]["loop"],
    }


def _child(kwargs: dict[str, Any], barrier: Any, results: Any) -> None:
    _use_uvloop()
    try:
        results.put(asyncio.run(run_load(**kwargs, barrier=barrier)))
    except BaseException as exc:
        barrier.abort()  # the others must not wait for a process that is gone
        results.put({"failed": f"{type(exc).__name__}: {exc}"})


def run_processes(processes: int, **kwargs: Any) -> dict[str, Any]:
    """The load split over ``processes`` client processes (connections shared out evenly):
    for servers with several workers, where one client process could become the limit."""
    connections = kwargs.pop("connections")
    if processes <= 1:
        part = asyncio.run(run_load(connections=connections, **kwargs))
        return summarize(
            [part], size=kwargs["size"], connections=connections, duration=kwargs["duration"]
        )
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    procs = [
        ctx.Process(target=_child, args=({**kwargs, "connections": n}, barrier, results))
        for n in shares
    ]
    for proc in procs:
        proc.start()
    parts = [results.get(timeout=kwargs["duration"] + 120) for _ in procs]
    for proc in procs:
        proc.join(10)
    failed = [p["failed"] for p in parts if "failed" in p]
    if failed:
        raise RuntimeError(f"client process failed: {failed[0]}")
    return summarize(
        parts, size=kwargs["size"], connections=connections, duration=kwargs["duration"]
    )


# ---------------------------------------------------------------------------
# a do-nothing server: the client's own ceiling


class _IdealServer(asyncio.Protocol):
    """Answers every client message with a ready frame of the same size; checks nothing."""

    replies: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = b""
        self.open = False
        self.remaining = 0
        self.got = 0
        self.fin = False

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            key = b""
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_token(key) + b"\r\n\r\n"
            )
            data, self.buf, self.open = self.buf[end + 4 :], b"", True
        data = self.buf + data if self.buf else data
        self.buf = b""
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                self.remaining -= take
                self.got += take
                pos += take
                if not self.remaining and self.fin:
                    self._reply()
                continue
            if n - pos < 6:
                self.buf = data[pos:]
                return
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            hlen = 6 + (2 if length == 126 else 8 if length == 127 else 0)
            if n - pos < hlen:
                self.buf = data[pos:]
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            pos += hlen
            if b0 & 0x0F == OP_CLOSE:
                self.transport.close()
                return
            self.fin, self.remaining = bool(b0 & 0x80), length
            if not length and self.fin:
                self._reply()

    def _reply(self) -> None:
        reply = self.replies.get(self.got)
        if reply is None:
            reply = self.replies[self.got] = unmasked_frame(bytes(self.got))
        self.transport.write(reply)
        self.got = 0


async def serve_ideal(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_IdealServer, host, port)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------
# command line


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--path", default="/")
    p.add_argument("--size", type=int, default=16, help="message size in bytes (16)")
    p.add_argument("--connections", "-c", type=int, default=64)
    p.add_argument("--duration", "-d", type=float, default=5.0, help="seconds (5)")
    p.add_argument(
        "--processes",
        "-p",
        type=int,
        default=1,
        help="client processes sharing the connections (1; more for multi-worker servers)",
    )
    p.add_argument("--check", action="store_true", help="one exact round trip, then exit")
    p.add_argument("--serve-ideal", action="store_true", help="run the do-nothing server")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="load a do-nothing server (own process) to show this client's maximum",
    )
    args = p.parse_args(argv)
    _use_uvloop()
    if args.check:
        check_echo(args.host, args.port, args.size, path=args.path)
        print(json.dumps({"check": "ok", "size": args.size}))
        return 0
    if args.serve_ideal:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_ideal(args.host, args.port))
        return 0
    ideal = None
    if args.ceiling:
        with socket.socket() as s:
            s.bind((args.host, 0))
            args.port = s.getsockname()[1]
        cmd = [sys.executable, __file__, "--serve-ideal", "--host", args.host]
        ideal = subprocess.Popen([*cmd, "--port", str(args.port)])
        _wait_port(args.host, args.port, 10)
    try:
        result = run_processes(
            args.processes,
            host=args.host,
            port=args.port,
            size=args.size,
            connections=args.connections,
            duration=args.duration,
            path=args.path,
        )
    finally:
        if ideal is not None:
            ideal.terminate()
            ideal.wait(10)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
