"""Streaming, resumable feature extraction into a Parquet dataset (``morphocell features``).

Millions of cell images go in; a folder of Parquet part files comes out, one row per image.
The work is cut into chunks of ``chunk_size`` images, a bounded number of chunks is in flight at
any time (in this process, in local worker processes, or on a Dask cluster), and each finished
chunk is written as one part file. Memory therefore does not grow with the number of images
(except for the small resume index, 16 bytes per already-written row).

Output layout (``OUT`` is a folder, conventionally named ``something.parquet``)::

    OUT/
      _morphocell_features.json    families, method, feature names, format version
      _morphocell.lock             advisory lock: one writer at a time
      part-000000.parquet          one part per finished chunk (a single row group)
      part-000001.parquet
      ...

Any Parquet reader takes the folder as a dataset (pyarrow, pandas, Dask, Spark, DuckDB ignore
names starting with ``_`` or ``.``); :func:`read_features` is the reference reader.

Columns of every part (same schema in every part):

=========  ==========  =====================================================================
column     type        meaning
=========  ==========  =====================================================================
seq        int64       position of the image in the listing of the run that wrote it
id         string      row key: the manifest's ``id`` column if it has one, else the
                       absolute path
path       string      the image path as listed
label      string      class (subfolder name or manifest ``label``); null when unknown
sha256     string      hex SHA-256 of the file's bytes; null when the file cannot be read
<feature>  float64     every feature of :func:`morphocell.features.extractor.feature_names`
                       (NaN when the image failed or no cell was found)
status     string      ``ok`` | ``no_cell`` | ``error``
error      string      why the image failed ("" when ok)
=========  ==========  =====================================================================

Resuming. A part is written under a hidden temporary name, flushed to disk (``fsync``) and
renamed onto ``part-NNNNNN.parquet`` (an atomic rename), then the folder entry is flushed: a
part file is complete or absent, whatever the interruption (Ctrl-C, ``kill -9``, power loss).
A rerun of the same command reads the ``id`` and ``sha256`` columns of the existing parts and
skips every listed image whose id is there *and* whose current file content has the same hash
(the workers re-hash the file: reading a file costs far less than measuring it). An image whose
file changed since it was measured is measured again; its new row goes into a newer part and
:func:`read_features` keeps the newest row per id. Failed images are rows too (status
``error``), so they are not retried unless their file changes. A part that cannot be read back
(a file system that lost data despite the ``fsync``) is renamed ``_corrupt_part-NNNNNN.parquet``
with a warning and its images are measured again.

Refusals (:class:`~morphocell.errors.DataError`): writing into a dataset made with other
families, method or feature names; writing into a non-empty folder that is not a morphocell
features dataset; two runs writing into the same folder at the same time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import atomic_path, atomic_write, file_sha256
from .errors import DataError
from .features.extractor import (STATUS_ERROR, STATUS_NO_CELL, STATUS_OK, _families, _one,
                                 feature_names)
from .io import iter_chunks, iter_entries

__all__ = ["extract_to_parquet", "read_features", "StreamResult",
           "dataset_counts", "META_NAME", "FORMAT_VERSION"]

#: Name of the metadata file inside the dataset folder.
META_NAME = "_morphocell_features.json"
#: Name of the advisory lock file inside the dataset folder.
LOCK_NAME = "_morphocell.lock"
#: Version of the on-disk layout; bump when the columns or the metadata change meaning.
FORMAT_VERSION = 1
_FORMAT = "morphocell-features"
_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")
_TMP_RE = re.compile(r"^\.part-\d{6,}\..*\.parquet$")
_FIXED = ("seq", "id", "path", "label", "sha256")
_STATUS_CODES = {STATUS_OK: 0, STATUS_NO_CELL: 1, STATUS_ERROR: 2}


_NO_HASH = np.uint64(0)  # the 8-byte hash prefix recorded for a file that could not be read


# --------------------------------------------------------------------------------------------
# The task a worker runs
# --------------------------------------------------------------------------------------------

def _sha256_or_none(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _sha8(hexdigest: str | None) -> np.uint64:
    """First 8 bytes of a hex SHA-256 as an unsigned integer (0 for "no hash")."""
    if not hexdigest:
        return _NO_HASH
    v = np.uint64(int(hexdigest[:16], 16))
    return v if v != _NO_HASH else np.uint64(1)


def _key8(key: str) -> np.uint64:
    """64-bit BLAKE2b digest of a row key (collision odds ~ n^2 / 2^65: 3e-6 at 10^7 rows)."""
    return np.uint64(int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                                    digest_size=8).digest(), "little"))


_MALLOC_TUNED: bool | None = None


def _tune_malloc() -> bool:
    """Undo the page-fault cost of Dask's ``MALLOC_TRIM_THRESHOLD_`` in this process (glibc).

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (config
    ``distributed.nanny.pre-spawn-environ``) so that freed memory goes back to the OS. Setting
    that variable also switches off glibc's dynamic mmap threshold, so every buffer above
    128 KiB (an image, a mask, a kernel's scratch arrays) becomes a fresh ``mmap`` whose pages
    fault in again for every image: about 700 page faults per PBC image and 40-50% more CPU
    per image than the same code in a plain process (measured, ``docs/scale.md``). When that
    variable is set, this sets fixed thresholds instead: buffers below 32 MiB come from the
    heap and up to 64 MiB of free heap stays mapped per malloc arena (about one per worker
    thread): the ceilings that glibc's dynamic thresholds can reach on 64-bit systems. Called
    once per process by :func:`extract_chunk`; does nothing when the variable is not set, off
    glibc, or when ``MORPHOCELL_KEEP_MALLOC=1``.

    Returns
    -------
    bool
        Whether the thresholds were set in this process (by this call or an earlier one).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    _MALLOC_TUNED = False
    if (not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ
            or os.environ.get("MORPHOCELL_KEEP_MALLOC") == "1"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, 32 << 20)
                             and libc.mallopt(m_trim_threshold, 64 << 20))
    except (OSError, AttributeError):  # musl or another libc: leave it as it is
        pass
    return _MALLOC_TUNED


