"""Embedding models behind the Encoder protocol, and the factory that picks one from settings."""
