"""Training as a library function: labelled images in, a fitted model and its record out.

:func:`train` extracts (or fetches from the feature cache) what the chosen kind of model
needs, fits it with cross-validation and returns a :class:`TrainResult`: the
:class:`~morphocell.model_io.SavedModel` (estimator, classes, feature names, atypical classes,
metadata), the cross-validated scores and the images that could not be used. It prints
nothing; ``verbose`` shows progress bars and ``on_step`` receives one line per stage.

Three kinds of model (``features``):

* ``"handcrafted"`` -- ``Pipeline([("features", FeatureExtractor()), ("clf",
  StackedCellClassifier())])`` on the shape, colour and texture features;
* ``"deep"`` -- CNN embeddings, cross-fitted (:mod:`morphocell.deep.crossfit`, deep extra);
* ``"fused"`` -- both, the stack seeing hand-crafted columns and cross-fitted embeddings.

With ``domains`` (the lab of every image; :func:`load_labs` reads them from a folder of lab
folders or a manifest's ``domain`` column), a hand-crafted model is trained on several labs:
``Pipeline([("features", FeatureExtractor()), ("clf", LabAdaptiveClassifier(
StackedCellClassifier()))])``, every lab standardised on its own statistics
(:mod:`morphocell.ensembles.lab_adaptive`), and each lab scored by a model trained on the
others (leave-one-lab-out, ``metadata["lab_cv"]``).

>>> from morphocell.datasets import sample_folder
>>> from morphocell.io import load_folder
>>> paths, labels = load_folder(sample_folder())            # doctest: +SKIP
>>> result = train(paths, labels, cv=5)                       # doctest: +SKIP
>>> result.save("model.mcm")                                  # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._train_data import load_labelled, load_labs
from ._train_record import (
    _check_duplicates,
    _check_trainable,
    _data_sha256,
    _failures,
    _metadata,
    content_groups,
    n_exact_duplicates,
    near_duplicates,
    readability,
    review_reference,
)
from .batch.cache import compute_features
from .errors import DataError, MorphocellError
from .report import REVIEW_ACCURACY, plural

__all__ = [
    "DEFAULT_DOMAIN_COPIES",
    "FEATURE_KINDS",
    "NOVELTY_FAMILIES",
    "TrainResult",
    "check_options",
    "compute_features",
    "default_domain_copies",
    "load_labelled",
    "load_labs",
    "review_reference",
    "train",
]

#: The kinds of model :func:`train` fits.
FEATURE_KINDS = ("handcrafted", "deep", "fused")

#: Share of the training images that also enter training as one domain-randomised copy each
#: (other stain, illumination, blur, scale; :func:`morphocell.preprocess.write_stain_copies`)
#: for models with hand-crafted learners; it makes them hold up on other labs' images at
#: almost no cost on their own lab's (docs/cross_lab.md). 0 turns the copies off.
DEFAULT_DOMAIN_COPIES = 0.35

#: Feature families a deep model computes for its out-of-distribution reference
#: (:mod:`morphocell.novelty`).
NOVELTY_FAMILIES = ("shape", "color")


def default_domain_copies(features: str) -> float:
    """The ``domain_copies`` a model of ``features`` gets by default:
    :data:`DEFAULT_DOMAIN_COPIES` where it has hand-crafted learners (``"handcrafted"``,
    ``"fused"``), 0 for ``"deep"`` (the CNN has its own augmentation)."""
    return DEFAULT_DOMAIN_COPIES if features in ("handcrafted", "fused") else 0.0


def check_options(features: str = "handcrafted", domain_copies: float | None = None,
                  review_accuracy: float = REVIEW_ACCURACY, multilab: bool = False) -> float:
    """Validate the training options before any work; return the ``domain_copies`` in force.

    ``multilab``: training on several labs (``train(..., domains=...)``): hand-crafted only,
    and without domain copies (default 0; each lab's own statistics take their place).

    Raises
    ------
    DataError
        An unknown ``features`` kind, a fraction outside [0, 1], a review accuracy outside
        (0, 1], domain copies asked of a deep model (it has no hand-crafted learner to train
        on them; its CNN has its own augmentation, ``cnn_augment``) or of a multi-lab model,
        a multi-lab model that is not hand-crafted, or ``"deep"`` / ``"fused"`` without
        TensorFlow.
    """
    if features not in FEATURE_KINDS:
        raise DataError(f"features must be one of {', '.join(FEATURE_KINDS)} (got {features!r})")
    if multilab:
        if features != "handcrafted":
            raise DataError(f"training on several labs makes a hand-crafted model (got features "
                            f"{features!r}): each lab's features are standardised on its own "
                            "statistics")
        if domain_copies:
            raise DataError("domain copies are not used when training on several labs: each "
                            "lab is standardised on its own statistics (a copy with another "
                            "stain belongs to no lab); leave domain copies at 0")
        domain_copies = 0.0
    copies = default_domain_copies(features) if domain_copies is None else domain_copies
    if not 0 <= float(copies) <= 1:
        raise DataError(f"domain copies: the fraction must lie in [0, 1] (got {copies!r})")
    if not 0 < float(review_accuracy) <= 1:
        raise DataError(f"review accuracy: the target must lie in (0, 1] "
                        f"(got {review_accuracy!r})")
    if copies and features == "deep":
        raise DataError("domain copies train hand-crafted learners: use them with features "
                        "'handcrafted' or 'fused' (the CNN of a deep model has its own "
                        "augmentation, cnn_augment)")
    if features != "handcrafted":
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            raise DataError(f"features {features!r} need the deep extra (TensorFlow/Keras): "
                            "pip install 'morphocell[deep]'")
    return float(copies)


# -- result -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : SavedModel
        The fitted estimator with its classes, feature names, atypical classes and metadata
        (what :func:`morphocell.model_io.save_model` writes).
    failures : list of (path, status, error)
        The images that could not be used (unreadable, or no cell found for a model that
        needs the hand-crafted features).
    feature_stats : dict
        Feature-cache hits and computed rows (empty for a deep model).
    seconds_features, seconds_fit : float
        Time spent extracting features and fitting.
    X, y : DataFrame, array or None
        The hand-crafted training table and labels of a hand-crafted model (the images used,
        then their domain-randomised copies); ``None`` for deep and fused models.
    duplicates : list of list of path
        Files with identical content (same SHA-256), one list per image. A hand-crafted model
        trains on every file but keeps each list in one cross-validation fold; a deep or
        fused model trains on the first file of each list only.
    near_duplicates : list of list of path
        Files that hold the same cell saved again with other content (re-encoded, slightly
        resized, turned by quarter turns, mirrored, brighter or darker:
        :mod:`morphocell.near_duplicates`), one list per cell (one file per content: exact
        copies are in ``duplicates``). They are treated as ``duplicates`` are: one
        cross-validation fold per list (hand-crafted), the first file only (deep, fused).
    domains : array or None
        With several labs: the lab of every row of ``X``.
    """

    model: Any
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    feature_stats: dict = field(default_factory=dict)
    seconds_features: float = 0.0
    seconds_fit: float = 0.0
    X: Any = None
    y: Any = None
    duplicates: list[list[str]] = field(default_factory=list)
    domains: Any = None
    near_duplicates: list[list[str]] = field(default_factory=list)

    @property
    def estimator(self):
        """The fitted estimator (a scikit-learn Pipeline, or a deep / fused model)."""
        return self.model.estimator

    @property
    def metadata(self) -> dict:
        """The training record stored in the model file."""
        return self.model.metadata

    @property
    def cv_scores(self) -> dict:
        """Out-of-fold accuracy and macro-F1 per learner (``{}`` when there are none)."""
        return self.model.metadata.get("cv_scores") or {}

    @property
    def lab_cv(self) -> dict | None:
        """Leave-one-lab-out scores of a model trained on several labs
        (:func:`morphocell.adapt.leave_one_lab_out`); ``None`` otherwise."""
        return self.model.metadata.get("lab_cv")

    @property
    def n_failed(self) -> int:
        """Images that could not be used."""
        return len(self.failures)

    @property
    def n_domain_copies(self) -> int:
        """Domain-randomised copies the hand-crafted learners were trained on."""
        return int(self.model.metadata.get("n_domain_copies") or 0)

    def save(self, path: str | os.PathLike, explain: bool = True) -> list[Path]:
        """Write the model file and (``explain``) its explanation folder
        ``<stem>_explain`` beside it (:func:`morphocell.report.write_explanation`); returns
        the paths written."""
        from .model_io import save_model
        from .report import write_explanation

        path = Path(path)
        save_model(self.model, path)
        written = [path]
        if explain:
            written += write_explanation(self.model, explanation_folder(path))
        return written


def explanation_folder(model_path: str | os.PathLike) -> Path:
    """Where :meth:`TrainResult.save` writes a model's explanation: ``<stem>_explain``."""
    p = Path(model_path)
    return p.with_name(p.stem + "_explain")


# -- training ---------------------------------------------------------------------------------
def train(paths: Sequence[str | os.PathLike], labels: Sequence[str], *,
          features: str = "handcrafted", cv: int = 5, random_state: int | None = 0,
          n_jobs: int | None = None, cache_dir: str | os.PathLike | None = None,
          domain_copies: float | None = None, review_accuracy: float = REVIEW_ACCURACY,
          families: Sequence[str] | None = None, method: str = "otsu",
          estimator_params: dict | None = None, epochs: int | None = None,
          cnn_crop: float | None = None, cnn_augment: str | None = None,
          domains: Sequence[str] | None = None, lab_cv: bool = True, verbose: int = 0,
          on_step: Callable[[str], None] | None = None) -> TrainResult:
    """Fit a classifier of blood-cell images.

    Parameters
    ----------
    paths : sequence of path
        Image files, one cell each.
    labels : sequence of str
        The class of each image.
    features : {"handcrafted", "deep", "fused"}
        The kind of model (module docstring).
    cv : int
        Cross-validation folds (out-of-fold scores, the stack's meta-learner, the review
        threshold).
    random_state : int or None
        Seed of every random choice; the same seed gives the same model.
    n_jobs : int, optional
        Worker processes for features and learners.
    cache_dir : path, optional
        Feature cache folder (:class:`~morphocell.batch.FeatureCache`); the domain copies
        are written under ``cache_dir/domain_copies`` (a temporary folder without it).
    domain_copies : float in [0, 1], optional
        Share of the images (drawn per class) that also train the hand-crafted learners as
        one domain-randomised copy each, in the same cross-validation fold as their image.
        Default :func:`default_domain_copies` (0.35; 0 for ``"deep"``, which refuses copies).
    review_accuracy : float in (0, 1]
        Target accuracy of the cells above the review threshold stored in the model
        (:func:`review_reference`).
    families, method : hand-crafted only
        Feature families (default all) and segmentation method.
    estimator_params : dict, optional
        Hand-crafted only: extra :class:`~morphocell.ensembles.StackedCellClassifier`
        parameters (e.g. ``estimators``).
    epochs, cnn_crop, cnn_augment : deep and fused only
        CNN epochs, crop share and augmentation (defaults:
        ``morphocell.deep.crossfit.DEFAULT_EMBEDDER``).
    domains : sequence of str, optional
        The lab of each image: train on several labs (hand-crafted, no domain copies). The
        classifier is a :class:`~morphocell.ensembles.lab_adaptive.LabAdaptiveClassifier`
        over the stack; ``metadata["domains"]`` records the labs and their cells per class,
        ``metadata["cv_by_lab"]`` the stack's out-of-fold accuracy on each lab's cells (its
        folds mix the labs), and the lab is part of ``data_sha256``.
    lab_cv : bool
        With 2 labs or more: score each lab with a model trained on the others
        (:func:`morphocell.adapt.leave_one_lab_out`, ``metadata["lab_cv"]``): the accuracy
        to expect in a lab the model has not seen. One more fit per lab.
    verbose : int
        Progress bars (0: none).
    on_step : callable, optional
        Called with one line of text at the start of each long stage.

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        Bad options (:func:`check_options`), fewer than 2 classes or fewer than 2 usable
        images in a class, ``domains`` not one non-empty name per image, the same image
        (identical content or a near-duplicate) under two labels.
    MorphocellError
        ``"deep"`` / ``"fused"`` without the deep extra (TensorFlow).
    """
    copies = check_options(features, domain_copies, review_accuracy,
                           multilab=domains is not None)
    paths = [os.fspath(p) for p in paths]
    labels = [str(v) for v in labels]
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} paths but {len(labels)} labels")
    if domains is not None:
        domains = [str(d).strip() for d in domains]
        if len(domains) != len(paths):
            raise DataError(f"{len(paths)} paths but {len(domains)} domains (labs)")
        if not all(domains):
            i = domains.index("")
            raise DataError(f"image {paths[i]} has an empty domain (lab) name")
    step = on_step or (lambda _msg: None)
    hashes, dups = content_groups(paths)
    _check_duplicates(paths, labels, dups)
    step(f"near-duplicates among {plural(len(paths), 'image')} ...")
    near, linked = near_duplicates(paths, labels, hashes, dups, n_jobs=n_jobs)
    # every later step keeps each linked group (exact and near copies) in one fold
    exact, dups = dups, linked
    if domains is not None:
        res = _train_multilab(paths, labels, domains, hashes, dups, cv=cv,
                              random_state=random_state, n_jobs=n_jobs, families=families,
                              method=method, cache_dir=cache_dir, verbose=verbose,
                              estimator_params=estimator_params, lab_cv=lab_cv,
                              review_accuracy=review_accuracy, step=step)
    elif features == "handcrafted":
        res = _train_handcrafted(paths, labels, hashes, dups, cv=cv,
                                 random_state=random_state, n_jobs=n_jobs, families=families,
                                 method=method, cache_dir=cache_dir, verbose=verbose,
                                 estimator_params=estimator_params, domain_copies=copies,
                                 review_accuracy=review_accuracy, step=step)
    else:
        res = _train_deep(paths, labels, hashes, dups, features=features, cv=cv,
                          random_state=random_state, epochs=epochs, n_jobs=n_jobs,
                          cache_dir=cache_dir, verbose=verbose, cnn_crop=cnn_crop,
                          cnn_augment=cnn_augment, domain_copies=copies,
                          review_accuracy=review_accuracy, step=step)
    res.duplicates = [[paths[i] for i in g] for g in exact]
    res.near_duplicates = [[paths[i] for i in g] for g in near]
    return res


