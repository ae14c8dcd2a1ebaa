"""Exit statuses the unit relies on: 2 for invalid files (no restart), 1 for the rest."""

from __future__ import annotations

import logging
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from tests.support.procs import free_port
from tests.unit.gateway.ops.conftest import CONFIG, MAPPING


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """`main` sets up the service's logging on the root logger; give pytest its own back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def write(tmp_path: Path, config: str) -> Path:
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(config))
    return tmp_path / "gw.yaml"


def test_invalid_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CONFIG.replace("import_limit_kw: 10", "import_limit_kw: -1"))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gw.yaml" in err and "import_limit_kw" in err


def test_a_taken_ops_port_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    path = write(tmp_path, CONFIG.replace("ops: {port: 0,", f"ops: {{port: {port},"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert main(["run", "--config", str(path)]) == 1
    assert f"127.0.0.1:{port}: cannot bind" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged store file (a restore copied over a live WAL, a full disk): one line that
    names the file, not a traceback (under journald each traceback line is an entry)."""
    path = write(tmp_path, CONFIG)
    state = tmp_path / "state"  # the config's state_dir
    state.mkdir(exist_ok=True)
    (state / "gateway.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 4080)
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "gateway.sqlite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
