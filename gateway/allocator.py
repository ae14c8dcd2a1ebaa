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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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


def bound_the_allocator() -> bool:
    """Apply the settings above; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
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
