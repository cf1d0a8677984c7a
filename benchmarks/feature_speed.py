"""Feature-extraction speed: morphocell versus the slow ways of computing the same features.

The same PBC images (the first ``--n`` of the train split of ``pbc_split.csv``, taken class by
class in turn, so every prefix is stratified) are decoded once up front (decode speed is
reported apart) and measured in this one process, after a warm-up:

* ``morphocell``: the full extraction :func:`morphocell.features.extractor.extract_array`
  (Otsu segmentation + crop + shape, colour and texture families), with a breakdown per
  stage (segmentation; each family on precomputed crops, in us/image);
* ``morphocell n_jobs=2``: :func:`~morphocell.features.extractor.extract_batch` with two
  worker processes (started and warmed before timing) on the same decoded arrays, run
  ``--scaling-repeats`` times, each right after a one-process run of the same images; the
  speed-up is the median of the pairs' ratios (each pair is in the JSON). This process
  copies the arrays into shared-memory files for the workers (one per chunk) while sharing
  the two cores with them;
* the same from the files: ``extract_batch(paths, n_jobs=1)`` and ``n_jobs=2`` in pairs
  back to back, each process decoding its own images (what ``morphocell features`` /
  ``train`` / ``predict`` do);
* ``skimage+mahotas``: ``benchmarks/_skimage_pipeline.py`` — the same features computed with
  regionprops, mahotas zernike/haralick, local_binary_pattern, rgb2lab/rgb2hsv/rgb2hed +
  numpy/scipy statistics and scipy grey openings — on the first ``--n-slow`` images, on the
  same segmentation; its values are compared with morphocell's (max relative difference per
  family);
* ``cp-measure`` and ``pyradiomics`` (when installed) for the features they share, on the
  first ``--n-cp`` / ``--n-radiomics`` images and the same crops. Neither is a dependency
  of morphocell. Installed for the README run with ``pip install cp-measure`` (0.3.0; it
  pins pillow < 12) and ``pip install --no-build-isolation pyradiomics`` (the 3.1.0 sdist
  does not build in an isolated environment because its build imports numpy; built against
  the environment's numpy it installs, and reports its version as 3.0.1).

numba compile time is measured apart: a fresh subprocess times its first extraction with an
empty numba cache (compile, at the start) and another with the project's cache (cache load,
at the end, after this process has filled the cache).

Every timing is given as wall-clock images/s and as CPU-time images/s (``time.process_time``
of this process); on a shared machine the CPU rate is the one less disturbed by other jobs,
and the load average before/after each section is recorded.

Usage (from the repository root)::

    nice -n 10 python benchmarks/feature_speed.py --data ../shared/data --n 500 --out results/

Writes ``feature_speed.json`` and ``feature_speed.md`` in ``--out`` (default
``benchmarks/results``), atomically.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ---- helpers ---------------------------------------------------------------------------------

def select_images(data: Path, n: int, split: str = "train") -> list[tuple[str, str]]:
    """First ``n`` (path, label) of ``split``, one class after another in turn (classes in
    sorted order, files in csv order), so every prefix is stratified."""
    with open(data / "pbc_split.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append(str(data / r["path"]))
    classes = sorted(by)
    out, i = [], 0
    while len(out) < n and any(i < len(by[c]) for c in classes):
        for c in classes:
            if i < len(by[c]) and len(out) < n:
                out.append((by[c][i], c))
        i += 1
    return out


class Timer:
    """Wall and CPU seconds of a block, with the load average around it."""

    def __enter__(self):
        self.load0 = os.getloadavg()[0]
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0
        self.load1 = os.getloadavg()[0]

    def rates(self, n: int) -> dict:
        return {"n": n, "wall_s": self.wall, "cpu_s": self.cpu,
                "img_per_s_wall": n / self.wall, "img_per_s_cpu": n / self.cpu,
                "us_per_img_wall": 1e6 * self.wall / n, "us_per_img_cpu": 1e6 * self.cpu / n,
                "load1_before": self.load0, "load1_after": self.load1}


_COMPILE_SNIPPET = r"""
import time, json, sys
t0 = time.perf_counter()
import numpy as np
from morphocell.io import read_image
from morphocell.features.extractor import extract_array
t1 = time.perf_counter()
img = read_image(sys.argv[1])
t2 = time.perf_counter(); extract_array(img); t3 = time.perf_counter()
extract_array(img); t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2, "second_call_s": t4 - t3}))
"""


def first_call_time(path: str, empty_cache: bool) -> dict:
    """First-call time of the extraction in a fresh subprocess, with an empty numba cache
    (everything compiles) or with the project's cache (filled by this process's warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = tmp
        res = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET, path], env=env,
                             capture_output=True, text=True, timeout=1200)
    if res.returncode:
        return {"error": res.stderr[-500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- competitors -----------------------------------------------------------------------------

def cp_measure_features(crop, gray01: np.ndarray) -> int:
    """cp-measure's CellProfiler measurements for what morphocell also measures: size/shape,
    Zernike and Feret of the three regions, intensity of R, G, B in the three regions, Haralick
    texture (32 levels, scales 1, 2, 4) and granularity of the cell. Returns the number of
    values."""
    from cp_measure.bulk import get_core_measurements

    from morphocell.features import texture as tx

    m = get_core_measurements()
    lab2 = crop.nucleus.astype(np.int32) + 2 * crop.cytoplasm.astype(np.int32)
    lab1 = crop.cell.astype(np.int32)
    n = 0
    for lab in (lab2, lab1):
        if not lab.any():
            continue
        for f in ("sizeshape", "feret"):
            n += len(m[f](lab, gray01))
        n += len(m["zernike"](lab, gray01, 8))
        for ch in range(3):
            n += len(m["intensity"](lab, crop.image[..., ch] / 255.0))
        for d in tx.DISTANCES:
            n += len(m["texture"](lab, gray01, scale=d, gray_levels=tx.LEVELS))
    n += len(m["granularity"](lab1, gray01, granular_spectrum_length=tx.GRANULARITY_STEPS))
    return n


def radiomics_features(crop, extractor) -> int:
    """pyradiomics shape2D + firstorder + GLCM (bin width 8 = 32 levels, distances 1, 2, 4)
    of the grey crop, per region. Returns the number of values."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(crop.gray.astype(np.float64))
    n = 0
    for m in (crop.nucleus, crop.cytoplasm, crop.cell):
        if m.sum() < 2:
            continue
        r = extractor.execute(img, sitk.GetImageFromArray(m.astype(np.uint8)))
        n += sum(1 for k in r if not k.startswith("diagnostics"))
    return n


# ---- main ------------------------------------------------------------------------------------

def run(args) -> dict:
    from morphocell.features import color, extractor, shape, texture
    from morphocell.features.base import make_crop
    from morphocell.io import read_image
    from morphocell.segmentation import segment

    data = Path(args.data)
    sel = select_images(data, args.n)
    paths = [p for p, _ in sel]
    res: dict = {"n": len(paths), "split": "train", "selection": "first n, classes in turn",
                 "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                             "platform": platform.platform(),
                             "load1_start": os.getloadavg()[0]},
                 "nice": os.nice(0)}
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.verbose else (
        lambda *a: None)

    log("decoding", len(paths))
    with Timer() as t:
        imgs = [read_image(p) for p in paths]
    res["decode"] = t.rates(len(imgs))

    if getattr(args, "compile_empty_cache", True):
        log("first-call time, empty numba cache (subprocess)")
        res["first_call"] = {"empty_cache": first_call_time(paths[0], True)}
    else:  # e.g. benchmarks/run_all.py --quick: a full numba compile takes about a minute
        res["first_call"] = {"empty_cache": {"skipped": "not measured in this run"}}

    # ---- morphocell, one process
    names = extractor.feature_names()
    res["n_features"] = len(names)
    for im in imgs[:args.warmup]:
        extractor.extract_array(im)
    log("morphocell serial")
    mat = np.empty((len(imgs), len(names)))
    with Timer() as t:
        for i, im in enumerate(imgs):
            mat[i] = extractor.extract_array(im)[0]
    res["morphocell_serial"] = t.rates(len(imgs))
    res["morphocell_serial"]["all_nan_rows"] = int(np.isnan(mat).all(axis=1).sum())

    log("breakdown")
    with Timer() as t:
        masks = [segment(im) for im in imgs]
    res["breakdown"] = {"segmentation": t.rates(len(imgs))}
    crops = [make_crop(im, m) for im, m in zip(imgs, masks, strict=True) if m.cell.any()]
    with Timer() as t:
        crops_again = [make_crop(im, m) for im, m in zip(imgs, masks, strict=True)
                       if m.cell.any()]
    res["breakdown"]["crop"] = t.rates(len(crops_again))
    for fam, mod in (("shape", shape), ("color", color), ("texture", texture)):
        for c in crops[:args.warmup]:
            mod.compute(c)
        cs = [make_crop(c.image, _masks_of(c)) for c in crops]  # fresh (uncached gray)
        with Timer() as t:
            for c in cs:
                mod.compute(c)
        res["breakdown"][fam] = t.rates(len(cs))
    res["crop_pixels"] = {"median_crop_px": float(np.median([c.image.shape[0] * c.image.shape[1]
                                                             for c in crops])),
                          "median_cell_px": float(np.median([c.cell.sum() for c in crops]))}

    # ---- morphocell, two processes: interleaved with one-process runs of the same images, so
    # that the ratio compares runs seconds apart (the speed of a shared VM drifts over minutes)
    log("morphocell n_jobs=2, interleaved with one-process runs")
    extractor.extract_batch(imgs[:64], n_jobs=2)  # start and warm the workers
    pairs = []
    for _ in range(max(1, getattr(args, "scaling_repeats", 3))):
        with Timer() as t1:
            for im in imgs:
                extractor.extract_array(im)
        with Timer() as t:
            mat2, st2, _ = extractor.extract_batch(imgs, n_jobs=2)
        pairs.append({"serial_wall_s": t1.wall, "n_jobs_2_wall_s": t.wall,
                      "ratio": t1.wall / t.wall})
    res["morphocell_n_jobs_2"] = t.rates(len(imgs))  # the last repeat
    # CPU time of this process only (the parent); the workers' is not counted
    res["morphocell_n_jobs_2"]["cpu_note"] = "parent process only"
    res["morphocell_n_jobs_2"]["same_values_as_serial"] = bool(
        np.array_equal(mat2, mat, equal_nan=True))
    ratios = [q["ratio"] for q in pairs]
    res["n_jobs_2_pairs"] = pairs
    res["speedup_n_jobs_2_wall"] = float(np.median(ratios))

    # ---- the same from the files: each process decodes its own images, as `morphocell
    # features / train / predict` do (the arrays above are copied to the workers by the
    # parent, which shares the two cores with them)
    log("morphocell n_jobs=2 vs 1 from files, interleaved")
    extractor.extract_batch(paths[:64], n_jobs=2)
    fpairs = []
    for _ in range(max(1, getattr(args, "scaling_repeats", 3))):
        with Timer() as t1:
            matf1, _, _ = extractor.extract_batch(paths, n_jobs=1)
        with Timer() as t:
            matf2, _, _ = extractor.extract_batch(paths, n_jobs=2)
        fpairs.append({"serial_wall_s": t1.wall, "n_jobs_2_wall_s": t.wall,
                       "ratio": t1.wall / t.wall})
    res["files_n_jobs_1"] = t1.rates(len(paths))  # the last repeat
    res["files_n_jobs_2"] = t.rates(len(paths))
    res["files_n_jobs_2"]["same_values_as_serial"] = bool(
        np.array_equal(matf2, matf1, equal_nan=True) and np.array_equal(matf1, mat, equal_nan=True))
    res["files_n_jobs_2_pairs"] = fpairs
    res["speedup_n_jobs_2_files_wall"] = float(np.median([q["ratio"] for q in fpairs]))

    # ---- scikit-image + mahotas
    import _skimage_pipeline as sp

    ns = min(args.n_slow, len(crops))
    log("skimage+mahotas on", ns)
    for c in crops[:2]:
        sp.slow_features(c)
    with Timer() as t:
        slow = [sp.slow_features(make_crop(c.image, _masks_of(c))) for c in crops[:ns]]
    res["skimage_mahotas_features"] = t.rates(ns)
    with Timer() as t:
        for im in imgs[:ns]:
            m = segment(im)
            if m.cell.any():
                sp.slow_features(make_crop(im, m))
    res["skimage_mahotas_full"] = t.rates(ns)
    with Timer() as t:
        for c in crops[:ns]:
            sp.glcm_skimage(c)
    res["skimage_graycomatrix_component"] = t.rates(ns)
    res["agreement"] = _agreement(slow, crops[:ns], (shape, color, texture))

    # morphocell features-only rate on the same crops (for the features-only ratio)
    with Timer() as t:
        for c in crops[:ns]:
            cc = make_crop(c.image, _masks_of(c))
            for mod in (shape, color, texture):
                mod.compute(cc)
    res["morphocell_features_same_subset"] = t.rates(ns)

    # ---- cp-measure and pyradiomics
    res["cp_measure"] = _competitor("cp_measure", "cp-measure", args.n_cp, crops, log,
                                    lambda c: cp_measure_features(c, c.gray / 255.0))
    try:
        import logging

        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)
        ex = featureextractor.RadiomicsFeatureExtractor(
            force2D=True, binWidth=8, distances=list(texture.DISTANCES), label=1)
        ex.disableAllFeatures()
        for cls in ("shape2D", "firstorder", "glcm"):
            ex.enableFeatureClassByName(cls)
        res["pyradiomics"] = _competitor("radiomics", "pyradiomics", args.n_radiomics, crops,
                                         log, lambda c: radiomics_features(c, ex))
    except ImportError as exc:
        res["pyradiomics"] = {"error": f"not installed: {exc}"}

    log("first-call time, warm numba cache (subprocess)")
    res["first_call"]["warm_cache"] = first_call_time(paths[0], False)

    ser = res["morphocell_serial"]
    res["summary"] = {
        "morphocell_img_per_s_wall": ser["img_per_s_wall"],
        "morphocell_img_per_s_cpu": ser["img_per_s_cpu"],
        "n_jobs_2_speedup_wall": res["speedup_n_jobs_2_wall"],
        "n_jobs_2_files_speedup_wall": res["speedup_n_jobs_2_files_wall"],
        "speedup_vs_skimage_full_cpu": (res["skimage_mahotas_full"]["cpu_s"] / ns)
        / (ser["cpu_s"] / ser["n"]),
        "speedup_vs_skimage_features_cpu": res["skimage_mahotas_features"]["cpu_s"]
        / res["morphocell_features_same_subset"]["cpu_s"],
        "color_us_per_img_cpu": res["breakdown"]["color"]["us_per_img_cpu"],
        "targets": {"img_per_s": 300, "speedup_vs_skimage": 15, "n_jobs_2": 1.8},
    }
    res["machine"]["load1_end"] = os.getloadavg()[0]
    return res


def _masks_of(crop):
    from morphocell.segmentation.masks import CellMasks

    return CellMasks(crop.nucleus, crop.cytoplasm)


def _competitor(module, dist, n, crops, log, fn) -> dict:
    try:
        __import__(module)
    except ImportError as exc:
        return {"error": f"not installed: {exc}"}
    n = min(n, len(crops))
    if n < 1:
        return {"error": "skipped (0 images asked for)"}
    log(dist, "on", n)
    try:
        fn(crops[0])  # warm-up (imports, numba in cp-measure)
        counts = []
        with Timer() as t:
            for c in crops[:n]:
                counts.append(fn(c))
    except Exception as exc:  # a competitor failing must not hide the other numbers
        return {"error": f"{type(exc).__name__}: {exc}"}
    out = t.rates(n)
    out["values_per_img"] = float(np.mean(counts))
    try:
        from importlib.metadata import version

        out["version"] = version(dist)
    except Exception:
        pass
    return out


def _agreement(slow, crops, mods) -> dict:
    """Max relative difference |a - b| / max(1, |b|) per family between the slow pipeline
    and morphocell on the same crops (NaN on both sides counts as agreement)."""
    fam: dict[str, dict] = {}
    for s, c in zip(slow, crops, strict=True):
        mine = {}
        for mod in mods:
            mine.update(mod.compute(c))
        for k, v in s.items():
            f = k.split("_")[1]
            a = mine[k]
            if np.isnan(a) and np.isnan(v):
                e = 0.0
            else:
                e = abs(a - v) / max(1.0, abs(v))
                if np.isnan(e):
                    e = float("inf")
            d = fam.setdefault(f, {"n_values": 0, "max_rel_diff": 0.0, "worst": ""})
            d["n_values"] += 1
            if e > d["max_rel_diff"]:
                d["max_rel_diff"], d["worst"] = float(e), k
    return fam


def to_markdown(r: dict) -> str:
    def row(name, d, note="", cpu=True):
        if "error" in d:
            return f"| {name} | - | - | - | - | {d['error']} |"
        if not cpu:  # the workers' CPU time is not this process's
            return (f"| {name} | {d['n']} | {d['img_per_s_wall']:.1f} | n/a | n/a | {note} |")
        return (f"| {name} | {d['n']} | {d['img_per_s_wall']:.1f} | {d['img_per_s_cpu']:.1f} | "
                f"{d['us_per_img_cpu']:.0f} | {note} |")

    s = r["summary"]
    fc = r["first_call"]
    pair_ratios = ", ".join(f"{q['ratio']:.2f}" for q in r.get("n_jobs_2_pairs", []))
    file_ratios = ", ".join(f"{q['ratio']:.2f}" for q in r.get("files_n_jobs_2_pairs", []))
    lines = [
        "# Feature-extraction speed", "",
        f"{r['n']} PBC images ({r['selection']} of the {r['split']} split), decoded once, one "
        f"process; {r['n_features']} features per image. Machine: {r['machine']['cpu_count']} "
        f"CPUs, Python {r['machine']['python']}, load average {r['machine']['load1_start']:.2f}"
        f" at start, {r['machine']['load1_end']:.2f} at end (shared machine: the CPU-time rate "
        "is the less disturbed one).", "",
        "| pipeline | images | img/s (wall) | img/s (CPU) | us/img (CPU) | note |",
        "|---|---|---|---|---|---|",
        row("decode (PIL, read_image)", r["decode"]),
        row("**morphocell full** (segmentation + shape + colour + texture)",
            r["morphocell_serial"]),
        row("morphocell full, n_jobs=2", r["morphocell_n_jobs_2"],
            f"speed-up {s['n_jobs_2_speedup_wall']:.2f}x (wall; median of {pair_ratios} in "
            "runs back to back with one process); same values as serial: "
            f"{r['morphocell_n_jobs_2']['same_values_as_serial']}", cpu=False),
        row("morphocell from files (decode + full), n_jobs=1", r["files_n_jobs_1"],
            "extract_batch(paths)"),
        row("morphocell from files (decode + full), n_jobs=2", r["files_n_jobs_2"],
            f"speed-up {s['n_jobs_2_files_speedup_wall']:.2f}x (wall; median of {file_ratios} "
            "in runs back to back with n_jobs=1); same values: "
            f"{r['files_n_jobs_2']['same_values_as_serial']}", cpu=False),
        row("morphocell: segmentation", r["breakdown"]["segmentation"]),
        row("morphocell: crop", r["breakdown"]["crop"]),
        row("morphocell: shape family", r["breakdown"]["shape"]),
        row("morphocell: colour family", r["breakdown"]["color"]),
        row("morphocell: texture family", r["breakdown"]["texture"]),
        row("morphocell: 3 families, same subset as skimage",
            r["morphocell_features_same_subset"]),
        row("skimage+mahotas: features", r["skimage_mahotas_features"]),
        row("skimage+mahotas: segmentation + features", r["skimage_mahotas_full"]),
        row("skimage graycomatrix/graycoprops (4 GLCM props only)",
            r["skimage_graycomatrix_component"]),
        row("cp-measure (shared measurements)", r["cp_measure"],
            f"{r['cp_measure'].get('values_per_img', 0):.0f} values/img; "
            f"v{r['cp_measure'].get('version', '?')}"),
        row("pyradiomics (shape2D + firstorder + GLCM, grey)", r["pyradiomics"],
            f"{r['pyradiomics'].get('values_per_img', 0):.0f} values/img; "
            f"v{r['pyradiomics'].get('version', '?')}"),
        "",
        f"* speed-up over scikit-image + mahotas (CPU time): full pipeline "
        f"{s['speedup_vs_skimage_full_cpu']:.1f}x, features only "
        f"{s['speedup_vs_skimage_features_cpu']:.1f}x (target 15x);",
        f"* morphocell one process: {s['morphocell_img_per_s_wall']:.0f} img/s wall, "
        f"{s['morphocell_img_per_s_cpu']:.0f} img/s CPU (target 300);",
        f"* n_jobs=2 over n_jobs=1: {s['n_jobs_2_files_speedup_wall']:.2f}x from the files "
        f"(each worker decodes its images), {s['n_jobs_2_speedup_wall']:.2f}x on decoded arrays "
        "handed to the workers (target 1.8x);",
        f"* colour family: {s['color_us_per_img_cpu']:.0f} us/image (CPU), median crop "
        f"{r['crop_pixels']['median_crop_px']:.0f} px, median cell "
        f"{r['crop_pixels']['median_cell_px']:.0f} px;",
    ]
    for key in ("empty_cache", "warm_cache"):
        d = fc.get(key, {})
        if "skipped" in d:
            lines.append(f"* first call, {key.replace('_', ' ')}: {d['skipped']}")
        elif "error" in d:
            lines.append(f"* first call, {key}: failed ({d['error'][-200:]})")
        else:
            lines.append(f"* first call in a fresh process, {key.replace('_', ' ')}: "
                         f"{d['first_call_s']:.2f} s (import {d['import_s']:.2f} s, second "
                         f"call {1e3 * d['second_call_s']:.1f} ms)")
    lines += ["", "Agreement of the scikit-image + mahotas pipeline with morphocell "
              "(max |a-b| / max(1, |b|)):", "", "| family | values compared | max rel. diff | "
              "worst feature |", "|---|---|---|---|"]
    for f, d in r["agreement"].items():
        lines.append(f"| {f} | {d['n_values']} | {d['max_rel_diff']:.2e} | {d['worst']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA",
                                                     str(REPO.parent / "shared" / "data")))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-slow", type=int, default=100,
                    help="images for the scikit-image + mahotas pipeline")
    ap.add_argument("--n-cp", type=int, default=30, help="images for cp-measure")
    ap.add_argument("--n-radiomics", type=int, default=30, help="images for pyradiomics")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--scaling-repeats", type=int, default=3,
                    help="one-process / n_jobs=2 pairs run back to back (median ratio reported)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    from morphocell._utils import atomic_write

    res = run(args)
    out = Path(args.out)
    with atomic_write(out / "feature_speed.json", "w") as fh:
        json.dump(res, fh, indent=2)
    md = to_markdown(res)
    with atomic_write(out / "feature_speed.md", "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
