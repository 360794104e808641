"""Static files (``--static URL_PREFIX=DIRECTORY``) through real sockets, and the wrapper alone.

Every real-socket case runs over HTTP/1.1 and HTTP/2 (the ``protocol`` fixture). Requests are
sent with :class:`~tests.helpers.ProtocolClient`, which writes the request target (or the
``:path``) exactly as given: an HTTP client library would normalise ``..`` and percent-escapes
away before the server ever saw them.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from tests import helpers
from tests.apps import Recorder
from tests.helpers import Response

from pounce.cli.main import main
from pounce.config import ConfigError, ServerConfig
from pounce.features import static as static_module
from pounce.features.static import MAX_RANGES, StaticFiles, content_type, parse_ranges
from pounce.testing import serve

SECRET = b"top secret: never served"
TEXT = b"hello, static world\n"
CSS = b"body { color: #123456; }\n" * 40  # 1000 bytes: large enough to be compressed
BIG = bytes(range(256)) * 1200  # 300 KiB: ranges above 64 KiB are read off the loop
MTIME = 1_700_000_000  # a fixed modification time, in the past
HELLO = "/static/hello.txt"


def build_site(base: Path) -> Path:
    """``base/public`` (the served directory) next to ``base/secret.txt`` and friends."""
    public = base / "public"
    (public / "sub").mkdir(parents=True)
    (public / "empty-dir").mkdir()
    (base / "outside").mkdir()
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    (base / "outside" / "evil.css.gz").write_bytes(gzip.compress(SECRET))
    (public / "hello.txt").write_bytes(TEXT)
    (public / "style.css").write_bytes(CSS)
    (public / "style.css.gz").write_bytes(gzip.compress(CSS))
    (public / "style.css.zst").write_bytes(b"zstd bytes stand-in")  # never decoded by us
    (public / "plain.css").write_bytes(CSS)  # no sibling: the compression filter's turn
    (public / "evil.css").write_bytes(CSS)
    (public / "evil.css.gz").symlink_to(base / "outside" / "evil.css.gz")
    (public / "big.bin").write_bytes(BIG)
    (public / "empty.txt").write_bytes(b"")
    (public / "sub" / "index.html").write_bytes(b"<h1>index</h1>\n")
    (public / "sub" / "page.html").write_bytes(b"<p>page</p>\n")
    for name in ("app.js", "mod.mjs", "data.json", "icon.svg", "prog.wasm", "pic.png", "x.qqq"):
        (public / name).write_bytes(b"x")
    (public / "inside-link.txt").symlink_to(public / "hello.txt")
    (public / "outside-link.txt").symlink_to(base / "outside" / "secret.txt")
    (public / "outside-dir").symlink_to(base / "outside", target_is_directory=True)
    for path in public.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (MTIME, MTIME))
    return public


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("static"))


@pytest.fixture(scope="module")
def app() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def url(site: Path, app: Recorder) -> Iterator[str]:
    with serve(app, static=[f"/static={site}"]) as base:
        yield base


def fetch(
    url: str,
    protocol: str,
    target: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Response:
    """One request over *protocol*, its target written as given (never normalised)."""
    return helpers.fetch(url, target, list((headers or {}).items()), method, protocol=protocol)


# --------------------------------------------------------------------------- GET and HEAD


def test_get_serves_the_file_with_validators(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/hello.txt")
    assert response.status == 200
    assert response.body == TEXT
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    assert response.header(b"content-length") == b"%d" % len(TEXT)
    assert response.header(b"last-modified") == formatdate(MTIME, usegmt=True).encode()
    etag = response.header(b"etag")
    assert etag is not None and etag.startswith(b'"') and etag.endswith(b'"')
    assert response.header(b"accept-ranges") == b"bytes"
    assert response.header(b"cache-control") == b"no-cache"
    assert response.header(b"vary") == b"Accept-Encoding"  # text: it may be compressed


def test_head_sends_the_same_head_without_a_body(url: str, protocol: str) -> None:
    get = fetch(url, protocol, "/static/hello.txt")
    head = fetch(url, protocol, "/static/hello.txt", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    for name in (b"content-length", b"etag", b"last-modified", b"content-type"):
        assert head.header(name) == get.header(name)


def test_a_large_file_arrives_whole(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/big.bin")
    assert response.body == BIG
    assert response.header(b"content-type") == b"application/octet-stream"
    assert response.header(b"vary") is None  # binary: never varies by Accept-Encoding


@pytest.mark.parametrize("protocol", [p for p in helpers.PROTOCOLS if "h2" in str(p)])
def test_pathsend_over_http2_stays_within_a_small_window(url: str, protocol: str) -> None:
    """The file goes out through pathsend in pieces the client's 16 KiB window allows."""
    import h2.events
    from tests.protocols.http2.h2client import H2Client

    with H2Client(url, window=16384) as client:
        stream_id = client.request("/static/big.bin")
        response = client.response(stream_id, timeout=20)
        frames = [e for e in client.events
                  if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id]
    assert response["status"] == 200 and response["body"] == BIG
    assert len(frames) >= len(BIG) // 16384 and all(len(e.data) <= 16384 for e in frames)


