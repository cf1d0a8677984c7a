"""Cross-lab robustness: models trained on PBC only, scored on the two segwbc datasets.

Usage (from the repository root)::

    nice -n 10 python benchmarks/cross_lab.py --data ../shared/data \\
        --out benchmarks/results/cross_lab [--quick] [--random-state 0] [--cache-dir DIR] \\
        [--n-jobs 2] [--no-deep]

Training data: the ``train`` rows of ``DATA/pbc_split.csv`` (8 classes, CellaVision,
Barcelona); ``--quick`` takes a seeded stratified subset (``QUICK_PER_CLASS`` per class).
Test data: ``DATA/segwbc/dataset1`` (120 px, Jiangxi Tecom, rapid stain) and ``dataset2``
(300 px, CellaVision), labels from their ``labels.csv`` (neutrophil, lymphocyte, monocyte,
eosinophil, basophil). Predictions are restricted to those five classes: arg-max over their
probability columns. In-domain reference: the PBC ``test`` rows of the same five classes,
scored the same way.

Nothing is tuned on segwbc labels: no hyper-parameter is searched, the learners keep their
defaults, and the targets of the normalisations are fitted on PBC train images only. Each
segwbc image is normalised on its own (no statistic of a segwbc dataset is used). Caveat
(docs/cross_lab.md): the rows were designed after one ``--quick`` run whose segwbc scores
were seen, and the augmentation ranges after looking at a few segwbc images (no labels).

Factors, each a separate row (method = ``learner | training | features | preprocessing``):

*preprocessing* of the segwbc images (:mod:`morphocell.preprocess`):
``none``; ``reinhard`` (L*a*b* means/stds to the mean PBC train statistics); ``macenko``
(stain vectors, concentration scale and background of PBC train); ``scale`` (resized so that
the image's median red-cell diameter, from a circle Hough transform, equals PBC train's
median; factor clipped to 0.5..2, left at 1 where no red cell is found);
``reinhard+scale`` and ``macenko+scale``.

*features* (subsets of the 721 registered names, chosen by unit and family):
``all``; ``no_colour`` (shape + texture: every Color feature dropped);
``colour_invariant`` (shape + LBP histograms: LBP codes are invariant to any monotone change
of grey level, shape does not see colour); ``scale_invariant`` (features in px, px2 or px-1
dropped: absolute sizes, lengths, radii, curvatures; granularity, whose steps are in px,
dropped); ``invariant`` (dimensionless shape features in units 1 / rad + LBP).

*training*: ``pbc`` (the PBC train rows as they are) or ``pbc+aug`` (plus one
stain-augmented copy of each image of a stratified subset of ``AUG_PER_CLASS`` per class:
:func:`morphocell.preprocess.stain_augment` with its default ranges, i.e. random hue
rotation +-0.08 of the wheel, saturation x0.6-1.4, illumination tint x0.85-1.15 per channel,
gamma 0.7-1.4, Gaussian blur sigma 0-2 px, rescale x0.5-1.2; written once as JPEG (quality
95) under ``CACHE_DIR/cross_lab_aug/`` and measured through the feature cache).

*learner*: the project's :class:`~morphocell.ensembles.stacking.BaseLearner` ``xgb`` with its
default parameters, class-balanced (the 5-fold RF/SVC/XGB stack costs ~10 min per feature
set on this machine, and one fit takes 20 s to 5 min depending on the load, so a single
learner is used; ``LEARNERS`` lists it). Plus a ``cnn`` row (unless ``--no-deep`` or without
TensorFlow): :class:`morphocell.deep.CNNEmbedder` trained on a stratified PBC train subset
(``DEEP_SETTINGS``), softmax restricted to the five classes.

Outputs in ``--out`` (atomic writes): ``cross_lab.json`` (rows, settings, segmentation check,
scale estimates, wall time), ``cross_lab.md`` (tables), ``confusion_<dataset>.png`` (the best
row per dataset). Features of the PBC images come from :class:`~morphocell.batch.FeatureCache`
(computed once per code version); those of the normalised segwbc images are computed in
memory (340 images per variant).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from morphocell.errors import DataError


CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
DATASETS = ("dataset1", "dataset2")
PREPROCESSING = ("none", "reinhard", "macenko", "scale", "reinhard+scale", "macenko+scale")
#: feature sets of the models trained on PBC as it is (``colour_invariant`` is defined by
#: :func:`feature_subsets` but left out here: one ~3-5 min fit each)
FEATURE_SETS = ("all", "no_colour", "scale_invariant", "invariant")
#: feature sets of the models trained on PBC + stain-augmented PBC copies
AUG_FEATURE_SETS = ("all", "no_colour")
LEARNERS = ("xgb",)
#: deep row: a CNNEmbedder (small-resnet) trained on a stratified PBC train subset, softmax
#: restricted to the 5 classes; CPU-sized settings (full run / quick run)
DEEP_SETTINGS = {"per_class": 300, "input_size": 64, "epochs": 12}
DEEP_SETTINGS_QUICK = {"per_class": 30, "input_size": 64, "epochs": 3}
#: ``--quick``: fewer rows so that the run takes a few minutes
QUICK_PREPROCESSING = ("none", "reinhard", "scale")
QUICK_FEATURE_SETS = ("all", "invariant")
QUICK_AUG_FEATURE_SETS = ("all",)
#: stain-augmented copies: one per image of a stratified subset of this many per class
AUG_PER_CLASS = 500
AUG_PER_CLASS_QUICK = 20
QUICK_PER_CLASS = 40
QUICK_TEST_PER_CLASS = 20
#: PBC train images used to fit the normalisation targets (seeded subset)
N_TARGET_IMAGES = 400
N_TARGET_IMAGES_QUICK = 60


# -- data ------------------------------------------------------------------------------------
def read_pbc_split(data_root: Path) -> list[dict]:
    """Rows of ``pbc_split.csv`` with absolute ``path``; :class:`DataError` if unusable."""
    f = data_root / "pbc_split.csv"
    if not f.is_file():
        raise DataError("pbc_split.csv not found", f)
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label", "split"} <= set(rows[0]):
        raise DataError("needs columns path,label,split", f)
    for r in rows:
        r["path"] = str(data_root / r["path"])
    return rows


def stratified_subset(rows: list[dict], per_class: int, seed: int) -> list[dict]:
    """At most ``per_class`` rows of every label, seeded, in a stable order."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == lab]
        idx = sorted(rng.choice(len(rs), min(per_class, len(rs)), replace=False).tolist())
        out += [rs[i] for i in idx]
    return out


