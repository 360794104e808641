"""The public event API: Server.subscribe / event_handlers, delivered off the request path."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.apps import hello
from tests.helpers import ProtocolClient, address, fetch, http_version, propagating, wait_until

import pounce
from pounce import events
from pounce.events import (
    ClientDisconnected,
    ConnectionOpened,
    EventHub,
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    RequestCompleted,
    RequestStarted,
    ServerStarted,
    ServerStopped,
    ServerStopping,
    WorkerStarted,
    WorkerStopped,
)
from pounce.testing import serve_in_thread

_names = itertools.count()

LIFECYCLE = (
    ServerStarted,
    ServerStopping,
    ServerStopped,
    WorkerStarted,
    WorkerStopped,
    ReloadStarted,
    ReloadCompleted,
    ReloadFailed,
)

APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''


class Collector:
    """A thread-safe list of the events a handler received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Any] = []

    def __call__(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Any]:
        with self._lock:
            return list(self._events)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if type(e) is kind]


def _worker_contexts(server: Any) -> list[Any]:
    return [w._worker.ctx for w in server._supervisor.workers]


def test_subscribe_and_unsubscribe_and_zero_cost_without_subscribers(protocol: str) -> None:
    with serve_in_thread(hello) as running:
        server = running.server
        assert not any(ctx.events.active for ctx in _worker_contexts(server))
        seen = Collector()
        unsubscribe = server.subscribe(seen, kinds=(RequestCompleted,))
        assert wait_until(lambda: all(c.events.active for c in _worker_contexts(server)))
        response = fetch(running.url, "/hi", protocol=protocol)
        assert wait_until(lambda: len(seen.events) == 1)
        event = seen.events[0]
        assert isinstance(event, RequestCompleted)
        assert (event.status, event.path, event.bytes_sent) == (200, "/hi", len(response.body))
        assert event.http_version == http_version(protocol)
        unsubscribe()
        # The worker's bus is unlinked again: requests build no event at all.
        assert wait_until(lambda: not any(c.events.active for c in _worker_contexts(server)))
        fetch(running.url, "/again", protocol=protocol)
        time.sleep(0.1)
        assert len(seen.events) == 1
        unsubscribe()  # idempotent


def test_kinds_filter_and_event_handlers_argument() -> None:
    everything = Collector()
    started_only = Collector()
    with serve_in_thread(hello, event_handlers=[everything]) as running:
        running.server.subscribe(started_only, kinds=(RequestStarted,))
        httpx.get(running.url + "/a")
        assert wait_until(lambda: everything.of(RequestCompleted) and started_only.events)
    assert {type(e) for e in started_only.events} == {RequestStarted}
    assert started_only.events[0].method == "GET"
    kinds = {type(e) for e in everything.events}
    assert {ServerStarted, WorkerStarted, ConnectionOpened, RequestStarted} <= kinds
    assert {RequestCompleted, ServerStopping, WorkerStopped, ServerStopped} <= kinds


def test_unknown_kind_is_refused() -> None:
    hub = EventHub()
    with pytest.raises(TypeError, match="not a Pounce event type"):
        hub.subscribe(print, kinds=(int,))


def test_a_slow_handler_does_not_slow_requests() -> None:
    delay = 0.05

    def slow(event: Any) -> None:
        time.sleep(delay)

    requests = 30
    with serve_in_thread(hello, event_handlers=[slow]) as running, httpx.Client() as client:
        client.get(running.url + "/warm-up")
        started = time.perf_counter()
        for _ in range(requests):
            assert client.get(running.url + "/").status_code == 200
        elapsed = time.perf_counter() - started
    # Inline, the handler would cost at least delay * 2 events * requests = 3 s.
    assert elapsed < requests * delay, elapsed


def test_a_failing_handler_is_logged_once_and_others_still_get_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("boom")

    seen = Collector()
    with (
        propagating("pounce.error"),
        caplog.at_level("ERROR", logger="pounce.error"),
        serve_in_thread(hello) as running,
    ):
        running.server.subscribe(broken, kinds=(RequestCompleted,))
        running.server.subscribe(seen, kinds=(RequestCompleted,))
        for _ in range(3):
            assert httpx.get(running.url + "/").status_code == 200
        assert wait_until(lambda: len(seen.events) == 3)
    failures = [r for r in caplog.records if "Event handler" in r.getMessage()]
    assert len(failures) == 1
    assert "boom" in (failures[0].exc_text or "")


def test_a_full_buffer_drops_and_counts() -> None:
    hub = EventHub(buffer_size=2)
    seen = Collector()
    hub.subscribe(seen)
    for n in range(5):
        hub.publish(ReloadStarted(generation=n))
    assert hub.stats()["events_dropped"] == 3
    assert hub.stats()["event_subscribers"][0]["queued"] == 2
    hub.start()
    hub.stop()
    assert [e.generation for e in seen.events] == [0, 1]


