"""Dagster definitions by stage of the flow: ingestion, linkage, scoring, lists, outcomes, governance."""
