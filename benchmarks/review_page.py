"""Review-page benchmark: a page of 10,000 cells, written and opened in headless Chromium.

A model is trained on the bundled sample (or ``--model``) and predicts ~200 real cells (PBC
test images and segwbc dataset1 images); their rows are repeated up to ``--n`` cells, each
repeat a copy of the real image with a distinct tag after its image data (the page counts an
image listed twice once), so the page holds ``--n`` distinct cells and as many thumbnails, as
a large sample would.

Measured:

* write time of :func:`morphocell.review.write_review_page`, with masks (segmentation,
  outlines and measurements per cell) and without (``masks=False``);
* page size: ``index.html``, ``data.js``, ``review.js`` + ``review.css``, the whole folder and
  its number of files;
* in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, Selenium), median of
  ``--loads`` fresh loads from ``file://``: first paint and first contentful paint, the page
  ready (every cell element built: the ``review-ready`` mark), the load event, the JS heap
  in use and the DOM node count once ready (Chrome DevTools ``Performance.getMetrics``),
  thumbnails requested at first (lazy loading), and the time one relabelling keystroke takes
  (count, groups and table updated).

Usage (from the repository root; nice it on a shared machine)::

    nice -n 10 python benchmarks/review_page.py --n 10000
    python benchmarks/review_page.py --n 2000 --no-masks-run   # quick look

Writes ``benchmarks/results/review_page.json`` (``--json``), not committed.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("MORPHOCELL_DATA", REPO.parent / "shared" / "data")).resolve()


def real_cells(data: Path, per_class: int = 20, n_segwbc: int = 40) -> list[str]:
    """The first ``per_class`` PBC test images per class and ``n_segwbc`` segwbc images."""
    with open(data / "pbc_split.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        k = seen.get(r["label"], 0)
        if k < per_class:
            out.append(str(data / r["path"]))
            seen[r["label"]] = k + 1
    out += sorted(glob.glob(str(data / "segwbc" / "dataset1" / "*_image.png")))[:n_segwbc]
    return out


def make_predictions(work: Path, n: int, model: str | None) -> tuple[Path, Path]:
    """``(model file, predictions CSV of n cells)``: real predictions repeated under
    distinct paths."""
    from morphocell.cli import main
    from morphocell.datasets import sample_folder

    if model is None:
        model = str(work / "sample.mcm")
        assert main(["train", str(sample_folder()), "--out", model, "--cv", "3",
                     "--domain-copies", "0", "--cache-dir", str(work / "cache"), "-q"]) == 0
    cells = real_cells(_data_dir())
    man = work / "cells.csv"
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"])
        w.writerows([p] for p in cells)
    base = work / "base_predictions.csv"
    code = main(["predict", model, str(man), "--out", str(base), "--cache-dir",
                 str(work / "cache"), "-q"])
    assert code in (0, 3), code
    links = work / "cells"
    links.mkdir()
    with open(base, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = list(reader)
    pred = work / "predictions.csv"
    with open(pred, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for k in range(n):
            r = dict(rows[k % len(rows)])
            src = Path(r["path"])
            copy = links / f"{k:06d}_{src.name}"
            # distinct bytes (a tag after the image data, which decoders ignore): the page
            # counts an image listed twice once, so every row must be its own image
            copy.write_bytes(src.read_bytes() + f"review-benchmark-{k:06d}".encode())
            r["path"] = str(copy)
            w.writerow(r)
    return Path(model), pred


def page_size(out: Path) -> dict:
    files = [p for p in out.rglob("*") if p.is_file()]
    size = {name: (out / name).stat().st_size for name in
            ("index.html", "data.js", "review.js", "review.css")}
    size["folder"] = sum(p.stat().st_size for p in files)
    size["n_files"] = len(files)
    for sub in ("thumbs", "full", "outlines"):
        size[sub] = sum(p.stat().st_size for p in (out / sub).iterdir())
    return size


_PROBE = """
const paint = Object.fromEntries(performance.getEntriesByType('paint')
  .map(e => [e.name, e.startTime]));
const ready = performance.getEntriesByName('review-ready')[0];
const nav = performance.getEntriesByType('navigation')[0];
return {first_paint_ms: paint['first-paint'] ?? null,
        first_contentful_paint_ms: paint['first-contentful-paint'] ?? null,
        ready_ms: ready ? ready.startTime : null,
        dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null,
        load_ms: nav ? nav.loadEventEnd : null,
        thumbnails_requested: document.querySelectorAll('.cell img[src]').length,
        cells: document.querySelectorAll('.cell[data-path]').length};
