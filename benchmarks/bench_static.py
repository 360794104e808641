"""A small static file: ``pounce --static`` against Starlette's StaticFiles on Pounce and Uvicorn.

    PYTHONPATH=src python benchmarks/bench_static.py [--duration 5] [--connections 32]
        [--rounds 2] [--size BYTES] [--loop auto|asyncio|uvloop]
    (the interpreter needs uvicorn with httptools and uvloop, starlette and wrk on PATH)

One worker each, access log off, ``wrk -t1`` against the same HTML file, 1 KiB by default (no
``Accept-Encoding``: nothing is compressed). Each server is checked first (status 200 and the
exact bytes), then loaded; the rounds alternate between servers so a noisy neighbour on a
shared machine spreads over all of them. Prints requests per second, the best round of each.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

_SIZE = int(os.environ.get("BENCH_STATIC_SIZE") or 1025)
#: An HTML file of _SIZE bytes (1 KiB unless --size says otherwise).
FILE = (b"<!doctype html>\n<p>" + b"static bytes " * (_SIZE // 13 + 1))[: _SIZE - 5] + b"</p>\n"


async def fallback(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The app behind ``--static``: never reached by the benchmark's requests."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]


async def in_memory(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The same bytes from memory: what serving the file costs over a plain app."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": FILE})  # type: ignore[operator]


def starlette_app() -> object:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/static", StaticFiles(directory=os.environ["STATIC_DIR"]))])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                body = response.read()
            if response.status != 200 or body != FILE:
                raise SystemExit(f"{url}: wrong answer {response.status} {body[:40]!r}")
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=1025, help="file size in bytes")
    parser.add_argument("--loop", default="auto", help="pounce's --loop (uvicorn: uvloop)")
    args = parser.parse_args()
    if args.size != len(FILE):  # the apps read the size from the environment: re-run with it
        os.environ["BENCH_STATIC_SIZE"] = str(args.size)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    directory = Path(tempfile.mkdtemp(prefix="pounce-static-bench-"))
    (directory / "index.html").write_bytes(FILE)
    here = str(Path(__file__).resolve().parent)
    env = {
        **os.environ,
        "STATIC_DIR": str(directory),
        "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
    }
    quiet = ["--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]
    loop = ["--loop", args.loop]
    python = sys.executable
    servers = {
        "pounce --static": [python, "-m", "pounce", "bench_static:fallback",
                            "--static", f"/static={directory}", *loop, *quiet],
        "pounce, the same bytes from an app (no file)": [
            python, "-m", "pounce", "bench_static:in_memory", *loop, *quiet],
        "Starlette StaticFiles on pounce": [python, "-m", "pounce", "bench_static:starlette_app",
                                            "--factory", *loop, *quiet],
        "Starlette StaticFiles on uvicorn": [python, "-m", "uvicorn",
                                             "bench_static:starlette_app", "--factory",
                                             "--http", "httptools", "--loop", "uvloop", *quiet],
    }
    results: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, command in servers.items():
            port = free_port()
            proc = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=here)
            try:
                url = f"http://127.0.0.1:{port}/static/index.html"
                wait_ready(url)
                out = subprocess.run(
                    ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration:g}s", url],
                    capture_output=True, text=True, check=True,
                ).stdout
                match = re.search(r"Requests/sec:\s+([\d.]+)", out)
                errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                if match is None or errors is not None:
                    raise SystemExit(f"{name}: wrk failed:\n{out}")
                results[name].append(float(match.group(1)))
            finally:
                proc.terminate()
                proc.wait(10)
    base = max(results["Starlette StaticFiles on uvicorn"])
    print(f"| server | requests/s | vs Starlette on uvicorn |  ({len(FILE)}-byte file, "
          f"wrk -t1 -c{args.connections} -d{args.duration:g}s, best of {args.rounds}, "
          f"pounce --loop {args.loop})")
    print("|---|---|---|")
    for name, figures in results.items():
        best = max(figures)
        print(f"| {name} | {best:,.0f} | {best / base:.2f}x |")


if __name__ == "__main__":
    main()
