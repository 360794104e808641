"""Apps served by ``python -m pounce`` in the signal and start-up failure tests.

The tests steer them through files in the directory named by ``POUNCE_TEST_DIR``: the app
creates ``started`` when a request reaches it and finishes once the test creates ``release``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def _dir() -> Path:
    return Path(os.environ["POUNCE_TEST_DIR"])


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            (_dir() / "lifespan-shutdown").touch()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def held(scope: Any, receive: Any, send: Any) -> None:
    """``/held`` answers once the test releases it; anything else answers at once."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/held":
        (_dir() / "started").touch()
        while not (_dir() / "release").exists():
            await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done " + scope["path"].encode()})


async def startup_fails(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return


async def startup_hangs(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.Event().wait()
