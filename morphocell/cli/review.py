"""``morphocell review``: the review page of a predictions table (HTML, opens from disk)."""
from __future__ import annotations

from ._common import add_command, add_n_jobs, add_quiet


def add_parser(subparsers):
    p = add_command(
        subparsers, "review", "write the review page of predictions: look, relabel, count",
        """
Write DIR/index.html with thumbnails and full-size images beside it: the differential count
(count, %, Wilson 95% interval per class, flags), the cells grouped by predicted class (least
sure first; badges for needs_review / unlike_training), a detail panel (the image with its
nucleus / cytoplasm outlines, top-3 probabilities, measurements with units), relabelling by
keyboard (a digit per class, 0 = not a leukocyte / artefact), undo, and 'Export labels'
(labels.csv: path,label with absolute paths, artefacts left out; read by 'morphocell train'
and 'morphocell adapt'). The page works opened from disk, offline; corrections are kept in the browser.
Images that no longer exist are shown as placeholders (exit 3).""",
        "morphocell predict model.mcm cells/ --out predictions.csv\n"
        "morphocell review predictions.csv --out review/ --model model.mcm")
    p.add_argument("predictions", help="predictions CSV written by 'morphocell predict'")
    p.add_argument("--out", required=True, help="folder to write (index.html and images)")
    p.add_argument("--model", default=None,
                   help="model file: its name, date and atypical classes go in the header")
    p.add_argument("--no-masks", action="store_true",
                   help="no outlines or measurements (faster: no segmentation)")
    p.add_argument("--base-dir", default=None,
                   help="folder that relative image paths are relative to (default: the "
                   "working folder, then the CSV's folder)")
    add_n_jobs(p)
    add_quiet(p)
    return p


def run(args) -> int:
    from ..review import model_info_from_file, write_review_page
    from ._exit import EXIT_OK, EXIT_PARTIAL, print_failures

    info = model_info_from_file(args.model) if args.model else None
    res = write_review_page(args.predictions, args.out, model_info=info,
                            masks=not args.no_masks, base_dir=args.base_dir,
                            n_jobs=args.n_jobs, verbose=0 if args.quiet else 1)
    failures = [(p, "missing", "image file no longer exists (placeholder shown)")
                for p in res.missing]
    failures += [(p, "error", f"{why} (placeholder shown)") for p, why in res.unreadable]
    print_failures(failures, "review")
    print(f"review page of {res.n_cells} cells ({res.n_classified} classified) written to "
          f"{res.index}; open it in a browser")
    return EXIT_PARTIAL if failures else EXIT_OK
