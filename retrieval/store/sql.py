"""SQL pieces the store's modules share: dialect upserts, id chunks, the tag rule and unpacking stored vectors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrieval.store.models import Tag, TagScore

IdArray = npt.NDArray[np.int64]
T = TypeVar("T")


def dialect_insert(dialect: str, model: Any) -> Any:
    """INSERT for `model` with the dialect's ON CONFLICT support (SQLite or PostgreSQL)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def in_chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of at most `size` (bound parameters per statement stay within every driver's limit)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def having_tags(*columns: Any) -> Select[Any]:
    """`columns` of the tag scores by which an image has its tag: the score reaches the tag's threshold. The one
    tag rule: filters, counts and what hits carry all select through here."""
    return select(*columns).join(Tag, Tag.name == TagScore.tag).where(TagScore.score >= Tag.threshold)


def stream_vectors(
    session: Session, query: Select[int, bytes], chunk: int
) -> Iterator[tuple[IdArray, npt.NDArray[np.float32]]]:
    """(id, vector blob) rows of `query` streamed as plain rows (no ORM objects) into one buffer per chunk, so
    memory stays at about two chunks whatever the number of vectors: the one streaming reader of stored vectors."""
    connection = session.connection().execution_options(stream_results=True)
    for part in connection.execute(query).partitions(chunk):
        yield unpack_vectors(part)


def unpack_vectors(rows: Sequence[Any]) -> tuple[IdArray, npt.NDArray[np.float32]]:
    """(image id, vector blob) rows -> ids and one (rows, width) array, built from a single buffer (no per-row
    arrays); writable, like every vector the store hands out."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    blob = bytearray().join(r[1] for r in rows)
    return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)
