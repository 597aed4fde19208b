"""Job-title personas, learnt from people's labels (human in the loop).

Someone labels a few job titles with the personas they care about ("VP Marketing" -> marketer); a
classifier on character n-grams of the title (TF-IDF + logistic regression: robust to typos,
abbreviations and languages) labels the rest; ``uncertain`` offers the titles it is least sure of for the
next labels (active learning). Every retrain reports its cross-validated accuracy and is kept, so the
accuracy curve as labels grow can be read back. Predictions become the computed traits ``persona`` and
``persona_confidence`` (a labelled title's persona is used as is, with confidence 1), which rule segments
can use and exports carry.
"""

from __future__ import annotations

import pickle
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from cdp.errors import InvalidInput
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow

OWNER = "personas"
TITLE_PATH = "$.title"
MAX_TITLE = 200
MAX_PERSONA = 64
_SPACE = re.compile(r"\s+")


def title_key(title: str) -> str:
    return _SPACE.sub(" ", title.strip().lower())


def _pipeline() -> Any:
    # scikit-learn is imported when a model is trained, not when cdp starts
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("ngrams", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1)),
            ("model", LogisticRegression(max_iter=2000, C=10.0)),
        ]
    )


@dataclass
class Label:
    title: str
    persona: str


def check_labels(body: Any) -> list[Label]:
    """``{"title", "persona"}``, a list of them, or ``{"labels": [...]}``; errors name the index and field."""
    items = body.get("labels") if isinstance(body, dict) and "labels" in body else body
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise InvalidInput(
            'send {"title": "...", "persona": "..."}, a list of them, or {"labels": [...]}', {"path": "/labels"}
        )
    out = []
    for i, item in enumerate(items):
        where = f"/labels/{i}"
        if not isinstance(item, dict):
            raise InvalidInput("each label must be an object with title and persona", {"path": where})
        title, persona = item.get("title"), item.get("persona")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise InvalidInput(
                f"title must be a non-empty string of at most {MAX_TITLE} characters", {"path": f"{where}/title"}
            )
        if not isinstance(persona, str) or not persona.strip() or len(persona) > MAX_PERSONA:
            raise InvalidInput(
                f"persona must be a non-empty string of at most {MAX_PERSONA} characters",
                {"path": f"{where}/persona"},
            )
        out.append(Label(title.strip(), persona.strip()))
    return out


