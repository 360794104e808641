"""What a protocol implements to carry one stream's response.

A channel belongs to one request (an HTTP/1.1 request on a keep-alive connection, an HTTP/2
stream): the cycle never passes itself along, and a late call from a finished request cannot
touch the next one. The cycle has already validated everything the app sent and applied the
shared response rules (:func:`~pounce.asgi.headers.validate_response_head`, the server's default
headers); the channel only frames bytes for its protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields, Headers
    from pounce.pipeline.cycle import RequestCycle

__all__ = ["FlowControl", "ResponseChannel"]


class FlowControl(Protocol):
    """Write backpressure of whatever carries a stream (a TCP connection, an HTTP/2 window)."""

    #: True while the peer is not keeping up; ``send()`` then waits in :meth:`drain`.
    write_paused: bool

    async def drain(self) -> None:
        """Return once writing may go on (or the connection is gone)."""


class ResponseChannel(Protocol):
    """One stream's way to the wire. Called only from the stream's cycle, on its loop."""

    @property
    def flow(self) -> FlowControl:
        """Checked by ``send()`` after every body chunk, without a coroutine when not paused."""

    def bind(self, cycle: RequestCycle) -> None:
        """Called once, before the app runs: the cycle whose response this channel carries."""

    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        """The response head, fields already validated; may be sent with the first body."""

    def write_body(self, data: bytes, more_body: bool) -> None: ...

    async def write_file(self, path: str) -> None:
        """``http.response.pathsend``: the whole file as the rest of the body."""

    def write_trailers(self, headers: Headers, more: bool) -> None: ...

    def write_early_hint(self, links: list[bytes]) -> None: ...

    def write_continue(self) -> None:
        """``100 Continue``: the app is about to read a body the client holds back."""

    def send_error_response(self, status: int, headers: HeaderFields = ()) -> int:
        """A complete response the server writes itself; returns the body bytes sent."""

    def abort(self) -> None:
        """End the stream abruptly: the client must see that the response is incomplete."""

    def body_consumed(self) -> None:
        """The app took the buffered request body: reading may resume."""

    def waiting_for_body(self, waiting: bool) -> None:
        """The app awaits request body that has not arrived (the body timeout runs)."""

    def response_complete(self) -> None: ...

    def app_finished(self) -> None:
        """The app's coroutine returned (the response may have completed earlier)."""
