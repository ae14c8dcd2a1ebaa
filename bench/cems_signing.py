"""What Smart API 1.1 and signing cost a CEMS poll.

The simulated building CEMS (its Smart API points: two entities) and the driver, in one
process over TLS on loopback, polled ROUNDS times in each of:
- modern: the modern profile, unsigned (the floor);
- v11: Smart API 1.1 forms, unsigned;
- v11_signed: Smart API 1.1, the gateway signing its requests (RSA 2048, PKCS#1 v1.5) and
  verifying the CEMS's signed answers, the CEMS doing the same for each request.
Prints one JSON line; `signed_vs_modern` is the median poll time of v11_signed over that of
modern (both sides' signing and verification are on this machine in this figure).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "firmware-sim")]

from tests.support.cems import (  # noqa: E402
    CEMS_SENDER,
    GATEWAY_SENDER,
    SMARTAPI_POINTS,
    SigningKeys,
    cems_options,
    running,
    write_site,
)
from tests.support.pki import PkiFiles  # noqa: E402

ROUNDS = 60


def _options(keys: SigningKeys, profile: str, sign: bool) -> Any:
    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        base = cems_options(pki, directory)
        out: dict[str, Any] = {
            **base,
            "profile": profile,
            "smartapi_sender": GATEWAY_SENDER,
            "peer_sender": CEMS_SENDER,
        }
        if sign:
            out["signing"] = keys.gateway()
            out["simulator"] = {**base["simulator"], "signing": keys.cems()}
        return out

    return options


async def _poll_times(directory: Path, options: Any) -> list[float]:
    base, _ = write_site(directory, points=SMARTAPI_POINTS, options=options, timeout=5.0)
    samples = []
    async with running(base) as s:
        points = [p for p in s.driver.device.points if p.direction.readable]
        for _ in range(ROUNDS):
            t = time.perf_counter()
            readings = await s.driver.read(points)
            samples.append(time.perf_counter() - t)
            assert all(r.quality.good for r in readings), [r.detail for r in readings]
    return samples


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
    }


async def measure(directory: Path) -> dict[str, object]:
    keys = SigningKeys.write(directory)
    runs = {
        "modern": _options(keys, "modern", sign=False),
        "v11": _options(keys, "smartapi-1.1", sign=False),
        "v11_signed": _options(keys, "smartapi-1.1", sign=True),
    }
    figures = {}
    for name, options in runs.items():
        (directory / name).mkdir()
        figures[name] = await _poll_times(directory / name, options)
    modern = statistics.median(figures["modern"])
    return {
        "bench": "cems_signing",
        "rounds": ROUNDS,
        "entities": len({p["address"].split()[0] for p in SMARTAPI_POINTS}),
        **{name: _ms(samples) for name, samples in figures.items()},
        "v11_vs_modern": round(statistics.median(figures["v11"]) / modern, 2),
        "signed_vs_modern": round(statistics.median(figures["v11_signed"]) / modern, 2),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(asyncio.run(measure(Path(d)))))


if __name__ == "__main__":
    main()
