"""numba kernels of the texture family (GLCM / Haralick, uniform LBP, granularity).

Every kernel is ``@njit(cache=True, nogil=True)`` and only fills arrays that the wrapper in
:mod:`morphocell.features.texture` allocated. Region labels are passed as one ``uint8`` image
``lab`` (0 background, 1 nucleus, 2 cytoplasm); the cell is ``lab != 0``. Because nucleus and
cytoplasm are disjoint, every per-cell quantity is a sum of a nucleus part, a cytoplasm part
and (for pixel pairs) a mixed nucleus/cytoplasm part, so one pass serves all three regions.

References: ``tests/reference.py`` (slow versions), mahotas ``haralick``, scikit-image
``graycomatrix`` / ``graycoprops`` / ``local_binary_pattern``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .crop import hist2

__all__ = [
    "N_HARALICK", "labels_levels", "assemble", "glcm_counts", "haralick_from_counts",
    "lbp_uniform_counts", "granularity_signal", "granularity_sums", "granularity_spectra",
]

#: number of Haralick features computed by :func:`haralick_from_counts`
N_HARALICK = 13


@njit(cache=True, nogil=True)
def labels_levels(nucleus, cytoplasm, gray, shift, lab, q):
    """One pass: ``lab = nucleus + 2 (cytoplasm & ~nucleus)`` (0 background, 1 nucleus, 2
    cytoplasm; the nucleus wins overlaps) and the GLCM levels ``q = gray >> shift``; returns
    the pixel counts ``(n nucleus, n cytoplasm)``."""
    h, w = gray.shape
    n1 = 0
    n2 = 0
    for r in range(h):
        for c in range(w):
            a = np.uint8(nucleus[r, c])
            b = np.uint8(cytoplasm[r, c]) & (a ^ np.uint8(1))
            lab[r, c] = a + (b << np.uint8(1))
            q[r, c] = gray[r, c] >> np.uint8(shift)
            n1 += a
            n2 += b
    return n1, n2


@njit(cache=True, nogil=True)
def assemble(har, lbp, n_ps, sums, n1, n2, out):
    """The texture vector of the three regions (nucleus, cytoplasm, cell) in column order:
    per region the Haralick features ``har[region]`` (distance-major), the LBP histograms of
    each (P, R) in turn as fractions of the region's pixels (``lbp[j, 0]`` nucleus, ``lbp[j,
    1]`` cytoplasm, their sum the cell), then the granularity spectrum ``100 (S_i - S_{i+1})
    / S_0`` from the opening sums ``sums[i, 0 | 1]`` (0 when ``S_0 = 0``); NaN for the LBP
    and granularity of an empty region. The arithmetic is numpy's on the same arrays."""
    nd = har.shape[1]
    nh = har.shape[2]
    n_steps = sums.shape[0] - 1
    k = 0
    for reg in range(3):
        npx = n1 if reg == 0 else (n2 if reg == 1 else n1 + n2)
        for d in range(nd):
            for f in range(nh):
                out[k] = har[reg, d, f]
                k += 1
        for j in range(n_ps.shape[0]):
            for b in range(n_ps[j] + 2):
                if npx == 0:
                    out[k] = np.nan
                else:
                    v = lbp[j, 0, b] + lbp[j, 1, b] if reg == 2 else lbp[j, reg, b]
                    out[k] = np.float64(v) / np.float64(npx)
                k += 1
        _spectrum(sums, reg, npx, out, k)
        k += n_steps
    return k


