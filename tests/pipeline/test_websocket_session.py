"""The ASGI WebSocket session through a real server: the ASGI spec, limits and shutdown.

Happy paths use the ``websockets`` client; what a well-behaved client never does (ignoring
pings, not reading, odd handshakes) goes through :class:`RawWebSocket`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
import time
from typing import Any

import pytest
from tests.helpers import address, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pounce.testing import serve, serve_in_thread

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def ws_url(url: str, path: str = "/ws") -> str:
    return url.replace("http://", "ws://") + path


class RawWebSocket:
    """A client socket speaking just enough RFC 6455 to misbehave on purpose."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 path: str = "/ws") -> None:
        self.sock = socket.create_connection(address(url), timeout=5)
        fields = {
            "host": "test", "upgrade": "websocket", "connection": "Upgrade",
            "sec-websocket-key": KEY, "sec-websocket-version": "13",
        }
        fields.update(headers or {})
        request = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields.items()
        ) + "\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""

    def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def read_rest(self) -> bytes:
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def send_frame(self, opcode: int, data: bytes, fin: bool = True) -> None:
        length = len(data)
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            head = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def closed(self, wait: float = 3.0) -> bool:
        self.sock.settimeout(wait)
        try:
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


async def lifespan_or(scope: dict[str, Any], receive: Any) -> bool:
    """Handle lifespan; True when *scope* was a lifespan scope."""
    if scope["type"] != "lifespan":
        return False
    while True:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            return True


