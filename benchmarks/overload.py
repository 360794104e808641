#!/usr/bin/env python3
"""Overload benchmark for the request queue (``--max-concurrency``; docs/load-shedding.md).

    python benchmarks/overload.py                    # every mode, 5 s per run
    python benchmarks/overload.py --duration 10 --slots 8 --sleep 0.05
    python benchmarks/overload.py --modes thread1    # one worker only

The app (``sleepy`` below) sleeps a fixed time per request. The server gets N slots
(``--max-concurrency N``), a queue of N/4 and a queue timeout of one second. Two loads, from
closed-loop clients each on its own keep-alive connection:

* **unloaded**: N clients, so every request finds a slot (the server is exactly at capacity);
* **4x overload**: 4N clients. A client whose request was shed (503, connection closed) opens
  a new connection and tries again after a pause of one service time (a client honouring
  ``Retry-After: 1`` literally would take the overload away).

It prints, per worker mode, the p50/p99 latency of admitted (200) requests under each load,
their ratio (target: p99 under overload within 2x of the unloaded p99), the answers by status,
and the requests that got no answer at all (a reset, a timeout, a hang: target 0). Only the
standard library is used; the server runs from this checkout (``src`` first on the path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"

#: Seconds the app sleeps per request (the runner passes it through the environment).
SLEEP = float(os.environ.get("OVERLOAD_SLEEP", "0.05"))


async def sleepy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The benchmark app: sleep a fixed time, then answer 200 with a small body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await asyncio.sleep(SLEEP)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


# -- load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # admitted (200) requests only
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # no answer at all

    def failed(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


REQUEST = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the server closes the connection after this response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def client(port: int, until: float, backoff: float, tally: Tally, timeout: float) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < until:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                tally.failed("connect")
                await asyncio.sleep(backoff)
                continue
        assert reader is not None
        began = time.perf_counter()
        try:
            writer.write(REQUEST)
            status, close = await asyncio.wait_for(_read_response(reader), timeout)
        except TimeoutError:
            tally.failed("timeout")
            status, close = 0, True
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.failed("reset")
            status, close = 0, True
        elapsed = time.perf_counter() - began
        if status:
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == 200:
            tally.latencies.append(elapsed)
        if close:
            writer.close()
            writer = None
        if status != 200:
            await asyncio.sleep(backoff)
    if writer is not None:
        writer.close()


def load(port: int, clients: int, duration: float, backoff: float, timeout: float) -> Tally:
    tally = Tally()

    async def main() -> None:
        until = time.monotonic() + duration
        await asyncio.gather(
            *(client(port, until, backoff, tally, timeout) for _ in range(clients))
        )

    asyncio.run(main())
    return tally


# -- server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, mode: str, args: argparse.Namespace, queue: bool) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "pounce", "overload:sleepy", "--app-dir", str(HERE),
        "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning",
        "--timeout-graceful-shutdown", "2",
    ]
    if mode == "thread2":
        argv += ["--workers", "2", "--worker-type", "thread"]
    elif mode == "process2":
        argv += ["--workers", "2", "--worker-type", "process"]
    if queue:
        argv += [
            "--max-concurrency", str(args.slots),
            "--max-queue", str(args.queue if args.queue is not None else args.slots // 4),
            "--queue-timeout", "1",
        ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OVERLOAD_SLEEP": str(args.sleep),
    }
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with status {proc.returncode}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start within 20 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- report ----------------------------------------------------------------------------------


def p(latencies: list[float], q: float) -> float:
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def run_mode(mode: str, args: argparse.Namespace, queue: bool) -> dict[str, Any]:
    port = free_port()
    proc = start_server(port, mode, args, queue)
    try:
        load(port, args.slots, 1.0, args.sleep, 10)  # warm-up
        unloaded = load(port, args.slots, args.duration, args.sleep, 10)
        overload = load(port, 4 * args.slots, args.duration, args.sleep, 10)
    finally:
        stop_server(proc)
    return {"mode": mode + ("" if queue else " (no queue)"), "unloaded": unloaded,
            "overload": overload}


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"Overload: app sleeps {args.sleep * 1000:.0f} ms, --max-concurrency {args.slots}, "
        f"--max-queue {args.queue if args.queue is not None else args.slots // 4}, "
        f"--queue-timeout 1; unloaded = {args.slots} clients, overload = {4 * args.slots} "
        f"clients, {args.duration:g} s each",
        "",
        "| mode | unloaded p50 / p99 (ms) | overload p50 / p99 (ms) | p99 ratio | overload "
        "200 / 503 | no answer |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        u: Tally = row["unloaded"]
        o: Tally = row["overload"]
        ratio = p(o.latencies, 0.99) / p(u.latencies, 0.99)
        mark = "ok" if ratio <= 2.0 else "over 2x"
        lost = sum(u.failures.values()) + sum(o.failures.values())
        lost_text = str(lost) if not lost else f"{lost} {dict(sorted({**u.failures, **o.failures}.items()))}"
        out.append(
            f"| {row['mode']} | {p(u.latencies, 0.5):.1f} / {p(u.latencies, 0.99):.1f} | "
            f"{p(o.latencies, 0.5):.1f} / {p(o.latencies, 0.99):.1f} | {ratio:.2f}x ({mark}) | "
            f"{o.statuses.get(200, 0)} / {o.statuses.get(503, 0)} | {lost_text} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="thread1,thread2,process2",
                        help="comma-separated: thread1 (one worker), thread2, process2")
    parser.add_argument("--slots", type=int, default=8, help="--max-concurrency (8)")
    parser.add_argument("--queue", type=int, default=None, help="--max-queue (slots / 4)")
    parser.add_argument("--sleep", type=float, default=0.05, help="app sleep, seconds (0.05)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load (5)")
    parser.add_argument("--no-queue-row", action="store_true",
                        help="skip the reference row without --max-concurrency")
    args = parser.parse_args(argv)
    rows = []
    for mode in args.modes.split(","):
        rows.append(run_mode(mode, args, queue=True))
    if not args.no_queue_row:
        rows.append(run_mode("thread1", args, queue=False))
    print(render(rows, args))
    ok = all(
        p(r["overload"].latencies, 0.99) <= 2 * p(r["unloaded"].latencies, 0.99)
        and not r["overload"].failures and not r["unloaded"].failures
        for r in rows if "no queue" not in r["mode"]
    )
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; target "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
