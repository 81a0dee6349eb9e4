"""Probe routes: list, train from image ids, apply to every image, rank the archive, remove."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.findings_schemas import (
    NAME_PATTERN,
    ProbeApplyResponse,
    ProbeModel,
    ProbeRankResponse,
    ProbeTrainRequest,
    RemovedResponse,
)
from api.state import ServiceState
from api.views import hit_model
from retrieval.findings.probes import (
    ProbeInfo,
    apply_probe,
    list_probes,
    rank_probe,
    remove_probe,
    train_probe,
    training_set_from_ids,
)
from retrieval.query import MAX_K, Hit

router = APIRouter(prefix="/v1/probes", tags=["probes"])
ProbeName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]


def _model(info: ProbeInfo) -> ProbeModel:
    return ProbeModel(**asdict(info))


@router.get("", response_model=list[ProbeModel], summary="The probes")
async def get_probes(state: FreshDep) -> list[ProbeModel]:
    """Every stored probe version with its cross-validated metrics."""
    return [_model(i) for i in await run_in_threadpool(list_probes, state.collection)]


@router.post("/train", response_model=ProbeModel, summary="Train a probe from image ids")
async def post_train(body: ProbeTrainRequest, state: FreshDep) -> ProbeModel:
    """Fit a logistic regression on the stored vectors of the positive and negative images and report its
    cross-validated ROC AUC and accuracy; stored as the next version of `name`, not applied yet."""

    def train() -> ProbeInfo:
        return train_probe(state.collection, body.name, training_set_from_ids(body.positive, body.negative))

    return _model(await run_in_threadpool(train))


@router.post("/{name}/apply", response_model=ProbeApplyResponse, summary="Apply a probe to every image")
async def post_apply(name: ProbeName, state: FreshDep) -> ProbeApplyResponse:
    """Store the newest version's probability for every image (in a worker thread); new images are scored as
    they are indexed. Filters (`probe`, `min_prob`) and rank use the applied version."""
    info, report = await run_in_threadpool(apply_probe, state.collection, name)
    return ProbeApplyResponse(probe=_model(info), images=report.images, seconds=round(report.seconds, 3))


def _rank(state: ServiceState, name: str, k: int) -> ProbeRankResponse:
    info, ranked = rank_probe(state.collection, name, k)
    template, dicomweb = state.settings.viewer_url_template, state.settings.dicomweb_url
    hits = [Hit(rank=r, image=img, score=p, probes={name: p}) for r, (img, p) in enumerate(ranked, start=1)]
    return ProbeRankResponse(probe=_model(info), hits=[hit_model(h, template, dicomweb) for h in hits])


@router.get("/{name}/rank", response_model=ProbeRankResponse, summary="The images a probe finds most likely")
async def get_rank(
    name: ProbeName, state: FreshDep, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10
) -> ProbeRankResponse:
    """The k images most likely positive under the applied probe, leaving out its training examples ('find more
    of these in the archive'); each hit's score is its probability."""
    return await run_in_threadpool(_rank, state, name, k)


@router.delete("/{name}", response_model=RemovedResponse, summary="Remove a probe")
async def delete_probe(name: ProbeName, state: FreshDep) -> RemovedResponse:
    """Forget every version of a probe and its probabilities."""
    return RemovedResponse(removed=await run_in_threadpool(remove_probe, state.collection, name))
