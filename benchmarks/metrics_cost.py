"""What ``--metrics`` costs: hello-world with it off and on, alternating, one worker.

Reports requests per second and, steadier on a shared machine, the server process's CPU time
per request (``/proc/PID/stat`` before and after the wrk run, divided by the requests wrk
counted). Linux only (``/proc``); needs ``wrk``.

    python3 benchmarks/metrics_cost.py --rounds 5 --duration 4
    python3 benchmarks/metrics_cost.py --extra=--access-log    # both with the access log on
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(metrics: bool, port: int, args: argparse.Namespace) -> tuple[float, float]:
    command = [
        args.python, "-m", "pounce", "apps:hello", "--port", str(port),
        "--no-access-log", "--log-level", "warning", *args.extra.split(),
    ]
    if metrics:
        command.append("--metrics")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    server = subprocess.Popen(command, cwd=HERE, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url).read()
                break
            except OSError:
                time.sleep(0.05)
        wrk = ["wrk", f"-t{args.threads}", f"-c{args.connections}"]
        subprocess.run([*wrk, "-d1s", url], capture_output=True, check=True)  # warm-up
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            [*wrk, f"-d{args.duration}s", url], capture_output=True, text=True, check=True
        ).stdout
        used = cpu_seconds(server.pid) - before
    finally:
        server.send_signal(2)
        server.wait(10)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, used / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds of wrk per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--extra", default="", help="more pounce flags for both runs")
    parser.add_argument("--port", type=int, default=19300)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    port = args.port
    for round_ in range(1, args.rounds + 1):
        for metrics in (False, True):
            port += 1
            rate, cpu = measure(metrics, port, args)
            results[metrics].append((rate, cpu))
            state = "on " if metrics else "off"
            print(f"round {round_} --metrics {state}: {rate:9,.0f} req/s, {cpu:6.2f} us CPU/req")
    off_rate = statistics.median(r for r, _ in results[False])
    on_rate = statistics.median(r for r, _ in results[True])
    off_cpu = statistics.median(c for _, c in results[False])
    on_cpu = statistics.median(c for _, c in results[True])
    print(f"median off: {off_rate:,.0f} req/s, {off_cpu:.2f} us CPU/request")
    print(f"median on:  {on_rate:,.0f} req/s, {on_cpu:.2f} us CPU/request")
    print(f"cost: {100 * (on_cpu / off_cpu - 1):+.1f}% CPU per request, "
          f"{100 * (on_rate / off_rate - 1):+.1f}% req/s")


if __name__ == "__main__":
    main()
