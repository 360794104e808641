#!/usr/bin/env python3
"""Side-by-side benchmark runner: Pounce against its peers.

    python benchmarks/run.py --quick                 # every server x every app, 3 s each
    python benchmarks/run.py --apps hello,echo --servers pounce,uvicorn
    python benchmarks/run.py --workers 2             # pass --workers 2 to every server
    python benchmarks/run.py --python python3.14t    # another interpreter (own venv)
    python benchmarks/run.py --self-check            # 1 s smoke test of the harness itself
    python benchmarks/run.py --apps ws,tls           # WebSocket echo and TLS rows
    python benchmarks/run.py --pounce-ref main~5     # an older Pounce as server pounce-ref

For each app x server: start the server on a free 127.0.0.1 port, wait until it
accepts connections, check one response is correct, warm up, run the load
(``wrk`` for HTTP and HTTPS, ``benchmarks/ws_load.py`` for WebSocket), sample
the memory (RSS and PSS, summed over the server's process tree) while it runs,
stop it (SIGTERM, bounded wait, SIGKILL).  Prints Markdown tables (req/s or
msgs/s, ratio to the Uvicorn baseline, p50/p99, errors, peak memory, target
marks) and writes ``benchmarks/results/<timestamp>.json`` and ``.md``.

Only the standard library is used here; the servers run from the virtualenv
made by ``benchmarks/setup.sh`` (created automatically when missing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
HOST = "127.0.0.1"

sys.path.insert(0, str(HERE))
import ws_load  # noqa: E402  (next to this file; standard library only)

HTTP_APPS = ("hello", "body64k", "echo", "stream", "cpu", "bigstate")
# WebSocket rows: the benchmark app ws_echo with messages of this many bytes.
WS_APPS = {"ws_echo16": 16, "ws_echo64k": 64 * 1024}
# HTTPS rows serve the hello app; *_close sends `Connection: close`, so every
# request pays a full TLS handshake (wrk does not resume sessions).
TLS_APPS = ("tls_hello", "tls_hello_close")
# HTTP/2 rows (h2load): app -> (benchmarks/apps.py app, TLS?, connections, streams per
# connection). hello: 100 concurrent streams over 4 connections (h2c by prior knowledge, and
# over TLS by ALPN); download: a 1 MiB response on 10 streams of one connection (flow control).
H2_APPS = {
    "h2_hello": ("hello", False, 4, 25),
    "h2_tls_hello": ("hello", True, 4, 25),
    "h2_download": ("download1m", False, 1, 10),
}
APPS = (*HTTP_APPS, *WS_APPS, *TLS_APPS, *H2_APPS)
APP_GROUPS = {
    "http": HTTP_APPS,
    "ws": tuple(WS_APPS),
    "tls": TLS_APPS,
    "h2": tuple(H2_APPS),
    "all": APPS,
}
ECHO_BODY_SIZE = 16 * 1024
X = "\u00d7"  # multiplication sign for ratios
# Ratios are req/s (msgs/s) divided by this server's figure, per kind of app.
BASELINES = {"http": "uvicorn", "tls": "uvicorn", "ws": "uvicorn-websockets", "h2": "hypercorn"}
BASELINE = BASELINES["http"]
TARGET_SERVER = "pounce"
REF_SERVER = "pounce-ref"  # an older Pounce (--pounce-ref) run side by side with this tree


def app_kind(app: str) -> str:
    """'http', 'ws' or 'tls': which load generator, check and server flags a row needs."""
    if app in WS_APPS:
        return "ws"
    if app in TLS_APPS:
        return "tls"
    if app in H2_APPS:
        return "h2"
    return "http"


def needs_tls(app: str) -> bool:
    return app in TLS_APPS or (app in H2_APPS and H2_APPS[app][1])


def asgi_app(app: str) -> str:
    """The benchmarks/apps.py attribute a row serves."""
    kind = app_kind(app)
    if kind == "h2":
        return H2_APPS[app][0]
    return "ws_echo" if kind == "ws" else "hello" if kind == "tls" else app


# (app or "*", peer, minimum ratio of TARGET_SERVER req/s to peer req/s)
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("hello", "uvicorn", 1.0),
    ("hello", "uvicorn-h11", 1.5),
    ("hello", "hypercorn", 1.5),
    ("*", "uvicorn", 0.9),
    ("h2_hello", "hypercorn", 2.0),
    ("h2_tls_hello", "hypercorn", 2.0),
)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# servers


@dataclass(frozen=True)
class Tls:
    """The run's certificate: server cert/key and the CA a checking client trusts."""

    certfile: Path
    keyfile: Path
    cafile: Path
    key_type: str


