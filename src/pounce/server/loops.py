"""Choosing the event loop implementation (``--loop``).

``pounce[standard]`` installs uvloop on every CPython outside Windows, free-threaded builds
included: a PEP 508 marker cannot tell a ``--disable-gil`` build from a GIL one.  So whether
uvloop is *used* is decided here, at start-up, by looking at the GIL after the import.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import sysconfig
from collections.abc import Callable

from pounce.errors import StartupError

logger = logging.getLogger("pounce.error")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def free_threaded_build() -> bool:
    """True on a CPython built with ``--disable-gil`` (3.13t, 3.14t)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Whether the GIL is on right now (an extension module can switch it back on)."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


def loop_factory(choice: str) -> LoopFactory:
    """The factory for ``--loop auto|asyncio|uvloop``.

    ``auto`` takes uvloop when it is installed, except on a free-threaded build where importing
    it turned the GIL back on: there, thread workers would lose their parallelism, so asyncio is
    used and a warning says why.
    """
    if choice == "asyncio":
        return asyncio.new_event_loop
    gil_before = gil_enabled()
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError(
                "--loop uvloop needs uvloop, which is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop
    if free_threaded_build() and not gil_before and gil_enabled():
        if choice == "auto":
            logger.warning(
                "uvloop re-enabled the GIL on this free-threaded build; using asyncio instead "
                "(pass --loop uvloop to use it anyway)"
            )
            return asyncio.new_event_loop
        logger.warning("uvloop re-enabled the GIL on this free-threaded build")
    factory: LoopFactory = uvloop.new_event_loop
    return factory
