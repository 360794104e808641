"""Worker model selection and serving in every mode."""

from __future__ import annotations

import pytest
from tests.workers.support import KeepAliveConnection, get, running, wait_for
from tests.workers.wapps import app

from pounce.config import ServerConfig
from pounce.errors import StartupError
from pounce.server.loops import gil_enabled
from pounce.workers.model import choose_model, reuseport_available, usable_cpus


def test_one_worker_runs_in_process_without_distributor() -> None:
    model = choose_model(ServerConfig())
    assert (model.kind, model.count, model.accept) == ("thread", 1, "listen")
    assert "1 thread worker" in model.describe()


def test_auto_picks_processes_on_gil_build_and_threads_without_gil() -> None:
    model = choose_model(ServerConfig(workers=4))
    expected = "process" if gil_enabled() else "thread"
    assert model.kind == expected
    assert model.count == 4
    if expected == "process":
        assert model.reason == "GIL build" or "re-enabled" in model.reason
    else:
        assert model.reason == "free-threaded build, GIL disabled"


def test_forced_types_and_accept_modes() -> None:
    thread = choose_model(ServerConfig(workers=3, worker_type="thread"))
    assert (thread.kind, thread.accept) == ("thread", "distributor")
    process = choose_model(ServerConfig(workers=3, worker_type="process"))
    assert (process.kind, process.accept) == ("process", "listen")
    dist = choose_model(ServerConfig(workers=3, worker_type="process", accept="distributor"))
    assert dist.accept == "distributor"
    assert choose_model(ServerConfig(workers=0)).count == usable_cpus()


def test_reuseport_rejected_for_unix_sockets(tmp_path: object) -> None:
    if not reuseport_available():
        pytest.skip("SO_REUSEPORT balancing is Linux-only")
    with pytest.raises(StartupError, match="TCP addresses only"):
        choose_model(ServerConfig(workers=2, accept="reuseport", uds="/tmp/pounce-x.sock"))


MODES = [
    pytest.param({"worker_type": "thread", "accept": "distributor"}, id="thread-distributor"),
    pytest.param({"worker_type": "thread", "accept": "reuseport"}, id="thread-reuseport"),
    pytest.param({"worker_type": "process"}, id="process-listen"),
    pytest.param({"worker_type": "process", "accept": "distributor"}, id="process-distributor"),
    pytest.param({"worker_type": "process", "accept": "reuseport"}, id="process-reuseport"),
]


@pytest.mark.parametrize("options", MODES)
def test_serves_in_every_mode(options: dict[str, str]) -> None:
    with running(app, workers=2, **options) as (server, address):
        conns = [KeepAliveConnection(address) for _ in range(8)]
        for _ in range(5):
            for conn in conns:
                assert conn.request("/") == (200, b"ok")
        assert wait_for(lambda: server.stats()["requests_total"] >= 40, 5)
        stats = server.stats()
        assert len(stats["workers"]) == 2
        for conn in conns:
            conn.close()
        assert get(address)[0] == 200


def test_distributor_balances_keep_alive_connections() -> None:
    with running(app, workers=4, worker_type="thread") as (server, address):
        conns = [KeepAliveConnection(address) for _ in range(64)]
        for conn in conns:
            assert conn.request("/") == (200, b"ok")
        counts = [w["connections"] for w in server.stats()["workers"]]
        assert sum(counts) == 64
        assert max(counts) <= 1.25 * min(counts), counts
        for _ in range(9):
            for conn in conns:
                conn.request("/")
        assert wait_for(lambda: server.stats()["requests_total"] == 640, 5)
        requests = [w["requests"] for w in server.stats()["workers"]]
        assert max(requests) <= 1.25 * min(requests), requests
        for conn in conns:
            conn.close()
