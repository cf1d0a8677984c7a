"""``morphocell train``: train a classifier on a labelled folder or manifest."""
from __future__ import annotations

from ._common import add_command, add_layout, add_n_jobs, add_quiet, eprint, warn_duplicates


def add_parser(subparsers):
    p = add_command(
        subparsers, "train", "train a classifier on a labelled folder or manifest",
        """
Measure every image (or fetch its features from the cache), fit the classifier with
cross-validation and write the model file, with an explanation folder <model>_explain
beside it (top features per class, the training record). Prints the cross-validated
scores and the review threshold stored in the model. Images that cannot be used are listed
and left out (exit 3); the model is still written.

  handcrafted  stacked RF / SVC / XGBoost on the shape, colour and texture features
  deep         CNN embeddings, cross-fitted (deep extra: TensorFlow)
  fused        both, in one stack (deep extra)

Several labs (hand-crafted): a manifest with a 'domain' column naming each image's lab, or
--by-lab with DATA a folder of lab folders (DATA/<lab>/<class>/<image>). Every lab's
features are standardised on its own statistics, and each lab is also classified by a model
trained on the other labs only (leave-one-lab-out): the accuracy to expect in a new lab.""",
        "morphocell train pbc/ --out pbc.mcm                      # class subfolders\n"
        "morphocell train labels.csv --out m.mcm --cv 10 --n-jobs 4   # path,label manifest\n"
        "morphocell train pbc/ --out fused.mcm --features fused --epochs 20\n"
        "morphocell train labs/ --by-lab --out multi.mcm          # labs/<lab>/<class>/\n"
        "morphocell train labs.csv --out multi.mcm                # path,label,domain manifest")
    p.add_argument("data", help="folder of class subfolders, or manifest CSV (path,label; "
                   "an optional domain column names each image's lab)")
    p.add_argument("--by-lab", action="store_true",
                   help="DATA is a folder of lab folders, each holding class subfolders: "
                   "train on several labs (a manifest says it with a 'domain' column)")
    p.add_argument("--no-lab-cv", action="store_true",
                   help="several labs: skip the leave-one-lab-out scores (one more fit per "
                   "lab)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--features", default="handcrafted", choices=["handcrafted", "deep", "fused"],
                   help="kind of model")
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    add_n_jobs(p)
    p.add_argument("--random-state", type=int, default=0, help="seed of every random choice")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default: ~/.cache/morphocell)")
    p.add_argument("--epochs", type=int, default=None,
                   help="deep/fused: maximum CNN epochs (default: the embedder's)")
    p.add_argument("--cnn-crop", type=float, default=None, metavar="SHARE",
                   help="deep/fused: share of each image's shorter side the CNN sees, as a "
                   "square around the centre (default 0.75; 1: the whole image)")
    p.add_argument("--cnn-augment", default=None, choices=["standard", "stain", "none"],
                   help="deep/fused: CNN training augmentation; 'stain' (the default) adds "
                   "other labs' stains and optics (stronger hue/saturation, gamma, tint) to "
                   "the flips, rotations and mild colour jitter of 'standard'")
    p.add_argument("--domain-copies", type=float, default=None, metavar="FRACTION",
                   help="handcrafted/fused: also train the hand-crafted learners on one "
                   "domain-randomised copy (other stain, illumination, blur, scale) of this "
                   "fraction of the images, so the model holds up on other labs' images "
                   "(default: 0.35 for handcrafted and fused, 0 for several labs; 0: none)")
    p.add_argument("--review-accuracy", type=float, default=0.995, metavar="ACC",
                   help="the confidence threshold stored for review is the lowest at which "
                   "the cells above it are right this often out of fold; predict marks cells "
                   "below it needs_review")
    add_layout(p)
    add_quiet(p)
    return p


