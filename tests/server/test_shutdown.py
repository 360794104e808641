"""Graceful shutdown, signals and start-up failures.

In-process tests drive ``Server.shutdown()`` on a server running in a thread; the signal and
start-up tests run ``python -m pounce`` in a subprocess, as an operator would.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import (
    PounceSubprocess,
    RawClient,
    Response,
    address,
    running,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


# -- in-process server --------------------------------------------------------------------------


class Gate:
    """An app whose ``/held`` requests wait until the test calls :meth:`release`."""

    def __init__(self, *, stream_forever: bool = False) -> None:
        self.started = threading.Event()
        self._release = threading.Event()
        self.events: list[str] = []
        self.paths: list[str] = []
        self.stream_forever = stream_forever

    def release(self) -> None:
        self._release.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.events.append("lifespan.shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.paths.append(path)
        if self.stream_forever:
            await self._stream(send)
            return
        if path == "/held":
            self.started.set()
            while not self._release.is_set():
                await asyncio.sleep(0.005)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"finished {path}".encode()})
        self.events.append(f"response {path}")

    async def _stream(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        self.started.set()
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick", "more_body": True})
                await asyncio.sleep(0.01)
        except OSError as exc:
            self.events.append(f"send raised {type(exc).__name__}")
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise


def refuses_connections(url: str) -> bool:
    try:
        with socket.create_connection(address(url), timeout=1.0):
            return False
    except OSError:
        return True


def test_in_flight_request_finishes_and_is_delivered() -> None:
    app = Gate()
    with running(app, timeout_graceful_shutdown=10) as (server, url, thread):
        client = RawClient(url)
        client.request(target="/held")
        assert app.started.wait(5)
        server.shutdown()
        # New connections are refused at once, while the in-flight request is still running.
        assert wait_until(lambda: refuses_connections(url), 3.0)
        assert thread.is_alive()
        app.release()
        response = client.read_response()
        assert (response.status, response.body) == (200, b"finished /held")
        assert response.header(b"connection") == b"close"
        assert client.is_closed()
        client.close()
        thread.join(5)
        assert not thread.is_alive()


def test_idle_connections_are_closed_at_once() -> None:
    app = Gate()
    with running(app, timeout_keep_alive=60, timeout_graceful_shutdown=10) as (server, url, _):
        idle = RawClient(url)
        idle.request(target="/quick")
        assert idle.read_response().status == 200
        silent = RawClient(url)  # connected, never sent anything
        busy = RawClient(url)
        busy.request(target="/held")
        assert app.started.wait(5)
        assert wait_until(lambda: len(app.paths) == 2, 5)
        start = time.monotonic()
        server.shutdown()
        assert idle.is_closed(wait=3.0)
        assert silent.is_closed(wait=3.0)
        elapsed = time.monotonic() - start
        assert idle.buffer == b"" and silent.buffer == b""
        # ... while the busy one is still being served.
        app.release()
        assert busy.read_response().body == b"finished /held"
        for client in (idle, silent, busy):
            client.close()
    assert elapsed < 2.0


def test_new_request_on_a_busy_connection_gets_connection_close() -> None:
    app = Gate()
    with running(app, timeout_graceful_shutdown=10) as (server, url, thread):
        probe = RawClient(url)  # idle: closed as soon as the drain begins
        busy = RawClient(url)
        busy.request(target="/held")
        assert app.started.wait(5)
        server.shutdown()
        assert probe.is_closed(wait=3.0)
        busy.request(target="/after")  # pipelined behind the running request, after shutdown
        app.release()
        response = busy.read_response()
        assert (response.status, response.body) == (200, b"finished /held")
        assert response.header(b"connection") == b"close"
        assert busy.is_closed()
        probe.close()
        busy.close()
        thread.join(5)
        assert not thread.is_alive()
    assert app.paths == ["/held"]  # the request sent after the shutdown never reached the app


def test_never_ending_stream_is_cut_after_graceful_timeout() -> None:
    app = Gate(stream_forever=True)
    with running(app, timeout_graceful_shutdown=0.5) as (server, url, thread):
        client = RawClient(url)
        client.request()
        assert app.started.wait(5)
        assert client.sock.recv(100).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        server.shutdown()
        thread.join(5)
        elapsed = time.monotonic() - start
        assert not thread.is_alive(), "the server did not stop"
        data = client.read_until_close(limit=3.0)
        client.close()
    assert 0.4 <= elapsed < 3.0
    assert not data.endswith(b"0\r\n\r\n")  # cut, not completed: the client can tell
    assert wait_until(lambda: app.events, 2.0)
    assert app.events[0] in {"cancelled", "send raised ClientDisconnected"}


def test_lifespan_shutdown_runs_after_connections_drain() -> None:
    app = Gate()
    with running(app, timeout_graceful_shutdown=10) as (server, url, thread):
        probe = RawClient(url)
        busy = RawClient(url)
        busy.request(target="/held")
        assert app.started.wait(5)
        server.shutdown()
        assert probe.is_closed(wait=3.0)  # the drain is under way
        assert "lifespan.shutdown" not in app.events
        app.release()
        assert busy.read_response().status == 200
        probe.close()
        busy.close()
        thread.join(5)
        assert not thread.is_alive()
    assert app.events == ["response /held", "lifespan.shutdown"]


def test_shutdown_without_connections_is_prompt() -> None:
    app = Gate()
    with running(app, timeout_graceful_shutdown=30) as (server, _, thread):
        start = time.monotonic()
        server.shutdown()
        thread.join(5)
        assert not thread.is_alive()
    assert time.monotonic() - start < 2.0
    assert app.events == ["lifespan.shutdown"]


# -- the command line in a subprocess -------------------------------------------------------------


class PounceProcess(PounceSubprocess):
    """``python -m pounce APP --host 127.0.0.1 ...`` run from the project root."""

    def __init__(self, app: str, tmp_path: Path, *args: str) -> None:
        if "--port" not in args:
            args = (*args, "--port", "0")
        super().__init__(
            [app, "--host", "127.0.0.1", *args],
            cwd=ROOT,
            env={"POUNCE_TEST_DIR": str(tmp_path)},
        )

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.lines if text in line]
            return bool(found)

        assert wait_until(seen, timeout), f"{text!r} not in stderr: {self.lines}"
        return found[0]

    @property
    def url(self) -> str:
        line = self.wait_for("Pounce running on")
        return line.split("running on ", 1)[1].split()[0]

    def finish(self, timeout: float = 10.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        self.join_reader()
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def pounce_process(tmp_path: Path) -> Iterator[Any]:
    started: list[PounceProcess] = []

    def start(app: str, *args: str) -> PounceProcess:
        process = PounceProcess(app, tmp_path, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def request_in_thread(url: str, target: str) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            with RawClient(url, timeout=15.0) as client:
                client.request(target=target)
                result.append(client.read_response())
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_sigterm_finishes_in_flight_request_then_exits_0(
    pounce_process: Any, tmp_path: Path
) -> None:
    process = pounce_process("tests.server.shutdown_apps:held")
    thread, result = request_in_thread(process.url, "/held")
    assert wait_until((tmp_path / "started").exists, 10)
    process.proc.send_signal(signal.SIGTERM)
    process.wait_for("Received SIGTERM")
    assert process.proc.poll() is None  # still draining
    (tmp_path / "release").touch()
    thread.join(10)
    assert process.finish() == 0, process.stderr
    response = result[0]
    assert isinstance(response, Response), result
    assert (response.status, response.body) == (200, b"done /held")
    assert (tmp_path / "lifespan-shutdown").exists()
    assert "Traceback" not in process.stderr


def test_second_sigint_exits_at_once(pounce_process: Any, tmp_path: Path) -> None:
    process = pounce_process(
        "tests.server.shutdown_apps:held", "--timeout-graceful-shutdown", "60"
    )
    thread, result = request_in_thread(process.url, "/held")  # never released
    assert wait_until((tmp_path / "started").exists, 10)
    process.proc.send_signal(signal.SIGINT)
    process.wait_for("Received SIGINT")
    assert process.proc.poll() is None  # draining: would wait up to 60 s
    start = time.monotonic()
    process.proc.send_signal(signal.SIGINT)
    code = process.finish(timeout=10)
    elapsed = time.monotonic() - start
    thread.join(5)
    assert elapsed < 3.0
    assert code == 0, process.stderr
    assert isinstance(result[0], OSError)  # the held request was cut, not answered
    assert not (tmp_path / "lifespan-shutdown").exists()  # forced: no lifespan shutdown
    assert "Traceback" not in process.stderr


def one_error_line(process: PounceProcess) -> str:
    errors = [line for line in process.lines if line.startswith("pounce: error:")]
    assert len(errors) == 1, process.stderr
    assert "Traceback" not in process.stderr
    assert process.lines[-1] == errors[0], process.stderr  # the last word is the reason
    return errors[0]


def test_import_error_exits_3_with_one_line(pounce_process: Any) -> None:
    process = pounce_process("tests.server.no_such_module:app")
    assert process.finish() == 3
    assert "no_such_module" in one_error_line(process)


def test_bind_in_use_exits_3_with_one_line(pounce_process: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = pounce_process("tests.server.shutdown_apps:held", "--port", str(port))
        code = process.finish()
    assert code == 3
    line = one_error_line(process)
    assert f"127.0.0.1:{port}" in line


def test_lifespan_startup_failure_exits_3_with_one_line(pounce_process: Any) -> None:
    process = pounce_process("tests.server.shutdown_apps:startup_fails")
    assert process.finish() == 3
    assert "database unreachable" in one_error_line(process)


def test_lifespan_startup_timeout_exits_3_with_one_line(pounce_process: Any) -> None:
    start = time.monotonic()
    process = pounce_process("tests.server.shutdown_apps:startup_hangs", "--timeout-startup", "0.5")
    code = process.finish()
    elapsed = time.monotonic() - start
    assert code == 3
    assert "0.5s" in one_error_line(process)
    assert elapsed < 8.0

