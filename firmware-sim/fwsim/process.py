"""Start `mgms sim` in its own process (the demo and the tests use it) and wait until ready."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open until all are chosen (ports asked one by
    one may come back twice once the first socket closed)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, so a killed demo or
    test run leaves no simulator behind (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """The environment of a child that must import this source tree, installed or not."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "firmware-sim")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class SimProcess:
    def __init__(
        self,
        proc: subprocess.Popen[str],
        ports: dict[str, int],
        serial: dict[str, str] | None = None,
    ) -> None:
        self.proc = proc
        self.ports = ports
        #: serial device -> the port path the simulator serves
        self.serial = serial or {}

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
    config: Path,
    ports: Mapping[str, int],
    devices: Sequence[str] = (),
    extra: Sequence[str] = (),
    ready_timeout: float = 30.0,
    log: IO[str] | None = None,
    serial_ports: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> SimProcess:
    """Start the simulator for `config` with device ports overridden by `ports` and the
    simulator's end of serial lines by `serial_ports` (only `devices` if given); return
    once it printed its ready line. The simulator's log goes to `log` (default: inherited
    stderr). `prefix` runs it under a wrapper, e.g. `ip netns exec NAME`."""
    cmd = [*prefix, sys.executable, "-m", "gateway.cli", "sim", "--config", str(config)]
    for dev, port in ports.items():
        cmd += ["--port", f"{dev}={port}"]
    for dev, path in (serial_ports or {}).items():
        cmd += ["--serial", f"{dev}={path}"]
    for dev in devices:
        cmd += ["--device", dev]
    cmd += list(extra)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=child_env(),
        cwd=ROOT,
        preexec_fn=_die_with_parent,
    )
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
                    ports_up = {k: int(v) for k, v in msg["ports"].items()}
                    return SimProcess(proc, ports_up, dict(msg.get("serial", {})))
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    raise RuntimeError(f"simulator did not become ready (exit {proc.returncode}): {' '.join(cmd)}")