def read_segwbc(folder: Path) -> list[dict]:
    """``[{id, label, image, mask}]`` of one segwbc dataset (labels in :data:`CLASSES`)."""
    f = folder / "labels.csv"
    if not f.is_file():
        raise DataError("labels.csv not found", f)
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        iid, lab = r.get("image_id", "").strip(), r.get("label", "").strip()
        if lab not in CLASSES:
            raise DataError(f"label {lab!r} of image {iid!r} is not one of {CLASSES}", f)
        img = folder / f"{iid}_image.png"
        if not img.is_file():
            raise DataError(f"image of id {iid!r} not found", img)
        out.append({"id": iid, "label": lab, "image": img, "mask": folder / f"{iid}_mask.png"})
    if not out:
        raise DataError("no labelled image", f)
    return out


# -- feature subsets -------------------------------------------------------------------------
def feature_subsets(names: list[str]) -> dict[str, list[str]]:
    """Column subsets by the registry's family and unit (see the module docstring)."""
    from morphocell.features import registry

    spec = {s.name: s for s in registry.specs(("shape", "color", "texture"))}
    size_units = {"px", "px2", "px-1"}

    def fam(n):
        return spec[n].family

    lbp = [n for n in names if "_Texture_Lbp_" in n]
    return {
        "all": list(names),
        "no_colour": [n for n in names if fam(n) != "color"],
        "colour_invariant": [n for n in names if fam(n) == "shape"] + lbp,
        "scale_invariant": [n for n in names if spec[n].unit not in size_units
                            and "_Texture_Granularity_" not in n],
        "invariant": [n for n in names if fam(n) == "shape"
                      and spec[n].unit in ("1", "rad")] + lbp,
    }


