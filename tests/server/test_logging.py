"""Access and error logging of a live server: format, switches, escaping, JSON."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.apps import hello
from tests.helpers import (
    ProtocolClient,
    RawClient,
    http_version,
    propagating,
    status_of,
    wait_until,
)

from pounce.logs.formatters import JsonFormatter
from pounce.testing import serve

ROOT = Path(__file__).resolve().parents[2]
ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1:\d+ - "(?P<request>[^"\\]*(?:\\.[^"\\]*)*)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>\d+\.\d)ms$"
)


@pytest.fixture(autouse=True)
def propagating_loggers() -> Iterator[None]:
    """caplog listens on the root logger: make sure pounce's loggers reach it, then restore."""
    with propagating("pounce", "pounce.error", "pounce.access"):
        yield


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pounce.access"]


def wait_for_access(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    assert wait_until(lambda: len(access_records(caplog)) >= count, 3.0), caplog.records
    return access_records(caplog)


def test_access_log_line_format(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True
    ) as url, RawClient(url) as client:
        client.request(target="/some/path?q=1&r=2")
        assert client.read_response().status == 200
        client.request("POST", target="/submit", body=b"ignored")
        client.read_response()
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        client.read_response()
        records = wait_for_access(caplog, 3)
    lines = [record.getMessage() for record in records]
    matches = [ACCESS_LINE.match(line) for line in lines]
    assert all(matches), lines
    parsed = [(m["request"], m["status"], m["bytes"]) for m in matches if m]
    assert parsed == [
        ("GET /some/path?q=1&r=2 HTTP/1.1", "200", "13"),
        ("POST /submit HTTP/1.1", "200", "13"),
        ("GET /old HTTP/1.0", "200", "13"),
    ]
    assert all(record.levelno == logging.INFO for record in records)


def test_access_log_line_format_over_http2(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True
    ) as url, ProtocolClient(url, "h2") as client:
        assert client.fetch("GET", "/some/path?q=1&r=2").status == 200
        assert client.fetch("POST", "/submit", body=b"ignored").status == 200
        records = wait_for_access(caplog, 2)
    matches = [ACCESS_LINE.match(record.getMessage()) for record in records]
    assert all(matches), [record.getMessage() for record in records]
    # scope["http_version"] is "2": the line says HTTP/2, as Hypercorn's and Uvicorn's
    # formats spell it.
    assert [(m["request"], m["status"], m["bytes"]) for m in matches if m] == [
        ("GET /some/path?q=1&r=2 HTTP/2", "200", "13"),
        ("POST /submit HTTP/2", "200", "13"),
    ]


def test_access_log_records_error_statuses(
    caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"nope"})

    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        app, access_log=True
    ) as url, ProtocolClient(url, protocol) as client:
        assert client.fetch("GET", "/missing").status == 404
        assert client.fetch("GET", "/boom").status == 500
        records = wait_for_access(caplog, 2)
    statuses = [ACCESS_LINE.match(r.getMessage()) for r in records]
    version = http_version(protocol)
    assert [(m["request"], m["status"]) for m in statuses if m] == [
        (f"GET /missing HTTP/{version}", "404"),
        (f"GET /boom HTTP/{version}", "500"),
    ]


def test_access_log_off_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), serve(
        hello, access_log=False
    ) as url, RawClient(url) as client:
        for _ in range(3):
            client.request()
            assert client.read_response().status == 200
    assert access_records(caplog) == []


@pytest.mark.parametrize(
    ("target", "forbidden", "shown"),
    [
        (b"/a%0d%0aFAKE%20200%20line", ["\r", "\n"], "\\x0d\\x0aFAKE 200 line"),
        (b"/x%1b[31mred%1b[0m", ["\x1b"], "\\x1b[31mred\\x1b[0m"),
        (b"/q%22uote%5c", [], '\\"uote\\\\'),
        (b"/bidi%E2%80%AEtxt%E2%80%A8", ["\u202e", "\u2028"], "\\u202etxt\\u2028"),
    ],
)
def test_network_text_is_escaped_in_the_access_log(
    caplog: pytest.LogCaptureFixture, target: bytes, forbidden: list[str], shown: str
) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True
    ) as url, RawClient(url) as client:
        client.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().status == 200
        (record,) = wait_for_access(caplog, 1)
    line = record.getMessage()
    for char in forbidden:
        assert char not in line
    assert shown in line
    assert ACCESS_LINE.match(line), line  # still exactly one well-formed line


