"""The base learners of the stack: default hyper-parameters and how each kind is fitted.

:class:`~morphocell.ensembles.stacking.BaseLearner` validates its input, encodes the labels
and calls one of :func:`fit_rf`, :func:`fit_svc`, :func:`fit_xgb` here (on labels
``0..C-1``, NaN allowed in ``X``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BASE_KINDS", "DEFAULT_PARAMS", "fit_rf", "fit_svc", "fit_xgb"]

#: Names accepted in ``StackedCellClassifier(estimators=...)``.
BASE_KINDS = ("rf", "svc", "xgb")

#: Default hyper-parameters of each base learner kind (overridable with ``BaseLearner(params=)``).
DEFAULT_PARAMS = {
    "rf": {"n_estimators": 200, "max_features": "sqrt", "min_samples_leaf": 1},
    # gamma = gamma_factor x scikit-learn's "scale" (1 / (n_features var(X)), after the
    # scaler); the factor was chosen on the PBC train rows
    # (docs/experiments/2026-12-01-svc-kernel-width.md)
    "svc": {"C": 10.0, "gamma": "scale", "gamma_factor": 0.35, "calibration_cv": 3},
    # 64 histogram bins (faster per round than 256 at the same validation accuracy) and 20% of
    # the columns per tree, both chosen on the PBC train rows
    # (docs/experiments/2026-12-01-xgboost-column-sampling.md)
    "xgb": {"n_estimators": 200, "learning_rate": 0.15, "max_depth": 6, "subsample": 0.8,
            "colsample_bytree": 0.2, "min_child_weight": 1.0, "reg_lambda": 1.0,
            "max_bin": 64},
}


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """``w_i = n / (C * n_{y_i})`` -- scikit-learn's ``class_weight="balanced"`` rule."""
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    return (len(y) / (len(counts) * counts))[inv]


def _encode_class_weight(class_weight, classes: np.ndarray):
    """``class_weight`` for a learner fitted on labels encoded as ``0..C-1``: ``"balanced"``
    and ``None`` pass through; a dict ``{label: weight}`` is re-keyed by label position."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return class_weight
    if isinstance(class_weight, dict):
        pos = {c: i for i, c in enumerate(classes.tolist())}
        return {pos[k]: float(v) for k, v in class_weight.items() if k in pos}
    raise ValueError(f"class_weight must be 'balanced', None or a dict {{label: weight}}, got "
                     f"{class_weight!r}")


def fit_rf(X, y, p: dict, seed: int, class_weight, n_jobs):
    """Median imputer -> ``RandomForestClassifier(**p)``, fitted on encoded labels ``y``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    rf = RandomForestClassifier(class_weight=class_weight, random_state=seed,
                                n_jobs=n_jobs, **p)
    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("rf", rf)]).fit(X, y)


def fit_svc(X, y, p: dict, seed: int, class_weight, groups=None):
    """Median imputer -> scaler -> RBF ``SVC`` with temperature calibration (see
    :class:`~morphocell.ensembles.stacking.BaseLearner`), fitted on encoded labels ``y``;
    ``groups`` keep a group's samples in one calibration fold."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    p = dict(p)
    calibration_cv = p.pop("calibration_cv")
    factor = float(p.pop("gamma_factor", 1.0))
    prep = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler())])
    if factor != 1.0:
        gamma = p.get("gamma", "scale")
        if gamma == "scale":  # scikit-learn's rule, on the data the SVC sees
            var = float(prep.fit_transform(X).var())
            gamma = 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        elif gamma == "auto":
            gamma = 1.0 / X.shape[1]
        p["gamma"] = factor * float(gamma)
    svc = SVC(kernel="rbf", class_weight=class_weight, random_state=seed, **p)
    min_count = np.bincount(y).min()
    if groups is not None:
        # fewest distinct groups in a class bounds the number of folds; with all groups
        # singletons, or a class of one group, plain stratified folds as without groups
        min_groups = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        if len(np.unique(groups)) == len(groups) or min_groups < 2:
            groups = None
        else:
            min_count = min_groups
    if min_count >= 2:
        k = int(min(calibration_cv, min_count))
        if groups is None:
            cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        else:
            cv = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                      .split(X, y, groups))
        est = CalibratedClassifierCV(svc, method="temperature", ensemble=False, cv=cv)
    else:
        est = svc
    return Pipeline([*prep.steps, ("svc", est)]).fit(X, y)


def fit_xgb(X, y, p: dict, seed: int, class_weight, n_jobs, n_classes: int):
    """``XGBClassifier(tree_method="hist", **p)`` with the class weights as sample weights,
    fitted on encoded labels ``y``."""
    from xgboost import XGBClassifier

    if class_weight == "balanced":
        w = _balanced_weights(y)
    elif isinstance(class_weight, dict):
        w = np.array([class_weight.get(int(k), 1.0) for k in y], dtype=np.float64)
    else:
        w = None
    obj = {"objective": "multi:softprob"} if n_classes > 2 else {"objective": "binary:logistic"}
    model = XGBClassifier(tree_method="hist", random_state=seed,
                          n_jobs=1 if n_jobs is None else n_jobs,
                          **obj, **p)
    model.fit(X, y, sample_weight=w)
    return model
