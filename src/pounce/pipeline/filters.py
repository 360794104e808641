"""Response filters: transformations between the cycle's validation and the channel.

A filter sees the response the app sent, after the cycle validated it and applied the shared
response rules, and may change its head, body and trailers before the protocol frames them:
compression, Server-Timing and the like. Filters are chosen per request (a compressor only when
the client accepts an encoding) by factories assembled once per worker; when no factory is
configured, or none wants a request, the channel is used directly and the request pays nothing.

Filters run on the stream's event loop, in order; a filter that changes the body length must
drop or fix ``content_length`` in :meth:`ResponseFilter.start`. When the app gives no
``Content-Length`` but sends its whole body in one final piece right after the head, the filters
see that piece's length as ``content_length``. A filter that only touches the head
(Server-Timing) sets ``changes_body = False``: bodies then skip it, and a file
(``http.response.pathsend``) still goes out zero-copy when no filter changes bodies. A filter
that finds in :meth:`ResponseFilter.start` that it will leave this body alone (a compressor
given an image, or a body the app encoded itself) sets ``changes_body = False`` there: a
static file then still goes out zero-copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from pounce.pipeline.cycle import FlowControl, ResponseChannel

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields, Headers, Scope
    from pounce.pipeline.cycle import RequestCycle

__all__ = [
    "FilterFactory",
    "FilteredChannel",
    "ResponseFilter",
    "ThreadedFilter",
    "filter_executor",
]

#: Read size when a filtered response body comes from a file (``http.response.pathsend``).
FILE_CHUNK = 256 * 1024

#: A piece of body at least this large is offered to :meth:`ThreadedFilter.offload`: below it,
#: handing the work to a thread costs more than doing it on the loop.
OFFLOAD_SIZE = 256 * 1024

logger = logging.getLogger("pounce.error")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def filter_executor() -> ThreadPoolExecutor:
    """The small pool, shared by the workers of a process, that runs heavy filter work.

    Created on first use (so a process worker makes its own after the fork). Compressors
    release the GIL, so a few threads keep every event loop free while large bodies compress.
    """
    global _executor  # one pool per process, created lazily under the lock
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="pounce-filter"
            )
        return _executor


class ResponseFilter(Protocol):
    """One request's transformation of its response."""

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Return the head fields and Content-Length to send instead."""

    def body(self, data: bytes, more_body: bool) -> bytes:
        """Return the bytes to send for this piece of body (may be empty until more comes)."""

    def trailers(self, headers: Headers) -> Headers:
        """Return the trailer fields to send (called once, with all of them)."""


class ThreadedFilter(ResponseFilter, Protocol):
    """A filter whose :meth:`body` may run on another thread, for pieces it finds too large.

    :meth:`body` then runs in :func:`filter_executor` while the event loop serves other
    connections; the app's ``send()`` waits for it as it waits for a slow client, and the
    filter is never called for the same response from two threads at once.
    """

    def offload(self, size: int) -> bool:
        """Whether :meth:`body` of a piece of *size* bytes should run off the event loop."""


#: Given a request's scope, a filter for its response, or None when it does not apply.
FilterFactory = Callable[["Scope"], ResponseFilter | None]


class ResponseFilters(list["ResponseFilter"]):
    """One request's filters until its response starts; then they attach themselves.

    A filter that only adds to the head (``changes_body = False``: Server-Timing, the request
    id) runs at once, in the cycle. One that may change the body (compression) is first asked
    whether it ``wants`` this response, and only then is the channel wrapped in a
    :class:`FilteredChannel`. So a response no filter transforms (a small one, an image) goes
    out exactly as without filters: no wrapper, no extra call per body piece. With trailers
    declared every filter goes through the wrapper, which hands them the trailers too.
    """

    __slots__ = ()

    def attach(
        self,
        cycle: RequestCycle,
        status: int,
        fields: list[tuple[bytes, bytes]],
        content_length: int | None,
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        wrapped: list[ResponseFilter] | None = None
        trailers = cycle.trailers_expected
        for f in self:
            if not trailers and not getattr(f, "changes_body", True):
                fields, content_length = f.start(status, fields, content_length)
                continue
            wants = getattr(f, "wants", None)
            if wants is not None and not wants(status, fields, content_length):
                continue
            if wrapped is None:
                wrapped = [f]
            else:
                wrapped.append(f)
        if wrapped is None:
            cycle.response_headers = fields  # as sent
        else:
            # The wrapper runs the rest when the head goes out (it may hold it for the size).
            cycle.channel = FilteredChannel(cycle.channel, wrapped)
        return fields, content_length

    def queue_waited(self, seconds: float) -> None:
        """Tell the filters that report it (Server-Timing) how long the request was queued.

        Called by the request queue, only for a request that waited (before it started).
        """
        for f in self:
            told = getattr(f, "queue_waited", None)
            if told is not None:
                told(seconds)


class FilteredChannel:
    """A :class:`~pounce.pipeline.cycle.ResponseChannel` that runs filters, then the real one."""

    __slots__ = (
        "_after",
        "_body_filters",
        "_filters",
        "_head",
        "_held",
        "_inner",
        "_pending",
        "_trailers",
        "flow",
    )

    def __init__(self, inner: ResponseChannel, filters: list[ResponseFilter]) -> None:
        self._inner = inner
        self._filters = filters
        self._body_filters = [f for f in filters if getattr(f, "changes_body", True)]
        self._trailers: list[tuple[bytes, bytes]] = []
        self._head: tuple[int, HeaderFields, bool] | None = None
        self.flow: FlowControl = inner.flow
        #: A piece of body being filtered on another thread, and the calls held behind it.
        self._pending: asyncio.Future[bytes] | None = None
        self._after: list[Callable[[], None]] = []
        #: The cycle whose completion record waits for the piece being filtered.
        self._held: RequestCycle | None = None

    @property
    def cycle(self) -> RequestCycle | None:
        return self._inner.cycle

    @cycle.setter
    def cycle(self, value: RequestCycle | None) -> None:
        self._inner.cycle = value

    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        if content_length is None and not trailers:
            # Held until the first body piece, or the next loop pass if the app awaits
            # something else first (as the protocol holds its head): when the whole body comes
            # in one final piece, the filters then know its size (a compressor skips a body
            # too small to be worth it).
            self._head = (status, fields, close)
            asyncio.get_running_loop().call_soon(self._flush_head)
            return
        self._start(status, fields, content_length, close, trailers)

    def _start(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        self._inner.start_response(
            status, *self._run_start(status, fields, content_length), close, trailers
        )

    def _run_start(
        self, status: int, fields: HeaderFields, content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        current = list(fields)
        for f in self._filters:
            current, content_length = f.start(status, current, content_length)
        if self._body_filters:
            # Filters that decided on the head to leave this body alone drop out of its path.
            self._body_filters = [
                f for f in self._body_filters if getattr(f, "changes_body", True)
            ]
        cycle = self._inner.cycle
        if cycle is not None:
            # The access log and events report the head as sent (``%({name}o)s``).
            cycle.response_headers = current
        return current, content_length

    def _flush_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._start(head[0], head[1], None, head[2], False)

    def write_body(self, data: bytes, more_body: bool) -> None:
        head = self._head
        if head is not None:
            self._head = None
            status, fields, close = head
            if more_body:
                self._start(status, fields, None, close, False)
            else:
                known = len(data)
                current, length = self._run_start(status, fields, known)
                # Unchanged: the app sent no Content-Length field; the protocol frames the
                # final piece itself (and adds the field it needs).
                self._inner.start_response(
                    status, current, None if length == known else length, close, False
                )
        self._filter_body(0, data, more_body)

    def _filter_body(self, first: int, data: bytes, more_body: bool) -> None:
        if self._pending is not None:
            # Only after a final piece (send() waits for any other): keep the order.
            self._after.append(lambda: self._filter_body(first, data, more_body))
            return
        filters = self._body_filters
        for i in range(first, len(filters)):
            f = filters[i]
            if len(data) >= OFFLOAD_SIZE:
                offload = getattr(f, "offload", None)
                if offload is not None and offload(len(data)):
                    self._offload(i, data, more_body)
                    return
            data = f.body(data, more_body)
        if data or not more_body:
            self._inner.write_body(data, more_body)

    def _offload(self, index: int, data: bytes, more_body: bool) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            filter_executor(), self._body_filters[index].body, data, more_body
        )
        self._pending = future
        # send() sees a paused writer and waits in drain() until the piece went out.
        self.flow = _OffloadFlow(future, self._inner.flow)
        future.add_done_callback(lambda done: self._offloaded(done, index, more_body))

    def _offloaded(self, future: asyncio.Future[bytes], index: int, more_body: bool) -> None:
        self._pending = None
        self.flow = self._inner.flow
        after, self._after = self._after, []
        if future.cancelled():
            return  # aborted meanwhile: the stream is gone
        exc = future.exception()
        if exc is not None:
            logger.error("A response filter failed; closing the connection", exc_info=exc)
            self._inner.abort()
            self._release(False)
            return
        data = future.result()
        for f in self._body_filters[index + 1 :]:
            data = f.body(data, more_body)
        if data or not more_body:
            self._inner.write_body(data, more_body)
        for call in after:
            call()

    def _then(self, call: Callable[[], None]) -> None:
        """Run *call* now, or after the piece being filtered on another thread went out."""
        if self._pending is None:
            call()
        else:
            self._after.append(call)

    async def write_file(self, path: str) -> None:
        if not self._body_filters:
            self._flush_head()  # the file's size frames the body (the head was held)
            await self._inner.write_file(path)
            return
        # A transformed body cannot go out zero-copy: it passes through the filters in pieces.
        with open(path, "rb") as file:
            while chunk := file.read(FILE_CHUNK):
                self.write_body(chunk, True)
                if self.flow.write_paused:
                    await self.flow.drain()
        self.write_body(b"", False)

    def write_trailers(self, headers: Headers, more: bool) -> None:
        self._trailers.extend(headers)
        if not more:
            self._then(self._send_trailers)

    def _send_trailers(self) -> None:
        result: Headers = self._trailers
        for f in self._filters:
            result = f.trailers(result)
        self._inner.write_trailers(result, False)

    def write_early_hint(self, links: list[bytes]) -> None:
        self._inner.write_early_hint(links)

    def write_continue(self) -> None:
        self._inner.write_continue()

    def send_error_response(
        self, status: int, headers: HeaderFields = (), body: bytes | None = None
    ) -> int:
        return self._inner.send_error_response(status, headers, body)

    def abort(self) -> None:
        self._head = None
        self._after.clear()
        if self._pending is not None:
            self._pending.cancel()
        self._inner.abort()
        self._release(False)

    def body_consumed(self) -> None:
        self._inner.body_consumed()

    def waiting_for_body(self, waiting: bool) -> None:
        self._inner.waiting_for_body(waiting)

    def response_complete(self) -> None:
        if self._pending is None:
            self._inner.response_complete()
            return
        # The final piece is still being filtered: the request's record must count it.
        cycle = self._inner.cycle
        if cycle is not None:
            cycle.report_held = True
        self._held = cycle

        def complete() -> None:
            self._inner.response_complete()
            self._release(True)

        self._after.append(complete)

    def _release(self, complete: bool) -> None:
        cycle = self._held
        if cycle is not None:
            self._held = None
            cycle.release_report(complete)

    def app_finished(self) -> None:
        self._then(self._inner.app_finished)


class _OffloadFlow:
    """The flow control of a channel while a piece of its body is filtered on another thread."""

    __slots__ = ("_future", "_inner")

    write_paused = True

    def __init__(self, future: asyncio.Future[bytes], inner: FlowControl) -> None:
        self._future = future
        self._inner = inner

    async def drain(self) -> None:
        # wait(), not await: a cancelled app task must not cancel the piece (abort() does).
        await asyncio.wait((self._future,))
        if self._inner.write_paused:
            await self._inner.drain()
