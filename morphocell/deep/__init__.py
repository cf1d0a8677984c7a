"""Deep features: Keras CNN embeddings and their leakage-free fusion with hand-crafted features.

Everything here needs the ``deep`` extra (TensorFlow + Keras 3), imported lazily: importing
:mod:`morphocell` or :mod:`morphocell.deep` does not import TensorFlow; fitting does.

* :class:`CNNEmbedder` -- a CNN trained on labelled images, its penultimate layer as a
  feature table (``Cell_Embedding_Cnn_0000 ...``), plus its own ``predict_proba``.
* :func:`fit_deep_model` -- CNN embeddings + a classifier (``features="deep"``) or a stacked
  ensemble over hand-crafted + deep features (``features="fused"``), trained on out-of-fold
  deep features only (see :mod:`morphocell.deep.crossfit` and ``docs/deep.md``).
"""
from __future__ import annotations

import importlib

__all__ = ["CNNEmbedder", "DeepModel", "FusedModel", "fit_deep_model", "crossfit_embeddings",
           "default_embedder", "decode_images", "embedding_names"]

_LAZY = {
    "CNNEmbedder": "morphocell.deep.embedder",
    "decode_images": "morphocell.deep.embedder",
    "embedding_names": "morphocell.deep.embedder",
    "DeepModel": "morphocell.deep.crossfit",
    "FusedModel": "morphocell.deep.crossfit",
    "fit_deep_model": "morphocell.deep.crossfit",
    "crossfit_embeddings": "morphocell.deep.crossfit",
    "default_embedder": "morphocell.deep.crossfit",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'morphocell.deep' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
