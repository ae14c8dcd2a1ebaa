"""A slow-headers client, run as its own process by tests/faults/test_slow_connections.py:
`count` mutual-TLS connections (split over the given certificates) that each send their
request line and headers a byte every `interval` seconds, for `duration` seconds. Prints
one JSON line: how many completed the handshake, how many the server closed and after how
long, and how many were still open at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time

REQUEST = (
    b"POST /smartapi/v1.0e1.0/access/ HTTP/1.1\r\nHost: gateway\r\nContent-Type: text/turtle\r\n"
)


async def one(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    interval: float,
    until: float,
    gate: asyncio.Semaphore,
) -> tuple[str, float]:
    """('refused' | 'closed' | 'open', seconds from handshake to close)."""
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx), 20
            )
        except (OSError, TimeoutError):
            return "refused", 0.0
    opened = time.monotonic()
    try:
        for byte in REQUEST * 100:
            if time.monotonic() > until:
                return "open", time.monotonic() - opened
            writer.write(bytes([byte]))
            await writer.drain()
            try:  # the server closing shows as EOF (or a reset) on read
                data = await asyncio.wait_for(reader.read(1), interval)
                if not data:
                    return "closed", time.monotonic() - opened
            except TimeoutError:
                pass
        return "open", time.monotonic() - opened
    except (OSError, ssl.SSLError):
        return "closed", time.monotonic() - opened
    finally:
        writer.transport.abort()


async def main(args: argparse.Namespace) -> dict[str, object]:
    contexts = []
    for pair in args.cert:
        cert, key = pair.split(",")
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.check_hostname = False
        ctx.load_cert_chain(cert, key)
        contexts.append(ctx)
    gate = asyncio.Semaphore(args.parallel_handshakes)
    until = time.monotonic() + args.duration
    results = await asyncio.gather(
        *(
            one(args.host, args.port, contexts[n % len(contexts)], args.interval, until, gate)
            for n in range(args.count)
        )
    )
    closed = sorted(s for what, s in results if what == "closed")
    return {
        "connections": args.count,
        "handshake_refused": sum(1 for what, _ in results if what == "refused"),
        "closed_by_server": len(closed),
        "still_open": sum(1 for what, _ in results if what == "open"),
        "closed_after_s": {
            "median": round(statistics.median(closed), 2) if closed else None,
            "max": round(closed[-1], 2) if closed else None,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", action="append", required=True, help="CERT,KEY")
    parser.add_argument("--count", type=int, default=1100)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--parallel-handshakes", type=int, default=64)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
    sys.exit(0)
