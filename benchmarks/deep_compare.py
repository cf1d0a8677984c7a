"""Deep vs hand-crafted vs fused on the fixed PBC split (train on ``train`` rows, report on
``test`` rows, nothing tuned on test).

Compared, all trained on the same training images with the same seed:

``cnn_softmax``
    one :class:`~morphocell.deep.CNNEmbedder` trained on all training images, its softmax;
``cnn_svc``
    the leakage-free deep path of :mod:`morphocell.deep.crossfit` (K cross-fitted networks, a
    calibrated SVC per network on the embeddings of its held-out fold, probabilities averaged);
``handcrafted_stack``
    :class:`~morphocell.ensembles.stacking.StackedCellClassifier` on the hand-crafted features;
``fused_stack``
    the late-fusion stack on hand-crafted features + the deep path's out-of-fold
    probabilities (:class:`~morphocell.deep.crossfit.FusedModel`);
``handcrafted_stack_copies``, ``fused_stack_copies`` (with ``--domain-copies F``)
    the same two stacks also trained on one stain-augmented copy of a fraction ``F`` of the
    training images (``morphocell train --domain-copies``; in the fused stack the copies train
    the hand-crafted learners only), on the same split and the same cross-fitted deep path;
``naive_final_net_svc`` (ablation, not a product)
    an SVC fitted on the *out-of-fold* embeddings of the K networks, applied to the
    embeddings of the all-data network (``cnn_softmax``'s): the "K folds + final network"
    recipe applied to embeddings, which mixes unaligned embedding spaces.

Reports accuracy, macro-F1, training images/s (mean over epochs after the first, which
includes graph tracing), embedding images/s (inference on decoded test images), and
training times. ``--quick`` is a smoke run. A run that uses a training subset, a small input
size or few epochs is labelled ``reduced`` in the output.

Usage::

    nice -n 10 python benchmarks/deep_compare.py --data ../shared/data --quick
    nice -n 10 python benchmarks/deep_compare.py --data ../shared/data \
        --n-per-class 150 --input-size 64 --epochs 10 --cv 3

Writes ``benchmarks/results/deep_compare[_quick].json`` and ``.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_split(data: Path, n_per_class: int | None, n_test_per_class: int | None, seed: int):
    rows = list(csv.DictReader(open(data / "pbc_split.csv")))
    rng = np.random.RandomState(seed)
    out = {}
    for split, cap in (("train", n_per_class), ("test", n_test_per_class)):
        sel = [r for r in rows if r["split"] == split]
        paths, labels = [], []
        for lab in sorted({r["label"] for r in sel}):
            group = [r for r in sel if r["label"] == lab]
            if cap is not None and cap < len(group):
                idx = np.sort(rng.choice(len(group), cap, replace=False))
                group = [group[i] for i in idx]
            paths += [str(data / r["path"]) for r in group]
            labels += [lab] * len(group)
        out[split] = (paths, np.asarray(labels))
    return out


def scores(y, proba, classes) -> dict:
    """Accuracy and macro-F1 of the arg-max predictions, from
    :func:`morphocell.report.classification_metrics` (the numbers of ``morphocell
    evaluate``)."""
    from morphocell.report import classification_metrics

    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    m = classification_metrics(y, pred, proba, [str(c) for c in classes])
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def train_ips(emb) -> float:
    ips = emb.history_.get("images_per_s", [])
    ips = ips[1:] if len(ips) > 1 else ips
    return float(np.mean(ips)) if ips else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA",
                                                     str(REPO.parent / "shared" / "data")))
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny everything)")
    ap.add_argument("--n-per-class", type=int, default=None, help="training images per class "
                    "(default: all)")
    ap.add_argument("--n-test-per-class", type=int, default=None, help="test images per class "
                    "(default: all)")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--crop", type=float, default=0.75,
                    help="CNN centre crop, share of the shorter side (default 0.75, as "
                         "morphocell train; 1: the whole image)")
    ap.add_argument("--augment", default="stain", choices=["standard", "stain", "none"],
                    help="CNN training augmentation (default stain, as morphocell train)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--architecture", default="small-resnet")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--domain-copies", type=float, default=0.0, metavar="FRACTION",
                    help="also fit both stacks with stain-augmented copies of this fraction "
                    "of the training images (extra rows *_copies; default 0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.n_per_class = args.n_per_class or 12
        args.n_test_per_class = args.n_test_per_class or 6
        args.input_size, args.epochs, args.cv = 32, 2, 2

    import pandas as pd
    import tensorflow as tf
    import keras

    from morphocell.deep.embedder import CNNEmbedder, decode_images
    from morphocell.deep.crossfit import (DeepModel, FusedModel, crossfit_embeddings,
                                          default_embedder)
    from morphocell.ensembles.stacking import BaseLearner, StackedCellClassifier
    from morphocell.features.extractor import extract_batch, feature_names

    data = Path(args.data).resolve()
    split = load_split(data, args.n_per_class, args.n_test_per_class, args.seed)
    (tr_paths, tr_y), (te_paths, te_y) = split["train"], split["test"]
    reduced = bool(args.quick or args.n_per_class or args.n_test_per_class
                   or args.input_size < 128 or args.epochs < 20)
    emb_params = dict(architecture=args.architecture, input_size=args.input_size,
                      crop=args.crop, embedding_dim=256, epochs=args.epochs, batch_size=32,
                      augment=args.augment)
    print(f"train {len(tr_paths)} images, test {len(te_paths)} images; {emb_params}; "
          f"cv={args.cv}; reduced={reduced}", flush=True)
    res: dict = {"config": {**emb_params, "cv": args.cv, "n_train": len(tr_paths),
                            "domain_copies": args.domain_copies,
                            "n_test": len(te_paths), "n_per_class": args.n_per_class,
                            "n_test_per_class": args.n_test_per_class, "seed": args.seed,
                            "reduced": reduced, "quick": args.quick},
                 "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "tensorflow": tf.__version__, "keras": keras.__version__,
                             "gpu": bool(tf.config.list_physical_devices("GPU")),
                             "loadavg_start": os.getloadavg()},
                 "models": {}, "timing_s": {}}
    T = res["timing_s"]
    stem = "deep_compare_quick" if args.quick else "deep_compare"

    def checkpoint():  # partial results survive an interrupted run
        write(res, Path(args.out), stem + "_partial", quiet=True)

    # hand-crafted features (train + test)
    t = time.perf_counter()
    mat_tr, st_tr, _ = extract_batch(tr_paths, None, "otsu", n_jobs=args.n_jobs)
    T["handcrafted_features_train"] = time.perf_counter() - t
    t = time.perf_counter()
    mat_te, _, _ = extract_batch(te_paths, None, "otsu", n_jobs=args.n_jobs)
    T["handcrafted_features_test"] = time.perf_counter() - t
    names = feature_names(None)
    hc_tr, hc_te = pd.DataFrame(mat_tr, columns=names), pd.DataFrame(mat_te, columns=names)
    print(f"hand-crafted features: {T['handcrafted_features_train']:.0f} s train, "
          f"{T['handcrafted_features_test']:.0f} s test", flush=True)

    # decoded test images (shared by every network)
    t = time.perf_counter()
    te_img, te_ok, te_fail = decode_images(te_paths, args.input_size, crop=args.crop)
    T["decode_test"] = time.perf_counter() - t
    assert not te_fail, te_fail[:3]

    # 1. CNN alone, trained on all training images
    t = time.perf_counter()
    cnn = CNNEmbedder(**emb_params, random_state=args.seed, verbose=1).fit(tr_paths, tr_y)
    T["cnn_fit"] = time.perf_counter() - t
    cnn._infer(te_img[:8])  # warm-up: trace the inference graph outside the timing
    t = time.perf_counter()
    e_all, p_cnn, _ = cnn._infer(te_img)
    dt = time.perf_counter() - t
    res["models"]["cnn_softmax"] = {**scores(te_y, p_cnn, cnn.classes_),
                                    "train_images_per_s": train_ips(cnn),
                                    "embed_images_per_s": len(te_img) / dt,
                                    "epochs_run": cnn.n_epochs_, "train_s": T["cnn_fit"],
                                    "n_params": int(cnn.model_.count_params())}
    print("cnn_softmax", res["models"]["cnn_softmax"], flush=True)
    checkpoint()

    # 2. cross-fitted deep path
    t = time.perf_counter()
    template = default_embedder(**emb_params)
    cf = crossfit_embeddings(tr_paths, tr_y, cv=args.cv, random_state=args.seed, verbose=1,
                             embedder=template)
    deep = DeepModel(embedder=template, cv=args.cv, random_state=args.seed)._fit_crossfit(cf)
    T["deep_fit"] = time.perf_counter() - t
    deep._proba_decoded(te_img[:8])  # warm-up
    t = time.perf_counter()
    p_deep = deep._proba_decoded(te_img)
    dt = time.perf_counter() - t
    res["models"]["cnn_svc"] = {**scores(te_y, p_deep, deep.classes_),
                                "train_images_per_s": float(np.mean([train_ips(e) for e in
                                                                     cf.embedders])),
                                "embed_images_per_s": len(te_img) / dt,
                                "epochs_run": [e.n_epochs_ for e in cf.embedders],
                                "train_s": T["deep_fit"], "oof": deep.cv_scores_}
    print("cnn_svc", res["models"]["cnn_svc"], flush=True)

    # ablation: SVC on mixed-network out-of-fold embeddings, applied to the all-data network
    naive = BaseLearner("svc", random_state=args.seed).fit(cf.embeddings, cf.y)
    res["models"]["naive_final_net_svc"] = scores(te_y, naive.predict_proba(e_all),
                                                  naive.classes_)
    print("naive_final_net_svc", res["models"]["naive_final_net_svc"], flush=True)
    checkpoint()

    # 3. hand-crafted stack
    t = time.perf_counter()
    hc_stack = StackedCellClassifier(cv=args.cv, random_state=args.seed,
                                     n_jobs=args.n_jobs).fit(hc_tr, tr_y)
    T["handcrafted_stack_fit"] = time.perf_counter() - t
    res["models"]["handcrafted_stack"] = {
        **scores(te_y, hc_stack.predict_proba(hc_te), hc_stack.classes_),
        "train_s": T["handcrafted_stack_fit"] + T["handcrafted_features_train"]}
    print("handcrafted_stack", res["models"]["handcrafted_stack"], flush=True)
    checkpoint()

    # 4. fused stack (reuses the cross-fitted deep path)
    t = time.perf_counter()
    fused = FusedModel(embedder=template, cv=args.cv, random_state=args.seed,
                       n_jobs=args.n_jobs)
    fused._fit_tables(deep, hc_tr, cf.y)
    T["fused_stack_fit"] = time.perf_counter() - t
    fused_total = T["deep_fit"] + T["handcrafted_features_train"] + T["fused_stack_fit"]
    p_fused = fused.predict_proba(te_paths, handcrafted=hc_te)
    res["models"]["fused_stack"] = {**scores(te_y, p_fused, fused.classes_),
                                    "train_s": fused_total, "oof": fused.cv_scores_}
    print("fused_stack", res["models"]["fused_stack"], flush=True)
    checkpoint()

    # 5. both stacks with stain-augmented copies (same split, same deep path)
    if args.domain_copies:
        from morphocell.train import _domain_copy_features

        t = time.perf_counter()
        Xc, yc, src = _domain_copy_features(list(tr_paths), np.asarray(tr_y, dtype=object),
                                            args.domain_copies, args.seed, None, "otsu", None,
                                            args.n_jobs, 0)
        T["domain_copies_features"] = time.perf_counter() - t
        print(f"{len(src)} stain-augmented copies: {T['domain_copies_features']:.0f} s",
              flush=True)
        t = time.perf_counter()
        hc_c = StackedCellClassifier(cv=args.cv, random_state=args.seed, n_jobs=args.n_jobs).fit(
            pd.concat([hc_tr, Xc], ignore_index=True), np.r_[np.asarray(tr_y), yc],
            groups=np.r_[np.arange(len(tr_y)), src])
        T["handcrafted_stack_copies_fit"] = time.perf_counter() - t
        res["models"]["handcrafted_stack_copies"] = {
            **scores(te_y, hc_c.predict_proba(hc_te), hc_c.classes_),
            "train_s": (T["handcrafted_stack_copies_fit"] + T["handcrafted_features_train"]
                        + T["domain_copies_features"]), "n_copies": len(src)}
        print("handcrafted_stack_copies", res["models"]["handcrafted_stack_copies"], flush=True)
        checkpoint()
        t = time.perf_counter()
        fused_c = FusedModel(embedder=template, cv=args.cv, random_state=args.seed,
                             n_jobs=args.n_jobs)
        fused_c._fit_tables(deep, hc_tr, cf.y, (Xc, src))
        T["fused_stack_copies_fit"] = time.perf_counter() - t
        res["models"]["fused_stack_copies"] = {
            **scores(te_y, fused_c.predict_proba(te_paths, handcrafted=hc_te), fused_c.classes_),
            "train_s": (T["deep_fit"] + T["handcrafted_features_train"]
                        + T["domain_copies_features"] + T["fused_stack_copies_fit"]),
            "n_copies": len(src), "oof": fused_c.cv_scores_}
        print("fused_stack_copies", res["models"]["fused_stack_copies"], flush=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    f, h, d = (res["models"][k] for k in ("fused_stack", "handcrafted_stack", "cnn_svc"))
    res["targets"] = {"fused_accuracy>=0.990": f["accuracy"] >= 0.990,
                      "fused_macro_f1>=0.988": f["macro_f1"] >= 0.988,
                      "fused_beats_both": (f["accuracy"] > max(h["accuracy"], d["accuracy"])
                                           and f["macro_f1"] > max(h["macro_f1"],
                                                                   d["macro_f1"])),
                      "fused_training<=90min": fused_total <= 90 * 60}
    write(res, Path(args.out), stem)
    (Path(args.out) / f"{stem}_partial.json").unlink(missing_ok=True)
    (Path(args.out) / f"{stem}_partial.md").unlink(missing_ok=True)
    return 0


def write(res: dict, outd: Path, stem: str, quiet: bool = False) -> None:
    from morphocell._utils import atomic_write

    outd.mkdir(parents=True, exist_ok=True)
    with atomic_write(outd / f"{stem}.json", "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    c = res["config"]
    title = "# Deep vs hand-crafted vs fused (PBC split)"
    lines = [title + (" -- REDUCED RUN" if c["reduced"] else ""),
             "",
             f"train {c['n_train']} images ({'all' if not c['n_per_class'] else c['n_per_class']}"
             f" per class), test {c['n_test']} images; {c['architecture']} at "
             f"{c['input_size']} px (centre crop {c.get('crop', 1.0):g}, "
             f"{'standard' if c.get('augment', True) is True else c['augment']} "
             f"augmentation), max {c['epochs']} "
             f"epochs, cv={c['cv']}; "
             f"TensorFlow {res['machine']['tensorflow']}, Keras {res['machine']['keras']}, "
             f"{res['machine']['cpus']} CPUs, GPU: {res['machine']['gpu']}, load average "
             f"{res['machine']['loadavg_start'][0]:.1f} at start (shared machine).",
             "",
             "| model | test accuracy | test macro-F1 | train images/s | embed images/s | "
             "training time (s) |",
             "|---|---|---|---|---|---|"]
    for name, m in res["models"].items():
        fmt = (lambda k: f"{m[k]:.0f}" if k in m else "")
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                     f"{fmt('train_images_per_s')} | {fmt('embed_images_per_s')} | "
                     f"{fmt('train_s')} |")
    if "targets" in res and c["reduced"]:
        t = res["targets"]
        lines += ["", "Targets of the issue (fused acc >= 0.990, macro-F1 >= 0.988, fused beats "
                  "both, fused training <= 90 min): NOT ASSESSED, this is a reduced run. In "
                  "this run the fused stack "
                  f"{'beats' if t['fused_beats_both'] else 'does not beat'} both the "
                  "hand-crafted stack and the deep path on accuracy and macro-F1."]
    elif "targets" in res:
        lines += ["", "Targets of the issue (full run: all 10,936 training images, >= 20 "
                  "epochs): " + ", ".join(f"{k}: {'yes' if v else 'no'}"
                                          for k, v in res["targets"].items())]
    else:
        lines += ["", "PARTIAL: the run was interrupted before every model was measured."]
    lines += ["", "cnn_svc embed images/s counts every image embedded by all K networks "
              "(plus the SVCs), i.e. the deep path's prediction throughput.",
              "", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                               res["timing_s"].items())]
    with atomic_write(outd / f"{stem}.md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