def test_rejected_request_logs_one_line_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pounce"), serve(hello) as url:
        caplog.clear()
        with RawClient(url) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-\x1b[2J: 1\r\n\r\n")
            assert status_of(client.read_until_close()) == 400
        assert wait_until(lambda: caplog.records, 3.0)
        records = [r for r in caplog.records if r.name.startswith("pounce")]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    message = record.getMessage()
    assert record.name == "pounce.error"
    assert record.levelno in (logging.INFO, logging.DEBUG)
    assert record.exc_info is None and record.exc_text is None
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert "400" in message


def test_json_access_log_carries_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        hello, access_log=True, log_format="json"
    ) as url, RawClient(url) as client:
        client.request(target="/j%0Ason?x=1", headers=[("host", "x"), ("user-agent", "ua/1")])
        client.read_response()
        (record,) = wait_for_access(caplog, 1)
    payload = json.loads(JsonFormatter().format(record))
    assert payload["method"] == "GET"
    assert payload["path"] == "/j\\x0ason"
    assert payload["query"] == "x=1"
    assert payload["status"] == 200
    assert payload["bytes_sent"] == 13
    assert payload["user_agent"] == "ua/1"
    assert payload["client_addr"].startswith("127.0.0.1:")
    assert isinstance(payload["duration_ms"], int | float)


# -- the command line: where the lines actually go ----------------------------------------------


def run_and_request(tmp_path: Path, *args: str) -> tuple[str, str]:
    """Serve tests.apps:hello with ``python -m pounce``, make two requests, stop; (out, err)."""
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pounce", "tests.apps:hello", "--port", "0", *args],
            cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )
        try:
            assert wait_until(lambda: "running on" in err_path.read_text(), 10.0)
            url = err_path.read_text().split("running on ", 1)[1].split()[0]
            with RawClient(url) as client:
                for target in ("/one", "/two?x=%0d"):
                    client.request(target=target)
                    assert client.read_response().status == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return out_path.read_text(), err_path.read_text()


def test_cli_access_log_goes_to_stdout(tmp_path: Path) -> None:
    out, err = run_and_request(tmp_path)
    lines = out.splitlines()
    assert len(lines) == 2, out
    expected = r'INFO: +127\.0\.0\.1:\d+ - "GET /one HTTP/1\.1" 200 13 \d+\.\dms'
    assert re.fullmatch(expected, lines[0]), lines[0]
    assert '"GET /two?x=%0d HTTP/1.1" 200 13' in lines[1]
    assert "GET /one" not in err


def test_cli_no_access_log_logs_nothing(tmp_path: Path) -> None:
    out, err = run_and_request(tmp_path, "--no-access-log")
    assert out == ""
    assert "GET /" not in err


def test_cli_json_log_format(tmp_path: Path) -> None:
    out, err = run_and_request(tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["method"], e["path"], e["query"], e["status"]) for e in entries] == [
        ("GET", "/one", "", 200),
        ("GET", "/two", "x=%0d", 200),
    ]
    for line in err.splitlines():
        json.loads(line)  # server messages are JSON too


def test_access_log_format_shows_response_headers(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"x-request-id", b"abc-123")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    fmt = "%(s)s %({x-request-id}o)s %({server}o)s %({x-missing}o)s %(X)s"
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        app, access_log=True, access_log_format=fmt
    ) as url, RawClient(url) as client:
        client.request()
        client.read_response()
        (record,) = wait_for_access(caplog, 1)
    # The app's own field and the server's default both reach the log.
    assert record.getMessage() == "200 abc-123 pounce - +"


def test_server_generated_503_logs_the_bytes_it_sent(
    caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    import threading

    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        import asyncio

        if scope["type"] != "http":
            return
        while not release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow"})

    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        app, access_log=True, limit_concurrency=1
    ) as url, ProtocolClient(url, protocol) as busy, ProtocolClient(url, protocol) as refused:
        held = busy.send("GET", "/busy")
        time.sleep(0.2)
        assert refused.fetch("GET", "/refused").status == 503
        release.set()
        assert busy.response(held).status == 200
        records = wait_for_access(caplog, 2)
    parsed = {m["request"]: (m["status"], m["bytes"]) for r in records
              if (m := ACCESS_LINE.match(r.getMessage()))}
    version = http_version(protocol)
    assert parsed[f"GET /refused HTTP/{version}"] == ("503", str(len(b"Service Unavailable")))
    assert parsed[f"GET /busy HTTP/{version}"] == ("200", "4")


def test_cut_off_response_is_logged_and_marked(
    caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the app failed mid-body")

    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        app, access_log=True
    ) as url, ProtocolClient(url, protocol) as client:
        if protocol == "h2":  # the stream is reset; the connection carries on
            assert client.fetch("GET", "/cut").reset == 2  # INTERNAL_ERROR
        else:
            client.send("GET", "/cut")
            assert client.raw is not None
            client.raw.read_until_close(limit=3.0)
        (record,) = wait_for_access(caplog, 1)
    line = record.getMessage()
    assert line.endswith(" (cut off)"), line
    assert ACCESS_LINE.match(line.removesuffix(" (cut off)"))
    assert f'"GET /cut HTTP/{http_version(protocol)}" 200 7 ' in line
