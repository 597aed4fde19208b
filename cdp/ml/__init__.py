"""Machine-learned segments and traits: clusters, propensity scores and job-title personas (scikit-learn)."""
