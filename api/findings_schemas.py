"""Request and response models of the tag and probe routes (documented in OpenAPI)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema

from api.schemas import HitModel, StrictBody
from retrieval.findings.common import NAME
from retrieval.findings.tags import PROMPT_PATTERN
from retrieval.findings.training import MIN_PER_CLASS

NAME_PATTERN = f"^{NAME.pattern}$"
MAX_EXAMPLES = 10_000


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _unique(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("an image id is listed twice")
    return ids


Threshold = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_not_bool)]
ImageId = Annotated[int, Field(ge=1), BeforeValidator(_not_bool)]  # beyond int64: no such image (404), as in paths
Examples = Annotated[
    list[ImageId],
    AfterValidator(_unique),
    Field(min_length=MIN_PER_CLASS, max_length=MAX_EXAMPLES),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": MIN_PER_CLASS,
            "maxItems": MAX_EXAMPLES,
            "uniqueItems": True,
        }
    ),
]


class TagIn(StrictBody):
    """One tag of a vocabulary."""

    tag: str = Field(pattern=NAME_PATTERN, examples=["effusion"])
    prompt: str = Field(
        min_length=1, max_length=2000, pattern=PROMPT_PATTERN, examples=["a chest x-ray showing a pleural effusion"]
    )
    threshold: Annotated[Threshold, Field(description="Calibrated probability from which an image has the tag.")] = 0.5


class TagsApplyRequest(StrictBody):
    """A vocabulary to store and score every image against (tags of the same name are replaced)."""

    tags: list[TagIn] = Field(min_length=1, max_length=200, description="A tag given twice: the last one wins.")


class TagModel(BaseModel):
    """A stored tag and how many images have it."""

    tag: str
    prompt: str
    threshold: float
    images: int = Field(description="Images whose score reaches the threshold.")


class TagsApplyResponse(BaseModel):
    """What applying a vocabulary did."""

    tags: list[TagModel]
    images: int = Field(description="Images scored.")
    seconds: float


class ProbeTrainRequest(StrictBody):
    """Train a probe from image ids: liked images are positive, unliked ones negative."""

    name: str = Field(pattern=NAME_PATTERN, examples=["pneumothorax"])
    positive: Examples = Field(description="Ids of images that show the finding (at least 3).")
    negative: Examples = Field(description="Ids of images that do not (at least 3; none also positive).")


class ProbeModel(BaseModel):
    """A probe version with its cross-validated metrics."""

    name: str
    version: int
    positive: str = Field(description="What class 1 means ('1' when trained from ids or 0/1 labels).")
    cv_auc: float = Field(description="ROC AUC of the out-of-fold probabilities (stratified k-fold).")
    cv_accuracy: float = Field(description="Accuracy of the out-of-fold probabilities at 0.5.")
    positives: int
    negatives: int
    folds: int
    applied: bool = Field(description="Whether this version's probabilities are stored (filters and rank use them).")
    created: str


class ProbeApplyResponse(BaseModel):
    """The applied version and how many images it scored."""

    probe: ProbeModel
    images: int
    seconds: float


class ProbeRankResponse(BaseModel):
    """The images the applied probe finds most likely, outside its training examples; `score` is the probability."""

    probe: ProbeModel
    hits: list[HitModel]


class RemovedResponse(BaseModel):
    """How many things were removed."""

    removed: int