def extract_chunk(entries: Sequence[tuple], families: Sequence[str], method: str
                  ) -> dict[str, Any]:
    """Measure one chunk of images; what a worker process or a Dask task runs.

    The first call in a process applies :func:`_tune_malloc` (a no-op unless
    ``MALLOC_TRIM_THRESHOLD_`` is set, as Dask sets it in its workers).

    Parameters
    ----------
    entries : sequence of ``(seq, id, path, label, known_sha8)``
        ``known_sha8`` is ``None`` for an image never written, else the 8-byte hash prefix of
        the content already written for that id: the image is skipped when its file still has
        that content.
    families, method
        As in :func:`morphocell.features.extractor.extract_batch`.

    Returns
    -------
    dict
        Column lists ``seq, id, path, label, sha256, status, error``, the float64 matrix ``X``
        (rows x features) and ``skipped`` (images left out because already written). Never
        raises for a bad image: any error becomes a row with status ``error``.
    """
    _tune_malloc()
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
            vec, status, err = _one(path, fams, method)
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
# The dataset folder
# --------------------------------------------------------------------------------------------

def _schema(names: Sequence[str]):
    import pyarrow as pa

    return pa.schema(
        [pa.field("seq", pa.int64()), pa.field("id", pa.string()), pa.field("path", pa.string()),
         pa.field("label", pa.string()), pa.field("sha256", pa.string())]
        + [pa.field(n, pa.float64()) for n in names]
        + [pa.field("status", pa.string()), pa.field("error", pa.string())])


def _part_files(out: Path) -> list[tuple[int, Path]]:
    parts = []
    with os.scandir(out) as it:
        for e in it:
            m = _PART_RE.match(e.name)
            if m:
                parts.append((int(m.group(1)), Path(e.path)))
    return sorted(parts)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsync'ed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _expected_meta(fams: tuple[str, ...], method: str, names: list[str]) -> dict:
    from ._version import __version__

    return {"format": _FORMAT, "format_version": FORMAT_VERSION, "families": list(fams),
            "method": method, "feature_names": names, "created_by": f"morphocell {__version__}"}


