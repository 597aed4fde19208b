"""JSON Schema of machine-learned segments' ``model`` objects, published with the segment schema
(``GET /v1/segments/schema``). Built from the same constants the validators use; the validators
(``cluster.check_params``, ``propensity.check_params``) also say which path is wrong and how to fix it."""

from __future__ import annotations

from typing import Any

from cdp.ml.features import BASE, GROUPS

# The validators take their vocabularies from here (this module imports no scikit-learn, so the segment schema
# can be published without loading it).
CLUSTER_ALGORITHMS = ["kmeans", "minibatch_kmeans", "gmm", "agglomerative"]
PROPENSITY_ALGORITHMS = ["logistic", "gradient_boosting"]
K_MAX = 30

FEATURES: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "anyOf": [
            {"enum": [*GROUPS, *sorted(BASE)]},
            {"type": "string", "pattern": "^event:.+:[1-9][0-9]{0,4}[hdw]$", "description": "event:<name>:<window>"},
            {"type": "string", "pattern": "^trait:.+$", "description": "trait:<path> or trait:<path>=<value>"},
        ]
    },
}

CLUSTER_MODEL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "algorithm": {"enum": CLUSTER_ALGORITHMS, "default": "kmeans"},
        "k": {"oneOf": [{"const": "auto"}, {"type": "integer", "minimum": 2, "maximum": K_MAX}], "default": "auto"},
        "features": {**FEATURES, "default": ["rfm", "engagement"]},
        "min_cluster_share": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5, "default": 0.02},
        "scaler": {"enum": ["standard", "robust"], "default": "standard"},
        "seed": {"type": "integer", "default": 0},
    },
    "additionalProperties": False,
}

PROPENSITY_MODEL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "target_event": {"type": "string", "minLength": 1},
        "horizon_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 7},
        "algorithm": {"enum": PROPENSITY_ALGORITHMS, "default": "logistic"},
        "features": {**FEATURES, "default": ["rfm", "engagement", "events"]},
        "snapshots": {"type": "integer", "minimum": 1, "maximum": 24, "default": 4},
        "filter": {"$ref": "#/$defs/node", "description": "only profiles matching this rule node are scored"},
        "seed": {"type": "integer", "default": 0},
    },
    "required": ["target_event"],
    "additionalProperties": False,
}
