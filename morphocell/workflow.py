"""The train / predict / evaluate / demo workflow behind the ``morphocell`` sub-commands.

Each ``*_command(args) -> int`` takes the argparse namespace built in :mod:`morphocell.cli`
and returns an exit code (0 ok, 3 some images failed but the rest was written). The work is
done by plain functions usable from Python:

* :func:`compute_features` -- hand-crafted features of image files (through the cache);
* :func:`train_handcrafted` -- features -> :class:`StackedCellClassifier` -> a
  :class:`~morphocell.model_io.SavedModel` holding
  ``Pipeline([("features", FeatureExtractor()), ("clf", StackedCellClassifier())])``;
* :func:`predict_paths` -- class probabilities for image files, failures recorded per image;
* :func:`evaluate_paths` -- metrics of a model on labelled images.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._utils import write_csv
from .errors import DataError, MorphocellError
from .report import REVIEW_ACCURACY

__all__ = ["compute_features", "train_handcrafted", "train_deep", "predict_paths",
           "evaluate_paths", "predictions_frame", "write_explanation", "train_command",
           "predict_command", "evaluate_command", "demo_command"]

EXIT_OK, EXIT_PARTIAL = 0, 3


def _eprint(*a) -> None:
    print(*a, file=sys.stderr)


def _write_json(obj, path) -> None:
    from ._utils import atomic_write

    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=_jsonable)
        fh.write("\n")


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- data -------------------------------------------------------------------------------------
def load_labelled(data: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(paths, labels)`` of a folder of class subfolders or a manifest CSV with labels."""
    from .io import resolve_inputs

    paths, labels = resolve_inputs([data])
    if labels is None:
        raise DataError("no labels: give a folder of class subfolders or a manifest CSV with "
                        "'path' and 'label' columns", data)
    missing = [p for p, lab in zip(paths, labels, strict=True) if not lab]
    if missing:
        raise DataError(f"{len(missing)} manifest rows have an empty label "
                        f"(first: {missing[0]})", data)
    return paths, labels


def compute_features(paths: Sequence[str], families=None, method: str = "otsu",
                     cache_dir: str | os.PathLike | None = None, n_jobs=None, verbose: int = 0):
    """Hand-crafted features of image files: ``(X DataFrame, statuses, errors, stats)``.

    With ``cache_dir`` the :class:`~morphocell.cache.FeatureCache` there is used (and filled);
    ``stats`` tells how many rows came from it (``hits``) and how many were ``computed``.
    """
    import pandas as pd

    from .features import extractor

    if cache_dir is not None:
        from .cache import FeatureCache

        cache = FeatureCache(cache_dir, families, method)
        X, st, er = cache.extract(paths, n_jobs=n_jobs, verbose=verbose)
        return X, st, er, dict(cache.last_stats)
    mat, st, er = extractor.extract_batch(list(paths), families, method, n_jobs, verbose)
    X = pd.DataFrame(mat, columns=extractor.feature_names(families))
    return X, st, er, {"hits": 0, "computed": len(paths), "uncached": len(paths)}


