"""The OpenAPI description as the API behaves: each route's error statuses as {code, message}, bearer keys."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.config import ServiceSettings
from api.keys import PUBLIC_V1, needs_key
from api.schemas import ErrorModel

TITLES = {
    400: "Bad request: the query cannot be run as given",
    401: "Missing or unknown API key (send 'Authorization: Bearer <key>')",
    404: "No such image (or its source is gone), tag or probe",
    409: "Conflict: a window preset for a non-CT image; a probe not applied yet or made with another model; "
    "an image both positive and negative; an SR export for a study the PACS does not have; a region outside the image",
    413: "Request or source file larger than the configured limit",
    415: "The file is not an image we can decode",
    422: "A parameter or body field is invalid (`validation_error`)",
    501: "Summaries are turned off on this server",
    502: "The PACS or the summary backend answered wrongly, or the PACS refused or did not answer an SR export",
    503: "Not ready: the model is unavailable or loading, or the index is busy",
    504: "The summary backend timed out",
}
_PNG = (404, 413, 415, 422, 502)
_SUMMARY = (400, 404, 413, 415, 422, 501, 502, 503, 504)
# Every route and the error statuses it can answer (besides 401, added when keys are configured); a test checks
# that each route of the app is listed here, so a new route cannot go undocumented.
STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/search/text"): (400, 404, 409, 422, 503),  # 404/409: an unknown tag or probe, a probe not applied
    ("post", "/v1/search/image"): (400, 404, 409, 413, 415, 422, 503),
    ("post", "/v1/export/sr"): (400, 404, 409, 413, 415, 422, 502, 503),
    ("post", "/v1/images/{image_id}/export/sr"): (400, 404, 409, 413, 415, 422, 502, 503),
    ("post", "/v1/search/feedback"): (
        400,
        404,
        409,
        422,
        503,
    ),  # 404 an unknown marked or base id, 503 text needs the model
    ("get", "/v1/images/{image_id}"): (404, 422),
    ("get", "/v1/images/by-sop"): (404, 422),  # 404: the SOP Instance UID (or that frame) is not indexed
    ("get", "/v1/images/{image_id}/thumbnail"): _PNG,
    ("get", "/v1/images/{image_id}/preview"): (400, 409, *_PNG),  # 400 unknown preset, 409 not a CT DICOM
    ("get", "/v1/images/{image_id}/view"): (400, 409, *_PNG),  # 400 no such frame, 409 W/L on a colour/raster
    ("get", "/v1/render/windows"): (),
    ("post", "/v1/render"): (400, 409, 413, 415, 422),
    ("get", "/v1/images/{image_id}/similar"): (400, 404, 409, 413, 415, 422, 502, 503),  # roi: re-read, model
    ("get", "/v1/series/{uid}/similar"): (400, 404, 409, 422),  # 404: no indexed series with that UID
    ("get", "/v1/studies/{uid}/similar"): (400, 404, 409, 422),
    ("get", "/v1/studies/{uid}/reports"): (404, 422),  # 404: no report stored for that study
    ("post", "/v1/search/case"): (400, 404, 409, 413, 415, 422, 503),
    ("get", "/v1/stats"): (),
    ("get", "/v1/summaries/status"): (),
    ("post", "/v1/summaries"): _SUMMARY,
    ("post", "/v1/summaries/stream"): _SUMMARY,
    ("get", "/v1/vocabulary"): (),
    ("get", "/v1/tags"): (),
    ("post", "/v1/tags/apply"): (400, 422, 503),
    ("delete", "/v1/tags/{name}"): (404, 422),
    ("get", "/v1/probes"): (),
    ("post", "/v1/probes/train"): (400, 404, 409, 422),
    ("post", "/v1/probes/{name}/apply"): (404, 409, 422),
    ("get", "/v1/probes/{name}/rank"): (404, 409, 422),
    ("delete", "/v1/probes/{name}"): (404, 422),
    ("get", "/healthz"): (),
    ("get", "/readyz"): (503,),
    ("get", "/metrics"): (),
}
__all__ = ["PUBLIC_V1", "STATUSES", "describe", "install_openapi"]
ERROR_REF = {"$ref": "#/components/schemas/ErrorModel"}


def error_responses(statuses: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the {code, message} body."""
    return {
        str(s): {"description": TITLES[s], "content": {"application/json": {"schema": ERROR_REF}}} for s in statuses
    }


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _strict_forms(spec: dict[str, Any]) -> None:
    """Form bodies as the API checks them: no fields beyond the declared ones (api/strict.py answers 422), and every
    uploaded file has at least one byte (an empty one is a 422 too). JSON bodies say so from their models."""
    components = spec.get("components", {}).get("schemas", {})
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                body = media.get("schema", {})
                if "$ref" in body:
                    body = components[body["$ref"].rsplit("/", 1)[1]]
                if media_type not in FORMS:
                    continue
                body["additionalProperties"] = False
                for prop in body.get("properties", {}).values():
                    if prop.get("format") == "binary" or "contentMediaType" in prop:
                        prop["minLength"] = 1
                    items = prop.get("items", {})
                    if prop.get("type") == "array" and (items.get("format") == "binary" or "contentMediaType" in items):
                        prop["minItems"], items["minLength"] = 1, 1  # several files (a case): at least one


def describe(app: FastAPI, settings: ServiceSettings) -> dict[str, Any]:
    """FastAPI's schema, corrected: real error statuses and bodies, and the bearer scheme when keys are set."""
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    keyed = bool(settings.key_ids_by_hash())
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # our 422 body is {code, message} like any error
        schemas.pop(name, None)
    schemas["ErrorModel"] = ErrorModel.model_json_schema()
    _strict_forms(spec)
    if keyed:
        spec["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`medsearch key new`)."}
        }
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = list(STATUSES.get((method, path), ()))
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if "requestBody" in operation and 413 not in statuses:
                statuses.append(413)  # the body limit applies to every request
            if keyed and needs_key(method, path, settings):
                statuses.append(401)
                operation["security"] = [{"bearer": []}]
            responses.update(error_responses(tuple(sorted(statuses))))
    return spec


def install_openapi(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve the corrected description at /openapi.json (built once, on first request)."""

    def cached() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, settings)
        return app.openapi_schema

    setattr(app, "openapi", cached)  # noqa: B010 - FastAPI's documented way to replace the schema builder
