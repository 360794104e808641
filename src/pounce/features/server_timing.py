"""``--server-timing``: tell the client how long the app took before it started answering.

Adds ``Server-Timing: app;dur=X`` to every HTTP response the app sends, X being the
milliseconds from the moment the request was dispatched (its head parsed and admitted) to the
app's ``http.response.start``. Browsers show it in their developer tools next to the network
timings, which separates the app's time from the network's.

The filter records the start time itself when the dispatcher creates it, so it needs nothing
from the request cycle (whose own clock runs only when events are on). Nothing is known of the
total time before the head goes out, and trailers would need the app to ask for them, so only
``app`` is reported. An app's own ``Server-Timing`` field is kept: the field is a list, and
two lines of it mean the same as one joined with a comma.

Responses the server writes itself (a 503 from admission, a 500 after an app error) do not
go through filters and carry no timing.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pounce.asgi.types import Headers, Scope

__all__ = ["ServerTiming", "server_timing_filter"]

FIELD = b"server-timing"


class ServerTiming:
    """One response's timing (a response filter that leaves the body alone)."""

    __slots__ = ("_started",)

    #: Tells the filtered channel that bodies pass unchanged (so a file still goes zero-copy).
    changes_body = False

    def __init__(self) -> None:
        self._started = perf_counter()

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        elapsed_ms = (perf_counter() - self._started) * 1000.0
        fields.append((FIELD, b"app;dur=%.3f" % elapsed_ms))
        return fields, content_length

    def body(self, data: bytes, more_body: bool) -> bytes:
        return data

    def trailers(self, headers: Headers) -> Headers:
        return headers


def server_timing_filter(scope: Scope) -> ServerTiming:
    """The filter factory: called at dispatch time, which is where the clock starts."""
    return ServerTiming()