@njit(cache=True, nogil=True)
def _spectrum(sums, reg, npx, out, k):
    """``out[k:k + n_steps]`` = the granularity spectrum ``100 (S_i - S_{i+1}) / S_0`` of
    region ``reg`` (0 nucleus, 1 cytoplasm, 2 cell: their sum) from the opening sums ``sums``
    of :func:`granularity_sums`; 0 when ``S_0 = 0``, NaN when the region has no pixel
    (``npx == 0``)."""
    n_steps = sums.shape[0] - 1
    s0 = sums[0, 0] + sums[0, 1] if reg == 2 else sums[0, reg]
    for i in range(n_steps):
        if npx == 0:
            out[k] = np.nan
        elif s0 == 0:
            out[k] = 0.0
        else:
            if reg == 2:
                a = sums[i, 0] + sums[i, 1]
                b = sums[i + 1, 0] + sums[i + 1, 1]
            else:
                a = sums[i, reg]
                b = sums[i + 1, reg]
            out[k] = 100.0 * np.float64(a - b) / np.float64(s0)
        k += 1


@njit(cache=True, nogil=True)
def granularity_spectra(sums, n1, n2, out):
    """``out`` (3, n_steps): the granularity spectra of nucleus, cytoplasm and cell (as in
    :func:`assemble`) for regions of ``n1`` and ``n2`` pixels."""
    for reg in range(3):
        npx = n1 if reg == 0 else (n2 if reg == 1 else n1 + n2)
        _spectrum(sums, reg, npx, out[reg], 0)


@njit(cache=True, nogil=True)
def glcm_counts(q, lab, off_r, off_c, out):
    """Directed co-occurrence counts of the pixel pairs with both pixels in the cell.

    Parameters
    ----------
    q : (h, w) uint8
        Quantised grey levels ``0 .. L-1``.
    lab : (h, w) uint8
        0 background, 1 nucleus, 2 cytoplasm.
    off_r, off_c : (n_off,) int64
        Pair offsets ``(dr, dc)``; the pair is ``(x, x + (dr, dc))``.
    out : (n_off, 2L, 2L) int32, zero on input
        ``out[o, e(x), e(y)] += 1`` with the pixel code ``e = (lab - 1) L + q``: the block
        ``[:L, :L]`` holds nucleus/nucleus pairs, ``[L:, L:]`` cytoplasm/cytoplasm pairs and
        the two off-diagonal blocks the mixed pairs.

    Per offset and row, the pair codes ``e(x) (2L+1) + e(y)`` of the row's cell span are formed
    in a vectorised loop (background has code 2L, a discarded bin), then histogrammed.
    """
    h, w = q.shape
    n_off = off_r.shape[0]
    n2 = out.shape[1]
    n_lev = n2 // 2
    pd = 0
    for o in range(n_off):
        pd = max(pd, abs(off_r[o]), abs(off_c[o]))
    ww = w + 2 * pd
    nb = n2 + 1
    code = np.full((h + 2 * pd, ww), n2, np.uint16)
    lo = np.full(h, w, np.int64)
    hi = np.full(h, -1, np.int64)
    for r in range(h):
        for c in range(w):
            a = lab[r, c]
            if a != 0:
                code[r + pd, c + pd] = (a - 1) * n_lev + q[r, c]
                lo[r] = min(lo[r], c)
                hi[r] = c
    hist = np.zeros(nb * nb, np.int32)
    buf = np.empty(ww, np.uint16)
    for o in range(n_off):
        hist[:] = 0
        dr = off_r[o]
        dc = off_c[o]
        for r in range(h):
            if hi[r] < 0:
                continue
            # unsigned indices: no wrap-around test, the pair-code loop vectorises
            ra = np.uint64(r + pd)
            rb = np.uint64(r + pd + dr)
            ca = np.uint64(pd + lo[r])
            cb = np.uint64(pd + lo[r] + dc)
            m = hi[r] + 1 - lo[r]
            for k in range(m):
                uk = np.uint64(k)
                buf[uk] = code[ra, ca + uk] * nb + code[rb, cb + uk]
            for k in range(m):
                hist[buf[np.uint64(k)]] += 1
        for i in range(n2):
            for j in range(n2):
                out[o, i, j] = hist[i * nb + j]


