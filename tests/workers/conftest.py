"""Fixtures for the worker-model tests (helpers live in tests/workers/support.py)."""

from __future__ import annotations

from tests.workers.support import fast_switching

__all__ = ["fast_switching"]
