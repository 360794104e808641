"""The accept distributor and --limit-concurrency: requests are limited, not connections."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from tests.workers.support import get, running, wait_for
from tests.workers.wapps import app

MODES = [
    {"worker_type": "thread"},
    {"worker_type": "process", "accept": "distributor"},
    {"worker_type": "process", "accept": "auto"},  # the shared listening socket
]
IDS = ["thread", "process-distributor", "process-listen"]


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_idle_connections_do_not_lock_out_a_client_with_a_request(
    mode: dict[str, str],
) -> None:
    """100 connections that send nothing against --limit-concurrency 50 per worker."""
    with running(
        app, workers=2, limit_concurrency=50, timeout_request_header=20, **mode
    ) as (_, address):
        idle = [socket.create_connection(address, timeout=5) for _ in range(100)]
        try:
            started = time.monotonic()
            assert get(address, timeout=3) == (200, b"ok")
            assert time.monotonic() - started < 2
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("mode", MODES[:2], ids=IDS[:2])
def test_requests_beyond_the_limit_get_503(mode: dict[str, str]) -> None:
    """Every worker busy with --limit-concurrency requests: the next one is answered 503."""
    with running(app, workers=2, limit_concurrency=1, **mode) as (server, address):
        results: list[tuple[int, bytes]] = []
        slow = [
            threading.Thread(target=lambda: results.append(get(address, "/slow?3", timeout=10)))
            for _ in range(2)
        ]
        for thread in slow:
            thread.start()
        # One slow request per worker (the distributor balances by in-flight connections).
        assert wait_for(
            lambda: sum(w["connections"] for w in server.stats()["workers"]) == 2
            and all(w["connections"] == 1 for w in server.stats()["workers"]),
            5,
        ), server.stats()
        time.sleep(0.2)  # the process workers' heartbeat lags; the requests are running
        started = time.monotonic()
        status, _ = get(address, timeout=3)
        assert status == 503
        assert time.monotonic() - started < 2
        for thread in slow:
            thread.join(10)
        assert sorted(results) == [(200, b"slow"), (200, b"slow")]
