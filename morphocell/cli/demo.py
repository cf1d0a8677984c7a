"""``morphocell demo``: the whole job on the bundled sample, through the library API."""
from __future__ import annotations

from ._common import add_command

#: The demo says that kernels were compiled when its first image took longer than this (a
#: cache it did not recognise as cold, e.g. stale after an upgrade).
FIRST_RUN_NOTICE_S = 5.0


def add_parser(subparsers):
    p = add_command(
        subparsers, "demo", "the whole job on the bundled sample, in under a minute "
        "(the first run also compiles the numba kernels, once)",
        """
On the 80 bundled images (8 classes): segment every image (masks and overlays in
OUT/overlays), train the stacked classifier with 5-fold CV (morphocell.train.train), save the
model and its explanation, and predict the sample (morphocell.predict.predict): predictions
and differential count. Those predictions are in-sample (the model was trained on these very
images): the honest scores are the cross-validated ones it prints. The first run after
installing also compiles the numba kernels (about half a minute, once; cached on disk).""",
        "morphocell demo --out morphocell-demo\nmorphocell demo --model default --out demo-default")
    p.add_argument("--out", default="morphocell-demo", help="output folder")
    p.add_argument("--model", default=None,
                   help="classify the sample with this model file, or 'default' (the model "
                   "shipped with morphocell), instead of training one; the bundled images are "
                   "among the default model's training images, so its scores on them are "
                   "in-sample")
    return p


def run(args) -> int:
    import tempfile
    import time
    from pathlib import Path

    from .._utils import progress, write_csv
    from .._warmup import cache_is_cold, compile_kernels
    from ..datasets import sample_folder
    from ..errors import MorphocellError
    from ..io import load_folder, read_image
    from ..predict import predict
    from ..report import format_differential, write_json
    from ..segmentation import save_masks, segment
    from ..train import explanation_folder, train
    from ._exit import outcome, print_failures
    from ._text import format_cv_scores, format_review

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
    for i, p in enumerate(progress(paths, desc="segment")):
        if i == 1 and not announced and time.perf_counter() - t_loop > FIRST_RUN_NOTICE_S:
            print(f"(first image took {time.perf_counter() - t_loop:.0f} s: the numba kernels "
                  "were compiled and cached on disk; later runs skip this)", flush=True)
        try:
            img = read_image(p)
        except MorphocellError:
            continue  # listed by train below
        save_masks(img, segment(img), out / "overlays", Path(p).stem)
    print(f"segmented {len(paths)} images in {time.perf_counter() - t_loop:.1f} s "
          f"(masks and overlays in {out / 'overlays'})")
    if args.model is not None:
        return _with_model(args.model, paths, labels, out, t0)
    with tempfile.TemporaryDirectory(prefix="morphocell-demo-") as cache:
        res = train(paths, labels, cv=5, random_state=0, domain_copies=0, cache_dir=cache,
                    verbose=1)
        print_failures(res.failures, "demo")
        print("cross-validated scores (out-of-fold, 5 folds):")
        print(format_cv_scores(res.cv_scores))
        if res.metadata.get("review"):
            print(format_review(res.metadata["review"]))
        model_path = out / "model.mcm"
        res.save(model_path)
        pred = predict(res.model, paths, cache_dir=cache)
    df = pred.predictions
    df.insert(1, "label", labels)
    write_csv(df, out / "predictions.csv", float_format="%.6f")
    write_json(pred.differential, out / "differential.json")
    print(format_differential(pred.differential))
    print("(predictions of the training images themselves: in-sample, see the CV scores "
          "above for an honest estimate)")
    print(f"model: {model_path}; explanation: {explanation_folder(model_path)}; "
          f"predictions: {out / 'predictions.csv'}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return outcome(pred.n_classified, pred.failures, "classify")


def _with_model(model_arg, paths, labels, out, t0) -> int:
    """``demo --model``: score a given model (e.g. ``default``) on the bundled sample."""
    import tempfile
    import time

    from ..model_io import load_model
    from ..predict import evaluate, predict
    from ..report import format_differential, format_metrics, write_json
    from ._exit import outcome, print_failures

    model = load_model(model_arg)
    with tempfile.TemporaryDirectory(prefix="morphocell-demo-") as cache:
        res = evaluate(model, paths, labels, cache_dir=cache)
        pred = predict(model, paths, cache_dir=cache)  # features from the cache
    files = res.save(out / "report")
    write_json(pred.differential, out / "differential.json")
    print_failures(res.failures, "demo")
    print(format_metrics(res.metrics))
    print(format_differential(pred.differential))
    print("(the bundled images are PBC train rows: a model trained on PBC, the default one "
          "included, has seen them, so these scores are in-sample)")
    print(f"report: {files[0].parent}; differential count: {out / 'differential.json'}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return outcome(pred.n_classified, pred.failures, "classify")