def test_an_empty_file(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/empty.txt")
    assert (response.status, response.body, response.header(b"content-length")) == (200, b"", b"0")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.js", b"text/javascript; charset=utf-8"),
        ("mod.mjs", b"text/javascript; charset=utf-8"),
        ("data.json", b"application/json"),
        ("icon.svg", b"image/svg+xml"),
        ("prog.wasm", b"application/wasm"),
        ("pic.png", b"image/png"),
        ("style.css", b"text/css; charset=utf-8"),
        ("sub/page.html", b"text/html; charset=utf-8"),
        ("x.qqq", b"application/octet-stream"),
    ],
)
def test_content_types(url: str, name: str, expected: bytes, protocol: str) -> None:
    assert fetch(url, protocol, f"/static/{name}").header(b"content-type") == expected


def test_content_type_table() -> None:
    assert content_type("A.JS") == b"text/javascript; charset=utf-8"
    assert content_type("archive.tar.gz") == b"application/gzip"
    assert content_type("no-extension") == b"application/octet-stream"


# --------------------------------------------------------------------------- conditional


def test_if_none_match_gives_304(url: str, protocol: str) -> None:
    etag = fetch(url, protocol, "/static/hello.txt").header(b"etag")
    assert etag is not None
    response = fetch(url, protocol, HELLO, {"if-none-match": etag.decode()})
    assert response.status == 304
    assert response.body == b""
    assert response.header(b"etag") == etag
    assert response.header(b"cache-control") == b"no-cache"
    assert response.header(b"vary") == b"Accept-Encoding"
    # A weakened tag (the compression filter's) and a list holding it match too (weak compare).
    weak = f'"other", W/{etag.decode()}'
    assert fetch(url, protocol, HELLO, {"if-none-match": weak}).status == 304
    assert fetch(url, protocol, HELLO, {"if-none-match": "*"}).status == 304
    assert fetch(url, protocol, HELLO, {"if-none-match": '"nope"'}).status == 200


def test_if_modified_since(url: str, protocol: str) -> None:
    later = formatdate(MTIME + 60, usegmt=True)
    same = formatdate(MTIME, usegmt=True)
    earlier = formatdate(MTIME - 60, usegmt=True)
    assert fetch(url, protocol, HELLO, {"if-modified-since": later}).status == 304
    assert fetch(url, protocol, HELLO, {"if-modified-since": same}).status == 304
    assert fetch(url, protocol, HELLO, {"if-modified-since": earlier}).status == 200
    assert fetch(url, protocol, HELLO, {"if-modified-since": "yesterday"}).status == 200
    head = fetch(url, protocol, HELLO, {"if-modified-since": same}, method="HEAD")
    assert head.status == 304


