"""Choosing how many workers run, as what (threads or processes), and how they get connections.

The choice is made once, after the application has been imported: importing an extension
module can switch the GIL back on in a free-threaded interpreter, and thread workers only run
in parallel while it stays off. The :class:`WorkerModel` carries a human sentence saying why,
which the server logs at start-up so nobody has to guess which model is running.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pounce.errors import StartupError
from pounce.server.loops import free_threaded_build, gil_enabled

if TYPE_CHECKING:
    from pounce.config import ServerConfig

WorkerKind = Literal["thread", "process"]
#: ``listen``: every worker listens on the shared sockets itself (one worker, or processes
#: sharing the inherited sockets); ``distributor``: one accept thread hands connections out;
#: ``reuseport``: one ``SO_REUSEPORT`` socket per worker slot, balanced by the kernel.
AcceptKind = Literal["listen", "distributor", "reuseport"]


@dataclass(frozen=True, slots=True)
class WorkerModel:
    """The resolved worker model (immutable, shared by every thread that reads it)."""

    kind: WorkerKind
    count: int
    accept: AcceptKind
    reason: str

    def describe(self) -> str:
        plural = "" if self.count == 1 else "s"
        text = f"{self.reason}: {self.count} {self.kind} worker{plural}"
        if self.count > 1:
            text += f", accept={self.accept}"
        return text


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the platform says)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is not None:
        try:
            return max(1, len(getter(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def reuseport_available() -> bool:
    """``SO_REUSEPORT`` with kernel load balancing (Linux >= 3.9; BSDs lack the balancing)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def choose_model(config: ServerConfig) -> WorkerModel:
    """Resolve ``--workers``, ``--worker-type`` and ``--accept`` for this interpreter.

    Call it after the app is imported (see the module docstring).
    """
    count = config.workers or usable_cpus()
    kind: WorkerKind
    if config.worker_type == "thread":
        kind = "thread"
        reason = "--worker-type thread"
        if gil_enabled():
            reason += " (GIL enabled: threads share one core for Python code)"
    elif config.worker_type == "process":
        kind = "process"
        reason = "--worker-type process"
    elif count == 1:
        kind = "thread"
        reason = "one worker, serving in this process"
    elif not gil_enabled():
        kind = "thread"
        reason = "free-threaded build, GIL disabled"
    else:
        kind = "process"
        reason = (
            "free-threaded build but the GIL was re-enabled (by an extension module?)"
            if free_threaded_build()
            else "GIL build"
        )
    accept: AcceptKind
    if config.accept == "reuseport":
        if not reuseport_available():
            raise StartupError(
                "--accept reuseport needs SO_REUSEPORT load balancing (Linux); "
                "use --accept distributor or auto"
            )
        if any(spec.kind != "tcp" for spec in config.bind_specs):
            raise StartupError(
                "--accept reuseport works with TCP addresses only (not unix: or fd://); "
                "use --accept distributor or auto"
            )
        accept = "reuseport"
    elif config.accept == "distributor" or kind == "thread":
        accept = "distributor"
    else:
        accept = "listen"
    if count == 1 and config.accept == "auto":
        # One worker: no hand-off at all, the worker accepts on the socket itself.
        accept = "listen"
    return WorkerModel(kind=kind, count=count, accept=accept, reason=reason)
