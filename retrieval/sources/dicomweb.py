"""DICOMweb client (dicomweb-client): QIDO-RS search, WADO-RS instance bytes, auth, timeouts and retries."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from retrieval.errors import DecodeError, MedsearchError, NotFoundError, SettingsError, TooLargeError
from retrieval.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
NO_METADATA_STATUS = {400, 404, 405, 406, 501}  # a server without WADO-RS series metadata
PAGE = 500  # QIDO-RS results asked for per request
MEDIA_TYPES = (("application/dicom", "*"),)  # the instance as stored: compressed pixel data stays compressed


class DicomwebError(MedsearchError):
    """A DICOMweb server could not be reached or answered with an error (after retries)."""

    code = "dicomweb_error"
    status = 502
    title = "DICOMweb server error"


@dataclass(frozen=True)
class DicomwebConfig:
    """Where the server is, how to log in, and how patient to be with it."""

    url: str
    auth: str = "none"  # none | basic | bearer
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or a traceback
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> DicomwebConfig:
        """The DICOMweb settings (MEDSEARCH_DICOMWEB_*), optionally for another base URL."""
        base = url or settings.dicomweb_url
        if not base:
            raise SettingsError("no DICOMweb server configured: give --dicomweb URL or set MEDSEARCH_DICOMWEB_URL")
        return cls(
            url=base.rstrip("/"),
            auth=settings.dicomweb_auth,
            user=settings.dicomweb_user,
            password=settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else None,
            token=settings.dicomweb_token.get_secret_value() if settings.dicomweb_token else None,
            timeout=settings.dicomweb_timeout,
            retries=settings.dicomweb_retries,
            backoff=settings.dicomweb_backoff,
        )

    def check(self) -> None:
        """Refuse an unusable URL or incomplete credentials, saying what to set."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"{self.url!r} is not an http(s) DICOMweb URL")
        if self.auth == "basic" and (not self.user or self.password is None):
            raise SettingsError(
                "basic auth needs a user and a password: --user and --password-env VAR "
                "(or MEDSEARCH_DICOMWEB_USER / MEDSEARCH_DICOMWEB_PASSWORD)"
            )
        if self.auth == "bearer" and not self.token:
            raise SettingsError("bearer auth needs a token: --token-env VAR (or MEDSEARCH_DICOMWEB_TOKEN)")


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    """The WADO-RS URL of one instance: also its identity in the store (`source_uri`)."""
    return f"{base.rstrip('/')}/studies/{study}/series/{series}/instances/{sop}"


def split_instance_url(base: str, url: str) -> tuple[str, str, str] | None:
    """(study, series, sop) of a WADO-RS instance URL under `base`, or None when it is not one."""
    prefix = base.rstrip("/") + "/studies/"
    if not url.startswith(prefix):
        return None
    parts = url[len(prefix) :].split("/")
    if len(parts) != 5 or parts[1] != "series" or parts[3] != "instances" or not all(parts[::2]):
        return None
    return parts[0], parts[2], parts[4]


def _status_of(exc: BaseException | None) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retryable(exc: Exception) -> bool:
    import requests

    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code in RETRY_STATUS
    return isinstance(exc, requests.Timeout | requests.ConnectionError)


