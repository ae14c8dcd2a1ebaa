"""Service logs: one line per event, journald-friendly, secrets redacted, repeats limited.

A line reads `LEVEL logger: message key=value ...`; the keys are the `extra=` fields of
the call (`device`, `point`, `message_id`, ...), so `journalctl -u mgms-gateway -g
device=bess1-inverter` finds a device's story. Under systemd (JOURNAL_STREAM names our
stderr) each line starts with a `<N>` syslog priority that journald turns into the entry's
level, and the timestamp is left to the journal. Newlines (tracebacks) are escaped so an
event never splits across entries.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

#: logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}

_SECRET_WORDS = r"password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key"
_SECRET_KV = re.compile(
    rf"(?i)\b((?:[\w.-]*?)(?:{_SECRET_WORDS})[\w.-]*)(['\"]?\s*[=:]\s*)"
    rf"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S
)
_URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@", re.I)
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_dir", "_files")
REDACTED = "***"


def _redact_kv(match: re.Match[str]) -> str:
    key = match.group(1)
    if key.lower().endswith(_NOT_SECRET_SUFFIXES):
        return match.group(0)
    return f"{key}{match.group(2)}{REDACTED}"


def redact(text: str) -> str:
    """Mask what looks like a credential: key=value pairs, auth headers, PEM keys, URL users."""
    text = _PEM.sub(f"[private key {REDACTED}]", text)
    text = _AUTH.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    return _SECRET_KV.sub(_redact_kv, text)


def _is_secret_field(name: str) -> bool:
    return bool(re.search(_SECRET_WORDS, name, re.I)) and not name.endswith(_NOT_SECRET_SUFFIXES)


def _field_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\\') or "\n" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, in the order they were given."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


def under_journal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    env = os.environ if environ is None else environ
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


class EventFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.levelname, f"{record.name}:", record.getMessage()]
        for key, value in event_fields(record).items():
            shown = REDACTED if _is_secret_field(key) else value
            parts.append(f"{key}={_field_value(shown)}")
        if record.exc_info:
            parts.append(f"exc={_field_value(self.formatException(record.exc_info))}")
        line = redact(" ".join(parts)).replace("\r", "").replace("\n", "\\n")
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 7)}>{line}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} {line}"


class RepeatFilter(logging.Filter):
    """Lets the first of identical events through and drops its repeats for `window_s`;
    the next one after the window carries `repeated=N` (how many were dropped)."""

    def __init__(
        self,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 2048,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._seen: dict[tuple[Any, ...], list[float | int]] = {}  # key -> [since, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg), repr(record.args))
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.repeated = int(entry[1])
        self._seen[key] = [now, 0]
        if len(self._seen) > self._max_keys:
            self._forget(now)
        return True

    def _forget(self, now: float) -> None:
        expired = [k for k, (since, _) in self._seen.items() if now - since >= self.window_s]
        for key in expired or list(self._seen)[: len(self._seen) // 2]:
            del self._seen[key]


QUIET_LIBRARIES = ("pymodbus", "aiohttp.access", "asyncio")

#: where pymodbus starts the frame dump it appends to its error lines
_FRAME_DUMP = "\n>>>>>"


class FrameDumpFilter(logging.Filter):
    """Cuts the frame dump pymodbus appends to each of its error lines when debug logging
    is off: its last 20 frames of every client in the process (kilobytes a line, other
    devices' traffic among them, a device sending a wrong transaction id wrote 2 kB a
    second), never the same text twice, so `RepeatFilter` could not fold the repeats. The
    line itself is kept; `-v` logs every frame anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and _FRAME_DUMP in record.msg:
            record.msg = record.msg.split(_FRAME_DUMP, 1)[0]
        return True


def setup_logging(verbose: bool = False, stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger to one handler on stderr (the journal under systemd)."""
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(EventFormatter(journal=under_journal(out)))
    handler.addFilter(FrameDumpFilter())  # first: the repeats are judged without the dump
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    return handler