def test_server_stats_count_dropped_events() -> None:
    release = threading.Event()

    def stuck(event: Any) -> None:
        release.wait(10)

    with serve_in_thread(hello) as running:
        running.server._events._buffer_size = 1  # a tiny buffer: the second event is dropped
        running.server.subscribe(stuck, kinds=(RequestStarted,))
        for _ in range(4):
            httpx.get(running.url + "/")
        assert wait_until(lambda: running.server.stats()["events_dropped"] >= 2)
        release.set()


def test_lifecycle_order_with_a_reload_in_thread_mode(tmp_path: Path) -> None:
    module = f"events_app_{next(_names)}"
    (tmp_path / f"{module}.py").write_text(APP)
    seen = Collector()
    with serve_in_thread(
        f"{module}:app",
        app_dir=str(tmp_path),
        workers=2,
        worker_type="thread",
        event_handlers=[],
    ) as running:
        running.server.subscribe(seen, kinds=LIFECYCLE)
        running.server.reload()
        assert wait_until(lambda: len(seen.of(WorkerStopped)) == 2, 20)
        # A reload that cannot import keeps the generation serving.
        (tmp_path / f"{module}.py").write_text("def broken(:\n")
        stamp = time.time() + 5
        os.utime(tmp_path / f"{module}.py", (stamp, stamp))
        running.server.reload()
        assert wait_until(lambda: seen.of(ReloadFailed), 20)
    names = [
        (type(e).__name__, getattr(e, "generation", None))
        for e in seen.events
    ]
    # Subscribed after the start: the first generation's start is not seen.
    assert names == [
        ("ReloadStarted", 1),
        ("WorkerStarted", 2),
        ("WorkerStarted", 2),
        ("ReloadCompleted", 2),
        ("WorkerStopped", 1),
        ("WorkerStopped", 1),
        ("ReloadStarted", 2),
        ("ReloadFailed", None),
        ("ServerStopping", None),
        ("WorkerStopped", 2),
        ("WorkerStopped", 2),
        ("ServerStopped", None),
    ]


def test_start_and_stop_order_from_event_handlers() -> None:
    seen = Collector()
    with serve_in_thread(hello, workers=2, worker_type="thread", event_handlers=[seen]) as r:
        httpx.get(r.url + "/")
    lifecycle = [type(e).__name__ for e in seen.events if type(e) in LIFECYCLE]
    assert lifecycle == [
        "WorkerStarted",
        "WorkerStarted",
        "ServerStarted",
        "ServerStopping",
        "WorkerStopped",
        "WorkerStopped",
        "ServerStopped",
    ]
    stopped = seen.of(ServerStopped)[0]
    assert stopped.requests_total == 1
    assert sum(e.requests for e in seen.of(WorkerStopped)) == 1


def test_process_mode_reports_server_and_worker_lifecycle() -> None:
    seen = Collector()
    with serve_in_thread(
        "tests.apps:hello", workers=2, worker_type="process", event_handlers=[seen]
    ) as running:
        assert httpx.get(running.url + "/").status_code == 200
    lifecycle = [type(e).__name__ for e in seen.events if type(e) in LIFECYCLE]
    assert lifecycle == [
        "WorkerStarted",
        "WorkerStarted",
        "ServerStarted",
        "ServerStopping",
        "WorkerStopped",
        "WorkerStopped",
        "ServerStopped",
    ]
    assert {e.kind for e in seen.of(WorkerStarted)} == {"process"}


def test_process_workers_send_request_events_to_the_parents_subscribers(protocol: str) -> None:
    seen = Collector()
    with serve_in_thread(
        # The distributor hands connections out in turn: on a busy machine one process could
        # otherwise take every connection from the shared queue.
        "tests.apps:hello", workers=2, worker_type="process", accept="distributor",
        event_handlers=[seen],
    ) as running:
        # New connections each time, so both workers serve some of them.
        for index in range(20):
            assert fetch(running.url, f"/r{index}", protocol=protocol).status == 200
        assert wait_until(lambda: len(seen.of(RequestCompleted)) == 20, timeout=5)
        completed = seen.of(RequestCompleted)
        assert sorted(e.path for e in completed) == sorted(f"/r{i}" for i in range(20))
        assert {e.status for e in completed} == {200}
        assert {e.http_version for e in completed} == {http_version(protocol)}
        assert len(seen.of(RequestStarted)) == 20
        assert len(seen.of(ConnectionOpened)) == 20
        # Both processes served (and so sent) some of them.
        assert wait_until(
            lambda: all(w["requests"] > 0 for w in running.server.stats()["workers"])
        )


