"""Drive a parser over a byte stream and normalise the events for comparisons."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from pounce.protocols.http1.base import (
    NEED_DATA,
    PAUSED,
    EndOfMessage,
    ParserLimits,
    RequestHead,
    RequestParser,
)
from pounce.protocols.http1.errors import ProtocolError
from pounce.protocols.http1.h11_parser import H11Parser
from pounce.protocols.http1.parser import FastParser

PARSERS: list[type[Any]] = [FastParser, H11Parser]


def drain(parser: RequestParser, out: list[object]) -> None:
    """Pull events until NEED_DATA, starting the next cycle at each PAUSED."""
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return
        if event is PAUSED:
            parser.start_next_cycle()
            continue
        out.append(event)


def run(
    parser_cls: type[Any], pieces: Iterable[bytes], limits: ParserLimits | None = None
) -> tuple[list[object], ProtocolError | None]:
    """Feed *pieces* one by one; return the events and the error that stopped parsing."""
    parser = parser_cls(limits or ParserLimits())
    events: list[object] = []
    try:
        for piece in pieces:
            parser.feed(piece)
            drain(parser, events)
    except ProtocolError as exc:
        return events, exc
    return events, None


def coalesce(events: list[object]) -> list[object]:
    """Merge consecutive body chunks: how a body is cut into events depends on the reads."""
    out: list[object] = []
    for event in events:
        if isinstance(event, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += event
        elif isinstance(event, bytes):
            if event:
                out.append(bytes(event))
        else:
            out.append(event)
    return out


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def bytewise(data: bytes, step: int = 1) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


__all__ = [
    "PARSERS",
    "EndOfMessage",
    "RequestHead",
    "bytewise",
    "coalesce",
    "drain",
    "run",
    "split_at",
]
