"""Supervisor: crash replacement, hung workers, start-up failures, recycling, stress."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.helpers import PounceSubprocess
from tests.workers.support import Load, get, running, wait_for
from tests.workers.wapps import app

from pounce.errors import StartupError
from pounce.workers.supervisor import WorkerFailure

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_crashed_worker_is_replaced(kind: str) -> None:
    with running(app, workers=2, worker_type=kind) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        with pytest.raises(OSError):
            get(address, "/crash", timeout=2)
        assert wait_for(lambda: supervisor.replacements >= 1, 10)
        assert wait_for(lambda: len(server.stats()["workers"]) == 2, 10)
        for _ in range(10):
            assert get(address) == (200, b"ok")


def test_hung_worker_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAPPS_HANG", "3")
    with running(
        app, workers=2, worker_type="thread", timeout_worker_healthcheck=0.5
    ) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        hung = threading.Thread(target=lambda: get(address, "/hang", timeout=6), daemon=True)
        hung.start()
        assert wait_for(lambda: supervisor.replacements >= 1, 10)
        assert wait_for(lambda: len(server.stats()["workers"]) == 2, 10)
        for _ in range(10):
            assert get(address) == (200, b"ok")
        hung.join(10)


def test_repeated_startup_failures_stop_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "fail"
    monkeypatch.setenv("WAPPS_FAIL_FLAG", str(flag))
    with (
        pytest.raises(WorkerFailure, match="failed to start 5 times"),
        running(app, workers=2, worker_type="thread") as (server, address),
    ):
        supervisor = server._supervisor
        assert supervisor is not None
        flag.write_text("1")  # every new worker's lifespan start-up now fails
        with pytest.raises(OSError):
            get(address, "/crash", timeout=2)
        assert wait_for(lambda: supervisor.fatal is not None, 20)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_max_requests_recycles_under_load_without_errors(kind: str) -> None:
    with running(
        app, workers=2, worker_type=kind, limit_max_requests=40, limit_max_requests_jitter=10
    ) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        load = Load(address, 8, max_requests=20_000, deadline=30).start()
        assert wait_for(lambda: supervisor.recycles >= 4, 20)
        result = load.stop()
        assert result.errors == []
        assert result.ok >= 4 * 40
        assert wait_for(lambda: len(server.stats()["workers"]) == 2, 10)


def test_rss_limit_recycles_one_worker_at_a_time() -> None:
    with running(app, workers=2, worker_type="process", limit_max_rss=1) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        load = Load(address, 4, max_requests=5000, deadline=20).start()
        # Every worker is over a 1-byte limit: they are recycled in turn, never both at once.
        assert wait_for(lambda: supervisor.recycles >= 2, 20)
        result = load.stop()
        assert result.errors == []
        assert len(server.stats()["workers"]) == 2


def test_shared_structures_under_fast_switching(fast_switching: None) -> None:
    """Distributor targets swapped (scale up/down) while many clients connect and others
    read the merged statistics: no error, no lost connection, counts add up."""
    with running(app, workers=3, worker_type="thread") as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        errors: list[str] = []
        done = threading.Event()

        def client() -> None:
            for _ in range(25):
                try:
                    status, _ = get(address, timeout=10)
                    if status != 200:
                        errors.append(str(status))
                except OSError as exc:
                    errors.append(repr(exc))

        def reader() -> None:
            while not done.is_set():
                stats = server.stats()
                assert stats["requests_total"] >= 0

        clients = [threading.Thread(target=client) for _ in range(12)]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for thread in clients + readers:
            thread.start()
        for i in range(6):
            server.scale(+1 if i % 2 == 0 else -1)
        for thread in clients:
            thread.join(60)
        done.set()
        for thread in readers:
            thread.join(10)
        assert errors == []
        assert wait_for(lambda: server.stats()["requests_total"] == 300, 10)
        distributor = supervisor.distributor
        assert distributor is not None
        # Every hand-off was attached by its worker: nothing stuck between threads.
        assert wait_for(
            lambda: all(w.handed == w.adopted for w in supervisor.workers), 5
        )


_INTERNAL_NAME = re.compile(r"worker-\d+\.\d+")


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_first_start_failure_names_the_worker_in_words(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "fail"
    flag.write_text("1")
    monkeypatch.setenv("WAPPS_FAIL_FLAG", str(flag))
    with (
        pytest.raises(StartupError) as info,
        running(app, workers=2, worker_type=kind),
    ):
        pass
    message = info.value.message
    assert re.match(r"worker [12]( \(pid \d+\))? failed to start: ", message), message
    assert "flag set" in message
    assert not _INTERNAL_NAME.search(message)


def test_worker_log_lines_name_workers_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pounce")
    flag = tmp_path / "fail"
    monkeypatch.setenv("WAPPS_FAIL_FLAG", str(flag))
    with (
        pytest.raises(WorkerFailure),
        running(app, workers=2, worker_type="process") as (server, address),
    ):
        supervisor = server._supervisor
        assert supervisor is not None
        flag.write_text("1")
        with pytest.raises(OSError):
            get(address, "/crash", timeout=2)
        assert wait_for(lambda: supervisor.fatal is not None, 20)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("pounce")]
    died = [line for line in lines if "died unexpectedly" in line]
    failed = [line for line in lines if "failed to start:" in line]
    assert died and failed, lines
    assert re.match(r"worker [12] \(pid \d+\) died unexpectedly \(exited with status 1\)", died[0])
    assert re.match(r"worker [12] \(pid \d+\) failed to start: .*flag set.* \(1 in a row\)",
                    failed[0])
    assert not [line for line in lines if _INTERNAL_NAME.search(line)]


def _children(pid: int) -> dict[int, str]:
    """Child processes of *pid* and their state letter (``Z`` = zombie), from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("how", ["kill", "hang"])
