"""Pictures of trained models: a cluster run's profiles in two principal components (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np


def draw(key: str, artifact: Mapping[str, Any], metrics: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    plot = artifact["plot"]
    numbers = artifact["numbers"]
    names = {c["key"]: c["name"] for c in metrics.get("clusters", [])}
    points = np.asarray(plot["points"], dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(plot["labels"], dtype=np.int64)
    centres = np.asarray(plot["centroids"], dtype=np.float64).reshape(-1, 2)
    figure = Figure(figsize=(11, 6), dpi=100, layout="constrained")
    axes = figure.subplots()
    colours = matplotlib.colormaps["tab10"]
    for index, number in enumerate(numbers):
        mask = labels == index
        label = f"{key}.{number}: {names.get(f'{key}.{number}', '')}"
        axes.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.5, color=colours(index % 10), label=label)
        axes.scatter(
            centres[index, 0], centres[index, 1], s=180, marker="X", color=colours(index % 10), edgecolors="black"
        )
    variance = plot.get("explained_variance", [])
    axes.set_xlabel(f"PC1 ({variance[0]:.0%} of variance)" if variance else "PC1")
    axes.set_ylabel(f"PC2 ({variance[1]:.0%} of variance)" if len(variance) > 1 else "PC2")
    silhouette = metrics.get("silhouette")
    axes.set_title(f"{key}: {len(numbers)} clusters" + (f", silhouette {silhouette:.2f}" if silhouette else ""))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=2, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
