"""Stacked ensemble of RandomForest, SVC and XGBoost with a meta-learner.

The scheme follows ``sklearn/ensemble/_stacking.py``:

1. each base learner ``b`` (optionally restricted to a column group ``g``) is cross-fitted with
   ``StratifiedKFold(cv, shuffle=True, random_state)``: for every fold ``k`` a clone is fitted
   on the other folds and predicts probabilities for fold ``k``, giving out-of-fold
   probabilities :math:`P^{oof}_b \\in [0, 1]^{n \\times C}`;
2. the meta-learner (default multinomial logistic regression) is fitted on the concatenation
   :math:`Z = [P^{oof}_1, \\dots, P^{oof}_B] \\in \\mathbb{R}^{n \\times BC}`;
3. every base learner is refitted on all the data; at prediction
   :math:`p(x) = \\mathrm{meta}([b_1(x), \\dots, b_B(x)])`.

Features of empty regions are NaN by design: RF and SVC get a median
:class:`~sklearn.impute.SimpleImputer` in front; XGBoost handles NaN natively.

>>> from sklearn.datasets import make_classification
>>> X, y = make_classification(120, 8, n_informative=4, n_classes=3, random_state=0)
>>> clf = StackedCellClassifier(cv=3, random_state=0).fit(X, y)
>>> clf.predict_proba(X[:2]).shape
(2, 3)
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._learners import (BASE_KINDS, DEFAULT_PARAMS, _encode_class_weight, fit_rf, fit_svc,
                        fit_xgb)
from .column_groups import resolve_groups

__all__ = ["StackedCellClassifier", "BaseLearner", "BASE_KINDS"]

class BaseLearner(ClassifierMixin, BaseEstimator):
    """One base learner of the stack: ``"rf"``, ``"svc"`` or ``"xgb"``, robust to NaN.

    * ``rf``: median imputer -> ``RandomForestClassifier``;
    * ``svc``: median imputer -> ``StandardScaler`` -> RBF ``SVC`` (``gamma`` = ``gamma_factor``
      x scikit-learn's ``"scale"`` on the standardised data, see :data:`DEFAULT_PARAMS`) whose
      one-vs-rest decision values :math:`d(x)` become probabilities
      :math:`\\mathrm{softmax}(d(x) / T)` with the
      temperature :math:`T` fitted out-of-fold (``CalibratedClassifierCV(ensemble=False,
      method="temperature")``, which replaces the deprecated ``SVC(probability=True)``: one
      parameter for all classes, 4x faster than per-class Platt scaling and as good in log
      loss on our checks); with a class of a single sample, where no calibration fold
      exists, :math:`T = 1`;
    * ``xgb``: ``XGBClassifier(tree_method="hist")`` on the raw columns (NaN = missing), labels
      encoded to ``0..C-1`` internally, ``class_weight="balanced"`` as sample weights.

    The fitted XGBoost booster is stored as XGBoost's own JSON model (``__getstate__``), so a
    saved model holds no pickled XGBoost object.

    Parameters
    ----------
    kind : {"rf", "svc", "xgb"}
    params : dict, optional
        Overrides of :data:`DEFAULT_PARAMS` for this kind.
    class_weight : "balanced", None or dict {label: weight}
    random_state : int, RandomState or None
    n_jobs : int or None
    """

    def __init__(self, kind="rf", params=None, class_weight="balanced", random_state=None,
                 n_jobs=None):
        self.kind = kind
        self.params = params
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- fitting --------------------------------------------------------------------------
    def _params(self) -> dict:
        if self.kind not in BASE_KINDS:
            raise ValueError(f"unknown base learner kind {self.kind!r}; choose from {BASE_KINDS}")
        p = dict(DEFAULT_PARAMS[self.kind])
        p.update(self.params or {})
        return p

    def fit(self, X, y, groups=None):
        """Fit on ``X`` (NaN allowed) and labels ``y``; returns ``self``.

        ``groups`` (optional, one label per sample, e.g. the source image of each augmented
        copy): the SVC's calibration folds then keep a group together, so the temperature is
        not fitted on copies whose source trained the fold's SVC. Ignored by ``rf`` and
        ``xgb``, and when every group has one sample.
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        # one memory layout: the same rows fit the same model to the last bit whether they
        # came as a C- or a Fortran-ordered array (sums run in another order otherwise)
        X = np.ascontiguousarray(X)
        check_classification_targets(y)
        le = LabelEncoder().fit(y)
        self.classes_ = le.classes_
        yi = le.transform(y)
        self.class_weight_ = _encode_class_weight(self.class_weight, self.classes_)
        p = self._params()
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != yi.shape:
                raise ValueError(f"groups must have one entry per sample ({len(yi)}), "
                                 f"got shape {groups.shape}")
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self.model_ = None
        if len(self.classes_) == 1:  # a training fold with one class: constant prediction
            return self
        if self.kind == "rf":
            self.model_ = fit_rf(X, yi, p, seed, self.class_weight_, self.n_jobs)
        elif self.kind == "svc":
            self.model_ = fit_svc(X, yi, p, seed, self.class_weight_, groups)
        else:
            self.model_ = fit_xgb(X, yi, p, seed, self.class_weight_, self.n_jobs,
                                  len(self.classes_))
        return self

    # -- prediction -----------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        if self.model_ is None:
            return np.ones((X.shape[0], 1))
        if self.kind == "svc" and not hasattr(self.model_[-1], "calibrated_classifiers_"):
            d = self.model_.decision_function(X)
            if d.ndim == 1:
                d = np.column_stack([-d, d])
            e = np.exp(d - d.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return np.asarray(self.model_.predict_proba(X), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: raises NotFittedError when not fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # -- importances ----------------------------------------------------------------------
    @property
    def feature_importances_(self) -> np.ndarray:
        """Normalised importances: RF mean impurity decrease; XGBoost total gain
        :math:`G_j / \\sum_k G_k` with :math:`G_j` the summed split gain of feature ``j``."""
        check_is_fitted(self, "classes_")
        if self.model_ is None or self.kind == "svc":
            raise AttributeError(f"base learner {self.kind!r} has no feature_importances_")
        if self.kind == "rf":
            imp = np.asarray(self.model_[-1].feature_importances_, dtype=np.float64)
        else:
            imp = self.class_gain_.sum(axis=0)
        s = imp.sum()
        return imp / s if s > 0 else imp

    @property
    def class_gain_(self) -> np.ndarray:
        """XGBoost only: ``(n_classes, n_features)`` summed split gain of the trees of each class
        (multi-class boosting grows one tree per class per round: tree ``t`` is class
        ``t mod C``). For two classes there is a single tree per round, shown for both rows."""
        check_is_fitted(self, "classes_")
        if self.kind != "xgb" or self.model_ is None:
            raise AttributeError("class_gain_ exists only for a fitted 'xgb' base learner")
        df = self.model_.get_booster().trees_to_dataframe()
        df = df[df["Feature"] != "Leaf"]
        n_c = len(self.classes_)
        out = np.zeros((n_c, self.n_features_in_))
        feat = df["Feature"].str.slice(1).astype(int).to_numpy()
        gain = df["Gain"].to_numpy(dtype=np.float64)
        if n_c > 2:
            cls = df["Tree"].to_numpy() % n_c
            np.add.at(out, (cls, feat), gain)
        else:
            row = np.zeros(self.n_features_in_)
            np.add.at(row, feat, gain)
            out[:] = row
        return out

    # -- safe serialisation of XGBoost ----------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never alter the live estimator
        model = state.get("model_")
        if self.kind == "xgb" and model is not None and not isinstance(model, dict):
            state["model_"] = {"xgboost_json": bytes(model.get_booster().save_raw("json")),
                               "params": {k: v for k, v in model.get_params().items()
                                          if isinstance(v, (str, int, float, bool, type(None)))}}
        return state

    def __setstate__(self, state):
        model = state.get("model_")
        if isinstance(model, dict) and "xgboost_json" in model:
            from xgboost import XGBClassifier

            m = XGBClassifier(**model["params"])
            m.load_model(bytearray(model["xgboost_json"]))
            state = dict(state, model_=m)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class StackedCellClassifier(ClassifierMixin, BaseEstimator):
    """Stacked RandomForest / SVC / XGBoost ensemble with a meta-learner.

    Parameters
    ----------
    estimators : sequence of str or (name, estimator), default ("rf", "svc", "xgb")
        Base learners: kinds of :class:`BaseLearner` or ``(name, classifier)`` pairs (any
        classifier with ``predict_proba``; it must handle NaN itself).
    final_estimator : classifier, optional
        Meta-learner fitted on the out-of-fold probabilities; default
        ``LogisticRegression(max_iter=2000)`` (multinomial).
    cv : int or CV splitter, default 5
        Folds for the out-of-fold probabilities. An int means
        ``StratifiedKFold(min(cv, smallest class), shuffle=True, random_state)`` (at least 2).
    feature_groups : dict or None
        ``None``: early fusion, each learner sees all columns. A dict ``{group: columns}``
        (list of names, a prefix, or a regex; see :mod:`morphocell.ensembles.column_groups`): late
        fusion, one learner of each kind per group, named ``"{kind}_{group}"``.
    class_weight : "balanced", None or dict {label: weight}, default "balanced"
        Set on every base learner that has a ``class_weight`` parameter (XGBoost: applied as
        sample weights) and on the default meta-learner.
    random_state : int, RandomState or None
        Seeds the folds and every learner: equal seeds give equal models.
    n_jobs : int or None
        ``None`` or 1: one process, RandomForest and XGBoost single-threaded. ``k > 1`` (or -1
        for all cores): the cross-fitting and refitting jobs (learners x folds) run in ``k``
        parallel processes, each learner single-threaded; results are identical.

    Attributes
    ----------
    classes_ : ndarray
        Class labels (any hashable labels, e.g. strings), sorted.
    learners_ : list of (name, fitted estimator, column positions)
    final_estimator_ : fitted meta-learner (on encoded labels ``0..C-1``)
    feature_importances_ : ndarray (n_features_in_,)
        Mean over the learners that have native importances (RF impurity, XGBoost gain) of
        their normalised importances, spread back onto all columns; sums to 1.
    cv_scores_ : dict
        Out-of-fold accuracy and macro-F1 of every base learner, and of the stack estimated by
        cross-validating the meta-learner on the out-of-fold probabilities (see ``fit``).
    oof_proba_ : ndarray (n_samples, n_classes) or None
        The stack's own out-of-fold class probabilities behind ``cv_scores_["stack"]`` (columns
        in ``classes_`` order; NaN rows for samples that do not train the meta-learner;
        ``None`` when ``cv`` gives fewer than 2 folds). What a confidence threshold is chosen
        on (:func:`morphocell.report.review_threshold`).
    """

    def __init__(self, estimators=("rf", "svc", "xgb"), final_estimator=None, cv=5,
                 feature_groups=None, class_weight="balanced", random_state=None, n_jobs=None):
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.cv = cv
        self.feature_groups = feature_groups
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- helpers --------------------------------------------------------------------------
    def _templates(self) -> list[tuple[str, BaseEstimator]]:
        ests = self.estimators
        if isinstance(ests, str):
            ests = (ests,)
        if not isinstance(ests, Sequence) or len(ests) == 0:
            raise ValueError("estimators must be a non-empty sequence of kinds or "
                             "(name, estimator) pairs")
        out = []
        for e in ests:
            if isinstance(e, str):
                if e not in BASE_KINDS:
                    raise ValueError(f"unknown base learner {e!r}; choose from {BASE_KINDS} or "
                                     "pass (name, estimator)")
                out.append((e, BaseLearner(e, class_weight=self.class_weight_, n_jobs=self.n_jobs)))
            elif isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str):
                if not hasattr(e[1], "fit") or not hasattr(e[1], "predict_proba"):
                    raise ValueError(f"base learner {e[0]!r} needs fit and predict_proba")
                out.append((e[0], e[1]))
            else:
                raise ValueError(f"bad estimators entry {e!r}")
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ValueError(f"base learner names must be unique, got {names}")
        return out

    def _splitter(self, y: np.ndarray, seed: int, groups=None):
        from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

        if not isinstance(self.cv, numbers.Integral):
            if not hasattr(self.cv, "split"):
                raise ValueError(f"cv must be an int >= 2 or a CV splitter, got {self.cv!r}")
            return self.cv
        if self.cv < 2:
            raise ValueError(f"cv must be >= 2, got {self.cv}")
        min_count = np.bincount(y).min()
        if groups is not None:
            n_groups = len(np.unique(groups))
            return StratifiedGroupKFold(int(min(self.cv, n_groups)), shuffle=True,
                                        random_state=seed)
        if min_count >= 2:
            return StratifiedKFold(int(min(self.cv, min_count)), shuffle=True, random_state=seed)
        # a class with one sample cannot be stratified; folds may then miss a class
        return KFold(int(min(self.cv, len(y))), shuffle=True, random_state=seed)

    def _seeded(self, est, seed):
        """A clone of ``est`` with its own seed and the stack's class weights (encoded)."""
        est = clone(est)
        params = est.get_params(deep=False)
        if "random_state" in params:
            est.set_params(random_state=seed)
        if "class_weight" in params:
            est.set_params(class_weight=self.class_weight_)
        return est

    def _proba_full(self, est, X, n_classes) -> np.ndarray:
        """Probabilities of a learner fitted on encoded labels, spread onto all classes."""
        p = np.asarray(est.predict_proba(X), dtype=np.float64)
        out = np.zeros((X.shape[0], n_classes))
        out[:, np.asarray(est.classes_, dtype=np.intp)] = p
        return out

    def _meta(self):
        if self.final_estimator is not None:
            return clone(self.final_estimator)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, class_weight=self.class_weight_)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, X, y, groups=None):
        """Cross-fit the base learners, fit the meta-learner, refit the base learners.

        ``groups`` (optional, one label per sample): samples of a group never fall in
        different folds, e.g. an image and its augmented copies; an int ``cv`` then means
        ``StratifiedGroupKFold`` (a splitter given as ``cv`` gets ``groups`` passed on). The
        ``svc`` learners' calibration folds keep groups together too (:class:`BaseLearner`).

        ``cv_scores_["stack"]`` is the accuracy of ``cross_val_predict(meta, Z, y)`` on the
        out-of-fold probabilities ``Z``: no base learner predicted a sample it was fitted on,
        but the meta-learner of one fold saw base learners fitted on the others, so it is a
        close, slightly optimistic estimate (a nested CV would cost ``cv`` times more).

        Missing groups (late fusion): a sample whose columns of a learner's group are *all*
        NaN does not train that learner, and -- as it has no out-of-fold probability from that
        learner -- does not train the meta-learner either; the base-learner and stack scores
        are then over the samples that train the meta-learner. E.g. stain-augmented copies
        that only the hand-crafted group describes train the hand-crafted learners only
        (:class:`morphocell.deep.crossfit.FusedModel` with ``copies``). Without such samples
        nothing changes.
        """
        from sklearn.metrics import accuracy_score, f1_score
        from sklearn.model_selection import cross_val_predict

        sample_groups = None if groups is None else np.asarray(groups)
        if self.final_estimator is not None and not hasattr(self.final_estimator,
                                                            "predict_proba"):
            raise ValueError(f"final_estimator {self.final_estimator!r} has no predict_proba: "
                             "the stack's probabilities (and its predictions, their arg-max) "
                             "are the meta-learner's")
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        le = LabelEncoder().fit(y)
        self.classes_ = le.classes_
        self.class_weight_ = _encode_class_weight(self.class_weight, self.classes_)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError("StackedCellClassifier needs samples of at least 2 classes; "
                             f"got 1 class ({self.classes_[0]!r})")
        yi = le.transform(y)
        columns = (list(self.feature_names_in_) if hasattr(self, "feature_names_in_")
                   else [f"x{i}" for i in range(X.shape[1])])
        groups = resolve_groups(self.feature_groups, columns)
        templates = self._templates()
        specs = [((name if self.feature_groups is None else f"{name}_{g}"), est, idx)
                 for g, idx in groups for name, est in templates]
        rng = check_random_state(self.random_state)
        split_seed = int(rng.randint(np.iinfo(np.int32).max))
        seeds = rng.randint(np.iinfo(np.int32).max, size=len(specs))
        if sample_groups is not None and sample_groups.shape != (len(yi),):
            raise ValueError(f"groups must have one entry per sample ({len(yi)}), "
                             f"got shape {sample_groups.shape}")
        splits = list(self._splitter(yi, split_seed, sample_groups)
                      .split(X, yi, sample_groups))
        # rows where a learner's whole group is missing train neither it nor the meta-learner
        present = [~np.all(np.isnan(X[:, idx]), axis=1) if len(idx) else
                   np.ones(len(yi), bool) for _, _, idx in specs]
        meta_rows = np.logical_and.reduce(present)
        if not meta_rows.any():
            raise ValueError("no sample has values in every feature group; the meta-learner "
                             "cannot be fitted")
        if len(np.unique(yi[meta_rows])) < n_classes:
            raise ValueError("the samples with values in every feature group miss a class; "
                             "the meta-learner cannot be fitted")
        masks = None if meta_rows.all() else present
        if masks is not None:  # out-of-fold probabilities are needed where the meta trains only
            splits = [(tr, te[meta_rows[te]]) for tr, te in splits]

        # every (learner, fold) fit and every final refit is one job; with n_jobs > 1 the
        # jobs run in parallel processes, each learner single-threaded (no oversubscription)
        jobs = [(s, f) for s in range(len(specs)) for f in [*range(len(splits)), None]]
        parallel = self.n_jobs is not None and self.n_jobs != 1 and len(jobs) > 1
        if parallel:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=self.n_jobs)(
                delayed(self._fit_job)(specs[s], int(seeds[s]), X, yi,
                                       self._split(splits, f, masks, s), n_classes, 1,
                                       sample_groups)
                for s, f in jobs)
        else:
            results = [self._fit_job(specs[s], int(seeds[s]), X, yi,
                                     self._split(splits, f, masks, s), n_classes, None,
                                     sample_groups)
                       for s, f in jobs]
        done = dict(zip(jobs, results, strict=True))
        oof = []
        scores = {}
        for s, (name, _, _) in enumerate(specs):
            Z = np.zeros((len(yi), n_classes))
            for f, (_, te) in enumerate(splits):
                Z[te] = done[(s, f)]
            oof.append(Z[meta_rows])
            pred = Z[meta_rows].argmax(axis=1)
            scores[name] = {"accuracy": float(accuracy_score(yi[meta_rows], pred)),
                            "macro_f1": float(f1_score(yi[meta_rows], pred, average="macro"))}
        Z = np.hstack(oof)
        ym = yi[meta_rows]
        self.final_estimator_ = self._meta().fit(Z, ym)
        if len(splits) >= 2:
            # the same folds, restricted to the rows that train the meta-learner
            pos = np.cumsum(meta_rows) - 1
            msplits = [(pos[tr[meta_rows[tr]]], pos[te[meta_rows[te]]]) for tr, te in splits]
            meta_proba = cross_val_predict(self._meta(), Z, ym, cv=msplits,
                                           method="predict_proba")
            meta_pred = meta_proba.argmax(axis=1)  # as predict: the arg-max of predict_proba
            scores["stack"] = {"accuracy": float(accuracy_score(ym, meta_pred)),
                               "macro_f1": float(f1_score(ym, meta_pred, average="macro"))}
            oof_proba = np.full((len(yi), n_classes), np.nan)
            oof_proba[meta_rows] = meta_proba
        else:
            oof_proba = None
        self.oof_proba_ = oof_proba
        self.cv_scores_ = scores
        self.learners_ = [(name, done[(s, None)], idx)
                          for s, (name, _, idx) in enumerate(specs)]
        self.learner_names_ = [n for n, _, _ in self.learners_]
        self.feature_importances_ = self._importances()
        return self

    @staticmethod
    def _split(splits, f, masks, s):
        """Fold ``f`` of learner ``s`` (``None``: all data), its training part without the rows
        where its group is missing (``masks``; ``None`` when no row misses a group)."""
        if masks is None:
            return None if f is None else splits[f]
        rows = masks[s]
        if f is None:
            return (np.flatnonzero(rows), None)
        tr, te = splits[f]
        return (tr[rows[tr]], te)

    def _fit_job(self, spec, seed, X, yi, split, n_classes, inner_jobs, groups=None):
        """Fit one learner: on a fold's training part (returns out-of-fold probabilities of
        its test part) or, with ``split=None``, on all the data (returns the fitted learner).
        ``groups`` go on to a :class:`BaseLearner` (its SVC calibration folds)."""
        _, est, idx = spec
        m = self._seeded(est, seed)
        if inner_jobs is not None and "n_jobs" in m.get_params(deep=False):
            m.set_params(n_jobs=inner_jobs)
        Xg = X[:, idx]

        def fit(rows):
            if groups is None or not isinstance(m, BaseLearner):
                return m.fit(Xg[rows], yi[rows])
            return m.fit(Xg[rows], yi[rows], groups=groups[rows])

        if split is None:
            return fit(slice(None))
        tr, te = split
        if te is None:  # all data, some rows left out (see ``_split``)
            return fit(tr)
        fit(tr)
        return self._proba_full(m, Xg[te], n_classes)

    def _importances(self) -> np.ndarray:
        total = np.zeros(self.n_features_in_)
        n = 0
        for _, est, idx in self.learners_:
            try:
                imp = np.asarray(est.feature_importances_, dtype=np.float64)
            except AttributeError:
                continue
            if imp.sum() > 0:
                total[idx] += imp / imp.sum()
                n += 1
        if n == 0:
            return np.full(self.n_features_in_, 1.0 / self.n_features_in_)
        return total / total.sum()

    # -- predict --------------------------------------------------------------------------
    def _check_X(self, X):
        check_is_fitted(self, "learners_")
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                             dtype=np.float64)

    def _base_probas(self, X) -> list[np.ndarray]:
        n_classes = len(self.classes_)
        return [self._proba_full(est, X[:, idx], n_classes) for _, est, idx in self.learners_]

    def predict_proba_base(self, X) -> dict[str, np.ndarray]:
        """Probabilities of every fitted base learner, ``{learner name: (n, C) array}``."""
        X = self._check_X(X)
        return dict(zip(self.learner_names_, self._base_probas(X), strict=True))

    def predict_proba(self, X) -> np.ndarray:
        """Stacked class probabilities, columns in ``classes_`` order, rows sum to 1."""
        X = self._check_X(X)
        Z = np.hstack(self._base_probas(X))
        return self._proba_full(self.final_estimator_, Z, len(self.classes_))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: raises NotFittedError when not fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # -- explanation ----------------------------------------------------------------------
    def class_importances(self) -> "pd.DataFrame":  # noqa: F821
        """Per-class XGBoost gain, ``DataFrame`` (classes x features), each row summing to 1.

        For late fusion the gains of the XGBoost learner of each group are normalised per
        learner then summed, so each group counts equally.
        """
        import pandas as pd

        check_is_fitted(self, "learners_")
        cols = (list(self.feature_names_in_) if hasattr(self, "feature_names_in_")
                else [f"x{i}" for i in range(self.n_features_in_)])
        out = np.zeros((len(self.classes_), self.n_features_in_))
        found = False
        for _, est, idx in self.learners_:
            try:
                g = est.class_gain_
            except AttributeError:
                continue
            cls_idx = np.asarray(est.classes_, dtype=np.intp)
            s = g.sum(axis=1, keepdims=True)
            out[np.ix_(cls_idx, idx)] += np.divide(g, s, out=np.zeros_like(g), where=s > 0)
            found = True
        if not found:
            raise AttributeError("class_importances needs an 'xgb' base learner")
        s = out.sum(axis=1, keepdims=True)
        out = np.divide(out, s, out=np.zeros_like(out), where=s > 0)
        return pd.DataFrame(out, index=[str(c) for c in self.classes_], columns=cols)

    def explain(self, X, y, top: int = 20, n_repeats: int = 5, per_class: bool = True):
        """Permutation importance of the whole stack on held-out ``(X, y)``.

        Importance of feature ``j`` for score ``s``: :math:`s(X, y) - \\frac{1}{R}\\sum_r
        s(X^{(j, r)}, y)` where :math:`X^{(j, r)}` has column ``j`` shuffled (repeat ``r``).
        Scores: macro-F1 (scope ``"all"``) and, with ``per_class``, the F1 of each class
        (one-vs-rest), computed from the same permuted predictions.

        Returns
        -------
        DataFrame with columns ``scope, feature, importance_mean, importance_std``: the ``top``
        features of each scope, by decreasing mean importance.
        """
        import pandas as pd
        from sklearn.inspection import permutation_importance
        from sklearn.metrics import f1_score, make_scorer

        check_is_fitted(self, "learners_")
        cols = list(X.columns) if hasattr(X, "columns") else [
            f"x{i}" for i in range(self.n_features_in_)]
        scoring = {"all": "f1_macro"}
        if per_class:
            for c in self.classes_:
                scoring[str(c)] = make_scorer(f1_score, labels=[c], average="macro",
                                              zero_division=0)
        res = permutation_importance(self, X, np.asarray(y), scoring=scoring,
                                     n_repeats=n_repeats, random_state=self.random_state,
                                     n_jobs=None)
        rows = []
        for scope, r in res.items():
            order = np.argsort(-r.importances_mean, kind="stable")[:top]
            rows += [(scope, cols[j], float(r.importances_mean[j]),
                      float(r.importances_std[j])) for j in order]
        return pd.DataFrame(rows, columns=["scope", "feature", "importance_mean",
                                           "importance_std"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
