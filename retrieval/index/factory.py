"""Pick the vector backend named by the settings (one factory, as for encoders)."""

from __future__ import annotations

from retrieval.index.base import VectorIndex
from retrieval.index.faiss_index import FaissIndex
from retrieval.settings import Settings


def build_vector_index(settings: Settings, width: int) -> VectorIndex:
    """The vector index for a collection of the given embedding width (not yet reconciled)."""
    if settings.vector_backend == "milvus":
        from retrieval.index.milvus_index import MilvusIndex

        return MilvusIndex(settings.resolved_milvus_uri, settings.milvus_collection, width, settings.milvus_token)
    return FaissIndex(settings.index_path, width, settings)
