"""C-STORE listener: a pynetdicom Storage SCP that spools each instance durably before answering success."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from indexer.spool import Spool
from retrieval.imaging.sop_classes import storage_sop_classes

log = logging.getLogger(__name__)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700


def decodable_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pynetdicom knows that our pydicom + pylibjpeg install can decode."""
    from pydicom.pixels.decoders.base import get_decoder
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    usable = []
    for uid in ALL_TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                usable.append(uid)
        except NotImplementedError:
            continue
    return usable


def build_ae(ae_title: str, allow: Sequence[str] = ()) -> Any:
    """An AE accepting every storage SOP class `index` reads, retired ones included (decodable syntaxes), and
    C-ECHO; only `allow` callers if set. Non-image objects are accepted too: acknowledged, then skipped
    (structured reports: stored as their study's report)."""
    from pynetdicom import AE
    from pynetdicom.service_class import ServiceClass, StorageServiceClass
    from pynetdicom.sop_class import Verification, register_uid, uid_to_service_class  # type: ignore[attr-defined]

    ae = AE(ae_title=ae_title)
    syntaxes = decodable_transfer_syntaxes()
    for sop_class in storage_sop_classes():
        if uid_to_service_class(sop_class) is ServiceClass:  # retired: pynetdicom would abort its C-STORE
            register_uid(sop_class, "Storage_" + sop_class.replace(".", "_"), StorageServiceClass)
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification)
    if allow:
        ae.require_calling_aet = list(allow)  # others get A-ASSOCIATE-RJ "calling AE title not recognised"
    ae.maximum_pdu_size = 0  # no limit on what we accept per PDU
    return ae


def store_handler(spool: Spool) -> Any:
    """The C-STORE handler: spool (fsync) first, answer success only when the instance is on disk."""

    def handle(event: Any) -> int:
        try:
            data = event.encoded_dataset(include_meta=True)  # file meta + dataset exactly as received
            spool.put(data)  # named by the spool, never by the UIDs a sender chose
        except OSError as exc:
            log.error("could not spool a received instance: %s", exc.strerror or type(exc).__name__)
            return OUT_OF_RESOURCES
        except Exception as exc:
            log.error("could not spool a received instance: %s", type(exc).__name__)
            return OUT_OF_RESOURCES
        return SUCCESS

    return handle


def start_listener(spool: Spool, ae_title: str, host: str, port: int, allow: Sequence[str] = ()) -> Any:
    """Start the Storage SCP in background threads; returns the server (`.server_address`, `.shutdown()`)."""
    from pynetdicom import evt

    ae = build_ae(ae_title, allow)
    handlers = [(evt.EVT_C_STORE, store_handler(spool))]
    return ae.start_server((host, port), block=False, evt_handlers=handlers)
