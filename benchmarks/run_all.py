"""Every benchmark of morphocell in one command: accuracy, speed, segmentation, cross-lab, plots.

Usage (from the repository root)::

    nice -n 10 python benchmarks/run_all.py --data ../shared/data [--out DIR] [--quick]
        [--skip deep,speed,...] [--unet-weights PATH] [--random-state 0]

``--out`` defaults to ``benchmarks/results/``. Accuracy, macro-F1 and per-class F1 come from
:func:`morphocell.report.classification_metrics`, the code behind ``morphocell evaluate``.

One fixed split: the ``train`` / ``test`` rows of ``DATA/pbc_split.csv``. Every model is fitted
on ``train`` rows only (no tuning here at all: library defaults) and scored on ``test`` rows.
``--quick`` takes a seeded stratified subset of both (``--n-train-per-class`` /
``--n-test-per-class``) and tiny deep / speed settings so that the whole run takes minutes.

Sections, run in the order accuracy, deep, plots, speed, segmentation, crosslab (each can be
skipped with ``--skip``; one that fails is recorded in the JSON with its traceback and the
others still run):

``accuracy``
    grey-pixel RandomForest baseline (grey image resized to ``--grey-size`` squared pixels);
    hand-crafted features (:class:`~morphocell.batch.FeatureCache`, so the ~13.7k PBC images
    are measured once per code version) + RF / SVC / XGBoost
    (:class:`~morphocell.ensembles.stacking.BaseLearner`) and the
    :class:`~morphocell.ensembles.stacking.StackedCellClassifier`.
``deep`` (TensorFlow; a "not installed" row otherwise)
    ``cnn_softmax``: one :class:`~morphocell.deep.CNNEmbedder` on all training images;
    ``cnn_svc``: the cross-fitted, leakage-free deep path (:mod:`morphocell.deep.crossfit`);
    ``fused_stack``: late-fusion stack of hand-crafted features + the deep path's out-of-fold
    probabilities (needs the ``accuracy`` section's features). Same recipe as
    ``benchmarks/deep_compare.py``.
``speed``
    :func:`feature_speed.run` (morphocell vs scikit-image + mahotas, cp-measure, pyradiomics;
    one process and ``n_jobs=2``; numba compile time apart).
``segmentation``
    :func:`segmentation_quality.evaluate_dataset` on segwbc dataset1 / dataset2, classical
    (Otsu) and U-Net (``--unet-weights``), Dice per region; the *held-out* ids (odd) are the
    ones neither method was tuned / trained on.
``crosslab``
    ``benchmarks/cross_lab.py``'s ``run(data_root, out, quick, random_state)`` when that module
    exists; otherwise a row "cross-lab: not run".
``plots``
    confusion matrices, per-class F1 bars, top-20 feature importances (RF and XGBoost on the
    hand-crafted features), t-SNE of hand-crafted vs CNN features on a stratified test subset.

Metrics per method: accuracy, balanced accuracy (mean per-class recall), macro-F1 over the 8
classes, per-class F1, training time (s, features / decoding excluded: they are timed apart)
and prediction images/s (the model only, on features / decoded images already in memory).

Outputs in ``--out`` (atomic writes; rewritten after every section so an interrupted run leaves
what it measured): ``results.json``, ``results.md``, ``*.png``. Deterministic given
``--random-state`` (CNN training: on the same machine and TensorFlow build; see docs/deep.md).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from morphocell.errors import DataError, MorphocellError  # noqa: E402

#: In run order; plots come right after the models they draw (a long run that is stopped late
#: still has them).
SECTIONS = ("accuracy", "deep", "plots", "speed", "segmentation", "crosslab", "labtransfer")
#: Display names of the accuracy rows, in table order.
METHODS = {
    "grey_rf": "grey pixels + RF (baseline)",
    "hc_rf": "hand-crafted + RF",
    "hc_svc": "hand-crafted + SVC",
    "hc_xgb": "hand-crafted + XGBoost",
    "hc_stack": "hand-crafted stack (RF+SVC+XGB -> LR)",
    "cnn_softmax": "CNN softmax",
    "cnn_svc": "CNN embeddings + SVC (cross-fitted)",
    "fused_stack": "fused stack (hand-crafted + CNN)",
}
FAILED = "<failed>"  # prediction of an image a method could not read (not scored)


class BenchmarkError(MorphocellError):
    """A benchmark section could not run (missing input, missing optional dependency)."""


# ---- settings --------------------------------------------------------------------------------

QUICK = {"n_train_per_class": 10, "n_test_per_class": 5, "cv": 3, "deep_cv": 2,
         "architecture": "small-cnn", "input_size": 32, "crop": 1.0, "epochs": 2, "speed_n": 40,
         "speed_n_slow": 4, "speed_n_peers": 3, "seg_n_per_dataset": 10, "tsne_per_class": 5}
FULL = {"n_train_per_class": None, "n_test_per_class": None, "cv": 5, "deep_cv": 3,
        "architecture": "small-resnet", "input_size": 64, "crop": 1.0, "epochs": 8,
        "speed_n": 500,
        "speed_n_slow": 100, "speed_n_peers": 30, "seg_n_per_dataset": None,
        "tsne_per_class": 100}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA",
                                                     str(REPO.parent / "shared" / "data")),
                    help="folder with pbc/, pbc_split.csv, segwbc/ (default $MORPHOCELL_DATA "
                         "or ../shared/data)")
    ap.add_argument("--out", default=str(BENCH / "results"),
                    help="output folder (default benchmarks/results/)")
    ap.add_argument("--quick", action="store_true",
                    help="small stratified subset and tiny settings: minutes end to end")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: "
                                               f"{','.join(SECTIONS)}")
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2, help="worker processes (features, stacks)")
    ap.add_argument("--cache-dir", default=None,
                    help="feature cache (default $MORPHOCELL_CACHE or ~/.cache/morphocell)")
    ap.add_argument("--unet-weights", default=None,
                    help="U-Net weights for the segmentation section (default: the bundled "
                         "weights; rows say so when absent)")
    ap.add_argument("--n-train-per-class", type=int, default=None,
                    help="seeded subset of the train rows per class (default: all; quick 10)")
    ap.add_argument("--n-test-per-class", type=int, default=None,
                    help="seeded subset of the test rows per class (default: all; quick 5)")
    ap.add_argument("--cv", type=int, default=None, help="stack folds (default 5; quick 3)")
    ap.add_argument("--deep-cv", type=int, default=None,
                    help="cross-fitted networks of the deep path (default 3; quick 2)")
    ap.add_argument("--architecture", default=None, help="CNN (default small-resnet; quick "
                                                         "small-cnn)")
    ap.add_argument("--input-size", type=int, default=None, help="CNN input (default 64; "
                                                                 "quick 32)")
    ap.add_argument("--epochs", type=int, default=None, help="max CNN epochs (default 8; "
                                                             "quick 2)")
    ap.add_argument("--crop", type=float, default=None,
                    help="CNN centre crop, share of the shorter side (default 1.0: the whole "
                         "image, as in the README's full run; morphocell train uses 0.75)")
    ap.add_argument("--grey-size", type=int, default=32, help="side of the grey-pixel baseline")
    ap.add_argument("--speed-n", type=int, default=None, help="images of the speed section")
    ap.add_argument("-v", "--verbose", type=int, default=1, help="0 silent, 1 progress")
    return ap


def resolve_config(args: argparse.Namespace) -> dict:
    """Defaults of the mode (quick / full) overridden by the explicit options."""
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("n_train_per_class", "n_test_per_class", "cv", "deep_cv", "architecture",
              "input_size", "crop", "epochs", "speed_n"):
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        raise BenchmarkError(f"--skip: unknown sections {sorted(unknown)}; choose from "
                             f"{', '.join(SECTIONS)}")
    cfg.update(quick=bool(args.quick), random_state=args.random_state, n_jobs=args.n_jobs,
               grey_size=args.grey_size, skip=sorted(skip),
               unet_weights=args.unet_weights, embedding_dim=256, batch_size=32)
    return cfg


# ---- data and metrics ------------------------------------------------------------------------

def load_pbc_split(data: Path, cfg: dict) -> dict:
    """``{"train": (paths, labels), "test": (paths, labels)}`` from ``pbc_split.csv``,
    seeded per-class subsets where the config asks (``deep_compare.load_split``)."""
    from deep_compare import load_split

    if not (data / "pbc_split.csv").is_file():
        raise DataError("pbc_split.csv not found (give --data or set MORPHOCELL_DATA)", data)
    split = load_split(data, cfg["n_train_per_class"], cfg["n_test_per_class"],
                       cfg["random_state"])
    for s in ("train", "test"):
        missing = [p for p in split[s][0][:5] if not Path(p).is_file()]
        if missing:
            raise DataError(f"images of pbc_split.csv not found, e.g. {missing[0]}", data)
    return split


def score(y_true, y_pred, classes) -> dict:
    """The metrics of ``morphocell evaluate`` (:func:`morphocell.report.classification_metrics`)
    in the layout of the results: accuracy, balanced accuracy, macro-F1, F1 per class of
    ``classes``, confusion matrix. As in ``evaluate``, an image a method could not read
    (prediction :data:`FAILED`) is counted in ``n_failed``, not scored; ``n`` counts every
    test image."""
    from morphocell.report import classification_metrics

    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    ok = y_pred != FAILED
    classes = [str(c) for c in classes]
    m = classification_metrics(y_true[ok], y_pred[ok], classes=classes)
    return {"n": int(len(y_true)),
            "accuracy": m["accuracy"],
            "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"],
            "per_class_f1": {c: m["per_class"][c]["f1"] for c in classes},
            "n_failed": int((~ok).sum()),
            "confusion_labels": m["labels"],
            "confusion_matrix": m["confusion_matrix"]}


def proba_to_pred(proba: np.ndarray, classes) -> np.ndarray:
    """Arg-max class per row; rows with NaN (unreadable images) give :data:`FAILED`."""
    proba = np.asarray(proba, dtype=np.float64)
    bad = ~np.isfinite(proba).all(axis=1)
    pred = np.asarray([str(c) for c in classes], dtype=object)[
        np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)]
    pred[bad] = FAILED
    return pred


def grey_pixels(paths, size: int, verbose: int = 0) -> tuple[np.ndarray, list[int]]:
    """Grey image (ITU-R 601 luma) resized to ``size x size`` (area), scaled to [0, 1], one
    row per image; unreadable images give NaN rows (their indices are returned)."""
    import cv2

    from morphocell._utils import progress
    from morphocell.io import read_image

    out = np.full((len(paths), size * size), np.nan, np.float32)
    bad = []
    for i, p in enumerate(progress(paths, desc="grey pixels", verbose=verbose)):
        try:
            g = cv2.cvtColor(read_image(p), cv2.COLOR_RGB2GRAY)
        except MorphocellError:
            bad.append(i)
            continue
        out[i] = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).ravel() / 255.0
    return out, bad


def _timed_fit_predict(make: Callable, Xtr, ytr, Xte) -> tuple[object, np.ndarray, float,
                                                                  float]:
    """Fit ``make()`` on (Xtr, ytr), predict probabilities on Xte: (model, proba, train s,
    predict images/s)."""
    t = time.perf_counter()
    model = make().fit(Xtr, ytr)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    proba = model.predict_proba(Xte)
    dt = time.perf_counter() - t
    return model, proba, train_s, len(Xte) / max(dt, 1e-9)


# ---- sections --------------------------------------------------------------------------------

class Run:
    """State shared by the sections of one run (the results dict, fitted models, tables)."""

    def __init__(self, args: argparse.Namespace, cfg: dict):
        self.args = args
        self.cfg = cfg
        self.data = Path(args.data).resolve()
        self.out = Path(args.out)
        self.verbose = args.verbose
        self.res: dict = {"config": cfg, "machine": machine_info(), "sections": {},
                          "methods": {}, "started": _now()}
        self.state: dict = {}
        self._split = None

    @property
    def cache_dir(self) -> Path:
        """``--cache-dir``, else morphocell's default feature cache folder."""
        if self.args.cache_dir is not None:
            return Path(self.args.cache_dir)
        from morphocell.batch import default_cache_dir

        return default_cache_dir()

    def log(self, *a) -> None:
        if self.verbose:
            print(*a, file=sys.stderr, flush=True)

    @property
    def split(self) -> dict:
        if self._split is None:
            self._split = load_pbc_split(self.data, self.cfg)
            (trp, trl), (tep, tel) = self._split["train"], self._split["test"]
            self.classes = sorted(set(trl))
            self.res["split"] = {"n_train": len(trp), "n_test": len(tep),
                                 "classes": self.classes,
                                 "train_per_class": _counts(trl), "test_per_class": _counts(tel),
                                 "subset": bool(self.cfg["n_train_per_class"]
                                                or self.cfg["n_test_per_class"])}
        return self._split

    def add_method(self, key: str, metrics: dict, **extra) -> None:
        row = {"name": METHODS.get(key, key), **metrics, **extra}
        self.res["methods"][key] = row
        self.log(f"  {key}: accuracy {metrics.get('accuracy', float('nan')):.4f}, macro-F1 "
                 f"{metrics.get('macro_f1', float('nan')):.4f}, train "
                 f"{extra.get('train_s', float('nan')):.1f} s")

    # -- 1. accuracy: grey baseline and hand-crafted learners
    def section_accuracy(self) -> dict:
        from morphocell.ensembles.stacking import BaseLearner, StackedCellClassifier
        from morphocell.train import compute_features

        cfg, seed = self.cfg, self.cfg["random_state"]
        (trp, trl), (tep, tel) = self.split["train"], self.split["test"]
        info: dict = {}

        # grey-pixel baseline
        t = time.perf_counter()
        gtr, bad_tr = grey_pixels(trp, cfg["grey_size"], self.verbose)
        gte, bad_te = grey_pixels(tep, cfg["grey_size"], self.verbose)
        info["grey_decode_s"] = time.perf_counter() - t
        keep = np.setdiff1d(np.arange(len(trp)), bad_tr)
        rf, p, train_s, ips = _timed_fit_predict(
            lambda: BaseLearner("rf", random_state=seed, n_jobs=1),
            gtr[keep], np.asarray(trl)[keep], np.nan_to_num(gte))
        pred = proba_to_pred(p, rf.classes_)
        pred[bad_te] = FAILED
        self.add_method("grey_rf", score(tel, pred, self.classes), train_s=train_s,
                        predict_img_per_s=ips,
                        input=f"grey {cfg['grey_size']}x{cfg['grey_size']} px")

        # hand-crafted features, through the cache
        cache_dir = self.cache_dir
        t = time.perf_counter()
        X, st, er, stats = compute_features(list(trp) + list(tep), None, "otsu", cache_dir,
                                            cfg["n_jobs"], self.verbose)
        feat_s = time.perf_counter() - t
        n_tr = len(trp)
        st = np.asarray(st, dtype=object)
        info["features"] = {"seconds": feat_s, "cache_dir": str(cache_dir), **stats,
                            "n_columns": int(X.shape[1]),
                            "computed_per_s": (stats["computed"] / feat_s
                                               if stats["computed"] else None),
                            "train_failed": int((st[:n_tr] != "ok").sum()),
                            "test_failed": int((st[n_tr:] != "ok").sum()),
                            "first_errors": [e for e in er if e][:5]}
        self.log(f"  features: {stats['hits']} from cache, {stats['computed']} computed in "
                 f"{feat_s:.1f} s ({cache_dir})")
        ok_tr = st[:n_tr] == "ok"
        Xtr = X.iloc[:n_tr][ok_tr].reset_index(drop=True)
        ytr = np.asarray(trl, dtype=object)[ok_tr].astype(str)
        # test rows whose segmentation failed keep their NaN features: every model imputes
        Xte = X.iloc[n_tr:].reset_index(drop=True)
        self.state.update(hc_train=Xtr, hc_train_all=X.iloc[:n_tr].reset_index(drop=True),
                          hc_test=Xte)

        for kind in ("rf", "svc", "xgb"):
            m, p, train_s, ips = _timed_fit_predict(
                lambda k=kind: BaseLearner(k, random_state=seed, n_jobs=1),
                Xtr, ytr, Xte)
            self.state[f"hc_{kind}"] = m
            self.add_method(f"hc_{kind}", score(tel, proba_to_pred(p, m.classes_),
                                                self.classes),
                            train_s=train_s, predict_img_per_s=ips,
                            input=f"{X.shape[1]} hand-crafted features")
        stack, p, train_s, ips = _timed_fit_predict(
            lambda: StackedCellClassifier(cv=cfg["cv"], random_state=seed,
                                          n_jobs=cfg["n_jobs"]), Xtr, ytr, Xte)
        self.state["hc_stack"] = stack
        self.add_method("hc_stack", score(tel, proba_to_pred(p, stack.classes_), self.classes),
                        train_s=train_s, predict_img_per_s=ips,
                        input=f"{X.shape[1]} hand-crafted features",
                        cv_scores=stack.cv_scores_, cv=cfg["cv"])
        info["n_train_measured"] = int(ok_tr.sum())
        return info

    # -- 1b. deep rows
    def section_deep(self) -> dict:
        if importlib.util.find_spec("tensorflow") is None:
            for k in ("cnn_softmax", "cnn_svc", "fused_stack"):
                self.res["methods"][k] = {"name": METHODS[k], "status": "not installed",
                                          "note": "TensorFlow not installed: pip install "
                                                  "'morphocell[deep]'"}
            return {"status": "not installed"}
        import keras
        import pandas as pd
        import tensorflow as tf

        from morphocell.deep.embedder import CNNEmbedder, decode_images
        from morphocell.deep.crossfit import (DeepModel, FusedModel, crossfit_embeddings,
                                              default_embedder, proba_names)

        cfg, seed = self.cfg, self.cfg["random_state"]
        (trp, trl), (tep, tel) = self.split["train"], self.split["test"]
        params = dict(architecture=cfg["architecture"], input_size=cfg["input_size"],
                      crop=cfg.get("crop", 1.0), embedding_dim=cfg["embedding_dim"],
                      epochs=cfg["epochs"], batch_size=cfg["batch_size"], augment=True)
        info: dict = {"embedder": params, "deep_cv": cfg["deep_cv"],
                      "tensorflow": tf.__version__, "keras": keras.__version__,
                      "gpu": bool(tf.config.list_physical_devices("GPU"))}
        t = time.perf_counter()
        crop = float(params["crop"])
        tr_img, tr_ok, tr_fail = decode_images(trp, cfg["input_size"], verbose=self.verbose,
                                               crop=crop)
        te_img, te_ok, te_fail = decode_images(tep, cfg["input_size"], verbose=self.verbose,
                                               crop=crop)
        info["decode_s"] = time.perf_counter() - t
        info["decode_failures"] = len(tr_fail) + len(te_fail)
        ytr = np.asarray(trl, dtype=object)[tr_ok].astype(str)
        vb = 1 if self.verbose else 0

        def full_pred(p, classes):  # predictions for every test image, failures = FAILED
            pred = np.full(len(tep), FAILED, dtype=object)
            pred[te_ok] = proba_to_pred(p, classes)
            return pred

        # CNN softmax: one network, all training images
        t = time.perf_counter()
        cnn = CNNEmbedder(**params, random_state=seed, verbose=vb).fit(tr_img, ytr)
        train_s = time.perf_counter() - t
        cnn._infer(te_img[:8])  # trace the inference graph outside the timing
        t = time.perf_counter()
        e_te, p_cnn, _ = cnn._infer(te_img)
        ips = len(te_img) / max(time.perf_counter() - t, 1e-9)
        self.state.update(cnn=cnn, cnn_test_embeddings=e_te, test_ok_deep=te_ok)
        hist = cnn.history_.get("images_per_s", [])
        self.add_method("cnn_softmax", score(tel, full_pred(p_cnn, cnn.classes_), self.classes),
                        train_s=train_s, predict_img_per_s=ips, epochs_run=cnn.n_epochs_,
                        train_img_per_s=float(np.mean(hist[1:] or hist)) if hist else None,
                        n_params=int(cnn.model_.count_params()),
                        input=f"{cfg['architecture']} {cfg['input_size']} px")

        # cross-fitted deep path
        t = time.perf_counter()
        template = default_embedder(**params)  # as crossfit_embeddings(**params)
        cf = crossfit_embeddings(tr_img, ytr, cv=cfg["deep_cv"], random_state=seed,
                                 verbose=vb, embedder=template)
        deep = DeepModel(embedder=template, cv=cfg["deep_cv"], random_state=seed
                         )._fit_crossfit(cf)
        deep_s = time.perf_counter() - t
        deep._proba_decoded(te_img[:8])
        t = time.perf_counter()
        p_deep = deep._proba_decoded(te_img)
        deep_pred_s = time.perf_counter() - t
        self.add_method("cnn_svc", score(tel, full_pred(p_deep, deep.classes_), self.classes),
                        train_s=deep_s, predict_img_per_s=len(te_img) / max(deep_pred_s, 1e-9),
                        epochs_run=[e.n_epochs_ for e in cf.embedders], oof=deep.cv_scores_,
                        input=f"{cfg['deep_cv']} x {cfg['architecture']} {cfg['input_size']} px"
                              " + SVC")

        # fused stack: needs the hand-crafted table of the accuracy section
        if "hc_train" not in self.state:
            self.res["methods"]["fused_stack"] = {
                "name": METHODS["fused_stack"], "status": "not run",
                "note": "needs the hand-crafted features of the accuracy section"}
            return info
        # hand-crafted rows of the decoded training images (NaN where measuring failed: the
        # stack imputes them; the deep columns are there for every decoded image)
        hc_tr = self.state["hc_train_all"].iloc[tr_ok].reset_index(drop=True)
        t = time.perf_counter()
        fused = FusedModel(embedder=template, cv=cfg["cv"], random_state=seed,
                           n_jobs=cfg["n_jobs"])
        fused._fit_tables(deep, hc_tr, cf.y)
        fused_s = deep_s + time.perf_counter() - t
        hc_te = self.state["hc_test"].iloc[te_ok].reset_index(drop=True)
        t = time.perf_counter()
        table = pd.concat([hc_te[fused.handcrafted_columns_],
                           pd.DataFrame(p_deep, columns=proba_names(len(deep.classes_)))],
                          axis=1)
        p_fused = fused.stack_.predict_proba(table)
        fused_pred_s = deep_pred_s + time.perf_counter() - t
        self.add_method("fused_stack", score(tel, full_pred(p_fused, fused.classes_),
                                             self.classes),
                        train_s=fused_s, predict_img_per_s=len(te_img) / fused_pred_s,
                        oof=fused.cv_scores_, cv=cfg["cv"],
                        input="hand-crafted features + cnn_svc probabilities")
        info["note"] = ("train_s of cnn_svc and fused_stack include the cross-fitted networks; "
                        "fused_stack's predict rate includes the K networks")
        return info

    # -- 2. speed
    def section_speed(self) -> dict:
        import feature_speed

        cfg = self.cfg
        a = argparse.Namespace(data=str(self.data), n=cfg["speed_n"],
                               n_slow=cfg["speed_n_slow"], n_cp=cfg["speed_n_peers"],
                               n_radiomics=cfg["speed_n_peers"], warmup=2 if cfg["quick"]
                               else 10, verbose=bool(self.verbose),
                               compile_empty_cache=not cfg["quick"],
                               scaling_repeats=1 if cfg["quick"] else 3)
        res = feature_speed.run(a)
        self.state["speed_md"] = feature_speed.to_markdown(res)
        return res

    # -- 3. segmentation
    def section_segmentation(self) -> dict:
        import segmentation_quality as sq

        cfg = self.cfg
        root = self.data / "segwbc"
        if not root.is_dir():
            raise DataError("segwbc folder not found", root)
        weights = cfg["unet_weights"]
        if not weights:  # default: the weights shipped with the package, when present
            from morphocell.segmentation.unet import BUNDLED_WEIGHTS

            weights = str(BUNDLED_WEIGHTS) if BUNDLED_WEIGHTS.is_file() else None
        out: dict = {"datasets": {}, "unet_weights": weights,
                     "note": "held-out = odd ids (never used to tune Otsu or train the U-Net)"}
        unet_reason = None
        if not weights:
            unet_reason = "no --unet-weights given and no bundled weights"
        elif not Path(weights).is_file():
            unet_reason = f"U-Net weights not found: {weights}"
        elif importlib.util.find_spec("tensorflow") is None:
            unet_reason = "TensorFlow not installed (pip install 'morphocell[deep]')"
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("dataset1", "dataset2"):
                folder = root / name
                if not folder.is_dir():
                    out["datasets"][name] = {"error": f"{folder} not found"}
                    continue
                n = cfg["seg_n_per_dataset"]
                if n:  # quick: the first n image/mask pairs (odd and even ids alike)
                    sub = Path(tmp) / name
                    sub.mkdir()
                    for _, img, mask in sq.list_pairs(folder)[:n]:
                        (sub / img.name).symlink_to(img)
                        (sub / mask.name).symlink_to(mask)
                    folder = sub
                d: dict = {}
                for method in ("otsu", "unet"):
                    if method == "unet" and unet_reason:
                        d[method] = {"status": "not run", "reason": unet_reason}
                        continue
                    try:
                        # U-Net inference dominates its time: one timed call per image
                        repeat = 1 if cfg["quick"] or method == "unet" else 3
                        r = sq.evaluate_dataset(folder, method, weights if method == "unet"
                                                else None, repeat=repeat)
                    except Exception as exc:  # noqa: BLE001 - one method failing is a row
                        d[method] = {"status": "failed", "error": f"{type(exc).__name__}: "
                                                                  f"{exc}"}
                        continue
                    r.pop("per_image", None)
                    r["folder"] = str(root / name)
                    d[method] = r
                out["datasets"][name] = d
        return out

    # -- 4. cross-lab
    def section_crosslab(self) -> dict:
        path = BENCH / "cross_lab.py"
        if not path.is_file():
            return {"status": "not run", "reason": "benchmarks/cross_lab.py does not exist "
                                                   "yet", "rows": []}
        spec = importlib.util.spec_from_file_location("cross_lab", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["cross_lab"] = mod
        spec.loader.exec_module(mod)
        kw = {"data_root": self.data, "out": self.out / "cross_lab", "quick": self.cfg["quick"],
              "random_state": self.cfg["random_state"]}
        # optional parameters, passed when cross_lab.run takes them: the same feature cache
        # (the PBC features of the accuracy section are then not computed twice)
        params = inspect.signature(mod.run).parameters
        for k, v in (("cache_dir", self.cache_dir), ("n_jobs", self.cfg["n_jobs"]),
                     ("verbose", self.verbose)):
            if k in params:
                kw[k] = v
        res = mod.run(**kw)
        if not isinstance(res, dict):
            raise BenchmarkError(f"cross_lab.run returned {type(res).__name__}, not a dict")
        return json.loads(json.dumps(res, default=_jsonable))

    def section_labtransfer(self) -> dict:
        """``benchmarks/lab_transfer.py`` (leave-one-lab-out; its own features in
        ``OUT/lab_transfer/work``): SVC learner, PBC 300 train cells per class as a source
        (quick: its ``--quick`` mode with logistic regression)."""
        spec = importlib.util.spec_from_file_location("lab_transfer", BENCH / "lab_transfer.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["lab_transfer"] = mod
        spec.loader.exec_module(mod)
        quick = self.cfg["quick"]
        res = mod.run(self.data, self.out / "lab_transfer", learner="lr" if quick else "svc",
                      quick=quick, random_state=self.cfg["random_state"], verbose=self.verbose,
                      pbc_per_class=None if quick else 300)
        return json.loads(json.dumps({**res, "markdown": mod.to_markdown(res)},
                                     default=_jsonable))

    # -- 5. plots
    def section_plots(self) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        from morphocell.report import plot_confusion_matrix

        files = []
        scored = {k: m for k, m in self.res["methods"].items() if "confusion_matrix" in m}
        if not scored:
            raise BenchmarkError("no accuracy results to plot (accuracy and deep skipped or "
                                 "failed)")
        for k, m in scored.items():
            f = self.out / f"confusion_{k}.png"
            plot_confusion_matrix(m["confusion_matrix"], m["confusion_labels"], f,
                                  title=f"{m['name']} (test, n={m['n']})")
            files.append(f.name)
        f = self.out / "per_class_f1.png"
        plot_per_class_f1(scored, self.classes, f)
        files.append(f.name)
        if "hc_rf" in self.state or "hc_xgb" in self.state:
            f = self.out / "feature_importances_top20.png"
            self.res["top20_importances"] = plot_importances(
                {k: self.state[k] for k in ("hc_rf", "hc_xgb") if k in self.state},
                list(self.state["hc_train"].columns), f)
            files.append(f.name)
        if "hc_test" in self.state:
            f = self.out / "embedding_tsne.png"
            self.res["tsne"] = self.plot_tsne(f)
            files.append(f.name)
        return {"files": files}

    def plot_tsne(self, path: Path) -> dict:
        """t-SNE of the hand-crafted features and of the CNN embeddings (the all-data
        network's) of the same stratified, seeded test subset, coloured by class."""
        import matplotlib.pyplot as plt
        from sklearn.impute import SimpleImputer
        from sklearn.manifold import TSNE
        from sklearn.preprocessing import StandardScaler

        from morphocell._utils import atomic_path

        seed = self.cfg["random_state"]
        _, tel = self.split["test"]
        tel = np.asarray(tel)
        rng = np.random.RandomState(seed)
        idx = []
        for c in self.classes:
            pos = np.flatnonzero(tel == c)
            k = min(self.cfg["tsne_per_class"], len(pos))
            idx += sorted(rng.choice(pos, k, replace=False).tolist())
        idx = np.asarray(idx)
        panels = {"hand-crafted features": StandardScaler().fit_transform(
            SimpleImputer(strategy="median", keep_empty_features=True).fit_transform(
                self.state["hc_test"].to_numpy()[idx]))}
        if "cnn_test_embeddings" in self.state:
            ok = self.state["test_ok_deep"]
            where = {int(i): j for j, i in enumerate(ok)}
            sel = [i for i in idx if int(i) in where]
            idx_d = np.asarray(sel)
            panels["CNN embeddings"] = self.state["cnn_test_embeddings"][
                [where[int(i)] for i in sel]]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
        info = {"n_points": int(len(idx)), "per_class": self.cfg["tsne_per_class"],
                "panels": list(panels)}
        cmap = plt.get_cmap("tab10")
        for ax, (title, Z) in zip(axes[0], panels.items(), strict=True):
            labels = tel[idx] if title.startswith("hand") else tel[idx_d]
            perp = float(min(30.0, max(2.0, (len(Z) - 1) / 3.0)))
            emb = TSNE(2, perplexity=perp, init="pca", random_state=seed).fit_transform(
                np.asarray(Z, dtype=np.float64))
            for j, c in enumerate(self.classes):
                m = labels == c
                ax.scatter(emb[m, 0], emb[m, 1], s=8, color=cmap(j), label=c, alpha=0.8)
            ax.set_title(f"t-SNE of {title} ({len(Z)} test images, {Z.shape[1]} dims)")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][-1].legend(markerscale=2, fontsize=8, loc="best")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        return info


def plot_per_class_f1(methods: dict, classes: list[str], path: Path) -> None:
    """Grouped bars: per-class test F1 of every method."""
    import matplotlib.pyplot as plt

    from morphocell._utils import atomic_path

    keys = list(methods)
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(classes)), 5.6))
    cmap = plt.get_cmap("tab10")
    x = np.arange(len(classes))
    for j, k in enumerate(keys):
        f1 = [methods[k]["per_class_f1"][c] for c in classes]
        ax.bar(x + (j - (len(keys) - 1) / 2) * w, f1, w, label=methods[k]["name"],
               color=cmap(j % 10))
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("F1 (test rows)")
    lo = min(min(m["per_class_f1"].values()) for m in methods.values())
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_title("Per-class F1 by method")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_importances(models: dict, names: list[str], path: Path, top: int = 20) -> dict:
    """Top-``top`` normalised importances (RF impurity, XGBoost gain) with feature names."""
    import matplotlib.pyplot as plt

    from morphocell._utils import atomic_path

    out = {}
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 0.3 * top + 1.5),
                             squeeze=False)
    for ax, (k, m) in zip(axes[0], models.items(), strict=True):
        imp = np.asarray(m.feature_importances_, dtype=np.float64)
        order = np.argsort(-imp, kind="stable")[:top]
        out[k] = [{"feature": names[j], "importance": float(imp[j])} for j in order]
        ax.barh([names[j] for j in order[::-1]], imp[order[::-1]], color="tab:blue")
        ax.set_title(f"{METHODS[k]}: top {top} "
                     f"({'impurity' if k == 'hc_rf' else 'gain'} share)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


# ---- reporting -------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _counts(labels) -> dict:
    u, c = np.unique(np.asarray(labels), return_counts=True)
    return {str(a): int(b) for a, b in zip(u, c, strict=True)}


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def machine_info() -> dict:
    """Python, CPU count, load average, git commit (and whether the tree had local edits)."""
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "nice": os.nice(0),
            "load1_start": os.getloadavg()[0]}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                            capture_output=True, text=True,
                                            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from morphocell._version import __version__

    info["morphocell"] = __version__
    return info


