"""Response compression: negotiation, the rules that keep a response as it is, streaming."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import zlib
from typing import Any

import pytest
from tests import helpers
from tests.helpers import Response, address
from tests.pipeline.fakes import FakeChannel

from pounce.config import ServerConfig
from pounce.features.compression import (
    ZSTD_AVAILABLE,
    Compressor,
    _Settings,
    compression_factory,
    is_compressible,
    negotiate,
)
from pounce.pipeline.filters import FilteredChannel
from pounce.testing import serve

if ZSTD_AVAILABLE:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd

needs_zstd = pytest.mark.skipif(
    not ZSTD_AVAILABLE, reason="zstd needs Python 3.14 or backports.zstd (pounce[zstd])"
)

BODY = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(400)]).encode()


# --------------------------------------------------------------------------- negotiation

NEGOTIATION = [
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("gzip, zstd", "zstd"),  # a tie: zstd
    ("zstd, gzip", "zstd"),
    ("gzip, deflate, br, zstd", "zstd"),  # what browsers send
    ("gzip;q=1.0, zstd;q=0.5", "gzip"),  # the client's preference first
    ("zstd;q=0.2, gzip;q=0.8", "gzip"),
    ("GZIP", "gzip"),
    ("x-gzip", "gzip"),
    ("br", None),
    ("deflate", None),
    ("", None),
    ("identity", None),
    ("*", "zstd"),
    ("*;q=0.5, gzip;q=0.7", "gzip"),
    ("*;q=0", None),
    ("gzip;q=0", None),
    ("gzip;q=0, *", "zstd"),
    ("zstd;q=0, *", "gzip"),
    ("identity;q=0", None),  # only identity ruled out; we offer nothing else it listed
    ("gzip, identity;q=0", "gzip"),
    ("gzip;q=0.5, identity", None),  # identity ranked above gzip
    ("gzip;q=0.5, identity;q=0.4", "gzip"),
    ("gzip;q=abc", None),  # malformed weight
    ("gzip;q=2", None),
    ("gzip ; q=0.9 , br", "gzip"),
    (" , ,gzip", "gzip"),
]


@pytest.mark.parametrize(("header", "expected"), NEGOTIATION)
def test_negotiation(header: str, expected: str | None) -> None:
    assert negotiate(header, zstd=True) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("zstd", None), ("gzip, zstd", "gzip"), ("*", "gzip"), ("zstd;q=1, gzip;q=0.1", "gzip")],
)
def test_negotiation_without_zstd_offers_gzip_only(header: str, expected: str | None) -> None:
    assert negotiate(header, zstd=False) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text/html; charset=utf-8", True),
        (b"text/event-stream", True),
        (b"application/json", True),
        (b"application/problem+json", True),
        (b"application/javascript", True),
        (b"text/javascript", True),
        (b"application/atom+xml", True),
        (b"image/svg+xml", True),
        (b"application/wasm", True),
        (b"Application/JSON", True),
        (b"image/png", False),
        (b"application/octet-stream", False),
        (b"application/zip", False),
        (b"video/mp4", False),
    ],
)
def test_compressible_types(content_type: bytes, expected: bool) -> None:
    assert is_compressible(content_type) is expected


def test_configured_types_are_compressible_too() -> None:
    assert is_compressible(b"application/x-yaml", frozenset({b"application/x-yaml"}))


def test_factory_returns_none_without_accept_encoding_or_when_off() -> None:
    factory = compression_factory(ServerConfig())
    assert factory is not None
    assert factory({"method": "GET", "headers": [(b"host", b"x")]}) is None
    assert factory({"method": "HEAD", "headers": [(b"accept-encoding", b"gzip")]}) is None
    assert factory({"method": "GET", "headers": [(b"accept-encoding", b"br")]}) is None
    made = factory({"method": "GET", "headers": [(b"accept-encoding", b"gzip")]})
    assert isinstance(made, Compressor) and made.coding == "gzip"
    assert compression_factory(ServerConfig(compression=False)) is None


def test_unit_start_rewrites_the_head() -> None:
    filt = Compressor("gzip", _Settings(ServerConfig()))
    fields, length = filt.start(
        200,
        [(b"content-type", b"text/plain"), (b"vary", b"Cookie"), (b"etag", b'"abc"')],
        5000,
    )
    assert length is None
    assert (b"vary", b"Cookie, Accept-Encoding") in fields
    assert (b"etag", b'W/"abc"') in fields
    assert (b"content-encoding", b"gzip") in fields
    data = filt.body(b"hello " * 1000, False)
    assert zlib.decompress(data, 31) == b"hello " * 1000


# --------------------------------------------------------------------------- over sockets


def make_app(
    body: bytes = BODY,
    headers: list[tuple[bytes, bytes]] | None = None,
    status: int = 200,
    content_length: bool = True,
) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        fields = list(headers if headers is not None else [(b"content-type", b"application/json")])
        if content_length:
            fields.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": fields})
        await send({"type": "http.response.body", "body": body})

    return app


def fetch(
    url: str, accept: str | None = "gzip", method: str = "GET", protocol: str = "http/1.1"
) -> Response:
    headers = [] if accept is None else [("accept-encoding", accept)]
    return helpers.fetch(url, "/", headers, method, protocol=protocol)


def check_framing(response: Response, protocol: str) -> None:
    """Never the app's (uncompressed) Content-Length. HTTP/1.1: the compressed body in one
    piece gets an exact one, not chunked. HTTP/2: END_STREAM ends the body; the head goes out
    before it (a Content-Length costs an HPACK field per response there, for no framing)."""
    assert response.header(b"transfer-encoding") is None
    if protocol == "h2":
        assert response.header(b"content-length") is None
    else:
        assert response.header(b"content-length") == str(len(response.body)).encode()


def decode(response: Response) -> bytes:
    coding = response.header(b"content-encoding")
    if coding == b"gzip":
        return zlib.decompress(response.body, 31)
    if coding == b"zstd":
        return bytes(zstd.decompress(response.body))
    assert coding is None
    return response.body


@pytest.mark.parametrize(
    "coding", ["gzip", pytest.param("zstd", marks=needs_zstd)]
)
@pytest.mark.parametrize("content_length", [True, False])
def test_body_round_trips(coding: str, content_length: bool, protocol: str) -> None:
    with serve(make_app(content_length=content_length)) as url:
        response = fetch(url, coding, protocol=protocol)
    assert response.status == 200
    assert response.header(b"content-encoding") == coding.encode()
    assert response.header(b"vary") == b"Accept-Encoding"
    # The whole compressed body in one piece: an exact Content-Length, not chunked.
    check_framing(response, protocol)
    assert len(response.body) < len(BODY) // 4
    assert decode(response) == BODY


LARGE = b"".join(b"line %d of a long text\n" % i for i in range(40000))  # about 1 MiB


@pytest.mark.parametrize("coding", ["gzip", pytest.param("zstd", marks=needs_zstd)])
def test_large_body_is_compressed_off_the_event_loop(
    coding: str, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    threads: list[str] = []
    original = Compressor.body

    def recording(self: Compressor, data: bytes, more_body: bool) -> bytes:
        threads.append(threading.current_thread().name)
        return original(self, data, more_body)

    monkeypatch.setattr(Compressor, "body", recording)
    with serve(make_app(LARGE, [(b"content-type", b"text/plain")])) as url:
        response = fetch(url, coding, protocol=protocol)
    assert decode(response) == LARGE
    assert len(threads) == 1 and threads[0].startswith("pounce-filter")


def test_large_streamed_pieces_and_pathsend(tmp_path: Any, protocol: str) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(LARGE)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        })
        if scope["path"] == "/file":
            await send({"type": "http.response.pathsend", "path": str(path)})
            return
        for start in range(0, len(LARGE), 300_000):
            piece = LARGE[start : start + 300_000]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url:
        for target in ("/", "/file"):
            response = helpers.fetch(
                url, target, [("accept-encoding", "gzip")], protocol=protocol
            )
            assert response.header(b"content-encoding") == b"gzip"
            assert response.header(b"content-length") is None  # the size is not known
            assert decode(response) == LARGE


@pytest.mark.parametrize(
    ("headers", "zero_copy"),
    [
        ([(b"content-type", b"image/png")], True),  # not compressible
        ([(b"content-type", b"text/css"), (b"content-encoding", b"gzip")], True),  # encoded
        ([(b"content-type", b"text/css")], False),
    ],
)
def test_a_file_the_compressor_leaves_alone_stays_zero_copy(
    tmp_path: Any, headers: list[tuple[bytes, bytes]], zero_copy: bool
) -> None:
    path = tmp_path / "file"
    path.write_bytes(LARGE)
    inner = FakeChannel()

    class Counter:  # the fake's write_file only counts bytes on its cycle
        bytes_sent = 0

    inner._cycle = Counter()  # type: ignore[assignment]
    channel = FilteredChannel(inner, [Compressor("gzip", _Settings(ServerConfig()))])

    async def send_file() -> None:
        channel.start_response(200, [*headers, (b"content-length", b"%d" % len(LARGE))],
                               len(LARGE), False, False)
        await channel.write_file(str(path))

    asyncio.run(send_file())
    if zero_copy:
        assert inner.files == [str(path)]
        assert inner.body == []
    else:
        assert inner.files == []
        assert zlib.decompress(inner.body_bytes, 31) == LARGE


def test_existing_vary_and_etag(protocol: str) -> None:
    headers = [
        (b"content-type", b"text/html"),
        (b"vary", b"Cookie"),
        (b"etag", b'"v1"'),
    ]
    with serve(make_app(headers=headers)) as url:
        response = fetch(url, "gzip", protocol=protocol)
    assert response.header(b"content-encoding") == b"gzip"
    assert response.header_values(b"vary") == [b"Cookie, Accept-Encoding"]
    assert response.header(b"etag") == b'W/"v1"'


def test_weak_etag_and_vary_star_are_kept() -> None:
    headers = [(b"content-type", b"text/html"), (b"vary", b"*"), (b"etag", b'W/"v1"')]
    with serve(make_app(headers=headers)) as url:
        response = fetch(url, "gzip")
    assert response.header(b"content-encoding") == b"gzip"
    assert response.header_values(b"vary") == [b"*"]
    assert response.header(b"etag") == b'W/"v1"'


NEVER = {
    "no accept-encoding": (make_app(), None, "GET"),
    "unsupported coding": (make_app(), "br", "GET"),
    "HEAD": (make_app(), "gzip", "HEAD"),
    "image": (make_app(headers=[(b"content-type", b"image/png")]), "gzip", "GET"),
    "no content-type": (make_app(headers=[]), "gzip", "GET"),
    "already encoded": (
        make_app(headers=[(b"content-type", b"text/plain"), (b"content-encoding", b"br")]),
        "gzip",
        "GET",
    ),
    "no-transform": (
        make_app(
            headers=[(b"content-type", b"text/plain"), (b"cache-control", b"public, no-transform")]
        ),
        "gzip",
        "GET",
    ),
    "partial content": (make_app(status=206), "gzip", "GET"),
    "small with length": (make_app(b"{}" * 100), "gzip", "GET"),
    "small single body": (make_app(b"{}" * 100, content_length=False), "gzip", "GET"),
    "204": (make_app(b"", status=204, content_length=False), "gzip", "GET"),
    "304": (make_app(b"", status=304, content_length=False), "gzip", "GET"),
}


@pytest.mark.parametrize("case", list(NEVER))
def test_never_compressed(case: str, protocol: str) -> None:
    app, accept, method = NEVER[case]
    with serve(app) as url:
        response = fetch(url, accept, method, protocol)
    assert response.header(b"content-encoding") in (None, b"br")
    assert response.header(b"vary") is None
    if method == "GET" and response.status not in (204, 304):
        assert response.body in (BODY, b"{}" * 100)


def test_option_off() -> None:
    with serve(make_app(), compression=False) as url:
        response = fetch(url, "gzip")
    assert response.header(b"content-encoding") is None
    assert response.body == BODY


def test_min_size_and_extra_types_are_configurable() -> None:
    app = make_app(b"a: 1\n" * 30, headers=[(b"content-type", b"application/x-yaml")])
    with serve(app, compression_min_size=10, compression_types=["application/x-yaml"]) as url:
        response = fetch(url, "gzip")
    assert response.header(b"content-encoding") == b"gzip"
    assert decode(response) == b"a: 1\n" * 30


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_worker_modes(worker_type: str, protocol: str) -> None:
    with serve(make_app(), workers=2, worker_type=worker_type) as url:
        responses = [fetch(url, "gzip", protocol=protocol) for _ in range(4)]
    for response in responses:
        assert response.header(b"content-encoding") == b"gzip"
        assert decode(response) == BODY


# --------------------------------------------------------------------------- streaming


class ChunkReader:
    """Reads a chunked response off a socket one chunk at a time, as it arrives."""

    def __init__(self, url: str, accept: str) -> None:
        self.sock = socket.create_connection(address(url), timeout=5)
        self.sock.sendall(
            f"GET / HTTP/1.1\r\nhost: test\r\naccept-encoding: {accept}\r\n\r\n".encode()
        )
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buffer += data

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head.lower()

    def chunk(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        size = int(line, 16)
        while len(self.buffer) < size + 2:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return data

    def close(self) -> None:
        self.sock.close()


class StreamReader:
    """The same over HTTP/2: the head's fields, then the DATA frames of one stream as they come
    (``b""`` once the stream ended)."""

    def __init__(self, url: str, accept: str) -> None:
        from tests.protocols.http2.h2client import H2Client

        self.client = H2Client(url)
        self.stream_id = self.client.request("/", headers=[(b"accept-encoding", accept.encode())])
        self.seen = 0

    def _next(self) -> Any:
        import h2.events

        while True:
            events = self.client.events
            while self.seen < len(events):
                event = events[self.seen]
                self.seen += 1
                if getattr(event, "stream_id", None) == self.stream_id and isinstance(
                    event, h2.events.ResponseReceived | h2.events.DataReceived
                    | h2.events.StreamEnded | h2.events.StreamReset
                ):
                    return event
            if not self.client.read_once():
                raise ConnectionError("closed")

    def head(self) -> bytes:
        event = self._next()
        return b"\r\n".join(name + b": " + value for name, value in event.headers).lower()

    def chunk(self) -> bytes:
        import h2.events

        event = self._next()
        if isinstance(event, h2.events.DataReceived):
            return bytes(event.data)
        assert isinstance(event, h2.events.StreamEnded), event
        return b""

    def close(self) -> None:
        self.client.close()


def stepped_app(pieces: list[bytes], content_type: bytes, proceed: threading.Event) -> Any:
    """Sends each piece only when the test asks for it (after it saw the previous one)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type)],
        })
        for piece in pieces:
            # Waiting first: the head must reach the client before any body exists.
            for _ in range(500):  # bounded: at most 5 s
                if proceed.is_set():
                    break
                await asyncio.sleep(0.01)
            proceed.clear()
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def decoder_for(coding: str) -> Any:
    if coding == "gzip":
        return zlib.decompressobj(31)
    return zstd.ZstdDecompressor()


@pytest.mark.parametrize("coding", ["gzip", pytest.param("zstd", marks=needs_zstd)])
@pytest.mark.parametrize("content_type", [b"text/plain", b"text/event-stream"])
def test_streamed_pieces_decode_as_they_arrive(
    coding: str, content_type: bytes, protocol: str
) -> None:
    pieces = [b"data: event %d %s\n\n" % (i, b"x" * (i * 50)) for i in range(5)]
    proceed = threading.Event()
    with serve(stepped_app(pieces, content_type, proceed)) as url:
        reader = StreamReader(url, coding) if protocol == "h2" else ChunkReader(url, coding)
        try:
            head = reader.head()
            assert f"content-encoding: {coding}".encode() in head
            assert b"vary: accept-encoding" in head
            assert b"content-length" not in head
            if protocol != "h2":
                assert b"transfer-encoding: chunked" in head
            decoder = decoder_for(coding)
            for piece in pieces:
                proceed.set()
                # The app waits for us: this piece must be decodable on its own, now.
                assert decoder.decompress(reader.chunk()) == piece
            rest = b""
            while (chunk := reader.chunk()) != b"":
                rest += decoder.decompress(chunk)
            assert rest == b""
        finally:
            reader.close()