def _data_sha256(paths: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 over the sorted ``(image content hash, label)`` pairs: the same images with the
    same labels give the same hash whatever their paths or order."""
    from .cache import image_sha256

    pairs = sorted(f"{image_sha256(p) or 'unreadable:' + p}\t{lab}"
                   for p, lab in zip(paths, labels, strict=True))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def _report_failures(paths, statuses, errors, what: str, limit: int = 20) -> int:
    bad = [(p, s, e) for p, s, e in zip(paths, statuses, errors, strict=True) if s != "ok"]
    for p, s, e in bad[:limit]:
        _eprint(f"{what}: skipped {p} ({s}): {e or s}")
    if len(bad) > limit:
        _eprint(f"{what}: ... and {len(bad) - limit} more failed images")
    return len(bad)


# -- training ---------------------------------------------------------------------------------
#: Default share of the training images that :func:`train_handcrafted` (and ``morphocell
#: train --features handcrafted``) adds as one domain-randomised copy each. Measured on
#: 2026-11-30 with the full stack trained on the PBC ``train`` rows (docs/cross_lab.md,
#: fraction fixed beforehand, not tuned): PBC test 0.9854 -> 0.9847 (2 of 2,737 images),
#: segwbc dataset1 (another lab and stain) 0.323 -> 0.657, dataset2 0.650 -> 0.600 (2 of 40);
#: training 6.4 -> 14.0 min on 2 cores. A model that holds up on other labs' images is worth
#: more than 0.07 % in its own lab, so copies are on unless the user turns them off (0).
DEFAULT_DOMAIN_COPIES = 0.35


def default_domain_copies(features: str) -> float:
    """The ``domain_copies`` a model of ``features`` gets by default:
    :data:`DEFAULT_DOMAIN_COPIES` where it has hand-crafted learners (``"handcrafted"``,
    ``"fused"``), 0 for ``"deep"`` (the CNN has its own augmentation)."""
    return DEFAULT_DOMAIN_COPIES if features in ("handcrafted", "fused") else 0.0


def train_handcrafted(paths: Sequence[str], labels: Sequence[str], *, cv: int = 5,
                      random_state: int | None = 0, n_jobs=None, families=None,
                      method: str = "otsu", cache_dir=None, verbose: int = 0,
                      estimator_params: dict | None = None,
                      domain_copies: float = DEFAULT_DOMAIN_COPIES,
                      review_accuracy: float = REVIEW_ACCURACY):
    """Extract (or fetch) features and fit the stacked classifier on the images that worked.

    ``domain_copies``: fraction [0..1] of the training images (default
    :data:`DEFAULT_DOMAIN_COPIES`, 0.35; 0: none), drawn per class with
    ``random_state``, that also enter training as one domain-randomised copy each
    (:func:`morphocell.preprocess.write_stain_copies`: random hue, saturation, tint,
    gamma, blur, scale), so that the model sees other stains and optics than its own lab's.
    A copy always falls in the same cross-validation fold as its image
    (``StackedCellClassifier.fit(groups=...)``). The copies are JPEG files under
    ``cache_dir/domain_copies`` (a temporary folder without ``cache_dir``).

    ``review_accuracy``: the target of the review threshold stored as ``metadata["review"]``
    (:func:`review_reference`; ``predict`` marks cells below it ``needs_review``).

    Returns
    -------
    (SavedModel, info)
        ``info``: ``statuses``, ``errors``, ``n_failed``, ``feature_stats`` (cache hits),
        ``seconds_features``, ``seconds_fit``, ``n_domain_copies``, the training feature
        table ``X`` and labels ``y`` of the images used (copies last).
    """
    from sklearn.pipeline import Pipeline

    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import DEFAULT_FAMILIES, FeatureExtractor
    from .model_io import SavedModel, default_atypical_classes

    _check_fraction(domain_copies)
    _check_review_accuracy(review_accuracy)
    fams = tuple(families or DEFAULT_FAMILIES)
    t0 = time.perf_counter()
    X, st, er, stats = compute_features(paths, fams, method, cache_dir, n_jobs, verbose)
    t_feat = time.perf_counter() - t0
    ok = np.array([s == "ok" for s in st], dtype=bool)
    y = np.asarray(labels, dtype=object)[ok]
    Xok = X[ok].reset_index(drop=True)
    _check_trainable(y)
    groups = None
    n_copies = 0
    if domain_copies:
        import pandas as pd

        ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
        Xc, yc, src = _domain_copy_features(ok_paths, y, domain_copies, random_state, fams,
                                            method, cache_dir, n_jobs, verbose)
        n_copies = len(yc)
        groups = np.concatenate([np.arange(len(y)), src])
        Xok = pd.concat([Xok, Xc], ignore_index=True)
        y = np.concatenate([y, yc])
        t_feat = time.perf_counter() - t0
    clf = StackedCellClassifier(cv=cv, random_state=random_state, n_jobs=n_jobs,
                                **(estimator_params or {}))
    if verbose:
        _eprint(f"features of {len(paths)} images in {t_feat:.1f} s; fitting the stack "
                f"({len(clf.estimators)} base learners x {cv} folds, then refit) on "
                f"{int(ok.sum())} images" + (f" + {n_copies} domain-randomised copies"
                                              if domain_copies else "") + " ...")
    t0 = time.perf_counter()
    clf.fit(Xok, y.astype(str), groups=groups)
    t_fit = time.perf_counter() - t0
    pipe = Pipeline([("features", FeatureExtractor(families=fams, method=method).fit()),
                     ("clf", clf)])
    classes = [str(c) for c in clf.classes_]
    meta = {
        "features": "handcrafted",
        "families": list(fams),
        "segmentation": method,
        "data_sha256": _data_sha256(paths, labels),
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(paths),
        "n_used": int(ok.sum()),
        "n_failed": int((~ok).sum()),
        "class_counts": {c: int((y[:int(ok.sum())] == c).sum()) for c in classes},
        "domain_copies": float(domain_copies),
        "n_domain_copies": n_copies,
        "cv": cv,
        "random_state": random_state,
        "cv_scores": clf.cv_scores_,
        "versions": _versions(),
    }
    from .novelty import fit_domain_reference

    # the images themselves, not their domain copies: the reference says what the lab's own
    # cells look like (copies would widen it until another lab's stain passes as "like")
    n_ok = int(ok.sum())
    ref = fit_domain_reference(Xok.iloc[:n_ok], y[:n_ok])
    if ref is not None:
        meta["domain_reference"] = ref
    review = review_reference(clf, y[:n_ok], classes, review_accuracy)
    if review is not None:
        meta["review"] = review
    model = SavedModel(pipe, classes, list(X.columns), default_atypical_classes(classes), meta)
    info = {"statuses": st, "errors": er, "n_failed": int((~ok).sum()), "feature_stats": stats,
            "seconds_features": t_feat, "seconds_fit": t_fit, "n_domain_copies": n_copies,
            "X": Xok, "y": y}
    return model, info


def _check_review_accuracy(target) -> None:
    if not 0 < float(target) <= 1:
        raise MorphocellError(f"review accuracy: the target must lie in (0, 1] (got {target!r})")


def _check_fraction(fraction) -> None:
    if not 0 <= float(fraction) <= 1:
        raise MorphocellError(f"domain copies: the fraction must lie in [0, 1] (got {fraction!r})")


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
        k = int(round(float(fraction) * len(idx)))
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


def _readability(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(statuses, errors)``: "ok" for the images that can be read, else "error" and why
    (the deep-only paths read images themselves; this flags the bad ones up front)."""
    from .io import read_image

    st, er = [], []
    for p in paths:
        try:
            read_image(p)
            st.append("ok")
            er.append("")
        except MorphocellError as exc:
            st.append("error")
            er.append(str(exc))
    return st, er


def _check_trainable(y: np.ndarray) -> None:
    classes, counts = np.unique(np.asarray(y, dtype=str), return_counts=True)
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes that could be measured, got "
                        f"{len(classes)} ({', '.join(classes)})")
    if counts.min() < 2:
        rare = [c for c, k in zip(classes, counts, strict=True) if k < 2]
        raise DataError(f"need at least 2 usable images per class for cross-validation; "
                        f"too few for {rare}")


def _versions() -> dict:
    import platform

    import sklearn
    import xgboost

    from ._version import __version__

    return {"morphocell": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "xgboost": xgboost.__version__}


