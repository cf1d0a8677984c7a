"""Streaming, resumable feature extraction into a Parquet dataset (``morphocell features``).

Millions of cell images go in; a folder of Parquet part files comes out, one row per image
(the layout, columns and resume rules: :mod:`morphocell.batch.dataset`). The work is cut into
chunks of ``chunk_size`` images and run by the batch engine (:mod:`morphocell.batch.engine`:
in this process, in local worker processes, or on a Dask cluster) with a bounded number of
chunks in flight; each finished chunk is written as one part file. Memory therefore does not
grow with the number of images (except for the small resume index, 16 bytes per
already-written row).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, MorphocellError
from ..features.extractor import STATUS_ERROR, STATUS_NO_CELL, STATUS_OK, _families, feature_names
from ..io import iter_chunks, iter_entries
from . import engine
from .dataset import (
    LOCK_NAME,
    META_NAME,
    _check_or_write_meta,
    _clean_temporaries,
    _expected_meta,
    _key8,
    _locked,
    _prepare_out,
    _scan_index,
    _schema,
    _sha8,
    _sha256_or_none,
    _write_part,
)

__all__ = ["StreamResult", "extract_chunk", "extract_to_parquet"]

_FIXED = ("seq", "id", "path", "label", "sha256")


# --------------------------------------------------------------------------------------------
# The task a worker runs
# --------------------------------------------------------------------------------------------

def extract_chunk(entries: Sequence[tuple], families: Sequence[str], method: str
                  ) -> dict[str, Any]:
    """Measure one chunk of images; what a worker process or a Dask task runs.

    The first call in a process applies :func:`~morphocell.batch.engine.tune_malloc` (a no-op
    unless ``MALLOC_TRIM_THRESHOLD_`` is set, as Dask sets it in its workers).

    Parameters
    ----------
    entries : sequence of ``(seq, id, path, label, known_sha8)``
        ``known_sha8`` is ``None`` for an image never written, else the 8-byte hash prefix of
        the content already written for that id: the image is skipped when its file still has
        that content.
    families, method
        As in :func:`morphocell.batch.engine.extract_batch`.

    Returns
    -------
    dict
        Column lists ``seq, id, path, label, sha256, status, error``, the float64 matrix ``X``
        (rows x features) and ``skipped`` (images left out because already written). Never
        raises for a bad image: any error becomes a row with status ``error``.
    """
    engine.tune_malloc()
    fams = _families(families)
    n_feat = len(feature_names(fams))
    cols: dict[str, list] = {k: [] for k in (*_FIXED, "status", "error")}
    rows: list[np.ndarray] = []
    skipped = 0
    for seq, key, path, label, known in entries:
        digest = _sha256_or_none(path)
        if known is not None and _sha8(digest) == np.uint64(known):
            skipped += 1
            continue
        try:
            vec, status, err = engine.measure_one(path, fams, method)
        except Exception as exc:  # noqa: BLE001 - one image must never abort millions
            vec = np.full(n_feat, np.nan)
            status, err = STATUS_ERROR, f"{path}: internal error {type(exc).__name__}: {exc}"
        for k, v in zip(_FIXED, (seq, key, path, label, digest), strict=True):
            cols[k].append(v)
        cols["status"].append(status)
        cols["error"].append(err)
        rows.append(np.asarray(vec, dtype=np.float64))
    cols["X"] = np.vstack(rows) if rows else np.empty((0, n_feat))
    cols["skipped"] = skipped
    return cols


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StreamResult:
    """What one :func:`extract_to_parquet` call did.

    ``listed`` images were listed; ``skipped`` of them were already in the dataset with the
    same content; ``written`` rows were written this run into ``parts`` new part files,
    ``counts`` by status (``ok`` / ``no_cell`` / ``error``); ``failures`` holds the first 20
    ``(path, error)`` of this run; ``seconds`` is the wall time of the call.
    """

    out: str
    listed: int = 0
    skipped: int = 0
    written: int = 0
    parts: int = 0
    counts: dict = dataclasses.field(default_factory=lambda: {STATUS_OK: 0, STATUS_NO_CELL: 0,
                                                               STATUS_ERROR: 0})
    failures: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images measured per second (``written / seconds``)."""
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def extract_to_parquet(inputs: Sequence[str | os.PathLike] | str | os.PathLike | Iterable,
                       out: str | os.PathLike, *, families: Sequence[str] | None = None,
                       method: str = "otsu", client=None, n_jobs: int = 1,
                       chunk_size: int = 256, max_in_flight: int | None = None,
                       verbose: int = 0) -> StreamResult:
    """Stream features of many images into the Parquet dataset folder ``out``; resumable.

    Parameters
    ----------
    inputs : path(s) or iterable of ``(id, path, label)``
        A folder of class subfolders, a manifest CSV, image files / flat folders (see
        :func:`morphocell.io.iter_entries`), or an already-made iterable of entries.
    out : path
        Dataset folder (created; resumed when it already holds a dataset of the same options).
    families : sequence of str, optional
        Feature families (default: all). Must match an existing dataset's.
    method : {"otsu", "unet"}
        Segmentation method. Must match an existing dataset's.
    client : dask.distributed.Client, optional
        Run chunks on this cluster (the ``dist`` extra); ``n_jobs`` is then ignored.
    n_jobs : int
        Local worker processes (1: this process; -1: one per CPU).
    chunk_size : int
        Images per task and per part file. Each part holds up to ``chunk_size`` rows; for
        millions of images 1000-5000 keeps the part count in the thousands.
    max_in_flight : int, optional
        Chunks submitted and not yet written (default ``2 x`` workers): bounds memory.
    verbose : int
        Progress bar on a terminal when > 0.

    Returns
    -------
    StreamResult

    Raises
    ------
    DataError
        Bad inputs, an ``out`` that is a file, a non-empty foreign folder, a dataset with other
        options, a concurrent writer, a cluster with no workers.
    """
    t0 = time.perf_counter()
    fams = _families(families)
    if method not in ("otsu", "unet"):
        raise DataError(f"unknown segmentation method {method!r} (otsu or unet)")
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
    n_jobs = int(n_jobs)
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    if n_jobs < 1:
        raise DataError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
    names = feature_names(fams)
    schema = _schema(names)
    outp = Path(out)
    created = not outp.exists()
    _prepare_out(outp)
    result = StreamResult(out=str(outp))
    try:
        _extract_locked(outp, inputs, fams, method, names, schema, n_jobs, client, chunk_size,
                        max_in_flight, verbose, result)
    except BaseException:
        if created:
            _remove_if_empty(outp)  # a run refused before any part: leave no folder behind
        raise
    result.seconds = time.perf_counter() - t0
    return result


