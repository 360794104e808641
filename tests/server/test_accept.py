"""Running out of file descriptors: one warning now and then, no spinning, serving resumes."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pounce.server.accept import AcceptThrottle

ROOT = Path(__file__).resolve().parents[2]
FD_LIMIT = 64
CLIENTS = 150


def test_throttle_warns_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pounce")
    throttle = AcceptThrottle("worker 1")
    exc = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    pauses = [throttle.failed(exc) for _ in range(1000)]
    assert pauses[0] == 0.05 and max(pauses) == 1.0  # growing, bounded
    throttle.recovered()
    throttle.recovered()  # nothing more to say
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "worker 1 cannot accept connections: Too many open files" in messages[0]
    assert "worker 1 accepts connections again (1000 failed attempt(s))" in messages[1]
    caplog.clear()
    throttle.failed(exc)  # within the interval: counted, not logged
    assert caplog.records == []
    throttle._next_warning = 0.0  # the interval has passed
    throttle.failed(exc)
    assert "(1 more failure(s) since the last warning)" in caplog.records[-1].getMessage()


# ``python -m pounce ARGS`` with RLIMIT_NOFILE lowered first (as ``ulimit -n`` would).
LIMITED_POUNCE = (
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))\n"
    "sys.argv[0] = 'pounce'\n"
    "runpy.run_module('pounce', run_name='__main__', alter_sys=True)\n"
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of *pid* and its children (process workers), from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _request(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        return sock.recv(100)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    "options",
    [
        ["--loop", "asyncio"],  # asyncio's accept loop (loop.create_server)
        ["--loop", "uvloop"],  # libuv's accept loop
        ["--workers", "2", "--worker-type", "thread"],  # the accept distributor
        ["--workers", "2", "--worker-type", "process", "--loop", "asyncio"],  # shared socket
        ["--workers", "2", "--worker-type", "process", "--accept", "distributor"],  # hand-off
    ],
    ids=["asyncio", "uvloop", "thread-distributor", "process-listen", "process-distributor"],
)
def test_descriptor_exhaustion_is_quiet_and_recovers(options: list[str]) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("POUNCE_PORT", None)
    server = subprocess.Popen(
        [sys.executable, "-c", LIMITED_POUNCE, "tests.apps:hello", "--host", "127.0.0.1",
         "--port", "0", "--timeout-request-header", "30s", *options],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert server.stderr is not None
        lines.extend(server.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while not any("running on" in line for line in lines):
            assert time.monotonic() < deadline and server.poll() is None, lines
            time.sleep(0.02)
        url = next(line for line in lines if "running on" in line).split("running on ")[1]
        host, port = url.split()[0].removeprefix("http://").rsplit(":", 1)
        address = (host, int(port))
        for _ in range(CLIENTS):  # idle connections: far more than the server can hold
            clients.append(socket.create_connection(address, timeout=5))
        cpu_before, started = _cpu_seconds(server.pid), time.monotonic()
        time.sleep(2.0)
        cpu_share = (_cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started)
        for sock in clients:
            sock.close()
        clients.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                if _request(address).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not serve again"
            time.sleep(0.05)
        assert cpu_share < 0.3, f"{cpu_share:.0%} CPU while out of descriptors"
    finally:
        for sock in clients:
            sock.close()
        server.terminate()
        server.wait(10)
        reader.join(5)
    diagnostics = [line for line in lines if not line.startswith("INFO:")]
    assert len(diagnostics) <= 6, "".join(lines)
    if "uvloop" not in options:
        # Said once (per worker), not silently: the operator learns about the limit. (libuv
        # quietly accepts and closes the excess connections itself.)
        assert any("cannot accept connections" in line for line in diagnostics), lines
    assert not any("Traceback" in line for line in lines), "".join(lines)
