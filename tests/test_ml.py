"""Machine-learned segments on real stores with planted structure: clusters, propensity scores, personas."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from cdp import CDP
from cdp.cli import cli
from cdp.errors import InvalidModel, NotEnoughData
from cdp.ml.features import FeatureSpec, LocalQuery, build, resolve
from tests.conftest import LiveServer

NOW = datetime.now(UTC)


def ts(**ago: float) -> str:
    return (NOW - timedelta(**ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def send(cdp: CDP, key: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 500):
        cdp.ingest.batch({"batch": messages[start : start + 500]}, write_key=key)


# -- planted behavioural groups ------------------------------------------------------------------------------


def group_events(group: str, user: str, rng: random.Random) -> list[dict[str, Any]]:
    def track(event: str, props: dict[str, Any] | None = None, **ago: float) -> dict[str, Any]:
        return {"type": "track", "userId": user, "event": event, "timestamp": ts(**ago), "properties": props or {}}

    out = []
    if group == "whale":  # many large orders, recent, browsing a lot
        for _ in range(rng.randint(6, 9)):
            out.append(track("Order Completed", {"revenue": rng.uniform(300, 500)}, days=rng.uniform(0.5, 25)))
        out += [track("Product Viewed", hours=rng.uniform(1, 300)) for _ in range(rng.randint(20, 30))]
    elif group == "browser":  # looks at everything this week, buys nothing
        out += [track("Product Viewed", hours=rng.uniform(1, 160)) for _ in range(rng.randint(25, 40))]
    elif group == "dormant":  # a visit or two long ago
        out += [track("Product Viewed", days=rng.uniform(150, 250)) for _ in range(rng.randint(1, 2))]
    else:  # bargain: one or two small orders a while ago
        day = rng.uniform(40, 60)
        out += [
            track("Order Completed", {"revenue": rng.uniform(10, 30)}, days=day + i) for i in range(rng.randint(1, 2))
        ]
        out += [track("Product Viewed", days=day + rng.uniform(0, 1)) for _ in range(rng.randint(2, 4))]
    return out


GROUPS = ("whale", "browser", "dormant", "bargain")


def planted_clusters(cdp: CDP, key: str, per_group: int = 60, seed: int = 1) -> dict[str, str]:
    """Profiles in four behavioural groups; returns user id -> group."""
    rng = random.Random(seed)
    truth: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    for group in GROUPS:
        for i in range(per_group):
            user = f"{group}-{i}"
            truth[user] = group
            messages += group_events(group, user, rng)
    send(cdp, key, messages)
    return truth


def by_profile(cdp: CDP, truth: dict[str, str]) -> dict[str, str]:
    return {cdp.profiles.lookup_id(user_id=user): group for user, group in truth.items()}


def cluster_of(cdp: CDP, parent: str) -> dict[str, str]:
    rows = cdp.store.query(
        "SELECT m.profile_id, m.segment_key FROM memberships m JOIN segments s ON s.key = m.segment_key"
        " WHERE s.parent_key = ?",
        (parent,),
    )
    return {r["profile_id"]: r["segment_key"] for r in rows}


PERSONAS_SEGMENT = {
    "key": "behaviour",
    "name": "Behavioural personas",
    "type": "cluster",
    "model": {"algorithm": "kmeans", "k": "auto", "features": ["rfm", "engagement"], "min_cluster_share": 0.02},
}


def test_planted_groups_recovered_with_auto_k(fresh_db: CDP, write_key: str) -> None:
    truth = by_profile(fresh_db, planted_clusters(fresh_db, write_key))
    fresh_db.segments.create(PERSONAS_SEGMENT)
    result = fresh_db.segments.compute("behaviour")
    assert result.status == "succeeded" and result.size == len(truth)
    model = fresh_db.segments.model("behaviour")
    assert model["metrics"]["k"] == 4, model["metrics"]["k_tried"]
    found = cluster_of(fresh_db, "behaviour")
    pids = sorted(truth)
    ari = adjusted_rand_score([truth[p] for p in pids], [found[p] for p in pids])
    assert ari >= 0.9
    metrics = model["metrics"]
    assert metrics["silhouette"] > 0.5 and metrics["davies_bouldin"] > 0 and metrics["calinski_harabasz"] > 0
    assert metrics["stability_ari"] >= 0.9
    # Each cluster is a child segment with a generated name that says what sets it apart.
    children = fresh_db.segments.list(parent="behaviour").data
    assert sorted(c["key"] for c in children) == [f"behaviour.{n}" for n in range(1, 5)]
    names = {}
    for child in children:
        members = [truth[p] for p, k in found.items() if k == child["key"]]
        names[max(set(members), key=members.count)] = child["name"]
        assert child["size"] == len(members)
    assert "high spend" in names["whale"] and "dormant" in names["dormant"]
    # Children are segments like any other: members, history, profile segments, webhooks' outbox.
    whale = fresh_db.profiles.lookup_id(user_id="whale-0")
    # (The cluster segment itself holds the union of its clusters: every clustered profile is also in it.)
    assert [s["key"] for s in fresh_db.segments.of_profile(whale)] == ["behaviour", found[whale]]
    assert fresh_db.segments.history(found[whale]).data[0]["entered"] == sum(
        1 for k in found.values() if k == found[whale]
    )
    outbox = fresh_db.store.query("SELECT count(*) AS n FROM outbox WHERE type = 'segment.entered'")[0]["n"]
    assert outbox == 2 * len(truth)  # each profile entered the cluster segment and one of its clusters


def test_fixed_k_algorithms_and_stable_keys(fresh_db: CDP, write_key: str) -> None:
    truth = by_profile(fresh_db, planted_clusters(fresh_db, write_key, per_group=40, seed=2))
    pids = sorted(truth)
    for algorithm in ("gmm", "agglomerative", "minibatch_kmeans"):
        key = f"by_{algorithm}"
        fresh_db.segments.create({**PERSONAS_SEGMENT, "key": key, "model": {"algorithm": algorithm, "k": 4}})
        fresh_db.segments.compute(key)
        found = cluster_of(fresh_db, key)
        assert adjusted_rand_score([truth[p] for p in pids], [found[p] for p in pids]) >= 0.9, algorithm
    # A second run over the same data keeps every key and member; nobody enters or leaves.
    before = cluster_of(fresh_db, "by_gmm")
    names = {c["key"]: c["name"] for c in fresh_db.segments.list(parent="by_gmm").data}
    again = fresh_db.segments.compute("by_gmm")
    assert (again.entered, again.exited) == (0, 0)
    assert cluster_of(fresh_db, "by_gmm") == before
    assert {c["key"]: c["name"] for c in fresh_db.segments.list(parent="by_gmm").data} == names
    # New profiles of the same groups: the clusters keep their keys (centroids matched), the new ones join.
    more = planted_clusters_extra(fresh_db, write_key)
    fresh_db.segments.compute("by_gmm")
    after = cluster_of(fresh_db, "by_gmm")
    kept = sum(after[p] == k for p, k in before.items())
    assert kept >= 0.95 * len(before)  # (a refit may move a border profile; the keys stay with their groups)
    votes: dict[str, list[str]] = {}
    for p, k in before.items():
        votes.setdefault(truth[p], []).append(k)
    groups_to_key = {g: max(set(ks), key=ks.count) for g, ks in votes.items()}
    assert sum(after[p] == groups_to_key[g] for p, g in more.items()) >= 0.9 * len(more)


def planted_clusters_extra(cdp: CDP, key: str) -> dict[str, str]:
    rng = random.Random(99)
    truth, messages = {}, []
    for group in GROUPS:
        for i in range(5):
            user = f"new-{group}-{i}"
            truth[user] = group
            messages += group_events(group, user, rng)
    send(cdp, key, messages)
    return by_profile(cdp, truth)


def test_new_profiles_assigned_in_real_time(fresh_db: CDP, write_key: str) -> None:
    truth = by_profile(fresh_db, planted_clusters(fresh_db, write_key, per_group=30, seed=3))
    fresh_db.segments.create({**PERSONAS_SEGMENT, "model": {"k": 4}})
    fresh_db.segments.compute("behaviour")
    found = cluster_of(fresh_db, "behaviour")
    whale_key = found[next(p for p, g in truth.items() if g == "whale")]
    fresh_db.segments_realtime.drain()
    send(fresh_db, write_key, group_events("whale", "late-whale", random.Random(5)))
    fresh_db.segments_realtime.drain()
    pid = fresh_db.profiles.lookup_id(user_id="late-whale")
    assert [s["key"] for s in fresh_db.segments.of_profile(pid)] == ["behaviour", whale_key]
    assert fresh_db.store.query("SELECT trigger FROM segment_runs WHERE segment_key = ? ORDER BY id DESC LIMIT 1",
                                (whale_key,))[0]["trigger"] == "realtime"  # fmt: skip


def test_bad_cluster_definitions(fresh_db: CDP, write_key: str) -> None:
    seg = {"key": "c", "name": "c", "type": "cluster"}
    with pytest.raises(InvalidModel) as err:
        fresh_db.segments.create({**seg, "model": {"features": ["rfm", "shoe_size"]}})
    assert err.value.details["path"] == "/model/features/1" and "unknown feature 'shoe_size'" in err.value.message
    with pytest.raises(InvalidModel) as err:
        fresh_db.segments.create({**seg, "model": {"k": 1}})
    assert err.value.details["path"] == "/model/k"
    with pytest.raises(InvalidModel) as err:
        fresh_db.segments.create({**seg, "model": {"algorithm": "dbscan"}})
    assert err.value.details["path"] == "/model/algorithm"
    with pytest.raises(NotEnoughData) as err:  # an empty store
        fresh_db.segments.create({**seg, "model": {"k": 3}})
    assert err.value.status == 422 and "profiles" in err.value.message
    assert fresh_db.segments.list().data == []


# -- propensity ------------------------------------------------------------------------------------------


def planted_purchases(cdp: CDP, key: str, users: int = 400, weeks: int = 10, seed: int = 7) -> None:
    """Wishing precedes buying: a week with "Added to Wishlist" is followed by an order in the next week with
    probability 0.85; otherwise 0.03."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    for u in range(users):
        user = f"p{u}"
        messages.append({"type": "track", "userId": user, "event": "Signed Up", "timestamp": ts(days=7 * weeks + 5)})
        for week in range(weeks, 0, -1):  # week w spans [now - 7w days, now - 7(w-1) days)
            start = 7 * week
            wished = rng.random() < 0.25
            if wished:
                for _ in range(rng.randint(2, 3)):
                    messages.append({"type": "track", "userId": user, "event": "Added to Wishlist",
                                     "timestamp": ts(days=start - rng.uniform(0.1, 6.9))})  # fmt: skip
            if week > 1 and rng.random() < (0.85 if wished else 0.03):
                messages.append({"type": "track", "userId": user, "event": "Order Completed",
                                 "timestamp": ts(days=start - 7 - rng.uniform(0.1, 6.9)),
                                 "properties": {"revenue": round(rng.uniform(20, 200), 2)}})  # fmt: skip
            if rng.random() < 0.5:
                messages.append({"type": "page", "userId": user, "name": "Home",
                                 "timestamp": ts(days=start - rng.uniform(0.1, 6.9))})  # fmt: skip
    send(cdp, key, messages)


