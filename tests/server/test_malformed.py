"""Malformed and ambiguous requests over real sockets, against both parsers.

The table of cases lives with the parser tests (``tests/protocols/http1/malformed_cases.py``);
here every case is replayed through a live server to prove the connection layer does what the
parser decided: a rejected request is answered with its status and the connection closed, and
nothing in it -- or after it -- reaches the app; an accepted request reaches the app exactly once.

Each case is followed on the wire by a marker request. For an accepted case that stays open the
marker's response must come next, which proves (without waiting) that nothing between the case
and the marker was taken for a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from tests.apps import Recorder
from tests.helpers import RawClient, status_of, wait_until
from tests.protocols.http1.malformed_cases import CASES, Case

from pounce.testing import serve

PARSERS = ["fast", "h11"]
MARKER_PATH = b"/__marker__"
MARKER = b"GET " + MARKER_PATH + b" HTTP/1.1\r\nHost: marker\r\n\r\n"


# -- the shared table -----------------------------------------------------------------------------

#: ParserLimits fields in the table, as the server options that set them.
_LIMIT_OPTIONS = {
    "max_request_line": "limit_request_line",
    "max_header_size": "limit_request_header_size",
    "max_header_count": "limit_request_fields",
    "max_body_size": "limit_request_body",
    "allow_bare_lf": "allow_bare_lf",
}


def server_options(case: Case) -> dict[str, Any]:
    unknown = set(case.limits) - set(_LIMIT_OPTIONS)
    assert not unknown, f"{case.id}: no server option for {unknown}"
    options = {_LIMIT_OPTIONS[name]: value for name, value in case.limits.items()}
    if case.id == "websocket-upgrade":
        # This table checks how the HTTP/1.1 parser frames an upgrade request (served as plain
        # HTTP here); the WebSocket hand-over has its own tests (tests/pipeline).
        options["ws"] = "none"
    return options


REJECTED = [pytest.param(c, id=c.id) for c in CASES if c.status is not None]
ACCEPTED = [pytest.param(c, id=c.id) for c in CASES if c.status is None]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert REJECTED and ACCEPTED


# -- servers shared per parser and option set ----------------------------------------------------


class Servers:
    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.running: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[str, Recorder]] = {}

    def get(self, http: str, options: dict[str, Any] | None = None) -> tuple[str, Recorder]:
        key = (http, tuple(sorted((options or {}).items())))
        if key not in self.running:
            app = Recorder()
            url = self.stack.enter_context(serve(app, http=http, **(options or {})))
            self.running[key] = (url, app)
        url, app = self.running[key]
        app.calls.clear()
        app.bodies.clear()
        app.disconnects = 0
        return url, app


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        yield Servers(stack)


@pytest.fixture(params=PARSERS)
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def assert_rejected(url: str, app: Recorder, raw: bytes, status: int | set[int]) -> bytes:
    """Send *raw* plus the marker; the answer is *status*, then close; the app saw nothing."""
    with RawClient(url) as client:
        # The server may answer and close before it has taken everything.
        with contextlib.suppress(OSError):
            client.send(raw + MARKER)
        data = client.read_until_close(limit=5.0)
        closed = client.is_closed(wait=3.0)
    expected = {status} if isinstance(status, int) else status
    assert status_of(data) in expected, data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data  # one answer, nothing for what followed
    assert closed
    assert MARKER_PATH not in app.paths
    # A head error never reaches the app; a body error may follow a valid head, but then the
    # app must learn that the body will never complete rather than get a request.
    assert app.bodies == [], app.calls
    # The app learns of it on its next turn in the event loop, which may come after the close.
    assert wait_until(lambda: app.disconnects == len(app.calls)), (app.disconnects, app.calls)
    return data


@pytest.mark.parametrize("case", REJECTED)
def test_rejected_case(servers: Servers, http: str, case: Case) -> None:
    url, app = servers.get(http, server_options(case))
    assert case.status is not None
    assert_rejected(url, app, case.raw, case.status)


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_case(servers: Servers, http: str, case: Case) -> None:
    url, app = servers.get(http, server_options(case))
    with RawClient(url) as client:
        client.send(case.raw + MARKER)
        first = client.read_response(head=case.raw.startswith(b"HEAD "))
        assert 200 <= first.status < 300, (first.status, first.body)
        closing = first.header(b"connection") == b"close"
        if not closing:
            marker = client.read_response()
            assert marker.body == b"seen " + MARKER_PATH
        else:
            assert client.is_closed()
    # Exactly one request came out of the case: nothing in or after it was taken for another.
    assert len(app.calls) == (1 if closing else 2), app.calls
    if not closing:
        assert app.paths[1] == MARKER_PATH


# -- request smuggling --------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED_IN_BODY = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Ignore: "

SMUGGLING: dict[str, bytes] = {
    # Front end uses Content-Length, back end Transfer-Encoding (or the reverse): refuse both.
    "CL.TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(SMUGGLED_IN_BODY), SMUGGLED_IN_BODY),
    "CL.TE-te-first": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n" + SMUGGLED,
    # TE.TE: one parser sees chunked, the other does not, after obfuscation.
    "TE.TE-duplicate": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: x\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.TE-space-before-colon": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
    b"Content-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.TE-xchunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "TE.TE-chunked-identity": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.TE-obs-fold": b"POST / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.TE-vertical-tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "TE.TE-quoted": b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "chunked"\r\n\r\n'
    b"0\r\n\r\n" + SMUGGLED,
    "TE.TE-http10": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "CL.CL-conflicting": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    b"Content-Length: 37\r\n\r\n" + SMUGGLED,
    "CL-plus-sign": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n" + SMUGGLED,
    "CL-hex": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x0\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1" + b"0" * 16 + b"\r\n" + SMUGGLED,
    "chunk-size-0x-prefix": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x0\r\n\r\n" + SMUGGLED,
    "chunk-size-whitespace": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0 \r\n\r\n" + SMUGGLED,
    "chunk-bare-lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\nabc\n0\n\n" + SMUGGLED,
    "chunk-data-overrun": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabcdef\r\n0\r\n\r\n" + SMUGGLED,
    "bare-cr-in-header": b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 37\r\n\r\n"
    + SMUGGLED,
    "nul-in-header": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\x00 37\r\n\r\n" + SMUGGLED,
    "double-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("payload", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggled_request_never_reaches_the_app(
    servers: Servers, http: str, payload: bytes
) -> None:
    url, app = servers.get(http)
    assert_rejected(url, app, payload, {400, 501})
    assert b"/smuggled" not in b"".join(app.paths)


def test_smuggling_split_across_reads_is_still_refused(servers: Servers, http: str) -> None:
    url, app = servers.get(http)
    payload = SMUGGLING["CL.TE"] + MARKER
    with RawClient(url) as client:
        for i in range(0, len(payload), 7):
            try:
                client.send(payload[i : i + 7])
            except OSError:
                break
        data = client.read_until_close(limit=5.0)
    assert status_of(data) == 400
    assert app.calls == []


def test_bytes_that_cannot_start_a_request_are_refused_at_once(http: str) -> None:
    # A TLS ClientHello sent to the plain-HTTP port has no LF to wait for: it is answered at
    # once instead of holding the connection until the header timeout.
    with serve(Recorder(), http=http, timeout_request_header=30) as url, RawClient(url) as client:
        client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40)
        data = client.read_until_close(limit=5.0)
    assert status_of(data) == 400


def test_valid_pipelined_request_after_a_body_is_served_in_order(
    servers: Servers, http: str
) -> None:
    # The control for the smuggling tests: an honest body that merely *looks* like a request is
    # body, and the honest request after it is a request.
    url, app = servers.get(http)
    body = SMUGGLED
    raw = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    chunked = b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with RawClient(url) as client:
        client.send(raw + chunked + MARKER)
        bodies = [client.read_response().body for _ in range(3)]
    assert bodies == [b"seen /first", b"seen /second", b"seen " + MARKER_PATH]
    assert app.paths == [b"/first", b"/second", MARKER_PATH]
    assert app.bodies == [body, body, b""]
