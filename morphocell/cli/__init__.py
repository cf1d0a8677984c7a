"""The ``morphocell`` command line: one entry point, sub-commands.

Exit codes: 0 success; 3 some inputs failed (the good results were written, the failures
listed on stderr); 2 a user error (bad argument, unreadable model or data; message on
stderr, no traceback unless ``--debug``); 1 an unexpected internal error.

Each sub-command's work lives in a module (imported only when that command runs), so
``morphocell --help`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._version import __version__
from ..errors import MorphocellError

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_PARTIAL = 0, 1, 2, 3


_REFINE = {"auto": "auto", "on": True, "off": False}


def _cmd_segment(args) -> int:
    from .._utils import progress
    from ..io import iter_chunks, read_image, resolve_inputs
    from ..segmentation import save_masks, segment

    paths, _ = resolve_inputs(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names, seen = [], {}
    for p in paths:  # unique output names: a second "a.jpg" becomes "a_2"
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    if args.method == "unet":  # batches through the network (GPU when TensorFlow sees one)
        from ..segmentation.unet import segment_unet_batch

        def seg_many(imgs):
            return segment_unet_batch(imgs, args.model, tta=args.tta,
                                      refine=_REFINE[args.refine])
    else:
        def seg_many(imgs):
            return [segment(im, method=args.method) for im in imgs]
    failed = 0
    chunks = list(iter_chunks(list(zip(paths, names, strict=True)), 32))
    for chunk in progress(chunks, desc="segment", verbose=not args.quiet, unit="batch"):
        good = []
        for p, name in chunk:
            try:
                good.append((p, name, read_image(p)))
            except MorphocellError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
        masks = seg_many([im for _, _, im in good]) if good else []
        for (p, name, img), m in zip(good, masks, strict=True):
            save_masks(img, m, out, name)
            if not m.found:
                print(f"warning: {p}: no cell found (empty mask written)", file=sys.stderr)
    ok = len(paths) - failed
    print(f"segmented {ok}/{len(paths)} images into {out}")
    return EXIT_OK if failed == 0 else EXIT_PARTIAL


def _cmd_crop(args) -> int:
    import pandas as pd
    from PIL import Image

    from .._utils import atomic_path, progress, write_csv
    from ..io import read_image, resolve_inputs
    from ..segmentation.detect import crop_cells, find_white_cells

    if args.size is not None and args.size < 16:
        raise MorphocellError(f"--size must be at least 16 pixels, got {args.size}")
    paths, _ = resolve_inputs(args.fields)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed, seen = [], 0, {}
    for p in progress(paths, desc="crop", verbose=not args.quiet, unit="field"):
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        base = {"field": p, "cell": "", "x0": "", "y0": "", "x1": "", "y1": "",
                "nucleus_area": "", "crop": ""}
        try:
            img = read_image(p)
        except MorphocellError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            rows.append({**base, "status": "error", "error": str(exc)})
            continue
        boxes = find_white_cells(img)
        if not boxes:
            rows.append({**base, "status": "no_cell", "error": ""})
        for k, (b, crop) in enumerate(zip(boxes, crop_cells(img, boxes, size=args.size),
                                          strict=True), start=1):
            path = out / f"{name}_cell{k}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(crop).save(tmp, format="PNG")
            rows.append({**base, "cell": k, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1,
                         "nucleus_area": b.nucleus_area, "crop": str(path), "status": "ok",
                         "error": ""})
    columns = ["field", "cell", "x0", "y0", "x1", "y1", "nucleus_area", "crop", "status", "error"]
    write_csv(pd.DataFrame(rows, columns=columns), out / "cells.csv")
    n_cells = sum(r["status"] == "ok" for r in rows)
    print(f"{n_cells} white cells cropped from {len(paths) - failed}/{len(paths)} fields into "
          f"{out} (boxes in {out / 'cells.csv'})")
    return EXIT_OK if failed == 0 else EXIT_PARTIAL


def _lazy(module: str, func: str):
    def run(args) -> int:
        import importlib

        return importlib.import_module(module).__getattribute__(func)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morphocell",
        description="Blood-cell image analysis: segmentation, features, classification.")
    parser.add_argument("--version", action="version", version=f"morphocell {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("segment", help="segment images into nucleus/cytoplasm masks",
                       description="Write <name>_mask.png (0 background, 128 cytoplasm, 255 "
                       "nucleus) and <name>_overlay.png (contours on the image) per image.")
    p.add_argument("images", nargs="+", help="image files, folders, or a manifest CSV")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="otsu", choices=["otsu", "unet"])
    p.add_argument("--model", default=None, help="U-Net weights file (method unet)")
    p.add_argument("--tta", action="store_true",
                   help="method unet: average over the 8 rotations/flips (8x slower)")
    p.add_argument("--refine", default="auto", choices=sorted(_REFINE),
                   help="method unet: re-decide the nucleus boundary at the image's resolution "
                   "from its colours (auto: when the image is >= 1.5x the network input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("crop", help="find the white cells of whole smear fields and crop them",
                       description="Find the white cells of each field (classical nucleus "
                       "score, docs/segmentation.md) and write one square image per cell, "
                       "<field>_cell<k>.png, and cells.csv (field, cell, box, nucleus area, crop "
                       "path, status, error). The crops are the input of 'morphocell predict'.")
    p.add_argument("fields", nargs="+", help="field images, folders, or a manifest CSV")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=None,
                   help="resize each crop to SIZE x SIZE pixels (default: the field's pixels; "
                   "a classifier expects cells at its training images' scale)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_crop)

    p = sub.add_parser("features", help="extract hand-crafted features to Parquet",
                       description="One row per image: path, label (if known), every feature, "
                       "status and error. Streams, resumes after interruption.")
    p.add_argument("inputs", nargs="+",
                   help="folder of class subfolders, manifest CSV, or image files/folders")
    p.add_argument("--out", required=True,
                   help="output Parquet dataset folder (part files inside; rerun to resume)")
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes")
    p.add_argument("--families", default="shape,color,texture",
                   help="comma-separated families (default: all)")
    p.add_argument("--method", default="otsu", choices=["otsu", "unet"])
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://HOST:PORT), needs the dist extra")
    p.add_argument("--chunk-size", type=int, default=256, help="images per written part")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_lazy("morphocell.cli.features", "features_command"))

    p = sub.add_parser("train", help="train a classifier on a labelled folder or manifest")
    p.add_argument("data", help="folder of class subfolders, or manifest CSV (path,label)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--features", default="handcrafted", choices=["handcrafted", "deep", "fused"])
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    p.add_argument("--n-jobs", type=int, default=1)
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="feature cache folder "
                   "(default: ~/.cache/morphocell)")
    p.add_argument("--epochs", type=int, default=None, help="CNN epochs (deep/fused)")
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
                   "(default: 0.35 for handcrafted and fused; 0: none)")
    p.add_argument("--review-accuracy", type=float, default=None, metavar="ACC",
                   help="the confidence threshold stored for review is the lowest at which "
                   "the cells above it are right this often out of fold (default 0.995); "
                   "predict marks cells below it needs_review")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_lazy("morphocell.workflow", "train_command"))

    p = sub.add_parser("predict", help="predict classes and a differential count")
    p.add_argument("model", help="model file from 'morphocell train'")
    p.add_argument("inputs", nargs="+", help="images, folders, or a manifest CSV")
    p.add_argument("--out", default="predictions.csv", help="predictions CSV")
    p.add_argument("--count-out", default=None,
                   help="differential count JSON (default: next to --out)")
    p.add_argument("--atypical", default=None,
                   help="comma-separated classes summed into p_atypical (default: the "
                   "model's atypical classes)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: none)")
    p.add_argument("--review-threshold", type=float, default=None, metavar="P",
                   help="mark cells whose top class probability is below P needs_review "
                   "(default: the model's threshold, chosen at training, see train "
                   "--review-accuracy)")
    p.add_argument("--n-jobs", type=int, default=1)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_lazy("morphocell.workflow", "predict_command"))

    p = sub.add_parser("evaluate", help="evaluate a model on labelled data")
    p.add_argument("model")
    p.add_argument("data", help="folder of class subfolders or manifest CSV")
    p.add_argument("--out", default=None, help="folder for report files (CSV, PNG, JSON)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--classes-present-only", action="store_true",
                   help="restrict predictions to the classes present in DATA")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: none)")
    p.add_argument("--n-jobs", type=int, default=1)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_lazy("morphocell.workflow", "evaluate_command"))

    p = sub.add_parser("demo", help="the whole job on the bundled sample, in under a minute "
                       "(the first run also compiles the numba kernels, once)")
    p.add_argument("--out", default="morphocell-demo", help="output folder")
    p.set_defaults(func=_lazy("morphocell.workflow", "demo_command"))

    p = sub.add_parser("train-segmenter", help="train the U-Net segmenter (deep extra)")
    p.add_argument("--out", required=True, help="weights file to write (.keras)")
    p.add_argument("--data", default=None, help="segwbc folder with expert masks")
    p.add_argument("--pseudo", default=None, help="PBC folder for pseudo-labels")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 40)")
    p.add_argument("--base-filters", type=int, default=12,
                   help="filters of the first level, doubled per level (default 12)")
    p.add_argument("--expert-repeat", type=int, default=3,
                   help="times each expert-annotated image appears per epoch (default 3)")
    p.add_argument("--input-size", type=int, default=None,
                   help="network input side in pixels, a multiple of 16 (default 128); "
                        "inference reads it from the weights file")
    p.add_argument("--balance-datasets", action=argparse.BooleanOptionalAction, default=False,
                   help="repeat each expert dataset to the size of the largest, in training "
                        "and validation (default off)")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these U-Net weights (fine-tuning); the input size and "
                        "architecture come from the file")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="initial Adam learning rate, cosine-decayed to 5%% of it (default 2e-3)")
    p.add_argument("--random-state", type=int, default=0)
    p.set_defaults(func=_lazy("morphocell.cli.train_segmenter", "train_command"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    try:
        return int(args.func(args) or 0)
    except MorphocellError as exc:
        if args.debug:
            raise
        print(f"morphocell {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback for users
        if args.debug:
            raise
        print(f"morphocell {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "Run again with --debug for the traceback and report it.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
