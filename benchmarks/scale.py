"""Scale benchmark for ``morphocell features`` (morphocell.batch): throughput and peak memory.

A synthetic collection lists real PBC images over and over in a manifest (``id,path,label``;
the ``id`` column is ``<relative path>#<k>``, so a file listed many times gives distinct rows
and is measured every time — no copies on disk). For every size and configuration a child
process runs :func:`morphocell.batch.extract_to_parquet` while this process samples the memory
of the child and all its descendants (psutil, every ``--interval`` s):

* ``serial``  one process (``n_jobs=1``);
* ``local2``  two local worker processes (``n_jobs=2``);
* ``dask1``   a ``LocalCluster(n_workers=1, threads_per_worker=1, processes=True)`` on
  127.0.0.1, the client in the child (the scheduler runs in the child too);
* ``dask2``   the same with ``n_workers=2``.

Two speed-ups are reported: two workers over the plain one-process run (``serial``: what Dask
costs on top of scaling) and, for Dask, two workers over one Dask worker (how Dask scales).

Reported per run: images/s over the whole call (worker start-up included) and in the steady
state (from the part-file times, after the first chunk of every worker), peak RSS of the driver,
of the workers together, of everything (RSS double-counts shared pages) and peak total PSS
(proportional set size: shared pages split between processes; the honest "total"), and the
driver's CPU seconds per 1000 images (what bounds how many workers one driver can feed).
Then the speed-up of 2 workers over one, the memory growth from the smallest to the largest
size, and a projection for 10 million cells on N workers.

Usage (from the repository root; nice it on a shared machine)::

    nice -n 10 python benchmarks/scale.py --sizes 2000,5000,10000
    nice -n 10 python benchmarks/scale.py --sizes 10000,50000,100000 --chunk-size 1000

Writes ``benchmarks/results/scale.json`` and ``benchmarks/results/scale.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"serial": 1, "local2": 2, "dask1": 1, "dask2": 2}


# ---------------------------------------------------------------------------------------------
# child: one run
# ---------------------------------------------------------------------------------------------

def _steady(out: Path, workers: int) -> dict:
    """Steady state from part-file modification times, leaving out each worker's first chunk
    (start-up, numba cache loading): images/s, the window (epoch seconds) and its rows."""
    import pyarrow.parquet as pq

    parts = sorted(out.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    if len(parts) <= workers + 1:
        return {"steady_rate": float("nan"), "parts": len(parts)}
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts[workers:])
    t0, t1 = (parts[workers - 1].stat().st_mtime_ns / 1e9, parts[-1].stat().st_mtime_ns / 1e9)
    return {"steady_rate": rows / (t1 - t0) if t1 > t0 else float("nan"), "parts": len(parts),
            "steady_window": [t0, t1], "steady_rows": rows}


def child(args) -> None:
    from morphocell.batch import extract_to_parquet

    out = Path(args.out_dir)
    workers = CONFIGS[args.child]
    t0 = time.perf_counter()
    info: dict = {}
    cpu0 = 0.0
    if args.child.startswith("dask"):
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            info["cluster_start_s"] = time.perf_counter() - t0
            cpu0 = time.process_time()
            res = extract_to_parquet(args.manifest, out, client=client,
                                     chunk_size=args.chunk_size)
    else:
        cpu0 = time.process_time()
        res = extract_to_parquet(args.manifest, out, n_jobs=workers, chunk_size=args.chunk_size)
    # CPU of this process (all its threads) during the extraction: for local2 the driver
    # alone; for dask1/dask2 the driver plus the in-process scheduler; for serial all the work
    info["driver_cpu_s"] = time.process_time() - cpu0
    info.update(_steady(out, workers))
    info.update(listed=res.listed, written=res.written, skipped=res.skipped,
                extract_s=res.seconds, rate=res.rate, counts=res.counts,
                child_wall_s=time.perf_counter() - t0)
    print("RESULT " + json.dumps(info), flush=True)


# ---------------------------------------------------------------------------------------------
# parent: manifests, sampling, report
# ---------------------------------------------------------------------------------------------

def write_manifest(data: Path, n: int, path: Path) -> None:
    """``n`` rows cycling over the PBC train images: id ``<rel path>#<k>``, absolute path."""
    with open(data / "pbc_split.csv", newline="") as fh:
        base = [(r["path"], r["label"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "label"])
        for k in range(n):
            rel, lab = base[k % len(base)]
            w.writerow([f"{rel}#{k}", str(data / rel), lab])


class Sampler(threading.Thread):
    """Peak memory of a process tree, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop = threading.Event()
        self.peak = {"driver_rss": 0, "workers_rss": 0, "total_rss": 0, "total_pss": 0,
                     "max_worker_rss": 0, "n_procs": 0}
        self.samples = 0
        self.cpu: dict[int, tuple[bool, float]] = {}  # pid -> (is driver, last CPU seconds)
        # (epoch, driver CPU s, workers CPU s, total PSS bytes) per sample
        self.series: list[tuple[float, float, float, float]] = []

    def run(self) -> None:
        ps = self.psutil
        while not self.stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except ps.NoSuchProcess:
                break
            drv = wrk = pss = mx = 0
            n = 0
            for i, p in enumerate(procs):
                try:
                    mi = p.memory_full_info()
                except (ps.NoSuchProcess, ps.AccessDenied):
                    continue
                n += 1
                pss += getattr(mi, "pss", mi.rss)
                try:
                    c = p.cpu_times()
                    self.cpu[p.pid] = (i == 0, c.user + c.system)
                except (ps.NoSuchProcess, ps.AccessDenied):
                    pass
                if i == 0:
                    drv = mi.rss
                else:
                    wrk += mi.rss
                    mx = max(mx, mi.rss)
            cur = {"driver_rss": drv, "workers_rss": wrk, "total_rss": drv + wrk,
                   "total_pss": pss, "max_worker_rss": mx, "n_procs": n}
            for k, v in cur.items():
                self.peak[k] = max(self.peak[k], v)
            self.samples += 1
            self.series.append((time.time(), sum(v for d, v in self.cpu.values() if d),
                                sum(v for d, v in self.cpu.values() if not d), pss))
            self.stop.wait(self.interval)


def run_one(config: str, manifest: Path, out: Path, chunk: int, interval: float,
            nice: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--manifest",
           str(manifest), "--out-dir", str(out), "--chunk-size", str(chunk)]
    if nice and shutil.which("nice"):
        cmd = ["nice", "-n", str(nice)] + cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # `nice` execs python in place: the pid is the driver's
    sampler = Sampler(proc.pid, interval)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed (rc {proc.returncode}):\n{stderr[-3000:]}")
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    mb = {k: (v / 2**20 if k != "n_procs" else v) for k, v in sampler.peak.items()}
    res.update(config=config, wall_s=wall, samples=sampler.samples, peak_mb=mb,
               driver_cpu_ms_per_image=1000 * res["driver_cpu_s"] / max(res["written"], 1))
    if sampler.series:
        # peak total PSS over the first 10% / 50% / all of the run's samples: flat memory
        # means the first tenth already reaches the whole run's peak
        pss = [s[3] for s in sampler.series]
        res["pss_mb_by_time"] = {f"{q}%": max(pss[:max(1, len(pss) * q // 100)]) / 2**20
                                 for q in (10, 50, 100)}
    if "steady_window" in res and len(sampler.series) > 2:
        # CPU seconds spent in the steady window, per image: what the work costs in CPU,
        # whatever share of the (shared) machine the run happened to get
        import numpy as np

        t, d, w, _ = (np.array(x) for x in zip(*sampler.series, strict=True))
        (a, b), rows = res["steady_window"], res["steady_rows"]
        dd = float(np.interp(b, t, d) - np.interp(a, t, d))
        dw = float(np.interp(b, t, w) - np.interp(a, t, w))
        res["steady_cpu_ms_per_image"] = {"driver": 1000 * dd / rows, "workers": 1000 * dw / rows}
        # images/s that k dedicated cores would give at this CPU cost per image (driver and
        # workers share the k cores, as in the measured runs)
        k = CONFIGS[config]
        res["cpu_bound_rate"] = k * rows / (dd + dw) if dd + dw > 0 else float("nan")
    return res


def driver_cost(chunk_sizes: list[int], work: Path, repeats: int = 5) -> list[dict]:
    """Driver CPU ms per image by chunk size, without any image work: listing a manifest
    (``iter_entries``), keying rows against a resume index of 1 million ids, and writing parts
    of ``chunk`` rows x all features (``_write_part``, zstd + fsync), on synthetic values."""
    import numpy as np

    from morphocell.batch.dataset import _key8, _schema, _write_part
    from morphocell.features.extractor import feature_names
    from morphocell.io import iter_entries

    names = feature_names()
    schema = _schema(names)
    rng = np.random.default_rng(0)
    man = work / "driver_manifest.csv"
    n_list = 20000
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "label"])
        for k in range(n_list):
            w.writerow([f"pbc/x/{k}.jpg#{k}", f"/data/pbc/x/{k}.jpg", "x"])
    done = np.sort(rng.integers(1, 2**63, 1_000_000, dtype=np.uint64))
    c0 = time.process_time()
    for key, _, _ in iter_entries(man):
        kd = _key8(key)
        i = int(np.searchsorted(done, kd))
        _ = i < len(done) and done[i] == kd
    list_ms = 1000 * (time.process_time() - c0) / n_list
    out = []
    for chunk in chunk_sizes:
        res = {"seq": list(range(chunk)), "id": [f"pbc/x/{k}.jpg#{k}" for k in range(chunk)],
               "path": [f"/data/pbc/x/{k}.jpg" for k in range(chunk)],
               "label": ["x"] * chunk, "sha256": ["ab" * 32] * chunk,
               "X": rng.normal(size=(chunk, len(names))), "status": ["ok"] * chunk,
               "error": [""] * chunk}
        d = work / f"driver_{chunk}"
        d.mkdir(exist_ok=True)
        c0, t0 = time.process_time(), time.perf_counter()
        for r in range(repeats):
            _write_part(d, r, res, names, schema)
        cpu = time.process_time() - c0
        wall = time.perf_counter() - t0
        out.append({"chunk": chunk, "list_ms_per_image": list_ms,
                    "write_cpu_ms_per_image": 1000 * cpu / (repeats * chunk),
                    "write_wall_ms_per_image": 1000 * wall / (repeats * chunk),
                    "part_mb": sum(p.stat().st_size for p in d.glob("part-*")) / repeats / 2**20})
        shutil.rmtree(d, ignore_errors=True)
    return out


def project(rate_per_worker: float, n_cells: int = 10_000_000) -> list[dict]:
    return [{"workers": n, "hours": n_cells / (n * rate_per_worker) / 3600}
            for n in (8, 32, 128, 512)]


def report(runs: list[dict], meta: dict) -> str:
    L = ["# Scale benchmark: `morphocell features` (streaming, resumable Parquet)", ""]
    L += [f"- machine: {meta['machine']}; load average at start {meta['load_start']}, "
          f"at end {meta['load_end']} (shared machine: other jobs ran at the same time)",
          f"- morphocell commit {meta['commit']}, {meta['n_features']} features per image, "
          f"chunk size {meta['chunk_size']}, runs under `nice -n {meta['nice']}`",
          f"- sizes measured: {meta['sizes']}; configurations: {meta['configs']}", ""]
    L += ["| config | entries | images/s (whole run) | images/s (steady) | wall s | "
          "driver peak RSS MB | workers peak RSS MB | total peak RSS MB | total peak PSS MB | "
          "driver CPU ms/image (extraction only) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m = r["peak_mb"]
        L.append(f"| {r['config']} | {r['listed']} | {r['rate']:.1f} | {r['steady_rate']:.1f} | "
                 f"{r['wall_s']:.0f} | {m['driver_rss']:.0f} | {m['workers_rss']:.0f} | "
                 f"{m['total_rss']:.0f} | {m['total_pss']:.0f} | "
                 f"{r['driver_cpu_ms_per_image']:.2f} |")
    L += ["", "Steady-state CPU cost per image (CPU seconds in the steady window / images in it) "
          "and the rate that 1 (serial) or 2 dedicated cores would give at that cost "
          "(cores / (driver + worker CPU per image)):", "",
          "| config | entries | worker CPU ms/image | driver CPU ms/image | "
          "CPU-bound images/s |", "|---|---:|---:|---:|---:|"]
    for r in runs:
        c = r.get("steady_cpu_ms_per_image")
        if c:
            L.append(f"| {r['config']} | {r['listed']} | {c['workers']:.1f} | "
                     f"{c['driver']:.1f} | {r['cpu_bound_rate']:.1f} |")
    L.append("")
    by = {(r["config"], r["listed"]): r for r in runs}
    sizes = sorted({r["listed"] for r in runs})
    L += ["## Speed-up of two workers over one", "",
          "Measured: ratio of steady-state images/s (wall clock, on the shared machine). "
          "CPU-bound: ratio of the CPU-bound rates above (what two dedicated cores would give).",
          "", "| entries | local2 / serial measured | dask2 / serial measured | "
          "dask2 / dask1 measured | local2 / serial CPU-bound | dask2 / serial CPU-bound | "
          "dask2 / dask1 CPU-bound |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        cells = []
        for key in ("steady_rate", "cpu_bound_rate"):
            for c, base in (("local2", "serial"), ("dask2", "serial"), ("dask2", "dask1")):
                s, o = by.get((base, n)), by.get((c, n))
                ok = s and o and s.get(key) and o.get(key)
                cells.append(f"{o[key] / s[key]:.2f}x" if ok else "n/a")
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += ["", "## Peak memory against collection size (total PSS, MB)", "",
          "| config | " + " | ".join(str(n) for n in sizes) + " | largest / smallest |",
          "|---|" + "---:|" * (len(sizes) + 1)]
    for c in meta["configs"]:
        vals = [by[(c, n)]["peak_mb"]["total_pss"] if (c, n) in by else None for n in sizes]
        got = [v for v in vals if v is not None]
        ratio = f"{got[-1] / got[0]:.2f}" if len(got) > 1 else "n/a"
        L.append(f"| {c} | " + " | ".join("n/a" if v is None else f"{v:.0f}" for v in vals)
                 + f" | {ratio} |")
    L += ["", "Peak total PSS (MB) over the first 10%, the first 50% and all of each run "
          "(memory that stops growing reaches its peak early):", "",
          "| config | entries | first 10% | first 50% | whole run |", "|---|---:|---:|---:|---:|"]
    for r in runs:
        q = r.get("pss_mb_by_time")
        if q:
            L.append(f"| {r['config']} | {r['listed']} | {q['10%']:.0f} | {q['50%']:.0f} | "
                     f"{q['100%']:.0f} |")
    L.append("")
    pw = meta.get("per_worker_rate")
    if pw:
        cb = meta.get("per_worker_cpu_bound_rate") or float("nan")
        L += ["## Projection: 10 million cells", "",
              f"Per-worker rate measured here: {pw:.1f} images/s wall clock ({1000 / pw:.1f} "
              f"ms/image, {meta['per_worker_from']}, on the shared machine), {cb:.1f} images/s "
              f"CPU-bound ({1000 / cb:.1f} CPU ms/image in the steady state: what a dedicated "
              "core gives). At the target of ~3 ms/image a worker does ~333 images/s. "
              "Hours = 10^7 / (workers x rate), assuming the driver keeps up (below).", "",
              "| workers | hours at the measured wall rate | hours CPU-bound | "
              "hours at 3 ms/image |", "|---:|---:|---:|---:|"]
        fast = {p["workers"]: p["hours"] for p in project(1000 / 3)}
        cpu = {p["workers"]: p["hours"] for p in project(cb)}
        for p in project(pw):
            L.append(f"| {p['workers']} | {p['hours']:.1f} | {cpu[p['workers']]:.1f} | "
                     f"{fast[p['workers']]:.2f} |")
        dcost = meta.get("driver_cost")
        if dcost:
            L += ["", "Driver cost without image work (listing + resume lookup against 1 million "
                  "done ids, and writing parts of all features, zstd + fsync; synthetic values):",
                  "", "| chunk size | listing ms/image | writing CPU ms/image | "
                  "writing wall ms/image | MB per part | images/s one driver can write |",
                  "|---:|---:|---:|---:|---:|---:|"]
            for d in dcost:
                tot = d["list_ms_per_image"] + d["write_wall_ms_per_image"]
                L.append(f"| {d['chunk']} | {d['list_ms_per_image']:.3f} | "
                         f"{d['write_cpu_ms_per_image']:.3f} | {d['write_wall_ms_per_image']:.3f}"
                         f" | {d['part_mb']:.1f} | {1000 / tot:.0f} |")
        dc = meta.get("driver_cpu_ms_per_image")
        if dc:
            L += ["", f"In the `local2` run at {meta['chunk_size']} images per chunk the driver "
                  f"spent {dc:.2f} CPU ms per image (whole extraction: listing, resume index, "
                  "receiving results, writing parts), i.e. one driver core can take about "
                  f"{1000 / dc:.0f} images/s; the writing cost per image falls with the chunk "
                  "size (table above)."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA",
                                                     str(REPO.parent / "shared" / "data")))
    ap.add_argument("--sizes", default="2000,5000,10000", help="comma-separated entry counts")
    ap.add_argument("--configs", default="serial,local2,dask1,dask2")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--interval", type=float, default=0.25, help="memory sampling period, s")
    ap.add_argument("--nice", type=int, default=10, help="nice level of the child runs")
    ap.add_argument("--driver-chunks", default="100,1000,2000",
                    help="chunk sizes for the driver-cost measurement ('' to skip)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--from-json", default=None,
                    help="re-render the report of an earlier scale.json (adds the driver cost)")
    ap.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    if args.from_json:  # re-render an earlier run's tables, adding the driver cost
        prev = json.loads(Path(args.from_json).read_text())
        return finish(prev["runs"], prev["meta"], args)

    data = Path(args.data)
    if not (data / "pbc_split.csv").is_file():
        ap.error(f"PBC data not found at {data} (--data or MORPHOCELL_DATA)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    configs = [c for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r} (choose from {sorted(CONFIGS)})")
    from morphocell.features.extractor import feature_names

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    meta = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "load_start": os.getloadavg(), "commit": commit,
            "n_features": len(feature_names()), "chunk_size": args.chunk_size,
            "nice": args.nice, "sizes": sizes, "configs": configs}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphocell-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for n in sizes:
            man = work / f"manifest_{n}.csv"
            write_manifest(data, n, man)
            for c in configs:
                out = work / f"{c}_{n}.parquet"
                shutil.rmtree(out, ignore_errors=True)
                print(f"[scale] {c} {n} ...", flush=True)
                r = run_one(c, man, out, args.chunk_size, args.interval, args.nice)
                r["load_after"] = os.getloadavg()
                runs.append(r)
                print(f"[scale] {c} {n}: {r['rate']:.1f} img/s (steady {r['steady_rate']:.1f}),"
                      f" total PSS {r['peak_mb']['total_pss']:.0f} MB, wall {r['wall_s']:.0f} s",
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_end"] = os.getloadavg()
    return finish(runs, meta, args)


def finish(runs: list[dict], meta: dict, args) -> int:
    """Derived numbers, driver cost, JSON + Markdown."""
    largest = max(r["listed"] for r in runs)
    for c, k in (("serial", 1), ("local2", 2), ("dask2", 2)):
        r = next((r for r in runs if r["config"] == c and r["listed"] == largest), None)
        if r and r["steady_rate"] == r["steady_rate"]:
            meta["per_worker_rate"] = r["steady_rate"] / k
            meta["per_worker_from"] = f"{c} at {largest} entries / {k}"
            meta["per_worker_cpu_bound_rate"] = r.get("cpu_bound_rate", float("nan")) / k
            break
    if args.driver_chunks:
        dwork = Path(tempfile.mkdtemp(prefix="morphocell-driver-"))
        try:
            meta["driver_cost"] = driver_cost(
                [int(c) for c in args.driver_chunks.split(",")], dwork)
        finally:
            shutil.rmtree(dwork, ignore_errors=True)
    l2 = next((r for r in runs if r["config"] == "local2" and r["listed"] == largest), None)
    if l2:  # the driver only lists, indexes and writes there (serial computes in the driver)
        meta["driver_cpu_ms_per_image"] = l2["driver_cpu_ms_per_image"]
    outd = Path(args.out)
    outd.mkdir(parents=True, exist_ok=True)
    from morphocell._utils import atomic_write

    with atomic_write(outd / "scale.json", "w") as fh:
        json.dump({"meta": meta, "runs": runs}, fh, indent=1, default=str)
    md = report(runs, meta)
    with atomic_write(outd / "scale.md", "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
