"""Segment pictures and tables for people: size over time with entries and exits, and an ML model's summary as
a readable table (``cdp segments model``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from cdp.ml.plot import new_figure, render
from cdp.timeutil import parse_ts

MAX_BARS = 60  # entries and exits are summed into at most this many time buckets


def history_figure(name: str, runs: Sequence[Mapping[str, Any]]) -> Any:
    """Two panels over time: the segment's size after each run (failed and not-predictive runs marked), and
    the profiles that entered (up) and exited (down) per time bucket. ``runs`` are history rows, any order."""
    import matplotlib.dates as mdates

    rows = sorted(runs, key=lambda r: r["id"])
    figure = new_figure(10.5, 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    figure.suptitle(f"{name}: size over time", fontsize=15, fontweight="bold")
    if not rows:
        top.text(0.5, 0.5, "No runs yet: compute the segment first", ha="center", va="center",
                 transform=top.transAxes)  # fmt: skip
        top.set_yticks([])
        bottom.set_yticks([])
        return figure
    times = [_time(r["finished_at"]) for r in rows]
    ok = [
        (t, r["size"]) for t, r in zip(times, rows, strict=True) if r["status"] == "succeeded" and r["size"] is not None
    ]
    if ok:
        top.step([t for t, _ in ok], [s for _, s in ok], where="post", color="tab:blue", linewidth=2,
                 label="members", gid="size")  # fmt: skip
        top.plot([t for t, _ in ok], [s for _, s in ok], "o", color="tab:blue", markersize=3 if len(ok) > 50 else 6)
    for status, marker, tint in (("failed", "x", "firebrick"), ("not_predictive", "D", "darkorange")):
        bad = [(t, r["size"] or 0) for t, r in zip(times, rows, strict=True) if r["status"] == status]
        if bad:
            top.plot([t for t, _ in bad], [s for _, s in bad], marker, color=tint, markersize=8, linestyle="none",
                     label=f"{status.replace('_', ' ')} run (members kept)", gid=status)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    top.set_ylabel("Members")
    top.set_ylim(0, max([1.0, *(float(s) * 1.08 for _, s in ok)]))
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.grid(True, alpha=0.25)
    top.legend(loc="upper left", frameon=False, fontsize=9)
    numeric = np.asarray(mdates.date2num(times))  # type: ignore[no-untyped-call]
    span = float(numeric.max() - numeric.min())
    buckets = max(1, min(MAX_BARS, len(rows)))
    step = max(span / buckets, 1 / 86400)  # a bucket is at least a second
    edges = numeric.min() - step / 2 + step * np.arange(int(np.ceil(span / step)) + 2)
    entered, _ = np.histogram(numeric, bins=edges, weights=[r["entered"] for r in rows])
    exited, _ = np.histogram(numeric, bins=edges, weights=[r["exited"] for r in rows])
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0]) * 0.8
    bottom.bar(centres, entered, width=width, color="seagreen", label="entered", gid="entered")
    bottom.bar(centres, -exited, width=width, color="indianred", label="exited", gid="exited")
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    reach = max(1.0, float(entered.max(initial=0)), float(exited.max(initial=0))) * 1.1
    bottom.set_ylim(-reach, reach)
    bottom.set_ylabel("Entered / exited")
    bottom.grid(True, alpha=0.25)
    bottom.legend(loc="best", frameon=False, fontsize=9)
    bottom.set_xlim(float(edges[0]) - step / 2, float(edges[-1]) + step / 2)
    bottom.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator())  # type: ignore[no-untyped-call]
    )
    runs_text = f"{len(rows)} run{'s' if len(rows) != 1 else ''}"
    top.set_title(f"{runs_text} from {rows[0]['finished_at'][:16]} to {rows[-1]['finished_at'][:16]} UTC",
                  fontsize=9, color="dimgray")  # fmt: skip
    return figure


def draw_history(name: str, runs: Sequence[Mapping[str, Any]], fmt: str = "png") -> bytes:
    return render(history_figure(name, runs), fmt)


def _time(text: str) -> datetime:
    parsed = parse_ts(text)
    assert parsed is not None
    return parsed.replace(tzinfo=None)


# -- the model as a table ------------------------------------------------------------------------------------


def model_table(model: Mapping[str, Any]) -> str:
    """``cdp segments model``'s text: a cluster model's clusters (name, size, share, the features that set each
    apart in original units against everyone's) or a propensity model's quality and top features."""
    metrics = model["metrics"]
    lines = [f"{model['segment']}: {model['type']} model #{model['model_id']}, trained {model['trained_at']}"]
    last = model.get("last_run")
    if last and last.get("status") != "succeeded":
        lines.append(
            f"LAST RUN {last['status'].upper()} at {last['finished_at']}: {last.get('note') or last.get('error')}"
        )
    if model["type"] == "cluster":
        quality = metrics.get("quality") or {}
        lines.append(
            f"{metrics.get('profiles', 0):,} profiles, k={metrics.get('k')},"
            f" silhouette {_num(metrics.get('silhouette'))}"
            f" (floor {quality.get('silhouette_floor', '-')}), stability {_num(metrics.get('stability_ari'))}"
            f" (floor {quality.get('stability_floor', '-')})"
        )
        if quality.get("warning"):
            lines.append("WARNING: " + quality["warning"])
        lines.append("")
        described = {f["name"]: f["description"] for f in model["features"]}
        population = metrics.get("population") or {}
        clusters = sorted(metrics.get("clusters", []), key=lambda c: -c["size"])
        width = max([len(c["name"]) for c in clusters] + [4])
        lines.append(f"{'CLUSTER':<14} {'NAME':<{width}} {'SIZE':>8} {'SHARE':>6}  SETS IT APART (cluster vs all)")
        for c in clusters:
            apart = _apart(c.get("profile") or {}, population, described)
            lines.append(f"{c['key']:<14} {c['name']:<{width}} {c['size']:>8,} {c['share']:>6.0%}  {apart}")
        return "\n".join(lines)
    test = metrics.get("permutation_test") or {}
    lines.append(
        f"holdout AUC {_num(metrics.get('auc'))} (shuffled labels {_num(metrics.get('shuffled_label_auc'))},"
        f" permutation p-value {_num(test.get('p_value'))}), lift at top {_num(metrics.get('lift_at_top'))},"
        f" base rate {_num(metrics.get('base_rate'))}"
    )
    lines.append(f"scores: computed trait {model.get('score_trait')}, {metrics.get('scored', 0):,} profiles scored")
    lines.append("")
    lines.append(f"{'FEATURE':<34} {'WEIGHT':>8}  MEANING")
    for f in metrics.get("top_features", []):
        weight = f.get("coefficient", f.get("importance"))
        meaning = f.get("direction", "importance")
        lines.append(f"{f['feature'][:34]:<34} {_num(weight):>8}  {meaning}: {f['description']}")
    return "\n".join(lines)


def _apart(profile: Mapping[str, float], population: Mapping[str, float], described: Mapping[str, str]) -> str:
    """The three features on which the cluster's mean differs most from everyone's (relative difference)."""
    ranked = sorted(
        profile,
        key=lambda n: -abs(profile[n] - population.get(n, 0.0)) / (abs(population.get(n, 0.0)) + 1.0),
    )
    parts = [f"{described.get(n, n)} {_plain(profile[n])} vs {_plain(population.get(n, 0.0))}" for n in ranked[:3]]
    return "; ".join(parts)


def _plain(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
