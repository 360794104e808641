"""The one place where a request enters the pipeline, whatever protocol carried it.

Every protocol engine calls :meth:`Dispatcher.start_request` once per request or stream, with
what it parsed and the channel that carries the response. The dispatcher builds the scope, runs
the admission hooks, wraps the channel in the response filters the request needs, starts the
app in a fresh copy of the lifespan's context, does the accounting and emits the events. A new
protocol therefore gets limits, accounting, events and every feature by calling it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pounce.pipeline.admission import admission_hooks
from pounce.pipeline.cycle import RequestCycle
from pounce.pipeline.events import RequestRejected, RequestStarted
from pounce.pipeline.filters import ResponseFilters
from pounce.pipeline.request_queue import RequestQueue
from pounce.pipeline.scope import http_scope
from pounce.pipeline.websocket import WebSocketSession, websocket_scope

if TYPE_CHECKING:
    from collections.abc import Callable

    from pounce.asgi.types import Headers, Scope
    from pounce.pipeline.admission import Admission, Rejection
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext
    from pounce.pipeline.cycle import ResponseChannel
    from pounce.pipeline.filters import FilterFactory
    from pounce.pipeline.websocket import HandshakeChannel

__all__ = ["Dispatcher"]


class Dispatcher:
    """One per worker; used only from the worker's event-loop thread."""

    __slots__ = ("admission", "ctx", "filter_factories", "new_cycle", "queue")

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        admission: tuple[Admission, ...] | None = None,
        filter_factories: tuple[FilterFactory, ...] = (),
    ) -> None:
        self.ctx = ctx
        hooks = admission_hooks(ctx) if admission is None else admission
        self.filter_factories = filter_factories
        #: ``--max-concurrency``: the last admission hook, and the cycles whose task first
        #: waits for a slot. Off, plain cycles: the queue costs nothing.
        self.queue: RequestQueue | None = None
        self.new_cycle: Callable[
            [WorkerContext, ResponseChannel, Scope, bool, bool], RequestCycle
        ] = RequestCycle
        if ctx.slot_pool is not None:
            queue = self.queue = RequestQueue(ctx, ctx.slot_pool)
            hooks = (*hooks, queue)
            self.new_cycle = queue.cycle
        self.admission = hooks

    def start_request(  # noqa: PLR0917 - positional on purpose: called once per request
        self,
        channel: ResponseChannel,
        connection: ConnectionInfo,
        http_version: str,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        headers: Headers,
        has_body: bool,
        expect_continue: bool,
        informational: bool,
    ) -> RequestCycle:
        """Admit and start one HTTP request; the returned cycle is fed by the protocol.

        *informational* says whether the channel can send trailers and 1xx responses, which
        decides the extensions the scope advertises.
        """
        ctx = self.ctx
        scope = http_scope(
            ctx,
            connection,
            http_version,
            method,
            raw_path,
            query_string,
            headers,
            # Fresh dicts (an app may change its scope, or serialise it), as literals: fast.
            {
                "http.response.pathsend": {},
                "http.response.trailers": {},
                "http.response.early_hint": {},
            }
            if informational
            else {"http.response.pathsend": {}},
        )
        cycle = self.new_cycle(ctx, channel, scope, has_body, expect_continue)
        channel.cycle = cycle
        if self.filter_factories:
            cycle.filters = self._filters(scope)
        if self.admission:
            rejection = self.admit(scope, connection)
            if rejection is not None:
                self.reject(cycle, rejection)
                return cycle
        ctx.request_started()
        events = ctx.events
        if events.active and events.wants(RequestStarted):
            events.emit(
                RequestStarted(
                    client=scope["client"],
                    method=method,
                    path=scope["path"],
                    http_version=http_version,
                    scheme=scope["scheme"],
                )
            )
        task = ctx.start_task(cycle.run(ctx.app), context=ctx.base_context.copy())
        # An eager task factory (set by the app on the loop) may have finished it already.
        if not cycle.finished:
            cycle.task = task
        return cycle

    def open_websocket(  # noqa: PLR0917 - positional on purpose, like start_request
        self,
        channel: HandshakeChannel,
        connection: ConnectionInfo,
        http_version: str,
        raw_path: bytes,
        query_string: bytes,
        headers: Headers,
        subprotocols: list[str],
    ) -> WebSocketSession | None:
        """Admit one WebSocket handshake; None when it was refused (and answered).

        The protocol attaches its frame engine to the session, then calls
        :meth:`run_websocket`. A WebSocket counts as a request for accounting and limits
        from here until its app returns.
        """
        ctx = self.ctx
        scope = websocket_scope(
            http_scope(ctx, connection, http_version, "GET", raw_path, query_string, headers, {}),
            subprotocols,
        )
        session = WebSocketSession(ctx, channel, scope)
        if self.admission:
            rejection = self.admit(scope, connection)
            if rejection is not None:
                self._report_rejection(scope, rejection)
                session.refuse(rejection.status, rejection.headers)
                return None
        ctx.request_started()
        return session

    def run_websocket(self, session: WebSocketSession) -> None:
        """Start the app of an admitted WebSocket, in a fresh copy of the lifespan's context."""
        ctx = self.ctx
        session.task = ctx.start_task(session.run(ctx.app), context=ctx.base_context.copy())

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        """Run the admission hooks in order; the first refusal wins."""
        for hook in self.admission:
            rejection = hook.admit(scope, connection)
            if rejection is not None:
                return rejection
        return None

    def reject(self, cycle: RequestCycle, rejection: Rejection) -> None:
        """Answer *cycle* with the server's own response instead of calling the app."""
        if rejection.log and rejection.status >= 400:  # a probe's 200 refuses nothing
            self._report_rejection(cycle.scope, rejection)
        cycle.finished = True  # the app is never called
        cycle.answer_with_error(
            rejection.status, rejection.headers, rejection.body, report=rejection.log
        )
        cycle.channel.app_finished()  # as at the end of any request: the channel lets go

    def _report_rejection(self, scope: Scope, rejection: Rejection) -> None:
        events = self.ctx.events
        if events.active and events.wants(RequestRejected):
            events.emit(
                RequestRejected(
                    client=scope["client"],
                    status=rejection.status,
                    reason=rejection.reason,
                    method=scope.get("method", "GET"),
                    path=scope["path"],
                )
            )

    def _filters(self, scope: Scope) -> ResponseFilters | None:
        # Runs for every request once any filter is configured (compression is on by
        # default): nothing is allocated unless a factory wants this request. The cycle
        # attaches them when the response starts, and only those that want the response.
        filters: ResponseFilters | None = None
        for factory in self.filter_factories:
            f = factory(scope)
            if f is not None:
                if filters is None:
                    filters = ResponseFilters((f,))
                else:
                    filters.append(f)
        return filters
