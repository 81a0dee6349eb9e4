"""Settings read from the environment (prefix MEDSEARCH_), validated once and passed around."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "google/medsiglip-448"
IndexType = Literal["auto", "flat", "hnsw", "ivf-sq8", "ivf-fp16"]


class Settings(BaseSettings):
    """Everything a run of the indexer or the search needs to know."""

    model_config = SettingsConfigDict(env_prefix="MEDSEARCH_", extra="ignore")

    data_dir: Path = Field(default=Path("medsearch-data"), description="Folder for the database, index, keys.")
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local folder of a MedSigLIP model.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=16, ge=1, le=4096)
    workers: int = Field(default=2, ge=0, le=256, description="Decode worker processes; 0 decodes inline.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset.")
    patient_salt: str | None = Field(
        default=None, description="Secret for hashing PatientID; a random one is kept in data_dir if unset."
    )
    max_pixels: int = Field(default=120_000_000, ge=1, description="Largest accepted frame (rows*columns).")
    max_file_bytes: int = Field(default=2 * 1024**3, ge=1, description="Largest accepted file or member.")
    ct_window: str = Field(default="soft-tissue", description="CT preset used when a file has no VOI.")
    index_save_seconds: float = Field(default=30.0, ge=0, description="Save the FAISS file at least this often.")
    index_type: IndexType = Field(default="auto", description="FAISS index type built from the stored vectors.")
    index_auto_threshold: int = Field(
        default=100_000, ge=1, description="With index_type=auto: exact below this many vectors, ivf-sq8 above."
    )
    index_nlist: int | None = Field(default=None, ge=1, description="IVF lists (default about sqrt(n)).")
    index_nprobe: int | None = Field(default=None, ge=1, description="IVF lists visited per query.")
    index_hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW links per node.")
    index_ef_construction: int = Field(default=80, ge=8, description="HNSW build-time beam width.")
    index_ef_search: int | None = Field(default=None, ge=1, description="HNSW query-time beam width.")
    index_mmap: bool = Field(default=False, description="Memory-map the FAISS file (read-only until a write).")
    exact_filter_max: int = Field(
        default=20_000, ge=0, description="Filtered searches with at most this many candidates are exact."
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_database_url(self) -> str:
        """The metadata database URL (SQLite file in the data folder unless set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'medsearch.db').resolve()}"

    @property
    def index_path(self) -> Path:
        """Where the derived FAISS index file lives."""
        return self.data_dir / "index.faiss"
