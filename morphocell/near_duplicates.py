"""Near-duplicate images: the same cell saved again (re-encoded, slightly resized, turned by a
quarter turn or mirrored, a little brighter or darker).

Every image gets a perceptual hash: the file is decoded to a ``32x32`` grey thumbnail
(a JPEG at a reduced scale straight from its DCT, then a box filter), its 2-D DCT is taken,
and the ``16x16`` lowest-frequency coefficients but the constant one (255 numbers) become
255 bits, each set when its coefficient lies above their median. A global brightness or
contrast change moves the median with the coefficients, a re-encoding or a small resize
barely moves the low frequencies. The hash is computed for the 8 orientations of the
thumbnail (quarter turns and mirrors act on DCT coefficients as sign changes and a
transposition); the distance of two images is the smallest Hamming distance between the
first one's hash and any orientation of the other's, both ways.

Pairs within :data:`NEAR_DUPLICATE_BITS` are found without comparing every pair: bit-sampling
locality-sensitive hashing (:data:`LSH_TABLES` tables, each keyed by :data:`LSH_KEY_BITS`
fixed bits of the hash; images that agree on all bits of one key are compared), a fixed
seed, so the result is deterministic. A pair at the threshold is missed with probability
``(1 - (1 - t/255) ** LSH_KEY_BITS) ** LSH_TABLES`` (:func:`miss_probability`), a pair at half
the threshold far less; the measurements behind the threshold are in
``docs/experiments/2026-12-05-near-duplicates.md`` and ``docs/bad_inputs.md``.
"""
from __future__ import annotations

import io as _io
import os
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "HASH_BITS",
    "LSH_KEY_BITS",
    "LSH_TABLES",
    "NEAR_DUPLICATE_BITS",
    "hash_distance",
    "image_hashes",
    "miss_probability",
    "near_duplicate_groups",
    "near_duplicate_pairs",
]

#: Side of the grey thumbnail the hash is computed on.
THUMB = 32
#: Side of the block of low-frequency DCT coefficients kept.
BLOCK = 16
#: Bits of one hash (the block without its constant coefficient).
HASH_BITS = BLOCK * BLOCK - 1
#: Largest Hamming distance (of :data:`HASH_BITS`) at which two images are the same cell.
NEAR_DUPLICATE_BITS = 32
#: Bits of the hash sampled for one LSH table key.
LSH_KEY_BITS = 20
#: LSH tables.
LSH_TABLES = 96
_WORDS = (HASH_BITS + 63) // 64


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(THUMB)


def _thumbnail(path: str) -> np.ndarray | None:
    """The ``THUMB x THUMB`` grey thumbnail of an image file (float64), or ``None`` when the
    file cannot be read as an image (it is reported by the readers elsewhere). The file goes
    through the same checks as :func:`morphocell.io.read_image` before it is decoded."""
    from PIL import Image

    from .errors import MorphocellError
    from .io.read import MAX_FILE_BYTES, MAX_PIXELS, MIN_SIDE, _read_bounded

    try:
        data, fmt = _read_bounded(path, MAX_FILE_BYTES)
    except MorphocellError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(_io.BytesIO(data), formats=[fmt])
            w, h = im.size
            if w * h > MAX_PIXELS or min(w, h) < MIN_SIDE:
                return None
            if fmt == "JPEG":  # decode at 1/2 .. 1/8 scale: the block means, cheaply
                im.draft("L", (2 * THUMB, 2 * THUMB))
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("L").resize((THUMB, THUMB), Image.BOX)
            return np.asarray(im, dtype=np.float64)
        except Exception:  # noqa: BLE001 - a corrupt file: the readers report it
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit


