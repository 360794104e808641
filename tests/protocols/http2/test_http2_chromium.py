"""A real browser: headless Chromium loads a page over HTTPS, sees h2, and echoes on a WebSocket.

The page reports back to the server (``/report``): the protocol of its own navigation
(``nextHopProtocol``) and what came back on the WebSocket; the app also records the HTTP
version each WebSocket scope arrived with.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import trustme

from pounce.testing import serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

PAGE = b"""<!doctype html><html><body><script>
const proto = performance.getEntriesByType("navigation")[0].nextHopProtocol;
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("ping over h2");
ws.onmessage = (event) => {
  fetch("/report?proto=" + encodeURIComponent(proto) + "&echo=" + encodeURIComponent(event.data));
  ws.close();
};
ws.onerror = () => fetch("/report?proto=" + encodeURIComponent(proto) + "&echo=ERROR");
</script></body></html>"""

REPORT: dict[str, Any] = {}
REPORTED = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        REPORT["ws_http_version"] = scope["http_version"]
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    if scope["type"] != "http":
        return
    if scope["path"] == "/report":
        query = parse_qs(scope["query_string"].decode())
        REPORT["proto"] = query.get("proto", [""])[0]
        REPORT["echo"] = query.get("echo", [""])[0]
        REPORT["report_http_version"] = scope["http_version"]
        REPORTED.set()
        body, kind = b"ok", b"text/plain"
    elif scope["path"] == "/":
        body, kind = PAGE, b"text/html"
    else:
        body, kind = b"", b"text/plain"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def test_chromium_loads_over_h2_and_echoes_on_a_websocket(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    REPORT.clear()
    REPORTED.clear()
    with serve(app, access_log=False, ssl_certfile=str(cert)) as base:
        url = base.replace("http://", "https://") + "/"
        profile = tempfile.mkdtemp(prefix="pounce-chromium-", dir=tmp_path)
        assert CHROMIUM is not None
        browser = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                # The throwaway CA is not in the browser's store.
                "--ignore-certificate-errors", f"--user-data-dir={profile}",
                "--remote-debugging-port=0", url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            reported = REPORTED.wait(60)
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(10)
        time.sleep(0.1)
    assert reported, "Chromium never reported back"
    assert REPORT["proto"] == "h2"
    assert REPORT["report_http_version"] == "2"
    assert REPORT["echo"] == "ping over h2"
    assert REPORT["ws_http_version"] == "2"  # RFC 8441: the WebSocket rode the h2 connection