def train_deep(paths, labels, *, features: str, cv: int = 5, random_state=0, epochs=None,
               n_jobs=None, cache_dir=None, verbose: int = 0, cnn_crop=None,
               cnn_augment=None, domain_copies: float | None = None,
               review_accuracy: float = REVIEW_ACCURACY):
    """Train a deep (CNN embedding) or fused model through ``morphocell.deep.crossfit``.

    ``epochs``, ``cnn_crop`` and ``cnn_augment`` (the :class:`~morphocell.deep.CNNEmbedder`
    ``crop`` and ``augment``) default to ``morphocell.deep.crossfit.DEFAULT_EMBEDDER``.
    ``domain_copies`` (``"fused"`` only; default :data:`DEFAULT_DOMAIN_COPIES` for
    ``"fused"`` and 0 for ``"deep"``): fraction of the images that get one
    domain-randomised copy, as in :func:`train_handcrafted`; the copies train the stack's
    hand-crafted learners only (:meth:`morphocell.deep.crossfit.FusedModel.fit`).
    ``review_accuracy``: as in :func:`train_handcrafted`.

    Raises
    ------
    MorphocellError
        If the deep extra (TensorFlow/Keras and ``morphocell.deep.crossfit.fit_deep_model``) is
        not available.
    """
    from .model_io import SavedModel, default_atypical_classes

    try:
        from .deep.crossfit import fit_deep_model
    except ImportError as exc:
        raise MorphocellError(
            f"--features {features} needs the deep extra: install it with "
            f"pip install 'morphocell[deep]' (TensorFlow/Keras) and a morphocell with "
            f"morphocell.deep.crossfit.fit_deep_model ({exc})") from None
    labels = np.asarray(labels, dtype=object)
    if domain_copies is None:
        domain_copies = default_domain_copies(features)
    _check_fraction(domain_copies)
    _check_review_accuracy(review_accuracy)
    if domain_copies and features != "fused":
        raise MorphocellError("domain copies train hand-crafted learners: use --features "
                              "fused or handcrafted (a deep model has none)")
    handcrafted = None
    if features == "fused":
        X, st, er, stats = compute_features(paths, None, "otsu", cache_dir, n_jobs, verbose)
    else:
        st, er = _readability(paths)
        stats = {}
    ok = np.array([s == "ok" for s in st], dtype=bool)
    ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
    y = labels[ok].astype(str)
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
        if verbose:
            _eprint(f"hand-crafted features of domain-randomised copies of "
                    f"{domain_copies:.0%} of the images ...")
        Xc, _, src = _domain_copy_features(ok_paths, y, domain_copies, random_state, None,
                                           "otsu", cache_dir, n_jobs, verbose)
        copies = (Xc, src)
    est = fit_deep_model(ok_paths, list(y), features=features, handcrafted=handcrafted, cv=cv,
                         random_state=random_state, verbose=verbose, n_jobs=n_jobs,
                         copies=copies, **kw)
    classes = [str(c) for c in est.classes_]
    meta = {"features": features, "data_sha256": _data_sha256(paths, list(labels)),
            "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_images": len(paths), "n_used": int(ok.sum()), "n_failed": int((~ok).sum()),
            "cv": cv, "random_state": random_state, "epochs": epochs,
            "cnn_crop": getattr(est, "deep_", est).crop_,
            "cnn_augment": getattr(est, "deep_", est).embedders_[0].augment,
            "domain_copies": float(domain_copies),
            "n_domain_copies": int(getattr(est, "n_domain_copies_", 0)),
            "cv_scores": getattr(est, "cv_scores_", {}), "versions": _versions()}
    ref = _deep_domain_reference(handcrafted, ok_paths, y, cache_dir, n_jobs, verbose)
    if ref is not None:
        meta["domain_reference"] = ref
    review = review_reference(est, y, classes, review_accuracy)
    if review is not None:
        meta["review"] = review
    feats = [str(c) for c in getattr(est, "feature_names_in_", [])]
    model = SavedModel(est, classes, feats, default_atypical_classes(classes), meta)
    return model, {"statuses": st, "errors": er, "n_failed": int((~ok).sum()),
                   "feature_stats": stats}


def review_reference(est, y, classes, target_accuracy: float = REVIEW_ACCURACY) -> dict | None:
    """The confidence threshold for review (:func:`morphocell.report.review_threshold`) of a
    fitted model, chosen on its out-of-fold probabilities of the training images ``y`` (the
    first ``len(y)`` rows: domain copies, which come last, are left out, as they are not the
    lab's images). ``None`` when the model has none (a stack fitted without folds)."""
    from .report import review_threshold

    steps = getattr(est, "steps", None)
    final = steps[-1][1] if steps else est
    oof = getattr(getattr(final, "stack_", final), "oof_proba_", None)
    if oof is None:
        return None
    y = np.asarray(y).astype(str)
    return review_threshold(np.asarray(oof)[:len(y)], y, classes, target_accuracy)


#: Feature families a deep model computes for its domain check (:mod:`morphocell.novelty`).
DOMAIN_FAMILIES = ("shape", "color")


def _deep_domain_reference(handcrafted, paths, y, cache_dir, n_jobs, verbose):
    """The :mod:`morphocell.novelty` reference of a deep or fused model: from the fused
    model's hand-crafted table, or (deep) from the stain and size features computed here."""
    from .novelty import fit_domain_reference

    if handcrafted is None:
        X, st, _, _ = compute_features(paths, DOMAIN_FAMILIES, "otsu", cache_dir, n_jobs,
                                       verbose)
        good = np.array([s == "ok" for s in st], dtype=bool)
        return fit_domain_reference(X[good], np.asarray(y)[good])
    return fit_domain_reference(handcrafted, y)


def write_explanation(model, folder: str | os.PathLike, top: int = 15) -> list[Path]:
    """Top features per class (XGBoost gain share) as CSV + PNG, and the CV scores as JSON."""
    from .report import plot_top_features, top_features_table

    folder = Path(folder)
    written = []
    clf = _final_classifier(model.estimator)
    _write_json({"cv_scores": model.metadata.get("cv_scores", {}),
                 "metadata": model.metadata}, folder / "training.json")
    written.append(folder / "training.json")
    if clf is not None and hasattr(clf, "class_importances"):
        try:
            imp = clf.class_importances()
        except AttributeError:
            return written
        table = top_features_table(imp, top=top)
        write_csv(table, folder / "top_features.csv", float_format="%.6g")
        plot_top_features(table, folder / "top_features.png")
        written += [folder / "top_features.csv", folder / "top_features.png"]
    return written


