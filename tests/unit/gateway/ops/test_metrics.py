"""The metrics registry (prometheus_client underneath) renders what the Prometheus reference
parser reads back, and refuses wrong registrations naming the metric."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import Registry


def parse(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family name -> {(sample name, sorted labels): value} via the reference parser."""
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counter_gauge_and_histogram_round_trip() -> None:
    reg = Registry()
    polls = reg.counter("mgms_polls_total", "Polls.", ("device",))
    polls.inc(device="a")
    polls.inc(2, device="b")
    polls.inc(device="a")
    depth = reg.gauge("mgms_depth", "Depth.")
    depth.set(7)
    lat = reg.histogram("mgms_lat_seconds", "Latency.", ("device",), buckets=(0.01, 0.1, 1))
    for v in (0.005, 0.05, 0.05, 0.5, 5.0):
        lat.observe(v, device="a")

    fams = parse(reg.render())
    assert fams["mgms_polls"][("mgms_polls_total", (("device", "a"),))] == 2
    assert fams["mgms_polls"][("mgms_polls_total", (("device", "b"),))] == 2
    assert fams["mgms_depth"][("mgms_depth", ())] == 7
    h = fams["mgms_lat_seconds"]
    bucket = {dict(labels)["le"]: v for (name, labels), v in h.items() if name.endswith("_bucket")}
    assert bucket == {"0.01": 1, "0.1": 3, "1.0": 4, "+Inf": 5}
    assert h[("mgms_lat_seconds_count", (("device", "a"),))] == 5
    assert h[("mgms_lat_seconds_sum", (("device", "a"),))] == pytest.approx(5.605)


def test_label_values_are_escaped() -> None:
    reg = Registry()
    reg.gauge("g", "Help with \\ and\nnewline.", ("name",)).set(1, name='a"b\\c\nd')
    text = reg.render()
    assert 'name="a\\"b\\\\c\\nd"' in text
    assert "# HELP g Help with \\\\ and\\nnewline." in text
    fams = parse(text)
    assert fams["g"][("g", (("name", 'a"b\\c\nd'),))] == 1


def test_callback_families_are_read_at_scrape_time() -> None:
    reg = Registry()
    queue = [1, 2, 3]
    reg.callback("q_depth", "Queue depth.", "gauge", lambda: [((), len(queue))])
    reg.callback(
        "per_total", "Per device.", "counter", lambda: [(("x",), 4), (("y",), 5)], ("device",)
    )
    assert parse(reg.render())["q_depth"][("q_depth", ())] == 3
    queue.append(4)
    fams = parse(reg.render())
    assert fams["q_depth"][("q_depth", ())] == 4
    assert fams["per"][("per_total", (("device", "y"),))] == 5


def test_re_registering_returns_the_same_family_or_refuses_a_different_one() -> None:
    reg = Registry()
    c = reg.counter("a_total", "A.", ("x",))
    assert reg.counter("a_total", "A.", ("x",)) is c
    with pytest.raises(ValueError, match="already registered as counter"):
        reg.gauge("a_total", "A.", ("x",))
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("a_total", "A.", ("y",))
    reg.histogram("h", "H.", buckets=(1, 2))
    with pytest.raises(ValueError, match="other buckets"):
        reg.histogram("h", "H.", buckets=(1, 3))
    reg.callback("cb", "C.", "gauge", lambda: [])
    reg.callback("cb", "C.", "gauge", lambda: [((), 2)])  # a callback may be replaced
    assert "cb 2" in reg.render()
    with pytest.raises(ValueError, match="stored gauge"):
        reg.gauge("stored", "S.")
        reg.callback("stored", "S.", "gauge", lambda: [])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.counter("no_suffix", "x"), "must end in _total"),
        (lambda r: r.gauge("bad-name", "x"), "invalid metric name"),
        (lambda r: r.gauge("g", "x", ("__reserved",)), "invalid label name"),
        (lambda r: r.histogram("h", "x", ("le",)), "reserved"),
        (lambda r: r.histogram("h", "x", buckets=()), "not empty"),
        (lambda r: r.callback("h", "x", "histogram", list), "counters and gauges"),
    ],
)
def test_bad_registrations_name_the_problem(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call(Registry())


def test_wrong_labels_and_negative_increments_are_refused() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.", ("device",))
    with pytest.raises(ValueError, match=r"labels \['point'\] given"):
        c.inc(point="x")
    with pytest.raises(ValueError, match="cannot go down"):
        c.inc(-1, device="a")
    reg.callback("cb", "C.", "gauge", lambda: [(("a", "b"), 1)], ("one",))
    with pytest.raises(ValueError, match="2 label values"):
        reg.render()


def test_values_read_back_and_no_created_series() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.", ("device",))
    c.inc(3, device="a")
    assert c.value(device="a") == 3 and c.value(device="b") == 0
    g = reg.gauge("g", "G.", ("device",))
    assert g.value(device="a") is None
    g.set(2.5, device="a")
    assert g.value(device="a") == 2.5
    g.remove(device="a")
    g.remove(device="never")
    assert g.value(device="a") is None
    h = reg.histogram("h_seconds", "H.", buckets=(1, 2))
    h.observe(1.5)
    assert h.count() == 1
    text = reg.render()
    assert "_created" not in text
