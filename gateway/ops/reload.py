"""Reloading config and mapping files while running (SIGHUP, `systemctl reload`).

The files are read and checked in full first. Then every config section that changed is
either one the running gateway takes live or one only a restart applies:

- live: the mapping files (only devices whose definition changed reconnect, so a reload
  never drops the links it did not touch), `ders`, `coupling_point`, `internal_limits`,
  `flex` (the flexibility service rebuilds its model), `retention_days`,
  `reconnect_max_s`, `north.allow` and `north.signing` (who may connect and with which
  role, our signing key and the trusted peers; the key and trust files are re-read on
  every reload, so a replaced file takes effect with an unchanged config);
- restart: everything else (`microgrid`, `state_dir`, `ops`, the rest of `north`, or
  `north` added or removed).

A reload that changes a restart section is refused as a whole, naming the sections, and
so is one a part of the gateway cannot take (e.g. an unreadable key file): nothing is
half-applied. The log, the store's events and systemd's STATUS= say which happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from gateway.config import GatewayConfig, LoadedConfig
from gateway.errors import ConfigError, GatewayError, ReloadRefused
from gateway.mapping import Device
from gateway.ops.notify import Notifier

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

#: config sections a running gateway applies on a reload; any other needs a restart
LIVE_SECTIONS = frozenset(
    {
        "mappings",
        "ders",
        "coupling_point",
        "internal_limits",
        "flex",
        "retention_days",
        "reconnect_max_s",
        "north.allow",
        "north.signing",
    }
)

Loader = Callable[[], LoadedConfig]


@dataclass(frozen=True)
class ReloadPlan:
    config: LoadedConfig  # the new files
    added: tuple[Device, ...]
    changed: tuple[Device, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    #: changed sections the running gateway applies
    live: tuple[str, ...]
    #: changed sections only a restart applies (the reload is refused when any)
    restart_needed: tuple[str, ...]

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added",
            f"{len(self.changed)} changed",
            f"{len(self.removed)} removed",
            f"{len(self.unchanged)} unchanged",
        ]
        sections = f"{', '.join(self.live)} applied" if self.live else "no config section changed"
        return f"{sections}; devices: " + ", ".join(parts)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def changed_sections(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Top-level config sections that differ; `north` by its own sections when both have it."""
    out = []
    for name in GatewayConfig.model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if name == "north" and before is not None and after is not None:
            out += [
                f"north.{sub}"
                for sub in type(before).model_fields
                if _dump(getattr(before, sub)) != _dump(getattr(after, sub))
            ]
        elif _dump(before) != _dump(after):
            out.append(name)
    return out


def _fingerprint(device: Device) -> dict[str, Any]:
    return device.model_dump(mode="json")


def plan_reload(old: LoadedConfig, new: LoadedConfig) -> ReloadPlan:
    before = {d.id: d for d in old.devices}
    after = {d.id: d for d in new.devices}
    added = tuple(d for i, d in after.items() if i not in before)
    removed = tuple(i for i in before if i not in after)
    changed = tuple(
        d for i, d in after.items() if i in before and _fingerprint(d) != _fingerprint(before[i])
    )
    changed_ids = {d.id for d in changed}
    unchanged = tuple(i for i in after if i in before and i not in changed_ids)
    sections = changed_sections(old.gateway, new.gateway)
    live = tuple(s for s in sections if s in LIVE_SECTIONS)
    restart = tuple(s for s in sections if s not in LIVE_SECTIONS)
    return ReloadPlan(new, added, changed, removed, unchanged, live, restart)


async def reload(gw: Gateway, load: Loader, notifier: Notifier) -> bool:
    """Re-read the files and apply them; False (and the old config kept) if they are bad
    or need a restart."""
    notifier.reloading()
    log.info("reload: reading %s", gw.config.source, extra={"file": str(gw.config.source)})
    reloads = gw.metrics.counter("mgms_reloads_total", "Config reloads by result.", ("result",))
    try:
        new = await asyncio.to_thread(load)
        plan = plan_reload(gw.config, new)
        if plan.restart_needed:
            names = ", ".join(plan.restart_needed)
            raise ReloadRefused(
                f"{names} changed: only a restart applies "
                f"{'it' if len(plan.restart_needed) == 1 else 'them'}; nothing was applied "
                "(restart the service, or undo the change and reload)",
                plan.restart_needed,
            )
        await gw.reconfigure(plan)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error(
                "reload rejected, keeping the running config: %s",
                problem,
                extra={
                    k: v
                    for k, v in (
                        ("file", problem.file),
                        ("line", problem.line),
                        ("device", problem.device),
                        ("point", problem.point),
                        ("field", problem.field),
                    )
                    if v is not None
                },
            )
        problems = [str(p) for p in exc.problems]
        status = f"reload rejected ({len(problems)} problems), running on the old config"
        await _rejected(gw, notifier, reloads, problems, status)
        return False
    except ReloadRefused as exc:
        extra = {"sections": list(exc.sections)} if exc.sections else {}
        log.error("reload refused, keeping the running config: %s", exc, extra=extra)
        if exc.sections:
            status = (
                f"reload refused: {', '.join(exc.sections)} need a restart; "
                "running on the old config"
            )
        else:
            status = f"reload refused ({exc}); running on the old config"
        await _rejected(gw, notifier, reloads, [str(exc)], status, list(exc.sections))
        return False
    except (GatewayError, ValueError, OSError) as exc:
        log.error("reload rejected, keeping the running config: %s", exc)
        status = "reload rejected (1 problems), running on the old config"
        await _rejected(gw, notifier, reloads, [str(exc)], status)
        return False
    reloads.inc(result="applied")
    log.info("reload applied: %s", plan.summary(), extra={"sections": list(plan.live)})
    if gw.store is not None:
        await gw.store.event(
            "reload",
            added=[d.id for d in plan.added],
            changed=[d.id for d in plan.changed],
            removed=list(plan.removed),
            sections=list(plan.live),
        )
    notifier.ready(f"reloaded: {plan.summary()}")
    return True


async def _rejected(
    gw: Gateway,
    notifier: Notifier,
    reloads: Any,
    problems: list[str],
    status: str,
    restart_needed: list[str] | None = None,
) -> None:
    reloads.inc(result="rejected")
    if gw.store is not None:
        await gw.store.event(
            "reload_rejected", problems=problems, restart_needed=restart_needed or []
        )
    notifier.ready(status)
