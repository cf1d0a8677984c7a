"""The batch engine: chunks of images measured by one of three executors.

Every batch path of morphocell -- in-memory results (:func:`extract_batch`, used by
:class:`~morphocell.features.extractor.FeatureExtractor`), the Parquet dataset
(:func:`morphocell.batch.parquet.extract_to_parquet`) and the feature cache
(:class:`morphocell.batch.cache.FeatureCache`) -- cuts its images into chunks and runs them
through :func:`run`, on one of these executors:

=====================  ===================================================================
:class:`Serial`        in this process, one chunk after the other
:class:`Local`         joblib's worker processes (loky; kept warm between calls and shared
                       with scikit-learn's ``n_jobs``)
:class:`Dask`          the workers of a ``dask.distributed.Client``
=====================  ===================================================================

At most ``limit`` chunks are in flight at any time, so memory does not grow with the
number of images. Results come back as chunks finish (in task order on local processes when
the caller leaves ``limit`` to joblib's defaults).

Transport of decoded images. A chunk of in-memory images sent to a local worker process
travels in a file (in ``/dev/shm`` where it exists and has room) instead of as pickled bytes:
the parent writes each image once into the chunk's file (:func:`pack_chunk`), the worker reads
its images back and removes the file (:class:`PackedChunk`). Pickling ~200 KB per image
through the pipe cost the parent, which shares the cores with the workers, about a tenth of
the two-process speed (``docs/scale.md``, "In-memory images and n_jobs").

The worker side of a chunk: :func:`measure_chunk` (images to ``(vector, status, error)``
rows) and :func:`measure_one` (one image; never raises for a bad image).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError, MorphocellError

__all__ = [
    "TAIL_CHUNKS_PER_WORKER",
    "ArraySlot",
    "Dask",
    "Local",
    "PackedChunk",
    "Serial",
    "batch_chunk_size",
    "chunk_dir",
    "error_row",
    "extract_batch",
    "make_executor",
    "measure_chunk",
    "measure_one",
    "pack_chunk",
    "run",
    "tune_malloc",
]


# --------------------------------------------------------------------------------------------
# The worker side: one image, one chunk
# --------------------------------------------------------------------------------------------

def measure_one(source, fams: tuple[str, ...], method: str):
    """``(vector, status, error)`` of a path or an array; never raises a MorphocellError."""
    from ..features.extractor import STATUS_NO_CELL, STATUS_OK, extract_array
    from ..io import read_image

    try:
        img = read_image(source) if isinstance(source, (str, os.PathLike)) else source
        vec, masks = extract_array(img, None, fams, method)
        if not masks.found:
            return vec, STATUS_NO_CELL, str(masks.info.get("reason", "no cell found"))
        return vec, STATUS_OK, ""
    except MorphocellError as exc:
        return error_row(fams, str(exc))


def error_row(fams: tuple[str, ...], message: str):
    """The (all-NaN vector, status, error) result of an image that could not be measured."""
    from ..features.extractor import STATUS_ERROR, feature_names

    return np.full(len(feature_names(fams)), np.nan), STATUS_ERROR, message


def measure_chunk(sources, fams: tuple[str, ...], method: str) -> list[tuple]:
    """Rows of one chunk (a list of paths / arrays, or a :class:`PackedChunk`), in order."""
    if isinstance(sources, PackedChunk):
        return sources.run(fams, method)
    return [measure_one(s, fams, method) for s in sources]


_MALLOC_TUNED: bool | None = None


def tune_malloc() -> bool:
    """Undo the page-fault cost of Dask's ``MALLOC_TRIM_THRESHOLD_`` in this process (glibc).

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (config
    ``distributed.nanny.pre-spawn-environ``) so that freed memory goes back to the OS. Setting
    that variable also switches off glibc's dynamic mmap threshold, so every buffer above
    128 KiB (an image, a mask, a kernel's scratch arrays) becomes a fresh ``mmap`` whose pages
    fault in again for every image: about 700 page faults per PBC image and 40-50% more CPU
    per image than the same code in a plain process (``docs/scale.md``). When that variable is
    set, this sets fixed thresholds instead: buffers below 32 MiB come from the heap and up to
    64 MiB of free heap stays mapped per malloc arena (about one per worker thread): the
    ceilings that glibc's dynamic thresholds can reach on 64-bit systems. Called once per
    process by :func:`morphocell.batch.parquet.extract_chunk`; does nothing when the variable
    is not set, off glibc, or when ``MORPHOCELL_KEEP_MALLOC=1``.

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


# --------------------------------------------------------------------------------------------
# Transport of decoded images to local worker processes
# --------------------------------------------------------------------------------------------

class ArraySlot(NamedTuple):
    """Where one image lies in a :class:`PackedChunk`'s file."""

    offset: int
    shape: tuple
    dtype: str


class PackedChunk:
    """A chunk whose in-memory images lie in a file; one file per chunk, written when the
    chunk is dispatched, so the files hold only the chunks in flight."""

    def __init__(self, file: str, items: list):
        self.file = file
        self.items = items  # ArraySlot for a packed array, else the source itself

    def run(self, fams, method):
        """Read the images back, remove the file, measure every item (in order)."""
        images = {}
        lost = ""
        try:
            with open(self.file, "rb") as fh:
                for j, it in enumerate(self.items):
                    if isinstance(it, ArraySlot):
                        a = np.empty(it.shape, np.dtype(it.dtype))
                        fh.seek(it.offset)
                        if fh.readinto(memoryview(a).cast("B")) != a.nbytes:
                            raise OSError(f"short read from {self.file}")
                        images[j] = a
        except OSError as exc:  # the batch goes on: these images become error rows
            lost = f"in-memory image lost on its way to the worker process: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.file)
        out = []
        for j, it in enumerate(self.items):
            if isinstance(it, ArraySlot) and j not in images:
                out.append(error_row(fams, lost))
            else:
                out.append(measure_one(images.get(j, it), fams, method))
        return out


def chunk_dir(nbytes: int) -> str | None:
    """``/dev/shm`` when it exists, is writable and has room for many chunks of ``nbytes``
    (containers often give it only 64 MB), else None (the default temporary folder)."""
    d = "/dev/shm"
    try:
        st = os.statvfs(d)
    except (OSError, AttributeError):
        return None
    return d if os.access(d, os.W_OK) and st.f_bavail * st.f_frsize >= 16 * nbytes else None


def pack_chunk(chunk: list, files: list):
    """``chunk`` as a :class:`PackedChunk` when it holds numpy images (the file's name is
    appended to ``files`` for the caller's clean-up), else ``chunk`` unchanged -- also when
    the file cannot be written (no room: the images are then pickled)."""
    import tempfile

    idx = [j for j, s in enumerate(chunk)
           if isinstance(s, np.ndarray) and s.dtype != object and s.size]
    if not idx:
        return chunk
    arrays = {j: np.ascontiguousarray(chunk[j]) for j in idx}
    total = sum(a.nbytes for a in arrays.values())
    fd, path = tempfile.mkstemp(prefix="morphocell-chunk-", suffix=".bin", dir=chunk_dir(total))
    items = list(chunk)
    try:
        with os.fdopen(fd, "wb") as fh:
            off = 0
            for j, a in arrays.items():
                fh.write(memoryview(a).cast("B"))
                items[j] = ArraySlot(off, a.shape, a.dtype.str)
                off += a.nbytes
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return chunk
    files.append(path)
    return PackedChunk(path, items)


class _Packer:
    """Packs the first argument of each task as it is dispatched (possibly from joblib's
    callback thread); the workers remove their files, :meth:`close` removes the rest, and
    once closed no new file is written."""

    def __init__(self):
        self.files: list[str] = []
        self.lock = threading.Lock()
        self.over = threading.Event()

    def wrap(self, tasks: Iterable[tuple]) -> Iterator[tuple]:
        for first, *rest in tasks:
            with self.lock:
                if self.over.is_set():
                    return
                packed = pack_chunk(first, self.files)
            yield (packed, *rest)

    def close(self) -> None:
        with self.lock:
            self.over.set()
            for f in self.files:
                with contextlib.suppress(OSError):
                    os.unlink(f)


# --------------------------------------------------------------------------------------------
# Executors: the same bounded loop in this process, on local processes, or on Dask
# --------------------------------------------------------------------------------------------

class Serial:
    """Runs each chunk in this process, one after the other."""

    slots = 1
    transport = False

    @staticmethod
    def imap(fn: Callable, tasks: Iterable[tuple], limit: int | None = None) -> Iterator[Any]:
        """``fn(*task)`` for each task, in order."""
        for args in tasks:
            yield fn(*args)


class Local:
    """joblib worker processes (the loky backend: warm between calls, shared with
    scikit-learn's ``n_jobs``; Ctrl-C stops them). With ``watch_driver`` each worker also
    ends within a second when the driver is gone (``kill -9``), instead of finishing its
    chunk first: for long runs such as the Parquet writer's."""

    transport = True

    def __init__(self, n_jobs: int, watch_driver: bool = False):
        from joblib import effective_n_jobs

        self.n_jobs = n_jobs
        self.watch_driver = watch_driver
        self.slots = max(1, effective_n_jobs(n_jobs))

    def imap(self, fn: Callable, tasks: Iterable[tuple], limit: int | None = None
             ) -> Iterator[Any]:
        """``fn(*task)`` for each task. ``limit``: tasks in flight, one chunk per task,
        results as they finish; ``None``: joblib's defaults (``2 x n_jobs`` ahead, chunks
        batched automatically when they are quick, results in task order)."""
        from joblib import Parallel, delayed

        from .._warmup import compile_kernels

        # a fresh install: compile the families side by side once instead of every worker
        # compiling all of them (no-op when the on-disk kernel cache is warm)
        compile_kernels(self.n_jobs)
        kw: dict[str, Any] = {"return_as": "generator"}
        if limit is not None:
            kw.update(pre_dispatch=int(limit), batch_size=1, return_as="generator_unordered")
        if self.watch_driver:
            me = os.getpid()
            calls = (delayed(_in_worker)(me, fn, *a) for a in tasks)
        else:
            calls = (delayed(fn)(*a) for a in tasks)
        gen = Parallel(n_jobs=self.n_jobs, **kw)(calls)
        try:
            yield from gen
        finally:
            gen.close()  # early exit (error, Ctrl-C): joblib stops the running tasks


_WATCHING = False


def _in_worker(driver_pid: int, fn: Callable, *args):
    """``fn(*args)`` in a local worker process; the first call there starts a thread that
    ends the process when the driver is gone (``kill -9`` leaves no worker measuring on)."""
    global _WATCHING
    if not _WATCHING and os.getpid() != driver_pid:
        _WATCHING = True
        threading.Thread(target=_watch_parent, args=(driver_pid,), daemon=True,
                         name="morphocell-parent-watch").start()
    return fn(*args)


def _watch_parent(driver_pid: int) -> None:
    import time

    while True:
        time.sleep(0.5)
        if os.getppid() != driver_pid:
            os._exit(70)


class Dask:
    """Submits chunks to a ``dask.distributed.Client`` (each task retried once)."""

    transport = False  # the workers may be other machines

    def __init__(self, client, wait_timeout: float = 60.0):
        try:
            client.wait_for_workers(1, timeout=wait_timeout)
        except Exception as exc:  # noqa: BLE001 - TimeoutError types vary across versions
            addr = getattr(getattr(client, "scheduler", None), "address", "?")
            raise DataError(f"the Dask cluster at {addr} has no worker after "
                            f"{wait_timeout:.0f} s ({type(exc).__name__})") from None
        self.client = client
        self.slots = max(1, sum(client.nthreads().values()))

    def imap(self, fn: Callable, tasks: Iterable[tuple], limit: int | None = None
             ) -> Iterator[Any]:
        """``fn(*task)`` for each task, as they finish; at most ``limit`` in flight."""
        from distributed import wait

        limit = max(1, int(limit) if limit else 2 * self.slots)
        source = iter(tasks)
        pending: set = set()
        try:
            while True:
                while len(pending) < limit:
                    args = next(source, None)
                    if args is None:
                        break
                    pending.add(self.client.submit(fn, *args, pure=False, retries=1))
                if not pending:
                    return
                done = set(wait(list(pending), return_when="FIRST_COMPLETED").done)
                for f in done:
                    pending.discard(f)
                    res = f.result()
                    del f
                    yield res
        finally:
            for f in pending:  # the client belongs to the caller: only our futures go
                with contextlib.suppress(Exception):
                    f.cancel()


def make_executor(n_jobs: int | None = None, client=None, watch_driver: bool = False):
    """:class:`Dask` with a ``client``, :class:`Local` for ``n_jobs`` other than None / 1
    (-1: one per CPU; ``watch_driver`` as there), else :class:`Serial`."""
    if client is not None:
        return Dask(client)
    if n_jobs in (None, 1):
        return Serial()
    return Local(n_jobs, watch_driver)


def run(executor, fn: Callable, tasks: Iterable[tuple], limit: int | None = None,
        pack: bool = False) -> Iterator[Any]:
    """``fn(*task)`` for each task on ``executor``, yielded as they finish.

    ``limit``: tasks in flight (see the executors' ``imap``). With ``pack`` on a
    :class:`Local` executor the first argument of each task (a chunk of images) travels by
    :func:`pack_chunk` when it holds decoded arrays; ``fn`` must then accept a
    :class:`PackedChunk` (as :func:`measure_chunk` does). The chunk files are removed when the
    run ends, finished or not.
    """
    packer = _Packer() if pack and executor.transport else None
    gen = executor.imap(fn, packer.wrap(tasks) if packer else tasks, limit)
    try:
        yield from gen
    finally:
        gen.close()
        if packer is not None:
            packer.close()


# --------------------------------------------------------------------------------------------
# In-memory results
# --------------------------------------------------------------------------------------------

#: with several workers, :func:`extract_batch` cuts a batch into at least this many chunks per
#: worker (smaller chunks than ``chunk_size`` when the batch is small)
TAIL_CHUNKS_PER_WORKER = 16


def batch_chunk_size(n: int, chunk_size: int, n_jobs) -> int:
    """``chunk_size``, made smaller for a small batch on several workers so that each worker
    gets at least :data:`TAIL_CHUNKS_PER_WORKER` chunks: the last chunk to finish then leaves
    the other workers idle for a small share of the run (500 images in chunks of 32 on 2
    workers: up to 1/8 of it; in chunks of 16: 1/16)."""
    if n_jobs in (None, 1):
        return chunk_size
    from joblib import effective_n_jobs

    per = -(-n // (TAIL_CHUNKS_PER_WORKER * max(effective_n_jobs(n_jobs), 1)))
    return max(1, min(chunk_size, per))


def extract_batch(sources: Sequence, families=None, method: str = "otsu", n_jobs=None,
                  verbose: int = 0, chunk_size: int = 32, client=None):
    """Features of many images (paths or arrays).

    Parameters
    ----------
    sources : sequence of path or ndarray
    families, method
        As in :func:`morphocell.features.extractor.extract_features`.
    n_jobs : int, optional
        Local worker processes (joblib); ``None`` or 1 runs in this process.
    verbose : int
        Progress bar on a terminal when > 0.
    chunk_size : int
        Images per task (smaller for a small batch, :func:`batch_chunk_size`).
    client : dask.distributed.Client, optional
        Run the chunks on this cluster instead (``n_jobs`` is then ignored).

    Returns
    -------
    (matrix, statuses, errors)
        An ``(n, n_features)`` float64 array (NaN rows for failed images), and per image a
        status (``ok`` / ``no_cell`` / ``error``) and an error message. A bad image never
        stops the batch.
    """
    from .._utils import progress
    from ..features.extractor import _families, feature_names

    fams = _families(families)
    n_feat = len(feature_names(fams))
    sources = list(sources)
    if client is None:
        chunk_size = batch_chunk_size(len(sources), chunk_size, n_jobs)
    chunks = [sources[i:i + chunk_size] for i in range(0, len(sources), chunk_size)]
    if client is None and len(chunks) <= 1:
        n_jobs = None
    ex = make_executor(n_jobs, client)
    results: list = [None] * len(chunks)
    if isinstance(ex, Serial):  # in order, without the index wrapper
        for k, c in enumerate(progress(chunks, desc="features", verbose=verbose,
                                       unit="chunk")):
            results[k] = measure_chunk(c, fams, method)
    else:
        tasks = ((c, k, measure_chunk, fams, method) for k, c in enumerate(chunks))
        done = run(ex, _indexed_chunk, tasks, pack=True)
        try:
            for k, rows in progress(done, total=len(chunks), desc="features", verbose=verbose,
                                    unit="chunk"):
                results[k] = rows
        finally:
            done.close()
    flat = [r for chunk in results for r in chunk]
    mat = np.vstack([r[0] for r in flat]) if flat else np.empty((0, n_feat))
    return mat, [r[1] for r in flat], [r[2] for r in flat]


def _indexed_chunk(chunk, k: int, fn, *args):
    """``(k, fn(chunk, *args))``: the chunk's number travels with its result."""
    return k, fn(chunk, *args)
