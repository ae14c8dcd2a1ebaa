"""The gateway's metrics, kept and rendered by `prometheus_client` (text format 0.0.4).

One registry per gateway (no module-level default). Parts of the gateway register their
families at start and update them on the event loop thread; values that already live
elsewhere (a queue's depth, a session's counters) are registered as callbacks and read at
scrape time, so nothing has to be kept in step. This module only adds what the gateway's
parts rely on: labels given by name, registering the same family twice returns it (a
reload asks again), and a name, label or value that is wrong is refused with the metric
named.

    registry.counter("mgms_x_total", "help", ("device",)).inc(device="bess1")
    registry.gauge("mgms_y", "help").set(3.0)
    registry.histogram("mgms_z_seconds", "help", ("device",)).observe(0.01, device="bess1")
    registry.callback("mgms_depth", "help", "gauge", lambda: [((), len(queue))])
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]
#: what a callback family returns: (label values in `labels` order, value) pairs
Samples = Iterable[tuple[LabelValues, float]]

# names as the 0.0.4 text format allows them (the library would accept any UTF-8 name)
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: seconds; covers a loopback Modbus read (0.2 ms) up to a slow serial/MMS poll
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# a `<name>_created` series beside every counter and histogram doubles the series for no
# use here (Prometheus does not read it from the 0.0.4 format)
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _Family:
    def __init__(
        self, registry: CollectorRegistry, name: str, kind: Kind, labels: tuple[str, ...]
    ) -> None:
        self._registry = registry
        self.name = name
        self.kind: Kind = kind
        self.labels = labels
        self._metric: Any = None

    def key(self, given: dict[str, str]) -> dict[str, str]:
        if set(given) != set(self.labels):
            raise ValueError(
                f"metric {self.name}: labels {sorted(given)} given, {list(self.labels)} expected"
            )
        return {n: str(given[n]) for n in self.labels}

    def _child(self, given: dict[str, str]) -> Any:
        labels = self.key(given)
        return self._metric.labels(**labels) if self.labels else self._metric

    def _sample(self, suffix: str, given: dict[str, str]) -> float | None:
        return self._registry.get_sample_value(self.name + suffix, self.key(given))


class Counter(_Family):
    def __init__(
        self, registry: CollectorRegistry, name: str, help: str, labels: tuple[str, ...]
    ) -> None:
        super().__init__(registry, name, "counter", labels)
        self._metric = prometheus_client.Counter(name, help, labels, registry=registry)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"metric {self.name}: a counter cannot go down ({amount})")
        self._child(labels).inc(amount)

    def value(self, **labels: str) -> float:
        return self._sample("", labels) or 0.0


class Gauge(_Family):
    def __init__(
        self, registry: CollectorRegistry, name: str, help: str, labels: tuple[str, ...]
    ) -> None:
        super().__init__(registry, name, "gauge", labels)
        self._metric = prometheus_client.Gauge(name, help, labels, registry=registry)

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(float(value))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def remove(self, **labels: str) -> None:
        values = self.key(labels)
        with contextlib.suppress(KeyError):  # never set
            self._metric.remove(*(values[n] for n in self.labels))

    def value(self, **labels: str) -> float | None:
        return self._sample("", labels)


class Histogram(_Family):
    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help: str,
        labels: tuple[str, ...],
        buckets: Sequence[float],
    ) -> None:
        super().__init__(registry, name, "histogram", labels)
        if "le" in labels:
            raise ValueError(f"metric {name}: 'le' is reserved for histogram buckets")
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"metric {name}: buckets must be distinct and not empty")
        self.bounds = tuple(bounds)
        self._metric = prometheus_client.Histogram(
            name, help, labels, registry=registry, buckets=self.bounds
        )

    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)

    def count(self, **labels: str) -> int:
        return int(self._sample("_count", labels) or 0)


class _CallbackCollector:
    """A counter or gauge family whose samples are read from `fn` at scrape time."""

    def __init__(
        self, name: str, help: str, kind: Kind, labels: tuple[str, ...], fn: Callable[[], Samples]
    ) -> None:
        self.name, self.help, self.kind, self.labels, self.fn = name, help, kind, labels, fn

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, value in sorted(self.fn()):
            if len(values) != len(self.labels):
                raise ValueError(
                    f"metric {self.name}: callback gave {len(values)} label values "
                    f"for labels {list(self.labels)}"
                )
            family.add_metric([str(v) for v in values], float(value))
        yield family


class Registry:
    """The metric families of one gateway."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._families: dict[str, _Family | _CallbackCollector] = {}

    def _check(
        self, name: str, kind: Kind, labels: Sequence[str]
    ) -> _Family | _CallbackCollector | None:
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
        family = Counter(self._registry, name, help, tuple(labels))
        self._families[name] = family
        return family

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        existing = self._check(name, "gauge", labels)
        if existing is not None:
            if not isinstance(existing, Gauge):
                raise ValueError(f"metric {name} already registered as a callback")
            return existing
        family = Gauge(self._registry, name, help, tuple(labels))
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
        if existing is not None:
            assert isinstance(existing, Histogram)
            wanted = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
            if existing.bounds != wanted:
                raise ValueError(f"metric {name} already registered with other buckets")
            return existing
        family = Histogram(self._registry, name, help, tuple(labels), buckets)
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
        if kind == "histogram":
            raise ValueError(f"metric {name}: callbacks serve counters and gauges only")
        existing = self._check(name, kind, labels)
        if existing is not None and not isinstance(existing, _CallbackCollector):
            raise ValueError(f"metric {name} already registered as a stored {existing.kind}")
        if existing is not None:
            self._registry.unregister(existing)
        collector = _CallbackCollector(name, help, kind, tuple(labels), fn)
        self._registry.register(collector)
        self._families[name] = collector

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def render(self) -> str:
        return generate_latest(self._registry).decode()
