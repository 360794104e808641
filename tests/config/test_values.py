"""Parsers for textual option values (shared by CLI, environment and files)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pounce.config.values import (
    BindSpec,
    parse_bind,
    parse_bool,
    parse_duration,
    parse_forwarded_ip,
    parse_header,
    parse_size,
    split_headers,
    split_list,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1.5", 1.5),
        (" 2 S ", 2.0),
        ("0", 0.0),
        (".5s", 0.5),
        (7, 7.0),
        (0.1, 0.1),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "-1", "1d", "s", "nan", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, -1, float("inf"), float("nan")])
def test_parse_duration_rejects_non_durations(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("64kb", 64 * 1024),
        ("64KiB", 64 * 1024),
        ("1m", 1024**2),
        ("1g", 1024**3),
        ("1.5k", 1536),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["", "k", "1t", "-5", "1.3", "ten", True, -1])
def test_parse_size_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@given(st.integers(min_value=0, max_value=10**12))
def test_parse_size_round_trips_plain_integers(n: int) -> None:
    assert parse_size(str(n)) == n


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "on", " On "])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "False"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("value", ["maybe", "", "2", 2])
def test_parse_bool_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool(value)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("127.0.0.1:8000", BindSpec(kind="tcp", host="127.0.0.1", port=8000)),
        ("localhost:80", BindSpec(kind="tcp", host="localhost", port=80)),
        ("[::]:8443", BindSpec(kind="tcp", host="::", port=8443)),
        ("[::1]:0", BindSpec(kind="tcp", host="::1", port=0)),
        (":9000", BindSpec(kind="tcp", host="0.0.0.0", port=9000)),
        ("unix:/tmp/pounce.sock", BindSpec(kind="unix", path="/tmp/pounce.sock")),
        ("fd://3", BindSpec(kind="fd", fd=3)),
    ],
)
def test_parse_bind(text: str, spec: BindSpec) -> None:
    assert parse_bind(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "missing port"),
        ("::1:8000", "brackets"),
        ("[::1]", "needs a port"),
        ("[nope]:80", "not an IPv6"),
        ("host:99999", "0 to 65535"),
        ("host:http", "0 to 65535"),
        ("unix:", "socket path"),
        ("fd://x", "file descriptor"),
        ("bad host!:80", "not an IP address or a valid host name"),
    ],
)
def test_parse_bind_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bind(text)


@pytest.mark.parametrize(
    "spec", ["127.0.0.1:8000", "[::1]:8000", "unix:/run/p.sock", "fd://4"]
)
def test_bind_spec_str_round_trips(spec: str) -> None:
    assert str(parse_bind(spec)) == spec


def test_parse_header() -> None:
    assert parse_header("X-Frame-Options: DENY") == ("X-Frame-Options", "DENY")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    assert parse_header("X-Url:http://a:b") == ("X-Url", "http://a:b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-colon", "NAME:VALUE"),
        (":value", "NAME:VALUE"),
        ("Bad Name: x", "not a valid HTTP token"),
        ("X-A: a\r\nInjected: 1", "CR, LF or NUL"),
        ("X-A: a\x00", "CR, LF or NUL"),
        ("X-A: \u2603", "Latin-1"),
    ],
)
def test_parse_header_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_header(text)


def test_split_headers_keeps_commas_inside_values() -> None:
    assert split_headers("Cache-Control: max-age=1, public, X-A: 1") == [
        "Cache-Control: max-age=1, public",
        "X-A: 1",
    ]


def test_split_list() -> None:
    assert split_list(" a, b ,,c, ") == ["a", "b", "c"]


@pytest.mark.parametrize("entry", ["*", "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "10.1.2.3/8"])
def test_parse_forwarded_ip(entry: str) -> None:
    assert parse_forwarded_ip(f" {entry} ") == entry


def test_parse_forwarded_ip_unix() -> None:
    assert parse_forwarded_ip("UNIX") == "unix"


@pytest.mark.parametrize("entry", ["proxy.local", "10.0.0.300", "10.0.0.0/33", ""])
def test_parse_forwarded_ip_rejects(entry: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        parse_forwarded_ip(entry)
