"""The ASGI apps the conformance cases are served by."""

from __future__ import annotations

import asyncio
from typing import Any

#: Every response has a body of this many octets: the flow-control cases need more than 4.
BODY = b"hello, conformance"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole request body (so the server sees every DATA frame), then answers;
    ``/slow`` first waits a second (an app still running when its stream is reset)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await _answer(send)


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers without reading the body, as a hello-world app does: the request's DATA
    frames may then arrive after the response ended the stream."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    await _answer(send)


async def _answer(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