# -- normalisation targets (PBC train only) --------------------------------------------------
def fit_targets(paths: list[str]) -> dict:
    """Reinhard, Macenko and red-cell-diameter targets from PBC train images."""
    from morphocell import preprocess as pp
    from morphocell.io import read_image
    from morphocell.segmentation import segment

    imgs = [read_image(p) for p in paths]
    lab_mean, lab_std = pp.fit_reinhard_target(imgs)
    mac = pp.fit_macenko_target(imgs)
    diams = []
    for im in imgs:
        m = segment(im)
        diams.append(pp.estimate_rbc_diameter(im, m.cell if m.found else None))
    d = np.asarray(diams)
    return {"reinhard": (lab_mean, lab_std), "macenko": mac,
            "rbc_diameter": pp.fit_rbc_target(d),
            "rbc_found": float(np.isfinite(d).mean()), "n_images": len(imgs)}


def augmented_copies(rows: list[dict], per_class: int, seed: int, folder: Path) -> list[dict]:
    """One stain-augmented copy (JPEG, quality 95) of each image of a seeded stratified
    subset of ``rows``; files already there are reused (same seed: same bytes). Returns rows
    ``{path, label}`` of the copies."""
    import cv2

    from morphocell._utils import atomic_path
    from morphocell.io import read_image
    from morphocell.preprocess import stain_augment

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in stratified_subset(rows, per_class, seed):
        stem = Path(r["path"]).stem
        dst = folder / f"{r['label']}_{stem}_s{seed}.jpg"
        if not dst.is_file():
            rng = np.random.default_rng([seed, abs(hash_name(stem))])
            img, _ = stain_augment(read_image(r["path"]), rng)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise DataError("could not encode an augmented copy", dst)
            with atomic_path(dst) as tmp:
                Path(tmp).write_bytes(buf.tobytes())
        out.append({"path": str(dst), "label": r["label"]})
    return out


