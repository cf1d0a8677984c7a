"""The review page: look at every cell, correct it, count — in a browser, from disk.

:func:`write_review_page` turns the predictions table of ``morphocell predict`` into a folder
with ``index.html``, thumbnails and full-size images that works opened from disk
(``file://``), offline, with no server: the differential count (count, %, Wilson 95%
interval per class, flags), the cells grouped by predicted class (least sure first, badges for
``needs_review`` / ``unlike_training``), a detail panel (the image with nucleus / cytoplasm
outlines, top-3 probabilities, named measurements with units), relabelling by keyboard
(a digit per class, 0 = not a leukocyte / artefact) or click, undo, and *Export labels*:
``labels.csv`` (``path,label``; absolute paths; artefacts left out) that ``morphocell
train`` and ``morphocell adapt`` read. Corrections are kept in the browser's localStorage.

Markup contract (for tests and scripts): every cell is one element ``.cell`` with
``data-path`` (its path as in the predictions table) and ``data-class`` (its current class;
``""`` for an image that was not classified); the count table has ``id="differential"``.
"""
from __future__ import annotations

from ._assets import DETAIL_FEATURES
from ._data import Predictions, read_predictions, wilson_interval
from .page import ARTEFACT_LABEL, CSP, ReviewResult, model_info_from_file, write_review_page

__all__ = ["ARTEFACT_LABEL", "CSP", "DETAIL_FEATURES", "Predictions", "ReviewResult",
           "model_info_from_file", "read_predictions", "wilson_interval", "write_review_page"]
