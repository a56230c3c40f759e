"""Contract-driven ingestion of partner extracts: read, check, quarantine, reconcile, load."""
