"""Settings read from the environment (prefix MEDSEARCH_), validated once and passed around."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "google/medsiglip-448"
DEFAULT_SUMMARY_MODEL = "google/medgemma-4b-it"
IndexType = Literal["auto", "flat", "hnsw", "ivf-sq8", "ivf-fp16"]


class Settings(BaseSettings):
    """Everything a run of the indexer or the search needs to know."""

    model_config = SettingsConfigDict(env_prefix="MEDSEARCH_", extra="ignore")

    data_dir: Path = Field(default=Path("medsearch-data"), description="Folder for the database, index, keys.")
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local folder of a MedSigLIP model.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    encoder_backend: Literal["auto", "torch", "openvino"] = Field(
        default="auto", description="Encoder runtime: auto (OpenVINO on a CPU when installed, torch on CUDA)."
    )
    encoder_precision: Literal["auto", "fp32", "bf16", "int8", "int8-reduced", "int8-weights"] = Field(
        default="auto",
        description="auto: bf16 on CUDA or AVX-512 BF16/AMX; int8-reduced on AVX2-only CPUs where it keeps min "
        "cosine 0.999 to fp32 on the collection's images; else fp32. int8, int8-reduced, int8-weights opt-in.",
    )
    encoder_threads: int = Field(
        default=0, ge=0, le=1024, description="Encoder threads (torch or OpenVINO inference; 0: the runtime's default)."
    )
    encoder_calibration_images: int = Field(
        default=300, ge=1, le=5000, description="Collection images the int8 calibration reads (once, then cached)."
    )
    batch_size: int = Field(default=16, ge=1, le=4096)
    workers: int = Field(default=2, ge=0, le=256, description="Decode worker processes; 0 decodes inline.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset.")
    patient_salt: str | None = Field(
        default=None, description="Secret for hashing PatientID; a random one is kept in data_dir if unset."
    )
    max_pixels: int = Field(default=120_000_000, ge=1, description="Largest accepted frame (rows*columns).")
    max_file_bytes: int = Field(default=2 * 1024**3, ge=1, description="Largest accepted file or member.")
    report_max_chars: int = Field(
        default=200_000, ge=1_000, le=10_000_000, description="Longest report text stored (longer: cut, recorded)."
    )
    ct_window: str = Field(default="soft-tissue", description="CT preset used when a file has no VOI.")
    series_slices: str = Field(
        default="16",
        pattern=r"^(all|[1-9][0-9]{0,5})$",
        description="Slices sampled per CT/MR/PET volume (evenly over its extent), or 'all' (every slice).",
    )
    ct_channels: Literal["window", "multiwindow"] = Field(
        default="window",
        description="CT slices as one window (window) or three HU windows as RGB (multiwindow); fixed per collection.",
    )
    index_save_seconds: float = Field(default=30.0, ge=0, description="Save the FAISS file at least this often.")
    # -- PACS: DICOMweb pull and thumbnails of pulled images, C-STORE listener ------------------------------
    dicomweb_url: str | None = Field(default=None, description="DICOMweb base URL, e.g. http://pacs:8042/dicom-web.")
    dicomweb_auth: Literal["none", "basic", "bearer"] = "none"
    dicomweb_user: str | None = Field(default=None, description="User name for basic auth.")
    dicomweb_password: SecretStr | None = Field(default=None, description="Password for basic auth.")
    dicomweb_token: SecretStr | None = Field(default=None, description="Token for bearer auth.")
    dicomweb_timeout: float = Field(default=30.0, gt=0, description="Seconds before a DICOMweb request gives up.")
    dicomweb_retries: int = Field(default=4, ge=0, le=20, description="Retries after a 5xx, timeout or lost link.")
    dicomweb_backoff: float = Field(default=1.0, ge=0, description="First retry delay in seconds; doubles each time.")
    dicomweb_workers: int = Field(default=4, ge=1, le=64, description="Instances fetched at the same time.")
    listen_ae_title: str = Field(default="MEDSEARCH", min_length=1, max_length=16)
    export_ae: str | None = Field(
        default=None, description="Send search results as a DICOM SR by C-STORE to AET@host:port (off when unset)."
    )
    export_dicomweb: str | None = Field(
        default=None, description="Send search results as a DICOM SR by STOW-RS to this DICOMweb URL (off when unset)."
    )
    export_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds an SR export waits for the PACS (per request/association)."
    )
    export_check_study: bool = Field(
        default=True, description="Refuse an SR export when the PACS does not have the query's study."
    )
    listen_host: str = Field(default="127.0.0.1", description="Where `medsearch listen` accepts associations.")
    listen_port: int = Field(default=11112, ge=0, le=65535)
    listen_allow: str = Field(default="", description="Comma-separated calling AE titles allowed (all if empty).")
    spool_dir: Path | None = Field(default=None, description="Received instances wait here (default DATA_DIR/spool).")
    spool_batch: int = Field(default=64, ge=1, description="Spooled instances indexed per batch.")
    spool_poll_seconds: float = Field(default=1.0, gt=0, description="How often the spool worker looks for files.")
    series_quiet_seconds: float = Field(
        default=30.0, ge=0, description="C-STORE: a volume's series is planned once none of it arrived for this long."
    )
    # -- optional comparative summaries (MedGemma) --
    summarizer: Literal["none", "transformers", "openai"] = Field(
        default="none", description="Summary backend: none (off), transformers (local), openai (a chat server)."
    )
    summary_model: str = Field(
        default=DEFAULT_SUMMARY_MODEL, description="Summary model: hub id or local folder (transformers), or name."
    )
    summary_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://gpu:8000/v1.")
    summary_api_key: str | None = Field(default=None, description="Bearer key for the summary server.")
    summary_timeout_seconds: float = Field(default=120.0, gt=0, le=3600, description="Longest wait for a summary.")
    summary_retries: int = Field(default=2, ge=0, le=10, description="Retries on 5xx or connection errors.")
    summary_matches: int = Field(default=4, ge=1, le=16, description="How many top matches a summary compares.")
    summary_max_new_tokens: int = Field(default=512, ge=1, le=8192, description="Longest summary, in tokens.")
    summary_device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Device (transformers).")
    summary_image_size: int = Field(
        default=896, ge=32, le=4096, description="Image side sent to a server (openai; transformers reads its own)."
    )
    summary_image_tokens: int = Field(
        default=256, ge=1, le=4096, description="Tokens per image assumed for a server's budget (openai)."
    )
    summary_context_tokens: int | None = Field(
        default=None, ge=256, description="Context budget; transformers reads the model's, openai assumes 8192."
    )
    summary_cache_size: int = Field(default=64, ge=0, le=10_000, description="Summaries kept in memory (0 = off).")
    index_type: IndexType = Field(default="auto", description="FAISS index type built from the stored vectors.")
    index_auto_threshold: int = Field(
        default=100_000, ge=1, description="With index_type=auto: exact below this many vectors, ivf-sq8 above."
    )
    index_nlist: int | None = Field(default=None, ge=1, description="IVF lists (default about sqrt(n)).")
    index_nprobe: int | None = Field(default=None, ge=1, description="IVF lists visited per query (text: 1.5x).")
    index_hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW links per node.")
    index_ef_construction: int = Field(default=80, ge=8, description="HNSW build-time beam width.")
    index_ef_search: int | None = Field(default=None, ge=1, description="HNSW query-time beam width.")
    index_mmap: bool = Field(default=False, description="Memory-map the FAISS file (read-only until a write).")
    duplicate_threshold: float = Field(
        default=0.9999, gt=0, le=1, description="Cosine from which two images count as copies (folded in results)."
    )
    exact_filter_max: int = Field(
        default=20_000,
        ge=0,
        description="hnsw: filtered searches with at most this many candidates are exact (flat and IVF always are).",
    )
    search_threads: int = Field(
        default=1, ge=0, le=256, description="FAISS threads per search (1: requests run side by side; 0: all cores)."
    )
    embed_cache_size: int = Field(
        default=1024, ge=0, le=1_000_000, description="Text and upload embeddings kept in memory (0 = off)."
    )
    reuse_indexed_vectors: bool = Field(
        default=True, description="An upload whose pixels are already indexed reuses that image's stored vector."
    )

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
    def resolved_spool_dir(self) -> Path:
        """Where the C-STORE listener keeps received instances until they are indexed."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI (a Milvus Lite file in the data folder unless set)."""
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())