def _load_meta(out: Path) -> dict:
    mp = out / META_NAME
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable dataset metadata ({exc})", mp) from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise DataError("not a morphocell features metadata file", mp)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"dataset format version {meta.get('format_version')} is not "
                        f"{FORMAT_VERSION} (written by {meta.get('created_by')})", mp)
    return meta


def _check_or_write_meta(out: Path, want: dict) -> None:
    mp = out / META_NAME
    if mp.exists():
        have = _load_meta(out)
        diffs = []
        for k in ("families", "method"):
            if have.get(k) != want[k]:
                diffs.append(f"{k} {have.get(k)!r} (this run: {want[k]!r})")
        if not diffs and have.get("feature_names") != want["feature_names"]:
            old, new = set(have.get("feature_names") or []), set(want["feature_names"])
            diffs.append(f"feature names ({len(old - new)} gone, {len(new - old)} new, "
                         f"order changed: {not (old ^ new)}; the morphocell version differs?)")
        if diffs:
            raise DataError("this dataset was written with " + "; ".join(diffs)
                            + ". Use another --out folder, or the same options to resume.", out)
        return
    with os.scandir(out) as it:
        others = [e.name for e in it if not e.name.startswith(".") and e.name != LOCK_NAME]
    if others:
        raise DataError(f"folder is not empty and holds no {META_NAME} (found e.g. "
                        f"{sorted(others)[:3]}); refusing to write a features dataset into it",
                        out)
    with atomic_write(mp, "w") as fh:
        json.dump(want, fh, indent=1)
    _fsync_dir(out)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``out`` (released by the kernel if we are killed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, documented
        yield
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError("another morphocell features run is writing to this folder",
                            out) from None
        yield
    finally:
        os.close(fd)


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError("exists and is a file; --out names a Parquet dataset folder "
                        "(part files are written inside it)", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder ({exc.strerror or exc})", out) from None


def _clean_temporaries(out: Path) -> int:
    n = 0
    with os.scandir(out) as it:
        for e in it:
            if _TMP_RE.match(e.name):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                    n += 1
    return n


def _scan_index(out: Path, quarantine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Compact index of the rows already written: sorted unique key digests, their content
    hash prefixes and status codes (the newest row per key wins), and the next part number.

    16 bytes + 1 per row: 10 million rows take ~170 MB.
    """
    import pyarrow.parquet as pq

    keys, shas, stats = [], [], []
    parts = _part_files(out)
    for idx, p in parts:
        try:
            t = pq.read_table(p, columns=["id", "sha256", "status"])
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on bad files
            if not quarantine:
                raise DataError(f"unreadable part file ({exc})", p) from None
            bad = p.with_name(f"_corrupt_{p.name}")
            os.replace(p, bad)
            warnings.warn(f"{p}: unreadable part file ({exc}); renamed to {bad.name}, its "
                          "images will be measured again", RuntimeWarning, stacklevel=3)
            continue
        ids = t.column("id").to_pylist()
        keys.append(np.fromiter((_key8(k) for k in ids), np.uint64, len(ids)))
        shas.append(np.fromiter((_sha8(s) for s in t.column("sha256").to_pylist()),
                                np.uint64, len(ids)))
        stats.append(np.fromiter((_STATUS_CODES.get(s, 2) for s in
                                  t.column("status").to_pylist()), np.uint8, len(ids)))
    next_idx = parts[-1][0] + 1 if parts else 0
    with os.scandir(out) as it:  # never reuse the number of a quarantined part
        for e in it:
            m = re.match(r"^_corrupt_part-(\d+)\.parquet$", e.name)
            if m:
                next_idx = max(next_idx, int(m.group(1)) + 1)
    if not keys:
        return (np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint8), next_idx)
    k, s, st = np.concatenate(keys), np.concatenate(shas), np.concatenate(stats)
    order = np.argsort(k, kind="stable")  # stable: among equal keys the newest part comes last
    ks = k[order]
    last = np.r_[ks[1:] != ks[:-1], True] if len(ks) else np.empty(0, bool)
    keep = order[last]
    return k[keep], s[keep], st[keep], next_idx


def _write_part(out: Path, idx: int, res: dict, names: list[str], schema) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = res["X"]
    arrays = [pa.array(res["seq"], pa.int64()), pa.array(res["id"], pa.string()),
              pa.array(res["path"], pa.string()), pa.array(res["label"], pa.string()),
              pa.array(res["sha256"], pa.string())]
    arrays += [pa.array(X[:, j], pa.float64()) for j in range(len(names))]
    arrays += [pa.array(res["status"], pa.string()), pa.array(res["error"], pa.string())]
    table = pa.Table.from_arrays(arrays, schema=schema)
    final = out / f"part-{idx:06d}.parquet"
    with atomic_path(final) as tmp:  # hidden ".part-NNNNNN.<random>.parquet", then renamed
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(out)
    return final


# --------------------------------------------------------------------------------------------
# Executors: the same bounded loop runs in-process, on local processes, or on Dask
# --------------------------------------------------------------------------------------------

def _watch_parent(parent_pid: int) -> None:
    """Worker initializer: exit when the driver is gone (kill -9 leaves no orphan workers);
    ignore Ctrl-C, which the driver handles (it stops the workers itself)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def loop() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=loop, daemon=True, name="morphocell-parent-watch").start()


class _Serial:
    """Runs each chunk at submit time, in this process."""

    slots = 1

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f: Future = Future()
        f.set_result(fn(*args))
        return f

    @staticmethod
    def wait_any(pending):
        return set(pending)

    def close(self, cancel: bool) -> None:
        pass


class _Local:
    """A spawn-context process pool whose workers die with the driver."""

    def __init__(self, n_jobs: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.slots = n_jobs
        self.pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_watch_parent, initargs=(os.getpid(),))

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    @staticmethod
    def wait_any(pending):
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(pending, return_when=FIRST_COMPLETED).done

    def close(self, cancel: bool) -> None:
        if cancel:  # interrupted or failed: do not wait for the running chunks
            procs = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                with contextlib.suppress(Exception):
                    p.terminate()
            for p in procs:
                with contextlib.suppress(Exception):
                    p.join(5)
        else:
            self.pool.shutdown(wait=True)


class _Dask:
    """Submits chunks to a ``dask.distributed.Client``."""

    def __init__(self, client, wait_timeout: float = 60.0):
        try:
            client.wait_for_workers(1, timeout=wait_timeout)
        except Exception as exc:  # noqa: BLE001 - TimeoutError types vary across versions
            addr = getattr(getattr(client, "scheduler", None), "address", "?")
            raise DataError(f"the Dask cluster at {addr} has no worker after "
                            f"{wait_timeout:.0f} s ({type(exc).__name__})") from None
        self.client = client
        self.slots = max(1, sum(client.nthreads().values()))

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False, retries=1)

    @staticmethod
    def wait_any(pending):
        from distributed import wait

        return set(wait(list(pending), return_when="FIRST_COMPLETED").done)

    def close(self, cancel: bool) -> None:
        pass  # futures are released by the caller; the client belongs to the caller


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
        :func:`iter_entries`), or an already-made iterable of entries.
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
    _prepare_out(outp)
    result = StreamResult(out=str(outp))
    with _locked(outp):
        _check_or_write_meta(outp, _expected_meta(fams, method, names))
        _clean_temporaries(outp)
        done_k, done_s, _, next_idx = _scan_index(outp, quarantine=True)

        if isinstance(inputs, (str, os.PathLike)) or (
                isinstance(inputs, Sequence) and all(isinstance(i, (str, os.PathLike))
                                                     for i in inputs)):
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

        if client is not None:
            ex: Any = _Dask(client)
        elif n_jobs > 1:
            ex = _Local(n_jobs)
        else:
            ex = _Serial()
        limit = max(1, int(max_in_flight) if max_in_flight else 2 * ex.slots)
        bar = _bar(verbose)
        source = tasks()
        pending: set = set()
        ok = False
        try:
            def fill() -> None:
                while len(pending) < limit:
                    batch = next(source, None)
                    if batch is None:
                        return
                    pending.add(ex.submit(extract_chunk, batch, fams, method))

            fill()
            while pending:
                for f in ex.wait_any(pending):
                    pending.discard(f)
                    try:
                        res = f.result()
                    except Exception as exc:  # noqa: BLE001 - a dead worker, a missing module
                        raise DataError(
                            f"a chunk failed in a worker ({type(exc).__name__}: {exc}); the "
                            f"{result.parts} part files written by this run are kept: rerun the "
                            "same command to resume (on a cluster, check that morphocell is "
                            "installed on every worker)", outp) from exc
                    del f
                    result.skipped += res["skipped"]
                    if res["id"]:
                        _write_part(outp, next_idx, res, names, schema)
                        next_idx += 1
                        result.parts += 1
                        result.written += len(res["id"])
                        for p, st, e in zip(res["path"], res["status"], res["error"],
                                            strict=True):
                            result.counts[st] = result.counts.get(st, 0) + 1
                            if st == STATUS_ERROR and len(result.failures) < 20:
                                result.failures.append((p, e))
                    if bar is not None:
                        bar.update(len(res["id"]) + res["skipped"])
                fill()
            ok = True
        finally:
            for f in pending:
                with contextlib.suppress(Exception):
                    f.cancel()
            ex.close(cancel=not ok)
            if bar is not None:
                bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _bar(verbose: int):
    """A tqdm counter on a terminal; plain lines (``LogCounter``) in a log; None if quiet."""
    if not verbose:
        return None
    if not sys.stderr.isatty():
        from ._utils import LogCounter

        return LogCounter("features")
    from tqdm.auto import tqdm

    return tqdm(desc="features", unit="img", leave=False)


