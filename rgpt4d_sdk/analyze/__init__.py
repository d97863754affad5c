"""Batch analysis: sources -> region queries -> engine -> results (JSONL, Parquet, metrics, HTML report)."""