def run(args) -> int:
    import time
    from pathlib import Path

    from ..batch import default_cache_dir
    from ..io import ListingReport
    from ..report import plural
    from ..train import check_options, explanation_folder, load_labs, train
    from ._common import say_listing
    from ._exit import outcome, print_failures
    from ._text import format_cv_scores, format_review

    # every option checked before the data are listed or anything is written
    check_options(args.features, args.domain_copies, args.review_accuracy,
                  multilab=args.by_lab)
    listing = ListingReport()
    paths, labels, domains = load_labs(args.data, by_lab=args.by_lab, layout=args.layout,
                                       report=listing)
    say_listing("train", listing)
    if domains is not None and not args.by_lab:  # a manifest's domain column
        check_options(args.features, args.domain_copies, args.review_accuracy, multilab=True)
    out = Path(args.out)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    labs = ""
    if domains is not None:
        names = sorted(set(domains))
        labs = (f" from {plural(len(names), 'lab')} ("
                + ", ".join(f"{d} {domains.count(d)}" for d in names) + ")")
    print(f"training on {plural(len(paths), 'image')} of {plural(len(set(labels)), 'class')}"
          f"{labs} ({args.features} features, {args.cv}-fold CV)")
    t0 = time.perf_counter()
    res = train(paths, labels, features=args.features, cv=args.cv,
                random_state=args.random_state, n_jobs=args.n_jobs, cache_dir=cache_dir,
                domain_copies=args.domain_copies, review_accuracy=args.review_accuracy,
                epochs=args.epochs, cnn_crop=args.cnn_crop, cnn_augment=args.cnn_augment,
                domains=domains, lab_cv=not args.no_lab_cv, verbose=0 if args.quiet else 1,
                on_step=None if args.quiet else (lambda msg: eprint(msg)))
    print_failures(res.failures, "train")
    warn_duplicates("train", res.duplicates,
                    "each kept in one cross-validation fold with its image"
                    if args.features == "handcrafted" else "left out")
    _warn_near_duplicates(res.near_duplicates, args.features)
    fs = res.feature_stats
    if fs:
        print(f"features: {fs.get('hits', 0)} from cache, {fs.get('computed', 0)} computed "
              f"({cache_dir})")
    if res.cv_scores:
        n_copies = res.n_domain_copies if args.features == "handcrafted" else 0
        print("cross-validated scores (out-of-fold" + (
            f"; over the images and their {n_copies} domain-randomised copies, each copy in "
            "its image's fold" if n_copies else "") + "):")
        print(format_cv_scores(res.cv_scores))
        if args.features == "fused" and res.n_domain_copies:
            # fused: the copies train the hand-crafted learners, not the scores above
            print(f"(the hand-crafted learners also trained on {res.n_domain_copies} "
                  "domain-randomised copies; the scores above are over the images only)")
    if domains is not None:
        _print_labs(res.metadata)
    if res.metadata.get("review"):
        print(format_review(res.metadata["review"]))
    written = res.save(out)
    model = res.model
    n_used = len(paths) - res.n_failed
    print(f"model written to {out} ({plural(len(model.classes), 'class')}, "
          f"{n_used} images used, {res.n_failed} failed); "
          f"atypical classes: {', '.join(model.atypical_classes) or 'none'}")
    if len(written) > 1:
        print(f"explanation written to {explanation_folder(out)}")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return outcome(n_used, res.failures, "train on")


def _warn_near_duplicates(groups: list[list[str]], features: str) -> None:
    """One stderr line on near-duplicates: the count and the first few files."""
    from ..report import plural

    if not groups:
        return
    n = sum(len(g) - 1 for g in groups)
    what = ("each kept in one cross-validation fold with its image"
            if features == "handcrafted" else "left out")
    shown = "; ".join(" ~ ".join(g) for g in groups[:3])
    more = f"; and {plural(len(groups) - 3, 'more group')}" if len(groups) > 3 else ""
    eprint(f"morphocell train: warning: {plural(n, 'file')} "
           f"{'is a near-duplicate' if n == 1 else 'are near-duplicates'} of an image listed "
           f"before (the same cell saved again: re-encoded, resized, turned or brighter): "
           f"{what}; {shown}{more}")


def _print_labs(meta: dict) -> None:
    """The per-lab scores of a model trained on several labs."""
    by_lab = meta.get("cv_by_lab") or {}
    if by_lab:
        print("out-of-fold accuracy per lab (the folds mix the labs: each lab's other cells "
              "trained the model): " + ", ".join(f"{d} {r['accuracy']:.4f}"
                                                 for d, r in by_lab.items()))
    lolo = meta.get("lab_cv")
    if not lolo:
        if len(meta.get("domains") or {}) < 2:
            print("leave-one-lab-out: needs 2 labs or more")
        return
    print("leave-one-lab-out (each lab classified by a model trained on the other labs only, "
          "its cells standardised on themselves without labels: the accuracy to expect in a "
          "new lab):")
    for lab, r in lolo["labs"].items():
        if "accuracy" not in r:
            print(f"  {lab}: not scored ({r['skipped']})")
            continue
        unknown = (f"; {r['n_unknown_class']} of a class no other lab has"
                   if r["n_unknown_class"] else "")
        print(f"  {lab}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f} "
              f"(n={r['n']}{unknown})")
    if lolo.get("mean_accuracy") is not None:
        print(f"  mean over the labs: {lolo['mean_accuracy']:.4f}")
