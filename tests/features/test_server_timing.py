"""``--server-timing``: ``Server-Timing: app;dur=X`` on the app's responses."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers import Response, fetch
from tests.pipeline.fakes import FakeChannel

from pounce.features.server_timing import ServerTiming, server_timing_filter
from pounce.pipeline.filters import FilteredChannel, ResponseFilters
from pounce.testing import serve

TIMING = re.compile(r"^app;dur=(\d+\.\d{3})$")
QUEUED = re.compile(r"^queue;dur=(\d+\.\d{3}), app;dur=(-?\d+\.\d{3})$")
TOTAL = re.compile(r"^total;dur=(\d+\.\d{3})$")


async def slow_start(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"server-timing", b"db;dur=1")],
        }
    )
    await send({"type": "http.response.body", "body": b"done"})


def _app_duration(response: Response) -> float:
    values = [v.decode() for v in response.header_values(b"server-timing")]
    assert "db;dur=1" in values  # the app's own field is kept
    ours = [v for v in values if v.startswith("app;")]
    assert len(ours) == 1
    match = TIMING.match(ours[0])
    assert match is not None, ours
    return float(match.group(1))


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_app_time_is_reported(worker_type: str, protocol: str) -> None:
    app = "tests.features.test_server_timing:slow_start"
    with serve(app, server_timing=True, workers=2, worker_type=worker_type, lifespan="off") as url:
        response = fetch(url, protocol=protocol)
    assert response.status == 200
    assert response.body == b"done"
    # The loop's timer may fire a hair early: 45, not 50.
    assert 45.0 <= _app_duration(response) < 5000.0


def test_off_by_default() -> None:
    with serve(slow_start, lifespan="off") as url:
        response = httpx.get(url + "/")
    assert response.headers.get_list("server-timing") == ["db;dur=1"]


def test_the_clock_starts_when_the_filter_is_created() -> None:
    timing = server_timing_filter({})
    time.sleep(0.02)
    fields, length = timing.start(200, [(b"content-type", b"text/plain")], 4)
    assert length == 4
    assert fields[0] == (b"content-type", b"text/plain")
    name, value = fields[1]
    assert name == b"server-timing"
    match = TIMING.match(value.decode())
    assert match is not None and float(match.group(1)) >= 20.0
    assert timing.body(b"abc", True) == b"abc"
    trailers = timing.trailers([(b"x", b"y")])
    assert trailers[0] == (b"x", b"y")
    name, value = trailers[1]
    assert name == b"server-timing"
    total = TOTAL.match(value.decode())
    assert total is not None and float(total.group(1)) >= 20.0


def test_queue_and_app_split_the_time_before_the_head() -> None:
    timing = ServerTiming(queue=True)
    timing.queue_waited(0.25)
    time.sleep(0.3)
    fields, _ = timing.start(200, [], None)
    ((name, value),) = fields
    assert name == b"server-timing"
    match = QUEUED.match(value.decode())
    assert match is not None, value
    assert float(match.group(1)) == 250.0
    assert 40.0 <= float(match.group(2)) < 5000.0  # the rest: 300 ms minus the 250 queued


def test_the_request_s_filters_are_told_the_wait() -> None:
    timing = ServerTiming(queue=True)
    filters = ResponseFilters((timing,))
    filters.queue_waited(0.125)
    fields, _ = timing.start(200, [], None)
    assert fields[0][1].startswith(b"queue;dur=125.000, app;dur=")


def test_a_file_still_goes_out_zero_copy(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 1000)
    inner = FakeChannel()
    channel = FilteredChannel(inner, [ServerTiming()])  # type: ignore[arg-type]
    class Counter:  # the fake's write_file only counts bytes on its cycle
        bytes_sent = 0

    inner._cycle = Counter()  # type: ignore[assignment]
    asyncio.run(channel.write_file(str(path)))
    assert inner.files == [str(path)]
    assert inner.body == []


async def queued_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.3 if scope["path"] == "/slow" else 0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_the_queue_wait_is_reported(worker_type: str, protocol: str) -> None:
    with serve(
        "tests.features.test_server_timing:queued_app", server_timing=True, max_concurrency=1,
        workers=1 if worker_type == "thread" else 2, worker_type=worker_type, lifespan="off",
    ) as url, ThreadPoolExecutor(2) as pool:
        # Thread mode: one slot, so the second waits for the first. Process mode: one slot
        # per process, and the kernel picks the process: the second may or may not wait.
        slow = pool.submit(fetch, url, "/slow", protocol=protocol)
        time.sleep(0.1)
        fast = pool.submit(fetch, url, "/slow", protocol=protocol)
        responses = [slow.result(timeout=10), fast.result(timeout=10)]
    values = [(r.header(b"server-timing") or b"").decode() for r in responses]
    queued = [QUEUED.match(v) for v in values]
    assert all(m is not None for m in queued), values
    waits = sorted(float(m.group(1)) for m in queued if m is not None)
    assert waits[0] == 0.0
    if worker_type == "thread":
        assert waits[1] >= 150.0  # waited for the first one's 300 ms
    for m in queued:
        assert m is not None and float(m.group(2)) >= 250.0  # each slept 300 ms in the app


async def trailing_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    await send({"type": "http.response.trailers", "headers": [(b"x-check", b"1")]})


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_the_total_goes_in_a_trailer(worker_type: str, protocol: str) -> None:
    with serve(
        "tests.features.test_server_timing:trailing_app", server_timing=True, workers=2,
        worker_type=worker_type, lifespan="off",
    ) as url:
        response = fetch(url, "/", [("te", "trailers")], protocol=protocol)
    assert response.body == b"part"
    head = response.header(b"server-timing")
    assert head is not None and TIMING.match(head.decode())
    trailers = dict(response.trailers)
    assert trailers[b"x-check"] == b"1"
    total = TOTAL.match(trailers[b"server-timing"].decode())
    assert total is not None and float(total.group(1)) >= 45.0
