"""White-cell detection in whole smear fields against the BCCD boxes.

For every BCCD field (640 x 480, Pascal VOC boxes of RBC / WBC / platelets), the boxes of
:func:`morphocell.segmentation.detect.find_white_cells` are matched one-to-one, greedily by
IoU, to the annotated WBC boxes; a match needs IoU >= ``--iou`` (0.5, the VOC rule).
Reported: true / false positives, misses, precision, recall, the mean IoU of the matches and
fields/s (one process, after a warm-up, decoding excluded).

The detector's parameters were chosen on the even-numbered fields; report on the odd ones::

    python benchmarks/detect_bccd.py --data ../shared/data/bccd --ids odd

Writes ``detect_bccd.json`` in ``--out`` (default ``benchmarks/results``), atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wbc_boxes(xml_path: Path) -> list[tuple[float, float, float, float]]:
    """The WBC boxes of one VOC annotation, ``(xmin, ymin, xmax, ymax)``."""
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.findall("object"):
        if (obj.findtext("name") or "").strip() != "WBC":
            continue
        bb = obj.find("bndbox")
        out.append(tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth, found, thr: float) -> tuple[int, int, int, list[float]]:
    """Greedy one-to-one matching by decreasing IoU: (tp, fp, fn, IoUs of the matches)."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
                   reverse=True)
    used_t, used_f, ious = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        ious.append(v)
    return len(ious), len(found) - len(ious), len(truth) - len(ious), ious


def main(argv=None) -> int:
    import numpy as np

    from morphocell._utils import atomic_write
    from morphocell.io import read_image
    from morphocell.segmentation.detect import find_white_cells

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get(
        "MORPHOCELL_DATA", str(REPO.parent / "shared" / "data")), "bccd"))
    ap.add_argument("--ids", default="odd", choices=["odd", "even", "all"])
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    data = Path(args.data)
    fields = []
    for xml in sorted((data / "annotations").glob("*.xml")):
        k = int(xml.stem.rsplit("_", 1)[1])
        if args.ids != "all" and k % 2 != (1 if args.ids == "odd" else 0):
            continue
        img = data / "images" / f"{xml.stem}.jpg"
        if img.exists():
            fields.append((xml.stem, read_image(img), wbc_boxes(xml)))
    if not fields:
        raise SystemExit(f"no BCCD fields under {data}")
    find_white_cells(fields[0][1])  # warm-up (numba kernels)
    tp = fp = fn = 0
    ious: list[float] = []
    t0 = time.perf_counter()
    found_all = [find_white_cells(img) for _, img, _ in fields]
    dt = time.perf_counter() - t0
    per_field = []
    for (name, _, truth), found in zip(fields, found_all, strict=True):
        a, b, c, v = match(truth, [tuple(x[:4]) for x in found], args.iou)
        tp, fp, fn = tp + a, fp + b, fn + c
        ious += v
        per_field.append({"field": name, "wbc": len(truth), "found": len(found), "tp": a})
    res = {"ids": args.ids, "fields": len(fields), "wbc_boxes": tp + fn, "iou_threshold": args.iou,
           "tp": tp, "fp": fp, "fn": fn,
           "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
           "mean_iou_of_matches": float(np.mean(ious)) if ious else float("nan"),
           "fields_per_s": len(fields) / dt, "per_field": per_field}
    print(f"BCCD {args.ids} fields: {len(fields)}, WBC boxes {tp + fn}; found {tp + fp}: "
          f"TP {tp}, FP {fp}, FN {fn}; precision {res['precision']:.3f}, recall "
          f"{res['recall']:.3f} (IoU >= {args.iou}); mean IoU of matches "
          f"{res['mean_iou_of_matches']:.3f}; {res['fields_per_s']:.1f} fields/s (one process)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "detect_bccd.json", "w") as fh:
        json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
