"""The request/response cycle: one ASGI HTTP request, whatever protocol carried it.

Every protocol (HTTP/1.1 now, HTTP/2 streams later) feeds a :class:`RequestCycle` with the
request body and disconnects, and implements a
:class:`ResponseChannel` to put the response on the wire. Everything the
ASGI spec asks of a server about the order and validity of messages, about application errors,
backpressure and ``http.disconnect`` lives here, once, and so does the end of every request: the
:class:`~pounce.pipeline.events.RequestCompleted` event, whether the response completed or was
cut off.

The cycle is only touched from its worker's event-loop thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, NoReturn, Protocol, cast

from pounce.asgi.headers import (
    InvalidHeader,
    is_field_value,
    validate_response_head,
    validate_response_headers,
)
from pounce.pipeline.events import ClientDisconnected as ClientWentAway
from pounce.pipeline.events import RequestCompleted

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp, HeaderFields, Headers, Message, Scope
    from pounce.pipeline.context import WorkerContext

logger = logging.getLogger("pounce.error")

#: Above this many buffered request-body bytes the protocol stops reading from the socket until
#: the app consumes them: a fast client must not make the server buffer an upload without bound.
BODY_HIGH_WATER = 256 * 1024


class ClientDisconnected(OSError):
    """Raised by ``send()`` when the client has gone away (ASGI HTTP spec 2.4).

    Applications that stream can catch ``OSError`` to stop producing a response nobody reads.
    """


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

    @property
    def cycle(self) -> RequestCycle | None:
        """The cycle whose response this channel carries, set once before the app runs."""

    @cycle.setter
    def cycle(self, value: RequestCycle | None) -> None: ...

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

    def send_error_response(
        self, status: int, headers: HeaderFields = (), body: bytes | None = None
    ) -> int:
        """A complete response the server writes itself; returns the body bytes sent.

        Its plain-text body is the status's reason phrase unless *body* is given (a health
        probe's ``ok``); a ``content-type`` in *headers* replaces ``text/plain`` (the metrics
        exposition); the answer to a HEAD request leaves the body out.
        """

    def abort(self) -> None:
        """End the stream abruptly: the client must see that the response is incomplete."""

    def body_consumed(self) -> None:
        """The app took the buffered request body: reading may resume."""

    def waiting_for_body(self, waiting: bool) -> None:
        """The app awaits request body that has not arrived (the body timeout runs)."""

    def response_complete(self) -> None: ...

    def app_finished(self) -> None:
        """The app's coroutine returned (the response may have completed earlier).

        Always the last call for a cycle: the channel drops its reference to it here.
        """


class PendingFilters(Protocol):
    """A request's response filters, waiting for its head (``pounce.pipeline.filters``)."""

    def attach(
        self,
        cycle: RequestCycle,
        status: int,
        fields: list[tuple[bytes, bytes]],
        content_length: int | None,
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """Run or attach the filters that want this response; return the head to send."""

    def queue_waited(self, seconds: float) -> None:
        """The request waited this long in the request queue (Server-Timing reports it)."""


class RequestCycle:
    """One request's ASGI ``receive``/``send`` pair and the state machine behind them."""

    #: Seconds waited in the request queue; only a queued cycle
    #: (:class:`~pounce.pipeline.request_queue.QueuedCycle`) ever waits.
    queue_wait = 0.0

    __slots__ = (
        "_body",
        "_body_size",
        "_final_delivered",
        "_reported",
        "_streaming",
        "_waiter",
        "body_finished",
        "bytes_received",
        "bytes_sent",
        "channel",
        "client_eof",
        "ctx",
        "disconnected",
        "expect_continue",
        "filters",
        "finished",
        "report_held",
        "request_complete",
        "response_complete",
        "response_headers",
        "response_started",
        "scope",
        "start_time",
        "status",
        "task",
        "trailers_expected",
    )

    def __init__(
        self,
        ctx: WorkerContext,
        channel: ResponseChannel,
        scope: Scope,
        has_body: bool,
        expect_continue: bool,
    ) -> None:
        self.ctx = ctx
        self.channel = channel
        self.scope = scope
        # Created with the first body chunk: most requests have none, and every container
        # allocated per request brings the next garbage-collector pass closer.
        self._body: list[bytes] | None = None
        self._body_size = 0
        self._final_delivered = False
        self._waiter: asyncio.Future[None] | None = None
        self.request_complete = not has_body
        self.expect_continue = expect_continue and has_body
        self.disconnected = False
        self.client_eof = False
        self.response_started = False
        self.response_complete = False
        self.trailers_expected = False
        self.body_finished = False
        self._streaming = False  # started, body under way: the fast path of send()
        self.status = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        # perf_counter, not loop.time(): uvloop's clock only has millisecond resolution.
        self.start_time = (
            perf_counter() if ctx.events.active or ctx.count_request is not None else 0.0
        )
        self.response_headers: Headers | None = None
        self._reported = False
        #: Set by a channel that still has the end of the body to write (a final piece being
        #: compressed on another thread): the completion record waits for :meth:`release_report`,
        #: so it counts the bytes really sent.
        self.report_held = False
        #: The response filters the dispatcher made for this request, until the response
        #: starts and they attach themselves; None without any.
        self.filters: PendingFilters | None = None
        #: The task running the app, while it runs (the protocol cancels it on a forced close).
        self.task: asyncio.Task[None] | None = None
        #: The app's coroutine has returned (or was never started: admission refused it).
        self.finished = False

    # -- fed by the protocol ------------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        """A piece of request body arrived from the client."""
        if data:
            if self._body is None:
                self._body = [data]
            else:
                self._body.append(data)
            size = len(data)
            self._body_size += size
            self.bytes_received += size
            self._wake()

    def feed_end(self) -> None:
        """The request body is complete."""
        self.request_complete = True
        self._wake()

    def feed_disconnect(self) -> None:
        """The connection is gone: ``receive`` says so and ``send`` raises."""
        if not (self.disconnected or self.response_complete):
            events = self.ctx.events
            if events.active and events.wants(ClientWentAway):
                scope = self.scope
                events.emit(
                    ClientWentAway(
                        client=scope["client"],
                        method=scope["method"],
                        path=scope["path"],
                        response_started=self.response_started,
                    )
                )
        self.disconnected = True
        self._streaming = False
        self._wake()

    def feed_eof(self) -> None:
        """The client half-closed: no more body can come, but the response may still be sent."""
        self.client_eof = True
        self._wake()

    @property
    def buffered_body(self) -> int:
        return self._body_size

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the ASGI callables -------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            parts = self._body
            if parts:
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._body = None
                self._body_size = 0
                more = not self.request_complete
                if not more:
                    self._final_delivered = True
                self.channel.body_consumed()
                return {"type": "http.request", "body": body, "more_body": more}
            if self.request_complete and not self._final_delivered:
                self._final_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.client_eof:
                # The client can send nothing more; an app waiting here waits for a disconnect.
                return {"type": "http.disconnect"}
            if self.expect_continue:
                self.expect_continue = False
                if not self.response_started:
                    self.channel.write_continue()
            waiter = self.ctx.loop.create_future()
            self._waiter = waiter
            waiting_for_body = not self.request_complete
            if waiting_for_body:
                self.channel.waiting_for_body(True)
            try:
                await waiter
            finally:
                if waiting_for_body:
                    self.channel.waiting_for_body(False)

    async def send(self, message: Message) -> None:
        if self._streaming:
            # The hot path of a streaming response: one more body chunk, nothing unusual.
            try:
                body = message["body"]
                is_chunk = message["type"] == "http.response.body" and message["more_body"]
            except (KeyError, TypeError):
                is_chunk = False
            if is_chunk and type(body) is bytes:
                channel = self.channel
                channel.write_body(body, True)
                flow = channel.flow
                if flow.write_paused:
                    await flow.drain()
                return
        try:
            kind = message["type"]
        except (KeyError, TypeError):
            self.protocol_misuse(f"send() got {message!r}, which is not an ASGI message")
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        if not self.response_started:
            if kind == "http.response.start":
                self._start(message)
            elif kind == "http.response.early_hint":
                self._early_hint(message)
            else:
                self.protocol_misuse(
                    f"expected 'http.response.start' but the app sent {kind!r} first"
                )
            return
        if self.response_complete:
            self.protocol_misuse(f"the app sent {kind!r} after the response was complete")
        if kind == "http.response.body":
            if self.body_finished:
                self.protocol_misuse("the app sent 'http.response.body' after the final body")
            body = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if type(body) is not bytes:
                if not isinstance(body, bytes | bytearray | memoryview):
                    self.protocol_misuse(
                        f"'http.response.body' body must be bytes, not {type(body).__name__}"
                    )
                body = bytes(body)
            channel = self.channel
            channel.write_body(body, more)
            if not more:
                self.body_finished = True
                self._streaming = False
                if not self.trailers_expected and not self.response_complete:
                    # _complete() inlined: the end of every response comes through here.
                    self.response_complete = True
                    channel.response_complete()
                    ctx = self.ctx
                    if ctx.events.active or ctx.count_request is not None:
                        self._emit_completed(True)
                    if self._waiter is not None:
                        self._wake()
            elif channel.flow.write_paused:  # checked here: no coroutine per chunk otherwise
                await channel.flow.drain()
        elif kind == "http.response.pathsend":
            if self.body_finished:
                self.protocol_misuse("the app sent 'http.response.pathsend' after the final body")
            path = message.get("path")
            if not isinstance(path, str):
                self.protocol_misuse("'http.response.pathsend' needs a 'path' string")
            await self.channel.write_file(path)
            if self.disconnected:
                # Cut off while the file went out: the response is not complete.
                raise ClientDisconnected("the client closed the connection")
            self._body_finished()
        elif kind == "http.response.trailers":
            if not self.trailers_expected:
                self.protocol_misuse(
                    "the app sent 'http.response.trailers' without 'trailers': True in its start"
                )
            if not self.body_finished:
                self.protocol_misuse("the app sent 'http.response.trailers' before the final body")
            self._trailers(message)
        else:
            self.protocol_misuse(f"the app sent an unknown message type {kind!r}")

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 999:
            if type(status) is int and 100 <= status < 200:
                self.protocol_misuse(
                    f"status {status} cannot start a response; informational responses go "
                    "through 'http.response.early_hint'"
                )
            self.protocol_misuse(f"'http.response.start' has an invalid status {status!r}")
        self.response_started = True
        self.status = status
        self.trailers_expected = bool(message.get("trailers", False))
        try:
            fields, content_length, close, has_server, has_date = validate_response_head(
                message.get("headers", ()), status
            )
        except InvalidHeader as exc:
            # Never forward it (response splitting); the client gets a clean 500 instead.
            logger.error("Invalid response header from the application: %s", exc)
            self.answer_with_error(500)
            raise _ProtocolMisuse(f"invalid response header: {exc}") from None
        self.ctx.add_default_fields(fields, has_server, has_date)
        self.response_headers = fields
        filters = self.filters
        if filters is not None:
            self.filters = None
            fields, content_length = filters.attach(self, status, fields, content_length)
        self.channel.start_response(
            status, fields, content_length, close, self.trailers_expected
        )
        self._streaming = True

    def _early_hint(self, message: Message) -> None:
        links = message.get("links", ())
        checked: list[bytes] = []
        for link in links:
            if not isinstance(link, bytes) or not link or not is_field_value(link):
                self.protocol_misuse(f"'http.response.early_hint' has an invalid link {link!r}")
            checked.append(link)
        if checked:
            self.channel.write_early_hint(checked)

    def _body_finished(self) -> None:
        self.body_finished = True
        self._streaming = False
        if not self.trailers_expected:
            self._complete()

    def _trailers(self, message: Message) -> None:
        try:
            headers = validate_response_headers(message.get("headers", ()))
        except InvalidHeader as exc:
            self.protocol_misuse(f"invalid response trailer: {exc}")
        more = bool(message.get("more_trailers", False))
        # Trailers sent in several messages are merged by the channel and sent with the last.
        self.channel.write_trailers(headers, more)
        if not more:
            self._complete()

    def _complete(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        self.channel.response_complete()
        ctx = self.ctx
        if ctx.events.active or ctx.count_request is not None:
            self._emit_completed(True)
        self._wake()

    def answer_with_error(
        self,
        status: int,
        headers: HeaderFields = (),
        body: bytes | None = None,
        report: bool = True,
    ) -> None:
        """Send a response of the server's own (a 500, an admission hook's answer) and complete.

        Without *report* no :class:`RequestCompleted` is emitted, so the request stays out of
        the access log (health probes, unless ``--access-log-health``).
        """
        if not report:
            self._reported = True
        self.response_started = True
        self.status = status
        self.bytes_sent = self.channel.send_error_response(status, headers, body)
        self._complete()

    def release_report(self, complete: bool) -> None:
        """The channel wrote (or gave up on) the end it held: report the request now."""
        self.report_held = False
        ctx = self.ctx
        if ctx.events.active or ctx.count_request is not None:
            self._emit_completed(complete)

    def _emit_completed(self, complete: bool) -> None:
        """Tell the bus this request is over (once): the access log, metrics, tracing."""
        if self._reported or self.report_held:
            return
        self._reported = True
        scope = self.scope
        ctx = self.ctx
        count = ctx.count_request
        if count is not None:
            count(
                scope["method"],
                self.status,
                scope["http_version"],
                perf_counter() - self.start_time,
                self.bytes_sent,
                self.bytes_received,
                self.queue_wait,
            )
            if not ctx.events.wants(RequestCompleted):
                return
        ctx.events.emit(
            RequestCompleted(
                client=scope["client"],
                method=scope["method"],
                path=scope["path"],
                query_string=scope["query_string"],
                http_version=scope["http_version"],
                status=self.status,
                bytes_sent=self.bytes_sent,
                duration=perf_counter() - self.start_time,
                request_headers=scope["headers"],
                response_headers=self.response_headers,
                scheme=scope["scheme"],
                complete=complete,
                queue_wait=self.queue_wait,
                bytes_received=self.bytes_received,
            )
        )

    def protocol_misuse(self, problem: str) -> NoReturn:
        """Log *problem*, close the connection, and raise it into the app."""
        logger.error("ASGI protocol error: %s; closing the connection", problem)
        self._streaming = False
        self.response_complete = True
        self.channel.abort()
        self._wake()
        raise _ProtocolMisuse(problem)

    # -- running the app ----------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        """Run the app for this request and make sure the client gets an answer."""
        try:
            # Typed as returning None, but an app that returns a value is worth a log line.
            result: object = await cast("Callable[..., Awaitable[object]]", app)(
                self.scope, self.receive, self.send
            )
        except _ProtocolMisuse:
            pass  # already logged and the connection is closed
        except ClientDisconnected:
            if self.ctx.debug_enabled:
                logger.debug("Client disconnected before the response was sent")
        except asyncio.CancelledError:
            # Graceful-shutdown timeout or a dropped connection: nothing to tell the client.
            if not self.response_complete:
                self.channel.abort()
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            logger.error("Exception in ASGI application", exc_info=exc)
            self._answer_failure()
        else:
            if result is not None:
                logger.error("ASGI callable returned a value (%r); it should return None", result)
            if not self.response_started:
                if not self.disconnected:
                    logger.error("ASGI callable returned without starting a response")
                    self._answer_failure()
            elif not self.response_complete:
                if not self.disconnected:
                    logger.error("ASGI callable returned without completing the response")
                self.channel.abort()
        finally:
            self._end()

    def _end(self) -> None:
        """The app is done (or will never run): account, report, and let the channel go."""
        self._waiter = None
        self.finished = True
        self.task = None
        ctx = self.ctx
        ctx.request_finished()
        if (ctx.events.active or ctx.count_request is not None) and not self._reported:
            # Cut off (client gone, write timeout, app error mid-body): still one record.
            self._emit_completed(False)
        self.channel.app_finished()

    def _answer_failure(self) -> None:
        if self.disconnected or self.response_complete:
            return
        if self.response_started:
            # Part of a response is on the wire: closing is the only way to tell the client
            # that it is truncated.
            self.channel.abort()
        else:
            self.answer_with_error(500)


class _ProtocolMisuse(RuntimeError):
    """Raised into an app that broke the ASGI message order; the server already logged it."""