class Personas:
    """``CDP.personas``: labels, training, uncertain titles and the persona traits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cached: tuple[int, Any] | None = None  # (model id, classifier); ids are never reused

    # -- labels ------------------------------------------------------------------------------------

    def label(self, labels: Iterable[Label], *, apply: bool = True) -> dict[str, Any]:
        """Store labels (a title labelled again takes the new persona), retrain, and refresh the traits."""
        now = format_ts(utcnow())
        rows = [(title_key(x.title), x.title, x.persona, now) for x in labels]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO persona_labels (title_key, title, persona, labeled_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (title_key) DO UPDATE SET title = excluded.title, persona = excluded.persona,"
                " labeled_at = excluded.labeled_at",
                rows,
            )

        self.store.write(job)
        model = self.train()
        updated = self.apply() if apply else 0
        return {**self.status(), "model": model, "profiles_updated": updated}

    def label_json(self, body: Any) -> dict[str, Any]:
        """``label`` for labels as JSON (one ``{"title", "persona"}`` object or a list of them); 400 if malformed."""
        return self.label(check_labels(body))

    def labels(self) -> list[dict[str, str]]:
        return [
            {"title": t, "persona": p, "labeled_at": at}
            for t, p, at in self.store.reader().execute(
                "SELECT title, persona, labeled_at FROM persona_labels ORDER BY title_key"
            )
        ]

    def delete_label(self, title: str) -> bool:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM persona_labels WHERE title_key = ?", (title_key(title),)).rowcount

        return bool(self.store.write(job))

    # -- the model ---------------------------------------------------------------------------------

    def train(self) -> dict[str, Any] | None:
        """Retrain on every label; None (and no model) until two personas have labels."""
        found = self.store.reader().execute("SELECT title, persona FROM persona_labels").fetchall()
        titles = [title_key(t) for t, _ in found]
        personas = [p for _, p in found]
        counts = Counter(personas)
        if len(counts) < 2:
            return None
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        pipeline = _pipeline().fit(titles, personas)
        smallest = min(counts.values())
        accuracy: float | None = None
        folds = min(5, smallest)
        if folds >= 2:
            scores = cross_val_score(
                _pipeline(), titles, personas, cv=StratifiedKFold(folds, shuffle=True, random_state=0)
            )
            accuracy = round(float(np.mean(scores)), 4)
        metrics: dict[str, Any] = {
            "cv_accuracy": accuracy,
            "cv_folds": folds if folds >= 2 else None,
            "labels": len(titles),
            "personas": dict(sorted(counts.items())),
        }
        if accuracy is None:
            metrics["note"] = "cross-validation needs at least two labels of every persona"
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO ml_models (owner, kind, created_at, features, params, metrics, artifact)"
                " VALUES (?, 'persona', ?, '[\"title\"]', ?, ?, ?)",
                (
                    OWNER,
                    now,
                    orjson.dumps({"ngrams": [2, 4], "model": "logistic"}).decode(),
                    orjson.dumps(metrics).decode(),
                    pickle.dumps(pipeline),
                ),
            )
            return int(cursor.lastrowid or 0)

        model_id = self.store.write(job)
        return {"id": model_id, "trained_at": now, **metrics}

    def _model(self) -> Any:
        """The latest trained classifier, unpickled once per training (None before the first)."""
        row = self.store.reader().execute("SELECT max(id) FROM ml_models WHERE owner = ?", (OWNER,)).fetchone()
        model_id = row[0] if row else None
        if model_id is None:
            return None
        if self._cached is None or self._cached[0] != model_id:
            (artifact,) = (
                self.store.reader().execute("SELECT artifact FROM ml_models WHERE id = ?", (model_id,)).fetchone()
            )
            self._cached = (model_id, pickle.loads(artifact))
        return self._cached[1]

    def status(self) -> dict[str, Any]:
        conn = self.store.reader()
        counts = dict(conn.execute("SELECT persona, count(*) FROM persona_labels GROUP BY persona ORDER BY persona"))
        history = [
            {"id": i, "trained_at": at, **orjson.loads(m)}
            for i, at, m in conn.execute(
                "SELECT id, created_at, metrics FROM ml_models WHERE owner = ? ORDER BY id", (OWNER,)
            )
        ]
        for entry in history:
            entry.pop("personas", None)
        return {
            "labels": sum(counts.values()),
            "personas": counts,
            "model": history[-1] if history else None,
            "accuracy_history": [
                {"labels": h["labels"], "cv_accuracy": h["cv_accuracy"], "trained_at": h["trained_at"]} for h in history
            ],
        }

    # -- titles in the store ---------------------------------------------------------------------------

    def _titles(self, conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
        """Distinct normalised titles of live profiles -> (a spelling seen, how many profiles)."""
        out: dict[str, tuple[str, int]] = {}
        for title, n in conn.execute(
            "SELECT json_extract(traits, ?) AS t, count(*) FROM profiles WHERE merged_into IS NULL"
            " AND json_type(traits, ?) = 'text' GROUP BY t",
            (TITLE_PATH, TITLE_PATH),
        ):
            key = title_key(str(title))
            if not key:
                continue
            spelling, count = out.get(key, (str(title).strip(), 0))
            out[key] = (spelling, count + n)
        return out

    def predict(self, titles: list[str]) -> list[dict[str, Any]]:
        """Persona, confidence and the best candidates of each title (labelled titles answer with their label)."""
        conn = self.store.reader()
        labelled = dict(conn.execute("SELECT title_key, persona FROM persona_labels").fetchall())
        model = self._model()
        keys = [title_key(t) for t in titles]
        out: list[dict[str, Any]] = []
        proba = model.predict_proba(keys) if model is not None and keys else None
        classes = [str(c) for c in model.classes_] if model is not None else []
        for i, (title, key) in enumerate(zip(titles, keys, strict=True)):
            entry: dict[str, Any] = {"title": title, "persona": None, "confidence": None, "labelled": key in labelled}
            if proba is not None:
                order = np.argsort(-proba[i])
                entry["candidates"] = [
                    {"persona": classes[j], "probability": round(float(proba[i][j]), 4)} for j in order[:3]
                ]
                entry["persona"] = classes[order[0]]
                entry["confidence"] = round(float(proba[i][order[0]]), 4)
                entry["margin"] = round(float(proba[i][order[0]] - (proba[i][order[1]] if len(order) > 1 else 0)), 4)
            if key in labelled:
                entry["persona"], entry["confidence"] = labelled[key], 1.0
            out.append(entry)
        return out

    def uncertain(self, n: int = 20) -> list[dict[str, Any]]:
        """Unlabelled titles of live profiles the model is least sure of (smallest margin between its two best
        guesses; more profiles first on ties). With no model yet: the most frequent unlabelled titles."""
        if not 1 <= n <= 1000:
            raise InvalidInput(f"n must be from 1 to 1000, not {n}", {"path": "n"})
        conn = self.store.reader()
        labelled = {r[0] for r in conn.execute("SELECT title_key FROM persona_labels")}
        titles = {k: v for k, v in self._titles(conn).items() if k not in labelled}
        spellings = [spelling for spelling, _ in titles.values()]
        counts = [count for _, count in titles.values()]
        predictions = self.predict(spellings)
        for entry, count in zip(predictions, counts, strict=True):
            entry["profiles"] = count
        if self._model() is None:
            predictions.sort(key=lambda e: (-e["profiles"], e["title"]))
        else:
            predictions.sort(key=lambda e: (e.get("margin", 1.0), -e["profiles"], e["title"]))
        return predictions[:n]

    def active(self) -> bool:
        """Whether there is anything to predict with (a model, or at least labels)."""
        conn = self.store.reader()
        return self._model() is not None or bool(conn.execute("SELECT 1 FROM persona_labels LIMIT 1").fetchone())

    def apply_to(self, profile_ids: Iterable[str]) -> int:
        """``apply`` for these profiles only (their title arrived or changed): the current model predicts their
        persona at once, with no labelling. Returns how many changed."""
        ids = sorted(set(profile_ids))
        if not ids or not self.active():
            return 0
        conn = self.store.reader()
        rows: list[tuple[str, Any, str]] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows += conn.execute(
                f"SELECT id, json_extract(traits, ?), scores FROM profiles WHERE id IN ({','.join('?' * len(part))})"
                " AND merged_into IS NULL",
                (TITLE_PATH, *part),
            ).fetchall()
        spellings: dict[str, str] = {}
        for _, title, _ in rows:
            if isinstance(title, str) and title_key(title):
                spellings.setdefault(title_key(title), title.strip())
        keys = list(spellings)
        verdict = {
            key: (entry["persona"], entry["confidence"])
            for key, entry in zip(keys, self.predict([spellings[k] for k in keys]), strict=True)
        }
        return self._write(rows, verdict)

    def apply(self, chunk: int = 5000) -> int:
        """Write ``persona`` / ``persona_confidence`` for live profiles with a title; returns how many changed."""
        conn = self.store.reader()
        if not self.active():
            return 0
        titles = self._titles(conn)
        keys = list(titles)
        verdict = {
            key: (entry["persona"], entry["confidence"])
            for key, entry in zip(keys, self.predict([titles[k][0] for k in keys]), strict=True)
        }
        rows = conn.execute(
            "SELECT id, json_extract(traits, ?), scores FROM profiles WHERE merged_into IS NULL"
            " AND (json_type(traits, ?) = 'text' OR scores LIKE '%\"persona\"%')",
            (TITLE_PATH, TITLE_PATH),
        )
        return self._write(rows, verdict, chunk)

    def _write(
        self, rows: Iterable[tuple[str, Any, str]], verdict: dict[str, tuple[Any, Any]], chunk: int = 5000
    ) -> int:
        """Set or remove each profile's persona where it differs from ``verdict`` (title key -> persona)."""
        sets: list[tuple[str, float, str]] = []
        removes: list[tuple[str]] = []
        for pid, title, scores in rows:
            current = orjson.loads(scores)
            persona, confidence = verdict.get(title_key(title) if isinstance(title, str) else "", (None, None))
            if current.get("persona") == persona and current.get("persona_confidence") == confidence:
                continue
            if persona is None:
                removes.append((pid,))
            else:
                sets.append((persona, confidence, pid))
        # json_set / json_remove in the write itself: other models' scores written meanwhile are kept.
        for start in range(0, max(len(sets), len(removes)), chunk):
            set_part, remove_part = sets[start : start + chunk], removes[start : start + chunk]

            def job(
                conn: sqlite3.Connection, set_part: list[Any] = set_part, remove_part: list[Any] = remove_part
            ) -> None:
                conn.executemany(
                    "UPDATE profiles SET scores = json_set(scores, '$.persona', ?, '$.persona_confidence', ?)"
                    " WHERE id = ?",
                    set_part,
                )
                conn.executemany(
                    "UPDATE profiles SET scores = json_remove(scores, '$.persona', '$.persona_confidence')"
                    " WHERE id = ?",
                    remove_part,
                )

            self.store.write(job)
        changes = len(sets) + len(removes)
        return changes
