"""Raw ASGI apps for the WebSocket suite, one behaviour per path.

Apps that need to tell the test what they saw (the first event, the disconnect code, whether a
send raised) store it in :data:`RESULTS` under the ``id`` query parameter; the servers run in
the test process, so the test reads it back directly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Any
Send = Any

_RESULTS_LOCK = threading.Lock()
#: id -> what the app observed; written by the server thread, read by the test thread.
RESULTS: dict[str, Any] = {}
#: id -> set once the app has finished its observation.
DONE: dict[str, threading.Event] = {}


def record(key: str, value: Any) -> None:
    with _RESULTS_LOCK:
        RESULTS[key] = value
        DONE.setdefault(key, threading.Event()).set()


def wait_result(key: str, timeout: float = 5.0) -> Any:
    """What the app recorded under *key*; fails the test when it never did."""
    with _RESULTS_LOCK:
        event = DONE.setdefault(key, threading.Event())
    if not event.wait(timeout):
        raise AssertionError(f"the app recorded nothing under {key!r} within {timeout}s")
    with _RESULTS_LOCK:
        return RESULTS[key]


def _query(scope: Scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {name: values[-1] for name, values in parsed.items()}


async def _accept(send: Send, receive: Receive, **extra: Any) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect", message
    await send({"type": "websocket.accept", **extra})


async def _echo_loop(receive: Receive, send: Send) -> dict[str, Any]:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return dict(message)
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo text as text and bytes as bytes until the client leaves."""
    await _accept(send, receive)
    disconnect = await _echo_loop(receive, send)
    if "id" in _query(scope):
        record(_query(scope)["id"], disconnect)


async def subprotocol(scope: Scope, receive: Receive, send: Send) -> None:
    """Pick the first offered of ``chat.v2``, ``chat``; send back the offered list as JSON."""
    offered = list(scope.get("subprotocols", []))
    chosen = next((name for name in ("chat.v2", "chat") if name in offered), None)
    await _accept(send, receive, subprotocol=chosen)
    await send({"type": "websocket.send", "text": json.dumps(offered)})
    await _echo_loop(receive, send)


async def accept_headers(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept with extra response headers, one of them repeated."""
    await _accept(
        send,
        receive,
        headers=[
            (b"x-pounce-test", b"yes"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
        ],
    )
    await _echo_loop(receive, send)


async def reject(scope: Scope, receive: Receive, send: Send) -> None:
    """Close before accepting: the server answers 403."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.close", "code": 1008})


async def deny(scope: Scope, receive: Receive, send: Send) -> None:
    """Deny with the websocket.http.response extension: 418 and a body in two parts."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 418,
            "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"websockets here"})


async def raise_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError("raised before accept (on purpose, by the WebSocket suite)")


async def raise_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await _accept(send, receive)
    await receive()
    raise RuntimeError("raised after accept (on purpose, by the WebSocket suite)")


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then read nothing for ``hold`` seconds; then count messages until ``end``."""
    query = _query(scope)
    await _accept(send, receive)
    await asyncio.sleep(float(query.get("hold", "2")))
    count = 0
    total = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        if message.get("text") == "end":
            await send({"type": "websocket.send", "text": f"{count} {total}"})
            continue
        count += 1
        total += len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
    record(query.get("id", "slow"), {"count": count, "total": total})


async def server_close(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, close with ``code`` and ``reason`` from the query, record what follows."""
    query = _query(scope)
    await _accept(send, receive)
    message: dict[str, Any] = {"type": "websocket.close", "code": int(query.get("code", "1000"))}
    if "reason" in query:
        message["reason"] = query["reason"]
    await send(message)
    after = await receive()
    record(query.get("id", "close"), dict(after))


async def send_after_close(scope: Scope, receive: Receive, send: Send) -> None:
    """Close, then send again: the send must raise (recorded as the exception's class)."""
    query = _query(scope)
    await _accept(send, receive)
    await send({"type": "websocket.close", "code": 1000})
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except Exception as exc:
        record(query["id"], {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)})
    else:
        record(query["id"], {"raised": None, "oserror": False})


async def send_after_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
    """Wait for the client to leave, then send: the send raises an OSError (ASGI 2.4+)."""
    query = _query(scope)
    await _accept(send, receive)
    while (await receive())["type"] != "websocket.disconnect":
        pass
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except Exception as exc:
        record(query["id"], {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)})
    else:
        record(query["id"], {"raised": None, "oserror": False})


async def events(scope: Scope, receive: Receive, send: Send) -> None:
    """Record every event the app receives, in order, until the disconnect."""
    query = _query(scope)
    seen = [dict(await receive())]
    await send({"type": "websocket.accept"})
    while seen[-1]["type"] != "websocket.disconnect":
        seen.append(dict(await receive()))
    record(query["id"], seen)


async def scope_info(scope: Scope, receive: Receive, send: Send) -> None:
    """Send back the scope's WebSocket fields as JSON."""
    await _accept(send, receive)
    info = {
        "type": scope["type"],
        "path": scope["path"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "scheme": scope.get("scheme"),
        "http_version": scope.get("http_version"),
        "asgi": scope.get("asgi"),
        "subprotocols": scope.get("subprotocols"),
        "header_names": sorted({name.decode("latin-1") for name, _ in scope["headers"]}),
        "extensions": sorted((scope.get("extensions") or {}).keys()),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
    }
    await send({"type": "websocket.send", "text": json.dumps(info)})
    await _echo_loop(receive, send)


async def return_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept and return at once: the server closes the WebSocket itself."""
    await _accept(send, receive)


async def hold(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then only wait for the disconnect (a WebSocket that stays idle)."""
    await _accept(send, receive)
    while (await receive())["type"] != "websocket.disconnect":
        pass


ROUTES = {
    "/echo": echo,
    "/subprotocol": subprotocol,
    "/accept-headers": accept_headers,
    "/reject": reject,
    "/deny": deny,
    "/raise-before": raise_before_accept,
    "/raise-after": raise_after_accept,
    "/slow": slow,
    "/close": server_close,
    "/send-after-close": send_after_close,
    "/send-after-disconnect": send_after_disconnect,
    "/events": events,
    "/scope": scope_info,
    "/return": return_after_accept,
    "/hold": hold,
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        # Plain HTTP: the "is the server still serving?" probe.
        body = b"ok" if scope["path"] == "/" else b"not found"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if scope["path"] == "/" else 404,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    assert scope["type"] == "websocket"
    handler = ROUTES.get(scope["path"])
    if handler is None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        return
    await handler(scope, receive, send)
