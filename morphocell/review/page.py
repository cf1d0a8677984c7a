"""Writing the review page: ``index.html``, its script, style and data, and the image files.

Layout of the folder (everything the page loads lies inside it)::

    index.html        the page (a Content-Security-Policy allows only files of this folder)
    review.js         the page's behaviour (no inline script)
    review.css        its style
    data.js           the cells: ``window.MORPHOCELL_REVIEW = {...}`` (JSON, HTML-safe)
    thumbs/<id>.jpg   one thumbnail per readable image
    full/<id>.<ext>   the image at full size (a byte copy of JPEG / PNG files)
    outlines/<id>_n.png, outlines/<id>_c.png   nucleus / cytoplasm outlines (transparent)

``<id>`` is the row number in the predictions table: no file name from the table is used to
name a file or build a URL.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ._assets import DETAIL_FEATURES, THUMB_SIZE, CellFiles, feature_columns, write_cell_chunk
from ._data import Predictions, read_predictions, resolve_image

#: the page's label of a cell reviewed as "not a leukocyte / artefact" (key 0): counted apart
#: and left out of ``labels.csv`` (no class of the model; ``morphocell adapt`` refuses labels
#: the model does not know)
ARTEFACT_LABEL = "artefact"

#: the page's Content-Security-Policy: only files of the page's own folder, nothing inline,
#: no network, no forms, no frames
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'none'; font-src 'none'; object-src 'none'; media-src 'none'; "
       "frame-src 'none'; worker-src 'none'; base-uri 'none'; form-action 'none'")

_GENERATOR = "morphocell review"
_SUBDIRS = ("thumbs", "full", "outlines")
_STATIC = ("review.js", "review.css")


@dataclass
class ReviewResult:
    """What :func:`write_review_page` wrote.

    Attributes
    ----------
    index : Path
        ``out_dir/index.html``: open it in a browser (``file://`` works; no server).
    n_cells : int
        Cells on the page (one per row of the predictions table).
    n_classified : int
        Images with a prediction (``status == "ok"``), each image once.
    counts : dict
        Predicted count per class (the page's differential before any correction), each
        image once: a row that repeats an earlier image (same path or same content) shows
        that cell again and is not counted again, as in ``morphocell predict``.
    missing : list of str
        Paths (as in the table) of images that no longer exist: shown as placeholders.
    unreadable : list of (str, str)
        Paths of images that exist but could not be read, with the reason.
    page_id : str
        Key of the page's saved corrections in the browser (localStorage).
    seconds : float
        Time taken to write the page.
    n_repeats : int
        Rows that repeat an earlier row's image.
    """

    index: Path
    out_dir: Path
    n_cells: int
    n_classified: int
    counts: dict
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    page_id: str = ""
    seconds: float = 0.0
    n_repeats: int = 0


def model_info_from_file(path: str | os.PathLike) -> dict:
    """Name, date and settings of a model file for the page's header (header only; the
    model is not loaded)."""
    from ..model_io import read_header

    h = read_header(path)
    meta = h.get("metadata") or {}
    review = meta.get("review") or {}
    return {"name": Path(path).name, "trained": meta.get("trained") or h.get("saved"),
            "features": meta.get("features"), "morphocell_version": h.get("morphocell_version"),
            "atypical_classes": list(h.get("atypical_classes") or []),
            "segmentation": meta.get("segmentation"),
            "review_threshold": review.get("threshold")}


def _sidecar(source: Path | None) -> dict:
    """``<stem>_differential.json`` written by ``morphocell predict`` beside its CSV."""
    if source is None:
        return {}
    p = source.with_name(source.stem + "_differential.json")
    try:
        with open(p, encoding="utf-8") as fh:
            d = json.load(fh)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _page_id(preds: Predictions) -> str:
    df = preds.frame
    h = hashlib.sha256()
    h.update(json.dumps(preds.classes).encode())
    for p, c in zip(df["path"], df["predicted"], strict=True):
        h.update(p.encode("utf-8", "surrogatepass") + b"\0" + c.encode() + b"\n")
    return h.hexdigest()[:20]


def _js_json(obj) -> str:
    """JSON that is also safe inside HTML and as JavaScript source."""
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(v, nd: int = 4):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, nd) if math.isfinite(f) else None


def _prepare_dir(out: Path) -> None:
    index = out / "index.html"
    ours = False
    if index.is_file():
        with open(index, encoding="utf-8", errors="replace") as fh:
            ours = f'content="{_GENERATOR}' in fh.read(4096)
    for d in _SUBDIRS:
        if ours and (out / d).is_dir():
            shutil.rmtree(out / d)  # a page written here before: no stale images
        (out / d).mkdir(parents=True, exist_ok=True)


def _index_html(title: str, source: str) -> str:
    t = html.escape(title, quote=True)
    s = html.escape(source, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="{_GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<link rel="stylesheet" href="review.css">
<script src="data.js" defer></script>
<script src="review.js" defer></script>
</head>
<body>
<header id="top">
  <div class="titles">
    <h1>{t}</h1>
    <p id="model-line" class="muted">predictions: {s}</p>
  </div>
  <div class="actions">
    <label><input type="checkbox" id="filter-review"> only cells needing review <kbd>R</kbd></label>
    <button type="button" id="undo" disabled>Undo <kbd>Z</kbd></button>
    <button type="button" id="export">Export labels</button>
  </div>
</header>
<section id="summary" aria-label="Differential count">
  <table id="differential">
    <thead><tr><th>key</th><th>class</th><th>count</th><th>% of WBC</th>
      <th>95% CI (Wilson)</th><th>needs review</th></tr></thead>
    <tbody></tbody>
    <tfoot></tfoot>
  </table>
  <ul id="flags"></ul>
  <p id="help" class="muted">Click a cell, or move with the arrow keys and press
    <kbd>Enter</kbd>, to see it at full size. A digit key relabels the selected cell
    (see the key column; <kbd>0</kbd>: not a leukocyte / artefact); <kbd>Z</kbd> undoes.
    Corrections are kept in this browser; <b>Export labels</b> downloads
    <code>labels.csv</code> (path,label) of every cell with its reviewed label (relabelled or
    confirmed as predicted; artefacts and missing images left out).</p>
  <noscript><p class="warn">This page needs JavaScript to show the cells.</p></noscript>
</section>
<main id="grid" aria-label="Cells by class"></main>
<div id="detail" role="dialog" aria-modal="true" aria-labelledby="detail-title" hidden>
  <div class="panel">
    <div class="panel-head">
      <h2 id="detail-title"></h2>
      <button type="button" id="detail-close" aria-label="Close">Close <kbd>Esc</kbd></button>
    </div>
    <div class="panel-body">
      <div class="viewer-col">
        <div id="viewer" class="viewer"></div>
        <div class="toggles">
          <label><input type="checkbox" id="show-nucleus" checked> nucleus outline
            <kbd>N</kbd></label>
          <label><input type="checkbox" id="show-cytoplasm" checked> cytoplasm outline
            <kbd>C</kbd></label>
        </div>
        <p id="detail-path" class="path"></p>
      </div>
      <div class="info-col">
        <p id="detail-status"></p>
        <h3>Top classes</h3>
        <table id="detail-top"></table>
        <h3>Measurements</h3>
        <table id="detail-features"></table>
        <h3>Relabel</h3>
        <div id="detail-classes" class="class-buttons"></div>
        <p class="muted">Previous / next cell: <kbd>&larr;</kbd> <kbd>&rarr;</kbd></p>
      </div>
    </div>
  </div>
</div>
</body>
</html>
"""


def _write_images(ids, srcs, out: Path, *, masks, features, method, thumb_size, n_jobs,
                  chunk_size, verbose) -> list[CellFiles]:
    """The image files of every cell, through the batch engine (serial or worker processes);
    the :class:`CellFiles` of each, in row order."""
    from .._utils import progress
    from ..batch.engine import make_executor, run

    items = [(i, cid, str(src)) for i, (cid, src) in enumerate(zip(ids, srcs, strict=True))]
    chunks = [items[k:k + chunk_size] for k in range(0, len(items), max(1, chunk_size))]
    tasks = ((c, str(out), masks, features, method, thumb_size) for c in chunks)
    files: list[CellFiles | None] = [None] * len(items)
    done = run(make_executor(n_jobs), write_cell_chunk, tasks)
    for res in progress(done, total=len(chunks), desc="review page", verbose=verbose,
                        unit="chunk"):
        for i, f in res:
            files[i] = f
    return files


def write_review_page(predictions, out_dir: str | os.PathLike, *, model_info: dict | None = None,
                      masks: bool = True, features: bool = True,
                      atypical_classes=None, review_threshold: float | None = None,
                      base_dir: str | os.PathLike | None = None, method: str | None = None,
                      thumb_size: int = THUMB_SIZE, title: str | None = None,
                      n_jobs: int | None = None, chunk_size: int = 64,
                      verbose: int = 0) -> ReviewResult:
    """Write the review page of a predictions table into ``out_dir``.

    Parameters
    ----------
    predictions : str, PathLike or pandas.DataFrame
        The CSV written by ``morphocell predict`` (or the same table).
    out_dir : str or PathLike
        Folder to write (created). ``out_dir/index.html`` opens from disk, offline.
    model_info : dict, optional
        ``name``, ``trained`` (date), ``features``, ``atypical_classes``, ``segmentation``,
        ``review_threshold`` of the model, shown in the header
        (:func:`model_info_from_file` reads them from a model file).
    masks : bool
        Segment each image to draw its nucleus / cytoplasm outlines in the detail panel.
    features : bool
        Measure the detail panel's features (:data:`DETAIL_FEATURES`; needs ``masks``).
    atypical_classes : sequence of str, optional
        Classes flagged when present. Default: the model's (``model_info``), else those of
        ``<stem>_differential.json`` beside the CSV, else
        :func:`morphocell.model_io.default_atypical_classes`.
    review_threshold : float, optional
        Shown in the header; default: the model's or the CSV's sidecar.
    base_dir : str or PathLike, optional
        Folder that relative image paths are relative to (default: the working folder, then
        the CSV's folder).
    method : str, optional
        Segmentation method for the outlines (default: the model's, else ``"otsu"``).
    thumb_size : int
        Side of the square thumbnails fit in, in pixels.
    title : str, optional
        Page title (default: ``Review: <CSV name>``).
    n_jobs : int, optional
        Worker processes for the images (:mod:`morphocell.batch.engine`; ``None`` / 1: this
        process, -1: one per CPU), in chunks of ``chunk_size`` cells.
    verbose : int
        Progress bar when > 0.

    Returns
    -------
    ReviewResult

    Raises
    ------
    DataError
        If the predictions table is missing, empty or has no class probability column.
    """
    from .._utils import atomic_write
    from ..model_io import default_atypical_classes
    from ..report import NRBC_CLASSES, PLATELET_CLASSES, display_name

    t0 = time.perf_counter()
    preds = read_predictions(predictions)
    df, classes = preds.frame, preds.classes
    info = dict(model_info or {})
    side = _sidecar(preds.source)
    atyp = atypical_classes
    if atyp is None:
        atyp = info.get("atypical_classes") or side.get("atypical_classes")
    if atyp is None:
        atyp = default_atypical_classes(classes)
    atyp = [str(c) for c in atyp if str(c) in classes]
    if review_threshold is None:
        review_threshold = info.get("review_threshold") or (
            side.get("needs_review") or {}).get("threshold")
    method = method or info.get("segmentation") or "otsu"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _prepare_dir(out)
    csv_dir = preds.source.parent if preds.source is not None else None
    base = Path(base_dir) if base_dir is not None else None
    n = len(df)
    width = max(6, len(str(n - 1)))
    cls_index = {c: i for i, c in enumerate(classes)}
    proba = preds.proba
    srcs = [resolve_image(p, csv_dir, base) for p in df["path"]]
    # the same image listed twice (same path, or the same content under two names) is one
    # cell, as in the differential of morphocell predict: the repeats show that cell
    from ..train import content_groups

    root = list(range(n))
    for g in content_groups([str(s) for s in srcs])[1]:
        for j in g[1:]:
            root[j] = g[0]
    firsts = [i for i in range(n) if root[i] == i]
    ids = [f"{root[i]:0{width}d}" for i in range(n)]
    written = _write_images([ids[i] for i in firsts], [srcs[i] for i in firsts], out,
                            masks=masks, features=features and masks, method=method,
                            thumb_size=thumb_size, n_jobs=n_jobs, chunk_size=chunk_size,
                            verbose=verbose)
    by_row = dict(zip(firsts, written, strict=True))
    files = [by_row[root[i]] for i in range(n)]
    cells, missing, unreadable = [], [], []
    rows = zip(df["path"], df["predicted"], df["status"], df["error"], df["needs_review"],
               df["unlike_training"], df["p_atypical"], strict=True)
    for i, (path, pred, status, error, nr, ut, pa) in enumerate(rows):
        cid, src, fi = ids[i], srcs[i], files[i]
        if root[i] != i:
            pass  # a repeat: its image is reported with the first row
        elif fi.missing:
            missing.append(path)
        elif fi.unreadable and status == "ok":
            unreadable.append((path, fi.unreadable))
        ok = status == "ok"
        cell = {"p": path, "f": str(src), "i": cid,
                "c": cls_index[pred] if ok and pred in cls_index else -1,
                "q": [_num(v) for v in proba[i]] if ok else None,
                "r": 1 if nr else 0, "u": 1 if ut else 0, "a": _num(pa),
                "s": str(status), "e": str(error or ""), "x": fi.full_ext,
                "o": 1 if fi.outlines else 0, "m": 1 if fi.missing else 0,
                "w": fi.unreadable, "v": [_num(v) for v in fi.features]}
        if root[i] != i:
            cell["d"] = root[i]
        cells.append(cell)
    platelets = [c for c in classes if c.lower() in PLATELET_CLASSES]
    nrbc = [c for c in classes if c.lower() in NRBC_CLASSES]
    counts = {c: 0 for c in classes}
    for c in df["predicted"].iloc[firsts][df["status"].iloc[firsts] == "ok"]:
        counts[c] += 1
    page_id = _page_id(preds)
    source_name = preds.source.name if preds.source is not None else "table"
    title = title or f"Review: {source_name}"
    payload = {
        "format": 1, "page_id": page_id, "title": title, "source": source_name,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": classes, "artefact": ARTEFACT_LABEL, "atypical": atyp,
        "display": {c: display_name(c) for c in classes},
        "nrbc": nrbc, "platelets": platelets,
        "model": {k: info.get(k) for k in ("name", "trained", "features",
                                           "morphocell_version")} if info else None,
        "review_threshold": _num(review_threshold),
        "has_review": preds.has_review, "has_unlike": preds.has_unlike,
        "features": feature_columns() if features and masks else [],
        "cells": cells,
    }
    with atomic_write(out / "data.js", "w") as fh:
        fh.write("window.MORPHOCELL_REVIEW = ")
        fh.write(_js_json(payload))
        fh.write(";\n")
    static = resources.files("morphocell.review") / "static"
    for name in _STATIC:
        with atomic_write(out / name, "wb") as fh:
            fh.write((static / name).read_bytes())
    with atomic_write(out / "index.html", "w") as fh:
        fh.write(_index_html(title, source_name))
    n_ok = int((df["status"].iloc[firsts] == "ok").sum())
    return ReviewResult(out / "index.html", out, n, n_ok, counts, missing, unreadable, page_id,
                        time.perf_counter() - t0, n - len(firsts))


__all__ = ["ARTEFACT_LABEL", "CSP", "DETAIL_FEATURES", "ReviewResult", "model_info_from_file",
           "write_review_page"]
