"""``morphocell adapt``: adapt a model to a new lab's images (no labels, or a few)."""
from __future__ import annotations

from ._common import (
    add_cache_dir,
    add_command,
    add_layout,
    add_n_jobs,
    add_quiet,
    eprint,
    plural,
)


def add_parser(subparsers):
    p = add_command(
        subparsers, "adapt", "adapt a model to another lab's images (unlabelled or few labels)",
        """
Adapt MODEL (a model file, or 'default') to the lab of DATA and write an ordinary model file.
DATA unlabelled (a flat folder, image files, or a manifest without labels; at least 20
cells): the lab's feature statistics and class proportions are estimated on its cells and
the model is refitted on its confident cells. DATA labelled (class subfolders, or a manifest
with labels; a few cells per class are enough): the model is refitted on them together with
its stored training sample, and the cross-validated accuracy of that on the labelled cells
is printed. The file records its provenance (base model digest, data digest, method, counts,
date). Nothing is written when adaptation fails (exit 2).""",
        "morphocell adapt default my_lab_cells/ --out my_lab.mcm\n"
        "morphocell adapt default labelled_by_class/ --out my_lab.mcm\n"
        "morphocell predict my_lab.mcm my_lab_cells/ --out predictions.csv")
    p.add_argument("model", help="model file, or 'default' (the model shipped with morphocell)")
    p.add_argument("data", help="images of the new lab: folder, class subfolders or manifest")
    p.add_argument("--out", required=True, help="the adapted model file to write")
    p.add_argument("--no-self-training", action="store_true",
                   help="unlabelled data: estimate statistics and proportions only")
    p.add_argument("--random-state", type=int, default=0, help="seed of the CV folds")
    add_cache_dir(p)
    add_n_jobs(p)
    add_layout(p)
    add_quiet(p)
    return p


def run(args) -> int:
    from ..adapt import adapt
    from ..model_io import load_model, save_model
    from ._common import list_inputs
    from ._exit import outcome, print_failures

    model = load_model(args.model)
    listing = list_inputs("adapt", [args.data], args.layout)
    paths, labels = listing.paths, listing.labels
    adapted, info = adapt(model, paths, labels, self_training=not args.no_self_training,
                          n_jobs=args.n_jobs, cache_dir=args.cache_dir,
                          random_state=args.random_state, verbose=0 if args.quiet else 1)
    failures = [(p, s, e) for p, s, e in zip(paths, info["statuses"], info["errors"],
                                             strict=True) if s != "ok"]
    print_failures(failures, "adapt")
    save_model(adapted, args.out)
    a = adapted.metadata["adapted"]
    print(f"adapted ({a['method']}) on {plural(a['n_used'], 'cell')} of "
          f"{plural(a['n_images'], 'image')}" + (f", {a['n_labelled']} labelled" if
                                                  a["n_labelled"] else ""))
    cv = info.get("cv")
    if cv:
        print(f"cross-validated on the labelled cells ({cv['folds']} folds): accuracy "
              f"{cv['accuracy']:.4f}, macro-F1 {cv['macro_f1']:.4f} (n={cv['n']})")
    elif a["n_labelled"]:
        eprint("morphocell adapt: too few labelled cells for a cross-validated accuracy")
    if a.get("priors"):
        top = sorted(a["priors"].items(), key=lambda kv: -kv[1])
        print("estimated proportions: " + ", ".join(f"{c} {p:.1%}" for c, p in top if p >= 0.005))
    print(f"adapted model written to {args.out}")
    return outcome(a["n_used"], failures, "use")
