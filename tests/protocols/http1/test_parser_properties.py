"""Property tests: read boundaries never change the result, and both parsers agree."""

from __future__ import annotations

from typing import Any

from _parser_helpers import PARSERS, coalesce, run, split_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pounce.protocols.http1.base import EndOfMessage, RequestHead

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/"
RESERVED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
}

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "M-SEARCH"])
paths = st.text(PATH_CHARS, max_size=30).map(lambda p: "/" + p)
queries = st.one_of(st.just(""), st.text(PATH_CHARS + "?", max_size=20).map(lambda q: "?" + q))
names = st.text(TCHARS, min_size=1, max_size=20).filter(lambda n: n.lower() not in RESERVED)
values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 0x09 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")
)
ows = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])
#: Lines a client repeats on one connection (FastParser remembers them per connection): a small
#: pool, so that requests of one stream share some of them.
repeated_lines = st.sampled_from(
    [b"Cookie: a=1; b=2", b"cookie:x=y", b"Referer: /p", b"Authorization: Bearer t0k",
     b"Cookie:  a=1; b=2 ", b"If-None-Match: \"e1\""]
)
#: Spellings of a valid Content-Length value (the fast path reads plain digits itself).
length_formats = st.sampled_from([b"%d", b"0%d", b" %d ", b"%d, %d", b"\t%d"])
hosts = st.sampled_from(
    [b"example.com", b"a.b.c:8080", b"127.0.0.1", b"[::1]:443", b"localhost", b"xn--bcher-kva.ch"]
)


@st.composite
def requests(draw: Any) -> bytes:
    """One valid request: random line/headers, framed by Content-Length, chunked or nothing."""
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    method = draw(methods).encode()
    target = (draw(paths) + draw(queries)).encode()
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    fields: list[bytes] = [
        b"%s:%s%s%s" % (n.encode(), draw(ows), v, draw(ows))
        for n, v in draw(st.lists(st.tuples(names, values), max_size=8))
    ]
    if version == b"1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: " + draw(hosts))
    if draw(st.booleans()):
        fields.append(draw(st.sampled_from([b"Connection: close", b"Connection: keep-alive"])))
    for line in draw(st.lists(repeated_lines, max_size=3)):
        fields.insert(draw(st.integers(0, len(fields))), line)
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == b"1.1" else
                                   ["none", "length"]))
    payload = b""
    if framing == "length" or (framing == "none" and body):
        fmt = draw(length_formats)
        fields.append(b"Content-Length: " + fmt.replace(b"%d", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=False)]
        for piece in pieces:
            if piece:
                ext = draw(st.sampled_from([b"", b";a=1", b';n="v;x"']))
                payload += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
        payload += b"0\r\n"
        if draw(st.booleans()):
            payload += b"X-Trailer: t\r\n"
        payload += b"\r\n"
    lead = draw(st.sampled_from([b"", b"\r\n"]))
    return lead + b"\r\n".join(lines + fields) + b"\r\n\r\n" + payload


streams = st.lists(requests(), min_size=1, max_size=3).map(b"".join)


def whole_events(parser_cls: type[Any], data: bytes) -> list[object]:
    events, error = run(parser_cls, [data])
    assert error is None, error
    return coalesce(events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_split_gives_same_events(data: bytes, cuts: list[int]) -> None:
    reference = whole_events(PARSERS[0], data)
    assert sum(isinstance(e, RequestHead) for e in reference) >= 1
    assert isinstance(reference[-1], EndOfMessage)
    for parser_cls in PARSERS:
        events, error = run(parser_cls, split_at(data, [c % (len(data) + 1) for c in cuts]))
        assert error is None, (parser_cls.__name__, error)
        assert coalesce(events) == reference, parser_cls.__name__


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams)
def test_parsers_agree(data: bytes) -> None:
    assert whole_events(PARSERS[0], data) == whole_events(PARSERS[1], data)


@settings(max_examples=60, deadline=None)
@given(data=requests())
def test_byte_at_a_time(data: bytes) -> None:
    reference = whole_events(PARSERS[0], data)
    for parser_cls in PARSERS:
        events, error = run(parser_cls, [data[i : i + 1] for i in range(len(data))])
        assert error is None
        assert coalesce(events) == reference


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_garbage_same_status_for_both_parsers(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes: both parsers produce the same outcome, however they are split."""
    outcomes = set()
    for parser_cls in PARSERS:
        for pieces in ([data], split_at(data, cuts)):
            events, error = run(parser_cls, pieces)
            outcomes.add((error.status if error else None, repr(coalesce(events)) if not error
                          else None))
    assert len(outcomes) == 1, outcomes


INTERESTING = b"\r\n \t:;,\x00\x0b0aF-/?#@[]\x80\"="


@st.composite
def mutated(draw: Any) -> bytes:
    """A valid stream with a few bytes inserted, replaced or deleted."""
    data = bytearray(draw(streams))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        byte = draw(st.sampled_from(INTERESTING))
        if op == "insert":
            data[i:i] = bytes([byte])
        elif i < len(data):
            data[i : i + 1] = b"" if op == "delete" else bytes([byte])
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_mutations_same_outcome_everywhere(data: bytes, cuts: list[int]) -> None:
    """Near-valid input: same status (or same events) for both parsers and any split."""
    outcomes = set()
    for parser_cls in PARSERS:
        for pieces in ([data], split_at(data, [c % (len(data) + 1) for c in cuts])):
            events, error = run(parser_cls, pieces)
            if error is not None:
                outcomes.add(("error", error.status))
            else:
                outcomes.add(("ok", repr(coalesce(events))))
    assert len(outcomes) == 1, outcomes
