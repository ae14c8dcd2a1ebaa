"""Finding 6 of the attack run: memory under hostile input did not stay bounded (118 ->
329 MB over 16 minutes; bench/soak.py 117 -> 175 MB). Nothing was leaked: parsing a
message at the limits (1 MiB, 20,000 statements) touches ~40 MB of small objects, and
Python's arenas and glibc's heaps kept that high-water mark (two threads parse at once:
the access endpoint's worker and the inbound pipeline).

A process set up as the service runs the gateway (PYTHONMALLOC=malloc as the unit sets it,
gateway.allocator's malloc settings and trim) parses padded hostile bodies on the JSON-LD,
rdflib Turtle and fast Turtle paths from two threads, rounds after rounds: after each
round's trim its RSS must be back within a few MB of where it started, while its peak
shows what the parsing cost. bench/soak.py's summary carries the long-run figure
(`rss_mb_steady`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, child_env

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys, threading
from gateway.allocator import bound_the_allocator, trim
from gateway.errors import SmartApiError
from gateway.smartapi import codec

bound_the_allocator()

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

LIMIT = 1 << 20
obj = b'{"@id":"urn:x:%d","urn:p":"v"},'
jsonld = b"[" + b"".join(obj % (i % 99999) for i in range(LIMIT // 32))[:-1] + b"]"
triples = b"".join(b'<urn:x:s> <urn:x:p> "%d" .\n' % (i % 99999) for i in range(LIMIT // 30))
bodies = [(jsonld, "application/ld+json"), (b"@base <http://e/> .\n" + triples, "text/turtle"),
          (triples, "text/turtle")]
survivors = []

def work():
    for n in range(2):
        for body, ctype in bodies:
            try:
                codec.parse(body, ctype, 20000)
            except SmartApiError:
                pass
        survivors.append(("a small object that outlives the parse", n))

trim()
start, peak, after = rss(), 0.0, []
for _ in range(2):
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss())
        threads[0].join(0.05)
    trim()
    after.append(rss())
print(json.dumps({"start": start, "peak": peak, "after": after}))
"""


@pytest.mark.timeout(300)
def test_hostile_parsing_leaves_no_high_water_mark() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**child_env(), "PYTHONMALLOC": "malloc"},
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(figures))
    assert figures["peak"] > figures["start"] + 20, figures  # the parsing did cost memory
    assert max(figures["after"]) <= figures["start"] + 15, figures  # and gave it back
