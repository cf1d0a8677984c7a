"""The lab-adaptive classifier: every lab (domain) standardised on its own class-balanced
statistics, class priors re-estimated on a batch, a light head refitted on a few labels.

Cells from another lab differ mostly in pixel size, stain and illumination, and a sample's
class proportions differ from the training set's. :class:`LabAdaptiveClassifier` handles both
in feature space, on top of any classifier of hand-crafted features:

**Lab standardisation.** Every lab (a *domain*: a folder of the training data, a ``domain``
column of the manifest, or the batch being predicted) gets its own per-feature location and
scale, and the classifier sees ``z = (x - loc_lab) / scale_lab``. The location and scale are
*class-balanced*: over the *anchor classes* (the four common white cells, neutrophil,
lymphocyte, monocyte and eosinophil, where the model knows them) each class weighs the same,

.. math::

    loc_j = \\frac{1}{|A|} \\sum_{c \\in A} \\mu_{cj}, \\qquad
    scale_j^2 = \\frac{1}{|A|} \\sum_{c \\in A} \\left(\\sigma_{cj}^2 + (\\mu_{cj} - loc_j)^2\\right),

with :math:`\\mu_{cj}, \\sigma_{cj}` the weighted mean and standard deviation of feature
``j`` over the cells of class ``c``. A lab whose pixels are ``f`` times smaller multiplies
every length by ``f`` and every area by ``f^2``: both cancel in ``z``; a stain or illumination
change that shifts and stretches a colour feature cancels too. Because the weights are per
class, the statistics do not depend on the lab's class proportions. On the training labs the
memberships are the labels; on a new lab (no labels) they are the model's own posterior
probabilities, refined by a few rounds of expectation-maximisation (:func:`batch_statistics`).

**Class priors** (Saerens, Latinne & Decaestecker 2002, "Adjusting the outputs of a
classifier to new a priori probabilities", Neural Computation 14:21-41): the posteriors
:math:`p(c|x)` of a model trained with priors :math:`\\pi_c` are re-weighted to new priors
:math:`\\pi'_c` estimated on the batch by EM, :math:`p'(c|x) \\propto p(c|x)\\,\\pi'_c/\\pi_c`,
:math:`\\pi'_c = \\mathrm{mean}_x\\, p'(c|x)` (:func:`reestimate_priors`). A sample of mostly
neutrophils then does not get a count biased toward the training set's proportions.

**Few labels.** With ``k`` labelled cells per class, a light learner (the *head*:
standardised logistic regression, :func:`head_learner`) is refitted on a stored, compressed
sample of the source labs' standardised features plus the target cells (weighted up), and its
probabilities are averaged with the base model's (:func:`fit_head`). Unlabelled, the same head
can be refitted on the batch's confident cells (self-training).

:mod:`morphocell.adapt` turns a model file's model into an adapted one that records its
provenance, and trains models on several labs.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

__all__ = [
    "ANCHOR_CLASSES",
    "HEAD_WEIGHT",
    "MAX_TARGET_WEIGHT",
    "MIN_CLASS_SHARE",
    "MIN_UNLABELLED",
    "SCALE_FLOOR",
    "SELF_CONFIDENCE",
    "SELF_HEAD_WEIGHT",
    "SELF_PER_CLASS",
    "SOURCE_PER_CLASS",
    "Z_MAX",
    "LabAdaptiveClassifier",
    "adapt_transductive",
    "balanced_stats",
    "batch_statistics",
    "fit_head",
    "head_learner",
    "reestimate_priors",
]

#: Classes whose cells define a lab's location and scale (those the model knows).
ANCHOR_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
#: Fewest unlabelled cells :func:`morphocell.adapt.adapt` accepts (and the smallest batch
#: standardised on its own when predicting).
MIN_UNLABELLED = 20
#: A class enters the batch statistics when its estimated share of the batch reaches this.
MIN_CLASS_SHARE = 0.03
#: Source cells per (lab, class) kept in the model for few-shot refits (float16).
SOURCE_PER_CLASS = 60
#: Standardised values are clipped to +- this (a degenerate contour can give a feature far
#: outside every lab's range).
Z_MAX = 20.0
#: A new lab's scale of a feature is at least this share of the training labs' median scale.
SCALE_FLOOR = 0.1
#: Most rounds of the batch statistics' EM (:func:`batch_statistics`). More rounds move the
#: statistics further from the nearest training lab's; they can also drift, the posteriors of
#: one class feeding its share round after round (docs/lab_transfer.md).
EM_MAX_ITER = 3
#: The EM stops when the class memberships change by less than this (mean absolute change).
EM_TOL = 1e-3


def _standardize(M: np.ndarray, loc, scale) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.clip((M - loc) / scale, -Z_MAX, Z_MAX)


# -- statistics ------------------------------------------------------------------------------
def _as_matrix(X) -> np.ndarray:
    return np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float64)


def balanced_stats(X, weights: np.ndarray, min_weight: float = 2.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced location and scale of the columns of ``X`` (formula in the module doc).

    Parameters
    ----------
    X : (n, p) array-like, NaN allowed (ignored per column)
    weights : (n, K) membership of every row in each of K classes (one-hot labels or
        posterior probabilities); classes whose total weight is below ``min_weight`` are
        left out.

    Returns
    -------
    (loc, scale) : two (p,) arrays; scale is floored at a small positive value, and a column
    with no finite value gets loc 0, scale 1.
    """
    M = _as_matrix(X)
    W = np.asarray(weights, np.float64)
    fin = np.isfinite(M)
    M0 = np.where(fin, M, 0.0)
    means, vars_ = [], []
    for k in range(W.shape[1]):
        w = W[:, k]
        if w.sum() < min_weight:
            continue
        wf = w[:, None] * fin
        tot = wf.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = (w[:, None] * M0).sum(axis=0) / tot
            var = (w[:, None] * np.where(fin, (M0 - mu) ** 2, 0.0)).sum(axis=0) / tot
        means.append(mu)
        vars_.append(var)
    if not means:  # no class with enough weight: plain statistics of all rows
        with np.errstate(all="ignore"):
            loc, scale = np.nanmean(M, axis=0), np.nanstd(M, axis=0)
    else:
        mu, var = np.array(means), np.array(vars_)
        with np.errstate(all="ignore"):
            loc = np.nanmean(mu, axis=0)
            scale = np.sqrt(np.nanmean(var + (mu - loc) ** 2, axis=0))
    loc = np.where(np.isfinite(loc), loc, 0.0)
    floor = 1e-6 * np.maximum(np.abs(loc), 1.0)
    scale = np.where(np.isfinite(scale) & (scale > floor), scale, 1.0)
    return loc, scale


