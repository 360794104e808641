"""Health probes (``--health-path``, ``--ready-path``) through real sockets, and the hook alone."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.apps import Recorder, hello
from tests.helpers import (
    ProtocolClient,
    RawClient,
    Response,
    fetch,
    http_version,
    propagating,
    wait_until,
)
from tests.pipeline.fakes import FakeChannel, make_context, settle

from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.events import RequestCompleted, RequestRejected
from pounce.testing import serve, serve_in_thread

PROBES = {"health_path": "/healthz", "ready_path": "/readyz"}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def propagating_loggers() -> Iterator[None]:
    with propagating("pounce", "pounce.error", "pounce.access"):
        yield


def probe(url: str, target: str, method: str = "GET", protocol: str = "http/1.1") -> Response:
    return fetch(url, target, method=method, protocol=protocol)


def test_liveness_and_readiness_are_answered_without_the_app(protocol: str) -> None:
    app = Recorder()
    with serve(app, **PROBES) as url:
        alive = probe(url, "/healthz", protocol=protocol)
        ready = probe(url, "/readyz", protocol=protocol)
        other = probe(url, "/healthz/more", protocol=protocol)
    assert (alive.status, alive.body) == (200, b"ok")
    assert alive.header(b"content-type") == b"text/plain; charset=utf-8"
    assert alive.header(b"content-length") == b"2"
    assert (ready.status, ready.body) == (200, b"ready")
    assert other.status == 200 and other.body == b"seen /healthz/more"
    assert app.paths == [b"/healthz/more"]  # the probes never reached the app


def test_head_gets_the_length_without_the_body_over_http2() -> None:
    with serve(hello, **PROBES) as url:
        response = probe(url, "/readyz", "HEAD", "h2")
    assert (response.status, response.body, response.reset) == (200, b"", None)
    assert response.header(b"content-length") == b"5"


def test_head_gets_the_length_without_the_body() -> None:
    with serve(hello, **PROBES) as url, RawClient(url) as client:
        client.request("HEAD", "/readyz")
        raw = client.read_until_close(2.0)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 5\r\n" in head + b"\r\n"
    assert body == b""


def test_other_methods_get_405_with_allow(protocol: str) -> None:
    app = Recorder()
    with serve(app, **PROBES) as url:
        response = probe(url, "/healthz", "POST", protocol)
    assert response.status == 405
    assert response.header(b"allow") == b"GET, HEAD"
    assert app.calls == []


def test_paths_are_matched_without_root_path() -> None:
    with serve(hello, root_path="/api", health_path="/healthz") as url:
        assert probe(url, "/healthz").body == b"ok"
        # The mount point's own spelling is an ordinary request for the app.
        assert probe(url, "/api/healthz").body == b"Hello, world!"


def test_probes_answer_even_at_the_concurrency_limit(protocol: str) -> None:
    release = threading.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow"})

    with serve(slow, limit_concurrency=1, **PROBES) as url, ProtocolClient(url, protocol) as busy:
        held = busy.send("GET", "/")
        try:
            # --limit-concurrency counts HTTP/2 streams: one on the busy connection is enough.
            assert wait_until(lambda: probe(url, "/other", protocol=protocol).status == 503, 3.0)
            assert probe(url, "/readyz", protocol=protocol).status == 200
        finally:
            release.set()
        assert busy.response(held).body == b"slow"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pounce.access"]


def test_probes_stay_out_of_the_access_log_by_default(
    caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True, **PROBES
    ) as url:
        probe(url, "/healthz", protocol=protocol)
        probe(url, "/readyz", protocol=protocol)
        probe(url, "/healthz", "POST", protocol)
        probe(url, "/app", protocol=protocol)
        assert wait_until(lambda: access_lines(caplog), 3.0)
    lines = access_lines(caplog)
    assert len(lines) == 1 and "/app" in lines[0], lines


def test_access_log_health_logs_them(caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True, access_log_health=True, **PROBES
    ) as url:
        probe(url, "/healthz", protocol=protocol)
        probe(url, "/readyz", "HEAD", protocol)
        assert wait_until(lambda: len(access_lines(caplog)) >= 2, 3.0)
    lines = access_lines(caplog)
    version = http_version(protocol)
    assert any(f'"GET /healthz HTTP/{version}" 200 2' in line for line in lines), lines
    assert any(f'"HEAD /readyz HTTP/{version}" 200 0' in line for line in lines), lines


def test_ready_path_on_a_websocket_server_is_not_an_upgrade() -> None:
    from websockets.sync.client import connect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "app"})
            await send({"type": "websocket.close"})
            return
        await hello(scope, receive, send)

    with serve(app, ws="websockets", **PROBES) as url:
        response = probe(url, "/readyz")
        assert (response.status, response.body) == (200, b"ready")
        # A handshake to the same path is no probe: the app takes it.
        with connect(url.replace("http://", "ws://") + "/readyz") as ws:
            assert ws.recv(timeout=5) == "app"


def test_readiness_is_503_on_a_retiring_worker() -> None:
    """A rolling reload retires the old worker: its kept-alive connections hear "not ready"."""
    with serve_in_thread(
        hello, workers=1, worker_type="thread", timeout_keep_alive=10, **PROBES
    ) as running:
        clients = [RawClient(running.url) for _ in range(4)]
        try:
            for client in clients:
                client.request("GET", "/")
                assert client.read_response().status == 200
            supervisor = running.server._supervisor
            assert supervisor is not None
            running.server.reload()
            assert wait_until(lambda: supervisor.reloads == 1, 10.0)
            statuses: list[tuple[int, bytes]] = []
            for client in clients:  # each probe closes its connection: one try per client
                try:
                    client.request("GET", "/readyz")
                    response = client.read_response()
                except (ConnectionError, OSError):
                    continue  # the retiring worker's idle grace ended first
                statuses.append((response.status, response.body))
                if response.status == 503:
                    break
                threading.Event().wait(0.05)
        finally:
            for client in clients:
                client.close()
        assert (503, b"not ready") in statuses, statuses
        # The new generation is ready.
        assert probe(running.url, "/readyz").status == 200


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_probes_in_each_worker_mode(worker_type: str, protocol: str) -> None:
    with serve("tests.apps:hello", workers=2, worker_type=worker_type, **PROBES) as url:
        for _ in range(4):
            assert probe(url, "/healthz", protocol=protocol).body == b"ok"
            assert probe(url, "/readyz", protocol=protocol).body == b"ready"
        assert probe(url, "/", protocol=protocol).body == b"Hello, world!"


# -- the hook alone, against a fake channel ----------------------------------------------------

LOCAL = ConnectionInfo(client=("127.0.0.1", 5000), server=("127.0.0.1", 8000))


def start(ctx: Any, channel: FakeChannel, method: str, path: str) -> None:
    ctx.dispatcher.start_request(
        channel, LOCAL, "1.1", method, path.encode(), b"", [], False, False, True
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("shutting_down", True), ("shedding", True), ("linger_idle", False)]
)
def test_readiness_follows_draining_and_shedding(
    loop: asyncio.AbstractEventLoop, flag: str, value: bool
) -> None:
    events: list[Any] = []
    ctx = make_context(loop, hello, events=events, **PROBES)
    ready = FakeChannel()
    start(ctx, ready, "GET", "/readyz")
    setattr(ctx, flag, value)
    later = FakeChannel()
    start(ctx, later, "GET", "/readyz")
    alive = FakeChannel()
    start(ctx, alive, "GET", "/healthz")
    settle(loop)
    assert ready.errors == [(200, ())] and ready.error_bodies == [b"ready"]
    expected = 200 if flag == "linger_idle" else 503
    assert later.errors == [(expected, ())]
    assert later.error_bodies == [b"ready" if expected == 200 else b"not ready"]
    assert alive.error_bodies == [b"ok"]  # liveness does not care
    assert events == []  # off the bus without --access-log-health
    assert ctx.active_requests == 0


def test_logged_probes_emit_completion_and_only_refusals_as_rejected(
    loop: asyncio.AbstractEventLoop,
) -> None:
    events: list[Any] = []
    ctx = make_context(loop, hello, events=events, access_log_health=True, **PROBES)
    start(ctx, FakeChannel(), "GET", "/healthz")
    ctx.shutting_down = True
    start(ctx, FakeChannel(), "GET", "/readyz")
    start(ctx, FakeChannel(), "DELETE", "/readyz")
    settle(loop)
    completed = [(e.status, e.bytes_sent) for e in events if isinstance(e, RequestCompleted)]
    rejected = [(e.status, e.reason) for e in events if isinstance(e, RequestRejected)]
    assert completed == [(200, 2), (503, 9), (405, 21)]
    assert rejected == [(503, "not ready"), (405, "method not allowed")]
