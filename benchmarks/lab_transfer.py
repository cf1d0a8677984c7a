"""Leave-one-lab-out: how a model trained on some labs does on another lab's cells.

Usage (from the repository root)::

    nice -n 10 python benchmarks/lab_transfer.py --data ../shared/data \\
        [--out benchmarks/results/lab_transfer] [--work /tmp/lt] [--learner svc|lr|stack]
        [--pbc-per-class 300] [--held-out LAB,...] [--k0-only] [--ks 1,3,5,10,20]
        [--quick] [--draws 10] [--features handcrafted|fused|deep] [--cnn-size 64 ...]

Labs (all labelled images of ``DATA``):

``pbc``
    PBC, 8 classes (CellaVision DM96, Barcelona): trained on its ``train`` rows of
    ``pbc_split.csv``, scored on its ``test`` rows.
``segwbc_d1``
    segwbc dataset1, 300 cells, 120 x 120 px (Jiangxi Tecom, rapid stain).
``segwbc_d2``
    segwbc dataset2, 40 cells, 300 x 300 px (CellaVision).
``bccd``
    BCCD, the white cells that :func:`morphocell.segmentation.detect.find_white_cells` (the
    ``morphocell crop`` detector) finds in the 175 even-numbered labelled fields, cropped at
    the field's own scale (:func:`~morphocell.segmentation.detect.crop_cells`, no ``--size``),
    each crop labelled with its field's label (``bccd/labels.csv``). Odd fields are never read.

For each held-out lab the model is trained on the other three (each a *domain*) and scored on
the held-out lab's cells of the classes the model knows (PBC held out: its test rows of the
five white-cell classes the other labs have). Scores are over the classes present: the
probabilities are restricted to the classes that occur in the held-out lab (as
``morphocell evaluate --classes-present-only``), accuracy and macro-F1 by
:func:`morphocell.report.classification_metrics`, and the differential-count error
:math:`\\frac12 \\sum_c |\\hat s_c - s_c|` (predicted vs true share of each class).

Rows per held-out lab:

``k0_asis``
    the learner trained on the pooled source labs without lab standardisation (one
    StandardScaler over all of them): how a model does on another lab as it is.
``k0_adapt``
    :class:`morphocell.adapt.LabAdaptiveClassifier` (each source lab standardised on its own),
    the held-out lab's statistics and class priors estimated on its cells by EM
    (:func:`morphocell.adapt.adapt_transductive`, no label used).
``k0_self``
    ``k0_adapt`` plus self-training: the head refitted on the batch's confident cells
    (:func:`morphocell.adapt.fit_head` with pseudo-labels).
``kK`` (K = 1, 3, 5, 10, 20)
    ``K`` labelled cells per class drawn at random (a class with fewer than ``2K`` cells gives
    half of them, at least one), the rest scored; :func:`morphocell.adapt.fit_head` on them
    plus the unlabelled rest for the statistics; ``--draws`` draws, mean and sd.
``ceiling``
    5-fold stratified CV inside the lab (SVC on standardised features, the learner of issue
    37's ceiling figures) over the classes scored in the other rows -- for PBC on its test rows
    of the five white-cell classes the other labs have.

Learners (``--learner``): ``svc`` (:class:`~morphocell.ensembles.stacking.BaseLearner`
``"svc"``, the default), ``lr`` (logistic regression, fast, for exploration), ``stack`` (the
full :class:`~morphocell.ensembles.stacking.StackedCellClassifier`; slow). No parameter is
chosen on the held-out lab: every setting is fixed in :mod:`morphocell.adapt` beforehand.

Features (``--features``):

``handcrafted`` (default)
    the 721 hand-crafted features of :mod:`morphocell.features`.
``fused``
    the 721 hand-crafted features and the embedding of a CNN
    (:class:`morphocell.deep.CNNEmbedder`, stain augmentation ``augment="stain"``) trained in
    each fold on the **source rows only** (the held-out lab's images are never a training
    image of it), side by side. The lab standardisation of
    :class:`~morphocell.ensembles.lab_adaptive.LabAdaptiveClassifier` standardises the
    embedding columns per lab too. One more row, ``k0_cnn``: the CNN's own softmax on the
    held-out lab (no adaptation).
``deep``
    the CNN embedding alone, through the same rows.

The CNN is trained with ``--cnn-arch``, ``--cnn-size``, ``--cnn-crop``, ``--cnn-dim`` and
``--cnn-epochs`` (defaults 64 px, crop 1.0, 64 columns, 10 epochs: REDUCED against
:class:`~morphocell.deep.CNNEmbedder`'s own defaults of 128 px, 256 columns and 30 epochs,
so that four folds train on two CPU cores; the outputs say REDUCED). The source images'
embeddings come from the network trained on them, the held-out lab's from a network that
never saw them (no cross-fitting inside the source labs).

Features are computed once per lab (:func:`load_labs`) and cached as Parquet in ``--work``;
the embeddings once per fold (:func:`fold_embeddings`), as
``work/lt_emb_<lab>_<settings>_<hash>.parquet`` keyed by the held-out lab, the CNN settings,
the seed and the source and target images.
``--quick`` subsamples (``QUICK_PBC_PER_CLASS`` PBC train and test cells per class, 2 draws,
k in 1, 5) so that it runs in about two minutes, for the test suite.

Outputs in ``--out``: ``lab_transfer.json``, ``lab_transfer.md`` and
``learning_curve_<lab>.png`` (accuracy against k, with the k = 0 rows and the ceiling).
``--ks`` replaces the list of k (with ``--k0-only``: those k rows but no ceiling).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from morphocell.errors import DataError

LABS = ("pbc", "segwbc_d1", "segwbc_d2", "bccd")
KS = (1, 3, 5, 10, 20)
KS_QUICK = (1, 5)
DRAWS = 10
QUICK_PBC_PER_CLASS = 40
META = ("path", "label", "group", "split", "status")
FEATURES = ("handcrafted", "fused", "deep")
#: CNN settings of the fused / deep features (REDUCED: see the module docstring).
CNN_DEFAULTS = {"architecture": "small-resnet", "input_size": 64, "crop": 1.0,
                "embedding_dim": 64, "epochs": 10, "augment": "stain"}
#: CNNEmbedder's own defaults of the settings above; smaller ones are reported as REDUCED.
CNN_FULL = {"input_size": 128, "embedding_dim": 256, "epochs": 30}


# -- data ------------------------------------------------------------------------------------
def lab_rows(data: Path, lab: str, crops_dir: Path) -> list[dict]:
    """``[{path, label, group, split}]`` of one lab (BCCD: crops written to ``crops_dir``)."""
    if lab == "pbc":
        f = data / "pbc_split.csv"
        if not f.is_file():
            raise DataError("pbc_split.csv not found", f)
        with open(f, newline="") as fh:
            return [{"path": str(data / r["path"]), "label": r["label"], "group": r["path"],
                     "split": r["split"]} for r in csv.DictReader(fh)]
    if lab.startswith("segwbc_d"):
        folder = data / "segwbc" / f"dataset{lab[-1]}"
        f = folder / "labels.csv"
        if not f.is_file():
            raise DataError("labels.csv not found", f)
        with open(f, newline="") as fh:
            return [{"path": str(folder / f"{r['image_id']}_image.png"),
                     "label": r["label"].strip(), "group": r["image_id"], "split": "all"}
                    for r in csv.DictReader(fh)]
    if lab == "bccd":
        return bccd_crops(data, crops_dir)
    raise DataError(f"unknown lab {lab!r}; labs: {LABS}")


def bccd_crops(data: Path, crops_dir: Path) -> list[dict]:
    """Crop the white cells of the even-numbered labelled BCCD fields with the project's
    detector (at the field's own scale) into ``crops_dir``; one row per crop, labelled with
    its field's label. Odd-numbered fields are refused."""
    from PIL import Image

    from morphocell._utils import atomic_path
    from morphocell.io import read_image
    from morphocell.segmentation.detect import crop_cells, find_white_cells

    f = data / "bccd" / "labels.csv"
    if not f.is_file():
        raise DataError("labels.csv not found", f)
    crops_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(f, newline="") as fh:
        labels = list(csv.DictReader(fh))
    for r in labels:
        stem = Path(r["image"]).stem
        if int(stem.split("_")[-1]) % 2:
            raise DataError(f"odd-numbered field {r['image']} in the labels (kept apart)", f)
        img = read_image(data / "bccd" / "images" / r["image"])
        for k, crop in enumerate(crop_cells(img, find_white_cells(img))):
            p = crops_dir / f"{stem}_cell{k}.png"
            if not p.is_file():
                with atomic_path(p) as tmp:
                    Image.fromarray(crop).save(tmp, format="PNG")
            rows.append({"path": str(p), "label": r["label"], "group": r["image"],
                         "split": "all"})
    return rows


def load_labs(data: Path, work: Path, labs=LABS, n_jobs: int = 2, verbose: int = 0,
              quick: bool = False, seed: int = 0) -> dict:
    """Per lab a DataFrame (``path, label, group, split, status`` + the 721 features), the
    features computed once and cached as ``work/lt_<lab>.parquet`` (recomputed when the
    feature names change). ``quick``: PBC only :data:`QUICK_PBC_PER_CLASS` train and test
    rows per class (``lt_pbc_quick.parquet``)."""
    import pandas as pd

    from morphocell.features import extractor

    names = extractor.feature_names(None)
    out = {}
    work.mkdir(parents=True, exist_ok=True)
    for lab in labs:
        small = quick and lab == "pbc"
        f = work / f"lt_{lab}{'_quick' if small else ''}.parquet"
        if f.is_file():
            df = pd.read_parquet(f)
            if list(df.columns[len(META):]) == names:
                out[lab] = df
                continue
        rows = lab_rows(data, lab, work / "bccd_crops")
        if small:
            rows = (_rows_per_class([r for r in rows if r["split"] == "train"],
                                    QUICK_PBC_PER_CLASS, seed)
                    + _rows_per_class([r for r in rows if r["split"] == "test"],
                                      QUICK_PBC_PER_CLASS, seed))
        t = time.perf_counter()
        mat, st, _ = extractor.extract_batch([r["path"] for r in rows], n_jobs=n_jobs,
                                             verbose=verbose)
        meta = pd.DataFrame(rows)
        meta["status"] = st
        df = pd.concat([meta[list(META)], pd.DataFrame(mat, columns=names)], axis=1)
        df.to_parquet(f, index=False)
        if verbose:
            print(f"{lab}: features of {len(rows)} images in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)
        out[lab] = df
    return out


def _rows_per_class(rows: list[dict], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for lab in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == lab]
        out += [rs[i] for i in sorted(rng.choice(len(rs), min(n, len(rs)), replace=False))]
    return out


def source_target(labs: dict, held: str, quick: bool, seed: int,
                  pbc_per_class: int | None = None):
    """Training rows of the other labs (PBC: ``train`` rows, at most ``pbc_per_class`` per
    class when given) and the held-out lab's rows (PBC: ``test`` rows); failed images
    dropped; quick: PBC subsampled per class (:data:`QUICK_PBC_PER_CLASS`)."""
    import pandas as pd

    def ok(df):
        return df[df["status"] == "ok"]

    src = []
    for lab, df in labs.items():
        if lab == held:
            continue
        d = ok(df)
        if lab == "pbc":
            d = d[d["split"] == "train"]
            if quick or pbc_per_class:
                d = _per_class(d, QUICK_PBC_PER_CLASS if quick else pbc_per_class, seed)
        src.append(d.assign(domain=lab))
    tgt = ok(labs[held])
    if held == "pbc":
        tgt = tgt[tgt["split"] == "test"]
        if quick:
            tgt = _per_class(tgt, QUICK_PBC_PER_CLASS, seed)
    return pd.concat(src, ignore_index=True), tgt.reset_index(drop=True)


def _per_class(df, n, seed):
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = [g.iloc[np.sort(rng.choice(len(g), min(n, len(g)), replace=False))]
             for _, g in df.groupby("label")]
    return pd.concat(parts)


# -- CNN embeddings (fused / deep features) ---------------------------------------------------
def cnn_settings(cnn: dict | None = None) -> dict:
    """:data:`CNN_DEFAULTS` updated with ``cnn``; unknown keys raise."""
    out = dict(CNN_DEFAULTS)
    for key, v in (cnn or {}).items():
        if key not in out:
            raise ValueError(f"unknown CNN setting {key!r}; settings: {sorted(out)}")
        if v is not None:
            out[key] = v
    return out


def cnn_reduced(cnn: dict) -> bool:
    """Whether ``cnn`` is smaller than :class:`~morphocell.deep.CNNEmbedder`'s defaults."""
    return any(cnn[key] < full for key, full in CNN_FULL.items())


def _cache_name(held: str, cnn: dict, seed: int, src, tgt) -> str:
    slug = (f"{cnn['architecture']}_s{cnn['input_size']}_c{cnn['crop']:g}"
            f"_d{cnn['embedding_dim']}_e{cnn['epochs']}_{cnn['augment']}_rs{seed}")
    h = hashlib.sha1()
    for part in ("\n".join(sorted(f"{a}|{b}" for a, b in zip(src["path"], src["label"]))),
                 "\n".join(sorted(tgt["path"]))):
        h.update(part.encode())
        h.update(b"\0")
    return f"lt_emb_{held}_{slug}_{h.hexdigest()[:10]}"


def fold_embeddings(src, tgt, held: str, work: Path, cnn: dict, seed: int,
                    verbose: int = 0):
    """CNN embeddings of one fold: a :class:`~morphocell.deep.CNNEmbedder` trained on the
    source rows ``src`` only, applied to ``src`` and to the held-out rows ``tgt``.

    Returns ``(E_src, E_tgt, P_tgt, classes, info)``: the embeddings (arrays in the rows'
    order), the CNN's own softmax on ``tgt`` (columns ``classes``) and a dict of the
    training (epochs run, times, validation accuracy, whether it came from the cache).
    Cached in ``work`` (:func:`_cache_name`). An image that cannot be embedded raises
    :class:`~morphocell.errors.DataError` naming it (no row is dropped silently).
    """
    import pandas as pd

    from morphocell.deep import CNNEmbedder

    if set(src["path"]) & set(tgt["path"]) or held in set(src["domain"]):
        raise DataError(f"fold {held}: a held-out image is among the CNN's training images")
    name = _cache_name(held, cnn, seed, src, tgt)
    f, fj = work / f"{name}.parquet", work / f"{name}.json"
    if f.is_file() and fj.is_file():
        info = json.loads(fj.read_text())
        df = pd.read_parquet(f).set_index("path")
        emb_cols = [c for c in df.columns if c.startswith("Cell_Embedding_Cnn_")]
        prob_cols = [f"cnn_proba_{c}" for c in info["classes"]]
        return (df.loc[list(src["path"]), emb_cols].to_numpy(np.float64),
                df.loc[list(tgt["path"]), emb_cols].to_numpy(np.float64),
                df.loc[list(tgt["path"]), prob_cols].to_numpy(np.float64),
                info["classes"], {**info, "cached": True})
    t = time.perf_counter()
    emb = CNNEmbedder(architecture=cnn["architecture"], input_size=int(cnn["input_size"]),
                      crop=float(cnn["crop"]), embedding_dim=int(cnn["embedding_dim"]),
                      epochs=int(cnn["epochs"]), augment=cnn["augment"], random_state=seed,
                      verbose=1 if verbose else 0)
    emb.fit(list(src["path"]), src["label"].to_numpy(str))
    if emb.fit_failures_:
        raise DataError(f"fold {held}: {len(emb.fit_failures_)} source images could not be "
                        f"read for the CNN, first {emb.fit_failures_[0]}")
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    paths = list(src["path"]) + list(tgt["path"])
    E = emb.transform(paths)
    P = emb.predict_proba(list(tgt["path"]))
    bad = E.attrs["failures"] or [paths[i] for i in np.flatnonzero(E.isna().any(axis=1))]
    if bad:
        raise DataError(f"fold {held}: {len(bad)} images could not be embedded, first {bad[0]}")
    classes = [str(c) for c in emb.classes_]
    h = emb.history_
    info = {"classes": classes, "n_source": len(src), "n_target": len(tgt),
            "n_epochs": int(emb.n_epochs_), "fit_s": round(fit_s, 1),
            "embed_s": round(time.perf_counter() - t, 1),
            "train_time_s": round(float(emb.train_time_s_), 1),
            "val_accuracy_last": (float(h["val_accuracy"][-1]) if h.get("val_accuracy")
                                  else None),
            "val_accuracy_best": (float(max(h["val_accuracy"])) if h.get("val_accuracy")
                                  else None),
            "device": emb.device_, "settings": cnn, "seed": seed}
    df = pd.concat([pd.DataFrame({"path": paths}), E.reset_index(drop=True)], axis=1)
    probs = np.full((len(paths), len(classes)), np.nan)
    probs[len(src):] = P
    for j, c in enumerate(classes):
        df[f"cnn_proba_{c}"] = probs[:, j]
    work.mkdir(parents=True, exist_ok=True)
    df.to_parquet(f, index=False)
    fj.write_text(json.dumps(info, indent=1))
    if verbose:
        print(f"{held}: CNN trained on {len(src)} source images in {fit_s:.0f} s "
              f"({info['n_epochs']} epochs, validation accuracy {_fmt(info['val_accuracy_last'])}), "
              f"embedded {len(paths)} in {info['embed_s']:.0f} s", file=sys.stderr, flush=True)
    n = len(src)
    return (E.to_numpy(np.float64)[:n], E.to_numpy(np.float64)[n:], P, classes,
            {**info, "cached": False})


# -- learners --------------------------------------------------------------------------------
def make_learner(kind: str, random_state: int):
    """The base learner of the models compared (see the module docstring)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from morphocell.ensembles.stacking import BaseLearner, StackedCellClassifier

    if kind == "svc":
        return BaseLearner("svc", random_state=random_state)
    if kind == "lr":
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                             LogisticRegression(C=0.05, max_iter=300, class_weight="balanced"))
    if kind == "stack":
        return StackedCellClassifier(random_state=random_state, n_jobs=2)
    raise ValueError(f"unknown learner {kind!r}")


def ceiling_learner(random_state: int):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         SVC(C=10.0, gamma="scale", class_weight="balanced",
                             random_state=random_state))


# -- scoring ---------------------------------------------------------------------------------
def score(y_true, proba: np.ndarray, classes) -> dict:
    """Accuracy / macro-F1 over the classes present (probabilities restricted to them) and
    the differential-count error, from the arg-max labels (``count_error``) and from the mean
    of the restricted, renormalised probabilities (``count_error_proba``)."""
    from morphocell.report import classification_metrics

    y_true = np.asarray(y_true).astype(str)
    classes = [str(c) for c in classes]
    present = sorted(set(y_true.tolist()) & set(classes))
    cols = [classes.index(c) for c in present]
    pred = np.asarray(present)[np.argmax(np.asarray(proba)[:, cols], axis=1)]
    m = classification_metrics(y_true, pred)
    true_share = np.array([(y_true == c).mean() for c in present])
    pred_share = np.array([(pred == c).mean() for c in present])
    P = np.asarray(proba, np.float64)[:, cols]
    tot = P.sum(axis=1, keepdims=True)
    P = np.divide(P, tot, out=np.full_like(P, 1.0 / len(cols)), where=tot > 0)
    proba_share = P.mean(axis=0)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"],
            "count_error": float(np.abs(pred_share - true_share).sum() / 2),
            "count_error_proba": float(np.abs(proba_share - true_share).sum() / 2),
            "recall": {c: m["per_class"][c]["recall"] for c in present}}


def draw_labelled(y: np.ndarray, k: int, rng) -> np.ndarray:
    """Indices of ``k`` cells per class (half of a class with fewer than ``2k``, >= 1, and
    none of a class of one cell, which could not be scored)."""
    idx = []
    for c in sorted(set(y.tolist())):
        pos = np.flatnonzero(y == c)
        n = k if len(pos) >= 2 * k else len(pos) // 2
        if n:
            idx.extend(rng.choice(pos, n, replace=False).tolist())
    return np.sort(np.asarray(idx, dtype=np.int64))


# -- the benchmark ---------------------------------------------------------------------------
def run_lab(labs: dict, held: str, learner: str, quick: bool, draws: int, ks, seed: int,
            verbose: int = 0, pbc_per_class: int | None = None, ceiling: bool = True,
            features: str = "handcrafted", work: Path | None = None,
            cnn: dict | None = None) -> dict:
    """All rows of one held-out lab (``features``: see the module docstring; ``work``: where
    the fold's CNN embeddings are cached, needed unless ``features="handcrafted"``)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from morphocell.ensembles import lab_adaptive as la
    from morphocell.features.extractor import feature_names

    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose one of {FEATURES}")
    names = feature_names(None)
    src, tgt = source_target(labs, held, quick, seed, pbc_per_class)
    Xs, ys, ds = src[names].to_numpy(float), src["label"].to_numpy(str), src["domain"].to_numpy()
    known = set(ys.tolist())
    tgt = tgt[tgt["label"].isin(known)].reset_index(drop=True)
    Xt, yt = tgt[names].to_numpy(float), tgt["label"].to_numpy(str)
    res = {"lab": held, "n_source": len(ys), "n_target": len(yt),
           "target_counts": {c: int((yt == c).sum()) for c in sorted(set(yt))},
           "sources": sorted(set(ds.tolist())), "features": features, "rows": {}}
    if features != "handcrafted":
        if work is None:
            raise ValueError(f"features={features!r} needs a work directory for the CNN")
        Es, Et, Pt, cnn_classes, info = fold_embeddings(src, tgt, held, Path(work),
                                                        cnn_settings(cnn), seed, verbose)
        res["cnn"] = info
        res["rows"]["k0_cnn"] = score(yt, Pt, cnn_classes)
        Xs, Xt = (np.hstack([Xs, Es]), np.hstack([Xt, Et])) if features == "fused" else (Es, Et)
    res["n_features"] = int(Xs.shape[1])
    t = time.perf_counter()
    base = make_learner(learner, seed)
    if learner == "svc" or learner == "stack":
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        asis = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), clone(base))
    else:
        asis = clone(base)
    asis.fit(Xs, ys)
    res["rows"]["k0_asis"] = score(yt, asis.predict_proba(Xt), asis.classes_)
    res["fit_asis_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    model = la.LabAdaptiveClassifier(clone(base), random_state=seed).fit(Xs, ys, domains=ds)
    res["fit_adaptive_s"] = round(time.perf_counter() - t, 1)
    k = model.nearest_domain(Xt)
    p = model._combine(model.standardize(Xt, model.domain_loc_[k], model.domain_scale_[k]))
    res["rows"]["k0_nearest_lab"] = score(yt, p, model.classes_)
    t = time.perf_counter()
    tr = la.adapt_transductive(model, Xt)
    res["rows"]["k0_adapt"] = score(yt, tr["proba"], model.classes_)
    res["adapt_s"] = round(time.perf_counter() - t, 1)
    m2 = la.fit_head(model, Xt, None, random_state=seed)
    res["rows"]["k0_self"] = score(yt, m2.predict_proba(Xt), model.classes_)
    if verbose:
        print(f"{held}: " + ", ".join(f"{r} {v['accuracy']:.3f}"
                                      for r, v in res["rows"].items()), file=sys.stderr,
              flush=True)
    rng = np.random.default_rng(seed)
    for kk in ks:
        accs, f1s, errs, perrs = [], [], [], []
        for _ in range(draws):
            lab_idx = draw_labelled(yt, kk, rng)
            rest = np.setdiff1d(np.arange(len(yt)), lab_idx)
            labels = [None] * len(yt)
            for i in lab_idx:
                labels[i] = yt[i]
            m = la.fit_head(model, Xt, labels, random_state=seed)
            s = score(yt[rest], m.predict_proba(Xt[rest]), model.classes_)
            accs.append(s["accuracy"])
            f1s.append(s["macro_f1"])
            errs.append(s["count_error"])
            perrs.append(s["count_error_proba"])
        res["rows"][f"k{kk}"] = {"accuracy": float(np.mean(accs)),
                                 "accuracy_sd": float(np.std(accs)),
                                 "macro_f1": float(np.mean(f1s)),
                                 "macro_f1_sd": float(np.std(f1s)),
                                 "count_error": float(np.mean(errs)),
                                 "count_error_sd": float(np.std(errs)),
                                 "count_error_proba": float(np.mean(perrs)), "draws": draws}
        if verbose:
            print(f"{held} k={kk}: {np.mean(accs):.3f} +- {np.std(accs):.3f}", file=sys.stderr,
                  flush=True)
    if not ceiling:
        return res
    # ceiling: 5-fold CV inside the lab (classes with fewer than 5 cells: fewer folds), on
    # the rows scored above (PBC: its test rows) and the same feature columns
    Xl, yl = Xt, yt
    counts = np.unique(yl, return_counts=True)[1]
    keep = np.isin(yl, np.unique(yl)[counts >= 2])
    Xl, yl = Xl[keep], yl[keep]
    folds = int(min(5, np.unique(yl, return_counts=True)[1].min()))
    pred = cross_val_predict(ceiling_learner(seed), Xl, yl,
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    cl = sorted(set(yl.tolist()))
    onehot = (pred[:, None] == np.asarray(cl)[None, :]).astype(float)
    res["rows"]["ceiling"] = {**score(yl, onehot, cl), "folds": folds}
    return res


def run(data: Path, out: Path, work: Path | None = None, learner: str = "svc",
        quick: bool = False, draws: int | None = None, random_state: int = 0,
        labs=LABS, verbose: int = 1, pbc_per_class: int | None = None, held_out=None,
        k0_only: bool = False, features: str = "handcrafted", ks=None,
        cnn: dict | None = None) -> dict:
    """The benchmark; writes the outputs and returns the result dict. ``ks``: the k rows
    (default :data:`KS`, :data:`KS_QUICK` with ``quick``, none with ``k0_only``);
    ``features`` and ``cnn``: see the module docstring."""
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose one of {FEATURES}")
    t0 = time.perf_counter()
    work = Path(work) if work is not None else out / "work"
    tables = load_labs(Path(data), work, labs, verbose=verbose, quick=quick, seed=random_state)
    draws = (2 if quick else DRAWS) if draws is None else int(draws)
    if ks is None:
        ks = () if k0_only else (KS_QUICK if quick else KS)
    ks = tuple(int(k) for k in ks)
    cnn = cnn_settings(cnn) if features != "handcrafted" else None
    results = {}
    for held in (held_out or labs):
        results[held] = run_lab(tables, held, learner, quick, draws, ks, random_state,
                                verbose, pbc_per_class, ceiling=not k0_only,
                                features=features, work=work, cnn=cnn)
    res = {"labs": results, "settings": {
        "learner": learner, "quick": quick, "draws": draws, "ks": list(ks),
        "random_state": random_state, "pbc_per_class": pbc_per_class, "k0_only": k0_only,
        "features": features, "cnn": cnn,
        "cnn_reduced": cnn_reduced(cnn) if cnn else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, "
                   f"{platform.python_version()}"},
        "wall_s": round(time.perf_counter() - t0, 1)}
    write_outputs(res, out)
    return res


ROW_ORDER = ("k0_asis", "k0_nearest_lab", "k0_adapt", "k0_self")


def to_markdown(res: dict) -> str:
    s = res["settings"]
    ks = [f"k{k}" for k in s["ks"]]
    feats = s.get("features", "handcrafted")
    cols = ([] if feats == "handcrafted" else ["k0_cnn"]) + [*ROW_ORDER, *ks] \
        + ([] if s.get("k0_only") else ["ceiling"])
    lines = [(f"# Leave-one-lab-out (features {feats}, learner {s['learner']}, "
              f"quick={s['quick']}, {s['draws']} draws, wall {res['wall_s']} s)"), ""]
    if s.get("cnn"):
        c = s["cnn"]
        lines += [(f"CNN{' (REDUCED)' if s.get('cnn_reduced') else ''}: {c['architecture']}, "
                   f"{c['input_size']} px, crop {c['crop']}, {c['embedding_dim']} embedding "
                   f"columns, at most {c['epochs']} epochs, augment {c['augment']!r}, trained "
                   "per fold on the source labs only; k0_cnn: its own softmax."), ""]
    lines += [("Accuracy / macro-F1 / differential-count error over the classes present; "
               "k rows: mean (sd) over the draws."), "",
             "| held-out lab | n | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for lab, r in res["labs"].items():
        cells = []
        for key in cols:
            v = r["rows"].get(key)
            if v is None:
                cells.append("")
            elif "accuracy_sd" in v:
                cells.append(f"{v['accuracy']:.3f} ({v['accuracy_sd']:.3f}) / "
                             f"{v['macro_f1']:.3f} / {v['count_error']:.3f}")
            else:
                cells.append(f"{v['accuracy']:.3f} / {v['macro_f1']:.3f} / "
                             f"{v['count_error']:.3f}")
        lines.append(f"| {lab} | {r['n_target']} | " + " | ".join(cells) + " |")
    lines += ["", ("Differential-count error from the mean probabilities instead of the "
                   "arg-max labels:"), ""]
    for lab, r in res["labs"].items():
        lines.append(f"- {lab}: " + ", ".join(
            f"{key} {r['rows'][key]['count_error_proba']:.3f}" for key in cols
            if "count_error_proba" in r["rows"].get(key, {})))
    lines.append("")
    for lab, r in res["labs"].items():
        lines.append(f"- {lab}: trained on {', '.join(r['sources'])} ({r['n_source']} cells); "
                     f"held-out counts {json.dumps(r['target_counts'])}; fit {r['fit_asis_s']} "
                     f"s as is, {r['fit_adaptive_s']} s adaptive; adapt {r['adapt_s']} s"
                     + (f"; CNN {r['cnn']['n_epochs']} epochs, fit {r['cnn']['fit_s']} s, "
                        f"embed {r['cnn']['embed_s']} s, validation accuracy "
                        f"{_fmt(r['cnn']['val_accuracy_last'])}"
                        f"{' (cached)' if r['cnn'].get('cached') else ''}"
                        if r.get("cnn") else ""))
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def plot_curves(res: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ks = res["settings"]["ks"]
    if not ks:
        return written
    for lab, r in res["labs"].items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        m = np.array([r["rows"][f"k{k}"]["accuracy"] for k in ks])
        sd = np.array([r["rows"][f"k{k}"]["accuracy_sd"] for k in ks])
        ax.errorbar(ks, m, yerr=sd, marker="o", capsize=3, label="k labelled per class")
        for key, style in (("k0_asis", ":"), ("k0_adapt", "--"), ("ceiling", "-")):
            if key not in r["rows"]:
                continue
            ax.axhline(r["rows"][key]["accuracy"], ls=style, color="grey" if key != "ceiling"
                       else "black", label=key)
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("labelled cells per class (k)")
        ax.set_ylabel("accuracy (classes present)")
        ax.set_title(f"{lab} held out ({res['settings']['learner']})")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        p = out / f"learning_curve_{lab}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)
    return written


def write_outputs(res: dict, out: Path) -> None:
    from morphocell._utils import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "lab_transfer.json", "w") as fh:
        json.dump(res, fh, indent=1)
    with atomic_write(out / "lab_transfer.md", "w") as fh:
        fh.write(to_markdown(res))
    try:
        plot_curves(res, out)
    except ImportError:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("MORPHOCELL_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "lab_transfer")
    ap.add_argument("--work", type=Path, default=None,
                    help="feature tables and BCCD crops (default OUT/work)")
    ap.add_argument("--learner", choices=("svc", "lr", "stack"), default="svc")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--labs", default=",".join(LABS))
    ap.add_argument("--pbc-per-class", type=int, default=None,
                    help="PBC train cells per class when PBC is a source (default: all)")
    ap.add_argument("--held-out", default=None,
                    help="comma-separated labs to hold out (default: every lab)")
    ap.add_argument("--k0-only", action="store_true",
                    help="only the k = 0 rows (no labelled draws, no ceiling)")
    ap.add_argument("--ks", default=None,
                    help="comma-separated k of the labelled rows (default 1,3,5,10,20; "
                         "with --k0-only none)")
    ap.add_argument("--features", choices=FEATURES, default="handcrafted",
                    help="hand-crafted features, those and a per-fold CNN embedding (fused), "
                         "or the embedding alone (deep)")
    ap.add_argument("--cnn-arch", default=CNN_DEFAULTS["architecture"])
    ap.add_argument("--cnn-size", type=int, default=CNN_DEFAULTS["input_size"])
    ap.add_argument("--cnn-crop", type=float, default=CNN_DEFAULTS["crop"])
    ap.add_argument("--cnn-dim", type=int, default=CNN_DEFAULTS["embedding_dim"])
    ap.add_argument("--cnn-epochs", type=int, default=CNN_DEFAULTS["epochs"])
    ap.add_argument("--cnn-augment", default=CNN_DEFAULTS["augment"],
                    choices=("stain", "standard", "none"))
    ap.add_argument("--random-state", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        ks = None if a.ks is None else [int(k) for k in a.ks.split(",") if k.strip()]
    except ValueError:
        ap.error(f"--ks must be comma-separated integers (got {a.ks!r})")
    if ks is not None and any(k < 1 for k in ks):
        ap.error(f"--ks must be positive (got {a.ks!r})")
    cnn = {"architecture": a.cnn_arch, "input_size": a.cnn_size, "crop": a.cnn_crop,
           "embedding_dim": a.cnn_dim, "epochs": a.cnn_epochs, "augment": a.cnn_augment}
    res = run(a.data, a.out, a.work, a.learner, a.quick, a.draws, a.random_state,
              tuple(a.labs.split(",")), pbc_per_class=a.pbc_per_class,
              held_out=a.held_out.split(",") if a.held_out else None, k0_only=a.k0_only,
              features=a.features, ks=ks, cnn=cnn)
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
