"""StackedCellClassifier: the scikit-learn contract, fusion, determinism, explanations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from morphocell import FeatureError, StackedCellClassifier
from morphocell.ensembles import DEEP, HANDCRAFTED, BaseLearner, select_columns


def small_learners():
    """The three kinds with few trees: the same code paths as the defaults, fast enough to
    run the ~50 scikit-learn estimator checks (each fits the stack several times)."""
    return [("rf", BaseLearner("rf", params={"n_estimators": 6})),
            ("svc", BaseLearner("svc")),
            ("xgb", BaseLearner("xgb", params={"n_estimators": 6, "max_depth": 3}))]


# scikit-learn's own checks. No check is expected to fail (expected_failed_checks is empty).
# BaseLearner is checked for its XGBoost kind (custom label encoding, sample weights and
# JSON-booster pickling); its RF and SVC kinds are exercised through the stack's checks.
@parametrize_with_checks([StackedCellClassifier(estimators=small_learners(), cv=2,
                                                random_state=0),
                          BaseLearner("xgb", params={"n_estimators": 5}, random_state=0)],
                         expected_failed_checks=lambda est: {})
@pytest.mark.slow
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=240, n_features=12, n_informative=4, classes=("basophil", "ig", "neutrophil"),
          seed=0):
    X, y = make_classification(n, n_features, n_informative=n_informative, n_redundant=0,
                               n_repeated=0, n_classes=len(classes), n_clusters_per_class=1,
                               shuffle=False, class_sep=1.5, random_state=seed)
    return X, np.asarray(classes, dtype=object)[y]


def test_fitted_state_ends_in_an_underscore():
    """Everything fit sets (public or private) ends in ``_``; predict_proba sets nothing."""
    X, y = _data()
    for est in (StackedCellClassifier(estimators=small_learners(), cv=2, random_state=0),
                *(learner for _, learner in small_learners())):
        params = set(vars(est))
        est.fit(X, y)
        added = set(vars(est)) - params
        assert added and all(k.endswith("_") for k in added), sorted(added)
        before = {k: id(v) for k, v in vars(est).items()}
        est.predict_proba(X[:5])
        assert {k: id(v) for k, v in vars(est).items()} == before


def test_string_labels_nan_and_probabilities():
    X, y = _data()
    X = X.copy()
    X[::5, 0] = np.nan        # features of an empty region are NaN by design
    X[:, 7] = np.nan          # a column that is always NaN
    clf = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0).fit(X, y)
    assert list(clf.classes_) == ["basophil", "ig", "neutrophil"]
    p = clf.predict_proba(X)
    assert p.shape == (len(y), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert (clf.predict(X) == y).mean() > 0.9
    assert set(clf.cv_scores_) == {"rf", "svc", "xgb", "stack"}
    assert all(0.5 < s["accuracy"] <= 1 for s in clf.cv_scores_.values())
    # the stack's own out-of-fold probabilities: what its CV score is computed from
    oof = clf.oof_proba_
    assert oof.shape == (len(y), 3)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-9)
    assert clf.cv_scores_["stack"]["accuracy"] == (clf.classes_[oof.argmax(1)] == y).mean()
    # out of fold, not in-sample: less sure of the training rows than the fitted stack is
    assert oof.max(axis=1).mean() < p.max(axis=1).mean()


def test_final_estimator_without_probabilities_is_refused_before_fitting():
    from sklearn.svm import LinearSVC

    X, y = _data()
    clf = StackedCellClassifier(estimators=small_learners(), final_estimator=LinearSVC(), cv=3)
    with pytest.raises(ValueError, match="no predict_proba"):
        clf.fit(X, y)
    assert not hasattr(clf, "learners_")


def test_out_of_fold_meta_features_are_honest():
    """The meta-learner is fitted on out-of-fold probabilities: on pure noise labels the
    out-of-fold accuracy of every learner stays near chance although in-sample RF is ~100%."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = rng.choice(["a", "b", "c"], size=300)
    clf = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0).fit(X, y)
    for name, s in clf.cv_scores_.items():
        assert s["accuracy"] < 0.5, name
    # ... whereas the refitted random forest memorises the noise in-sample
    rf = clf.learners_[0][1]
    assert (clf.classes_[rf.predict(X)] == y).mean() > 0.9