def _train_handcrafted(paths, labels, hashes, dups, *, cv, random_state, n_jobs, families, method,
                       cache_dir, verbose, estimator_params, domain_copies, review_accuracy,
                       step) -> TrainResult:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import DEFAULT_FAMILIES, FeatureExtractor
    from .model_io import SavedModel, default_atypical_classes

    fams = tuple(families or DEFAULT_FAMILIES)
    t0 = time.perf_counter()
    step(f"features of {plural(len(paths), 'image')} ...")
    X, st, er, stats = compute_features(paths, fams, method, cache_dir, n_jobs, verbose)
    ok = np.array([s == "ok" for s in st], dtype=bool)
    y = np.asarray(labels, dtype=object)[ok]
    Xok = X[ok].reset_index(drop=True)
    _check_trainable(y)
    n_ok = int(ok.sum())
    group_ok = _content_group_ids(len(paths), dups, ok)
    groups = group_ok if dups else None
    n_copies = 0
    if domain_copies:
        step(f"domain-randomised copies of {domain_copies:.0%} of the images and their "
             "features ...")
        ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
        Xc, yc, src = _domain_copy_features(ok_paths, y, domain_copies, random_state, fams,
                                            method, cache_dir, n_jobs, verbose)
        n_copies = len(yc)
        groups = np.concatenate([group_ok, group_ok[src]])
        Xok = pd.concat([Xok, Xc], ignore_index=True)
        y = np.concatenate([y, yc])
    t_feat = time.perf_counter() - t0
    clf = StackedCellClassifier(cv=cv, random_state=random_state, n_jobs=n_jobs,
                                **(estimator_params or {}))
    step(f"fitting the stack ({len(clf.estimators)} base learners x {cv} folds, then refit) "
         f"on {plural(n_ok, 'image')}"
         + (f" + {n_copies} domain-randomised copies" if n_copies else "") + " ...")
    t0 = time.perf_counter()
    clf.fit(Xok, y.astype(str), groups=groups)
    t_fit = time.perf_counter() - t0
    pipe = Pipeline([("features", FeatureExtractor(families=fams, method=method).fit()),
                     ("clf", clf)])
    classes = [str(c) for c in clf.classes_]
    meta = _metadata("handcrafted", paths, labels, hashes, dups, y[:n_ok], clf, classes, cv=cv,
                     random_state=random_state, domain_copies=domain_copies,
                     n_domain_copies=n_copies, cv_scores=clf.cv_scores_,
                     review_accuracy=review_accuracy,
                     reference=(Xok.iloc[:n_ok], y[:n_ok]),
                     specific={"families": list(fams), "segmentation": method})
    model = SavedModel(pipe, classes, list(X.columns), default_atypical_classes(classes), meta)
    return TrainResult(model, _failures(paths, st, er), stats, t_feat, t_fit, Xok, y)


