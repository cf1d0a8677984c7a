"""Slow, obviously-correct plain-numpy versions of morphocell's kernels, for tests only.

Each function says which morphocell function it checks. Keep them simple and readable:
loops are fine here; speed is not the point.
"""
from __future__ import annotations

import numpy as np

# ---- segmentation ------------------------------------------------------------------------
# Checks the compiled mask helpers of morphocell.segmentation (otsu and its _kernels) against
# OpenCV / numpy.


def seg_component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """uint8: the 8-connected components of ``mask`` that touch ``seed``
    (``cv2.connectedComponents``)."""
    import cv2

    n, lab = cv2.connectedComponents(np.ascontiguousarray(mask, np.uint8), connectivity=8)
    keep = np.bincount(lab[np.asarray(seed) > 0], minlength=n) > 0
    keep[0] = False
    return keep[lab].astype(np.uint8)


def seg_fill_holes(mask: np.ndarray) -> np.ndarray:
    """uint8: ``mask`` with its holes filled (``cv2.floodFill`` of the zero-padded mask from
    a corner; the background is 4-connected)."""
    import cv2

    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    cv2.floodFill(pad, None, (0, 0), 2)
    return (pad[1:-1, 1:-1] != 2).astype(np.uint8)


# ---- shape -------------------------------------------------------------------------------
# Checks morphocell.features.shape (radii, FeretMin/FeretMax, curvature, LobeCount): slow
# versions built from scipy / scikit-image / numpy primitives, one obvious step at a time.


def shape_border_pixels(mask: np.ndarray) -> np.ndarray:
    """(n, 2) (row, col) of the pixels of ``mask`` with a 4-neighbour outside it."""
    import scipy.ndimage as ndi

    cross = ndi.generate_binary_structure(2, 1)
    eroded = ndi.binary_erosion(mask, cross, border_value=0)
    return np.argwhere(mask & ~eroded)


def shape_radii(mask: np.ndarray) -> list[float]:
    """RadiusMin/Max/Mean/Std: distances from the centroid to the border-pixel centres."""
    centroid = np.argwhere(mask).mean(axis=0)
    d = np.linalg.norm(shape_border_pixels(mask) - centroid, axis=1)
    return [d.min(), d.max(), d.mean(), d.std()]


def shape_feret(mask: np.ndarray) -> tuple[float, float]:
    """(FeretMax, FeretMin) on the crack points of scikit-image's convex hull image: the
    midpoints between each convex-image pixel and its 4-neighbours outside it; min width
    by brute force over every edge of their convex hull and every point."""
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist
    from skimage.morphology import convex_hull_image

    conv = np.pad(convex_hull_image(mask), 1)
    pts = []
    for r, c in np.argwhere(conv):
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if not conv[r + dr, c + dc]:
                pts.append((r + dr / 2.0, c + dc / 2.0))
    pts = np.array(pts)
    fmax = float(pdist(pts).max()) if len(pts) > 1 else 0.0
    hull = pts[ConvexHull(pts).vertices]
    widths = []
    for i in range(len(hull)):
        a, b = hull[i], hull[(i + 1) % len(hull)]
        e = b - a
        dist = np.abs(e[0] * (pts[:, 1] - a[1]) - e[1] * (pts[:, 0] - a[0])) / np.hypot(*e)
        widths.append(dist.max())
    return fmax, float(min(widths))


