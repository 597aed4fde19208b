"""Small SVG charts drawn on the server: sparklines, size over time, Splink-style waterfalls, the explain graph and
the match model's weights. Each is an ``<svg role="img">`` with a ``<title>`` and an ``aria-label`` that says in
words what it shows (the text alternative). Every value goes through ``html.escape``: labels come from data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from markupsafe import Markup

GOOD, BAD, INK, MUTED, ACCENT = "#1a7f37", "#cf222e", "#1f2328", "#59636e", "#0969da"


def _svg(width: int, height: int, label: str, body: str, role: str = "img") -> Markup:
    """``role="img"`` for a picture; ``"group"`` for one holding links (an image may not contain controls)."""
    text = escape(label)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="{role}" aria-label="{text}"><title>{text}</title>{body}</svg>'
    )


def _num(value: float) -> str:
    return f"{value:.1f}"


def sparkline(values: Sequence[float], *, width: int = 120, height: int = 28, label: str = "") -> Markup:
    """A line through ``values`` (oldest first)."""
    if not values:
        return _svg(width, height, label or "no runs yet", "")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1
    step = (width - 4) / max(len(values) - 1, 1)
    points = " ".join(
        f"{_num(2 + i * step)},{_num(height - 3 - (v - lo) / span * (height - 6))}" for i, v in enumerate(values)
    )
    text = label or f"size over the last {len(values)} runs: from {values[0]:g} to {values[-1]:g}"
    last_x, last_y = points.rsplit(" ", 1)[-1].split(",")
    body = (
        f'<polyline fill="none" stroke="{ACCENT}" stroke-width="1.5" points="{points}"/>'
        f'<circle cx="{last_x}" cy="{last_y}" r="2" fill="{ACCENT}"/>'
    )
    return _svg(width, height, text, body)


def size_over_time(runs: Sequence[dict[str, Any]], *, width: int = 640, height: int = 200) -> Markup:
    """Size (line) with entries (green, up) and exits (red, down) per run; ``runs`` oldest first."""
    if not runs:
        return _svg(width, height, "no runs yet", "")
    left, right, top, bottom = 48, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    sizes = [float(r.get("size") or 0) for r in runs]
    flows = [float(r.get("entered") or 0) for r in runs] + [float(r.get("exited") or 0) for r in runs]
    top_value = max(max(sizes), max(flows), 1)
    step = plot_w / max(len(runs), 1)

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="{MUTED}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" fill="{MUTED}">{top_value:g}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11" fill="{MUTED}">0</text>',
    ]
    bar = min(max(step / 3, 1), 24)
    for i, run in enumerate(runs):
        x = left + i * step + step / 2
        entered, exited = float(run.get("entered") or 0), float(run.get("exited") or 0)
        if entered:
            parts.append(
                f'<rect x="{_num(x - bar)}" y="{_num(y(entered))}" width="{_num(bar)}" '
                f'height="{_num(top + plot_h - y(entered))}" fill="{GOOD}" opacity="0.6"/>'
            )
        if exited:
            parts.append(
                f'<rect x="{_num(x)}" y="{_num(y(exited))}" width="{_num(bar)}" '
                f'height="{_num(top + plot_h - y(exited))}" fill="{BAD}" opacity="0.6"/>'
            )
    points = " ".join(f"{_num(left + i * step + step / 2)},{_num(y(s))}" for i, s in enumerate(sizes))
    parts.append(f'<polyline fill="none" stroke="{ACCENT}" stroke-width="2" points="{points}"/>')
    if len(runs) <= 60:  # a dot per run (a single run has no line to show)
        parts += [
            f'<circle cx="{_num(left + i * step + step / 2)}" cy="{_num(y(v))}" r="3" fill="{ACCENT}"/>'
            for i, v in enumerate(sizes)
        ]
    first, last = str(runs[0].get("started_at", ""))[:10], str(runs[-1].get("started_at", ""))[:10]
    parts.append(f'<text x="{left}" y="{height - 12}" font-size="11" fill="{MUTED}">{escape(first)}</text>')
    parts.append(
        f'<text x="{width - right}" y="{height - 12}" text-anchor="end" font-size="11" fill="{MUTED}">'
        f"{escape(last)}</text>"
    )
    label = (
        f"size over {len(runs)} runs from {first} to {last}: {sizes[0]:g} then {sizes[-1]:g}; "
        f"{sum(float(r.get('entered') or 0) for r in runs):g} entries and "
        f"{sum(float(r.get('exited') or 0) for r in runs):g} exits in all"
    )
    return _svg(width, height, label, "".join(parts))


def waterfall(prior: float, parts: Sequence[tuple[str, float]], final: float, *, width: int = 560) -> Markup:
    """Splink's waterfall: the prior match weight, each comparison's partial weight as a step up (green) or down
    (red), and the final match weight."""
    rows = [("prior", prior), *parts]
    row_h, left, right = 22, 150, 60
    height = row_h * (len(rows) + 1) + 16
    running, spans = 0.0, []
    for name, weight in rows:
        start = 0.0 if name == "prior" else running
        running = weight if name == "prior" else running + weight
        spans.append((name, weight, start, running))
    spans.append(("match weight", final, 0.0, final))
    lo = min(0.0, *(min(a, b) for _, _, a, b in spans))
    hi = max(0.0, *(max(a, b) for _, _, a, b in spans))
    span = (hi - lo) or 1
    scale = (width - left - right) / span

    def x(v: float) -> float:
        return left + (v - lo) * scale

    out = [f'<line x1="{_num(x(0))}" y1="4" x2="{_num(x(0))}" y2="{height - 4}" stroke="{MUTED}"/>']
    for i, (name, weight, start, end) in enumerate(spans):
        top = 8 + i * row_h
        colour = ACCENT if name in ("prior", "match weight") else (GOOD if weight >= 0 else BAD)
        x0, x1 = sorted((x(start), x(end)))
        out.append(
            f'<text x="{left - 8}" y="{top + 14}" text-anchor="end" font-size="12" fill="{INK}">{escape(name)}</text>'
            f'<rect x="{_num(x0)}" y="{top + 3}" width="{_num(max(x1 - x0, 1))}" height="{row_h - 8}"'
            f' fill="{colour}"/>'
            f'<text x="{_num(x1 + 4)}" y="{top + 14}" font-size="11" fill="{MUTED}">{weight:+.2f}</text>'
        )
    described = ", ".join(f"{name} {weight:+.2f}" for name, weight in rows)
    label = f"match weight waterfall: {described}; final match weight {final:.2f}"
    return _svg(width, height, label, "".join(out))


def explain_graph(nodes: Sequence[str], edges: Sequence[dict[str, Any]], *, size: int = 560) -> Markup:
    """The identifiers (circles on a ring) and the edges between them: solid for a shared identifier, dashed
    and labelled with the match weight for a Splink match. Each probabilistic edge links to its waterfall."""
    if not nodes:
        return _svg(size, 60, "no identifiers", "")
    radius = size / 2 - 110 if len(nodes) > 1 else 0
    centre = size / 2
    where: dict[str, tuple[float, float]] = {}
    for i, node in enumerate(nodes):
        angle = 2 * math.pi * i / len(nodes) - math.pi / 2
        where[node] = (centre + radius * math.cos(angle), centre + radius * math.sin(angle))
    out: list[str] = []
    for edge in edges:
        a, b = where.get(edge["a"]), where.get(edge["b"])
        if a is None or b is None:
            continue
        fuzzy = edge["kind"] == "probabilistic"
        dash = ' stroke-dasharray="6 4"' if fuzzy else ""
        line = (
            f'<line x1="{_num(a[0])}" y1="{_num(a[1])}" x2="{_num(b[0])}" y2="{_num(b[1])}" stroke-width="2"'
            f' stroke="{ACCENT if fuzzy else MUTED}"{dash}>'
            f"<title>{escape(edge['label'])}</title></line>"
        )
        if edge.get("href"):
            mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            line = (
                f'<a href="{escape(edge["href"])}">{line}'
                f'<text x="{_num(mx)}" y="{_num(my - 4)}" font-size="11" text-anchor="middle" fill="{ACCENT}">'
                f"{escape(edge['short'])}</text></a>"
            )
        out.append(line)
    for node, (nx, ny) in where.items():
        kind, _, value = node.partition(":")
        text = value if len(value) <= 28 else value[:27] + "…"
        out.append(
            f'<g pointer-events="none"><circle cx="{_num(nx)}" cy="{_num(ny)}" r="7"'
            f' fill="{INK if kind == "record" else ACCENT}"/>'
            f'<text x="{_num(nx)}" y="{_num(ny + 20)}" font-size="11" text-anchor="middle" fill="{INK}">'
            f"{escape(kind)}</text>"
            f'<text x="{_num(nx)}" y="{_num(ny + 33)}" font-size="11" text-anchor="middle" fill="{MUTED}">'
            f"{escape(text)}</text></g>"
        )
    shared = sum(1 for e in edges if e["kind"] != "probabilistic")
    label = (
        f"{len(nodes)} identifiers held together by {shared} shared-identifier links and "
        f"{len(edges) - shared} Splink matches"
    )
    return _svg(size, size, label, "".join(out), role="group")


def model_weights(comparisons: Sequence[dict[str, Any]], *, width: int = 640) -> Markup:
    """Each comparison's levels as horizontal bars of their match weight (log2 m/u), Splink's parameter chart."""
    rows: list[tuple[str, str, float]] = [
        (str(c["comparison"]), str(level["level"]), float(level["weight"]))
        for c in comparisons
        for level in c.get("levels", [])
    ]
    if not rows:
        return _svg(width, 40, "no comparisons", "")
    row_h, left, right = 18, 300, 50
    height = row_h * len(rows) + 12
    lo, hi = min(0.0, *(w for *_, w in rows)), max(0.0, *(w for *_, w in rows))
    scale = (width - left - right) / ((hi - lo) or 1)
    zero = left + (0 - lo) * scale
    out = [f'<line x1="{_num(zero)}" y1="2" x2="{_num(zero)}" y2="{height - 2}" stroke="{MUTED}"/>']
    for i, (comparison, level, weight) in enumerate(rows):
        top = 6 + i * row_h
        x0, x1 = sorted((zero, zero + weight * scale))
        name = f"{comparison}: {level}"
        name = name if len(name) <= 46 else name[:45] + "…"
        out.append(
            f'<text x="{left - 6}" y="{top + 11}" text-anchor="end" font-size="11" fill="{INK}">{escape(name)}</text>'
            f'<rect x="{_num(x0)}" y="{top + 2}" width="{_num(max(x1 - x0, 1))}" height="{row_h - 6}"'
            f' fill="{GOOD if weight >= 0 else BAD}"/>'
            f'<text x="{_num(x1 + 4)}" y="{top + 11}" font-size="10" fill="{MUTED}">{weight:+.2f}</text>'
        )
    label = "match weights per comparison level: " + "; ".join(f"{c} {lv} {w:+.2f}" for c, lv, w in rows)
    return _svg(width, height, label, "".join(out))


def calibration(bins: Sequence[dict[str, Any]], *, size: int = 240) -> Markup:
    """Predicted against observed rate per score bin, with the diagonal a calibrated model follows."""
    if not bins:
        return _svg(size, size, "no calibration bins", "")
    pad = 30
    span = size - 2 * pad

    def at(v: float) -> float:
        return pad + max(0.0, min(1.0, v)) * span

    out = [
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="{MUTED}"/>',
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="{MUTED}" stroke-dasharray="4 3"/>',
        f'<text x="{size / 2}" y="{size - 8}" font-size="11" text-anchor="middle" fill="{MUTED}">predicted</text>',
        f'<text x="10" y="{size / 2}" font-size="11" fill="{MUTED}" transform="rotate(-90 10 {size / 2})"'
        ' text-anchor="middle">observed</text>',
    ]
    points = [(float(b["predicted"]), float(b["observed"])) for b in bins]
    out.append(
        f'<polyline fill="none" stroke="{ACCENT}" stroke-width="2" points="'
        + " ".join(f"{_num(at(px))},{_num(size - at(py))}" for px, py in points)
        + '"/>'
    )
    out += [f'<circle cx="{_num(at(px))}" cy="{_num(size - at(py))}" r="3" fill="{ACCENT}"/>' for px, py in points]
    label = "calibration, predicted against observed per bin: " + "; ".join(f"{px:.2f} → {py:.2f}" for px, py in points)
    return _svg(size, size, label, "".join(out))