def test_groups_keep_copies_in_their_originals_fold():
    """Augmented copies (here: exact twins) of noise samples: without ``groups`` a twin sits
    in the training part of its sibling's fold and the out-of-fold scores leak to near 100%;
    with ``groups`` both stay in one fold and the scores fall back to chance."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 6))
    y = rng.choice(["a", "b", "c"], size=150)
    X2, y2 = np.vstack([X, X + 1e-9]), np.concatenate([y, y])
    groups = np.concatenate([np.arange(150), np.arange(150)])
    leaky = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0).fit(X2, y2)
    honest = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0).fit(
        X2, y2, groups=groups)
    assert leaky.cv_scores_["rf"]["accuracy"] > 0.6
    for name, sc in honest.cv_scores_.items():
        assert sc["accuracy"] < 0.5, name
    with pytest.raises(ValueError, match="one entry per sample"):
        StackedCellClassifier(estimators=small_learners(), cv=3).fit(X2, y2, groups=groups[:9])


def test_groups_keep_copies_together_in_svc_calibration():
    """The SVC's temperature is fitted on its own inner folds: without ``groups`` a twin's
    sibling trains the SVC that scores it, the fold looks separable and the temperature makes
    noise look confident; with ``groups`` no group spans an inner fold's two parts and the
    probabilities of noise stay near 1/3."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 6))
    y = rng.choice(["a", "b", "c"], size=150)
    X2, y2 = np.vstack([X, X + 1e-9]), np.concatenate([y, y])
    groups = np.concatenate([np.arange(150), np.arange(150)])
    # the default kernel and scikit-learn's sharper "scale" gamma (factor 1), which memorises
    # the noise more and so leaks more
    for factor, leak in ((None, 0.5), (1.0, 0.6)):
        params = None if factor is None else {"gamma_factor": factor}
        leaky = BaseLearner("svc", params=params, random_state=0).fit(X2, y2)
        honest = BaseLearner("svc", params=params, random_state=0).fit(X2, y2, groups=groups)
        for tr, te in honest.model_[-1].cv:
            assert not set(groups[tr]) & set(groups[te])
        assert leaky.predict_proba(X2).max(axis=1).mean() > leak
        assert honest.predict_proba(X2).max(axis=1).mean() < 0.4
    # singleton groups change nothing: the same folds as without groups
    single = BaseLearner("svc", random_state=0).fit(X, y, groups=np.arange(150))
    plain = BaseLearner("svc", random_state=0).fit(X, y)
    np.testing.assert_array_equal(single.predict_proba(X), plain.predict_proba(X))
    with pytest.raises(ValueError, match="one entry per sample"):
        BaseLearner("svc").fit(X2, y2, groups=groups[:9])


