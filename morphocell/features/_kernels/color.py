"""numba kernel of the colour family: every colour statistic of the three regions in one call.

Layout of the result ``stats[region, channel, stat]`` (filled by :func:`color_stats`):

* region: 0 Nucleus, 1 Cytoplasm, 2 Cell (= Nucleus | Cytoplasm; the two are disjoint);
* channel: ``R, G, B, V, OdR, OdG, OdB`` (the ``N8`` 8-bit channels), then ``H, S, LabL,
  LabA, LabB, Hem, Eos, Res`` (the ``NF`` real-valued ones), named by
  ``morphocell.features.color.CHANNELS``;
* stat: ``Mean, Std, Median, P10, P90, Skewness, Kurtosis`` (``N_STATS``), named by
  ``morphocell.features.color.STATS``.

Per-pixel values are exactly scikit-image's (``img_as_float64`` = ``I * (1/255)``,
``rgb2hsv``, ``rgb2lab`` with D65 / 2°, ``rgb2hed``) up to the order of floating-point
operations (agreement ~1e-12, tested). Two exact strategies for order statistics:

* 8-bit channels (R, G, B, V = max(R, G, B)/255 and OD of R, G, B, all functions of one 8-bit
  number) come from 256-bin histograms: moments are sums over bins and the sorted sample is
  the histogram walked in value order, so percentiles are exact;
* real-valued channels (H, S, Lab, stains) are binned: bin 0 holds the column's minimum
  value (exactly; the stain densities are clipped at 0, so it is often a large tie), bins
  ``1 .. NBINS - 1`` split the span of an evenly spaced sample of ~128 pixels per region in
  equal parts, values outside the span going to the end bins. Binning is monotone, so the
  k-th smallest value lies in the bin where the cumulative count passes k; only the values of
  the <= 6 bins that hold the wanted order statistics are gathered (none for bin 0: its value
  is the minimum), and the wanted ranks within them found by selection (quickselect,
  ``morphocell.features._kernels.select``), not by sorting. Exact for any data, O(n) per channel; the sample
  span only decides how few values are gathered.

Percentiles follow ``numpy.percentile(method="linear")`` bit for bit given the same order
statistics: with ``v = (n - 1) * q`` (``q = p / 100``), ``i = floor(v)``, ``g = v - i``,
``a = x[i]``, ``b = x[min(i + 1, n - 1)]``: ``a + (b - a) * g`` when ``g < 0.5`` else
``b - (b - a) * (1 - g)``.
Moments are central moments ``m_k = mean((x - mean)^k)`` (from power sums around a
value close to each region's mean, the cell's by an exact pairwise combination). The power sums
of the real-valued channels are the one place where the compiler may reassociate additions
(so that it vectorises them): their last bits depend on the vector width of the CPU (relative
differences ~1e-16 in the mean, up to ~1e-11 in the kurtosis of a nearly constant channel);
everything is bit-reproducible on one machine. ``Std = sqrt(m2)``
(population), ``Skewness = m3 / m2^1.5``, ``Kurtosis = m4 / m2^2 - 3`` (Fisher); when
``m2 <= (eps * mean)^2`` (a constant region, e.g. one pixel) skewness and kurtosis are NaN,
as in ``scipy.stats.skew/kurtosis``, and so are they, with ``Std = 0``, whenever the sample's
minimum equals its maximum.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .select import kth_smallest, min_from
from .crop import hist2

__all__ = ["N8", "NF", "N_STATS", "NBINS", "color_stats", "luts", "HED_FROM_RGB",
           "XYZ_FROM_RGB", "WHITE_D65"]

N8 = 7          # number of 8-bit channels
NF = 8          # number of real-valued channels (H first)
N_STATS = 7     # statistics per channel
NBINS = 1024    # bins per real-valued channel for the order-statistic search: any multiple of
#                32 is exact; 1024 was the fastest of 256-2048 on PBC crops

#: sRGB (D65) -> CIE XYZ, as ``skimage.color.colorconv.xyz_from_rgb``
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
#: CIE XYZ of the D65 white, 2° observer, as ``skimage.color.xyz_tristimulus_values``
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: Ruifrok & Johnston haematoxylin / eosin / DAB optical-density vectors (rows), as
#: ``skimage.color.colorconv.rgb_from_hed``
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
#: its inverse, digit for digit ``skimage.color.colorconv.hed_from_rgb`` (``scipy.linalg.inv``)
HED_FROM_RGB = np.array([[1.8779827368521356, -1.0076786862855642, -0.5561158181996246],
                         [-0.06590806222356334, 1.1347303724996625, -0.13552179862837116],
                         [-0.6019073634392891, -0.4804141884970579, 1.5735880719641926]])

_EPS = float(np.finfo(np.float64).eps)
_QS = (0.5, 0.1, 0.9)  # p / 100 for Median, P10, P90 (float64, as numpy computes them)


def luts() -> dict[str, np.ndarray]:
    """Per-8-bit-level lookup tables used by the kernel (all float64, length 256).

    * ``levels``: ``I`` itself (R, G, B are reported on the 0..255 scale);
    * ``f``: ``I * (1/255)`` (``skimage.img_as_float64``);
    * ``lin``: sRGB linearisation of ``f``: ``((f + 0.055) / 1.055) ** 2.4`` if ``f > 0.04045``
      else ``f / 12.92`` (``skimage.color.rgb2xyz``);
    * ``od``: optical density ``-log10((I + 1) / 256)`` (0 for white, 2.408 for black);
    * ``logn``: ``log(max(f, 1e-6)) / log(1e-6)`` (``skimage.color.separate_stains``).
    """
    i = np.arange(256, dtype=np.float64)
    f = i * (1.0 / 255)
    lin = np.where(f > 0.04045, np.power((f + 0.055) / 1.055, 2.4), f / 12.92)
    od = -np.log10((i + 1.0) / 256.0)
    logn = np.log(np.maximum(f, 1e-6)) / np.log(1e-6)
    return {"levels": i, "f": f, "lin": lin, "od": od, "logn": logn}


# rational first guess of cbrt on [0.0088, 1.1] (relative error < 1e-2), fitted offline
_CB = (0.00446267, 0.47037934, 1.56632178, 0.03281234, 1.01910867)


@njit(cache=True, nogil=True, error_model="numpy")
def _lab_f(t):
    """CIE L*a*b* companding ``cbrt(t)`` if ``t > 0.008856`` else ``7.787 t + 16/116``.

    The cube root is a rational first guess refined by two Halley steps
    ``g <- g (g^3 + 2t) / (2 g^3 + t)`` (cubic convergence: 1e-2 -> 1e-6 -> 1 ulp), branch-free
    and several times faster than libm's ``cbrt``; agreement with ``numpy.cbrt`` is tested.
    """
    g = (_CB[0] + t * (_CB[1] + t * _CB[2])) / (_CB[3] + t * (_CB[4] + t))
    g3 = g * g * g
    g = g * (g3 + 2.0 * t) / (2.0 * g3 + t)
    g3 = g * g * g
    g = g * (g3 + 2.0 * t) / (2.0 * g3 + t)
    return g if t > 0.008856 else 7.787 * t + 16.0 / 116.0


@njit(cache=True, nogil=True, error_model="numpy")
def _sincos_turns(h):
    """``(sin 2 pi h, cos 2 pi h)`` for ``h`` in turns: exact quadrant reduction
    ``q = round(4h)``, ``f = 4h - q`` (both exact), then Taylor series of degree 17 / 18 on
    ``|theta| = |f| pi / 2 <= pi / 4`` (truncation < 1e-19; agreement with numpy tested)."""
    t = 4.0 * h
    q = np.floor(t + 0.5)
    x = (t - q) * (np.pi / 2.0)
    x2 = x * x
    s = x * (1.0 + x2 * (-1.0 / 6 + x2 * (1.0 / 120 + x2 * (-1.0 / 5040 + x2 * (
        1.0 / 362880 + x2 * (-1.0 / 39916800 + x2 * (1.0 / 6227020800 + x2 * (
            -1.0 / 1307674368000 + x2 * (1.0 / 355687428096000)))))))))
    c = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24 + x2 * (-1.0 / 720 + x2 * (1.0 / 40320 + x2 * (
        -1.0 / 3628800 + x2 * (1.0 / 479001600 + x2 * (-1.0 / 87178291200 + x2 * (
            1.0 / 20922789888000 + x2 * (-1.0 / 6402373705728000)))))))))
    qi = int(q) & 3
    odd = (qi & 1) == 1
    neg_s = qi >= 2
    neg_c = qi == 1 or qi == 2
    ss = c if odd else s
    cc = s if odd else c
    return (-ss if neg_s else ss), (-cc if neg_c else cc)


@njit(cache=True, nogil=True)
def _lerp(a, b, g):
    """numpy's ``_lerp``: linear interpolation that is exact at both ends."""
    d = b - a
    if g >= 0.5:
        return b - d * (1.0 - g)
    return a + d * g


