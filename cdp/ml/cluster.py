"""Clustered segments: scale the features, fit K-Means (or a Gaussian mixture, or Ward on a sample), choose
``k`` by silhouette when asked, guard against tiny clusters, score the result, and keep cluster keys stable
across runs by matching centroids.

Everything here is pure computation on a feature matrix; reading the store and writing memberships is
``cdp.segments.ml_segments``' job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import RobustScaler, StandardScaler

from cdp.errors import InvalidModel, NotEnoughData
from cdp.ml import schema
from cdp.ml.features import Feature, check_requested

ALGORITHMS = tuple(schema.CLUSTER_ALGORITHMS)
SCALERS = ("standard", "robust")
K_RANGE = (2, 10)  # what k=auto tries
K_MAX = schema.K_MAX
DEFAULT_FEATURES = ["rfm", "engagement"]
FIT_SAMPLE = 10_000  # rows to choose k on (and to fit the sample-based algorithms on)
EVAL_SAMPLE = 3_000  # rows silhouette and the other scores are computed on
AGGLOMERATIVE_SAMPLE = 5_000
PLOT_POINTS = 2_000
MODEL_KEYS = ("algorithm", "k", "features", "min_cluster_share", "scaler", "seed")
# A clustering below either floor is reported as weak (in its run's note and its model's ``quality``): the
# silhouette (-1..1) says how well separated the clusters are, the stability (adjusted Rand index of two fits
# on disjoint halves, 0..1) whether the same clusters come back on other data.
GMM_KEEP_NATS = 0.01  # a new mixture replaces the last one only when it fits this much better per profile
STICKY_NATS = 0.01
STICKY_DISTANCE = 1e-3
"""A profile stays in its cluster of the last run while that cluster is about as good as the new best: its
log-posterior at most ``STICKY_NATS`` lower (gmm), its scaled distance at most ``STICKY_DISTANCE`` longer (the
others). Features counted from the run's clock (days since the last event) move every profile a little between
two runs seconds apart; without this a profile sitting on a border could change cluster with no new data."""
SILHOUETTE_FLOOR = 0.25
STABILITY_FLOOR = 0.6


@dataclass(frozen=True)
class ClusterParams:
    algorithm: str = "kmeans"
    k: int | None = None  # None: auto
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    min_cluster_share: float = 0.02
    scaler: str = "standard"
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "k": "auto" if self.k is None else self.k,
            "features": list(self.features),
            "min_cluster_share": self.min_cluster_share,
            "scaler": self.scaler,
            "seed": self.seed,
        }


def check_params(model: Mapping[str, Any]) -> ClusterParams:
    """The ``model`` of a cluster segment, validated; errors name the path and how to fix it."""
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        raise InvalidModel(
            f"unknown cluster model setting {unknown[0]!r}; allowed: {', '.join(MODEL_KEYS)}",
            {"path": f"/model/{unknown[0]}"},
        )
    algorithm = model.get("algorithm", "kmeans")
    if algorithm not in ALGORITHMS:
        raise InvalidModel(
            f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}", {"path": "/model/algorithm"}
        )
    k_value = model.get("k", "auto")
    k: int | None
    if k_value == "auto":
        k = None
    elif isinstance(k_value, int) and not isinstance(k_value, bool) and 2 <= k_value <= K_MAX:
        k = k_value
    else:
        raise InvalidModel(
            f'k must be "auto" or a whole number from 2 to {K_MAX}, not {k_value!r}', {"path": "/model/k"}
        )
    share = model.get("min_cluster_share", 0.02)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 0.5:
        raise InvalidModel(
            f"min_cluster_share must be a number from 0 to 0.5 (a share of all profiles), not {share!r}",
            {"path": "/model/min_cluster_share"},
        )
    if k is not None and share * k > 1:
        raise InvalidModel(
            f"{k} clusters of at least {share} of the profiles each cannot exist; lower k or min_cluster_share",
            {"path": "/model/min_cluster_share"},
        )
    scaler = model.get("scaler", "standard")
    if scaler not in SCALERS:
        raise InvalidModel(f"scaler must be one of {', '.join(SCALERS)}, not {scaler!r}", {"path": "/model/scaler"})
    seed = model.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidModel(f"seed must be a whole number, not {seed!r}", {"path": "/model/seed"})
    features = check_requested(model.get("features", DEFAULT_FEATURES))
    return ClusterParams(algorithm, k, features, float(share), scaler, seed)


def min_profiles(params: ClusterParams) -> int:
    """Fewest profiles a cluster model can be trained on."""
    return max(20, 5 * (params.k or K_RANGE[1]))


@dataclass
class Fitted:
    """A trained cluster model: scale with ``scaler``, then ``assign``."""

    params: ClusterParams
    scaler: Any
    centroids: np.ndarray[Any, Any]  # scaled space, one row per kept cluster
    gmm: Any = None  # the mixture when algorithm is gmm
    kept: list[int] = field(default_factory=list)  # mixture components kept (gmm)

    def assign(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Cluster index (row of ``centroids``) of each row of raw features."""
        if len(X) == 0:
            return np.zeros(0, dtype=np.int64)
        Z = self.scaler.transform(X)
        if self.gmm is not None:
            proba = self.gmm.predict_proba(Z)[:, self.kept]
            return np.asarray(np.argmax(proba, axis=1), dtype=np.int64)
        return nearest(Z, self.centroids)

    def keep_previous(
        self, X: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], previous: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """``labels`` with each row kept in its previous cluster (``previous``: the cluster index of the last run,
        -1 for none) while that cluster is about as good as the new one (`STICKY_NATS`, `STICKY_DISTANCE`)."""
        rows = np.flatnonzero((previous >= 0) & (previous != labels))
        if not len(rows):
            return labels
        Z = self.scaler.transform(X[rows])
        new, old = labels[rows], previous[rows]
        if self.gmm is not None:
            logp = np.log(np.clip(self.gmm.predict_proba(Z)[:, self.kept], 1e-300, None))
            at = np.arange(len(rows))
            keep = logp[at, old] >= logp[at, new] - STICKY_NATS
        else:
            d_new = np.linalg.norm(Z - self.centroids[new], axis=1)
            d_old = np.linalg.norm(Z - self.centroids[old], axis=1)
            keep = d_old <= d_new * (1 + STICKY_DISTANCE)
        out = labels.copy()
        out[rows[keep]] = old[keep]
        return out

    def raw_centroids(self) -> np.ndarray[Any, Any]:
        return np.asarray(self.scaler.inverse_transform(self.centroids))


def nearest(Z: np.ndarray[Any, Any], centroids: np.ndarray[Any, Any], chunk: int = 200_000) -> np.ndarray[Any, Any]:
    out = np.empty(len(Z), dtype=np.int64)
    c2 = (centroids**2).sum(axis=1)
    for start in range(0, len(Z), chunk):
        part = Z[start : start + chunk]
        d = c2[None, :] - 2 * part @ centroids.T  # |z|^2 is the same for every centroid
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out


def _scaler(kind: str) -> Any:
    return RobustScaler(unit_variance=True) if kind == "robust" else StandardScaler()


def _fit_centroids(
    algorithm: str, Z: np.ndarray[Any, Any], k: int, seed: int, start: np.ndarray[Any, Any] | None = None
) -> tuple[np.ndarray[Any, Any], Any]:
    """Centroids (and the mixture, for gmm) of ``k`` clusters of ``Z``; ``start`` (k scaled centroids, e.g. the last
    run's) seeds the fit so that a re-run on similar data lands on the same clusters."""
    if algorithm == "kmeans":
        init: Any = start if start is not None else "k-means++"
        km = KMeans(n_clusters=k, init=init, n_init=1 if start is not None else 3, random_state=seed).fit(Z)
        return np.asarray(km.cluster_centers_), None
    if algorithm == "minibatch_kmeans":
        init = start if start is not None else "k-means++"
        mb = MiniBatchKMeans(
            n_clusters=k, init=init, n_init=1 if start is not None else 3, random_state=seed, batch_size=4096
        ).fit(Z)
        return np.asarray(mb.cluster_centers_), None
    if algorithm == "gmm":
        gm = GaussianMixture(
            n_components=k, covariance_type="full", random_state=seed, reg_covar=1e-4,
            n_init=1 if start is not None else 3, means_init=start,
        ).fit(Z)  # fmt: skip
        return np.asarray(gm.means_), gm
    labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z)
    return np.vstack([Z[labels == c].mean(axis=0) for c in range(k)]), None


