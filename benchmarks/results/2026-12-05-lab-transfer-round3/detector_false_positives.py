import sys, numpy as np, cv2
sys.path.insert(0, "benchmarks")
from pathlib import Path
import detect_bccd as DB
from morphocell.io import read_image
from morphocell.segmentation.detect import DetectParams
from morphocell.segmentation.otsu import _background, _components, _lut, _norm8, multi_otsu3, nucleus_score, shrink
D = Path("/work/shared/data/bccd")
p = DetectParams()
rows = []
parity = int(sys.argv[1]) if len(sys.argv) > 1 else 0
for x in sorted((D/"annotations").glob("*.xml")):
    n = int(x.stem.split("_")[-1])
    if n % 2 != parity: continue
    image = read_image(D/"images"/(x.stem+".jpg"))
    gt = DB.wbc_boxes(x)
    H, W = image.shape[:2]
    img, f = shrink(image, p.work_side); h, w = img.shape[:2]
    ksize = 2 * int(round(2 * p.sigma)) + 1
    bg = _background(img, p.bg_quantile, step=1)
    od = -np.log10(np.clip(img.astype(float), 1, None) / np.maximum(bg, 1))
    od8 = cv2.GaussianBlur(cv2.LUT(img, _lut(bg, p.od_max)), (ksize, ksize), p.sigma)
    n8 = nucleus_score(img, _norm8(od8.astype(np.float32).sum(axis=2)), p.sigma)
    _, t2 = multi_otsu3(n8)
    _, lab, area = _components((n8 > t2).astype(np.uint8))
    keep = area >= max(4, p.min_nucleus_fraction * h * w); keep[0] = False
    nuc = keep[lab].astype(np.uint8)
    r = max(1, int(round(p.merge_distance * np.sqrt(h * w))))
    grown = cv2.dilate(nuc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ng, glab = cv2.connectedComponents(grown, connectivity=8)
    for g in range(1, ng):
        m = (glab == g) & (nuc > 0)
        ys, xs = np.nonzero(m)
        if len(xs) == 0: continue
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        half = max(x1 - x0, y1 - y0) / 2.0 + p.margin * 2.0 * np.sqrt(len(xs) / np.pi)
        bb = (max(0, (cx-half)*f), max(0, (cy-half)*f), min(W, (cx+half)*f), min(H, (cy+half)*f))
        best = max([DB.iou(bb, q) for q in gt] or [0])
        o = od[m]
        rg = np.median(o[:, 0] / np.maximum(o[:, 1], 1e-3))
        bgr = np.median(o[:, 2] / np.maximum(o[:, 1], 1e-3))
        rows.append((x.stem, best >= 0.5, round(best, 2), round(float(rg), 3), round(float(bgr), 3), len(xs)))
import collections
for ok in (True, False):
    v = np.array([r[3] for r in rows if r[1] == ok]); b = np.array([r[4] for r in rows if r[1] == ok])
    print("TP" if ok else "FP", len(v), "R/G quantiles", np.round(np.quantile(v, [0, .01, .05, .5]), 3), "B/G", np.round(np.quantile(b, [0, .05, .5, .95, 1]), 3))
for r in rows:
    if not r[1]: print(r)
for r in sorted(rows, key=lambda r: r[3])[:12]: print(r)
