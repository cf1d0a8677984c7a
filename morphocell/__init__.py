"""morphocell: blood-cell image analysis.

Classical nucleus/cytoplasm segmentation, exact numba-fast hand-crafted features, CNN
embeddings (Keras, optional) and stacked ensembles, all scikit-learn compatible.

``import morphocell`` is light: TensorFlow and Dask are imported only by the functions that
need them, and most submodules are loaded on first use.

The workflow: :func:`train` (labelled images -> :class:`TrainResult`), :func:`predict`
(images -> :class:`PredictionResult`: predictions, differential count, flags) and
:func:`evaluate` (labelled images -> :class:`EvaluationResult`). ``morphocell.train`` and
``morphocell.predict`` are also the modules that hold them; either way they can be called.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (DataError, FeatureError, ImageReadError, ModelFileError, MorphocellError,
                     SegmentationError)

__all__ = [
    "__version__",
    "MorphocellError", "ImageReadError", "SegmentationError", "FeatureError", "ModelFileError",
    "DataError",
    "read_image", "load_folder", "load_manifest",
    "segment", "CellMasks", "find_white_cells", "crop_cells",
    "extract_features", "FeatureExtractor", "feature_names",
    "StackedCellClassifier",
    "train", "predict", "evaluate", "TrainResult", "PredictionResult", "EvaluationResult",
    "adapt", "save_model", "load_model",
]

_LAZY = {
    "read_image": "morphocell.io",
    "load_folder": "morphocell.io",
    "load_manifest": "morphocell.io",
    "segment": "morphocell.segmentation",
    "CellMasks": "morphocell.segmentation.masks",
    "find_white_cells": "morphocell.segmentation.detect",
    "crop_cells": "morphocell.segmentation.detect",
    "extract_features": "morphocell.features.extractor",
    "FeatureExtractor": "morphocell.features.extractor",
    "feature_names": "morphocell.features.extractor",
    "StackedCellClassifier": "morphocell.ensembles.stacking",
    "train": "morphocell.train",
    "TrainResult": "morphocell.train",
    "predict": "morphocell.predict",
    "evaluate": "morphocell.predict",
    "PredictionResult": "morphocell.predict",
    "EvaluationResult": "morphocell.predict",
    "save_model": "morphocell.model_io",
    "load_model": "morphocell.model_io",
}

if TYPE_CHECKING:  # pragma: no cover
    from .ensembles.stacking import StackedCellClassifier
    from .features.extractor import FeatureExtractor, extract_features, feature_names
    from .io import load_folder, load_manifest, read_image
    from .predict import EvaluationResult, PredictionResult, evaluate, predict
    from .segmentation import segment
    from .segmentation.detect import crop_cells, find_white_cells
    from .segmentation.masks import CellMasks
    from .adapt import adapt
    from .model_io import load_model, save_model
    from .train import TrainResult, train


#: Submodules returned as themselves: each is callable as its main function
#: (``morphocell.adapt(model, paths)``) and keeps its other names (``morphocell.adapt.adapt_file``).
_MODULES = ("adapt",)


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"morphocell.{name}")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'morphocell' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
