"""Raw HTTP/1.1 requests and the answer Pounce must give to each.

Every row is self-describing: ``raw`` is exactly what a client writes on the socket,
``status`` is the error status the server must answer with (``None``: the request is accepted
and handed to the application), ``closes`` says whether the connection must be closed after the
response (always True for errors), and ``limits`` holds ``ParserLimits`` overrides the case
needs (for a live server: the equivalent server options). The table is shared by the parser
unit tests and the lead's live-socket replay, so it only depends on the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "Case"]


@dataclass(frozen=True)
class Case:
    """One raw request and the expected outcome."""

    id: str
    raw: bytes
    status: int | None
    closes: bool
    limits: dict[str, Any] = field(default_factory=dict, hash=False)
    note: str = ""


def req(*lines: str | bytes, body: bytes = b"", start: bytes | None = None) -> bytes:
    """Join a request line and header lines with CRLF, add the empty line and *body*."""
    encoded = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    head = b"\r\n".join(encoded) + b"\r\n\r\n"
    return (start or b"") + head + body


H = "Host: example.com"
CHUNKED = "Transfer-Encoding: chunked"


def ok(id: str, raw: bytes, closes: bool = False, note: str = "", **limits: Any) -> Case:
    return Case(id, raw, None, closes, dict(limits), note)


def bad(id: str, raw: bytes, status: int = 400, note: str = "", **limits: Any) -> Case:
    return Case(id, raw, status, True, dict(limits), note)


def post_chunked(chunks: bytes, *extra: str) -> bytes:
    return req("POST /upload HTTP/1.1", H, *extra, CHUNKED, body=chunks)


CASES: list[Case] = [
    # ---------------------------------------------------------------- accepted requests
    ok("get-simple", req("GET / HTTP/1.1", H)),
    ok("get-http10-no-host", req("GET / HTTP/1.0"), closes=True, note="1.0 closes by default"),
    ok("get-http10-keep-alive", req("GET / HTTP/1.0", "Connection: keep-alive")),
    ok("get-http11-connection-close", req("GET / HTTP/1.1", H, "Connection: close"), closes=True),
    ok(
        "get-connection-multiple-tokens",
        req("GET / HTTP/1.1", H, "Connection: keep-alive, Close"),
        closes=True,
    ),
    ok("method-lowercase-token", req("get / HTTP/1.1", H), note="case-sensitive token: valid"),
    ok("method-extension-token", req("PURGE /cache HTTP/1.1", H)),
    ok("options-asterisk", req("OPTIONS * HTTP/1.1", H)),
    ok("absolute-form-http", req("GET http://example.com/a/b?x=1 HTTP/1.1", H)),
    ok(
        "absolute-form-host-mismatch",
        req("GET https://other.example:8443 HTTP/1.1", H),
        note="target authority wins over Host (RFC 9112 3.2.2); empty path becomes /",
    ),
    ok("host-ipv6-literal-port", req("GET / HTTP/1.1", "Host: [::1]:80")),
    ok("host-ipv4-port", req("GET / HTTP/1.1", "Host: 127.0.0.1:8000")),
    ok("host-pct-encoded", req("GET / HTTP/1.1", "Host: ex%41mple.com")),
    ok("host-no-space-after-colon", req("GET / HTTP/1.1", "Host:example.com")),
    ok("version-http12-as-11", req("GET / HTTP/1.2", H), note="HTTP/1.x, x>1 handled as 1.1"),
    ok("leading-empty-lines", req("GET / HTTP/1.1", H, start=b"\r\n\r\n")),
    ok("cl-identical-list", req("POST / HTTP/1.1", H, "Content-Length: 5, 5", body=b"hello")),
    ok(
        "cl-identical-lines",
        req("POST / HTTP/1.1", H, "Content-Length: 5", "Content-Length: 5", body=b"hello"),
    ),
    ok("cl-zero", req("POST / HTTP/1.1", H, "Content-Length: 0")),
    ok("post-body", req("POST /f HTTP/1.1", H, "Content-Length: 11", body=b"hello world")),
    ok(
        "chunked-ext-and-trailers",
        post_chunked(b'5;name=val;q="a;b"\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n'),
    ),
    ok("chunked-uppercase-hex", post_chunked(b"A\r\n0123456789\r\n0\r\n\r\n")),
    ok("te-chunked-mixed-case", req("POST / HTTP/1.1", H, "Transfer-Encoding: ChUnKeD",
                                    body=b"0\r\n\r\n")),
    ok("value-obs-text", req("GET / HTTP/1.1", H, b"X-Name: caf\xe9")),
    ok("value-inner-tab", req("GET / HTTP/1.1", H, "X-Tab: a\tb")),
    ok("value-empty", req("GET / HTTP/1.1", H, "X-Empty:")),
    ok("expect-100-continue", req("POST / HTTP/1.1", H, "Expect: 100-Continue",
                                  "Content-Length: 2", body=b"hi")),
    ok("origin-form-double-slash", req("GET //a//b HTTP/1.1", H)),
    ok("websocket-upgrade", req("GET /ws HTTP/1.1", H, "Connection: Upgrade",
                                "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")),
    ok("bare-lf-allowed", b"GET / HTTP/1.1\nHost: a\n\n", allow_bare_lf=True),
    # ---------------------------------------------------------------- smuggling: CL / TE
    bad("cl-te", req("POST / HTTP/1.1", H, "Content-Length: 6", CHUNKED, body=b"0\r\n\r\nX"),
        note="CL.TE"),
    bad("te-cl", req("POST / HTTP/1.1", H, CHUNKED, "Content-Length: 3", body=b"0\r\n\r\n"),
        note="TE.CL"),
    bad("te-xchunked", req("POST / HTTP/1.1", H, "Transfer-Encoding: xchunked",
                           body=b"0\r\n\r\n")),
    bad("te-chunked-trailing-comma", req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked ,",
                                         body=b"0\r\n\r\n")),
    bad("te-empty-list-element", req("POST / HTTP/1.1", H, "Transfer-Encoding: gzip,,chunked",
                                     body=b"0\r\n\r\n")),
    bad("te-space-before-colon", req("POST / HTTP/1.1", H, "Transfer-Encoding : chunked",
                                     body=b"0\r\n\r\n")),
    bad("te-vtab-prefix", req("POST / HTTP/1.1", H, "Transfer-Encoding: \x0bchunked",
                              body=b"0\r\n\r\n")),
    bad("te-duplicate-chunked", req("POST / HTTP/1.1", H, CHUNKED, CHUNKED, body=b"0\r\n\r\n"),
        note="chunked applied twice"),
    bad("te-chunked-then-identity", req("POST / HTTP/1.1", H, CHUNKED,
                                        "Transfer-Encoding: identity", body=b"0\r\n\r\n")),
    bad("te-identity", req("POST / HTTP/1.1", H, "Transfer-Encoding: identity")),
    bad("te-chunked-gzip", req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked, gzip",
                               body=b"0\r\n\r\n"), note="final coding must be chunked"),
    bad("te-in-http10", req("POST / HTTP/1.0", CHUNKED, body=b"0\r\n\r\n")),
    bad("te-gzip-chunked", req("POST / HTTP/1.1", H, "Transfer-Encoding: gzip, chunked",
                               body=b"0\r\n\r\n"), status=501),
    bad("te-two-lines-gzip-chunked", req("POST / HTTP/1.1", H, "Transfer-Encoding: gzip",
                                         CHUNKED, body=b"0\r\n\r\n"), status=501),
    bad("cl-plus-sign", req("POST / HTTP/1.1", H, "Content-Length: +5", body=b"hello")),
    bad("cl-negative", req("POST / HTTP/1.1", H, "Content-Length: -1")),
    bad("cl-hex", req("POST / HTTP/1.1", H, "Content-Length: 0x10")),
    bad("cl-underscore", req("POST / HTTP/1.1", H, "Content-Length: 1_0")),
    bad("cl-huge", req("POST / HTTP/1.1", H, "Content-Length: 99999999999999999999999999")),
    bad("cl-list-different", req("POST / HTTP/1.1", H, "Content-Length: 5, 6", body=b"hello")),
    bad("cl-lines-different", req("POST / HTTP/1.1", H, "Content-Length: 5",
                                  "Content-Length: 6", body=b"hello")),
    bad("cl-empty", req("POST / HTTP/1.1", H, "Content-Length:")),
    bad("cl-inner-space", req("POST / HTTP/1.1", H, "Content-Length: 1 0")),
    bad("cl-non-ascii-digit", req("POST / HTTP/1.1", H, "Content-Length: \u0665".encode())),
    # ---------------------------------------------------------------- chunked framing
    bad("chunk-size-17-digits", post_chunked(b"10000000000000000\r\n")),
    bad("chunk-size-0x-prefix", post_chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-size-leading-space", post_chunked(b" 5\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-size-trailing-space", post_chunked(b"5 \r\nhello\r\n0\r\n\r\n")),
    bad("chunk-size-sign", post_chunked(b"+5\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-size-empty", post_chunked(b"\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-size-non-hex", post_chunked(b"5g\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-missing-crlf-after-data", post_chunked(b"5\r\nhelloXX0\r\n\r\n")),
    bad("chunk-bare-lf-after-size", post_chunked(b"5\nhello\r\n0\r\n\r\n")),
    bad("chunk-bare-lf-after-data", post_chunked(b"5\r\nhello\n0\r\n\r\n")),
    bad("chunk-bare-lf-allowed-head-only", post_chunked(b"5\nhello\r\n0\r\n\r\n"),
        allow_bare_lf=True, note="allow_bare_lf never applies to chunk framing"),
    bad("chunk-ext-too-large", post_chunked(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-ext-malformed", post_chunked(b"5;=x\r\nhello\r\n0\r\n\r\n")),
    bad("chunk-ext-ctl", post_chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n")),
    bad("trailer-invalid-name", post_chunked(b"0\r\nBad Name: x\r\n\r\n")),
    bad("trailer-obs-fold", post_chunked(b"0\r\nX-A: 1\r\n folded\r\n\r\n")),
    bad("trailer-bare-lf", post_chunked(b"0\r\nX-A: 1\n\r\n")),
    bad("trailer-ctl-in-value", post_chunked(b"0\r\nX-A: \x00\r\n\r\n")),
    bad("trailer-content-length", post_chunked(b"0\r\nContent-Length: 1\r\n\r\n"),
        note="framing fields are not allowed in trailers (RFC 9110 6.5.1)"),
    bad("trailer-invalid-content-length", post_chunked(b"0\r\nContent-Length: x\r\n\r\n")),
    bad("trailer-transfer-encoding", post_chunked(b"0\r\nTransfer-Encoding: gzip\r\n\r\n")),
    # ---------------------------------------------------------------- request line / target
    bad("tls-handshake-on-plain-port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,
        note="refused before any LF arrives, not left to the header timeout"),
    bad("binary-method-without-lf", b"G\x01T / HTTP/1.1"),
    bad("target-nul", req("GET /a\x00b HTTP/1.1", H)),
    bad("target-space", req("GET /a b HTTP/1.1", H)),
    bad("target-tab", req("GET /a\tb HTTP/1.1", H)),
    bad("target-non-ascii", req(b"GET /caf\xc3\xa9 HTTP/1.1", H)),
    bad("target-fragment", req("GET /a#frag HTTP/1.1", H)),
    bad("target-asterisk-get", req("GET * HTTP/1.1", H)),
    bad("target-authority-form-get", req("GET example.com:443 HTTP/1.1", H)),
    bad("target-connect", req("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443")),
    bad("target-absolute-ftp", req("GET ftp://example.com/ HTTP/1.1", H)),
    bad("target-absolute-empty-authority", req("GET http:///x HTTP/1.1", H)),
    bad("target-absolute-userinfo", req("GET http://u@example.com/ HTTP/1.1", H)),
    bad("target-relative", req("GET index.html HTTP/1.1", H)),
    bad("method-invalid-char", req("GE(T / HTTP/1.1", H)),
    bad("method-with-slash", req("G/T / HTTP/1.1", H)),
    bad("request-line-double-space", req("GET  / HTTP/1.1", H)),
    bad("request-line-trailing-space", req("GET / HTTP/1.1 ", H)),
    bad("request-line-leading-space", req(" GET / HTTP/1.1", H)),
    bad("request-line-missing-version", req("GET /", H)),
    bad("version-lowercase", req("GET / http/1.1", H)),
    bad("version-no-minor", req("GET / HTTP/1", H)),
    bad("version-garbage", req("GET / HTTX/1.1", H)),
    bad("version-two-digit-minor", req("GET / HTTP/1.10", H)),
    bad("version-http2", req("GET / HTTP/2.0", H), status=505),
    bad("version-http09", req("GET / HTTP/0.9", H), status=505),
    bad("version-http3-garbage-headers", req("GET / HTTP/3.0", "Bad Header: x"), status=505),
    bad("too-many-leading-empty-lines", req("GET / HTTP/1.1", H, start=b"\r\n" * 20)),
    # ---------------------------------------------------------------- header fields
    bad("header-name-non-ascii", req("GET / HTTP/1.1", H, b"X-Caf\xe9: 1")),
    bad("header-name-trailing-space", req("GET / HTTP/1.1", "Host : example.com")),
    bad("header-name-empty", req("GET / HTTP/1.1", H, ": value")),
    bad("header-no-colon", req("GET / HTTP/1.1", H, "NoColonHere")),
    bad("header-obs-fold-first-line", req("GET / HTTP/1.1", " X-Folded: 1", H)),
    bad("header-obs-fold", req("GET / HTTP/1.1", H, "X-A: 1", "\tcontinued")),
    bad("header-value-nul", req("GET / HTTP/1.1", H, "X-A: a\x00b")),
    bad("header-value-ctl", req("GET / HTTP/1.1", H, "X-A: a\x01b")),
    bad("header-value-del", req("GET / HTTP/1.1", H, "X-A: a\x7fb")),
    bad("header-value-bare-cr", req("GET / HTTP/1.1", H, "X-A: a\rb")),
    bad("head-bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n"),
    bad("head-bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n"),
    bad("head-cr-cr-lf", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"),
    # ---------------------------------------------------------------- Host
    bad("host-missing-http11", req("GET / HTTP/1.1")),
    bad("host-missing-absolute-form", req("GET http://example.com/ HTTP/1.1"),
        note="a 1.1 request needs Host even with an absolute target"),
    bad("host-twice", req("GET / HTTP/1.1", H, "Host: other.example")),
    bad("host-twice-http10", req("GET / HTTP/1.0", H, H)),
    bad("host-slash", req("GET / HTTP/1.1", "Host: a/b")),
    bad("host-space", req("GET / HTTP/1.1", "Host: a b")),
    bad("host-question-mark", req("GET / HTTP/1.1", "Host: a?b")),
    bad("host-hash", req("GET / HTTP/1.1", "Host: a#b")),
    bad("host-userinfo", req("GET / HTTP/1.1", "Host: user@a")),
    bad("host-exa-mple", req("GET / HTTP/1.1", "Host: exa mple")),
    bad("host-empty", req("GET / HTTP/1.1", "Host:"), note="we only serve http(s): host needed"),
    bad("host-bad-port", req("GET / HTTP/1.1", "Host: a:http")),
    bad("host-empty-port", req("GET / HTTP/1.1", "Host: a:")),
    bad("host-port-too-big", req("GET / HTTP/1.1", "Host: a:70000")),
    bad("host-ipv6-unbracketed", req("GET / HTTP/1.1", "Host: ::1")),
    bad("host-ipv6-invalid", req("GET / HTTP/1.1", "Host: [::g]")),
    bad("host-ipv6-zone-id", req("GET / HTTP/1.1", "Host: [fe80::1%25eth0]")),
    bad("host-bad-pct", req("GET / HTTP/1.1", "Host: a%zz")),
    # ---------------------------------------------------------------- limits
    bad("request-line-too-long", req("GET /" + "a" * 9000 + " HTTP/1.1", H), status=414),
    bad("request-line-too-long-incomplete", b"GET /" + b"a" * 9000, status=414,
        note="detected before the line end arrives"),
    bad("too-many-headers", req("GET / HTTP/1.1", H, *[f"X-H{i}: {i}" for i in range(100)]),
        status=431),
    bad("header-section-too-large", req("GET / HTTP/1.1", H,
                                        *[f"X-Big{i}: {'v' * 8000}" for i in range(9)]),
        status=431),
    bad("header-section-too-large-incomplete",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 70000, status=431),
    bad("too-many-trailers", post_chunked(
        b"0\r\n" + b"".join(b"X-T%d: 1\r\n" % i for i in range(60)) + b"\r\n",
        *[f"X-H{i}: {i}" for i in range(45)]), status=431,
        note="head fields + trailer fields share max_header_count"),
    bad("cl-above-max-body", req("POST / HTTP/1.1", H, "Content-Length: 101", body=b"x" * 101),
        status=413, max_body_size=100),
    bad("chunked-above-max-body", post_chunked(b"40\r\n" + b"x" * 64 + b"\r\n40\r\n"
                                               + b"x" * 64 + b"\r\n0\r\n\r\n"),
        status=413, max_body_size=100),
]
