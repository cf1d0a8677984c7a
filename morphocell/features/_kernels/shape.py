"""numba kernels of the shape family (see :mod:`morphocell.features.shape` for the API).

Coordinates: ``r`` is the row (axis 0), ``c`` the column (axis 1). Hull and Feret kernels
work in *doubled* integer coordinates (``2 r``, ``2 c``), so pixel-edge midpoints
(``r +- 1/2``, ``c +- 1/2``) are integers and every hull/chord computation is exact.

Kernels fill arrays that the wrapper allocated (``runs``, ``border``, the border image,
level/point/hull buffers, EDT and union-find buffers, output vectors; see
:func:`alloc_workspace` and :func:`alloc_lobe_workspace` for the sizes); only small scratch
arrays of fixed or O(width) size are made inside. No kernel bounds-checks: the wrapper
guarantees the buffer sizes.

Per region :func:`region_shape` runs: :func:`scan_region` (one raster pass: runs, border
pixels, perimeter codes), :func:`boundary_radii`, :func:`central_moments` (orders <= 8 from
per-run prefix sums of column powers), :func:`hu_from_central`, the Zernike combination
(:func:`zernike_table`) and :func:`convex_and_feret` (exact integer hull, chords and
rotating calipers). :func:`curvature_contours` and :func:`edt_sq` + :func:`lobe_persistence`
serve the curvature features and the nuclear lobe count.

Output layout of :func:`region_shape` (named by ``morphocell.features.shape.CORE_NAMES``)::

    0 Area  1 Perimeter  2 ConvexArea  3 Solidity  4 Extent  5 Eccentricity
    6 MajorAxisLength  7 MinorAxisLength  8 EquivalentDiameter  9 Circularity
    10 Roundness  11 FeretMax  12 FeretMin  13 RadiusMin  14 RadiusMax  15 RadiusMean
    16 RadiusStd  17..23 Hu1..Hu7  24.. Zernike magnitudes (``ZERNIKE_NM`` order)
"""
from __future__ import annotations

from fractions import Fraction
from math import comb, factorial

import numpy as np
from numba import njit

__all__ = [
    "ZERNIKE_NM", "ZERNIKE_DEGREE", "ZERNIKE_ROWS", "N_CORE", "zernike_table",
    "alloc_workspace", "alloc_lobe_workspace", "scan_region", "central_moments",
    "hu_from_central", "convex_hull_levels", "chords", "convex_and_feret", "caliper_diameters",
    "boundary_radii", "region_shape", "contour_curvature", "curvature_accumulate",
    "curvature_contours", "edt_sq", "EDT_DIRECT_MAX", "lobe_persistence",
]

#: maximum Zernike degree (as mahotas' default ``degree=8``)
ZERNIKE_DEGREE = 8
#: (n, m) of the reported Zernike magnitudes. |Z_0_0| = 1/pi for every region and
#: |Z_1_1| = 0 at the centre of mass, so both are left out.
ZERNIKE_NM = tuple((n, m) for n in range(ZERNIKE_DEGREE + 1) for m in range(n + 1)
                   if (n - m) % 2 == 0 and (n, m) not in ((0, 0), (1, 1)))
_I_HU = 17   # first Hu invariant in the output of region_shape
_I_ZER = 24  # first Zernike magnitude
#: length of the output of :func:`region_shape` (the layout in the module docstring)
N_CORE = _I_ZER + len(ZERNIKE_NM)