# --------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------

def read_features(out: str | os.PathLike, columns: Sequence[str] | None = None,
                  keep_seq: bool = False):
    """Read a features dataset folder as a pandas DataFrame, one row per image id.

    Rows come in listing order (``seq``, then ``id``). When an id occurs in several parts
    (its file changed and was measured again) the newest part's row is kept.

    Parameters
    ----------
    out : path
        Folder written by :func:`extract_to_parquet` / ``morphocell features``.
    columns : sequence of str, optional
        Columns to read (``id`` and ``seq`` are always read for ordering and deduplication).
    keep_seq : bool
        Keep the ``seq`` column.

    Raises
    ------
    DataError
        If ``out`` is not a features dataset or a part cannot be read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    outp = Path(out)
    if not outp.is_dir():
        raise DataError("not a features dataset folder", outp)
    if not (outp / META_NAME).exists():
        raise DataError(f"no {META_NAME}: not a morphocell features dataset", outp)
    meta = _load_meta(outp)
    schema = _schema(meta["feature_names"])
    cols = None
    if columns is not None:
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise DataError(f"unknown column(s) {unknown}", outp)
        cols = [c for c in schema.names if c in set(columns) | {"seq", "id"}]
    tables = []
    for idx, p in _part_files(outp):
        try:
            t = pq.read_table(p, columns=cols)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"unreadable part file ({exc})", p) from None
        tables.append(t.append_column("_part", pa.array(np.full(t.num_rows, idx, np.int64))))
    if not tables:
        empty = schema if cols is None else pa.schema([schema.field(c) for c in cols])
        df = empty.empty_table().to_pandas()
    else:
        df = pa.concat_tables(tables).to_pandas()
        df = df.sort_values(["_part"], kind="stable").drop_duplicates("id", keep="last")
        df = df.sort_values(["seq", "id"], kind="stable").drop(columns="_part")
    if not keep_seq:
        df = df.drop(columns="seq")
    return df.reset_index(drop=True)


def dataset_counts(out: str | os.PathLike) -> dict[str, int]:
    """Rows of a dataset by status (newest row per id), read with the compact index."""
    _, _, st, _ = _scan_index(Path(out), quarantine=False)
    inv = {v: k for k, v in _STATUS_CODES.items()}
    vals, cnt = np.unique(st, return_counts=True)
    counts = {STATUS_OK: 0, STATUS_NO_CELL: 0, STATUS_ERROR: 0}
    counts.update({inv[int(v)]: int(c) for v, c in zip(vals, cnt, strict=True)})
    return counts