def test_if_none_match_wins_over_if_modified_since(url: str, protocol: str) -> None:
    # RFC 9110 §13.2.2: when If-None-Match is present, If-Modified-Since is not evaluated.
    later = formatdate(MTIME + 60, usegmt=True)
    headers = {"if-none-match": '"other"', "if-modified-since": later}
    assert fetch(url, protocol, "/static/hello.txt", headers).status == 200


def test_if_match_and_if_unmodified_since_give_412(url: str, protocol: str) -> None:
    etag = fetch(url, protocol, "/static/hello.txt").header(b"etag")
    assert etag is not None
    assert fetch(url, protocol, HELLO, {"if-match": '"other"'}).status == 412
    assert fetch(url, protocol, HELLO, {"if-match": etag.decode()}).status == 200
    # If-Match compares strongly: a weak tag never matches.
    assert fetch(url, protocol, HELLO, {"if-match": "W/" + etag.decode()}).status == 412
    earlier = formatdate(MTIME - 60, usegmt=True)
    assert fetch(url, protocol, HELLO, {"if-unmodified-since": earlier}).status == 412
    later = formatdate(MTIME + 60, usegmt=True)
    assert fetch(url, protocol, HELLO, {"if-unmodified-since": later}).status == 200


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [("bytes=0-4", 0, 4), ("bytes=-6", len(TEXT) - 6, len(TEXT) - 1),
     ("bytes=7-", 7, len(TEXT) - 1), ("bytes=3-1000", 3, len(TEXT) - 1)],
)
def test_single_range(url: str, spec: str, first: int, last: int, protocol: str) -> None:
    response = fetch(url, protocol, HELLO, {"range": spec})
    assert response.status == 206
    assert response.body == TEXT[first : last + 1]
    assert response.header(b"content-range") == b"bytes %d-%d/%d" % (first, last, len(TEXT))
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"