def test_svc_gamma_is_the_factor_times_scikit_learns_scale():
    """gamma = gamma_factor / (n_features * var) of the imputed, standardised data (scikit-learn's
    "scale" rule, computed here independently); factor 1 leaves "scale" to scikit-learn."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    X, y = _data(n_features=7)
    X[::9, 2] = np.nan
    Xs = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(X))
    svc = BaseLearner("svc", random_state=0).fit(X, y).model_[-1].estimator
    assert svc.gamma == pytest.approx(0.35 / (7 * Xs.var()), rel=1e-12)
    assert BaseLearner("svc", params={"gamma_factor": 1.0}).fit(X, y).model_[-1].estimator.gamma \
        == "scale"
    auto = BaseLearner("svc", params={"gamma": "auto", "gamma_factor": 0.5}).fit(X, y)
    assert auto.model_[-1].estimator.gamma == pytest.approx(0.5 / 7)


@pytest.mark.slow
def test_deterministic_with_random_state():
    X, y = _data()
    a = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=7).fit(X, y)
    b = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=7).fit(X, y)
    c = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.cv_scores_ == b.cv_scores_
    # the parallel path (learner x fold jobs in 2 processes) gives the very same model
    p = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=7,
                              n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), p.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_feature_importances_find_informative_columns():
    # shuffle=False: the first 4 columns are the informative ones, the rest pure noise
    X, y = _data(n_features=12, n_informative=4)
    clf = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0).fit(X, y)
    imp = clf.feature_importances_
    assert imp.shape == (12,) and np.isclose(imp.sum(), 1.0) and (imp >= 0).all()
    assert set(np.argsort(-imp)[:4]) == {0, 1, 2, 3}
    gain = clf.class_importances()
    assert list(gain.index) == list(clf.classes_)
    np.testing.assert_allclose(gain.sum(axis=1), 1.0)


@pytest.mark.slow
def test_explain_permutation_importance():
    X, y = _data(n_features=8, n_informative=3)
    cols = [f"Cell_Shape_F{i}" for i in range(8)]
    Xdf = pd.DataFrame(X, columns=cols)
    clf = StackedCellClassifier(estimators=small_learners(), cv=3, random_state=0)
    clf.fit(Xdf.iloc[::2], y[::2])
    ex = clf.explain(Xdf.iloc[1::2], y[1::2], top=3, n_repeats=3)
    assert set(ex["scope"]) == {"all", "basophil", "ig", "neutrophil"}
    top_all = ex[ex["scope"] == "all"]
    assert len(top_all) == 3
    assert top_all["importance_mean"].is_monotonic_decreasing
    # the most important feature overall is an informative one (columns 0..2)
    assert top_all["feature"].iloc[0] in cols[:3]
    # a pure-noise column has (near) zero importance
    noise = clf.explain(Xdf.iloc[1::2], y[1::2], top=8, n_repeats=3, per_class=False)
    assert noise.set_index("feature").loc["Cell_Shape_F7", "importance_mean"] < 0.05


def test_late_fusion_groups_by_regex_and_prefix():
    X, y = _data(n_features=10, n_informative=4)
    cols = ([f"Nucleus_Shape_F{i}" for i in range(5)]
            + [f"Cell_Embedding_Cnn_{i:04d}" for i in range(5)])
    Xdf = pd.DataFrame(X, columns=cols)
    groups = {"handcrafted": HANDCRAFTED, "deep": "Cell_Embedding_"}
    clf = StackedCellClassifier(estimators=small_learners()[:2], cv=3, feature_groups=groups,
                                random_state=0).fit(Xdf, y)
    names = [n for n, _, _ in clf.learners_]
    assert names == ["rf_handcrafted", "svc_handcrafted", "rf_deep", "svc_deep"]
    assert [list(idx) for _, _, idx in clf.learners_] == [[0, 1, 2, 3, 4]] * 2 + [
        [5, 6, 7, 8, 9]] * 2
    # each learner saw only its group's columns
    assert all(est.n_features_in_ == 5 for _, est, _ in clf.learners_)
    assert clf.feature_importances_.shape == (10,)
    assert list(select_columns(cols, DEEP)) == [5, 6, 7, 8, 9]
    with pytest.raises(FeatureError, match="selects no column"):
        StackedCellClassifier(feature_groups={"x": "Nope_"}).fit(Xdf, y)


@pytest.mark.slow
def test_rows_missing_a_whole_group_train_only_the_other_groups_learners():
    """Extra rows whose "deep" columns are all NaN (domain copies of a fused model) train the
    hand-crafted learners only: the deep learners and the meta-learner are fitted on the
    complete rows, exactly as without the extra rows."""
    X, y = _data(n_features=10, n_informative=4)
    cols = ([f"Nucleus_Shape_F{i}" for i in range(5)]
            + [f"Cell_Embedding_CnnProba_{i:02d}" for i in range(5)])
    base = pd.DataFrame(X, columns=cols)
    rng = np.random.default_rng(0)
    src = rng.choice(len(base), size=40, replace=False)
    extra = base.iloc[src].copy().reset_index(drop=True)
    extra.iloc[:, :5] += rng.normal(scale=0.5, size=(40, 5))   # "another stain"
    extra.iloc[:, 5:] = np.nan                                  # no deep columns
    table = pd.concat([base, extra], ignore_index=True)
    y2 = np.concatenate([y, y[src]])
    groups = np.concatenate([np.arange(len(base)), src])
    fg = {"handcrafted": HANDCRAFTED, "deep": "Cell_Embedding_"}
    kw = dict(estimators=small_learners()[:2], cv=3, feature_groups=fg, random_state=0)
    ref = StackedCellClassifier(**kw).fit(base, y, groups=np.arange(len(base)))
    clf = StackedCellClassifier(**kw).fit(table, y2, groups=groups)
    # the deep learners never saw the extra rows: the same fitted models as without them
    for name in ("rf_deep", "svc_deep"):
        a = dict((n, e) for n, e, _ in ref.learners_)[name]
        b = dict((n, e) for n, e, _ in clf.learners_)[name]
        np.testing.assert_array_equal(a.predict_proba(base.iloc[:, 5:].to_numpy()),
                                      b.predict_proba(base.iloc[:, 5:].to_numpy()))
    # the hand-crafted ones did
    a = dict((n, e) for n, e, _ in ref.learners_)["rf_handcrafted"]
    b = dict((n, e) for n, e, _ in clf.learners_)["rf_handcrafted"]
    assert not np.array_equal(a.predict_proba(base.iloc[:, :5].to_numpy()),
                              b.predict_proba(base.iloc[:, :5].to_numpy()))
    # the meta-learner and the scores are over the complete rows only
    assert clf.final_estimator_.n_features_in_ == 4 * 3
    assert set(clf.cv_scores_) == {"rf_handcrafted", "svc_handcrafted", "rf_deep", "svc_deep",
                                   "stack"}
    assert np.isfinite(clf.predict_proba(table)).all()
    # out-of-fold stack probabilities exist for the complete rows only
    assert np.isfinite(clf.oof_proba_[:len(base)]).all()
    assert np.isnan(clf.oof_proba_[len(base):]).all()
    # no complete row: nothing to fit the meta-learner on
    table.iloc[:, 5:] = np.nan
    with pytest.raises(ValueError, match="every feature group"):
        StackedCellClassifier(**kw).fit(table, y2, groups=groups)


@pytest.mark.slow
def test_pipeline_gridsearch_cross_val_clone(pbc_small):
    """Image paths -> FeatureExtractor -> StackedCellClassifier, tuned with GridSearchCV."""
    from morphocell import FeatureExtractor

    paths = [p for p, _ in pbc_small]
    y = np.array([lab for _, lab in pbc_small], dtype=object)
    pipe = Pipeline([("features", FeatureExtractor(families=("shape", "color"))),
                     ("clf", StackedCellClassifier(estimators=small_learners()[::2], cv=2,
                                                   random_state=0))])
    grid = GridSearchCV(pipe, {"clf__class_weight": ["balanced", None]},
                        cv=StratifiedKFold(3), error_score="raise")
    grid.fit(paths, y)
    assert grid.best_params_["clf__class_weight"] in ("balanced", None)
    pred = grid.predict(paths[:5])
    assert pred.shape == (5,) and set(pred) <= set(y)
    scores = cross_val_score(clone(pipe), paths, y, cv=StratifiedKFold(3))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    # (2 training images per class per fold say little about accuracy: that is measured in
    # test_workflow.py with more images and in docs/workflow.md on the full split)
    fitted = clone(pipe).fit(paths, y)
    np.testing.assert_array_equal(fitted.predict_proba(paths),
                                  clone(pipe).fit(paths, y).predict_proba(paths))
