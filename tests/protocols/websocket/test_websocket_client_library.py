"""Happy paths with a real client library (``websockets``), as applications will use it.

The library negotiates permessage-deflate by default, so these also run compressed traffic;
``compression=None`` cases check the plain path.
"""

from __future__ import annotations

import os

import pytest
from websockets.sync.client import ClientConnection, connect

Compression = str | None

COMPRESSION = [pytest.param("deflate", id="deflate"), pytest.param(None, id="plain")]


def ws_url(http_url: str, path: str) -> str:
    return "ws://" + http_url.removeprefix("http://") + path


def open_client(
    echo_url: str, path: str = "/echo", compression: Compression = "deflate", **kwargs: object
) -> ClientConnection:
    return connect(
        ws_url(echo_url, path),
        compression=compression,
        open_timeout=5,
        close_timeout=5,
        max_size=None,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("compression", COMPRESSION)
def test_text_and_binary_echo(echo_url: str, compression: Compression) -> None:
    with open_client(echo_url, compression=compression) as ws:
        ws.send("hello \u00e9\U0001f600")
        assert ws.recv(timeout=5) == "hello \u00e9\U0001f600"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"


@pytest.mark.parametrize("compression", COMPRESSION)
def test_one_mebibyte_message(echo_url: str, compression: Compression) -> None:
    payload = os.urandom(512 * 1024) + b"compressible " * 40330
    payload = payload[: 1024 * 1024]
    with open_client(echo_url, compression=compression) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
        text = "\u00e9" * (512 * 1024)  # 1 MiB of UTF-8
        ws.send(text)
        assert ws.recv(timeout=10) == text


@pytest.mark.parametrize("compression", COMPRESSION)
def test_many_messages(echo_url: str, compression: Compression) -> None:
    with open_client(echo_url, compression=compression) as ws:
        for index in range(500):
            ws.send(f"message {index}")
        received = [ws.recv(timeout=5) for _ in range(500)]
    assert received == [f"message {index}" for index in range(500)]


def test_fragmented_send_from_the_library(echo_url: str) -> None:
    with open_client(echo_url) as ws:
        ws.send(iter(["frag", "mented ", "\u00e9"]))
        assert ws.recv(timeout=5) == "fragmented \u00e9"


def test_subprotocol(echo_url: str) -> None:
    with open_client(echo_url, "/subprotocol", subprotocols=["chat.v2", "chat"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.recv(timeout=5) == '["chat.v2", "chat"]'


def test_ping_round_trip(echo_url: str) -> None:
    with open_client(echo_url) as ws:
        latency = ws.ping(b"are you there").wait(5)
        assert latency
        ws.send("after ping")
        assert ws.recv(timeout=5) == "after ping"


def test_clean_close_with_code(echo_url: str) -> None:
    with open_client(echo_url) as ws:
        ws.close(code=4000, reason="bye")
    # The close code the server sent back: it echoes ours (RFC 6455 5.5.1).
    assert ws.close_code == 4000
    assert ws.close_reason == "bye"


def test_server_close_code_reaches_the_library(echo_url: str) -> None:
    from websockets.exceptions import ConnectionClosed

    with open_client(echo_url, "/close?code=4005&reason=done&id=library") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4005, "done")
