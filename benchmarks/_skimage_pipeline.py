"""The slow way: morphocell's hand-crafted features computed with scikit-image, mahotas,
scipy and numpy calls, as a typical analysis script would (used by ``feature_speed.py``).

It measures the same crop (:func:`morphocell.features.base.make_crop`) with the same
definitions and returns morphocell's column names, so the benchmark can also check that the
two agree. Left out on purpose (so the slow pipeline does *less* work than morphocell and the
speed-up is conservative): the shape features with no library counterpart (FeretMin,
curvature statistics, LobeCount, NucleusToCellRatio, CentroidOffset).

* shape: ``skimage.measure.regionprops`` (area, perimeter, area_convex, solidity, extent,
  eccentricity, axis lengths, equivalent diameter, feret_diameter_max, moments_hu),
  ``mahotas.features.zernike_moments``, centroid-to-border radii with numpy;
* colour: ``skimage.color.rgb2hsv`` / ``rgb2lab`` / ``rgb2hed`` on the crop, then numpy
  mean / std / percentile, ``scipy.stats.skew`` / ``kurtosis`` / ``circmean`` per region;
* texture: ``mahotas.features.haralick`` per region and distance, scikit-image
  ``local_binary_pattern`` histograms, granularity by ``scipy.ndimage`` grey openings with
  diamonds of radius 1..``GRANULARITY_STEPS``; grey levels, distances and LBP parameters
  are read from :mod:`morphocell.features.texture`.
"""
from __future__ import annotations

import numpy as np

REGIONS = ("Nucleus", "Cytoplasm", "Cell")


def _masks(crop):
    return {"Nucleus": crop.nucleus, "Cytoplasm": crop.cytoplasm, "Cell": crop.cell}


# ---- shape -----------------------------------------------------------------------------------

def shape_features(crop) -> dict[str, float]:
    import mahotas
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    out: dict[str, float] = {}
    for r, m in _masks(crop).items():
        if not m.any():
            continue
        p = regionprops(m.astype(np.uint8))[0]
        a = float(p.area)
        vals = {
            "Area": a, "Perimeter": p.perimeter, "ConvexArea": p.area_convex,
            "Solidity": p.solidity, "Extent": p.extent, "Eccentricity": p.eccentricity,
            "MajorAxisLength": p.axis_major_length, "MinorAxisLength": p.axis_minor_length,
            "EquivalentDiameter": p.equivalent_diameter_area,
            "FeretMax": p.feret_diameter_max,
        }
        vals["Circularity"] = 4 * np.pi * a / p.perimeter ** 2 if p.perimeter > 0 else np.nan
        vals["Roundness"] = (4 * a / (np.pi * p.axis_major_length ** 2)
                             if p.axis_major_length > 0 else np.nan)
        hu = p.moments_hu
        for i in range(7):
            vals[f"Hu{i + 1}"] = abs(hu[i]) if i == 6 else hu[i]
        border = m & ~ndi.binary_erosion(m, structure=ndi.generate_binary_structure(2, 1))
        cy, cx = p.centroid
        rr, cc = np.nonzero(border)
        d = np.hypot(rr - cy, cc - cx)
        vals.update(RadiusMin=d.min(), RadiusMax=d.max(), RadiusMean=d.mean(),
                    RadiusStd=d.std())
        z = mahotas.features.zernike_moments(m, d.max() + 0.5, 8, cm=(cy, cx))
        k = 0
        for n in range(9):
            for mm in range(n % 2, n + 1, 2):
                if (n, mm) not in ((0, 0), (1, 1)):
                    vals[f"Zernike_{n}_{mm}"] = z[k]
                k += 1
        for name, v in vals.items():
            out[f"{r}_Shape_{name}"] = float(v)
    return out


# ---- colour ----------------------------------------------------------------------------------

_STATS = ("Mean", "Std", "Median", "P10", "P90", "Skewness", "Kurtosis")


def _stats(x):
    import scipy.stats as ss

    return [x.mean(), x.std(), np.percentile(x, 50), np.percentile(x, 10),
            np.percentile(x, 90), ss.skew(x), ss.kurtosis(x)]


