"""Pictures of trained cluster models that a marketer can read (matplotlib, Agg; PNG or SVG).

- ``cluster_figure``: the profiles of the last run on the two features that set the clusters apart most, in
  their own units (days, orders, dollars), coloured by cluster. Each cluster also gets a bubble at its
  median, sized by its share of profiles, so a cluster whose profiles all sit on one spot still shows as
  the large group it is. Title: the segment's name; legend: each cluster's name, size and share.
- ``profile_figure``: each cluster's feature means in original units beside the whole population's.

The figures are returned as well as rendered, so tests can check what was drawn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cdp.errors import InvalidInput
from cdp.ml.features import Feature

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
MAX_PROFILE_FEATURES = 8


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"picture format must be png or svg, not {fmt!r}", {"format": fmt})
    return fmt


def new_figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def render(figure: Any, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (SVG keeps text as text, so it can be searched and read)."""
    import matplotlib

    check_format(fmt)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cdp"}):
        figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()


def colour(index: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["tab10"](index % 10)


def axis_label(feature: Feature) -> str:
    text = feature.describe()
    return text[0].upper() + text[1:] + (" (log scale)" if feature.log else "")


def _clusters(artifact: Mapping[str, Any], metrics: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Per cluster index of the stored model: its key, name, size and share."""
    by_key = {c["key"]: c for c in metrics.get("clusters", [])}
    out = []
    for index, number in enumerate(artifact["numbers"]):
        child = by_key.get(f"{key}.{number}", {})
        out.append(
            {
                "index": index,
                "key": f"{key}.{number}",
                "name": child.get("name", f"cluster {number}"),
                "size": int(child.get("size", 0)),
                "share": float(child.get("share", 0.0)),
                "profile": child.get("profile", {}),
            }
        )
    return out


def _axes_pair(
    raw: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], clusters: Sequence[Mapping[str, Any]], separation: Any
) -> tuple[int, int | None]:
    """The two features (among the eight that separate clusters most) whose cluster medians lie farthest
    apart at their closest pair, so that the fewest clusters hide behind one another."""
    order = [int(i) for i in np.argsort(-np.asarray(separation), kind="stable")][:8]
    if len(order) < 2:
        return order[0], None
    spread = raw.std(axis=0)
    spread[spread == 0] = 1.0
    medians = (
        np.vstack(
            [
                np.median(raw[labels == c["index"]], axis=0) if (labels == c["index"]).any() else raw.mean(axis=0)
                for c in clusters
            ]
        )
        / spread
    )
    best: tuple[float, float, int, int] | None = None
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            points = medians[:, [a, b]]
            gaps = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
            closest = float(gaps[np.triu_indices(len(points), 1)].min()) if len(points) > 1 else 0.0
            score = (round(closest, 3), float(separation[a]) + float(separation[b]), -a, -b)
            if best is None or score > best:
                best = score
    assert best is not None
    return -best[2], -best[3]


def cluster_figure(
    key: str, name: str, artifact: Mapping[str, Any], metrics: Mapping[str, Any], features: Sequence[Feature]
) -> Any:
    """An overview (every profile coloured by cluster, a numbered bubble per cluster at its median, sized by its
    share, the legend with name, size and share) above one small panel per cluster (its profiles over everyone
    else's in grey), so a cluster hidden behind others in the overview still shows."""
    from matplotlib.ticker import FuncFormatter

    plot = artifact["plot"]
    clusters = _clusters(artifact, metrics, key)
    labels = np.asarray(plot["labels"], dtype=np.int64)
    raw = np.asarray(plot.get("raw", []), dtype=np.float64)
    if raw.size == 0:  # a model trained before raw samples were kept: its principal components
        raw = np.asarray(plot["points"], dtype=np.float64).reshape(-1, 2)
        features = [Feature("PC1", "base"), Feature("PC2", "base")]
        separation: Any = [1.0, 0.5]
    else:
        raw = raw.reshape(len(labels), -1)
        separation = list(plot.get("separation") or np.ones(raw.shape[1]))
    x_i, y_i = _axes_pair(raw, labels, clusters, separation)
    values = raw.copy()
    for i, feature in enumerate(features[: raw.shape[1]]):
        if feature.log:
            values[:, i] = np.expm1(values[:, i])
    xs = values[:, x_i]
    ys = values[:, y_i] if y_i is not None else np.zeros(len(values))
    rng = np.random.default_rng(0)

    def jitter(column: np.ndarray[Any, Any], log: bool) -> np.ndarray[Any, Any]:
        # Profiles on exactly the same spot (say, no orders) are spread a little so their number shows.
        if log:
            return np.asarray(np.expm1(np.log1p(np.maximum(column, 0)) + rng.normal(0, 0.04, len(column))))
        span = float(np.ptp(column)) if len(column) else 0.0
        return column + rng.normal(0, 0.012 * (span or 1.0), len(column))

    x_log = bool(features[x_i].log) if x_i < len(features) else False
    y_log = bool(features[y_i].log) if y_i is not None and y_i < len(features) else False
    jx, jy = jitter(xs, x_log), jitter(ys, y_log)
    per_row = 4
    rows = (len(clusters) + per_row - 1) // per_row
    figure = new_figure(12.5, 6.0 + 2.3 * rows)
    grid = figure.add_gridspec(1 + rows, per_row, height_ratios=[6.0] + [2.3] * rows)
    axes = figure.add_subplot(grid[0, :2])
    key_axes = figure.add_subplot(grid[0, 2:], gid="legend")  # the legend's own space: no wasted canvas
    key_axes.axis("off")
    total = sum(c["size"] for c in clusters) or 1
    by_size = sorted(clusters, key=lambda c: -c["size"])
    number = {c["key"]: str(rank + 1) for rank, c in enumerate(by_size)}
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if abs(value) >= 1 or value == 0 else f"{value:.1f}")

    def frame(ax: Any, small: bool) -> None:
        if x_log:
            ax.set_xscale("symlog", linthresh=1)
            ax.xaxis.set_major_formatter(plain)
        if y_log:
            ax.set_yscale("symlog", linthresh=1)
            ax.yaxis.set_major_formatter(plain)
        ax.grid(True, alpha=0.25)
        if small:
            ax.tick_params(labelsize=7)
        else:
            ax.set_xlabel(axis_label(features[x_i]) if x_i < len(features) else "")
            ax.set_ylabel(axis_label(features[y_i]) if y_i is not None else "")
        if y_i is None:
            ax.set_yticks([])

    centres = {}
    for c in by_size:  # large clusters first, so small ones are drawn on top
        mask = labels == c["index"]
        axes.scatter(jx[mask], jy[mask], s=10, alpha=0.5, color=colour(c["index"]), linewidths=0,
                     label="_nolegend_", gid=f"points-{c['key']}", zorder=4)  # fmt: skip
        centres[c["key"]] = (
            (float(np.median(xs[mask])), float(np.median(ys[mask])))
            if mask.any()
            else (float(np.median(xs)), float(np.median(ys)))
        )
    for c in by_size:
        share = c["size"] / total
        cx, cy = centres[c["key"]]
        axes.scatter([cx], [cy], s=250 + 2600 * share, color=colour(c["index"]), alpha=0.45,
                     edgecolors="black", linewidths=1.5, zorder=3, gid=f"cluster-{c['key']}",
                     label=f"{number[c['key']]}. {_shorten(c['name'], 52)}: {c['size']:,} ({share:.0%})")  # fmt: skip
        axes.annotate(number[c["key"]], (cx, cy), ha="center", va="center", fontsize=9, fontweight="bold",
                      zorder=5)  # fmt: skip
    frame(axes, small=False)
    axes.margins(0.08)
    handles, texts = axes.get_legend_handles_labels()
    legend = key_axes.legend(handles, texts, title="Cluster: profiles (share)",
                             loc="center left", frameon=False, fontsize=8.5, labelspacing=1.0)  # fmt: skip
    for handle in legend.legend_handles:
        if handle is not None and hasattr(handle, "set_sizes"):
            handle.set_sizes([90])
    figure.suptitle(name, fontsize=15, fontweight="bold")
    silhouette = metrics.get("silhouette")
    subtitle = f"{total:,} profiles in {len(clusters)} clusters; bubble size = share of profiles"
    if silhouette is not None:
        subtitle += f"; silhouette {silhouette:.2f}"
    warning = (metrics.get("quality") or {}).get("warning")
    axes.set_title(subtitle + ("\n" + warning.split(".")[0] if warning else ""), fontsize=9,
                   color="firebrick" if warning else "dimgray")  # fmt: skip
    limits = axes.get_xlim(), axes.get_ylim()
    for position, c in enumerate(by_size):  # one small panel per cluster: nothing hides it
        panel = figure.add_subplot(grid[1 + position // per_row, position % per_row], gid=f"panel-{c['key']}")
        mask = labels == c["index"]
        panel.scatter(jx[~mask], jy[~mask], s=4, color="lightgray", linewidths=0, zorder=2)
        panel.scatter(jx[mask], jy[mask], s=7, color=colour(c["index"]), alpha=0.8, linewidths=0, zorder=3,
                      gid=f"panel-points-{c['key']}")  # fmt: skip
        frame(panel, small=True)
        panel.set_xlim(*limits[0])
        panel.set_ylim(*limits[1])
        title = f"{number[c['key']]}. {_shorten(c['name'], 42)}"
        panel.set_title(f"{title}\n{c['size']:,} profiles ({c['size'] / total:.0%})", fontsize=8)
    return figure


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1].rstrip(" ·") + "…"


def profile_figure(
    key: str, name: str, artifact: Mapping[str, Any], metrics: Mapping[str, Any], features: Sequence[Feature]
) -> Any:
    """Small multiples: one panel per feature (those that set clusters apart most), one bar per cluster."""
    clusters = sorted(_clusters(artifact, metrics, key), key=lambda c: -c["size"])  # as numbered in the picture
    population = metrics.get("population") or {}
    separation = list(artifact["plot"].get("separation") or np.ones(len(features)))
    order = [int(i) for i in np.argsort(-np.asarray(separation), kind="stable")][:MAX_PROFILE_FEATURES]
    shown = [features[i] for i in order if i < len(features)]
    columns = min(4, max(1, len(shown)))
    rows = (len(shown) + columns - 1) // columns
    figure = new_figure(3.4 * columns + 1.5, 0.45 * len(clusters) * rows + 1.4 * rows + 0.8)
    grid = figure.subplots(rows, columns, squeeze=False)
    names = [f"{rank + 1}. {c['name']} ({c['share']:.0%})" for rank, c in enumerate(clusters)]
    for panel, feature in enumerate(shown):
        axes = grid[panel // columns][panel % columns]
        values = [float(c["profile"].get(feature.name, 0.0)) for c in clusters]
        bars = axes.barh(range(len(clusters)), values, color=[colour(c["index"]) for c in clusters],
                         gid=f"bars-{feature.name}")  # fmt: skip
        axes.bar_label(bars, labels=[_number(v) for v in values], fontsize=8, padding=2)
        if feature.name in population:
            axes.axvline(float(population[feature.name]), color="black", linestyle="--", linewidth=1,
                         label="all profiles")  # fmt: skip
        axes.set_title(feature.describe(), fontsize=9)
        axes.set_yticks(range(len(clusters)))
        axes.set_yticklabels(names if panel % columns == 0 else [""] * len(clusters), fontsize=8)
        axes.invert_yaxis()
        axes.margins(x=0.25)
        axes.tick_params(axis="x", labelsize=7)
    for panel in range(len(shown), rows * columns):
        grid[panel // columns][panel % columns].set_visible(False)
    figure.suptitle(f"{name}: what sets each cluster apart (averages; dashed line = all profiles)",
                    fontsize=12, fontweight="bold")  # fmt: skip
    return figure


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"
