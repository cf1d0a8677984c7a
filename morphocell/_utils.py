"""Small helpers shared across morphocell: atomic writes, progress bars, hashing."""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

#: The 8 symmetries of the square as ``(quarter turns, mirrored)``; ``(0, False)`` first.
DIHEDRAL = tuple((k, flip) for k in range(4) for flip in (False, True))


def dihedral(a, k: int, flip: bool, axes: tuple[int, int] = (0, 1)):
    """``a`` rotated by ``k`` quarter turns in the plane of ``axes``, then mirrored along
    ``axes[1]`` if ``flip``; contiguous. Works on one image (``axes=(0, 1)``) or a batch
    (``axes=(1, 2)``)."""
    import numpy as np

    t = np.rot90(a, k, axes=axes)
    return np.ascontiguousarray(np.flip(t, axis=axes[1]) if flip else t)


def _default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


#: Mode of the files morphocell writes (what ``open()`` would give); ``mkstemp`` alone would
#: leave 0600 and hide results from the rest of the lab.
FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it onto ``path``.

    Nothing half-written is ever left under the final name: on any exception the
    temporary file is removed and ``path`` keeps its previous content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that want a filename
    (``DataFrame.to_parquet``, ``Figure.savefig``, ``cv2.imwrite``); renamed on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


#: Seconds between two progress lines when stderr is not a terminal (a log file, a batch job).
LOG_PROGRESS_EVERY = 60.0


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             verbose: int = 1, unit: str = "img") -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when ``verbose`` and stderr is a terminal.

    When stderr is not a terminal (``nohup``, a SLURM log, a pipe) a bar's carriage returns
    would fill the log, so a plain line is written instead, at most every
    :data:`LOG_PROGRESS_EVERY` seconds and only once that much time has passed: ``features:
    1200/10936 img (11%), 61 s, ~8 min left``; short runs print nothing.
    """
    if not verbose:
        return iterable
    if not sys.stderr.isatty():
        return _log_progress(iterable, total=total, desc=desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)


def _log_progress(iterable: Iterable[T], *, total: int | None, desc: str, unit: str,
                  every: float | None = None, clock=None) -> Iterator[T]:
    """Yield from ``iterable``, writing a progress line to stderr every ``every`` seconds."""
    if total is None:
        with contextlib.suppress(TypeError):
            total = len(iterable)  # type: ignore[arg-type]
    counter = LogCounter(desc, total=total, unit=unit, every=every, clock=clock)
    for item in iterable:
        yield item
        counter.update(1)
    counter.close()


class LogCounter:
    """A progress counter for logs: ``update(n)`` as work finishes; a line on stderr at most
    every ``every`` seconds (default :data:`LOG_PROGRESS_EVERY`), once that much time has
    passed; ``close()`` writes a closing line if any line was written."""

    def __init__(self, desc: str = "", *, total: int | None = None, unit: str = "img",
                 every: float | None = None, clock=None):
        import time

        self.desc, self.total, self.unit = desc or "progress", total, unit
        self.every = LOG_PROGRESS_EVERY if every is None else float(every)
        self.clock = time.monotonic if clock is None else clock
        self.n = 0
        self.said = False
        self.t0 = self.last = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if now - self.last >= self.every:
            self.last, self.said = now, True
            self._write(self._line(now - self.t0))

    def close(self) -> None:
        if self.said:
            self.said = False
            self._write(f"{self.desc}: {self.n} {self.unit} done in "
                        f"{_duration(self.clock() - self.t0)}")

    def _line(self, elapsed: float) -> str:
        head = f"{self.desc}: {self.n}"
        if not self.total:
            rate = f" ({self.n / elapsed:.0f} {self.unit}/s)" if elapsed > 0 else ""
            return f"{head} {self.unit}, {_duration(elapsed)}{rate}"
        left = elapsed * (self.total - self.n) / self.n if self.n else float("nan")
        return (f"{head}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%), "
                f"{_duration(elapsed)}, ~{_duration(left)} left")

    @staticmethod
    def _write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """``value`` with a ``'`` in front when it is a string a spreadsheet would run as a formula
    (it starts with one of :data:`FORMULA_PREFIXES`); anything else unchanged.
    :func:`morphocell.io.load_manifest` removes that ``'`` again when it reads the file back."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(df, path: str | os.PathLike, *, index: bool = False, **kw) -> None:
    """``df.to_csv(path, index=index, **kw)``, atomically (:func:`atomic_path`), with every
    string cell, column name and index label passed through :func:`csv_safe` (paths, labels
    and error messages come from users' file names); numeric columns are written unchanged."""
    import pandas as pd

    out = df.copy(deep=False)
    for col in out.columns:
        if out[col].dtype == object or isinstance(out[col].dtype, pd.StringDtype):
            out[col] = out[col].map(csv_safe)
    out.columns = [csv_safe(c) for c in out.columns]
    if index:
        out.index = out.index.map(csv_safe)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=index, **kw)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20,
                max_bytes: int | None = None) -> str:
    """Hex SHA-256 of a file's bytes.

    Raises :class:`OSError` without reading anything when ``path`` is not a regular file (a
    FIFO, a device such as ``/dev/zero``, a directory: their reads may never end) or is larger
    than ``max_bytes`` (no limit by default; pass :data:`morphocell.io.MAX_FILE_BYTES` to hash
    only files that could be images)."""
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", os.fspath(path))
        h = hashlib.sha256()
        left = None if max_bytes is None else max_bytes + 1
        with os.fdopen(fd, "rb", closefd=False) as fh:
            while (block := fh.read(chunk if left is None else min(chunk, left))):
                h.update(block)
                if left is not None:
                    left -= len(block)
                    if left <= 0:  # the file grew past the limit while being read
                        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes",
                                      os.fspath(path))
        return h.hexdigest()
    finally:
        os.close(fd)


@contextlib.contextmanager
def cv2_one_thread() -> Iterator[None]:
    """Run OpenCV single-threaded inside the block (or decorated function); restore after.

    morphocell hands OpenCV small images (a ~100-pixel working copy, a cell crop), where its
    thread pool brings no speed but its idle threads spin: measured on PBC images in one
    process, 1.3-1.6 ms of extra system CPU per image (about a sixth of the work) for no wall
    time gained (docs/scale.md). Parallelism comes from processes over images instead. The
    previous setting is restored on exit, so a caller's own OpenCV work is not affected.
    """
    import cv2

    n = cv2.getNumThreads()
    if n == 1:
        yield
        return
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(n)


class CallableModule(types.ModuleType):
    """A module that is also its main function: ``morphocell.train``, ``morphocell.predict``
    and ``morphocell.adapt`` each name both a module and the function of the same name. The
    package exports the function, but once the module is imported Python records the module
    under that name on the package; calling the module calls the function (looked up at call
    time), so ``morphocell.train(paths, labels)`` works either way. A module opts in with
    ``sys.modules[__name__].__class__ = CallableModule``."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)
