"""Ingestion: Segment-compatible tracking messages and CRM source records."""

from cdp.ingest.api import Ingest
from cdp.ingest.records import ImportSummary
from cdp.ingest.tracking import IngestResult

__all__ = ["ImportSummary", "Ingest", "IngestResult"]
