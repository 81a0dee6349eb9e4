"""Turn store rows and hits into response models (viewer links included)."""

from __future__ import annotations

from string import Formatter

from pydicom.uid import UID

from api.schemas import HitModel, ImageModel
from retrieval.query import Hit
from retrieval.sources.dicomweb import retrieve_url
from retrieval.store.models import Image

_FIELDS = {"study_instance_uid", "series_instance_uid", "sop_instance_uid", "frame"}


def viewer_url(template: str | None, image: Image) -> str | None:
    """The configured viewer link for an image, or None (unknown placeholders are refused at start)."""
    if not template or not image.study_instance_uid:
        return None
    values = {
        "study_instance_uid": image.study_instance_uid or "",
        "series_instance_uid": image.series_instance_uid or "",
        "sop_instance_uid": image.sop_instance_uid or "",
        "frame": image.frame,
    }
    return template.format(**values)


def check_template(template: str | None) -> None:
    """Fail early on a viewer template with placeholders we cannot fill."""
    if template:
        names = {name for _, name, _, _ in Formatter().parse(template) if name}
        unknown = names - _FIELDS
        if unknown:
            raise ValueError(f"viewer URL template has unknown placeholders {sorted(unknown)}; use {sorted(_FIELDS)}")


def _uid_title(uid: str | None) -> str | None:
    """pydicom's name for a registered UID (a transfer syntax), or None when it has none."""
    if not uid:
        return None
    name = UID(uid).name
    return name if name and name != uid else None


def _retrieve_url(dicomweb_url: str | None, image: Image) -> str | None:
    return retrieve_url(dicomweb_url, image.study_instance_uid, image.series_instance_uid, image.sop_instance_uid)


def hit_data(hit: Hit, template: str | None, dicomweb_url: str | None = None) -> dict[str, object]:
    """A search hit for the API as plain data (what `HitModel` validates): a search answer validates all its hits
    in one pass instead of one model construction each."""
    data = hit.as_dict()
    image_id = hit.image.id
    data["thumbnail_url"] = f"/v1/images/{image_id}/thumbnail"
    data["preview_url"] = f"/v1/images/{image_id}/preview"
    data["viewer_url"] = viewer_url(template, hit.image)
    data["retrieve_url"] = _retrieve_url(dicomweb_url, hit.image)
    return data


def hit_model(hit: Hit, template: str | None, dicomweb_url: str | None = None) -> HitModel:
    """A search hit for the API."""
    return HitModel.model_validate(hit_data(hit, template, dicomweb_url))


def image_model(image: Image, template: str | None, dicomweb_url: str | None = None) -> ImageModel:
    """An image's metadata for the API."""
    return ImageModel(
        id=image.id,
        kind=image.kind,
        sop_instance_uid=image.sop_instance_uid,
        sop_class_uid=image.sop_class_uid,
        study_instance_uid=image.study_instance_uid,
        series_instance_uid=image.series_instance_uid,
        frame=image.frame,
        number_of_frames=image.number_of_frames,
        modality=image.modality,
        body_part=image.body_part,
        view_position=image.view_position,
        study_date=image.study_date.isoformat() if image.study_date else None,
        sex=image.sex,
        age=image.age,
        manufacturer=image.manufacturer,
        rows=image.rows,
        columns=image.columns,
        photometric=image.photometric,
        transfer_syntax=image.transfer_syntax,
        transfer_syntax_title=_uid_title(image.transfer_syntax),
        window=image.window,
        label=image.label,
        report=image.report,
        source=image.source_uri,
        indexed_at=image.indexed_at.isoformat(),
        viewer_url=viewer_url(template, image),
        retrieve_url=_retrieve_url(dicomweb_url, image),
    )
