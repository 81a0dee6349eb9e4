"""Fitting a probe: scikit-learn logistic regression on frozen vectors, with stratified k-fold cross-validation.

The model is `LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)` (L2; classes weighted so a
few positives among many negatives still count). The reported AUC and accuracy are computed once over the
out-of-fold probabilities of `StratifiedKFold(n_splits=min(5, smallest class), shuffle=True, random_state=0)`
(every example is predicted by a model that did not see it); accuracy thresholds them at 0.5. The stored
probe is then fitted on all examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retrieval.findings.errors import BadTrainingSetError, TooFewExamplesError

MIN_PER_CLASS = 3
MAX_FOLDS = 5
SEED = 0


@dataclass
class FittedProbe:
    """The coefficients of the final model and its cross-validated metrics."""

    coef: npt.NDArray[np.float64]
    intercept: float
    auc: float
    accuracy: float
    positives: int
    negatives: int
    folds: int

    def metrics(self) -> dict[str, object]:
        return {
            "cv_auc": self.auc,
            "cv_accuracy": self.accuracy,
            "positives": self.positives,
            "negatives": self.negatives,
            "folds": self.folds,
        }


def classification_metrics(y: npt.NDArray[np.int64], probabilities: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(ROC AUC, accuracy at 0.5) of probabilities for binary labels, by scikit-learn."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    auc = float(roc_auc_score(y, probabilities))
    accuracy = float(accuracy_score(y, (np.asarray(probabilities) >= 0.5).astype(np.int64)))
    return auc, accuracy


def new_model() -> object:
    """The probe's estimator (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)


def check_counts(y: npt.NDArray[np.int64]) -> tuple[int, int]:
    """(positives, negatives), refused when either class has fewer than MIN_PER_CLASS examples."""
    if len(y) == 0:
        raise BadTrainingSetError("no labelled examples were given")
    positives = int(np.sum(y == 1))
    negatives = int(np.sum(y == 0))
    if min(positives, negatives) < MIN_PER_CLASS:
        raise TooFewExamplesError(
            f"a probe needs at least {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative examples (to fit and "
            f"cross-validate it); got {positives} positive and {negatives} negative: label more images"
        )
    return positives, negatives


def cross_validated(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], int]:
    """Out-of-fold probabilities of the positive class, and the number of folds used."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = min(MAX_FOLDS, int(np.sum(y == 1)), int(np.sum(y == 0)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    predicted = cross_val_predict(new_model(), x, y, cv=splitter, method="predict_proba")  # type: ignore[arg-type]
    return np.asarray(predicted[:, 1], dtype=np.float64), folds


def fit_probe(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> FittedProbe:
    """Cross-validate, then fit on every example."""
    positives, negatives = check_counts(y)
    out_of_fold, folds = cross_validated(x, y)
    auc, accuracy = classification_metrics(y, out_of_fold)
    model = new_model()
    model.fit(x, y)  # type: ignore[attr-defined]
    coef = np.asarray(model.coef_[0], dtype=np.float64)  # type: ignore[attr-defined]
    intercept = float(model.intercept_[0])  # type: ignore[attr-defined]
    return FittedProbe(coef, intercept, auc, accuracy, positives, negatives, folds)


def probe_aucs(x: npt.NDArray[np.float32], labels: list[str]) -> dict[str, float | None]:
    """Per label, the cross-validated ROC AUC of a probe for that label against all the others (one vs rest),
    as `fit_probe` reports it; None when the label or the rest has fewer than MIN_PER_CLASS images."""
    names = sorted(set(labels))
    found: dict[str, float | None] = {}
    for name in names:
        y = np.asarray([int(label == name) for label in labels], dtype=np.int64)
        if min(int(y.sum()), int(len(y) - y.sum())) < MIN_PER_CLASS:
            found[name] = None
            continue
        out_of_fold, _ = cross_validated(x, y)
        found[name] = classification_metrics(y, out_of_fold)[0]
    return found
