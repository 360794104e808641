"""``--metrics`` through real sockets, in thread and process mode, and the endpoint alone."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from tests.apps import Recorder, read_body
from tests.helpers import ProtocolClient, RawClient, fetch, http_version, wait_until
from tests.pipeline.fakes import INFO

from pounce.pipeline.metrics import MetricsEndpoint
from pounce.testing import serve, serve_in_thread

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
MODES = [
    pytest.param({"workers": 2, "worker_type": "thread"}, id="thread"),
    # The distributor hands connections out in turn, so both workers get traffic.
    pytest.param({"workers": 2, "worker_type": "process", "accept": "distributor"}, id="process"),
]

release = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Says which worker answered (process id and thread); /echo, /missing and /hold too."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    status = 200
    path = scope["path"]
    if path == "/echo":
        answer = body
    elif path == "/missing":
        status, answer = 404, b"no"
    elif path == "/hold":
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        answer = b"held"
    elif path == "/sleep":  # a held request for process workers, where release is not seen
        await asyncio.sleep(1.0)
        answer = b"slept"
    else:
        answer = f"{os.getpid()}:{threading.current_thread().name}".encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": answer})


def parse(text: str, *, openmetrics: bool = False) -> Samples:
    families = (parse_openmetrics if openmetrics else parse_prometheus)(text)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }


def requests_of(found: Samples, method: str, status: str, version: str = "1.1") -> float:
    labels = (("http_version", version), ("method", method), ("status", status))
    return found.get(("pounce_requests_total", labels), 0.0)


class Scraper:
    """Scrapes through the main port and keeps what a later scrape must add up to."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: Scrapes answered so far: each is a GET 2xx that counts, with its body bytes.
        self.count = 0
        self.bytes = 0

    def who_then_scrape(self) -> tuple[str, Samples]:
        """Ask a worker who it is, then scrape on the same connection: that worker answers."""
        with RawClient(self.url) as client:
            client.request("GET", "/who")
            who = client.read_response().body.decode()
            client.request("GET", "/metrics")
            response = client.read_response()
        assert response.status == 200
        assert response.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
        self.count += 1
        self.bytes += len(response.body)
        return who, parse(response.body.decode())


@pytest.fixture(autouse=True)
def released() -> Iterator[None]:
    release.clear()
    yield
    release.set()


@pytest.mark.parametrize("mode", MODES)
def test_every_scrape_counts_every_worker(mode: dict[str, Any]) -> None:
    with serve_in_thread(app, metrics=True, **mode) as running:
        url = running.url
        scraper = Scraper(url)
        workers: set[str] = set()
        gets = 0
        for _ in range(40):  # fresh connections until both workers answered
            with RawClient(url) as client:
                client.request("GET", "/who")
                workers.add(client.read_response().body.decode())
            gets += 1
            if len(workers) == 2 and gets >= 6:
                break
        assert len(workers) == 2, workers
        echoed = 0
        for size in (100, 2000, 7):
            response = httpx.post(url + "/echo", content=b"x" * size)
            assert response.content == b"x" * size
            echoed += size
        assert httpx.get(url + "/missing").status_code == 404
        with RawClient(url) as client:
            client.request("BREW", "/pot")
            assert client.read_response().status == 200
        with RawClient(url) as client:
            client.request("GET", "/old", headers=[], version="1.0")
            assert client.read_response().status == 200
        with RawClient(url) as client:  # malformed: never reaches the app
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
            assert client.read_response().status == 400
        answered_by: set[str] = set()

        def consistent(found: Samples) -> bool:
            # GETs to the app (/who), and the scrapes answered before this one. A request
            # is counted just after its response went out: a scrape racing the other
            # worker's last one may miss it, and the next attempt sees it.
            return (
                requests_of(found, "GET", "2xx") == gets + scraper.count - 1
                and requests_of(found, "GET", "4xx") == 1
                and requests_of(found, "POST", "2xx") == 3
                and requests_of(found, "other", "2xx") == 1
                and requests_of(found, "GET", "2xx", "1.0") == 1
                and found["pounce_request_body_bytes_total", ()] == echoed
                and found["pounce_requests_rejected_total", (("reason", "malformed"),)] == 1
                and found["pounce_workers", (("state", "serving"),)] == 2
            )

        for _ in range(60):
            who, found = scraper.who_then_scrape()
            gets += 1  # the /who request before the scrape
            if consistent(found):
                answered_by.add(who)
                total = sum(v for (name, _), v in found.items() if name == "pounce_requests_total")
                assert found["pounce_request_duration_seconds_count", ()] == total
            if answered_by == workers and scraper.count >= 4:
                break
        assert answered_by == workers  # a scrape answered by either worker saw both
        processes = {
            labels for name, labels in found if name == "process_resident_memory_bytes"
        }
        roles = sorted(dict(labels)["process"] for labels in processes)
        assert roles == (["main", "worker", "worker"] if "process" in str(mode) else ["main"])