def thumbnail_hashes(thumbs: np.ndarray) -> np.ndarray:
    """Hashes of a batch of grey thumbnails ``(n, THUMB, THUMB)``: ``(n, 8, words)`` uint64,
    one hash per orientation (identity first)."""
    thumbs = np.asarray(thumbs, dtype=np.float64)
    low = _DCT[:BLOCK]
    c = np.matmul(np.matmul(low, thumbs), low.T)
    s = (-1.0) ** np.arange(BLOCK)
    # mirror left-right: (-1)^v, upside down: (-1)^u, transpose: swap u and v
    flips = [c, c * s[None, None, :], c * s[None, :, None], c * s[None, :, None] * s[None, None, :]]
    variants = np.stack(flips + [np.swapaxes(f, 1, 2) for f in flips], axis=1)
    coef = variants.reshape(len(c), 8, BLOCK * BLOCK)[:, :, 1:]
    bits = coef > np.median(coef, axis=2, keepdims=True)
    pad = np.zeros(bits.shape[:2] + (_WORDS * 64 - HASH_BITS,), dtype=bool)
    packed = np.packbits(np.concatenate([bits, pad], axis=2), axis=2, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


def image_hashes(paths: Sequence[str | os.PathLike], n_jobs: int | None = None,
                 chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, ok)``: the ``(n, 8, words)`` hashes of image files (zeros where a file
    cannot be read) and whether each could be read. ``n_jobs`` threads decode the files,
    ``chunk`` files at a time (the memory of their thumbnails)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [os.fspath(p) for p in paths]
    workers = n_jobs if n_jobs and n_jobs > 0 else (os.cpu_count() or 1)
    workers = min(workers, 8) if len(paths) > 64 else 1
    hashes = np.zeros((len(paths), 8, _WORDS), dtype=np.uint64)
    ok = np.zeros(len(paths), dtype=bool)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(0, len(paths), chunk):
            thumbs = list(pool.map(_thumbnail, paths[i:i + chunk]))
            good = np.array([t is not None for t in thumbs], dtype=bool)
            ok[i:i + chunk] = good
            if good.any():
                where = i + np.flatnonzero(good)
                hashes[where] = thumbnail_hashes(np.stack([t for t in thumbs if t is not None]))
    return hashes, ok


_BYTE_BITS = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each ``uint64`` of ``x`` (``np.bitwise_count`` where numpy has it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x)
    return _BYTE_BITS[x.view(np.uint8)].reshape(x.shape + (8,)).sum(-1, dtype=np.uint8)


def hash_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances of image pairs from their hashes ``a``, ``b`` (``(..., 8, words)`` each):
    the smallest Hamming distance between one image's upright hash and any orientation of
    the other's, both ways."""
    ab = _popcount(a[..., :1, :] ^ b).sum(-1).min(-1)
    ba = _popcount(b[..., :1, :] ^ a).sum(-1).min(-1)
    return np.minimum(ab, ba).astype(np.int64)


def miss_probability(distance: int, key_bits: int = LSH_KEY_BITS,
                     tables: int = LSH_TABLES) -> float:
    """Probability that the LSH search misses a pair at Hamming ``distance``."""
    agree = (1.0 - distance / HASH_BITS) ** key_bits
    return float((1.0 - agree) ** tables)


def _table_keys(hashes: np.ndarray, key_bits: int, tables: int, seed: int) -> np.ndarray:
    """``(tables, entries)`` int64 keys: for each table, the ``key_bits`` bits of every hash
    (``(entries, words)``) at that table's sampled positions (a fixed ``seed``)."""
    bits = np.unpackbits(hashes.view(np.uint8), axis=1, bitorder="little")[:, :HASH_BITS]
    rng = np.random.default_rng(seed)
    weights = np.zeros((HASH_BITS, tables), dtype=np.float32)
    for t in range(tables):
        pos = rng.choice(HASH_BITS, size=key_bits, replace=False)
        weights[pos, t] = 2.0 ** np.arange(key_bits)
    # exact in float32: a key is below 2 ** key_bits <= 2 ** 24
    return np.matmul(bits.astype(np.float32), weights).T.astype(np.int64)


def near_duplicate_pairs(hashes: np.ndarray, ok: np.ndarray | None = None,
                         threshold: int = NEAR_DUPLICATE_BITS, *, key_bits: int = LSH_KEY_BITS,
                         tables: int = LSH_TABLES, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs, distances)``: the index pairs ``i < j`` (``(m, 2)``, sorted) of images whose
    hash distance (:func:`hash_distance`) is at most ``threshold``, found by bit-sampling LSH
    (candidates agree on all ``key_bits`` sampled bits of one of ``tables`` keys, over the 8
    orientations), then checked exactly. ``ok``: the images to consider (default all)."""
    n = len(hashes)
    idx = np.flatnonzero(np.ones(n, bool) if ok is None else np.asarray(ok, bool))
    if len(idx) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    h = hashes[idx]
    m = len(idx)
    if key_bits > 24:
        raise ValueError(f"key_bits must be at most 24 (got {key_bits})")
    keys = _table_keys(h.reshape(m * 8, -1), key_bits, tables, seed)
    found = []
    for entries in keys:                           # (m * 8,): image e // 8, orientation e % 8
        queries = entries[::8]                     # upright hashes
        order = np.argsort(entries, kind="stable")
        sorted_keys = entries[order]
        lo = np.searchsorted(sorted_keys, queries, "left")
        hi = np.searchsorted(sorted_keys, queries, "right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            continue
        q = np.repeat(np.arange(m), counts)
        start = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        e = order[start + np.arange(total)] // 8
        keep = q != e
        a, b = np.minimum(q[keep], e[keep]), np.maximum(q[keep], e[keep])
        found.append(a * m + b)
    if not found:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    cand = np.unique(np.concatenate(found))
    a, b = cand // m, cand % m
    dist = np.concatenate([hash_distance(h[a[i:i + 65536]], h[b[i:i + 65536]])
                           for i in range(0, len(a), 65536)]) if len(a) else np.zeros(0, int)
    near = dist <= threshold
    pairs = np.stack([idx[a[near]], idx[b[near]]], axis=1)
    return pairs, dist[near]


def near_duplicate_groups(pairs: np.ndarray, n: int,
                          exact: Sequence[Sequence[int]] = ()) -> list[list[int]]:
    """Connected groups (two or more indices, each sorted, in order of first index) of
    ``n`` images linked by near-duplicate ``pairs`` and by the ``exact`` duplicate groups."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    links = [(int(a), int(b)) for a, b in pairs]
    links += [(int(g[0]), int(j)) for g in exact for j in g[1:]]
    for a, b in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots: dict[int, list[int]] = {}
    for i in range(n):
        roots.setdefault(find(i), []).append(i)
    return [g for g in roots.values() if len(g) > 1]