LIKELY_BUYERS = {
    "key": "likely_buyers",
    "name": "Likely to buy within 7 days",
    "type": "propensity",
    "model": {"target_event": "Order Completed", "horizon_days": 7, "algorithm": "logistic"},
    "select": {"top_quantile": 0.25},
}


def test_propensity_learns_planted_signal(fresh_db: CDP, write_key: str) -> None:
    planted_purchases(fresh_db, write_key)
    fresh_db.segments.create(LIKELY_BUYERS)
    result = fresh_db.segments.compute("likely_buyers")
    assert result.status == "succeeded"
    model = fresh_db.segments.model("likely_buyers")
    metrics = model["metrics"]
    assert metrics["auc"] >= 0.8
    # Shuffled labels learn nothing: a model trained on them ranks the holdout like a random direction in feature
    # space (the mean of ten such models: within 0.2 of chance), and permuted holdout labels give AUC 0.5.
    assert abs(metrics["shuffled_label_auc"] - 0.5) <= 0.2
    assert abs(metrics["permutation_test"]["null_auc"] - 0.5) <= 0.03
    assert metrics["permutation_test"]["p_value"] <= 0.01
    assert metrics["top_features"][0]["feature"].startswith("event:Added to Wishlist")
    assert metrics["top_features"][0]["direction"] == "more likely"
    assert len(metrics["calibration"]) == 10 and metrics["calibration"][-1]["observed"] > metrics["base_rate"]
    assert metrics["precision_at_top"]["precision"] > 2 * metrics["base_rate"]
    # Every profile has the score as a computed trait; the segment holds the top quarter.
    scores = {
        r["id"]: r["s"]
        for r in fresh_db.store.query(
            "SELECT id, json_extract(scores, '$.propensity_likely_buyers') AS s FROM profiles WHERE merged_into IS NULL"
        )
    }
    assert all(s is not None and 0 <= s <= 1 for s in scores.values())
    members = {m["profile_id"] for m in fresh_db.segments.members("likely_buyers", limit=1000).data}
    assert len(members) == pytest.approx(len(scores) / 4, abs=len(scores) * 0.05)
    assert min(scores[m] for m in members) >= max(s for p, s in scores.items() if p not in members)
    pid = next(iter(members))
    assert fresh_db.profiles.get(pid)["computed"]["propensity_likely_buyers"] == scores[pid]
    # Rule segments can use the score like any computed trait.
    fresh_db.segments.create({"key": "hot", "name": "hot",
                              "rule": {"trait": "propensity_likely_buyers", "op": "gte", "value": 0.5}})  # fmt: skip
    fresh_db.segments.compute("hot")
    assert {m["profile_id"] for m in fresh_db.segments.members("hot", limit=1000).data} == {
        p for p, s in scores.items() if s >= 0.5
    }


