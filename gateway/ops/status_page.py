"""The operator's status page: one self-contained HTML document rendered on the server.

No scripts and nothing fetched from elsewhere (the station zone may have no internet, and
a read-only page needs no JavaScript): tables for devices and DERs, the active
notification and activation, an inline SVG chart of set point, baseline and measured
coupling-point power, and the points. It refreshes itself every few seconds.

A site may map 10,000 points: up to `ALL_POINTS_UP_TO` of them are listed in one section
per device; beyond that each device is a section that opens its points with a link
(`?device=<id>`), the points not good are listed first (capped), and a filter (`?q=`
matches point id, device, DER, quantity or quality; `?problems=1` keeps points not good)
narrows the list. No list shows more than `MAX_ROWS` rows and says when it cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote

from gateway.ops.status import (
    ActivationView,
    CommandRow,
    NotificationView,
    PointRow,
    SeriesPoint,
    Snapshot,
)

REFRESH_S = 5
#: a site with at most this many points lists them all, one section per device
ALL_POINTS_UP_TO = 300
#: no list of points is longer than this
MAX_ROWS = 500
NO_VALUE = "\u2013"  # en dash: no value

CHART_W, CHART_H = 760, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 48

Getter = Callable[[SeriesPoint], float | None]

#: series name -> (value of a SeriesPoint, legend text, stroke colour, dash pattern)
SERIES: dict[str, tuple[Getter, str, str, str]] = {
    "setpoint": (lambda p: p.setpoint_kw, "set point", "#d62728", ""),
    "baseline": (lambda p: p.baseline_kw, "baseline", "#7f7f7f", "6 4"),
    "measured": (lambda p: p.measured_kw, "measured", "#1f77b4", ""),
}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;white-space:nowrap}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.up,.good{color:#1a7f37;font-weight:600} .down,.bad{color:#cf222e;font-weight:600}
.meta{color:#555} .banner{padding:.4em .8em;border-radius:4px;display:inline-block}
.ready{background:#dafbe1} .notready{background:#ffebe9}
svg{background:#fff;border:1px solid #ddd}
details,.device{margin:.3em 0} summary{cursor:pointer} form{margin:.4em 0}
"""


@dataclass(frozen=True)
class PointQuery:
    """Which points the page lists (from the URL's query string)."""

    device: str | None = None
    text: str = ""
    problems: bool = False

    @classmethod
    def of(cls, query: Mapping[str, str]) -> PointQuery:
        problems = query.get("problems", "").lower() in {"1", "on", "true", "yes"}
        return cls(query.get("device") or None, query.get("q", "").strip(), problems)

    @property
    def given(self) -> bool:
        return self.device is not None or bool(self.text) or self.problems

    def matches(self, p: PointRow) -> bool:
        if self.device is not None and p.device != self.device:
            return False
        if self.problems and (p.good or p.direction == "write"):
            return False
        if self.text:
            needle = self.text.lower()
            fields = (p.id, p.device, p.der or "", p.quantity, p.quality)
            return any(needle in f.lower() for f in fields)
        return True


def fmt(value: object, digits: int = 6) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "0" if value == 0 else format(value, f".{digits}g")  # no "-0"
    return str(value)


