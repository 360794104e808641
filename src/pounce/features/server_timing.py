"""``--server-timing``: tell the client where the time of its request went.

Adds a ``Server-Timing`` field to every HTTP response the app sends:

* ``queue``: milliseconds the request waited in the request queue (``--max-concurrency``) for
  a slot; only when the queue is on (``0.000`` when the request did not wait);
* ``app``: milliseconds from the moment the app could start (the request dispatched, or given
  its slot) to the app's ``http.response.start``: its own time to first byte;
* ``total``: milliseconds from dispatch to the end of the response. It is not known when the
  head goes out, so it is sent as a trailer, when the app declared trailers
  (``"trailers": True`` in ``http.response.start``, which it may do when the scope offers the
  ``http.response.trailers`` extension). Otherwise it is left out.

Browsers show the figures in their developer tools next to the network timings, which
separates the server's time from the network's.

The filter records the dispatch time itself when the dispatcher creates it, so it needs nothing
from the request cycle (whose own clock runs only when events are on); a queued request's wait
is told to it by the queue (:meth:`ServerTiming.queue_waited`). An app's own ``Server-Timing``
field is kept: the field is a list, and two lines of it mean the same as one joined with a
comma.

Responses the server writes itself (a 503 from admission or the queue, a 500 after an app
error) do not go through filters and carry no timing.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from pounce.asgi.types import Headers, Scope
    from pounce.config import ServerConfig

__all__ = ["ServerTiming", "server_timing_factory", "server_timing_filter"]

FIELD = b"server-timing"


class ServerTiming:
    """One response's timing (a response filter that leaves the body alone)."""

    __slots__ = ("_queue", "_started", "_waited")

    #: Tells the filtered channel that bodies pass unchanged (so a file still goes zero-copy).
    changes_body = False

    def __init__(self, queue: bool = False) -> None:
        self._started = perf_counter()
        self._queue = queue
        self._waited = 0.0

    def queue_waited(self, seconds: float) -> None:
        """The request waited this long in the request queue before the app started."""
        self._waited = seconds

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        elapsed_ms = (perf_counter() - self._started) * 1000.0
        if self._queue:
            waited_ms = self._waited * 1000.0
            value = b"queue;dur=%.3f, app;dur=%.3f" % (waited_ms, elapsed_ms - waited_ms)
        else:
            value = b"app;dur=%.3f" % elapsed_ms
        fields.append((FIELD, value))
        return fields, content_length

    def body(self, data: bytes, more_body: bool) -> bytes:
        return data

    def trailers(self, headers: Headers) -> Headers:
        # The app sends its trailers after its last body piece: the response is all but out.
        total_ms = (perf_counter() - self._started) * 1000.0
        return [*headers, (FIELD, b"total;dur=%.3f" % total_ms)]


def server_timing_filter(scope: Scope) -> ServerTiming:
    """The filter factory without a request queue: called at dispatch, where the clock starts."""
    return ServerTiming()


def _queued_server_timing(scope: Scope) -> ServerTiming:
    return ServerTiming(queue=True)


def server_timing_factory(config: ServerConfig) -> Callable[[Scope], ServerTiming]:
    """The factory for this configuration (``queue`` is reported when the queue is on)."""
    return server_timing_filter if config.max_concurrency is None else _queued_server_timing