def test_a_failed_retrain_keeps_the_previous_model_scores_and_members(fresh_db: CDP, write_key: str) -> None:
    planted_purchases(fresh_db, write_key, users=200, seed=8)
    # Only the wishers are scored (a filter is a rule node).
    wishers = {**LIKELY_BUYERS, "model": {**LIKELY_BUYERS["model"], "filter": {"event": "Added to Wishlist"}}}
    fresh_db.segments.create(wishers)
    assert fresh_db.segments.compute("likely_buyers").status == "succeeded"
    expected = {
        r["profile_id"]
        for r in fresh_db.store.query("SELECT DISTINCT profile_id FROM events WHERE event = 'Added to Wishlist'")
    }
    scored = {
        r["id"] for r in fresh_db.store.query("SELECT id FROM profiles WHERE scores LIKE '%propensity_likely_buyers%'")
    }
    assert scored == expected and 0 < len(scored) < 200
    before_scores = fresh_db.store.query("SELECT id, scores FROM profiles ORDER BY id")
    before_members = fresh_db.segments.members("likely_buyers", limit=1000).data
    before_model = fresh_db.segments.model("likely_buyers")
    # "Signed Up" happened once per profile, long before any cut-off's horizon: nothing to learn from.
    fresh_db.segments.update("likely_buyers", {**wishers, "model": {**wishers["model"], "target_event": "Signed Up"}})
    with pytest.raises(NotEnoughData):
        fresh_db.segments.compute("likely_buyers")
    assert fresh_db.segments.history("likely_buyers").data[0]["status"] == "failed"
    assert fresh_db.store.query("SELECT id, scores FROM profiles ORDER BY id") == before_scores
    assert fresh_db.segments.members("likely_buyers", limit=1000).data == before_members
    after_model = fresh_db.segments.model("likely_buyers")
    assert after_model.pop("last_run")["status"] == "failed"  # the model says its last training failed
    before_model.pop("last_run")
    assert after_model == before_model
    with pytest.raises(InvalidModel) as err:  # a filter is validated like a rule, its path inside /model/filter
        fresh_db.segments.update("likely_buyers", {**wishers, "model": {**wishers["model"], "filter": {"event": 3}}})
    assert err.value.details["path"].startswith("/model/filter")


