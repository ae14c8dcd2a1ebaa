"""Reloading config and mapping files while running (SIGHUP, `systemctl reload`).

The files are read and checked in full first. If anything is wrong the gateway keeps
running on what it has and logs every problem; otherwise only devices whose definition
changed are reconnected, so a reload never drops the links it did not touch. Where the
state directory or the operations listener changed, the new values wait for a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config import LoadedConfig
from gateway.errors import ConfigError, GatewayError
from gateway.mapping import Device
from gateway.ops.notify import Notifier

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

#: GatewayConfig fields only a restart applies (open store, bound listener)
RESTART_ONLY = ("state_dir", "ops")

Loader = Callable[[], LoadedConfig]


@dataclass(frozen=True)
class ReloadPlan:
    config: LoadedConfig  # what to run on: the new files, restart-only fields as before
    added: tuple[Device, ...]
    changed: tuple[Device, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    restart_needed: tuple[str, ...]

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added",
            f"{len(self.changed)} changed",
            f"{len(self.removed)} removed",
            f"{len(self.unchanged)} unchanged",
        ]
        return "devices: " + ", ".join(parts)


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
    restart_needed = tuple(
        f for f in RESTART_ONLY if getattr(old.gateway, f) != getattr(new.gateway, f)
    )
    kept = {f: getattr(old.gateway, f) for f in restart_needed}
    config = LoadedConfig(
        source=new.source,
        gateway=new.gateway.model_copy(update=kept),
        mappings=new.mappings,
    )
    return ReloadPlan(config, added, changed, removed, unchanged, restart_needed)


async def reload(gw: Gateway, load: Loader, notifier: Notifier) -> bool:
    """Re-read the files and apply them; False (and the old config kept) if they are bad."""
    notifier.reloading()
    log.info("reload: reading %s", gw.config.source, extra={"file": str(gw.config.source)})
    reloads = gw.metrics.counter("mgms_reloads_total", "Config reloads by result.", ("result",))
    try:
        new = await asyncio.to_thread(load)
        plan = plan_reload(gw.config, new)
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
        await _rejected(gw, notifier, reloads, [str(p) for p in exc.problems])
        return False
    except (GatewayError, ValueError, OSError) as exc:
        log.error("reload rejected, keeping the running config: %s", exc)
        await _rejected(gw, notifier, reloads, [str(exc)])
        return False
    reloads.inc(result="applied")
    for field in plan.restart_needed:
        log.warning(
            "reload: %s changed; it takes effect at the next restart", field, extra={"field": field}
        )
    log.info("reload applied: %s", plan.summary())
    if gw.store is not None:
        await gw.store.event(
            "reload",
            added=[d.id for d in plan.added],
            changed=[d.id for d in plan.changed],
            removed=list(plan.removed),
            restart_needed=list(plan.restart_needed),
        )
    notifier.ready(f"reloaded ({plan.summary()})")
    return True


async def _rejected(gw: Gateway, notifier: Notifier, reloads: Any, problems: list[str]) -> None:
    reloads.inc(result="rejected")
    if gw.store is not None:
        await gw.store.event("reload_rejected", problems=problems)
    notifier.ready(f"reload rejected ({len(problems)} problems), running on the old config")
