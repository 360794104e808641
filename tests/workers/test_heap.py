"""The start-up heap is frozen out of full GC passes, thawed for reloads and at shutdown."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.workers.support import get, running, wait_for
from tests.workers.test_reload import write_app

from pounce.workers.heap import HeapFreezer


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def freeze_count_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with this process's number of frozen objects."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = str(gc.get_freeze_count()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_freezer_freezes_and_thaws() -> None:
    freezer = HeapFreezer(enabled=True)
    freezer.freeze()
    assert freezer.frozen
    assert gc.get_freeze_count() > 0
    freezer.thaw()
    assert not freezer.frozen
    assert gc.get_freeze_count() == 0


def test_disabled_freezer_leaves_the_heap_alone() -> None:
    freezer = HeapFreezer(enabled=False)
    freezer.freeze()
    assert not freezer.frozen
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_workers_serve_with_a_frozen_heap(kind: str) -> None:
    with running(freeze_count_app, gc_freeze=True, worker_type=kind) as (_, address):
        status, body = get(address)
        assert status == 200
        assert int(body) > 0
    # The server gives the process its normal collector back when it stops.
    assert gc.get_freeze_count() == 0


def test_no_gc_freeze_means_nothing_is_frozen() -> None:
    with running(freeze_count_app, gc_freeze=False, worker_type="process") as (_, address):
        assert get(address) == (200, b"0")


def test_reload_lets_the_old_generation_be_collected(tmp_path: Path) -> None:
    """The old app must not stay frozen for ever: a reload thaws, and freezes again after."""
    module = f"heap_app_{id(tmp_path)}"
    source = tmp_path / f"{module}.py"
    write_app(source, "v0")
    with running(f"{module}:app", app_dir=str(tmp_path), gc_freeze=True) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        assert gc.get_freeze_count() > 0
        old_app = weakref.ref(supervisor._app)
        write_app(source, "v1")
        server.reload()
        assert wait_for(lambda: supervisor.reloads == 1, 20)
        assert get(address) == (200, b"v1")
        # Refrozen once the old generation has drained; its app was collected first.
        assert wait_for(lambda: supervisor._heap.frozen and not supervisor.draining, 20)
        assert old_app() is None
        assert gc.get_freeze_count() > 0


def test_a_recycled_thread_worker_leaves_nothing_frozen_behind() -> None:
    """Its event loop was alive at freeze time; once it is garbage it must be collected."""
    with running(
        freeze_count_app, gc_freeze=True, worker_type="thread", loop="asyncio",
        limit_max_requests=3,
    ) as (server, address):
        supervisor = server._supervisor
        assert supervisor is not None
        worker = supervisor.workers[0]._worker  # type: ignore[attr-defined]
        assert worker is not None and worker.loop is not None
        first_loop = weakref.ref(worker.loop)
        del worker
        for _ in range(4):
            assert get(address)[0] == 200
        assert wait_for(lambda: supervisor.recycles >= 1, 20)
        assert wait_for(
            lambda: supervisor._heap.frozen and not supervisor.draining and first_loop() is None,
            20,
        )
        assert get(address)[0] == 200