def _fit_score(Z: np.ndarray[Any, Any], centroids: np.ndarray[Any, Any], gmm: Any) -> float:
    """Higher is better: the mixture's mean log-likelihood, or minus the k-means inertia per row."""
    if gmm is not None:
        return float(gmm.score(Z))
    labels = nearest(Z, centroids)
    return -float(((Z - centroids[labels]) ** 2).sum()) / max(len(Z), 1)


def _labels(Z: np.ndarray[Any, Any], centroids: np.ndarray[Any, Any], gmm: Any) -> np.ndarray[Any, Any]:
    if gmm is not None:
        return np.asarray(gmm.predict(Z), dtype=np.int64)
    return nearest(Z, centroids)


def _sample(rng: np.random.Generator, n: int, size: int) -> np.ndarray[Any, Any]:
    return np.sort(rng.choice(n, size=size, replace=False)) if n > size else np.arange(n)


def _distinct_rows(Z: np.ndarray[Any, Any]) -> int:
    return len(np.unique(np.round(Z, 9), axis=0)) if len(Z) else 0


@dataclass
class Result:
    fitted: Fitted
    labels: np.ndarray[Any, Any]  # cluster index per row of X
    metrics: dict[str, Any]
    plot: dict[str, Any]  # PCA coordinates of a sample, for the picture


