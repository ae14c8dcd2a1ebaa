"""Drives the published Smart API 1.1 library (tests/interop/peer27.py under Python 2.7.18,
installed by scripts/smartapi-peer) as a subprocess: one JSON command in, one JSON answer out.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("peer27.py")
INSTALL = ROOT / "scripts" / "smartapi-peer"
TARGET = ROOT / ".venv" / "smartapi-peer"


def install() -> Path:
    """The library's folder, installed when missing (the script is idempotent)."""
    subprocess.run([str(INSTALL), str(TARGET)], check=True, timeout=600)
    return TARGET


@dataclass(frozen=True)
class Body:
    body: bytes
    content_type: str


class LibraryPeer:
    """One library process per call (the library keeps module-level state between
    messages; a fresh process keeps each case independent). `tz` is the peer's local time
    zone: the library stamps `generatedAt` with a naive `datetime.now()`."""

    def __init__(self, target: Path, tz: str = "UTC") -> None:
        self._target = target
        self.tz = tz

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(self._target),
            "PYTHONDONTWRITEBYTECODE": "1",
            "TZ": self.tz,
        }
        # the Python 2.7.18 interpreter the install script found
        python = (self._target / ".python").read_text().strip()
        done = subprocess.run(
            [python, str(SCRIPT)],
            input=json.dumps(command).encode(),
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        out = done.stdout.decode("utf-8", "replace")
        # the library prints lines of its own (CONCEPTDETAILS, parse warnings): our answer
        # is the one JSON line
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if done.returncode != 0 or len(lines) != 1:
            raise RuntimeError(
                f"library peer failed ({done.returncode}): {out[-2000:]}"
                f"{done.stderr.decode('utf-8', 'replace')[-3000:]}"
            )
        answer: dict[str, Any] = json.loads(lines[0])
        answer["_printed"] = [ln for ln in out.splitlines() if ln and not ln.startswith("{")]
        return answer

    def request(self, **spec: Any) -> Body:
        answer = self.call({"op": "request", **spec})
        return Body(base64.b64decode(answer["body"]), answer["content_type"])

    def message(self, **spec: Any) -> Body:
        answer = self.call({"op": "message", **spec})
        return Body(base64.b64decode(answer["body"]), answer["content_type"])

    def parse(self, kind: str, body: bytes, content_type: str, **spec: Any) -> dict[str, Any]:
        return self.call(
            {
                "op": "parse",
                "kind": kind,
                "body": base64.b64encode(body).decode("ascii"),
                "content_type": content_type,
                **spec,
            }
        )
