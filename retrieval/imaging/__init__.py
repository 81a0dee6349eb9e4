"""Image decoding and preprocessing shared by the indexer and the query service."""