@njit(cache=True, nogil=True)
def _moments_to_stats(n, mean, m2, m3, m4, out):
    """Fill Mean, Std, Skewness, Kurtosis of ``out`` (a row of 7) from central moments."""
    out[0] = mean
    out[1] = np.sqrt(m2)
    if m2 <= (_EPS * mean) ** 2:
        out[5] = np.nan
        out[6] = np.nan
    else:
        out[5] = m3 / m2 ** 1.5
        out[6] = m4 / (m2 * m2) - 3.0


@njit(cache=True, nogil=True)
def _hist_stats(hist, values, out):
    """Stats of a sample given as a 256-bin histogram ``hist`` of 8-bit levels whose values
    are ``values[level]`` (monotone in level, increasing or decreasing)."""
    n = 0
    s = 0.0
    for i in range(256):
        if hist[i] > 0:
            n += hist[i]
            s += hist[i] * values[i]
    mean = s / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for i in range(256):
        if hist[i] > 0:
            d = values[i] - mean
            d2 = d * d
            m2 += hist[i] * d2
            m3 += hist[i] * d2 * d
            m4 += hist[i] * d2 * d2
    _moments_to_stats(n, mean, m2 / n, m3 / n, m4 / n, out)
    nonempty = 0
    for i in range(256):
        if hist[i] > 0:
            nonempty += 1
    if nonempty == 1:  # a constant sample: exact zero spread, no shape
        out[1] = 0.0
        out[5] = np.nan
        out[6] = np.nan
    increasing = values[255] >= values[0]
    for qi in range(3):
        v = (n - 1) * _QS[qi]
        lo = np.floor(v)
        g = v - lo
        k0 = int(lo)
        k1 = min(k0 + 1, n - 1)
        a = 0.0
        b = 0.0
        cum = 0
        got = 0
        for j in range(256):
            lev = j if increasing else 255 - j
            c = hist[lev]
            if c == 0:
                continue
            if got == 0 and k0 < cum + c:
                a = values[lev]
                got = 1
            if k1 < cum + c:
                b = values[lev]
                break
            cum += c
        out[2 + qi] = _lerp(a, b, g)  # 2 Median, 3 P10, 4 P90


