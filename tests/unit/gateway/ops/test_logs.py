"""Service logs: one line per event, journald priorities, redaction, repeat limiting."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator

import pytest
from pymodbus.logging import Log

from gateway.ops.logs import EventFormatter, RepeatFilter, redact, setup_logging, under_journal


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(stream=stream)
    try:
        yield logging.getLogger("gateway.test"), stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def record(
    msg: str, *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    r = logging.LogRecord("gateway.x", level, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_one_line_with_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.warning("link down: %s", "refused", extra={"device": "bess1-inverter", "point": "p 1"})
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("driver error", extra={"device": "pv1"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the traceback stays on its event's line
    assert "WARNING gateway.test: link down: refused device=bess1-inverter" in lines[0]
    assert 'point="p 1"' in lines[0]
    assert "ERROR gateway.test: driver error device=pv1 exc=" in lines[1]
    assert "ValueError: bad\\nthing" in lines[1]


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    f = EventFormatter(journal=True)
    assert f.format(record("x", level=logging.ERROR)) == "<3>ERROR gateway.x: x"
    assert f.format(record("x", level=logging.WARNING)).startswith("<4>WARNING")
    assert f.format(record("x", level=logging.INFO)).startswith("<6>INFO")
    assert f.format(record("x", level=logging.DEBUG)).startswith("<7>DEBUG")
    plain = EventFormatter(journal=False).format(record("x"))
    assert plain[:4].isdigit() and plain.endswith("INFO gateway.x: x")


def test_journal_stream_is_recognised_by_device_and_inode() -> None:
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        assert under_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not under_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journal(f, {})
    assert not under_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect with password=hunter2 failed", "hunter2"),
        ("config: {'api_key': 'abc123def'}", "abc123def"),
        ("header Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi"),
        ("broker mqtts://gw:s3cr3t@ams.example:8883", "s3cr3t"),
        ("key -----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY----- loaded", "MIIEv"),
        ("client_secret: 'x y z'", "x y z"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_paths_to_secrets_are_not_redacted() -> None:
    text = "ops.operator_token_file=/etc/mgms/keys/operator.token"
    assert redact(text) == text


def test_secret_fields_are_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.info("login", extra={"password": "hunter2", "token_file": "/k/t"})
    line = stream.getvalue()
    assert "hunter2" not in line and "password=***" in line and "token_file=/k/t" in line


def test_repeats_are_dropped_within_the_window_and_counted_after() -> None:
    now = [0.0]
    f = RepeatFilter(window_s=60.0, clock=lambda: now[0])
    assert f.filter(record("device %r: down", "a"))
    for _ in range(5):
        now[0] += 1
        assert not f.filter(record("device %r: down", "a"))
    assert f.filter(record("device %r: down", "b"))  # another device is another event
    now[0] = 61.0
    again = record("device %r: down", "a")
    assert f.filter(again)
    assert again.repeated == 5  # type: ignore[attr-defined]
    now[0] = 130.0
    quiet = record("device %r: down", "a")
    assert f.filter(quiet)
    assert not hasattr(quiet, "repeated")


def test_repeat_filter_memory_is_bounded() -> None:
    now = [0.0]
    f = RepeatFilter(window_s=10.0, clock=lambda: now[0], max_keys=100)
    for i in range(1000):
        now[0] += 0.001
        f.filter(record("event %d", i))
    assert len(f._seen) <= 101


def test_pymodbus_frame_dumps_are_cut_and_its_repeats_folded(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """pymodbus appends its last frames (of every client) to an error line; each line then
    differed and none was folded. The line stays, once, without the dump."""
    _, stream = captured
    for tid in range(5):
        Log.transport_dump(Log.RECV_DATA, bytes([0, tid, 0, 0, 0, 7, 1, 3]), b"")
        Log.error("request ask for transaction_id={} but got id={}, Skipping.", 1, 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "pymodbus.logging: request ask for transaction_id=1 but got id=2, Skipping."
    )
    assert ">>>>>" not in stream.getvalue()
