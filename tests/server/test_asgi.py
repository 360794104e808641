"""ASGI 3 conformance of a live server: scope, receive/send, extensions, app errors."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from tests.apps import read_body, scope_json
from tests.helpers import RawClient

from pounce.testing import serve


def get_scope(url: str, raw: bytes) -> dict[str, Any]:
    with RawClient(url) as client:
        client.send(raw)
        return dict(json.loads(client.read_response().body))


def test_http_scope_is_complete() -> None:
    with serve(scope_json) as url:
        scope = get_scope(
            url,
            b"GET /caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\n"
            b"Host: example.com\r\nX-A: 1\r\nx-a: 2\r\nAccept: */*\r\n\r\n",
        )
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == "/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        ["host", "example.com"],
        ["x-a", "1"],
        ["x-a", "2"],
        ["accept", "*/*"],
    ]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"][0] == "127.0.0.1"
    assert scope["state"] == {}
    assert set(scope["extensions"]) >= {
        "http.response.pathsend",
        "http.response.trailers",
        "http.response.early_hint",
    }


def test_root_path_prefixes_path_and_raw_path() -> None:
    with serve(scope_json, root_path="/api") as url:
        scope = get_scope(url, b"GET /items HTTP/1.1\r\nHost: x\r\n\r\n")
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items"
    assert scope["raw_path"] == "/api/items"


def test_absolute_form_target_uses_its_path() -> None:
    with serve(scope_json) as url:
        scope = get_scope(
            url, b"GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
    assert scope["path"] == "/p"
    assert scope["query_string"] == "q=1"


def test_asgi2_app_is_adapted() -> None:
    class App:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"asgi2"})

    with serve(App, interface="asgi2") as url, RawClient(url) as client:
        client.request()
        assert client.read_response().body == b"asgi2"


def test_lifespan_state_is_shallow_copied_into_each_request() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["db"] = "conn"
            scope["state"]["counter"] = 0
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(dict(scope["state"]))
        scope["state"]["counter"] += 1  # must not leak into the next request
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url, RawClient(url) as client:
        for _ in range(2):
            client.request()
            client.read_response()
    assert seen == [{"db": "conn", "counter": 0}, {"db": "conn", "counter": 0}]


request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


def test_each_request_runs_in_a_fresh_copy_of_the_lifespan_context() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            request_var.set("from-lifespan")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(request_var.get())
        request_var.set(scope["path"])  # must not leak into the next request
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url, RawClient(url) as client:
        for path in ("/a", "/b"):
            client.request(target=path)
            client.read_response()
    assert seen == ["from-lifespan", "from-lifespan"]


def test_receive_reports_disconnect_after_the_response() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        messages.append(await receive())

    with serve(app) as url, RawClient(url) as client:
        client.request()
        client.read_response()
        client.request()
        client.read_response()
    assert messages[0] == {"type": "http.disconnect"}


def test_app_waiting_on_receive_learns_of_disconnect_promptly() -> None:
    event = asyncio.Event()
    got: list[str] = []
    loop_holder: list[asyncio.AbstractEventLoop] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        loop_holder.append(asyncio.get_running_loop())
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        message = await asyncio.wait_for(receive(), 5)
        got.append(message["type"])
        event.set()

    with serve(app) as url:
        client = RawClient(url)
        client.request()
        assert client.sock.recv(1000).startswith(b"HTTP/1.1 200")
        client.close()
        for _ in range(100):
            if got:
                break
            import time

            time.sleep(0.02)
    assert got == ["http.disconnect"]


def test_send_backpressure_bounds_buffering_for_a_slow_client() -> None:
    produced: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for i in range(2000):  # 128 MiB if nothing pushed back
            produced.append(i)
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                return
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url, RawClient(url) as client:
        client.sock.setsockopt(
            __import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536
        )
        client.request()
        client.sock.recv(100)
        import time

        time.sleep(0.5)
        # Without backpressure the app would have produced everything by now.
        assert len(produced) < 200


def test_exception_before_start_gives_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    with (
        caplog.at_level(logging.ERROR, logger="pounce.error"),
        serve(app) as url,
        RawClient(url) as client,
    ):
        client.request()
        response = client.read_response()
    assert response.status == 500
    assert b"boom" not in response.body and b"Traceback" not in response.body
    assert any(
        "Exception in ASGI application" in r.getMessage() and r.exc_info for r in caplog.records
    )


def test_exception_after_start_truncates_the_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    with serve(app) as url, RawClient(url) as client:
        client.request()
        raw = client.read_until_close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert not raw.endswith(b"0\r\n\r\n")  # never a clean end of a chunked body


@pytest.mark.parametrize(
    "header",
    [
        (b"x-evil", b"a\r\nset-cookie: pwned=1"),
        (b"x-evil", b"a\nb"),
        (b"x-evil", b"a\x00b"),
        (b"x evil", b"a"),
        (b"x-evil:", b"a"),
        (b"", b"a"),
    ],
)
def test_invalid_response_headers_give_500_never_splitting(header: tuple[bytes, bytes]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"body"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        raw = client.read_until_close()
    assert raw.startswith(b"HTTP/1.1 500")
    assert b"pwned" not in raw


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "expected 'http.response.start'"),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.start", "status": 200},
            ],
            "unknown",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body"},
                {"type": "http.response.body"},
            ],
            "after the response was complete",
        ),
        (
            [{"type": "http.response.start", "status": 200}, {"type": "nonsense"}],
            "unknown message type",
        ),
        ([{"type": "http.response.start", "status": "200"}], "invalid status"),
    ],
)
def test_protocol_misuse_is_logged_and_the_connection_closed(
    messages: list[dict[str, Any]], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with (
        caplog.at_level(logging.ERROR, logger="pounce.error"),
        serve(app) as url,
        RawClient(url) as client,
    ):
        client.request()
        client.read_until_close()
        assert client.is_closed()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("ASGI protocol error" in m for m in errors), errors


def test_response_shorter_than_content_length_closes_the_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        await send({"type": "http.response.body", "body": b"short"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        raw = client.read_until_close()
    assert raw.endswith(b"short")


def test_app_returning_without_response_gives_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with serve(app) as url, RawClient(url) as client:
        client.request()
        assert client.read_response().status == 500


def test_trailers_extension() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc")],
                "more_trailers": True,
            }
        )
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"1")]})

    with serve(app) as url, RawClient(url) as client:
        client.request(headers=[("host", "x"), ("te", "trailers")])
        response = client.read_response()
    assert response.body == b"data"
    assert response.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"1")]


def test_early_hints_extension() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]}
        )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
    assert response.informational == [103]
    assert response.body == b"page"


def test_pathsend_extension(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(bytes(range(256)) * 1000)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(target)})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
        assert response.header(b"content-length") == b"256000"
        assert response.body == target.read_bytes()
        client.request()
        assert client.read_response().body == target.read_bytes()


def test_concurrency_limit_answers_503() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app, limit_concurrency=1) as url, RawClient(url) as slow, RawClient(url) as fast:
        slow.request(target="/slow")
        import time

        time.sleep(0.1)
        fast.request()
        assert fast.read_response().status == 503
        assert slow.read_response().status == 200
    del gate


@pytest.mark.parametrize("headers", [None, 5, [(b"a", "str-value")], [b"not-a-pair"]])
def test_malformed_header_containers_give_a_clean_500(headers: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"body"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        assert client.read_response().status == 500
