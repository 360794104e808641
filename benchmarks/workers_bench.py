#!/usr/bin/env python3
"""Worker-model benchmarks: balance, accept paths, process mode, memory, reload, CPU scaling.

    python benchmarks/workers_bench.py                       # every section, 5 s per run
    python benchmarks/workers_bench.py --only balance,reload # some sections
    python benchmarks/workers_bench.py --python python3.14t  # another interpreter (own venv)

Sections (see benchmarks/README.md, "Worker benchmarks"):

``balance``  per-worker request counts, 4 workers, ``wrk -c64`` keep-alive: thread +
             distributor, thread + reuseport, process + listen, process + distributor;
             busiest/idlest ratio.
``accept``   hello throughput by accept path in one run: the balance rows plus process
             workers with listen / distributor / reuseport.
``process``  ``--workers 2`` process mode vs Uvicorn (httptools + uvloop) ``--workers 2``.
``memory``   ``bigstate`` (100 MB of objects): PSS of the whole process tree, Pounce 1 worker,
             4 thread workers, 4 process workers, Uvicorn 4 workers.
``reload``   an asyncio client keeps 64 keep-alive connections busy while 10 rolling reloads
             (SIGHUP, each awaited in the server log) happen; failed requests and connection
             errors are counted; thread and process mode.
``cpu``      the ``cpu`` app (fixed ~1 ms of pure Python per request), 1, 2, 4 thread workers.

It reuses the helpers of ``run.py`` (venv, wrk, process-tree memory, server stop) so both
scripts measure the same way. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as harness

HERE = harness.HERE
HOST = harness.HOST
SECTIONS = ("balance", "accept", "process", "memory", "reload", "cpu")


def log(msg: str) -> None:
    harness.log(msg)


# ---------------------------------------------------------------------------
# starting a server


def pounce_argv(vpy: Path, app: str, port: int, *extra: str, level: str = "warning") -> list[str]:
    return [
        str(vpy), "-m", "pounce", f"apps:{app}", "--host", HOST, "--port", str(port),
        "--log-level", level, "--no-access-log", *extra,
    ]


def uvicorn_argv(vpy: Path, app: str, port: int, workers: int) -> list[str]:
    return [
        str(vpy), "-m", "uvicorn", f"apps:{app}", "--host", HOST, "--port", str(port),
        "--log-level", "warning", "--no-access-log", "--http", "httptools", "--loop", "uvloop",
        "--workers", str(workers),
    ]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    logfile: Path
    counts_dir: Path
    argv: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")


@contextlib.contextmanager
def serving(ctx: Context, name: str, argv_for_port: Any, app: str) -> Iterator[Running]:
    """Start a server (own session), wait until it answers correctly, stop it afterwards."""
    opt, cpu_iters, log_dir = ctx.opt, ctx.cpu_iters, ctx.log_dir
    port = harness.free_port()
    argv: list[str] = argv_for_port(port)
    counts_dir = Path(tempfile.mkdtemp(prefix=f"counts-{name}-", dir=harness.WORK))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "BENCH_CPU_ITERS": str(cpu_iters),
        "BENCH_BIGSTATE_MB": "100" if app == "bigstate" else "0",
        "BENCH_COUNTS_DIR": str(counts_dir),
    }
    env.pop("VIRTUAL_ENV", None)
    logfile = log_dir / f"{name}.log"
    with open(logfile, "wb") as lf:
        proc = subprocess.Popen(
            argv, cwd=HERE, env=env, stdout=lf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        running = Running(proc, port, logfile, counts_dir, argv)
        try:
            harness.wait_listening(proc, port, opt.startup_timeout)
            harness.check_response(port, app)
            yield running
        finally:
            running.info["stop"] = harness.stop_server(proc, opt.stop_timeout)
            running.info["workers_seen"] = harness.read_counts(counts_dir)
            with contextlib.suppress(OSError):
                for f in counts_dir.iterdir():
                    f.unlink()
                counts_dir.rmdir()


def wrk(port: int, opt: argparse.Namespace, duration: float | None = None) -> dict[str, Any]:
    seconds = duration if duration is not None else opt.duration
    argv = harness.wrk_argv(port, "hello", seconds, opt.threads, opt.connections)
    out = harness.run_wrk(argv, seconds)
    res = harness.parse_wrk(out)
    res["argv"] = " ".join(argv)
    return res


def warm(port: int, opt: argparse.Namespace) -> None:
    if opt.warmup > 0:
        harness.run_wrk(
            harness.wrk_argv(port, "hello", opt.warmup, opt.threads, opt.connections), opt.warmup
        )


# ---------------------------------------------------------------------------
# sections


def section_balance(ctx: Context) -> dict[str, Any]:
    """4 workers, 64 keep-alive connections: requests per worker (no warm-up, whole run)."""
    modes = {
        "thread+distributor": ("--worker-type", "thread", "--accept", "distributor"),
        "thread+reuseport": ("--worker-type", "thread", "--accept", "reuseport"),
        "process+listen": ("--worker-type", "process", "--accept", "auto"),
        "process+distributor": ("--worker-type", "process", "--accept", "distributor"),
    }
    rows = []
    for label, extra in modes.items():
        argv = lambda port, extra=extra: pounce_argv(  # noqa: E731
            ctx.vpy, "hello", port, "--workers", "4", *extra
        )
        with serving(ctx, f"balance-{label}", argv, "hello") as srv:
            result = wrk(srv.port, ctx.opt)
        counts = sorted((w["requests"] for w in srv.info["workers_seen"]), reverse=True)
        ratio = counts[0] / counts[-1] if len(counts) >= 4 and counts[-1] else None
        rows.append({
            "mode": label, "command": shlex.join(srv.argv), "wrk": result["argv"],
            "rps": result["rps"], "errors": result["errors"], "per_worker": counts,
            "busiest_over_idlest": round(ratio, 3) if ratio else None,
        })
        log(f"balance {label}: {counts} ratio {ratio}")
    return {"rows": rows}


def section_accept(ctx: Context, balance: dict[str, Any] | None) -> dict[str, Any]:
    rows = []
    if balance:
        rows += [{"mode": f"4 {r['mode']}", "rps": r["rps"], "errors": r["errors"],
                  "command": r["command"]} for r in balance["rows"]]
    for accept in ("listen", "distributor", "reuseport"):
        argv = lambda port, a=accept: pounce_argv(  # noqa: E731
            ctx.vpy, "hello", port, "--workers", "2", "--worker-type", "process", "--accept",
            "auto" if a == "listen" else a,
        )
        with serving(ctx, f"accept-process-{accept}", argv, "hello") as srv:
            warm(srv.port, ctx.opt)
            result = wrk(srv.port, ctx.opt)
        rows.append({"mode": f"2 process+{accept}", "rps": result["rps"],
                     "errors": result["errors"], "command": shlex.join(srv.argv)})
        log(f"accept process+{accept}: {result['rps']:.0f} req/s")
    return {"rows": rows}


def section_process(ctx: Context) -> dict[str, Any]:
    """Pounce --workers 2 (process) vs Uvicorn --workers 2, alternating, median of rounds."""
    runs: dict[str, list[float]] = {"pounce": [], "uvicorn": []}
    commands: dict[str, str] = {}
    for _ in range(ctx.opt.rounds):
        for name in ("pounce", "uvicorn"):
            if name == "pounce":
                def argv(port: int) -> list[str]:
                    return pounce_argv(ctx.vpy, "hello", port, "--workers", "2",
                                       "--worker-type", "process")
            else:
                def argv(port: int) -> list[str]:
                    return uvicorn_argv(ctx.vpy, "hello", port, 2)
            with serving(ctx, f"process-{name}", argv, "hello") as srv:
                warm(srv.port, ctx.opt)
                result = wrk(srv.port, ctx.opt)
            runs[name].append(result["rps"])
            commands[name] = shlex.join(srv.argv)
            log(f"process {name}: {result['rps']:.0f} req/s")
    med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    return {"runs": runs, "median": med, "commands": commands,
            "ratio": round(med["pounce"] / med["uvicorn"], 3) if med["uvicorn"] else None}


def _settled_pss(root: int, limit: float = 60.0) -> dict[str, int]:
    """Wait until the tree's PSS stops growing (workers done importing), bounded."""
    sampler = harness.MemorySampler(root)
    deadline = time.monotonic() + limit
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        procs, rss, pss = sampler.sample()
        if pss > last * 1.01 or last < 0:
            last, stable_since = pss, time.monotonic()
        elif time.monotonic() - stable_since >= 1.5:
            break
        time.sleep(0.25)
    procs, rss, pss = sampler.sample()
    return {"processes": procs, "rss_kb": rss, "pss_kb": pss}


