"""Segments: the rule language (``cdp.segments.rules``) and the machinery that computes memberships."""
