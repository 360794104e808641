"""FastAPI served by Pounce (lifespan included)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import StreamingResponse
from tests.frameworks import common

from pounce.testing import serve

lifespan_events: list[str] = []


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    lifespan_events.append("startup")
    yield {"framework": "fastapi"}
    lifespan_events.append("shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/json")
async def json_endpoint(q: str | None = None) -> dict[str, Any]:
    return {"framework": "fastapi", "items": [1, 2, 3], "query": q}


@app.post("/form")
async def form_endpoint(
    name: Annotated[str, Form()],
    tags: Annotated[list[str], Form()],
    file: UploadFile | None = None,
) -> dict[str, Any]:
    text = (await file.read()).decode() if file is not None else None
    return {"name": name, "tags": tags, "file": text,
            "filename": file.filename if file is not None else None}


@app.get("/stream")
async def stream_endpoint() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in common.STREAM_CHUNKS:
            yield chunk
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/sync")
def sync_endpoint() -> dict[str, str]:  # runs in FastAPI's thread pool
    return {"sync": "yes"}


def test_json_and_lifespan() -> None:
    lifespan_events.clear()
    with serve(app) as url:
        assert lifespan_events == ["startup"]
        common.check_json(url, "fastapi")
        common.check_keep_alive(url)
        with common.client(url) as http:
            assert http.get("/sync").json() == {"sync": "yes"}
            assert http.get("/missing").status_code == 404
    assert lifespan_events == ["startup", "shutdown"]


def test_forms() -> None:
    with serve(app) as url:
        common.check_urlencoded_form(url)
        common.check_multipart_form(url)
        with common.client(url) as http:
            assert http.post("/form", data={}).status_code == 422  # FastAPI's own validation


def test_streaming() -> None:
    with serve(app) as url:
        common.check_streaming(url)
