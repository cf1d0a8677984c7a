"""``morphocell features``: hand-crafted features of many images into a Parquet dataset."""
from __future__ import annotations

from ._common import add_command, add_layout, add_quiet, eprint


def add_parser(subparsers):
    p = add_command(
        subparsers, "features", "extract hand-crafted features to Parquet",
        """
One row per image: path, label (if known), every feature, status and error. Streams to part
files and resumes after an interruption (rerun the same command). Images that cannot be
read, or in which no cell is found, get a row with status 'error' or 'no_cell' (exit 3 when
others worked).""",
        "morphocell features pbc/ --out pbc_features/ --n-jobs 4\n"
        "morphocell features manifest.csv --out feats/ --scheduler tcp://head:8786")
    p.add_argument("inputs", nargs="+",
                   help="folder of class subfolders, manifest CSV, or image files/folders")
    p.add_argument("--out", required=True,
                   help="output Parquet dataset folder (part files inside; rerun to resume)")
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes")
    p.add_argument("--families", default="shape,color,texture",
                   help="comma-separated feature families")
    p.add_argument("--method", default="otsu", choices=["otsu", "unet"],
                   help="segmentation method")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://HOST:PORT), needs the dist extra")
    p.add_argument("--chunk-size", type=int, default=256, help="images per written part")
    add_layout(p)
    add_quiet(p)
    return p


def _connect(address: str):
    from ..errors import DataError

    try:
        from distributed import Client
    except ImportError:
        raise DataError("--scheduler needs dask.distributed: pip install 'morphocell[dist]' "
                        "(or pip install 'dask[distributed]')") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise DataError(f"cannot connect to the Dask scheduler at {address} ({exc})") from None


def run(args) -> int:
    import itertools

    from ..batch import dataset_counts, extract_to_parquet
    from ..errors import DataError
    from ..features.extractor import STATUS_ERROR, STATUS_NO_CELL, STATUS_OK
    from ..io import ListingReport, iter_entries
    from ._common import say_listing
    from ._exit import EXIT_OK, EXIT_PARTIAL, failure_text

    fams = tuple(f.strip() for f in str(args.families).split(",") if f.strip())
    if not fams:
        raise DataError("--families is empty")
    listing = ListingReport()
    entries = iter_entries(args.inputs, layout=args.layout, report=listing)
    # the first entry is listed before anything is written: an input that cannot be read
    # (a mistyped folder, a folder that needs --layout) fails before the dataset is created;
    # the rest stream
    entries = itertools.chain([next(entries)], entries)
    client = _connect(args.scheduler) if args.scheduler else None
    try:
        res = extract_to_parquet(entries, args.out, families=fams, method=args.method,
                                 client=client, n_jobs=args.n_jobs, chunk_size=args.chunk_size,
                                 verbose=0 if args.quiet else 1)
    finally:
        if client is not None:
            client.close()
    say_listing("features", listing)
    for p, e in res.failures:
        eprint(f"morphocell features: skipped {failure_text(p, STATUS_ERROR, e)}")
    total = dataset_counts(res.out)
    if total[STATUS_ERROR] > len(res.failures):
        eprint(f"... and {total[STATUS_ERROR] - len(res.failures)} more failed images "
               "(rows with status 'error')")
    print(f"listed {res.listed} images, {res.skipped} already done, measured {res.written} "
          f"in {res.seconds:.1f} s ({res.rate:.1f} images/s) into {res.parts} new part files; "
          f"{res.out} holds {sum(total.values())} rows: {total[STATUS_OK]} ok, "
          f"{total[STATUS_NO_CELL]} no cell, {total[STATUS_ERROR]} errors")
    bad = total[STATUS_ERROR] + total[STATUS_NO_CELL]
    if bad and not total[STATUS_OK]:  # nothing measured: a user error, as in every command
        first = (failure_text(res.failures[0][0], STATUS_ERROR, res.failures[0][1])
                 if res.failures else "no cell found")
        raise DataError(f"no image could be measured ({bad} rows with status 'error' or "
                        f"'no_cell'; first: {first})", res.out)
    return EXIT_PARTIAL if bad else EXIT_OK
