"""The one batch engine: many images measured in chunks, in this process, in local worker
processes or on a Dask cluster (:mod:`morphocell.batch.engine`), with three uses:

- in-memory results: :func:`extract_batch` (behind
  :class:`~morphocell.features.extractor.FeatureExtractor`);
- a resumable Parquet dataset on disk: :func:`extract_to_parquet`, :func:`read_features`,
  :func:`dataset_counts` (``morphocell features``; layout in :mod:`morphocell.batch.dataset`);
- a feature cache keyed by image content: :class:`FeatureCache`, :func:`compute_features`.

Names are imported on first use, so ``import morphocell.batch`` stays light.
"""
from __future__ import annotations

import importlib

__all__ = ["FORMAT_VERSION", "META_NAME", "FeatureCache", "StreamResult", "code_fingerprint",
           "compute_features", "dataset_counts", "default_cache_dir", "extract_batch",
           "extract_to_parquet", "image_sha256", "read_features"]

_HOME = {"extract_batch": "engine",
         "extract_to_parquet": "parquet", "StreamResult": "parquet",
         "read_features": "dataset", "dataset_counts": "dataset", "META_NAME": "dataset",
         "FORMAT_VERSION": "dataset",
         "FeatureCache": "cache", "compute_features": "cache", "default_cache_dir": "cache",
         "image_sha256": "cache", "code_fingerprint": "cache"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
