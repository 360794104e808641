"""What every framework test checks, the same way for each framework.

Each framework app serves:

* ``GET /json`` -> ``{"framework": NAME, "items": [1, 2, 3], "query": <q parameter>}``
* ``POST /form`` (urlencoded or multipart) -> JSON ``{"name": ..., "tags": [...],
  "file": <uploaded file's text or null>, "filename": ...}``
* ``GET /stream`` -> ``STREAM_CHUNKS`` streamed one by one (no Content-Length)
"""

from __future__ import annotations

import httpx

STREAM_CHUNKS = [b"chunk-%d;" % i for i in range(5)]
UPLOAD = "line one\nline two \u00e9\n"


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=10.0)


def check_json(url: str, framework: str) -> None:
    with client(url) as http:
        response = http.get("/json", params={"q": "caf\u00e9 & more"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    expected = {"framework": framework, "items": [1, 2, 3], "query": "caf\u00e9 & more"}
    assert response.json() == expected
    assert response.headers["server"] == "pounce"


def check_urlencoded_form(url: str) -> None:
    with client(url) as http:
        response = http.post("/form", data={"name": "Zo\u00eb & co", "tags": ["a", "b=c"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "Zo\u00eb & co", "tags": ["a", "b=c"], "file": None,
                               "filename": None}


def check_multipart_form(url: str) -> None:
    big = UPLOAD * 20_000  # ~400 KB: more than one read, more than the body high-water mark
    with client(url) as http:
        response = http.post(
            "/form",
            data={"name": "multi", "tags": ["x"]},
            files={"file": ("notes.txt", big.encode(), "text/plain")},
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "multi", "tags": ["x"], "file": big,
                               "filename": "notes.txt"}


def check_streaming(url: str) -> None:
    with client(url) as http, http.stream("GET", "/stream") as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        # Decoded: httpx accepts gzip, so a text response comes compressed (by default).
        body = b"".join(response.iter_bytes())
    assert body == b"".join(STREAM_CHUNKS)


def check_keep_alive(url: str) -> None:
    with client(url) as http:
        for _ in range(3):
            assert http.get("/json").status_code == 200