def _content_group_ids(n: int, dups, ok: np.ndarray) -> np.ndarray:
    """Group ids 0..k-1 (in order of appearance) of the usable images: identical images
    (same content) share one, so they never fall in two cross-validation folds."""
    first = np.arange(n)
    for g in dups:
        first[g] = g[0]
    return np.unique(first[ok], return_inverse=True)[1]


def _train_multilab(paths, labels, domains, hashes, dups, *, cv, random_state, n_jobs,
                    families, method, cache_dir, verbose, estimator_params, lab_cv,
                    review_accuracy, step) -> TrainResult:
    from .adapt import leave_one_lab_out, train_multilab
    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import DEFAULT_FAMILIES

    fams = tuple(families or DEFAULT_FAMILIES)
    n_labs = len(set(domains))
    t0 = time.perf_counter()
    step(f"features of {plural(len(paths), 'image')} from {plural(n_labs, 'lab')} ...")
    X, st, er, stats = compute_features(paths, fams, method, cache_dir, n_jobs, verbose)
    ok = np.array([s == "ok" for s in st], dtype=bool)
    y = np.asarray(labels, dtype=object)[ok].astype(str)
    dom = np.asarray(domains, dtype=object)[ok].astype(str)
    Xok = X[ok].reset_index(drop=True)
    _check_trainable(y)
    groups = _content_group_ids(len(paths), dups, ok) if dups else None
    t_feat = time.perf_counter() - t0
    clf = StackedCellClassifier(cv=cv, random_state=random_state, n_jobs=n_jobs,
                                **(estimator_params or {}))
    n_ok = int(ok.sum())
    extra = {"n_images": len(paths), "n_used": n_ok, "n_failed": len(paths) - n_ok,
             "domain_copies": 0.0, "n_domain_copies": 0,
             "n_duplicates": n_exact_duplicates(hashes), "cv": cv}
    t0 = time.perf_counter()
    if lab_cv and len(set(dom.tolist())) >= 2:
        step(f"leave-one-lab-out: {plural(len(set(dom.tolist())), 'fit')}, each lab classified "
             "by a model trained on the others ...")
        extra["lab_cv"] = leave_one_lab_out(Xok, y, dom, estimator=clf, groups=groups,
                                            random_state=random_state)
    step(f"fitting the lab-adaptive stack ({len(clf.estimators)} base learners x {cv} folds, "
         f"then refit) on {plural(n_ok, 'image')} from {plural(len(set(dom.tolist())), 'lab')}"
         " ...")
    # the lab is part of what the model learnt from: it enters the data hash
    sha = _data_sha256(paths, [f"{lab}\t{d}" for lab, d in zip(labels, domains, strict=True)],
                       hashes)
    model = train_multilab(Xok, y, dom, estimator=clf, families=fams, method=method,
                           random_state=random_state, groups=groups,
                           review_accuracy=review_accuracy, data_sha256=sha,
                           extra_metadata=extra)
    t_fit = time.perf_counter() - t0
    return TrainResult(model, _failures(paths, st, er), stats, t_feat, t_fit, Xok, y,
                       domains=dom)


