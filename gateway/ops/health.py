"""Liveness and readiness: named checks that parts of the gateway register.

Liveness (/healthz, and the condition for sending WATCHDOG=1) says the process is doing
its work and should not be restarted. Readiness (/readyz) says it is fit to be relied on:
field links up, store writable, outbox drained within its bound. Checks are synchronous
and cheap (they read state, they do no I/O), because scrapes and the watchdog call them
often.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


Check = Callable[[], CheckResult]


@dataclass(frozen=True)
class Report:
    ok: bool
    checks: dict[str, CheckResult]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": {n: {"ok": r.ok, "detail": r.detail} for n, r in self.checks.items()},
        }

    def failing(self) -> str:
        return "; ".join(f"{n}: {r.detail}" for n, r in self.checks.items() if not r.ok)


def _run(checks: dict[str, Check]) -> Report:
    results: dict[str, CheckResult] = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as exc:  # a broken check reports itself, it does not break /healthz
            log.exception("health check %r failed", name, extra={"check": name})
            results[name] = CheckResult(False, f"check raised {exc!r}")
    return Report(all(r.ok for r in results.values()), results)


class Health:
    def __init__(self) -> None:
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}

    def add_liveness(self, name: str, check: Check) -> None:
        self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        self._readiness[name] = check

    def live(self) -> Report:
        return _run(self._liveness)

    def ready(self) -> Report:
        """Readiness includes liveness: a process that is not alive is not ready."""
        return _run({**self._liveness, **self._readiness})
