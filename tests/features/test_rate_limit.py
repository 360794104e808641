"""``--rate-limit``: the parser, the keys, the bucket table, the hook, and real servers.

The table is shared by every worker, so beside the unit tests of the bucket arithmetic and the
eviction rules there are stress tests (threads switching every microsecond, forked and spawned
processes on one table) and servers with two workers of each kind, whose clients together must
never be admitted more than the bucket allows.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.apps import hello
from tests.helpers import ProtocolClient, Response, fetch
from tests.pipeline.fakes import make_context, settle, start

from pounce.config import ConfigError, ServerConfig
from pounce.config.values import parse_rate_limit
from pounce.features import rate_limit
from pounce.features.rate_limit import (
    WAYS,
    ClientRateLimiter,
    RateLimitStore,
    client_key,
    ipv6_mask,
)
from pounce.pipeline.admission import RateLimit, admission_hooks
from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.events import REJECTED_RATE_LIMITED, RequestRejected
from pounce.testing import serve, serve_in_thread

V6 = ipv6_mask(64)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def take(store: RateLimitStore, host: str, times: int = 1, mask: int = V6) -> list[float]:
    where = store.locate(client_key(host, mask))
    return [store.acquire(where) for _ in range(times)]


# -- parsing and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/s", (100, 1.0)), (" 600 / m ", (600, 60.0)), ("5000/H", (5000, 3600.0)),
     ("1/s", (1, 1.0))],
)
def test_rates_parse(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["100", "100/d", "0/s", "1.5/s", "-3/s", "100/10s", "/s", "x/m"])
def test_anything_else_is_a_config_error_saying_what_is_allowed(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(rate_limit=text)
    assert "rate_limit" in str(info.value)
    assert "100/s, 600/m or 5000/h" in str(info.value)


def test_config_normalises_and_defaults() -> None:
    config = ServerConfig(rate_limit="10 / M", rate_limit_exempt="/static/,/docs")
    assert config.rate_limit == "10/m"
    assert config.rate_limit_exempt == ("/static/", "/docs")
    assert ServerConfig().rate_limit is None
    assert ServerConfig(rate_limit="off").rate_limit is None
    with pytest.raises(ConfigError, match="starting with /"):
        ServerConfig(rate_limit_exempt=["static"])


# -- keys --------------------------------------------------------------------------------------


def test_ipv4_clients_are_keyed_by_address_and_mapped_forms_agree() -> None:
    assert client_key("192.0.2.1", V6) != client_key("192.0.2.2", V6)
    assert client_key("192.0.2.1", V6) == client_key("::ffff:192.0.2.1", V6)


def test_ipv6_clients_share_a_key_per_64_by_default() -> None:
    same = {client_key(host, V6) for host in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9")}
    assert len(same) == 1
    assert client_key("2001:db8:1:3::1", V6) not in same
    assert client_key("fe80::1%eth0", V6) == client_key("fe80::2", V6)
    # --rate-limit-ipv6-prefix 128: every address on its own.
    full = ipv6_mask(128)
    assert client_key("2001:db8:1:2::1", full) != client_key("2001:db8:1:2::2", full)
    # ... and 48: the whole site.
    site = ipv6_mask(48)
    assert client_key("2001:db8:1:2::1", site) == client_key("2001:db8:1:ffff::1", site)


def test_names_that_are_not_addresses_get_a_stable_key_of_their_own() -> None:
    key = client_key("some-peer", V6)
    assert key == client_key("some-peer", V6) != client_key("other-peer", V6)
    assert key not in {client_key("0.0.0.0", V6), client_key("::", V6)}
    assert key < 1 << 64  # in ::/64, where no routable client lives


# -- the bucket --------------------------------------------------------------------------------


def test_a_new_client_has_a_full_bucket_then_waits_for_tokens() -> None:
    clock = Clock()
    store = RateLimitStore(10, 1.0, burst=3, max_clients=64, clock=clock)
    assert take(store, "192.0.2.1", 3) == [0.0, 0.0, 0.0]
    assert take(store, "192.0.2.1") == [pytest.approx(0.1)]
    assert take(store, "192.0.2.2") == [0.0]  # another client is not affected
    clock.now += 0.05
    assert take(store, "192.0.2.1") == [pytest.approx(0.05)]
    clock.now += 0.05
    assert take(store, "192.0.2.1", 2) == [0.0, pytest.approx(0.1)]
    clock.now += 3600  # refills up to the burst, never beyond
    assert take(store, "192.0.2.1", 4)[-1] > 0
    assert store.refused == 4


def test_burst_defaults_to_the_limits_count() -> None:
    store = RateLimitStore(5, 60.0, clock=Clock())
    assert store.burst == 5
    waits = take(store, "192.0.2.1", 6)
    assert waits[:5] == [0.0] * 5
    assert waits[5] == pytest.approx(12.0)  # one token every 60/5 seconds


def test_admitted_over_a_window_never_exceed_burst_plus_rate_times_window() -> None:
    clock = Clock()
    store = RateLimitStore(20, 1.0, burst=5, max_clients=64, clock=clock)
    admitted = 0
    for _ in range(2000):  # 2 s of a client asking every millisecond
        admitted += take(store, "192.0.2.7") == [0.0]
        clock.now += 0.001
    assert admitted <= 5 + 20 * 2.0
    assert admitted >= 5 + 20 * 2.0 - 1


# -- the table: bounded, least recently seen evicted --------------------------------------------


def test_rotating_addresses_cannot_grow_the_table_and_evictions_are_counted() -> None:
    store = RateLimitStore(1, 60.0, max_clients=64, clock=Clock())
    size = store._size
    for i in range(1000):
        take(store, f"10.0.{i // 256}.{i % 256}")
    assert store.capacity == 64 and store._size == size
    assert store.clients == 64
    assert store.evictions == 1000 - 64  # every bucket was still empty when forgotten
    assert store.stats()["evictions"] == 1000 - 64


def test_clients_whose_bucket_refilled_are_replaced_without_counting_an_eviction() -> None:
    clock = Clock()
    store = RateLimitStore(1, 1.0, max_clients=WAYS, clock=clock)  # one set
    for i in range(WAYS):
        take(store, f"10.1.0.{i}")
    take(store, "10.1.1.1")
    assert store.evictions == 1  # a full set of empty buckets: someone is forgotten
    clock.now += 1.0  # everyone refilled: forgetting them changes nothing
    for i in range(WAYS):
        take(store, f"10.2.0.{i}")
    assert store.evictions == 1


def test_the_least_recently_seen_client_of_a_set_is_the_one_evicted() -> None:
    clock = Clock()
    store = RateLimitStore(1, 60.0, max_clients=WAYS, clock=clock)  # one set of WAYS slots
    hosts = [f"10.3.0.{i}" for i in range(WAYS)]
    for host in hosts:
        take(store, host)
        clock.now += 0.001
    take(store, hosts[0])  # seen again (refused): now the most recent
    clock.now += 0.001
    take(store, "10.3.1.1")  # takes hosts[1]'s slot
    assert store.evictions == 1
    assert take(store, hosts[0])[0] > 0  # still remembered, still empty
    assert take(store, hosts[1]) == [0.0]  # forgotten: comes back with a full bucket


def test_the_address_cache_of_a_worker_is_bounded() -> None:
    store = RateLimitStore(1000, 1.0, max_clients=64, clock=Clock())
    limiter = ClientRateLimiter(store)
    for i in range(ClientRateLimiter.CACHE_SIZE + 10):
        limiter.check("/", (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1))
    assert len(limiter._cache) <= ClientRateLimiter.CACHE_SIZE


def test_exempt_paths_are_exact_and_prefixes_are_plain_prefixes() -> None:
    store = RateLimitStore(1, 60.0, max_clients=64, clock=Clock())
    limiter = ClientRateLimiter(store, exempt_paths=["/healthz"], exempt_prefixes=["/static/"])
    client = ("192.0.2.9", 1)
    assert [limiter.check("/healthz", client) for _ in range(3)] == [0.0] * 3
    assert [limiter.check("/static/app.js", client) for _ in range(3)] == [0.0] * 3
    assert limiter.check("/healthz/x", client) == 0.0  # not exempt: takes the only token
    assert limiter.check("/static", client) > 0  # not under /static/
    assert limiter.check("/", None) == 0.0  # no address (Unix socket): not limited


# -- no GIL needed: many threads, one client -----------------------------------------------------


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("tiny_switch_interval")
def test_threads_sharing_the_table_admit_exactly_the_burst() -> None:
    store = RateLimitStore(1, 3600.0, burst=500, max_clients=256, clock=Clock())
    hosts = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
    barrier = threading.Barrier(8)

    def hammer() -> list[int]:
        wheres = [store.locate(client_key(host, V6)) for host in hosts]
        barrier.wait()
        counts = [0] * len(hosts)
        for _ in range(400):
            for i, where in enumerate(wheres):
                counts[i] += store.acquire(where) == 0.0
        return counts

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: hammer(), range(8)))
    totals = [sum(column) for column in zip(*results, strict=True)]
    assert totals == [500, 500, 500]  # 3200 tries each, exactly the burst got through
    assert store.refused == 3 * (3200 - 500)


# -- processes: forked and spawned workers share one table ----------------------------------------


def _take_in_child(store: RateLimitStore, host: str, times: int, out: Any) -> None:
    where = store.locate(client_key(host, V6))
    out.put(sum(store.acquire(where) == 0.0 for _ in range(times)))


@pytest.mark.parametrize("sharing", ["fork", "spawn"])
def test_processes_share_the_table(sharing: str) -> None:
    store = RateLimitStore(1, 3600.0, burst=300, max_clients=64, sharing=sharing)  # type: ignore[arg-type]
    context = multiprocessing.get_context(sharing)
    out = context.Queue()
    children = [
        context.Process(target=_take_in_child, args=(store, "192.0.2.5", 200, out))
        for _ in range(3)
    ]
    try:
        for child in children:
            child.start()
        admitted = sum(out.get(timeout=60) for _ in children)
        for child in children:
            child.join(10)
        assert admitted == 300  # 600 tries, one bucket of 300 across three processes
        assert store.refused == 300
        assert take(store, "192.0.2.5")[0] > 0  # and the parent sees the same bucket
    finally:
        store.unlink()


def _die_holding(store: RateLimitStore, stripe: int) -> None:
    store._locks[stripe].acquire()
    os._exit(0)  # as if SIGKILLed inside the critical section


def test_a_lock_left_held_by_a_dead_process_stops_limiting_its_stripe_without_stalling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rate_limit, "LOCK_TIMEOUT", 0.05)
    store = RateLimitStore(1, 3600.0, max_clients=64, sharing="fork")
    where = store.locate(client_key("192.0.2.8", V6))
    child = multiprocessing.get_context("fork").Process(target=_die_holding, args=(store, where[0]))
    child.start()
    child.join(10)
    with caplog.at_level("ERROR", logger="pounce.error"):
        began = time.monotonic()
        waits = [store.acquire(where) for _ in range(50)]
        elapsed = time.monotonic() - began
    assert waits == [0.0] * 50  # let through: better than a stalled worker
    assert elapsed < 1.0  # only the first one waited for the lock
    assert len([r for r in caplog.records if "was not released" in r.message]) == 1
    elsewhere = (store.locate(client_key(f"10.9.0.{i}", V6)) for i in range(256))
    other = next(located for located in elsewhere if located[0] != where[0])
    assert store.acquire(other) == 0.0 and store.acquire(other) > 0  # other stripes still limit


def test_a_store_for_threads_or_forks_refuses_to_be_pickled() -> None:
    with pytest.raises(TypeError, match="sharing='spawn'"):
        pickle.dumps(RateLimitStore(1, 1.0, max_clients=64))


# -- the admission hook ---------------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_no_hook_and_no_store_when_off(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, hello)
    assert not any(isinstance(h, RateLimit) for h in admission_hooks(ctx))
    assert ctx.rate_limiter is None


def test_the_hook_answers_429_with_the_draft_headers(loop: asyncio.AbstractEventLoop) -> None:
    events: list[Any] = []
    ctx = make_context(loop, hello, events=events, rate_limit="2/m", request_id=True)
    kinds = [type(h).__name__ for h in ctx.dispatcher.admission]  # type: ignore[attr-defined]
    assert kinds == ["RequestIds", "RateLimit"]
    channels = [start(ctx)[1] for _ in range(3)]
    settle(loop)
    assert [c.errors for c in channels[:2]] == [[], []]
    ((status, headers),) = channels[2].errors
    assert status == 429
    fields = dict(headers)
    assert fields[b"retry-after"] == b"30" == fields[b"ratelimit-reset"]
    assert fields[b"ratelimit-limit"] == b"2"
    assert fields[b"ratelimit-remaining"] == b"0"
    assert fields[b"ratelimit-policy"] == b"2;w=60"
    rejected = [e for e in events if isinstance(e, RequestRejected)]
    assert [(e.status, e.reason) for e in rejected] == [(429, REJECTED_RATE_LIMITED)]
    assert ctx.requests_total == 2  # the refused one never started


def test_the_hook_keys_on_the_proxy_resolved_client(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, hello, rate_limit="1/m")
    one = ConnectionInfo(client=("198.51.100.1", 1), server=("10.0.0.1", 8000))
    two = ConnectionInfo(client=("198.51.100.2", 1), server=("10.0.0.1", 8000))
    results = [start(ctx, connection=c)[1] for c in (one, two, one)]
    settle(loop)
    assert [bool(c.errors) for c in results] == [False, False, True]


# -- real servers ---------------------------------------------------------------------------------


def get(url: str, target: str = "/", protocol: str = "http/1.1") -> Response:
    return fetch(url, target, protocol=protocol)


def test_over_the_limit_a_real_server_answers_429_before_the_app(protocol: str) -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await hello(scope, receive, send)

    options = {"health_path": "/healthz", "ready_path": "/readyz"}
    with serve_in_thread(
        app, rate_limit="3/h", rate_limit_exempt=["/static/"], **options
    ) as running:
        url = running.url
        statuses = [get(url, protocol=protocol).status for _ in range(5)]
        refused = get(url, protocol=protocol)
        exempt = [get(url, "/static/x.css", protocol).status for _ in range(5)]
        probes = [get(url, path, protocol).status for path in ("/healthz", "/readyz") * 3]
        stats = running.server.stats()["rate_limit"]
    assert statuses == [200, 200, 200, 429, 429]
    assert refused.status == 429
    # One token every 3600/3 seconds, less the time the test took (a slow machine).
    retry = refused.header(b"retry-after")
    assert retry is not None and 1190 <= int(retry) <= 1200
    assert refused.header(b"ratelimit-limit") == b"3"
    assert refused.header(b"ratelimit-remaining") == b"0"
    assert refused.header(b"ratelimit-reset") == refused.header(b"retry-after")
    assert refused.body == b"Too Many Requests"
    assert exempt == [200] * 5 and probes == [200] * 6
    assert calls == ["/"] * 3 + ["/static/x.css"] * 5
    assert stats["refused"] == 3 and stats["limit"] == "3/h" and stats["burst"] == 3


def test_streams_of_one_http2_connection_share_their_clients_bucket() -> None:
    """Each stream is a request of the same client: the fourth is refused, on its own stream,
    and the connection carries on (a probe on it is still answered)."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await hello(scope, receive, send)

    with serve(app, rate_limit="3/h", health_path="/healthz") as url, \
            ProtocolClient(url, "h2") as client:
        handles = [client.send("GET", f"/{i}") for i in range(5)]  # all in flight at once
        responses = [client.response(handle) for handle in handles]
        probe = client.fetch("GET", "/healthz")
        later = fetch(url, "/other", protocol="h2")  # another connection, the same client
    assert sorted(r.status for r in responses) == [200, 200, 200, 429, 429]
    for refused in (r for r in responses if r.status == 429):
        assert refused.reset is None and refused.body == b"Too Many Requests"
        assert refused.header(b"ratelimit-limit") == b"3"
        assert refused.header(b"ratelimit-remaining") == b"0"
        retry = refused.header(b"retry-after")
        assert retry is not None and refused.header(b"ratelimit-reset") == retry
    assert (probe.status, probe.body) == (200, b"ok")
    assert later.status == 429
    assert len(calls) == 3