def _domain_copy_features(paths, y, fraction, random_state, families, method, cache_dir,
                          n_jobs, verbose):
    """Features of one domain-randomised copy of a per-class ``fraction`` of ``paths``:
    ``(X, labels, index of each copy's source image)``, copies that fail dropped."""
    import contextlib
    import tempfile

    import pandas as pd

    from .preprocess import write_stain_copies

    seed = random_state if isinstance(random_state, (int, np.integer)) else 0
    rng = np.random.default_rng([int(seed), 0x646F6D])
    src = []
    for c in sorted(set(y)):
        idx = np.flatnonzero(y == c)
        k = round(float(fraction) * len(idx))
        src.extend(rng.choice(idx, size=k, replace=False).tolist())
    src = np.sort(np.asarray(src, dtype=np.int64))
    if len(src) == 0:  # every class too small for one copy at this fraction
        from .features.extractor import feature_names

        return (pd.DataFrame(columns=feature_names(families), dtype=float), y[:0], src)
    # without a cache folder the copies live in a temporary folder for this training only
    scratch = (contextlib.nullcontext(None) if cache_dir is not None
               else tempfile.TemporaryDirectory(prefix="morphocell-copies-"))
    with scratch as tmp:
        folder = Path(cache_dir) / "domain_copies" if cache_dir is not None else Path(tmp)
        copies = write_stain_copies([paths[i] for i in src], folder, seed=int(seed),
                                     n_threads=n_jobs if n_jobs and n_jobs > 0 else None,
                                     verbose=verbose)
        have = np.array([c is not None for c in copies], dtype=bool)
        src = src[have]
        Xc, st, _, _ = compute_features([c for c in copies if c is not None], families, method,
                                        cache_dir, n_jobs, verbose)
    good = np.array([s == "ok" for s in st], dtype=bool)
    return Xc[good].reset_index(drop=True), y[src[good]], src[good]


