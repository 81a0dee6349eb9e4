"""Domain errors: each has a stable code, its HTTP status and a message that says how to fix the problem."""

from __future__ import annotations

from typing import ClassVar

_REGISTRY: dict[str, type[MedsearchError]] = {}


class MedsearchError(Exception):
    """Base error; `code` is stable and machine readable, `status` is what the API answers, the message is
    for people. Every subclass that names a code names its status and a short title with it."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Unexpected error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            known = _REGISTRY.get(cls.code)
            if known is not None and _name(known) != _name(cls):  # a reloaded module may define its class again
                raise TypeError(f"error code {cls.code!r} is defined twice ({_name(known)}, {_name(cls)})")
            _REGISTRY[cls.code] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_types() -> dict[str, type[MedsearchError]]:
    """Every error code defined so far, with its class (a module's codes register when it is imported)."""
    return dict(_REGISTRY)


class InternalError(MedsearchError):
    """Something failed that should not have (a bug): the log has the details, nobody is shown a stack trace."""

    code = "internal_error"
    status = 500
    title = "Internal error"


class WorkerCrashedError(MedsearchError):
    """A decode worker process died on a file (tried again alone, it died again): that file is recorded, the run
    goes on. Usually a decoder library crashing on a malformed file: check the file, or report it."""

    code = "worker_crashed"
    status = 500
    title = "Decode worker crashed"


class DecodeError(MedsearchError):
    """An input file could not be turned into pixels (corrupt, unsupported, hostile)."""

    code = "decode_error"
    status = 415
    title = "File could not be decoded"


class NotAnImageError(DecodeError):
    """The file holds no image: an image object stripped of its pixels, an archive under another name..."""

    code = "no_pixel_data"
    status = 415
    title = "File holds no image"


class UnsupportedFormatError(NotAnImageError):
    """The bytes are neither DICOM nor a supported raster format."""

    code = "unsupported_format"
    status = 415
    title = "Unsupported file format"


class NonImageObjectError(NotAnImageError):
    """A valid DICOM object that is not an image (structured report, RT plan, ECG, DICOMDIR...): ingest records it
    as skipped under its SOP class name, not as a failure; a search upload of one is refused."""

    code = "not_an_image"
    status = 415
    title = "Not an image object"

    def __init__(self, message: str, *, kind: str = "non_image", sop_class: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.sop_class = sop_class

    @classmethod
    def of(cls, kind: str, sop_class: str) -> NonImageObjectError:
        """The error for an object of this kind and SOP class name."""
        return cls(f"not an image: {sop_class} (only images are indexed and searched)", kind=kind, sop_class=sop_class)


class TooLargeError(DecodeError):
    """The image exceeds the configured pixel-count or byte limits."""

    code = "too_large"
    status = 413
    title = "Too large"


class ModelLoadError(MedsearchError):
    """The embedding model could not be loaded."""

    code = "model_unavailable"
    status = 503
    title = "Model unavailable"


class ModelMismatchError(MedsearchError):
    """The index was built with another model or preprocessing than the one in use."""

    code = "model_mismatch"
    status = 503
    title = "Index built with another model"


class PreprocessingMismatchError(ModelMismatchError):
    """The index was built with another CT channel recipe (MEDSEARCH_CT_CHANNELS) than the one in use."""

    code = "preprocessing_mismatch"
    status = 503
    title = "Index built with another preprocessing"


class NotFoundError(MedsearchError):
    """An image id or source does not exist."""

    code = "not_found"
    status = 404
    title = "Not found"


class BadQueryError(MedsearchError):
    """A query is malformed (no input, bad k, bad filter)."""

    code = "bad_query"
    status = 400
    title = "Bad query"


class ReportQueryError(BadQueryError):
    """A report query (`--report`, API `report`) that cannot be read: the message shows the problem and where."""

    code = "bad_report_query"
    status = 400
    title = "Report query not understood"


class ReportInputError(MedsearchError):
    """A report to import (CSV/JSONL file, DICOM SR) that cannot be read: the message says what and where."""

    code = "bad_report"
    status = 400
    title = "Report could not be read"


class UnsafeArchiveEntryError(MedsearchError):
    """An archive member has an absolute or parent-escaping path."""

    code = "unsafe_path"
    status = 400
    title = "Unsafe archive path"


class IndexBusyError(MedsearchError):
    """Another process holds the writer lock."""

    code = "index_busy"
    status = 503
    title = "Index busy"


class LabelsFileError(MedsearchError):
    """A labelled-set CSV for `medsearch eval` is missing, malformed or names unreadable images."""

    code = "bad_labels"
    status = 400
    title = "Bad labels file"


class MissingExtraError(MedsearchError):
    """An optional feature needs a package that is not installed."""

    code = "missing_extra"
    status = 501
    title = "Feature not installed"


class ClusterError(MedsearchError):
    """A Ray cluster could not be started or joined, or its pipeline failed (`--ray`)."""

    code = "cluster_unavailable"
    status = 503
    title = "Ray cluster unavailable"


class SettingsError(MedsearchError):
    """A setting (environment variable or option) is missing or invalid: the operator must fix it."""

    code = "bad_settings"
    status = 503
    title = "Server settings invalid"


class WindowNotApplicableError(MedsearchError):
    """A CT window preset was asked for an image it does not apply to (not CT, or not DICOM)."""

    code = "window_not_applicable"
    status = 409
    title = "Window preset not applicable to this image"


class DataDirError(MedsearchError):
    """The data folder cannot be created or written (a file is in the way, no permission, read-only)."""

    code = "bad_data_dir"
    status = 503
    title = "Data folder unusable"


class InsecureBindError(SettingsError):
    """The service would listen beyond loopback without API keys."""

    code = "insecure_bind"
    status = 503
    title = "Refused insecure settings"


class SaltError(MedsearchError):
    """The patient-hash key file or MEDSEARCH_PATIENT_SALT is unusable."""

    code = "bad_salt"
    status = 503
    title = "Patient-hash key unusable"


class SaltRequiredError(SaltError):
    """A shared database is opened without an explicit patient-hash key."""

    code = "salt_required"
    status = 503
    title = "Patient-hash key required"


class SaltMismatchError(SaltError):
    """The collection was hashed with another patient-hash key than the one in use."""

    code = "salt_mismatch"
    status = 503
    title = "Patient-hash key mismatch"


class WriteFailedError(MedsearchError):
    """A report or output file could not be written."""

    code = "write_failed"
    status = 500
    title = "Could not write a file"


class ListenFailedError(MedsearchError):
    """A listener could not bind its port."""

    code = "listen_failed"
    status = 503
    title = "Cannot listen"


class RegionOutsideError(BadQueryError):
    """A region of interest that does not lie inside the image it is taken from (its size is known only then)."""

    code = "region_outside"
    status = 400  # a bad region, like an empty or tiny one (issue 20): the request, not the image, is wrong
    title = "Region outside the image"