def test_session_features(fresh_db: CDP, write_key: str) -> None:
    """Sessions end after 30 minutes without an event; their length is first to last event."""
    minutes = [300, 290, 280, 180, 60, 59.5]  # sessions: 300-280 (20 min), 180 (0), 60-59.5 (0.5)
    send(fresh_db, write_key, [{"type": "track", "userId": "s", "event": "Tap", "timestamp": ts(minutes=m)}
                               for m in minutes])  # fmt: skip
    pid = fresh_db.profiles.lookup_id(user_id="s")
    query = LocalQuery(fresh_db.store.reader(), [pid])
    spec = resolve(["engagement"], query, NOW)
    values = dict(zip(spec.names, build(query, spec, NOW).X[0], strict=True))
    assert values["sessions_30d"] == pytest.approx(np.log1p(3))
    assert values["avg_session_minutes_30d"] == pytest.approx(np.log1p(20.5 / 3))
    assert values["events_7d"] == pytest.approx(np.log1p(6)) and values["active_days_30d"] in (1, 2)
    query.close()


def test_trait_features(fresh_db: CDP, write_key: str) -> None:
    send(fresh_db, write_key, [
        {"type": "identify", "userId": f"u{i}", "traits": {
            "plan": ["free", "pro", "team"][i % 3], "vip": i % 2 == 0, "seats": i, "signed_up_at": ts(days=i),
            "email": f"u{i}@example.com"}}
        for i in range(30)
    ])  # fmt: skip
    fresh_db.identity.refresh_traits()
    pids = [fresh_db.profiles.lookup_id(user_id=f"u{i}") for i in range(30)]
    query = LocalQuery(fresh_db.store.reader(), pids)
    spec = resolve(["traits"], query, NOW)
    assert set(spec.names) == {"trait:plan=free", "trait:plan=pro", "trait:plan=team", "trait:vip", "trait:seats",
                               "trait:signed_up_at"}  # identifiers such as email are never features  # fmt: skip
    matrix = build(query, spec, NOW)
    row = dict(zip(spec.names, matrix.X[list(matrix.ids).index(pids[4])], strict=True))
    assert row == pytest.approx({"trait:plan=free": 0, "trait:plan=pro": 1, "trait:plan=team": 0, "trait:vip": 1,
                                 "trait:seats": 4, "trait:signed_up_at": 4}, abs=0.01)  # fmt: skip
    query.close()


