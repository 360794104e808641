"""``pounce.run()`` / ``python -m pounce``: behaviour seen from the command line."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import PounceSubprocess, wait_until
from tests.workers.support import get

ROOT = Path(__file__).resolve().parents[1]


def _url_line(server: PounceSubprocess) -> str:
    lines = [line for line in server.lines if "Pounce running on" in line]
    return lines[0] if lines else ""


def test_reload_options_without_reload_warn_and_serve() -> None:
    """Uvicorn warns about --reload-* without --reload and serves; so must a copied command."""
    server = PounceSubprocess(
        [
            "tests.apps:hello", "--host", "127.0.0.1", "--port", "0",
            "--reload-dir", "src", "--reload-include", "*.html",
            "--reload-exclude", "*.tmp", "--reload-delay", "1s",
        ],
        cwd=ROOT,
    )
    try:
        assert wait_until(lambda: _url_line(server) or server.proc.poll() is not None, 20)
        assert server.proc.poll() is None, server.log
        url = _url_line(server).split("running on ", 1)[1].split()[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert get((host, int(port)))[0] == 200
        warnings = [line for line in server.lines if "WARNING" in line]
        assert len(warnings) == 1, server.log
        for flag in ("--reload-dir", "--reload-include", "--reload-exclude", "--reload-delay"):
            assert flag in warnings[0]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
    finally:
        server.kill()
        server.join_reader()
