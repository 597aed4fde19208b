"""Identity resolution: the deterministic graph at ingest, Splink for the fuzzy rest, stable profiles."""
