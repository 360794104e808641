"""Django's ASGI handler served by Pounce, with settings configured in-process."""

from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="pounce-tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.frameworks.django_urls",
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        USE_TZ=True,
        DATABASES={},
        DATA_UPLOAD_MAX_MEMORY_SIZE=10 * 1024 * 1024,
        FILE_UPLOAD_MAX_MEMORY_SIZE=10 * 1024 * 1024,
    )
    django.setup()

from django.core.handlers.asgi import ASGIHandler
from tests.frameworks import common

from pounce.testing import serve

app = ASGIHandler()


def test_json() -> None:
    with serve(app) as url:
        common.check_json(url, "django")
        common.check_keep_alive(url)


def test_forms() -> None:
    with serve(app) as url:
        common.check_urlencoded_form(url)
        common.check_multipart_form(url)


def test_streaming() -> None:
    with serve(app) as url:
        common.check_streaming(url)