@pytest.mark.parametrize("mode", MODES)
def test_response_bytes_cover_app_bodies_and_scrapes(mode: dict[str, Any]) -> None:
    with serve_in_thread(app, metrics=True, **mode) as running:
        url = running.url
        for size in (10, 300):
            httpx.post(url + "/echo", content=b"y" * size)
        scraped = 0

        def adds_up() -> bool:
            nonlocal scraped
            response = httpx.get(url + "/metrics")
            found = parse(response.text)
            matches = (
                found["pounce_response_body_bytes_total", ()] == 310 + scraped
                and found["pounce_request_body_bytes_total", ()] == 310
            )
            scraped += len(response.content)
            return matches and scraped > len(response.content)  # a scrape was counted too

        assert wait_until(adds_up, 5.0, 0.02)


@pytest.mark.parametrize("mode", MODES)
def test_gauges_show_what_is_open_now(mode: dict[str, Any]) -> None:
    with serve_in_thread(app, metrics=True, **mode) as running:
        url = running.url

        def gauges() -> Samples:
            return parse(httpx.get(url + "/metrics").text)

        with RawClient(url) as held:
            held.request("GET", "/hold")
            assert wait_until(
                lambda: gauges()["pounce_requests_in_flight", ()] == 1
                and gauges()["pounce_connections_open", ()] >= 1,
                5.0,
                0.05,
            )
            release.set()
            assert held.read_response().body == b"held"
        assert wait_until(lambda: gauges()["pounce_requests_in_flight", ()] == 0, 5.0, 0.05)
        found = gauges()
        assert found["pounce_http2_streams_open", ()] == 0
        assert found["pounce_queue_depth", ()] == 0


def test_openmetrics_when_the_scraper_asks_for_it(protocol: str) -> None:
    with serve(app, metrics=True) as url:
        fetch(url, "/who", protocol=protocol)
        response = fetch(url, "/metrics", [("accept", OPENMETRICS_ACCEPT)], protocol=protocol)
        plain = fetch(url, "/metrics", [("accept", "text/plain")], protocol=protocol)
    assert response.header_values(b"content-type") == [
        b"application/openmetrics-text; version=1.0.0; charset=utf-8"
    ]
    text = response.body.decode()
    assert text.endswith("# EOF\n")
    found = parse(text, openmetrics=True)
    assert requests_of(found, "GET", "2xx", http_version(protocol)) == 1
    assert plain.header_values(b"content-type") == [b"text/plain; version=0.0.4; charset=utf-8"]
    assert "# EOF" not in plain.body.decode()


