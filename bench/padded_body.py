"""What a body padded with RDF statements costs the gateway, with the statement limit and
without it (the naive way: parse whatever the body size limit lets in), in one JSON line.

The body is a signed activation followed by triples the signature does not cover, up to the
default body limit (1 MiB), as a hostile peer sends it (tests/support/hostile.py). Figures:
the statements in the body, peak Python memory of its parse (tracemalloc) and the parse
time (best of 3), with the default limit and without; the ratios naive/limited. Under load
the gateway's RSS keeps the high-water mark of such parses (glibc and pymalloc return
little of it), so the peak is what the limit bounds.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import TooManyStatements
from gateway.north.config import ServerConfig
from gateway.smartapi import examples
from gateway.smartapi.codec import Format, parse, serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.security.graphsig import sign_tree
from gateway.smartapi.security.keys import Identity

LIMITS = ServerConfig()


def padded_body() -> bytes:
    ams = Identity("ams-1", "https://ams.example/ams", ed25519.Ed25519PrivateKey.generate())
    signed = serialize(
        sign_tree(to_tree(examples.reserve_activation()), ams, examples.T0), Format.TURTLE
    )
    extra = b'<urn:x:s> <urn:x:p> "%d" .\n'
    lines = (LIMITS.max_body_bytes - len(signed) - 64) // len(extra % 99999)
    return signed + b"".join(extra % (i % 99999) for i in range(lines))


def attempt(body: bytes, limit: int | None) -> Callable[[], str]:
    def run() -> str:
        try:
            return f"parsed {len(parse(body, Format.TURTLE.value, limit))} statements"
        except TooManyStatements as exc:
            return f"refused: {exc.detail}"

    return run


@dataclass(frozen=True)
class Cost:
    outcome: str
    peak_mb: float
    parse_ms: float


def measure(fn: Callable[[], str]) -> Cost:
    tracemalloc.start()
    outcome = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = min(_timed(fn) for _ in range(3))
    return Cost(outcome, round(peak / 1e6, 1), round(best, 1))


def _timed(fn: Callable[[], str]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    body = padded_body()
    limited = measure(attempt(body, LIMITS.max_statements))
    naive = measure(attempt(body, None))
    print(
        json.dumps(
            {
                "bench": "padded_body",
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "body_bytes": len(body),
                "max_statements": LIMITS.max_statements,
                "limited": asdict(limited),
                "naive": asdict(naive),
                "peak_ratio": round(naive.peak_mb / limited.peak_mb, 2),
                "time_ratio": round(naive.parse_ms / limited.parse_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