def _time(t: datetime | None) -> str:
    return NO_VALUE if t is None else t.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def chart_svg(series: Sequence[SeriesPoint]) -> str:
    """Set point, baseline and measured power over time as an inline SVG document."""
    values = [v for p in series for get, *_ in SERIES.values() if (v := get(p)) is not None]
    if len(series) < 2 or not values:
        return '<p class="meta" id="chart-empty">Not enough data for a chart yet.</p>'
    t0 = series[0].time.timestamp()
    t1 = max(series[-1].time.timestamp(), t0 + 1e-3)
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    plot_w, plot_h = CHART_W - _LEFT - _RIGHT, CHART_H - _TOP - _BOTTOM

    def x(t: datetime) -> float:
        return _LEFT + (t.timestamp() - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return _TOP + (hi - v) / (hi - lo) * plot_h

    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" '
        f'height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
        'aria-label="set point, baseline and measured coupling-point active power">'
    ]
    n_ticks = round((hi - lo) / step)
    for i in range(n_ticks + 1):
        v = lo + i * step
        yy = y(v)
        parts.append(
            f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{CHART_W - _RIGHT}" y2="{yy:.1f}" '
            'stroke="#eee"/>'
            f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">'
            f"{fmt(round(v, 6))}</text>"
        )
    parts.append(
        f'<text x="14" y="{_TOP + plot_h / 2:.0f}" font-size="11" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.0f})" text-anchor="middle">'
        "P at coupling point [kW]</text>"
    )
    for t, anchor in ((series[0].time, "start"), (series[-1].time, "end")):
        parts.append(
            f'<text x="{x(t):.1f}" y="{CHART_H - _BOTTOM + 16}" text-anchor="{anchor}" '
            f'font-size="11">{t.strftime("%H:%M:%S")}</text>'
        )
    for name, (get, _, colour, dash) in SERIES.items():
        segment: list[str] = []
        segments: list[list[str]] = []
        for p in series:
            v = get(p)
            if v is None:  # a gap splits the line
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x(p.time):.1f},{y(v):.1f}")
        if segment:
            segments.append(segment)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for seg in segments:
            parts.append(
                f'<polyline class="series-{name}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dash_attr} points="{" ".join(seg)}"/>'
            )
    legend_y = CHART_H - 12
    for i, (name, (_, label, colour, dash)) in enumerate(SERIES.items()):
        lx = _LEFT + i * 130
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{lx}" y1="{legend_y - 4}" x2="{lx + 24}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text class="legend-{name}" x="{lx + 30}" y="{legend_y}" font-size="12">'
            f"{label}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    table = f'<table id="{escape(table_id)}">'
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(fmt(value))}</td>"


def _notification(n: NotificationView | None) -> str:
    if n is None:
        return '<p class="meta" id="notification">No reserve notification in force.</p>'
    return (
        f'<p id="notification">Reserve notification <b>{escape(n.id)}</b>: '
        f"{escape(_time(n.start))} to {escape(_time(n.end))}, {n.intervals} intervals. "
        f"{escape(n.detail)}</p>"
    )


def _targets(a: ActivationView) -> str:
    given = [
        text
        for value, text in ((a.p_kw, f"P {fmt(a.p_kw)} kW"), (a.q_kvar, f"Q {fmt(a.q_kvar)} kvar"))
        if value is not None
    ]
    return "; " + ", ".join(given) if given else ""


def _activation(a: ActivationView | None) -> str:
    if a is None:
        return '<p class="meta" id="activation">No reserve activation yet.</p>'
    return (
        f'<p id="activation">Reserve activation <b>{escape(a.id)}</b> '
        f'(<span class="state">{escape(a.state)}</span>): from {escape(_time(a.start))} '
        f"until {escape(_time(a.end))}{escape(_targets(a))}. {escape(a.detail)}</p>"
        + chart_svg(a.series)
    )


POINT_HEADERS = (
    "point",
    "DER",
    "quantity",
    "value",
    "unit",
    "quality",
    "age s",
    "last command",
    "detail",
)


def _command(c: CommandRow | None) -> str:
    if c is None:
        return _td(None)
    text = f"{fmt(c.value)} {c.status} at {c.time.strftime('%H:%M:%S')} by {c.origin}"
    return _td(text, "good" if c.confirmed else "bad")


def _point_rows(points: Sequence[PointRow]) -> list[list[str]]:
    return [
        [
            _td(p.id),
            _td(p.der),
            _td(p.quantity),
            _td(p.value, "num"),
            _td(p.unit),
            _td(p.quality, "good" if p.good else "" if p.direction == "write" else "bad"),
            _td(p.age_s, "num"),
            _command(p.command),
            _td(p.detail),
        ]
        for p in points
    ]


def _capped(points: list[PointRow], table_id: str, what: str) -> str:
    shown = points[:MAX_ROWS]
    note = ""
    if len(points) > len(shown):
        note = (
            f'<p class="meta">Showing the first {len(shown)} of {len(points)} {what}; '
            "narrow the filter to see the others.</p>"
        )
    return note + _table(POINT_HEADERS, _point_rows(shown), table_id)