def test_a_websocket_handshake_over_the_limit_gets_429() -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})
        else:
            await hello(scope, receive, send)

    with serve(app, ws="websockets", rate_limit="2/h") as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        for _ in range(2):
            with connect(ws_url, open_timeout=5):
                pass
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url, open_timeout=5)
    response = info.value.response
    assert response.status_code == 429
    assert 1790 <= int(response.headers["retry-after"]) <= 1800
    assert response.headers["ratelimit-limit"] == "2"


def test_a_websocket_over_http2_over_the_limit_gets_429() -> None:
    """RFC 8441: the extended CONNECT is admitted like any handshake, on its own stream."""
    from tests.protocols.http2.h2client import H2Client
    from tests.protocols.http2.test_http2_websocket import connect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})
        else:
            await hello(scope, receive, send)

    import h2.events

    def head(client: H2Client, stream_id: int) -> dict[bytes, bytes]:
        # An accepted WebSocket's stream stays open: its head is the answer.
        event = client.wait_for(
            lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id
        )
        return dict(event.headers)

    with serve(app, ws="websockets", rate_limit="2/h") as url, H2Client(url) as client:
        streams = [connect(client, "/ws") for _ in range(3)]
        heads = [head(client, stream_id) for stream_id in streams]
    assert [h[b":status"] for h in heads] == [b"200", b"200", b"429"]
    refused = heads[2]
    assert 1790 <= int(refused[b"retry-after"]) <= 1800
    assert refused[b"ratelimit-limit"] == b"2"


