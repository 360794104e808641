"""Pure-ASGI applications shared by every server in the side-by-side benchmark.

No framework, no dependencies: each app is a plain ``async def app(scope,
receive, send)`` so the numbers measure the server, not a framework.  Every
app answers the lifespan protocol (startup/shutdown -> complete).

Apps (``apps:<name>``):

``hello``    200 text/plain, 13-byte body ``Hello, world!`` -- per-request
             overhead of the server (parser, scheduling, write path).
``body64k``  200 with a 64 KiB body -- large writes / flow control.
``echo``     POST: reads the whole request body and echoes it back --
             request-body path (the harness sends 16 KiB).
``stream``   100 chunks of 1 KiB each via ``more_body=True`` (chunked
             transfer encoding) -- per-send overhead of streaming responses.
``cpu``      ~1 ms of pure-Python work per request, then like ``hello`` --
             thread/worker scaling (GIL vs free-threaded, workers).
``bigstate`` holds ~100 MB of Python objects allocated at import, answers
             like ``hello`` -- memory comparisons (per-process copies vs
             shared state in threaded workers).
``ws_echo``  WebSocket: accepts, then sends every message back as it came
             (bytes as bytes, text as text) until the client disconnects --
             per-message cost of the server's WebSocket path (the harness
             drives it with ``benchmarks/ws_load.py``).  Plain HTTP requests
             get ``hello``'s answer.

The TLS rows of the runner (``tls_hello``, ``tls_hello_close``) serve
``hello``: the app is the same, only the server's transport changes.

Environment knobs (the runner sets them so every server does identical work):

``BENCH_CPU_ITERS``     loop iterations of one ``cpu`` request.  Unset: the
                        module calibrates ~1 ms at import.  The runner
                        calibrates once per run and passes the same number to
                        every server, so the work per request is fixed (a
                        wall-clock loop would do *less* work under contention
                        and hide poor scaling).
``BENCH_BIGSTATE_MB``   size of the ``bigstate`` allocation (default 100).  The
                        runner sets 0 for every other app so their memory
                        columns show a lean process.
``BENCH_COUNTS_DIR``    when set, every request is counted per (pid, thread)
                        and each process writes ``<dir>/<pid>.json`` at
                        lifespan shutdown / interpreter exit.  This is how the
                        runner shows per-worker request counts for any server.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from typing import Any

# ---------------------------------------------------------------------------
# per-worker request counting (opt-in, contention free: one counter per thread)

_COUNTS_DIR = os.environ.get("BENCH_COUNTS_DIR") or None
_local = threading.local()
_counters: list[list[int]] = []  # [pid, native thread id, count]
_counters_lock = threading.Lock()


def _tick() -> None:
    try:
        _local.counter[2] += 1
    except AttributeError:
        counter = [os.getpid(), threading.get_native_id(), 1]
        _local.counter = counter
        with _counters_lock:
            _counters.append(counter)


def _dump_counts() -> None:
    if _COUNTS_DIR is None:
        return
    pid = os.getpid()
    with _counters_lock:
        mine = {str(tid): n for p, tid, n in _counters if p == pid}
    if not mine:
        return
    try:
        os.makedirs(_COUNTS_DIR, exist_ok=True)
        tmp = os.path.join(_COUNTS_DIR, f".{pid}.{threading.get_native_id()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"pid": pid, "threads": mine}, f)
        os.replace(tmp, os.path.join(_COUNTS_DIR, f"{pid}.json"))
    except OSError:
        pass


if _COUNTS_DIR is not None:
    atexit.register(_dump_counts)


# ---------------------------------------------------------------------------
# lifespan


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            _dump_counts()
            await send({"type": "lifespan.shutdown.complete"})
            return


# ---------------------------------------------------------------------------
# response helpers

_HELLO = b"Hello, world!"
_TEXT_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(_HELLO)).encode()),
]
_HELLO_START = {"type": "http.response.start", "status": 200, "headers": _TEXT_HEADERS}
_HELLO_BODY = {"type": "http.response.body", "body": _HELLO}

_BODY64K = (b"0123456789abcdef" * 4096)[: 64 * 1024]
_BODY64K_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(_BODY64K)).encode()),
    ],
}
_BODY64K_BODY = {"type": "http.response.body", "body": _BODY64K}

STREAM_CHUNKS = 100
_CHUNK = b"x" * 1023 + b"\n"  # 1 KiB
_STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],  # no length: chunked
}


async def _hello_response(send: Any) -> None:
    # Fresh dicts per request: servers may legally mutate what they are sent.
    await send(dict(_HELLO_START))
    await send(dict(_HELLO_BODY))


async def _not_http(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Handle non-HTTP scopes; return True when the scope was consumed."""
    kind = scope["type"]
    if kind == "http":
        if _COUNTS_DIR is not None:
            _tick()
        return False
    if kind == "lifespan":
        await _lifespan(receive, send)
        return True
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1003})
        return True
    raise RuntimeError(f"unsupported scope type {kind!r}")


