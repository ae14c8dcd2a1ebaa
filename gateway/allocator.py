"""The C allocator's settings for a long-running service under hostile input.

glibc's malloc adapts to a burst in ways that keep memory after it: the mmap threshold
rises to the largest block freed (asyncio gives every TLS connection a 256 KiB read
buffer, so after one flood of connections those buffers come from the heap instead of
mmap and stay there, fragmented), and every thread that allocates may get its own arena
(8 per core; the access endpoint's and SQLite's worker threads). Measured with 1,100 slow
TLS connections: RSS 96 -> 164 MB, and 156 MB a minute after they were all closed.

Fixed thresholds keep big blocks in mmap (given back when freed) and let free heap tops be
trimmed; two arenas are enough for the gateway's few threads. glibc only: elsewhere this
does nothing.

Python's own small-object allocator (pymalloc) keeps a 1 MiB arena as long as one object in
it lives: parsing a hostile message of 20,000 statements touches ~40 MB of them, and a few
survivors (a cache entry, a log record) pin them, so RSS stays at the high-water mark of
the largest message (measured: +55 MB after two threads parsed padded bodies; malloc_trim
cannot help). The service therefore runs with PYTHONMALLOC=malloc (the unit sets it) and
`trim_forever` hands free pages back every few seconds (malloc_trim; the same test: back
to +3 MB). The high-water mark is then what one message at the limits costs while it is
checked (docs/northbound.md), not what the process keeps.

Under a long hostile load glibc still held freed memory between live blocks (the 30-minute
soak: 128 MB at start, 155 MB steady, most of the growth allocated memory outside Python's
objects). The unit therefore also preloads jemalloc (Debian: libjemalloc2), whose arenas
hand unused pages back on their own (a background thread, `dirty_decay_ms`): the same soak
steadied at 133 MB. `SERVICE_ENVIRONMENT` is what the unit sets (a test holds them equal);
without jemalloc installed the loader skips the preload and the glibc settings above apply.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import ctypes.util
import functools
import logging
import os

from gateway.sqlite import limit_heap

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: blocks this large or larger are mmapped (and returned to the system when freed)
MMAP_THRESHOLD = 128 * 1024
#: free memory at the top of a heap beyond this is given back
TRIM_THRESHOLD = 256 * 1024
ARENA_MAX = 2


#: bytes of the read buffer of each TLS connection (asyncio's default: 256 KiB)
TLS_READ_BUFFER = 64 * 1024


def bound_tls_buffers() -> None:
    """asyncio gives every TLS connection, client or server, a 256 KiB read buffer that it
    zero-fills when the connection is made, so each connection costs 256 KiB of resident
    memory from its first byte (the north and ops listeners cap connections, not their
    buffers: 1,000 slow connections would hold 250 MB). A TLS record is at most 16 KiB;
    64 KiB still takes several records a read."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


#: bytes of heap all SQLite connections of the process keep together (page caches first)
SQLITE_HEAP_LIMIT = 4 * 1024 * 1024


def bound_sqlite_memory() -> None:
    """Each SQLite connection (the store, the flex records, the north ledger and outbox)
    grows its page cache to 2 MB and keeps it; under the soak the process's SQLite heap went
    0.5 -> 3.5 MB in 150 s and on towards 9. The soft heap limit is one process-wide bound:
    past it SQLite reuses its cached pages instead of allocating (the files stay in the
    kernel's page cache, so a re-read is a copy, not a disk access)."""
    limit_heap(SQLITE_HEAP_LIMIT)


def bound_the_allocator() -> bool:
    """Apply the settings above (and the bounds of the TLS buffers and SQLite's heap);
    False where the C library is not glibc."""
    bound_tls_buffers()
    bound_sqlite_memory()
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not done:
        log.warning("malloc settings not applied (mallopt refused)")
    return done


#: jemalloc's settings: its own background thread returns unused pages a second after
#: they fell free (muzzy pages at once); two arenas for the gateway's few threads
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2"

#: the allocator environment of the service (systemd/mgms-gateway.service sets the same)
SERVICE_ENVIRONMENT = {
    "PYTHONMALLOC": "malloc",
    # a name, not a path: the loader finds it where the distribution put it (any arch)
    "LD_PRELOAD": "libjemalloc.so.2",
    "MALLOC_CONF": JEMALLOC_CONF,
}


def allocator() -> str:
    """ "jemalloc" when it was preloaded into this process, else "glibc"."""
    try:
        ctypes.CDLL(None).mallctl  # noqa: B018 (the look-up is the test)
    except AttributeError:
        return "glibc"
    return "jemalloc"


#: seconds between two malloc_trim calls (a few ms each at the gateway's size)
TRIM_EVERY_S = 5.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # once: find_library runs `ldconfig -p` in a child process each time it is called
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name is not None else None
    except OSError:
        return None


def trim() -> None:
    """Hand the allocator's free pages back to the system (glibc malloc_trim)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


async def trim_forever(every: float = TRIM_EVERY_S) -> None:
    if os.environ.get("PYTHONMALLOC") != "malloc":
        log.info("PYTHONMALLOC is not malloc: Python's arenas keep their high-water mark")
    if allocator() == "jemalloc":
        log.info("allocator: jemalloc (it returns free pages itself)")
        return
    log.info("allocator: glibc (free pages handed back every %g s)", every)
    while True:
        await asyncio.sleep(every)
        trim()
