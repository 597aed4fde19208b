"""Machine-learning algorithms (scikit-learn): features, clustering, propensity, personas and plots. ML segments
that use them are ``cdp.segments.ml_segments``; nothing here imports ``cdp.segments``."""
