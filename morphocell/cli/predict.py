"""``morphocell predict``: classes, a differential count and its flags for images."""
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
        subparsers, "predict", "predict classes and a differential count",
        """
Classify every image with a model from 'morphocell train' and write the predictions table
(path, predicted class, one probability per class, p_atypical, domain_score /
unlike_training, needs_review, status, error) and the differential count as JSON: the WBC
differential per 100 leukocytes, nucleated red cells (erythroblasts) per 100 WBC and
platelets apart. Cells whose top class probability is below the model's review threshold
are marked needs_review; cells unlike the training images in stain or size are marked
unlike_training. Images that cannot be classified are listed (exit 3); when none can be,
nothing is written (exit 2). --review DIR also writes the review page of the predictions
(as 'morphocell review'; exit 3 when an image no longer exists). --adapt first adapts the
model to the images given (no labels, nothing written), as 'morphocell adapt' would.""",
        "morphocell predict model.mcm cells/ --out predictions.csv\n"
        "morphocell predict default crops/*.png --out p.csv --count-out counts.json\n"
        "morphocell predict default other_lab/ --adapt --review review/")
    p.add_argument("model", help="model file from 'morphocell train', or 'default' (the "
                   "model shipped with morphocell)")
    p.add_argument("inputs", nargs="+", help="images, folders, or a manifest CSV")
    p.add_argument("--out", default="predictions.csv", help="predictions CSV")
    p.add_argument("--count-out", default=None,
                   help="differential count JSON (default: <out>_differential.json next to "
                   "--out)")
    p.add_argument("--atypical", default=None,
                   help="comma-separated classes summed into p_atypical (default: the "
                   "model's atypical classes)")
    add_cache_dir(p)
    p.add_argument("--review-threshold", type=float, default=None, metavar="P",
                   help="mark cells whose top class probability is below P needs_review "
                   "(default: the model's threshold, chosen at training, see train "
                   "--review-accuracy)")
    p.add_argument("--review", default=None, metavar="DIR",
                   help="also write the review page of the predictions into DIR "
                   "(DIR/index.html, as 'morphocell review')")
    add_adapt(p)
    add_layout(p)
    add_n_jobs(p)
    add_quiet(p)
    return p


def run(args) -> int:
    import contextlib
    import tempfile

    from ..model_io import load_model
    from ._common import adapt_to_batch, list_inputs

    model = load_model(args.model)
    atypical = None
    if args.atypical is not None:
        atypical = [c.strip() for c in args.atypical.split(",") if c.strip()]
    paths = list_inputs("predict", args.inputs, args.layout).paths
    with contextlib.ExitStack() as stack:
        if args.adapt:
            if args.cache_dir is None:  # adapt and predict measure each image once
                args.cache_dir = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="morphocell-adapt-"))
            model = adapt_to_batch(model, paths, args)
        return _predict(model, paths, atypical, args)


def _predict(model, paths, atypical, args) -> int:
    from ..predict import predict
    from ..report import format_differential
    from ._exit import EXIT_PARTIAL, outcome, print_failures

    res = predict(model, paths, atypical=atypical, review_threshold=args.review_threshold,
                  n_jobs=args.n_jobs, cache_dir=args.cache_dir,
                  verbose=0 if args.quiet else 1)
    if res.n_classified:
        print_failures(res.failures, "predict")
    code = outcome(res.n_classified, res.failures, "classify")  # none classified: exit 2
    warn_duplicates("predict", res.duplicates, "each image is counted once in the "
                    "differential")
    out, count_out = res.save(args.out, args.count_out)
    count = res.differential
    print(format_differential(count))
    review = res.review
    if review is not None:
        nr, nc = count["needs_review"]["n"], count["n_classified"]
        acc = review.get("training_accepted_accuracy")
        print(f"{nr} of {nc} cells ({100 * nr / max(nc, 1):.1f}%) need review: top class "
              f"probability below {review['threshold']:.3f} (column needs_review"
              + (f"; out of fold {acc:.2%} of the training cells above it were right"
                 if acc is not None else "") + ")")
        if res.flags["review_harder"]:
            eprint(f"warning: {100 * nr / max(nc, 1):.1f}% of the cells need review, against "
                   f"{100 * review['training_review_fraction']:.1f}% of the training images "
                   "(out of fold): the model is much less sure of these cells than of its "
                   "training images (another lab, stain or scanner, or cells it rarely saw), "
                   "and the differential count may be unreliable.")
    if "unlike_training" in count:
        n_unlike, n_scored = count["unlike_training"]["n"], count["unlike_training"]["n_scored"]
        msg = (f"{n_unlike} of {n_scored} cells ({100 * res.flags['unlike_share']:.1f}%) are "
               "unlike the training images in stain or size (column unlike_training; about "
               "1% of images like the training ones are)")
        if res.flags["mostly_unlike"]:
            eprint(f"warning: {msg}. These images probably come from another lab, stain or "
                   "scanner than the model was trained on, and the differential count may be "
                   "unreliable; a model trained on this lab's images copes better, and so "
                   "does one trained with domain-randomised copies (--domain-copies, on by "
                   "default for hand-crafted models; docs/cross_lab.md).")
        else:
            print(msg)
    print(f"predictions written to {out}; differential count to {count_out}")
    if args.review:
        from ..review import model_info_from_file, write_review_page

        info = model_info_from_file(args.model)
        if args.adapt:
            info["name"] = f"{info['name']} (adapted to these images)"
        page = write_review_page(out, args.review, model_info=info, n_jobs=args.n_jobs,
                                 verbose=0 if args.quiet else 1)
        for p in page.missing:
            eprint(f"morphocell predict: review: {p}: image file no longer exists "
                   "(placeholder shown)")
        print(f"review page of {page.n_cells} cells written to {page.index}; open it in a "
              "browser")
        if page.missing:
            code = max(code, EXIT_PARTIAL)
    return code
