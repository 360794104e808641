"""Fixtures for driving the pipeline without sockets (see :mod:`tests.pipeline.fakes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A real event loop, not running: tests run it with ``settle`` or ``run_until_complete``."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        # Whatever a test left running is cancelled and awaited, so nothing leaks into the next.
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
