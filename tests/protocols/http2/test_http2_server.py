"""HTTP/2 through real sockets: real clients (httpx, curl, h2load) and a raw h2 client.

Set-up (ALPN over TLS, h2c by prior knowledge and by Upgrade), the ASGI mapping of a stream,
flow control both ways, disconnects, limits and timeouts, and ``--http`` selection.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import h2.events
import httpx
import pytest
import trustme
from tests.helpers import address
from tests.protocols.http2 import h2_apps
from tests.protocols.http2.h2client import H2Client

from pounce.testing import serve

APP = h2_apps.app


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, trustme.CA]:
    directory = tmp_path_factory.mktemp("h2certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert = directory / "server.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, ca_file, ca


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(APP, access_log=False) as base:
        yield base


@pytest.fixture(scope="module")
def tls_url(certs: tuple[Path, Path, trustme.CA]) -> Iterator[str]:
    with serve(APP, access_log=False, ssl_certfile=str(certs[0])) as base:
        yield base


def trusting(certs: tuple[Path, Path, trustme.CA]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs[1]))


def client_context(certs: tuple[Path, Path, trustme.CA], alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs[1]))
    context.set_alpn_protocols(alpn)
    return context


# -- set-up --------------------------------------------------------------------------------------


def _first_reply(url: str, data: bytes) -> bytes:
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_a_port_serving_both_answers_anything_but_the_preface_as_http1(url: str) -> None:
    """Only the exact HTTP/2 preface switches a cleartext connection to HTTP/2. Anything else,
    a broken preface included, cannot be told apart from a broken HTTP/1.x client, and a 400
    is what that client can read (h2spec's invalid-preface case needs ``--http h2`` or TLS)."""
    assert _first_reply(url, b"INVALID CONNECTION PREFACE\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )
    assert _first_reply(url, b"GET\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _first_reply(url, b"GET / HTTP/1.1 x\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _first_reply(url, b"GET /\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _first_reply(url, b"GET /" + b"a" * 20_000).startswith(b"HTTP/1.1 414 ")


def test_prior_knowledge_with_httpx(url: str) -> None:
    with httpx.Client(http1=False, http2=True) as client:
        response = client.get(f"{url}/scope?a=1")
        assert response.http_version == "HTTP/2"
        scope = json.loads(response.content)
    assert scope["http_version"] == "2"
    assert scope["method"] == "GET"
    assert scope["query_string"] == "a=1"
    # :authority becomes the host header; no pseudo-header reaches the app.
    names = [name for name, _ in scope["headers"]]
    assert "host" in names and not any(name.startswith(":") for name in names)
    assert {"http.response.trailers", "http.response.early_hint",
            "http.response.pathsend"} <= set(scope["extensions"])


def test_alpn_h2_over_tls_and_http1_still_served(
    tls_url: str, certs: tuple[Path, Path, trustme.CA]
) -> None:
    with httpx.Client(http2=True, verify=trusting(certs)) as client:
        response = client.get(f"{tls_url}/scope")
        assert response.http_version == "HTTP/2"
        assert json.loads(response.content)["scheme"] == "https"
    with httpx.Client(verify=trusting(certs)) as client:
        assert client.get(f"{tls_url}/").http_version == "HTTP/1.1"
    with socket.create_connection(address(tls_url)) as raw:
        tls = client_context(certs, ["h2", "http/1.1"]).wrap_socket(
            raw, server_hostname="127.0.0.1"
        )
        assert tls.selected_alpn_protocol() == "h2"
        tls.close()


def test_request_body_and_concurrent_streams(url: str) -> None:
    with httpx.Client(http1=False, http2=True) as client:
        assert client.post(f"{url}/echo", content=b"a" * 300_000).content == b"a" * 300_000
    with H2Client(url) as h2c:
        ids = [h2c.request("/echo", "POST", body=b"%d" % i * 100) for i in range(20)]
        for i, stream_id in enumerate(ids):
            assert h2c.response(stream_id)["body"] == b"%d" % i * 100


def test_upgrade_h2c_answers_the_request_as_stream_1(url: str) -> None:
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(
            b"GET /scope HTTP/1.1\r\nhost: test\r\nconnection: Upgrade, HTTP2-Settings\r\n"
            b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 101 ")
        import h2.config
        import h2.connection

        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_upgrade_connection()
        sock.sendall(conn.data_to_send())
        rest = head.split(b"\r\n\r\n", 1)[1]
        events = conn.receive_data(rest) if rest else []
        body = b""
        ended = False
        while not ended:
            for event in events:
                if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    ended = True
            if not ended:
                events = conn.receive_data(sock.recv(65536))
                sock.sendall(conn.data_to_send())
    scope = json.loads(body)
    assert scope["http_version"] == "2"
    # The hop-by-hop fields of the HTTP/1.1 request do not reach the app.
    names = {name for name, _ in scope["headers"]}
    assert "http2-settings" not in names and "upgrade" not in names


@pytest.mark.parametrize(
    "settings",
    [b"!!!not base64***", b"AAMAAABkAAQ", b"AASAAAAA"],  # garbage, torn, window over 2^31-1
)
def test_a_bad_http2_settings_value_is_answered_over_http1(url: str, settings: bytes) -> None:
    """Checked before the 101: the request gets its answer over HTTP/1.1, not a cut."""
    reply = _first_reply(
        url,
        b"GET / HTTP/1.1\r\nhost: test\r\nconnection: Upgrade, HTTP2-Settings, close\r\n"
        b"upgrade: h2c\r\nhttp2-settings: " + settings + b"\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]


# -- real clients --------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_prior_knowledge_upgrade_and_tls(
    url: str, tls_url: str, certs: tuple[Path, Path, trustme.CA]
) -> None:
    def curl(*args: str) -> str:
        result = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", *args],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return result.stdout

    assert curl("--http2-prior-knowledge", f"{url}/") == "2 200"
    assert curl("--http2", f"{url}/") == "2 200"  # Upgrade: h2c
    assert curl("--http2", "--cacert", str(certs[1]), f"{tls_url}/") == "2 200"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_many_streams(url: str, tls_url: str) -> None:
    for target in (url, tls_url):
        result = subprocess.run(
            ["h2load", "-n", "2000", "-c", "4", "-m", "25", f"{target}/"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        assert "2000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout


# -- flow control ------------------------------------------------------------------------------


def test_request_body_window_reopens_only_as_the_app_reads() -> None:
    with serve(APP, access_log=False, h2_initial_window_size=65536) as base, H2Client(base) as c:
        c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        stream_id = c.request("/slow-reader", "POST", end=False)
        sent = 0
        while c.conn.local_flow_control_window(stream_id) > 0:
            n = min(16384, c.conn.local_flow_control_window(stream_id))
            c.conn.send_data(stream_id, b"x" * n)
            c.flush()
            sent += n
        assert sent == 65536
        # The app reads nothing: no window comes back, whatever the wait.
        with pytest.raises(TimeoutError):
            c.wait_for(
                lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == stream_id,
                timeout=0.5,
            )
        deadline = time.monotonic() + 5
        while "slow-reader" not in h2_apps.SEEN and time.monotonic() < deadline:
            time.sleep(0.01)
        event, loop = h2_apps.SEEN["slow-reader"]
        loop.call_soon_threadsafe(event.set)
        c.wait_for(lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == stream_id)
        c.conn.send_data(stream_id, b"y" * 100, end_stream=True)
        c.flush()
        assert c.response(stream_id)["body"] == b"65636"


def test_response_waits_for_window_and_large_streams_interleave(url: str) -> None:
    size = 1024 * 1024
    with H2Client(url, window=65535) as c:
        first = c.request(f"/big/{size}")
        second = c.request(f"/big/{size}")
        order: list[int] = []
        received = {first: 0, second: 0}
        ended: set[int] = set()
        deadline = time.monotonic() + 20
        while len(ended) < 2 and time.monotonic() < deadline:
            c.read_once()
            for event in c.events:
                if isinstance(event, h2.events.DataReceived):
                    received[event.stream_id] += len(event.data)
                    order.append(event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            c.events.clear()
            c.flush()
        assert received == {first: size, second: size}
        # Fair turns: neither stream got the whole first half of the connection's data.
        half = order[: len(order) // 2]
        assert first in half and second in half


def test_reset_stream_gives_the_app_a_disconnect(url: str) -> None:
    h2_apps.SEEN.pop("disconnect", None)
    with H2Client(url) as c:
        stream_id = c.request("/wait-disconnect", "POST", end=False)
        time.sleep(0.2)
        c.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        deadline = time.monotonic() + 5
        while "disconnect" not in h2_apps.SEEN and time.monotonic() < deadline:
            time.sleep(0.01)
    kind, waited = h2_apps.SEEN["disconnect"]
    assert kind == "http.disconnect"
    assert waited < 1.5


def test_connection_loss_gives_every_stream_a_disconnect(url: str) -> None:
    h2_apps.SEEN.pop("disconnect", None)
    c = H2Client(url)
    c.request("/wait-disconnect", "POST", end=False)
    time.sleep(0.2)
    c.close()
    deadline = time.monotonic() + 5
    while "disconnect" not in h2_apps.SEEN and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h2_apps.SEEN["disconnect"][0] == "http.disconnect"


# -- limits and timeouts -------------------------------------------------------------------------


def test_limit_concurrency_counts_streams() -> None:
    with serve(APP, access_log=False, limit_concurrency=2) as base, H2Client(base) as c:
        slow = [c.request("/sleep?2", headers=[]) for _ in range(2)]
        time.sleep(0.2)
        third = c.request("/")
        assert c.response(third)["status"] == 503
        assert all(c.response(s)["status"] == 200 for s in slow)


def test_idle_connection_closes_after_keep_alive_timeout() -> None:
    with serve(APP, access_log=False, timeout_keep_alive=0.3) as base, H2Client(base) as c:
        assert c.response(c.request("/"))["status"] == 200
        start = time.monotonic()
        event = c.goaway(timeout=5)
        assert event.error_code == h2.errors.ErrorCodes.NO_ERROR
        c.read_until_closed()
        assert c.closed and time.monotonic() - start < 3


def test_a_new_connection_waits_for_its_first_stream_as_for_a_first_request_head() -> None:
    """Keep-alive is for used connections: --timeout-keep-alive 0 does not close a new one
    before its first HEADERS, which a client may send in a packet after its preface."""
    with serve(
        APP, access_log=False, timeout_keep_alive=0, timeout_request_header=0.5
    ) as base:
        with H2Client(base) as c:  # the preface and SETTINGS went out on their own
            time.sleep(0.2)
            assert c.response(c.request("/"))["status"] == 200
        with H2Client(base) as idle:  # and one that never opens a stream is closed
            start = time.monotonic()
            assert idle.goaway(timeout=5).error_code == h2.errors.ErrorCodes.NO_ERROR
            assert 0.4 <= time.monotonic() - start < 3


def test_max_requests_per_connection_sends_goaway() -> None:
    with serve(APP, access_log=False, h2_max_requests=3) as base, H2Client(base) as c:
        ids = [c.request("/") for _ in range(3)]
        assert all(c.response(i)["status"] == 200 for i in ids)
        event = c.goaway()
        assert event.last_stream_id == ids[-1]
        c.read_until_closed()
        assert c.closed


def test_settings_from_config() -> None:
    with serve(
        APP, access_log=False, h2_max_concurrent_streams=7, h2_initial_window_size=100_000,
        h2_max_frame_size=32768, h2_max_header_list_size=8192,
    ) as base, H2Client(base) as c:
        event = c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        values = {int(k): v.new_value for k, v in event.changed_settings.items()}
    assert values[0x3] == 7
    assert values[0x4] == 100_000
    assert values[0x5] == 32768
    assert values[0x6] == 8192


# -- --http and the extra ----------------------------------------------------------------------


def test_http_fast_turns_http2_off_with_one_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    with serve(APP, access_log=False, http="fast") as base:
        for _ in range(2):
            with socket.create_connection(address(base), timeout=5) as sock:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                assert sock.recv(100) == b""  # closed, no HTTP/1.1 answer
    lines = [r.getMessage() for r in caplog.records if "HTTP/2 is off" in r.getMessage()]
    assert len(lines) == 1
    assert "--http auto" in lines[0]


def test_without_the_extra_a_preface_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pounce.protocols.http2 as support

    monkeypatch.setattr(support, "http2_installed", lambda: False)
    with serve(APP, access_log=False) as base:
        with socket.create_connection(address(base), timeout=5) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert sock.recv(100) == b""
        with httpx.Client() as client:
            assert client.get(f"{base}/").status_code == 200
    assert any("pip install 'pounce[h2]'" in r.getMessage() for r in caplog.records)


def test_http_h2_serves_http2_only(certs: tuple[Path, Path, trustme.CA]) -> None:
    with serve(APP, access_log=False, http="h2", ssl_certfile=str(certs[0])) as base:
        with httpx.Client(http2=True, verify=trusting(certs)) as client:
            assert client.get(f"{base}/").http_version == "HTTP/2"
        with socket.create_connection(address(base)) as raw:
            tls = client_context(certs, ["h2", "http/1.1"]).wrap_socket(
                raw, server_hostname="127.0.0.1"
            )
            assert tls.selected_alpn_protocol() == "h2"
            tls.close()


def test_check_and_startup_log_name_the_protocols() -> None:
    from pounce.config import ServerConfig
    from pounce.protocols.http2 import describe_protocols

    assert "HTTP/1.1 (built-in parser) and HTTP/2" in describe_protocols(
        ServerConfig(app="x:y")
    )
    assert "HTTP/2 off (use --http auto" in describe_protocols(ServerConfig(app="x:y", http="h11"))
    assert "HTTP/2 only" in describe_protocols(ServerConfig(app="x:y", http="h2"))


def test_thread_and_process_workers_serve_http2() -> None:
    for worker_type in ("thread", "process"):
        with serve(
            "tests.protocols.http2.h2_apps:app", access_log=False, workers=2,
            worker_type=worker_type,
        ) as base, httpx.Client(http1=False, http2=True) as client:
            for _ in range(4):
                assert client.get(f"{base}/").content == b"Hello, world!"


def test_other_connections_keep_being_served_while_one_misbehaves(url: str) -> None:
    bad = H2Client(url, start=False)
    bad.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\x00\x00\x00\x00\x01junk")
    with httpx.Client(http1=False, http2=True) as client:
        assert client.get(f"{url}/").status_code == 200
    bad.close()


def test_stalled_request_body_is_answered_408() -> None:
    with serve(APP, access_log=False, timeout_request_body=0.3) as base, H2Client(base) as c:
        stream_id = c.request("/echo", "POST", body=b"part", end=False)
        start = time.monotonic()
        response = c.response(stream_id)
        assert response["status"] == 408
        assert time.monotonic() - start < 3
        # The connection carries on.
        assert c.response(c.request("/"))["status"] == 200


def test_limit_request_body() -> None:
    with serve(APP, access_log=False, limit_request_body=1000) as base, H2Client(base) as c:
        # Announced by Content-Length: refused before the body is read.
        announced = c.request("/echo", "POST", headers=[(b"content-length", b"5000")], end=False)
        assert c.response(announced)["status"] == 413
        # Not announced: refused once it passes the limit.
        streamed = c.request("/echo", "POST", body=b"x" * 3000)
        assert c.response(streamed)["status"] == 413
        within = c.request("/echo", "POST", body=b"y" * 1000)
        assert c.response(within)["body"] == b"y" * 1000


def test_expect_100_continue_is_answered_when_the_app_reads(url: str) -> None:
    """RFC 9110 §10.1.1 over HTTP/2: the 100 comes as an informational HEADERS frame, only
    once the app asks for the body; the client then sends it."""
    with H2Client(url) as c:
        stream_id = c.request("/echo", "POST", headers=[(b"expect", b"100-continue")], end=False)
        informational = c.wait_for(
            lambda e: isinstance(e, h2.events.InformationalResponseReceived)
            and e.stream_id == stream_id
        )
        assert dict(informational.headers)[b":status"] == b"100"
        c.conn.send_data(stream_id, b"the body", end_stream=True)
        c.flush()
        response = c.response(stream_id)
    assert response["status"] == 200 and response["body"] == b"the body"