def test_propensity_has_no_future_in_its_features(fresh_db: CDP, write_key: str) -> None:
    send(fresh_db, write_key, [
        {"type": "track", "userId": "f", "event": "Order Completed", "timestamp": ts(days=20),
         "properties": {"revenue": 100}},
        {"type": "track", "userId": "f", "event": "Order Completed", "timestamp": ts(days=5),
         "properties": {"revenue": 900}},
    ])  # fmt: skip
    pid = fresh_db.profiles.lookup_id(user_id="f")
    query = LocalQuery(fresh_db.store.reader(), [pid])
    spec = resolve(["rfm", "events"], query, NOW)
    cutoff = NOW - timedelta(days=10)
    before = build(query, spec, cutoff)
    values = dict(zip(spec.names, before.X[0], strict=True))
    assert values["frequency"] == pytest.approx(np.log1p(1))  # the order 5 days ago is after the cut-off
    assert values["monetary"] == pytest.approx(np.log1p(100))
    assert values["recency_days"] == pytest.approx(10, abs=0.01)
    now = dict(zip(spec.names, build(query, spec, NOW).X[0], strict=True))
    assert now["frequency"] == pytest.approx(np.log1p(2)) and now["monetary"] == pytest.approx(np.log1p(1000))
    assert FeatureSpec.from_json(spec.to_json()).names == spec.names
    query.close()


