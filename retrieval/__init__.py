"""medsearch core: decoding, embedding, metadata store, vector index and search."""

__version__ = "0.1.0"