def test_other_methods_get_405_and_head_gets_the_length(protocol: str) -> None:
    recorder = Recorder()
    with serve(recorder, metrics=True) as url:
        response = fetch(url, "/metrics", method="POST", body=b"x", protocol=protocol)
        head = fetch(url, "/metrics", method="HEAD", protocol=protocol)
        found = parse(httpx.get(url + "/metrics").text)
    assert response.status == 405
    assert response.header(b"allow") == b"GET, HEAD"
    assert head.status == 200 and head.body == b""
    assert int(head.header(b"content-length") or 0) > 0
    assert recorder.calls == []  # nothing reached the app
    assert found["pounce_requests_rejected_total", (("reason", "method_not_allowed"),)] == 1
    version = http_version(protocol)
    assert requests_of(found, "POST", "4xx", version) == 1
    assert requests_of(found, "HEAD", "2xx", version) == 1


def test_off_by_default_the_path_is_the_apps() -> None:
    recorder = Recorder()
    with serve(recorder) as url:
        response = httpx.get(url + "/metrics")
    assert response.text == "seen /metrics"
    assert recorder.paths == [b"/metrics"]


def test_metrics_path_and_root_path() -> None:
    with serve(app, metrics=True, metrics_path="/internal/prom", root_path="/api") as url:
        assert httpx.get(url + "/internal/prom").headers["content-type"].startswith("text/plain;")
        assert httpx.get(url + "/metrics").text.endswith(":pounce-worker-1.0")


@pytest.mark.parametrize("mode", MODES)
def test_metrics_bind_serves_from_the_supervisor_only(mode: dict[str, Any]) -> None:
    recorder = Recorder()
    with serve_in_thread(
        recorder, metrics=True, metrics_bind="127.0.0.1:0", **mode
    ) as running:
        metrics_url = running.server.metrics_url
        assert metrics_url is not None and metrics_url.endswith("/metrics")
        assert metrics_url != running.url + "/metrics"
        # The main port passes the path to the app.
        for _ in range(4):
            assert httpx.get(running.url + "/metrics").text == "seen /metrics"
        # Counted just after the response went out: the last one may take a moment.
        assert wait_until(
            lambda: requests_of(parse(httpx.get(metrics_url).text), "GET", "2xx") == 4, 3.0
        )
        response = httpx.get(metrics_url)
        openmetrics = httpx.get(metrics_url, headers={"accept": OPENMETRICS_ACCEPT})
        head = httpx.head(metrics_url)
        post = httpx.post(metrics_url, content=b"x")
        elsewhere = httpx.get(metrics_url.removesuffix("/metrics") + "/other")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert requests_of(parse(response.text), "GET", "2xx") == 4
    assert requests_of(parse(openmetrics.text, openmetrics=True), "GET", "2xx") == 4
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert elsewhere.status_code == 404
    if mode["worker_type"] == "thread":  # process workers record in their own memory
        assert len(recorder.calls) == 4


def test_a_taken_metrics_address_stops_the_start() -> None:
    import socket

    from pounce.errors import StartupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match="--metrics-bind"), serve(
            app, metrics=True, metrics_bind=f"127.0.0.1:{port}"
        ):
            pass


def test_counts_survive_a_crashed_process_worker() -> None:
    with serve_in_thread(
        app, metrics=True, workers=2, worker_type="process", accept="distributor"
    ) as running:
        url = running.url
        pids = set()
        for _ in range(10):
            pids.add(httpx.get(url + "/who").text.split(":")[0])
        before = parse(httpx.get(url + "/metrics").text)
        victim = int(sorted(pids)[0])
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            try:
                found = parse(httpx.get(url + "/metrics").text)
            except httpx.HTTPError:  # handed to the dead worker before it was seen gone
                return False
            return (
                found["pounce_worker_restarts_total", (("reason", "crashed"),)] == 1
                and found["pounce_workers", (("state", "serving"),)] == 2
            )

        assert wait_until(replaced, 15.0, 0.1)
        after = parse(httpx.get(url + "/metrics").text)
        workers = {
            dict(labels)["pid"] for name, labels in after
            if name == "process_open_fds" and dict(labels)["process"] == "worker"
        }
    # Nothing counted before the crash is lost (the scrapes since then only add).
    assert requests_of(after, "GET", "2xx") >= requests_of(before, "GET", "2xx") + 1
    assert requests_of(before, "GET", "2xx") >= 10
    assert str(victim) not in workers and len(workers) == 2


