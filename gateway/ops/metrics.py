"""A small metrics registry rendered in the Prometheus text format (version 0.0.4).

One registry per gateway (no module-level default). Parts of the gateway register their
families at start and update them on the event loop thread; values that already live
elsewhere (a queue's depth, a session's counters) are registered as callbacks and read at
scrape time, so nothing has to be kept in step.

    registry.counter("mgms_x_total", "help", ("device",)).inc(device="bess1")
    registry.gauge("mgms_y", "help").set(3.0)
    registry.histogram("mgms_z_seconds", "help", ("device",)).observe(0.01, device="bess1")
    registry.callback("mgms_depth", "help", "gauge", lambda: [((), len(queue))])
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]
#: what a callback family returns: (label values in `labels` order, value) pairs
Samples = Iterable[tuple[LabelValues, float]]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: seconds; covers a loopback Modbus read (0.2 ms) up to a slow serial/MMS poll
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    def __init__(self, name: str, help: str, kind: Kind, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help
        self.kind: Kind = kind
        self.labels = labels

    def key(self, given: dict[str, str]) -> LabelValues:
        if set(given) != set(self.labels):
            raise ValueError(
                f"metric {self.name}: labels {sorted(given)} given, {list(self.labels)} expected"
            )
        return tuple(str(given[n]) for n in self.labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    def __init__(self, name: str, help: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, help, "counter", labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"metric {self.name}: a counter cannot go down ({amount})")
        key = self.key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self.key(labels), 0.0)

    def render(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.labels, k)} {format_value(v)}"
            for k, v in sorted(self._values.items())
        ]


class Gauge(_Family):
    def __init__(self, name: str, help: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, help, "gauge", labels)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        self._values[self.key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self.key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def remove(self, **labels: str) -> None:
        self._values.pop(self.key(labels), None)

    def value(self, **labels: str) -> float | None:
        return self._values.get(self.key(labels))

    def render(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.labels, k)} {format_value(v)}"
            for k, v in sorted(self._values.items())
        ]


@dataclass
class _Buckets:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Family):
    def __init__(
        self, name: str, help: str, labels: tuple[str, ...], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help, "histogram", labels)
        if "le" in labels:
            raise ValueError(f"metric {name}: 'le' is reserved for histogram buckets")
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"metric {name}: buckets must be distinct and not empty")
        self.bounds = tuple(bounds)
        self._children: dict[LabelValues, _Buckets] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self.key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Buckets([0] * len(self.bounds))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                child.counts[i] += 1
                break
        child.total += value
        child.count += 1

    def count(self, **labels: str) -> int:
        child = self._children.get(self.key(labels))
        return 0 if child is None else child.count

    def render(self) -> list[str]:
        lines = []
        for key, child in sorted(self._children.items()):
            cumulative = 0
            for bound, n in zip(self.bounds, child.counts, strict=True):
                cumulative += n
                # the reference client's spelling ("1.0"), so series stay the same across tools
                le = _label_text(self.labels, key, f'le="{float(bound)!r}"')
                lines.append(f"{self.name}_bucket{le} {cumulative}")
            inf = _label_text(self.labels, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {child.count}")
            lines.append(
                f"{self.name}_sum{_label_text(self.labels, key)} {format_value(child.total)}"
            )
            lines.append(f"{self.name}_count{_label_text(self.labels, key)} {child.count}")
        return lines


class Callback(_Family):
    """A counter or gauge family whose samples are read from `fn` at scrape time."""

    def __init__(
        self, name: str, help: str, kind: Kind, labels: tuple[str, ...], fn: Callable[[], Samples]
    ) -> None:
        if kind == "histogram":
            raise ValueError(f"metric {name}: callbacks serve counters and gauges only")
        super().__init__(name, help, kind, labels)
        self.fn = fn

    def render(self) -> list[str]:
        lines = []
        for values, value in sorted(self.fn()):
            if len(values) != len(self.labels):
                raise ValueError(
                    f"metric {self.name}: callback gave {len(values)} label values "
                    f"for labels {list(self.labels)}"
                )
            lines.append(f"{self.name}{_label_text(self.labels, values)} {format_value(value)}")
        return lines


class Registry:
    """The metric families of one gateway, rendered in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _check(self, name: str, kind: Kind, labels: Sequence[str]) -> _Family | None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"metric {name}: invalid label name {label!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        existing = self._families.get(name)
        if existing is not None and (existing.kind, existing.labels) != (kind, tuple(labels)):
            raise ValueError(
                f"metric {name} already registered as {existing.kind} {list(existing.labels)}"
            )
        return existing

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        existing = self._check(name, "counter", labels)
        if existing is not None:
            if not isinstance(existing, Counter):
                raise ValueError(f"metric {name} already registered as a callback")
            return existing
        family = Counter(name, help, tuple(labels))
        self._families[name] = family
        return family

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        existing = self._check(name, "gauge", labels)
        if existing is not None:
            if not isinstance(existing, Gauge):
                raise ValueError(f"metric {name} already registered as a callback")
            return existing
        family = Gauge(name, help, tuple(labels))
        self._families[name] = family
        return family

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        existing = self._check(name, "histogram", labels)
        family = Histogram(name, help, tuple(labels), buckets)
        if existing is not None:
            assert isinstance(existing, Histogram)
            if existing.bounds != family.bounds:
                raise ValueError(f"metric {name} already registered with other buckets")
            return existing
        self._families[name] = family
        return family

    def callback(
        self,
        name: str,
        help: str,
        kind: Kind,
        fn: Callable[[], Samples],
        labels: Sequence[str] = (),
    ) -> None:
        """Register (or replace) a family read from `fn()` at every scrape."""
        existing = self._check(name, kind, labels)
        if existing is not None and not isinstance(existing, Callback):
            raise ValueError(f"metric {name} already registered as a stored {existing.kind}")
        self._families[name] = Callback(name, help, kind, tuple(labels), fn)

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.header())
            lines.extend(family.render())
        return "\n".join(lines) + "\n"
