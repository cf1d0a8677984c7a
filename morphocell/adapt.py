"""Adaptation of a model to a new lab: with no labels, or with a few labelled cells per class.

The model's classifier is a :class:`~morphocell.ensembles.lab_adaptive.LabAdaptiveClassifier`
(every lab standardised on its own class-balanced statistics, class priors re-estimated by
EM, a light head refitted on a few labels; the method is described there). This module works
on model files:

* :func:`adapt` (also ``morphocell.adapt(...)``) adapts a model to the images of a new lab,
  unlabelled or with a few labels, and records the provenance; :func:`adapt_file` lists the
  data and writes the adapted model file;
* :func:`train_multilab` fits a lab-adaptive model on the features of several labs, and
  :func:`leave_one_lab_out` scores each lab with a model trained on the others.

The estimator and its statistics (``LabAdaptiveClassifier``, ``balanced_stats``,
``reestimate_priors``, ``batch_statistics``, ``fit_head``, ...) live in
:mod:`morphocell.ensembles.lab_adaptive`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
from collections.abc import Sequence

import numpy as np

from .ensembles.lab_adaptive import MIN_UNLABELLED, LabAdaptiveClassifier, _as_matrix, fit_head
from .errors import MorphocellError

__all__ = [
    "MIN_UNLABELLED",
    "AdaptError",
    "adapt",
    "adapt_file",
    "leave_one_lab_out",
    "train_multilab",
]


class AdaptError(MorphocellError):
    """Adaptation cannot run: too few images, unknown labels, a class without cells, ..."""


# -- model files -----------------------------------------------------------------------------
def _final_adaptive(est):
    steps = getattr(est, "steps", None)
    final = steps[-1][1] if steps else est
    return final if isinstance(final, LabAdaptiveClassifier) else None


def _model_digest(model, source) -> str:
    """SHA-256 of the model file when ``source`` names one, else of the estimator's skops
    serialisation."""
    if isinstance(source, (str, os.PathLike)):
        from ._utils import file_sha256
        from .model_io import resolve_model

        return file_sha256(resolve_model(source))
    import skops.io as sio

    return hashlib.sha256(sio.dumps(model.estimator)).hexdigest()


def _cv_accuracy(clf: LabAdaptiveClassifier, M: np.ndarray, labels: np.ndarray,
                 random_state) -> dict | None:
    """Cross-validated accuracy of few-shot adaptation on the labelled rows: each fold's
    labelled rows are held out (unlabelled for the statistics) and predicted by the model
    adapted on the other folds' labels. ``None`` with fewer than 2 labelled rows per class
    on average."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from .report import classification_metrics

    lab_idx = np.flatnonzero([v is not None for v in labels])
    y = labels[lab_idx].astype(str)
    _, counts = np.unique(y, return_counts=True)
    if len(y) < 4:
        return None
    if counts.min() >= 2:
        k = int(min(5, counts.min()))
        splitter = StratifiedKFold(k, shuffle=True, random_state=random_state)
    else:
        k = int(min(5, len(y)))
        splitter = KFold(k, shuffle=True, random_state=random_state)
    pred = np.empty(len(y), dtype=object)
    for tr, te in splitter.split(np.zeros(len(y)), y):
        lab = np.full(len(labels), None, dtype=object)
        lab[lab_idx[tr]] = y[tr]
        m = fit_head(clf, M, lab, random_state=random_state)
        pred[te] = m.predict(M[lab_idx[te]])
    met = classification_metrics(y, pred.astype(str))
    return {"accuracy": met["accuracy"], "macro_f1": met["macro_f1"], "folds": k,
            "n": len(y)}