def _final_classifier(est):
    from .ensembles.stacking import StackedCellClassifier

    if isinstance(est, StackedCellClassifier):
        return est
    steps = getattr(est, "steps", None)
    if steps and isinstance(steps[-1][1], StackedCellClassifier):
        return steps[-1][1]
    return None


def _format_cv(scores: dict) -> str:
    lines = [f"  {'learner':<22}{'CV accuracy':>12}{'CV macro-F1':>13}"]
    for name, s in scores.items():
        lines.append(f"  {name:<22}{s['accuracy']:>12.4f}{s['macro_f1']:>13.4f}")
    return "\n".join(lines)


def _explain_dir(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + "_explain")


def train_command(args) -> int:
    """``morphocell train DATA --out MODEL [--features ...] [--cv 5]``."""
    from .cache import default_cache_dir
    from .model_io import save_model

    verbose = 0 if args.quiet else 1
    copies = getattr(args, "domain_copies", None)
    copies = float(default_domain_copies(args.features) if copies is None else copies)
    _check_fraction(copies)
    review_acc = getattr(args, "review_accuracy", None)
    review_acc = REVIEW_ACCURACY if review_acc is None else float(review_acc)
    if copies and args.features == "deep":
        raise MorphocellError("--domain-copies trains hand-crafted learners: use it with "
                              "--features handcrafted or fused (the CNN of a deep model has "
                              "its own augmentation, --cnn-augment)")
    paths, labels = load_labelled(args.data)
    out = Path(args.out)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    classes = sorted(set(labels))
    print(f"training on {len(paths)} images of {len(classes)} classes "
          f"({args.features} features, {args.cv}-fold CV)")
    t0 = time.perf_counter()
    if args.features == "handcrafted":
        model, info = train_handcrafted(paths, labels, cv=args.cv,
                                        random_state=args.random_state, n_jobs=args.n_jobs,
                                        cache_dir=cache_dir, verbose=verbose,
                                        domain_copies=copies, review_accuracy=review_acc)
    else:
        model, info = train_deep(paths, labels, features=args.features, cv=args.cv,
                                 random_state=args.random_state, epochs=args.epochs,
                                 n_jobs=args.n_jobs, cache_dir=cache_dir, verbose=verbose,
                                 cnn_crop=args.cnn_crop,
                                 cnn_augment=getattr(args, "cnn_augment", None),
                                 domain_copies=copies, review_accuracy=review_acc)
    n_failed = _report_failures(paths, info["statuses"], info["errors"], "train")
    fs = info.get("feature_stats") or {}
    if fs:
        print(f"features: {fs.get('hits', 0)} from cache, {fs.get('computed', 0)} computed "
              f"({cache_dir})")
    scores = model.metadata.get("cv_scores") or {}
    if scores:
        n_copies = int(info.get("n_domain_copies") or 0)
        print("cross-validated scores (out-of-fold" + (
            f"; over the images and their {n_copies} domain-randomised copies, each copy in "
            "its image's fold" if n_copies else "") + "):")
        print(_format_cv(scores))
        n_hc = int(model.metadata.get("n_domain_copies") or 0) if args.features == "fused" else 0
        if n_hc:  # fused: the copies train the hand-crafted learners, not the scores above
            print(f"(the hand-crafted learners also trained on {n_hc} domain-randomised "
                  "copies; the scores above are over the images only)")
    review = model.metadata.get("review")
    if review:
        print(_format_review(review))
    save_model(model, out)
    written = write_explanation(model, _explain_dir(out))
    print(f"model written to {out} ({len(model.classes)} classes, "
          f"{len(paths) - n_failed} images used, {n_failed} failed); "
          f"atypical classes: {', '.join(model.atypical_classes) or 'none'}")
    if written:
        print(f"explanation written to {_explain_dir(out)}")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return EXIT_PARTIAL if n_failed else EXIT_OK


def _format_review(r: dict) -> str:
    if not r["n"]:
        return "review: no out-of-fold probabilities to choose a confidence threshold on"
    if r["threshold"] > 1:
        return (f"review: no confidence threshold reaches {r['target_accuracy']:.1%} accuracy "
                "out of fold; predict marks every cell needs_review")
    return (f"review threshold {r['threshold']:.3f}: out of fold, {r['review_fraction']:.1%} of "
            f"the {r['n']} training images fall below it, and {r['accepted_accuracy']:.2%} "
            f"of the others are right (target {r['target_accuracy']:.1%}); predict marks "
            "cells below it needs_review")


