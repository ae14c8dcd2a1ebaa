"""A real mosquitto MQTT broker on a loopback port, for the demo, benchmarks and tests.

TLS with client certificates only: the broker authenticates clients by certificate (the
subject CN becomes the user name) and enforces the topic ACL of docs/northbound.md, so
the gateway publishes forecasts, verifications, its answers and its status, and the AMS
publishes notifications, activations and its answers.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fwsim.process import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
#: the gateway's default body limit (north.server.max_body_bytes, 1 MiB) plus 64 KiB for
#: topic and properties: the broker refuses a bigger publish (MQTT 5 reason 0x95, packet
#: too large) instead of passing it on, so no client holds more than the limit allows
MAX_PACKET_BYTES = (1 << 20) + 64 * 1024

ACL = """\
# the gateway (certificate CN {gateway}): what goes to the AMS, and reads what comes back
user {gateway}
topic write {root}/+/forecast
topic write {root}/+/verification
topic write {root}/+/reply/ams
topic write {root}/+/status
topic read {root}/+/notification
topic read {root}/+/activation
topic read {root}/+/reply/gateway

# the AMS (certificate CN {ams}): the other way round
user {ams}
topic read {root}/+/forecast
topic read {root}/+/verification
topic read {root}/+/reply/ams
topic read {root}/+/status
topic write {root}/+/notification
topic write {root}/+/activation
topic write {root}/+/reply/gateway
"""


@dataclass(frozen=True)
class BrokerFiles:
    """The broker's certificate and key and the CA its clients' certificates come from."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def write_config(
    directory: Path,
    files: BrokerFiles,
    port: int,
    *,
    topic_root: str = "smartapi",
    gateway_cn: str = "mgms-gateway",
    ams_cn: str = "ams",
    max_packet_bytes: int = MAX_PACKET_BYTES,
) -> Path:
    (directory / "acl").write_text(ACL.format(root=topic_root, gateway=gateway_cn, ams=ams_cn))
    conf = directory / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"user {getpass.getuser()}",
                "per_listener_settings false",
                "allow_anonymous false",
                f"acl_file {directory / 'acl'}",
                "persistence true",
                f"persistence_location {directory}/",
                f"log_dest file {directory / 'mosquitto.log'}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type subscribe",
                f"listener {port} 127.0.0.1",
                f"cafile {files.ca}",
                f"certfile {files.cert}",
                f"keyfile {files.key}",
                "tls_version tlsv1.2",
                "require_certificate true",
                "use_identity_as_username true",
                "set_tcp_nodelay true",
                f"max_packet_size {max_packet_bytes}",
                "",
            ]
        )
    )
    return conf


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on port {port} within {timeout} s")


@contextmanager
def mosquitto(
    directory: Path, files: BrokerFiles, *, port: int | None = None, topic_root: str = "smartapi"
) -> Iterator[Broker]:
    """Run mosquitto with TLS and client certificates; stop it on exit. Pass the `port` of
    an earlier broker on the same `directory` to restart it with its persisted sessions."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = write_config(directory, files, port, topic_root=topic_root)
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    broker = Broker("127.0.0.1", port, directory, proc)
    try:
        try:
            _wait_listening(port, proc, timeout=10.0)
        except RuntimeError as exc:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{exc}\n{err}\n{broker.log}") from exc
        yield broker
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
