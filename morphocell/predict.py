"""Prediction and evaluation as library functions: they return objects and print nothing.

* :func:`predict` -- class probabilities of image files, the predictions table, the
  differential count (:func:`morphocell.report.differential_count`) and its flags
  (cells for review, cells unlike the training images);
* :func:`evaluate` -- the same on labelled images, with the metrics of
  :func:`morphocell.report.classification_metrics`.

An image that cannot be classified (unreadable; no cell found, for a model on hand-crafted
features) gets a row with ``status`` ``"error"`` or ``"no_cell"`` and no prediction; it is
listed in ``failures`` and the other images are classified as usual.

>>> from morphocell.model_io import load_model
>>> result = predict(load_model("model.mcm"), ["cell1.jpg", "cell2.jpg"])   # doctest: +SKIP
>>> result.predictions[["path", "predicted"]]                                 # doctest: +SKIP
>>> result.save("predictions.csv")                                            # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "UNLIKE_WARN_SHARE",
    "EvaluationResult",
    "PredictionResult",
    "evaluate",
    "needs_review",
    "predict",
    "predict_paths",
    "predictions_frame",
    "top_confidence",
]

#: Above this share of cells unlike the training images, :attr:`PredictionResult.flags`
#: ``mostly_unlike`` is set (about 1% is expected for images like them;
#: :mod:`morphocell.novelty`).
UNLIKE_WARN_SHARE = 0.05


def _as_model(model):
    if isinstance(model, (str, os.PathLike)):
        from .model_io import load_model

        return load_model(model)
    return model


def _failures(paths, statuses, errors) -> list[tuple[str, str, str]]:
    return [(p, s, e or s) for p, s, e in zip(paths, statuses, errors, strict=True) if s != "ok"]


# -- probabilities ----------------------------------------------------------------------------
def predict_paths(model, paths: Sequence[str], *, n_jobs=None, verbose: int = 0,
                  cache_dir=None, base_learners: bool = False) -> dict:
    """Class probabilities for image files.

    Returns
    -------
    dict with ``proba`` ``(n, C)`` (NaN rows for failed images), ``statuses``, ``errors`` and,
    with ``base_learners`` and a stacked model on hand-crafted features, ``base`` =
    ``{learner: (n, C) probabilities}``; for a model whose file holds a novelty reference
    (:mod:`morphocell.novelty`), ``domain_score`` and ``unlike_training`` per image.

    Hand-crafted features go through the feature cache (``cache_dir``), for fused models too
    (their stack's hand-crafted columns); a deep model with a novelty reference computes the
    shape and colour families for it. For deep and fused models an image in which
    segmentation finds no cell is still classified (NaN hand-crafted features, as in
    training).
    """
    from .batch import compute_features
    from .features.extractor import FeatureExtractor
    from .report import final_classifier
    from .train import NOVELTY_FAMILIES, readability

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
                _add_novelty_scores(out, ref, Xok, ok)
            clf = final_classifier(est)
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
            # novelty check's stain and size features
            fams = getattr(est, "families_", None) if fused else NOVELTY_FAMILIES
            hc, st, er, _ = compute_features(paths, fams, getattr(est, "method_", "otsu"),
                                             cache_dir, n_jobs, verbose)
            # a readable image in which segmentation found no cell is still classified (its
            # hand-crafted features are NaN, as in training)
            er = ["" if s == "no_cell" else e for s, e in zip(st, er, strict=True)]
            st = ["ok" if s == "no_cell" else s for s in st]
        else:
            st, er = readability(paths)
        ok = np.array([s == "ok" for s in st], dtype=bool)
        if ok.any():
            ok_paths = [p for p, k in zip(paths, ok, strict=True) if k]
            if fused:
                proba[ok] = est.predict_proba(ok_paths,
                                              handcrafted=hc[ok].reset_index(drop=True))
            else:
                proba[ok] = est.predict_proba(ok_paths)
            if ref:
                _add_novelty_scores(out, ref, hc[ok].reset_index(drop=True), ok)
    out["statuses"], out["errors"] = list(st), list(er)
    return out


def _add_novelty_scores(out: dict, ref: dict, X, ok: np.ndarray) -> None:
    """``out["domain_score"]`` / ``out["unlike_training"]`` for all rows; ``X``: the rows
    where ``ok``."""
    from .novelty import novelty_scores

    n = len(ok)
    score, unlike = novelty_scores(ref, X)
    out["domain_score"] = np.full(n, np.nan)
    out["domain_score"][ok] = score
    out["unlike_training"] = np.zeros(n, dtype=bool)
    out["unlike_training"][ok] = unlike


def _insert_novelty_columns(df, res: dict) -> bool:
    """``domain_score`` / ``unlike_training`` columns (before ``status``) when ``res`` (from
    :func:`predict_paths`) has them; whether it had."""
    if "domain_score" not in res:
        return False
    df.insert(df.columns.get_loc("status"), "domain_score", res["domain_score"])
    df.insert(df.columns.get_loc("status"), "unlike_training", res["unlike_training"])
    return True


def predictions_frame(paths, proba, statuses, errors, classes, atypical_classes):
    """The predictions table: path, predicted, p_<class>..., p_atypical, status, error."""
    import pandas as pd

    from .report import atypical_probability

    classes = [str(c) for c in classes]
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    pred = np.full(len(paths), "", dtype=object)
    if ok.any():
        # NaN columns: classes left out (evaluate classes_present_only), never the arg-max
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


def review_setting(model, threshold: float | None = None) -> dict | None:
    """The review threshold in force: ``threshold`` or the model's (``metadata["review"]``);
    ``None`` when neither exists (models of older versions)."""
    if threshold is not None:
        if not 0 <= float(threshold) <= 1:
            raise DataError(f"the review threshold must lie in [0, 1] (got {threshold})")
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
    below the threshold; ``None`` when that share is unknown (a user-given threshold)."""
    if review.get("training_review_fraction") is None:
        return None
    from .report import review_excess

    return review_excess(n_marked, n, review["training_review_fraction"])


# -- predict ----------------------------------------------------------------------------------
@dataclass
class PredictionResult:
    """What :func:`predict` returns.

    Attributes
    ----------
    predictions : DataFrame
        One row per image: ``path``, ``predicted``, ``p_<class>`` ..., ``p_atypical``,
        ``domain_score`` and ``unlike_training`` (models with a novelty reference),
        ``needs_review`` (when a review threshold is in force), ``status``, ``error``.
    differential : dict
        :func:`morphocell.report.differential_count`, with ``unlike_training`` and
        ``needs_review`` summaries when they apply (what is written as JSON).
    failures : list of (path, status, error)
        The images that could not be classified.
    flags : dict
        ``review_harder``: far more cells below the review threshold than among the
        training images (:func:`morphocell.report.review_excess`); ``mostly_unlike``: more
        than :data:`UNLIKE_WARN_SHARE` of the cells unlike the training images;
        ``unlike_share``: that share (``None`` without a novelty reference).
    proba : array (n, C)
        The class probabilities (NaN rows for failures).
    review : dict or None
        The review threshold in force and where it comes from.
    duplicates : list of list of path
        Files with identical content (the same path twice, or one image under two names),
        one list per image. Every file has its row in ``predictions``; the differential
        count (and its review and out-of-distribution summaries) counts each image once,
        and holds ``duplicates`` (``n`` repeats, the ``files``) when there are any.
    """

    predictions: Any
    differential: dict
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    flags: dict = field(default_factory=dict)
    proba: Any = None
    review: dict | None = None
    duplicates: list[list[str]] = field(default_factory=list)

    @property
    def n_classified(self) -> int:
        """Images that got a prediction."""
        return int(self.differential["n_classified"])

    def save(self, path: str | os.PathLike, count_path: str | os.PathLike | None = None
             ) -> tuple[Path, Path]:
        """Write the predictions CSV and the differential count JSON (default
        ``<stem>_differential.json`` beside it); returns both paths."""
        from ._utils import write_csv
        from .report import write_json

        path = Path(path)
        count_path = Path(count_path) if count_path else path.with_name(
            path.stem + "_differential.json")
        write_csv(self.predictions, path, float_format="%.6f")
        write_json(self.differential, count_path)
        return path, count_path


def predict(model, paths: Sequence[str | os.PathLike], *,
            atypical: Sequence[str] | None = None, review_threshold: float | None = None,
            n_jobs: int | None = None, cache_dir: str | os.PathLike | None = None,
            verbose: int = 0) -> PredictionResult:
    """Classify image files and count them.

    Parameters
    ----------
    model : SavedModel or path
        A model (:func:`morphocell.model_io.load_model`) or its file.
    paths : sequence of path
        Images, one cell each.
    atypical : sequence of str, optional
        Classes summed into ``p_atypical`` and flagged when present (default: the model's).
    review_threshold : float in [0, 1], optional
        Mark cells whose top class probability is below it ``needs_review`` (default: the
        model's threshold, chosen at training).
    n_jobs, cache_dir, verbose
        Feature extraction workers, feature cache folder, progress bars.

    Returns
    -------
    PredictionResult

    Raises
    ------
    DataError
        Unknown ``atypical`` classes, a review threshold outside [0, 1].
    ModelFileError
        ``model`` is a path to a missing or invalid model file.
    """
    from .report import differential_count

    model = _as_model(model)
    classes = [str(c) for c in model.classes]
    atyp = list(model.atypical_classes) if atypical is None else [str(c) for c in atypical]
    unknown = [c for c in atyp if c not in classes]
    if unknown:
        raise DataError(f"unknown atypical {'class' if len(unknown) == 1 else 'classes'} "
                        f"{', '.join(unknown)}; "
                        f"the model's classes: {', '.join(classes)}")
    review = review_setting(model, review_threshold)
    paths = [os.fspath(p) for p in paths]
    res = predict_paths(model, paths, n_jobs=n_jobs, verbose=verbose, cache_dir=cache_dir)
    df = predictions_frame(paths, res["proba"], res["statuses"], res["errors"], classes, atyp)
    _insert_novelty_columns(df, res)
    if review is not None:
        df.insert(df.columns.get_loc("status"), "needs_review",
                  needs_review(res["proba"], res["statuses"], review["threshold"]))
    # the same image listed twice (same path, or same content under two names) is one cell
    first, dups = _first_occurrences(paths)
    kept = df[first]
    count = differential_count([p or None for p in kept["predicted"]], classes, atyp,
                               kept["p_atypical"].to_numpy())
    flags = {"review_harder": False, "mostly_unlike": False, "unlike_share": None}
    if "unlike_training" in res:
        count["unlike_training"] = {
            "n": int(res["unlike_training"][first].sum()),
            "n_scored": int(np.isfinite(res["domain_score"][first]).sum()),
            "threshold": model.metadata["domain_reference"]["threshold"]}
        share = count["unlike_training"]["n"] / max(count["unlike_training"]["n_scored"], 1)
        flags["unlike_share"] = share
        flags["mostly_unlike"] = share > UNLIKE_WARN_SHARE
    if review is not None:
        marked = kept.loc[kept["needs_review"].to_numpy(bool), "predicted"].value_counts()
        count["needs_review"] = {"n": int(kept["needs_review"].sum()),
                                 "n_classified": count["n_classified"],
                                 "by_class": {c: int(marked.get(c, 0)) for c in classes},
                                 **review}
        excess = _review_excess(review, count["needs_review"]["n"], count["n_classified"])
        if excess is not None:
            count["needs_review"]["excess"] = excess
            flags["review_harder"] = bool(excess["harder"])
    duplicates = [[paths[i] for i in g] for g in dups]
    if duplicates:
        count["duplicates"] = {"n": int((~first).sum()), "files": duplicates}
    return PredictionResult(df, count, _failures(paths, res["statuses"], res["errors"]),
                            flags, res["proba"], review, duplicates)


def _first_occurrences(paths) -> tuple[np.ndarray, list[list[int]]]:
    """``(first, groups)``: ``True`` for each file that is not a repeat of an earlier one
    (same content: :func:`morphocell.train.content_groups`), and the groups of repeats."""
    from .train import content_groups

    _, groups = content_groups(paths)
    first = np.ones(len(paths), dtype=bool)
    for g in groups:
        first[g[1:]] = False
    return first, groups


# -- evaluate ---------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    metrics : dict
        :func:`morphocell.report.classification_metrics` plus ``n_images``, ``n_failed``,
        ``unknown_labels``, ``classes_present_only``, and when they apply
        ``base_learners`` (metrics per base learner of a stack), ``unlike_training`` and
        ``review`` (cells below the model's review threshold, accuracy of the others).
    predictions : DataFrame
        The predictions table with a ``label`` column after ``path``.
    review_curve : DataFrame
        :func:`morphocell.report.review_curve` of the top class probability over all the
        model's classes (as ``predict`` sees it).
    failures : list of (path, status, error)
        The images that could not be classified (counted, not scored).
    duplicates : list of list of path
        Files with identical content, one list per image: each image is scored once (its
        first file); ``metrics["duplicates"]`` says how many repeats were left out.
    """

    metrics: dict
    predictions: Any
    review_curve: Any
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write the report files into ``folder`` (created): ``metrics.json``,
        ``per_class.csv``, ``predictions.csv`` and, when any image was scored,
        ``confusion_matrix.csv`` / ``.png``, ``most_confused.csv``, ``review_curve.csv`` /
        ``.png``. Returns the paths written.

        Raises
        ------
        DataError
            ``folder`` exists and is not a folder.
        """
        import pandas as pd

        from ._utils import write_csv
        from .report import plot_confusion_matrix, plot_review_curve, write_json

        out = Path(folder)
        if out.exists() and not out.is_dir():
            raise DataError("exists and is not a folder (the report is a folder of files)",
                            out)
        m = self.metrics
        written = [out / "metrics.json", out / "per_class.csv"]
        write_json(m, out / "metrics.json")
        per = pd.DataFrame([{"class": c, **r} for c, r in m["per_class"].items()])
        write_csv(per, out / "per_class.csv", float_format="%.6f")
        if m["n"]:
            cm = pd.DataFrame(m["confusion_matrix"], index=m["labels"], columns=m["labels"])
            cm.index.name = "true\\predicted"
            write_csv(cm, out / "confusion_matrix.csv", index=True)
            plot_confusion_matrix(m["confusion_matrix"], m["labels"],
                                  out / "confusion_matrix.png")
            write_csv(pd.DataFrame(m["most_confused"],
                                   columns=["true", "predicted", "count", "fraction"]),
                      out / "most_confused.csv")
            write_csv(self.review_curve, out / "review_curve.csv", float_format="%.6f")
            plot_review_curve(self.review_curve, out / "review_curve.png",
                              (m.get("review") or {}).get("threshold"))
            written += [out / n for n in ("confusion_matrix.csv", "confusion_matrix.png",
                                          "most_confused.csv", "review_curve.csv",
                                          "review_curve.png")]
        write_csv(self.predictions, out / "predictions.csv", float_format="%.6f")
        written.append(out / "predictions.csv")
        return written


def evaluate(model, paths: Sequence[str | os.PathLike], labels: Sequence[str], *,
             classes_present_only: bool = False, n_jobs: int | None = None,
             cache_dir: str | os.PathLike | None = None,
             verbose: int = 0) -> EvaluationResult:
    """Metrics of ``model`` on labelled images (failed images are counted, not scored).

    With ``classes_present_only`` the probabilities are restricted to the model classes that
    occur in ``labels`` and renormalised, :math:`p'_c = p_c / \\sum_{k \\in present} p_k`.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    DataError
        ``classes_present_only`` and no class of the model in ``labels``; the same image
        content listed under two labels.
    """
    from .report import classification_metrics, review_curve

    model = _as_model(model)
    paths = [os.fspath(p) for p in paths]
    labels = [str(v) for v in labels]
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} paths but {len(labels)} labels")
    classes = [str(c) for c in model.classes]
    keep = list(range(len(classes)))
    if classes_present_only:
        present = set(labels)
        keep = [j for j, c in enumerate(classes) if c in present]
        if not keep:
            raise DataError("no class of the model occurs in the data "
                            f"(model classes: {', '.join(classes)})")
    first, dups = _first_occurrences(paths)
    from .train import _check_duplicates

    _check_duplicates(paths, labels, dups)
    duplicates = [[paths[i] for i in g] for g in dups]
    res = predict_paths(model, paths, n_jobs=n_jobs, verbose=verbose, cache_dir=cache_dir,
                        base_learners=True)
    proba = res["proba"]

    def restrict(p):
        q = p[:, keep]
        s = q.sum(axis=1, keepdims=True)
        return np.divide(q, s, out=np.full_like(q, np.nan), where=s > 0)

    use_classes = [classes[j] for j in keep]
    proba_r = restrict(proba)
    ok = np.array([s == "ok" for s in res["statuses"]], dtype=bool)
    scored = ok & first             # an image listed twice is scored once
    y_true = [lab for lab, k in zip(labels, scored, strict=True) if k]
    y_pred = [str(c) for c in np.asarray(use_classes, dtype=object)[
        np.argmax(proba_r[scored], axis=1)]] if scored.any() else []
    m = classification_metrics(y_true, y_pred, proba_r[scored] if scored.any() else None,
                               use_classes)
    m["n_images"] = len(paths)
    m["n_failed"] = int((~ok).sum())
    m["unknown_labels"] = sorted(set(labels) - set(classes))
    m["classes_present_only"] = bool(classes_present_only)
    if duplicates:
        m["duplicates"] = {"n": int((~first).sum()), "files": duplicates}
    if "base" in res and scored.any():
        m["base_learners"] = {}
        for name, p in res["base"].items():
            pr = restrict(p)[scored]
            yp = [str(c) for c in np.asarray(use_classes, dtype=object)[np.argmax(pr, axis=1)]]
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
    if _insert_novelty_columns(df, res):
        m["unlike_training"] = {"n": int(res["unlike_training"][first].sum()),
                                "n_scored": int(np.isfinite(res["domain_score"][first]).sum())}
    # confidence as predict sees it (the top probability over all the model's classes)
    conf = top_confidence(proba, res["statuses"])
    right = np.array([lab == p for lab, p in zip(labels, df["predicted"], strict=True)])
    curve = review_curve(conf[first], right[first])
    review = review_setting(model)
    if review is not None:
        # the cells predict would mark
        flag = needs_review(proba, res["statuses"], review["threshold"])
        df.insert(df.columns.get_loc("status"), "needs_review", flag)
        counted = flag & first
        acc_r, acc_a = right[counted], right[scored & ~flag]
        m["review"] = {"threshold": review["threshold"],
                       "target_accuracy": review.get("target_accuracy"),
                       "n_review": int(counted.sum()),
                       "review_fraction": float(counted.sum() / max(int(scored.sum()), 1)),
                       "accepted_accuracy": float(acc_a.mean()) if acc_a.size else None,
                       "reviewed_accuracy": float(acc_r.mean()) if acc_r.size else None}
        excess = _review_excess(review, int(counted.sum()), int(scored.sum()))
        if excess is not None:
            m["review"]["training_review_fraction"] = review["training_review_fraction"]
            m["review"]["excess"] = excess
    return EvaluationResult(m, df, curve, _failures(paths, res["statuses"], res["errors"]),
                            duplicates)


from ._utils import CallableModule

sys.modules[__name__].__class__ = CallableModule  # calling the module calls its function
