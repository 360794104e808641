"""Small ASGI apps used across the server tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

Scope = dict[str, Any]


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the request body; headers describe what the app saw."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-method", scope["method"].encode())]})
    await send({"type": "http.response.body", "body": body})


async def scope_json(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the scope as JSON (bytes shown as latin-1 strings)."""
    if scope["type"] != "http":
        return

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    body = json.dumps(plain(dict(scope))).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def streamer(chunks: int, delay: float = 0.0, size: int = 10) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(chunks):
            await send({"type": "http.response.body", "body": str(i % 10).encode() * size, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})

    return app
