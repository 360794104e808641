"""``--max-concurrency``, ``--max-queue``, ``--queue-timeout`` through real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tests.helpers import ProtocolClient, RawClient, wait_until

from pounce.pipeline.events import REJECTED_QUEUE_FULL, RequestCompleted, RequestRejected
from pounce.testing import serve, serve_in_thread

SLEEP = 0.5
LONG = 3.0
#: Holds the only slot while a test probes other processes: long enough for a busy machine.
LONGER = 10.0
entered: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sleeps SLEEP seconds on /slow; answers with when the app ran (system-wide clock)."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    entered.append(scope["path"])
    began = time.monotonic()
    if scope["path"] == "/slow":
        await asyncio.sleep(SLEEP)
    elif scope["path"] == "/long":
        await asyncio.sleep(LONG)
    elif scope["path"] == "/longer":
        await asyncio.sleep(LONGER)
    elif scope["path"] == "/hold":
        # Tells the test which worker process holds the slot, then holds it for good.
        with open(os.environ["QUEUE_TEST_PID_FILE"], "w") as file:
            file.write(str(os.getpid()))
        await asyncio.sleep(60)
    body = json.dumps({"began": began, "ended": time.monotonic(), "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(autouse=True)
def _fresh() -> None:
    entered.clear()


def _get(url: str, protocol: str = "http/1.1", timeout: float = 10) -> httpx.Response:
    """One request with httpx on a connection of its own: HTTP/1.1, or HTTP/2 by prior
    knowledge when *protocol* is ``h2``."""
    h2 = protocol == "h2"
    with httpx.Client(http1=not h2, http2=h2, timeout=timeout) as client:
        response = client.get(url)
    assert response.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
    return response


def _fetch_all(
    url: str, count: int, path: str = "/slow", protocol: str = "http/1.1"
) -> list[httpx.Response]:
    responses: list[httpx.Response | BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            result: httpx.Response | BaseException = _get(url + path, protocol, timeout=20)
        except BaseException as exc:  # every client must get an answer: recorded, then failed
            result = exc
        with lock:
            responses.append(result)

    clients = [threading.Thread(target=one) for _ in range(count)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert all(isinstance(r, httpx.Response) for r in responses), responses
    return [r for r in responses if isinstance(r, httpx.Response)]


def _peak_overlap(responses: list[httpx.Response]) -> int:
    marks: list[tuple[float, int]] = []
    for r in responses:
        if r.status_code == 200:
            times = r.json()
            marks += [(times["began"], 1), (times["ended"], -1)]
    inside = peak = 0
    for _, step in sorted(marks, key=lambda m: (m[0], m[1])):
        inside += step
        peak = max(peak, inside)
    return peak


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_server_wide_limit_and_shedding(worker_type: str, protocol: str) -> None:
    with serve(
        "tests.features.test_request_queue:app",
        workers=2,
        worker_type=worker_type,
        max_concurrency=2,
        max_queue=4,
        queue_timeout=10,
        lifespan="off",
    ) as url:
        responses = _fetch_all(url, 10, protocol=protocol)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
    # Never more than --max-concurrency inside the app at once, across the workers.
    assert 1 <= _peak_overlap(responses) <= 2
    # One queue for both workers, threads or processes: 2 in the app, 4 waiting, 4 shed.
    assert statuses.count(200) == 6 and statuses.count(503) == 4


def test_process_workers_share_the_slots_and_the_queue() -> None:
    """Two requests on one HTTP/2 connection reach the same process: with N=2 over two
    processes both run at once (a per-process split would give that process one slot), and
    the queue behind them is the server's: 4 more wait, wherever they landed."""

    async def both_on_one_connection(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as client:
            return list(await asyncio.gather(*(client.get(url + "/slow") for _ in range(2))))

    with serve(
        "tests.features.test_request_queue:app",
        workers=2,
        worker_type="process",
        max_concurrency=2,
        max_queue=4,
        queue_timeout=10,
        lifespan="off",
    ) as url:
        same = asyncio.run(both_on_one_connection(url))
        assert [r.status_code for r in same] == [200, 200]
        assert len({r.json()["pid"] for r in same}) == 1
        assert _peak_overlap(same) == 2
        spread = _fetch_all(url, 10)
    statuses = sorted(r.status_code for r in spread)
    assert statuses.count(200) == 6 and statuses.count(503) == 4
    assert _peak_overlap(spread) == 2


def test_queue_timeout(protocol: str) -> None:
    with serve(app, max_concurrency=1, queue_timeout=0.2, lifespan="off") as url:
        slow = threading.Thread(target=_get, args=(url + "/slow", protocol))
        slow.start()
        assert wait_until(lambda: "/slow" in entered)
        began = time.monotonic()
        response = _get(url + "/fast", protocol)
        waited = time.monotonic() - began
        slow.join(10)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert waited >= 0.18  # the queue has room (100): a 503 can only be the timeout
    assert "/fast" not in entered


def test_probes_bypass_the_queue_and_readiness_follows_shedding(protocol: str) -> None:
    with serve(
        app, max_concurrency=1, max_queue=0, health_path="/health", ready_path="/ready",
        lifespan="off",
    ) as url:
        assert _get(url + "/ready", protocol).status_code == 200
        slow = threading.Thread(target=_get, args=(url + "/slow", protocol))
        slow.start()
        assert wait_until(lambda: "/slow" in entered)
        assert _get(url + "/fast", protocol).status_code == 503
        ready = _get(url + "/ready", protocol)
        health = _get(url + "/health", protocol)
        assert (ready.status_code, ready.text) == (503, "not ready")
        assert health.status_code == 200
        slow.join(10)
        # A second without a shed (and the slot free again): ready.
        assert wait_until(lambda: _get(url + "/ready", protocol).status_code == 200, timeout=3)


def test_readiness_is_server_wide_with_process_workers() -> None:
    """A shed in one process makes every process's readiness probe say "not ready"."""
    with ThreadPoolExecutor(1) as pool, serve(
        "tests.features.test_request_queue:app", workers=2, worker_type="process",
        max_concurrency=1, max_queue=0, ready_path="/ready", lifespan="off",
    ) as url:
        long = pool.submit(httpx.get, url + "/longer", timeout=30)
        # The slot is taken once some request is shed (max_queue 0: nothing waits). The
        # request holding it lasts long enough for a loaded machine to get here in time.
        assert wait_until(lambda: httpx.get(url + "/fast").status_code == 503, LONGER - 3)
        # Fresh connections: the kernel spreads them over both processes.
        probes = [httpx.get(url + "/ready").status_code for _ in range(12)]
        long.result(timeout=30)
    assert probes == [503] * 12


def test_a_client_gone_while_queued_leaves_no_slot_behind() -> None:
    with serve(app, max_concurrency=1, max_queue=5, queue_timeout=30, lifespan="off") as url:
        slow = threading.Thread(target=httpx.get, args=(url + "/slow",), kwargs={"timeout": 10})
        slow.start()
        assert wait_until(lambda: "/slow" in entered)
        for _ in range(3):
            with RawClient(url) as gone:
                gone.request("GET", "/gone")
        began = time.monotonic()
        response = httpx.get(url + "/after", timeout=10)
        slow.join(10)
    assert response.status_code == 200
    # Not held up by a leaked slot (that would wait out the 30 s queue timeout, then 503).
    assert time.monotonic() - began < 10
    assert "/gone" not in entered


def test_an_http2_stream_reset_while_queued_leaves_the_queue() -> None:
    """RST_STREAM on a queued stream takes it out of the queue; the connection carries on."""
    with serve(
        app, max_concurrency=1, max_queue=5, queue_timeout=30, metrics=True, lifespan="off"
    ) as url, ProtocolClient(url, "h2") as client:
        slow = client.send("GET", "/slow")
        assert wait_until(lambda: "/slow" in entered)
        gone = [client.send("GET", "/gone") for _ in range(3)]
        assert wait_until(lambda: _queue_depth(url) == 3, 5)
        for handle in gone:
            client.cancel(handle)
        assert wait_until(lambda: _queue_depth(url) == 0, 5)
        began = time.monotonic()
        after = client.send("GET", "/after")
        assert client.response(slow).status == 200
        assert client.response(after, timeout=10).status == 200
    # Not held up by a leaked slot (that would wait out the 30 s queue timeout, then 503).
    assert time.monotonic() - began < 10
    assert "/gone" not in entered


def _queue_depth(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pounce_queue_depth":
                return float(sample.value)
    raise AssertionError("no pounce_queue_depth in the scrape")


def test_streams_of_one_http2_connection_queue_and_the_excess_is_shed() -> None:
    """One slot, one place in the queue: of three streams on one connection one runs, one
    waits for it, and the third gets 503 with Retry-After on its own stream."""
    with serve(app, max_concurrency=1, max_queue=1, lifespan="off") as url, \
            ProtocolClient(url, "h2") as client:
        handles = [client.send("GET", "/slow") for _ in range(3)]
        responses = [client.response(handle, timeout=10) for handle in handles]
        again = client.fetch("GET", "/fast")  # the connection is still good
    assert sorted(r.status for r in responses) == [200, 200, 503]
    shed = next(r for r in responses if r.status == 503)
    assert shed.reset is None and shed.header(b"retry-after") == b"1"
    served = sorted((json.loads(r.body) for r in responses if r.status == 200),
                    key=lambda times: times["began"])
    assert served[1]["began"] >= served[0]["ended"]  # the second waited for the slot
    assert again.status == 200
    assert entered.count("/slow") == 2


def test_events_report_the_wait_and_the_shed(protocol: str) -> None:
    events: list[Any] = []
    with serve_in_thread(
        app, max_concurrency=1, max_queue=1, lifespan="off", event_handlers=[events.append]
    ) as running:
        responses = _fetch_all(running.url, 3, protocol=protocol)
        assert wait_until(lambda: sum(isinstance(e, RequestCompleted) for e in events) == 3)
    assert sorted(r.status_code for r in responses) == [200, 200, 503]
    completed = sorted(
        (e for e in events if isinstance(e, RequestCompleted) and e.status == 200),
        key=lambda e: e.queue_wait,
    )
    assert completed[0].queue_wait == 0.0
    assert {e.http_version for e in events if isinstance(e, RequestCompleted)} == {
        "2" if protocol == "h2" else "1.1"
    }
    assert completed[1].queue_wait >= SLEEP * 0.8
    assert [e.reason for e in events if isinstance(e, RequestRejected)] == [REJECTED_QUEUE_FULL]


def test_websocket_handshakes_are_refused_while_shedding() -> None:
    pytest.importorskip("websockets")
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with serve(app, max_concurrency=1, max_queue=0, lifespan="off") as url:
        ws_url = "ws" + url[len("http"):] + "/ws"
        with connect(ws_url, open_timeout=5) as ws:  # no slot taken: the queue is empty
            pass
        del ws
        slow = threading.Thread(target=httpx.get, args=(url + "/slow",), kwargs={"timeout": 10})
        slow.start()
        assert wait_until(lambda: "/slow" in entered)
        assert httpx.get(url + "/fast").status_code == 503
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=5)
        slow.join(10)
    assert refused.value.response.status_code == 503


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_of_a_new_generation_share_the_slots(worker_type: str) -> None:
    """A rolling reload keeps the queue: the new generation waits for the old one's slot."""
    with serve_in_thread(
        "tests.features.test_request_queue:app", workers=2, worker_type=worker_type,
        max_concurrency=1, queue_timeout=20, lifespan="off",
    ) as running:
        supervisor = running.server._supervisor
        assert supervisor is not None
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(httpx.get, running.url + "/long", timeout=20)
            time.sleep(0.3)  # inside the app, holding the only slot
            running.server.reload()
            assert wait_until(lambda: supervisor.reloads == 1, 20)
            after = httpx.get(running.url + "/fast", timeout=20)
            held = long.result(timeout=20)
    assert held.status_code == 200 and after.status_code == 200
    # The new generation's request only got into the app once the old one's left it.
    assert after.json()["began"] >= held.json()["ended"]


def test_a_killed_worker_process_gives_its_slot_back(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor reclaims what a dead worker held: the next request is served."""
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("QUEUE_TEST_PID_FILE", str(pid_file))
    with ThreadPoolExecutor(1) as pool, serve(
        "tests.features.test_request_queue:app", workers=2, worker_type="process",
        max_concurrency=1, queue_timeout=5, lifespan="off",
    ) as url:
        held = pool.submit(httpx.get, url + "/hold", timeout=20)
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 10)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(httpx.HTTPError):
            held.result(timeout=20)
        after = httpx.get(url + "/fast", timeout=20)
    # Without the reclaim the only slot stays taken and this waits 5 s for a 503.
    assert after.status_code == 200


def test_a_graceful_shutdown_serves_the_queued_requests(protocol: str) -> None:
    with ThreadPoolExecutor(3) as pool, serve_in_thread(
        app, workers=2, worker_type="thread", max_concurrency=1, timeout_graceful_shutdown=10,
        lifespan="off",
    ) as running:
        futures = [pool.submit(_get, running.url + "/slow", protocol, 20) for _ in range(3)]
        assert wait_until(lambda: len(entered) == 1)
        time.sleep(0.1)  # the other two are queued by now
        assert len(entered) == 1
        # Leaving the block shuts the server down gracefully with two requests still queued.
    # Served one after the other: the queue drained during the shutdown, nobody got a 503.
    assert [f.result(timeout=20).status_code for f in futures] == [200, 200, 200]
    assert entered == ["/slow"] * 3


def test_a_graceful_shutdown_serves_the_queued_streams_of_one_http2_connection() -> None:
    """Queued streams are in flight: the GOAWAY waits for them, and none is refused."""
    with serve_in_thread(
        app, max_concurrency=1, timeout_graceful_shutdown=10, lifespan="off"
    ) as running, ProtocolClient(running.url, "h2", timeout=20) as client:
        handles = [client.send("GET", "/slow") for _ in range(3)]
        assert wait_until(lambda: len(entered) == 1)
        time.sleep(0.1)  # the other two are queued by now
        stopper = threading.Thread(target=running.server.shutdown)
        stopper.start()
        responses = [client.response(handle, timeout=20) for handle in handles]
        stopper.join(20)
    assert [(r.status, r.reset) for r in responses] == [(200, None)] * 3
    assert entered == ["/slow"] * 3
