"""Installing process signal handlers for the lifetime of a server.

Signals are handled once, in the main thread (Python only runs handlers there). Servers run in
other threads too (``pounce.testing``, embedding apps); there, nothing is installed and the
embedding program keeps its own handlers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


def install_signal_handlers(handlers: Mapping[str, Handler]) -> Callable[[], None]:
    """Install *handlers* by signal name; return a function that restores the previous ones.

    Names this platform lacks (``SIGHUP``, ``SIGTTIN`` ... on Windows) are skipped.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wanted: dict[int, Handler] = {}
    for name, handler in handlers.items():
        number = getattr(signal, name, None)
        if number is not None:
            wanted[number] = handler
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    for sig, handler in wanted.items():
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
