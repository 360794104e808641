"""FilteredChannel without sockets: held heads, and filters that run off the event loop."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from tests.pipeline.fakes import FakeChannel

from pounce.pipeline.filters import OFFLOAD_SIZE, FilteredChannel


class Threaded:
    """Upper-cases the body; large pieces run on a thread, which it records."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def start(self, status: int, fields: Any, content_length: int | None) -> Any:
        return fields, content_length

    def body(self, data: bytes, more_body: bool) -> bytes:
        self.threads.append(threading.current_thread().name)
        return data.upper()

    def offload(self, size: int) -> bool:
        return True

    def trailers(self, headers: Any) -> Any:
        return headers


def test_large_final_piece_runs_off_the_loop_and_keeps_the_order() -> None:
    inner = FakeChannel()
    threaded = Threaded()
    channel = FilteredChannel(inner, [threaded])  # type: ignore[list-item]
    channel.cycle = SimpleNamespace(  # type: ignore[assignment]
        bytes_sent=0, report_held=False, release_report=lambda complete: None
    )
    big = b"x" * OFFLOAD_SIZE

    async def respond() -> None:
        channel.start_response(200, [(b"content-type", b"text/plain")], None, False, True)
        channel.write_body(b"small", True)  # below the size: on the loop
        assert not channel.flow.write_paused
        channel.write_body(big, True)
        assert channel.flow.write_paused  # send() would wait here
        await channel.flow.drain()
        assert inner.body[-1] == (big.upper(), True)
        channel.write_body(big, False)
        # The cycle does not wait after a final piece: what follows is held behind it.
        channel.write_trailers([(b"x-check", b"1")], False)
        channel.response_complete()
        channel.app_finished()
        assert inner.calls[-1] == "write_body"
        for _ in range(500):  # bounded: 5 s
            if "app_finished" in inner.calls:
                break
            await asyncio.sleep(0.01)

    asyncio.run(respond())
    assert inner.calls == [
        "bind", "start_response", "write_body", "write_body", "write_body",
        "write_trailers", "response_complete", "app_finished",
    ]
    assert inner.body_bytes == b"SMALL" + big.upper() * 2
    assert threaded.threads[0] == threading.current_thread().name
    assert all(name.startswith("pounce-filter") for name in threaded.threads[1:])


def test_abort_while_a_piece_is_off_the_loop_drops_what_follows() -> None:
    inner = FakeChannel()
    channel = FilteredChannel(inner, [Threaded()])  # type: ignore[list-item]
    channel.cycle = SimpleNamespace(  # type: ignore[assignment]
        bytes_sent=0, report_held=False, release_report=lambda complete: None
    )

    async def respond() -> None:
        channel.start_response(200, [], 10, False, False)
        channel.write_body(b"y" * OFFLOAD_SIZE, False)
        channel.response_complete()
        channel.abort()
        await asyncio.sleep(0.2)

    asyncio.run(respond())
    assert inner.calls == ["bind", "start_response", "abort"]


def test_the_completion_record_waits_for_a_final_piece_filtered_off_the_loop() -> None:
    # The access log and metrics read bytes_sent from the record: it must count that piece.
    import time

    from tests.pipeline.fakes import make_context, settle, start

    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.pipeline.events import RequestCompleted

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * OFFLOAD_SIZE})

    loop = asyncio.new_event_loop()
    try:
        records: list[Any] = []
        ctx = make_context(loop, app, events=records)
        ctx.dispatcher = Dispatcher(  # type: ignore[attr-defined]
            ctx, filter_factories=(lambda scope: Threaded(),)
        )
        cycle, inner = start(ctx)
        deadline = time.monotonic() + 5
        while cycle.task is not None or not any(
            type(r) is RequestCompleted for r in records
        ):
            assert time.monotonic() < deadline
            settle(loop)
            time.sleep(0.005)  # the piece is filtered on another thread
        completed = [r for r in records if type(r) is RequestCompleted]
        assert len(completed) == 1
        assert completed[0].complete
        assert completed[0].bytes_sent == OFFLOAD_SIZE == len(inner.body_bytes)
    finally:
        loop.close()
