"""Run the CLI in-process in a clean working directory and environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No POUNCE_*/platform variables, cwd = tmp_path, private sys.path and modules."""
    for name in list(os.environ):
        if name.startswith("POUNCE_") or name in ("PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
