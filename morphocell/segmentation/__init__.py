"""Segmentation of one centred blood cell into nucleus and cytoplasm.

>>> from morphocell import read_image, segment
>>> from morphocell.datasets import sample_paths
>>> masks = segment(read_image(sample_paths()[0]))
>>> masks.found, masks.nucleus.dtype.name
(True, 'bool')
"""
from __future__ import annotations

import numpy as np

from ..errors import SegmentationError
from . import metrics
from .masks import CellMasks, overlay, save_masks

__all__ = ["segment", "CellMasks", "metrics", "overlay", "save_masks", "METHODS"]

METHODS = ("otsu", "unet")


def segment(image: np.ndarray, method: str = "otsu", model=None, **params) -> CellMasks:
    """Segment the centred cell of ``image`` into nucleus and cytoplasm.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
        RGB image, one cell centred.
    method : {"otsu", "unet"}
        ``"otsu"``: classical thresholds (:mod:`morphocell.segmentation.otsu`), no training.
        ``"unet"``: a Keras U-Net (needs the ``deep`` extra and a weights file via ``model``).
    **params
        Method parameters (for ``"otsu"``: fields of :class:`~.otsu.OtsuParams`; for
        ``"unet"``: ``tta`` and ``refine``, see :func:`~.unet.segment_unet_batch`).

    Returns
    -------
    CellMasks
        ``found=False`` with empty masks when no cell is found (never an exception for that).
    """
    from ..io import validate_image

    img = validate_image(image)
    if method == "otsu":
        from .otsu import OtsuParams, segment_otsu

        try:
            p = OtsuParams(**params)
        except TypeError as exc:
            raise SegmentationError(f"bad parameter for method 'otsu': {exc}") from None
        return segment_otsu(img, p)
    if method == "unet":
        from .unet import segment_unet

        return segment_unet(img, model=model, **params)
    raise SegmentationError(f"unknown segmentation method {method!r}; choose one of {METHODS}")