def test_a_large_range_is_read_off_the_loop_intact(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/big.bin", {"range": "bytes=1000-290000"})
    assert response.status == 206
    assert response.body == BIG[1000:290001]


def parse_multipart(response: Response) -> list[tuple[dict[str, str], bytes]]:
    content_type = response.header(b"content-type")
    assert content_type is not None
    kind, _, boundary = content_type.decode().partition("; boundary=")
    assert kind == "multipart/byteranges" and boundary
    delimiter = b"--" + boundary.encode()
    body = response.body
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n")
    parts = []
    for chunk in body[: -len(delimiter) - 6].split(b"\r\n" + delimiter + b"\r\n"):
        head, _, data = chunk.removeprefix(delimiter + b"\r\n").partition(b"\r\n\r\n")
        fields = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n"))
        parts.append((fields, data))
    return parts


def test_multipart_ranges(url: str, protocol: str) -> None:
    response = fetch(url, protocol, HELLO, {"range": "bytes=0-1, 5-8, -3"})
    assert response.status == 206
    assert response.header(b"content-length") == b"%d" % len(response.body)
    parts = parse_multipart(response)
    size = len(TEXT)
    assert [data for _, data in parts] == [TEXT[0:2], TEXT[5:9], TEXT[-3:]]
    assert [fields["content-range"] for fields, _ in parts] == [
        f"bytes 0-1/{size}", f"bytes 5-8/{size}", f"bytes {size - 3}-{size - 1}/{size}"
    ]
    assert all(f["content-type"] == "text/plain; charset=utf-8" for f, _ in parts)


def test_multipart_ranges_of_a_large_file(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/big.bin", {"range": "bytes=0-99999,200000-299999"})
    parts = parse_multipart(response)
    assert [data for _, data in parts] == [BIG[:100000], BIG[200000:300000]]


def test_unsatisfiable_range_gets_416(url: str, protocol: str) -> None:
    response = fetch(url, protocol, HELLO, {"range": "bytes=1000-2000"})
    assert response.status == 416
    assert response.header(b"content-range") == b"bytes */%d" % len(TEXT)
    assert fetch(url, protocol, "/static/empty.txt", {"range": "bytes=0-"}).status == 416


@pytest.mark.parametrize(
    "spec",
    ["items=0-4", "bytes=4-1", "bytes=a-b", "bytes=5", "bytes=0-20,0-20",
     "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1))],
)
def test_ranges_the_server_ignores_get_the_whole_file(url: str, spec: str, protocol: str) -> None:
    response = fetch(url, protocol, HELLO, {"range": spec})
    assert (response.status, response.body) == (200, TEXT)


def test_head_ignores_range(url: str, protocol: str) -> None:
    response = fetch(url, protocol, HELLO, {"range": "bytes=0-4"}, method="HEAD")
    assert response.status == 200
    assert response.header(b"content-length") == b"%d" % len(TEXT)


def test_if_range(url: str, protocol: str) -> None:
    etag = fetch(url, protocol, "/static/hello.txt").header(b"etag")
    assert etag is not None
    ranged = {"range": "bytes=0-4"}
    assert fetch(url, protocol, HELLO, {**ranged, "if-range": etag.decode()}).status == 206
    assert fetch(url, protocol, HELLO, {**ranged, "if-range": '"changed"'}).status == 200
    weak = {**ranged, "if-range": "W/" + etag.decode()}
    assert fetch(url, protocol, HELLO, weak).status == 200  # If-Range compares strongly
    same = {**ranged, "if-range": formatdate(MTIME, usegmt=True)}
    assert fetch(url, protocol, "/static/hello.txt", same).status == 206
    other = {**ranged, "if-range": formatdate(MTIME - 1, usegmt=True)}
    response = fetch(url, protocol, "/static/hello.txt", other)
    assert (response.status, response.body) == (200, TEXT)


def test_parse_ranges() -> None:
    assert parse_ranges(b"bytes=0-0", 10) == [(0, 0)]
    assert parse_ranges(b"bytes=-0", 10) == []
    assert parse_ranges(b"bytes=-20", 10) == [(0, 9)]
    assert parse_ranges(b"Bytes = 1-2 , ,3-4", 10) == [(1, 2), (3, 4)]
    assert parse_ranges(b"bytes=10-", 10) == []
    assert parse_ranges(b"bytes=0-", 0) == []
    assert parse_ranges(b"bytes=\xd9\xa1-2", 10) is None  # no Unicode digits
    assert parse_ranges(b"bytes=0-5,3-9", 10) is None  # 13 bytes asked of a 10-byte file


# --------------------------------------------------------------------------- precompressed


def test_precompressed_gzip_sibling(url: str, site: Path, protocol: str) -> None:
    response = fetch(url, protocol, "/static/style.css", {"accept-encoding": "gzip"})
    assert response.status == 200
    assert response.header(b"content-encoding") == b"gzip"
    assert response.body == (site / "style.css.gz").read_bytes()
    assert gzip.decompress(response.body) == CSS
    assert response.header(b"content-type") == b"text/css; charset=utf-8"
    assert response.header(b"vary") == b"Accept-Encoding"
    identity = fetch(url, protocol, "/static/style.css")
    assert identity.body == CSS
    assert identity.header(b"content-encoding") is None
    assert identity.header(b"vary") == b"Accept-Encoding"
    assert identity.header(b"etag") != response.header(b"etag")


def test_precompressed_follows_q_values(url: str, site: Path, protocol: str) -> None:
    zst = (site / "style.css.zst").read_bytes()
    gz = (site / "style.css.gz").read_bytes()
    cases = {
        "gzip, zstd": zst,  # a tie: zstd
        "zstd;q=0.5, gzip": gz,
        "zstd, gzip;q=0.9": zst,
        "gzip;q=0, zstd": zst,
        "br, *;q=0.1": zst,
        "identity": CSS,
        "zstd;q=0, gzip;q=0": CSS,
    }
    for accept, expected in cases.items():
        response = fetch(url, protocol, "/static/style.css", {"accept-encoding": accept})
        assert response.body == expected, accept


def test_precompressed_304_and_range(url: str, site: Path, protocol: str) -> None:
    first = fetch(url, protocol, "/static/style.css", {"accept-encoding": "gzip"})
    etag = first.header(b"etag")
    assert etag is not None
    revalidate = {"accept-encoding": "gzip", "if-none-match": etag.decode()}
    again = fetch(url, protocol, "/static/style.css", revalidate)
    assert again.status == 304
    # The identity file's validator does not revalidate the gzip body.
    other = fetch(url, protocol, "/static/style.css", {"if-none-match": etag.decode()})
    assert other.status == 200
    ranged = fetch(
        url, protocol, "/static/style.css", {"accept-encoding": "gzip", "range": "bytes=0-9"}
    )
    assert ranged.status == 206
    assert ranged.header(b"content-encoding") == b"gzip"
    assert ranged.body == (site / "style.css.gz").read_bytes()[:10]


def test_without_a_sibling_the_compression_filter_compresses(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/plain.css", {"accept-encoding": "gzip"})
    assert response.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(response.body) == CSS
    etag = response.header(b"etag")
    assert etag is not None and etag.startswith(b'W/"')
    # The weakened tag still revalidates the file.
    assert fetch(url, protocol, "/static/plain.css", {"if-none-match": etag.decode()}).status == 304


def test_a_sibling_linking_out_of_the_directory_is_not_used(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/evil.css", {"accept-encoding": "gzip"})
    assert response.status == 200
    body = gzip.decompress(response.body) if response.header(b"content-encoding") else response.body
    assert body == CSS
    assert SECRET not in body


# --------------------------------------------------------------------------- options


def test_cache_control_is_configurable(site: Path, protocol: str) -> None:
    value = "public, max-age=31536000, immutable"
    with serve(Recorder(), static=[f"/static={site}"], static_cache_control=value) as url:
        assert fetch(url, protocol, "/static/hello.txt").header(b"cache-control") == value.encode()
    with serve(Recorder(), static=[f"/static={site}"], static_cache_control="off") as url:
        assert fetch(url, protocol, "/static/hello.txt").header(b"cache-control") is None


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ServerConfig(static=[f"/s={tmp_path / 'missing'}"])
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not found"):
        ServerConfig(static=[f"/s={tmp_path / 'file'}"])
    with pytest.raises(ConfigError, match="has no '='"):
        ServerConfig(static=[str(tmp_path)])
    # The environment's form: a comma-separated string.
    config = ServerConfig(static=f"/a={tmp_path}, /b/={tmp_path}")
    assert config.static == (("/a", str(tmp_path)), ("/b", str(tmp_path)))


def test_mount_at_root_and_root_path(site: Path, protocol: str) -> None:
    app = Recorder()
    with serve(app, static=[f"/={site}", f"/deep/er={site / 'sub'}"], root_path="/api") as url:
        assert fetch(url, protocol, "/hello.txt").body == TEXT
        assert fetch(url, protocol, "/deep/er/page.html").body == b"<p>page</p>\n"  # longest prefix
        assert fetch(url, protocol, "/sub/").body == b"<h1>index</h1>\n"
        assert fetch(url, protocol, "/").status == 200  # no index.html at the top: the app
        assert fetch(url, protocol, "/missing").body == b"seen /api/missing"
    assert app.paths == [b"/api/", b"/api/missing"]


# --------------------------------------------------------------------------- the app's turn


def test_missing_files_fall_through_to_the_app(url: str, app: Recorder, protocol: str) -> None:
    for target in ("/static/missing.txt", "/static/empty-dir/", "/static/hello.txt/x",
                   "/static/hello.txt/",
                   "/staticfile", "/other", "/static/%252e%252e/secret.txt"):
        response = fetch(url, protocol, target)
        assert response.status == 200, target
        assert response.body == b"seen " + target.encode(), target
        assert target.encode() in app.paths
    assert fetch(url, protocol, "/static/missing", method="POST").body == b"seen /static/missing"


def test_other_methods_on_a_file_get_405(url: str, app: Recorder, protocol: str) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = fetch(url, protocol, "/static/hello.txt", method=method)
        assert response.status == 405, method
        assert response.header(b"allow") == b"GET, HEAD"
    assert b"/static/hello.txt" not in app.paths


def test_directories(url: str, protocol: str) -> None:
    index = fetch(url, protocol, "/static/sub/")
    assert (index.status, index.body) == (200, b"<h1>index</h1>\n")
    assert index.header(b"content-type") == b"text/html; charset=utf-8"
    moved = fetch(url, protocol, "/static/sub?x=1")
    assert moved.status == 301
    assert moved.header(b"location") == b"./sub/?x=1"
    # The mount point itself is a directory too.
    top = fetch(url, protocol, "/static")
    assert (top.status, top.body) == (200, b"seen /static")  # no index.html: the app


# --------------------------------------------------------------------------- attacks

TRAVERSALS = [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..\\secret.txt",
    "/static/sub/..%5c..%5csecret.txt",
    "/static/./hello.txt",
    "/static/hello.txt%00.png",
    "/static/%00",
    "/static/outside-link.txt",
    "/static/outside-dir/secret.txt",
    "/static/outside-dir/",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused(url: str, app: Recorder, target: str, protocol: str) -> None:
    response = fetch(url, protocol, target)
    assert SECRET not in response.body
    if response.status == 400:
        return  # refused by the HTTP parser already: never reached the static files
    assert (response.status, response.body) == (404, b"Not Found"), target
    assert target.encode() not in app.paths  # never handed to the app either


def test_symlinks_inside_the_directory_are_followed(url: str, protocol: str) -> None:
    assert fetch(url, protocol, "/static/inside-link.txt").body == TEXT


def test_nul_byte_in_the_decoded_path(url: str, protocol: str) -> None:
    response = fetch(url, protocol, "/static/hello.txt%00")
    assert (response.status, response.body) == (404, b"Not Found")


def test_absolute_form_and_double_slashes(url: str, protocol: str) -> None:
    absolute = fetch(url, protocol, "http://test/static/hello.txt")
    if protocol == "h2":  # an HTTP/2 :path is origin-form only (RFC 9113 §8.3.1)
        assert absolute.status == 400
    else:
        assert absolute.body == TEXT
    assert fetch(url, protocol, "/static//hello.txt").body == TEXT
    response = fetch(url, protocol, "/static//etc/passwd")
    assert response.status == 200 and response.body == b"seen /static//etc/passwd"


# --------------------------------------------------------------------------- worker modes


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_worker_modes(site: Path, worker_type: str, protocol: str) -> None:
    options: dict[str, Any] = {"workers": 2, "worker_type": worker_type}
    with serve("tests.apps:hello", static=[f"/static={site}"], **options) as url:
        for _ in range(3):
            assert fetch(url, protocol, "/static/big.bin").body == BIG
        etag = fetch(url, protocol, "/static/hello.txt").header(b"etag")
        assert etag is not None
        assert fetch(url, protocol, HELLO, {"if-none-match": etag.decode()}).status == 304
        ranged = fetch(url, protocol, "/static/big.bin", {"range": "bytes=0-9,-10"})
        assert [data for _, data in parse_multipart(ranged)] == [BIG[:10], BIG[-10:]]
        assert fetch(url, protocol, HELLO, {"range": "bytes=100-"}).status == 416
        gz = fetch(url, protocol, "/static/style.css", {"accept-encoding": "gzip"})
        assert gzip.decompress(gz.body) == CSS
        assert fetch(url, protocol, "/static/hello.txt", method="DELETE").status == 405
        assert fetch(url, protocol, "/static/missing").body == b"Hello, world!"
        assert fetch(url, protocol, "/static/../secret.txt").status == 404
        assert fetch(url, protocol, "/static/outside-link.txt").status == 404


def test_static_responses_are_events_like_any_other(site: Path, protocol: str) -> None:
    seen: list[Any] = []
    with serve(Recorder(), static=[f"/static={site}"], event_handlers=[seen.append]) as url:
        fetch(url, protocol, "/static/hello.txt")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            type(e).__name__ == "RequestCompleted" for e in seen
        ):
            time.sleep(0.01)
    done = [e for e in seen if type(e).__name__ == "RequestCompleted"]
    assert [(e.path, e.status, e.bytes_sent) for e in done] == [
        ("/static/hello.txt", 200, len(TEXT))
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_range_request(url: str) -> None:
    result = subprocess.run(
        ["curl", "-s", "-r", "1000-1999", url + "/static/big.bin"],
        capture_output=True, timeout=10, check=True,
    )
    assert result.stdout == BIG[1000:2000]


# --------------------------------------------------------------------------- the wrapper alone


def call(app: StaticFiles, path: str, extensions: dict[str, Any] | None = None) -> list[Any]:
    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "headers": [],
        "extensions": {"http.response.pathsend": {}} if extensions is None else extensions,
    }
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    asyncio.run(app(scope, receive, send))
    return sent


def test_a_whole_file_goes_out_through_pathsend(site: Path) -> None:
    static = StaticFiles(Recorder(), [("/s", str(site))])
    sent = call(static, "/s/big.bin")
    assert sent[1] == {"type": "http.response.pathsend", "path": str(site / "big.bin")}
    # Without the extension (not a Pounce channel), the bytes are sent as body pieces.
    plain = call(static, "/s/big.bin", extensions={})
    assert b"".join(m.get("body", b"") for m in plain[1:]) == BIG
    assert not plain[-1].get("more_body", False)
    # A small file is read at once and leaves in the head's write: cheaper than sendfile.
    small = call(static, "/s/hello.txt")
    assert small[1] == {"type": "http.response.body", "body": TEXT}


def test_wrapper_passes_other_scopes_through(site: Path) -> None:
    inner = Recorder()
    static = StaticFiles(inner, [("/s", str(site))])

    async def run() -> None:
        async def receive() -> Any:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            pass

        await static({"type": "lifespan"}, receive, send)

    asyncio.run(run())  # Recorder ignores non-http scopes: reaching it is enough
    assert inner.calls == []
    with pytest.raises(NotADirectoryError):
        StaticFiles(inner, [("/s", str(site / "hello.txt"))])


def test_an_unreadable_file_gets_403(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    static = StaticFiles(Recorder(), [("/s", str(site))])

    def refuse(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    # Running as root, chmod cannot make a file unreadable: refuse the open instead.
    monkeypatch.setattr(static_module.os, "open", refuse)
    sent = call(static, "/s/hello.txt")
    assert (sent[0]["status"], sent[1]["body"]) == (403, b"Forbidden")


def test_a_cancelled_large_read_keeps_its_descriptor_until_the_thread_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    started, release = threading.Event(), threading.Event()
    real_pread, real_close = os.pread, os.close
    closed: list[int] = []

    def slow_pread(fd: int, count: int, offset: int) -> bytes:
        started.set()
        release.wait(5)
        return real_pread(fd, count, offset)

    def recording_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    async def main() -> None:
        fd = os.open(path, os.O_RDONLY)
        monkeypatch.setattr(static_module.os, "pread", slow_pread)
        monkeypatch.setattr(static_module.os, "close", recording_close)
        reader = static_module._Reader(fd, str(path))
        task = asyncio.ensure_future(reader.read(200_000, 0))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reader.close()
        assert fd not in closed  # a thread still reads from it
        release.set()
        deadline = time.monotonic() + 5
        while fd not in closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert closed == [fd]

    asyncio.run(main())


def test_off_means_the_app_itself() -> None:
    app = Recorder()
    assert static_module.static_files(app, ServerConfig()) is app


def test_a_mounted_directory_may_itself_be_a_link(site: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(site, target_is_directory=True)  # a release directory switched by a link
    static = StaticFiles(Recorder(), [("/s", str(link))])
    assert call(static, "/s/hello.txt")[1]["body"] == TEXT
    assert call(static, "/s/outside-link.txt")[1]["body"] == b"Not Found"


def test_the_cli_refuses_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show", "--static", f"/assets={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "invalid static" in err and "not found" in err and "create it or fix the path" in err
    assert main(["config", "show", "--static", "/assets"]) == 2
    assert "URL_PREFIX=DIRECTORY" in capsys.readouterr().err
