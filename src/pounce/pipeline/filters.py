"""Response filters: transformations between the cycle's validation and the channel.

A filter sees the response the app sent, after the cycle validated it and applied the shared
response rules, and may change its head, body and trailers before the protocol frames them:
compression, Server-Timing and the like. Filters are chosen per request (a compressor only when
the client accepts an encoding) by factories assembled once per worker; when no factory is
configured, or none wants a request, the channel is used directly and the request pays nothing.

Filters run on the stream's event loop, in order; a filter that changes the body length must
drop or fix ``content_length`` in :meth:`ResponseFilter.start`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pounce.pipeline.cycle import FlowControl, ResponseChannel

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields, Headers, Scope
    from pounce.pipeline.cycle import RequestCycle

__all__ = ["FilterFactory", "FilteredChannel", "ResponseFilter"]

#: Read size when a filtered response body comes from a file (``http.response.pathsend``).
FILE_CHUNK = 256 * 1024


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


#: Given a request's scope, a filter for its response, or None when it does not apply.
FilterFactory = Callable[["Scope"], ResponseFilter | None]


class FilteredChannel:
    """A :class:`~pounce.pipeline.cycle.ResponseChannel` that runs filters, then the real one."""

    __slots__ = ("_filters", "_inner", "_trailers", "flow")

    def __init__(self, inner: ResponseChannel, filters: list[ResponseFilter]) -> None:
        self._inner = inner
        self._filters = filters
        self._trailers: list[tuple[bytes, bytes]] = []
        self.flow: FlowControl = inner.flow

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
        current = list(fields)
        for f in self._filters:
            current, content_length = f.start(status, current, content_length)
        cycle = self._inner.cycle
        if cycle is not None:
            # The access log and events report the head as sent (``%({name}o)s``).
            cycle.response_headers = current
        self._inner.start_response(status, current, content_length, close, trailers)

    def write_body(self, data: bytes, more_body: bool) -> None:
        for f in self._filters:
            data = f.body(data, more_body)
        if data or not more_body:
            self._inner.write_body(data, more_body)

    async def write_file(self, path: str) -> None:
        # A transformed body cannot go out zero-copy: it passes through the filters in pieces.
        with open(path, "rb") as file:
            while chunk := file.read(FILE_CHUNK):
                self.write_body(chunk, True)
                if self.flow.write_paused:
                    await self.flow.drain()
        self.write_body(b"", False)

    def write_trailers(self, headers: Headers, more: bool) -> None:
        self._trailers.extend(headers)
        if more:
            return
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
        self._inner.abort()

    def body_consumed(self) -> None:
        self._inner.body_consumed()

    def waiting_for_body(self, waiting: bool) -> None:
        self._inner.waiting_for_body(waiting)

    def response_complete(self) -> None:
        self._inner.response_complete()

    def app_finished(self) -> None:
        self._inner.app_finished()