def _f(v, fmt=".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def accuracy_table(res: dict) -> list[str]:
    methods = res.get("methods", {})
    classes = res.get("split", {}).get("classes", [])
    head = ("| method | accuracy | balanced acc. | macro-F1 | " + " | ".join(classes)
            + " | train (s) | predict img/s |")
    lines = [head, "|" + "---|" * (6 + len(classes))]
    for k in METHODS:
        if k not in methods:
            continue
        m = methods[k]
        if "accuracy" not in m:
            lines.append(f"| {m['name']} | {m.get('status', '-')}: {m.get('note', '')} |"
                         + " |" * (5 + len(classes)))
            continue
        lines.append(f"| {m['name']} | {_f(m['accuracy'])} | {_f(m['balanced_accuracy'])} | "
                     f"{_f(m['macro_f1'])} | "
                     + " | ".join(_f(m["per_class_f1"][c]) for c in classes)
                     + f" | {_f(m.get('train_s'), '.1f')} | "
                       f"{_f(m.get('predict_img_per_s'), '.0f')} |")
    return lines


def segmentation_table(seg: dict) -> list[str]:
    lines = ["| dataset | method | subset | n | nucleus Dice | cytoplasm Dice | cell Dice | "
             "cell IoU | ms/img |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in seg.get("datasets", {}).items():
        if "error" in d:
            lines.append(f"| {name} | - | - | - | {d['error']} | | | | |")
            continue
        for method in ("otsu", "unet"):
            r = d.get(method, {})
            if "summary" not in r:
                lines.append(f"| {name} | {method} | - | - | {r.get('status', '?')}: "
                             f"{r.get('reason', r.get('error', ''))} | | | | |")
                continue
            for subset in ("heldout", "all"):
                s = r["summary"][subset]
                lines.append(f"| {name} | {method} | {subset} | {s['n']} | "
                             f"{_f(s['nucleus_dice_mean'])} | {_f(s['cytoplasm_dice_mean'])} | "
                             f"{_f(s['cell_dice_mean'])} | {_f(s['cell_iou_mean'])} | "
                             f"{_f(r['ms_per_image_mean'], '.1f')} |")
    return lines


def crosslab_table(cl: dict) -> list[str]:
    rows = cl.get("rows") or []
    if not rows:
        return [f"cross-lab: not run ({cl.get('reason') or cl.get('status') or 'no rows'})"]
    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| method | dataset | accuracy | macro-F1 | n |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {cell(r.get('method'))} | {cell(r.get('dataset'))} | "
                     f"{_f(r.get('accuracy'))} | {_f(r.get('macro_f1'))} | {r.get('n', '-')} |")
    extra = {k: v for k, v in cl.items() if k != "rows" and isinstance(v, (str, int, float))}
    if extra:
        lines += ["", "; ".join(f"{k}: {v}" for k, v in extra.items())]
    return lines


def to_markdown(res: dict) -> str:
    cfg, mach = res["config"], res["machine"]
    sec = res["sections"]
    mode = "QUICK RUN (small subset, tiny settings: not comparable with full-run numbers)" \
        if cfg["quick"] else "full run"
    sp = res.get("split", {})
    lines = [f"# morphocell benchmarks -- {mode}", "",
             f"`python benchmarks/run_all.py {res.get('argv', '')}`, started {res['started']}, "
             f"git {mach.get('git_commit', '?')}, morphocell {mach.get('morphocell')}. Machine: "
             f"{mach['cpu_count']} CPU cores, no GPU used unless stated, Python "
             f"{mach['python']}, nice {mach['nice']}, load average {mach['load1_start']:.1f} "
             f"at start (shared machine: other jobs ran at the same time).", "",
             "Section wall times (s): " + ", ".join(
                 f"{k} {v['wall_s']:.0f} ({v['status']})" for k, v in sec.items()), ""]
    if sp:
        lines += [f"Split: `pbc_split.csv`, {sp['n_train']} train / {sp['n_test']} test images"
                  + (" (seeded per-class subset)" if sp["subset"] else " (all rows)")
                  + f", random_state {cfg['random_state']}; nothing tuned on test rows.", ""]
    lines += ["## 1. Accuracy on the PBC test rows", ""]
    if "accuracy" in sec or "deep" in sec:
        lines += accuracy_table(res)
        acc = sec.get("accuracy", {}).get("result", {}) or {}
        fe = acc.get("features", {})
        deep = sec.get("deep", {}).get("result", {}) or {}
        lines += ["", "Per-class columns: F1. `train (s)`: fitting time of the model "
                  "(features / decoding excluded); `predict img/s`: the fitted model on "
                  "features or decoded images already in memory."]
        if fe:
            lines.append(f"Hand-crafted features: {fe.get('n_columns')} columns, "
                         f"{fe.get('hits')} images from the cache, {fe.get('computed')} "
                         f"computed in {fe.get('seconds', 0):.0f} s "
                         f"({cfg['n_jobs']} workers); failed: {fe.get('train_failed')} train, "
                         f"{fe.get('test_failed')} test (test rows that failed keep NaN "
                         "features, imputed by the models). Stacks: "
                         f"{cfg['cv']}-fold out-of-fold meta-learner.")
        if deep.get("embedder"):
            e = deep["embedder"]
            crop = float(e.get("crop", 1.0))
            lines.append(f"Deep settings: {e['architecture']} at {e['input_size']} px "
                         + ("(whole image)" if crop == 1 else f"(central {crop:g} of the image)")
                         + ", "
                         f"embedding {e['embedding_dim']}, at most {e['epochs']} epochs "
                         f"(early stopping on a 10% validation split), batch "
                         f"{e['batch_size']}, augmentation on; cross-fitted deep path with "
                         f"{deep['deep_cv']} networks; TensorFlow {deep['tensorflow']}, "
                         f"GPU: {deep['gpu']}.")
    else:
        lines.append("skipped")
    for name, title in (("speed", "## 2. Feature-extraction speed"),
                        ("segmentation", "## 3. Segmentation (segwbc expert masks)"),
                        ("crosslab", "## 4. Cross-lab (trained on PBC only)"),
                        ("labtransfer", "## 4b. Leave-one-lab-out (benchmarks/lab_transfer.py)")):
        lines += ["", title, ""]
        s = sec.get(name)
        if s is None:
            lines.append("skipped" if name in cfg["skip"] else "not run yet")
            continue
        if s["status"] != "ok":
            last = (s.get("error") or "").strip().splitlines()[-1:] or [""]
            lines.append(f"**{s['status']}**: {last[0]} (traceback in results.json)")
            continue
        r = s["result"]
        if name == "speed":
            md = res.get("_speed_md") or ""
            lines += [ln.replace("# Feature-extraction speed", "").strip() for ln in
                      md.splitlines()[1:]]
        elif name == "segmentation":
            lines += segmentation_table(r)
            lines += ["", "Dice means; held-out = odd ids, never used to tune the Otsu "
                      "defaults nor, by the protocol of `morphocell/segmentation/unet.py`, to "
                      f"train the U-Net (weights: `{r.get('unet_weights')}`); ms/img: image in "
                      "memory, Otsu the fastest of 3 calls (1 in quick runs), U-Net 1 call."]
        elif name == "labtransfer":
            lines += r["markdown"].splitlines()[1:]
        else:
            lines += crosslab_table(r)
    lines += ["", "## 5. Plots", ""]
    p = sec.get("plots")
    if p and p["status"] == "ok":
        lines += [f"![{f}]({f})" for f in p["result"]["files"]]
    else:
        lines.append("skipped" if "plots" in cfg["skip"] else "not produced")
    failed = [k for k, v in sec.items() if v["status"] == "failed"]
    if failed:
        lines += ["", "## Failed sections", ""]
        for k in failed:
            lines += [f"### {k}", "", "```", sec[k]["error"].strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


def write_outputs(run: Run, final: bool = False) -> None:
    from morphocell._utils import atomic_write

    res = dict(run.res)
    res["_speed_md"] = run.state.get("speed_md")
    md = to_markdown(res)
    res.pop("_speed_md")
    if final:
        res["finished"] = _now()
    with atomic_write(run.out / "results.json", "w") as fh:
        json.dump(res, fh, indent=1, default=_jsonable)
        fh.write("\n")
    with atomic_write(run.out / "results.md", "w") as fh:
        fh.write(md)


def run_all(args: argparse.Namespace) -> dict:
    """Run every section not skipped; returns the results dict (also written to ``--out``)."""
    cfg = resolve_config(args)
    run = Run(args, cfg)
    run.res["argv"] = " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    if not run.data.is_dir():
        raise DataError("data folder not found (give --data or set MORPHOCELL_DATA)", run.data)
    run.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for name in SECTIONS:
        if name in cfg["skip"]:
            continue
        run.log(f"== {name}")
        t = time.perf_counter()
        entry: dict = {"started": _now()}
        try:
            entry["result"] = getattr(run, f"section_{name}")()
            entry["status"] = "ok"
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded, not fatal
            entry["status"] = "failed"
            entry["error"] = "".join(traceback.format_exception(exc))
            run.log(f"  section {name} FAILED: {type(exc).__name__}: {exc}")
        entry["wall_s"] = time.perf_counter() - t
        entry["load1_end"] = os.getloadavg()[0]
        run.res["sections"][name] = entry
        print(f"[{name}] {entry['status']} in {entry['wall_s']:.1f} s wall", flush=True)
        write_outputs(run)
    run.res["total_wall_s"] = time.perf_counter() - t_all
    run.res["machine"]["load1_end"] = os.getloadavg()[0]
    write_outputs(run, final=True)
    print((run.out / "results.md").read_text())
    print(f"total wall time {run.res['total_wall_s']:.1f} s; wrote {run.out / 'results.json'}, "
          f"{run.out / 'results.md'} and the PNGs", flush=True)
    return run.res


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        res = run_all(args)
    except MorphocellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(s["status"] == "ok" for s in res["sections"].values()) else 3


if __name__ == "__main__":
    sys.exit(main())
