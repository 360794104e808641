#!/usr/bin/env python3
"""What each built-in feature costs: hello-world req/s with one feature on, against all off.

Runs Pounce (this tree) once per configuration, under wrk, in alternating rounds so that a
noisy neighbour hurts every configuration alike, and prints the median req/s of each with its
ratio to "all off". A second table serves a 64 KiB JSON body without compression, with gzip
and with zstd: bytes on the wire per response and req/s.

    python3 benchmarks/features.py                  # 5 s per run, 2 rounds
    python3 benchmarks/features.py --duration 3 --rounds 3 --python /path/to/python

The interpreter (default: this one) must have Pounce and its extras installed. A feature whose
flag this Pounce does not know is skipped with a note. Results go to
benchmarks/results/features-<UTC stamp>.{md,json} unless --no-save.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as harness  # noqa: E402  (next to this file)

HOST = harness.HOST
BASE = ["--log-level", "warning", "--no-access-log"]
ALL_OFF = "all off"

#: (name, flags added to BASE, wrk headers). "all off" turns off compression, which is on by
#: default; every other row turns on exactly one feature on top of "all off" (compression
#: included), except "defaults" (what `pounce app:app` does) and "all on".
def configurations(static_dir: str) -> list[tuple[str, list[str], list[str]]]:
    off = ["--no-compression"]
    accept = ["Accept-Encoding: gzip, zstd"]
    return [
        (ALL_OFF, off, accept),
        ("compression (default on)", [], accept),
        ("server timing", [*off, "--server-timing"], accept),
        ("metrics", [*off, "--metrics"], accept),
        ("rate limit (never refusing)", [*off, "--rate-limit", "1000000/s"], accept),
        (
            "request queue (never queueing)",
            [*off, "--max-concurrency", "10000", "--max-queue", "10000"],
            accept,
        ),
        ("health probes", [*off, "--health-path", "/healthz", "--ready-path", "/readyz"], accept),
        ("request id", [*off, "--request-id"], accept),
        ("static files (other prefix)", [*off, "--static", f"/static={static_dir}"], accept),
        # Access log lines are INFO records: the row needs the level that lets them out.
        ("access log", ["--no-compression", "--access-log", "--log-level", "info"], accept),
        (
            "all on",
            [
                "--server-timing", "--metrics", "--rate-limit", "1000000/s",
                "--max-concurrency", "10000", "--max-queue", "10000",
                "--health-path", "/healthz", "--ready-path", "/readyz", "--request-id",
                "--static", f"/static={static_dir}",
            ],
            accept,
        ),
    ]


def known_flags(python: str) -> str:
    out = subprocess.run(
        [python, "-m", "pounce", "--help"], capture_output=True, text=True, check=False
    )
    return out.stdout


def start(python: str, app: str, flags: list[str], port: int, quiet_log: Path) -> Any:
    argv = [python, "-m", "pounce", f"apps:{app}", "--host", HOST, "--port", str(port), *BASE]
    argv += flags
    # --access-log after --no-access-log wins; its lines go to a file, not a terminal.
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    log = open(quiet_log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        argv, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    harness.wait_listening(proc, port, 20)
    return proc


def stop(proc: Any) -> None:
    harness.stop_server(proc, 10)
    proc.log.close()


def wrk(
    port: int, path: str, headers: list[str], seconds: float, args: argparse.Namespace
) -> dict[str, Any]:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}"]
    argv += [f"-d{max(1, round(seconds))}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    argv.append(f"http://{HOST}:{port}{path}")
    return harness.parse_wrk(harness.run_wrk(argv, seconds))


def body_size(port: int, headers: list[str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/", headers=dict(h.split(": ", 1) for h in headers))
        response = conn.getresponse()
        data = response.read()
        return len(data), response.getheader("content-encoding") or "identity"
    finally:
        conn.close()


def measure_rows(
    python: str,
    app: str,
    rows: list[tuple[str, list[str], list[str]]],
    args: argparse.Namespace,
    log: Path,
    *,
    sizes: bool = False,
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {
        name: {"rps": [], "flags": flags} for name, flags, _ in rows
    }
    for rnd in range(args.rounds):
        order = rows if rnd % 2 == 0 else list(reversed(rows))
        for name, flags, headers in order:
            port = harness.free_port()
            harness.log(f"round {rnd + 1}: {app} / {name}")
            proc = start(python, app, flags, port, log)
            try:
                if sizes and "size" not in results[name]:
                    size, encoding = body_size(port, headers)
                    results[name]["size"], results[name]["encoding"] = size, encoding
                if args.warmup:
                    wrk(port, "/", headers, args.warmup, args)
                result = wrk(port, "/", headers, args.duration, args)
                results[name]["rps"].append(result["rps"])
                results[name].setdefault("errors", 0)
                results[name]["errors"] += result["errors"]
                results[name].setdefault("p99_ms", []).append(result["p99_ms"])
            finally:
                stop(proc)
    for row in results.values():
        row["median_rps"] = statistics.median(row["rps"])
        row["median_p99_ms"] = statistics.median(row["p99_ms"])
    return results


def python_version(python: str) -> str:
    code = "import sys; print(sys.version.split()[0])"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--only", default=None, help="comma list of row names to run (plus all off)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    if not harness._have_wrk():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    helptext = known_flags(args.python)
    stamp = _dt.datetime.now(_dt.UTC)
    log = Path(tempfile.gettempdir()) / f"pounce-features-{stamp:%Y%m%dT%H%M%SZ}.log"
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as static_dir:
        Path(static_dir, "a.txt").write_text("static\n")
        rows = []
        for name, flags, headers in configurations(static_dir):
            unknown = [f for f in flags if f.startswith("--") and f not in helptext]
            if unknown:
                skipped[name] = f"this Pounce has no {', '.join(unknown)}"
                continue
            if args.only and name != ALL_OFF and name not in args.only.split(","):
                continue
            rows.append((name, flags, headers))
        hello = measure_rows(args.python, "hello", rows, args, log)
    compression_rows = [
        ("no compression", ["--no-compression"], ["Accept-Encoding: gzip, zstd"]),
        ("gzip", [], ["Accept-Encoding: gzip"]),
        ("zstd", [], ["Accept-Encoding: zstd"]),
    ]
    json_rows = measure_rows(args.python, "json64k", compression_rows, args, log, sizes=True)

    base = hello[ALL_OFF]["median_rps"]
    lines = [
        f"# Feature costs ({stamp:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python3 benchmarks/features.py --duration {args.duration:g} --rounds {args.rounds}`; "
        f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s per run after "
        f"{args.warmup:g} s of warm-up, median of {args.rounds} alternating rounds; "
        f"Python {python_version(args.python)}, "
        f"{os.cpu_count()} cores, one worker.",
        "",
        "## Hello world: each feature on, against all off",
        "",
        "| configuration | req/s | vs all off | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in hello.items():
        lines.append(
            f"| {name} | {row['median_rps']:,.0f} | {row['median_rps'] / base:.2f}x | "
            f"{row['median_p99_ms']:.2f} | {row['errors']} |"
        )
    for name, reason in skipped.items():
        lines.append(f"| {name} | skipped: {reason} | | | |")
    plain = json_rows["no compression"]
    lines += [
        "",
        "## 64 KiB JSON body: compression",
        "",
        "| response | bytes on the wire | saved | req/s | vs uncompressed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in json_rows.items():
        saved = 1 - row["size"] / plain["size"]
        lines.append(
            f"| {name} ({row['encoding']}) | {row['size']:,} | {saved:.0%} | "
            f"{row['median_rps']:,.0f} | {row['median_rps'] / plain['median_rps']:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        harness.RESULTS.mkdir(exist_ok=True)
        name = f"features-{stamp:%Y%m%dT%H%M%SZ}"
        (harness.RESULTS / f"{name}.md").write_text(text)
        with contextlib.suppress(TypeError):
            (harness.RESULTS / f"{name}.json").write_text(
                json.dumps({"hello": hello, "json64k": json_rows, "skipped": skipped}, indent=1)
            )
        harness.log(f"saved {harness.RESULTS / name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