def fit(
    X: np.ndarray[Any, Any],
    params: ClusterParams,
    previous: np.ndarray[Any, Any] | None = None,
    previous_model: Fitted | None = None,
) -> Result:
    """Train on the whole matrix; raise NotEnoughData when the data cannot support the model.

    ``previous``: the last run's centroids in raw feature units (same features, same order). When the run
    settles on as many clusters, the fit starts from them, so clusters stay put between runs unless the data
    has really moved (keys are then kept by ``match``)."""
    n = len(X)
    if n < min_profiles(params):
        raise NotEnoughData(
            f"only {n} profiles to cluster; a cluster model needs at least {min_profiles(params)}."
            " Load more data or lower k",
            {"path": "/model", "profiles": n, "needed": min_profiles(params)},
        )
    rng = np.random.default_rng(params.seed)
    scaler = _scaler(params.scaler).fit(X)
    Z = np.asarray(scaler.transform(X))
    fit_rows = _sample(rng, n, FIT_SAMPLE)
    Zs = Z[fit_rows]
    distinct = _distinct_rows(Zs)
    if distinct < 2:
        raise NotEnoughData(
            "every profile has the same features, so there is nothing to cluster; add features or wait for more events",
            {"path": "/model/features"},
        )
    eval_rows = _sample(rng, len(Zs), EVAL_SAMPLE)
    tried: list[dict[str, Any]] = []
    if params.k is None:
        best: tuple[float, int] | None = None
        for k in range(K_RANGE[0], min(K_RANGE[1], distinct - 1) + 1):
            centroids, gmm = _fit_centroids(_sample_algorithm(params.algorithm), _fit_rows(Zs, params), k, params.seed)
            labels = _labels(Zs, centroids, gmm)
            shares = np.bincount(labels, minlength=k) / len(labels)
            if len(np.unique(labels[eval_rows])) < 2:
                continue
            score = float(silhouette_score(Zs[eval_rows], labels[eval_rows]))
            ok = bool(shares.min() >= params.min_cluster_share)
            tried.append({"k": k, "silhouette": round(score, 4), "smallest_share": round(float(shares.min()), 4)})
            if ok and (best is None or score > best[0] + 1e-9):
                best = (score, k)
        if best is None:
            raise NotEnoughData(
                "no k from 2 to 10 gives clusters of at least min_cluster_share of the profiles each;"
                " lower min_cluster_share or set k",
                {"path": "/model/min_cluster_share", "tried": tried},
            )
        k = best[1]
    else:
        k = min(params.k, max(2, distinct))
    algorithm = params.algorithm
    start = None
    if previous is not None and len(previous) == k and algorithm != "agglomerative":
        start = np.asarray(scaler.transform(previous))
    kept_model = _still_fits(previous_model, X[fit_rows], Zs, scaler, params, k) if algorithm == "gmm" else None
    if kept_model is not None:  # the last mixture fits the data as well as a new one: keep it, nobody moves
        scaler = kept_model.scaler
        Z = np.asarray(scaler.transform(X))
        Zs = Z[fit_rows]
        centroids, gmm = np.array(kept_model.centroids, copy=True), kept_model.gmm
    elif start is not None:
        # From the last run's centroids, and from scratch: the better fit wins (ties to the last run's), so a
        # re-run on the same data changes nothing and a real shift in the data is still found. The warm fit of
        # the k-means family is full-batch Lloyd from the last centroids (a fixed point of it on unchanged data):
        # mini-batch updates from there would drift with no change in the data.
        rows = Zs if algorithm == "gmm" else Z
        warm = _fit_centroids("kmeans" if algorithm == "minibatch_kmeans" else algorithm, rows, k, params.seed, start)
        cold = _fit_centroids(algorithm, rows, k, params.seed)
        centroids, gmm = warm if _fit_score(rows, *warm) >= _fit_score(rows, *cold) - 1e-9 else cold
    elif algorithm in ("agglomerative", "gmm") and n > FIT_SAMPLE:
        centroids, gmm = _fit_centroids(algorithm, _fit_rows(Zs, params), k, params.seed)
    elif algorithm == "agglomerative":
        centroids, gmm = _fit_centroids(algorithm, _fit_rows(Z, params), k, params.seed)
    elif algorithm == "kmeans" and n > FIT_SAMPLE:  # start from the sample's centroids: one pass over all rows
        seed_centroids, _ = _fit_centroids("kmeans", Zs, k, params.seed)
        km = KMeans(n_clusters=k, init=seed_centroids, n_init=1, random_state=params.seed).fit(Z)
        centroids, gmm = np.asarray(km.cluster_centers_), None
    else:
        centroids, gmm = _fit_centroids(algorithm, Z, k, params.seed)
    kept = list(kept_model.kept) if kept_model is not None else list(range(len(centroids)))
    fitted = Fitted(params, scaler, centroids, gmm, kept)
    labels = fitted.assign(X)
    merged = 0
    while len(fitted.kept) > 2:  # fold clusters below min_cluster_share into their neighbours
        shares = np.bincount(labels, minlength=len(fitted.kept)) / n
        smallest = int(np.argmin(shares))
        if shares[smallest] >= params.min_cluster_share and shares[smallest] > 0:
            break
        keep = [i for i in range(len(fitted.kept)) if i != smallest]
        fitted = Fitted(params, scaler, fitted.centroids[keep], gmm, [fitted.kept[i] for i in keep])
        labels = fitted.assign(X)
        merged += 1
    if gmm is None:  # centroids as the means of the final clusters (what nearest-centroid assignment uses)
        # For the k-means family, to a fixed point (means and assignment agree), so that the next run, warm
        # started from these centroids on the same data, moves nobody.
        rounds = 100 if algorithm in ("kmeans", "minibatch_kmeans") else 1
        for _ in range(rounds):
            fitted.centroids = np.vstack(
                [
                    Z[labels == c].mean(axis=0) if (labels == c).any() else fitted.centroids[c]
                    for c in range(len(fitted.kept))
                ]
            )
            previous_labels, labels = labels, fitted.assign(X)
            if np.array_equal(previous_labels, labels):
                break
    else:
        fitted.centroids = np.vstack(
            [
                Z[labels == c].mean(axis=0) if (labels == c).any() else gmm.means_[fitted.kept[c]]
                for c in range(len(fitted.kept))
            ]
        )
    metrics = _metrics(Z, labels, fit_rows, eval_rows, params, len(fitted.kept), rng)
    metrics.update({"k": len(fitted.kept), "k_tried": tried, "merged_small_clusters": merged, "profiles": n})
    return Result(fitted, labels, metrics, _plot(X, Z, labels, fitted, rng))


