"""Charts drawn on the server as SVG: no JavaScript, no fonts, nothing fetched, so a page or a
report file works offline and opens fast with a thousand windows.

>>> svg = line_chart([Series("accuracy", [0.9, None, 0.8])], labels=["a", "b", "c"])
>>> svg.startswith("<svg") and "accuracy" in svg and svg.count("<circle") == 2
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["Series", "calibration_chart", "heatmap", "line_chart", "nice_ticks"]

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7480")
TICK_CHAR = 6.2  # px a character of a 10 px tick label may take (a wide sans-serif's average)


@dataclass
class Series:
    """One line: a value per window (None: no value there), and an optional band around it."""

    name: str
    values: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None
    dashed: bool = False
    colour: str | None = None
    points: bool = field(default=True)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """At least ``count`` round values between ``lo`` and ``hi`` for an axis, as few as that
    allows: the widest step of 1, 2, 2.5 or 5 times a power of ten that still gives ``count``
    (Heckbert's nice numbers), so a reader sees 0.2, 0.4, ... rather than 0.0985, 0.335, ...

    >>> nice_ticks(0.0985, 1.04)
    [0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(0.738, 0.974)
    [0.75, 0.8, 0.85, 0.9, 0.95]
    >>> nice_ticks(-3.0, 129.6)
    [0.0, 25.0, 50.0, 75.0, 100.0, 125.0]
    """
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / max(count - 1, 1)))

    def ticks(step: float) -> list[float]:
        first = math.ceil(lo / step - 1e-9)
        return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]

    made = [ticks(m * magnitude) for m in (1, 2, 2.5, 5, 10)]
    return next((t for t in reversed(made) if len(t) >= count), made[0])


def line_chart(
    series: Sequence[Series],
    *,
    labels: Sequence[str],
    title: str = "",
    width: int = 880,
    height: int = 220,
    y_range: tuple[float, float] | None = None,
    markers: Sequence[tuple[int, str]] = (),
) -> str:
    """Lines over the windows (x: window order; ``labels`` name them, a few shown as ticks),
    bands as shaded areas, gaps where a value is missing; a legend on top; ``markers`` (window
    index, text) draw a labelled vertical line, such as a new champion."""
    left, right, top, bottom = 48, 12, 28, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(labels)
    every = [
        v
        for s in series
        for part in (s.values, s.low or [], s.high or [])
        for v in part
        if v is not None and _finite(v)
    ]
    if y_range is not None:
        lo, hi = y_range
    elif every:
        lo, hi = min(every), max(every)
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / max(n, 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="chart" aria-label="{escape(title or ", ".join(s.name for s in series))}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>',
    ]
    for v in nice_ticks(lo, hi):  # horizontal grid with round values
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_fmt(y(v))}" y2="{_fmt(y(v))}" stroke="#eaeef2"/>'
            f'<text x="{left - 4}" y="{_fmt(y(v) + 3)}" text-anchor="end" class="tick">{v:g}</text>'
        )
    step = max(1, math.ceil(n / 8))
    for i in range(0, n, step):
        out.append(
            f'<text x="{_fmt(x(i))}" y="{height - 8}" text-anchor="middle" class="tick">'
            f"{escape(labels[i])}</text>"
        )
    for i, text in markers:  # between window i - 1 and window i
        edge = x(i) - plot_w / max(n, 1) / 2
        out.append(
            f'<line x1="{_fmt(edge)}" x2="{_fmt(edge)}" y1="{top}" y2="{top + plot_h}" stroke="#8c959f" '
            f'stroke-dasharray="2 2"/><text x="{_fmt(edge + 3)}" y="{top + 10}" class="tick">'
            f"{escape(text)}</text>"
        )
    legend_x = left
    for k, s in enumerate(series):
        colour = s.colour or PALETTE[k % len(PALETTE)]
        if s.low is not None and s.high is not None:  # the band: one polygon per unbroken run
            for run in _runs([i for i in range(n) if _finite(s.low[i]) and _finite(s.high[i])]):
                upper = " ".join(f"{_fmt(x(i))},{_fmt(y(s.high[i]))}" for i in run)  # type: ignore[arg-type]
                lower = " ".join(f"{_fmt(x(i))},{_fmt(y(s.low[i]))}" for i in reversed(run))  # type: ignore[arg-type]
                out.append(
                    f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15" stroke="none"/>'
                )
        present = [i for i in range(n) if _finite(s.values[i])]
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        for run in _runs(present):
            path = " ".join(f"{_fmt(x(i))},{_fmt(y(s.values[i]))}" for i in run)  # type: ignore[arg-type]
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>')
        if s.points and len(present) <= 300:
            out += [
                f'<circle cx="{_fmt(x(i))}" cy="{_fmt(y(s.values[i]))}" r="2.2" fill="{colour}">'  # type: ignore[arg-type]
                f"<title>{escape(labels[i])}: {escape(s.name)} {s.values[i]:.4f}</title></circle>"
                for i in present
            ]
        out.append(
            f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="17" class="legend">{escape(s.name)}</text>'
        )
        legend_x += 24 + 7 * len(s.name)
    out.append("</svg>")
    return "".join(out)


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive stretches: [1, 2, 4] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def heatmap(
    rows: Sequence[str],
    labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
    flagged: Sequence[Sequence[bool]],
    *,
    title: str = "",
    width: int = 880,
) -> str:
    """A grid of row × window cells, darker as ``values`` (0 to 1: the drift statistic over its
    threshold, capped) grow; a flagged cell is red and outlined. A missing value is left blank.
    The row names get the room the longest needs, up to a third of the width; a longer one keeps
    its end (``…patient_name.confidence``) and shows in full on hover.

    >>> svg = heatmap(["age"], ["w1", "w2"], [[0.2, 1.0]], [[False, True]])
    >>> svg.count("<rect") - 1, "age" in svg
    (2, True)
    """
    longest = max((len(name) for name in rows), default=0)
    left, top, cell_h = math.ceil(min(max(60, 12 + TICK_CHAR * longest), width / 3)), 6, 16
    fits = int((left - 12) / TICK_CHAR + 1e-9)
    n = len(labels)
    plot_w = width - left - 12
    cell_w = plot_w / max(n, 1)
    height = top + cell_h * len(rows) + 22
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="chart" '
        f'aria-label="{escape(title or "heat map")}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
    ]
    for r, name in enumerate(rows):
        y = top + r * cell_h
        shown = (
            escape(name)
            if len(name) <= fits
            else f"…{escape(name[-(fits - 1) :])}<title>{escape(name)}</title>"
        )
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" class="tick">{shown}</text>')
        for i in range(n):
            v = values[r][i]
            if v is None or not math.isfinite(v):
                continue
            hit = flagged[r][i]
            shade = min(max(v, 0.0), 1.0)
            fill = (
                f"rgba(209,36,47,{0.35 + 0.65 * shade:.2f})"
                if hit
                else f"rgba(31,111,235,{0.08 + 0.6 * shade:.2f})"
            )
            stroke = ' stroke="#82071e" stroke-width="0.8"' if hit else ""
            out.append(
                f'<rect x="{left + i * cell_w:.2f}" y="{y}" width="{max(cell_w - 0.5, 0.5):.2f}" '
                f'height="{cell_h - 2}" '
                f'fill="{fill}"{stroke}><title>{escape(name)}, {escape(labels[i])}: {v:.2f}'
                f"{' drifted' if hit else ''}</title></rect>"
            )
    step = max(1, math.ceil(n / 8))
    for i in range(0, n, step):
        out.append(
            f'<text x="{left + (i + 0.5) * cell_w:.1f}" y="{height - 6}" text-anchor="middle" class="tick">'
            f"{escape(labels[i])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def calibration_chart(
    points: Sequence[tuple[str, float, float, int]],
    *,
    metric: str,
    lower_is_better: bool = False,
    size: int = 320,
) -> str:
    """Each promotion's gate estimate (x) against the live score it reached (y), on the same
    scale, with the line where the two agree. The side where the gate promised more than the
    model delivered (below the line for a score, above it for an error) is shaded; a point's
    area grows with the live rows it was met on. ``points``: (run, estimate, live, rows).

    >>> svg = calibration_chart([("r1", 0.90, 0.85, 200), ("r2", 0.80, 0.82, 50)], metric="accuracy")
    >>> svg.count("<circle"), "r1: gate 0.9000, live 0.8500 over 200 rows" in svg
    (2, True)
    """
    left, right, top, bottom = 48, 12, 28, 34
    plot = size - left - right
    height = top + plot + bottom
    every = [v for _, gate, live, _ in points for v in (gate, live) if math.isfinite(v)]
    lo, hi = (min(every), max(every)) if every else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return left + plot * (v - lo) / (hi - lo)

    def y(v: float) -> float:
        return top + plot * (1 - (v - lo) / (hi - lo))

    # the corner where the live score fell short of the estimate: below the diagonal for a score
    corner = (x(hi), y(lo)) if not lower_is_better else (x(lo), y(hi))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {height}" role="img" class="chart" '
        f'style="max-width:{size}px" aria-label="gate estimate against the live {escape(metric)}">',
        f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="#fff" stroke="#d0d7de"/>',
        f'<polygon points="{_fmt(x(lo))},{_fmt(y(lo))} {_fmt(x(hi))},{_fmt(y(hi))} {_fmt(corner[0])},'
        f'{_fmt(corner[1])}" fill="#d1242f" fill-opacity="0.07"/>',
    ]
    for v in nice_ticks(lo, hi, 4):
        out.append(
            f'<line x1="{left}" x2="{left + plot}" y1="{_fmt(y(v))}" y2="{_fmt(y(v))}" stroke="#eaeef2"/>'
            f'<line x1="{_fmt(x(v))}" x2="{_fmt(x(v))}" y1="{top}" y2="{top + plot}" stroke="#eaeef2"/>'
            f'<text x="{left - 4}" y="{_fmt(y(v) + 3)}" text-anchor="end" class="tick">{v:g}</text>'
            f'<text x="{_fmt(x(v))}" y="{top + plot + 13}" text-anchor="middle" class="tick">{v:g}</text>'
        )
    out.append(
        f'<line x1="{_fmt(x(lo))}" y1="{_fmt(y(lo))}" x2="{_fmt(x(hi))}" y2="{_fmt(y(hi))}" '
        f'stroke="#8c959f" stroke-dasharray="4 3"/>'
        f'<text x="{left + plot / 2}" y="{height - 4}" text-anchor="middle" class="tick">gate estimate</text>'
        f'<text x="{left}" y="{top - 6}" class="legend">live {escape(metric)}</text>'
    )
    for run, gate, live, rows in points:
        if not (math.isfinite(gate) and math.isfinite(live)):
            continue
        radius = 2.5 + min(3.5, math.sqrt(max(rows, 0)) / 8)
        out.append(
            f'<circle cx="{_fmt(x(gate))}" cy="{_fmt(y(live))}" r="{radius:.1f}" fill="{PALETTE[0]}" '
            f'fill-opacity="0.65"><title>{escape(run)}: gate {gate:.4f}, live {live:.4f} over {rows} rows'
            "</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)
