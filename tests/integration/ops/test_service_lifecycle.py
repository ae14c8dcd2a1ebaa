"""`mgms run` as systemd runs it, against the Modbus simulators: the notify protocol on a
real datagram socket, SIGTERM, and SIGHUP reloads with bad and good files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.loader import load_config
from gateway.sqlite import read_only
from tests.support.procs import (
    DEMO_CONFIG,
    ROOT,
    child_env,
    demo_config_with,
    free_port,
    sim_process,
)

pytestmark = pytest.mark.integration

MAPPING = ROOT / "mappings" / "demo" / "modbus.yaml"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

# Runs the gateway the way the unit's MemoryDenyWriteExecute=yes would: no memory that is
# writable and executable (PR_SET_MDWE, Linux 6.3+), so a library that needs it fails here.
LAUNCHER = f"""
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit("PR_SET_MDWE refused")
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def mdwe_supported() -> bool:
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def modbus_devices() -> list[str]:
    return [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol == "modbus"]


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    base: str
    dir: Path
    log: Path
    messages: list[dict[str, str]]

    def next_message(self, timeout: float = 20.0) -> dict[str, str]:
        self.notify.settimeout(timeout)
        data = self.notify.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.split("\n"))
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float = 20.0) -> dict[str, str]:
        """The next message carrying `key`, skipping watchdog pings and status updates."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(max(deadline - time.monotonic(), 0.01))
            if key in msg:
                return msg

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def events(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        with read_only(self.dir / "state" / "gateway.sqlite", "store") as db:
            rows = db.execute("SELECT kind, device, detail FROM events ORDER BY id").fetchall()
        return [(k, d, json.loads(detail)) for k, d, detail in rows]


def write_files(directory: Path, ops_port: int, mapping_text: str) -> Path:
    config = demo_config_with(["modbus.yaml"])
    config["state_dir"] = "state"
    config["reconnect_max_s"] = 1.0
    config["ops"] = {"port": ops_port, "ready_wait_s": 15, "drain_s": 2}
    (directory / "modbus.yaml").write_text(mapping_text)
    path = directory / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with sim_process(modbus_devices()) as sim:
        ops_port = free_port()
        config = write_files(tmp_path, ops_port, MAPPING.read_text())
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        env = child_env()
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000")
        cmd = (
            [sys.executable, "-c", LAUNCHER]
            if mdwe_supported()
            else [sys.executable, "-m", "gateway.cli"]
        )
        cmd += ["run", "--config", str(config)]
        for device, port in sim.ports.items():
            cmd += ["--port", f"{device}={port}"]
        log = tmp_path / "stderr.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL)
        svc = Service(proc, notify, f"http://127.0.0.1:{ops_port}", tmp_path, log, [])
        try:
            yield svc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            notify.close()


def test_ready_watchdog_then_clean_stop_on_sigterm(service: Service) -> None:
    ready = service.wait_for("READY")
    assert ready["STATUS"].startswith("running: 4/4 devices up"), ready
    assert service.messages[0]["STATUS"].startswith("starting: connecting 4 devices")
    status, body = service.get("/readyz")
    assert status == 200, body
    pings = 0
    while pings < 2:  # WATCHDOG_USEC=1 s: a ping every half second from the main loop
        pings += "WATCHDOG" in service.next_message(timeout=3.0)
    with urllib.request.urlopen(service.base + "/metrics", timeout=5) as r:
        metrics = r.read()
    assert b'mgms_poll_duration_seconds_count{device="pcc-meter"}' in metrics

    service.proc.send_signal(signal.SIGTERM)
    stopping = service.wait_for("STOPPING", timeout=10)
    assert stopping["STOPPING"] == "1"
    assert service.proc.wait(timeout=10) == 0
    kinds = [m for m in service.messages if "READY" in m or "STOPPING" in m or "WATCHDOG" in m]
    order = [
        "READY" if "READY" in m else "STOPPING" if "STOPPING" in m else "WATCHDOG" for m in kinds
    ]
    assert order[0] == "READY" and order[-1] == "STOPPING" and "WATCHDOG" in order[1:-1]

    events = service.events()
    assert events[0][0] == "start" and events[-1][0] == "stop"
    assert sorted(d for k, d, _ in events if k == "link_up") == sorted(modbus_devices())
    with read_only(service.dir / "state" / "gateway.sqlite", "store") as db:
        (samples,) = db.execute("SELECT count(*) FROM samples WHERE point = 'pcc.p'").fetchone()
    assert samples > 0  # the buffer was flushed on the way out
    log = service.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


def test_sighup_keeps_running_on_bad_files_and_applies_good_ones(service: Service) -> None:
    service.wait_for("READY")
    mapping = service.dir / "modbus.yaml"
    good = mapping.read_text()
    mapping.write_text(
        good.replace(
            "type: int16, scale: 0.1, unit: KiloVAR, der: pv1",
            "type: int99, scale: 0.1, unit: KiloVAR, der: pv1",
        )
    )
    service.proc.send_signal(signal.SIGHUP)
    assert service.wait_for("RELOADING")["RELOADING"] == "1"
    rejected = service.wait_for("READY")
    assert rejected["STATUS"].startswith("reload rejected (1 problems)"), rejected
    status, body = service.get("/readyz")
    assert status == 200, body  # still running, all links up, on the old files
    log_lines = service.log.read_text().splitlines()
    [line] = [ln for ln in log_lines if "reload rejected" in ln]
    assert "modbus.yaml" in line and "point=pv1.q" in line and "int99" in line

    # a good change: pv1 loses a point and polls slower; the others stay as they were
    changed = "".join(ln for ln in good.splitlines(True) if "{id: pv1.q," not in ln)
    changed = changed.replace(
        "port: 15021}\n    poll_interval: 1.0", "port: 15021}\n    poll_interval: 0.5"
    )
    assert changed.count("pv1.q,") == 0 and changed != good
    mapping.write_text(changed)
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for("RELOADING")
    applied = service.wait_for("READY")
    assert applied["STATUS"].startswith(
        "reloaded: no config section changed; devices: 0 added, 1 changed, 0 removed, 3 unchanged"
    ), applied
    status, snap = service.get("/api/status")
    assert "pv1.q" not in {p["id"] for p in snap["points"]}
    deadline = time.monotonic() + 15
    while not all(d["up"] for d in snap["devices"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        status, snap = service.get("/api/status")
    assert all(d["up"] for d in snap["devices"]), snap["devices"]

    def pv1_ups() -> int:
        return sum(
            1
            for kind, device, _ in service.events()
            if (kind, device) == ("link_up", "pv1-inverter")
        )

    # a session is up on connect, its link_up recorded once its first poll answered: a stop
    # in between would leave the event out
    while pv1_ups() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=10) == 0
    events = service.events()
    ups = {}
    for kind, device, _ in events:
        if kind == "link_up":
            ups[device] = ups.get(device, 0) + 1
    assert ups == {"bess1-inverter": 1, "pcc-meter": 1, "load1-controller": 1, "pv1-inverter": 2}
    assert [k for k, _, _ in events].count("reload_rejected") == 1
    [reload] = [d for k, _, d in events if k == "reload"]
    assert reload["changed"] == ["pv1-inverter"]


def test_sighup_says_which_sections_it_applied_and_which_need_a_restart(service: Service) -> None:
    service.wait_for("READY")
    path = service.dir / "gw.yaml"
    config = yaml.safe_load(path.read_text())
    config["coupling_point"]["import_limit_kw"] = 120
    path.write_text(yaml.safe_dump(config))
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for("RELOADING")
    applied = service.wait_for("READY")
    assert applied["STATUS"] == (
        "reloaded: coupling_point applied; devices: 0 added, 0 changed, 0 removed, 4 unchanged"
    ), applied
    _, snap = service.get("/api/status")
    [pcc] = [d for d in snap["ders"] if d["id"] == "pcc"]
    assert "import ≤ 120 kW" in pcc["control"]

    config["state_dir"] = "elsewhere"
    config["coupling_point"]["import_limit_kw"] = 90
    path.write_text(yaml.safe_dump(config))
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for("RELOADING")
    refused = service.wait_for("READY")
    assert refused["STATUS"] == (
        "reload refused: state_dir need a restart; running on the old config"
    ), refused
    _, snap = service.get("/api/status")
    [pcc] = [d for d in snap["ders"] if d["id"] == "pcc"]
    assert "import ≤ 120 kW" in pcc["control"]  # nothing of that reload was applied
    [line] = [ln for ln in service.log.read_text().splitlines() if "reload refused" in ln]
    assert "state_dir changed: only a restart applies it; nothing was applied" in line
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=10) == 0
