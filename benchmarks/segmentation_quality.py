"""Segmentation quality against the segwbc expert masks, and segmentation speed.

Usage::

    python benchmarks/segmentation_quality.py --data ../shared/data/segwbc \\
        [--method otsu|unet] [--model WEIGHTS] [--tta] [--refine auto|on|off]
        [--out results/seg.json]

For each dataset folder (``dataset1``, ``dataset2``: ``NNN_image.png`` + ``NNN_mask.png``,
masks 0 background / 128 cytoplasm / 255 nucleus) every image is segmented with
:func:`morphocell.segment` and compared with the expert mask: Dice ``2|P∩R|/(|P|+|R|)``
and IoU ``|P∩R|/|P∪R|`` for nucleus, cytoplasm and whole cell (nucleus | cytoplasm).
Scores are summarised (mean, median) over three id subsets:

* ``all``     every image;
* ``tuning``  even-numbered ids (the only ones the otsu defaults were tuned on);
* ``heldout`` odd-numbered ids (never looked at while tuning).

Speed: the first call (numba compilation, imports) is timed apart as ``first_call_s``;
then every image is segmented ``--repeat`` more times, each call timed alone
(``time.perf_counter``); an image's time is the fastest of its repeats (the least
disturbed by other processes on a shared machine), giving ``ms_per_image`` (mean and
median over images; image already in memory, reading excluded).
The JSON is written atomically (:func:`morphocell._utils.atomic_write`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from morphocell._utils import atomic_write
from morphocell.io import read_image
from morphocell.segmentation import CellMasks, segment
from morphocell.segmentation.metrics import region_scores

REPO = Path(__file__).resolve().parents[1]

REGIONS = ("nucleus", "cytoplasm", "cell")
SUBSETS = ("all", "tuning", "heldout")
_ID = re.compile(r"^(\d+)_image\.png$")


def list_pairs(folder: Path) -> list[tuple[int, Path, Path]]:
    """``(id, image path, mask path)`` for every ``NNN_image.png`` with a mask."""
    out = []
    for p in sorted(folder.iterdir()):
        m = _ID.match(p.name)
        if m:
            mask = p.with_name(f"{m.group(1)}_mask.png")
            if mask.is_file():
                out.append((int(m.group(1)), p, mask))
    return out


def load_reference(path: Path) -> CellMasks:
    from PIL import Image

    return CellMasks.from_label_image(np.asarray(Image.open(path)))


def summarise(rows: list[dict], subset: str) -> dict:
    sel = [r for r in rows if subset == "all" or (r["id"] % 2 == 0) == (subset == "tuning")]
    out: dict = {"n": len(sel)}
    for region in REGIONS:
        for metric in ("dice", "iou"):
            v = np.array([r[f"{region}_{metric}"] for r in sel], dtype=np.float64)
            out[f"{region}_{metric}_mean"] = float(v.mean()) if len(v) else float("nan")
            out[f"{region}_{metric}_median"] = float(np.median(v)) if len(v) else float("nan")
    out["not_found"] = int(sum(not r["found"] for r in sel))
    return out


def evaluate_dataset(folder: Path, method: str, model: str | None, repeat: int = 3,
                     tta: bool = False, refine: str = "auto") -> dict:
    pairs = list_pairs(folder)
    if not pairs:
        raise SystemExit(f"error: no NNN_image.png / NNN_mask.png pairs in {folder}")
    kw = {"model": model} if model else {}
    if tta:
        kw["tta"] = True
    if method == "unet":
        kw["refine"] = {"auto": "auto", "on": True, "off": False}[refine]
    images = [read_image(p) for _, p, _ in pairs]
    refs = [load_reference(m) for _, _, m in pairs]
    t0 = time.perf_counter()
    segment(images[0], method=method, **kw)
    first = time.perf_counter() - t0
    rows, times = [], []
    for (i, p, _), img, ref in zip(pairs, images, refs):
        best = float("inf")
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            pred = segment(img, method=method, **kw)
            best = min(best, time.perf_counter() - t)
        times.append(best)
        row = {"id": i, "file": p.name, "found": bool(pred.found)}
        row.update(region_scores(pred, ref))
        rows.append(row)
    shapes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    ms = np.array(times) * 1000.0
    return {
        "folder": str(folder),
        "n_images": len(pairs),
        "image_sizes": shapes,
        "first_call_s": first,
        "ms_per_image_mean": float(ms.mean()),
        "ms_per_image_median": float(np.median(ms)),
        "summary": {s: summarise(rows, s) for s in SUBSETS},
        "per_image": rows,
    }


def time_pbc(folder: Path, method: str, model: str | None, per_class: int,
             repeat: int) -> dict:
    """Speed on PBC images (256 x 256, the feature-extraction hot path): the first
    ``per_class`` files (sorted) of every class folder; per image the fastest of
    ``repeat`` timed calls after one warm-up call."""
    kw = {"model": model} if model else {}
    paths = []
    for cls in sorted(d for d in folder.iterdir() if d.is_dir()):
        paths += sorted(cls.glob("*.jpg"))[:per_class]
    if not paths:
        raise SystemExit(f"error: no class folders with .jpg files in {folder}")
    images = [read_image(p) for p in paths]
    t0 = time.perf_counter()
    segment(images[0], method=method, **kw)
    first = time.perf_counter() - t0
    best = []
    found = 0
    for img in images:
        b = float("inf")
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            m = segment(img, method=method, **kw)
            b = min(b, time.perf_counter() - t)
        best.append(b)
        found += m.found
    ms = np.array(best) * 1000.0
    return {"folder": str(folder), "n_images": len(images), "first_call_s": first,
            "ms_per_image_mean": float(ms.mean()), "ms_per_image_median": float(np.median(ms)),
            "ms_per_image_p90": float(np.percentile(ms, 90)),
            "images_per_s": float(1000.0 / ms.mean()), "found": int(found)}


def format_table(results: dict) -> str:
    lines = []
    head = f"{'dataset':10s} {'subset':8s} {'n':>4s} " + " ".join(
        f"{r + ' ' + k:>17s}" for r in REGIONS for k in ("Dice mean/med",)) + \
        f" {'cell IoU mean':>14s} {'ms/img':>7s}"
    lines.append(head)
    lines.append("-" * len(head))
    for name, res in results["datasets"].items():
        for s in SUBSETS:
            sm = res["summary"][s]
            cells = " ".join(
                f"{sm[f'{r}_dice_mean']:8.4f}/{sm[f'{r}_dice_median']:.3f}" for r in REGIONS)
            ms = f"{res['ms_per_image_mean']:7.2f}" if s == "all" else " " * 7
            lines.append(f"{name:10s} {s:8s} {sm['n']:4d} {cells} {sm['cell_iou_mean']:14.4f} {ms}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("MORPHOCELL_DATA_SEGWBC",
                                                     str(REPO.parent / "shared/data/segwbc")),
                    help="segwbc folder holding dataset1/, dataset2/ (default: ../shared/data/segwbc)")
    ap.add_argument("--method", default="otsu", choices=["otsu", "unet"])
    ap.add_argument("--model", default=None, help="weights file (method unet)")
    ap.add_argument("--tta", action="store_true",
                    help="method unet: average over the 8 rotations/flips")
    ap.add_argument("--refine", default="auto", choices=["auto", "on", "off"],
                    help="method unet: nucleus boundary re-decided at the image's resolution "
                    "(default auto: images >= 1.5x the network input)")
    ap.add_argument("--datasets", default="dataset1,dataset2",
                    help="comma-separated sub-folders to evaluate")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed calls per image; the fastest counts (default 3)")
    ap.add_argument("--pbc", default=None,
                    help="PBC folder of class sub-folders: also time 256x256 images there")
    ap.add_argument("--pbc-per-class", type=int, default=25,
                    help="images per PBC class for the timing (default 25)")
    ap.add_argument("--out", default=None, help="JSON file to write (atomically)")
    args = ap.parse_args(argv)

    data = Path(args.data)
    results = {"method": args.method, "repeat": args.repeat, "model": args.model,
               "tta": args.tta, "refine": args.refine, "data": str(data),
               "python": platform.python_version(), "machine": platform.machine(),
               "cpu_count": os.cpu_count(),
               "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
               "datasets": {}}
    for name in args.datasets.split(","):
        folder = data / name
        if not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
        results["datasets"][name] = evaluate_dataset(folder, args.method, args.model,
                                                     args.repeat, tta=args.tta,
                                                     refine=args.refine)
    if args.pbc:
        results["pbc_timing"] = time_pbc(Path(args.pbc), args.method, args.model,
                                         args.pbc_per_class, args.repeat)
    print(f"method={args.method}  (tuning = even ids, heldout = odd ids; Dice mean/median)")
    print(format_table(results))
    if args.pbc:
        t = results["pbc_timing"]
        print(f"PBC 256x256 timing: {t['n_images']} images, {t['ms_per_image_mean']:.2f} ms/image "
              f"mean, {t['ms_per_image_median']:.2f} median, {t['ms_per_image_p90']:.2f} p90 "
              f"(fastest of {args.repeat} per image; first call {t['first_call_s']:.2f} s); "
              f"found {t['found']}/{t['n_images']}")
    if args.out:
        with atomic_write(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
