"""The config and mapping loader under arbitrary and mutated input: every file either loads
or raises ConfigError whose problems name the file (and the line where there is one); no
other exception, no hang. `mgms check` turns that into its exit code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main as mgms
from gateway.errors import ConfigError
from gateway.loader import MAX_DEPTH, MAX_FILE_BYTES, check_files, load_config, load_mappings
from tests.faults.field import LONG
from tests.support.procs import DEMO_CONFIG, ROOT, child_env

DEMO_MAPPINGS = ROOT / "mappings" / "demo"
MAPPING_NAMES = sorted(p.name for p in DEMO_MAPPINGS.glob("*.yaml"))
DEMO_DERS = {"pcc", *(d["id"] for d in yaml.safe_load(DEMO_CONFIG.read_text())["ders"])}

FUZZ = settings(
    max_examples=3000 if LONG else 100,
    deadline=None,
    derandomize=not LONG,  # the same examples in every quick run; new ones in long runs
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["modbus", "iec104", "dlms", "KiloW", "1/holding/0", "read-write", ""])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FUZZ_TIME = pytest.mark.timeout(3600 if LONG else 120)
#: bits of text that change the meaning of YAML
yaml_bits = st.sampled_from([*":-[]{}&*!|>'\"#%@,?\t\n ", "0", "a", ".nan", "~", "\u00e9", "<<"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo config and mappings (with their secrets) to mutate."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(DEMO_MAPPINGS, root / "mappings" / "demo")
    (root / "config").mkdir()
    shutil.copy(DEMO_CONFIG, root / "config" / "demo.yaml")
    load_config(root / "config" / "demo.yaml")  # unmutated, the copy loads
    return root


def outcome(path: Path, written: list[Path], *, mapping: bool = False) -> None:
    """Load `path` (a config, or with `mapping` a mapping file of the demo's DERs); a
    ConfigError must locate every problem, anything else fails the test."""
    try:
        if mapping:
            load_mappings([path], known_ders=DEMO_DERS)
        else:
            load_config(path)
    except ConfigError as exc:
        assert exc.problems, "ConfigError without problems"
        for problem in exc.problems:
            assert problem.message.strip(), problem
            path = Path(problem.file)
            assert path.resolve() in {p.resolve() for p in written} or path.name, problem
            if problem.line is not None and path.is_file():
                # YAML breaks lines at \x85 and \u2028 too; splitlines knows them all
                text = path.read_text(encoding="utf-8", errors="replace")
                assert 1 <= problem.line <= len(text.splitlines()) + 1, problem
        assert str(exc)


def mutate(data: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    """One random change somewhere in `data`: delete, replace, duplicate or add."""
    if isinstance(data, dict) and data and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data, key=str)))
        out = dict(data)
        action = draw(st.sampled_from(["descend", "delete", "replace", "rename"]))
        if action == "descend":
            out[key] = mutate(data[key], draw)
        elif action == "delete":
            del out[key]
        elif action == "replace":
            out[key] = draw(values)
        else:
            out[draw(st.text(max_size=8))] = out.pop(key)
        return out
    if isinstance(data, list) and data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        out_list = list(data)
        action = draw(st.sampled_from(["descend", "delete", "duplicate", "replace"]))
        if action == "descend":
            out_list[i] = mutate(data[i], draw)
        elif action == "delete":
            del out_list[i]
        elif action == "duplicate":
            out_list.insert(i, data[i])
        else:
            out_list[i] = draw(values)
        return out_list
    if isinstance(data, dict):
        return {**data, draw(st.text(max_size=8)): draw(values)}
    return draw(values)


@FUZZ_TIME
@FUZZ
@given(data=st.data())
def test_mutated_demo_files(workdir: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([*MAPPING_NAMES, "config"]))
    target = (
        workdir / "config" / "demo.yaml"
        if name == "config"
        else workdir / "mappings" / "demo" / name
    )
    original = (DEMO_CONFIG if name == "config" else DEMO_MAPPINGS / name).read_text()
    parsed = yaml.safe_load(original)
    mutated = parsed
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = mutate(mutated, data.draw)
    try:
        target.write_text(yaml.safe_dump(mutated, allow_unicode=True))
        if name == "config":
            outcome(target, [target])
        else:
            outcome(target, [target], mapping=True)
    finally:
        target.write_text(original)


@FUZZ_TIME
@FUZZ
@given(data=st.data())
def test_edited_demo_text(workdir: Path, data: st.DataObject) -> None:
    """Character edits of the YAML text: broken syntax, indentation, anchors, tags."""
    name = data.draw(st.sampled_from(MAPPING_NAMES))
    target = workdir / "mappings" / "demo" / name
    original = (DEMO_MAPPINGS / name).read_text()
    text = original
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + "".join(data.draw(st.lists(yaml_bits, max_size=4))) + text[at + cut :]
    try:
        target.write_text(text)
        outcome(target, [target], mapping=True)
    finally:
        target.write_text(original)


@FUZZ_TIME
@FUZZ
@given(text=st.text(max_size=300), as_config=st.booleans())
def test_arbitrary_text(
    tmp_path_factory: pytest.TempPathFactory, text: str, as_config: bool
) -> None:
    path = tmp_path_factory.getbasetemp() / "arbitrary.yaml"
    path.write_text(text)
    if as_config:
        outcome(path, [path])
    else:
        problems = check_files([path])
        assert all(p.message and p.file == str(path) for p in problems)


@FUZZ_TIME
@FUZZ
@given(document=values)
def test_arbitrary_structures(tmp_path_factory: pytest.TempPathFactory, document: Any) -> None:
    path = tmp_path_factory.getbasetemp() / "structure.yaml"
    path.write_text(yaml.safe_dump(document))
    outcome(path, [path])
    for problem in check_files([path]):
        assert problem.message


# Files found by fuzzing and by hand; each once hung the loader, escaped it as a
# traceback (TypeError, RecursionError) or passed a NaN through every bound.

BOMB = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]",
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefg", "bcdefgh", strict=True)
        ),
        "devices: *h",
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("devices: true\n", "needs a list `devices`", id="devices-not-a-list"),
        pytest.param(
            "devices:\n  - {id: d, protocol: modbus, points: 5}\n",
            "points must be a list",
            id="points-not-a-list",
        ),
        pytest.param(BOMB, "more than 1000000 nodes", id="alias-bomb"),
        pytest.param("devices: &x [*x]\n", "an alias that contains itself", id="self-alias"),
        pytest.param("devices: " + "[" * 5000 + "]" * 5000, "too deeply", id="deep-flow"),
        pytest.param(
            "devices:" + "".join(f"\n{' ' * i}- " for i in range(0, 2 * MAX_DEPTH, 2)) + "x",
            f"nested deeper than {MAX_DEPTH} levels",
            id="deep-block",
        ),
    ],
)
def test_hostile_yaml(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    problems = check_files([path])
    assert any(expected in p.message for p in problems), problems


def test_not_a_regular_file_and_too_large(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    config.write_text(DEMO_CONFIG.read_text().replace("../mappings/demo/modbus.yaml", "/dev/zero"))
    problems = check_files([config, huge, tmp_path])
    messages = {Path(p.file).name: p.message for p in problems}
    assert messages["zero"] == "cannot read: not a regular file"
    assert messages["huge.yaml"] == "cannot read: larger than 16 MiB"
    assert messages[tmp_path.name] == "cannot read: not a regular file"


def test_numbers_must_be_finite(tmp_path: Path) -> None:
    """A NaN write limit compares false with every value: it would let any set point
    through the limit check."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "devices:\n"
        "  - id: d\n"
        "    protocol: modbus\n"
        "    connection: {host: 127.0.0.1, port: 1502}\n"
        "    points:\n"
        "      - id: p_set\n"
        "        address: 1/holding/0\n"
        "        type: int16\n"
        "        unit: KiloW\n"
        "        scale: .inf\n"
        "        direction: read-write\n"
        "        limits: {min: .nan, max: 10}\n"
    )
    problems = {(p.point, p.field, p.line): p.message for p in check_files([path])}
    assert problems == {
        ("p_set", "scale", 10): "Input should be a finite number",
        ("p_set", "limits.min", 12): "Input should be a finite number",
    }


