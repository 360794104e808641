"""Rolling reload: zero failed requests under load; a failed reload keeps the old code."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.workers.support import Load, get, running, wait_for

_names = itertools.count()

APP_TEMPLATE = '''
VERSION = {version!r}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({{"type": f"lifespan.{{kind}}.complete"}})
            if kind == "shutdown":
                return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
'''


def write_app(path: Path, version: str) -> None:
    path.write_text(APP_TEMPLATE.format(version=version))
    # Make sure a rewrite within the same second is seen as newer by the import system.
    stamp = time.time() + next(_names)
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_rolling_reload_under_load_has_zero_errors(tmp_path: Path, kind: str) -> None:
    module = f"rolling_app_{kind}_{next(_names)}"
    source = tmp_path / f"{module}.py"
    write_app(source, "v0")
    with running(f"{module}:app", app_dir=str(tmp_path), workers=2, worker_type=kind) as (
        server,
        address,
    ):
        supervisor = server._supervisor
        assert supervisor is not None
        load = Load(address, 16, max_requests=50_000, deadline=60).start()
        for n in range(1, 4):
            write_app(source, f"v{n}")
            server.reload()
            assert wait_for(lambda n=n: supervisor.reloads == n, 20)
            assert wait_for(lambda n=n: get(address)[1] == f"v{n}".encode(), 5)
        # The load's keep-alive connections move to the new generation as they are closed:
        # give them the time to, instead of stopping the load the moment the reload is done.
        wait_for(lambda: b"v3" in load.result.bodies, 10)
        result = load.stop()
        assert result.errors == []
        assert result.ok > 0
        assert b"v3" in result.bodies


def test_failed_reload_keeps_the_old_generation(tmp_path: Path) -> None:
    module = f"failing_app_{next(_names)}"
    source = tmp_path / f"{module}.py"
    write_app(source, "good")
    with running(f"{module}:app", app_dir=str(tmp_path), workers=2, worker_type="thread") as (
        server,
        address,
    ):
        supervisor = server._supervisor
        assert supervisor is not None
        source.write_text("def broken(:\n")
        stamp = time.time() + 5
        os.utime(source, (stamp, stamp))
        generation = server.stats()["generation"]
        server.reload()
        assert wait_for(lambda: supervisor.failed_reloads == 1, 10)
        assert server.stats()["generation"] == generation
        for _ in range(5):
            assert get(address) == (200, b"good")


def _pounce(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen(
        [sys.executable, "-m", "pounce", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_signals_scale_reload_and_drain(tmp_path: Path) -> None:
    """SIGTTIN/SIGTTOU add/remove a thread worker, SIGHUP (pounce reload) rolls, SIGTERM
    drains and removes the pid file."""
    import socket as socketlib

    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid_file = tmp_path / "pounce.pid"
    proc = _pounce(
        tmp_path, "tests.workers.wapps:app", "--port", str(port), "--workers", "2",
        "--worker-type", "thread", "--pid-file", str(pid_file), "--no-access-log",
    )
    address = ("127.0.0.1", port)

    def threads() -> list[str]:
        try:
            body = get(address, "/threads", timeout=2)[1].decode()
        except OSError:
            return []
        return [name for name in body.split(",") if name]

    try:
        assert wait_for(lambda: len(threads()) == 2, 20)
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTTIN)
        assert wait_for(lambda: len(threads()) == 3, 10)
        proc.send_signal(signal.SIGTTOU)
        assert wait_for(lambda: len(threads()) == 2, 10)
        before = set(threads())
        reload = subprocess.run(
            [sys.executable, "-m", "pounce", "reload", "--pid-file", str(pid_file)],
            capture_output=True, text=True, timeout=20, check=False,
        )
        assert reload.returncode == 0, reload.stderr
        assert wait_for(lambda: (now := set(threads())) and not (now & before), 15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
