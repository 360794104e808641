"""Micro-benchmark of the HTTP/1.1 request parsers.

Run: ``python benchmarks/bench_parser.py [--number N] [--repeat R]``

Measures the per-request cost of parsing a typical 10-header browser GET and a small POST with
FastParser, H11Parser and a raw ``h11.Connection`` (and httptools if installed, for reference).
Each figure is the best of R timeit runs of N requests, timed in process CPU time, and the
candidates are measured in interleaved rounds so that machine noise (other processes) affects
them alike; the best-of figure is the least noisy estimate of the real cost.

Two FastParser figures are given: ``reused`` (one parser per connection, ``start_next_cycle``
between requests: what the server does) and ``fresh`` (a new parser per request). For h11,
"fresh" is the only way to parse successive requests without producing responses, and it is
what H11Parser does; ``h11 reused`` additionally sends a minimal response per request (h11
refuses to start the next cycle otherwise), so it includes some response-side work.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import h11

from pounce.protocols.http1.base import EndOfMessage
from pounce.protocols.http1.h11_parser import H11Parser
from pounce.protocols.http1.parser import FastParser

GET = (
    b"GET /articles/2024/05/some-interesting-post?utm_source=news&page=2 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    b"image/webp,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/articles/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=abcdef0123456789; theme=dark; _ga=GA1.2.1234567890.1234567890\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"\r\n"
)

POST = (
    b"POST /api/v1/items HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: python-httpx/0.27.0\r\n"
    b"Accept: application/json\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 42\r\n"
    b"\r\n"
) + b'{"name": "widget", "qty": 3, "tags": "ab"}'
assert len(POST.partition(b"\r\n\r\n")[2]) == 42


def cycle(data: bytes | list[bytes]) -> Callable[[], bytes]:
    """Return a function giving the next request (always the same one for plain bytes)."""
    if isinstance(data, bytes):
        return lambda: data
    it = itertools.cycle(data)
    return it.__next__


def unique_gets(count: int) -> list[bytes]:
    """GETs whose target, Referer and Cookie differ each time: FastParser's caches of request
    lines and header lines miss on those three lines (the honest worst-ish case)."""
    return [
        GET.replace(b"page=2", b"page=%d" % i)
        .replace(b"/articles/\r\n", b"/articles/%d\r\n" % i)
        .replace(b"theme=dark", b"theme=%x" % (i * 7919))
        for i in range(count)
    ]


def fast_reused(data: bytes | list[bytes]) -> Callable[[], None]:
    parser = FastParser()
    nxt = cycle(data)

    def run() -> None:
        parser.feed(nxt())
        while type(parser.next_event()) is not EndOfMessage:
            pass
        parser.start_next_cycle()

    return run


def fast_fresh(data: bytes | list[bytes]) -> Callable[[], None]:
    nxt = cycle(data)

    def run() -> None:
        parser = FastParser()
        parser.feed(nxt())
        while type(parser.next_event()) is not EndOfMessage:
            pass

    return run


def h11_parser(data: bytes | list[bytes]) -> Callable[[], None]:
    parser = H11Parser()
    nxt = cycle(data)

    def run() -> None:
        parser.feed(nxt())
        while type(parser.next_event()) is not EndOfMessage:
            pass
        parser.start_next_cycle()

    return run


def h11_fresh(data: bytes | list[bytes]) -> Callable[[], None]:
    nxt = cycle(data)

    def run() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(nxt())
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass

    return run


def h11_reused(data: bytes | list[bytes]) -> Callable[[], None]:
    conn = h11.Connection(h11.SERVER)
    nxt = cycle(data)
    response = h11.Response(status_code=204, headers=[])
    end = h11.EndOfMessage()

    def run() -> None:
        conn.receive_data(nxt())
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass
        conn.send(response)
        conn.send(end)
        conn.start_next_cycle()

    return run


def httptools_fresh(data: bytes | list[bytes]) -> Callable[[], None] | None:
    try:
        import httptools  # type: ignore[import-not-found]
    except ImportError:
        return None

    class Proto:
        def on_header(self, name: bytes, value: bytes) -> None:
            pass

    nxt = cycle(data)

    def run() -> None:
        httptools.HttpRequestParser(Proto()).feed_data(nxt())

    return run


def measure(
    candidates: dict[str, Callable[[], None]], number: int, repeat: int
) -> dict[str, float]:
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeat):
        for name, func in candidates.items():
            # CPU time, not wall time: on a shared machine being descheduled is not our cost.
            elapsed = timeit.Timer(func, timer=time.process_time).timeit(number) / number * 1e6
            best[name] = min(best[name], elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(f"Python {sys.version.split()[0]}, h11 {h11.__version__}")
    workloads: list[tuple[str, bytes | list[bytes]]] = [
        ("GET, 10 headers (same request repeated)", GET),
        ("GET, 10 headers, unique target/Referer/Cookie per request", unique_gets(50_000)),
        ("POST, 7 headers + 42-byte body", POST),
    ]
    for label, data in workloads:
        size = len(data) if isinstance(data, bytes) else len(data[0])
        candidates: dict[str, Callable[[], None]] = {
            "FastParser (reused)": fast_reused(data),
            "FastParser (fresh)": fast_fresh(data),
            "H11Parser": h11_parser(data),
            "h11.Connection (fresh)": h11_fresh(data),
            "h11.Connection (reused+resp)": h11_reused(data),
        }
        ht = httptools_fresh(data)
        if ht is not None:
            candidates["httptools (reference)"] = ht
        best = measure(candidates, args.number, args.repeat)
        print(f"\n{label} (~{size} bytes), best of {args.repeat} x {args.number}:")
        for name, us in best.items():
            print(f"  {name:30s} {us:8.2f} us/request")
        base = best["h11.Connection (fresh)"]
        print(
            f"  ratio h11 fresh / FastParser reused: {base / best['FastParser (reused)']:.1f}x;"
            f" / FastParser fresh: {base / best['FastParser (fresh)']:.1f}x;"
            f" h11 reused+resp / FastParser reused:"
            f" {best['h11.Connection (reused+resp)'] / best['FastParser (reused)']:.1f}x"
        )


if __name__ == "__main__":
    main()