# -- prediction -------------------------------------------------------------------------------
def predict_paths(model, paths: Sequence[str], *, n_jobs=None, verbose: int = 0,
                  cache_dir=None, base_learners: bool = False):
    """Class probabilities for image files.

    Returns
    -------
    dict with ``proba`` ``(n, C)`` (NaN rows for failed images), ``statuses``, ``errors`` and,
    with ``base_learners`` and a stacked model on hand-crafted features, ``base`` =
    ``{learner: (n, C) probabilities}``; for a model whose file holds a domain reference
    (:mod:`morphocell.novelty`; hand-crafted, deep and fused models trained by this version),
    ``domain_score`` and ``unlike_training`` per image.

    Hand-crafted features go through the feature cache (``cache_dir``), for fused models too
    (their stack's hand-crafted columns); a deep model with a domain reference computes the
    shape and colour families for it. For deep and fused models an image in which
    segmentation finds no cell is still classified (NaN hand-crafted features, as in
    training).
    """
    from .features.extractor import FeatureExtractor

    est = model.estimator
    paths = [os.fspath(p) for p in paths]
    n, C = len(paths), len(model.classes)
    proba = np.full((n, C), np.nan)
    out = {"proba": proba}
    steps = getattr(est, "steps", None)
    if steps and isinstance(steps[0][1], FeatureExtractor):
        fe = steps[0][1]
        X, st, er, _ = compute_features(paths, fe.families, fe.method, cache_dir, n_jobs,
                                        verbose)
        ok = np.array([s == "ok" for s in st], dtype=bool)
        rest = est[1:]
        if ok.any():
            Xok = X[ok].reset_index(drop=True)
            proba[ok] = rest.predict_proba(Xok)
            ref = (model.metadata or {}).get("domain_reference")
            if ref:
                _add_domain_scores(out, ref, Xok, ok)
            clf = _final_classifier(est)
            if base_learners and clf is not None and len(steps) == 2:
                out["base"] = {}
                for name, p in clf.predict_proba_base(Xok).items():
                    full = np.full((n, C), np.nan)
                    full[ok] = p
                    out["base"][name] = full
    else:  # deep / fused models: the network reads the images itself
        ref = (model.metadata or {}).get("domain_reference")
        fused = hasattr(est, "handcrafted_columns_")
        if fused or ref:
            # hand-crafted features through the cache: the fused stack's inputs and/or the
            # domain check's stain and size features
            fams = getattr(est, "families_", None) if fused else DOMAIN_FAMILIES
            hc, st, er, _ = compute_features(paths, fams, getattr(est, "method_", "otsu"),
                                             cache_dir, n_jobs, verbose)
            # a readable image in which segmentation found no cell is still classified (its
            # hand-crafted features are NaN, as in training)
            er = ["" if s == "no_cell" else e for s, e in zip(st, er, strict=True)]
            st = ["ok" if s == "no_cell" else s for s in st]
        else:
            st, er = _readability(paths)
        ok = np.array([s == "ok" for s in st], dtype=bool)
        if ok.any():
            ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
            if fused:
                proba[ok] = est.predict_proba(ok_paths,
                                              handcrafted=hc[ok].reset_index(drop=True))
            else:
                proba[ok] = est.predict_proba(ok_paths)
            if ref:
                _add_domain_scores(out, ref, hc[ok].reset_index(drop=True), ok)
    out["statuses"], out["errors"] = st, er
    return out


def _insert_domain_columns(df, res: dict) -> bool:
    """``domain_score`` / ``unlike_training`` columns (before ``status``) when ``res`` (from
    :func:`predict_paths`) has them; whether it had."""
    if "domain_score" not in res:
        return False
    df.insert(df.columns.get_loc("status"), "domain_score", res["domain_score"])
    df.insert(df.columns.get_loc("status"), "unlike_training", res["unlike_training"])
    return True


def _add_domain_scores(out: dict, ref: dict, X, ok: np.ndarray) -> None:
    """``out["domain_score"]`` / ``out["unlike_training"]`` for all rows; ``X``: the rows
    where ``ok``."""
    from .novelty import domain_scores

    n = len(ok)
    score, unlike = domain_scores(ref, X)
    out["domain_score"] = np.full(n, np.nan)
    out["domain_score"][ok] = score
    out["unlike_training"] = np.zeros(n, dtype=bool)
    out["unlike_training"][ok] = unlike


def predictions_frame(paths, proba, statuses, errors, classes, atypical_classes):
    """The predictions table: path, predicted, p_<class>..., p_atypical, status, error."""
    import pandas as pd

    from .report import atypical_probability

    classes = [str(c) for c in classes]
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    pred = np.full(len(paths), "", dtype=object)
    if ok.any():
        # NaN columns: classes left out (evaluate --classes-present-only), never the arg-max
        pred[ok] = np.asarray(classes, dtype=object)[
            np.argmax(np.nan_to_num(proba[ok], nan=-np.inf), axis=1)]
    df = pd.DataFrame({"path": list(paths), "predicted": pred})
    for j, c in enumerate(classes):
        df[f"p_{c}"] = proba[:, j]
    pa = atypical_probability(np.nan_to_num(proba), classes, atypical_classes)
    df["p_atypical"] = np.where(ok, pa, np.nan)
    df["status"] = list(statuses)
    df["error"] = list(errors)
    return df


def top_confidence(proba: np.ndarray, statuses: Sequence[str]) -> np.ndarray:
    """Top class probability of each classified cell (NaN for failed images)."""
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    conf = np.full(len(ok), np.nan)
    if ok.any():
        conf[ok] = np.nanmax(proba[ok], axis=1)
    return conf


def needs_review(proba: np.ndarray, statuses: Sequence[str], threshold: float) -> np.ndarray:
    """``True`` for the classified cells whose top class probability is below ``threshold``
    (``False`` for failed images, which have no prediction to review)."""
    with np.errstate(invalid="ignore"):
        return top_confidence(proba, statuses) < float(threshold)  # NaN (failed): False


def _review_setting(model, threshold=None) -> dict | None:
    """The review threshold in force: ``threshold`` (``--review-threshold``) or the model's
    (``metadata["review"]``); ``None`` when neither exists (models of older versions)."""
    if threshold is not None:
        if not 0 <= float(threshold) <= 1:
            raise DataError(f"--review-threshold must lie in [0, 1] (got {threshold})")
        return {"threshold": float(threshold), "source": "--review-threshold"}
    stored = (model.metadata or {}).get("review")
    if not stored:
        return None
    return {"threshold": stored["threshold"], "source": "model",
            "target_accuracy": stored["target_accuracy"], "n_training": stored["n"],
            "training_review_fraction": stored["review_fraction"],
            "training_accepted_accuracy": stored["accepted_accuracy"]}


def _review_excess(review: dict, n_marked: int, n: int) -> dict | None:
    """:func:`morphocell.report.review_excess` of a batch against the training images' share
    below the threshold; ``None`` when that share is unknown (``--review-threshold``)."""
    if review.get("training_review_fraction") is None:
        return None
    from .report import review_excess

    return review_excess(n_marked, n, review["training_review_fraction"])


#: ``morphocell predict`` warns when more than this share of the cells is unlike the training
#: images (about 1% is expected for images like them; see :mod:`morphocell.novelty`).
UNLIKE_WARN_SHARE = 0.05