def adapt(model, paths: Sequence[str], labels: Sequence[str | None] | None = None, *,
          self_training: bool = True, cv: bool = True, n_jobs=None, cache_dir=None,
          random_state=0, verbose: int = 0):
    """Adapt ``model`` to the lab of the images ``paths``.

    Parameters
    ----------
    model : :class:`~morphocell.model_io.SavedModel`, a model file path, or ``"default"``
        A model whose classifier is a :class:`LabAdaptiveClassifier` (the ``default`` model,
        models trained with several labs).
    paths : image files of the new lab (one cell each)
    labels : ``None`` (unlabelled: at least :data:`MIN_UNLABELLED` images that can be
        measured), or one class name per image (``None`` or ``""`` for an unlabelled image;
        every name must be a class of the model).
    self_training : refit the head on the confident cells when nothing is labelled
    cv : with labels, report the cross-validated accuracy of the adaptation on them

    Returns
    -------
    (SavedModel, info)
        The adapted model (same classes and features; predicts with the new lab's stored
        statistics, head and priors) whose ``metadata["adapted"]`` records the provenance
        (base model digest, target data digest, method, counts, date); ``info``: statuses and
        errors per image, ``n_failed``, ``cv`` (labelled: accuracy / macro-F1 of the
        adaptation, cross-validated over the labelled cells), ``priors``.

    Raises
    ------
    AdaptError
        A model without lab statistics, labels the model does not know, a labelled class
        whose images all failed, too few unlabelled images, every image failing.
    """
    import copy

    from sklearn.pipeline import Pipeline

    from ._train_record import _data_sha256
    from .batch import compute_features
    from .model_io import SavedModel, load_model

    source = model
    if not isinstance(model, SavedModel):
        model = load_model(model)
    clf = _final_adaptive(model.estimator)
    if clf is None:
        raise AdaptError("this model cannot be adapted: its classifier has no per-lab "
                         "statistics (use the 'default' model or one trained on several labs "
                         "with morphocell.adapt.train_multilab)")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise AdaptError("no images to adapt to")
    lab = None
    if labels is not None:
        if len(labels) != len(paths):
            raise AdaptError(f"{len(labels)} labels for {len(paths)} images")
        lab = np.asarray([None if (v is None or str(v).strip() == "") else str(v).strip()
                          for v in labels], dtype=object)
        unknown = sorted({v for v in lab if v is not None} - set(model.classes))
        if unknown:
            raise AdaptError(f"labels not known to the model: {unknown} (model classes: "
                             f"{', '.join(model.classes)})")
        if all(v is None for v in lab):
            lab = None
    if lab is None and len(paths) < MIN_UNLABELLED:
        raise AdaptError(f"unlabelled adaptation needs at least {MIN_UNLABELLED} images; got "
                         f"{len(paths)}")
    steps = getattr(model.estimator, "steps", None)
    fe = steps[0][1] if steps and len(steps) > 1 else None
    X, st, er, _ = compute_features(paths, getattr(fe, "families", None),
                                    getattr(fe, "method", "otsu"), cache_dir, n_jobs, verbose)
    ok = np.array([s == "ok" for s in st], dtype=bool)
    if not ok.any():
        raise AdaptError(f"none of the {len(paths)} images could be measured (first error: "
                         f"{next((e for e in er if e), 'no cell found')})")
    M = _as_matrix(X[ok].reset_index(drop=True))
    labs_ok = None if lab is None else lab[ok]
    if lab is not None:
        empty = sorted({v for v in lab if v is not None} - {v for v in labs_ok if v is not None})
        if empty:
            raise AdaptError(f"labelled classes with no cell that could be measured: {empty}")
    elif int(ok.sum()) < MIN_UNLABELLED:
        raise AdaptError(f"unlabelled adaptation needs at least {MIN_UNLABELLED} images that "
                         f"can be measured; got {int(ok.sum())} of {len(paths)}")
    new = fit_head(clf, M, None if labs_ok is None else list(labs_ok),
                   self_training=self_training, random_state=random_state)
    cvres = None
    if labs_ok is not None and cv:
        cvres = _cv_accuracy(clf, M, labs_ok, random_state)
    if steps:
        est = Pipeline(steps[:-1] + [(steps[-1][0], new)])
    else:
        est = new
    n_lab = 0 if labs_ok is None else int(sum(v is not None for v in labs_ok))
    method = ("few-shot" if n_lab else "unsupervised") + (
        "" if n_lab or not self_training else "+self-training")
    meta = copy.deepcopy(model.metadata or {})
    meta["adapted"] = {
        "base_model_sha256": _model_digest(model, source),
        "target_data_sha256": _data_sha256(paths, [v or "" for v in (
            lab if lab is not None else [None] * len(paths))]),
        "method": method,
        "n_images": len(paths), "n_used": int(ok.sum()), "n_failed": int((~ok).sum()),
        "n_labelled": n_lab,
        "labelled_counts": ({} if not n_lab else
                            {c: int(sum(v == c for v in labs_ok)) for c in model.classes
                             if any(v == c for v in labs_ok)}),
        "priors": (None if new.target_priors_ is None else
                   {c: float(p) for c, p in zip(model.classes, new.target_priors_,
                                                strict=True)}),
        "cv": cvres,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": (model.metadata or {}).get("adapted"),
    }
    adapted = SavedModel(est, list(model.classes), list(model.feature_names),
                         list(model.atypical_classes or []), meta)
    info = {"statuses": st, "errors": er, "n_failed": int((~ok).sum()), "cv": cvres,
            "priors": meta["adapted"]["priors"], "method": method}
    return adapted, info


