"""The event bus: subscriptions by kind, removal, failing handlers; events are frozen."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.events import (
    EVENT_TYPES,
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    RequestCompleted,
    RequestRejected,
    RequestStarted,
)

INFO = ConnectionInfo(client=("127.0.0.1", 5000), server=("127.0.0.1", 8000))
OPENED = ConnectionOpened(connection=INFO)
STARTED = RequestStarted(client=None, method="GET", path="/", http_version="1.1",
                         scheme="http")
REJECTED = RequestRejected(client=None, status=503, reason="concurrency limit")


def test_an_empty_bus_is_inactive() -> None:
    bus = EventBus()
    assert not bus.active
    assert not any(bus.wants(kind) for kind in EVENT_TYPES)
    bus.emit(STARTED)  # nobody listens: nothing happens


def test_handlers_given_at_construction_get_every_kind() -> None:
    seen: list[Any] = []
    bus = EventBus([seen.append])
    assert bus.active
    assert all(bus.wants(kind) for kind in EVENT_TYPES)
    bus.emit(OPENED)
    bus.emit(STARTED)
    assert seen == [OPENED, STARTED]


def test_subscribe_by_kind() -> None:
    starts: list[Any] = []
    rejections: list[Any] = []
    bus = EventBus()
    bus.subscribe(starts.append, kinds=[RequestStarted])
    bus.subscribe(rejections.append, kinds=(RequestRejected, RequestStarted))
    assert bus.wants(RequestStarted)
    assert bus.wants(RequestRejected)
    assert not bus.wants(RequestCompleted)
    bus.emit(STARTED)
    bus.emit(REJECTED)
    bus.emit(OPENED)
    assert starts == [STARTED]
    assert rejections == [STARTED, REJECTED]  # in subscription order, per event


def test_unsubscribe_removes_only_that_handler() -> None:
    kept: list[Any] = []
    dropped: list[Any] = []
    bus = EventBus()
    bus.subscribe(kept.append, kinds=[RequestStarted])
    unsubscribe = bus.subscribe(dropped.append, kinds=[RequestStarted, RequestRejected])
    unsubscribe()
    assert bus.active
    assert bus.wants(RequestStarted)
    assert not bus.wants(RequestRejected)  # its last handler left
    bus.emit(STARTED)
    bus.emit(REJECTED)
    assert kept == [STARTED]
    assert dropped == []


def test_the_last_unsubscribe_makes_the_bus_inactive() -> None:
    bus = EventBus()
    first = bus.subscribe(lambda event: None, kinds=[RequestStarted])
    second = bus.subscribe(lambda event: None)
    first()
    assert bus.active
    second()
    assert not bus.active
    assert not bus.wants(RequestStarted)


def test_unknown_kind_is_refused() -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match="not a Pounce event type"):
        bus.subscribe(lambda event: None, kinds=[dict])
    with pytest.raises(TypeError):
        bus.subscribe(lambda event: None, kinds=[RequestStarted, str])


def test_a_failing_handler_is_logged_once_and_keeps_receiving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Any] = []
    after: list[Any] = []

    def broken(event: Any) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    bus = EventBus()
    bus.subscribe(broken)
    bus.subscribe(after.append)
    with caplog.at_level(logging.ERROR, "pounce.error"):
        bus.emit(STARTED)
        bus.emit(REJECTED)
        bus.emit(STARTED)
    assert calls == [STARTED, REJECTED, STARTED]
    assert after == [STARTED, REJECTED, STARTED]  # a broken handler does not stop the others
    failures = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert len(failures) == 1
    assert "RequestStarted" in failures[0].getMessage()
    assert failures[0].exc_info is not None


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (OPENED, "connection"),
        (ConnectionClosed(connection=INFO, reason="client closed", requests=1), "requests"),
        (STARTED, "path"),
        (REJECTED, "status"),
        (RequestCompleted(client=None, method="GET", path="/", query_string=b"",
                          http_version="1.1", status=200, bytes_sent=0, duration=0.0,
                          request_headers=[], response_headers=None, scheme="http"), "status"),
    ],
)
def test_events_are_frozen(event: Any, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, field, None)
    assert not hasattr(event, "__dict__")  # slotted: no attribute can be added either


def test_connection_info_is_frozen_and_names_its_peer() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        INFO.client = None  # type: ignore[misc]
    assert INFO.peer == "127.0.0.1:5000"
    assert ConnectionInfo(client=None, server=("/tmp/s", None)).peer == "unix socket"


def test_unsubscribe_removes_only_its_own_subscription() -> None:
    seen: list[Any] = []

    def handler(event: Any) -> None:
        seen.append(event)

    bus = EventBus()
    bus.subscribe(handler)  # every kind
    only_starts = bus.subscribe(handler, kinds=[RequestStarted])
    only_starts()
    bus.emit(STARTED)
    assert seen == [STARTED]  # the subscription to every kind is still there


def test_event_constructors_keep_the_dataclass_contract() -> None:
    # Events are built with a faster constructor than the dataclass one (events._quick_init):
    # same keyword-only signature, same defaults, same values.
    fields = {
        "client": None, "method": "GET", "path": "/", "query_string": b"",
        "http_version": "1.1", "status": 200, "bytes_sent": 3, "duration": 0.5,
        "request_headers": [], "response_headers": None, "scheme": "http",
    }
    event = RequestCompleted(**fields)  # type: ignore[arg-type]
    assert (event.complete, event.queue_wait, event.bytes_received) == (True, 0.0, 0)
    assert dataclasses.asdict(event) == {
        **fields, "complete": True, "queue_wait": 0.0, "bytes_received": 0
    }
    assert dataclasses.replace(event, status=404).status == 404
    assert dataclasses.replace(event) == event
    with pytest.raises(TypeError, match="missing"):
        RequestCompleted(method="GET")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RequestCompleted(None, "GET")  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected"):
        RequestCompleted(**fields, colour="red")  # type: ignore[call-arg]
