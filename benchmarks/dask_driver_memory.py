"""Driver memory over many small Dask tasks: does it level off once Dask's bounded logs fill?

Runs :func:`morphocell.batch.extract_to_parquet` (shape family only, to keep it quick) on a
``LocalCluster(n_workers=2, threads_per_worker=1)`` over ``TASKS x CHUNK`` PBC train rows
(repeated as needed), samples this process's RSS (client + in-process scheduler) every second
and prints its maximum per eighth of the finished tasks, then the RSS before and after
``malloc_trim(0)``. ``LOGS`` = ``default`` or a number that caps
``distributed.admin.log-length`` and ``distributed.admin.low-level-log-length``.

Usage (numbers of 2026-11-30 in docs/scale.md)::

    python benchmarks/dask_driver_memory.py default 600 25 --data ../shared/data
    python benchmarks/dask_driver_memory.py 100 600 25 --data ../shared/data
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

# morphocell is imported as installed; `scale` is the sibling script (this script's folder is
# on sys.path when it runs).


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", help="'default' or a cap for Dask's log lengths")
    ap.add_argument("tasks", type=int)
    ap.add_argument("chunk", type=int, help="images per task")
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA", "../shared/data"))
    args = ap.parse_args(argv)

    import dask
    import psutil
    from distributed import Client, LocalCluster
    from scale import write_manifest  # the sibling script

    from morphocell.batch import extract_to_parquet

    data = Path(args.data).resolve()
    work = Path(tempfile.mkdtemp(prefix="mc_driver_mem_"))
    man, out = work / "manifest.csv", work / "out"
    write_manifest(data, args.tasks * args.chunk, man)  # unique ids over repeated train rows
    cfg = {} if args.logs == "default" else {
        "distributed.admin.log-length": int(args.logs),
        "distributed.admin.low-level-log-length": int(args.logs)}
    me = psutil.Process()
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            n = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
            samples.append((n, me.memory_info().rss / 2**20))
            time.sleep(1)

    try:
        with dask.config.set(cfg), LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None) as cluster, Client(cluster) as client:
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
            extract_to_parquet(str(man), out, client=client,
                               chunk_size=args.chunk, families=["shape"])
            done.set()
            th.join()
            gc.collect()
            r0 = me.memory_info().rss / 2**20
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            r1 = me.memory_info().rss / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step = max(1, args.tasks // 8)
    marks: dict[int, float] = {}
    for n, rss in samples:
        b = (n // step) * step
        marks[b] = max(marks.get(b, 0.0), rss)
    print(f"logs {args.logs}: tasks done -> max driver RSS MB",
          json.dumps({k: round(v, 1) for k, v in sorted(marks.items())}))
    print(f"driver RSS after the run {r0:.1f} MB, after malloc_trim(0) {r1:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
