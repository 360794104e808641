#!/usr/bin/env python3
"""What ``--max-concurrency`` costs when nothing ever queues: server CPU per request.

    python benchmarks/queue_cost.py                       # 2 process workers, 5 s x 3 rounds
    python benchmarks/queue_cost.py --workers 1 --worker-type thread

Runs the ``hello`` app (benchmarks/apps.py) with the queue off, then with
``--max-concurrency 100000`` (every request finds a slot: the cost measured is taking and
giving back a slot), alternating, under ``wrk`` (64 connections). It reads the CPU time
(user + system) of the server and its worker processes from ``/proc`` around each run and
prints microseconds of server CPU per request, so a shared, noisy machine skews the result
less than requests per second would. Linux only (``/proc``); needs ``wrk`` on the path.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for index in range(64):
        if index >= len(pids):
            break
        try:
            for task in os.listdir(f"/proc/{pids[index]}/task"):
                text = Path(f"/proc/{pids[index]}/task/{task}/children").read_text()
                pids.extend(int(p) for p in text.split())
        except OSError:
            continue
    return pids


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def _run(args: argparse.Namespace, extra: list[str]) -> tuple[float, int]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{args.src}{os.pathsep}{HERE}"}
    command = [sys.executable, "-m", "pounce", "apps:hello", "--port", str(port)]
    command += ["--workers", str(args.workers), "--worker-type", args.worker_type]
    command += ["--log-level", "warning", "--no-access-log", *extra]
    server = subprocess.Popen(command, env=env, cwd=HERE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t2", "-c64", "-d1s", url], capture_output=True, check=True)
        pids = _tree(server.pid)
        before = _cpu(pids)
        out = subprocess.run(
            ["wrk", "-t2", "-c64", f"-d{args.duration}s", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        used = _cpu(pids) - before
        match = re.search(r"(\d+) requests in", out)
        requests = int(match.group(1)) if match else 0
        return used, requests
    finally:
        server.terminate()
        server.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-type", default="process")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--src", default=str(REPO / "src"), help="the pounce sources to run (this checkout's)"
    )
    args = parser.parse_args()
    modes = {"off": [], "max-concurrency 100000": ["--max-concurrency", "100000"]}
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, extra in modes.items():
            results[name].append(_run(args, extra))
    print(f"{args.workers} {args.worker_type} worker(s), hello, wrk -c64, {args.duration} s runs")
    print(f"{'queue':<24} {'req/s':>9} {'server CPU us/req':>18}  (per round)")
    for name, runs in results.items():
        cpu = sum(c for c, _ in runs)
        requests = sum(r for _, r in runs)
        per_round = ", ".join(f"{c / r * 1e6:.1f}" for c, r in runs if r)
        rate = requests / (args.duration * len(runs))
        print(f"{name:<24} {rate:>9.0f} {cpu / max(requests, 1) * 1e6:>18.2f}  ({per_round})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
