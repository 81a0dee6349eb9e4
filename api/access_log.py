"""The service's logs: uvicorn's access log without query strings (filter values typed by users may carry patient
identifiers) and the audit log as one bare JSON object per line."""

from __future__ import annotations

import copy
import logging
from typing import Any


class DropQueryString(logging.Filter):
    """Rewrites the request path of each access line to leave out everything after '?'."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query omitted]", *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with the filter on its access handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["drop_query"] = {"()": DropQueryString}
    config["handlers"]["access"].setdefault("filters", []).append("drop_query")
    return config


def configure_service_logs() -> None:
    """medsearch's INFO lines on, the audit log as bare JSON lines for log shippers (once per process: `serve`
    itself, or each worker process of `serve --workers N`)."""
    logging.getLogger("medsearch").setLevel(logging.INFO)
    audit = logging.getLogger("medsearch.audit")
    if any(getattr(h, "medsearch_audit", False) for h in audit.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.medsearch_audit = True  # type: ignore[attr-defined]
    audit.addHandler(handler)
    audit.propagate = False
