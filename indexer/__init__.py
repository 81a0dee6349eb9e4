"""medsearch indexer: sources, the batch pipeline and sidecar labels."""