def test_propensity_failures_keep_previous_state(fresh_db: CDP, write_key: str) -> None:
    with pytest.raises(NotEnoughData) as err:
        fresh_db.segments.create({**LIKELY_BUYERS, "model": {"target_event": "Never Happens"}})
    assert err.value.details["path"] == "/model/target_event" and "no 'Never Happens' event" in err.value.message
    with pytest.raises(InvalidModel) as err:
        fresh_db.segments.create({**LIKELY_BUYERS, "select": {"top_quantile": 2}})
    assert err.value.details["path"] == "/select/top_quantile"
    with pytest.raises(InvalidModel) as err:
        fresh_db.segments.create({**LIKELY_BUYERS, "model": {"target_event": "X", "horizon_days": 0}})
    assert err.value.details["path"] == "/model/horizon_days"
    # The target happened once: the definition is accepted, training is not possible yet.
    send(
        fresh_db,
        write_key,
        [{"type": "track", "userId": f"u{i}", "event": "Visit", "timestamp": ts(days=30 - i)} for i in range(25)]
        + [{"type": "track", "userId": "u1", "event": "Order Completed", "timestamp": ts(days=12)}],
    )
    fresh_db.segments.create(LIKELY_BUYERS)
    with pytest.raises(NotEnoughData) as err:
        fresh_db.segments.compute("likely_buyers")
    assert "at least 10 rows with it" in err.value.message
    history = fresh_db.segments.history("likely_buyers").data
    assert history[0]["status"] == "failed" and "at least 10 rows with it" in history[0]["error"]
    assert fresh_db.store.query("SELECT count(*) AS n FROM ml_models")[0]["n"] == 0
    assert fresh_db.store.query("SELECT count(*) AS n FROM profiles WHERE scores != '{}'")[0]["n"] == 0


# -- personas ----------------------------------------------------------------------------------------------

TITLES = {
    "engineer": ["Software Engineer", "Senior Software Engineer", "Sr. Software Eng", "Backend Developer",
                 "Frontend Developer", "DevOps Engineer", "Ingeniero de Software", "Data Engineer",
                 "Staff Engineer", "Lead Developer", "Softwareentwickler", "Full Stack Developer",
                 "Platform Engineer", "Site Reliability Engineer", "Principal Engineer", "Mobile Developer"],
    "marketer": ["Marketing Manager", "VP Marketing", "Growth Marketer", "Directeur Marketing", "CMO",
                 "Content Marketing Lead", "Head of Marketing", "Marketing Director", "Product Marketing Manager",
                 "Brand Manager", "Digital Marketing Specialist", "Responsable Marketing", "SEO Specialist",
                 "Marketing Coordinator", "Demand Generation Manager", "Jefe de Marketing"],
    "sales": ["Account Executive", "Sales Manager", "Sales Director", "VP Sales", "Business Development Rep",
              "Sales Development Representative", "Account Manager", "Head of Sales", "Vendedor",
              "Key Account Manager", "Regional Sales Manager", "Directeur Commercial", "Inside Sales Rep",
              "Enterprise Account Executive", "Sales Associate", "Chief Revenue Officer"],
}  # fmt: skip
AMBIGUOUS = ["Sales Engineer", "Marketing Engineer", "Marketing Sales Lead", "Growth Engineer"]


