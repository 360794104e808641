"""HTTP/1.1 behaviour of a live server: framing, keep-alive, pipelining, defaults."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from tests.apps import echo, hello, read_body, streamer
from tests.helpers import RawClient

from pounce.testing import serve

PARSERS = ["fast", "h11"]


@pytest.fixture(params=PARSERS)
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_hello_has_length_date_and_server(http: str) -> None:
    with serve(hello, http=http) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
    assert response.status == 200
    assert response.body == b"Hello, world!"
    assert response.header(b"content-length") == b"13"
    assert response.header(b"server") == b"pounce"
    assert response.header(b"date") is not None
    assert response.header(b"transfer-encoding") is None


def test_server_and_date_headers_can_be_turned_off_and_defaults_added() -> None:
    with (
        serve(
            hello, server_header=False, date_header=False, headers=(("x-deploy", "blue"),)
        ) as url,
        RawClient(url) as client,
    ):
        client.request()
        response = client.read_response()
    assert response.header(b"server") is None
    assert response.header(b"date") is None
    assert response.header(b"x-deploy") == b"blue"


def test_app_header_wins_over_default_header() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-deploy", b"green"), (b"server", b"mine")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    with serve(app, headers=(("x-deploy", "blue"),)) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
    assert response.header_values(b"x-deploy") == [b"green"]
    assert response.header_values(b"server") == [b"mine"]


def test_keep_alive_serves_many_requests_on_one_connection(http: str) -> None:
    with serve(hello, http=http) as url, RawClient(url) as client:
        for _ in range(5):
            client.request()
            assert client.read_response().body == b"Hello, world!"


def test_pipelined_requests_are_answered_in_order(http: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        # The first request is the slowest: a server running them out of order would lose.
        delay = {"/1": 0.1, "/2": 0.0, "/3": 0.05}[scope["path"]]
        await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with serve(app, http=http) as url, RawClient(url) as client:
        client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in (1, 2, 3)))
        bodies = [client.read_response().body for _ in range(3)]
    assert bodies == [b"/1", b"/2", b"/3"]


def test_connection_close_from_client_closes_after_response(http: str) -> None:
    with serve(hello, http=http) as url, RawClient(url) as client:
        client.request(headers=[("host", "x"), ("connection", "close")])
        response = client.read_response()
        assert response.header(b"connection") == b"close"
        assert client.is_closed()


def test_connection_close_from_app_closes_after_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]}
        )
        await send({"type": "http.response.body", "body": b"bye"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
        assert response.header(b"connection") == b"close"
        assert client.is_closed()


def test_http10_closes_by_default_and_keeps_alive_when_asked(http: str) -> None:
    with serve(hello, http=http) as url:
        with RawClient(url) as client:
            client.send(b"GET / HTTP/1.0\r\n\r\n")
            response = client.read_response(http10=True)
            assert response.body == b"Hello, world!"
            assert client.is_closed()
        with RawClient(url) as client:
            for _ in range(2):
                client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = client.read_response(http10=True)
                assert response.header(b"connection") == b"keep-alive"


def test_http10_streaming_response_is_close_delimited() -> None:
    with serve(streamer(3)) as url, RawClient(url) as client:
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        raw = client.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"0" * 10 + b"1" * 10 + b"2" * 10


def test_streaming_response_is_chunked(http: str) -> None:
    with serve(streamer(3), http=http) as url, RawClient(url) as client:
        client.request()
        response = client.read_response()
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.body == b"0" * 10 + b"1" * 10 + b"2" * 10


def test_content_length_body_and_chunked_upload(http: str) -> None:
    with serve(echo, http=http) as url, RawClient(url) as client:
        client.request("POST", body=b"x" * 100_000)
        assert client.read_response().body == b"x" * 100_000
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
        )
        assert client.read_response().body == b"hello world"


def test_large_upload_is_streamed_with_flow_control() -> None:
    sizes: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        total = 0
        while True:
            message = await receive()
            sizes.append(len(message.get("body", b"")))
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(total).encode()})

    payload = b"a" * (8 * 1024 * 1024)
    with serve(app) as url, RawClient(url) as client:
        client.request("POST", body=payload)
        assert client.read_response().body == str(len(payload)).encode()
    assert max(sizes) <= 2 * 1024 * 1024  # never the whole body buffered at once


def test_head_keeps_length_and_sends_no_body(http: str) -> None:
    with serve(hello, http=http) as url, RawClient(url) as client:
        client.request("HEAD")
        response = client.read_response(head=True)
        assert response.header(b"content-length") == b"13"
        assert response.body == b""
        client.request()  # the connection is still in sync
        assert client.read_response().body == b"Hello, world!"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_carry_no_body_or_framing(status: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"5")] if status == 204 else [],
            }
        )
        await send({"type": "http.response.body", "body": b"hello"})

    with serve(app) as url, RawClient(url) as client:
        client.request()
        client.request()
        raw = client.read_until_close(limit=0.5)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert b"content-length" not in first.lower()
    assert b"transfer-encoding" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 %d" % status)  # no body bytes between the two responses


def test_expect_100_continue_is_sent_only_when_the_app_reads() -> None:
    with serve(echo) as url, RawClient(url) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = client.sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        assert client.read_response().body == b"hello"

    with serve(hello) as url, RawClient(url) as client:
        # The app answers without reading: no 100, and the body is never needed.
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        response = client.read_response()
        assert response.informational == []
        assert response.status == 200


def test_unread_body_is_discarded_and_connection_reused() -> None:
    with serve(hello) as url, RawClient(url) as client:
        client.request("POST", body=b"z" * 5000)
        assert client.read_response().status == 200
        client.request()
        assert client.read_response().body == b"Hello, world!"


def test_malformed_rest_of_an_answered_body_gets_no_second_response() -> None:
    # The app answered without reading; the rest of the chunked body turns out malformed.
    # One request gets one response: an extra 400 would be taken by a front end as the answer
    # to the next request it forwards (response queue poisoning). The connection just ends.
    paths: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early"})

    with serve(app) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"5\r\nhello\r\n")
        assert client.read_response().status == 200
        client.send(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_until_close(limit=5.0) == b""
    assert paths == ["/"]


def test_body_over_limit_is_refused_before_reading() -> None:
    with serve(echo, limit_request_body=1000) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        response = client.read_response()
        assert response.status == 413
        assert client.is_closed()


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    await read_body(receive)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_an_eager_task_factory_set_by_the_app_still_serves_in_order(http: str) -> None:
    """Request tasks then finish inside create_task(); keep-alive and pipelining hold."""

    def eager_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        # Not asyncio.eager_task_factory: on 3.13.0 it rejects the eager_start keyword that
        # uvloop passes to task factories.
        kwargs.pop("eager_start", None)
        return asyncio.Task(coro, loop=loop, eager_start=True, **kwargs)  # type: ignore[call-arg]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    asyncio.get_running_loop().set_task_factory(eager_factory)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with serve(app, http=http) as url, RawClient(url) as client:
        client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in (1, 2, 3)))
        assert [client.read_response().body for _ in range(3)] == [b"/1", b"/2", b"/3"]
        client.request(headers=[("host", "x")], target="/4")
        assert client.read_response().body == b"/4"
