"""AccessLogger: default and custom formats, JSON extras, and zero cost when off."""

from __future__ import annotations

import io
import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest

from pounce.logs import AccessInfo, AccessLogger, compile_access_format, configure_logging
from pounce.logs import access as access_module


def _info(**overrides: Any) -> AccessInfo:
    values: dict[str, Any] = {
        "client": ("127.0.0.1", 51234),
        "method": "GET",
        "path": "/path",
        "query_string": b"q",
        "http_version": "1.1",
        "status": 200,
        "bytes_sent": 13,
        "duration": 0.0004,
        "request_headers": [
            (b"host", b"example.com"),
            (b"user-agent", b"curl/8.0"),
            (b"x-request-id", b"abc"),
            (b"x-multi", b"1"),
            (b"x-multi", b"2"),
        ],
        "response_headers": [(b"content-type", b"text/plain")],
    }
    values.update(overrides)
    return AccessInfo(**values)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_logger() -> tuple[logging.Logger, _Capture]:
    logger = logging.getLogger("pounce.access")
    logger.setLevel(logging.INFO)
    capture = _Capture()
    logger.addHandler(capture)
    return logger, capture


def test_default_line(access_logger: tuple[logging.Logger, _Capture]) -> None:
    _, capture = access_logger
    AccessLogger().log(_info())
    assert capture.records[0].getMessage() == (
        '127.0.0.1:51234 - "GET /path?q HTTP/1.1" 200 13 0.4ms'
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"query_string": b""}, '127.0.0.1:51234 - "GET /path HTTP/1.1" 200 13 0.4ms'),
        ({"client": ("::1", 8080)}, '[::1]:8080 - "GET /path?q HTTP/1.1" 200 13 0.4ms'),
        ({"client": None}, '- - "GET /path?q HTTP/1.1" 200 13 0.4ms'),
        ({"client": "/run/app.sock"}, '/run/app.sock - "GET /path?q HTTP/1.1" 200 13 0.4ms'),
        (
            {"path": '/x" 200 0\r\nINFO: fake', "query_string": b"a=\x1b[2J"},
            '127.0.0.1:51234 - "GET /x\\" 200 0\\x0d\\x0aINFO: fake?a=\\x1b[2J HTTP/1.1"'
            " 200 13 0.4ms",
        ),
        (
            {"duration": 1.23456, "http_version": "2"},
            '127.0.0.1:51234 - "GET /path?q HTTP/2" 200 13 1234.6ms',
        ),
    ],
)
def test_default_line_variants(overrides: dict[str, Any], expected: str) -> None:
    assert AccessLogger().format(_info(**overrides)) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%(h)s %(m)s %(U)s %(q)s %(H)s %(s)s", "127.0.0.1 GET /path q HTTP/1.1 200"),
        ('"%(r)s" %(s)s %(b)s %(B)s', '"GET /path?q HTTP/1.1" 200 13 13'),
        ("%(D)s %(M)s %(L)s", "400 0 0.000400"),
        ('"%(a)s" "%(f)s"', '"curl/8.0" "-"'),
        ("%({X-Request-ID}i)s %({x-multi}i)s %({absent}i)s", "abc 1, 2 -"),
        ("%({content-type}o)s", "text/plain"),
        ("100%% %(s)s", "100% 200"),
        ("%(s)5s|", "  200|"),
        ("static", "static"),
    ],
)
def test_custom_format_atoms(fmt: str, expected: str) -> None:
    assert AccessLogger(access_log_format=fmt).format(_info()) == expected


def test_zero_bytes_dash() -> None:
    logger = AccessLogger(access_log_format="%(b)s %(B)s")
    assert logger.format(_info(bytes_sent=0)) == "- 0"


def test_time_atom() -> None:
    line = AccessLogger(access_log_format="%(t)s").format(_info())
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\]", line)


def test_header_atoms_are_escaped() -> None:
    info = _info(request_headers=[(b"user-agent", b'evil"\r\n\x1b[31m')])
    line = AccessLogger(access_log_format='"%(a)s"').format(info)
    assert line == '"evil\\"\\x0d\\x0a\\x1b[31m"'


@pytest.mark.parametrize(
    ("fmt", "match"),
    [
        ("%(h)s %(z)s", r"%\(z\)s"),
        ("%({bad}x)s", r"\{bad\}x"),
        ("%(s)d", "conversion"),
        ("%s", "not a %"),
        ("50% done", "not a %"),
    ],
)
def test_invalid_formats(fmt: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AccessLogger(access_log_format=fmt)
    with pytest.raises(ValueError):
        compile_access_format(fmt)


def test_invalid_format_rejected_even_when_disabled() -> None:
    with pytest.raises(ValueError):
        AccessLogger(access_log=False, access_log_format="%(nope)s")


def test_enabled_flags() -> None:
    logger = logging.getLogger("pounce.access")
    logger.setLevel(logging.INFO)
    assert AccessLogger().enabled
    assert not AccessLogger(access_log=False).enabled
    logger.setLevel(logging.WARNING)
    assert not AccessLogger().enabled
    logger.setLevel(logging.NOTSET)
    logging.getLogger("pounce").setLevel(logging.ERROR)
    assert not AccessLogger().enabled


def test_nothing_is_formatted_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def spy(value: str | bytes) -> str:
        calls.append(value)
        return str(value)

    monkeypatch.setattr(access_module._escape, "escape_for_log", spy)
    logging.getLogger("pounce.access").setLevel(logging.WARNING)
    for fmt in (None, "%(h)s %(r)s %(a)s"):
        access = AccessLogger(access_log_format=fmt)
        assert not access.enabled
        access.log(_info())
    assert calls == []
    # Sanity check: the spy does see calls once logging is on.
    logging.getLogger("pounce.access").setLevel(logging.INFO)
    AccessLogger().log(_info())
    assert calls


def test_json_output() -> None:
    out = io.StringIO()
    configure_logging(log_format="json", error_stream=io.StringIO(), access_stream=out)
    AccessLogger(log_format="json").log(_info(path="/a\nb"))
    data = json.loads(out.getvalue())
    assert data["logger"] == "pounce.access"
    assert data["level"] == "INFO"
    assert data["status"] == 200
    assert data["method"] == "GET"
    assert data["path"] == "/a\\x0ab"
    assert data["query"] == "q"
    assert data["bytes_sent"] == 13
    assert data["duration_ms"] == 0.4
    assert data["client_addr"] == "127.0.0.1:51234"
    assert data["user_agent"] == "curl/8.0"
    assert data["referer"] == "-"
    assert data["message"].startswith("127.0.0.1:51234 - ")


def test_text_output_through_configured_handler() -> None:
    out = io.StringIO()
    configure_logging(use_colors=False, error_stream=io.StringIO(), access_stream=out)
    AccessLogger().log(_info())
    assert out.getvalue() == 'INFO:     127.0.0.1:51234 - "GET /path?q HTTP/1.1" 200 13 0.4ms\n'


def test_from_config() -> None:
    logging.getLogger("pounce.access").setLevel(logging.INFO)
    config = SimpleNamespace(access_log=True, access_log_format="%(s)s", log_format="text")
    access = AccessLogger.from_config(config)
    assert access.enabled
    assert access.format(_info()) == "200"
    off = AccessLogger.from_config(
        SimpleNamespace(access_log=False, access_log_format=None, log_format="text")
    )
    assert not off.enabled


def test_invalid_log_format() -> None:
    with pytest.raises(ValueError, match="log format"):
        AccessLogger(log_format="xml")