def describe(exc: Exception) -> str:
    """A short reason for a failed request (status code or error kind), never a traceback."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        text = f"HTTP {exc.response.status_code} {exc.response.reason or ''}".strip()
        if exc.response.status_code in (401, 403):
            text += " (check --auth with --user/--password-env or --token-env, or MEDSEARCH_DICOMWEB_AUTH)"
        return text
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"{type(exc).__name__}: {exc}"


def _kind_of(url: str) -> str:
    """What a GET asked for: series "metadata" (headers), "instances" (WADO-RS bytes) or a QIDO-RS "search"."""
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/metadata"):
        return "metadata"
    return "instances" if "/instances/" in path else "search"


class Dicomweb:
    """A thread-safe DICOMweb client: one dicomweb-client (and HTTP session) per thread.

    `received` counts the response body bytes of each kind of request (metadata, instances, search).
    """

    def __init__(self, config: DicomwebConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        config.check()
        self.config = config
        self.sleep = sleep
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.received: dict[str, int] = {"metadata": 0, "instances": 0, "search": 0}

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> None:
        size = len(response.content or b"")  # requests caches the body: dicomweb-client reads the same bytes
        with self._count_lock:
            kind = _kind_of(response.url)
            self.received[kind] += size

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import requests
            from dicomweb_client.api import DICOMwebClient

            session = requests.Session()
            session.hooks["response"].append(self._count)
            if self.config.auth == "basic":
                session.auth = (self.config.user or "", self.config.password or "")
            elif self.config.auth == "bearer":
                session.headers["Authorization"] = f"Bearer {self.config.token}"
            client = DICOMwebClient(url=self.config.url, session=session, timeout=self.config.timeout)
            client.set_http_retry_params(retry=False)  # ours below also covers timeouts and lost connections
            self._local.client = client
        return client

    def call(self, what: str, func: Callable[[Any], T]) -> T:
        """Run one request, retrying 5xx/408/429, timeouts and connection errors with exponential backoff."""
        attempt = 0
        while True:
            try:
                return func(self._client())
            except Exception as exc:
                if not _retryable(exc) or attempt >= self.config.retries:
                    import requests

                    if isinstance(exc, requests.HTTPError | requests.Timeout | requests.ConnectionError):
                        tries = f" after {attempt + 1} attempts" if attempt else ""
                        raise DicomwebError(f"{what}: {describe(exc)}{tries}") from exc
                    raise
                delay = self.config.backoff * (2**attempt)
                log.info("%s: %s; retrying in %.2f s", what, describe(exc), delay)
                self.sleep(delay)
                attempt += 1

    def search(
        self, level: str, filters: dict[str, str], study: str | None = None, series: str | None = None
    ) -> list[Any]:
        """QIDO-RS search at 'studies', 'series' or 'instances' level, page by page (limit/offset)."""
        results: list[Any] = []
        first: Any = None
        while True:
            offset = len(results)

            def run(client: Any, offset: int = offset) -> list[Any]:
                page = {"search_filters": filters, "limit": PAGE, "offset": offset}
                if level == "studies":
                    return list(client.search_for_studies(**page))
                if level == "series":
                    return list(client.search_for_series(study, **page))
                return list(client.search_for_instances(study, series, **page))

            items = self.call(f"QIDO-RS {level} search", run)
            if not items or (offset and items[0] == first):  # done, or a server that ignores offset
                return results
            first = first if offset else items[0]
            results.extend(items)
            if len(items) < PAGE:
                return results

    def series_metadata(self, study: str, series: str) -> list[dict[str, Any]] | None:
        """WADO-RS metadata of every instance of a series (DICOM JSON, headers only: no pixel data travels);
        None when the server does not offer series metadata (then the caller lists the instances by QIDO-RS)."""

        def run(client: Any) -> list[dict[str, Any]]:
            return list(client.retrieve_series_metadata(study, series))

        try:
            return self.call("WADO-RS series metadata", run)
        except DicomwebError as exc:
            if _status_of(exc.__cause__) in NO_METADATA_STATUS:
                return None
            raise

    def instance_bytes(self, study: str, series: str, sop: str, max_bytes: int) -> bytes:
        """WADO-RS retrieve of one instance in its stored transfer syntax, as Part 10 bytes."""
        from pydicom import dcmwrite

        def run(client: Any) -> bytes:
            dataset = client.retrieve_instance(study, series, sop, media_types=MEDIA_TYPES)
            buffer = io.BytesIO()
            dcmwrite(buffer, dataset, enforce_file_format=True)
            return buffer.getvalue()

        try:
            data = self.call("WADO-RS retrieve", run)
        except MedsearchError:
            raise
        except Exception as exc:  # the server sent something that is not a DICOM instance
            raise DecodeError(f"WADO-RS answer is not a readable DICOM instance: {type(exc).__name__}: {exc}") from exc
        if len(data) > max_bytes:
            raise TooLargeError(f"instance is larger than {max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
        return data


def retrieve_url(base: str | None, study: str | None, series: str | None, sop: str | None) -> str | None:
    """The WADO-RS URL a client can fetch the instance from, when a DICOMweb server is configured."""
    if not base or not (study and series and sop):
        return None
    return instance_url(base, study, series, sop)


def read_wado_uri(uri: str, settings: Settings) -> bytes:
    """Bytes of a pulled instance from its stored WADO-RS URL, only if it lies under MEDSEARCH_DICOMWEB_URL."""
    if not settings.dicomweb_url:
        raise NotFoundError("this image was pulled over DICOMweb: set MEDSEARCH_DICOMWEB_URL to render it")
    config = DicomwebConfig.from_settings(settings)
    uids = split_instance_url(config.url, uri)
    if uids is None:
        raise NotFoundError("this image's source is not under the configured MEDSEARCH_DICOMWEB_URL")
    return Dicomweb(config).instance_bytes(*uids, settings.max_file_bytes)


def read_by_uids(study: str, series: str, sop: str, settings: Settings) -> bytes:
    """An instance fetched from the configured DICOMweb server by its UIDs (C-STORE-received images)."""
    if not settings.dicomweb_url:
        raise NotFoundError(
            "this image was received over C-STORE and its rendering is not cached: set MEDSEARCH_DICOMWEB_URL "
            "to fetch it from the PACS"
        )
    config = DicomwebConfig.from_settings(settings)
    return Dicomweb(config).instance_bytes(study, series, sop, settings.max_file_bytes)
