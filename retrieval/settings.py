"""Settings read from the environment (prefix MEDSEARCH_), validated once and passed around."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "google/medsiglip-448"


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

    vector_backend: Literal["faiss", "milvus"] = Field(
        default="faiss", description="Where vectors are searched: a FAISS file in data_dir, or Milvus."
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus server URI (http://host:19530) or a Milvus Lite file; data_dir/milvus.db if unset.",
    )
    milvus_collection: str = Field(
        default="medsearch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", description="Milvus collection name."
    )
    milvus_token: str | None = Field(default=None, description="Milvus token (user:password or API key), if any.")

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

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI (a Milvus Lite file in the data folder unless set)."""
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())
