"""Shared fixtures: every logging test leaves the global logging state as it found it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

_NAMES = (
    "",
    "pounce",
    "pounce.error",
    "pounce.access",
    "asyncio",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = []
    for name in _NAMES:
        logger = logging.getLogger(name)
        saved.append(
            (logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        )
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            for handler in list(logger.handlers):
                if handler not in handlers:
                    logger.removeHandler(handler)
            for handler in handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
