"""``--server-timing``: ``Server-Timing: app;dur=X`` on the app's responses."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.pipeline.fakes import FakeChannel

from pounce.features.server_timing import ServerTiming, server_timing_filter
from pounce.pipeline.filters import FilteredChannel
from pounce.testing import serve

TIMING = re.compile(r"^app;dur=(\d+\.\d{3})$")


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


def _app_duration(response: httpx.Response) -> float:
    values = response.headers.get_list("server-timing")
    assert "db;dur=1" in values  # the app's own field is kept
    ours = [v for v in values if v.startswith("app;")]
    assert len(ours) == 1
    match = TIMING.match(ours[0])
    assert match is not None, ours
    return float(match.group(1))


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_app_time_is_reported(worker_type: str) -> None:
    app = "tests.features.test_server_timing:slow_start"
    with serve(app, server_timing=True, workers=2, worker_type=worker_type, lifespan="off") as url:
        response = httpx.get(url + "/")
    assert response.status_code == 200
    assert response.content == b"done"
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
    assert timing.trailers([(b"x", b"y")]) == [(b"x", b"y")]


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