@dataclass(frozen=True)
class Server:
    name: str
    description: str
    requires: tuple[str, ...]  # modules that must import in the venv
    kinds: frozenset[str] = frozenset({"http"})  # app kinds it is measured on
    # Put first on the server's PYTHONPATH: how pounce-ref imports an older tree.
    pythonpath: str | None = None
    extra: tuple[str, ...] = field(default=())  # more flags, e.g. uvicorn --ws wsproto

    def argv(
        self,
        python: str,
        app: str,
        port: int,
        workers: int | None,
        tls: Tls | None = None,
    ) -> list[str]:
        kind = app_kind(app)
        target = f"apps:{asgi_app(app)}"
        w: list[str] = []
        tls_flags: list[str] = []
        if needs_tls(app):
            if tls is None:
                raise RuntimeError("no certificate for a TLS row")
            if self.name == "hypercorn":
                tls_flags = ["--certfile", str(tls.certfile), "--keyfile", str(tls.keyfile)]
            else:  # pounce and uvicorn spell them alike
                tls_flags = ["--ssl-certfile", str(tls.certfile), "--ssl-keyfile", str(tls.keyfile)]
        if self.name.startswith("pounce"):
            cmd = [
                python,
                "-m",
                "pounce",
                target,
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            if self.name == "pounce-h11":
                cmd += ["--http", "h11"]
            if kind == "ws":
                cmd += ["--ws", "auto"]
            if workers:
                w = ["--workers", str(workers)]
            return [*cmd, *self.extra, *tls_flags, *w]
        if self.name.startswith("uvicorn"):
            cmd = [
                python,
                "-m",
                "uvicorn",
                target,
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            if self.name == "uvicorn-h11":
                cmd += ["--http", "h11", "--loop", "asyncio"]
            else:  # uvicorn and its WebSocket variants (extra = --ws ...)
                cmd += ["--http", "httptools", "--loop", "uvloop"]
            if workers:
                w = ["--workers", str(workers)]
            return [*cmd, *self.extra, *tls_flags, *w]
        if self.name == "hypercorn":
            # Hypercorn has no access log unless --access-logfile is given.
            if workers:
                w = ["--workers", str(workers)]
            if kind == "h2":
                # Hypercorn closes a connection after 1000 requests by default, which h2load
                # counts as errors for every stream still to come: lift that cap.
                w += ["--config", f"python:{HYPERCORN_H2_CONFIG}"]
            return [
                python,
                "-m",
                "hypercorn",
                "-k",
                "asyncio",
                "-b",
                f"{HOST}:{port}",
                "--log-level",
                "warning",
                *tls_flags,
                *w,
                target,
            ]
        if self.name == "granian":
            if workers:
                w = ["--workers", str(workers)]
            return [
                python,
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                *w,
                target,
            ]
        raise ValueError(self.name)


ALL_KINDS = frozenset({"http", "ws", "tls", "h2"})
#: benchmarks/hypercorn_h2.py: the module Hypercorn's --config python: loads for h2 rows.
HYPERCORN_H2_CONFIG = "hypercorn_h2"
_UVICORN_C = ("uvicorn", "httptools", "uvloop")
SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("pounce", "pounce, default HTTP/1 implementation", ("pounce",), ALL_KINDS),
        Server("pounce-h11", "pounce --http h11", ("pounce",)),
        Server(
            "pounce-asyncio",
            "pounce --loop asyncio (the plain install, without uvloop)",
            ("pounce",),
            ALL_KINDS,
            extra=("--loop", "asyncio"),
        ),
        Server(
            "uvicorn",
            "uvicorn --http httptools --loop uvloop",
            _UVICORN_C,
            frozenset({"http", "tls"}),
        ),
        Server("uvicorn-h11", "uvicorn --http h11 --loop asyncio", ("uvicorn", "h11")),
        Server(
            "uvicorn-websockets",
            "uvicorn --http httptools --loop uvloop --ws websockets",
            (*_UVICORN_C, "websockets"),
            frozenset({"ws"}),
            extra=("--ws", "websockets"),
        ),
        Server(
            "uvicorn-ws-sansio",
            "uvicorn --http httptools --loop uvloop --ws websockets-sansio (what --ws auto picks)",
            (*_UVICORN_C, "websockets"),
            frozenset({"ws"}),
            extra=("--ws", "websockets-sansio"),
        ),
        Server(
            "uvicorn-wsproto",
            "uvicorn --http httptools --loop uvloop --ws wsproto",
            (*_UVICORN_C, "wsproto"),
            frozenset({"ws"}),
            extra=("--ws", "wsproto"),
        ),
        Server("hypercorn", "hypercorn -k asyncio", ("hypercorn",), ALL_KINDS),
        Server("granian", "granian --interface asgi (Rust core)", ("granian",)),
    )
}
DISTS = (
    "pounce",
    "uvicorn",
    "httptools",
    "uvloop",
    "h11",
    "websockets",
    "wsproto",
    "hypercorn",
    "granian",
    "trustme",
)


# ---------------------------------------------------------------------------
# environment: interpreter, venv, wrk