"""

_RELABEL = """
const t0 = performance.now();
document.dispatchEvent(new KeyboardEvent('keydown', {key: arguments[0], bubbles: true}));
const t1 = performance.now();
document.dispatchEvent(new KeyboardEvent('keydown', {key: 'z', bubbles: true}));
return [t1 - t0, performance.now() - t1];
"""


def browse(out: Path, loads: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = next(filter(None, (shutil.which(n) for n in
                                  ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        raise SystemExit("needs chromium and chromedriver (apt-get install chromium "
                         "chromium-driver)")
    runs = []
    for _ in range(loads):
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000"):
            opts.add_argument(arg)
        d = webdriver.Chrome(options=opts, service=Service(driver_bin))
        try:
            d.execute_cdp_cmd("Performance.enable", {})
            d.get((out / "index.html").as_uri())
            t0 = time.monotonic()
            while not d.execute_script("return document.documentElement.dataset.ready") \
                    and time.monotonic() - t0 < 120:
                time.sleep(0.02)
            time.sleep(0.5)  # first lazy thumbnails and paints settle
            r = d.execute_script(_PROBE)
            metrics = {m["name"]: m["value"] for m in
                       d.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
            r["js_heap_used_mb"] = metrics.get("JSHeapUsedSize", 0) / 2 ** 20
            r["js_heap_total_mb"] = metrics.get("JSHeapTotalSize", 0) / 2 ** 20
            r["dom_nodes"] = int(metrics.get("Nodes", 0))
            relabel, undo = d.execute_script(_RELABEL, "2")
            r["relabel_ms"], r["undo_ms"] = relabel, undo
            runs.append(r)
        finally:
            d.quit()
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    med = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}
    med["loads"] = loads
    med["chromium"] = subprocess.run([chromium, "--version"], capture_output=True, check=False,
                                     text=True).stdout.strip()
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="cells on the page")
    ap.add_argument("--model", default=None, help="model file (default: trained on the "
                    "bundled sample)")
    ap.add_argument("--loads", type=int, default=3, help="browser loads (median reported)")
    ap.add_argument("--no-masks-run", action="store_true",
                    help="only the page without masks (faster)")
    ap.add_argument("--n-jobs", type=int, default=1, help="worker processes for the images")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "review_page.json"))
    ap.add_argument("--keep", default=None, help="keep the pages in this folder")
    args = ap.parse_args(argv)

    from morphocell import __version__
    from morphocell.review import model_info_from_file, write_review_page

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="review_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model, pred = make_predictions(work, args.n, args.model)
        info = model_info_from_file(model)
        result = {"n": args.n, "n_jobs": args.n_jobs, "morphocell": __version__, "python": platform.python_version(),
                  "machine": platform.machine(), "cpus": os.cpu_count(), "runs": {}}
        configs = [("no_masks", False)] + ([] if args.no_masks_run else [("masks", True)])
        for name, masks in configs:
            out = work / f"page_{name}"
            t0 = time.perf_counter()
            res = write_review_page(pred, out, model_info=info, masks=masks,
                                    n_jobs=args.n_jobs)
            wall = time.perf_counter() - t0
            assert res.n_cells == args.n and not res.missing and res.n_repeats == 0
            run = {"write_s": wall, "write_ms_per_cell": 1000 * wall / args.n,
                   "size": page_size(out), "browser": browse(out, args.loads)}
            result["runs"][name] = run
            b, s = run["browser"], run["size"]
            print(f"[{name}] {args.n} cells: written in {wall:.1f} s "
                  f"({run['write_ms_per_cell']:.2f} ms/cell); index.html {s['index.html']} B, "
                  f"data.js {s['data.js'] / 2**20:.2f} MiB, folder {s['folder'] / 2**20:.1f} MiB "
                  f"in {s['n_files']} files")
            print(f"[{name}] Chromium (median of {b['loads']}): first paint "
                  f"{b['first_paint_ms']:.0f} ms, first contentful paint "
                  f"{b['first_contentful_paint_ms']:.0f} ms, ready {b['ready_ms']:.0f} ms, "
                  f"load {b['load_ms']:.0f} ms; JS heap {b['js_heap_used_mb']:.1f} MiB used; "
                  f"{b['dom_nodes']} DOM nodes; {b['thumbnails_requested']:.0f} thumbnails "
                  f"requested at first; relabel {b['relabel_ms']:.1f} ms, undo "
                  f"{b['undo_ms']:.1f} ms")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"results written to {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
