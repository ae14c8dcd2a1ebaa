"""A site loads the libraries it uses and no others: `mgms run` of a Modbus-only site without
`north:` polls its devices without the protocol libraries of the other protocols, the RDF
stack, the flexibility solver or the signing library (each costs several MB of resident
memory that a small station board should not pay for nothing)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.procs import ROOT, child_env, demo_config_with, free_port, sim_process

pytestmark = pytest.mark.integration

MAPPING = ROOT / "mappings" / "demo" / "modbus.yaml"

#: what a Modbus-only site without `north:` must not import
NOT_FOR_MODBUS_ONLY = (
    "gurux_dlms",  # DLMS
    "c104",  # IEC 104
    "pyiec61850",  # IEC 61850
    "rdflib",  # Smart API (north)
    "pyoxigraph",
    "pyshacl",
    "cryptography",  # message signing (north, CEMS)
    "numpy",  # flexibility (north)
    "highspy",
    "gateway.market",
    "gateway.smartapi.vocab",
)

# `mgms run`, writing the names of every module it imported to a file when it exits
LAUNCHER = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _ready(url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return False


def test_a_modbus_only_site_imports_no_other_protocol_rdf_or_solver(tmp_path: Path) -> None:
    config = demo_config_with(["modbus.yaml"])
    config["state_dir"] = "state"
    ops_port = free_port()
    config["ops"] = {"port": ops_port}
    assert "north" not in config
    (tmp_path / "modbus.yaml").write_text(MAPPING.read_text())
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    devices = [d["id"] for d in yaml.safe_load(MAPPING.read_text())["devices"]]
    modules_file = tmp_path / "modules.json"
    with sim_process(devices) as sim:
        cmd = [sys.executable, "-c", LAUNCHER, str(modules_file)]
        cmd += ["run", "--config", str(tmp_path / "gw.yaml")]
        for device, port in sim.ports.items():
            cmd += ["--port", f"{device}={port}"]
        log = tmp_path / "stderr.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                cmd, env=child_env(), cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL
            )
        try:
            ready = _ready(f"http://127.0.0.1:{ops_port}/readyz", within=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert ready, log.read_text()
    loaded = set(json.loads(modules_file.read_text()))
    # the dump is of a gateway that polled: the Modbus library and the service are there
    assert {"pymodbus", "gateway.app", "gateway.acquisition"} <= loaded
    assert sorted(m for m in NOT_FOR_MODBUS_ONLY if m in loaded) == []