def predict_command(args) -> int:
    """``morphocell predict MODEL INPUT... --out predictions.csv``."""
    from .io import resolve_inputs
    from .model_io import load_model
    from .report import differential_count, format_differential

    model = load_model(args.model)
    if getattr(args, "atypical", None) is not None:
        atyp = [c.strip() for c in args.atypical.split(",") if c.strip()]
        unknown = [c for c in atyp if c not in model.classes]
        if unknown:
            raise DataError(f"--atypical names unknown classes {unknown}; model classes: "
                            f"{model.classes}")
        model.atypical_classes = atyp
    review = _review_setting(model, getattr(args, "review_threshold", None))
    paths, _ = resolve_inputs(args.inputs)
    res = predict_paths(model, paths, n_jobs=args.n_jobs, verbose=0 if args.quiet else 1,
                        cache_dir=getattr(args, "cache_dir", None))
    df = predictions_frame(paths, res["proba"], res["statuses"], res["errors"], model.classes,
                           model.atypical_classes)
    _insert_domain_columns(df, res)
    if review is not None:
        df.insert(df.columns.get_loc("status"), "needs_review",
                  needs_review(res["proba"], res["statuses"], review["threshold"]))
    out = Path(args.out)
    write_csv(df, out, float_format="%.6f")
    count = differential_count([p or None for p in df["predicted"]], model.classes,
                               model.atypical_classes, df["p_atypical"].to_numpy())
    count_out = Path(args.count_out) if args.count_out else out.with_name(
        out.stem + "_differential.json")
    if "unlike_training" in res:
        count["unlike_training"] = {
            "n": int(res["unlike_training"].sum()),
            "n_scored": int(np.isfinite(res["domain_score"]).sum()),
            "threshold": model.metadata["domain_reference"]["threshold"]}
    if review is not None:
        marked = df.loc[df["needs_review"].to_numpy(bool), "predicted"].value_counts()
        count["needs_review"] = {"n": int(df["needs_review"].sum()),
                                 "n_classified": count["n_classified"],
                                 "by_class": {c: int(marked.get(c, 0)) for c in model.classes},
                                 **review}
        excess = _review_excess(review, count["needs_review"]["n"], count["n_classified"])
        if excess is not None:
            count["needs_review"]["excess"] = excess
    _write_json(count, count_out)
    n_failed = _report_failures(paths, res["statuses"], res["errors"], "predict")
    print(format_differential(count))
    if review is not None:
        nr, nc = count["needs_review"]["n"], count["n_classified"]
        acc = review.get("training_accepted_accuracy")
        print(f"{nr} of {nc} cells ({100 * nr / max(nc, 1):.1f}%) need review: top class "
              f"probability below {review['threshold']:.3f} (column needs_review"
              + (f"; out of fold {acc:.2%} of the training cells above it were right"
                 if acc is not None else "") + ")")
        if count["needs_review"].get("excess", {}).get("harder"):
            _eprint(f"warning: {100 * nr / max(nc, 1):.1f}% of the cells need review, against "
                    f"{100 * review['training_review_fraction']:.1f}% of the training images "
                    "(out of fold): the model is much less sure of these cells than of its "
                    "training images (another lab, stain or scanner, or cells it rarely saw), "
                    "and the differential count may be unreliable.")
    if "unlike_training" in count:
        n_unlike, n_scored = count["unlike_training"]["n"], count["unlike_training"]["n_scored"]
        share = n_unlike / max(n_scored, 1)
        msg = (f"{n_unlike} of {n_scored} cells ({100 * share:.1f}%) are unlike the training "
               "images in stain or size (column unlike_training; about 1% of images like the "
               "training ones are)")
        if share > UNLIKE_WARN_SHARE:
            _eprint(f"warning: {msg}. These images probably come from another lab, stain or "
                    "scanner than the model was trained on, and the differential count may be "
                    "unreliable; a model trained on this lab's images copes better, and so "
                    "does one trained with domain-randomised copies (--domain-copies, on by "
                    "default for hand-crafted models; docs/cross_lab.md).")
        else:
            print(msg)
    print(f"predictions written to {out}; differential count to {count_out}")
    return EXIT_PARTIAL if n_failed else EXIT_OK


