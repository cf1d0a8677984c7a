"""Leakage-free use of CNN embeddings: cross-fitted networks, a classifier on embeddings of
images the network never saw, and late fusion with the hand-crafted features.

Why
---
A network is overconfident on the images it was trained on: their embeddings sit far from the
class boundaries and its softmax is near 1. A classifier (or a stacking meta-learner) fitted on
those embeddings learns to trust the deep features more than they deserve on new images. So
every deep feature that a downstream learner is *fitted* on must come from a network that did
not see that image.

Why not "out-of-fold embeddings + one final network"
----------------------------------------------------
scikit-learn's stacking recipe (fit the meta-learner on out-of-fold *probabilities*, then use
base models refitted on all data) works because a class probability means the same thing
whichever model produced it. An embedding does not: two networks trained from different
initialisations / data produce unrelated coordinate systems (any permutation or rotation of
the penultimate units is an equally good solution). A classifier fitted on out-of-fold
embeddings that come from K different networks, then applied to a (K+1)-th network's
embeddings, sees inputs in a coordinate system it was never trained on. We therefore never
mix embedding spaces.

The scheme (K = ``cv`` folds, ``StratifiedKFold(shuffle=True, random_state)``)
----------------------------------------------------------------------------------
1. **Cross-fitted networks.** For fold ``k``, network ``f_k`` (a :class:`CNNEmbedder`) is
   trained on the other ``K - 1`` folds, and embeds the held-out fold: ``E_k = f_k(X_k)``.
   Every training image gets exactly one out-of-fold embedding, from the one network that
   did not see it.
2. **``features="deep"``** (:class:`DeepModel`): classifier ``g_k`` (calibrated RBF SVC,
   ``BaseLearner("svc")`` of the stacking module: standardise, SVC, Platt scaling) is fitted on
   ``(E_k, y_k)``: network ``f_k``'s embeddings of images ``f_k`` never saw. For a new image
   ``x``: ``p(x) = (1 / K) * sum_k g_k(f_k(x))`` -- each ``g_k`` is applied to the very
   embedding space it was fitted in, to images its network did not see, exactly as in
   training. No extra all-data network is needed; prediction embeds each image K times (the
   K networks are also a bagged ensemble). Training costs ``K * (K-1)/K = K - 1`` full-data
   network trainings (4 for K = 5), one fewer than "K folds + a final network".
3. **``features="fused"``** (:class:`FusedModel`): the deep path enters the stack as its
   out-of-fold class probabilities, columns ``Cell_Embedding_CnnProba_00 ...`` (one per class,
   in ``classes_`` order). For a training image in fold ``k``, its value is
   ``cross_val_predict(g, E_k, y_k)`` (an inner ``inner_cv``-fold CV of the SVC inside fold
   ``k``): neither the network nor the SVC that produced it saw the image. Probabilities,
   unlike embeddings, are comparable across networks, so one table over all ``n`` images
   is valid. :class:`~morphocell.ensembles.stacking.StackedCellClassifier` is then fitted on
   ``[hand-crafted columns | deep probability columns]`` with late fusion
   (``feature_groups={"handcrafted": ..., "deep": ...}``): RF/SVC/XGBoost per group, cross-fitted
   again inside the stack on the networks' own folds (so a deep learner is scored on the
   outputs of a network it never saw outputs of), and a meta-learner on their out-of-fold
   probabilities. Stain-augmented copies (``copies``) add hand-crafted rows without deep
   columns, in their source image's fold: they train the hand-crafted learners only. For a new
   image the deep columns are :meth:`DeepModel.predict_proba` (the average over the K pairs,
   each ``g_k`` refitted on all of fold k) -- the usual stacking approximation (a model
   fitted on slightly more data at prediction time than in cross-fitting), with no leakage.

Hand-crafted features of new images are computed with
:func:`morphocell.features.extractor.extract_batch` (or passed in, e.g. from a cache).

Estimators
----------
:class:`DeepModel` and :class:`FusedModel` follow scikit-learn's contract: every setting,
including the networks' (``embedder``, a :class:`CNNEmbedder` used as a template: each of
the K networks is a clone of it with its own derived seed), is an ``__init__`` parameter, so
``clone`` and ``get_params`` / ``set_params`` (``embedder__epochs=...``) rebuild them;
``predict_proba`` changes nothing (``predict_proba_with_failures`` also returns the
unreadable inputs).
"""
from __future__ import annotations

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import DataError, MorphocellError
from ._crossfit_embeddings import (DEFAULT_EMBEDDER, CrossFit, _log, _seeds, crossfit_embeddings,
                                   default_embedder, proba_names)

