"""Tag routes: list the zero-shot tags, apply a vocabulary to every image, remove a tag."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.findings_schemas import NAME_PATTERN, RemovedResponse, TagModel, TagsApplyRequest, TagsApplyResponse
from api.state import ServiceState
from retrieval.errors import ModelLoadError
from retrieval.findings.tags import TagSpec, apply_tags, check_vocabulary, list_tags, remove_tags, unique_tags

router = APIRouter(prefix="/v1/tags", tags=["tags"])
TagName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]


def _tags(state: ServiceState) -> list[TagModel]:
    return [TagModel(**asdict(info)) for info in list_tags(state.collection)]


@router.get("", response_model=list[TagModel], summary="The zero-shot tags")
async def get_tags(state: FreshDep) -> list[TagModel]:
    """Every stored tag: its prompt, threshold and how many images have it."""
    return await run_in_threadpool(_tags, state)


def _apply(state: ServiceState, specs: list[TagSpec]) -> TagsApplyResponse:
    check_vocabulary(specs)
    if state.model_error:
        raise ModelLoadError(state.model_error)
    encoder = state.collection.load_encoder()
    # the model only embeds the prompts (one model call at a time, as queries); scoring runs beside searches
    vectors = state.collection.run_model(lambda: encoder.encode_texts([s.prompt for s in specs]))
    report = apply_tags(state.collection, specs, vectors=vectors)
    return TagsApplyResponse(tags=_tags(state), images=report.images, seconds=round(report.seconds, 3))


@router.post("/apply", response_model=TagsApplyResponse, summary="Apply a tag vocabulary to every image")
async def post_apply(body: TagsApplyRequest, state: FreshDep) -> TagsApplyResponse:
    """Embed each prompt, store the tags and score every image (in a worker thread); new images are then tagged
    as they are indexed."""
    specs = unique_tags([TagSpec(t.tag, t.prompt, t.threshold) for t in body.tags])
    return await run_in_threadpool(_apply, state, specs)


@router.delete("/{name}", response_model=RemovedResponse, summary="Remove a tag")
async def delete_tag(name: TagName, state: FreshDep) -> RemovedResponse:
    """Forget a tag and its scores."""
    return RemovedResponse(removed=await run_in_threadpool(remove_tags, state.collection, [name]))
