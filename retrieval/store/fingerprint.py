"""The model fingerprint the store records with every collection: equal fingerprints mean comparable vectors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFingerprint:
    """What an index must agree with: model, its config and weights, preprocessing, width."""

    model_id: str
    config_hash: str
    weights_hash: str
    preprocess_version: str
    width: int
    standin: bool = False

    @property
    def key(self) -> str:
        """A short identity: equal keys mean embeddings are comparable."""
        return f"{self.config_hash[:12]}-{self.weights_hash[:12]}-{self.preprocess_version}-{self.width}"