__all__ = ["CrossFit", "crossfit_embeddings", "DeepModel", "FusedModel", "fit_deep_model",
           "default_embedder", "proba_names", "DEFAULT_EMBEDDER", "TRUSTED_TYPES"]

#: Types a saved deep/fused model holds beyond the stacking ones (for ``model_io``).
TRUSTED_TYPES = ["morphocell.deep.crossfit.DeepModel", "morphocell.deep.crossfit.FusedModel",
                 "morphocell.deep.embedder.CNNEmbedder"]


def _svc(random_state):
    from ..ensembles.stacking import BaseLearner

    # the deep path keeps scikit-learn's "scale" gamma: the factor of the default was chosen
    # on hand-crafted features, not on embeddings
    return BaseLearner("svc", params={"gamma_factor": 1.0}, class_weight="balanced",
                       random_state=random_state)


class DeepModel(ClassifierMixin, BaseEstimator):
    """CNN embeddings + calibrated SVC, cross-fitted (``features="deep"``).

    See the module docstring, step 2: ``p(x) = mean_k g_k(f_k(x))``.

    Parameters
    ----------
    embedder : CNNEmbedder, optional
        Template of the K networks (each a clone with its own seed derived from
        ``random_state``; its own ``random_state`` and ``verbose`` are not used). ``None``:
        :func:`default_embedder` (:data:`DEFAULT_EMBEDDER`).
    cv : int >= 2, default 5
        Number of cross-fitted networks (folds).
    inner_cv : int, default 5
        Folds of the SVC cross-validation inside each network's held-out fold.
    random_state : int or None
        Seeds the folds, the networks and the classifiers.
    verbose : int, default 0

    Attributes
    ----------
    embedders_ : list of CNNEmbedder (``f_k``)
    classifiers_ : list of BaseLearner("svc") (``g_k``, fitted on ``f_k``'s held-out fold)
    classes_ : ndarray
    fold_ : int array, the fold of each training image
    oof_proba_ : (n, C) out-of-fold SVC probabilities of the training images (inner CV)
    cv_scores_ : dict of out-of-fold accuracy / macro-F1 ("cnn_softmax", "cnn_svc")
    fit_failures_ : list of (source, reason), training images that could not be read
    train_time_s_ : float
    """

    def __init__(self, embedder=None, cv=5, inner_cv=5, random_state=None, verbose=0):
        self.embedder = embedder
        self.cv = cv
        self.inner_cv = inner_cv
        self.random_state = random_state
        self.verbose = verbose

    def __setstate__(self, state):
        # models saved before ``embedder`` was a parameter: the template is their first
        # network's parameters (a seed of its own is drawn again at every fit anyway)
        if "embedder" not in state:
            nets = state.get("embedders_") or []
            state = {**state, "embedder": (default_embedder(**{
                **nets[0].get_params(), "random_state": None}) if nets else None)}
        super().__setstate__(state)

    def _fit_crossfit(self, cf: CrossFit):
        """Fit the classifiers on a finished cross-fit of the networks (steps 2 of the
        module docstring); ``fit`` = :func:`crossfit_embeddings` + this."""
        from sklearn.metrics import accuracy_score, f1_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        self.classes_ = cf.classes
        self.embedders_ = cf.embedders
        self.fold_ = cf.fold
        self.fit_failures_ = list(cf.failures)
        seeds = _seeds(self.random_state, 2 * len(cf.embedders))
        n, c = len(cf.y), len(cf.classes)
        oof = np.zeros((n, c))
        self.classifiers_ = []
        for k in range(len(cf.embedders)):
            idx = np.flatnonzero(cf.fold == k)
            E, yk = cf.embeddings[idx], cf.y[idx]
            g = _svc(seeds[2 * k]).fit(E, yk)
            self.classifiers_.append(g)
            n_inner = int(min(self.inner_cv, np.unique(yk, return_counts=True)[1].min()))
            if n_inner >= 2:
                inner = StratifiedKFold(n_inner, shuffle=True, random_state=seeds[2 * k + 1])
                p = cross_val_predict(_svc(seeds[2 * k]), E, yk, cv=inner,
                                      method="predict_proba")
            else:  # a class with a single image in this fold: no inner CV possible
                p = np.full((len(idx), c), 1.0 / c)
            oof[idx] = p
        self.oof_proba_ = oof
        pred_svc = cf.classes[np.argmax(oof, 1)]
        pred_cnn = cf.classes[np.argmax(cf.proba, 1)]
        self.cv_scores_ = {
            "cnn_softmax": {"accuracy": float(accuracy_score(cf.y, pred_cnn)),
                            "macro_f1": float(f1_score(cf.y, pred_cnn, average="macro"))},
            "cnn_svc": {"accuracy": float(accuracy_score(cf.y, pred_svc)),
                        "macro_f1": float(f1_score(cf.y, pred_svc, average="macro"))},
        }
        return self

    def fit(self, X, y):
        """Cross-fit networks and classifiers on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : image paths, arrays, or an ``(n, S, S, 3)`` uint8 array at the input size
        y : array-like of labels

        Returns
        -------
        self
        """
        t0 = time.perf_counter()
        cf = crossfit_embeddings(X, y, cv=self.cv, random_state=self.random_state,
                                 verbose=self.verbose, embedder=self.embedder)
        self._fit_crossfit(cf)
        self.train_time_s_ = time.perf_counter() - t0
        return self

    @property
    def input_size_(self) -> int:
        return int(self.embedders_[0].input_size)

    @property
    def crop_(self) -> float:
        return float(self.embedders_[0].crop)

    def _proba_decoded(self, images: np.ndarray) -> np.ndarray:
        p = np.zeros((len(images), len(self.classes_)))
        for f, g in zip(self.embedders_, self.classifiers_, strict=True):
            e, _, _ = f._infer(images)
            p += _spread(g, g.predict_proba(e), self.classes_)
        return p / len(self.embedders_)

    def predict_proba_with_failures(self, X) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """:meth:`predict_proba` and the inputs that could not be read.

        Returns
        -------
        proba : (n, C) array, NaN rows for unreadable images
        failures : list of (source, reason)
        """
        from sklearn.utils.validation import check_is_fitted

        from .embedder import decode_images

        check_is_fitted(self, "classifiers_")
        images, ok, failures = decode_images(X, self.input_size_, crop=self.crop_)
        n = len(ok) + len(failures)
        out = np.full((n, len(self.classes_)), np.nan)
        if len(ok):
            out[ok] = self._proba_decoded(images)
        return out, failures

    def predict_proba(self, X) -> np.ndarray:
        """``mean_k g_k(f_k(x))``; columns in ``classes_`` order; NaN rows for unreadable
        images (:meth:`predict_proba_with_failures` says why)."""
        return self.predict_proba_with_failures(X)[0]

    def predict(self, X) -> np.ndarray:
        """Most probable class (``None`` for unreadable images)."""
        p = self.predict_proba(X)
        bad = np.isnan(p).any(axis=1)
        out = self.classes_[np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)].astype(object)
        out[bad] = None
        return out


