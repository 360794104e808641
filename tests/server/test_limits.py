"""Request size limits on a live server: 414, 431, 413 -- each answered once and closed.

Every limit is configurable; each test shows a request just inside the limit being served and
one just outside being refused, on both parsers.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.apps import Recorder, read_body
from tests.helpers import RawClient, status_of

from pounce.testing import serve

PARSERS = ["fast", "h11"]


@pytest.fixture(params=PARSERS)
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def refused(url: str, raw: bytes) -> tuple[int | None, bool]:
    """Send *raw*; return the status of the answer and whether the server then closed."""
    with RawClient(url) as client:
        client.send(raw)
        data = client.read_until_close(limit=5.0)
        closed = client.is_closed(wait=2.0)
    return status_of(data), closed


def test_request_line_over_limit_is_414_and_closes(http: str) -> None:
    app = Recorder()
    with serve(app, http=http, limit_request_line=200) as url:
        ok = b"GET /" + b"a" * 150 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        with RawClient(url) as client:
            client.send(ok)
            assert client.read_response().status == 200
        status, closed = refused(url, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert closed
    assert len(app.calls) == 1


def test_request_line_over_limit_is_414_before_the_line_ends(http: str) -> None:
    # A client that never ends its request line must not make the server buffer without bound.
    with serve(Recorder(), http=http, limit_request_line=200) as url, RawClient(url) as client:
        client.send(b"GET /" + b"a" * 1000)
        data = client.read_until_close(limit=5.0)
        assert status_of(data) == 414
        assert client.is_closed()


def test_default_request_line_limit_is_enforced(http: str) -> None:
    with serve(Recorder(), http=http) as url:
        status, closed = refused(url, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, closed) == (414, True)


def test_too_many_header_fields_is_431_and_closes(http: str) -> None:
    app = Recorder()

    def request(fields: int) -> bytes:
        extra = b"".join(b"X-F%d: v\r\n" % i for i in range(fields - 1))
        return b"GET /n HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"

    with serve(app, http=http, limit_request_fields=10) as url:
        with RawClient(url) as client:
            client.send(request(10))
            assert client.read_response().status == 200
        status, closed = refused(url, request(11))
    assert (status, closed) == (431, True)
    assert len(app.calls) == 1


def test_header_section_over_size_is_431_and_closes(http: str) -> None:
    app = Recorder()
    with serve(app, http=http, limit_request_header_size=2048) as url:
        with RawClient(url) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 1500 + b"\r\n\r\n")
            assert client.read_response().status == 200
        raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n"
        status, closed = refused(url, raw)
        # Many small fields that add up count too.
        many = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(30))
        status_many, closed_many = refused(url, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert (status, closed) == (431, True)
    assert (status_many, closed_many) == (431, True)
    assert len(app.calls) == 1


def test_header_section_never_ending_is_431_before_it_ends(http: str) -> None:
    with serve(
        Recorder(), http=http, limit_request_header_size=2048
    ) as url, RawClient(url) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000)
        data = client.read_until_close(limit=5.0)
        assert status_of(data) == 431
        assert client.is_closed()


def test_content_length_over_limit_is_413_without_calling_the_app(http: str) -> None:
    app = Recorder()
    with serve(app, http=http, limit_request_body=1000) as url:
        with RawClient(url) as client:
            client.request("POST", body=b"b" * 1000)
            assert client.read_response().status == 200
        status, closed = refused(url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    assert (status, closed) == (413, True)
    assert app.bodies == [b"b" * 1000]


def test_chunked_body_over_limit_is_413_and_closes(http: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    def chunked(sizes: list[int]) -> bytes:
        chunks = b"".join(b"%x\r\n%s\r\n" % (n, b"c" * n) for n in sizes)
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        return head + chunks + b"0\r\n\r\n"

    with serve(app, http=http, limit_request_body=1000) as url:
        with RawClient(url) as client:
            client.send(chunked([500, 500]))
            response = client.read_response()
            assert (response.status, response.body) == (200, b"1000")
        seen.clear()
        status, closed = refused(url, chunked([500, 500, 1]))
    assert (status, closed) == (413, True)
    assert "http.disconnect" in seen  # the app learnt the body will never complete


def test_chunked_body_over_limit_in_one_chunk_size_line(http: str) -> None:
    # A chunk size announcing more than the limit is refused before its data arrives.
    app = Recorder()
    with serve(app, http=http, limit_request_body=1000) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\n")
        data = client.read_until_close(limit=5.0)
        assert status_of(data) == 413
        assert client.is_closed()
    assert app.bodies == []  # the app never saw a complete body


def test_unlimited_body_by_default(http: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    with serve(app, http=http) as url, RawClient(url) as client:
        client.request("POST", body=b"z" * 3_000_000)
        assert client.read_response().body == b"3000000"


def test_expect_continue_over_limit_gets_413_and_no_100(http: str) -> None:
    app = Recorder()
    with serve(app, http=http, limit_request_body=1000) as url, RawClient(url) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        data = client.read_until_close(limit=5.0)
    assert status_of(data) == 413
    assert b"100 Continue" not in data
    assert app.calls == []
