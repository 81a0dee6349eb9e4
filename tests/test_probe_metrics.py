"""Probe metrics: scikit-learn's AUC and accuracy against hand-computed values, and the cross-validation as stated."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.findings.training import (
    MIN_PER_CLASS,
    classification_metrics,
    cross_validated,
    fit_probe,
    probe_aucs,
)


def test_auc_and_accuracy_on_a_listed_example() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.10, 0.60, 0.35, 0.80, 0.70, 0.20])
    # AUC by hand: of the 3 x 3 (positive, negative) pairs, the positive scores higher in 8 (0.35 < 0.60 is the
    # one miss). Accuracy at 0.5: predictions 0 1 0 1 1 0 against 0 0 1 1 1 0: 4 of 6 right.
    auc, accuracy = classification_metrics(y, p)
    assert auc == pytest.approx(8 / 9, abs=1e-12)
    assert accuracy == pytest.approx(4 / 6, abs=1e-12)
    # a tie counts one half: positive 0.6 against negative 0.6
    auc, accuracy = classification_metrics(np.array([0, 1, 0, 1]), np.array([0.6, 0.6, 0.1, 0.9]))
    assert auc == pytest.approx((0.5 + 1 + 1 + 1) / 4, abs=1e-12)
    assert accuracy == pytest.approx(3 / 4, abs=1e-12)  # 0.6 >= 0.5 is called positive: the negative 0.6 is wrong


def test_cross_validation_is_out_of_fold_stratified_and_seeded() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    y = np.array([1] * 8 + [0] * 12)
    x[y == 1, 0] += 1.5  # a learnable direction
    out_of_fold, folds = cross_validated(x, y)
    assert folds == 5
    expected = np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(x, y):
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x[train], y[train])
        expected[test] = model.predict_proba(x[test])[:, 1]
    np.testing.assert_allclose(out_of_fold, expected, atol=1e-12)
    fitted = fit_probe(x, y)
    assert (fitted.positives, fitted.negatives, fitted.folds) == (8, 12, 5)
    assert fitted.auc == pytest.approx(classification_metrics(y, expected)[0])
    # folds shrink to the smallest class: 3 positives give 3-fold cross-validation
    assert cross_validated(x[:15], np.array([1] * 3 + [0] * 12))[1] == MIN_PER_CLASS == 3


def test_eval_probe_auc_is_one_vs_rest_per_label() -> None:
    rng = np.random.default_rng(3)
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 2
    x = rng.normal(size=(len(labels), 6)).astype(np.float32)
    found = probe_aucs(x, labels)
    assert found["c"] is None  # 2 images: too few for a probe
    for name in ("a", "b"):
        y = np.array([int(label == name) for label in labels])
        expected = classification_metrics(y, cross_validated(x, y)[0])[0]
        assert found[name] == pytest.approx(expected, abs=1e-12)
