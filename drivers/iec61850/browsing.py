"""Start the browse process (browse.py) and take its one JSON answer, within a deadline;
the process is killed when it misses it. Imports no bindings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from drivers.iec61850.channel import _ROOT
from gateway.errors import LinkError


async def browse_ied(
    host: str,
    port: int,
    request_timeout: float,
    within: float,
) -> dict[str, Any]:
    """The IED's model as browse.py reports it (each library request bounded by
    `request_timeout`, the whole browse by `within`); LinkError when it cannot be browsed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "drivers.iec61850.browse",
        host,
        str(port),
        str(request_timeout),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise LinkError(f"{host}:{port}", f"browse did not finish within {within:g} s") from None
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise LinkError(f"{host}:{port}", f"browse failed (exit {proc.returncode}): {tail[0]}")
    if "error" in answer:
        raise LinkError(f"{host}:{port}", str(answer["error"]))
    return answer
