"""Ingestion: Segment-compatible tracking messages and CRM source records."""

from cdp.ingest.records import ImportSummary
from cdp.ingest.service import Ingest
from cdp.ingest.tracking import IngestResult

__all__ = ["ImportSummary", "Ingest", "IngestResult"]