class Recorder:
    """An echo app that records what it saw, for the tests to assert on."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"plain " + scope["path"].encode()})
            return
        assert (await receive())["type"] == "websocket.connect"
        offered = scope["subprotocols"]
        await send({
            "type": "websocket.accept",
            "subprotocol": offered[-1] if offered else None,
            "headers": [(b"x-app", b"yes")],
        })
        try:
            while True:
                message = await receive()
                self.events.append(message)
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") == "close-please":
                    await send({"type": "websocket.close", "code": 4001, "reason": "as asked"})
                elif message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"] + "!"})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except OSError as exc:
                self.errors.append(exc)
        finally:
            self.done.set()


def test_echo_scope_subprotocol_and_headers_with_the_websockets_client() -> None:
    app = Recorder()
    with serve(app) as url, connect(
        ws_url(url, "/chat/room%201?x=1"), subprotocols=["v1", "v2"]
    ) as ws:
        assert ws.subprotocol == "v2"
        assert ws.response.headers["x-app"] == "yes"
        assert ws.response.headers["server"] == "pounce"
        ws.send("hello")
        assert ws.recv() == "hello!"
        ws.send(b"\x01\x02\x03")
        assert ws.recv() == b"\x03\x02\x01"
        ws.send("x" * 300_000)  # over a TCP read and fragmented by nothing
        assert ws.recv() == "x" * 300_000 + "!"
        ws.send(["frag", "mented"])  # a fragmented message
        assert ws.recv() == "fragmented!"
    scope = app.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert "method" not in scope
    assert scope["path"] == "/chat/room 1"
    assert scope["raw_path"] == b"/chat/room%201"
    assert scope["query_string"] == b"x=1"
    assert scope["subprotocols"] == ["v1", "v2"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["asgi"]["spec_version"] == "2.5"
    assert scope["http_version"] == "1.1"


def test_close_codes_and_reasons_both_ways_and_send_after_close_raises() -> None:
    app = Recorder()
    with serve(app) as url:
        with connect(ws_url(url)) as ws:
            ws.send("close-please")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "as asked")
        assert app.done.wait(5)
        assert app.events[-1] == {
            "type": "websocket.disconnect", "code": 4001, "reason": "as asked",
        }
        app.events.clear()
        app.done.clear()
        with connect(ws_url(url)) as ws:
            ws.close(4321, "client leaves")
        assert app.done.wait(5)
        assert app.events[-1] == {
            "type": "websocket.disconnect", "code": 4321, "reason": "client leaves",
        }
        assert len(app.errors) == 2 and all(isinstance(e, OSError) for e in app.errors)


def test_wss_scheme_from_a_trusted_proxy() -> None:
    app = Recorder()
    with serve(app, forwarded_allow_ips="127.0.0.1") as url, connect(
        ws_url(url), additional_headers={"x-forwarded-proto": "https"}
    ) as ws:
        ws.send("hi")
        ws.recv()
    assert app.scopes[0]["scheme"] == "wss"


def test_deflate_negotiated_and_used() -> None:
    app = Recorder()
    with serve(app) as url:
        with connect(ws_url(url)) as ws:
            assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
            ws.send("z" * 100_000)
            assert ws.recv() == "z" * 100_000 + "!"
        with serve(app, ws_per_message_deflate=False) as url2, connect(ws_url(url2)) as ws:
            assert "sec-websocket-extensions" not in ws.response.headers
            ws.send("plain")
            assert ws.recv() == "plain!"


def test_max_size_closes_with_1009() -> None:
    app = Recorder()
    with serve(app, ws_max_size=1000) as url, connect(ws_url(url), compression=None) as ws:
        ws.send("a" * 1000)
        assert ws.recv() == "a" * 1000 + "!"
        ws.send("a" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert app.done.wait(5)
    assert app.events[-1]["code"] == 1009


# -- refusing the handshake ---------------------------------------------------------------


async def refusing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    path = scope["path"]
    if path == "/close":
        await send({"type": "websocket.close"})
    elif path == "/custom":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer"), (b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
    elif path == "/raise":
        raise RuntimeError("boom before accept")
    elif path == "/early-send":
        await send({"type": "websocket.send", "text": "not accepted yet"})
    elif path == "/raise-after":
        await send({"type": "websocket.accept"})
        raise RuntimeError("boom after accept")
    elif path == "/double-accept":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.accept"})
    elif path == "/return":
        return


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/close", 403, b"Forbidden"),
        ("/raise", 500, b"Internal Server Error"),
        ("/early-send", 500, b"Internal Server Error"),
        ("/return", 500, b"Internal Server Error"),
        ("/custom", 401, b"no entry"),
    ],
)
def test_refusals_are_http_responses(path: str, status: int, body: bytes,
                                     caplog: pytest.LogCaptureFixture) -> None:
    with serve(refusing_app) as url, caplog.at_level(logging.ERROR, logger="pounce.error"):
        client = RawWebSocket(url, path=path)
        got, headers = client.read_head()
        rest = client.read_rest()
        client.close()
    assert got == status
    assert b"upgrade" not in headers and b"sec-websocket-accept" not in headers
    if path == "/custom":
        assert headers[b"www-authenticate"] == b"Bearer"
        assert headers[b"x-why"] == b"token"
        assert rest == b"3\r\nno \r\n5\r\nentry\r\n0\r\n\r\n"
    else:
        assert rest == body
    if status == 500:
        assert any(
            "Exception in ASGI application" in r.getMessage()
            or "ASGI protocol error" in r.getMessage()
            or "without accepting" in r.getMessage()
            for r in caplog.records
        )


@pytest.mark.parametrize("path", ["/raise-after", "/double-accept"])
def test_errors_after_accept_close_with_1011(path: str) -> None:
    with serve(refusing_app) as url, connect(ws_url(url, path)) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"sec-websocket-version": "8"}, 426),
        ({"sec-websocket-key": "short"}, 400),
        ({"sec-websocket-protocol": "a,\xff , ,b"}, 101),
    ],
)
def test_handshake_validation_through_the_server(headers: dict[str, str], status: int) -> None:
    with serve(Recorder()) as url:
        client = RawWebSocket(url, headers=headers)
        got, response = client.read_head()
        client.close()
    assert got == status
    if status == 426:
        assert response[b"sec-websocket-version"] == b"13"
    if status == 101:
        assert response[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert response[b"sec-websocket-protocol"] == b"b"


# -- liveness, limits, backpressure ---------------------------------------------------------


def test_ping_timeout_drops_a_client_that_does_not_answer() -> None:
    app = Recorder()
    with serve(app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as url:
        client = RawWebSocket(url)
        assert client.read_head()[0] == 101
        opcode, _ = client.recv_frame()
        assert opcode == 0x9  # a ping, which this client never answers
        assert client.closed(wait=3)
        assert app.done.wait(3)
        client.close()
    assert app.events[-1]["code"] == 1006


def test_keep_alive_timeout_does_not_apply_to_an_open_websocket() -> None:
    app = Recorder()
    with serve(app, timeout_keep_alive=0.1, ws_ping_interval=None) as url, connect(
        ws_url(url)
    ) as ws:
        time.sleep(0.6)
        ws.send("still here")
        assert ws.recv() == "still here!"


def test_limit_concurrency_counts_open_websockets() -> None:
    app = Recorder()
    with serve(app, limit_concurrency=1) as url:
        with connect(ws_url(url)) as ws:
            ws.send("x")
            ws.recv()
            with pytest.raises(InvalidStatus) as info, connect(ws_url(url)):
                pass
            assert info.value.response.status_code == 503
        assert app.done.wait(5)
        # Closed: the slot is free again.
        assert wait_until(lambda: _can_connect(url), timeout=5)


def _can_connect(url: str) -> bool:
    try:
        with connect(ws_url(url)) as ws:
            ws.send("y")
            return ws.recv() == "y!"
    except InvalidStatus:
        return False


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_send_waits_while_the_client_does_not_read(loop: str) -> None:
    pytest.importorskip(loop)
    sent = [0]

    async def flood(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        chunk = b"x" * 65536
        for _ in range(2000):  # 128 MiB if nothing held the app back
            await send({"type": "websocket.send", "bytes": chunk})
            sent[0] += 1
        await send({"type": "websocket.close"})

    with serve(flood, ws_ping_interval=None, ws_per_message_deflate=False, loop=loop) as url:
        client = RawWebSocket(url)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert client.read_head()[0] == 101
        time.sleep(0.5)
        first = sent[0]
        time.sleep(0.5)
        assert sent[0] == first < 400  # stalled, with a bounded amount in flight
        received = 0
        while True:
            opcode, data = client.recv_frame()
            if opcode == 0x8:
                break
            received += len(data)
        assert received == 2000 * 65536
        client.close()


def test_graceful_shutdown_sends_1001_and_the_app_gets_its_disconnect() -> None:
    app = Recorder()
    with serve_in_thread(app, timeout_graceful_shutdown=5) as running, connect(
        ws_url(running.url)
    ) as ws:
        ws.send("hi")
        ws.recv()
        started = time.monotonic()
        stopper = threading.Thread(target=running.server.shutdown)
        stopper.start()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        stopper.join()
    running.thread.join(10)
    assert not running.thread.is_alive()
    assert time.monotonic() - started < 4
    assert app.done.is_set()
    assert app.events[-1]["type"] == "websocket.disconnect"
    assert app.events[-1]["code"] == 1001


def test_ws_none_serves_upgrades_as_plain_http_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Recorder()
    with serve(app, ws="none") as url, caplog.at_level(logging.WARNING, logger="pounce.error"):
        for _ in range(2):
            client = RawWebSocket(url)
            status, _ = client.read_head()
            client.close()
            assert status == 200
    assert [s["type"] for s in app.scopes] == ["http", "http"]
    warnings = [r for r in caplog.records if "WebSocket support is off" in r.getMessage()]
    assert len(warnings) == 1
    assert "drop --ws none" in warnings[0].getMessage()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_happy_path_in_each_worker_mode(kind: str) -> None:
    with serve(Recorder(), workers=2, worker_type=kind, startup_timeout=20) as url:
        for _ in range(3):
            with connect(ws_url(url)) as ws:
                ws.send(kind)
                assert ws.recv() == kind + "!"


def test_receive_order_connect_then_messages_then_disconnect() -> None:
    seen: list[str] = []
    finished = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        seen.append((await receive())["type"])
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.2)  # messages queue up meanwhile
        while True:
            message = await receive()
            seen.append(message.get("text") or message["type"])
            if message["type"] == "websocket.disconnect":
                break
        seen.append((await receive())["type"])  # disconnect stays the answer
        finished.set()

    with serve(app) as url:
        with connect(ws_url(url)) as ws:
            for text in ("a", "b", "c"):
                ws.send(text)
        assert finished.wait(5)
    assert seen == [
        "websocket.connect", "a", "b", "c", "websocket.disconnect", "websocket.disconnect",
    ]


def test_shutdown_with_a_silent_client_still_gives_the_app_its_disconnect() -> None:
    app = Recorder()
    with serve_in_thread(app, timeout_graceful_shutdown=2, ws_ping_interval=None) as running:
        client = RawWebSocket(running.url)
        assert client.read_head()[0] == 101
        started = time.monotonic()
        running.server.shutdown()
        opcode, data = client.recv_frame()
        assert (opcode, data[:2]) == (0x8, struct.pack("!H", 1001))
        # The client never answers: after half the graceful period the server gives up on
        # the close handshake, and the app hears about it instead of being cancelled.
        assert app.done.wait(5)
        assert 0.8 < time.monotonic() - started < 2
        client.close()
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_startup_log_says_whether_websocket_is_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.error"), serve(Recorder()):
        pass
    assert any(r.getMessage().startswith("WebSocket on (websockets ") for r in caplog.records)


def test_without_the_library_upgrades_are_plain_http_and_ws_flags_warn(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pounce.protocols.websocket as support

    monkeypatch.setattr(support, "library_missing", lambda: True)
    app = Recorder()
    with caplog.at_level(logging.INFO, logger="pounce.error"), serve(
        app, ws_max_queue=4
    ) as url:
        client = RawWebSocket(url)
        assert client.read_head()[0] == 200
        client.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("WebSocket off (the 'websockets' package is not installed" in m for m in messages)
    assert any(m.startswith("--ws-max-queue has no effect") for m in messages)
    assert any("is not installed); serving the request as plain HTTP" in m for m in messages)
    assert any(m.endswith("To turn WebSocket on: pip install 'pounce[ws]'") for m in messages)


def test_starlette_websocket_endpoint() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    closed_with: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="json")
        try:
            while True:
                data = await websocket.receive_json()
                if data.get("bye"):
                    await websocket.close(code=4400, reason="bye")
                    return
                await websocket.send_json({"echo": data})
        except WebSocketDisconnect as exc:
            closed_with.append(exc.code)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with serve(app) as url:
        with connect(ws_url(url), subprotocols=["json"]) as ws:
            assert ws.subprotocol == "json"
            ws.send('{"n": 1}')
            assert ws.recv() == '{"echo":{"n":1}}'
            ws.send('{"bye": true}')
            with pytest.raises(ConnectionClosed) as info:
                ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4400
        with connect(ws_url(url), subprotocols=["json"]) as ws:
            ws.send('{"n": 2}')
            ws.recv()
        assert wait_until(lambda: closed_with == [1000])


RELOAD_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "{version}"})
'''


def test_rolling_reload_closes_open_websockets_with_1001(tmp_path: Any) -> None:
    module = "ws_reload_app"
    source = tmp_path / f"{module}.py"
    source.write_text(RELOAD_APP.replace("{version}", "v0"))
    with serve_in_thread(f"{module}:app", app_dir=str(tmp_path), workers=2,
                         worker_type="thread", timeout_graceful_shutdown=5) as running:
        with connect(ws_url(running.url)) as ws:
            ws.send("?")
            assert ws.recv() == "v0"
            source.write_text(RELOAD_APP.replace("{version}", "v1"))
            stamp = time.time() + 5
            os.utime(source, (stamp, stamp))
            running.server.reload()
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        with connect(ws_url(running.url)) as ws:
            ws.send("?")
            assert ws.recv() == "v1"
