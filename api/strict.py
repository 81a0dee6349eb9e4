"""Unknown query parameters and form fields are a 422 naming them, checked in one place for every API route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.query_model import declared_names


@dataclass(frozen=True)
class Declared:
    """The query parameter and form field names a route declares (form None: the route takes no form)."""

    query: frozenset[str]
    form: frozenset[str] | None


def _names(field: Any) -> list[str]:
    """A parameter's name, or the field names of a pydantic model given as Query() / Form()."""
    annotation = field.field_info.annotation
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    if is_model and isinstance(field.field_info, (Query, Form)):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return [field.alias]


# a route's dependencies never change: walked once per route, not on every request (routes are unhashable: by id,
# the route kept beside its answer so its id cannot be reused)
_DECLARED: dict[int, tuple[APIRoute, Declared]] = {}


def declared(route: APIRoute) -> Declared:
    """What `route` (and its dependencies) take from the query string and from a form body."""
    known = _DECLARED.get(id(route))
    if known is None or known[0] is not route:
        known = _DECLARED[id(route)] = (route, _walk(route))
    return known[1]


def _walk(route: APIRoute) -> Declared:
    query: list[str] = []
    form: list[str] = []
    takes_form = False
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        for field in dependant.query_params:
            query.extend(_names(field))
        query.extend(declared_names(dependant.call))  # a model read in one pass (api/query_model.py)
        for field in dependant.body_params:
            if isinstance(field.field_info, Form):  # File() is a Form() too
                takes_form = True
                form.extend(_names(field))
        pending.extend(dependant.dependencies)
    return Declared(frozenset(query), frozenset(form) if takes_form else None)


def unknown_errors(where: str, names: list[str], known: frozenset[str]) -> list[dict[str, Any]]:
    """Validation errors (as FastAPI's) for each of `names` that is not `known`, saying what the route takes."""
    takes = ", ".join(sorted(known)) or "none"
    return [
        {"type": "extra_forbidden", "loc": (where, name), "msg": f"unknown parameter (this route takes: {takes})"}
        for name in dict.fromkeys(names)
        if name not in known
    ]


async def reject_unknown_parameters(request: Request) -> None:
    """An app-wide dependency: a misspelt filter (`date_form`) is refused instead of silently ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return  # the page itself, static files and docs take what browsers send
    names = declared(route)
    errors = unknown_errors("query", list(request.query_params.keys()), names.query)
    content_type = request.headers.get("content-type", "")
    if names.form is not None and content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()  # already parsed (and size-limited) by FastAPI for this route: no second read
        errors += unknown_errors("form", list(form.keys()), names.form)
    if errors:
        raise RequestValidationError(errors)