@njit(cache=True, nogil=True)
def _haralick_one(sm, nlog, feats, px, ps, pd):
    """The 13 Haralick features of one symmetric GLCM ``sm`` (L, L) of pair counts.

    Grey levels are ``k = 1 .. L`` (index + 1); ``nlog[v] = v log2 v`` for small ``v``;
    ``px`` (L), ``ps`` (2L+1), ``pd`` (L) are int64 scratch arrays. Only the range of levels
    present is visited. Returns ``False`` (``feats`` untouched) when ``sm`` has no pair.
    """
    n = sm.shape[0]
    n_tab = nlog.shape[0]
    lo = n
    hi = -1
    for i in range(n):
        t = np.int64(0)
        for j in range(n):
            t += sm[i, j]
        px[i] = t
        if t > 0:
            lo = min(lo, i)
            hi = i
    if hi < 0:
        return False
    ps[:] = 0
    pd[:] = 0
    t_tot = np.int64(0)
    s_ij = np.int64(0)
    asm = np.int64(0)
    con = np.int64(0)
    idm = 0.0
    vlogv = 0.0
    for i in range(lo, hi + 1):
        for j in range(i, hi + 1):
            v = sm[i, j]
            if v == 0:
                continue
            d = j - i
            wgt = 1 if d == 0 else 2
            wv = wgt * v
            t_tot += wv
            s_ij += wv * (i + 1) * (j + 1)
            asm += wv * v
            con += wv * d * d
            idm += wv / (1.0 + d * d)
            vlogv += wgt * (nlog[v] if v < n_tab else v * math.log2(v))
            ps[i + j + 2] += wv
            pd[d] += wv
    tf = float(t_tot)
    lt = math.log2(tf)
    # marginal (px == py for a symmetric matrix)
    s1 = np.int64(0)
    s2 = np.int64(0)
    hx = 0.0
    for k in range(lo, hi + 1):
        v = px[k]
        if v > 0:
            s1 += v * (k + 1)
            s2 += v * (k + 1) * (k + 1)
            hx += nlog[v] if v < n_tab else v * math.log2(v)
    hx = lt - hx / tf
    var_num = t_tot * s2 - s1 * s1          # T^2 * var(x), exact integer
    # sum and difference distributions
    a1 = np.int64(0)
    a2 = np.int64(0)
    hs = 0.0
    for k in range(2 * lo + 2, 2 * hi + 3):
        v = ps[k]
        if v > 0:
            a1 += v * k
            a2 += v * k * k
            hs += nlog[v] if v < n_tab else v * math.log2(v)
    hs = lt - hs / tf
    b1 = np.int64(0)
    b2 = np.int64(0)
    hd = 0.0
    for k in range(hi - lo + 1):
        v = pd[k]
        if v > 0:
            b1 += v * k
            b2 += v * k * k
            hd += nlog[v] if v < n_tab else v * math.log2(v)
    hd = lt - hd / tf
    hxy = lt - vlogv / tf
    t2 = tf * tf
    feats[0] = asm / t2                                   # angular second moment
    feats[1] = con / tf                                   # contrast
    if var_num == 0:
        feats[2] = 1.0                                    # correlation, constant region
    else:
        feats[2] = (t_tot * s_ij - s1 * s1) / var_num     # correlation
    feats[3] = var_num / t2                               # sum of squares: variance
    feats[4] = idm / tf                                   # inverse difference moment
    feats[5] = a1 / tf                                    # sum average
    feats[6] = (t_tot * a2 - a1 * a1) / t2                # sum variance
    feats[7] = hs                                         # sum entropy
    feats[8] = hxy                                        # entropy
    feats[9] = (t_tot * b2 - b1 * b1) / t2                # difference variance
    feats[10] = hd                                        # difference entropy
    # information measures of correlation; HXY1 = HXY2 = HX + HY = 2 HX identically
    if hx == 0.0:
        feats[11] = hxy - 2.0 * hx
    else:
        feats[11] = (hxy - 2.0 * hx) / hx
    feats[12] = math.sqrt(max(0.0, 1.0 - math.exp(-2.0 * (2.0 * hx - hxy))))
    return True


