"""Charts as inline SVG, drawn on the server: bars (spend by model, provider, key or tag),
columns (spend by day) and a job's attempts on a timeline.

Plain functions from numbers to markup: nothing to load in the browser, the same picture
with scripts off, and every label escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

BAR_HEIGHT = 22
LABEL_WIDTH = 220
VALUE_WIDTH = 110
COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "running": "#1565c0",
    "pending": "#f9a825",
}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    caption: str  # the value as shown, e.g. "$0.0123"


def bars(items: list[Bar], width: int = 720, title: str = "") -> Markup:
    """Horizontal bars, largest first as given, scaled to the largest value."""
    if not items:
        return Markup("")
    top = max(b.value for b in items) or 1.0
    plot = width - LABEL_WIDTH - VALUE_WIDTH
    height = BAR_HEIGHT * len(items) + 8
    rows = []
    for i, bar in enumerate(items):
        y = 4 + i * BAR_HEIGHT
        length = max(1.0, plot * bar.value / top) if bar.value > 0 else 0.0
        rows.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 15}" text-anchor="end">{escape(_clip(bar.label))}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{BAR_HEIGHT - 6}" '
            f'class="bar"><title>{escape(bar.label)}: {escape(bar.caption)}</title></rect>'
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}">{escape(bar.caption)}</text>'
        )
    return _svg(width, height, title, "".join(rows))


def columns(items: list[Bar], width: int = 720, height: int = 220, title: str = "") -> Markup:
    """Vertical columns in the order given (days, oldest first), labelled underneath."""
    if not items:
        return Markup("")
    top = max(b.value for b in items) or 1.0
    plot_h = height - 60
    slot = (width - 20) / len(items)
    col_w = max(2.0, min(48.0, slot * 0.7))
    parts = []
    label_every = max(1, len(items) // 12)
    for i, bar in enumerate(items):
        x = 10 + i * slot + (slot - col_w) / 2
        h = max(1.0, plot_h * bar.value / top) if bar.value > 0 else 0.0
        y = 20 + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(bar.label)}: {escape(bar.caption)}</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + col_w / 2:.1f}" y="{height - 24}" text-anchor="middle" '
                f'class="small">{escape(bar.label[-5:])}</text>'
            )
    parts.append(
        f'<text x="10" y="14" class="small">max {escape(max(items, key=lambda b: b.value).caption)}</text>'
    )
    return _svg(width, height, title, "".join(parts))


@dataclass(frozen=True)
class Span:
    label: str
    status: str
    start: datetime
    end: datetime | None  # None: still going
    caption: str


def timeline(spans: list[Span], origin: datetime, until: datetime, width: int = 720) -> Markup:
    """Each span (an attempt) as a bar on a time axis from `origin` to `until`."""
    if not spans:
        return Markup("")
    total = max((until - origin).total_seconds(), 0.001)
    plot = width - LABEL_WIDTH - 20
    rows = []
    for i, span in enumerate(spans):
        y = 4 + i * BAR_HEIGHT
        x0 = LABEL_WIDTH + plot * max(0.0, (span.start - origin).total_seconds()) / total
        x1 = LABEL_WIDTH + plot * ((span.end or until) - origin).total_seconds() / total
        color = COLORS.get(span.status, "#546e7a")
        rows.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 15}" text-anchor="end">{escape(_clip(span.label))}</text>'
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(2.0, x1 - x0):.1f}" height="{BAR_HEIGHT - 6}" '
            f'fill="{color}"><title>{escape(span.caption)}</title></rect>'
        )
    axis_y = 8 + len(spans) * BAR_HEIGHT
    rows.append(
        f'<line x1="{LABEL_WIDTH}" y1="{axis_y}" x2="{LABEL_WIDTH + plot}" y2="{axis_y}" class="axis"/>'
        f'<text x="{LABEL_WIDTH}" y="{axis_y + 14}" class="small">0 s</text>'
        f'<text x="{LABEL_WIDTH + plot}" y="{axis_y + 14}" text-anchor="end" class="small">'
        f"{total:.2f} s</text>"
    )
    return _svg(width, axis_y + 20, "attempts over time", "".join(rows))


def _clip(label: str, limit: int = 26) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def _svg(width: int, height: float, title: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height:.0f}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )
