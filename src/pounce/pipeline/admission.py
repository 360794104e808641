"""Admission hooks: decisions taken before a request is allowed to reach the app.

A hook runs once per request (and per WebSocket handshake), after the scope is built and before
any task exists, so refusing costs no task, no context copy and no app call. Hooks are assembled
once per worker; with none configured the dispatcher skips the loop entirely.

Today: the health probes (``--health-path``, ``--ready-path``), ``--request-id`` (which never
refuses: it names the request), ``--rate-limit`` and ``--limit-concurrency``.
The request queue (``--max-concurrency``) is always the last hook; the dispatcher appends it
(``pounce.pipeline.request_queue``), since its waiting part lives in the request's task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pounce.features.rate_limit import limiter_from_config, store_from_config
from pounce.pipeline.events import (
    REJECTED_CONCURRENCY,
    REJECTED_METHOD,
    REJECTED_NOT_READY,
    REJECTED_RATE_LIMITED,
)
from pounce.pipeline.request_id import RequestIds

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields, Scope
    from pounce.features.rate_limit import ClientRateLimiter
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext

__all__ = ["Admission", "ConcurrencyLimit", "HealthProbes", "RateLimit", "Rejection"]

#: The ``reason`` of a probe's 200 answer (not a refusal: no ``RequestRejected`` for it).
HEALTH_PROBE = "health probe"


@dataclass(frozen=True, slots=True)
class Rejection:
    """The server's own answer instead of the app's: a refusal, or a health probe's answer.

    The channel writes it as a complete plain-text response (``send_error_response``), so
    every protocol answers it the same way.
    """

    status: int
    reason: str
    headers: HeaderFields = ()
    #: The response body; None means the status's reason phrase (``Service Unavailable``).
    body: bytes | None = None
    #: False keeps the answer off the event bus (so out of the access log and metrics):
    #: health probes, which would otherwise drown the log.
    log: bool = True


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


class HealthProbes:
    """``--health-path`` and ``--ready-path``: probes answered by the server, never the app.

    Liveness says the worker's loop answers (200 ``ok``). Readiness says whether new requests
    are welcome: 200 ``ready`` while serving, 503 ``not ready`` while the worker drains (a
    graceful shutdown, or a worker retiring in a rolling reload) or sheds load
    (:attr:`~pounce.pipeline.context.WorkerContext.shedding`). A worker only accepts
    connections once its lifespan start-up is over, so "starting" is never seen from the
    inside: a probe then finds nobody listening, which a prober counts as not ready.

    Paths are compared with the request path as the client sent it (percent-decoded, without
    ``--root-path``): a prober calls the server directly, not through the mount point the
    proxy adds. Only GET and HEAD are probes; other methods get 405 with ``Allow``. A
    WebSocket handshake to a probe path is not a probe and goes to the app.
    """

    __slots__ = ("_ctx", "_not_ready", "_paths", "_ready", "_wrong_method")

    def __init__(self, ctx: WorkerContext, health_path: str | None, ready_path: str | None) -> None:
        self._ctx = ctx
        log = ctx.config.access_log_health
        # Built once: answering a probe allocates nothing.
        alive = Rejection(200, HEALTH_PROBE, (), b"ok", log)
        self._ready = Rejection(200, HEALTH_PROBE, (), b"ready", log)
        self._not_ready = Rejection(503, REJECTED_NOT_READY, (), b"not ready", log)
        self._wrong_method = Rejection(
            405, REJECTED_METHOD, ((b"allow", b"GET, HEAD"),), None, log
        )
        # scope["path"] carries --root-path in front: compare with what it will hold.
        root = ctx.root_path
        #: scope path -> the liveness answer, or None for readiness (decided per probe).
        self._paths: dict[str, Rejection | None] = {}
        if health_path is not None:
            self._paths[root + health_path] = alive
        if ready_path is not None:
            self._paths[root + ready_path] = None

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        path = scope["path"]
        if path not in self._paths or scope["type"] != "http":
            return None
        if scope["method"] not in ("GET", "HEAD"):
            return self._wrong_method
        answer = self._paths[path]
        if answer is not None:
            return answer
        ctx = self._ctx
        if ctx.shutting_down or ctx.shedding:
            return self._not_ready
        return self._ready


class RateLimit:
    """``--rate-limit``: 429 for a client over its rate, before the app is called.

    The answer carries ``Retry-After`` and the IETF draft's ``RateLimit-Limit``,
    ``RateLimit-Remaining`` (always 0 here) and ``RateLimit-Reset`` (seconds until the
    client may send again), plus ``RateLimit-Policy`` naming the limit and its window.
    The bucket table is the server's (:mod:`pounce.features.rate_limit`); this hook only
    turns its verdict into an answer. Refusals are built once per distinct wait and reused,
    so a client hammering the server costs no allocation per refused request.
    """

    __slots__ = ("_check", "_fixed", "_rejections")

    def __init__(self, limiter: ClientRateLimiter) -> None:
        self._check = limiter.check
        store = limiter.store
        self._fixed = (
            (b"ratelimit-limit", str(store.count).encode("ascii")),
            (b"ratelimit-remaining", b"0"),
            (b"ratelimit-policy", f"{store.count};w={store.period:g}".encode("ascii")),
        )
        self._rejections: dict[int, Rejection] = {}

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        wait = self._check(scope["path"], scope["client"])
        if not wait:
            return None
        return self._refusal(max(1, math.ceil(wait)))

    def _refusal(self, seconds: int) -> Rejection:
        rejection = self._rejections.get(seconds)
        if rejection is None:
            value = str(seconds).encode("ascii")
            headers = ((b"retry-after", value), *self._fixed, (b"ratelimit-reset", value))
            rejection = self._rejections[seconds] = Rejection(429, REJECTED_RATE_LIMITED, headers)
        return rejection


def admission_hooks(
    ctx: WorkerContext, *, metrics: Admission | None = None
) -> tuple[Admission, ...]:
    """The hooks the configuration turns on, in the order they run.

    *metrics* is the ``--metrics`` endpoint (``pipeline.metrics.MetricsEndpoint``), built by
    the worker that owns the metrics store's region; it comes right after the probes, so no
    rate limit or queue refuses a scrape either.
    """
    hooks: list[Admission] = []
    config = ctx.config
    if config.health_path is not None or config.ready_path is not None:
        # First: a probe is answered before any limit could refuse it.
        hooks.append(HealthProbes(ctx, config.health_path, config.ready_path))
    if metrics is not None:
        hooks.append(metrics)
    if config.request_id:
        # Never refuses: after the probes (which need no id), before any hook that refuses,
        # so a refusal could name the request it refused.
        hooks.append(RequestIds(config.request_id_header))
    if config.rate_limit is not None:
        # After the probes and the metrics endpoint (never limited), before the
        # concurrency limit: a client over its rate must not take a slot from others.
        store = ctx.rate_limiter
        if store is None:  # a worker made without a server (tests): a store of its own
            store = ctx.rate_limiter = store_from_config(config, "thread")
        assert store is not None
        hooks.append(RateLimit(limiter_from_config(config, store)))
    limit = config.limit_concurrency
    if limit is not None:
        hooks.append(ConcurrencyLimit(ctx, limit))
    return tuple(hooks)
