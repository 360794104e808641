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
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the request body; headers describe what the app saw."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    headers = [(b"x-method", scope["method"].encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
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
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def streamer(chunks: int, delay: float = 0.0, size: int = 10) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(chunks):
            body = str(i % 10).encode() * size
            await send({"type": "http.response.body", "body": body, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})

    return app


class Recorder:
    """An app that records every request it is called with, then answers 200 with the target.

    ``calls`` gets ``(method, raw target)`` as soon as the app is called, ``bodies`` the request
    body once completely read (both appended from the server's thread; ``list.append`` is
    atomic); a request whose body ends in ``http.disconnect`` only counts in ``disconnects``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.bodies: list[bytes] = []
        self.disconnects = 0

    @property
    def paths(self) -> list[bytes]:
        return [target for _, target in self.calls]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = scope["query_string"]
        target = scope["raw_path"] + (b"?" + query if query else b"")
        self.calls.append((scope["method"], target))
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"seen " + target})
