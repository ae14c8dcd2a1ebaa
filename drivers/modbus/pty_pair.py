"""A serial line without hardware, for tests and benchmarks: two linked pseudo-terminals
made by `socat` (Debian package, installed by scripts/system-deps). What is written to one
end is read at the other, so the simulator serves one end and the gateway opens the other,
as over a null-modem cable. A pty carries bytes only: no baud-rate timing, no parity."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path


class PtyPair:
    def __init__(self, folder: Path) -> None:
        #: the end the gateway opens (the mapping's `connection.serial.port`)
        self.gateway = folder / "gateway-tty"
        #: the end the simulator serves (`mgms sim --serial DEVICE=PATH`)
        self.device = folder / "device-tty"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 5.0) -> PtyPair:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (scripts/system-deps installs it)")
        # socat leaves its links behind when it is killed: the next pair replaces them
        for link in (self.gateway, self.device):
            link.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [
                socat,
                f"pty,raw,echo=0,link={self.gateway}",
                f"pty,raw,echo=0,link={self.device}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + within
        while not (self.gateway.exists() and self.device.exists()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"socat did not create the pty pair in {within} s")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the line (SIGKILL: as abruptly as a pulled adapter)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
