"""Dev reload (``--reload``): a parent process that restarts the server when files change.

Why a separate parent process and not the in-process rolling reload (SIGHUP): a rolling
reload re-imports modules in a live interpreter, which cannot undo everything a module did
at import time (C extensions, monkey-patching, changed class identities held by other
modules). A fresh process always runs exactly the code on disk, and a start-up failure
cannot take the watcher down with it. The reloader never imports the application, so a
syntax error only costs the child.

How the child is started: ``sys.executable -c <bootstrap> FD``. The reloader has already
resolved the configuration (command line, ``pounce.toml``, ``POUNCE_*`` environment) and
sends it, pickled, through the pipe *FD*; the child does not parse ``argv`` again. This
avoids rewriting a command line (``--port`` vs ``--bind`` vs config-file addresses) to say
"use the inherited socket instead", and keeps secrets such as a key password out of the
child's ``argv`` and environment. The pipe stays open for the child's lifetime: when it
reaches end-of-file the reloader is gone (even if it was SIGKILLed), and the child stops
itself instead of serving forever as an orphan.

Sockets: the reloader binds the listening sockets once and passes them to every child as
inherited descriptors (``--bind fd://N``). Between two children the socket stays open in
the reloader, so clients that connect during a restart wait in the kernel backlog and are
served by the next child instead of seeing "connection refused". Exception: with an explicit
``--accept reuseport`` the server must bind one ``SO_REUSEPORT`` socket per worker itself,
so each child binds its own sockets and a restart has a short window without a listener.

The child runs in its own process group: Ctrl-C in a terminal signals the reloader only,
which then stops the child with one SIGTERM (a second signal would force the child's
shutdown). Stopping is bounded: ``min(--timeout-graceful-shutdown, 5 s) + 1 s``, then the
child's whole process group (process workers included) gets SIGKILL.

A child that exits on its own (exit status 3: the app failed to import or start) is not
restarted in a loop: its traceback is on stderr, and the reloader logs that it waits for the
next file change, then starts a new child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Final

from pounce.server.signals import install_signal_handlers
from pounce.server.sockets import bind_sockets
from pounce.workers.watchers import PathFilter, Watcher, make_watcher

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from types import FrameType

    from pounce.config import ServerConfig

__all__ = ["Reloader", "read_child_config", "run_reloader"]

logger = logging.getLogger("pounce.error")

#: The child's bootstrap: everything else happens in :func:`pounce.main.reload_child_main`.
_BOOTSTRAP: Final = (
    "import sys\n"
    "from pounce.main import reload_child_main\n"
    "sys.exit(reload_child_main(int(sys.argv[1])))\n"
)
_LENGTH: Final = struct.Struct("!I")
#: How often the reloader looks at signals and the child between file events.
_TICK: Final = 0.25
EXIT_STARTUP: Final = 3


def run_reloader(config: ServerConfig) -> None:
    """Serve ``config`` in a child process and restart it when watched files change.

    Returns when SIGINT/SIGTERM stopped the reloader (the CLI then exits 0).
    """
    Reloader(config).run()


class Reloader:
    """The parent process of ``--reload``: watcher, socket owner and child restarter."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.roots = [os.path.abspath(d) for d in config.reload_dirs] or [os.getcwd()]
        self.filter = PathFilter(self.roots, config.reload_includes, config.reload_excludes)
        #: Number of children started (the first one included); for tests and logs.
        self.starts = 0
        self._stop = False
        self._force = False
        self._restart = False
        self._sockets: list[socket.socket] = []
        self._child: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # our end of the child's pipe

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        watcher = make_watcher(self.roots, self.filter)
        restore = self._install_signal_handlers()
        try:
            child_config = self._bind()
            logger.info(
                "Started reloader process [%d] using %s; watching %s for %s",
                os.getpid(), watcher.name, ", ".join(self.roots),
                ", ".join(self.filter.includes),
            )
            self._spawn(child_config)
            self._loop(watcher, child_config)
        finally:
            self._stop_child(force=self._force)
            restore()
            watcher.close()
            for sock in self._sockets:
                sock.close()
            self._sockets = []
            logger.info("Stopped reloader process [%d]", os.getpid())

    def _loop(self, watcher: Watcher, child_config: ServerConfig) -> None:
        waiting = False  # the child exited on its own: wait for a change
        while not self._stop:
            changes = watcher.wait(_TICK)
            if self._stop:
                break
            child = self._child
            if child is not None and not waiting and child.poll() is not None:
                self._report_exit(child.returncode)
                self._close_lifeline()
                waiting = True
            if changes:
                changes |= self._debounce(watcher)
                if self._stop:
                    break
                logger.warning("Detected changes in %s. Reloading...", _describe(changes))
            elif self._restart:
                logger.warning("Received SIGHUP: restarting the server process")
            else:
                continue
            self._restart = False
            self._stop_child(force=False)
            self._spawn(child_config)
            waiting = False

    def _debounce(self, watcher: Watcher) -> set[str]:
        """Collect further changes until none came for ``reload_delay`` (editors save in
        bursts: temp file, rename, chmod), capped so a constantly changing tree still
        reloads."""
        delay = self.config.reload_delay
        changes: set[str] = set()
        now = time.monotonic()
        quiet_until = now + delay
        hard_stop = now + max(2.0, 4 * delay)
        while not self._stop:
            left = min(quiet_until, hard_stop) - time.monotonic()
            if left <= 0:
                break
            more = watcher.wait(min(left, _TICK))
            if more:
                changes |= more
                quiet_until = time.monotonic() + delay
        return changes

    def _report_exit(self, status: int) -> None:
        if status == EXIT_STARTUP:
            logger.error(
                "The application failed to start (see the error above); "
                "waiting for file changes before restarting"
            )
        else:
            logger.error(
                "The server process exited with status %d; waiting for file changes "
                "before restarting", status,
            )

    # -- sockets and the child ------------------------------------------------------------

    def _bind(self) -> ServerConfig:
        """Bind once; return the config the children get (inherited fds, no reload)."""
        config = self.config.replace(
            reload=False, reload_dirs=(), reload_includes=(), reload_excludes=()
        )
        if config.accept == "reuseport":
            return config  # each child binds its per-worker SO_REUSEPORT sockets itself
        self._sockets = bind_sockets(config)
        binds = tuple(f"fd://{sock.fileno()}" for sock in self._sockets)
        defaults = type(config)()
        return config.replace(
            bind=binds, host=defaults.host, port=defaults.port, uds=None, fd=None
        )

    def _spawn(self, child_config: ServerConfig) -> None:
        read_end, write_end = os.pipe()
        fds = [read_end, *(sock.fileno() for sock in self._sockets)]
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(read_end)],
                pass_fds=fds,
                env=_child_env(),
                process_group=0 if os.name == "posix" else None,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        payload = pickle.dumps(child_config)
        data = memoryview(_LENGTH.pack(len(payload)) + payload)
        with contextlib.suppress(BrokenPipeError):  # died at once: reported by the loop
            while data:
                data = data[os.write(write_end, data):]
        self._lifeline = write_end
        self.starts += 1

    def _stop_child(self, *, force: bool) -> None:
        """SIGTERM and a bounded wait, then SIGKILL for the child's whole process group."""
        child = self._child
        if child is None:
            return
        self._child = None
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL if force else signal.SIGTERM)
            bound = min(self.config.timeout_graceful_shutdown, 5.0) + 1.0
            try:
                child.wait(bound)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "The server process did not stop within %.0f s; killing it", bound
                )
                _kill_group(child.pid)
                child.wait()
        # Process workers of a child that was killed would otherwise outlive it.
        _kill_group(child.pid)
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = None

    # -- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        return install_signal_handlers(
            {"SIGINT": self._on_stop, "SIGTERM": self._on_stop, "SIGHUP": self._on_hup}
        )

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop:
            self._force = True
        self._stop = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._restart = True


