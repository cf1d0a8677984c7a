"""``morphocell segment``: nucleus and cytoplasm masks of single-cell images."""
from __future__ import annotations

from pathlib import Path

from ._common import add_command, add_quiet, eprint

_REFINE = {"auto": "auto", "on": True, "off": False}


def add_parser(subparsers):
    p = add_command(
        subparsers, "segment", "segment images into nucleus/cytoplasm masks",
        """
Write <name>_mask.png (0 background, 128 cytoplasm, 255 nucleus) and <name>_overlay.png
(contours on the image) per image. An image in which no cell is found gets an empty mask and
counts as failed (exit 3 when other images worked).""",
        "morphocell segment cells/ --out masks/\n"
        "morphocell segment cells/*.jpg --out masks/ --method unet --tta")
    p.add_argument("images", nargs="+", help="image files, folders, or a manifest CSV")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="otsu", choices=["otsu", "unet"],
                   help="classical Otsu-based segmentation, or the U-Net (deep extra)")
    p.add_argument("--model", default=None,
                   help="method unet: U-Net weights file (default: the bundled weights)")
    p.add_argument("--tta", action="store_true",
                   help="method unet: average over the 8 rotations/flips (8x slower)")
    p.add_argument("--refine", default="auto", choices=sorted(_REFINE),
                   help="method unet: re-decide the nucleus boundary at the image's resolution "
                   "from its colours (auto: when the image is >= 1.5x the network input)")
    add_quiet(p)
    return p


def run(args) -> int:
    from .._utils import progress
    from ..errors import MorphocellError
    from ..io import iter_chunks, read_image, resolve_inputs
    from ..segmentation import save_masks, segment
    from ._exit import outcome

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
    failures = []
    chunks = list(iter_chunks(list(zip(paths, names, strict=True)), 32))
    for chunk in progress(chunks, desc="segment", verbose=not args.quiet, unit="batch"):
        good = []
        for p, name in chunk:
            try:
                good.append((p, name, read_image(p)))
            except MorphocellError as exc:
                failures.append((p, "error", str(exc)))
                eprint(f"morphocell segment: skipped {exc}")
        masks = seg_many([im for _, _, im in good]) if good else []
        for (p, name, img), m in zip(good, masks, strict=True):
            save_masks(img, m, out, name)
            if not m.found:
                failures.append((p, "no_cell", "no cell found"))
                eprint(f"warning: {p}: no cell found (empty mask written)")
    n_ok = len(paths) - len(failures)
    print(f"segmented {n_ok}/{len(paths)} images into {out}"
          + (f" ({len(failures)} failed or without a cell)" if failures else ""))
    return outcome(n_ok, failures, "segment")