@njit(cache=True, nogil=True)
def haralick_from_counts(counts, n_dist, nlog, out):
    """Haralick features of nucleus, cytoplasm and cell, averaged over the 4 angles.

    Parameters
    ----------
    counts : (4 * n_dist, 2L, 2L) int32
        From :func:`glcm_counts` with offsets ordered distance-major, angle-minor
        (0, 45, 90, 135 degrees). Symmetric GLCMs: nucleus ``B00 + B00.T``, cytoplasm
        ``B11 + B11.T``, cell ``(B00 + B01 + B10 + B11) + (...).T``.
    n_dist : int
    nlog : (m,) float64
        ``nlog[v] = v log2 v`` (``nlog[0] = 0``), a table for small counts.
    out : (3, n_dist, 13) float64
        Region order nucleus, cytoplasm, cell. The mean is over the angles whose GLCM has
        at least one pair, summed as ``(f0 + f90) + (f45 + f135)`` so that it is bitwise
        invariant to 90-degree rotations and flips; NaN when no angle has a pair.
    """
    n = counts.shape[1] // 2
    px = np.empty(n, np.int64)
    ps = np.empty(2 * n + 3, np.int64)
    pd = np.empty(n, np.int64)
    sm = np.empty((3, n, n), np.int64)
    fa = np.zeros((3, 4, N_HARALICK))
    ok = np.zeros((3, 4), np.bool_)
    for di in range(n_dist):
        for a in range(4):
            o = di * 4 + a
            for i in range(n):
                for j in range(n):
                    nn = np.int64(counts[o, i, j]) + counts[o, j, i]
                    cc = np.int64(counts[o, n + i, n + j]) + counts[o, n + j, n + i]
                    mx = (np.int64(counts[o, i, n + j]) + counts[o, n + j, i]
                          + counts[o, n + i, j] + counts[o, j, n + i])
                    sm[0, i, j] = nn
                    sm[1, i, j] = cc
                    sm[2, i, j] = nn + cc + mx
            for reg in range(3):
                ok[reg, a] = _haralick_one(sm[reg], nlog, fa[reg, a], px, ps, pd)
        for reg in range(3):
            n_ok = 0
            for a in range(4):
                if ok[reg, a]:
                    n_ok += 1
            for f in range(N_HARALICK):
                if n_ok == 0:
                    out[reg, di, f] = np.nan
                    continue
                x0 = fa[reg, 0, f] if ok[reg, 0] else 0.0
                x1 = fa[reg, 1, f] if ok[reg, 1] else 0.0
                x2 = fa[reg, 2, f] if ok[reg, 2] else 0.0
                x3 = fa[reg, 3, f] if ok[reg, 3] else 0.0
                out[reg, di, f] = ((x0 + x2) + (x1 + x3)) / n_ok


@njit(cache=True, nogil=True)
def _popcount32(x):
    """Number of set bits of a 32-bit pattern (SWAR; int64 arithmetic, masked)."""
    v = np.int64(x)
    v = v - ((v >> 1) & 0x55555555)
    v = (v & 0x33333333) + ((v >> 2) & 0x33333333)
    v = (v + (v >> 4)) & 0x0F0F0F0F
    return ((v * 0x01010101) >> 24) & 0xFF


#: half-width of the band around the centre value where the float32 estimate of an
#: interpolated sample does not decide its bit (its error is below 1e-3 for 8-bit images)
_LBP_BAND = np.float32(1.0 / 64.0)