def titled_profiles(cdp: CDP, key: str) -> None:
    titles = [t for ts_ in TITLES.values() for t in ts_] + AMBIGUOUS
    send(cdp, key, [{"type": "identify", "userId": f"t{i}", "traits": {"title": title}}
                    for i, title in enumerate(titles)])  # fmt: skip
    cdp.identity.refresh_traits()


def held_out_accuracy(cdp: CDP, labelled: set[str]) -> float:
    rest = [(t, p) for p, ts_ in TITLES.items() for t in ts_ if t not in labelled]
    predicted = cdp.personas.predict([t for t, _ in rest])
    return sum(e["persona"] == p for e, (_, p) in zip(predicted, rest, strict=True)) / len(rest)


def test_persona_classifier_learns_from_labels(fresh_db: CDP, write_key: str) -> None:
    titled_profiles(fresh_db, write_key)
    cold = fresh_db.personas.uncertain(5)  # no model yet: the most frequent titles, no guess
    assert len(cold) == 5 and all(e["persona"] is None for e in cold)
    few = {p: ts_[:2] for p, ts_ in TITLES.items()}
    status = fresh_db.personas.label([_label(t, p) for p, ts_ in few.items() for t in ts_])
    first = held_out_accuracy(fresh_db, {t for ts_ in few.values() for t in ts_})
    assert status["model"]["cv_accuracy"] is not None and status["profiles_updated"] > 0
    many = {p: ts_[:10] for p, ts_ in TITLES.items()}
    status = fresh_db.personas.label([_label(t, p) for p, ts_ in many.items() for t in ts_[2:]])
    labelled = {t for ts_ in many.values() for t in ts_}
    second = held_out_accuracy(fresh_db, labelled)
    assert second > first and second >= 0.8
    history = fresh_db.personas.status()["accuracy_history"]
    assert [h["labels"] for h in history] == [6, 30]
    # The titles the model is least sure of are the ones that mix two personas' words.
    # (Every ambiguous title is in the least sure third; titles with words the labels never used come next.)
    ranked = fresh_db.personas.uncertain(1000)
    assert len(ranked) == 3 * 6 + len(AMBIGUOUS)
    top = [e["title"] for e in ranked[: len(ranked) // 3 + 1]]
    assert set(AMBIGUOUS) <= set(top)
    margin = {e["title"]: e["margin"] for e in ranked}
    clear = [m for t, m in margin.items() if t not in AMBIGUOUS]
    assert np.mean([margin[t] for t in AMBIGUOUS]) < 0.5 * np.mean(clear)
    # Predictions are traits a rule segment can use, and exports carry them.
    pid = fresh_db.profiles.lookup_id(user_id="t0")
    computed = fresh_db.profiles.get(pid)["computed"]
    assert computed["persona"] == "engineer" and computed["persona_confidence"] == 1.0
    fresh_db.segments.create({"key": "devs", "name": "devs", "rule": {"trait": "persona", "op": "eq",
                                                                       "value": "engineer"}})  # fmt: skip
    fresh_db.segments.compute("devs")
    assert fresh_db.segments.get("devs")["size"] >= 14


def _label(title: str, persona: str) -> Any:
    from cdp.ml.personas import Label

    return Label(title, persona)


# -- API and CLI -------------------------------------------------------------------------------------------


def test_ml_api_and_cli(server: LiveServer, write_key: str, read_key: str, admin_key: str, tmp_path: Any) -> None:
    cdp = server.cdp
    planted_clusters(cdp, write_key, per_group=25, seed=4)
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        bad = admin.post("/v1/segments", json={**PERSONAS_SEGMENT, "model": {"k": 99}})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_model"
        assert bad.json()["details"]["path"] == "/model/k"
        assert admin.post("/v1/segments", json=PERSONAS_SEGMENT).status_code == 201
        assert admin.get("/v1/segments/behaviour/model").status_code == 404
        run = admin.post("/v1/segments/behaviour/compute").json()
        assert run["status"] == "succeeded" and run["size"] == 100
        children = admin.get("/v1/segments", params={"parent": "behaviour"}).json()["data"]
        assert len(children) == 4 and all(c["parent"] == "behaviour" and c["name"] for c in children)
        member = admin.get(f"/v1/segments/{children[0]['key']}/members").json()["data"][0]
        assert member["identifiers"]
        change = admin.put(
            f"/v1/segments/{children[0]['key']}", json={"name": "x", "rule": {"trait": "a", "op": "exists"}}
        )
        assert change.status_code == 400 and "made by its runs" in change.json()["message"]
        model = admin.get("/v1/segments/behaviour/model").json()
        assert model["metrics"]["k"] == 4 and {f["name"] for f in model["features"]} >= {"recency_days", "monetary"}
        png = admin.get("/v1/segments/behaviour/plot.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size[0] > 400
        labels = admin.post(
            "/v1/personas/labels",
            json={"labels": [{"title": "CTO", "persona": "exec"}, {"title": "Engineer", "persona": "eng"}]},
        )
        assert labels.status_code == 200 and labels.json()["labels"] == 2
        bad_label = admin.post("/v1/personas/labels", json=[{"title": "CTO"}])
        assert bad_label.status_code == 400 and bad_label.json()["details"]["path"] == "/labels/0/persona"
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as reader:
        assert reader.post("/v1/personas/labels", json={"title": "a", "persona": "b"}).status_code == 403
        assert reader.get("/v1/personas/uncertain", params={"n": 3}).status_code == 200
        assert reader.get("/v1/personas").json()["personas"] == {"eng": 1, "exec": 1}
    db = str(cdp.settings.db)
    out = tmp_path / "plot.png"
    result = CliRunner().invoke(cli, ["segments", "plot", "behaviour", "--db", db, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(cli, ["personas", "label", "--db", db, "--title", "VP Sales", "--persona", "exec"])
    assert result.exit_code == 0 and "3 labels" in result.output
    send(cdp, write_key, [{"type": "identify", "userId": "whale-0", "traits": {"title": "Software Engineer"}},
                          {"type": "identify", "userId": "whale-1", "traits": {"title": "Data Engineer"}}])  # fmt: skip
    cdp.identity.refresh_traits()
    result = CliRunner().invoke(cli, ["personas", "label", "--db", db, "-n", "2"], input="eng\nq\n")
    assert result.exit_code == 0, result.output
    assert "Engineer' (1 profiles)" in result.output
    assert cdp.personas.status()["labels"] == 4


def test_published_model_schema_matches_the_validators() -> None:
    from cdp.ml import cluster, propensity, schema
    from cdp.segments import rules

    assert set(schema.CLUSTER_MODEL["properties"]) == set(cluster.MODEL_KEYS)
    assert set(schema.PROPENSITY_MODEL["properties"]) == set(propensity.MODEL_KEYS)
    published = rules.SCHEMA["$defs"]
    assert published["cluster_model"] is schema.CLUSTER_MODEL and "propensity_model" in published


def test_cluster_names_tell_similar_clusters_apart() -> None:
    from cdp.ml.cluster import describe
    from cdp.ml.features import BASE, Feature

    features = [Feature(name, "base", log=BASE[name].log) for name in ("monetary", "frequency", "events_7d")]
    centroids = np.array([[2.0, 2.0, 0.3], [2.0, 2.0, -0.3], [-1.0, -1.0, 0.0]])  # two alike big spenders
    names = describe(centroids, [10, 10, 40], features)
    assert names[0] != names[1]
    assert names[0].startswith("high spend · frequent buyers") and "active this week" in names[0]
    assert "quiet this week" in names[1] and "low spend" in names[2]