def _spread(est, p, classes) -> np.ndarray:
    """Probabilities of ``est`` laid onto all ``classes`` (a fold may miss none by design,
    but be safe)."""
    if list(est.classes_) == list(classes):
        return np.asarray(p, np.float64)
    out = np.zeros((len(p), len(classes)))
    pos = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(est.classes_):
        out[:, pos[c]] = p[:, j]
    return out


class FusedModel(ClassifierMixin, BaseEstimator):
    """Stacked ensemble over hand-crafted features + the deep path's out-of-fold
    probabilities (``features="fused"``); see the module docstring, step 3.

    Parameters
    ----------
    embedder : CNNEmbedder, optional
        Template of the deep path's networks (see :class:`DeepModel`).
    cv : int >= 2, default 5
        Folds of the network cross-fitting, which are also the stack's folds.
    inner_cv : int, default 5
        Folds of the deep path's SVC cross-validation inside each held-out fold.
    stack_params : dict, optional
        Extra :class:`~morphocell.ensembles.stacking.StackedCellClassifier` parameters.
    random_state : int or None
    n_jobs : int or None
        Hand-crafted feature extraction and stack workers.
    verbose : int, default 0

    Attributes
    ----------
    deep_ : DeepModel
    stack_ : StackedCellClassifier (late fusion, groups "handcrafted" and "deep")
    handcrafted_columns_ : list of str
    feature_names_in_ : ndarray, all stack columns (hand-crafted then deep probabilities)
    families_, method_ : how the hand-crafted features are computed for new images
    cv_scores_ : dict, the deep path's and the stack's out-of-fold scores
    """

    def __init__(self, embedder=None, cv=5, inner_cv=5, stack_params=None, random_state=None,
                 n_jobs=None, verbose=0):
        self.embedder = embedder
        self.cv = cv
        self.inner_cv = inner_cv
        self.stack_params = stack_params
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __setstate__(self, state):
        # models saved before ``embedder`` was a parameter: their deep path's template
        if "embedder" not in state:
            deep = state.get("deep_")
            state = {**state, "embedder": getattr(deep, "embedder", None)}
        super().__setstate__(state)

    def fit(self, X, y, handcrafted=None, copies=None):
        """Cross-fit the deep path, then fit the late-fusion stack.

        Parameters
        ----------
        X : image paths (or arrays)
        y : labels
        handcrafted : DataFrame, optional
            Hand-crafted features of ``X`` (same row order); computed with
            :func:`~morphocell.features.extractor.extract_batch` when omitted.
        copies : (DataFrame, int array), optional
            Hand-crafted features of stain-augmented copies of some images of ``X`` and the
            position in ``X`` of each copy's source image (``morphocell train --domain-copies``).
            They train the hand-crafted learners only: the deep columns of a copy are missing
            (NaN), so it trains neither the deep learners nor the meta-learner
            (:meth:`StackedCellClassifier.fit`), and it is kept in its source image's fold.

        Returns
        -------
        self
        """
        import pandas as pd

        t0 = time.perf_counter()
        X = list(X) if not isinstance(X, np.ndarray) else X
        cf = crossfit_embeddings(X, y, cv=self.cv, random_state=self.random_state,
                                 verbose=self.verbose, embedder=self.embedder)
        deep = DeepModel(embedder=self.embedder, cv=self.cv, inner_cv=self.inner_cv,
                         random_state=self.random_state, verbose=self.verbose
                         )._fit_crossfit(cf)
        deep.train_time_s_ = time.perf_counter() - t0
        self.fit_failures_ = list(cf.failures)
        _log(self.verbose, _deep_summary(deep))
        keep = np.ones(len(X), bool)
        if cf.failures:
            bad = {s for s, _ in cf.failures}
            keep = np.array([not (isinstance(p, (str, os.PathLike)) and os.fspath(p) in bad)
                             for p in X])
        if handcrafted is None:
            from ..features.extractor import DEFAULT_FAMILIES, extract_batch, feature_names

            _log(self.verbose, f"hand-crafted features of {int(keep.sum())} images")
            kept = [p for p, k in zip(X, keep, strict=True) if k]
            mat, _, _ = extract_batch(kept, None, "otsu", n_jobs=self.n_jobs,
                                      verbose=self.verbose)
            handcrafted = pd.DataFrame(mat, columns=feature_names(None))
            self.families_ = DEFAULT_FAMILIES
        else:
            handcrafted = pd.DataFrame(handcrafted).reset_index(drop=True)
            if len(handcrafted) != len(X):
                raise DataError(f"handcrafted has {len(handcrafted)} rows for {len(X)} images")
            handcrafted = handcrafted[keep].reset_index(drop=True)
            self.families_ = None
        self.method_ = "otsu"
        if copies is not None:
            # positions into X -> positions among the kept images; copies of dropped images go
            Xc, src = pd.DataFrame(copies[0]).reset_index(drop=True), np.asarray(copies[1])
            if len(Xc) != len(src):
                raise DataError(f"copies: {len(Xc)} rows but {len(src)} source positions")
            pos = np.cumsum(keep) - 1
            ok = keep[src]
            copies = (Xc[ok].reset_index(drop=True), pos[src[ok]])
        self._fit_tables(deep, handcrafted, cf.y, copies)
        self.train_time_s_ = time.perf_counter() - t0
        return self

    def _fit_tables(self, deep: DeepModel, handcrafted, y, copies=None):
        """Fit the stack on ``[hand-crafted | deep out-of-fold probabilities]`` (+ ``copies``,
        ``(hand-crafted table, source positions)``, with missing deep columns)."""
        import pandas as pd

        from sklearn.model_selection import PredefinedSplit

        from ..ensembles.column_groups import HANDCRAFTED
        from ..ensembles.stacking import StackedCellClassifier

        self.deep_ = deep
        self.classes_ = deep.classes_
        hc = pd.DataFrame(handcrafted).reset_index(drop=True)
        self.handcrafted_columns_ = [str(c) for c in hc.columns]
        names = proba_names(len(deep.classes_))
        table = pd.concat([hc, pd.DataFrame(deep.oof_proba_, columns=names)], axis=1)
        y = np.asarray(y)
        # The stack's folds are the networks' cross-fitting folds (copies join their source
        # image's fold): in fold k the deep learners are trained on the outputs of the other
        # networks and scored on network k's, which they never saw -- a shift like a new
        # lab's images, so the meta-learner weighs the deep learners as they hold up under it
        # (docs/experiments/2026-11-30-fused-stack-folds-and-domain-copies.md).
        fold = np.asarray(deep.fold_)
        groups = None  # source image of every row, so the SVCs' calibration keeps copies with it
        self.n_domain_copies_ = 0
        if copies is not None and len(copies[1]):
            Xc, src = pd.DataFrame(copies[0]).reset_index(drop=True), np.asarray(copies[1])
            missing = [c for c in self.handcrafted_columns_ if c not in Xc.columns]
            if missing:
                raise DataError(f"copies lack {len(missing)} hand-crafted columns, e.g. "
                                f"{missing[:3]}")
            extra = pd.concat([Xc[self.handcrafted_columns_],
                               pd.DataFrame(np.nan, index=Xc.index, columns=names)], axis=1)
            table = pd.concat([table, extra], axis=0, ignore_index=True)
            fold = np.concatenate([fold, fold[src]])
            groups = np.concatenate([np.arange(len(y)), src])
            y = np.concatenate([y, y[src]])
            self.n_domain_copies_ = len(src)
        self.stack_ = StackedCellClassifier(
            cv=PredefinedSplit(fold), feature_groups={"handcrafted": HANDCRAFTED,
                                                      "deep": r"^Cell_Embedding_CnnProba_"},
            random_state=self.random_state, n_jobs=self.n_jobs,
            **(self.stack_params or {})).fit(table, y, groups=groups)
        self.feature_names_in_ = np.asarray(table.columns, dtype=object)
        self.cv_scores_ = {**deep.cv_scores_, **getattr(self.stack_, "cv_scores_", {})}
        return self

    def _handcrafted(self, X, handcrafted=None):
        import pandas as pd

        if handcrafted is not None:
            hc = pd.DataFrame(handcrafted).reset_index(drop=True)
            missing = [c for c in self.handcrafted_columns_ if c not in hc.columns]
            if missing:
                raise DataError(f"hand-crafted table lacks {len(missing)} columns of the model, "
                                f"e.g. {missing[:3]}")
            return hc[self.handcrafted_columns_]
        from ..features.extractor import _as_sources, extract_batch

        mat, _, _ = extract_batch(_as_sources(X), getattr(self, "families_", None),
                                  getattr(self, "method_", "otsu"), n_jobs=self.n_jobs,
                                  verbose=self.verbose)
        from ..features.extractor import feature_names

        names = feature_names(getattr(self, "families_", None))
        hc = pd.DataFrame(mat, columns=names)
        missing = [c for c in self.handcrafted_columns_ if c not in hc.columns]
        if missing:
            raise DataError(f"the feature extractor no longer produces {len(missing)} columns "
                            f"the model was trained on, e.g. {missing[:3]}; retrain the model")
        return hc[self.handcrafted_columns_]

    def predict_proba(self, X, handcrafted=None) -> np.ndarray:
        """Class probabilities for images ``X``.

        Parameters
        ----------
        X : image paths / arrays
        handcrafted : DataFrame, optional
            Pre-computed hand-crafted features of ``X`` (same row order); computed with
            :func:`~morphocell.features.extractor.extract_batch` when omitted.

        Returns
        -------
        (n, C) array, columns in ``classes_`` order; NaN rows for unreadable images
        (:meth:`predict_proba_with_failures` says why).
        """
        return self.predict_proba_with_failures(X, handcrafted)[0]

    def predict_proba_with_failures(self, X, handcrafted=None
                                    ) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """:meth:`predict_proba` and the ``(source, reason)`` of the unreadable inputs."""
        import pandas as pd

        from sklearn.utils.validation import check_is_fitted

        from .embedder import decode_images

        check_is_fitted(self, "stack_")
        images, ok, failures = decode_images(X, self.deep_.input_size_,
                                             crop=self.deep_.crop_)
        n = len(ok) + len(failures)
        out = np.full((n, len(self.classes_)), np.nan)
        if not len(ok):
            return out, failures
        hc = self._handcrafted(X, handcrafted).iloc[ok].reset_index(drop=True)
        deep = pd.DataFrame(self.deep_._proba_decoded(images),
                            columns=proba_names(len(self.classes_)))
        table = pd.concat([hc, deep], axis=1)
        out[ok] = self.stack_.predict_proba(table)
        return out, failures

    def predict(self, X, handcrafted=None) -> np.ndarray:
        """Most probable class (``None`` for unreadable images)."""
        p = self.predict_proba(X, handcrafted)
        bad = np.isnan(p).any(axis=1)
        out = self.classes_[np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)].astype(object)
        out[bad] = None
        return out


