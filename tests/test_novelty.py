"""morphocell.novelty: the novelty (out-of-distribution) score on real images of two labs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, pbc_subset

from morphocell.features.extractor import extract_batch, feature_names
from morphocell.novelty import NOVELTY_FEATURES, fit_novelty_reference, novelty_scores


def _features(paths):
    fams = ("shape", "color")
    return pd.DataFrame(extract_batch(paths, fams)[0], columns=feature_names(fams))


@pytest.fixture(scope="module")
def pbc(data_dir):
    rows = pbc_subset(12)
    return _features([p for p, _ in rows]), np.array([lab for _, lab in rows])


def test_training_images_score_low_and_another_labs_stain_high(pbc):
    X, y = pbc
    ref = fit_novelty_reference(X, y)
    assert ref["features"] == list(NOVELTY_FEATURES) and len(ref["classes"]) == 8
    _own, flag = novelty_scores(ref, X)
    assert flag.mean() <= 0.05  # the 99th percentile of the training scores
    # held-out PBC images of the same lab: mostly inside
    test_rows = pbc_subset(3, split="test")
    s_test, f_test = novelty_scores(ref, _features([p for p, _ in test_rows]))
    assert f_test.mean() <= 0.25
    # segwbc dataset1: another lab, rapid stain, yellowish background: mostly outside
    d1 = sorted((DATA / "segwbc" / "dataset1").glob("*_image.png"))[:20]
    s_d1, f_d1 = novelty_scores(ref, _features([str(p) for p in d1]))
    assert f_d1.mean() >= 0.5
    assert np.median(s_d1) > 2 * np.median(s_test)


def test_reference_needs_its_features_and_nan_rows_are_not_flagged(pbc):
    X, y = pbc
    assert fit_novelty_reference(X.drop(columns=["Cell_Shape_Area"]), y) is None
    ref = fit_novelty_reference(X, y)
    Xn = X.iloc[:2].copy()
    Xn.loc[:, list(NOVELTY_FEATURES)] = np.nan
    s, f = novelty_scores(ref, Xn)
    assert np.isnan(s).all() and not f.any()