def test_killed_process_worker_leaves_no_zombie(how: str) -> None:
    """kill -9 of a worker, or a hung (stopped) worker the supervisor kills: reaped at once."""
    server = PounceSubprocess(
        ["tests.apps:hello", "--host", "127.0.0.1", "--port", "0", "--workers", "2",
         "--worker-type", "process", "--timeout-worker-healthcheck", "1"],
        cwd=ROOT,
    )
    try:
        pid = server.proc.pid
        assert wait_for(lambda: len(_children(pid)) == 2 and "running on" in server.log, 20), (
            server.log
        )
        victim = min(_children(pid))
        os.kill(victim, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        # Replaced, and the victim waited for: two live workers, no zombie.
        assert wait_for(
            lambda: victim not in _children(pid)
            and len(_children(pid)) == 2
            and "Z" not in _children(pid).values(),
            5,
        ), (_children(pid), server.log)
        # Logged before the replacement started, but the test's reader of the server's
        # output may still be behind.
        assert wait_for(
            lambda: "died unexpectedly" in server.log or "missed its heartbeat" in server.log, 5
        ), server.log
    finally:
        server.kill()
        server.join_reader()


def test_rss_limit_with_thread_workers_needs_an_import_string() -> None:
    """An app object cannot be imported afresh, so nothing it holds could be released."""
    with (
        pytest.raises(StartupError, match="--limit-max-rss with thread workers needs"),
        running(app, workers=2, worker_type="thread", limit_max_rss=10**9),
    ):
        pass


LEAKY_APP = """
LEAK = []

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    LEAK.append(b"x" * (1 << 20))  # 1 MiB that this module keeps for ever
    body = str(len(LEAK)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_rss_limit_bounds_a_leaking_app_in_thread_mode(tmp_path: Path) -> None:
    """A leaking app under thread workers: fresh generations keep the process near the limit."""
    (tmp_path / "leakyapp.py").write_text(LEAKY_APP)
    limit_mib, leaked_mib = 150, 450
    server = PounceSubprocess(
        ["leakyapp:app", "--app-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "0",
         "--workers", "2", "--worker-type", "thread", "--limit-max-rss", f"{limit_mib}m"],
        cwd=tmp_path,
    )
    try:
        pid = server.proc.pid
        assert wait_for(lambda: "running on" in server.log or server.proc.poll() is not None,
                        20), server.log
        url = next(line for line in server.lines if "running on" in line)
        host, port = url.split("running on ")[1].split()[0].removeprefix("http://").rsplit(":", 1)
        peak = 0
        deadline = time.monotonic() + 90
        for _ in range(leaked_mib):
            assert time.monotonic() < deadline
            assert get((host, int(port)))[0] == 200
            peak = max(peak, _rss(pid))
            # At most ~50 MiB/s: the bound is the limit plus what leaks while a generation
            # rolls (at least a second), so a faster client only measures the overshoot.
            time.sleep(0.02)
        assert wait_for(lambda: _rss(pid) < limit_mib << 20, 10), _rss(pid) >> 20
        assert peak < (limit_mib + 150) << 20, f"peak {peak >> 20} MiB"  # not 480 MiB
        rolls = [line for line in server.lines if "fresh import of the app" in line]
        assert len(rolls) >= 2, server.log
        assert "still uses" not in server.log
    finally:
        server.kill()
        server.join_reader()
