"""Colour features of nucleus, cytoplasm and cell.

Names: ``{Region}_Color_{Stat}_{Channel}`` with Region in Nucleus | Cytoplasm | Cell, plus
``{Region}_Color_MeanResultantLength_H`` and four nucleus-versus-cytoplasm contrasts
``Cell_Color_NucleusCytoplasmContrast_{LabL,LabA,LabB}`` and
``Cell_Color_NucleusCytoplasmDeltaE``.

Channels (per pixel, from the 8-bit RGB of the image)

* ``R``, ``G``, ``B``: the 8-bit levels (0..255);
* ``H``, ``S``, ``V``: ``skimage.color.rgb2hsv`` (all in [0, 1]; ``V = max(R, G, B) / 255``,
  ``S = (max - min) / max`` and 0 for grey, ``H`` in turns, 0 for grey pixels R = G = B);
* ``LabL``, ``LabA``, ``LabB``: CIE L*a*b* exactly as ``skimage.color.rgb2lab`` (sRGB, D65
  white, 2° observer; L in [0, 100]);
* ``OdR``, ``OdG``, ``OdB``: optical density ``OD = -log10((I + 1) / 256)`` (0 for white,
  ``log10(256) = 2.408`` for black; the +1 keeps black finite);
* ``Hem``, ``Eos``, ``Res``: colour deconvolution with ``skimage.color.rgb2hed``'s matrix
  (Ruifrok & Johnston 2001): ``max(0, log(max(I/255, 1e-6)) / log(1e-6) @ inv(M))``. For the
  Romanowsky (May-Grünwald-Giemsa, Wright) stains of blood films the haematoxylin vector
  stands in for the basophilic azure / methylene-blue component (nuclei, basophilic
  cytoplasm), the eosin vector for the acidophilic eosin component (eosinophil granules,
  red cells) and the DAB vector — absent from these stains — is kept as the residual ``Res``.

Statistics (over the region's pixels, population definitions)

* ``Mean``; ``Std`` = ``sqrt(mean((x - mean)^2))`` (``numpy.std``, ddof 0);
* ``Median``, ``P10``, ``P90``: ``numpy.percentile`` with its default ``linear`` method;
* ``Skewness`` = ``m3 / m2^1.5``, ``Kurtosis`` = ``m4 / m2^2 - 3`` (Fisher, excess), with
  ``m_k = mean((x - mean)^k)``: ``scipy.stats.skew`` / ``kurtosis`` with ``bias=True``.

Hue is an angle, so it is handled on the circle (exact and rotation-safe): with
``mu = atan2(sum sin 2 pi H, sum cos 2 pi H) / (2 pi) mod 1`` (``scipy.stats.circmean(H, 1,
0)``) every hue is unwrapped to ``u = mu + d``, ``d = H - mu - round(H - mu)`` in
``[-1/2, 1/2)``. Then ``Mean_H = mu``; ``Median_H``, ``P10_H``, ``P90_H`` are the percentiles
of ``u`` taken mod 1; ``Std_H``, ``Skewness_H``, ``Kurtosis_H`` are those of ``u``.
``MeanResultantLength_H`` ``R = |mean(exp(2 pi i H))|`` (1: a single hue, 0: uniform). Adding
a constant to every hue moves the location statistics by that constant (mod 1) and leaves the
others unchanged; no statistic jumps when a hue crosses 0 / 1 (e.g. red-purple cells).

NaN policy: every statistic of an empty region is NaN (e.g. no cytoplasm found), and so is a
contrast with an empty side. A one-pixel region has ``Std`` exactly 0, all percentiles
equal to its value, and NaN ``Skewness`` / ``Kurtosis``; so does any region where a channel
is constant (min = max), and, as in scipy, NaN shape statistics whenever
``m2 <= (eps * mean)^2``.
Grey pixels (R = G = B) have hue 0 and saturation 0, as in scikit-image.

Contrasts: ``NucleusCytoplasmContrast_c = mean_c(nucleus) - mean_c(cytoplasm)`` for c in L*,
a*, b*, and ``NucleusCytoplasmDeltaE`` = CIE76 ``sqrt(dL^2 + da^2 + db^2)`` between the mean
colours.

The whole family is one numba call per crop (:func:`morphocell.features._kernels.color.
color_stats`); see that module for how percentiles stay exact without sorting.

>>> from morphocell import read_image, segment
>>> from morphocell.features.base import make_crop
>>> from morphocell.datasets import sample_paths
>>> img = read_image(sample_paths()[0])
>>> row = compute(make_crop(img, segment(img)))
>>> 0 <= row["Nucleus_Color_Mean_LabL"] <= 100
True
>>> row["Nucleus_Color_Mean_LabL"] < row["Cytoplasm_Color_Mean_LabL"]  # nuclei stain darker
True
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import FeatureError
from ._kernels import color as _k
from .base import Crop, as_dict
from .registry import REGIONS, FeatureSpec

__all__ = ["NAMES", "specs", "compute", "compute_array", "color_stats", "CHANNELS", "STATS"]

#: channel tokens in the order of :func:`color_stats`' output: the 8-bit channels (from
#: 256-bin histograms), then the real-valued ones
CHANNELS = ("R", "G", "B", "V", "OdR", "OdG", "OdB",
            "H", "S", "LabL", "LabA", "LabB", "Hem", "Eos", "Res")
#: statistic tokens in the order of :func:`color_stats`' output
STATS = ("Mean", "Std", "Median", "P10", "P90", "Skewness", "Kurtosis")
if (len(CHANNELS), len(STATS)) != (_k.N8 + _k.NF, _k.N_STATS):  # the kernel's layout
    raise ImportError("colour channel / statistic names do not match the colour kernel")

_CHANNEL_DOC = {
    "R": ("intensity", "red level (0..255)", "I_R"),
    "G": ("intensity", "green level (0..255)", "I_G"),
    "B": ("intensity", "blue level (0..255)", "I_B"),
    "V": ("1", "HSV value (0..1)", "max(R,G,B)/255; skimage.color.rgb2hsv"),
    "OdR": ("OD", "optical density of red", "-log10((I_R+1)/256)"),
    "OdG": ("OD", "optical density of green", "-log10((I_G+1)/256)"),
    "OdB": ("OD", "optical density of blue", "-log10((I_B+1)/256)"),
    "H": ("1", "HSV hue in turns (0..1), circular (see module doc)",
          "skimage.color.rgb2hsv H"),
    "S": ("1", "HSV saturation (0..1)", "(max-min)/max; skimage.color.rgb2hsv"),
    "LabL": ("intensity", "CIE L* lightness (0..100)", "skimage.color.rgb2lab (D65, 2 deg)"),
    "LabA": ("intensity", "CIE a* (green- / red+)", "skimage.color.rgb2lab (D65, 2 deg)"),
    "LabB": ("intensity", "CIE b* (blue- / yellow+)", "skimage.color.rgb2lab (D65, 2 deg)"),
    "Hem": ("OD", "haematoxylin-like (azure/methylene-blue) stain density",
            "skimage.color.rgb2hed channel 0"),
    "Eos": ("OD", "eosin stain density", "skimage.color.rgb2hed channel 1"),
    "Res": ("OD", "residual (DAB vector) density", "skimage.color.rgb2hed channel 2"),
}
_STAT_DOC = {
    "Mean": "mean of {c}", "Std": "population standard deviation of {c}",
    "Median": "median of {c}", "P10": "10th percentile of {c}", "P90": "90th percentile of {c}",
    "Skewness": "skewness of {c}", "Kurtosis": "excess kurtosis of {c}",
}
_STAT_FORMULA = {
    "Mean": "mean(x)", "Std": "sqrt(mean((x-mean)^2))",
    "Median": "numpy.percentile(x, 50) (linear)", "P10": "numpy.percentile(x, 10) (linear)",
    "P90": "numpy.percentile(x, 90) (linear)", "Skewness": "m3/m2^1.5 (scipy.stats.skew)",
    "Kurtosis": "m4/m2^2-3 (scipy.stats.kurtosis, Fisher)",
}
_CONTRASTS = ("LabL", "LabA", "LabB")


def specs() -> list[FeatureSpec]:
    """Specs of every colour feature, in column order (see the module docstring)."""
    out = []
    for r in REGIONS:
        where = f" over the {r.lower()}"
        for c in CHANNELS:
            unit, meaning, formula = _CHANNEL_DOC[c]
            for s in STATS:
                u = "1" if s in ("Skewness", "Kurtosis") else unit
                f = f"{_STAT_FORMULA[s]}, x = {formula}"
                if c == "H":
                    f += "; on hue unwrapped around its circular mean" + (
                        ", mod 1" if s in ("Mean", "Median", "P10", "P90") else "")
                out.append(FeatureSpec(f"{r}_Color_{s}_{c}", "color", r, u,
                                       _STAT_DOC[s].format(c=meaning) + where, f,
                                       "numpy / scipy.stats on skimage.color values"))
        out.append(FeatureSpec(f"{r}_Color_MeanResultantLength_H", "color", r, "1",
                               "concentration of hue (1: one hue, 0: uniform)" + where,
                               "R = |mean(exp(2 pi i H))|", "1 - scipy.stats.circvar"))
    for c in _CONTRASTS:
        out.append(FeatureSpec(f"Cell_Color_NucleusCytoplasmContrast_{c}", "color", "Cell",
                               "intensity", f"nucleus minus cytoplasm mean {_CHANNEL_DOC[c][1]}",
                               f"mean_{c}(nucleus) - mean_{c}(cytoplasm)"))
    out.append(FeatureSpec("Cell_Color_NucleusCytoplasmDeltaE", "color", "Cell", "intensity",
                           "CIE76 colour difference of mean nucleus and mean cytoplasm colours",
                           "sqrt(dL^2 + da^2 + db^2) of the mean L*a*b*"))
    return out


class _Tables(NamedTuple):
    """Constant inputs of the colour kernel (lookup tables of ``_kernels.color.luts``, matrices)."""

    levels: np.ndarray
    f: np.ndarray
    lin: np.ndarray
    od: np.ndarray
    logn: np.ndarray
    xyz: np.ndarray
    white: np.ndarray
    hed: np.ndarray


class _Work(NamedTuple):
    """Work space of the colour kernel for ``npx`` cell pixels (``_kernels.color.color_stats``)."""

    px: np.ndarray
    cols: np.ndarray
    bins: np.ndarray
    tmp: np.ndarray
    hist8: np.ndarray
    histf: np.ndarray
    slot: np.ndarray

    @classmethod
    def alloc(cls, npx: int) -> _Work:
        nb = _k.NBINS
        return cls(np.empty((3, npx), np.uint8), np.empty((9, npx)),
                   np.empty((9, npx), np.uint16), np.empty((7, npx)),
                   np.zeros((2, 4, 256), np.int32), np.zeros((3, 8, nb), np.int32),
                   np.full((3, 8, nb), -1, np.int32))


_L = _k.luts()
_TABLES = _Tables(_L["levels"], _L["f"], _L["lin"], _L["od"], _L["logn"], _k.XYZ_FROM_RGB,
                  _k.WHITE_D65, _k.HED_FROM_RGB)
_TABLE_ARGS = tuple(_TABLES)
del _L


def color_stats(image: np.ndarray, nucleus: np.ndarray, cytoplasm: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """All colour statistics of the two disjoint masks and their union.

    Parameters
    ----------
    image : ndarray (h, w, 3) uint8
    nucleus, cytoplasm : ndarray (h, w) bool, disjoint

    Returns
    -------
    stats : ndarray (3, len(CHANNELS), len(STATS)) float64
        ``stats[region, channel, stat]``, region 0 nucleus, 1 cytoplasm, 2 union; NaN rows
        for empty regions.
    resultant : ndarray (3,) float64
        Mean resultant length of hue per region (NaN when empty).
    """
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FeatureError(f"colour features need an (h, w, 3) uint8 image, got "
                           f"{image.dtype} {image.shape}")
    nucleus = np.ascontiguousarray(nucleus, dtype=bool)
    cytoplasm = np.ascontiguousarray(cytoplasm, dtype=bool)
    if nucleus.shape != image.shape[:2] or cytoplasm.shape != image.shape[:2]:
        raise FeatureError(f"masks {nucleus.shape}/{cytoplasm.shape} do not match image "
                           f"{image.shape[:2]}")
    if (nucleus & cytoplasm).any():
        cytoplasm = cytoplasm & ~nucleus
    # work space for the cell's pixels only (not the whole crop): ~150 bytes a pixel, and a
    # smaller footprint leaves more of the cache to the other families
    npx = max(1, int(np.count_nonzero(nucleus)) + int(np.count_nonzero(cytoplasm)))
    stats = np.full((3, len(CHANNELS), len(STATS)), np.nan)
    resultant = np.full(3, np.nan)
    # plain tuples: numba types them at each call as fast as separate arguments
    _k.color_stats(image, nucleus, cytoplasm, _TABLE_ARGS, tuple(_Work.alloc(npx)), stats,
                   resultant)
    return stats, resultant


_IL = CHANNELS.index("LabL")


def compute(crop: Crop) -> dict[str, float]:
    """Every colour feature of one crop, ``{name: value}`` in :data:`NAMES` order."""
    return as_dict(NAMES, compute_array(crop))


def compute_array(crop: Crop) -> np.ndarray:
    """Every colour feature of one crop as a float64 vector in :data:`NAMES` order: the
    statistics of :func:`color_stats` and the hue's mean resultant length per region, then
    the nucleus / cytoplasm contrasts."""
    stats, res = color_stats(crop.image, crop.nucleus, crop.cytoplasm)
    vals = np.empty(len(NAMES))
    per = stats.shape[1] * stats.shape[2] + 1
    body = vals[:3 * per].reshape(3, per)
    body[:, :-1] = stats.reshape(3, -1)
    body[:, -1] = res
    d = stats[0, _IL:_IL + 3, 0] - stats[1, _IL:_IL + 3, 0]
    vals[3 * per:3 * per + 3] = d
    vals[-1] = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    return vals


#: column names of the colour family, in the order of :func:`compute_array`
NAMES: tuple[str, ...] = tuple(s.name for s in specs())