async def whoami(scope: Any, receive: Any, send: Any) -> None:
    """Says which worker answered: process id and thread name."""
    if scope["type"] != "http":
        return
    body = f"{os.getpid()}:{threading.current_thread().name}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def hammer(
    url: str, seconds: float, clients: int = 8, protocol: str = "http/1.1"
) -> tuple[list[Any], float]:
    """Requests from *clients* threads (a connection each) for *seconds*: (responses, time)."""
    began = time.monotonic()
    stop = began + seconds

    def client() -> list[Any]:
        responses = []
        while time.monotonic() < stop:
            responses.append(get(url, protocol=protocol))
        return responses

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(), range(clients)))
    return [r for rs in results for r in rs], time.monotonic() - began


def check_one_bucket(responses: list[Any], elapsed: float, burst: int, rate: float) -> None:
    """Together the workers admitted at most what one bucket allows over the window."""
    admitted = [r.body for r in responses if r.status == 200]
    assert {r.status for r in responses} == {200, 429}
    assert burst <= len(admitted) <= burst + math.floor(rate * elapsed)
    # Both workers admitted some: with a table per worker they would admit about twice that.
    assert len(set(admitted)) == 2, admitted


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_together_admit_no_more_than_the_bucket(worker_type: str, protocol: str) -> None:
    burst, rate = 5, 20.0
    with serve_in_thread(
        whoami, workers=2, worker_type=worker_type, rate_limit="20/s",
        rate_limit_burst=burst, timeout_keep_alive=0,
    ) as running:
        responses, elapsed = hammer(running.url, 1.5, protocol=protocol)
        stats = running.server.stats()["rate_limit"]
    check_one_bucket(responses, elapsed, burst, rate)
    assert stats["refused"] == sum(r.status == 429 for r in responses)


