"""The demo microgrid's devices of some protocols in the simulator (its own process), and
the gateway config for them with a fresh state directory and the ops listener on a free
port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import LoadedConfig
from gateway.loader import load_config
from tests.support.procs import DEMO_CONFIG, sim_process

#: simulated time starts at noon, so the PV park produces
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()


@contextmanager
def demo_site(state_dir: Path, protocols: set[str]) -> Iterator[LoadedConfig]:
    devices = [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol in protocols]
    with sim_process(devices, extra=["--start", NOON]) as sim:
        config = load_config(DEMO_CONFIG, port_overrides=sim.ports)
        config.mappings = {p: m for p, m in config.mappings.items() if p.stem in protocols}
        config.gateway.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        config.gateway.ops.port = 0
        yield config