@njit(cache=True, nogil=True)
def _shifted_to_central(n, s1, s2, s3, s4):
    """Central moments ``m2, m3, m4`` and ``delta = mean - v0`` from the power sums
    ``s_j = sum (x - v0)^j`` of ``n`` values around a shift ``v0``."""
    d = s1 / n
    a2 = s2 / n
    a3 = s3 / n
    a4 = s4 / n
    d2 = d * d
    m2 = a2 - d2
    m3 = a3 - 3.0 * d * a2 + 2.0 * d2 * d
    m4 = a4 - 4.0 * d * a3 + 6.0 * d2 * a2 - 3.0 * d2 * d2
    return d, max(m2, 0.0), m3, m4


@njit(cache=True, nogil=True, error_model="numpy")
def _hsv_lab(fr, fg, fb, lr, lg, lb, n, a00, a01, a02, a10, a11, a12, a20, a21, a22, wx, wz,
             hue, sat, el, ea, eb, sinh, cosh):
    """HSV hue and saturation (skimage.color.rgb2hsv), CIE L*a*b* (rgb2lab) and the sine /
    cosine of the hue, for ``n`` pixels given as float rows (``I/255`` and linearised)."""
    for k in range(n):
        r = fr[k]
        g = fg[k]
        b = fb[k]
        v = max(r, max(g, b))
        delta = v - min(r, min(g, b))
        ok = delta > 0.0
        dd = delta if ok else 1.0
        # skimage's precedence when maxima tie: blue, then green, then red
        bm = b == v
        gm = g == v
        num = (r - g) if bm else ((b - r) if gm else (g - b))
        off = 4.0 if bm else (2.0 if gm else 0.0)
        hh = (off + num / dd) / 6.0
        hh = hh + 1.0 if hh < 0.0 else hh  # numpy's "% 1.0" on (-1/6, 5/6]
        hh = hh if ok else 0.0
        hue[k] = hh
        sat[k] = delta / (v if ok else 1.0) if ok else 0.0
        x = lr[k]
        y = lg[k]
        z = lb[k]
        fx = _lab_f((x * a00 + y * a01 + z * a02) / wx)
        fy = _lab_f(x * a10 + y * a11 + z * a12)  # white Y = 1
        fz = _lab_f((x * a20 + y * a21 + z * a22) / wz)
        el[k] = 116.0 * fy - 16.0
        ea[k] = 500.0 * (fx - fy)
        eb[k] = 200.0 * (fy - fz)
        sn, cs = _sincos_turns(hh)
        sinh[k] = sn
        cosh[k] = cs


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _shifted_sums(x, a, b, v0, out):
    """``out[:4] = (sum d, sum d^2, sum d^3, sum d^4)`` over ``x[a:b]``, ``d = x - v0``.

    Reassociation is allowed here (and only here) so that the compiler vectorises the four
    sums; the order of the additions then depends on the vector width (results agree to
    ~1e-16 relative across machines, are bit-reproducible on one)."""
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    ua = np.uint64(a)
    for k in range(b - a):
        d = x[ua + np.uint64(k)] - v0
        q = d * d
        s1 += d
        s2 += q
        s3 += q * d
        s4 += q * q
    out[0] = s1
    out[1] = s2
    out[2] = s3
    out[3] = s4


