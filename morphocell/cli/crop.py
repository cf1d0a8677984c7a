"""``morphocell crop``: find the white cells of whole smear fields and crop them."""
from __future__ import annotations

from pathlib import Path

from ._common import add_command, add_layout, add_quiet, eprint


def add_parser(subparsers):
    p = add_command(
        subparsers, "crop", "find the white cells of whole smear fields and crop them",
        """
Find the white cells of each field (classical nucleus score, docs/segmentation.md) and write
one square image per cell, <field>_cell<k>.png, and cells.csv (field, cell, box, nucleus
area, crop path, status, error). The crops are the input of 'morphocell predict'. A field
without a white cell is a result (a row with status no_cell), not a failure.""",
        "morphocell crop fields/ --out cells/\n"
        "morphocell predict model.mcm cells/ --out predictions.csv")
    p.add_argument("fields", nargs="+", help="field images, folders, or a manifest CSV")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=None,
                   help="resize each crop to SIZE x SIZE pixels (default: the field's pixels; "
                   "a classifier expects cells at its training images' scale)")
    add_layout(p)
    add_quiet(p)
    return p


def run(args) -> int:
    import pandas as pd
    from PIL import Image

    from .._utils import atomic_path, progress, write_csv
    from ..errors import DataError, MorphocellError
    from ..io import read_image
    from ..segmentation.detect import crop_cells, find_white_cells
    from ._common import list_inputs
    from ._exit import outcome

    if args.size is not None and args.size < 16:
        raise DataError(f"--size must be at least 16 pixels, got {args.size}")
    paths = list_inputs("crop", args.fields, args.layout).paths
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures, seen = [], [], {}
    for p in progress(paths, desc="crop", verbose=not args.quiet, unit="field"):
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        base = {"field": p, "cell": "", "x0": "", "y0": "", "x1": "", "y1": "",
                "nucleus_area": "", "crop": ""}
        try:
            img = read_image(p)
        except MorphocellError as exc:
            failures.append((p, "error", str(exc)))
            eprint(f"morphocell crop: skipped {exc}")
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
    print(f"{n_cells} white cells cropped from {len(paths) - len(failures)}/{len(paths)} "
          f"fields into {out} (boxes in {out / 'cells.csv'})")
    return outcome(len(paths) - len(failures), failures, "read")
