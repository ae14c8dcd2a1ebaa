"""docs/operator-tools.md runs as written: its setup commands, its config file, the
simulator and the gateway it starts, and its Read and Write examples (`mgms point` and
`mgms smartapi`), each block executed by bash exactly as it stands in the markdown. The
requests the docs show are what the documented commands build.

The examples use the default ports (8443, 8780 and the demo's Modbus ports), so they run
in a network namespace of their own where those are surely free; where this machine
cannot make one, on this namespace's loopback if the ports are free."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.ops.tools import build_request
from gateway.smartapi.codec import decode
from gateway.smartapi.messages import Method, Request
from tests.faults.netns import netns_unavailable
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "operator-tools.md"
PORTS = (8443, 8780, 15020, 15021, 15022, 15023)
_TAGGED = re.compile(r"<!-- (example|file|request): ?([^ ]*) -->\n```(\w+)\n(.*?)```", re.S)


def tagged(kind: str) -> list[tuple[str, str]]:
    """(tag, text) of each fenced block that follows `<!-- kind: tag -->`, in order."""
    return [(tag, body) for k, tag, _, body in _TAGGED.findall(DOC.read_text()) if k == kind]


def example(tag: str) -> str:
    [body] = [b for t, b in tagged("example") if t == tag]
    return body


@contextlib.contextmanager
def namespace() -> Iterator[list[str]]:
    """The prefix that runs a command in a fresh network namespace (loopback up)."""
    why = netns_unavailable()
    if why is not None:
        for port in PORTS:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    pytest.fail(f"no network namespace ({why}) and port {port} is taken")
        yield []
        return
    name = f"mgms-docs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=10
        )
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


class Shell:
    def __init__(self, cwd: Path, prefix: list[str]) -> None:
        self.cwd = cwd
        self.prefix = prefix
        bin_dir = str(Path(sys.executable).parent)  # where `mgms` is installed
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, "bash", "-e", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, script: str) -> None:
        log = self.cwd / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*self.prefix, "bash", "-e", "-c", f"exec {script.strip()}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.background.append((proc, log))

    def stop(self) -> None:
        for proc, _ in reversed(self.background):
            proc.terminate()
        for proc, log in self.background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"{proc.args} did not stop on SIGTERM: {log.read_text()[-2000:]}")

    def logs(self) -> str:
        return "\n".join(log.read_text()[-3000:] for _, log in self.background)


def the_request(command: str, method: Method) -> Request:
    """What the documented command builds (its arguments through the real parser)."""
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == "mgms"
    return build_request(build_parser().parse_args(argv[1:]), method)


@pytest.mark.parametrize("tag", ["smartapi-read", "smartapi-write"])
def test_the_documented_requests_are_what_the_commands_send(tag: str) -> None:
    method = Method.READ if tag.endswith("read") else Method.WRITE
    [shown] = [body for t, body in tagged("request") if t == tag]
    documented = decode(shown.encode(), "text/turtle")
    assert isinstance(documented, Request)
    built = the_request(example(tag), method)
    assert documented.sender == built.sender
    assert documented.activities == built.activities
    assert 'sec:keyId "operator-1"' in shown  # signed with the key the command names


def test_the_operator_examples_run_as_written(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings" / "demo"
    mappings.mkdir(parents=True)
    shutil.copy(ROOT / "mappings" / "demo" / "modbus.yaml", mappings)  # the repository's
    with namespace() as prefix:
        sh = Shell(tmp_path, prefix)
        done = sh.run(example("setup"))
        assert done.returncode == 0, done.stderr
        [(name, text)] = tagged("file")
        (tmp_path / name).write_text(text)
        try:
            for tag, script in tagged("example"):
                if tag == "background":
                    sh.start(script)
            read = example("point-read")
            deadline = time.monotonic() + 60
            while True:  # until the gateway answers with good values
                done = sh.run(read)
                if done.returncode == 0 and done.stdout.count(" good ") == 2:
                    break
                assert time.monotonic() < deadline, done.stderr + sh.logs()
                time.sleep(0.5)
            soc, p = done.stdout.splitlines()
            assert soc.startswith("bess1.soc") and "PERCENT" in soc
            assert p.startswith("bess1.p ") and "KiloW" in p

            done = sh.run(example("point-write"))
            assert done.returncode == 0, done.stderr + sh.logs()
            assert done.stdout.strip() == "bess1.p_set = 15 KiloW: confirmed"
            done = sh.run(read.replace("bess1.soc bess1.p", "bess1.p_set"))
            assert "15 confirmed at" in done.stdout and "by ops:alice" in done.stdout

            done = sh.run(example("smartapi-read"))
            assert done.returncode == 0, done.stderr + sh.logs()
            lines = done.stdout.splitlines()
            assert "from https://mgms.example/gateway, signature verified" in lines[0]
            der = "urn:mgms:microgrid:try-site:der:bess1"
            assert any(ln.startswith(f"read   {der} bess1.soc ") for ln in lines), lines
            assert any(ln.startswith(f"read   {der} bess1.p ") for ln in lines), lines

            done = sh.run(example("smartapi-write"))
            assert done.returncode == 0, done.stderr + sh.logs()
            assert re.search(rf"^write  {der} bess1.p_set 20 KiloW \S+$", done.stdout, re.M)
            done = sh.run(read.replace("bess1.soc bess1.p", "bess1.p_set"))
            assert "20 confirmed at" in done.stdout
            assert "by smartapi:https://mgms.example/operator" in done.stdout

            too_much = example("smartapi-write").replace("--value 20", "--value 900")
            done = sh.run(too_much)
            assert (
                done.returncode == 1 and "refused (" in done.stderr and "bess1.p_set" in done.stderr
            )
        finally:
            sh.stop()
        log = sh.logs()
        assert "Traceback" not in log, log
        # no AMS at this site: nothing is queued for one, so no delivery warnings
        assert not [ln for ln in log.splitlines() if "WARNING" in ln and "outbox" in ln], log