@njit(cache=True, nogil=True)
def _lbp_decide_exactly(img_p, wp, pad, r, c, x, rp, cp, amb, bits):
    """Redo the undecided samples (bits set in ``amb``) of pixel ``(r, c)`` (centre value
    ``x``) with scikit-image's float64 operations; returns the corrected bit pattern."""
    for p in range(rp.shape[0]):
        if (amb >> np.uint32(p)) & np.uint32(1) == 0:
            continue
        rr = r + rp[p]
        minr = math.floor(rr)
        dr = rr - minr
        ra = int(minr) + pad
        rb = int(math.ceil(rr)) + pad
        cf = c + cp[p]
        dc = cf - math.floor(cf)
        ca = int(math.floor(cf)) + pad
        cb = int(math.ceil(cf)) + pad
        top = (1 - dc) * np.float64(img_p[ra * wp + ca]) + dc * np.float64(img_p[ra * wp + cb])
        bottom = (1 - dc) * np.float64(img_p[rb * wp + ca]) \
            + dc * np.float64(img_p[rb * wp + cb])
        val = (1 - dr) * top + dr * bottom
        bit = np.uint32(1) << np.uint32(p)
        if val - x >= 0:
            bits |= bit
        else:
            bits &= ~bit
    return bits


@njit(cache=True, nogil=True)
def lbp_uniform_counts(img, lab, rps, cps, n_ps, out):
    """Histograms of rotation-invariant uniform LBP codes over nucleus and cytoplasm pixels,
    for one or more ``(P, R)`` at once.

    The code of pixel ``x = (r, c)`` is scikit-image's
    ``local_binary_pattern(method='uniform')``, ties included: sample ``p`` is at
    ``(r + rp[p], c + cp[p])``, ``dr = (r + rp) - floor(r + rp)`` (same for ``dc``), its value
    ``(1-dr)((1-dc) A + dc B) + dr((1-dc) C + dc D)`` in float64 from the 4 surrounding pixels
    (0 outside the image); ``s_p = [g_p - g_x >= 0]``. With the bit pattern
    ``b = sum s_p 2^p``, the number of transitions ``popcount((b ^ (b >> 1)) & (2^(P-1) -
    1))`` is counted without wrap-around as scikit-image does (equivalent to the circular
    count <= 2); the code is ``popcount(b)`` when it is <= 2, else ``P + 1``.

    Speed without giving up exactness: the image is zero-padded once and processed as one
    flat array (every sample is at a fixed flat offset), in loops the compiler vectorises.
    A sample on the grid is the pixel itself (an 8-bit comparison); an interpolated one is
    estimated in float32 with the 4 bilinear weights (error < 1e-3 on 0..255 values), which
    decides ``s_p`` whenever the estimate is farther than ``_LBP_BAND`` (1/64) from the
    centre. The few samples inside the band (~0.4 % on PBC cells: flat neighbourhoods, where
    float64 rounding decides) are recomputed, for cell pixels only, with scikit-image's
    float64 operations (:func:`_lbp_decide_exactly`).

    Parameters
    ----------
    img : (h, w) uint8
    lab : (h, w) uint8
    rps, cps : (sum of the P,) float64, the sample offsets of each (P, R) in turn, as
        scikit-image rounds them (each P <= 30)
    n_ps : (n,) int64, the P of each (P, R)
    out : (n, 2, max P + 2) int64, zero on input; ``out[j, 0, :P_j + 2]`` nucleus,
        ``out[j, 1]`` cytoplasm
    """
    h, w = img.shape
    pad = 0
    for p in range(rps.shape[0]):
        pad = max(pad, int(math.ceil(abs(rps[p]))), int(math.ceil(abs(cps[p]))))
    wp = w + 2 * pad
    size = (h + 2 * pad) * wp
    img_p = np.zeros(size, np.uint8)
    img_f = np.zeros(size, np.float32)
    lab_p = np.zeros(size, np.uint8)
    for r in range(h):
        base = np.uint64((r + pad) * wp + pad)
        ir = img[r]
        lr = lab[r]
        for c in range(w):
            uc = np.uint64(c)
            v = ir[uc]
            img_p[base + uc] = v
            img_f[base + uc] = np.float32(v)
            lab_p[base + uc] = lr[uc]
    # the flat range that holds every image pixel (and the side padding between rows)
    i0 = pad * wp
    m = h * wp
    ui0 = np.uint64(i0)
    bits = np.empty(m, np.uint32)
    amb = np.empty(m, np.uint32)
    codes = np.empty(m, np.uint8)
    hist = np.zeros(256, np.int64)     # every uint8 bin: no write outside, whatever lab holds
    h2 = np.zeros((2, 256), np.int64)
    zero = np.uint32(0)
    one = np.float32(1.0)
    band = _LBP_BAND
    first = 0
    for j in range(n_ps.shape[0]):
        n_p = n_ps[j]
        rp = rps[first:first + n_p]
        cp = cps[first:first + n_p]
        first += n_p
        for k in range(m):
            bits[np.uint64(k)] = zero
            amb[np.uint64(k)] = zero
        for p in range(n_p):
            bit = np.uint32(1) << np.uint32(p)
            fr = math.floor(rp[p])
            fc = math.floor(cp[p])
            # flat offsets of the 4 surrounding pixels (A at floor, floor; D at ceil, ceil)
            oa = np.uint64(i0 + int(fr) * wp + int(fc))
            ob = np.uint64(i0 + int(fr) * wp + int(math.ceil(cp[p])))
            oc = np.uint64(i0 + int(math.ceil(rp[p])) * wp + int(fc))
            od = np.uint64(i0 + int(math.ceil(rp[p])) * wp + int(math.ceil(cp[p])))
            if fr == rp[p] and fc == cp[p]:
                # a sample on the grid is the pixel itself (bilinear gives it exactly)
                for k in range(m):
                    uk = np.uint64(k)
                    bits[uk] |= bit if img_p[oa + uk] >= img_p[ui0 + uk] else zero
            else:
                wr1 = np.float32(rp[p] - fr)
                wc1 = np.float32(cp[p] - fc)
                wr0 = one - wr1
                wc0 = one - wc1
                w00 = wr0 * wc0
                w01 = wr0 * wc1
                w10 = wr1 * wc0
                w11 = wr1 * wc1
                for k in range(m):
                    uk = np.uint64(k)
                    d = (w00 * img_f[oa + uk] + w01 * img_f[ob + uk]) \
                        + (w10 * img_f[oc + uk] + w11 * img_f[od + uk]) - img_f[ui0 + uk]
                    bits[uk] |= bit if d >= 0 else zero
                    amb[uk] |= bit if abs(d) < band else zero
        # undecided samples of background pixels do not matter (their codes are not
        # counted): dropped in a vectorised pass, so that the scan below rarely branches
        for k in range(m):
            uk = np.uint64(k)
            amb[uk] = amb[uk] if lab_p[ui0 + uk] != 0 else zero
        for k in range(m):
            if amb[k] != 0:
                r = k // wp
                bits[k] = _lbp_decide_exactly(img_p, wp, pad, r, k - r * wp - pad,
                                              np.float64(img_p[i0 + k]), rp, cp, amb[k],
                                              bits[k])
        # bin of each pixel: 32 * label + code (label 0, the background, is discarded)
        chg_mask = np.uint32((1 << (n_p - 1)) - 1)
        for k in range(m):
            uk = np.uint64(k)
            b = bits[uk]
            ones = _popcount32(b)
            chg = _popcount32((b ^ (b >> np.uint32(1))) & chg_mask)
            codes[uk] = np.uint8(32) * lab_p[ui0 + uk] + np.uint8(ones if chg <= 2 else n_p + 1)
        hist[:] = 0
        hist2(codes, 0, m, h2, hist)
        for a in range(2):
            for k in range(n_p + 2):
                out[j, a, k] += hist[32 * (a + 1) + k]


