"""Compile the numba kernels of a fresh install with the feature families in parallel processes.

numba compiles each kernel at its first call and caches the machine code on disk (``cache=True``,
in ``__pycache__`` next to the module or under ``NUMBA_CACHE_DIR``). In one process the first
image of a fresh install therefore waits for every kernel in turn (about 50 s on the 2-core
development machine: colour ~22 s, shape ~16 s, texture ~10 s, segmentation ~3 s). The families
are independent, so :func:`compile_kernels` lets worker processes compile them side by side and
write the cache; the calling process then only loads the cached code.
"""
from __future__ import annotations

import os
from pathlib import Path

#: numba's index files of the colour kernel (the longest to compile) are named
#: ``color.color_stats-<line>.<python>.nbi``; a fresh install has none.
_SENTINEL_INDEX = "color.color_stats-*.nbi"
_GROUPS = (("color",), ("shape",), ("texture",))


def _kernel_dir() -> Path:
    return Path(__file__).resolve().parent / "features" / "_kernels"


def cache_is_cold() -> bool:
    """True when no cached machine code of the colour kernel exists where numba would write it."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        return not any(Path(root).rglob(_SENTINEL_INDEX))
    return not any((_kernel_dir() / "__pycache__").glob(_SENTINEL_INDEX))


def _cache_writable() -> bool:
    root = os.environ.get("NUMBA_CACHE_DIR")
    target = Path(root) if root else _kernel_dir()
    return os.access(target if target.exists() else target.parent, os.W_OK)


def _compile_group(families: tuple[str, ...]) -> None:
    import importlib

    from .datasets import sample_paths
    from .features.base import make_crop
    from .io import read_image
    from .segmentation import segment

    mods = [importlib.import_module(f"morphocell.features.{fam}") for fam in families]
    # every 10th bundled image (one per class): some kernels are specialised per code path
    for path in sample_paths()[::10]:
        img = read_image(path)
        masks = segment(img)
        if masks.found:
            crop = make_crop(img, masks)
            for mod in mods:
                mod.compute(crop)


def compile_kernels(n_jobs: int | None = None) -> bool:
    """Compile every numba kernel into the on-disk cache, families in parallel processes.

    ``n_jobs``: worker processes as in joblib (-1: all CPUs); ``None``: all CPUs.

    Does nothing (returns ``False``) when the cache already holds the kernels, when it cannot be
    written (each process would compile for itself anyway) or with one CPU / ``n_jobs=1``.
    Returns ``True`` when it compiled. Results never depend on it: it only fills the cache.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    cpus = effective_n_jobs(n_jobs) if n_jobs is not None else (os.cpu_count() or 1)
    n = min(len(_GROUPS), cpus)
    if n < 2 or not cache_is_cold() or not _cache_writable():
        return False

    Parallel(n_jobs=n, backend="loky")(delayed(_compile_group)(g) for g in _GROUPS)
    return True
