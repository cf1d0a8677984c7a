"""``morphocell features``: hand-crafted features of many images into a Parquet dataset."""
from __future__ import annotations

import sys

from ..errors import DataError


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise DataError("--scheduler needs dask.distributed: pip install 'morphocell[dist]' "
                        "(or pip install 'dask[distributed]')") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise DataError(f"cannot connect to the Dask scheduler at {address} ({exc})") from None


def features_command(args) -> int:
    """``morphocell features INPUT... --out DIR``: exit 0, or 3 when the dataset holds errors."""
    fams = tuple(f.strip() for f in str(args.families).split(",") if f.strip())
    if not fams:
        raise DataError("--families is empty")
    client = _connect(args.scheduler) if getattr(args, "scheduler", None) else None
    from ..features.extractor import STATUS_ERROR, STATUS_NO_CELL, STATUS_OK
    from ..stream import dataset_counts, extract_to_parquet

    try:
        res = extract_to_parquet(args.inputs, args.out, families=fams,
                                 method=getattr(args, "method", "otsu"), client=client,
                                 n_jobs=args.n_jobs, chunk_size=args.chunk_size,
                                 verbose=0 if getattr(args, "quiet", False) else 1)
    finally:
        if client is not None:
            client.close()
    for p, e in res.failures:
        print(f"error: {e if p in e else f'{p}: {e}'}", file=sys.stderr)
    total = dataset_counts(res.out)
    if res.counts[STATUS_ERROR] > len(res.failures):
        print(f"... and {res.counts[STATUS_ERROR] - len(res.failures)} more failed images "
              "(rows with status 'error')", file=sys.stderr)
    print(f"listed {res.listed} images, {res.skipped} already done, measured {res.written} "
          f"in {res.seconds:.1f} s ({res.rate:.1f} images/s) into {res.parts} new part files; "
          f"{res.out} holds {sum(total.values())} rows: {total[STATUS_OK]} ok, "
          f"{total[STATUS_NO_CELL]} no cell, {total[STATUS_ERROR]} errors")
    return 3 if total[STATUS_ERROR] else 0