def test_counts_survive_a_rolling_reload() -> None:
    with serve_in_thread(
        "pounce.examples.hello:app", metrics=True, workers=2, worker_type="thread"
    ) as running:
        url = running.url
        for _ in range(5):
            httpx.get(url + "/")
        running.server.reload()

        def reloaded() -> bool:
            # Every request is answered, also on a new connection made while a generation
            # retires (tests/workers/test_reload_no_drop.py).
            found = parse(httpx.get(url + "/metrics").text)
            return (
                found["pounce_reloads_total", (("result", "completed"),)] == 1
                and found["pounce_workers", (("state", "draining"),)] == 0
            )

        assert wait_until(reloaded, 15.0, 0.1)
        found = parse(httpx.get(url + "/metrics").text)
    assert requests_of(found, "GET", "2xx") >= 5 + 1
    assert found["pounce_workers", (("state", "serving"),)] == 2


def test_websockets_are_counted() -> None:
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (await receive())["type"] != "websocket.disconnect":
                pass
        elif scope["type"] == "http":
            await app(scope, receive, send)

    with serve(ws_app, metrics=True) as url:

        def found() -> Samples:
            return parse(httpx.get(url + "/metrics").text)

        with connect(url.replace("http://", "ws://") + "/ws"):
            assert wait_until(lambda: found()["pounce_websockets_open", ()] == 1, 3.0, 0.05)
        assert wait_until(lambda: found()["pounce_websockets_open", ()] == 0, 3.0, 0.05)
        final = found()
    assert final["pounce_websockets_total", ()] == 1
    assert requests_of(final, "GET", "1xx") == 1  # the handshake's 101


# -- the endpoint hook alone ----------------------------------------------------------------


class FakeExposition:
    def __init__(self) -> None:
        self.sampled = 0
        self.asked: list[bool] = []

    def sample(self) -> None:
        self.sampled += 1

    def render(self, openmetrics: bool = False) -> tuple[bytes, bytes]:
        self.asked.append(openmetrics)
        return b"text/x-test", b"figures"


def endpoint_scope(method: str = "GET", path: str = "/metrics", **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [], **extra}


def test_the_hook_answers_only_its_path() -> None:
    ctx = type("Ctx", (), {"root_path": ""})()
    recorder = FakeExposition()
    hook = MetricsEndpoint(ctx, recorder, "/metrics", recorder.sample)  # type: ignore[arg-type]
    assert hook.admit(endpoint_scope(path="/metricsx"), INFO) is None
    assert hook.admit(endpoint_scope(type="websocket"), INFO) is None
    refused = hook.admit(endpoint_scope("DELETE"), INFO)
    assert refused is not None and refused.status == 405
    scope = endpoint_scope(headers=[(b"accept", b"application/openmetrics-text")])
    answer = hook.admit(scope, INFO)
    assert answer is not None
    assert (answer.status, answer.body, answer.headers) == (
        200, b"figures", ((b"content-type", b"text/x-test"),)
    )
    assert recorder.asked == [True] and recorder.sampled == 1


def test_a_scrape_is_answered_even_at_the_concurrency_limit() -> None:
    with serve(app, metrics=True, limit_concurrency=1) as url, RawClient(url) as busy:
        busy.request("GET", "/hold")
        try:
            assert wait_until(lambda: httpx.get(url + "/other").status_code == 503, 3.0)
            response = httpx.get(url + "/metrics")
            assert response.status_code == 200
            found = parse(response.text)
            assert found["pounce_requests_rejected_total", (("reason", "concurrency_limit"),)] >= 1
        finally:
            release.set()
        assert busy.read_response().body == b"held"


