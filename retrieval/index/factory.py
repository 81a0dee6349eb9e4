"""Pick the vector backend named by the settings (one factory, as for encoders)."""

from __future__ import annotations

from retrieval.index.base import VectorIndex
from retrieval.index.exact import StoredScorer, VectorStore
from retrieval.index.faiss_index import FaissIndex
from retrieval.index.faiss_types import FaissOptions
from retrieval.settings import Settings


def build_vector_index(settings: Settings, width: int, store: VectorStore) -> VectorIndex:
    """The vector index for a collection of the given embedding width (not yet reconciled); both back ends score
    exactly from `store`'s float vectors (the Catalog) through one StoredScorer."""
    stored = StoredScorer(store)
    if settings.vector_backend == "milvus":
        from retrieval.index.milvus_index import MilvusIndex

        uri, name, token = settings.resolved_milvus_uri, settings.milvus_collection, settings.milvus_token
        return MilvusIndex(uri, name, width, token, stored)
    return FaissIndex(settings.index_path, width, FaissOptions.from_settings(settings), stored)