def _remove_if_empty(outp: Path) -> None:
    """Remove a dataset folder this run created when it holds no part file (only the lock and
    the metadata): an error before the first part leaves nothing on disk."""
    try:
        names = {e.name for e in os.scandir(outp)}
    except OSError:
        return
    if names <= {LOCK_NAME, META_NAME}:
        for n in names:
            with contextlib.suppress(OSError):
                os.unlink(outp / n)
        with contextlib.suppress(OSError):
            outp.rmdir()


def _extract_locked(outp, inputs, fams, method, names, schema, n_jobs, client, chunk_size,
                    max_in_flight, verbose, result) -> None:
    paths_given = isinstance(inputs, (str, os.PathLike)) or (
        isinstance(inputs, Sequence) and all(isinstance(i, (str, os.PathLike)) for i in inputs))
    # the number of entries, for the progress bar's total and time left (one listing pass)
    total = sum(1 for _ in iter_entries(inputs)) if verbose and paths_given else None
    with _locked(outp):
        _check_or_write_meta(outp, _expected_meta(fams, method, names))
        _clean_temporaries(outp)
        done_k, done_s, _, next_idx = _scan_index(outp, quarantine=True)

        if paths_given:
            entries = iter_entries(inputs)  # type: ignore[arg-type]
        else:
            entries = iter(inputs)

        def tasks() -> Iterator[list[tuple]]:
            for chunk in iter_chunks(enumerate(entries), chunk_size):
                batch = []
                for seq, (key, path, label) in chunk:
                    known = None
                    if len(done_k):
                        kd = _key8(key)
                        i = int(np.searchsorted(done_k, kd))
                        if i < len(done_k) and done_k[i] == kd:
                            known = int(done_s[i])
                    batch.append((seq, key, os.fspath(path), label, known))
                result.listed += len(batch)
                yield batch

        ex = engine.make_executor(None if n_jobs == 1 else n_jobs, client, watch_driver=True)
        limit = max(1, int(max_in_flight) if max_in_flight else 2 * ex.slots)
        bar = _bar(verbose, total)
        done = engine.run(ex, extract_chunk, ((batch, fams, method) for batch in tasks()),
                          limit)
        try:
            while True:
                try:
                    res = next(done)
                except StopIteration:
                    break
                except MorphocellError:  # the listing's own errors (a broken manifest line)
                    raise
                except Exception as exc:
                    raise DataError(
                        f"a chunk failed in a worker ({type(exc).__name__}: {exc}); the "
                        f"{result.parts} part files written by this run are kept: rerun the "
                        "same command to resume (on a cluster, check that morphocell is "
                        "installed on every worker)", outp) from exc
                result.skipped += res["skipped"]
                if res["id"]:
                    _write_part(outp, next_idx, res, names, schema)
                    next_idx += 1
                    result.parts += 1
                    result.written += len(res["id"])
                    for p, st, e in zip(res["path"], res["status"], res["error"], strict=True):
                        result.counts[st] = result.counts.get(st, 0) + 1
                        if st == STATUS_ERROR and len(result.failures) < 20:
                            result.failures.append((p, e))
                if bar is not None:
                    bar.update(len(res["id"]) + res["skipped"])
        finally:
            done.close()  # early exit: the chunks in flight are cancelled
            if bar is not None:
                bar.close()


def _bar(verbose: int, total: int | None = None):
    """A tqdm counter on a terminal; plain lines (``LogCounter``) in a log; None if quiet."""
    if not verbose:
        return None
    if not sys.stderr.isatty():
        from .._utils import LogCounter

        return LogCounter("features", total=total)
    from tqdm.auto import tqdm

    return tqdm(desc="features", unit="img", total=total, leave=False)
