"""The ASGI lifespan protocol: the app's start-up and shutdown hooks.

The app runs its lifespan coroutine in a task of its own for the whole life of the server. What
it puts in ``scope["state"]`` is shallow-copied into every request's scope, and the contextvars
it sets during start-up become the context every request starts from (as a fresh copy, so
nothing a request sets leaks into another).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Any, Literal

from pounce.errors import StartupError

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp, Message

logger = logging.getLogger("pounce.error")

_LIFESPAN_SENDS = frozenset(
    {
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)


class LifespanFailure(StartupError):
    """The app's lifespan start-up failed, timed out, or is required but unsupported."""


class Lifespan:
    """Drives one app's lifespan protocol on the running event loop."""

    def __init__(
        self,
        app: ASGIApp,
        mode: Literal["auto", "on", "off"],
        *,
        startup_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self.app = app
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.state: dict[str, Any] = {}
        #: The context requests start from; captured when start-up completes.
        self.context = contextvars.copy_context()
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done: asyncio.Event | None = None
        self._shutdown_done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._unsupported = False
        self._started = False
        self._sent_anything = False

    @property
    def active(self) -> bool:
        """True when the app runs the lifespan protocol (so shutdown must be sent)."""
        return self._started and not self._unsupported

    async def startup(self) -> None:
        if self.mode == "off":
            return
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._main(), context=contextvars.copy_context()
        )
        await self._queue.put({"type": "lifespan.startup"})
        try:
            await asyncio.wait_for(self._startup_done.wait(), self.startup_timeout)
        except TimeoutError:
            self._task.cancel()
            raise LifespanFailure(
                f"application start-up did not complete within {self.startup_timeout:g}s "
                "(raise --timeout-startup if it needs longer)"
            ) from None
        if self._failure is not None:
            raise LifespanFailure(f"application start-up failed: {self._failure}")
        if self._unsupported:
            if self.mode == "on":
                raise LifespanFailure(
                    "the application does not support the ASGI lifespan protocol, but "
                    "--lifespan on requires it (use --lifespan auto or off)"
                )
            return
        self._started = True

    async def shutdown(self) -> None:
        if not self.active or self._shutdown_done is None:
            return
        await self._queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), self.shutdown_timeout)
        except TimeoutError:
            logger.error(
                "Application shutdown did not complete within %gs; giving up on it",
                self.shutdown_timeout,
            )
            if self._task is not None:
                self._task.cancel()
            return
        if self._failure is not None:
            logger.error("Application shutdown failed: %s", self._failure)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not self._sent_anything and self.mode == "auto":
                self._unsupported = True
                logger.info("ASGI 'lifespan' protocol appears unsupported by the application.")
                logger.debug("Lifespan error", exc_info=exc)
            else:
                self._failure = f"{type(exc).__name__}: {exc}"
                logger.error("Exception in the application's lifespan", exc_info=exc)
        else:
            if not self._sent_anything:
                # Returned without answering: treat it like an app that ignores lifespan.
                self._unsupported = True
        finally:
            assert self._startup_done is not None and self._shutdown_done is not None
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        assert self._startup_done is not None and self._shutdown_done is not None
        kind = message.get("type")
        if kind not in _LIFESPAN_SENDS:
            # Typically an app that ignores scope["type"]: in auto mode that means
            # "no lifespan support", which _main decides once this error reaches it.
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        self._sent_anything = True
        if kind == "lifespan.startup.complete":
            # Runs inside the lifespan task: this snapshot holds what start-up set.
            self.context = contextvars.copy_context()
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._failure = str(message.get("message") or "the app sent lifespan.startup.failed")
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = str(message.get("message") or "the app sent lifespan.shutdown.failed")
            self._shutdown_done.set()
