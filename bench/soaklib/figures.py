"""Figures shared by the soak's parts."""

from __future__ import annotations

import statistics


def percentiles(samples: list[float]) -> dict[str, float | int]:
    """Count, p50, p99 and max of durations in seconds, reported in ms."""
    if len(samples) < 2:
        return {"n": len(samples)}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "n": len(samples),
        "p50": round(cuts[49] * 1e3, 2),
        "p99": round(cuts[98] * 1e3, 2),
        "max": round(max(samples) * 1e3, 2),
    }
