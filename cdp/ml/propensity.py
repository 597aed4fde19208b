"""Propensity models: the chance that a profile does ``target_event`` within ``horizon_days``.

Training rows are snapshots: at each of several past cut-offs, every profile seen before the cut-off gets
its features as of the cut-off (events strictly before it) and the label "did the target event happen in
the horizon after it". Nothing after a cut-off can reach its features, so the model cannot learn from the
future. Two label-shuffle controls are measured with every training: the same model trained on shuffled labels
(its holdout AUC must be about 0.5; one such model can land well off 0.5 when the features are strongly
predictive, so the mean of ten is reported), and a permutation test of the holdout AUC (the null distribution's
mean, about 0.5, and the p-value of the real AUC). Profiles, not rows, are split into training and holdout, so one
person's snapshots never sit on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cdp.errors import InvalidModel, NotEnoughData
from cdp.ml import schema
from cdp.ml.features import Feature, check_requested

ALGORITHMS = tuple(schema.PROPENSITY_ALGORITHMS)
DEFAULT_FEATURES = ["rfm", "engagement", "events"]
MODEL_KEYS = ("target_event", "horizon_days", "algorithm", "features", "snapshots", "filter", "seed")
MIN_CLASS = 10  # fewest positives (and negatives) to train on
MAX_TRAINING_ROWS = 300_000
HOLDOUT_SHARE = 0.25
SHUFFLE_ROWS = 10_000
PERMUTATIONS = 200
PERMUTATION_ROWS = 100_000
# A model must beat its controls to replace the previous one: the permutation test's p-value at most
# MAX_P_VALUE, and the holdout AUC at least AUC_MARGIN above the shuffled-label models' mean AUC.
MAX_P_VALUE = 0.05
AUC_MARGIN = 0.02


@dataclass(frozen=True)
class PropensityParams:
    target_event: str
    horizon_days: int = 7
    algorithm: str = "logistic"
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    snapshots: int = 4
    filter: Mapping[str, Any] | None = None
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target_event": self.target_event,
            "horizon_days": self.horizon_days,
            "algorithm": self.algorithm,
            "features": list(self.features),
            "snapshots": self.snapshots,
            "seed": self.seed,
        }
        if self.filter is not None:
            out["filter"] = dict(self.filter)
        return out


@dataclass(frozen=True)
class Select:
    """Which scored profiles are members: ``threshold`` (score >= p) or ``top_quantile`` (the top q share)."""

    threshold: float | None = None
    top_quantile: float | None = None

    def to_json(self) -> dict[str, float]:
        if self.top_quantile is not None:
            return {"top_quantile": self.top_quantile}
        return {"threshold": self.threshold if self.threshold is not None else 0.5}

    def cutoff(self, scores: np.ndarray[Any, Any]) -> float:
        """The lowest member score."""
        if self.top_quantile is None:
            return float(self.threshold if self.threshold is not None else 0.5)
        if len(scores) == 0:
            return 1.0
        return float(np.quantile(scores, 1.0 - self.top_quantile, method="higher"))


def check_params(model: Mapping[str, Any]) -> PropensityParams:
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        raise InvalidModel(
            f"unknown propensity model setting {unknown[0]!r}; allowed: {', '.join(MODEL_KEYS)}",
            {"path": f"/model/{unknown[0]}"},
        )
    target = model.get("target_event")
    if not isinstance(target, str) or not target.strip():
        raise InvalidModel(
            'target_event is required: the name of the event to predict (e.g. "Order Completed")',
            {"path": "/model/target_event"},
        )
    horizon = model.get("horizon_days", 7)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 365:
        raise InvalidModel(
            f"horizon_days must be a whole number of days from 1 to 365, not {horizon!r}",
            {"path": "/model/horizon_days"},
        )
    algorithm = model.get("algorithm", "logistic")
    if algorithm not in ALGORITHMS:
        raise InvalidModel(
            f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}", {"path": "/model/algorithm"}
        )
    snapshots = model.get("snapshots", 4)
    if isinstance(snapshots, bool) or not isinstance(snapshots, int) or not 1 <= snapshots <= 24:
        raise InvalidModel(
            f"snapshots must be a whole number from 1 to 24, not {snapshots!r}", {"path": "/model/snapshots"}
        )
    seed = model.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidModel(f"seed must be a whole number, not {seed!r}", {"path": "/model/seed"})
    flt = model.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise InvalidModel("filter must be a rule (a JSON object) or absent", {"path": "/model/filter"})
    features = check_requested(model.get("features", DEFAULT_FEATURES))
    return PropensityParams(target.strip(), horizon, algorithm, features, snapshots, flt, seed)


def check_select(select: Mapping[str, Any] | None) -> Select:
    if select is None:
        return Select(threshold=0.5)
    if not isinstance(select, dict) or len(select) != 1 or not set(select) <= {"threshold", "top_quantile"}:
        raise InvalidModel('select must be {"top_quantile": q} or {"threshold": p}', {"path": "/select"})
    ((kind, value),) = select.items()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidModel(f"select.{kind} must be a number, not {value!r}", {"path": f"/select/{kind}"})
    if kind == "threshold":
        if not 0 <= value <= 1:
            raise InvalidModel(f"threshold must be from 0 to 1, not {value}", {"path": "/select/threshold"})
        return Select(threshold=float(value))
    if not 0 < value < 1:
        raise InvalidModel(
            f"top_quantile must be above 0 and below 1 (a share of profiles), not {value}",
            {"path": "/select/top_quantile"},
        )
    return Select(top_quantile=float(value))


def cutoffs(now: datetime, params: PropensityParams, first_event: datetime | None) -> list[datetime]:
    """Past cut-offs, latest first: each has a whole horizon of known outcomes after it."""
    horizon = timedelta(days=params.horizon_days)
    step = max(horizon, timedelta(days=7))
    out = []
    for i in range(params.snapshots):
        at = now - horizon - i * step
        if first_event is not None and at <= first_event:
            break
        out.append(at)
    return out


def in_holdout(ids: np.ndarray[Any, Any], seed: int) -> np.ndarray[Any, Any]:
    """A fixed quarter of profiles (by a hash of the id and the seed), the same in every snapshot and run."""
    import pandas as pd

    hashed = pd.util.hash_array(np.asarray([f"{seed}:{i}" for i in ids], dtype=object), categorize=True)
    return np.asarray(hashed % 1000 < int(HOLDOUT_SHARE * 1000))


def _model(algorithm: str, seed: int) -> Any:
    if algorithm == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True, random_state=seed)
    return Pipeline(
        [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000, C=1.0, random_state=seed))]
    )


@dataclass
class Trained:
    model: Any
    metrics: dict[str, Any]

    def score(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if len(X) == 0:
            return np.zeros(0)
        return np.asarray(self.model.predict_proba(X)[:, 1])


def train(
    X: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    ids: np.ndarray[Any, Any],
    features: Sequence[Feature],
    params: PropensityParams,
    select: Select,
) -> Trained:
    """Fit on the training profiles, measure on the held-out ones."""
    positives = int(y.sum())
    if positives < MIN_CLASS or len(y) - positives < MIN_CLASS:
        raise NotEnoughData(
            f"{params.target_event!r} happened within {params.horizon_days} days after a cut-off for {positives} of"
            f" {len(y)} training rows; a model needs at least {MIN_CLASS} rows with it and {MIN_CLASS} without."
            " Wait for more data, use a longer horizon_days or more snapshots",
            {"path": "/model/target_event", "positives": positives, "rows": len(y)},
        )
    holdout = in_holdout(ids, params.seed)
    rng = np.random.default_rng(params.seed)
    train_rows = np.flatnonzero(~holdout)
    test_rows = np.flatnonzero(holdout)
    if len(np.unique(y[test_rows])) < 2 or len(np.unique(y[train_rows])) < 2:
        raise NotEnoughData(
            "the training or the holdout profiles have only one outcome; wait for more data",
            {"path": "/model/target_event"},
        )
    if len(train_rows) > MAX_TRAINING_ROWS:  # keep every positive, sample the negatives
        pos = train_rows[y[train_rows] == 1]
        neg = train_rows[y[train_rows] == 0]
        room = max(MAX_TRAINING_ROWS - len(pos), MIN_CLASS)
        pos = pos if len(pos) <= MAX_TRAINING_ROWS // 2 else rng.choice(pos, MAX_TRAINING_ROWS // 2, replace=False)
        neg = rng.choice(neg, min(len(neg), room), replace=False) if len(neg) > room else neg
        train_rows = np.sort(np.concatenate([pos, neg]))
    model = _model(params.algorithm, params.seed).fit(X[train_rows], y[train_rows])
    trained = Trained(model, {})
    p = trained.score(X[test_rows])
    truth = y[test_rows]
    quantile = select.top_quantile if select.top_quantile is not None else 0.1
    top = max(1, round(len(p) * quantile))
    order = np.argsort(-p, kind="stable")
    base_rate = float(truth.mean())
    precision_top = float(truth[order[:top]].mean())
    shuffled = _shuffled_auc(X, y, train_rows, test_rows, params, rng)
    null_auc, p_value = permutation_test(p, truth, rng)
    trained.metrics = {
        "auc": round(float(roc_auc_score(truth, p)), 4),
        "shuffled_label_auc": shuffled,
        "permutation_test": {"null_auc": null_auc, "p_value": p_value, "permutations": PERMUTATIONS},
        "precision_at_top": {"quantile": quantile, "precision": round(precision_top, 4)},
        "base_rate": round(base_rate, 4),
        "lift_at_top": round(precision_top / base_rate, 3) if base_rate else None,
        "brier": round(float(brier_score_loss(truth, p)), 4),
        "calibration": calibration(p, truth),
        "training_rows": len(train_rows),
        "holdout_rows": len(test_rows),
        "positives": positives,
        "top_features": top_features(model, features, X[test_rows], truth, params),
    }
    return trained


def _shuffled_auc(
    X: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    train_rows: np.ndarray[Any, Any],
    test_rows: np.ndarray[Any, Any],
    params: PropensityParams,
    rng: np.random.Generator,
    repeats: int = 10,
) -> float | None:
    """The control: the same model trained on shuffled labels must not beat chance on the holdout (the mean
    over a few shuffles, since one model fitted to noise can land well off 0.5 by luck)."""
    rows = (
        train_rows if len(train_rows) <= SHUFFLE_ROWS else np.sort(rng.choice(train_rows, SHUFFLE_ROWS, replace=False))
    )
    found = []
    for _ in range(repeats):
        labels = rng.permutation(y[rows])
        if len(np.unique(labels)) < 2:
            return None
        model = _model(params.algorithm, params.seed).fit(X[rows], labels)
        found.append(float(roc_auc_score(y[test_rows], model.predict_proba(X[test_rows])[:, 1])))
    return round(float(np.mean(found)), 4)


def not_predictive(metrics: Mapping[str, Any], params: PropensityParams) -> str | None:
    """Why a trained model does not beat its label-shuffle controls, and what to change; None when it does."""
    auc = float(metrics["auc"])
    p_value = float(metrics["permutation_test"]["p_value"])
    shuffled = metrics.get("shuffled_label_auc")
    floor = (float(shuffled) if shuffled is not None else 0.5) + AUC_MARGIN
    problems = []
    if p_value > MAX_P_VALUE:
        problems.append(f"permutation p-value {p_value:.2f} is above {MAX_P_VALUE}")
    if auc < floor:
        problems.append(f"holdout AUC {auc:.3f} is below the shuffled-label AUC plus {AUC_MARGIN} ({floor:.3f})")
    if not problems:
        return None
    return (
        f"not predictive: {'; '.join(problems)}, so the model ranks {params.target_event!r} no better than chance"
        f" ({metrics['positives']} positive rows of {metrics['training_rows'] + metrics['holdout_rows']})."
        " The previous model, scores and members were kept. To fix: wait for more data, try another horizon_days"
        f" (now {params.horizon_days}) or more snapshots, add features (e.g. events, traits), or predict another"
        " target_event"
    )


def permutation_test(
    p: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], rng: np.random.Generator
) -> tuple[float, float]:
    """The holdout AUC against randomly permuted holdout labels: the mean of that null distribution (about 0.5
    when nothing links scores to outcomes but the model) and the share of permutations that reach the real AUC
    (the p-value; add-one smoothed)."""
    if len(p) > PERMUTATION_ROWS:
        rows = rng.choice(len(p), PERMUTATION_ROWS, replace=False)
        p, truth = p[rows], truth[rows]
    n1 = int(truth.sum())
    n0 = len(truth) - n1
    if not n1 or not n0:
        return 0.5, 1.0
    ranks = _ranks(p)
    offset = n1 * (n1 + 1) / 2

    def auc(labels: np.ndarray[Any, Any]) -> float:
        return float((ranks[labels.astype(bool)].sum() - offset) / (n1 * n0))

    real = auc(truth)
    null = np.array([auc(rng.permutation(truth)) for _ in range(PERMUTATIONS)])
    return round(float(null.mean()), 4), round(float((1 + (null >= real).sum()) / (1 + PERMUTATIONS)), 4)


def _ranks(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """1-based ranks, ties sharing their average rank (what the Mann-Whitney form of the AUC needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def calibration(p: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], bins: int = 10) -> list[dict[str, Any]]:
    """Predicted against observed rates in ``bins`` bins of equal count (highest scores last)."""
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part) == 0:
            continue
        out.append(
            {
                "from": round(float(p[part].min()), 4),
                "to": round(float(p[part].max()), 4),
                "predicted": round(float(p[part].mean()), 4),
                "observed": round(float(truth[part].mean()), 4),
                "count": len(part),
            }
        )
    return out


def top_features(
    model: Any,
    features: Sequence[Feature],
    X_test: np.ndarray[Any, Any],
    y_test: np.ndarray[Any, Any],
    params: PropensityParams,
    most: int = 10,
) -> list[dict[str, Any]]:
    """The features with the most weight: standardised coefficients (logistic) or permutation importance."""
    if params.algorithm == "logistic":
        coef = np.asarray(model.named_steps["model"].coef_[0])
        order = np.argsort(-np.abs(coef), kind="stable")[:most]
        return [
            {
                "feature": features[i].name,
                "description": features[i].describe(),
                "coefficient": round(float(coef[i]), 4),
                "direction": "more likely" if coef[i] > 0 else "less likely",
            }
            for i in order
        ]
    rows = np.arange(len(X_test))[:5000]
    found = permutation_importance(
        model, X_test[rows], y_test[rows], scoring="roc_auc", n_repeats=3, random_state=params.seed
    )
    means = np.asarray(found.importances_mean)
    order = np.argsort(-means, kind="stable")[:most]
    return [
        {
            "feature": features[i].name,
            "description": features[i].describe(),
            "importance": round(float(means[i]), 4),
        }
        for i in order
    ]