# -- evaluation -------------------------------------------------------------------------------
def evaluate_paths(model, paths, labels, *, classes_present_only: bool = False, n_jobs=None,
                   verbose: int = 0, cache_dir=None):
    """Metrics of ``model`` on labelled images (failed images are counted, not scored).

    With ``classes_present_only`` the probabilities are restricted to the model classes that
    occur in ``labels`` and renormalised, :math:`p'_c = p_c / \\sum_{k \\in present} p_k`.

    Returns ``(metrics, predictions DataFrame)``; ``metrics`` holds the fields of
    :func:`~morphocell.report.classification_metrics` plus ``n_images``, ``n_failed``,
    ``unknown_labels``, ``unlike_training`` (cells flagged by the stain / size check, for a
    model with a domain reference; the columns are added to the table), ``review_curve`` (:func:`morphocell.report.review_curve` of the
    top class probability over all the model's classes, as ``predict`` sees it, and whether
    the prediction was right), for a model with a review threshold ``review`` (cells marked
    ``needs_review`` and the accuracy of the others; the column is added to the table) and,
    for a stacked model, ``base_learners`` (metrics per base learner).
    """
    from .report import classification_metrics, review_curve

    labels = [str(v) for v in labels]
    res = predict_paths(model, paths, n_jobs=n_jobs, verbose=verbose, cache_dir=cache_dir,
                        base_learners=True)
    classes = list(model.classes)
    proba = res["proba"]
    keep = list(range(len(classes)))
    if classes_present_only:
        present = set(labels)
        keep = [j for j, c in enumerate(classes) if c in present]
        if not keep:
            raise DataError("no class of the model occurs in the data "
                            f"(model classes: {classes})")

    def restrict(p):
        q = p[:, keep]
        s = q.sum(axis=1, keepdims=True)
        return np.divide(q, s, out=np.full_like(q, np.nan), where=s > 0)

    use_classes = [classes[j] for j in keep]
    proba_r = restrict(proba)
    ok = np.array([s == "ok" for s in res["statuses"]], dtype=bool)
    y_true = [lab for lab, k in zip(labels, ok, strict=True) if k]
    y_pred = list(np.asarray(use_classes, dtype=object)[np.argmax(proba_r[ok], axis=1)]) \
        if ok.any() else []
    m = classification_metrics(y_true, y_pred, proba_r[ok] if ok.any() else None, use_classes)
    m["n_images"] = len(paths)
    m["n_failed"] = int((~ok).sum())
    m["unknown_labels"] = sorted(set(labels) - set(classes))
    m["classes_present_only"] = bool(classes_present_only)
    if "base" in res and ok.any():
        m["base_learners"] = {}
        for name, p in res["base"].items():
            pr = restrict(p)[ok]
            yp = list(np.asarray(use_classes, dtype=object)[np.argmax(pr, axis=1)])
            bm = classification_metrics(y_true, yp, pr, use_classes)
            m["base_learners"][name] = {
                "accuracy": bm["accuracy"], "balanced_accuracy": bm["balanced_accuracy"],
                "macro_f1": bm["macro_f1"],
                "per_class_f1": {c: r["f1"] for c, r in bm["per_class"].items()}}
    full = np.full((len(paths), len(classes)), np.nan)
    full[:, keep] = proba_r
    df = predictions_frame(paths, full, res["statuses"], res["errors"], classes,
                           model.atypical_classes)
    df.insert(1, "label", labels)
    if _insert_domain_columns(df, res):
        m["unlike_training"] = {"n": int(res["unlike_training"].sum()),
                                "n_scored": int(np.isfinite(res["domain_score"]).sum())}
    # confidence as predict sees it (the top probability over all the model's classes)
    conf = top_confidence(proba, res["statuses"])
    right = np.array([lab == p for lab, p in zip(labels, df["predicted"], strict=True)])
    m["review_curve"] = review_curve(conf, right)
    review = _review_setting(model)
    if review is not None:
        # the cells predict would mark
        flag = needs_review(proba, res["statuses"], review["threshold"])
        df.insert(df.columns.get_loc("status"), "needs_review", flag)
        acc_r, acc_a = right[flag], right[ok & ~flag]
        m["review"] = {"threshold": review["threshold"],
                       "target_accuracy": review.get("target_accuracy"),
                       "n_review": int(flag.sum()),
                       "review_fraction": float(flag.sum() / max(int(ok.sum()), 1)),
                       "accepted_accuracy": float(acc_a.mean()) if acc_a.size else None,
                       "reviewed_accuracy": float(acc_r.mean()) if acc_r.size else None}
        excess = _review_excess(review, int(flag.sum()), int(ok.sum()))
        if excess is not None:
            m["review"]["training_review_fraction"] = review["training_review_fraction"]
            m["review"]["excess"] = excess
    return m, df


def _format_base(m: dict) -> str:
    bl = m.get("base_learners")
    if not bl:
        return ""
    labels = [c for c in m["per_class"] if m["per_class"][c]["support"] > 0]
    head = f"  {'model':<18}{'accuracy':>9}{'macro-F1':>9}" + "".join(
        f"{c[:9]:>10}" for c in labels)
    rows = [head]
    for name, r in list(bl.items()) + [("stack", {
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}})]:
        rows.append(f"  {name:<18}{r['accuracy']:>9.4f}{r['macro_f1']:>9.4f}" + "".join(
            f"{r['per_class_f1'].get(c, float('nan')):>10.4f}" for c in labels))
    return "per-learner F1 (columns: classes):\n" + "\n".join(rows)


def evaluate_command(args) -> int:
    """``morphocell evaluate MODEL DATA [--out DIR] [--json] [--classes-present-only]``."""
    import pandas as pd

    from .model_io import load_model
    from .report import format_metrics, plot_confusion_matrix, plot_review_curve

    model = load_model(args.model)
    paths, labels = load_labelled(args.data)
    m, df = evaluate_paths(model, paths, labels, classes_present_only=args.classes_present_only,
                           n_jobs=args.n_jobs, verbose=0 if args.quiet else 1,
                           cache_dir=getattr(args, "cache_dir", None))
    curve = m.pop("review_curve")
    n_failed = _report_failures(paths, df["status"].tolist(), df["error"].tolist(), "evaluate")
    if m["unknown_labels"]:
        _eprint(f"evaluate: warning: labels not known to the model (always wrong): "
                f"{m['unknown_labels']}")
    if args.out:
        out = Path(args.out)
        _write_json(m, out / "metrics.json")
        per = pd.DataFrame([{"class": c, **r} for c, r in m["per_class"].items()])
        write_csv(per, out / "per_class.csv", float_format="%.6f")
        if m["n"]:
            cm = pd.DataFrame(m["confusion_matrix"], index=m["labels"], columns=m["labels"])
            cm.index.name = "true\\predicted"
            from ._utils import atomic_path

            with atomic_path(out / "confusion_matrix.csv") as tmp:
                cm.to_csv(tmp)
            plot_confusion_matrix(m["confusion_matrix"], m["labels"],
                                  out / "confusion_matrix.png")
            write_csv(pd.DataFrame(m["most_confused"],
                                    columns=["true", "predicted", "count", "fraction"]),
                       out / "most_confused.csv")
            write_csv(curve, out / "review_curve.csv", float_format="%.6f")
            plot_review_curve(curve, out / "review_curve.png",
                              (m.get("review") or {}).get("threshold"))
        write_csv(df, out / "predictions.csv", float_format="%.6f")
    if args.json:
        json.dump(m, sys.stdout, indent=2, default=_jsonable)
        sys.stdout.write("\n")
    else:
        print(format_metrics(m))
        base = _format_base(m)
        if base:
            print(base)
        print(f"{m['n_images']} images, {m['n_failed']} failed")
        r = m.get("review")
        if r:
            acc = (f"; accuracy {r['accepted_accuracy']:.4f} on the others"
                   if r["accepted_accuracy"] is not None else "")
            harder = ((r.get("excess") or {}).get("harder")
                      and f" (training images: {r['training_review_fraction']:.1%}; far more "
                      "here)") or ""
            print(f"review: {r['n_review']} cells ({r['review_fraction']:.1%}) below the "
                  f"model's confidence threshold {r['threshold']:.3f}{harder}" + acc)
        u = m.get("unlike_training")
        if u:
            print(f"unlike the training images in stain or size: {u['n']} of {u['n_scored']} "
                  "cells")
        if args.out:
            print(f"report written to {args.out}")
    return EXIT_PARTIAL if n_failed else EXIT_OK