def shape_contour_curvature(points: np.ndarray, step: float, sigma: float):
    """Curvature of a closed contour (x, y): resample every ``step`` px of arc length
    (``M = max(round(L/step), 3)`` points, ``np.interp``), circular Gaussian smoothing
    (sigma px, truncated at 4 sigma, renormalised), central differences. Sign so that the
    total turning is positive. Returns ``(kappa, ds, L)``."""
    p = np.asarray(points, dtype=np.float64)
    closed = np.vstack([p, p[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    L = cum[-1]
    m = max(int(np.round(L / step)), 3)
    ds = L / m
    s = np.arange(m) * ds
    x = np.interp(s, cum, closed[:, 0])
    y = np.interp(s, cum, closed[:, 1])
    sg = sigma / ds
    half = int(np.ceil(4 * sg))
    w = np.exp(-0.5 * ((np.arange(2 * half + 1) - half) / sg) ** 2)
    w /= w.sum()
    xs = np.array([sum(w[i] * x[(k + i - half) % m] for i in range(len(w))) for k in range(m)])
    ys = np.array([sum(w[i] * y[(k + i - half) % m] for i in range(len(w))) for k in range(m)])
    dx = (np.roll(xs, -1) - np.roll(xs, 1)) / (2 * ds)
    dy = (np.roll(ys, -1) - np.roll(ys, 1)) / (2 * ds)
    ddx = (np.roll(xs, -1) - 2 * xs + np.roll(xs, 1)) / ds ** 2
    ddy = (np.roll(ys, -1) - 2 * ys + np.roll(ys, 1)) / ds ** 2
    kappa = (dx * ddy - dy * ddx) / np.maximum(dx * dx + dy * dy, 0.01) ** 1.5
    if kappa.sum() < 0:
        kappa = -kappa
    return kappa, ds, L


def shape_curvature_stats(mask: np.ndarray, step: float, sigma: float,
                          min_length: float) -> list[float]:
    """CurvatureMean, Std, Min, Max, ConcaveFraction, BendingEnergy over the outer contours
    (cv2.findContours, RETR_EXTERNAL, CHAIN_APPROX_NONE) at least ``min_length`` long, each
    started at its point farthest from the mean of its points."""
    import cv2

    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    ks, dss, be, lens = [], [], [], []
    for c in cs:
        p = c[:, 0, :].astype(np.float64)
        if np.hypot(*np.diff(np.vstack([p, p[:1]]), axis=0).T).sum() < min_length:
            continue
        start = np.argmax(((p - p.mean(axis=0)) ** 2).sum(axis=1))  # farthest from the mean
        k, ds, L = shape_contour_curvature(np.roll(p, -start, axis=0), step, sigma)
        ks.append(k)
        dss.append(np.full(k.size, ds))
        be.append(L * np.sum(k ** 2 * ds) / (4 * np.pi ** 2))
        lens.append(L)
    if not ks:
        return [np.nan] * 6
    k, ds = np.concatenate(ks), np.concatenate(dss)
    mean = np.sum(k * ds) / ds.sum()
    std = np.sqrt(np.sum((k - mean) ** 2 * ds) / ds.sum())
    return [mean, std, k.min(), k.max(), ds[k < 0].sum() / ds.sum(),
            np.average(be, weights=lens)]


def shape_lobe_count_dynamics(mask: np.ndarray, rel: float, min_persistence: float) -> int:
    """LobeCount by mathematical morphology (independent of the union-find kernel): the
    maxima of the EDT whose dynamic (= persistence) exceeds ``h`` are the regional maxima of
    the h-maxima transform ``reconstruction(edt - h, edt)`` (8-connectivity). Equal to
    :func:`shape_lobe_count` except for a maximum whose persistence equals ``h`` exactly."""
    import scipy.ndimage as ndi
    from skimage.morphology import local_maxima, reconstruction

    dt = ndi.distance_transform_edt(np.pad(mask, 1))
    h = max(min_persistence, rel * dt.max())
    rec = reconstruction(dt - h, dt, method="dilation", footprint=np.ones((3, 3)))
    peaks = local_maxima(rec, connectivity=2) & (dt > 0)
    return int(ndi.label(peaks, structure=np.ones((3, 3)))[1])


def shape_lobe_count(mask: np.ndarray, rel: float, min_persistence: float) -> int:
    """LobeCount by brute force: label the superlevel sets ``{edt >= v}`` (8-connectivity)
    for every distance value ``v`` from the top down; each component is represented by its
    eldest pixel (largest distance, then first in raster order); when components merge the
    younger representatives die with persistence ``birth - v``; survivors have persistence
    = birth. Count persistences ``>= max(min_persistence, rel * max edt)``."""
    import scipy.ndimage as ndi

    dt = ndi.distance_transform_edt(np.pad(mask, 1))
    flat = dt.ravel()
    rank = np.empty(flat.size, np.int64)  # age order: larger distance first, then raster
    order = np.lexsort((np.arange(flat.size), -flat))
    rank[order] = np.arange(flat.size)
    alive: dict[int, float] = {}  # representative raster index -> birth
    pers = []
    for v in np.unique(flat[flat > 0])[::-1]:
        lab, n = ndi.label(dt >= v, structure=np.ones((3, 3)))
        labf = lab.ravel()
        by_comp: dict[int, list[int]] = {}
        for i in alive:
            by_comp.setdefault(int(labf[i]), []).append(i)
        eldest = ndi.minimum(rank.reshape(lab.shape), lab, index=np.arange(1, n + 1))
        for comp in range(1, n + 1):
            reps = by_comp.get(comp)
            if not reps:  # a new component: born at its eldest pixel
                i = int(order[int(eldest[comp - 1])])
                alive[i] = flat[i]
                continue
            reps.sort(key=lambda i: rank[i])
            for young in reps[1:]:
                pers.append(alive.pop(young) - v)
    pers += list(alive.values())
    thr = max(min_persistence, rel * dt.max())
    return int(sum(p >= thr for p in pers))


# ---- color -------------------------------------------------------------------------------
# Checks morphocell.features.color.color_stats / compute: per-pixel values straight from
# scikit-image, statistics straight from numpy / scipy.stats, hue by scipy.stats.circmean.


def color_channels(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every colour channel of an (n, 3) uint8 pixel list, computed by scikit-image."""
    import skimage.color as skc

    rgb = pixels.astype(np.float64)
    hsv = skc.rgb2hsv(pixels[None])[0]
    lab = skc.rgb2lab(pixels[None])[0]
    hed = skc.rgb2hed(pixels[None])[0]
    od = -np.log10((rgb + 1.0) / 256.0)
    return {"R": rgb[:, 0], "G": rgb[:, 1], "B": rgb[:, 2], "V": hsv[:, 2],
            "OdR": od[:, 0], "OdG": od[:, 1], "OdB": od[:, 2], "H": hsv[:, 0], "S": hsv[:, 1],
            "LabL": lab[:, 0], "LabA": lab[:, 1], "LabB": lab[:, 2],
            "Hem": hed[:, 0], "Eos": hed[:, 1], "Res": hed[:, 2]}


def color_linear_stats(x: np.ndarray) -> list[float]:
    """Mean, Std, Median, P10, P90, Skewness, Kurtosis of a real sample (numpy/scipy)."""
    import scipy.stats as ss

    return [x.mean(), x.std(), np.percentile(x, 50), np.percentile(x, 10), np.percentile(x, 90),
            ss.skew(x), ss.kurtosis(x)]


def color_hue_stats(h: np.ndarray) -> tuple[list[float], float]:
    """Hue statistics as documented in morphocell.features.color, plus the mean resultant
    length: unwrap around scipy's circular mean, location statistics mod 1."""
    import scipy.stats as ss

    mu = ss.circmean(h, high=1.0, low=0.0)
    d = h - mu
    u = mu + (d - np.floor(d + 0.5))
    st = color_linear_stats(u)
    out = [mu, st[1], st[2] % 1.0, st[3] % 1.0, st[4] % 1.0, st[5], st[6]]
    resultant = float(np.hypot(np.sin(2 * np.pi * h).sum(), np.cos(2 * np.pi * h).sum())
                      / h.size)
    return out, resultant


def color_region_stats(image: np.ndarray, mask: np.ndarray, channels) -> tuple[np.ndarray,
                                                                                 float]:
    """(len(channels), 7) statistics and hue resultant of the pixels of ``mask``; NaN if empty."""
    if not mask.any():
        return np.full((len(channels), 7), np.nan), np.nan
    ch = color_channels(image[mask])
    out = np.empty((len(channels), 7))
    res = np.nan
    for i, c in enumerate(channels):
        if c == "H":
            st, res = color_hue_stats(ch["H"])
            out[i] = st
        else:
            out[i] = color_linear_stats(ch[c])
    return out, res


# ---- texture -----------------------------------------------------------------------------
# Checks morphocell.features.texture (GLCM/Haralick, uniform LBP, granularity).

def texture_haralick_mahotas(q: np.ndarray, mask: np.ndarray, distance: int) -> np.ndarray:
    """13 Haralick features of the pairs inside ``mask``, mean over the 4 angles, by mahotas.

    ``q`` holds grey levels 0..L-1; levels are shifted to 1..L inside the mask and set to 0
    outside, and mahotas' ``ignore_zeros=True`` drops every pair touching a 0. Angles with no
    pair are skipped (mahotas itself raises); NaN when none has a pair.
    """
    import mahotas.features.texture as mt

    g = np.where(mask, q.astype(np.int32) + 1, 0)
    feats = []
    for direction in range(4):
        cm = mt.cooccurence(g, direction, symmetric=True, distance=distance)
        cm[0] = 0
        cm[:, 0] = 0
        if cm.sum() == 0:
            continue
        feats.append(mt.haralick_features([cm], ignore_zeros=True,
                                          use_x_minus_y_variance=True)[0])
    if not feats:
        return np.full(13, np.nan)
    return np.mean(feats, axis=0)


def texture_glcm_slow(q: np.ndarray, mask: np.ndarray, dr: int, dc: int, levels: int
                      ) -> np.ndarray:
    """Symmetric co-occurrence counts of the pairs ``(x, x + (dr, dc))`` inside ``mask``
    (``dr >= 0``), by explicit pair lists and ``np.add.at``."""
    h, w = q.shape
    rows, cols = np.nonzero(mask)
    r2, c2 = rows + dr, cols + dc
    ok = (r2 < h) & (c2 >= 0) & (c2 < w)
    rows, cols, r2, c2 = rows[ok], cols[ok], r2[ok], c2[ok]
    both = mask[r2, c2]
    a, b = q[rows[both], cols[both]], q[r2[both], c2[both]]
    m = np.zeros((levels, levels), np.int64)
    np.add.at(m, (a, b), 1)
    np.add.at(m, (b, a), 1)
    return m


def texture_lbp_counts(gray: np.ndarray, mask: np.ndarray, p: int, radius: float
                       ) -> np.ndarray:
    """Counts of scikit-image's uniform LBP codes (computed on the whole image) over mask."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(gray, p, radius, method="uniform").astype(np.int64)
    return np.bincount(codes[mask], minlength=p + 2)


def texture_lbp_tie_pixels(gray: np.ndarray, p: int, radius: float, tol: float = 1e-6
                           ) -> np.ndarray:
    """Pixels with an interpolated LBP sample within ``tol`` of the centre (where float
    rounding, and so the image's orientation, can decide the bit); samples on the pixel grid
    are exact and never ambiguous. Bilinear samples by plain numpy."""
    g = np.pad(gray.astype(np.float64), 3)
    h, w = gray.shape
    rr, cc = np.mgrid[0:h, 0:w]
    tie = np.zeros((h, w), bool)
    ang = 2 * np.pi * np.arange(p) / p
    for yr, xr in zip(np.round(-radius * np.sin(ang), 5), np.round(radius * np.cos(ang), 5),
                      strict=True):
        if yr == np.round(yr) and xr == np.round(xr):
            continue
        y, x = rr + yr + 3, cc + xr + 3
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        fy, fx = y - y0, x - x0
        v = ((1 - fy) * ((1 - fx) * g[y0, x0] + fx * g[y0, x0 + 1])
             + fy * ((1 - fx) * g[y0 + 1, x0] + fx * g[y0 + 1, x0 + 1]))
        tie |= np.abs(v - gray) < tol
    return tie


def texture_granularity_slow(gray: np.ndarray, nucleus: np.ndarray, cytoplasm: np.ndarray,
                             n_steps: int) -> np.ndarray:
    """(3 regions, n_steps) granularity spectrum with scipy.ndimage.grey_opening.

    signal s = max(0, b - gray) in the cell, 0 outside, b = the ceil(n/2)-th smallest grey
    level outside the cell (255 if none); gamma_i = grey_opening(s, diamond of radius i),
    the image extended by 0; G_i = 100 (mean_R gamma_{i-1} - mean_R gamma_i) / mean_R s.
    """
    from scipy import ndimage as ndi

    cell = nucleus | cytoplasm
    outside = np.sort(gray[~cell].astype(np.int64))
    b = int(outside[(outside.size + 1) // 2 - 1]) if outside.size else 255
    s = np.where(cell, np.maximum(b - gray.astype(np.int64), 0), 0).astype(np.float64)
    cross = ndi.generate_binary_structure(2, 1)
    opened = [s] + [ndi.grey_opening(s, footprint=ndi.iterate_structure(cross, i),
                                     mode="constant", cval=0.0)
                    for i in range(1, n_steps + 1)]
    out = np.zeros((3, n_steps))
    for k, m in enumerate((nucleus, cytoplasm, cell)):
        means = np.array([o[m].mean() for o in opened])
        out[k] = 0.0 if means[0] == 0 else 100.0 * (means[:-1] - means[1:]) / means[0]
    return out
