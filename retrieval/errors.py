"""Domain errors: each has a stable code and a message that says how to fix the problem."""

from __future__ import annotations


class MedsearchError(Exception):
    """Base error; `code` is stable and machine readable, the message is for people."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class DecodeError(MedsearchError):
    """An input file could not be turned into pixels (corrupt, unsupported, hostile)."""

    code = "decode_error"


class NotAnImageError(DecodeError):
    """The file is valid but holds no image (DICOMDIR, structured report, RT plan...)."""

    code = "no_pixel_data"


class TooLargeError(DecodeError):
    """The image exceeds the configured pixel-count or byte limits."""

    code = "too_large"


class ModelLoadError(MedsearchError):
    """The embedding model could not be loaded."""

    code = "model_unavailable"


class ModelMismatchError(MedsearchError):
    """The index was built with another model or preprocessing than the one in use."""

    code = "model_mismatch"


class NotFoundError(MedsearchError):
    """An image id or source does not exist."""

    code = "not_found"


class BadQueryError(MedsearchError):
    """A query is malformed (no input, bad k, bad filter)."""

    code = "bad_query"


class UnsafeArchiveEntryError(MedsearchError):
    """An archive member has an absolute or parent-escaping path."""

    code = "unsafe_path"


class IndexBusyError(MedsearchError):
    """Another process holds the writer lock."""

    code = "index_busy"


class LabelsFileError(MedsearchError):
    """A labelled-set CSV for `medsearch eval` is missing, malformed or names unreadable images."""

    code = "bad_labels"


class MissingExtraError(MedsearchError):
    """An optional feature needs a package that is not installed."""

    code = "missing_extra"
