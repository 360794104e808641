"""escape_for_log: nothing from the network may forge a line or drive a terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pounce.logs import escape_for_log


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/plain/path", "/plain/path"),
        ("", ""),
        ("/a\r\nINFO: fake line", "/a\\x0d\\x0aINFO: fake line"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00byte", "nul\\x00byte"),
        ("tab\there", "tab\\x09here"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b2J", "c1\\x9b2J"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ('quote"inside', 'quote\\"inside'),
        ("back\\slash", "back\\\\slash"),
        ("café/日本/emoji🐈", "café/日本/emoji🐈"),
        ("lone\udc80surrogate", "lone\\x80surrogate"),
        ("high\ud800surrogate", "high\\ud800surrogate"),
    ],
)
def test_escape_str(raw: str, expected: str) -> None:
    assert escape_for_log(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/ok", "/ok"),
        (b"/a\r\nb", "/a\\x0d\\x0ab"),
        ("/café".encode(), "/café"),
        (b"/bad\xff\xfe", "/bad\\xff\\xfe"),
        (b'x"y', 'x\\"y'),
    ],
)
def test_escape_bytes(raw: bytes, expected: str) -> None:
    assert escape_for_log(raw) == expected


def test_clean_string_is_returned_unchanged() -> None:
    value = "/api/v1/items?id=42"
    assert escape_for_log(value) is value


def test_backslash_escaping_keeps_quotes_sound() -> None:
    # A value ending in a backslash must not escape the closing quote.
    line = f'"{escape_for_log("agent" + chr(92))}"'
    assert line == '"agent\\\\"'


@given(st.one_of(st.text(), st.binary()))
def test_output_is_always_one_safe_line(value: str | bytes) -> None:
    escaped = escape_for_log(value)
    assert escaped.isprintable()
    # Every quote in the output is escaped (preceded by an odd run of backslashes).
    for index, char in enumerate(escaped):
        if char == '"':
            run = len(escaped[:index]) - len(escaped[:index].rstrip("\\"))
            assert run % 2 == 1
    escaped.encode("utf-8")  # never a lone surrogate
