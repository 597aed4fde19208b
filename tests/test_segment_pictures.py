"""Pictures a marketer reads: what is drawn (titles, legends, every cluster's marks inside the axes), checked
from the figures' artists and from the SVG the API serves."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from cdp import CDP
from cdp.cli import cli
from tests.conftest import LiveServer
from tests.test_ml import PERSONAS_SEGMENT, group_events, send

SVG = "{http://www.w3.org/2000/svg}"


def lopsided_groups(cdp: CDP, key: str) -> None:
    """A large dormant group whose profiles all look alike (one visit long ago), and three smaller ones."""
    rng = random.Random(21)
    messages: list[dict[str, Any]] = []
    for group, n in (("dormant", 90), ("whale", 30), ("browser", 40), ("bargain", 35)):
        for i in range(n):
            messages += group_events(group, f"{group}-{i}", rng)
    send(cdp, key, messages)


def personas(cdp: CDP, key: str) -> list[dict[str, Any]]:
    lopsided_groups(cdp, key)
    cdp.segments.create({**PERSONAS_SEGMENT, "model": {"k": 4}})
    cdp.segments.compute("behaviour")
    return cdp.segments.list(parent="behaviour").data


def test_the_cluster_picture_shows_every_cluster_with_its_name_size_and_share(fresh_db: CDP, write_key: str) -> None:
    children = personas(fresh_db, write_key)
    figure = fresh_db.segments.figure("behaviour")
    assert figure.get_suptitle() == "Behavioural personas"  # the segment's name, not its key
    axes = figure.axes[0]  # the overview
    (legend,) = [a.get_legend() for a in figure.axes if a.get_legend() is not None]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == len(children) == 4
    for child in children:
        share = f"{child['size'] / 195:.0%}"
        assert any(t.endswith(f"{child['name']}: {child['size']:,} ({share})") for t in texts), (child, texts)
    # Largest first in the legend.
    sizes = [int(t.rsplit(": ", 1)[1].split(" ")[0].replace(",", "")) for t in texts]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 90
    x0, x1 = sorted(axes.get_xlim())
    y0, y1 = sorted(axes.get_ylim())
    bubbles = {}
    for collection in axes.collections:
        gid = collection.get_gid() or ""
        offsets = np.asarray(collection.get_offsets())
        inside = (offsets[:, 0] >= x0) & (offsets[:, 0] <= x1) & (offsets[:, 1] >= y0) & (offsets[:, 1] <= y1)
        if gid.startswith("cluster-"):
            assert inside.all(), gid
            bubbles[gid.removeprefix("cluster-")] = float(collection.get_sizes()[0])
        elif gid.startswith("points-"):
            assert inside.mean() >= 0.99, gid
    # Every cluster has a visible mark, sized by its share: the big look-alike group draws the biggest one.
    assert set(bubbles) == {c["key"] for c in children}
    biggest = max(children, key=lambda c: c["size"])
    assert bubbles[biggest["key"]] == max(bubbles.values())
    # And its own small panel, where nothing can hide it: its profiles inside the panel's axes.
    panels = {a.get_gid(): a for a in figure.axes if (a.get_gid() or "").startswith("panel-")}
    assert set(panels) == {f"panel-{c['key']}" for c in children}
    for child in children:
        panel = panels[f"panel-{child['key']}"]
        (mine,) = [c for c in panel.collections if c.get_gid() == f"panel-points-{child['key']}"]
        offsets = np.asarray(mine.get_offsets())
        px0, px1 = sorted(panel.get_xlim())
        py0, py1 = sorted(panel.get_ylim())
        inside = (offsets[:, 0] >= px0) & (offsets[:, 0] <= px1) & (offsets[:, 1] >= py0) & (offsets[:, 1] <= py1)
        assert inside.sum() >= min(child["size"], 1) and inside.mean() >= 0.99
        assert f"{child['size']:,} profiles" in panel.get_title()
    # Axes in words and units people know, not principal components.
    assert "PC" not in axes.get_xlabel() and axes.get_xlabel() and axes.get_ylabel()
    profile = fresh_db.segments.figure("behaviour", "profiles")
    assert profile.get_suptitle().startswith("Behavioural personas: what sets each cluster apart")
    panels = [a for a in profile.axes if a.get_visible()]
    assert len(panels) >= 4
    for panel in panels:
        bars = [p for p in panel.patches]
        assert len(bars) == 4  # one bar per cluster
        assert any(line.get_linestyle() == "--" for line in panel.get_lines())  # the population's average
    revenue = next(p for p in panels if p.get_title() == "order revenue")
    whale_key = max(children, key=lambda c: "high spend" in c["name"])["key"]
    order = sorted(fresh_db.segments.model("behaviour")["metrics"]["clusters"], key=lambda c: -c["size"])
    widths = {c["key"]: bar.get_width() for c, bar in zip(order, revenue.patches, strict=True)}
    assert max(widths, key=lambda k: widths[k]) == whale_key and widths[whale_key] > 1000  # dollars, not z-scores


def test_pictures_from_the_api_and_the_cli(server: LiveServer, write_key: str, read_key: str, tmp_path: Path) -> None:
    cdp = server.cdp
    children = personas(cdp, write_key)
    cdp.segments.compute("behaviour")
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        svg = client.get("/v1/segments/behaviour/plot.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(svg.content)
        ids = {g.get("id") for g in root.iter(f"{SVG}g")}
        assert {f"cluster-{c['key']}" for c in children} <= ids
        texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
        assert "Behavioural personas" in texts and all(c["name"] in texts for c in children)
        for path in ("plot.png", "profiles.png", "history.png"):
            png = client.get(f"/v1/segments/behaviour/{path}")
            assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", path
        history = client.get("/v1/segments/behaviour/history.svg")
        assert history.status_code == 200
        root = ET.fromstring(history.content)
        texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
        assert "Behavioural personas: size over time" in texts and "entered" in texts and "exited" in texts
        child = client.get(f"/v1/segments/{children[0]['key']}/history.png")
        assert child.status_code == 200
        missing = client.get("/v1/segments/nope/history.png")
        assert missing.status_code == 404 and missing.json()["code"] == "unknown_segment"
    db = str(cdp.settings.db)
    out = tmp_path / "history.svg"
    result = CliRunner().invoke(cli, ["segments", "history", "behaviour", "--db", db, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "STATUS" in result.output and "succeeded" in result.output and out.read_bytes().startswith(b"<?xml")
    bad = CliRunner().invoke(cli, ["segments", "history", "behaviour", "--db", db, "--plot", str(tmp_path / "x.jpg")])
    assert bad.exit_code != 0 and ".png or .svg" in bad.output
    result = CliRunner().invoke(cli, ["segments", "model", "behaviour", "--db", db])
    assert result.exit_code == 0, result.output
    assert "\\u00b7" not in result.output and "SETS IT APART" in result.output
    assert all(c["name"] in result.output for c in children)
    assert "order revenue" in result.output  # features in original units, named in words
    as_json = CliRunner().invoke(cli, ["segments", "model", "behaviour", "--db", db, "--json"])
    assert json.loads(as_json.output)["metrics"]["k"] == 4
    plot = tmp_path / "profiles.svg"
    result = CliRunner().invoke(cli, ["segments", "plot", "behaviour", "--db", db, "--profiles", "-o", str(plot)])
    assert result.exit_code == 0 and plot.read_bytes().startswith(b"<?xml")


def test_history_chart_marks_runs_that_kept_their_members(fresh_db: CDP, write_key: str) -> None:
    fresh_db.segments.create({"key": "buyers", "name": "Buyers", "rule": {"event": "Order Completed"}})
    fresh_db.segments.compute("buyers")
    send(fresh_db, write_key, group_events("whale", "w1", random.Random(1)))
    fresh_db.segments.compute("buyers")
    figure = fresh_db.segments.history_figure("buyers")
    top, bottom = figure.axes
    assert figure.get_suptitle() == "Buyers: size over time"
    size_line = next(line for line in top.get_lines() if line.get_gid() == "size")
    assert list(size_line.get_ydata()) == [0, 1]
    entered = sum(p.get_height() for p in bottom.patches if p.get_height() > 0)
    assert entered == 1
