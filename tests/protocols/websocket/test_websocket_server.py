"""Server behaviour around WebSockets: timeouts, keep-alive pings, backpressure, shutdown,
concurrency limits and worker modes. Each case starts its own server with the options it tests.
"""

from __future__ import annotations

import select
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.protocols.websocket.conftest import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RSV1,
    RunningWsServer,
    WsClient,
    build_frame,
    deflate,
    expect_failure,
    http_get,
    is_reference,
    ws_server,
)
from tests.protocols.websocket.ws_apps import app, wait_result


@contextmanager
def session(
    path: str, extensions: str | None = None, **options: Any
) -> Iterator[tuple[RunningWsServer, WsClient]]:
    """A server with *options* and one client whose handshake to *path* is done."""
    with ws_server(app, **options) as running, WsClient.open(running.url) as client:
        client.handshake(path, extensions=extensions)
        yield running, client


def test_keep_alive_timeout_does_not_close_an_idle_websocket() -> None:
    with session("/echo", timeout_keep_alive=0.5, ws_ping_interval=None) as (_, client):
        # Four keep-alive timeouts of silence: a WebSocket is not an idle HTTP connection.
        assert client.still_open(wait=2.0)
        client.send_text("still here")
        assert client.read_text() == "still here"


def test_server_pings_and_a_live_peer_stays_connected() -> None:
    with session("/echo", ws_ping_interval=0.3, ws_ping_timeout=1.0) as (_, client):
        pings = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                frame = client.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            assert frame.opcode != OP_CLOSE, f"closed a live peer: {frame.close_code}"
            if frame.opcode == OP_PING:
                pings += 1
                client.send_frame(0xA, frame.payload)
        assert pings >= 2
        client.send_text("alive")
        assert client.read_text() == "alive"


def test_ping_timeout_drops_a_dead_peer() -> None:
    with session("/echo", ws_ping_interval=0.3, ws_ping_timeout=0.5) as (_, client):
        # Never answer a ping (read nothing either): the server must give up on us.
        start = time.monotonic()
        client.expect_tcp_close(timeout=6.0)
        assert time.monotonic() - start < 6.0


def test_ping_timeout_off_keeps_a_silent_peer() -> None:
    with session("/echo", ws_ping_interval=0.2, ws_ping_timeout=None) as (_, client):
        time.sleep(1.2)
        client.send_text("ok")
        assert client.read_text() == "ok"


def test_max_queue_pauses_a_fast_sender() -> None:
    """With the app not reading, the server stops reading too: the sender gets stuck.

    Without backpressure every byte would be read into memory at once and the client's
    sends would never block; with it, the client stalls once the kernel buffers are full.
    """
    message_size = 64 * 1024
    count = 768  # 48 MiB in all, far more than loopback socket buffers hold
    key = uuid.uuid4().hex
    with ws_server(app, ws_max_queue=2) as running:
        with WsClient.open(running.url, timeout=10.0) as client:
            client.handshake(f"/slow?hold=4&id={key}")
            frame = build_frame(OP_BINARY, b"q" * message_size, mask_key=b"\x01\x02\x03\x04")
            stream = memoryview(frame * count)
            client.sock.setblocking(False)
            sent = 0
            try:
                while sent < len(stream):
                    _, writable, _ = select.select([], [client.sock], [], 1.0)
                    if not writable:
                        break  # stalled for a second: the server is not reading
                    sent += client.sock.send(stream[sent : sent + 1024 * 1024])
            finally:
                client.sock.setblocking(True)
            stalled_at = sent
            assert stalled_at < len(stream) // 2, (
                f"{stalled_at} of {len(stream)} bytes went through while the app read nothing"
            )
            # Once the app reads again everything arrives, nothing lost, in order.
            client.sock.settimeout(20.0)
            client.send_raw(bytes(stream[sent:]))
            client.send_text("end")
            assert client.read_text(timeout=20.0) == f"{count} {count * message_size}"
            client.send_close(1000)
            client.expect_close(1000)
        assert wait_result(key)["count"] == count


def test_graceful_shutdown_sends_1001() -> None:
    with ws_server(app, timeout_graceful_shutdown=5) as running:
        with WsClient.open(running.url) as client, WsClient.open(running.url) as other:
            client.handshake("/hold")
            other.handshake("/echo")
            running.shutdown()
            client.expect_close(1001)
            other.expect_close(1001)
            client.expect_tcp_close()
        assert running.stopped(10.0), "the server did not stop after its WebSockets closed"


def test_limit_concurrency_counts_open_websockets() -> None:
    with ws_server(app, limit_concurrency=2) as running:
        first = WsClient.open(running.url)
        second = WsClient.open(running.url)
        try:
            first.handshake("/hold")
            second.handshake("/hold")
            assert http_get(running.url)[0] == 503
            with WsClient.open(running.url) as third:
                response = third.try_handshake("/echo")
                assert response.status == 503
            first.send_close(1000)
            first.expect_close(1000)
            assert wait_until(lambda: http_get(running.url)[0] == 200, timeout=5.0)
        finally:
            first.close()
            second.close()


def test_ws_none_refuses_upgrades() -> None:
    if is_reference():
        pytest.skip("ws='none' is a Pounce option; the reference is always started with wsproto")
    with ws_server(app, ws="none") as running, WsClient.open(running.url) as client:
        response = client.try_handshake("/echo")
        assert response.status != 101
        assert http_get(running.url) == (200, b"ok")


# -- worker modes ------------------------------------------------------------------------

WORKER_MODES = [
    pytest.param({}, id="single"),
    pytest.param({"workers": 2, "worker_type": "thread"}, id="threads"),
    pytest.param({"workers": 2, "worker_type": "process"}, id="processes"),
]


@pytest.mark.parametrize("options", WORKER_MODES)
def test_echo_in_every_worker_mode(options: dict[str, object]) -> None:
    with ws_server(app, **options) as running:
        clients = [WsClient.open(running.url) for _ in range(4)]
        try:
            for index, client in enumerate(clients):
                client.handshake("/echo")
                client.send_text(f"hello {index}")
            for index, client in enumerate(clients):
                assert client.read_text() == f"hello {index}"
                client.send_close(1000)
                client.expect_close(1000)
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize("options", WORKER_MODES)
def test_protocol_error_in_every_worker_mode(options: dict[str, object]) -> None:
    with session("/echo", **options) as (running, client):
        client.send_text("unmasked", mask=False)
        expect_failure(client, 1002)
        assert http_get(running.url) == (200, b"ok")


@pytest.mark.parametrize("options", WORKER_MODES)
def test_size_limit_and_deflate_in_every_worker_mode(options: dict[str, object]) -> None:
    offer = "permessage-deflate; client_no_context_takeover"
    with session("/echo", offer, ws_max_size=1000, **options) as (_, client):
        client.send_text(deflate(b"small"), rsv=RSV1)
        assert client.read_message() == (OP_TEXT, b"small")
        client.send_binary(b"x" * 1001)
        expect_failure(client, 1009)


@pytest.mark.parametrize("options", WORKER_MODES[1:])
def test_graceful_shutdown_in_worker_modes(options: dict[str, object]) -> None:
    with session("/hold", timeout_graceful_shutdown=5, **options) as (running, client):
        running.shutdown()
        client.expect_close(1001)
        assert running.stopped(15.0)