# ---------------------------------------------------------------------------
# apps


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    await _hello_response(send)


async def body64k(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    await send(dict(_BODY64K_START))
    await send(dict(_BODY64K_BODY))


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    await send(dict(_STREAM_START))
    for _ in range(STREAM_CHUNKS):
        await send({"type": "http.response.body", "body": _CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _spin(iterations: int) -> int:
    """Pure-Python busy work (holds the GIL on GIL builds, scales on 3.14t)."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target_seconds: float = 0.001, rounds: int = 7) -> int:
    """Iterations of :func:`_spin` taking ``target_seconds`` on this interpreter."""
    n = 20_000
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        _spin(n)
        best = min(best, time.perf_counter() - t0)
    return max(1, round(n * target_seconds / best))


CPU_ITERS = int(os.environ.get("BENCH_CPU_ITERS") or 0) or calibrate()


async def cpu(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    _spin(CPU_ITERS)
    await _hello_response(send)


def _build_state(megabytes: int) -> list[tuple[int, str, float]]:
    # ~190 bytes per record (tuple + int + 13-char str + float + list slot).
    count = megabytes * 1024 * 1024 // 190
    return [(i + 1000, f"item-{i:08d}", i * 0.5) for i in range(count)]


BIGSTATE_MB = int(os.environ.get("BENCH_BIGSTATE_MB", "100"))
BIGSTATE = _build_state(BIGSTATE_MB) if BIGSTATE_MB > 0 else []


async def bigstate(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    await _hello_response(send)


async def ws_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        if not await _not_http(scope, receive, send):
            await _hello_response(send)
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if _COUNTS_DIR is not None:
        _tick()  # per connection here, not per message: the hot loop stays as lean as the peers'
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        data = message.get("bytes")
        if data is not None:
            await send({"type": "websocket.send", "bytes": data})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})


APPS = ("hello", "body64k", "echo", "stream", "cpu", "bigstate", "ws_echo")


# A 64 KiB JSON document of realistic shape (repeated keys, numbers, short strings): what an
# API returns, and what response compression is for.
def _json64k() -> bytes:
    items: list[bytes] = []
    size = 0
    i = 0
    while True:
        item = b'{"id":%d,"name":"item-%d","price":%d.%02d,"tags":["alpha","beta"],"active":true}' % (
            i, i, i % 997, i % 100
        )
        if size + len(item) + 64 > 64 * 1024:
            break
        items.append(item)
        size += len(item) + 1
        i += 1
    head = b'{"items":[' + b",".join(items) + b'],"pad":"'
    return head + b"x" * (64 * 1024 - len(head) - 2) + b'"}'


_JSON64K = _json64k()
_JSON64K_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_JSON64K)).encode()),
    ],
}


async def json64k(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await _not_http(scope, receive, send):
        return
    await send(dict(_JSON64K_START))
    await send({"type": "http.response.body", "body": _JSON64K})
