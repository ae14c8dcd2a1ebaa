"""gateway.allocator bounds two kinds of memory that grow with use rather than with
messages, each measured in a process of its own against the same process without the bound:

- each TLS connection's read buffer: asyncio zero-fills 256 KiB per connection (client and
  server side alike), so connections held open cost a quarter of a MB each before a byte
  arrives; measured as the resident memory 100 open connections add (both ends in the
  process, so 200 buffers);
- SQLite's heap: every connection keeps a page cache of up to 2 MB; measured with
  sqlite3_memory_used after four connections read a 10 MB file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.allocator import SQLITE_HEAP_LIMIT
from gateway.north.certs import init_dev_pki
from tests.support.procs import ROOT, child_env

CONNECTIONS = 100
#: KiB per connection (both ends, OpenSSL's state included); asyncio's default buffers
#: alone are 512
MAX_KIB_PER_CONNECTION = 320

SCRIPT = r"""
import asyncio, json, ssl, sys
from pathlib import Path

import pytest
from gateway.allocator import bound_the_allocator, trim

if sys.argv[2] == "bounded":
    bound_the_allocator()
pki = Path(sys.argv[1])
N = int(sys.argv[3])

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

async def main():
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "gateway.pem", pki / "gateway.key")
    client_ctx = ssl.create_default_context(cafile=pki / "ca.pem")
    held = []

    async def serve(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    # one connection first: OpenSSL's and asyncio's one-time set-up is not counted
    first = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                          server_hostname="localhost")
    await asyncio.sleep(0.2)
    trim()
    before = rss_kib()
    clients = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                             server_hostname="localhost") for _ in range(N)]
    while len(held) < N + 1:
        await asyncio.sleep(0.01)
    trim()
    after = rss_kib()
    for _, writer in [first, *clients]:
        writer.close()
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()
    print(json.dumps({"kib_per_connection": (after - before) / N}))

asyncio.run(main())
"""


def _measure(script: str, *args: str, malloc: bool = False) -> dict[str, float]:
    """Run `script` in a process of its own; the figures it printed as JSON."""
    env = child_env() | ({"PYTHONMALLOC": "malloc"} if malloc else {})
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def _per_connection(pki: Path, mode: str) -> float:
    figures = _measure(SCRIPT, str(pki), mode, str(CONNECTIONS), malloc=True)
    return figures["kib_per_connection"]


def test_an_open_tls_connection_holds_a_bounded_read_buffer(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki").directory
    bounded = _per_connection(pki, "bounded")
    asyncio_default = _per_connection(pki, "default")
    assert bounded <= MAX_KIB_PER_CONNECTION, (bounded, asyncio_default)
    # the same measurement sees asyncio's own buffers where the bound is not applied
    assert asyncio_default >= 2 * 256, (bounded, asyncio_default)


SQLITE_SCRIPT = r"""
import contextlib, ctypes, json, sqlite3, sys, _sqlite3
from gateway.allocator import bound_the_allocator

if sys.argv[2] == "bounded":
    bound_the_allocator()
lib = ctypes.CDLL(_sqlite3.__file__)  # the SQLite the sqlite3 module is linked to
lib.sqlite3_memory_used.restype = ctypes.c_int64
path = sys.argv[1]
with contextlib.closing(sqlite3.connect(path)) as db:
    db.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    db.execute(
        "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
        " WHERE i < 100000) SELECT randomblob(100) FROM c"
    )
    db.commit()
# four connections each reading the whole file, as the store, the flex records, the
# ledger and the outbox each keep theirs
conns = [sqlite3.connect(path) for _ in range(4)]
for conn in conns:
    conn.execute("SELECT sum(length(x)) FROM t").fetchone()
print(json.dumps({"sqlite_mb": lib.sqlite3_memory_used() / 2**20}))
for conn in conns:
    conn.close()
"""


def _sqlite_mb(path: Path, mode: str) -> float:
    return _measure(SQLITE_SCRIPT, str(path), mode)["sqlite_mb"]


def test_sqlite_connections_share_one_bounded_heap(tmp_path: Path) -> None:
    bounded = _sqlite_mb(tmp_path / "bounded.sqlite", "bounded")
    unbounded = _sqlite_mb(tmp_path / "unbounded.sqlite", "default")
    assert bounded <= SQLITE_HEAP_LIMIT / 2**20 + 0.5, (bounded, unbounded)
    # SQLite's default: each connection keeps a page cache of up to 2 MB
    assert unbounded >= 6, (bounded, unbounded)


def test_the_periodic_trim_looks_up_the_c_library_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ctypes.util.find_library` runs `ldconfig -p` in a child process: once per trim
    (every 5 s) it forked the gateway for nothing."""
    import ctypes.util

    from gateway import allocator

    calls: list[str] = []
    real = ctypes.util.find_library

    def counting(name: str) -> str | None:
        calls.append(name)
        return real(name)

    allocator._libc.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", counting)
    for _ in range(3):
        allocator.trim()
    allocator.bound_the_allocator()
    assert calls == ["c"]


def test_the_unit_sets_the_allocator_environment_the_gateway_documents() -> None:
    """The service unit and `SERVICE_ENVIRONMENT` (what the soak runs under) are the same
    three settings: the soak's memory figure is the service's."""
    from gateway.allocator import SERVICE_ENVIRONMENT

    unit = (ROOT / "systemd" / "mgms-gateway.service").read_text()
    env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.splitlines()
        if line.startswith("Environment=")
    )
    assert {k: env.get(k) for k in SERVICE_ENVIRONMENT} == SERVICE_ENVIRONMENT


def test_jemalloc_is_recognised_when_preloaded() -> None:
    """The gateway tells which allocator it runs on (and stops trimming glibc's heap under
    jemalloc); CI installs libjemalloc2 as the deployment docs ask."""
    from gateway.allocator import SERVICE_ENVIRONMENT

    probe = "from gateway.allocator import allocator; print(allocator())"
    run = [sys.executable, "-c", probe]
    plain = subprocess.run(run, env=child_env(), capture_output=True, text=True, check=True)
    preloaded = subprocess.run(
        run, env=child_env() | SERVICE_ENVIRONMENT, capture_output=True, text=True, check=True
    )
    assert (plain.stdout.strip(), preloaded.stdout.strip()) == ("glibc", "jemalloc")
    assert "cannot be preloaded" not in preloaded.stderr
