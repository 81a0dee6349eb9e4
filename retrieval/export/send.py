"""Send an SR to the PACS: C-STORE (pynetdicom) or STOW-RS (dicomweb-client), each with a study check and a timeout."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

from pydicom.dataset import Dataset

from retrieval.errors import MedsearchError, SettingsError
from retrieval.export.errors import ExportFailedError, ExportOffError, StudyNotInPacsError
from retrieval.settings import Settings

Route = Literal["cstore", "stow"]
ROUTES: tuple[Route, ...] = ("cstore", "stow")
# C-STORE statuses that mean "stored" (0xB000/0xB006/0xB007: stored with a warning)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class Target:
    """Where one route sends: `AET@host:port` for C-STORE, a base URL for STOW-RS."""

    route: Route
    address: str


@dataclass(frozen=True)
class AeAddress:
    """A DICOM application entity: title, host, port."""

    title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> AeAddress:
        """`AET@host:port`, refused with the expected form when it is not one."""
        title, at, rest = text.strip().partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and title and host and port.isdigit()) or len(title) > 16 or not 0 < int(port) < 65536:
            raise SettingsError(f"MEDSEARCH_EXPORT_AE={text!r} is not AET@host:port (e.g. ORTHANC@pacs.local:4242)")
        return cls(title, host.strip("[]"), int(port))


def targets(settings: Settings, via: Route | None = None) -> list[Target]:
    """The configured export routes (only `via` when given); none configured is a clear error."""
    configured: list[Target] = []
    if settings.export_ae and via in (None, "cstore"):
        AeAddress.parse(settings.export_ae)
        configured.append(Target("cstore", settings.export_ae))
    if settings.export_dicomweb and via in (None, "stow"):
        configured.append(Target("stow", settings.export_dicomweb.rstrip("/")))
    if not configured:
        which = {None: "", "cstore": " by C-STORE", "stow": " by STOW-RS"}[via]
        raise ExportOffError(
            f"SR export{which} is not configured: set MEDSEARCH_EXPORT_AE=AET@host:port (C-STORE) or "
            "MEDSEARCH_EXPORT_DICOMWEB=URL (STOW-RS)"
        )
    return configured


@contextmanager
def _quiet_pynetdicom() -> Iterator[None]:
    """pynetdicom logs a refused connection as ERROR lines of its own; our error says it once, clearly."""
    logger = logging.getLogger("pynetdicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _association(settings: Settings, address: AeAddress, contexts: list[str]) -> object:
    from pynetdicom import AE
    from pynetdicom.sop_class import ComprehensiveSRStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=settings.listen_ae_title)
    timeout = settings.export_timeout
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for context in contexts:
        ae.add_requested_context(ComprehensiveSRStorage if context == "store" else context)
    assoc = ae.associate(address.host, address.port, ae_title=address.title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer (down, or a timeout)"
        raise ExportFailedError(
            f"C-STORE to {address.title}@{address.host}:{address.port}: the PACS {why}; nothing was sent. "
            "Check MEDSEARCH_EXPORT_AE and that the PACS accepts our AE title "
            f"({settings.listen_ae_title}, MEDSEARCH_LISTEN_AE_TITLE); retrying is safe"
        )
    return assoc


def _cstore_has_study(settings: Settings, address: AeAddress, study_uid: str) -> bool:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    assoc = _association(settings, address, [StudyRootQueryRetrieveInformationModelFind])
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        found = False
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):  # type: ignore[attr-defined]
            if not status or "Status" not in status:
                raise ExportFailedError(
                    f"C-FIND to {address.title} (the study check): aborted, or no answer in "
                    f"{settings.export_timeout:g} s (MEDSEARCH_EXPORT_TIMEOUT); nothing was sent. Does the PACS "
                    f"answer C-FIND from our AE title {settings.listen_ae_title}? (add it to the PACS's known "
                    "modalities, or set MEDSEARCH_EXPORT_CHECK_STUDY=false)"
                )
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found = True
            elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                raise ExportFailedError(
                    f"C-FIND to {address.title} (the study check) failed with status 0x{status.Status:04X}; nothing "
                    "was sent. Let the PACS answer C-FIND from our AE, or set MEDSEARCH_EXPORT_CHECK_STUDY=false"
                )
        return found
    finally:
        assoc.release()  # type: ignore[attr-defined]


def _cstore(settings: Settings, address: AeAddress, sr: Dataset) -> None:
    assoc = _association(settings, address, ["store"])
    try:
        status = assoc.send_c_store(sr)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    if not status or "Status" not in status:
        raise ExportFailedError(
            f"C-STORE to {address.title}: no answer in {settings.export_timeout:g} s (MEDSEARCH_EXPORT_TIMEOUT), or "
            "the association was aborted; the PACS may or may not have stored the SR: retrying sends the same SR "
            "instance, which it keeps once"
        )
    if status.Status not in STORED:
        raise ExportFailedError(
            f"C-STORE to {address.title}: the PACS refused the SR (status 0x{status.Status:04X}); nothing was stored"
        )


def _dicomweb(settings: Settings, url: str) -> object:
    from retrieval.sources.dicomweb import Dicomweb, DicomwebConfig

    config = DicomwebConfig.from_settings(settings, url)
    return Dicomweb(replace(config, timeout=settings.export_timeout))


def _failed(target: Target, exc: MedsearchError, sent: str) -> ExportFailedError:
    if isinstance(exc, ExportFailedError):
        return exc
    return ExportFailedError(f"STOW-RS to {target.address}: {exc}; {sent}")


def check_study(settings: Settings, target: Target, study_uid: str) -> None:
    """Refuse when the PACS at `target` does not have the query's study (MEDSEARCH_EXPORT_CHECK_STUDY)."""
    if not settings.export_check_study:
        return
    if target.route == "cstore":
        with _quiet_pynetdicom():
            found = _cstore_has_study(settings, AeAddress.parse(target.address), study_uid)
    else:
        client = _dicomweb(settings, target.address)
        try:
            found = bool(client.search("studies", {"StudyInstanceUID": study_uid}))  # type: ignore[attr-defined]
        except MedsearchError as exc:
            raise _failed(target, exc, "nothing was sent") from exc
    if not found:
        raise StudyNotInPacsError(
            f"the PACS at {target.address} has no study {study_uid}: the SR belongs in the query's study. Send the "
            "study to the PACS first, or set MEDSEARCH_EXPORT_CHECK_STUDY=false to send the SR anyway"
        )


def send(settings: Settings, target: Target, sr: Dataset) -> None:
    """Store the SR at `target`; an error says whether anything may have been stored and that a retry is safe."""
    if target.route == "cstore":
        with _quiet_pynetdicom():
            _cstore(settings, AeAddress.parse(target.address), sr)
        return
    client = _dicomweb(settings, target.address)
    try:
        client.call("STOW-RS store", lambda c: c.store_instances([sr]))  # type: ignore[attr-defined]
    except MedsearchError as exc:
        raise _failed(target, exc, "retrying sends the same SR instance, which the PACS keeps once") from exc
