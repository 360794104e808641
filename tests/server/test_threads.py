"""Many client threads against one server with a tiny switch interval: nothing is lost or mixed.

``sys.setswitchinterval(1e-6)`` makes the interpreter switch threads as often as it can, so races
between the server thread and code run from client threads (``Server.shutdown``, logging,
the shared app) show up here rather than in production.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.apps import read_body
from tests.helpers import RawClient

from pounce.testing import serve

THREADS = 16
REQUESTS = 200


@pytest.fixture
def fast_switching() -> Iterator[None]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


async def tagged_echo(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    # Finish out of arrival order on purpose: responses must still go out in request order.
    await asyncio.sleep(random.random() * 0.003)
    payload = scope["path"].encode() + b"|" + body
    await send({"type": "http.response.start", "status": 200, "headers": []})
    half = len(payload) // 2
    await send({"type": "http.response.body", "body": payload[:half], "more_body": True})
    await send({"type": "http.response.body", "body": payload[half:]})


@pytest.mark.parametrize("http", ["fast", "h11"])
@pytest.mark.usefixtures("fast_switching")
def test_concurrent_requests_from_many_threads(http: str) -> None:
    per_thread = [REQUESTS // THREADS + (i < REQUESTS % THREADS) for i in range(THREADS)]
    assert sum(per_thread) == REQUESTS
    barrier = threading.Barrier(THREADS)
    results: dict[int, list[tuple[int, bytes]]] = {}
    errors: list[BaseException] = []

    def client_thread(index: int, url: str) -> None:
        try:
            count = per_thread[index]
            bodies = [
                f"t{index}-r{i}-".encode() * (1 + (i * 37 + index) % 50) for i in range(count)
            ]
            requests = [
                b"POST /t%d/r%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (index, i, len(body), body)
                for i, body in enumerate(bodies)
            ]
            got: list[tuple[int, bytes]] = []
            with RawClient(url, timeout=20.0) as client:
                barrier.wait(10)
                if index % 2:
                    client.send(b"".join(requests))  # all pipelined at once
                    for _ in requests:
                        response = client.read_response()
                        got.append((response.status, response.body))
                else:
                    for request in requests:  # one at a time on a kept-alive connection
                        client.send(request)
                        response = client.read_response()
                        got.append((response.status, response.body))
            expected = [
                b"/t%d/r%d|%s" % (index, i, body) for i, body in enumerate(bodies)
            ]
            assert got == [(200, body) for body in expected]
            results[index] = got
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    with serve(tagged_echo, http=http) as url:
        threads = [
            threading.Thread(target=client_thread, args=(i, url), daemon=True)
            for i in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert not errors, errors[0]
    assert sum(len(got) for got in results.values()) == REQUESTS