def hash_name(name: str) -> int:
    """A stable 63-bit integer of a string (Python's ``hash`` is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 1


def preprocess_image(img: np.ndarray, how: str, targets: dict) -> tuple[np.ndarray, dict]:
    """One segwbc image through ``how`` (a :data:`PREPROCESSING` entry); returns the image
    and ``info`` (scale factor, red-cell diameter, whether a stain step failed)."""
    from morphocell import preprocess as pp
    from morphocell.segmentation import segment

    info: dict = {}
    out = img
    steps = how.split("+")
    if "reinhard" in steps:
        out = pp.reinhard_normalize(out, *targets["reinhard"])
    if "macenko" in steps:
        try:
            out = pp.macenko_normalize(out, targets["macenko"])
        except pp.StainNormalizationError:
            info["macenko_failed"] = True
    if "scale" in steps:
        m = segment(img)  # the original image: the ruler must not depend on the stain step
        d = pp.estimate_rbc_diameter(img, m.cell if m.found else None)
        out, f = pp.normalize_scale(out, d, targets["rbc_diameter"])
        info.update(rbc_diameter=d, factor=f)
    return out, info


# -- scoring ---------------------------------------------------------------------------------
#: feature values beyond this magnitude (or infinite) become NaN before fitting / predicting:
#: XGBoost works in float32, and degenerate contours can give curvature values ~1e50
MAX_ABS_FEATURE = 1e30


def sanitize(X: np.ndarray) -> tuple[np.ndarray, int]:
    """``X`` with non-finite and huge (> :data:`MAX_ABS_FEATURE`) values set to NaN, and how
    many non-NaN values were replaced."""
    X = np.asarray(X, np.float64)
    bad = ~np.isnan(X) & ~(np.abs(X) <= MAX_ABS_FEATURE)
    return (np.where(bad, np.nan, X), int(bad.sum())) if bad.any() else (X, 0)


def restricted_predict(model, X: np.ndarray) -> np.ndarray:
    """Arg-max over the probability columns of :data:`CLASSES` only."""
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    cols = [classes.index(c) for c in CLASSES]
    return np.asarray(CLASSES)[np.argmax(proba[:, cols], axis=1)]


def score(y_true, y_pred) -> dict:
    """Accuracy, macro-F1, per-class recall and confusion matrix over the five classes, from
    :func:`morphocell.report.classification_metrics` (the numbers of ``morphocell
    evaluate``)."""
    from morphocell.report import classification_metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(CLASSES)
    m = classification_metrics(y_true, y_pred, classes=labels)
    cm = np.asarray(m["confusion_matrix"], dtype=np.int64).reshape(len(m["labels"]), -1)
    pos = [m["labels"].index(c) for c in labels]
    return {"accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "n": int(y_true.size),
            "recall": {c: m["per_class"][c]["recall"] for c in labels},
            "confusion_matrix": cm[np.ix_(pos, pos)].tolist()}


def segmentation_check(items: list[dict], how: str, targets: dict) -> dict:
    """Found rate and mean Dice (nucleus, cell) of the Otsu segmentation against the expert
    masks, after ``how`` (masks resized with the image for the scale step)."""
    import cv2
    from PIL import Image

    from morphocell.io import read_image
    from morphocell.segmentation import CellMasks, segment
    from morphocell.segmentation.metrics import region_scores

    found, nuc, cell = [], [], []
    for it in items:
        if not it["mask"].is_file():
            continue
        img = read_image(it["image"])
        out, _ = preprocess_image(img, how, targets)
        lab = np.asarray(Image.open(it["mask"]))
        if lab.ndim == 3:
            lab = lab[..., 0]
        if out.shape[:2] != lab.shape:
            lab = cv2.resize(lab, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
        pred = segment(out)
        found.append(bool(pred.found))
        s = region_scores(pred, CellMasks.from_label_image(lab))
        nuc.append(s["nucleus_dice"])
        cell.append(s["cell_dice"])
    return {"n": len(found), "found_rate": float(np.mean(found)) if found else float("nan"),
            "nucleus_dice": float(np.mean(nuc)) if nuc else float("nan"),
            "cell_dice": float(np.mean(cell)) if cell else float("nan")}


# -- the benchmark ---------------------------------------------------------------------------
def run(data_root: Path, out: Path, quick: bool = False, random_state: int = 0,
        cache_dir: Path | None = None, n_jobs: int = 1, verbose: int = 0,
        deep: bool = True) -> dict:
    """Train on PBC, score on segwbc dataset1/dataset2 for every (learner, feature set,
    preprocessing); write ``cross_lab.json`` / ``cross_lab.md`` (+ PNGs) into ``out``.

    Returns ``{"rows": [...], "settings": {...}, "segmentation": {...}, "wall_s": ...}``;
    each row has ``method``, ``dataset``, ``accuracy``, ``macro_f1``, ``n``, ``learner``,
    ``features``, ``preprocessing``, ``n_features``, ``recall``, ``confusion_matrix``.
    """
    from morphocell.batch import FeatureCache, default_cache_dir
    from morphocell.ensembles.stacking import BaseLearner
    from morphocell.features.extractor import extract_batch
    from morphocell.io import read_image
    from morphocell.preprocess import STAIN_AUGMENT

    t0 = time.perf_counter()
    data_root, out = Path(data_root), Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    rows_all = read_pbc_split(data_root)
    train = [r for r in rows_all if r["split"] == "train"]
    test = [r for r in rows_all if r["split"] == "test" and r["label"] in CLASSES]
    if quick:
        train = stratified_subset(train, QUICK_PER_CLASS, random_state)
        test = stratified_subset(test, QUICK_TEST_PER_CLASS, random_state + 1)
    if not train:
        raise DataError("no train rows", data_root / "pbc_split.csv")
    seg = {name: read_segwbc(data_root / "segwbc" / name) for name in DATASETS}
    timings: dict[str, float] = {}
    preprocessing = QUICK_PREPROCESSING if quick else PREPROCESSING
    feature_sets = QUICK_FEATURE_SETS if quick else FEATURE_SETS
    aug_feature_sets = QUICK_AUG_FEATURE_SETS if quick else AUG_FEATURE_SETS

    # PBC features (cached)
    t = time.perf_counter()
    cache = FeatureCache(cache_dir)
    names = cache.columns
    Xtr, st_tr, _ = cache.extract([r["path"] for r in train], n_jobs=n_jobs, verbose=verbose)
    ok_tr = np.array([s == "ok" for s in st_tr])
    Xte, st_te, _ = cache.extract([r["path"] for r in test], n_jobs=n_jobs, verbose=verbose)
    ok_te = np.array([s == "ok" for s in st_te])
    Xtr, ytr = Xtr.to_numpy()[ok_tr], np.array([r["label"] for r in train])[ok_tr]
    Xte, yte = Xte.to_numpy()[ok_te], np.array([r["label"] for r in test])[ok_te]
    timings["pbc_features_s"] = time.perf_counter() - t

    # stain-augmented copies of a PBC train subset (PBC train images only)
    t = time.perf_counter()
    aug_rows = augmented_copies(train, AUG_PER_CLASS_QUICK if quick else AUG_PER_CLASS,
                                random_state, cache_dir / "cross_lab_aug")
    Xau, st_au, _ = cache.extract([r["path"] for r in aug_rows], n_jobs=n_jobs,
                                  verbose=verbose)
    ok_au = np.array([s == "ok" for s in st_au])
    Xau, yau = Xau.to_numpy()[ok_au], np.array([r["label"] for r in aug_rows])[ok_au]
    n_sanitized = {}
    Xtr, n_sanitized["pbc_train"] = sanitize(Xtr)
    Xte, n_sanitized["pbc_test"] = sanitize(Xte)
    Xau, n_sanitized["augmented"] = sanitize(Xau)
    timings["augmented_features_s"] = time.perf_counter() - t

    # normalisation targets from PBC train images only
    t = time.perf_counter()
    rng = np.random.default_rng(random_state)
    n_t = min(len(train), N_TARGET_IMAGES_QUICK if quick else N_TARGET_IMAGES)
    tpaths = [train[i]["path"] for i in sorted(rng.choice(len(train), n_t, replace=False))]
    targets = fit_targets(tpaths)
    timings["targets_s"] = time.perf_counter() - t

    # segwbc features per preprocessing
    t = time.perf_counter()
    feats: dict[tuple[str, str], np.ndarray] = {}
    seg_images: dict[tuple[str, str], list[np.ndarray]] = {}
    ok_seg: dict[tuple[str, str], np.ndarray] = {}
    scale_info: dict[str, dict] = {}
    for name, items in seg.items():
        originals = [read_image(it["image"]) for it in items]
        for how in preprocessing:
            imgs, infos = [], []
            for im in originals:
                o, info = preprocess_image(im, how, targets)
                imgs.append(o)
                infos.append(info)
            seg_images[(name, how)] = imgs
            mat, st, _ = extract_batch(imgs, n_jobs=n_jobs, verbose=verbose)
            feats[(name, how)], n_sanitized[f"{name}/{how}"] = sanitize(mat)
            ok_seg[(name, how)] = np.array([s == "ok" for s in st])
            if how == "scale":
                d = np.array([i["rbc_diameter"] for i in infos], float)
                f = np.array([i["factor"] for i in infos], float)
                scale_info[name] = {
                    "rbc_found": float(np.isfinite(d).mean()),
                    "rbc_diameter_median": float(np.nanmedian(d)) if np.isfinite(d).any()
                    else None,
                    "factor_median": float(np.median(f)),
                    "factor_p10_p90": [float(np.percentile(f, 10)),
                                       float(np.percentile(f, 90))],
                    "image_side": int(originals[0].shape[0])}
            if "macenko" in how:
                scale_info.setdefault(name, {})[f"{how}_failed"] = int(
                    sum(bool(i.get("macenko_failed")) for i in infos))
    timings["segwbc_features_s"] = time.perf_counter() - t

    # segmentation check (classical Otsu vs expert masks) per preprocessing
    t = time.perf_counter()
    segcheck = {name: {how: segmentation_check(items, how, targets) for how in preprocessing}
                for name, items in seg.items()}
    timings["segmentation_check_s"] = time.perf_counter() - t

    # models
    subsets = feature_subsets(names)
    col = {n: i for i, n in enumerate(names)}
    rows: list[dict] = []
    t = time.perf_counter()
    plan = [("pbc", fs) for fs in feature_sets] + [("pbc+aug", fs) for fs in aug_feature_sets]
    for training, fs in plan:
        idx = np.array([col[n] for n in subsets[fs]])
        Xfit = Xtr if training == "pbc" else np.vstack([Xtr, Xau])
        yfit = ytr if training == "pbc" else np.concatenate([ytr, yau])
        for kind in LEARNERS:
            tt = time.perf_counter()
            model = BaseLearner(kind, random_state=random_state, n_jobs=n_jobs).fit(
                Xfit[:, idx], yfit)
            fit_s = time.perf_counter() - tt
            base = {"learner": kind, "training": training, "features": fs,
                    "n_features": int(idx.size), "n_train": len(yfit),
                    "fit_s": round(fit_s, 2)}
            tag = f"{kind} | {training} | {fs}"
            if len(yte):
                r = score(yte, restricted_predict(model, Xte[:, idx]))
                rows.append({"method": f"{tag} | none", "dataset": "pbc_test",
                             "preprocessing": "none", **base, **r})
            for name, items in seg.items():
                y = np.array([it["label"] for it in items])
                for how in preprocessing:
                    X = feats[(name, how)][:, idx]
                    pred = restricted_predict(model, X)
                    r = score(y, pred)
                    r["n_no_cell"] = int((~ok_seg[(name, how)]).sum())
                    rows.append({"method": f"{tag} | {how}", "dataset": name,
                                 "preprocessing": how, **base, **r})
            if verbose:
                print(f"fitted {tag} in {fit_s:.0f} s", file=sys.stderr, flush=True)
    timings["models_s"] = time.perf_counter() - t

    t = time.perf_counter()
    deep_status = {"status": "not run"}
    if deep:
        dset = DEEP_SETTINGS_QUICK if quick else DEEP_SETTINGS
        deep_status = deep_rows(train, test, seg, seg_images, preprocessing, dset,
                                random_state, rows, verbose)
    timings["deep_s"] = time.perf_counter() - t

    settings = {
        "quick": quick, "random_state": random_state, "n_jobs": n_jobs,
        "n_train": len(ytr), "n_train_failed": int((~ok_tr).sum()),
        "n_augmented": len(yau), "n_augmented_failed": int((~ok_au).sum()),
        "augment": dataclasses.asdict(STAIN_AUGMENT),
        "n_values_sanitized": {k: v for k, v in n_sanitized.items() if v},
        "n_pbc_test_5class": len(yte),
        "train_classes": sorted(set(ytr.tolist())), "restricted_to": list(CLASSES),
        "learners": {k: BaseLearner(k)._params() for k in LEARNERS},
        "feature_sets": {k: len(v) for k, v in subsets.items()},
        "preprocessing": list(preprocessing),
        "models": [f"{k} | {tr} | {fs}" for tr, fs in plan for k in LEARNERS],
        "targets": {"n_pbc_images": targets["n_images"],
                    "reinhard_lab_mean": targets["reinhard"][0].round(3).tolist(),
                    "reinhard_lab_std": targets["reinhard"][1].round(3).tolist(),
                    "macenko_stains": np.asarray(targets["macenko"].stains).round(4).tolist(),
                    "macenko_max_conc": np.asarray(targets["macenko"].max_conc).round(4)
                    .tolist(),
                    "macenko_background": np.asarray(targets["macenko"].background)
                    .round(1).tolist(),
                    "rbc_diameter_px": round(targets["rbc_diameter"], 2),
                    "rbc_found_rate": round(targets["rbc_found"], 3)},
        "feature_cache": str(cache.path),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, {platform.python_version()}",
    }
    settings["deep"] = deep_status
    res = {"rows": rows, "settings": settings, "segmentation": segcheck, "scale": scale_info,
           "timings_s": {k: round(v, 1) for k, v in timings.items()},
           "wall_s": round(time.perf_counter() - t0, 1)}
    write_outputs(res, out)
    return res


def deep_rows(train: list[dict], test: list[dict], seg: dict, seg_images: dict,
               preprocessing, dset: dict, random_state: int, rows: list[dict],
               verbose: int = 0) -> dict:
    """Train a CNN (:class:`morphocell.deep.CNNEmbedder`, small-resnet, its own flips /
    rotations / colour-jitter augmentation) on a stratified subset of the PBC train rows and
    append its softmax rows (restricted to :data:`CLASSES`) to ``rows``. Returns a status
    dict; ``{"status": "not installed"}`` without TensorFlow."""
    try:
        import tensorflow  # noqa: F401

        from morphocell.deep import CNNEmbedder
    except ImportError as exc:
        return {"status": "not installed", "reason": str(exc)}
    sub = stratified_subset(train, dset["per_class"], random_state)
    tt = time.perf_counter()
    cnn = CNNEmbedder(architecture="small-resnet", input_size=dset["input_size"],
                      epochs=dset["epochs"], class_weight="balanced",
                      random_state=random_state, verbose=1 if verbose else 0)
    cnn.fit([r["path"] for r in sub], [r["label"] for r in sub])
    fit_s = time.perf_counter() - tt
    base = {"learner": "cnn", "training": "pbc", "features": "softmax", "n_features": 0,
            "n_train": len(sub), "fit_s": round(fit_s, 2)}
    if test:
        r = score([x["label"] for x in test], restricted_predict(cnn, [x["path"] for x in test]))
        rows.append({"method": "cnn | pbc | softmax | none", "dataset": "pbc_test",
                     "preprocessing": "none", **base, **r})
    for name, items in seg.items():
        y = [it["label"] for it in items]
        for how in preprocessing:
            r = score(y, restricted_predict(cnn, seg_images[(name, how)]))
            rows.append({"method": f"cnn | pbc | softmax | {how}", "dataset": name,
                         "preprocessing": how, **base, **r})
    return {"status": "ok", **dset, "n_train": len(sub), "epochs_run": int(cnn.n_epochs_),
            "fit_s": round(fit_s, 1), "device": getattr(cnn, "device_", "?")}


# -- outputs ---------------------------------------------------------------------------------
def best_rows(rows: list[dict]) -> dict[str, dict]:
    """Per dataset, the row with the highest accuracy (ties: macro-F1)."""
    best: dict[str, dict] = {}
    for r in rows:
        b = best.get(r["dataset"])
        if b is None or (r["accuracy"], r["macro_f1"]) > (b["accuracy"], b["macro_f1"]):
            best[r["dataset"]] = r
    return best


def to_markdown(res: dict) -> str:
    """The tables of ``cross_lab.md``."""
    rows = res["rows"]
    s = res["settings"]
    lines = [(f"# Cross-lab: trained on PBC train ({s['n_train']} images, 8 classes), "
             f"predictions restricted to {', '.join(CLASSES)}"), "",
             (f"quick={s['quick']}, random_state={s['random_state']}, wall {res['wall_s']} s "
             f"({s['machine']})"), "",
             ("Accuracy / macro-F1 per method (learner | training | features | preprocessing of the "
             "segwbc images). pbc_test: in-domain reference (PBC test rows of the 5 classes)."),
             "",
             ("| learner | training | features (n) | preprocessing | pbc_test | dataset1 | "
             "dataset2 |"),
             "|---|---|---|---|---|---|---|"]
    by = {(r["learner"], r["training"], r["features"], r["preprocessing"], r["dataset"]): r
          for r in rows}
    pbc = {(r["learner"], r["training"], r["features"]): r for r in rows
           if r["dataset"] == "pbc_test"}

    def cell(r):
        return "" if r is None else f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}"

    seen = []
    for r in rows:
        key = (r["learner"], r["training"], r["features"], r["preprocessing"])
        if r["dataset"] == "pbc_test" or key in seen:
            continue
        seen.append(key)
        kind, training, fs, how = key
        p = cell(pbc.get((kind, training, fs))) if how == "none" else ""
        lines.append(f"| {kind} | {training} | {fs} ({r['n_features']}) | {how} | {p} | "
                     f"{cell(by.get((*key, 'dataset1')))} | "
                     f"{cell(by.get((*key, 'dataset2')))} |")
    lines += ["", "Best row per dataset (chosen on segwbc labels, so optimistic):", ""]
    for ds, r in best_rows(rows).items():
        lines.append(f"- {ds}: `{r['method']}` accuracy {r['accuracy']:.3f}, macro-F1 "
                     f"{r['macro_f1']:.3f} (n={r['n']}); recall "
                     + ", ".join(f"{c} {v:.2f}" for c, v in r["recall"].items()))
    lines += ["", ("Segmentation (classical Otsu) against the expert masks after each "
              "preprocessing: found rate, mean Dice nucleus / cell"), "",
              "| dataset | preprocessing | n | found | nucleus Dice | cell Dice |",
              "|---|---|---|---|---|---|"]
    for ds, d in res["segmentation"].items():
        for how, v in d.items():
            lines.append(f"| {ds} | {how} | {v['n']} | {v['found_rate']:.3f} | "
                         f"{v['nucleus_dice']:.3f} | {v['cell_dice']:.3f} |")
    t = s["targets"]
    lines += ["", (f"Targets from {t['n_pbc_images']} PBC train images: red-cell diameter "
              f"{t['rbc_diameter_px']} px (found in {t['rbc_found_rate']:.0%} of them); "
              f"Reinhard L*a*b* mean {t['reinhard_lab_mean']}, std {t['reinhard_lab_std']}."), ""]
    for ds, v in res["scale"].items():
        lines.append(f"- {ds}: {json.dumps(v)}")
    lines += ["", f"Timings (s): {json.dumps(res['timings_s'])}", ""]
    return "\n".join(lines)


def write_outputs(res: dict, out: Path) -> None:
    """``cross_lab.json``, ``cross_lab.md`` and the best rows' confusion matrices, atomically."""
    from morphocell._utils import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "cross_lab.json", "w") as fh:
        json.dump(res, fh, indent=1)
    with atomic_write(out / "cross_lab.md", "w") as fh:
        fh.write(to_markdown(res))
    try:
        from morphocell.report import plot_confusion_matrix

        for ds, r in best_rows(res["rows"]).items():
            plot_confusion_matrix(r["confusion_matrix"], list(CLASSES),
                                  out / f"confusion_{ds}.png",
                                  title=f"{ds}: {r['method']} (acc {r['accuracy']:.3f})")
    except ImportError:  # matplotlib missing: tables only
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("MORPHOCELL_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "cross_lab")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--no-deep", action="store_true", help="skip the CNN rows")
    a = ap.parse_args(argv)
    res = run(a.data, a.out, quick=a.quick, random_state=a.random_state,
              cache_dir=a.cache_dir, n_jobs=a.n_jobs, verbose=1, deep=not a.no_deep)
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