def section_memory(ctx: Context) -> dict[str, Any]:
    variants = {
        "pounce 1 worker": lambda p: pounce_argv(ctx.vpy, "bigstate", p),
        "pounce 4 thread workers": lambda p: pounce_argv(
            ctx.vpy, "bigstate", p, "--workers", "4", "--worker-type", "thread"),
        "pounce 4 process workers": lambda p: pounce_argv(
            ctx.vpy, "bigstate", p, "--workers", "4", "--worker-type", "process"),
        "uvicorn 4 workers": lambda p: uvicorn_argv(ctx.vpy, "bigstate", p, 4),
    }
    rows = []
    for label, argv in variants.items():
        with serving(ctx, f"memory-{label.replace(' ', '-')}", argv, "bigstate") as srv:
            idle = _settled_pss(srv.proc.pid)
            sampler = harness.MemorySampler(srv.proc.pid, interval=0.25)
            sampler.start()
            try:
                wrk(srv.port, ctx.opt, duration=min(3.0, ctx.opt.duration))
            finally:
                sampler.stop()
            peak = sampler.peak()
        rows.append({"server": label, "command": shlex.join(srv.argv), **idle,
                     "peak_pss_kb": peak["peak_pss_kb"]})
        log(f"memory {label}: idle PSS {idle['pss_kb'] / 1024:.0f} MB, "
            f"peak {(peak['peak_pss_kb'] or 0) / 1024:.0f} MB")
    base = rows[0]["pss_kb"]
    for row in rows:
        row["x_one_worker"] = round(row["pss_kb"] / base, 2) if base else None
    return {"rows": rows}


@dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0  # sent, no complete response (or a non-200)
    connect_errors: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


async def _one_connection(port: int, stop_at: float, stats: LoadStats) -> None:
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < stop_at:
        if writer is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port), timeout=5)
            except (TimeoutError, OSError) as exc:
                stats.connect_errors += 1
                stats.errors.append(f"connect: {exc!r}")
                await asyncio.sleep(0.01)
                continue
        assert reader is not None
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await asyncio.wait_for(reader.readexactly(length), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, AttributeError) as exc:
            stats.failed += 1
            stats.errors.append(f"request: {exc!r}")
            writer.close()
            writer = None
            continue
        if head.startswith(b"HTTP/1.1 200"):
            stats.ok += 1
        else:
            stats.failed += 1
            stats.errors.append(f"status: {head[:20]!r}")
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            writer.close()  # honour Connection: close, as every client does
            writer = None
            stats.reconnects += 1
    if writer is not None:
        writer.close()


def _load_thread(port: int, seconds: float, connections: int, stats: LoadStats) -> None:
    async def main() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_one_connection(port, stop_at, stats) for _ in range(connections)))

    asyncio.run(main())


def section_reload(ctx: Context) -> dict[str, Any]:
    rows = []
    for mode in ("thread", "process"):
        def argv(port: int, mode: str = mode) -> list[str]:
            return pounce_argv(ctx.vpy, "hello", port, "--workers", "2", "--worker-type",
                               mode, level="info")
        with serving(ctx, f"reload-{mode}", argv, "hello") as srv:
            stats = LoadStats()
            load = threading.Thread(
                target=_load_thread, args=(srv.port, ctx.opt.reload_seconds, 64, stats))
            started = time.monotonic()
            load.start()
            done = 0
            deadline = started + ctx.opt.reload_seconds - 1.0
            time.sleep(0.5)  # the load is running; this only spaces the first reload
            for i in range(10):
                if time.monotonic() >= deadline:
                    break
                os.kill(srv.proc.pid, signal.SIGHUP)
                while time.monotonic() < deadline:  # wait for the server to report it
                    if srv.log_text().count("Reload complete") > i:
                        done += 1
                        break
                    time.sleep(0.05)
                else:
                    break
                time.sleep(0.2)
            load.join(ctx.opt.reload_seconds + 30)
            elapsed = time.monotonic() - started
        rows.append({
            "mode": f"2 {mode} workers", "command": shlex.join(srv.argv),
            "reloads_completed": done, "seconds": round(elapsed, 1), "ok": stats.ok,
            "failed": stats.failed, "connect_errors": stats.connect_errors,
            "reconnects": stats.reconnects, "first_errors": stats.errors[:5],
        })
        log(f"reload {mode}: {done} reloads, {stats.ok} ok, {stats.failed} failed, "
            f"{stats.connect_errors} connect errors")
    return {"rows": rows}


