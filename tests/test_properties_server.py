"""Property: however a valid pipelined byte stream is cut into TCP sends, the responses are the
same as when it arrives in one piece."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.apps import read_body
from tests.helpers import RawClient

from pounce.testing import serve

BODY = b"0123456789" * 30

STREAM = b"".join(
    [
        b"GET /one?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
        b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: yes\r\n\r\n",
        b"HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /five HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Empty:\r\n\r\n",
        b"GET /six HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
)
RESPONSES = 6


async def describe(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    text = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} {len(body)} "
    payload = text.encode() + body
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload, "more_body": True})
    await send({"type": "http.response.body", "body": b"!"})


@pytest.fixture(scope="module", params=["fast", "h11"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with serve(describe, http=request.param) as base:
        yield base


def exchange(url: str, pieces: list[bytes]) -> list[tuple[int, bytes]]:
    with RawClient(url) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            client.send(piece)
        out = []
        for i in range(RESPONSES):
            response = client.read_response(head=i == 3)
            out.append((response.status, response.body))
        assert client.is_closed()  # the last request asked for Connection: close
    return out


EXPECTED = [
    (200, b"GET /one?x=1&y=%20 0 !"),
    (200, b"POST /two? %d %s!" % (len(BODY), BODY)),
    (200, b"POST /three? 22 hello 0123456789abcdef!"),
    (200, b""),
    (200, b"DELETE /five? 0 !"),
    (200, b"GET /six? 0 !"),
]


def test_whole_stream_reference(url: str) -> None:
    assert exchange(url, [STREAM]) == EXPECTED


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=40))
def test_any_split_gives_the_same_responses(url: str, cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert exchange(url, pieces) == EXPECTED


def test_byte_by_byte(url: str) -> None:
    assert exchange(url, [bytes([b]) for b in STREAM]) == EXPECTED
