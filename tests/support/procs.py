"""Start `mgms sim` (or any child) in its own process on free loopback ports."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "firmware-sim")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], ports: dict[str, int]) -> None:
        self.proc = proc
        self.ports = ports

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_sim(
    ports: Mapping[str, int],
    config: Path = DEMO_CONFIG,
    devices: Sequence[str] = (),
    extra: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> SimProcess:
    """Start the simulator for `config` with every device's port overridden by `ports`;
    return once it printed its ready line."""
    cmd = [sys.executable, "-m", "gateway.cli", "sim", "--config", str(config)]
    for dev, port in ports.items():
        cmd += ["--port", f"{dev}={port}"]
    for dev in devices:
        cmd += ["--device", dev]
    cmd += list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                msg = json.loads(line)
                if msg.get("ready"):
                    return SimProcess(proc, msg["ports"])
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"simulator did not become ready (exit {proc.returncode}): {cmd}")


@contextmanager
def sim_process(
    device_ids: Sequence[str], config: Path = DEMO_CONFIG, **kwargs: object
) -> Iterator[SimProcess]:
    """A simulator serving `device_ids` of `config`, each on a fresh free port."""
    ports = {dev: free_port() for dev in device_ids}
    sim = start_sim(ports, config, devices=device_ids, **kwargs)  # type: ignore[arg-type]
    try:
        yield sim
    finally:
        sim.stop()
