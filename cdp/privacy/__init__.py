"""Privacy and data-subject rights: erasure, suppression, export and consent (``CDP.privacy``)."""
