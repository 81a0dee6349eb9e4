"""Vector indexes behind the VectorIndex protocol; derived from the stored vectors, saved atomically."""