def _still_fits(
    previous: Fitted | None,
    X_rows: np.ndarray[Any, Any],
    Z_rows: np.ndarray[Any, Any],
    scaler: Any,
    params: ClusterParams,
    k: int,
) -> Fitted | None:
    """The last run's mixture, when it has ``k`` clusters and explains these rows about as well (within
    ``GMM_KEEP_NATS`` of mean log-likelihood, compared in raw feature units) as a mixture fitted afresh."""
    if previous is None or previous.gmm is None or len(previous.kept) != k or previous.params.scaler != params.scaler:
        return None
    if getattr(previous.scaler, "n_features_in_", None) != X_rows.shape[1]:
        return None
    _, fresh = _fit_centroids("gmm", Z_rows, k, params.seed)
    old = float(previous.gmm.score(previous.scaler.transform(X_rows))) - float(np.log(previous.scaler.scale_).sum())
    new = float(fresh.score(Z_rows)) - float(np.log(scaler.scale_).sum())
    return previous if old >= new - GMM_KEEP_NATS else None


def quality_warning(metrics: Mapping[str, Any]) -> str | None:
    """Words for a clustering below the documented floors (None when it clears them)."""
    problems = []
    silhouette, stability = metrics.get("silhouette"), metrics.get("stability_ari")
    if silhouette is not None and silhouette < SILHOUETTE_FLOOR:
        problems.append(f"silhouette {silhouette:.2f} is below {SILHOUETTE_FLOOR} (clusters overlap)")
    if stability is not None and stability < STABILITY_FLOOR:
        problems.append(f"stability {stability:.2f} is below {STABILITY_FLOOR} (other samples give other clusters)")
    if not problems:
        return None
    return (
        f"weak clusters: {'; '.join(problems)}. Read the clusters as rough groups, not distinct personas;"
        " to improve, try other features, another k or algorithm, or wait for more data"
    )


def quality_summary(metrics: Mapping[str, Any], warning: str | None) -> dict[str, Any]:
    return {
        "ok": warning is None,
        "silhouette_floor": SILHOUETTE_FLOOR,
        "stability_floor": STABILITY_FLOOR,
        "warning": warning,
    }


def _sample_algorithm(algorithm: str) -> str:
    return "kmeans" if algorithm == "minibatch_kmeans" else algorithm


def _fit_rows(Z: np.ndarray[Any, Any], params: ClusterParams) -> np.ndarray[Any, Any]:
    if params.algorithm == "agglomerative" and len(Z) > AGGLOMERATIVE_SAMPLE:
        rows = _sample(np.random.default_rng(params.seed + 1), len(Z), AGGLOMERATIVE_SAMPLE)
        return np.asarray(Z[rows])
    return Z