def _filter_form(q: PointQuery) -> str:
    device = f'<input type="hidden" name="device" value="{escape(q.device)}">' if q.device else ""
    checked = " checked" if q.problems else ""
    return (
        '<form id="point-filter" method="get" action="/#points">'
        f"{device}"
        '<label>Filter points <input type="search" name="q" '
        f'value="{escape(q.text)}" placeholder="point, device, DER, quantity"></label> '
        f'<label><input type="checkbox" name="problems" value="1"{checked}> not good only'
        '</label> <button type="submit">Show</button> <a href="/#points">all devices</a></form>'
    )


def _points(snap: Snapshot, q: PointQuery) -> str:
    by_device: dict[str, list[PointRow]] = {}
    for p in snap.points:
        by_device.setdefault(p.device, []).append(p)
    form = _filter_form(q)
    if q.given:
        found = [p for p in snap.points if q.matches(p)]
        scope = f"device {q.device}" if q.device else "all devices"
        head = (
            f'<p class="meta" id="points-found">{len(found)} of {len(snap.points)} points '
            f"match ({escape(scope)}).</p>"
        )
        return form + head + _capped(found, "points", "matching points")
    total = len(snap.points)
    if total <= ALL_POINTS_UP_TO:
        sections = [
            f'<details open id="device-{escape(d)}"><summary>{escape(d)}: '
            f"{_counts(rows)}</summary>{_table(POINT_HEADERS, _point_rows(rows), 'points-' + d)}"
            "</details>"
            for d, rows in by_device.items()
        ]
        return form + '<div id="points">' + "".join(sections) + "</div>"
    problems = [p for p in snap.points if not p.good and p.direction != "write"]
    sections = [
        f'<div class="device" id="device-{escape(d)}">{escape(d)}: {_counts(rows)} · '
        f'<a href="?device={quote(d)}#points">show its points</a></div>'
        for d, rows in by_device.items()
    ]
    bad = (
        "<h3>Points not good</h3>" + _capped(problems, "points-problems", "points not good")
        if problems
        else '<p class="meta">Every point is good.</p>'
    )
    return (
        form + f'<div id="points"><p class="meta">{total} points on {len(by_device)} devices; '
        "open a device or filter to list points.</p>" + "".join(sections) + bad + "</div>"
    )


def _counts(rows: Sequence[PointRow]) -> str:
    readable = [p for p in rows if p.direction != "write"]
    good = sum(p.good for p in readable)
    text = f"{len(rows)} points, {good}/{len(readable)} good"
    return escape(text)


def render(snap: Snapshot, query: PointQuery | None = None) -> str:
    devices = [
        [
            _td(d.id),
            _td(d.protocol),
            _td("up" if d.up else "down", "up" if d.up else "down"),
            _td(d.reconnects, "num"),
            _td(d.polls, "num"),
            _td(d.last_poll_ms, "num"),
        ]
        for d in snap.devices
    ]
    ders = [
        [
            _td(d.id),
            _td(d.type),
            _td(d.control),
            _td(d.p_kw, "num"),
            _td(d.q_kvar, "num"),
            _td(d.soc_pct, "num"),
            _td(d.setpoint_kw, "num"),
        ]
        for d in snap.ders
    ]
    ready = (
        '<span class="banner ready" id="readiness">ready</span>'
        if snap.ready
        else f'<span class="banner notready" id="readiness">not ready: {escape(snap.not_ready)}'
        "</span>"
    )
    title = f"MGMS gateway — {snap.microgrid}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{escape(snap.name)} · version {escape(snap.version)} ·
up {escape(fmt(round(snap.uptime_s)))} s · {escape(_time(snap.time))} · {ready}</p>
<h2>Devices</h2>
{_table(["device", "protocol", "link", "reconnects", "polls", "last poll ms"], devices, "devices")}
<h2>Distributed energy resources</h2>
{_table(["DER", "type", "control", "P kW", "Q kvar", "SOC %", "P set kW"], ders, "ders")}
<h2>Flexibility</h2>
<div id="flex">{_notification(snap.flex.notification)}{_activation(snap.flex.activation)}</div>
<h2 id="points-title">Points</h2>
{_points(snap, query or PointQuery())}
</body></html>
"""