def reestimate_priors(proba: np.ndarray, train_priors: np.ndarray | None = None,
                      max_iter: int = 200, tol: float = 1e-6
                      ) -> tuple[np.ndarray, np.ndarray]:
    """New class priors of a batch by EM (Saerens et al. 2002) and the adjusted posteriors.

    ``proba`` (n, C): the model's posteriors under its training priors ``train_priors``
    (default uniform: the project's learners weigh classes equally). Returns
    ``(priors (C,), adjusted proba (n, C))``.
    """
    P = np.asarray(proba, np.float64)
    C = P.shape[1]
    pt = np.full(C, 1.0 / C) if train_priors is None else np.asarray(train_priors, np.float64)
    pt = np.clip(pt, 1e-12, None)
    pi = P.mean(axis=0)
    adj = P
    for _ in range(max_iter):
        a = P * (pi / pt)
        s = a.sum(axis=1, keepdims=True)
        adj = np.divide(a, s, out=np.full_like(a, 1.0 / C), where=s > 0)
        new = adj.mean(axis=0)
        if np.abs(new - pi).max() < tol:
            pi = new
            break
        pi = new
    return pi, adj


# -- the classifier --------------------------------------------------------------------------
def head_learner(random_state=None):
    """The light learner refitted by few-shot and self-training adaptation: median imputer,
    multinomial logistic regression (C = 0.05, class-balanced) on the standardised features."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(SimpleImputer(strategy="median"),
                         LogisticRegression(C=0.05, max_iter=300, class_weight="balanced"))


class LabAdaptiveClassifier(ClassifierMixin, BaseEstimator):
    """A classifier of hand-crafted features that standardises every lab on its own.

    ``fit(X, y, domains=...)`` computes each training lab's class-balanced location and scale
    (:func:`balanced_stats` with the labels), fits ``estimator`` on the standardised rows of
    all labs, and keeps a compressed sample of them (``SOURCE_PER_CLASS`` per lab and class,
    float16) for later few-shot refits.

    ``predict_proba(X)``:

    * adapted (``target_loc_`` set by :func:`fit_head`, which
      :func:`morphocell.adapt.adapt` calls): the stored target statistics, the
      adapted head and priors;
    * otherwise, a batch of at least ``min_batch`` rows (``batch_adapt=True``): the batch's
      own statistics estimated by EM with the model's posteriors
      (:func:`batch_statistics`), then the class priors re-estimated
      (:func:`reestimate_priors`) when ``prior_em``;
    * a smaller batch: the statistics of the training lab nearest to it.

    Parameters
    ----------
    estimator : classifier with ``predict_proba`` (default: a :class:`StackedCellClassifier`)
    anchor_classes : classes whose cells define a lab's statistics (those the model knows;
        all classes when it knows none of them)
    min_batch : int, smallest batch standardised on its own statistics
    n_iter : int, most EM rounds of the batch statistics (they stop earlier once the class
        memberships change by less than :data:`EM_TOL` on average)
    batch_adapt : bool, standardise a large enough batch on itself when not adapted
    prior_em : bool, re-estimate the class priors of a batch standardised on itself
    source_per_class : int, source cells per lab and class kept for few-shot refits
    random_state : int or None
    """

    def __init__(self, estimator=None, anchor_classes=ANCHOR_CLASSES, min_batch=MIN_UNLABELLED,
                 n_iter=EM_MAX_ITER, batch_adapt=True, prior_em=True, source_per_class=SOURCE_PER_CLASS,
                 random_state=None):
        self.estimator = estimator
        self.anchor_classes = anchor_classes
        self.min_batch = min_batch
        self.n_iter = n_iter
        self.batch_adapt = batch_adapt
        self.prior_em = prior_em
        self.source_per_class = source_per_class
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    def _anchor_idx(self) -> np.ndarray:
        cl = [str(c) for c in self.classes_]
        idx = [cl.index(c) for c in (self.anchor_classes or ()) if c in cl]
        return np.asarray(idx if idx else range(len(cl)), dtype=np.int64)

    def fit(self, X, y, domains=None, groups=None):
        """Fit on the rows of one or several labs (``domains``: the lab of every row)."""
        from .stacking import StackedCellClassifier

        M = _as_matrix(X)
        self.feature_names_in_ = (np.asarray(X.columns, dtype=object) if hasattr(X, "columns")
                                  else None)
        self.n_features_in_ = M.shape[1]
        y = np.asarray(y).astype(str)
        self.classes_ = np.unique(y)
        dom = (np.zeros(len(y), dtype=object) if domains is None
               else np.asarray(domains).astype(str))
        if dom.shape[0] != len(y):
            raise ValueError(f"domains has {dom.shape[0]} entries for {len(y)} rows")
        anchors = self._anchor_idx()
        self.domains_ = sorted(set(dom.tolist()))
        locs, scales = [], []
        Z = np.empty_like(M)
        for d in self.domains_:
            r = dom == d
            onehot = (y[r][:, None] == self.classes_[anchors][None, :]).astype(float)
            loc, scale = balanced_stats(M[r], onehot, min_weight=1.0)
            locs.append(loc)
            scales.append(scale)
            Z[r] = _standardize(M[r], loc, scale)
        self.domain_loc_, self.domain_scale_ = np.array(locs), np.array(scales)
        self.scale_floor_ = SCALE_FLOOR * np.median(self.domain_scale_, axis=0)
        est = self.estimator if self.estimator is not None else StackedCellClassifier(
            random_state=self.random_state)
        est = clone(est)
        if groups is not None:
            est.fit(Z, y, groups=groups)
        else:
            est.fit(Z, y)
        self.estimator_ = est
        rng = np.random.default_rng(self.random_state if isinstance(self.random_state, int)
                                    else 0)
        keep = []
        for d in self.domains_:
            for c in self.classes_:
                idx = np.flatnonzero((dom == d) & (y == c))
                if len(idx) > self.source_per_class:
                    idx = np.sort(rng.choice(idx, self.source_per_class, replace=False))
                keep.extend(idx.tolist())
        keep = np.asarray(keep, dtype=np.int64)
        self.source_Z_ = Z[keep].astype(np.float16)
        self.source_y_ = y[keep]
        self.source_domain_ = dom[keep]
        self.target_loc_ = self.target_scale_ = None
        self.head_ = None
        self.head_weight_ = 0.0
        self.target_priors_ = None
        return self

    # -- prediction ------------------------------------------------------------------------
    def _base_proba(self, Z: np.ndarray) -> np.ndarray:
        return self.estimator_.predict_proba(Z)

    def _combine(self, Z: np.ndarray) -> np.ndarray:
        p = self._base_proba(Z)
        head = getattr(self, "head_", None)
        if head is not None:
            ph = np.zeros_like(p)
            hc = [str(c) for c in head.classes_]
            cl = [str(c) for c in self.classes_]
            ph[:, [cl.index(c) for c in hc]] = head.predict_proba(Z)
            w = float(self.head_weight_)
            p = (1.0 - w) * p + w * ph
        return p

    def standardize(self, X, loc, scale) -> np.ndarray:
        """``(X - loc) / scale`` as float64, clipped to +-:data:`Z_MAX` (NaN stays NaN)."""
        return _standardize(_as_matrix(X), loc, scale)

    def _floor(self, scale: np.ndarray) -> np.ndarray:
        """A lab's scale floored at :data:`SCALE_FLOOR` x the median of the training labs'
        (a feature nearly constant in a small batch must not blow up)."""
        return np.maximum(scale, self.scale_floor_)

    def nearest_domain(self, X) -> int:
        """Index of the training lab whose location is nearest (in its own scale units) to
        the rows' median."""
        med = np.nanmedian(_as_matrix(X), axis=0)
        d = np.nanmean(np.abs((med - self.domain_loc_) / self.domain_scale_), axis=1)
        return int(np.nanargmin(d))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (columns in ``classes_`` order); see the class docstring."""
        M = _as_matrix(X)
        if getattr(self, "target_loc_", None) is not None:
            p = self._combine(self.standardize(M, self.target_loc_, self.target_scale_))
            if self.target_priors_ is not None:
                p = _apply_priors(p, self.target_priors_)
            return p
        if self.batch_adapt and M.shape[0] >= self.min_batch:
            return adapt_transductive(self, M)["proba"]
        k = self.nearest_domain(M)
        return self._combine(self.standardize(M, self.domain_loc_[k], self.domain_scale_[k]))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # the review threshold of morphocell.train reads the base stack's out-of-fold table
    @property
    def oof_proba_(self):
        return getattr(getattr(self, "estimator_", None), "oof_proba_", None)

    @property
    def cv_scores_(self):
        return getattr(getattr(self, "estimator_", None), "cv_scores_", {})


def _apply_priors(p: np.ndarray, priors: np.ndarray) -> np.ndarray:
    a = p * (np.asarray(priors) * p.shape[1])
    s = a.sum(axis=1, keepdims=True)
    return np.divide(a, s, out=np.full_like(a, 1.0 / p.shape[1]), where=s > 0)


def batch_statistics(model: LabAdaptiveClassifier, X, labels=None, n_iter: int | None = None,
                     min_share: float = MIN_CLASS_SHARE):
    """Class-balanced location and scale of a new lab's batch, by EM with the model.

    Starts from the training lab nearest to the batch; each round (at most ``n_iter``, the
    model's by default; fewer once the memberships change by less than :data:`EM_TOL`)
    standardises the batch,
    takes the model's posteriors (priors re-estimated) as class memberships (rows with a
    known label in ``labels`` — a sequence with ``None`` for unlabelled rows — keep their
    label), drops anchor classes below ``min_share`` of the batch, and recomputes
    :func:`balanced_stats`. Returns ``(loc, scale, proba)``, ``proba`` the last round's
    posteriors with re-estimated priors.
    """
    M = _as_matrix(X)
    n_iter = model.n_iter if n_iter is None else int(n_iter)
    cl = [str(c) for c in model.classes_]
    anchors = model._anchor_idx()
    known = None
    if labels is not None:
        lab = np.asarray([None if v is None else str(v) for v in labels], dtype=object)
        known = np.array([v is not None for v in lab])
        onehot = np.zeros((len(lab), len(cl)))
        for i in np.flatnonzero(known):
            onehot[i, cl.index(lab[i])] = 1.0
    k = model.nearest_domain(M)
    loc, scale = model.domain_loc_[k], model.domain_scale_[k]
    proba = None
    previous = None
    for _ in range(max(1, n_iter)):
        p = model._combine(_standardize(M, loc, scale))
        _, proba = reestimate_priors(p)
        W = proba.copy()
        if known is not None and known.any():
            W[known] = onehot[known]
        Wa = W[:, anchors]
        if previous is not None and np.mean(np.abs(Wa - previous)) < EM_TOL:
            break
        previous = Wa
        share = Wa.sum(axis=0) / max(len(M), 1)
        ok = share >= min_share
        if not ok.any():
            ok = share >= share.max()
        loc, scale = balanced_stats(M, Wa[:, ok], min_weight=1.0)
        scale = model._floor(scale)
    p = model._combine(_standardize(M, loc, scale))
    _, proba = reestimate_priors(p)
    return loc, scale, proba


def adapt_transductive(model: LabAdaptiveClassifier, X, prior_em: bool | None = None) -> dict:
    """Adapt to a batch and classify it in one go (``predict --adapt``): the batch's
    statistics by :func:`batch_statistics`, then the posteriors with the class priors
    re-estimated on it (when ``prior_em``, default the model's). Returns ``{"proba",
    "priors", "loc", "scale"}``."""
    M = _as_matrix(X)
    loc, scale, _ = batch_statistics(model, M)
    p = model._combine(_standardize(M, loc, scale))
    use_em = model.prior_em if prior_em is None else prior_em
    priors = None
    if use_em:
        priors, p = reestimate_priors(p)
    return {"proba": p, "priors": priors, "loc": loc, "scale": scale}


#: Self-training: a cell is a pseudo-label when its adapted top probability reaches this.
SELF_CONFIDENCE = 0.9
#: Self-training: at most this many pseudo-labelled cells per class.
SELF_PER_CLASS = 50
#: Weight of the head's probabilities in a model adapted with labelled cells (the base
#: model's: 1 - this); the best mean over the leave-one-lab-out folds of the labs the default
#: model trains on (docs/lab_transfer.md).
HEAD_WEIGHT = 0.75
#: Weight of the head's probabilities in a model adapted without labels (self-training).
SELF_HEAD_WEIGHT = 0.5
#: Largest weight of one target cell in the head's fit (source cells weigh 1); a class's
#: target cells together weigh at most as much as its source cells.
MAX_TARGET_WEIGHT = 20.0


def fit_head(model: LabAdaptiveClassifier, X, labels=None, *, self_training: bool = True,
             head_weight: float | None = None, random_state=None) -> LabAdaptiveClassifier:
    """A copy of ``model`` adapted to the lab of the rows ``X`` (array-like, features).

    ``labels``: ``None`` (unlabelled) or a sequence with a class name for the labelled rows
    and ``None`` for the others. The lab's statistics come from all rows
    (:func:`batch_statistics`, the labelled rows keep their labels); the class priors are
    re-estimated on the batch when nothing is labelled. The head (:func:`head_learner`) is
    fitted on the model's stored source sample plus the labelled rows (each weighing up to
    :data:`MAX_TARGET_WEIGHT`) or, unlabelled with ``self_training``, the confident rows
    (:data:`SELF_CONFIDENCE`, at most :data:`SELF_PER_CLASS` per class) with their predicted
    class. The returned model predicts with the stored statistics and the head's
    probabilities weighted ``head_weight`` against the base model's (default
    :data:`HEAD_WEIGHT` with labels, :data:`SELF_HEAD_WEIGHT` with pseudo-labels).
    """
    import copy

    M = _as_matrix(X)
    loc, scale, proba = batch_statistics(model, M, labels)
    new = copy.copy(model)
    new.target_loc_, new.target_scale_ = loc, scale
    new.head_, new.head_weight_ = None, 0.0
    new.target_priors_ = None
    cl = np.asarray([str(c) for c in model.classes_], dtype=object)
    lab = None if labels is None else np.asarray(
        [None if v is None else str(v) for v in labels], dtype=object)
    if lab is not None and any(v is not None for v in lab):
        sel = np.flatnonzero([v is not None for v in lab])
        yt = lab[sel].astype(str)
        weight = HEAD_WEIGHT if head_weight is None else head_weight
    else:
        weight = SELF_HEAD_WEIGHT if head_weight is None else head_weight
        priors, _ = reestimate_priors(model._combine(_standardize(M, loc, scale)))
        new.target_priors_ = priors
        if not self_training:
            return new
        top = proba.max(axis=1)
        pred = cl[proba.argmax(axis=1)]
        sel = []
        for c in cl:
            idx = np.flatnonzero((pred == c) & (top >= SELF_CONFIDENCE))
            idx = idx[np.argsort(-top[idx])][:SELF_PER_CLASS]
            sel.extend(idx.tolist())
        sel = np.sort(np.asarray(sel, dtype=np.int64))
        if len(set(pred[sel].tolist())) < 2:
            return new
        yt = pred[sel].astype(str)
    Zs = model.source_Z_.astype(np.float64)
    ys = model.source_y_.astype(str)
    Zt = _standardize(M[sel], loc, scale)
    wt = np.empty(len(yt))
    for c in set(yt.tolist()):
        n_src = max(int((ys == c).sum()), 1)
        k = int((yt == c).sum())
        wt[yt == c] = min(MAX_TARGET_WEIGHT, n_src / k)
    Z = np.vstack([Zs, Zt])
    y = np.concatenate([ys, yt])
    w = np.concatenate([np.ones(len(ys)), wt])
    head = head_learner(random_state)
    head.fit(Z, y, logisticregression__sample_weight=w)
    new.head_ = head
    new.head_weight_ = float(weight)
    return new