def python_tag(python: str) -> str:
    code = (
        "import sys, sysconfig; v = sys.version_info; "
        "ft = sysconfig.get_config_var('Py_GIL_DISABLED'); "
        "print(f'{v[0]}.{v[1]}' + ('t' if ft else ''))"
    )
    return subprocess.run(
        [python, "-c", code], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def ensure_env(python: str, force_setup: bool) -> Path:
    venv = WORK / f"venv-{python_tag(python)}"
    vpy = venv / "bin" / "python"
    if force_setup or not vpy.exists() or not _have_wrk():
        log(f"running setup.sh --python {python}")
        subprocess.run(
            ["bash", str(HERE / "setup.sh"), "--python", python],
            check=True,
            timeout=1800,
            stdout=subprocess.DEVNULL,
        )
    if not vpy.exists():
        raise SystemExit(f"no virtualenv at {venv}: run benchmarks/setup.sh --python {python}")
    if not _have_wrk():
        raise SystemExit("wrk not found: run benchmarks/setup.sh")
    return vpy


def _have_wrk() -> bool:
    return any((Path(p) / "wrk").exists() for p in os.environ.get("PATH", "").split(os.pathsep))


_PROBE = r"""
import importlib.util, importlib.metadata as md, json, sys, sysconfig
mods, dists = sys.argv[1].split(","), sys.argv[2].split(",")
def ver(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return None
def has(m):
    try:
        return importlib.util.find_spec(m) is not None
    except Exception:
        return False
gil = getattr(sys, "_is_gil_enabled", lambda: True)()
print(json.dumps({
    "modules": {m: has(m) for m in mods},
    "versions": {d: ver(d) for d in dists},
    "python": sys.version.split()[0],
    "implementation": sys.implementation.name,
    "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "gil_enabled": gil,
    "executable": sys.executable,
}))
"""


def probe_venv(vpy: Path) -> dict[str, Any]:
    mods = sorted({m for s in SERVERS.values() for m in s.requires} | {"pounce.__main__"})
    out = subprocess.run(
        [str(vpy), "-c", _PROBE, ",".join(mods), ",".join(DISTS)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
    )
    return json.loads(out.stdout)


def calibrate_cpu(vpy: Path) -> int:
    out = subprocess.run(
        [str(vpy), "-c", "import apps; print(apps.calibrate(0.001, 25))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
        env={**os.environ, "BENCH_BIGSTATE_MB": "0", "BENCH_CPU_ITERS": "1"},
    )
    return int(out.stdout.strip())


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    wrk_version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        wrk_version = (r.stdout + r.stderr).splitlines()[0].split(" Copyright")[0].strip()
    return {
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "hostname": platform.node(),
        "wrk": wrk_version,
    }


# ---------------------------------------------------------------------------
# an older Pounce side by side (--pounce-ref)


def resolve_pounce_ref(value: str) -> tuple[Path, str]:
    """(directory to put on PYTHONPATH, description) for ``--pounce-ref``.

    A directory is used as it is (a checkout or ``git worktree`` holding
    ``src/pounce``, or a ``src`` directory itself).  Anything else is a git
    revision of this repository: its ``src`` tree is exported once with
    ``git archive`` into ``.work/pounce-ref-<commit>/`` -- no worktree is
    registered, nothing in the repository changes, and a second run reuses it.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        for src in (path / "src", path):
            if (src / "pounce" / "__init__.py").is_file():
                return src.resolve(), f"pounce from {src.resolve()}"
        raise SystemExit(f"--pounce-ref {value}: no pounce package under {path} or {path}/src")
    r = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{value}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise SystemExit(
            f"--pounce-ref {value}: neither a directory nor a git revision of {REPO} "
            "(give a commit, branch, tag, or the path of a checkout)"
        )
    commit = r.stdout.strip()
    dest = WORK / f"pounce-ref-{commit[:12]}"
    if not (dest / "src" / "pounce" / "__init__.py").is_file():
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src"],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        tmp = Path(tempfile.mkdtemp(prefix=f".pounce-ref-{commit[:12]}-", dir=WORK))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        if dest.exists():  # a half-made copy from an interrupted run
            shutil.rmtree(dest)
        tmp.rename(dest)
    subject = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s", commit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    at = subject[:72] if commit.startswith(value) else f"{value} = {subject[:72]}"
    return (dest / "src").resolve(), f"pounce at {at}"


def add_pounce_ref(value: str, vpy: Path) -> dict[str, str]:
    """Register server pounce-ref and prove its interpreter imports the old tree."""
    src, description = resolve_pounce_ref(value)
    out = subprocess.run(
        [str(vpy), "-c", "import pounce, pounce.__main__; print(pounce.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])},
        check=False,
    )
    imported = Path(out.stdout.strip() or "?")
    if out.returncode != 0 or not imported.is_relative_to(src):
        raise SystemExit(
            f"--pounce-ref {value}: the venv does not import pounce from {src} "
            f"(got {imported}; {out.stderr.strip()[-300:]})"
        )
    SERVERS[REF_SERVER] = Server(
        REF_SERVER, description, ("pounce",), ALL_KINDS, pythonpath=str(src)
    )
    return {"ref": value, "pythonpath": str(src), "imports": str(imported), "what": description}


# ---------------------------------------------------------------------------
# TLS certificate (one per run)


_MAKE_CERT = r"""
import sys, trustme
out, kind = sys.argv[1], sys.argv[2]
ca = trustme.CA(key_type=getattr(trustme.KeyType, kind.upper()))
leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=getattr(trustme.KeyType, kind.upper()))
leaf.private_key_pem.write_to_path(f"{out}/key.pem")
with open(f"{out}/cert.pem", "wb") as f:
    for pem in leaf.cert_chain_pems:
        f.write(pem.bytes())
ca.cert_pem.write_to_path(f"{out}/ca.pem")
"""


def make_certificate(vpy: Path, key_type: str, stamp: str) -> Tls:
    """A fresh CA and a 127.0.0.1 leaf under .work/tls-<stamp>/, made with trustme in the venv."""
    out = WORK / f"tls-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [str(vpy), "-c", _MAKE_CERT, str(out), key_type],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(
            "could not make the TLS certificate with trustme "
            f"(run benchmarks/setup.sh --force): {r.stderr.strip()[-300:]}"
        )
    return Tls(out / "cert.pem", out / "key.pem", out / "ca.pem", key_type)


# ---------------------------------------------------------------------------
# process tree: memory + cpu


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry.name))
    return kids


def process_tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in KiB from /proc/<pid>/smaps_rollup (0, 0 if gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def tree_cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


class MemorySampler(threading.Thread):
    """Samples RSS/PSS summed over a process tree until stopped."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.samples: list[tuple[float, int, int, int]] = []  # t, nprocs, rss KiB, pss KiB
        self._stop_evt = threading.Event()

    def sample(self) -> tuple[int, int, int]:
        pids = process_tree(self.root)
        rss = pss = 0
        for pid in pids:
            r, p = _rollup(pid)
            rss, pss = rss + r, pss + p
        self.samples.append((time.monotonic(), len(pids), rss, pss))
        return len(pids), rss, pss

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)

    def peak(self) -> dict[str, Any]:
        if not self.samples:
            return {"peak_rss_kb": None, "peak_pss_kb": None, "processes": None, "samples": 0}
        return {
            "peak_rss_kb": max(s[2] for s in self.samples),
            "peak_pss_kb": max(s[3] for s in self.samples),
            "processes": max(s[1] for s in self.samples),
            "samples": len(self.samples),
        }


# ---------------------------------------------------------------------------
# wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Parse ``wrk --latency`` output.  Raises ValueError when it is unusable."""
    res: dict[str, Any] = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise ValueError("no Requests/sec line in wrk output")
    res["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out, re.M)
    if m:
        res["requests"] = int(m.group(1))
        res["elapsed_ms"] = _ms(m.group(2))
        res["read"] = m.group(3)
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"^\s+Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out, re.M)
    if m:
        res["avg_ms"], res["stdev_ms"], res["max_ms"] = (_ms(g) for g in m.groups())
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = (
        dict(
            zip(("connect", "read", "write", "timeout"), (int(g) for g in m.groups()), strict=True)
        )
        if m
        else {}
    )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    res["errors"] = res["non_2xx"] + sum(res["socket_errors"].values())
    if "p50_ms" not in res or "p99_ms" not in res:
        raise ValueError("no latency distribution in wrk output (missing --latency?)")
    return res


def post_script() -> Path:
    path = WORK / "post16k.lua"
    text = (
        "-- generated by benchmarks/run.py: POST a 16 KiB body\n"
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("b", {ECHO_BODY_SIZE})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    WORK.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def wrk_argv(port: int, app: str, duration: float, threads: int, conns: int) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency"]
    if app == "echo":
        argv += ["-s", str(post_script())]
    if app == "tls_hello_close":
        argv += ["-H", "Connection: close"]
    scheme = "https" if app_kind(app) == "tls" else "http"
    return [*argv, f"{scheme}://{HOST}:{port}/"]


def h2load_argv(port: int, app: str, duration: float) -> list[str]:
    _, tls, conns, streams = H2_APPS[app]
    scheme = "https" if tls else "http"
    return [
        "h2load", "-c", str(conns), "-m", str(streams), "-D", str(max(1, round(duration))),
        f"{scheme}://{HOST}:{port}/",
    ]


def parse_h2load(out: str) -> dict[str, Any]:
    """Parse h2load's summary (req/s, failures, status codes); it reports no percentiles."""
    m = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+\w+)/s", out, re.M)
    if not m:
        raise ValueError("no 'finished in' line in h2load output")
    res: dict[str, Any] = {"rps": float(m.group(2)), "read": m.group(3) + "/s"}
    m = re.search(
        r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout", out, re.M,
    )
    if not m:
        raise ValueError("no 'requests:' line in h2load output")
    res["requests"] = int(m.group(3))
    res["socket_errors"] = {"failed": int(m.group(4)), "errored": int(m.group(5)),
                            "timeout": int(m.group(6))}
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    res["non_2xx"] = sum(int(g) for g in m.groups()[2:]) if m else 0
    m = re.search(r"^time for request:\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out, re.M)
    res["p50_ms"] = res["p99_ms"] = None
    if m:
        res["min_ms"], res["max_ms"], res["avg_ms"] = (_ms(g) for g in m.groups())
    res["errors"] = res["non_2xx"] + res["socket_errors"]["failed"]
    return res


def run_h2load(argv: list[str], duration: float) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if r.returncode != 0 or "finished in" not in r.stdout:
        raise RuntimeError(f"h2load exited {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}")
    return r.stdout


def ws_load_argv(
    vpy: Path, port: int, app: str, duration: float, conns: int, *, processes: int = 1
) -> list[str]:
    """ws_load.py runs in the servers' venv, where uvloop usually is."""
    return [
        str(vpy),
        str(HERE / "ws_load.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--size",
        str(WS_APPS[app]),
        "--connections",
        str(conns),
        "--duration",
        f"{duration:g}",
        "--processes",
        str(processes),
    ]


def run_ws_load(argv: list[str], duration: float) -> dict[str, Any]:
    """Run ws_load.py; its JSON in the same shape as parse_wrk's result (rps = msgs/s)."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"ws_load exited {r.returncode}: {r.stderr.strip()[-300:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {
        **out,
        "rps": out["msgs_per_s"],
        "requests": out["messages"],
        "socket_errors": out["error_kinds"],
        "non_2xx": 0,
    }


def run_wrk(argv: list[str], duration: float) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited {r.returncode}: {r.stderr.strip()[:300]}")
    return r.stdout


# ---------------------------------------------------------------------------
# one server x app measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before accepting connections")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"did not accept connections within {timeout:.0f}s")


def check_response(port: int, app: str, tls: Tls | None = None) -> None:
    """One request (one echo) with a real client: a broken server must not post a record."""
    kind = app_kind(app)
    if kind == "ws":
        ws_load.check_echo(HOST, port, WS_APPS[app])
        return
    if kind == "h2":
        # One request over HTTP/2 (h2c prior knowledge or ALPN h2), checked by h2load itself.
        scheme = "https" if needs_tls(app) else "http"
        r = subprocess.run(
            ["h2load", "-n", "1", "-c", "1", "-v", f"{scheme}://{HOST}:{port}/"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if "1 succeeded" not in r.stdout or "1 2xx" not in r.stdout:
            raise RuntimeError(f"sanity request over HTTP/2 failed: {r.stdout.strip()[-300:]}")
        if app == "h2_download" and "1048576" not in r.stdout.replace(",", ""):
            size = re.search(r"traffic: .*?(\d+) bytes data", r.stdout)
            if size is None or int(size.group(1)) < 1024 * 1024:
                raise RuntimeError("sanity request: the download is not 1 MiB")
        return
    conn: http.client.HTTPConnection
    if kind == "tls":
        assert tls is not None
        # Verifies the chain and the 127.0.0.1 name against the run's own CA.
        ctx = ssl.create_default_context(cafile=str(tls.cafile))
        conn = http.client.HTTPSConnection(HOST, port, timeout=10, context=ctx)
        app = "hello"
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        if app == "echo":
            payload = os.urandom(ECHO_BODY_SIZE)
            conn.request(
                "POST", "/", body=payload, headers={"Content-Type": "application/octet-stream"}
            )
        else:
            payload = b""
            conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"sanity request: HTTP {resp.status}")
    expected = {"body64k": 64 * 1024, "stream": 100 * 1024, "echo": ECHO_BODY_SIZE}
    if app == "echo" and body != payload:
        raise RuntimeError(f"sanity request: echo body mismatch ({len(body)} bytes back)")
    if app in expected and len(body) != expected[app]:
        raise RuntimeError(f"sanity request: {len(body)} body bytes, expected {expected[app]}")
    if app in ("hello", "cpu", "bigstate") and body != b"Hello, world!":
        raise RuntimeError(f"sanity request: unexpected body {body[:40]!r}")


def stop_server(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    info: dict[str, Any] = {"signal": "SIGTERM"}
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            info["signal"] = "SIGKILL"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: the server's tree
            proc.wait(timeout=10)
    # Workers the main process left behind (same session) get a short grace period.
    for _ in range(40):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        info["stragglers_killed"] = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    info["seconds"] = round(time.monotonic() - t0, 2)
    info["returncode"] = proc.returncode
    return info


def read_counts(path: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(path.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(f.read_text())
            for tid, n in sorted(data["threads"].items()):
                rows.append({"pid": data["pid"], "thread": int(tid), "requests": n})
    return rows


@dataclass
class Options:
    duration: float
    warmup: float
    threads: int
    connections: int
    workers: int | None
    startup_timeout: float
    stop_timeout: float
    cpu_iters: int
    log_dir: Path
    tls: Tls | None = None
    ws_client_processes: int = 1


def measure(server: Server, app: str, vpy: Path, opt: Options) -> dict[str, Any]:
    port = free_port()
    kind = app_kind(app)
    argv = server.argv(str(vpy), app, port, opt.workers, opt.tls)
    counts_dir = Path(tempfile.mkdtemp(prefix=f"counts-{server.name}-{app}-", dir=WORK))
    pythonpath = [server.pythonpath, str(HERE), os.environ.get("PYTHONPATH")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, pythonpath)),
        "PYTHONUNBUFFERED": "1",
        "BENCH_CPU_ITERS": str(opt.cpu_iters),
        "BENCH_BIGSTATE_MB": "100" if app == "bigstate" else "0",
        "BENCH_COUNTS_DIR": str(counts_dir),
    }
    env.pop("VIRTUAL_ENV", None)
    logfile = opt.log_dir / f"{server.name}-{app}.log"
    res: dict[str, Any] = {
        "server": server.name,
        "app": app,
        "port": port,
        "kind": kind,
        "argv": [shlex.quote(a) for a in argv],
        "log": str(logfile),
        "status": "ok",
    }
    if server.pythonpath:
        res["pythonpath"] = server.pythonpath

    def load(seconds: float) -> tuple[list[str], dict[str, Any], str]:
        if kind == "ws":
            largv = ws_load_argv(
                vpy, port, app, seconds, opt.connections, processes=opt.ws_client_processes
            )
            return largv, run_ws_load(largv, seconds), ""
        if kind == "h2":
            largv = h2load_argv(port, app, seconds)
            out = run_h2load(largv, seconds)
            return largv, parse_h2load(out), out
        largv = wrk_argv(port, app, seconds, opt.threads, opt.connections)
        out = run_wrk(largv, seconds)
        return largv, parse_wrk(out), out

    with open(logfile, "wb") as lf:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=HERE,
            env=env,
            stdout=lf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler = MemorySampler(proc.pid)
        try:
            wait_listening(proc, port, opt.startup_timeout)
            res["startup_s"] = round(time.monotonic() - t0, 2)
            try:
                check_response(port, app, opt.tls)
            except Exception as exc:
                res["check_failed"] = True
                raise RuntimeError(f"correctness check: {exc or type(exc).__name__}") from exc
            time.sleep(0.2)  # let forked/spawned workers finish importing
            _, rss, pss = sampler.sample()
            res["idle_rss_kb"], res["idle_pss_kb"] = rss, pss
            sampler.start()
            if opt.warmup > 0:
                load(opt.warmup)
            if proc.poll() is not None:
                raise RuntimeError(f"exited with status {proc.returncode} during warm-up")
            pids = process_tree(proc.pid)
            cpu0, w0 = tree_cpu_seconds(pids), time.monotonic()
            largv, result, out = load(opt.duration)
            wall = time.monotonic() - w0
            res["server_cpu_pct"] = round(
                100 * (tree_cpu_seconds(process_tree(proc.pid)) - cpu0) / wall, 1
            )
            # "wrk" keeps its name for every kind (same keys; rps = msgs/s for WebSocket)
            # so that readers of older result files need no change.
            res["load_tool"] = {"ws": "ws_load", "h2": "h2load"}.get(kind, "wrk")
            res["wrk_argv"] = largv
            if out:
                res["wrk_output"] = out
            res["wrk"] = result
            if proc.poll() is not None:
                raise RuntimeError(f"exited with status {proc.returncode} during the run")
        except Exception as exc:
            res["status"] = "failed"
            res["error"] = str(exc) or type(exc).__name__
        finally:
            if sampler.is_alive():
                sampler.stop()
            res["memory"] = sampler.peak()
            res["stop"] = stop_server(proc, opt.stop_timeout)
    res["workers_seen"] = read_counts(counts_dir)
    with contextlib.suppress(OSError):
        for f in counts_dir.iterdir():
            f.unlink()
        counts_dir.rmdir()
    if res["status"] != "ok":
        with contextlib.suppress(OSError):
            tail = logfile.read_text(errors="replace").strip().splitlines()[-6:]
            res["log_tail"] = tail
    return res


# ---------------------------------------------------------------------------
# report


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def _fmt_mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.0f} MB"


def _spread(r: dict[str, Any]) -> str:
    """' ±N%' (half the min-max range over the median) when several rounds ran."""
    rps = r.get("rounds_rps") or []
    if len(rps) < 2:
        return ""
    return f" ±{50 * (max(rps) - min(rps)) / statistics.median(rps):.0f}%"


def ratio_of(rows: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
    ra, rb = rows.get(a), rows.get(b)
    if not ra or not rb or ra["status"] != "ok" or rb["status"] != "ok":
        return None
    if not rb["wrk"]["rps"]:
        return None
    return ra["wrk"]["rps"] / rb["wrk"]["rps"]


def target_checks(app: str, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    if app_kind(app) not in ("http", "h2"):
        return []  # the targets are HTTP/1.1 ones; WebSocket and TLS rows are for comparison
    specific = [t for t in TARGETS if t[0] == app]
    checks = list(specific)
    for t in TARGETS:  # the generic floor applies unless a stricter one names the same peer
        if t[0] == "*" and app_kind(app) == "http" and not any(s[1] == t[1] for s in specific):
            checks.append(t)
    out = []
    for _, peer, minimum in checks:
        r = ratio_of(rows, TARGET_SERVER, peer)
        out.append(
            {
                "app": app,
                "server": TARGET_SERVER,
                "peer": peer,
                "min": minimum,
                "ratio": None if r is None else round(r, 3),
                "status": "n/a" if r is None else ("pass" if r >= minimum else "miss"),
            }
        )
    return out


def _mark(check: dict[str, Any]) -> str:
    if check["status"] == "n/a":
        return f"— ≥{check['min']:.1f}{X} {check['peer']} (not measured)"
    sym = "✅" if check["status"] == "pass" else "❌"
    return f"{sym} {check['ratio']:.2f}{X} {check['peer']} (≥{check['min']:.1f})"


def _errors(r: dict[str, Any]) -> str:
    w = r["wrk"]
    if not w["errors"]:
        return "0"
    parts = [f"{k} {v}" for k, v in w["socket_errors"].items() if v]
    if w["non_2xx"]:
        parts.insert(0, f"non-2xx {w['non_2xx']}")
    return f"{w['errors']} ({', '.join(parts)})"


def render(
    meta: dict[str, Any], results: list[dict[str, Any]], servers: list[str], apps: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    lines = ["# Pounce side-by-side benchmark", ""]
    env = meta["server_python"]
    gil = (
        "free-threaded, GIL disabled"
        if env["free_threaded_build"] and not env["gil_enabled"]
        else ("free-threaded build, GIL enabled" if env["free_threaded_build"] else "GIL build")
    )
    m = meta["machine"]
    lines += [
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- python (servers): {env['implementation']} {env['python']} ({gil}) — "
        f"`{env['executable']}`",
        f"- machine: nproc={m['nproc']}, {m['cpu_model'] or 'unknown CPU'}, "
        f"{m['mem_total_mb']} MB RAM, Linux {m['kernel']}; {m['wrk']}",
        f"- load: `wrk -t{meta['wrk_threads']} -c{meta['connections']} -d{meta['duration']:g}s "
        f"--latency` after a {meta['warmup']:g}s warm-up; echo POSTs {ECHO_BODY_SIZE // 1024} KiB; "
        f"client and servers share the same {m['nproc']} CPUs",
        f"- load average before the run: {meta['loadavg']} (other work on the machine "
        "skews absolute numbers)",
        f"- workers: {meta['workers'] or 'server default (flag not passed)'}; "
        + (
            f"cpu app: {meta['cpu_iters']} loop iterations/request (~1 ms); "
            if meta["cpu_iters"]
            else ""
        )
        + f"rounds: {meta['rounds']}"
        + (" (median req/s shown)" if meta["rounds"] > 1 else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
    ]
    kinds = {app_kind(a) for a in apps if any(r["app"] == a for r in results)}
    if "ws" in kinds:
        nproc = meta.get("ws_client_processes", 1)
        clients = "1 client process" if nproc == 1 else f"{nproc} client processes"
        lines.append(
            f"- WebSocket rows: `benchmarks/ws_load.py` ({clients}), "
            f"{meta['connections']} connections each "
            "sending one binary message and awaiting its echo, in a loop (messages/s, latency "
            "of one round trip); `client CPU` is the load generator's own CPU (100% = one core)"
        )
    if "tls" in kinds and meta.get("tls"):
        lines.append(
            f"- TLS rows: the `hello` app over HTTPS, one {meta['tls']['key_type'].upper()} "
            "certificate made for this run (trustme) and given to every server; "
            "`tls_hello` keeps connections alive, `tls_hello_close` sends `Connection: close`, "
            "so every request pays a full handshake (wrk does not resume sessions)"
        )
    ref = meta.get("pounce_ref")
    if ref:
        lines.append(
            f"- `{REF_SERVER}`: {ref['what']} (PYTHONPATH={ref['pythonpath']}); "
            f"`pounce` is this tree"
        )
    for name, why in meta["skipped"].items():
        lines.append(f"- **skipped {name}**: {why}")
    lines += [
        "",
        f"Ratios are req/s divided by `{BASELINE}` (httptools+uvloop) from the same run"
        + (f" (msgs/s divided by `{BASELINES['ws']}` for WebSocket)" if "ws" in kinds else "")
        + "; absolute numbers on a shared machine are noise, ratios are the signal. "
        f"Targets are checked for `{TARGET_SERVER}` only"
        + (", on the HTTP rows." if kinds - {"http"} else "."),
        "",
    ]

    dead = {tuple(d) for d in meta.get("dead", ())}
    checks_all: list[dict[str, Any]] = []
    for app in apps:
        rows = {r["server"]: r for r in results if r["app"] == app}
        if not rows:
            continue
        kind = app_kind(app)
        base = BASELINES[kind]
        unit = "msgs/s" if kind == "ws" else "req/s"
        with_ref = REF_SERVER in rows and rows[REF_SERVER]["status"] == "ok"
        checks = target_checks(app, rows)
        checks_all += checks
        head = [
            "server",
            unit,
            f"{X} {base}",
            *([f"{X} {REF_SERVER}"] if with_ref else []),
            "p50",
            "p99",
            "errors",
            "peak RSS",
            "peak PSS",
            "server CPU",
            *(["client CPU"] if kind == "ws" else []),
            *(["targets"] if kind in ("http", "h2") else []),
        ]
        title = {
            "ws": f"{app} (WebSocket echo, {WS_APPS.get(app, 0):,}-byte messages)",
            "tls": f"{app} (HTTPS"
            + (", new connection per request)" if app.endswith("_close") else ", keep-alive)"),
            "h2": f"{app} (HTTP/2, h2load -c {H2_APPS.get(app, ('', 0, 0, 0))[2]} "
            f"-m {H2_APPS.get(app, ('', 0, 0, 0))[3]}"
            + (", TLS)" if needs_tls(app) else ", cleartext prior knowledge)"),
        }.get(kind, app)
        lines += [
            f"## {title}",
            "",
            "| " + " | ".join(head) + " |",
            "|---|"
            + "---:|" * (len(head) - 2)
            + ("---|" if kind in ("http", "h2") else "---:|"),
        ]
        worker_notes = []
        for name in servers:
            r = rows.get(name)
            if r is None or name in meta["skipped"] or (name, kind) in dead:
                continue  # listed under "skipped" in the header
            if r["status"] != "ok":
                cells = ["FAILED", *[""] * (len(head) - 3), r.get("error", "")][: len(head) - 1]
                if kind not in ("http", "h2"):  # no targets column: the reason goes last
                    cells[-1] = r.get("error", "")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
                continue
            w, mem = r["wrk"], r["memory"]
            marks = ""
            if name == TARGET_SERVER:  # unmeasured targets are listed in the summary only
                marks = " · ".join(_mark(c) for c in checks if c["status"] != "n/a") or "—"

            def shown(peer: str, name: str = name, rows: dict[str, dict[str, Any]] = rows) -> str:
                ratio = ratio_of(rows, name, peer)
                return "—" if ratio is None else f"{ratio:.2f}{X}"

            cells = [
                f"{w['rps']:,.0f}{_spread(r)}",
                shown(base),
                *([shown(REF_SERVER)] if with_ref else []),
                _fmt_ms(w["p50_ms"]),
                _fmt_ms(w["p99_ms"]),
                _errors(r),
                _fmt_mb(mem["peak_rss_kb"]),
                _fmt_mb(mem["peak_pss_kb"]),
                f"{r.get('server_cpu_pct', 0):.0f}%",
                *([f"{w.get('client_cpu_pct', 0):.0f}%"] if kind == "ws" else []),
                *([marks] if kind in ("http", "h2") else []),
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            stop = r.get("stop", {})
            if stop.get("signal") == "SIGKILL" or stop.get("stragglers_killed"):
                worker_notes.append(
                    f"- {name}: ⚠ did not exit cleanly after SIGTERM "
                    f"(needed SIGKILL after {stop.get('seconds')} s)"
                )
            seen = r.get("workers_seen") or []
            if len(seen) > 1:
                total = sum(s["requests"] for s in seen) or 1
                parts = [
                    f"pid {s['pid']}/tid {s['thread']}: {s['requests']} "
                    f"({100 * s['requests'] / total:.0f}%)"
                    for s in seen
                ]
                worker_notes.append(f"- {name}: " + ", ".join(parts))
        if worker_notes:
            what = "connections" if kind == "ws" else "requests"
            lines += [
                "",
                f"Notes; {what} per worker are counted in the app and include the warm-up:",
                *worker_notes,
            ]
        lines.append("")

    if checks_all:
        lines += ["## Targets", "", "| app | target | measured | result |", "|---|---|---:|---|"]
        for c in checks_all:
            got = "—" if c["ratio"] is None else f"{c['ratio']:.2f}{X}"
            res = {"pass": "✅ pass", "miss": "❌ miss", "n/a": "— not measured"}[c["status"]]
            lines.append(
                f"| {c['app']} | {c['server']} ≥ {c['min']:.1f}{X} {c['peer']} | {got} | {res} |"
            )
        lines.append("")
    return "\n".join(lines), checks_all


# ---------------------------------------------------------------------------
# main


def _split(
    value: str,
    allowed: tuple[str, ...] | list[str],
    what: str,
    groups: dict[str, tuple[str, ...]] | None = None,
) -> list[str]:
    items: list[str] = []
    for v in (v.strip() for v in value.split(",")):
        for item in (groups or {}).get(v, (v,) if v else ()):
            if item not in items:
                items.append(item)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--python",
        default="python3",
        help="interpreter for the servers (own venv per version), default python3",
    )
    p.add_argument("--setup", action="store_true", help="(re)run setup.sh before measuring")
    p.add_argument(
        "--servers",
        default=None,
        help=f"comma list, default all: {','.join(SERVERS)} (+ {REF_SERVER} with --pounce-ref); "
        "each app runs on the servers that support its kind",
    )
    p.add_argument(
        "--apps",
        default="http",
        help=f"comma list of {','.join(APPS)} or groups http (the default: "
        f"{','.join(HTTP_APPS)}), ws, tls, h2 (h2load: {','.join(H2_APPS)}), all",
    )
    p.add_argument(
        "--pounce-ref",
        metavar="PATH_OR_GITREF",
        default=None,
        help=f"also run an older Pounce as server {REF_SERVER}: a git revision of this repository "
        "(its src/ is exported to .work/) or the path of a checkout; it runs from the same venv "
        "with PYTHONPATH=<tree>/src",
    )
    p.add_argument(
        "--ws-client-processes",
        type=int,
        default=1,
        help="ws_load.py processes sharing the WebSocket connections (1; raise it for "
        "multi-worker servers on a machine with cores to spare)",
    )
    p.add_argument(
        "--tls-key",
        choices=("ecdsa", "rsa"),
        default="ecdsa",
        help="key type of the TLS rows' certificate (ecdsa: P-256, rsa: 2048 bits)",
    )
    p.add_argument("--workers", type=int, default=None, help="pass --workers N to every server")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per run (10)")
    p.add_argument("--quick", action="store_true", help="3 s runs")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole matrix N times, report the median req/s (1)",
    )
    p.add_argument("--startup-timeout", type=float, default=20.0)
    p.add_argument("--stop-timeout", type=float, default=10.0)
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    p.add_argument(
        "--self-check",
        action="store_true",
        help="smoke-test the harness: one peer each for hello, ws_echo16 and tls_hello, "
        "1 s each; validate the tables",
    )
    return p.parse_args(argv)


def run_matrix(
    args: argparse.Namespace, servers: list[str], apps: list[str], vpy: Path, probe: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    skipped: dict[str, str] = {}
    runnable = []
    for name in servers:
        missing = [m for m in SERVERS[name].requires if not probe["modules"].get(m)]
        if missing:
            skipped[name] = f"not installed in {vpy.parent.parent.name}: {', '.join(missing)}"
            log(f"SKIP {name}: {skipped[name]}")
        else:
            runnable.append(name)
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu_iters = calibrate_cpu(vpy) if "cpu" in apps else 0
    stamp = _dt.datetime.now(_dt.UTC)
    log_dir = WORK / "logs" / stamp.strftime("%Y%m%dT%H%M%SZ")
    log_dir.mkdir(parents=True, exist_ok=True)
    tls: Tls | None = None
    if any(needs_tls(a) for a in apps):
        try:
            tls = make_certificate(vpy, args.tls_key, stamp.strftime("%Y%m%dT%H%M%SZ"))
        except RuntimeError as exc:
            apps = [a for a in apps if not needs_tls(a)]
            skipped["TLS rows"] = str(exc)
            log(f"SKIP the TLS rows: {exc}")
    opt = Options(
        duration=args.duration,
        warmup=args.warmup,
        threads=args.threads,
        connections=args.connections,
        workers=args.workers,
        startup_timeout=args.startup_timeout,
        stop_timeout=args.stop_timeout,
        cpu_iters=cpu_iters,
        log_dir=log_dir,
        tls=tls,
        ws_client_processes=args.ws_client_processes,
    )
    all_rounds: list[dict[str, Any]] = []
    # (server, kind) pairs that failed to start or failed the correctness check: the
    # other apps of that kind would fail the same way (a Pounce without WebSocket or TLS
    # yet), while its other kinds still run.
    dead: set[tuple[str, str]] = set()
    for rnd in range(args.rounds):
        for app in apps:
            kind = app_kind(app)
            # Odd rounds run the servers in reverse order so slow drift in
            # background load does not always favour the same server.
            for name in runnable if rnd % 2 == 0 else runnable[::-1]:
                if kind not in SERVERS[name].kinds or (name, kind) in dead:
                    continue
                log(f"round {rnd + 1}/{args.rounds} {app:8s} {name:12s} ...")
                r = measure(SERVERS[name], app, vpy, opt)
                r["round"] = rnd
                all_rounds.append(r)
                if r["status"] == "ok":
                    w = r["wrk"]
                    log(
                        f"    {w['rps']:>10,.0f} {'msgs/s' if kind == 'ws' else 'req/s'}  "
                        f"p50 {_fmt_ms(w['p50_ms'])}  "
                        f"p99 {_fmt_ms(w['p99_ms'])}  errors {w['errors']}  "
                        f"peak RSS {_fmt_mb(r['memory']['peak_rss_kb'])}"
                    )
                else:
                    log(f"    FAILED: {r['error']}")
                    for line in r.get("log_tail", []):
                        log(f"      | {line}")
                    if "startup_s" not in r or r.get("check_failed"):
                        # Same result for every app of this kind: skip the rest, say why.
                        dead.add((name, kind))
                        what = "failed to start" if "startup_s" not in r else "failed"
                        label = name if kind == "http" else f"{name} ({kind} rows)"
                        skipped[label] = f"{what}: {r['error']}; log: {r['log']}"
                        log(f"SKIP {label} for the remaining runs: {what}: {r['error']}")
    # median round per (server, app)
    final: list[dict[str, Any]] = []
    for app in apps:
        for name in runnable:
            if (name, app_kind(app)) in dead:
                continue  # listed under "skipped" with the reason
            rs = [r for r in all_rounds if r["server"] == name and r["app"] == app]
            ok = sorted((r for r in rs if r["status"] == "ok"), key=lambda r: r["wrk"]["rps"])
            if ok:
                pick = ok[(len(ok) - 1) // 2]
                pick = dict(
                    pick, rounds_rps=[r["wrk"]["rps"] for r in ok], rounds_failed=len(rs) - len(ok)
                )
                if len(ok) > 1:
                    pick["rps_median"] = statistics.median(pick["rounds_rps"])
                final.append(pick)
            elif rs:
                final.append(rs[-1])
    meta = {
        "date": stamp.isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cwd": os.getcwd(),
        "runner_python": sys.version.split()[0],
        "server_python": probe,
        "machine": machine_info(),
        "duration": args.duration,
        "warmup": args.warmup,
        "wrk_threads": args.threads,
        "connections": args.connections,
        "workers": args.workers,
        "ws_client_processes": args.ws_client_processes,
        "rounds": args.rounds,
        "cpu_iters": cpu_iters,
        "skipped": skipped,
        "loadavg": load_before,
        "tls": None
        if tls is None
        else {"certfile": str(tls.certfile), "keyfile": str(tls.keyfile), "key_type": tls.key_type},
        "pounce_ref": getattr(args, "pounce_ref_info", None),
        "dead": sorted(dead),
        "server_descriptions": {n: SERVERS[n].description for n in servers},
        "log_dir": str(log_dir),
        "servers": servers,
        "apps": apps,
        "stamp": stamp.strftime("%Y%m%dT%H%M%SZ"),
    }
    meta["all_rounds"] = all_rounds if args.rounds > 1 else None
    return meta, final if args.rounds > 1 else all_rounds


def self_check(args: argparse.Namespace, vpy: Path, probe: dict[str, Any]) -> int:
    problems: list[str] = []
    sample = """Running 1s test @ http://127.0.0.1:1/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us  200.00us   5.00ms   90.00%
    Req/Sec    39.00k     1.00k   41.00k    75.00%
  Latency Distribution
     50%  800.00us
     75%    0.90ms
     90%    1.10ms
     99%    1.50s
  78000 requests in 1.00s, 9.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  78000.00
Transfer/sec:      9.00MB
"""
    w = parse_wrk(sample)
    want = {
        "rps": 78000.0,
        "p50_ms": 0.8,
        "p99_ms": 1500.0,
        "requests": 78000,
        "non_2xx": 4,
        "errors": 7,
    }
    for k, v in want.items():
        if abs(w[k] - v) > 1e-9:
            problems.append(f"parse_wrk: {k}={w[k]!r}, expected {v!r}")
    # ws_load's framing: masking is its own inverse, and the three length encodings.
    mask = b"\x01\x02\x03\x04"
    if ws_load.apply_mask(ws_load.apply_mask(b"hello, world", mask), mask) != b"hello, world":
        problems.append("ws_load.apply_mask is not its own inverse")
    for size, header in ((16, 2), (200, 4), (70_000, 10)):
        frame = ws_load.masked_frame(bytes(size), mask)
        if len(frame) != header + 4 + size or frame[0] != 0x82:
            problems.append(f"ws_load.masked_frame({size} bytes) has a wrong header")

    def installed(name: str) -> bool:
        return all(probe["modules"].get(m) for m in SERVERS[name].requires)

    # One row of each kind against a peer: the harness, not Pounce, is what is checked.
    plan = [
        (
            next(
                (s for s in ("uvicorn-h11", "uvicorn", "hypercorn", "granian") if installed(s)),
                None,
            ),
            "hello",
        ),
        (next((s for s in ("uvicorn-websockets", "hypercorn") if installed(s)), None), "ws_echo16"),
        (next((s for s in ("uvicorn", "hypercorn") if installed(s)), None), "tls_hello"),
    ]
    args.duration, args.warmup, args.rounds = 1.0, 0.5, 1
    for peer, app in plan:
        if peer is None:
            problems.append(f"no peer server installed in the venv for {app}")
            continue
        meta, results = run_matrix(args, [peer], [app], vpy, probe)
        text, _ = render(meta, results, [peer], [app])
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| {peer} |")), None)
        if row is None:
            problems.append(f"no table row for {peer} on {app}: {meta['skipped']}")
        else:
            cells = [c.strip() for c in row.strip("|").split("|")]
            try:
                rps = float(cells[1].split()[0].replace(",", ""))
                p50 = cells[3].split()
                float(p50[0])
                assert p50[1] in ("µs", "ms"), p50
                assert cells[6].endswith("MB") and float(cells[6].split()[0]) > 0, cells[6]
                if rps <= 0:
                    problems.append(f"{app}: req/s is {rps}")
                if cells[5] != "0":
                    problems.append(f"{app}: errors during self-check: {cells[5]}")
            except (ValueError, IndexError, AssertionError) as exc:
                problems.append(f"{app}: table row does not parse ({exc!r}): {row}")
        print(text)
    for p in problems:
        log(f"SELF-CHECK PROBLEM: {p}")
    log("self-check " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.duration = 3.0
    apps = _split(args.apps, APPS, "apps", APP_GROUPS)
    vpy = ensure_env(args.python, args.setup)
    args.pounce_ref_info = add_pounce_ref(args.pounce_ref, vpy) if args.pounce_ref else None
    servers = _split(args.servers or ",".join(SERVERS), list(SERVERS), "servers")
    if args.pounce_ref and REF_SERVER not in servers:
        servers.append(REF_SERVER)  # asked for by --pounce-ref: always next to pounce
    if REF_SERVER in servers and TARGET_SERVER in servers:
        # Old next to new in the tables, whatever order --servers gave.
        servers.remove(REF_SERVER)
        servers.insert(servers.index(TARGET_SERVER) + 1, REF_SERVER)
    probe = probe_venv(vpy)
    if args.self_check:
        return self_check(args, vpy, probe)
    if not probe["modules"].get("pounce.__main__"):
        log("note: `python -m pounce` is not available yet (no pounce/__main__.py)")
    meta, results = run_matrix(args, servers, apps, vpy, probe)
    text, checks = render(meta, results, servers, apps)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        base = RESULTS / meta["stamp"]
        all_rounds = meta.pop("all_rounds", None)
        payload = {"meta": meta, "targets": checks, "results": results}
        if all_rounds:
            payload["all_rounds"] = all_rounds
        tmp = base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp.replace(base.with_suffix(".json"))
        base.with_suffix(".md").write_text(text + "\n")
        log(f"wrote {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
