"""Rendering of the status page: chart geometry, gaps, escaping, value formatting."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from gateway.ops.status import ActivationView, FlexStatus, SeriesPoint, Snapshot
from gateway.ops.status_page import CHART_H, chart_svg, fmt, render

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def point(i: int, set_: float | None, base: float | None, meas: float | None) -> SeriesPoint:
    return SeriesPoint(T0 + timedelta(seconds=i), set_, base, meas)


def polylines(svg: str, name: str) -> list[list[tuple[float, float]]]:
    out = []
    for pts in re.findall(rf'class="series-{name}"[^>]*points="([^"]+)"', svg):
        out.append([tuple(map(float, p.split(","))) for p in pts.split()])
    return out  # type: ignore[return-value]


def test_chart_maps_values_and_time_onto_the_plot() -> None:
    svg = chart_svg([point(i, 10.0, 20.0, 20.0 - 2 * i) for i in range(6)])
    [setpoint] = polylines(svg, "setpoint")
    [measured] = polylines(svg, "measured")
    assert len(measured) == 6
    xs = [x for x, _ in measured]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert len({y for _, y in setpoint}) == 1  # a constant set point is a flat line
    ys = [y for _, y in measured]
    assert ys == sorted(ys)  # falling power rises on screen (y grows downwards)
    assert min(ys) > 0 and max(ys) < CHART_H
    # the set point (10) is the lowest value, so it sits lowest on the chart
    assert setpoint[0][1] >= max(ys)


def test_gaps_split_a_line_and_short_series_give_no_chart() -> None:
    series = [point(0, 1, 1, 1), point(1, 1, 1, None), point(2, 1, 1, 3), point(3, 1, 1, 4)]
    assert len(polylines(chart_svg(series), "measured")) == 2
    assert 'id="chart-empty"' in chart_svg(series[:1])
    assert 'id="chart-empty"' in chart_svg([point(0, None, None, None), point(1, None, None, None)])
    flat = chart_svg([point(0, 5, 5, 5), point(1, 5, 5, 5)])  # no range: still drawn
    assert len(polylines(flat, "baseline")) == 1


def test_page_escapes_what_it_shows() -> None:
    snap = Snapshot(
        microgrid="mg<1>",
        name="<script>alert(1)</script>",
        version="0.1.0",
        time=T0,
        uptime_s=3.0,
        ready=False,
        not_ready="devices: 1/1 devices down: a&b",
        devices=[],
        points=[],
        ders=[],
        flex=FlexStatus(activation=ActivationView("ra-<x>", "active", T0, q_kvar=-5.0)),
    )
    html = render(snap)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "mg&lt;1&gt;" in html and "a&amp;b" in html and "ra-&lt;x&gt;" in html
    assert "Q -5 kvar" in html and "P " not in html.split("ra-&lt;x&gt;")[1].split("</p>")[0]


def test_value_formatting() -> None:
    assert fmt(None) == "\u2013"
    assert fmt(True) == "true"
    assert fmt(-0.0) == "0"
    assert fmt(12.3456789) == "12.3457"
    assert fmt(7) == "7"