def _child_env() -> dict[str, str]:
    """The child's environment: ours, without byte-code writing.

    A ``.pyc`` records its source's mtime in whole seconds and its size; a child that
    compiled ``app.py`` in the same second as an edit that kept the size (``v1`` -> ``v2``)
    would leave a cache the next child trusts, serving the old code. Children therefore do
    not write byte code (existing caches of installed packages are still read).
    """
    env = dict(os.environ)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def _kill_group(pgid: int) -> None:
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _describe(paths: set[str]) -> str:
    cwd = os.getcwd()
    shown = sorted(os.path.relpath(p, cwd) if p.startswith(cwd) else p for p in paths)
    text = ", ".join(repr(p) for p in shown[:3])
    return text + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


# --------------------------------------------------------------------------- the child


def _watch_lifeline(fd: int) -> None:
    """Block on the reloader's pipe; end-of-file means the reloader died: stop serving."""
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the reloader closed the configuration pipe")
        data += chunk
    return data


    return 0


def read_child_config(fd: int) -> ServerConfig:
    """In a ``--reload`` child: the configuration the reloader sent on *fd*.

    Also starts watching *fd*: when the reloader goes away, so does the child.
    """
    (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    config: ServerConfig = pickle.loads(_read_exactly(fd, length))  # written by our parent
    threading.Thread(
        target=_watch_lifeline, args=(fd,), name="pounce-reloader-lifeline", daemon=True
    ).start()
    return config
