"""The shared metrics store and its exposition, without a server."""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from pounce.features.metrics import (
    OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_CONTENT_TYPE,
    Exposition,
    process_stats,
    wants_openmetrics,
)
from pounce.features.metrics_store import (
    DURATION_BOUNDS,
    LIVE,
    REJECTION_REASONS,
    MetricsStore,
    RegionLayout,
    ServerFields,
    sum_regions,
)
from pounce.pipeline import events
from pounce.pipeline.events import ReloadCompleted, ReloadFailed, WorkerCrashed, WorkerRecycled
from pounce.workers.metrics import SupervisorMetrics, store_capacity

L = RegionLayout


def samples(text: str, *, openmetrics: bool = False) -> dict[tuple[str, tuple[Any, ...]], float]:
    parse = parse_openmetrics if openmetrics else parse_prometheus
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        for s in family.samples
    }


def test_layout_fields_do_not_overlap() -> None:
    singles = [
        L.STATE, L.PID, *L.GAUGES, L.WEBSOCKETS_TOTAL, L.BYTES_SENT, L.BYTES_RECEIVED,
        L.DURATION_SUM, L.QUEUE_WAIT_SUM,
    ]
    ranges = [
        range(L.DURATION_BUCKETS, L.QUEUE_WAIT_SUM),
        range(L.QUEUE_WAIT_BUCKETS, L.REJECTED),
        range(L.REJECTED, L.REQUESTS),
        range(L.REQUESTS, L.SIZE),
    ]
    used = singles + [i for r in ranges for i in r]
    assert len(used) == len(set(used)) == L.SIZE
    assert len(range(L.DURATION_BUCKETS, L.QUEUE_WAIT_SUM)) == len(DURATION_BOUNDS) + 1
    # The last request counter (other method, other status, other version) is the last field.
    assert L.request_index(9, 5, 4) == L.SIZE - 1


def test_every_rejection_reason_of_the_pipeline_has_a_label() -> None:
    reasons = {
        value for name, value in vars(events).items()
        if name.startswith("REJECTED_") and isinstance(value, str)
    }
    assert reasons <= set(REJECTION_REASONS)


def test_regions_are_separate_and_add_up() -> None:
    store = MetricsStore.create(3)
    values = store.values
    a, b = store.region_offset(0), store.region_offset(2)
    assert (a, b) == (ServerFields.SIZE, ServerFields.SIZE + 2 * L.SIZE)
    values[a + L.STATE] = values[b + L.STATE] = LIVE
    values[a + L.BYTES_SENT] += 10
    values[b + L.BYTES_SENT] += 5
    values[a + L.IN_FLIGHT] = 2
    server, regions = store.snapshot()
    assert len(regions) == 2  # region 1 was never used
    totals = sum_regions(regions)
    assert totals[L.BYTES_SENT] == 15
    assert totals[L.IN_FLIGHT] == 2
    assert server == [0.0] * ServerFields.SIZE
    with pytest.raises(IndexError):
        store.region_offset(3)
    store.close()


def test_a_retired_region_keeps_its_counts_and_loses_its_gauges() -> None:
    store = MetricsStore.create(1)
    values, base = store.values, store.region_offset(0)
    values[base + L.STATE] = LIVE
    values[base + L.request_index(0, 1, 1)] = 7
    for gauge in L.GAUGES:
        values[base + gauge] = 3
    store.retire(0)
    _, [region] = store.snapshot()
    assert region[L.request_index(0, 1, 1)] == 7
    assert all(region[gauge] == 0 for gauge in L.GAUGES)
    assert region[L.STATE] != LIVE
    # The next worker continues from the old counts: nothing is cleared.
    values[base + L.STATE] = LIVE
    values[base + L.request_index(0, 1, 1)] += 1
    assert store.snapshot()[1][0][L.request_index(0, 1, 1)] == 8
    store.close()


def test_a_forked_child_writes_what_the_parent_reads() -> None:
    store = MetricsStore.create(2)
    try:
        pid = os.fork()
        if pid == 0:  # the child: write its region, leave at once
            base = store.region_offset(1)
            store.values[base + L.STATE] = LIVE
            store.values[base + L.BYTES_RECEIVED] = 42
            os._exit(0)
        os.waitpid(pid, 0)
        assert sum_regions(store.snapshot()[1])[L.BYTES_RECEIVED] == 42
    finally:
        store.close()


def test_a_named_store_is_shared_with_whoever_attaches_by_name() -> None:
    store = MetricsStore.create(2, named=True)
    try:
        other = pickle.loads(pickle.dumps(store))  # what a spawned worker receives
        try:
            base = other.region_offset(1)
            other.values[base + L.STATE] = LIVE
            other.values[base + L.BYTES_SENT] = 99
            assert sum_regions(store.snapshot()[1])[L.BYTES_SENT] == 99
        finally:
            other.close()
    finally:
        store.close()


