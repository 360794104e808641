"""Starlette served by Pounce."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from tests.frameworks import common

from pounce.testing import serve


async def json_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(
        {"framework": "starlette", "items": [1, 2, 3], "query": request.query_params.get("q")}
    )


async def form_endpoint(request: Request) -> JSONResponse:
    async with request.form() as form:
        upload = form.get("file")
        text = filename = None
        if isinstance(upload, UploadFile):
            text = (await upload.read()).decode()
            filename = upload.filename
        return JSONResponse(
            {"name": form.get("name"), "tags": form.getlist("tags"), "file": text,
             "filename": filename}
        )


async def stream_endpoint(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in common.STREAM_CHUNKS:
            yield chunk
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


app = Starlette(
    routes=[
        Route("/json", json_endpoint),
        Route("/form", form_endpoint, methods=["POST"]),
        Route("/stream", stream_endpoint),
    ]
)


def test_json() -> None:
    with serve(app) as url:
        common.check_json(url, "starlette")
        common.check_keep_alive(url)


def test_forms() -> None:
    with serve(app) as url:
        common.check_urlencoded_form(url)
        common.check_multipart_form(url)


def test_streaming() -> None:
    with serve(app) as url:
        common.check_streaming(url)


def test_forms_and_streaming_with_the_h11_parser() -> None:
    with serve(app, http="h11") as url:
        common.check_multipart_form(url)
        common.check_streaming(url)