@njit(cache=True, nogil=True)
def _min_max(x, a, b, lanes, out):
    """``out[4], out[5] = min, max of x[a:b]`` (``b > a``): running minima / maxima of 64
    lanes (``lanes``: (2, 64) scratch), a loop the compiler vectorises, then the lanes."""
    n = b - a
    nb = n // 64
    mn = x[a]
    mx = x[a]
    if nb > 0:
        ua = np.uint64(a)
        lo = lanes[0]
        hi = lanes[1]
        for j in range(64):
            v = x[ua + np.uint64(j)]
            lo[j] = v
            hi[j] = v
        for i in range(1, nb):
            base = ua + np.uint64(64 * i)
            for j in range(64):
                v = x[base + np.uint64(j)]
                lo[j] = v if v < lo[j] else lo[j]
                hi[j] = v if v > hi[j] else hi[j]
        for j in range(64):
            mn = min(mn, lo[j])
            mx = max(mx, hi[j])
    for k in range(a + 64 * nb, b):
        mn = min(mn, x[k])
        mx = max(mx, x[k])
    out[4] = mn
    out[5] = mx


@njit(cache=True, nogil=True)
def _power_sums(x, a, b, v0, lanes, out):
    """``out = (sum d, sum d^2, sum d^3, sum d^4, min x, max x)`` over ``x[a:b]`` with
    ``d = x - v0`` (``b > a``)."""
    _shifted_sums(x, a, b, v0, out)
    _min_max(x, a, b, lanes, out)


@njit(cache=True, nogil=True)
def _combine(na, a, nb, b, out):
    """Moments of the union of two disjoint samples: ``a``, ``b``, ``out`` hold
    (mean, m2, m3, m4, min, max) with ``m_k`` the central moments (means of powers).
    Pebay (2008) pairwise update with ``M_k = n m_k`` and ``delta = mean_b - mean_a``:
    ``M2 = M2a + M2b + delta^2 na nb / n``, ``M3 = M3a + M3b + delta^3 na nb (na - nb) / n^2
    + 3 delta (na M2b - nb M2a) / n``, ``M4 = M4a + M4b + delta^4 na nb (na^2 - na nb + nb^2)
    / n^3 + 6 delta^2 (na^2 M2b + nb^2 M2a) / n^2 + 4 delta (na M3b - nb M3a) / n``."""
    if nb == 0:
        out[:] = a
        return
    if na == 0:
        out[:] = b
        return
    fa = float(na)
    fb = float(nb)
    n = fa + fb
    d = b[0] - a[0]
    A2 = fa * a[1]
    A3 = fa * a[2]
    A4 = fa * a[3]
    B2 = fb * b[1]
    B3 = fb * b[2]
    B4 = fb * b[3]
    M2 = A2 + B2 + d * d * fa * fb / n
    M3 = A3 + B3 + d ** 3 * fa * fb * (fa - fb) / (n * n) + 3.0 * d * (fa * B2 - fb * A2) / n
    M4 = (A4 + B4 + d ** 4 * fa * fb * (fa * fa - fa * fb + fb * fb) / (n ** 3)
          + 6.0 * d * d * (fa * fa * B2 + fb * fb * A2) / (n * n)
          + 4.0 * d * (fa * B3 - fb * A3) / n)
    out[0] = a[0] + d * fb / n
    out[1] = M2 / n
    out[2] = M3 / n
    out[3] = M4 / n
    out[4] = min(a[4], b[4])
    out[5] = max(a[5], b[5])


