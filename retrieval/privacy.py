"""Privacy: PatientID is only ever stored as a keyed hash (HMAC-SHA256), names never; server paths never shown."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from retrieval.errors import SaltError
from retrieval.fsutil import publish_new

SALT_FILE = "patient-salt"
MIN_SALT_BYTES = 32


def load_or_create_salt(data_dir: Path, configured: str | None = None) -> bytes:
    """The secret key for patient hashing: configured, or kept (0600) in the data folder.

    The file is written to a temporary name, fsynced and linked into place, so a process killed
    half-way never leaves an empty key, and two first runs racing agree on one key.
    """
    if configured:
        return configured.encode()
    path = data_dir / SALT_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        publish_new(secrets.token_hex(32).encode(), path)  # another process got there first: its key stands
    value = path.read_bytes().strip()
    if len(value) < MIN_SALT_BYTES:
        raise SaltError(
            f"the patient-hash key {path} is damaged ({len(value)} bytes). Restore it from a backup, or, "
            "if nothing has been indexed yet, delete it so a new one is made"
        )
    return value


def hash_patient_id(patient_id: str | None, salt: bytes) -> str | None:
    """Keyed hash of a PatientID (None stays None); equal IDs give equal hashes within one deployment."""
    if patient_id is None or not patient_id.strip():
        return None
    return hmac.new(salt, patient_id.strip().encode(), hashlib.sha256).hexdigest()


def hash_accession(accession_number: str | None, salt: bytes) -> str | None:
    """Keyed hash of an AccessionNumber (imports keyed by it find their study; the number itself is never stored)."""
    if accession_number is None or not accession_number.strip():
        return None
    return hash_patient_id("accession:" + accession_number.strip(), salt)


def salt_check(salt: bytes) -> str:
    """A value recorded with the collection to tell whether a process uses the same key (reveals nothing of it)."""
    return hmac.new(salt, b"medsearch patient-salt check", hashlib.sha256).hexdigest()[:32]


def shown_model(ref: str) -> str:
    """The model as others see it (/readyz, exported SRs): a hub id as configured, a local folder by its name only
    (the server's paths are nobody's business)."""
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.startswith((".", "~")) or path.exists():
        return path.resolve().name or ref
    return ref