def test_process_workers_forward_only_while_someone_listens() -> None:
    with serve_in_thread("tests.apps:hello", workers=1, worker_type="process") as running:
        server = running.server
        httpx.get(running.url + "/before")
        seen = Collector()
        unsubscribe = server.subscribe(seen, kinds=(RequestCompleted,))
        # The worker picks up the wanted kinds at its next heartbeat.
        assert wait_until(
            lambda: httpx.get(running.url + "/during").status_code == 200
            and any(e.path == "/during" for e in seen.events),
            timeout=5,
        )
        assert {type(e) for e in seen.events} == {RequestCompleted}
        assert not any(e.path == "/before" for e in seen.events)
        unsubscribe()
        time.sleep(0.3)  # a few heartbeats: the worker stops forwarding
        count = len(seen.events)
        httpx.get(running.url + "/after")
        time.sleep(0.3)
        assert len(seen.events) == count


def test_the_last_requests_of_a_stopping_process_worker_are_not_lost() -> None:
    seen = Collector()
    with serve_in_thread(
        "tests.apps:hello", workers=1, worker_type="process", event_handlers=[seen]
    ) as running:
        for index in range(5):
            httpx.get(f"{running.url}/{index}")
    # The server stopped right after the requests: their events still arrived.
    assert len(seen.of(RequestCompleted)) == 5


async def _waits_for_disconnect(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive())["type"] != "http.disconnect":
        pass


def test_client_disconnected_is_reported() -> None:
    seen = Collector()
    with serve_in_thread(_waits_for_disconnect, lifespan="off") as running:
        running.server.subscribe(seen, kinds=(ClientDisconnected, RequestCompleted))
        assert wait_until(lambda: all(c.events.active for c in _worker_contexts(running.server)))
        sock = socket.create_connection(address(running.url))
        sock.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        # A reset, not a half-close: the connection is gone at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert wait_until(lambda: len(seen.events) == 2)
    gone, completed = seen.events
    assert isinstance(gone, ClientDisconnected)
    assert (gone.path, gone.response_started) == ("/gone", False)
    assert isinstance(completed, RequestCompleted)
    assert completed.complete is False


def test_a_reset_http2_stream_is_a_client_disconnect() -> None:
    seen = Collector()
    with serve_in_thread(_waits_for_disconnect, lifespan="off") as running:
        running.server.subscribe(seen, kinds=(ClientDisconnected, RequestCompleted))
        assert wait_until(lambda: all(c.events.active for c in _worker_contexts(running.server)))
        with ProtocolClient(running.url, "h2") as client:
            gone = client.send("GET", "/gone")
            time.sleep(0.2)
            client.cancel(gone)  # RST_STREAM: the connection stays
            assert wait_until(lambda: len(seen.events) == 2)
            still = client.send("GET", "/still")
            time.sleep(0.1)
            client.cancel(still)
            assert wait_until(lambda: len(seen.events) == 4)
    gone_event, completed = seen.events[:2]
    assert isinstance(gone_event, ClientDisconnected)
    assert (gone_event.path, gone_event.response_started) == ("/gone", False)
    assert isinstance(completed, RequestCompleted)
    assert (completed.complete, completed.http_version) == (False, "2")
    assert seen.events[2].path == "/still"


def test_events_serialise_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    lock = threading.Lock()

    def ship(event: Any) -> None:
        record = {"event": type(event).__name__, **dataclasses.asdict(event)}
        line = json.dumps(record, default=lambda v: v.decode("latin-1"))
        with lock, out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    with serve_in_thread(hello, event_handlers=[ship]) as running:
        httpx.get(running.url + "/json")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["event"] == "WorkerStarted"
    assert records[-1]["event"] == "ServerStopped"
    completed = [r for r in records if r["event"] == "RequestCompleted"]
    assert completed[0]["path"] == "/json"
    assert completed[0]["status"] == 200


def test_every_public_event_is_exported() -> None:
    for kind in events.ALL_EVENT_TYPES:
        assert getattr(events, kind.__name__) is kind


def test_event_handlers_in_the_config() -> None:
    from pounce.config import ConfigError, ServerConfig

    seen = Collector()
    config = ServerConfig(
        app="tests.apps:hello", host="127.0.0.1", port=0, access_log=False, gc_freeze=False,
        event_handlers=[seen],
    )
    server = pounce.Server(config)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        assert server.started.wait(10) and server.startup_error is None
        httpx.get(server.bound_addresses[0] + "/cfg")
        assert wait_until(lambda: seen.of(RequestCompleted))
    finally:
        server.shutdown()
        thread.join(10)
    assert seen.of(ServerStarted) and seen.of(ServerStopped)
    # Callables only come from Python: no flag, variable or file key; pickling drops them.
    import pickle

    assert pickle.loads(pickle.dumps(config)).event_handlers == ()
    with pytest.raises(ConfigError, match="must be callable"):
        ServerConfig(event_handlers=["not callable"])