# -- demo -------------------------------------------------------------------------------------
#: ``morphocell demo`` says that kernels were compiled when its first image took longer than this
#: (a cache it did not recognise as cold, e.g. stale after an upgrade)
FIRST_RUN_NOTICE_S = 5.0


def demo_command(args) -> int:
    """``morphocell demo``: the whole job on the bundled sample (80 images, 8 classes).

    Segments every image (masks and overlays in ``OUT/overlays``), extracts features, trains
    the stacked classifier with 5-fold CV, saves the model and its explanation, and writes the
    predictions and differential count of the sample images. Those predictions are in-sample
    (the model was trained on these very images): the honest scores are the CV ones.
    The first run after installing also compiles the numba kernels (about half a minute on 2
    cores, feature families in parallel processes, once; they are cached on disk).
    """
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from ._utils import progress
    from ._warmup import cache_is_cold, compile_kernels
    from .datasets import sample_folder
    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import DEFAULT_FAMILIES, FeatureExtractor, extract_array
    from .io import load_folder, read_image
    from .model_io import SavedModel, default_atypical_classes, save_model
    from .report import differential_count, format_differential
    from .segmentation import save_masks, segment

    t0 = time.perf_counter()
    out = Path(args.out)
    paths, labels = load_folder(sample_folder())
    print(f"demo: {len(paths)} bundled images of {len(set(labels))} classes -> {out}")
    announced = cache_is_cold()
    if announced:
        print("first run: compiling the numba kernels (cached on disk for later runs) ...",
              flush=True)
        t1 = time.perf_counter()
        if compile_kernels():
            print(f"compiled in {time.perf_counter() - t1:.1f} s (feature families in parallel)",
                  flush=True)
    t_loop = time.perf_counter()
    rows, st, er = [], [], []
    for i, p in enumerate(progress(paths, desc="segment + measure")):
        if i == 1 and not announced and time.perf_counter() - t_loop > FIRST_RUN_NOTICE_S:
            print(f"(first image took {time.perf_counter() - t_loop:.0f} s: the numba kernels "
                  "were compiled and cached on disk; later runs skip this)", flush=True)
        try:
            img = read_image(p)
            masks = segment(img)
            save_masks(img, masks, out / "overlays", Path(p).stem)
            vec, _ = extract_array(img, masks)
            rows.append(vec)
            st.append("ok" if masks.found else "no_cell")
            er.append("" if masks.found else "no cell found")
        except MorphocellError as exc:
            rows.append(None)
            st.append("error")
            er.append(str(exc))
    from .features.extractor import feature_names

    names = feature_names(DEFAULT_FAMILIES)
    X = pd.DataFrame([r if r is not None else np.full(len(names), np.nan) for r in rows],
                     columns=names)
    t_seg = time.perf_counter() - t_loop
    print(f"segmented and measured {len(paths)} images in {t_seg:.1f} s "
          f"(masks and overlays in {out / 'overlays'})")
    ok = np.array([s == "ok" for s in st])
    y = np.asarray(labels, dtype=str)
    clf = StackedCellClassifier(cv=5, random_state=0).fit(X[ok].reset_index(drop=True), y[ok])
    print("cross-validated scores (out-of-fold, 5 folds):")
    print(_format_cv(clf.cv_scores_))
    pipe = Pipeline([("features", FeatureExtractor().fit()), ("clf", clf)])
    classes = [str(c) for c in clf.classes_]
    model = SavedModel(pipe, classes, names, default_atypical_classes(classes),
                       {"features": "handcrafted", "data": "bundled sample",
                        "data_sha256": _data_sha256(paths, labels),
                        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(
                            timespec="seconds"),
                        "n_images": len(paths), "n_used": int(ok.sum()),
                        "cv": 5, "random_state": 0, "cv_scores": clf.cv_scores_,
                        "versions": _versions()})
    from .novelty import fit_domain_reference

    ref = fit_domain_reference(X[ok].reset_index(drop=True), y[ok])
    if ref is not None:
        model.metadata["domain_reference"] = ref
    review = review_reference(clf, y[ok], classes)
    if review is not None:
        model.metadata["review"] = review
        print(_format_review(review))
    save_model(model, out / "model.mcm")
    write_explanation(model, out / "model_explain")
    proba = np.full((len(paths), len(classes)), np.nan)
    proba[ok] = clf.predict_proba(X[ok].reset_index(drop=True))
    df = predictions_frame(paths, proba, st, er, classes, model.atypical_classes)
    df.insert(1, "label", labels)
    write_csv(df, out / "predictions.csv", float_format="%.6f")
    count = differential_count([p or None for p in df["predicted"]], classes,
                               model.atypical_classes, df["p_atypical"].to_numpy())
    _write_json(count, out / "differential.json")
    print(format_differential(count))
    print("(predictions of the training images themselves: in-sample, see the CV scores "
          "above for an honest estimate)")
    print(f"model: {out / 'model.mcm'}; explanation: {out / 'model_explain'}; "
          f"predictions: {out / 'predictions.csv'}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK if ok.all() else EXIT_PARTIAL