def adapt_file(model, data, out, **kw) -> tuple:
    """:func:`adapt` on ``data`` (a folder, a folder of class subfolders, or a manifest CSV;
    see :func:`morphocell.io.resolve_inputs`) and write the adapted model to ``out``
    atomically (no file is written when adaptation fails). Returns ``(path, model, info)``."""
    from .io import resolve_inputs
    from .model_io import save_model

    paths, labels = resolve_inputs([data])
    adapted, info = adapt(model, paths, labels, **kw)
    return save_model(adapted, out), adapted, info


# -- training on several labs ----------------------------------------------------------------
def _rows(X, mask):
    return X.iloc[np.flatnonzero(mask)] if hasattr(X, "iloc") else np.asarray(X)[mask]


def train_multilab(X, y, domains, *, estimator=None, families=None, method: str = "otsu",
                   random_state=0, groups=None, review_accuracy: float | None = None,
                   data_sha256: str | None = None, extra_metadata=None, verbose: int = 0):
    """Fit a :class:`LabAdaptiveClassifier` on the hand-crafted features ``X`` (DataFrame,
    the columns of :func:`morphocell.features.extractor.feature_names`) of cells from several
    labs (``domains``: the lab of every row) and wrap it as a model file's model.

    ``estimator``: the classifier of the standardised features (default
    :class:`~morphocell.ensembles.stacking.StackedCellClassifier` with ``random_state``).
    ``groups`` (one per row, optional): rows of a group stay in one fold of the stack's
    cross-validation (identical images). The stack's folds are stratified over the pooled
    rows of all labs, each lab standardised on its own statistics; for a score on labs the
    model has not seen, see :func:`leave_one_lab_out`.

    Returns a :class:`~morphocell.model_io.SavedModel` whose estimator is
    ``Pipeline([("features", FeatureExtractor()), ("clf", LabAdaptiveClassifier)])``, with
    the training metadata: ``domains`` (per lab, the cells of each class), ``cv_scores``
    (the stack's out-of-fold scores), ``cv_by_lab`` (the stack's out-of-fold accuracy on each
    lab's cells), the review threshold and the out-of-distribution reference;
    ``extra_metadata`` is added last.
    """
    import time

    from sklearn.pipeline import Pipeline

    from ._train_record import _versions, review_reference
    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import DEFAULT_FAMILIES, FeatureExtractor
    from .model_io import SavedModel, default_atypical_classes
    from .novelty import fit_novelty_reference
    from .report import REVIEW_ACCURACY

    fams = tuple(families or DEFAULT_FAMILIES)
    y = np.asarray(y).astype(str)
    dom = np.asarray(domains).astype(str)
    est = estimator if estimator is not None else StackedCellClassifier(
        random_state=random_state)
    t0 = time.perf_counter()
    clf = LabAdaptiveClassifier(est, random_state=random_state).fit(X, y, domains=dom,
                                                                    groups=groups)
    fit_s = time.perf_counter() - t0
    pipe = Pipeline([("features", FeatureExtractor(families=fams, method=method).fit()),
                     ("clf", clf)])
    classes = [str(c) for c in clf.classes_]
    meta = {
        "features": "handcrafted",
        "families": list(fams),
        "segmentation": method,
        "classifier": "lab-adaptive (morphocell.ensembles.lab_adaptive.LabAdaptiveClassifier)",
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(y),
        "class_counts": {c: int((y == c).sum()) for c in classes},
        "domains": {d: {c: int(((dom == d) & (y == c)).sum()) for c in classes
                        if ((dom == d) & (y == c)).any()} for d in clf.domains_},
        "random_state": random_state,
        "cv_scores": clf.cv_scores_,
        "seconds_fit": round(fit_s, 1),
        "versions": _versions(),
    }
    oof = clf.oof_proba_
    if oof is not None and len(oof) == len(y):
        pred = clf.classes_[np.argmax(np.asarray(oof), axis=1)]
        meta["cv_by_lab"] = {d: {"n": int((dom == d).sum()),
                                 "accuracy": float((pred[dom == d] == y[dom == d]).mean())}
                             for d in clf.domains_}
    if data_sha256:
        meta["data_sha256"] = data_sha256
    meta.update(extra_metadata or {})
    ref = fit_novelty_reference(X, y)
    if ref is not None:
        meta["domain_reference"] = ref
    review = review_reference(pipe, y, classes,
                              REVIEW_ACCURACY if review_accuracy is None else review_accuracy)
    if review is not None:
        meta["review"] = review
    names = list(X.columns) if hasattr(X, "columns") else []
    return SavedModel(pipe, classes, names, default_atypical_classes(classes), meta)