@njit(cache=True, nogil=True)
def _erode_cross(src, dst):
    """``dst = src`` eroded by the 3x3 cross, on the interior of zero-bordered arrays."""
    h, w = src.shape
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            dst[r, c] = min(min(src[r, c - 1], src[r, c + 1]),
                            min(min(src[r - 1, c], src[r + 1, c]), src[r, c]))


@njit(cache=True, nogil=True)
def _dilate_cross(src, dst):
    """``dst = src`` dilated by the 3x3 cross, on the interior of zero-bordered arrays."""
    h, w = src.shape
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            dst[r, c] = max(max(src[r, c - 1], src[r, c + 1]),
                            max(max(src[r - 1, c], src[r + 1, c]), src[r, c]))


@njit(cache=True, nogil=True)
def _region_sums(img, lab):
    """(sum of ``img[1:-1, 1:-1]`` over lab == 1, over lab == 2), branch-free."""
    h, w = lab.shape
    s1 = np.int64(0)
    s2 = np.int64(0)
    for r in range(h):
        for c in range(w):
            v = np.int64(img[r + 1, c + 1])
            a = lab[r, c]
            s1 += v * (a == 1)
            s2 += v * (a == 2)
    return s1, s2


@njit(cache=True, nogil=True)
def granularity_signal(gray, lab, out):
    """The granularity signal ``sig = max(0, b - gray)`` in the cell (``lab != 0``), 0
    outside, written into the interior ``out[1:-1, 1:-1]`` of a zero-filled uint8 ``(h + 2,
    w + 2)`` array; ``b`` is the lower median (the ceil(n/2)-th smallest) grey level of the
    n non-cell pixels (255 when n = 0). Returns ``b``."""
    h, w = gray.shape
    hist = np.zeros(256, np.int64)
    for r in range(h):
        for c in range(w):
            if lab[r, c] == 0:
                hist[gray[r, c]] += 1
    n_out = hist.sum()
    b = 255
    if n_out > 0:
        half = (n_out + 1) // 2
        acc = 0
        for v in range(256):
            acc += hist[v]
            if acc >= half:
                b = v
                break
    for r in range(h):
        for c in range(w):
            if lab[r, c] != 0 and gray[r, c] < b:
                out[r + 1, c + 1] = b - gray[r, c]
    return b