def section_cpu(ctx: Context) -> dict[str, Any]:
    rows = []
    for n in (1, 2, 4):
        def argv(port: int, n: int = n) -> list[str]:
            return pounce_argv(ctx.vpy, "cpu", port, "--workers", str(n), "--worker-type",
                               "thread")
        with serving(ctx, f"cpu-{n}", argv, "cpu") as srv:
            warm(srv.port, ctx.opt)
            result = wrk(srv.port, ctx.opt)
        rows.append({"workers": n, "rps": result["rps"], "command": shlex.join(srv.argv)})
        log(f"cpu {n} thread workers: {result['rps']:.0f} req/s")
    base = rows[0]["rps"]
    for row in rows:
        row["scaling"] = round(row["rps"] / base, 2) if base else None
    return {"rows": rows}


# ---------------------------------------------------------------------------
# report


@dataclass
class Context:
    opt: argparse.Namespace
    vpy: Path
    cpu_iters: int
    log_dir: Path


def render(meta: dict[str, Any], res: dict[str, Any]) -> str:
    out = [f"# Worker benchmarks {meta['stamp']}", "",
           f"{meta['python']} ({meta['build']}), {meta['cpus']} CPUs, wrk -t{meta['threads']} "
           f"-c{meta['connections']}, {meta['duration']} s per run", ""]
    if "balance" in res:
        out += ["## Balance: 4 workers, 64 keep-alive connections", "",
                "| mode | req/s | requests per worker | busiest/idlest | target <= 1.25 |",
                "|---|---:|---|---:|---|"]
        for r in res["balance"]["rows"]:
            ratio = r["busiest_over_idlest"]
            mark = "—" if ratio is None else ("✅" if ratio <= 1.25 else "❌")
            out.append(f"| {r['mode']} | {r['rps']:.0f} | {r['per_worker']} | "
                       f"{ratio if ratio is not None else '—'} | {mark} |")
        out.append("")
    if "accept" in res:
        out += ["## Accept paths, hello", "", "| workers + accept | req/s | errors |",
                "|---|---:|---:|"]
        out += [f"| {r['mode']} | {r['rps']:.0f} | {r['errors']} |"
                for r in res["accept"]["rows"]]
        out.append("")
    if "process" in res:
        p = res["process"]
        mark = "✅" if (p["ratio"] or 0) >= 1.0 else "❌"
        out += ["## --workers 2, process mode, hello", "",
                f"Pounce {p['median']['pounce']:.0f} req/s, Uvicorn (httptools+uvloop) "
                f"{p['median']['uvicorn']:.0f} req/s: **{p['ratio']}x** {mark} (target >= 1.0; "
                f"runs: pounce {[round(x) for x in p['runs']['pounce']]}, uvicorn "
                f"{[round(x) for x in p['runs']['uvicorn']]})", ""]
    if "memory" in res:
        out += ["## Memory, bigstate (100 MB of objects), whole process tree", "",
                "| server | processes | idle PSS MB | x 1 worker | peak PSS under load MB |",
                "|---|---:|---:|---:|---:|"]
        for r in res["memory"]["rows"]:
            out.append(f"| {r['server']} | {r['processes']} | {r['pss_kb'] / 1024:.0f} | "
                       f"{r['x_one_worker']} | {(r['peak_pss_kb'] or 0) / 1024:.0f} |")
        out.append("")
    if "reload" in res:
        out += ["## Rolling reloads under load (64 keep-alive connections)", "",
                "| mode | reloads | seconds | ok | failed | connect errors | reconnects |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['mode']} | {r['reloads_completed']} | {r['seconds']} | {r['ok']} | "
                f"{r['failed']} | {r['connect_errors']} | {r['reconnects']} |"
                for r in res["reload"]["rows"]]
        out.append("")
    if "cpu" in res:
        out += ["## CPU scaling, cpu app (~1 ms pure Python per request), thread workers", "",
                "| thread workers | req/s | x 1 worker |", "|---:|---:|---:|"]
        out += [f"| {r['workers']} | {r['rps']:.0f} | {r['scaling']} |"
                for r in res["cpu"]["rows"]]
        out.append("")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default="python3", help="interpreter for the servers")
    p.add_argument("--setup", action="store_true", help="(re)run setup.sh first")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma list of sections: {','.join(SECTIONS)}")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per run (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (1)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the process comparison")
    p.add_argument("--reload-seconds", type=float, default=20.0,
                   help="length of the reload-under-load run (20; at most 60)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=15.0)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    args.reload_seconds = min(args.reload_seconds, 60.0)
    return args


def main(argv: list[str] | None = None) -> int:
    opt = parse_args(argv)
    sections = harness._split(opt.only, SECTIONS, "sections")
    vpy = harness.ensure_env(opt.python, opt.setup)
    probe = harness.probe_venv(vpy)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = harness.WORK / "logs" / f"workers-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    cpu_iters = harness.calibrate_cpu(vpy) if "cpu" in sections else 1
    ctx = Context(opt, vpy, cpu_iters, log_dir)
    build = ("free-threaded, GIL " + ("enabled" if probe["gil_enabled"] else "disabled")
             if probe["free_threaded_build"] else "GIL build")
    meta = {"stamp": stamp, "python": f"Python {probe['python']}", "build": build,
            "cpus": os.cpu_count(), "threads": opt.threads, "connections": opt.connections,
            "duration": opt.duration, "cpu_iters": cpu_iters,
            "argv": [sys.executable, *sys.argv]}
    res: dict[str, Any] = {}
    if "balance" in sections or "accept" in sections:
        res["balance"] = section_balance(ctx)
    if "accept" in sections:
        res["accept"] = section_accept(ctx, res.get("balance"))
    if "balance" not in sections:
        res.pop("balance", None)
    if "process" in sections:
        res["process"] = section_process(ctx)
    if "memory" in sections:
        res["memory"] = section_memory(ctx)
    if "reload" in sections:
        res["reload"] = section_reload(ctx)
    if "cpu" in sections:
        res["cpu"] = section_cpu(ctx)
    text = render(meta, res)
    print(text)
    if not opt.no_save:
        harness.RESULTS.mkdir(parents=True, exist_ok=True)
        base = harness.RESULTS / f"workers-{stamp}"
        base.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "results": res}, indent=2, default=str) + "\n")
        base.with_suffix(".md").write_text(text + "\n")
        log(f"wrote {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
