"""Query-service settings: the core settings plus bind address, API keys, limits, CORS and viewer links."""

from __future__ import annotations

import hashlib
import ipaddress

from pydantic import Field

from retrieval.errors import InsecureBindError, SettingsError
from retrieval.settings import Settings


def hash_key(key: str) -> str:
    """How API keys are configured: the SHA-256 hex digest of the key, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


class ServiceSettings(Settings):
    """Settings of `medsearch serve` (environment prefix MEDSEARCH_)."""

    host: str = Field(default="127.0.0.1", description="Bind address; beyond loopback requires API keys.")
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = Field(default="", description="Comma-separated 'key_id:sha256hex' pairs.")
    max_upload_bytes: int = Field(default=64 * 1024**2, ge=1, description="Largest accepted upload.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (off if empty).")
    viewer_url_template: str | None = Field(
        default=None, description="e.g. https://pacs/viewer?StudyInstanceUIDs={study_instance_uid}"
    )
    refresh_seconds: float = Field(default=1.0, ge=0, description="How often searches look for new images.")

    def key_ids_by_hash(self) -> dict[str, str]:
        """Configured keys as {sha256 hex: key id}."""
        out: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            key_id, sep, digest = item.partition(":")
            digest = digest.strip().lower()
            if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise SettingsError(
                    f"MEDSEARCH_API_KEYS entry {key_id!r} is not 'key_id:sha256hex' "
                    "(create one with `medsearch key new KEY_ID`)"
                )
            out[digest] = key_id.strip()
        return out

    def check_bind(self) -> None:
        """Refuse to listen beyond loopback without API keys."""
        if self.key_ids_by_hash():
            return
        host = self.host.strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InsecureBindError(
                f"refusing to listen on {self.host} without API keys: set MEDSEARCH_API_KEYS "
                "(`medsearch key new KEY_ID` makes one) or bind to 127.0.0.1"
            )