def test_config_numbers_must_be_finite(tmp_path: Path) -> None:
    """A NaN rating passes `p_min <= p_max`; an infinite drain time never ends a stop."""
    config = tmp_path / "gw.yaml"
    text = DEMO_CONFIG.read_text().replace("../", f"{ROOT}/")
    text = text.replace("      p_max_kw: 50\n", "      p_max_kw: .nan\n", 1)
    config.write_text(text + "ops: {drain_s: .inf}\n")
    lines = text.splitlines()
    problems = {(p.field, p.line): p.message for p in check_files([config])}
    assert problems == {
        (
            "ders.0.ratings.p_max_kw",
            lines.index("      p_max_kw: .nan") + 1,
        ): "Input should be a finite number",
        ("ops.drain_s", text.count("\n") + 1): "Input should be a finite number",
    }


# `mgms check` and `mgms run` as an operator runs them


def run_mgms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_mgms_check_exit_codes(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEMO_MAPPINGS / "modbus.yaml")
        .read_text()
        .replace("unit: KiloW, der: bess1", "unit: KiloWatt, der: bess1", 1)
        .replace("poll_interval: 0.5", "poll_interval: -1", 1)
    )
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)

    ok = run_mgms("check", str(DEMO_CONFIG))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stderr
    bad = run_mgms("check", str(broken), str(bomb), str(tmp_path / "missing.yaml"))
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines[-1] == "4 problem(s) found", bad.stderr
    assert any(f"{broken}:" in line and "field 'poll_interval'" in line for line in lines)
    assert any(f"{broken}:" in line and "unknown unit 'KiloWatt'" in line for line in lines)
    assert any(f"{bomb}: too complex" in line for line in lines)
    assert any("missing.yaml: cannot read" in line for line in lines)
    assert "Traceback" not in bad.stderr
    usage = run_mgms("check")
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_mgms_run_refuses_a_broken_config(tmp_path: Path) -> None:
    """Exit 2: the service unit does not restart on it, only an operator can fix files."""
    config = tmp_path / "gw.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace("import_limit_kw: 200", "import_limit_kw: x"))
    result = run_mgms("run", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:" in result.stderr and "coupling_point.import_limit_kw" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_in_process(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workdir / "config" / "demo.yaml"
    assert mgms(["check", str(config)]) == 0
    mapping = workdir / "mappings" / "demo" / "iec104.yaml"
    original = mapping.read_text()
    try:
        mapping.write_text(original.replace("1/1001/M_ME_TF_1", "1/1001/M_XX_TF_1"))
        assert mgms(["check", str(config)]) == 1
    finally:
        mapping.write_text(original)
    err = capsys.readouterr().err
    assert f"{mapping}:" in err and "chp1.p" in err and "1 problem(s) found" in err
