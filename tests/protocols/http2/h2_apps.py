"""ASGI apps the HTTP/2 tests serve; the path picks the behaviour."""

from __future__ import annotations

import asyncio
import json
from typing import Any

#: What apps saw, for tests that look at the server side (same process, thread workers).
SEEN: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/scope":
        body = json.dumps(
            {
                "http_version": scope["http_version"],
                "method": scope["method"],
                "path": scope["path"],
                "query_string": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "extensions": sorted(scope.get("extensions", {})),
                "scheme": scope["scheme"],
            }
        ).encode()
        await _reply(send, body, b"application/json")
    elif path == "/echo":
        data = bytearray()
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        await _reply(send, bytes(data))
    elif path == "/slow-reader":
        # Takes no body until told: the client's window must fill and stay full.
        event = asyncio.Event()
        SEEN["slow-reader"] = (event, asyncio.get_running_loop())
        await event.wait()
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _reply(send, str(total).encode())
    elif path.startswith("/big/"):
        size = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: min(65536, size - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
    elif path == "/burst-then-pause":
        # 128 KiB at once (more than a 64 KiB window), then a second of silence, then the end.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"b" * 131072, "more_body": True})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"end"})
    elif path == "/wait-disconnect":
        loop = asyncio.get_running_loop()
        start = loop.time()
        message = await receive()
        while message["type"] == "http.request" and message.get("more_body"):
            message = await receive()
        if message["type"] != "http.disconnect":
            message = await receive()
        SEEN["disconnect"] = (message["type"], loop.time() - start)
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"0.5"))
        await _reply(send, b"slept")
    elif path == "/trailers":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [], "trailers": True}
        )
        await send({"type": "http.response.body", "body": b"data", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
    elif path == "/early-hints":
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
        await _reply(send, b"after hints")
    elif path == "/short":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
    elif path == "/pathsend":
        file = scope["query_string"].decode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": file})
    else:
        await _reply(send, b"Hello, world!")


async def _reply(send: Any, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/ws echoes; /ws-deny refuses (403); /ws-proto picks the first offered subprotocol."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    path = scope["path"]
    SEEN["ws-scope"] = {
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "subprotocols": scope["subprotocols"],
    }
    if path == "/ws-deny":
        await send({"type": "websocket.close"})
        return
    subprotocol = scope["subprotocols"][0] if path == "/ws-proto" else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    if path == "/ws-flood":
        # Sends as fast as send() lets it: the stream's window is the only brake.
        SEEN["ws-sent"] = 0
        for _ in range(100):
            await send({"type": "websocket.send", "bytes": b"z" * 65536})
            SEEN["ws-sent"] += 1
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            SEEN["ws-disconnect"] = message.get("code")
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000})
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