# skimage.measure.perimeter (neighborhood=4): weight of each code
# 1 + 2 * (#4-neighbours on the border) + 10 * (#diagonal neighbours on the border)
_PERIM_W = np.zeros(50, dtype=np.float64)
_PERIM_W[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIM_W[[21, 33]] = np.sqrt(2.0)
_PERIM_W[[13, 23]] = (1.0 + np.sqrt(2.0)) / 2.0


def zernike_table(degree: int = ZERNIKE_DEGREE) -> tuple[np.ndarray, np.ndarray, list]:
    r"""Coefficients that turn scaled central moments into Zernike moments.

    mahotas' ``zernike_moments(im, radius, degree, cm)`` computes, over the pixels of the
    unit disc (``x = (c - c_m)/R``, ``y = (r - r_m)/R``, ``d = sqrt(x^2 + y^2)``, weights
    ``p = 1/N``),

    .. math:: Z_{nl} = \frac{n+1}{\pi} \sum p\, R_{nl}(d)\, \overline{((x + i y)/d)^l},
              \quad R_{nl}(d) = \sum_{m=0}^{(n-l)/2} (-1)^m
              \frac{(n-m)!}{m!\,(\frac{n+l}{2}-m)!\,(\frac{n-l}{2}-m)!}\, d^{\,n-2m}.

    Since :math:`R_{nl}(d)/d^l` is a polynomial in :math:`d^2 = x^2 + y^2`, each
    :math:`Z_{nl}` is a fixed complex combination of the moments
    :math:`M_{ij} = \sum y^i x^j` (``i + j <= degree``):
    ``Z[k] = (sum_ij (W_re[k,i,j] + 1j W_im[k,i,j]) M[i,j]) / N`` for the k-th (n, l).

    Returns ``(W_re, W_im, nl)`` with ``W_*`` of shape ``(len(nl), degree+1, degree+1)``.
    """
    nl = [(n, l) for n in range(degree + 1) for l in range(n + 1) if (n - l) % 2 == 0]
    w_re = np.zeros((len(nl), degree + 1, degree + 1))
    w_im = np.zeros_like(w_re)
    for k, (n, l) in enumerate(nl):
        poly: dict[tuple[int, int], complex] = {}  # (i: power of y, j: power of x) -> coef
        for m in range((n - l) // 2 + 1):
            c = Fraction((-1) ** m * factorial(n - m),
                         factorial(m) * factorial((n + l) // 2 - m) * factorial((n - l) // 2 - m))
            jj = (n - l) // 2 - m  # power of (x^2 + y^2)
            for t in range(jj + 1):          # (x^2+y^2)^jj = sum C(jj,t) x^2t y^2(jj-t)
                for s in range(l + 1):       # (x - i y)^l = sum C(l,s) x^(l-s) (-i y)^s
                    coef = complex(c * comb(jj, t) * comb(l, s)) * (-1j) ** s
                    key = (2 * (jj - t) + s, 2 * t + l - s)
                    poly[key] = poly.get(key, 0) + coef
        for (i, j), v in poly.items():
            w_re[k, i, j] = v.real * (n + 1) / np.pi
            w_im[k, i, j] = v.imag * (n + 1) / np.pi
    return w_re, w_im, nl


_ZW_RE, _ZW_IM, _ZNL = zernike_table()
#: rows of the table that are reported (ZERNIKE_NM), as an int array
ZERNIKE_ROWS = np.array([_ZNL.index(nm) for nm in ZERNIKE_NM], dtype=np.int64)


def alloc_workspace(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Buffers for :func:`region_shape` on an ``(h, w)`` mask (reusable across regions)."""
    nmax = h * w
    lev = 2 * h + 3
    npts = 2 * lev + 4
    return (
        np.empty((nmax // 2 + h + 1, 3), np.int64),   # runs (r, c0, c1)
        np.empty((nmax + 1, 2), np.int64),            # border pixels (r, c)
        np.empty((h + 2, w + 2), np.uint8),           # border image (padded by 1)
        np.empty(lev, np.int64), np.empty(lev, np.int64),          # level min/max x
        np.empty((npts, 2), np.int64), np.empty((npts, 2), np.int64),  # points, hull
        np.empty(max(h, w) + 2, np.int64), np.empty(max(h, w) + 2, np.int64),  # chords
        np.empty(max(h, w) + 2, np.int64), np.empty(max(h, w) + 2, np.int64),
    )


def alloc_lobe_workspace(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Buffers for :func:`edt_sq` + :func:`lobe_persistence` on masks up to ``(h, w)``:
    ``(g, dt2, sbuf, tbuf, order, parent, pers)``."""
    hh, ww = h + 2, w + 2
    return (np.empty(hh * ww, np.int32), np.empty(hh * ww, np.int32),
            np.empty(ww + 2, np.int64), np.empty(ww + 2, np.int64),
            np.empty(hh * ww, np.int32), np.empty(hh * ww, np.int32), np.empty(hh * ww))


# ---- pass 1: runs, border pixels, perimeter ------------------------------------------

@njit(cache=True, nogil=True)
def scan_region(mask, runs, border, bimg, sums):
    """One raster pass over a boolean mask, then one pass over its border pixels.

    Fills ``runs[k] = (r, c0, c1)`` (horizontal runs of mask pixels, raster order),
    ``border[k] = (r, c)`` (4-connectivity border pixels: ``mask & ~erode(mask, cross)``,
    outside the array counts as background), ``bimg`` (``uint8`` of shape ``(h+2, w+2)``,
    zeroed by the caller; the border image shifted by one pixel) and ``sums = (N, sum r,
    sum c, rmin, rmax, cmin, cmax)``. Returns ``(n_runs, n_border, perimeter)``.

    ``perimeter`` is scikit-image's ``measure.perimeter(mask, 4)``: each border pixel gets
    the code ``1 + 2 * (# 4-neighbours on the border) + 10 * (# diagonal neighbours on the
    border)`` and a weight (1 for codes 5, 7, 15, 17, 25, 27; sqrt(2) for 21, 33;
    (1 + sqrt(2))/2 for 13, 23; 0 otherwise); the perimeter is the sum of the weights.
    """
    h, w = mask.shape
    nr = 0
    nb = 0
    n = 0
    sr = 0
    sc = 0
    rmin = h
    rmax = -1
    cmin = w
    cmax = -1
    # per row, two byte rows computed in loops the compiler vectorises -- the run
    # transitions (1 where a pixel differs from its left neighbour, positions 0..w) and the
    # border flags -- then read 8 bytes at a time, so that background and run interiors
    # cost no branch per pixel
    wp = ((w + 1 + 7) // 8) * 8
    tb = np.zeros(wp, np.uint8)
    fb = np.zeros(wp, np.uint8)
    tw = tb.view(np.uint64)
    fw = fb.view(np.uint64)
    zero_row = np.zeros(w, np.uint8)
    one = np.uint8(1)
    for r in range(h):
        row = mask[r].view(np.uint8)
        up = mask[r - 1].view(np.uint8) if r > 0 else zero_row
        dn = mask[r + 1].view(np.uint8) if r < h - 1 else zero_row
        tb[0] = row[0]
        for c in range(1, w):
            tb[c] = row[c] ^ row[c - 1]
        tb[w] = row[w - 1]
        # border: in the mask with a 4-neighbour outside it (or outside the array)
        fb[0] = row[0]
        for c in range(1, w - 1):
            fb[c] = row[c] & ((row[c - 1] & row[c + 1] & up[c] & dn[c]) ^ one)
        fb[w - 1] = row[w - 1]
        any_run = False
        s = 0
        for q in range(wp // 8):
            if tw[q] == 0:
                continue
            for c in range(8 * q, 8 * q + 8):
                if tb[c] == 0:
                    continue
                if not any_run:
                    s = c
                    any_run = True
                    continue
                e = c - 1
                any_run = False
                runs[nr, 0] = r
                runs[nr, 1] = s
                runs[nr, 2] = e
                nr += 1
                k = e - s + 1
                n += k
                sr += r * k
                sc += (s + e) * k // 2
                if r < rmin:
                    rmin = r
                rmax = r
                if s < cmin:
                    cmin = s
                if e > cmax:
                    cmax = e
        if nr == 0 or runs[nr - 1, 0] != r:
            continue
        for q in range(wp // 8):
            if fw[q] == 0:
                continue
            for c in range(8 * q, 8 * q + 8):
                if fb[c] != 0:
                    border[nb, 0] = r
                    border[nb, 1] = c
                    bimg[r + 1, c + 1] = 1
                    nb += 1
    perim = 0.0
    for k in range(nb):
        r = border[k, 0] + 1
        cc = border[k, 1] + 1
        code = 1 + 2 * (bimg[r - 1, cc] + bimg[r + 1, cc] + bimg[r, cc - 1] + bimg[r, cc + 1])
        code += 10 * (bimg[r - 1, cc - 1] + bimg[r - 1, cc + 1] + bimg[r + 1, cc - 1]
                      + bimg[r + 1, cc + 1])
        perim += _PERIM_W[code]
    sums[0] = n
    sums[1] = sr
    sums[2] = sc
    sums[3] = rmin
    sums[4] = rmax
    sums[5] = cmin
    sums[6] = cmax
    return nr, nb, perim


# ---- moments --------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def central_moments(runs, n_runs, cr, cc, scale, cmin, cmax, order, prefix, mom):
    """Scaled central moments ``mom[i, j] = sum ((r - cr)/scale)^i ((c - cc)/scale)^j``
    over the pixels of ``runs[:n_runs]``, for ``i + j <= order``.

    Per run ``(r, c0, c1)`` the column sums ``sum_{c=c0..c1} x^j`` come from prefix sums
    (``prefix`` of shape ``(order+1, >= cmax - cmin + 2)``), so the cost is
    ``O(width * order + runs * order^2)`` instead of ``O(pixels * order^2)``.
    """
    for j in range(order + 1):
        prefix[j, 0] = 0.0
    for t in range(cmax - cmin + 1):
        x = (cmin + t - cc) / scale
        p = 1.0
        for j in range(order + 1):
            prefix[j, t + 1] = prefix[j, t] + p
            p *= x
    for i in range(order + 1):
        for j in range(order + 1):
            mom[i, j] = 0.0
    ypow = np.empty(order + 1)
    for k in range(n_runs):
        y = (runs[k, 0] - cr) / scale
        p = 1.0
        for i in range(order + 1):
            ypow[i] = p
            p *= y
        a = runs[k, 1] - cmin
        b = runs[k, 2] - cmin + 1
        for j in range(order + 1):
            sx = prefix[j, b] - prefix[j, a]
            for i in range(order + 1 - j):
                mom[i, j] += ypow[i] * sx


@njit(cache=True, nogil=True)
def hu_from_central(mu, out):
    """Hu's seven invariants from central moments ``mu[i, j]`` (row power i, column power j)
    via ``nu_ij = mu_ij / mu_00^((i+j)/2 + 1)`` (as ``skimage.measure.moments_hu``);
    ``out[6]`` is ``|Hu7|`` (Hu7 only changes sign under reflection)."""
    m00 = mu[0, 0]
    n20 = mu[2, 0] / m00 ** 2
    n02 = mu[0, 2] / m00 ** 2
    n11 = mu[1, 1] / m00 ** 2
    s3 = m00 ** 2.5
    n30 = mu[3, 0] / s3
    n03 = mu[0, 3] / s3
    n21 = mu[2, 1] / s3
    n12 = mu[1, 2] / s3
    t0 = n30 + n12
    t1 = n21 + n03
    q0 = t0 * t0
    q1 = t1 * t1
    n4 = 4.0 * n11
    s = n30 - 3.0 * n12
    t = 3.0 * n21 - n03
    out[0] = n20 + n02
    out[1] = (n20 - n02) ** 2 + n4 * n11
    out[2] = s * s + t * t
    out[3] = q0 + q1
    out[4] = s * t0 * (q0 - 3.0 * q1) + t * t1 * (3.0 * q0 - q1)
    out[5] = (n20 - n02) * (q0 - q1) + n4 * t0 * t1
    out[6] = abs(t * t0 * (q0 - 3.0 * q1) - s * t1 * (3.0 * q0 - q1))


# ---- convex hull, convex area, Feret ---------------------------------------------------

@njit(cache=True, nogil=True)
def _cross(o0, o1, a0, a1, b0, b1):
    return (a0 - o0) * (b1 - o1) - (a1 - o1) * (b0 - o0)


@njit(cache=True, nogil=True)
def convex_hull_levels(y0, lev_lo, lev_hi, n_lev, pts, hull):
    """Convex hull (Andrew's monotone chain, collinear points dropped) of the points
    ``(y0 + k, lev_lo[k])`` and ``(y0 + k, lev_hi[k])`` for every level ``k`` with
    ``lev_lo[k] <= lev_hi[k]`` (integer coordinates; only the extreme x of a level can be a
    hull vertex). Writes the vertices, counter-clockwise in (y, x), to ``hull``; returns
    their number."""
    npt = 0
    for k in range(n_lev):
        if lev_lo[k] <= lev_hi[k]:
            pts[npt, 0] = y0 + k
            pts[npt, 1] = lev_lo[k]
            npt += 1
            if lev_hi[k] != lev_lo[k]:
                pts[npt, 0] = y0 + k
                pts[npt, 1] = lev_hi[k]
                npt += 1
    if npt <= 2:
        for i in range(npt):
            hull[i, 0] = pts[i, 0]
            hull[i, 1] = pts[i, 1]
        return npt
    m = 0
    for i in range(npt):  # lower chain
        while m >= 2 and _cross(hull[m - 2, 0], hull[m - 2, 1], hull[m - 1, 0], hull[m - 1, 1],
                                pts[i, 0], pts[i, 1]) <= 0:
            m -= 1
        hull[m, 0] = pts[i, 0]
        hull[m, 1] = pts[i, 1]
        m += 1
    lo = m + 1
    for i in range(npt - 2, -1, -1):  # upper chain
        while m >= lo and _cross(hull[m - 2, 0], hull[m - 2, 1], hull[m - 1, 0], hull[m - 1, 1],
                                 pts[i, 0], pts[i, 1]) <= 0:
            m -= 1
        hull[m, 0] = pts[i, 0]
        hull[m, 1] = pts[i, 1]
        m += 1
    return m - 1


@njit(cache=True, nogil=True)
def chords(hull, nh, axis, k0, k1, out_lo, out_hi):
    """Integer grid points of a closed convex polygon (doubled coordinates), line by line.

    For each pixel line ``k`` in ``k0..k1`` (``axis=0``: rows, the line ``2r = 2k``;
    ``axis=1``: columns), ``out_lo[k-k0]..out_hi[k-k0]`` are the pixel indices along the
    other axis whose doubled coordinate lies inside or on the polygon (empty when
    ``lo > hi``). Exact integer arithmetic (as ``grid_points_in_poly`` with borders)."""
    big = 1 << 60
    for k in range(k1 - k0 + 1):
        out_lo[k] = big
        out_hi[k] = -big
    for e in range(nh):
        f = e + 1 if e + 1 < nh else 0
        py = hull[e, axis]
        px = hull[e, 1 - axis]
        qy = hull[f, axis]
        qx = hull[f, 1 - axis]
        if py == qy:  # edge along a line (only matters on a pixel line, py even)
            if py % 2 == 0:
                k = py // 2 - k0
                a = -((-min(px, qx)) // 2)
                b = max(px, qx) // 2
                if a < out_lo[k]:
                    out_lo[k] = a
                if b > out_hi[k]:
                    out_hi[k] = b
            continue
        den = qy - py
        ya = min(py, qy)
        yb = max(py, qy)
        d2 = 2.0 * den
        for k in range(-((-ya) // 2), yb // 2 + 1):
            # x / 2 = num / d2 exactly; float floor/ceil are exact here (|num| < 2^53 and a
            # non-integer quotient is >= 1/|d2| away from an integer)
            xq = (px * den + (qx - px) * (2 * k - py)) / d2
            a = int(np.ceil(xq))
            b = int(np.floor(xq))
            i = k - k0
            if a < out_lo[i]:
                out_lo[i] = a
            if b > out_hi[i]:
                out_hi[i] = b


@njit(cache=True, nogil=True)
def convex_and_feret(runs, n_runs, rmin, rmax, cmin, cmax, lev_lo, lev_hi, pts, hull,
                     ch_lo, ch_hi, cl_lo, cl_hi, out):
    """Convex area and Feret diameters of the pixels of ``runs``.

    * Convex image (as ``skimage.morphology.convex_hull_image``): pixels whose centre lies
      inside or on the convex hull of the pixels' edge midpoints ``(r +- 1/2, c)``,
      ``(r, c +- 1/2)``. ``out[0]`` = its pixel count (regionprops ``area_convex``).
    * Feret diameters (as regionprops ``feret_diameter_max``): on the points where the
      convex image's 0.5 iso-contour crosses pixel edges, i.e. the midpoints between each
      convex-image pixel and its 4-neighbours outside it. ``out[1]`` = largest distance
      between two of them; ``out[2]`` = smallest caliper width of their convex hull (the
      minimum over hull edges of the farthest hull vertex from the edge's line; a minimal
      width is always attained with one caliper flush with a hull edge).
    """
    nlev = 2 * (rmax - rmin) + 3
    y0 = 2 * rmin - 1
    big = 1 << 60
    for k in range(nlev):
        lev_lo[k] = big
        lev_hi[k] = -big
    for k in range(n_runs):  # extremes of the edge midpoints per doubled row level
        r = runs[k, 0]
        a = 2 * runs[k, 1]
        b = 2 * runs[k, 2]
        i = 2 * r - y0  # levels 2r-1 (top edges), 2r (side edges), 2r+1 (bottom edges)
        if a < lev_lo[i - 1]:
            lev_lo[i - 1] = a
        if b > lev_hi[i - 1]:
            lev_hi[i - 1] = b
        if a - 1 < lev_lo[i]:
            lev_lo[i] = a - 1
        if b + 1 > lev_hi[i]:
            lev_hi[i] = b + 1
        if a < lev_lo[i + 1]:
            lev_lo[i + 1] = a
        if b > lev_hi[i + 1]:
            lev_hi[i + 1] = b
    nh = convex_hull_levels(y0, lev_lo, lev_hi, nlev, pts, hull)
    # rows and columns of the convex image
    chords(hull, nh, 0, rmin, rmax, ch_lo, ch_hi)
    chords(hull, nh, 1, cmin, cmax, cl_lo, cl_hi)
    area = 0
    for k in range(rmax - rmin + 1):
        if ch_hi[k] >= ch_lo[k]:
            area += ch_hi[k] - ch_lo[k] + 1
    out[0] = area
    # crack points of the convex image, extremes per doubled level
    for k in range(nlev):
        lev_lo[k] = big
        lev_hi[k] = -big
    for k in range(rmax - rmin + 1):
        if ch_hi[k] >= ch_lo[k]:
            i = 2 * (rmin + k) - y0
            lev_lo[i] = 2 * ch_lo[k] - 1
            lev_hi[i] = 2 * ch_hi[k] + 1
    for k in range(cmax - cmin + 1):
        if cl_hi[k] >= cl_lo[k]:
            x = 2 * (cmin + k)
            i = 2 * cl_lo[k] - 1 - y0
            if x < lev_lo[i]:
                lev_lo[i] = x
            if x > lev_hi[i]:
                lev_hi[i] = x
            i = 2 * cl_hi[k] + 1 - y0
            if x < lev_lo[i]:
                lev_lo[i] = x
            if x > lev_hi[i]:
                lev_hi[i] = x
    nh = convex_hull_levels(y0, lev_lo, lev_hi, nlev, pts, hull)
    fm = np.empty(2)
    caliper_diameters(hull, nh, fm)
    out[1] = fm[0] / 2.0
    out[2] = fm[1] / 2.0


@njit(cache=True, nogil=True)
def caliper_diameters(hull, nh, out):
    """Rotating calipers on a convex polygon (``hull[:nh]``, counter-clockwise, no three
    collinear vertices, integer coordinates): ``out = (largest vertex-to-vertex distance,
    smallest width)``. For each edge ``(i, i+1)`` the antipodal vertex ``j`` (farthest from
    the edge's line; it only moves forward) gives the width candidate
    ``cross(e, h_j - h_i) / |e|``; the diameter is attained at an antipodal pair, so the
    pairs ``(i, j), (i+1, j), (i, j+1), (i+1, j+1)`` visited cover it. O(nh)."""
    if nh == 1:
        out[0] = 0.0
        out[1] = 0.0
        return
    if nh == 2:
        d0 = hull[1, 0] - hull[0, 0]
        d1 = hull[1, 1] - hull[0, 1]
        out[0] = np.sqrt(float(d0 * d0 + d1 * d1))
        out[1] = 0.0
        return
    j = 1
    dmax = 0
    wmin = np.inf
    for i in range(nh):
        i1 = i + 1 if i + 1 < nh else 0
        e0 = hull[i1, 0] - hull[i, 0]
        e1 = hull[i1, 1] - hull[i, 1]
        while True:
            j1 = j + 1 if j + 1 < nh else 0
            cj = e0 * (hull[j, 1] - hull[i, 1]) - e1 * (hull[j, 0] - hull[i, 0])
            cj1 = e0 * (hull[j1, 1] - hull[i, 1]) - e1 * (hull[j1, 0] - hull[i, 0])
            if cj1 > cj:
                j = j1
            else:
                break
        wd = cj / np.sqrt(float(e0 * e0 + e1 * e1))
        if wd < wmin:
            wmin = wd
        for t in range(4):
            a = i if t < 2 else i1
            b = j if t % 2 == 0 else j1
            d0 = hull[a, 0] - hull[b, 0]
            d1 = hull[a, 1] - hull[b, 1]
            d = d0 * d0 + d1 * d1
            if d > dmax:
                dmax = d
    out[0] = np.sqrt(float(dmax))
    out[1] = wmin


# ---- radii ----------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def boundary_radii(border, n_border, cr, cc, out):
    """Distances from the centroid ``(cr, cc)`` to the centres of the border pixels:
    ``out = (min, max, mean, std)`` (population std, ``ddof=0``)."""
    dmin = np.inf
    dmax = 0.0
    s = 0.0
    for k in range(n_border):
        d0 = border[k, 0] - cr
        d1 = border[k, 1] - cc
        d = np.sqrt(d0 * d0 + d1 * d1)
        s += d
        if d < dmin:
            dmin = d
        if d > dmax:
            dmax = d
    mean = s / n_border
    v = 0.0
    for k in range(n_border):
        d0 = border[k, 0] - cr
        d1 = border[k, 1] - cc
        d = np.sqrt(d0 * d0 + d1 * d1) - mean
        v += d * d
    out[0] = dmin
    out[1] = dmax
    out[2] = mean
    out[3] = np.sqrt(v / n_border)


# ---- everything per region -----------------------------------------------------------

@njit(cache=True, nogil=True)
def region_shape(mask, runs, border, bimg, lev_lo, lev_hi, pts, hull, ch_lo, ch_hi, cl_lo, cl_hi,
                 zw_re, zw_im, z_rows, out, aux):
    """All moment/hull/boundary shape features of one boolean mask (the layout in the module
    docstring).

    ``out`` is filled with NaN for an empty mask. ``aux`` (8 floats) receives ``(N,
    centroid r, centroid c, Zernike radius, rmin, rmax, cmin, cmax)``. Returns the number
    of border pixels.
    """
    sums = np.empty(7, np.int64)
    bimg[:, :] = 0
    n_runs, n_border, perim = scan_region(mask, runs, border, bimg, sums)
    n = sums[0]
    if n == 0:
        for i in range(out.shape[0]):
            out[i] = np.nan
        aux[0] = 0.0
        for i in range(1, 8):
            aux[i] = np.nan
        return 0
    rmin, rmax, cmin, cmax = sums[3], sums[4], sums[5], sums[6]
    area = float(n)
    cr = sums[1] / area
    cc = sums[2] / area
    # radii -> Zernike disc radius (covers every pixel centre)
    rad = np.empty(4)
    boundary_radii(border, n_border, cr, cc, rad)
    zr = rad[1] + 0.5
    order = zw_re.shape[1] - 1
    prefix = np.empty((order + 1, cmax - cmin + 2))
    mom = np.empty((order + 1, order + 1))
    central_moments(runs, n_runs, cr, cc, zr, cmin, cmax, order, prefix, mom)
    mom[1, 0] = 0.0  # exactly zero at the centroid
    mom[0, 1] = 0.0
    # unscaled central moments up to order 3
    mu = np.empty((4, 4))
    for i in range(4):
        for j in range(4 - i):
            mu[i, j] = mom[i, j] * zr ** (i + j)
    # inertia tensor eigenvalues (skimage: T = [[mu02, -mu11], [-mu11, mu20]] / mu00)
    a = mu[2, 0] / area
    b = mu[1, 1] / area
    c = mu[0, 2] / area
    half = 0.5 * (a + c)
    dis = np.sqrt(0.25 * (a - c) ** 2 + b * b)
    l1 = half + dis
    l2 = max(half - dis, 0.0)
    cf = np.empty(3)
    convex_and_feret(runs, n_runs, rmin, rmax, cmin, cmax, lev_lo, lev_hi, pts, hull,
                     ch_lo, ch_hi, cl_lo, cl_hi, cf)
    major = 4.0 * np.sqrt(l1)
    out[0] = area
    out[1] = perim
    out[2] = cf[0]
    out[3] = area / cf[0]
    out[4] = area / ((rmax - rmin + 1) * (cmax - cmin + 1))
    out[5] = np.sqrt(1.0 - l2 / l1) if l1 > 0 else 0.0
    out[6] = major
    out[7] = 4.0 * np.sqrt(l2)
    out[8] = np.sqrt(4.0 * area / np.pi)
    out[9] = 4.0 * np.pi * area / (perim * perim) if perim > 0 else np.nan
    out[10] = 4.0 * area / (np.pi * major * major) if major > 0 else np.nan
    out[11] = cf[1]
    out[12] = cf[2]
    out[13] = rad[0]
    out[14] = rad[1]
    out[15] = rad[2]
    out[16] = rad[3]
    hu_from_central(mu, out[_I_HU:_I_HU + 7])
    for k in range(z_rows.shape[0]):
        t = z_rows[k]
        zre = 0.0
        zim = 0.0
        for i in range(order + 1):
            for j in range(order + 1 - i):
                zre += zw_re[t, i, j] * mom[i, j]
                zim += zw_im[t, i, j] * mom[i, j]
        out[_I_ZER + k] = np.sqrt(zre * zre + zim * zim) / area
    aux[0] = area
    aux[1] = cr
    aux[2] = cc
    aux[3] = zr
    aux[4] = rmin
    aux[5] = rmax
    aux[6] = cmin
    aux[7] = cmax
    return n_border


# ---- curvature ------------------------------------------------------------------------

#: squared floor of the speed |(x', y')| in the curvature denominator (see contour_curvature)
MIN_SPEED_SQ = 0.01

@njit(cache=True, nogil=True)
def contour_curvature(pts, n, step, sigma, xs, ys, kappa):
    """Signed curvature of a closed pixel contour at a fixed arc-length step.

    1. ``pts[:n]`` = contour points ``(x, y)`` (e.g. pixel centres from
       ``cv2.findContours(..., CHAIN_APPROX_NONE)``), closed (last joins first).
    2. Resample the closed polygon at ``M = max(round(L / step), 3)`` points equally spaced
       in arc length (``ds = L / M``; linear interpolation), into ``xs, ys``.
    3. Smooth ``x(s), y(s)`` with a circular Gaussian of standard deviation ``sigma`` px
       (``sigma / ds`` samples, truncated at 4 sigma and renormalised).
    4. Central differences: ``x' = (x[i+1] - x[i-1]) / (2 ds)``,
       ``x'' = (x[i+1] - 2 x[i] + x[i-1]) / ds^2``;
       ``kappa = (x' y'' - y' x'') / max(x'^2 + y'^2, MIN_SPEED^2)^(3/2)``, sign chosen so
       that the total turning ``sum kappa ds`` is positive (convex parts of an outer
       boundary > 0). The speed of the resampled curve is ~1; it falls towards 0 only where
       smoothing folds a one-pixel spike onto itself (out and back), where the curvature is
       undefined: the floor ``MIN_SPEED = 0.1`` keeps it finite there (without it values
       of 1e50 were seen on such contours).

    ``xs``, ``ys``, ``kappa`` need ``>= M`` entries. Returns ``(M, ds, L)``.
    """
    L = 0.0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        L += np.sqrt((pts[j, 0] - pts[i, 0]) ** 2 + (pts[j, 1] - pts[i, 1]) ** 2)
    m = max(int(np.round(L / step)), 3)
    ds = L / m
    # resample
    seg = 0
    seg_start = 0.0
    j = 1 if n > 1 else 0
    seg_len = np.sqrt((pts[j, 0] - pts[0, 0]) ** 2 + (pts[j, 1] - pts[0, 1]) ** 2)
    for k in range(m):
        s = k * ds
        while seg_start + seg_len < s and seg < n - 1:
            seg_start += seg_len
            seg += 1
            j = seg + 1 if seg + 1 < n else 0
            seg_len = np.sqrt((pts[j, 0] - pts[seg, 0]) ** 2 + (pts[j, 1] - pts[seg, 1]) ** 2)
        j = seg + 1 if seg + 1 < n else 0
        t = (s - seg_start) / seg_len if seg_len > 0 else 0.0
        t = min(max(t, 0.0), 1.0)
        xs[k] = pts[seg, 0] + t * (pts[j, 0] - pts[seg, 0])
        ys[k] = pts[seg, 1] + t * (pts[j, 1] - pts[seg, 1])
    # circular Gaussian smoothing
    sg = sigma / ds
    half = int(np.ceil(4.0 * sg))
    wts = np.empty(2 * half + 1)
    tot = 0.0
    for i in range(2 * half + 1):
        u = (i - half) / sg
        wts[i] = np.exp(-0.5 * u * u)
        tot += wts[i]
    ext = np.empty((2, m + 2 * half))  # circular padding instead of a modulo per tap
    for k in range(m + 2 * half):  # index (k - half) mod m without a division per sample
        idx = k - half
        while idx < 0:
            idx += m
        while idx >= m:
            idx -= m
        ext[0, k] = xs[idx]
        ext[1, k] = ys[idx]
    # taps outer, samples inner: each sample's sum still adds its taps in order from 0.0
    # (the same value, bit for bit, as a per-sample loop), and the inner loop over
    # independent samples vectorises (a per-sample sum waits on its previous addition)
    sx = np.zeros(m)
    sy = np.zeros(m)
    ex = ext[0]
    ey = ext[1]
    for i in range(2 * half + 1):
        wi = wts[i]
        for k in range(m):
            sx[k] += wi * ex[k + i]
            sy[k] += wi * ey[k + i]
    for k in range(m):
        sx[k] = sx[k] / tot
        sy[k] = sy[k] / tot
    turn = 0.0
    for k in range(m):
        kp = k + 1 if k + 1 < m else 0
        km = k - 1 if k > 0 else m - 1
        dx = (sx[kp] - sx[km]) / (2 * ds)
        dy = (sy[kp] - sy[km]) / (2 * ds)
        ddx = (sx[kp] - 2 * sx[k] + sx[km]) / (ds * ds)
        ddy = (sy[kp] - 2 * sy[k] + sy[km]) / (ds * ds)
        sp = dx * dx + dy * dy
        sp = max(sp, MIN_SPEED_SQ)
        kappa[k] = (dx * ddy - dy * ddx) / (sp * np.sqrt(sp))
        turn += kappa[k]
    if turn < 0:
        for k in range(m):
            kappa[k] = -kappa[k]
    return m, ds, L


@njit(cache=True, nogil=True)
def curvature_accumulate(pts, n, step, sigma, xs, ys, kappa, acc):
    """Run :func:`contour_curvature` on one contour and add it to ``acc``:
    ``acc += (sum ds, sum kappa ds, sum kappa^2 ds, -, -, sum_{kappa<0} ds,
    L * BE_c, L)`` and ``acc[3] = min(acc[3], min kappa)``, ``acc[4] = max(acc[4], max
    kappa)``, where ``BE_c = L * sum kappa^2 ds / (4 pi^2)`` is the contour's normalised
    bending energy (1 for a circle, > 1 otherwise)."""
    m, ds, L = contour_curvature(pts, n, step, sigma, xs, ys, kappa)
    s1 = 0.0
    s2 = 0.0
    neg = 0
    for k in range(m):
        v = kappa[k]
        s1 += v
        s2 += v * v
        if v < 0:
            neg += 1
        if v < acc[3]:
            acc[3] = v
        if v > acc[4]:
            acc[4] = v
    acc[0] += m * ds
    acc[1] += s1 * ds
    acc[2] += s2 * ds
    acc[5] += neg * ds
    acc[6] += L * (L * s2 * ds / (4.0 * np.pi * np.pi))
    acc[7] += L


@njit(cache=True, nogil=True)
def curvature_contours(pts, offsets, step, sigma, min_length, cbuf, xs, ys, kappa, out):
    """Curvature statistics over the contours ``pts[offsets[i]:offsets[i+1]]`` whose closed
    arc length is at least ``min_length`` (:func:`curvature_accumulate` on each).

    Each contour is first rotated (cyclically, into ``cbuf``, float64 ``(>= n, 2)``) to
    start at its point farthest from the mean of its points, so that the arc-length samples
    do not depend on where the tracer happened to start: the result is then the same under
    90-degree rotations, flips and translations of the mask (equal arc-length samples from
    a fixed start are the same point set in both directions of travel).

    ``out`` (6) receives ``(mean, std, min, max, concave fraction, bending energy)``:
    ``mean = sum kappa ds / sum ds``, ``std = sqrt(sum kappa^2 ds / sum ds - mean^2)``,
    ``concave fraction = sum_{kappa<0} ds / sum ds``, bending energy = length-weighted mean
    of the contours' ``L * sum kappa^2 ds / (4 pi^2)``; all NaN when no contour is long
    enough. Returns the number of contours used.
    """
    acc = np.zeros(8)
    acc[3] = np.inf
    acc[4] = -np.inf
    used = 0
    for i in range(offsets.shape[0] - 1):
        a = offsets[i]
        b = offsets[i + 1]
        n = b - a
        L = 0.0
        for k in range(a, b):
            j = k + 1 if k + 1 < b else a
            L += np.sqrt(float((pts[j, 0] - pts[k, 0]) ** 2 + (pts[j, 1] - pts[k, 1]) ** 2))
        if L < min_length:
            continue
        mx = 0.0
        my = 0.0
        for k in range(a, b):
            mx += pts[k, 0]
            my += pts[k, 1]
        mx /= n
        my /= n
        best = -1.0
        k0 = a
        for k in range(a, b):
            d = (pts[k, 0] - mx) ** 2 + (pts[k, 1] - my) ** 2
            if d > best:
                best = d
                k0 = k
        for k in range(n):
            src = k0 + k
            if src >= b:
                src -= n
            cbuf[k, 0] = pts[src, 0]
            cbuf[k, 1] = pts[src, 1]
        curvature_accumulate(cbuf, n, step, sigma, xs, ys, kappa, acc)
        used += 1
    if used == 0:
        for i in range(6):
            out[i] = np.nan
        return 0
    mean = acc[1] / acc[0]
    out[0] = mean
    out[1] = np.sqrt(max(acc[2] / acc[0] - mean * mean, 0.0))
    out[2] = acc[3]
    out[3] = acc[4]
    out[4] = acc[5] / acc[0]
    out[5] = acc[6] / acc[7]
    return used


#: rows of :func:`edt_sq` whose nearest background lies within this many columns take the
#: direct minimum over column offsets (vectorised); wider rows the lower-envelope sweep
EDT_DIRECT_MAX = 64


@njit(cache=True, nogil=True)
def edt_sq(mask, r0, r1, c0, c1, g, dt2, sbuf, tbuf):
    """Exact squared Euclidean distance transform of ``mask[r0:r1+1, c0:c1+1]``.

    ``dt2`` (flat int32, size >= ``hh * ww`` with ``hh = r1-r0+3``, ``ww = c1-c0+3``)
    receives, row-major with stride ``ww`` and a one-pixel frame of zeros, the squared
    distance from each mask pixel centre to the nearest pixel centre outside the mask
    (outside the box counts as outside) -- the values of
    ``scipy.ndimage.distance_transform_edt(padded mask) ** 2``. Meijster, Roerdink &
    Hesselink (2000): a column pass (vertical distances ``g``), then per row
    ``dt2(x) = min_u (x - u)^2 + g(u)^2``. The minimising ``u`` lies within ``D`` columns
    of ``x``, where ``D`` is the row's largest ``min(g(x), x - lo + 1, hi + 1 - x)``
    (``lo``, ``hi``: the row's first / last mask column; each term is the distance to a
    background pixel, so ``dt2(x) <= D^2``). Rows with ``D <= EDT_DIRECT_MAX`` take that
    minimum directly, offset by offset over the whole row (integer min / add, vectorised:
    ~3x faster than the sweep on PBC nuclei); wider rows use the lower envelope of the
    parabolas ``(x - u)^2 + g(u)^2`` (integer arithmetic; the separator ``floor(num /
    den)`` is taken in float64, exact since ``|num| < 2^53`` and a non-integer quotient is
    at least ``1/den`` away from an integer), linear in the row's width. Both are exact
    integer minima, so the choice never changes a value.
    ``g``: flat int32 buffer like ``dt2``; ``sbuf``, ``tbuf``: int64, length >= ww.
    """
    hh = r1 - r0 + 3
    ww = c1 - c0 + 3
    n2 = ww - 2
    g[:ww] = 0
    g[(hh - 1) * ww:hh * ww] = 0
    # vertical distances, down then up; on row slices (non-negative indices: vectorises)
    for y in range(1, hh - 1):
        mrow = mask[r0 + y - 1, c0:c1 + 1]
        o = y * ww
        row = g[o + 1:o + 1 + n2]
        above = g[o - ww + 1:o - ww + 1 + n2]
        g[o] = 0
        g[o + ww - 1] = 0
        for x in range(n2):  # branch-free: (g_above + 1) * mask
            row[x] = (above[x] + 1) * np.int32(mrow[x])
    for y in range(hh - 2, 0, -1):
        o = y * ww
        row = g[o + 1:o + 1 + n2]
        below = g[o + ww + 1:o + ww + 1 + n2]
        for x in range(n2):
            row[x] = min(row[x], below[x] + 1)
    dt2[:ww] = 0
    dt2[(hh - 1) * ww:hh * ww] = 0
    pad = EDT_DIRECT_MAX
    g2 = np.zeros(ww + 2 * pad, np.int32)  # g^2 of the row, zero-padded by the widest offset
    cur = np.empty(ww, np.int32)
    for y in range(1, hh - 1):
        o = y * ww
        # Only columns lo-1..hi+1 (lo, hi: first/last mask pixel of the row) matter: every
        # other column of the row is background (g = 0) and farther than lo-1 or hi+1.
        lo = 1
        while lo < ww - 1 and g[o + lo] == 0:
            lo += 1
        dt2[o:o + ww] = 0
        if lo == ww - 1:
            continue
        hi = ww - 2
        while g[o + hi] == 0:
            hi -= 1
        reach = 0
        for x in range(lo, hi + 1):
            reach = max(reach, min(g[o + x], min(x - lo + 1, hi + 1 - x)))
        if reach <= EDT_DIRECT_MAX:
            n = hi + 1 - lo
            grow = g[o + lo:o + lo + n]
            gsq = g2[pad + lo:pad + lo + n]
            c = cur[:n]
            for x in range(n):
                v = grow[x]
                gsq[x] = v * v
                c[x] = v * v
            for d in range(1, reach + 1):
                dd = np.int32(d * d)
                left = g2[pad + lo - d:pad + lo - d + n]
                right = g2[pad + lo + d:pad + lo + d + n]
                for x in range(n):  # int32 throughout, so that it vectorises
                    c[x] = min(c[x], np.int32(min(left[x], right[x]) + dd))
            dt2[o + lo:o + lo + n] = c
            gsq[:] = 0
            continue
        u0 = lo - 1
        u1 = hi + 1
        q = 0
        sbuf[0] = u0
        tbuf[0] = u0
        for u in range(u0 + 1, u1 + 1):
            gu = g[o + u]
            while q >= 0:
                sq = sbuf[q]
                gs = g[o + sq]
                a = tbuf[q] - sq
                b = tbuf[q] - u
                if a * a + gs * gs > b * b + gu * gu:
                    q -= 1
                else:
                    break
            if q < 0:
                q = 0
                sbuf[0] = u
                tbuf[0] = u0
            else:
                sq = sbuf[q]
                gs = g[o + sq]
                num = u * u - sq * sq + gu * gu - gs * gs
                wsep = 1 + int(np.floor(num / (2.0 * (u - sq))))
                if wsep <= u1:
                    q += 1
                    sbuf[q] = u
                    tbuf[q] = wsep
        for u in range(u1, u0 - 1, -1):
            sq = sbuf[q]
            gs = g[o + sq]
            dt2[o + u] = (u - sq) * (u - sq) + gs * gs
            if u == tbuf[q]:
                q -= 1


@njit(cache=True, nogil=True)
def lobe_persistence(dt2, hh, ww, order, parent, pers):
    """Persistence of the maxima of a distance map (0-dimensional persistent homology of
    its superlevel sets, 8-connectivity).

    ``dt2`` (flat int32, row-major ``hh x ww``) holds exact squared distances with a frame
    of zeros (as :func:`edt_sq` writes). Pixels with ``dt2 > 0`` are added in decreasing
    distance (ties: raster order; counting sort); a pixel with no earlier neighbour starts
    a component born at its distance ``sqrt(dt2)``; when a pixel joins components the older
    one (added first: larger ``dt2``, then earlier in raster order) survives and each
    younger one dies with persistence ``birth - distance(pixel)``. Components alive at the
    end get persistence = their birth. Fills ``pers`` (one entry per maximum) and returns
    their number. Buffers: ``order`` and ``parent`` int32 of size ``>= hh * ww``.
    """
    n = hh * ww
    maxv = 0
    for i in range(n):
        if dt2[i] > maxv:
            maxv = dt2[i]
    cnt = np.zeros(maxv + 2, np.int64)
    for i in range(n):
        cnt[dt2[i]] += 1
    s = 0
    for v in range(maxv, 0, -1):  # start offsets, descending values
        c = cnt[v]
        cnt[v] = s
        s += c
    for i in range(n):
        v = dt2[i]
        parent[i] = -1
        if v > 0:
            order[cnt[v]] = i
            cnt[v] += 1
    npk = 0
    nb = np.empty(8, np.int64)  # 8-neighbour offsets (an array loop is much faster than a
    nb[0] = -ww - 1             # loop over a tuple in numba)
    nb[1] = -ww
    nb[2] = -ww + 1
    nb[3] = -1
    nb[4] = 1
    nb[5] = ww - 1
    nb[6] = ww
    nb[7] = ww + 1
    for k in range(s):
        p = order[k]
        parent[p] = p
        a = p  # current root of p's component
        for j in range(8):
            q = p + nb[j]
            b = parent[q]
            if b < 0:
                continue
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            if a == b:
                continue
            if a == p:  # p joins an existing component: p is no maximum
                parent[p] = b
                a = b
                continue
            # roots are birth pixels; the elder was added first
            da = dt2[a]
            db = dt2[b]
            if da < db or (da == db and a > b):
                a, b = b, a
                db = da
            pers[npk] = np.sqrt(float(db)) - np.sqrt(float(dt2[p]))
            npk += 1
            parent[b] = a
    for k in range(s):
        p = order[k]
        if parent[p] == p:
            pers[npk] = np.sqrt(float(dt2[p]))
            npk += 1
    return npk
