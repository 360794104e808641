"""Admission hooks: decisions taken before a request is allowed to reach the app.

A hook runs once per request (and per WebSocket handshake), after the scope is built and before
any task exists, so refusing costs no task, no context copy and no app call. Hooks are assembled
once per worker; with none configured the dispatcher skips the loop entirely.

Today: ``--limit-concurrency``. The rate limiter, the request queue and health endpoints plug in
here the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pounce.pipeline.events import REJECTED_CONCURRENCY

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields, Scope
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext

__all__ = ["Admission", "ConcurrencyLimit", "Rejection"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why and how a request is refused: the status, extra response fields, a reason."""

    status: int
    reason: str
    headers: HeaderFields = ()


class Admission(Protocol):
    """One admission hook. Returns None to let the request through."""

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None: ...


class ConcurrencyLimit:
    """``--limit-concurrency``: 503 once this worker runs that many requests and WebSockets."""

    __slots__ = ("_ctx", "_rejection", "limit")

    def __init__(self, ctx: WorkerContext, limit: int) -> None:
        self._ctx = ctx
        self.limit = limit
        self._rejection = Rejection(503, REJECTED_CONCURRENCY)

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        if self._ctx.active_requests >= self.limit:
            return self._rejection
        return None


def admission_hooks(ctx: WorkerContext) -> tuple[Admission, ...]:
    """The hooks the configuration turns on, in the order they run."""
    hooks: list[Admission] = []
    limit = ctx.config.limit_concurrency
    if limit is not None:
        hooks.append(ConcurrencyLimit(ctx, limit))
    return tuple(hooks)
