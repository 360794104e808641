"""Trailers, 103 Early Hints, pathsend and graceful shutdown over HTTP/2."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import h2.events
import pytest
from tests.protocols.http2 import h2_apps
from tests.protocols.http2.h2client import H2Client

from pounce.testing import serve, serve_in_thread

APP = h2_apps.app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(APP, access_log=False) as base:
        yield base


def test_trailers(url: str) -> None:
    with H2Client(url) as c:
        response = c.response(c.request("/trailers", headers=[(b"te", b"trailers")]))
    assert response["body"] == b"data"
    assert response["trailers"] == [(b"x-checksum", b"abc")]


def test_early_hints(url: str) -> None:
    with H2Client(url) as c:
        response = c.response(c.request("/early-hints"))
    assert response["informational"] == [
        [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]
    ]
    assert response["status"] == 200 and response["body"] == b"after hints"


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 17])
def test_pathsend_in_window_sized_pieces(url: str, tmp_path: Path, size: int) -> None:
    file = tmp_path / "data.bin"
    content = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    file.write_bytes(content)
    with H2Client(url, window=65535) as c:
        stream_id = c.request(f"/pathsend?{file}")
        response = c.response(stream_id, timeout=20)
        frames = [e for e in c.events if isinstance(e, h2.events.DataReceived)
                  and e.stream_id == stream_id]
    assert response["body"] == content
    # Never more than the client's window in flight: frames respect the frame size.
    assert all(len(e.data) <= 16384 for e in frames)


def test_graceful_shutdown_lets_streams_finish_then_goaway() -> None:
    with serve_in_thread(APP, access_log=False, timeout_graceful_shutdown=5) as running:
        c = H2Client(running.url)
        slow = c.request("/sleep", headers=[])  # sleeps 0.5 s
        time.sleep(0.1)
        stopper = threading.Thread(target=running.server.shutdown)
        stopper.start()
        response = c.response(slow)
        assert response["status"] == 200 and response["body"] == b"slept"
        event = c.goaway()
        assert event.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert event.last_stream_id == slow
        c.read_until_closed()
        assert c.closed
        stopper.join(10)
        c.close()


def test_new_stream_after_shutdown_began_is_refused() -> None:
    with serve_in_thread(APP, access_log=False, timeout_graceful_shutdown=10) as running:
        c = H2Client(running.url)
        slow = c.request("/sleep?2", headers=[])
        time.sleep(0.1)
        stopper = threading.Thread(target=running.server.shutdown)
        stopper.start()
        # Streams opened once the drain began are refused; until it reaches this worker
        # (a moment on a busy machine) they are still served.
        deadline = time.monotonic() + 5
        refused = False
        while not refused and time.monotonic() < deadline:
            late = c.request("/")
            refused = c.response(late)["reset"] == h2.errors.ErrorCodes.REFUSED_STREAM
            time.sleep(0.05)
        assert refused
        assert c.response(slow, timeout=10)["status"] == 200
        c.read_until_closed()
        stopper.join(15)
        c.close()


def test_pipeline_features_apply_to_streams() -> None:
    """Compression (a filter), health probes (admission) and Server-Timing, unchanged."""
    with serve(
        APP, access_log=False, health_path="/healthz", server_timing=True, compression_min_size=1
    ) as base, H2Client(base) as c:
        probe = c.response(c.request("/healthz"))
        assert (probe["status"], probe["body"]) == (200, b"ok")
        compressed = c.response(
            c.request("/echo", "POST", headers=[(b"accept-encoding", b"gzip")], body=b"x" * 20000)
        )
        fields = dict(compressed["headers"])
        assert fields[b"content-encoding"] == b"gzip"
        import gzip

        assert gzip.decompress(compressed["body"]) == b"x" * 20000
        timed = dict(c.response(c.request("/"))["headers"])
        assert timed[b"server-timing"].startswith(b"app;dur=")


def test_request_events_say_http_2() -> None:
    """The access log and metrics read RequestCompleted: one per stream, version "2"."""
    from pounce.pipeline.events import RequestCompleted

    seen: list[RequestCompleted] = []
    done = threading.Event()

    def handler(event: object) -> None:
        if isinstance(event, RequestCompleted):
            seen.append(event)
            done.set()

    with serve_in_thread(APP, access_log=False, event_handlers=[handler]) as running:
        with H2Client(running.url) as c:
            c.response(c.request("/logged"))
        assert done.wait(5)
    assert (seen[0].http_version, seen[0].path, seen[0].status) == ("2", "/logged", 200)


def test_body_shorter_than_content_length_resets_the_stream(url: str) -> None:
    with H2Client(url) as c:
        response = c.response(c.request("/short"))
        assert response["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert c.response(c.request("/"))["status"] == 200


def test_rolling_reload_finishes_streams_then_goaway() -> None:
    with serve_in_thread(
        "tests.protocols.http2.h2_apps:app", access_log=False, workers=1,
        worker_type="thread", timeout_graceful_shutdown=5,
    ) as running:
        c = H2Client(running.url)
        slow = c.request("/sleep", headers=[])
        time.sleep(0.1)
        running.server.reload()
        response = c.response(slow, timeout=10)
        assert response["status"] == 200
        event = c.goaway(timeout=10)
        assert event.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert event.last_stream_id == slow
        c.close()
        with H2Client(running.url) as fresh:
            assert fresh.response(fresh.request("/"))["status"] == 200