def leave_one_lab_out(X, y, domains, *, estimator=None, groups=None, random_state=0
                      ) -> dict | None:
    """Score every lab with a model that never saw it: the honest accuracy for a new lab.

    For each lab, a :class:`LabAdaptiveClassifier` (with a clone of ``estimator``) is fitted
    on the other labs' rows and predicts the lab's rows as one batch, with no label: the batch
    is standardised on its own statistics (EM with the model's posteriors) when it has at
    least :data:`MIN_UNLABELLED` rows, else on the nearest training lab's, as
    ``morphocell predict`` does with a folder of that lab's cells.

    Returns ``None`` with fewer than 2 labs, else ``{"method": "leave-one-lab-out", "labs":
    {lab: {...}}, "mean_accuracy", "seconds"}``; per lab: ``n``, ``accuracy`` and
    ``macro_f1`` over all its cells (a class no other lab has counts as an error),
    ``n_unknown_class`` (its cells of such classes), ``accuracy_known_classes``,
    ``standardised_on`` (``"batch"`` or ``"nearest lab"``); a lab whose other labs hold
    fewer than 2 classes gets ``skipped`` (why) instead of scores. ``mean_accuracy``: the
    unweighted mean over the scored labs.
    """
    import time

    from sklearn.base import clone

    from .ensembles.stacking import StackedCellClassifier
    from .report import classification_metrics

    y = np.asarray(y).astype(str)
    dom = np.asarray(domains).astype(str)
    labs = sorted(set(dom.tolist()))
    if len(labs) < 2:
        return None
    est = estimator if estimator is not None else StackedCellClassifier(
        random_state=random_state)
    grp = None if groups is None else np.asarray(groups)
    t0 = time.perf_counter()
    out = {}
    for lab in labs:
        te = dom == lab
        tr = ~te
        known = sorted(set(y[tr].tolist()))
        row = {"n": int(te.sum())}
        if len(known) < 2:
            row["skipped"] = (f"the other labs hold {len(known)} class"
                              f"{'' if len(known) == 1 else 'es'}; a model needs 2")
            out[lab] = row
            continue
        clf = LabAdaptiveClassifier(clone(est), random_state=random_state).fit(
            _rows(X, tr), y[tr], domains=dom[tr], groups=None if grp is None else grp[tr])
        yt = y[te]
        pred = np.asarray(clf.predict(_rows(X, te))).astype(str)
        met = classification_metrics(yt, pred)
        in_known = np.isin(yt, known)
        row.update(accuracy=met["accuracy"], macro_f1=met["macro_f1"],
                   n_unknown_class=int((~in_known).sum()),
                   accuracy_known_classes=(float((pred[in_known] == yt[in_known]).mean())
                                           if in_known.any() else None),
                   standardised_on=("batch" if clf.batch_adapt and te.sum() >= clf.min_batch
                                    else "nearest lab"))
        out[lab] = row
    scored = [r["accuracy"] for r in out.values() if "accuracy" in r]
    return {"method": "leave-one-lab-out", "labs": out,
            "mean_accuracy": float(np.mean(scored)) if scored else None,
            "seconds": round(time.perf_counter() - t0, 1)}


from ._utils import CallableModule

sys.modules[__name__].__class__ = CallableModule  # calling the module calls its function
