"""A minimal Django URLconf for tests/frameworks/test_django.py (settings are in that file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from tests.frameworks import common


def json_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"framework": "django", "items": [1, 2, 3], "query": request.GET.get("q")})


def form_view(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    upload = request.FILES.get("file")
    return JsonResponse(
        {
            "name": request.POST.get("name"),
            "tags": request.POST.getlist("tags"),
            "file": upload.read().decode() if upload is not None else None,
            "filename": upload.name if upload is not None else None,
        }
    )


async def stream_view(request: HttpRequest) -> HttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in common.STREAM_CHUNKS:
            yield chunk
            await asyncio.sleep(0)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("json", json_view),
    path("form", form_view),
    path("stream", stream_view),
]
