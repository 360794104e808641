"""The Server: binds, runs the app's lifespan, serves, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pounce.asgi.lifespan import Lifespan
from pounce.features.proxy_headers import ProxyTrust
from pounce.importer import load_app
from pounce.logs import AccessLogger
from pounce.server.loops import loop_factory
from pounce.server.sockets import bind_sockets, describe
from pounce.server.worker import Worker

if TYPE_CHECKING:
    from types import FrameType

    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig

logger = logging.getLogger("pounce.error")


class Server:
    """A Pounce server for one config and one app.

    ``serve()`` blocks until the server has stopped; ``shutdown()`` may be called from any
    thread (or a signal handler) to stop it gracefully.
    """

    def __init__(self, config: ServerConfig, app: ASGIApp | None = None) -> None:
        self.config = config
        self._app = app
        #: The addresses actually bound (useful with port 0), e.g. ``http://127.0.0.1:8000``.
        self.bound_addresses: list[str] = []
        #: Set once the server accepts connections, or when start-up failed.
        self.started = threading.Event()
        #: Why start-up failed, when it did.
        self.startup_error: BaseException | None = None
        #: True when a second signal forced the exit without draining.
        self.forced = False
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._stop_requested = False
        self._signals_seen = 0
        self._sockets: list[socket.socket] = []

    # -- control ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run the server in this thread until it stops. Raises ``StartupError`` subclasses."""
        with asyncio.Runner(loop_factory=loop_factory(self.config.loop)) as runner:
            runner.run(self.serve_async())

    def shutdown(self, *, force: bool = False) -> None:
        """Stop gracefully (or at once with *force*). Thread-safe and idempotent."""
        with self._lock:
            self._stop_requested = True
            worker = self._worker
        if worker is not None:
            worker.request_stop(force=force)

    # -- serving ------------------------------------------------------------------------------

    async def serve_async(self) -> None:
        config = self.config
        try:
            app = load_app(self._app if self._app is not None else config, config=config)
            self._sockets = bind_sockets(config)
            self.bound_addresses = [describe(sock) for sock in self._sockets]
            lifespan = Lifespan(
                app,
                config.lifespan,
                startup_timeout=config.timeout_startup,
                shutdown_timeout=config.timeout_graceful_shutdown,
            )
            await lifespan.startup()
        except BaseException as exc:
            self.startup_error = exc
            self._close_sockets()
            self.started.set()
            raise
        worker = Worker(
            app=app,
            config=config,
            access_log=AccessLogger.from_config(config),
            proxy_trust=ProxyTrust.from_config(config) if config.proxy_headers else None,
            state=lifespan.state,
            base_context=None if config.reset_contextvars else lifespan.context,
        )
        with self._lock:
            self._worker = worker
            stop_early = self._stop_requested
        restore_signals = self._install_signal_handlers()
        try:
            serving = asyncio.get_running_loop().create_task(worker.serve(self._sockets))
            while not worker.ready.is_set() and not serving.done():
                await asyncio.sleep(0)
            if stop_early:
                worker.request_stop()
            for address in self.bound_addresses:
                logger.info("Pounce running on %s (Press CTRL+C to quit)", address)
            self.started.set()
            await serving
        finally:
            restore_signals()
            if not self.forced:
                await lifespan.shutdown()
            self._close_sockets()
            logger.info("Finished server process [%d]", os.getpid())

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                if sock.family == socket.AF_UNIX:
                    path = sock.getsockname()
                    if isinstance(path, str) and path:
                        os.unlink(path)
            sock.close()
        self._sockets = []

    # -- signals ------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM: first drains gracefully, second exits at once. Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            logger.info(
                "Received %s: shutting down gracefully (send again to exit at once)",
                signal.Signals(signum).name,
            )
            self.shutdown()
        else:
            logger.warning("Received %s again: exiting now", signal.Signals(signum).name)
            self.forced = True
            self.shutdown(force=True)



