"""The event-stream reader builds what `yaml.safe_load` builds, with lines and limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway import yamlread

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted([*ROOT.glob("mappings/**/*.yaml"), *ROOT.glob("config/*.yaml")])

LIMITS = {"max_depth": 64, "max_nodes": 1_000_000}

TRICKY = [
    "a: 1\nb: 1.5\nc: true\nd: null\ne: ~\nf: 2026-12-07\ng: 0x1F\nh: '007'\ni: .inf\n",
    "base: &b {scale: 0.1, unit: KiloW}\npoints:\n  - {<<: *b, id: x, unit: V}\n  - *b\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b], z: 3}\n",
    "list: &l [1, [2, [3]]]\nagain: *l\n",
    "s: !!str 5\nf: !!float 1\nblock: |\n  line one\n  line two\n",
    "",
    "# only a comment\n",
    "- 1\n- two\n",
    "dup: 1\ndup: 2\n",
]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_read_as_safe_load_reads_them(path: Path) -> None:
    text = path.read_text()
    assert yamlread.load(text, **LIMITS) == yaml.safe_load(text)


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_documents(text: str) -> None:
    assert yamlread.load(text, **LIMITS) == yaml.safe_load(text)


def test_lines_by_path() -> None:
    text = "devices:\n  - id: d\n    points:\n      - {id: p, unit: KiloW}\n\n      - id: q\n"
    lines = yamlread.lines(text, **LIMITS)
    assert lines[()] == 1
    assert lines[("devices",)] == 2
    assert lines[("devices", 0, "points", 0, "unit")] == 4
    assert lines[("devices", 0, "points", 1)] == 6


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("a: 1\n---\nb: 2\n", yaml.YAMLError, "expected a single document"),
        ("a: *nowhere\n", yaml.YAMLError, "undefined alias"),
        ("? [1, 2]\n: x\n", yaml.YAMLError, "a mapping key must be a plain value"),
        ("a: !!set {x}\n", yaml.YAMLError, "is not supported"),
        ("a: {<<: 5}\n", yaml.YAMLError, "merge key"),
        ("a: !custom 5\n", yaml.YAMLError, "could not determine a constructor"),
        ("a: &x [1, *x]\n", yamlread.TooComplex, "an alias that contains itself"),
    ],
)
def test_refused(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        yamlread.load(text, **LIMITS)


def test_limits() -> None:
    deep = "a:" + "".join(f"\n{' ' * (i + 1)}- " for i in range(0, 20, 1)) + "x"
    with pytest.raises(yamlread.TooComplex, match="nested deeper than 10 levels"):
        yamlread.load(deep, max_depth=10, max_nodes=1000)
    bomb = "a: &a [1, 1, 1, 1]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n"
    assert yamlread.load(bomb, max_depth=10, max_nodes=112)["a"] == [1, 1, 1, 1]
    with pytest.raises(yamlread.TooComplex, match="more than 111 nodes"):
        yamlread.load(bomb, max_depth=10, max_nodes=111)