def _metrics(
    Z: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    fit_rows: np.ndarray[Any, Any],
    eval_rows: np.ndarray[Any, Any],
    params: ClusterParams,
    k: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    rows = fit_rows[eval_rows]
    Ze, le = Z[rows], labels[rows]
    quality: dict[str, Any] = {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    if len(np.unique(le)) >= 2:
        quality = {
            "silhouette": round(float(silhouette_score(Ze, le)), 4),
            "davies_bouldin": round(float(davies_bouldin_score(Ze, le)), 4),
            "calinski_harabasz": round(float(calinski_harabasz_score(Ze, le)), 2),
        }
    # Stability: the same algorithm fitted on two disjoint halves of a sample labels the evaluation rows
    # (nearly) the same way when the structure is real.
    pool = rng.permutation(len(Z))[: 2 * FIT_SAMPLE]
    half = len(pool) // 2
    stability = None
    if half >= max(2 * k, 10):
        answers = []
        for part in (pool[:half], pool[half:]):
            centroids, gmm = _fit_centroids(
                _sample_algorithm(params.algorithm), _fit_rows(Z[part], params), k, params.seed
            )
            answers.append(_labels(Ze, centroids, gmm))
        stability = round(float(adjusted_rand_score(answers[0], answers[1])), 4)
    sizes = np.bincount(labels, minlength=k)
    return {**quality, "stability_ari": stability, "sizes": [int(s) for s in sizes]}


def _plot(
    X: np.ndarray[Any, Any],
    Z: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    fitted: Fitted,
    rng: np.random.Generator,
) -> dict[str, Any]:
    rows = _sample(rng, len(Z), PLOT_POINTS)
    pca = PCA(n_components=min(2, Z.shape[1]), random_state=0).fit(Z[_sample(rng, len(Z), FIT_SAMPLE)])
    points = pca.transform(Z[rows])
    centres = pca.transform(fitted.centroids)
    if points.shape[1] == 1:
        points = np.hstack([points, np.zeros((len(points), 1))])
        centres = np.hstack([centres, np.zeros((len(centres), 1))])
    return {
        "points": points.round(4).tolist(),
        "labels": labels[rows].tolist(),
        "centroids": centres.round(4).tolist(),
        "explained_variance": [round(float(v), 4) for v in pca.explained_variance_ratio_],
        "raw": X[rows].round(4).tolist(),  # the sample in feature units (log features as log1p)
        "separation": [round(float(v), 4) for v in separation(Z, labels)],
    }


def separation(Z: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per feature, the share of its variance that lies between clusters (0..1; the features that set the
    clusters apart most score highest)."""
    total = Z.var(axis=0) * len(Z)
    between = np.zeros(Z.shape[1])
    mean = Z.mean(axis=0)
    for c in np.unique(labels):
        part = Z[labels == c]
        between += len(part) * (part.mean(axis=0) - mean) ** 2
    return np.asarray(np.divide(between, total, out=np.zeros_like(between), where=total > 0))


# -- names and stable keys -----------------------------------------------------------------------------------


def describe(
    centroids: np.ndarray[Any, Any],
    sizes: Sequence[int],
    features: Sequence[Feature],
    *,
    threshold: float = 0.5,
    most: int = 3,
) -> list[str]:
    """A readable name per cluster from the features its centroid stands out on: how far (in scaled units) it
    lies from the centre of all profiles, largest first. Two clusters that stand out on the same things get
    their next distinguishing features added (the first where they differ most), so names tell them apart."""
    weights = np.asarray(sizes, dtype=np.float64)
    overall = (centroids * weights[:, None]).sum(axis=0) / max(weights.sum(), 1.0)
    z = centroids - overall

    def words(row: np.ndarray[Any, Any], indices: Sequence[int]) -> list[str]:
        return [features[i].adjectives()[0 if row[i] > 0 else 1] for i in indices]

    tops = [[int(i) for i in np.argsort(-np.abs(row)) if abs(row[i]) >= threshold][:most] for row in z]
    names = [words(row, top) for row, top in zip(z, tops, strict=True)]
    for a in range(len(z)):
        for b in range(a):
            if set(names[a]) == set(names[b]) and names[a]:
                # the feature on which the two differ most, said from each side
                gap = int(np.argmax(np.abs(z[a] - z[b])))
                for side, other in ((a, b), (b, a)):
                    extra = features[gap].adjectives()[0 if z[side][gap] > z[other][gap] else 1]
                    if extra not in names[side]:
                        names[side] = [*names[side], extra]
    joined = [" · ".join(n) if n else "typical" for n in names]
    seen: dict[str, int] = {}
    unique = []
    for name in joined:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def match(
    new_raw: np.ndarray[Any, Any],
    new_names: Sequence[str],
    old: Mapping[int, Mapping[str, float]],
    scaler: Any,
) -> dict[int, int]:
    """Cluster index -> stable number: each new centroid takes the number of the old centroid it is closest to
    (Hungarian assignment over distances in the new scaled space); the rest get numbers never used before.

    ``old`` maps each earlier number to its centroid as ``{feature name: raw value}``.
    """
    numbers: dict[int, int] = {}
    if old:
        old_numbers = sorted(old)
        common = [i for i, name in enumerate(new_names) if all(name in old[o] for o in old_numbers)]
        if common:
            width = len(new_names)
            old_raw = np.zeros((len(old_numbers), width))
            for r, number in enumerate(old_numbers):
                for i in common:
                    old_raw[r, i] = old[number][new_names[i]]
            new_z = np.asarray(scaler.transform(new_raw))[:, common]
            old_z = np.asarray(scaler.transform(old_raw))[:, common]
            cost = np.sqrt(((new_z[:, None, :] - old_z[None, :, :]) ** 2).sum(axis=2))
            rows, cols = linear_sum_assignment(cost)
            numbers = {int(r): old_numbers[int(c)] for r, c in zip(rows, cols, strict=True)}
    next_number = max([*old, 0]) + 1
    for i in range(len(new_raw)):
        if i not in numbers:
            numbers[i] = next_number
            next_number += 1
    return numbers