def _deep_summary(deep) -> str:
    return (f"deep path: out-of-fold accuracy CNN softmax "
            f"{deep.cv_scores_['cnn_softmax']['accuracy']:.4f}, embeddings+SVC "
            f"{deep.cv_scores_['cnn_svc']['accuracy']:.4f} ({deep.train_time_s_:.0f} s)")


def fit_deep_model(paths, labels, features: str = "deep", handcrafted=None, cv: int = 5,
                   random_state=0, epochs: int | None = None, verbose: int = 1,
                   n_jobs=None, inner_cv: int = 5, stack_params=None, copies=None,
                   **embedder_params):
    """Train the deep (``"deep"``) or fused (``"fused"``) classifier without leakage.

    Parameters
    ----------
    paths : sequence of image paths (or arrays)
    labels : sequence of class labels
    features : {"deep", "fused"}
    handcrafted : DataFrame, optional
        ``"fused"`` only: hand-crafted features of ``paths`` (same order, e.g. from the
        feature cache); computed with ``extract_batch`` when omitted.
    cv : int, default 5
        Folds of the network cross-fitting (and of the stack).
    random_state : int or None
    epochs : int, optional
        Maximum CNN epochs (default ``DEFAULT_EMBEDDER["epochs"]``).
    n_jobs : int, optional
        Hand-crafted feature extraction and stack workers.
    inner_cv : int
        Folds of the SVC cross-validation inside each network's held-out fold.
    stack_params : dict, optional
        ``"fused"`` only: extra :class:`StackedCellClassifier` parameters (e.g. ``estimators``).
    copies : (DataFrame, int array), optional
        ``"fused"`` only: hand-crafted features of stain-augmented copies and the position
        of each copy's source image in ``paths`` (see :meth:`FusedModel.fit`).
    **embedder_params
        Other :class:`CNNEmbedder` parameters (``architecture``, ``input_size``, ...), over
        :data:`DEFAULT_EMBEDDER`; they make the model's ``embedder`` parameter
        (:func:`default_embedder`).

    Returns
    -------
    DeepModel or FusedModel
        Fitted, with ``predict_proba(paths)``, ``predict(paths)``, ``classes_`` and
        ``cv_scores_`` (out-of-fold scores of the CNN softmax, the SVC on embeddings and, for
        ``"fused"``, the stack).
    """
    if features not in ("deep", "fused"):
        raise MorphocellError(f"features must be 'deep' or 'fused' (got {features!r})")
    if epochs is not None:
        embedder_params["epochs"] = int(epochs)
    paths = list(paths)
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} images but {len(labels)} labels")
    embedder = default_embedder(**embedder_params)
    if features == "deep":
        if copies is not None:
            raise MorphocellError("domain copies need hand-crafted learners: use "
                                  "features='fused' (or a hand-crafted model)")
        deep = DeepModel(embedder=embedder, cv=cv, inner_cv=inner_cv, random_state=random_state,
                         verbose=verbose).fit(paths, labels)
        _log(verbose, _deep_summary(deep))
        return deep
    return FusedModel(embedder=embedder, cv=cv, inner_cv=inner_cv, stack_params=stack_params,
                      random_state=random_state, n_jobs=n_jobs, verbose=verbose
                      ).fit(paths, labels, handcrafted=handcrafted, copies=copies)
