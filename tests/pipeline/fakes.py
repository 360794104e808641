"""Stand-ins for what surrounds the pipeline, so it can be driven without a socket.

:class:`FakeChannel` is a :class:`~pounce.pipeline.channel.ResponseChannel` that records every
call; :func:`make_context` builds a real :class:`~pounce.pipeline.context.WorkerContext` (real
dispatcher, real event bus) on a real event loop. Tests run the loop with :func:`settle` instead
of sleeping: nothing here uses timers, so a few passes through the ready queue are enough and
every run is the same.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Any

from pounce.asgi.types import HeaderFields, Headers
from pounce.config import ServerConfig
from pounce.logs import AccessLogger
from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.context import WorkerContext
from pounce.pipeline.cycle import RequestCycle
from pounce.pipeline.dispatcher import Dispatcher

INFO = ConnectionInfo(client=("10.0.0.7", 51000), server=("10.0.0.1", 8000))

#: What FakeChannel.send_error_response says it wrote (a real channel returns its body size).
ERROR_BODY_SIZE = 21


def make_context(
    loop: asyncio.AbstractEventLoop,
    app: Any,
    *,
    events: list[Any] | None = None,
    base_context: contextvars.Context | None = None,
    on_request_limit: Callable[[], None] | None = None,
    **options: Any,
) -> WorkerContext:
    """A worker's context as the worker builds it; *events* (if given) collects every event."""
    handlers: Sequence[Callable[[Any], None]] = (events.append,) if events is not None else ()
    ctx = WorkerContext(
        app=app,
        config=ServerConfig(**options),
        loop=loop,
        access_log=AccessLogger(access_log=False),
        proxy_trust=None,
        base_context=base_context,
        on_request_limit=on_request_limit,
        event_handlers=handlers,
    )
    # The worker builds one dispatcher per context; tests keep it on the context for reach.
    ctx.dispatcher = Dispatcher(ctx)  # type: ignore[attr-defined]
    return ctx


def settle(loop: asyncio.AbstractEventLoop, rounds: int = 20) -> None:
    """Let every ready task and callback run (and the ones they schedule), a bounded number
    of times: enough for a request to go from start to finish when nothing blocks it."""

    async def passes() -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    loop.run_until_complete(passes())


class FakeFlow:
    """Write backpressure under the test's control: ``drain()`` blocks while paused."""

    def __init__(self) -> None:
        self.write_paused = False
        self.drains = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def drain(self) -> None:
        self.drains += 1
        if self.write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def resume(self) -> None:
        self.write_paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class FakeChannel:
    """A ResponseChannel that frames nothing and remembers everything.

    ``calls`` keeps the order of every call by name; the other attributes keep their
    arguments. Body bytes are counted into the cycle's ``bytes_sent`` as a real channel does.
    """

    def __init__(self) -> None:
        self.flow = FakeFlow()
        self._cycle: RequestCycle | None = None
        self.calls: list[str] = []
        self.head: tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool] | None = None
        self.body: list[tuple[bytes, bool]] = []
        self.files: list[str] = []
        self.trailers: list[tuple[list[tuple[bytes, bytes]], bool]] = []
        self.early_hints: list[list[bytes]] = []
        self.continues = 0
        self.errors: list[tuple[int, tuple[tuple[bytes, bytes], ...]]] = []
        self.error_bodies: list[bytes] = []
        self.aborts = 0
        self.consumed = 0
        self.waiting: list[bool] = []
        self.completed = 0
        self.finished = 0

    @property
    def body_bytes(self) -> bytes:
        return b"".join(data for data, _ in self.body)

    @property
    def cycle(self) -> RequestCycle | None:
        return self._cycle

    @cycle.setter
    def cycle(self, cycle: RequestCycle | None) -> None:
        # The dispatcher binds the cycle once; the channel lets go of it at app_finished.
        self.calls.append("bind" if cycle is not None else "unbind")
        self._cycle = cycle

    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        self.calls.append("start_response")
        self.head = (status, list(fields), content_length, close, trailers)

    def write_body(self, data: bytes, more_body: bool) -> None:
        self.calls.append("write_body")
        self.body.append((data, more_body))
        assert self.cycle is not None
        self.cycle.bytes_sent += len(data)

    async def write_file(self, path: str) -> None:
        self.calls.append("write_file")
        self.files.append(path)
        with open(path, "rb") as file:
            data = file.read()
        assert self.cycle is not None
        self.cycle.bytes_sent += len(data)

    def write_trailers(self, headers: Headers, more: bool) -> None:
        self.calls.append("write_trailers")
        self.trailers.append((list(headers), more))

    def write_early_hint(self, links: list[bytes]) -> None:
        self.calls.append("write_early_hint")
        self.early_hints.append(links)

    def write_continue(self) -> None:
        self.calls.append("write_continue")
        self.continues += 1

    def send_error_response(
        self, status: int, headers: HeaderFields = (), body: bytes | None = None
    ) -> int:
        self.calls.append("send_error_response")
        self.errors.append((status, tuple(headers)))
        if body is not None:
            self.error_bodies.append(body)
            return len(body)
        return ERROR_BODY_SIZE

    def abort(self) -> None:
        self.calls.append("abort")
        self.aborts += 1

    def body_consumed(self) -> None:
        self.consumed += 1

    def waiting_for_body(self, waiting: bool) -> None:
        self.waiting.append(waiting)

    def response_complete(self) -> None:
        self.calls.append("response_complete")
        self.completed += 1

    def app_finished(self) -> None:
        self.calls.append("app_finished")
        self.finished += 1


def start(
    ctx: WorkerContext,
    channel: FakeChannel | None = None,
    *,
    method: str = "GET",
    raw_path: bytes = b"/",
    query_string: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    has_body: bool = False,
    expect_continue: bool = False,
    http_version: str = "1.1",
    connection: ConnectionInfo = INFO,
    informational: bool = True,
) -> tuple[RequestCycle, FakeChannel]:
    """Hand one request to the context's dispatcher, as a protocol engine does."""
    channel = channel if channel is not None else FakeChannel()
    cycle = ctx.dispatcher.start_request(  # type: ignore[attr-defined]
        channel,
        connection,
        http_version,
        method,
        raw_path,
        query_string,
        list(headers),
        has_body,
        expect_continue,
        informational,
    )
    return cycle, channel