@njit(cache=True, nogil=True)
def color_stats(image, nucleus, cytoplasm, tables, work, stats, resultant):
    """Fill ``stats`` (3, 15, 7) and ``resultant`` (3,) for one crop.

    Parameters
    ----------
    image : uint8 (h, w, 3); nucleus, cytoplasm : bool (h, w), disjoint
    tables : tuple ``(levels, f, lin, od, logn, xyz, white, hed)``
        ``levels, f, lin, od, logn``: float64 (256,) lookup tables of :func:`luts`;
        ``xyz, white, hed``: float64 colour matrices (:data:`XYZ_FROM_RGB`,
        :data:`WHITE_D65`, :data:`HED_FROM_RGB`)
    work : tuple ``(px, cols, bins, tmp, hist8, histf, slot)``
        ``px`` uint8 (3, n), ``cols`` float64 (9, n), ``bins`` uint16 (9, n), ``tmp``
        float64 (7, n): work space, ``n`` >= the number of cell pixels (pixel list --
        nucleus pixels first, then cytoplasm pixels, each in raster order, so a pixel's
        region is whether its index is below the nucleus count --, channel values, bin
        indices, scratch rows); ``hist8`` int32 (2, 4, 256) zeros; ``histf`` int32 (3, 8,
        NBINS) zeros; ``slot`` int32 (3, 8, NBINS) filled with -1
    stats : float64 (3, 15, 7) NaN-filled (rows of empty regions stay NaN)
    resultant : float64 (3,) NaN-filled; mean resultant length of hue

    Hue (channel H) is an angle in turns; its statistics are taken on the values unwrapped
    around the region's circular mean ``mu = atan2(sum sin 2piH, sum cos 2piH) / 2pi``:
    ``d = wrap(H - mu)`` in ``[-1/2, 1/2)``. ``Mean = mu mod 1``; Median, P10, P90 are
    ``(mu + quantile(d)) mod 1``; Std, Skewness, Kurtosis are those of ``d``.

    Moments: power sums of the nucleus and of the cytoplasm around a shift near each one's
    mean (the mean of an evenly spaced sample), vectorised (``_power_sums``), turned into
    central moments by the binomial shift formula (``_shifted_to_central``); the cell's by Pebay's pairwise combination (``_combine``).
    """
    levels, f, lin, od, logn, xyz, white, hed = tables
    px, cols, bins, tmp, hist8, histf, slot = work
    h, w = nucleus.shape
    # ---- pass 0: the pixel list of the cell -- the nucleus pixels first, then the cytoplasm
    # pixels, each in raster order, so that per-region loops run over a contiguous range
    # without a branch per pixel -- and the 8-bit histograms
    n0 = 0
    for i in range(h):
        for j in range(w):
            n0 += nucleus[i, j]
    k_n = 0
    k_c = n0
    for i in range(h):
        for j in range(w):
            if nucleus[i, j]:
                r = 0
                kk = k_n
                k_n += 1
            elif cytoplasm[i, j]:
                r = 1
                kk = k_c
                k_c += 1
            else:
                continue
            r8 = image[i, j, 0]
            g8 = image[i, j, 1]
            b8 = image[i, j, 2]
            hist8[r, 0, r8] += 1
            hist8[r, 1, g8] += 1
            hist8[r, 2, b8] += 1
            hist8[r, 3, max(r8, max(g8, b8))] += 1
            px[0, kk] = r8
            px[1, kk] = g8
            px[2, kk] = b8
    npx = k_c
    if npx == 0:
        return
    cnt = np.zeros(3, np.int64)
    cnt[0] = n0
    cnt[1] = npx - n0
    cnt[2] = npx

    # ---- 8-bit channels from histograms
    hist_c = np.empty(256, np.int64)
    for r in range(3):
        if cnt[r] == 0:
            continue
        for c in range(4):
            for lev in range(256):
                hist_c[lev] = hist8[r, c, lev] if r < 2 else hist8[0, c, lev] + hist8[1, c, lev]
            if c < 3:
                _hist_stats(hist_c, levels, stats[r, c])
                _hist_stats(hist_c, od, stats[r, 4 + c])
            else:
                _hist_stats(hist_c, f, stats[r, 3])

    # ---- pass 1a: table look-ups (gathers) and the stain densities
    for k in range(npx):
        r8 = px[0, k]
        g8 = px[1, k]
        b8 = px[2, k]
        tmp[0, k] = f[r8]
        tmp[1, k] = f[g8]
        tmp[2, k] = f[b8]
        tmp[3, k] = lin[r8]
        tmp[4, k] = lin[g8]
        tmp[5, k] = lin[b8]
        lr = logn[r8]
        lg = logn[g8]
        lb = logn[b8]
        x0 = lr * hed[0, 0] + lg * hed[1, 0] + lb * hed[2, 0]
        x1 = lr * hed[0, 1] + lg * hed[1, 1] + lb * hed[2, 1]
        x2 = lr * hed[0, 2] + lg * hed[1, 2] + lb * hed[2, 2]
        cols[5, k] = x0 if x0 > 0.0 else 0.0
        cols[6, k] = x1 if x1 > 0.0 else 0.0
        cols[7, k] = x2 if x2 > 0.0 else 0.0
    # ---- pass 1b: HSV, L*a*b*, sin / cos of the hue: arithmetic and selects only, on
    # contiguous rows, so that the compiler vectorises it
    _hsv_lab(tmp[0], tmp[1], tmp[2], tmp[3], tmp[4], tmp[5], npx,
             xyz[0, 0], xyz[0, 1], xyz[0, 2], xyz[1, 0], xyz[1, 1], xyz[1, 2],
             xyz[2, 0], xyz[2, 1], xyz[2, 2], white[0], white[2],
             cols[0], cols[1], cols[2], cols[3], cols[4], cols[8], tmp[6])
    # hue sin / cos sums of the nucleus and of the cytoplasm (the cell: their sum)
    sinh = cols[8]
    cosh = tmp[6]
    sn_n = 0.0
    cs_n = 0.0
    for k in range(n0):
        sn_n += sinh[k]
        cs_n += cosh[k]
    sn_c = 0.0
    cs_c = 0.0
    for k in range(n0, npx):
        sn_c += sinh[k]
        cs_c += cosh[k]
    # shifts for the power sums, per region: the mean of an evenly spaced sample of the
    # region's pixels (any shift is exact in exact arithmetic; one near the region's mean
    # keeps the rounding small). Hue deviations (columns 0, 8) are centred already.
    shift = np.zeros((2, 9))
    for r in range(2):
        a = 0 if r == 0 else n0
        b = n0 if r == 0 else npx
        if b > a:
            step = max(1, (b - a) // 128)
            m = 0
            for k in range(a, b, step):
                m += 1
                for c in range(1, 8):
                    shift[r, c] += cols[c, k]
            for c in range(1, 8):
                shift[r, c] /= m
    sin_s = np.array([sn_n, sn_c, sn_n + sn_c])
    cos_s = np.array([cs_n, cs_c, cs_n + cs_c])
    mu = np.zeros(3)
    for r in range(3):
        if cnt[r] > 0:
            mu[r] = (np.arctan2(sin_s[r], cos_s[r]) / (2.0 * np.pi)) % 1.0
            resultant[r] = np.sqrt(sin_s[r] ** 2 + cos_s[r] ** 2) / cnt[r]
    # hue unwrapped: column 0 around the pixel's own region mean, column 8 around the cell's
    mu0 = mu[0]
    mu1 = mu[1]
    mu2 = mu[2]
    for k in range(npx):
        hraw = cols[0, k]
        d = hraw - (mu1 if k >= n0 else mu0)
        cols[0, k] = d - np.floor(d + 0.5)
        d = hraw - mu2
        cols[8, k] = d - np.floor(d + 0.5)

    # ---- pass 2: per column, power sums of the nucleus and of the cytoplasm around their
    # own shifts, min / max; central moments per region, then the cell's by the exact
    # pairwise combination of Pebay (2008) (no cancellation between the two parts)
    # mom[r, c] = (mean, m2, m3, m4, min, max) for r in N, C, Cell; column 8 -> cell hue
    mom = np.zeros((3, 9, 6))
    lo = np.empty(9)
    scale = np.empty(9)
    ps = np.empty(6)
    lanes = np.empty((2, 64))
    for c in range(9):
        for r in range(2):
            if cnt[r] == 0:
                continue
            v0 = shift[r, c]
            _power_sums(cols[c], 0 if r == 0 else n0, n0 if r == 0 else npx, v0, lanes, ps)
            dl, m2, m3, m4 = _shifted_to_central(cnt[r], ps[0], ps[1], ps[2], ps[3])
            mom[r, c, 0] = v0 + dl
            mom[r, c, 1] = m2
            mom[r, c, 2] = m3
            mom[r, c, 3] = m4
            mom[r, c, 4] = ps[4]
            mom[r, c, 5] = ps[5]
        _combine(cnt[0], mom[0, c], cnt[1], mom[1, c], mom[2, c])
        # bin range: the span of an evenly spaced sample of each part (~128 pixels), so that
        # a few extreme pixels do not crowd the bulk into a few bins; values outside are
        # clamped into the end bins (binning stays monotone, so the search stays exact);
        # the whole range when the sample is constant
        smn = np.inf
        smx = -np.inf
        for r in range(2):
            a = 0 if r == 0 else n0
            b = n0 if r == 0 else npx
            if b > a:
                step = max(1, (b - a) // 128)
                for k in range(a, b, step):
                    v = cols[c, k]
                    smn = min(smn, v)
                    smx = max(smx, v)
        if not smx > smn:
            smn = mom[2, c, 4]
            smx = mom[2, c, 5]
        lo[c] = smn
        scale[c] = min((NBINS - 2) / (smx - smn), 1e300) if smx > smn else 0.0
    # ---- bin indices and histograms (the cell's hue has its own column 8)
    h2 = np.zeros((2, NBINS), np.int32)
    for c in range(9):
        l0 = lo[c]
        sc = scale[c]
        cm = mom[2, c, 4]
        x = cols[c]
        bc = bins[c]
        for k in range(npx):
            uk = np.uint64(k)
            v = x[uk]
            t = (v - l0) * sc          # clamped before the conversion: far outliers
            t = t if t < NBINS else float(NBINS)
            t = t if t > -1.0 else -1.0
            b = 1 + int(t)
            b = b if b < NBINS else NBINS - 1
            b = b if b > 1 else 1
            bc[uk] = b if v > cm else 0
        if c < 8:
            hist2(bins[c], 0, n0, h2, histf[0, c])
            hist2(bins[c], n0, npx, h2, histf[1, c])
        else:
            hist2(bins[8], 0, npx, h2, histf[2, 0])
    for c in range(1, 8):
        for b in range(NBINS):
            histf[2, c, b] = histf[0, c, b] + histf[1, c, b]

    # ---- order statistics: find the bins holding the wanted ranks in one sweep per channel
    # rank slot t = 2 qi + (0: floor index, 1: next index), qi as in _QS
    want_bin = np.zeros((3, 8, 6), np.int64)
    want_rank = np.zeros((3, 8, 6), np.int64)
    ranks = np.empty(6, np.int64)
    order = np.array([2, 3, 0, 1, 4, 5])  # rank slots in ascending rank
    nslot = 0
    slot_bin_count = np.zeros(3 * 8 * 6, np.int64)
    blocks = np.empty(NBINS // 32, np.int64)
    for r in range(3):
        n = cnt[r]
        if n == 0:
            continue
        for qi in range(3):
            v = (n - 1) * _QS[qi]
            ranks[2 * qi] = int(np.floor(v))
            ranks[2 * qi + 1] = min(ranks[2 * qi] + 1, n - 1)
        for c in range(8):
            hrc = histf[r, c]
            # counts of blocks of 32 bins first (a vectorised sum), then bins only inside
            # the blocks that hold a wanted rank
            for blk in range(NBINS // 32):
                sb = np.int64(0)
                for j in range(32):
                    sb += hrc[np.uint64(32 * blk + j)]
                blocks[blk] = sb
            cum = 0
            t = 0
            for blk in range(NBINS // 32):
                sb = blocks[blk]
                if t < 6 and ranks[order[t]] < cum + sb:
                    cb = cum
                    for b in range(32 * blk, 32 * blk + 32):
                        hb = hrc[b]
                        while t < 6 and ranks[order[t]] < cb + hb:
                            want_bin[r, c, order[t]] = b
                            want_rank[r, c, order[t]] = ranks[order[t]] - cb
                            if b > 0 and slot[r, c, b] < 0:
                                slot[r, c, b] = nslot
                                slot_bin_count[nslot] = hb
                                nslot += 1
                            t += 1
                        cb += hb
                if t == 6:
                    break
                cum += sb
    start = np.zeros(nslot + 1, np.int64)
    for s in range(nslot):
        start[s + 1] = start[s] + slot_bin_count[s]
    buf = np.empty(start[nslot])
    fill = start[:nslot].copy()
    # wanted[col, b]: bit r set when region r wants bin b of column col (column 8 holds the
    # cell's hue, so its bins are wanted by the cell, bit 2); one small-table look-up per
    # pixel and column, the slot table only for the few pixels in a wanted bin
    wanted = np.zeros((9, NBINS), np.uint8)
    for r in range(3):
        if cnt[r] == 0:
            continue
        for c in range(8):
            col = 8 if (c == 0 and r == 2) else c
            for t in range(6):
                if want_bin[r, c, t] > 0:
                    wanted[col, want_bin[r, c, t]] |= np.uint8(1 << r)
    for col in range(9):
        c = 0 if col == 8 else col
        for k in range(npx):
            b = bins[col, k]
            t = wanted[col, b]
            if t == 0:
                continue
            r = 1 if k >= n0 else 0
            if (t >> r) & 1:
                s = slot[r, c, b]
                buf[fill[s]] = cols[col, k]
                fill[s] += 1
            if (t >> 2) & 1:
                s = slot[2, c, b]
                buf[fill[s]] = cols[col, k]
                fill[s] += 1
    # ---- assemble real-valued stats
    for r in range(3):
        n = cnt[r]
        if n == 0:
            continue
        for c in range(8):
            row = stats[r, N8 + c]
            cc = 8 if (c == 0 and r == 2) else c
            mean = mom[r, cc, 0]
            # hue: moments of d; scipy's NaN rule uses the unwrapped mean mu + mean(d)
            _moments_to_stats(n, mean + (mu[r] if c == 0 else 0.0), mom[r, cc, 1],
                              mom[r, cc, 2], mom[r, cc, 3], row)
            row[0] = mean
            if mom[r, cc, 4] == mom[r, cc, 5]:  # a constant sample: no spread, no shape
                row[1] = 0.0
                row[5] = np.nan
                row[6] = np.nan
            for qi in range(3):
                # the wanted ranks within their bins, by selection (no sort); the bin of the
                # next rank is the same bin (rank + 1: the least value above the first) or the
                # next non-empty one (its rank 0)
                b0 = want_bin[r, c, 2 * qi]
                b1 = want_bin[r, c, 2 * qi + 1]
                k0 = want_rank[r, c, 2 * qi]
                k1 = want_rank[r, c, 2 * qi + 1]
                # bin 0 holds the column's minimum only (no slot, nothing gathered)
                cm = mom[2, cc, 4]
                s0 = slot[r, c, b0]
                s1 = slot[r, c, b1]
                seg0 = buf[start[s0]:start[s0 + 1]] if b0 > 0 else buf[:0]
                a = kth_smallest(seg0, seg0.size, k0) if b0 > 0 else cm
                if b1 != b0:
                    seg1 = buf[start[s1]:start[s1 + 1]]
                    b = kth_smallest(seg1, seg1.size, k1)
                elif k1 == k0 or b0 == 0:
                    b = a
                else:
                    b = min_from(seg0, k0 + 1, seg0.size)
                v = (n - 1) * _QS[qi]
                row[2 + qi] = _lerp(a, b, v - np.floor(v))
        # hue: location statistics back on the circle (turns in [0, 1))
        row = stats[r, N8]
        row[0] = mu[r]
        for s in range(2, 5):
            row[s] = (mu[r] + row[s]) % 1.0
