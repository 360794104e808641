"""Short garbage-collector pauses: freeze the heap once start-up is over.

A full (oldest-generation) collection walks every container object in the process. After
start-up most of those are the app's modules, classes, functions and caches, which live as long
as the process does, so walking them again on each full pass is wasted work. Under load that
work is a pause of several milliseconds (tens with a large app) in which no request moves, and
it shows up as the server's tail latency. ``gc.freeze()`` moves every object alive at that
moment to a permanent generation the collector skips; objects created later are collected as
usual.

The cost: a frozen object that later becomes cyclic garbage is never reclaimed. That is why the
heap is collected just before freezing, and why the supervisor thaws it whenever workers come
and go (a recycled thread worker leaves its event loop behind; a rolling reload, the old app)
and freezes it again only once no worker is starting or draining.
``--no-gc-freeze`` turns all of this off.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

logger = logging.getLogger("pounce.error")


class HeapFreezer:
    """Freezes the process heap after start-up and thaws it for reloads and shutdown.

    One per process (the supervisor's, or a process worker's own). ``gc.freeze`` is
    process-wide; the lock keeps a freeze and a thaw from interleaving if two threads ever
    call them.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._frozen = False
        self._lock = threading.Lock()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """Collect what is already garbage, then freeze everything still alive."""
        if not self.enabled:
            return
        with self._lock:
            started = time.perf_counter()
            gc.collect()
            gc.freeze()
            self._frozen = True
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Froze %d start-up objects out of full GC passes in %.1f ms",
                gc.get_freeze_count(),
                (time.perf_counter() - started) * 1000,
            )

    def thaw(self) -> None:
        """Return frozen objects to the collector (before a reload, at shutdown)."""
        with self._lock:
            if self._frozen:
                gc.unfreeze()
                self._frozen = False
