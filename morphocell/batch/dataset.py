"""The features dataset: a folder of Parquet part files, one row per image.

:func:`morphocell.batch.parquet.extract_to_parquet` (``morphocell features``) writes it, one
part file per finished chunk; :func:`read_features` reads it back. This module holds its
layout, metadata, lock, atomic part files and resume index.

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
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .._utils import atomic_path, atomic_write, file_sha256
from ..errors import DataError
from ..features.extractor import STATUS_ERROR, STATUS_NO_CELL, STATUS_OK

__all__ = ["FORMAT_VERSION", "LOCK_NAME", "META_NAME", "dataset_counts", "read_features"]

#: Name of the metadata file inside the dataset folder.
META_NAME = "_morphocell_features.json"
#: Name of the advisory lock file inside the dataset folder.
LOCK_NAME = "_morphocell.lock"
#: Version of the on-disk layout; bump when the columns or the metadata change meaning.
FORMAT_VERSION = 1
_FORMAT = "morphocell-features"
_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")
_TMP_RE = re.compile(r"^\.part-\d{6,}\..*\.parquet$")
_STATUS_CODES = {STATUS_OK: 0, STATUS_NO_CELL: 1, STATUS_ERROR: 2}


_NO_HASH = np.uint64(0)  # the 8-byte hash prefix recorded for a file that could not be read


# --------------------------------------------------------------------------------------------
# Keys and content hashes
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
    from .._version import __version__

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
