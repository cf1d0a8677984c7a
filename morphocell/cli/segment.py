"""``morphocell segment``: nucleus and cytoplasm masks of single-cell images."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ._common import add_command, add_layout, add_quiet, eprint

_REFINE = {"auto": "auto", "on": True, "off": False}
#: The mapping file written beside the masks: one row per input image.
MAPPING = "masks.csv"


def add_parser(subparsers):
    p = add_command(
        subparsers, "segment", "segment images into nucleus/cytoplasm masks",
        f"""
Write <name>_mask.png (0 background, 128 cytoplasm, 255 nucleus) and <name>_overlay.png
(contours on the image) per image, where <name> is the image's file name without its
extension, with as many of the folders above it as it takes to tell the inputs apart,
mirrored under --out (dataset1/001.png and dataset2/001.png give dataset1/001_mask.png and
dataset2/001_mask.png), and {MAPPING}: path (the input,
absolute), mask, overlay (relative to --out), status (ok, no_cell, error) and error. The
masks and overlays carry a PNG text chunk (Software: morphocell), so that no command reads
them back as cells, whatever they are renamed to. Existing outputs are never replaced
without --overwrite. An image in which no cell is found gets an empty mask and counts as
failed (exit 3 when other images worked).""",
        "morphocell segment cells/ --out masks/\n"
        "morphocell segment cells/*.jpg --out masks/ --method unet --tta --overwrite")
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
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace masks, overlays and {MAPPING} of an earlier run")
    add_layout(p)
    add_quiet(p)
    return p


def output_names(paths: list[str]) -> list[str]:
    """The output name of each input (``/``-separated, no extension): its file name without
    the extension, with as many of the folders above it as it takes to tell every input
    apart (the same number for every input, never above the deepest folder that holds them
    all), so that the outputs mirror those folders. Two inputs that differ only by extension
    (``a.jpg`` and ``a.png`` in one folder) keep it in the name (``a_jpg``, ``a_png``); a name
    still taken gets ``_2``, ``_3``, ...

    >>> output_names(["/d/x/a.png", "/e/b.png"])
    ['a', 'b']
    >>> output_names(["/d/dataset1/001.png", "/d/dataset2/001.png", "/d/dataset1/002.png"])
    ['dataset1/001', 'dataset2/001', 'dataset1/002']
    >>> output_names(["/d/a.jpg", "/d/a.png", "/d/b.jpg"])
    ['a_jpg', 'a_png', 'b']
    """
    absolute = [os.path.abspath(p) for p in paths]
    try:
        root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    except ValueError:  # different drives (Windows): no common folder
        root = ""
    rel = [os.path.relpath(a, root) if root else os.path.splitdrive(a)[1].lstrip("\\/")
           for a in absolute]
    parts = [r.replace(os.sep, "/").split("/") for r in rel]
    stems = [p[:-1] + [os.path.splitext(p[-1])[0]] for p in parts]
    depth = max(len(p) for p in parts) - 1
    distinct = len({"/".join(s) for s in stems})  # what folders alone can tell apart
    for k in range(depth + 1):
        names = ["/".join(s[-(k + 1):]) for s in stems]
        if len(set(names)) == distinct:
            break
    counts = Counter(names)
    names = [n if counts[n] == 1 else f"{n}_{os.path.splitext(p[-1])[1].lstrip('.')}"
             for n, p in zip(names, parts, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def run(args) -> int:
    import pandas as pd

    from .._utils import progress, write_csv
    from ..errors import DataError, MorphocellError
    from ..io import iter_chunks, read_image
    from ..segmentation import save_masks, segment
    from ._common import list_inputs, plural
    from ._exit import outcome

    listed = list_inputs("segment", args.images, args.layout).paths
    seen: set[str] = set()  # a file listed twice is segmented once
    paths = [p for p in listed
             if os.path.abspath(p) not in seen and not seen.add(os.path.abspath(p))]
    names = output_names(paths)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder: --out names the folder of the masks", out)
    targets = [out / MAPPING] + [out / f"{n}{s}" for n in names
                                 for s in ("_mask.png", "_overlay.png")]
    existing = [t for t in targets if os.path.lexists(t)]
    if existing and not args.overwrite:
        raise DataError(f"{plural(len(existing), 'output')} of an earlier run would be replaced "
                        f"(first: {existing[0]}); pass --overwrite to replace them, or choose "
                        "another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    if args.method == "unet":  # batches through the network (GPU when TensorFlow sees one)
        from ..segmentation.unet import segment_unet_batch

        def seg_many(imgs):
            return segment_unet_batch(imgs, args.model, tta=args.tta,
                                      refine=_REFINE[args.refine])
    else:
        def seg_many(imgs):
            return [segment(im, method=args.method) for im in imgs]
    failures, rows = [], []
    chunks = list(iter_chunks(list(zip(paths, names, strict=True)), 32))
    for chunk in progress(chunks, desc="segment", verbose=not args.quiet, unit="batch"):
        good = []
        for p, name in chunk:
            try:
                good.append((p, name, read_image(p)))
            except MorphocellError as exc:
                failures.append((p, "error", str(exc)))
                rows.append({"path": os.path.abspath(p), "mask": "", "overlay": "",
                             "status": "error", "error": str(exc)})
                eprint(f"morphocell segment: skipped {exc}")
        masks = seg_many([im for _, _, im in good]) if good else []
        for (p, name, img), m in zip(good, masks, strict=True):
            folder, stem = os.path.split(name)
            (out / folder).mkdir(parents=True, exist_ok=True)
            save_masks(img, m, out / folder, stem)
            status = "ok"
            if not m.found:
                status = "no_cell"
                failures.append((p, "no_cell", "no cell found"))
                eprint(f"warning: {p}: no cell found (empty mask written)")
            rows.append({"path": os.path.abspath(p), "mask": f"{name}_mask.png",
                         "overlay": f"{name}_overlay.png", "status": status,
                         "error": "no cell found" if status == "no_cell" else ""})
    order = {os.path.abspath(p): i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["path"]])
    write_csv(pd.DataFrame(rows, columns=["path", "mask", "overlay", "status", "error"]),
              out / MAPPING)
    n_ok = len(paths) - len(failures)
    print(f"segmented {n_ok}/{len(paths)} images into {out}"
          + (f" ({len(failures)} failed or without a cell)" if failures else "")
          + f"; names in {out / MAPPING}")
    return outcome(n_ok, failures, "segment")