def test_clients_behind_a_trusted_proxy_are_told_apart_by_their_forwarded_address(
    protocol: str,
) -> None:
    def forwarded(url: str, address: str) -> int:
        return fetch(url, "/", [("x-forwarded-for", address)], protocol=protocol).status

    # 127.0.0.1 (the test client) is trusted by default: scope["client"] is the forwarded one.
    with serve(hello, rate_limit="1/h") as url:
        first = [forwarded(url, a) for a in ("203.0.113.1", "203.0.113.2", "203.0.113.1")]
        same_64 = [forwarded(url, a) for a in ("2001:db8:5::1", "2001:db8:5::2")]
    assert first == [200, 200, 429]
    assert same_64 == [200, 429]


def test_the_limit_survives_a_rolling_reload() -> None:
    with serve_in_thread("tests.apps:hello", rate_limit="2/h") as running:
        assert [get(running.url).status for _ in range(2)] == [200, 200]
        supervisor = running.server._supervisor
        assert supervisor is not None
        running.server.reload()
        deadline = time.monotonic() + 10
        while supervisor.reloads < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert supervisor.reloads == 1
        assert get(running.url).status == 429  # the new generation uses the same table


def test_spawned_process_workers_share_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where fork is unsafe (macOS, Windows) workers are spawned and attach by name."""
    from pounce.workers import processes, supervisor

    spawn = lambda: multiprocessing.get_context("spawn")  # noqa: E731
    monkeypatch.setattr(processes, "mp_context", spawn)
    monkeypatch.setattr(supervisor, "mp_context", spawn)
    with serve_in_thread(
        "tests.features.test_rate_limit:whoami", workers=2, worker_type="process",
        rate_limit="20/s", rate_limit_burst=5, timeout_keep_alive=0, startup_timeout=60,
    ) as running:
        assert running.server._supervisor is not None
        store = running.server._supervisor.rate_limiter
        assert store is not None and store.sharing == "spawn"
        responses, elapsed = hammer(running.url, 1.5)
        refused = running.server.stats()["rate_limit"]["refused"]
    check_one_bucket(responses, elapsed, 5, 20.0)
    assert refused == sum(r.status == 429 for r in responses)


def test_the_metrics_path_is_exempt_only_when_metrics_are_served() -> None:
    from pounce.features.rate_limit import limiter_from_config

    client = ("192.0.2.10", 1)
    served = ServerConfig(rate_limit="1/h", root_path="/api", metrics=True)
    # With --metrics-bind the main port's /metrics is the app's, limited like any path.
    elsewhere = served.replace(metrics_bind="127.0.0.1:9100")
    off = ServerConfig(rate_limit="1/h", root_path="/api")
    for config, expected in (
        (served, [0.0, 0.0]), (elsewhere, [0.0, "refused"]), (off, [0.0, "refused"])
    ):
        store = RateLimitStore(1, 3600.0, max_clients=64, clock=Clock())
        limiter = limiter_from_config(config, store)
        waits = [limiter.check("/api/metrics", client) for _ in range(2)]
        assert [w if w == 0.0 else "refused" for w in waits] == expected
