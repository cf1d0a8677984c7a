"""``morphocell evaluate``: metrics of a model on labelled images."""
from __future__ import annotations

from ._common import (
    add_adapt,
    add_cache_dir,
    add_command,
    add_layout,
    add_n_jobs,
    add_quiet,
    eprint,
    warn_duplicates,
)


def add_parser(subparsers):
    p = add_command(
        subparsers, "evaluate", "evaluate a model on labelled data",
        """
Classify labelled images and print accuracy, balanced accuracy, macro-F1, the per-class
table (precision, recall, F1, ROC AUC, support), the most confused pairs, per-learner F1 of a
stacked model, and the cells below the model's review threshold. With --out, write the
report files: metrics.json, per_class.csv, confusion_matrix.csv/.png, most_confused.csv,
review_curve.csv/.png (accuracy of the kept cells against the share sent to review) and
predictions.csv. Images that cannot be classified are counted, not scored (exit 3); when
none can be, nothing is written (exit 2). --adapt first adapts the model to DATA's images
without their labels (transductive: nothing written), then scores it on the labels.""",
        "morphocell evaluate model.mcm test/ --out report/\n"
        "morphocell evaluate model.mcm test.csv --json > metrics.json\n"
        "morphocell evaluate model.mcm segwbc.csv --classes-present-only\n"
        "morphocell evaluate default other_lab/ --adapt --classes-present-only --json")
    p.add_argument("model", help="model file from 'morphocell train', or 'default' (the "
                   "model shipped with morphocell)")
    p.add_argument("data", help="folder of class subfolders or manifest CSV (path,label)")
    p.add_argument("--out", default=None,
                   help="folder for the report files (CSV, PNG, JSON); created if needed")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--classes-present-only", action="store_true",
                   help="restrict predictions to the model classes present in DATA")
    add_adapt(p)
    add_layout(p)
    add_cache_dir(p)
    add_n_jobs(p)
    add_quiet(p)
    return p


def run(args) -> int:
    import contextlib
    import tempfile
    from pathlib import Path

    from ..errors import DataError
    from ..io import ListingReport
    from ..model_io import load_model
    from ..predict import evaluate
    from ..train import load_labelled
    from ._common import adapt_to_batch, say_listing

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError("exists and is not a folder: --out names the folder of the report "
                        "files", args.out)
    model = load_model(args.model)
    listing = ListingReport()
    paths, labels = load_labelled(args.data, layout=args.layout, strict=False, report=listing)
    say_listing("evaluate", listing)
    with contextlib.ExitStack() as stack:
        if args.adapt:
            if args.cache_dir is None:  # adapt and evaluate measure each image once
                args.cache_dir = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="morphocell-adapt-"))
            # the labels are never shown to the adaptation: they only score it
            model = adapt_to_batch(model, paths, args, say=eprint if args.json else print)
        res = evaluate(model, paths, labels, classes_present_only=args.classes_present_only,
                       n_jobs=args.n_jobs, cache_dir=args.cache_dir,
                       verbose=0 if args.quiet else 1)
    return _report(res, args)


def _report(res, args) -> int:
    from ..report import format_metrics
    from ._exit import outcome, print_failures
    from ._text import format_base_learners

    m = res.metrics
    n_ok = m["n_images"] - m["n_failed"]
    if n_ok:
        print_failures(res.failures, "evaluate")
    code = outcome(n_ok, res.failures, "classify")  # none classified: exit 2
    warn_duplicates("evaluate", res.duplicates, "each image is scored once")
    if m["unknown_labels"]:
        eprint(f"morphocell evaluate: warning: labels not known to the model (always wrong): "
               f"{', '.join(m['unknown_labels'])}")
    if args.out:
        res.save(args.out)
    if args.json:
        from ..report import json_text

        print(json_text(m))
        return code
    print(format_metrics(m))
    base = format_base_learners(m)
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
    return code