def test_spawned_process_workers_share_the_store_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where fork is unsafe (macOS) workers are spawned: the store is then a named segment
    # that each worker attaches to. Linux forks by default, so spawn is forced here.
    import multiprocessing

    import pounce.workers.server as server_module
    from pounce.workers import processes

    def spawn() -> Any:
        return multiprocessing.get_context("spawn")

    monkeypatch.setattr(processes, "mp_context", spawn)
    monkeypatch.setattr(server_module, "mp_context", spawn)
    with serve_in_thread(
        "pounce.examples.hello:app", metrics=True, workers=2, worker_type="process",
        accept="distributor", startup_timeout=60,
    ) as running:
        url = running.url
        for _ in range(6):
            assert httpx.get(url + "/").status_code == 200

        def counted() -> bool:
            found = parse(httpx.get(url + "/metrics").text)
            workers = [k for k in found if k[0] == "process_open_fds" and "worker" in str(k)]
            # Six requests, plus the scrapes answered before this one.
            return requests_of(found, "GET", "2xx") >= 6 and len(workers) == 2

        assert wait_until(counted, 5.0, 0.05)


@pytest.mark.parametrize("mode", MODES)
def test_http2_streams_and_requests_are_counted(mode: dict[str, Any]) -> None:
    """Streams are requests labelled ``http_version="2"``; the streams gauge shows open ones."""
    with serve_in_thread(app, metrics=True, **mode) as running:
        url = running.url

        def found() -> Samples:  # scraped over HTTP/1.1: the "2" labels are the streams'
            return parse(httpx.get(url + "/metrics").text)

        with ProtocolClient(url, "h2") as client:
            held = client.send("GET", "/sleep")
            assert wait_until(lambda: found()["pounce_http2_streams_open", ()] == 1, 5.0, 0.05)
            assert found()["pounce_requests_in_flight", ()] == 1
            assert client.response(held).body == b"slept"
            assert client.fetch("POST", "/echo", body=b"abc").body == b"abc"
            assert client.fetch("GET", "/missing").status == 404
            assert wait_until(lambda: found()["pounce_http2_streams_open", ()] == 0, 5.0, 0.05)

        def counted(found: Samples) -> bool:
            return (
                requests_of(found, "GET", "2xx", "2") == 1
                and requests_of(found, "POST", "2xx", "2") == 1
                and requests_of(found, "GET", "4xx", "2") == 1
                and found["pounce_request_body_bytes_total", ()] == 3
            )

        # Counted just after the response went out: the last one may take a moment.
        assert wait_until(lambda: counted(found()), 5.0, 0.05)
        # A scrape over HTTP/2 gives the same figures, and counts as a stream itself.
        scrape = fetch(url, "/metrics", protocol="h2")
        assert scrape.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
        assert counted(parse(scrape.body.decode()))
        assert wait_until(lambda: requests_of(found(), "GET", "2xx", "2") == 2, 5.0, 0.05)


def test_the_queue_and_shed_requests_show_and_a_scrape_skips_the_queue(protocol: str) -> None:
    with serve(app, metrics=True, max_concurrency=1, max_queue=1) as url:

        def found() -> Samples:  # answered while the queue is full
            return parse(fetch(url, "/metrics", protocol=protocol).body.decode())

        with ProtocolClient(url, protocol) as held, ProtocolClient(url, protocol) as queued:
            holding = held.send("GET", "/hold")
            assert wait_until(lambda: found()["pounce_requests_in_flight", ()] == 1, 5.0, 0.05)
            waiting = queued.send("GET", "/who")
            assert wait_until(lambda: found()["pounce_queue_depth", ()] == 1, 5.0, 0.05)
            # The queue is full: shed.
            assert fetch(url, "/who", protocol=protocol).status == 503
            shed = found()["pounce_requests_rejected_total", (("reason", "queue_full"),)]
            assert shed == 1
            release.set()
            assert held.response(holding).body == b"held"
            assert queued.response(waiting).status == 200
        assert wait_until(lambda: found()["pounce_queue_wait_seconds_count", ()] == 1, 5.0, 0.05)
        final = found()
    assert final["pounce_queue_depth", ()] == 0
    assert final["pounce_queue_wait_seconds_sum", ()] > 0