def test_an_anonymous_store_refuses_to_be_pickled() -> None:
    store = MetricsStore.create(1)
    try:
        with pytest.raises(TypeError, match="fork"):
            pickle.dumps(store)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        (b"", False),
        (b"text/plain;version=0.0.4", False),
        (b"*/*", False),
        (
            b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        (b"Application/OpenMetrics-Text", True),
        (b"application/openmetrics-text;q=0, text/plain", False),
        (b"text/plain, application/openmetrics-text; q=0.2", True),
    ],
)
def test_openmetrics_is_chosen_from_accept(accept: bytes | None, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


class Region:
    """Writes one region of a store at its offset, as a recorder does."""

    def __init__(self, store: MetricsStore, index: int) -> None:
        self.values = store.values
        self.base = store.region_offset(index)

    def __getitem__(self, offset: int) -> float:
        return self.values[self.base + offset]

    def __setitem__(self, offset: int, value: float) -> None:
        self.values[self.base + offset] = value


def filled_store() -> MetricsStore:
    store = MetricsStore.create(2)
    server = store.values  # the server region starts at 0
    server[ServerFields.MAIN_PID] = os.getpid()
    server[ServerFields.WORKERS_SERVING] = 2
    server[ServerFields.RELOADS_COMPLETED] = 1
    for index, requests in ((0, 3), (1, 4)):
        region = Region(store, index)
        region[L.STATE] = LIVE
        region[L.PID] = os.getpid()
        region[L.request_index(0, 1, 1)] = requests  # GET 2xx HTTP/1.1
        region[L.DURATION_BUCKETS] = requests  # all under the first bound
        region[L.DURATION_SUM] = 0.0005 * requests
        region[L.REJECTED + REJECTION_REASONS.index("queue full")] = 1
        region[L.QUEUE_WAIT_BUCKETS + 2] = 1
        region[L.QUEUE_WAIT_SUM] = 0.007
        region[L.CONNECTIONS_OPEN] = 1
    return store


@pytest.mark.parametrize("openmetrics", [False, True])
def test_the_exposition_parses_and_adds_the_workers_up(openmetrics: bool) -> None:
    store = filled_store()
    try:
        content_type, body = Exposition(store).render(openmetrics)
    finally:
        store.close()
    text = body.decode()
    assert content_type == (OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE)
    assert text.endswith("# EOF\n") is openmetrics
    found = samples(text, openmetrics=openmetrics)
    labels = (("http_version", "1.1"), ("method", "GET"), ("status", "2xx"))
    assert found["pounce_requests_total", labels] == 7
    assert found["pounce_request_duration_seconds_count", ()] == 7
    assert found["pounce_request_duration_seconds_bucket", (("le", "0.001"),)] == 7
    assert found["pounce_request_duration_seconds_bucket", (("le", "+Inf"),)] == 7
    assert found["pounce_requests_rejected_total", (("reason", "queue_full"),)] == 2
    assert found["pounce_queue_wait_seconds_bucket", (("le", "0.005"),)] == 0
    assert found["pounce_queue_wait_seconds_bucket", (("le", "0.01"),)] == 2
    assert found["pounce_queue_wait_seconds_sum", ()] == pytest.approx(0.014)
    assert found["pounce_connections_open", ()] == 2
    assert found["pounce_workers", (("state", "serving"),)] == 2
    assert found["pounce_reloads_total", (("result", "completed"),)] == 1
    # Thread workers share the supervisor's process: one set of process figures.
    cpu = [key for key in found if key[0] == "process_cpu_seconds_total"]
    assert cpu == [("process_cpu_seconds_total", (("pid", str(os.getpid())), ("process", "main")))]


def test_process_figures_of_this_process() -> None:
    stats = process_stats(os.getpid())
    assert stats is not None
    cpu, rss, fds = stats
    assert cpu > 0
    assert rss is not None and rss > 1 << 20
    assert fds is not None and fds >= 3
    assert process_stats(2**22 + 12345) is None  # no such process


class FakeHandle:
    def __init__(self) -> None:
        import threading

        self.exited = threading.Event()

    def alive(self) -> bool:
        return not self.exited.is_set()


class FakeHub:
    dropped = 5


def test_the_supervisor_hands_out_regions_and_takes_them_back() -> None:
    store = MetricsStore.create(2)
    try:
        metrics = SupervisorMetrics(store, FakeHub())  # type: ignore[arg-type]
        first, second = FakeHandle(), FakeHandle()
        a, b = metrics.take_region(), metrics.take_region()
        assert (a, b) == (0, 1)
        assert metrics.take_region() is None  # full: the worker goes uncounted
        metrics.bind(first, a)  # type: ignore[arg-type]
        metrics.bind(second, b)  # type: ignore[arg-type]
        region = Region(store, 0)
        region[L.STATE] = LIVE
        region[L.IN_FLIGHT] = 4
        first.exited.set()
        metrics.sweep(serving=1, starting=0, draining=0)
        assert region[L.IN_FLIGHT] == 0
        assert metrics.take_region() == 0  # reused once its worker has gone
        server = store.values
        assert server[ServerFields.EVENTS_DROPPED] == 5
        assert server[ServerFields.WORKERS_SERVING] == 1
        assert server[ServerFields.MAIN_PID] == os.getpid()
        for event in (
            WorkerCrashed(name="w", kind="process", slot=0, generation=1, error="x"),
            WorkerRecycled(name="w", reason="max requests"),
            ReloadCompleted(generation=2),
            ReloadFailed(error="x"),
            ReloadFailed(error="y"),
        ):
            metrics.on_event(event)
        assert server[ServerFields.RESTARTS_CRASHED] == 1
        assert server[ServerFields.RESTARTS_RECYCLED] == 1
        assert server[ServerFields.RELOADS_COMPLETED] == 1
        assert server[ServerFields.RELOADS_FAILED] == 2
    finally:
        store.close()


def test_capacity_leaves_room_for_a_reload() -> None:
    assert store_capacity(1) >= 2
    assert store_capacity(16) >= 32
