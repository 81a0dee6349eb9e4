"""Ingest stages, each callable on its own with plain picklable data: decode -> encode -> write."""