def color_features(crop) -> dict[str, float]:
    import scipy.stats as ss
    import skimage.color as skc

    img = crop.image
    rgb = img.astype(np.float64)
    hsv = skc.rgb2hsv(img)
    lab = skc.rgb2lab(img)
    hed = skc.rgb2hed(img)
    od = -np.log10((rgb + 1.0) / 256.0)
    planes = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "V": hsv[..., 2],
              "OdR": od[..., 0], "OdG": od[..., 1], "OdB": od[..., 2], "H": hsv[..., 0],
              "S": hsv[..., 1], "LabL": lab[..., 0], "LabA": lab[..., 1],
              "LabB": lab[..., 2], "Hem": hed[..., 0], "Eos": hed[..., 1],
              "Res": hed[..., 2]}
    out: dict[str, float] = {}
    means = {}
    for r, m in _masks(crop).items():
        if not m.any():
            continue
        for c, plane in planes.items():
            x = plane[m]
            if c == "H":
                mu = ss.circmean(x, high=1.0, low=0.0)
                d = x - mu
                u = mu + (d - np.floor(d + 0.5))
                st = _stats(u)
                st = [mu, st[1], st[2] % 1, st[3] % 1, st[4] % 1, st[5], st[6]]
                out[f"{r}_Color_MeanResultantLength_H"] = float(
                    np.hypot(np.sin(2 * np.pi * x).mean(), np.cos(2 * np.pi * x).mean()))
            else:
                st = _stats(x)
            for s, v in zip(_STATS, st, strict=True):
                out[f"{r}_Color_{s}_{c}"] = float(v)
            means[(r, c)] = st[0]
    if ("Nucleus", "LabL") in means and ("Cytoplasm", "LabL") in means:
        d = [means[("Nucleus", c)] - means[("Cytoplasm", c)] for c in ("LabL", "LabA", "LabB")]
        for c, v in zip(("LabL", "LabA", "LabB"), d, strict=True):
            out[f"Cell_Color_NucleusCytoplasmContrast_{c}"] = float(v)
        out["Cell_Color_NucleusCytoplasmDeltaE"] = float(np.sqrt(np.sum(np.square(d))))
    return out


# ---- texture ---------------------------------------------------------------------------------

def texture_features(crop) -> dict[str, float]:
    import mahotas
    from scipy import ndimage as ndi
    from skimage.feature import local_binary_pattern
    from skimage.morphology import diamond

    from morphocell.features import texture as tx

    levels, distances, lbp = tx.LEVELS, tx.DISTANCES, tx.LBP_PARAMS
    n_gran, HARALICK_FEATURES = tx.GRANULARITY_STEPS, tx.HARALICK_FEATURES

    gray = crop.gray
    k = (gray // (256 // levels)).astype(np.uint8) + 1
    masks = _masks(crop)
    cell = masks["Cell"]
    out: dict[str, float] = {}
    codes = {(p, rad): local_binary_pattern(gray, p, rad, method="uniform") for p, rad in lbp}
    # granularity signal: glass level = lower median of the non-cell grey levels
    bg = np.sort(gray[~cell])
    b = int(bg[(bg.size + 1) // 2 - 1]) if bg.size else 255
    sig = np.where(cell, np.maximum(b - gray.astype(np.int64), 0), 0).astype(np.uint8)
    opened = [sig.astype(np.int64)]
    for i in range(1, n_gran + 1):
        se = diamond(i).astype(bool)
        er = ndi.grey_erosion(sig, footprint=se, mode="constant", cval=0)
        opened.append(ndi.grey_dilation(er, footprint=se, mode="constant", cval=0)
                      .astype(np.int64))
    for r, m in masks.items():
        if not m.any():
            continue
        g = np.where(m, k, 0).astype(np.uint8)
        for d in distances:
            try:
                har = mahotas.features.haralick(g, ignore_zeros=True, distance=d,
                                                return_mean=True,
                                                use_x_minus_y_variance=True)
            except ValueError:  # no pair at this distance
                har = np.full(len(HARALICK_FEATURES), np.nan)
            for (tok, _, _), v in zip(HARALICK_FEATURES, har, strict=True):
                out[f"{r}_Texture_Glcm{tok}_Gray_{d}"] = float(v)
        n = m.sum()
        for (p, rad), code in codes.items():
            h = np.bincount(code[m].astype(np.int64), minlength=p + 2) / n
            for i, v in enumerate(h):
                out[f"{r}_Texture_Lbp_Gray_{p}_{rad}_Bin{i}"] = float(v)
        s0 = opened[0][m].sum()
        for i in range(1, n_gran + 1):
            v = 100.0 * (opened[i - 1][m].sum() - opened[i][m].sum()) / s0 if s0 else 0.0
            out[f"{r}_Texture_Granularity_Gray_{i}"] = float(v)
    return out


def slow_features(crop) -> dict[str, float]:
    """All three families the slow way, for one crop."""
    out = shape_features(crop)
    out.update(color_features(crop))
    out.update(texture_features(crop))
    return out


def glcm_skimage(crop, levels: int = 32, distances=(1, 2, 4)) -> dict[str, float]:
    """scikit-image's graycomatrix / graycoprops for the four GLCM features it has
    (timed apart in the benchmark; the masked region is grey level 0, dropped)."""
    from skimage.feature import graycomatrix, graycoprops

    k = (crop.gray // (256 // levels)).astype(np.uint8) + 1
    out = {}
    for r, m in _masks(crop).items():
        g = np.where(m, k, 0).astype(np.uint8)
        P = graycomatrix(g, distances, [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                         levels=levels + 1, symmetric=True)[1:, 1:]
        for prop, tok in (("ASM", "AngularSecondMoment"), ("contrast", "Contrast"),
                          ("correlation", "Correlation"),
                          ("homogeneity", "InverseDifferenceMoment")):
            v = graycoprops(P, prop).mean(axis=1)
            for d, x in zip(distances, v, strict=True):
                out[f"{r}_Texture_Glcm{tok}_Gray_{d}"] = float(x)
    return out
