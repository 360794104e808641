"""asyncio's own messages go through Pounce's handlers and formats."""

from __future__ import annotations

import asyncio
import gc
import io
import json

from pounce.logs import configure_logging


def _boom() -> None:
    raise RuntimeError("broken callback")


async def _failing_task() -> None:
    raise ValueError("nobody awaited me")


def _provoke_asyncio_errors() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(_boom)  # "Exception in callback ..."
        task = loop.create_task(_failing_task())
        await asyncio.sleep(0.01)
        assert task.done()
        del task  # "Task exception was never retrieved" when collected

    asyncio.run(main())
    gc.collect()


def test_asyncio_errors_are_json_lines_under_log_format_json() -> None:
    err, out = io.StringIO(), io.StringIO()
    configure_logging(log_format="json", error_stream=err, access_stream=out)
    _provoke_asyncio_errors()
    lines = err.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {r["logger"] for r in records} == {"asyncio"}
    messages = " ".join(r["message"] for r in records)
    assert "Exception in callback" in messages
    assert "Task exception was never retrieved" in messages
    assert any("broken callback" in r.get("exc_info", "") for r in records)
    assert any("nobody awaited me" in r.get("exc_info", "") for r in records)
    assert out.getvalue() == ""


def test_asyncio_errors_use_the_text_format() -> None:
    err, out = io.StringIO(), io.StringIO()
    configure_logging(log_format="text", use_colors=False, error_stream=err, access_stream=out)
    _provoke_asyncio_errors()
    assert err.getvalue().startswith("ERROR:    Exception in callback")
