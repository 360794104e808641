"""Apps for the worker tests."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any


async def _reply(send: Any, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/ -> ok; /whoami -> pid:thread; /crash kills the worker; /hang blocks its loop;
    /slow?SECONDS answers after an asyncio sleep."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("WAPPS_FAIL_FLAG") and os.path.exists(
                    os.environ["WAPPS_FAIL_FLAG"]
                ):
                    await send({"type": "lifespan.startup.failed", "message": "flag set"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/whoami":
        await _reply(send, f"{os.getpid()}:{threading.current_thread().name}".encode())
    elif path == "/threads":
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("pounce-w"))
        await _reply(send, ",".join(names).encode())
    elif path == "/crash":
        if threading.current_thread() is threading.main_thread():
            os._exit(1)  # a process worker (its loop runs in the main thread)
        asyncio.get_running_loop().stop()
        await asyncio.sleep(10)
    elif path == "/slow":  # holds a request without blocking the loop
        await asyncio.sleep(float(scope["query_string"] or b"2"))
        await _reply(send, b"slow")
    elif path == "/hang":
        time.sleep(float(os.environ.get("WAPPS_HANG", "2")))
        await _reply(send, b"late")
    else:
        await _reply(send, b"ok")