@njit(cache=True, nogil=True)
def granularity_sums(gray, lab, n_steps, out):
    """Sums of the grey openings of ``sig`` by diamonds of radius 0 .. n_steps, per region.

    ``gamma_i = delta_i(epsilon_i(sig))`` with the city-block diamond
    ``D_i = {(y, x): |y| + |x| <= i}`` (``D_i`` = ``i``-fold Minkowski sum of the 3x3 cross,
    CellProfiler's ``disk(1)``), the image extended by 0 outside (erosion reads 0 there,
    dilation ignores it). ``epsilon_i = epsilon_1(epsilon_{i-1})`` and ``delta_i`` is ``i``
    cross dilations (on a rectangle, iterated cross steps equal the diamond since a
    monotone lattice path joins any two pixels inside their bounding box).

    The signal is :func:`granularity_signal`'s.

    Parameters
    ----------
    gray : (h, w) uint8
    lab : (h, w) uint8
    n_steps : int
    out : (n_steps + 1, 2) int64: ``out[i, a-1] = sum of gamma_i over the pixels with
        lab == a`` (``gamma_0 = sig``).
    """
    h, w = gray.shape
    ero = np.zeros((h + 2, w + 2), np.uint8)
    tmp = np.zeros((h + 2, w + 2), np.uint8)
    d1 = np.zeros((h + 2, w + 2), np.uint8)
    d2 = np.zeros((h + 2, w + 2), np.uint8)
    granularity_signal(gray, lab, ero)
    out[0, 0], out[0, 1] = _region_sums(ero, lab)
    for i in range(1, n_steps + 1):
        _erode_cross(ero, tmp)
        ero, tmp = tmp, ero
        _dilate_cross(ero, d1)
        for _ in range(i - 1):
            _dilate_cross(d1, d2)
            d1, d2 = d2, d1
        out[i, 0], out[i, 1] = _region_sums(d1, lab)