def _train_deep(paths, labels, hashes, dups, *, features, cv, random_state, epochs, n_jobs,
                cache_dir, verbose, cnn_crop, cnn_augment, domain_copies, review_accuracy,
                step) -> TrainResult:
    from .model_io import SavedModel, default_atypical_classes

    try:
        from .deep.crossfit import fit_deep_model
    except ImportError as exc:
        raise MorphocellError(
            f"features {features!r} need the deep extra: install it with "
            f"pip install 'morphocell[deep]' (TensorFlow/Keras) ({exc})") from None
    t0 = time.perf_counter()
    handcrafted = None
    if features == "fused":
        step(f"hand-crafted features of {plural(len(paths), 'image')} ...")
        X, st, er, stats = compute_features(paths, None, "otsu", cache_dir, n_jobs, verbose)
    else:
        st, er = readability(paths)
        stats = {}
    ok = np.array([s == "ok" for s in st], dtype=bool)
    # the network cross-fitting has no groups: a later copy of an image (exact or near) is
    # left out
    for g in dups:
        ok[g[1:]] = False
    ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
    y = np.asarray(labels, dtype=object)[ok].astype(str)
    _check_trainable(y)
    if features == "fused":
        handcrafted = X[ok].reset_index(drop=True)
    kw = {"epochs": epochs} if epochs is not None else {}
    if cnn_crop is not None:
        kw["crop"] = float(cnn_crop)
    if cnn_augment is not None:
        kw["augment"] = cnn_augment
    copies = None
    if domain_copies:
        step(f"hand-crafted features of domain-randomised copies of {domain_copies:.0%} of "
             "the images ...")
        Xc, _, src = _domain_copy_features(ok_paths, y, domain_copies, random_state, None,
                                           "otsu", cache_dir, n_jobs, verbose)
        copies = (Xc, src)
    if handcrafted is None:  # deep: the stain and size features of the novelty reference
        Xd, std, _, _ = compute_features(ok_paths, NOVELTY_FAMILIES, "otsu", cache_dir, n_jobs,
                                         verbose)
        good = np.array([s == "ok" for s in std], dtype=bool)
        reference = (Xd[good], y[good])
    else:
        reference = (handcrafted, y)
    t_feat = time.perf_counter() - t0
    step(f"training the {features} model ({cv}-fold cross-fitting) on "
         f"{plural(len(ok_paths), 'image')} ...")
    t0 = time.perf_counter()
    est = fit_deep_model(ok_paths, list(y), features=features, handcrafted=handcrafted, cv=cv,
                         random_state=random_state, verbose=verbose, n_jobs=n_jobs,
                         copies=copies, **kw)
    t_fit = time.perf_counter() - t0
    deep = getattr(est, "deep_", est)
    classes = [str(c) for c in est.classes_]
    meta = _metadata(features, paths, labels, hashes, dups, y, est, classes, cv=cv,
                     random_state=random_state,
                     domain_copies=domain_copies,
                     n_domain_copies=int(getattr(est, "n_domain_copies_", 0)),
                     cv_scores=getattr(est, "cv_scores_", {}),
                     review_accuracy=review_accuracy, reference=reference,
                     specific={"epochs": epochs, "cnn_crop": deep.crop_,
                               "cnn_augment": deep.embedders_[0].augment})
    feats = [str(c) for c in getattr(est, "feature_names_in_", [])]
    model = SavedModel(est, classes, feats, default_atypical_classes(classes), meta)
    return TrainResult(model, _failures(paths, st, er), stats, t_feat, t_fit)



from ._utils import CallableModule

sys.modules[__name__].__class__ = CallableModule  # calling the module calls its function
