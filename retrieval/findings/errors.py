"""Errors of tags and probes: too few examples, unknown names, a vocabulary or probe made with another model."""

from __future__ import annotations

from retrieval.errors import MedsearchError, NotFoundError


class TooFewExamplesError(MedsearchError):
    """A probe cannot be trained (or cross-validated) with this few examples of a class."""

    code = "too_few_examples"
    status = 400
    title = "Too few examples of a class"


class BadTrainingSetError(MedsearchError):
    """A probe's labels are unusable: unknown images, several classes without --positive, one class only."""

    code = "bad_training_set"
    status = 400
    title = "Unusable training labels"


class BadVocabularyError(MedsearchError):
    """A tag vocabulary file or body is malformed (no tag or prompt, a bad threshold, a tag twice)."""

    code = "bad_vocabulary"
    status = 400
    title = "Bad tag vocabulary"


class UnknownProbeError(NotFoundError):
    """No probe of that name is stored."""

    code = "unknown_probe"
    status = 404
    title = "No such probe"


class UnknownTagError(NotFoundError):
    """No tag of that name is stored."""

    code = "unknown_tag"
    status = 404
    title = "No such tag"


class ProbeNotAppliedError(MedsearchError):
    """A search or rank uses a probe whose probabilities were never written (`probe apply` first)."""

    code = "probe_not_applied"
    status = 409
    title = "Probe not applied yet"


class ConflictingLabelsError(MedsearchError):
    """An image is given both as a positive and as a negative example."""

    code = "conflicting_labels"
    status = 409
    title = "An image labelled both ways"


class OtherModelError(MedsearchError):
    """A probe or tag was made with another model than the collection's: its numbers would be garbage."""

    code = "other_model"
    status = 409
    title = "Made with another model"
