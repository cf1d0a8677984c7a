"""Reading and validating images, folders of class subfolders and manifests.

Every reader returns an ``HxWx3`` ``uint8`` RGB array or raises
:class:`~morphocell.errors.ImageReadError` naming the file and the reason.

Conversions (documented, deterministic):

* grey (``L``, ``1``) -> RGB by repeating the channel;
* palette (``P``) -> RGB through the palette (transparency composited on white);
* RGBA / LA -> RGB by compositing on a white background (slides are bright);
* CMYK (e.g. Adobe JPEG) -> RGB with Pillow's conversion;
* 16-bit (grey or RGB, PNG/TIFF) -> 8-bit by ``round(v / 257)``: a linear map of the full
  0..65535 range onto 0..255, no auto-contrast (so intensities stay comparable);
* 32-bit integer / float grey -> 8-bit by the same rule if all values fit 0..65535
  (floats in 0..1 are scaled by 255), otherwise the image is refused.
"""
from __future__ import annotations

import csv
import os
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, ImageReadError

__all__ = [
    "DERIVED_SUFFIXES",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "Listing",
    "ListingReport",
    "derived_pnginfo",
    "is_derived",
    "iter_entries",
    "list_entries",
    "load_folder",
    "load_manifest",
    "read_image",
    "resolve_inputs",
    "validate_image",
]

#: File name extensions treated as images when listing folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: Largest accepted image, in pixels (width * height), checked from the header before
#: decoding: protects against decompression bombs and bounds the memory of one image. 20
#: megapixels holds a cell crop, a smear field or a 20 MP camera frame (5472x3648); reading,
#: segmenting and measuring an image at the limit stays within about 2 GB in one process,
#: with either segmentation method (docs/experiments/2026-12-05-read-limits.md).
MAX_PIXELS = 20_000_000
#: Largest accepted image file, in bytes, checked with ``stat`` before anything is read: the
#: largest uncompressed encoding the reader accepts (16-bit RGBA, 8 bytes a pixel) at
#: :data:`MAX_PIXELS`, plus room for headers. Larger files cannot be an image it would accept.
MAX_FILE_BYTES = 8 * MAX_PIXELS + (1 << 20)
#: Smallest accepted side, in pixels: below this there is no cell to measure.
MIN_SIDE = 16

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: File signatures read before anything else, with the Pillow format they select.
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (_PNG_MAGIC, "PNG"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _to_uint8_from_16(a: np.ndarray, rows: int = 512) -> np.ndarray:
    """``round(a / 257)`` as ``uint8`` (``a`` in 0..65535), in integer arithmetic and row
    blocks so that a large 16-bit image needs no float copy of itself:
    ``(v + 128) // 257`` equals ``round(v / 257)`` for integers (257 is odd: no ties)."""
    out = np.empty(a.shape, np.uint8)
    for i in range(0, a.shape[0], rows):
        blk = a[i:i + rows]
        if np.issubdtype(blk.dtype, np.floating):
            out[i:i + rows] = np.clip(np.rint(blk / 257.0), 0, 255)
        else:
            out[i:i + rows] = (blk.astype(np.uint32) + 128) // 257
    return out


def _decode_16bit_cv2(data: bytes, path: str) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        raise ImageReadError("corrupt 16-bit image (could not be decoded)", path)
    if arr.ndim == 3 and arr.shape[2] == 4:
        out = np.empty(arr.shape[:2] + (3,), np.uint8)
        for i in range(0, arr.shape[0], 512):  # composite on white, a block of rows at a time
            blk = arr[i:i + 512]
            rgb = blk[..., 2::-1].astype(np.float64)
            alpha = blk[..., 3:4].astype(np.float64) / 65535.0
            out[i:i + 512] = _to_uint8_from_16(rgb * alpha + 65535.0 * (1.0 - alpha))
        return out
    if arr.ndim == 3:
        arr = arr[..., 2::-1]
    out = _to_uint8_from_16(arr) if arr.dtype != np.uint8 else arr
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def _sniff(head: bytes) -> str | None:
    """The format named by a file's first bytes (Pillow's name), or ``None``."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _read_bounded(spath: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of a regular image file and its format, checked before they are read:
    the file is a regular file (``stat``, then the opened descriptor again: a FIFO or device
    is never read), not empty, starts like a JPEG/PNG/BMP/TIFF (its first 16 bytes) and is
    at most ``max_bytes`` long."""
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        if os.path.islink(spath):
            raise ImageReadError(f"broken symbolic link (target {os.readlink(spath)!r} does "
                                 "not exist)", spath) from None
        raise ImageReadError("file not found", spath) from None
    except PermissionError as exc:
        raise ImageReadError(f"permission denied ({exc.strerror})", spath) from None
    except OSError as exc:
        raise ImageReadError(f"could not be read ({exc.strerror or exc})", spath) from None
    _check_regular(st, spath)
    try:
        fd = os.open(spath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except PermissionError as exc:
        raise ImageReadError(f"permission denied ({exc.strerror})", spath) from None
    except OSError as exc:
        raise ImageReadError(f"could not be read ({exc.strerror or exc})", spath) from None
    try:
        st = os.fstat(fd)  # the file opened may not be the one stat-ed (a swapped name)
        _check_regular(st, spath)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            head = fh.read(16)
            fmt = _sniff(head)
            if fmt is None:
                raise ImageReadError("not an image (format not recognised: not JPEG, PNG, "
                                     "BMP or TIFF)", spath)
            if st.st_size > max_bytes:
                raise ImageReadError(f"file too large: {st.st_size} bytes exceeds the limit "
                                     f"of {max_bytes} bytes for an image", spath)
            data = head + fh.read(max_bytes + 1 - len(head))
    except PermissionError as exc:
        raise ImageReadError(f"permission denied ({exc.strerror})", spath) from None
    except OSError as exc:
        raise ImageReadError(f"could not be read ({exc.strerror or exc})", spath) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageReadError(f"file too large: more than {max_bytes} bytes", spath)
    return data, fmt


def _check_regular(st: os.stat_result, spath: str) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ImageReadError("is a directory, not an image file", spath)
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a character device" if stat.S_ISCHR(mode) else
                "a block device" if stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a special file")
        raise ImageReadError(f"not a regular file ({kind}), not an image", spath)
    if st.st_size == 0:
        raise ImageReadError("empty file (0 bytes)", spath)


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Read an image file as an ``HxWx3`` ``uint8`` RGB array.

    Everything that can be checked before decoding is checked first, so that no input costs
    more than its checks: the file must be a regular file (``os.stat``; a FIFO, a device such
    as ``/dev/zero`` or a directory is refused without being read), at most ``max_bytes``
    long, start with a JPEG, PNG, BMP or TIFF signature (the first 16 bytes), and declare at
    most ``max_pixels`` pixels in its header; only then is it decoded.

    Parameters
    ----------
    path : str or PathLike
        JPEG, PNG, BMP or TIFF file.
    max_pixels : int
        Refuse images with more pixels than this (read from the header, before decoding).
    max_bytes : int
        Refuse files larger than this (from ``stat``, before reading).

    Raises
    ------
    ImageReadError
        If the file is missing (or a broken link), not a regular file, empty, too large, not
        an image, truncated or corrupt, smaller than ``MIN_SIDE`` pixels on a side, or larger
        than ``max_pixels``.

    Examples
    --------
    >>> from morphocell.datasets import sample_paths
    >>> img = read_image(sample_paths()[0])
    >>> img.shape[2], img.dtype.name
    (3, 'uint8')
    """
    from PIL import Image, UnidentifiedImageError

    spath = os.fspath(path)
    data, fmt = _read_bounded(spath, int(max_bytes))

    import io as _io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: we check ourselves
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            try:
                im = Image.open(_io.BytesIO(data), formats=[fmt])
            except UnidentifiedImageError:
                raise ImageReadError(f"not an image (starts like {fmt} but its header is not "
                                     "valid)", spath) from None
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad headers
                raise ImageReadError(f"corrupt image header ({exc})", spath) from None
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(
                    f"image too large: {w}x{h} = {w * h} pixels exceeds the limit of "
                    f"{max_pixels} (possible decompression bomb)", spath)
            if min(w, h) < MIN_SIDE:
                raise ImageReadError(
                    f"image too small: {w}x{h}, each side must be at least {MIN_SIDE} px", spath)
            raw16 = any(";16" in str(t[3]) for t in (im.tile or []) if len(t) > 3)
            try:
                im.load()
            except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError & co
                raise ImageReadError(f"truncated or corrupt image data ({exc})", spath) from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit

    mode = im.mode
    if raw16 and mode in ("RGB", "RGBA"):
        del im
        return _decode_16bit_cv2(data, spath)
    del data
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.repeat(_to_uint8_from_16(np.asarray(im))[..., None], 3, axis=2)
    if mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageReadError("float image contains NaN or infinity", spath)
        if mode == "F" and a.min() >= 0 and a.max() <= 1.0:
            g = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        elif a.min() >= 0 and a.max() <= 65535:
            g = _to_uint8_from_16(a)
        else:
            raise ImageReadError(f"unsupported value range {a.min()}..{a.max()} for mode {mode}",
                                 spath)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def validate_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an in-memory image and return it as a contiguous ``HxWx3`` ``uint8`` array.

    Accepts ``HxW`` grey and ``HxWx4`` RGBA (alpha dropped) ``uint8`` arrays, and float arrays in
    ``[0, 1]`` (scaled by 255). Raises :class:`ImageReadError` otherwise.
    """
    a = np.asarray(image)
    if a.dtype == bool or a.size == 0:
        raise ImageReadError(f"expected an RGB image array, got dtype {a.dtype} shape {a.shape}",
                             name)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageReadError(f"expected an HxWx3 array, got shape {a.shape}", name)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ImageReadError("image contains NaN or infinity", name)
            if a.min() < 0 or a.max() > 1:
                raise ImageReadError("float images must lie in [0, 1]", name)
            a = np.rint(a * 255.0).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.integer):
            if a.min() < 0 or a.max() > 255:
                raise ImageReadError(f"integer image values must lie in 0..255 (dtype {a.dtype})",
                                     name)
            a = a.astype(np.uint8)
        else:
            raise ImageReadError(f"unsupported dtype {a.dtype}", name)
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageReadError(f"image too small: {a.shape[1]}x{a.shape[0]}, each side must be at "
                             f"least {MIN_SIDE} px", name)
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------------------------
# Listing: the one lister of folders, class folders and manifests
# --------------------------------------------------------------------------------------------

#: Ways to read one folder given as input (``layout=``):
#: ``"auto"``: images only -> unlabelled; subfolders only -> one class per subfolder; both ->
#: :class:`DataError` naming one loose image and one subfolder (the caller must choose);
#: ``"flat"``: the images directly inside, subfolders ignored (counted in the report);
#: ``"classes"``: one class per subfolder, loose images ignored (counted in the report).
LAYOUTS = ("auto", "flat", "classes")

#: File name endings of what ``morphocell segment`` writes next to its inputs' names
#: (``<name>_mask.png``, ``<name>_overlay.png``), also the segwbc expert masks
#: (``NNN_mask.png``): masks and overlays, never cells. The lister skips them.
DERIVED_SUFFIXES = ("_mask.png", "_overlay.png")
#: PNG text chunk (keyword, value) that marks a file as written by morphocell (masks,
#: overlays): see :func:`derived_pnginfo`. The lister skips marked PNGs whatever their name.
DERIVED_MARKER = ("Software", "morphocell")


@dataclass
class ListingReport:
    """What a listing left out or found odd, filled as :func:`iter_entries` runs.

    Attributes
    ----------
    skipped : list of str
        Masks and overlays (files written by morphocell, expert ``*_mask.png``) not listed.
    ignored : list of str
        Loose images under ``layout="classes"``, subfolders under ``layout="flat"``, and
        folders inside class folders (not read: a class is one level deep).
    empty_classes : list of str
        Class folders that hold no image (an error when labels are required).
    labelled : bool
        Whether some input carries labels (a class folder, a manifest with ``label``).
    layouts : list of str
        The reading chosen for each input: ``"flat"``, ``"classes"``, ``"manifest"``,
        ``"file"``.
    """

    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    labelled: bool = False
    layouts: list[str] = field(default_factory=list)


@dataclass
class Listing:
    """A complete listing (:func:`list_entries`): ``ids``, ``paths``, ``labels`` (``None``
    when no input carries labels; ``""`` for an unlabelled row among labelled ones) and the
    :class:`ListingReport` of what was left out."""

    ids: list[str]
    paths: list[str]
    labels: list[str] | None
    report: ListingReport


def derived_pnginfo():
    """A :class:`PIL.PngImagePlugin.PngInfo` carrying :data:`DERIVED_MARKER`; pass it as
    ``pnginfo=`` when saving a mask or overlay so that no lister reads it back as a cell."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*DERIVED_MARKER)
    return info


def _has_marker(path: str, limit: int = 1 << 16) -> bool:
    """Whether the PNG at ``path`` holds the :data:`DERIVED_MARKER` text chunk before its
    image data (where Pillow writes text chunks); reads at most ``limit`` bytes."""
    want = DERIVED_MARKER[0].encode("latin-1") + b"\0" + DERIVED_MARKER[1].encode("latin-1")
    try:  # non-blocking: a FIFO named .png must not stall the listing
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, limit)
    except OSError:
        return False
    finally:
        os.close(fd)
    if not head.startswith(_PNG_MAGIC):
        return False
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(head):
        n = int.from_bytes(head[pos:pos + 4], "big")
        kind = head[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and head[pos + 8:pos + 8 + n] == want:
            return True
        pos += 12 + n
    return False


def is_derived(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a mask or overlay rather than a cell image: its name ends with one
    of :data:`DERIVED_SUFFIXES`, or it is a PNG marked with :data:`DERIVED_MARKER`."""
    s = os.fspath(path)
    low = s.lower()
    if low.endswith(DERIVED_SUFFIXES):
        return True
    return low.endswith(".png") and _has_marker(s)


def _is_image_name(name: str) -> bool:
    return (not name.startswith(".")) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan(folder: str) -> tuple[list[str], list[str]]:
    """``(image names, subfolder names)`` of one folder, each sorted; hidden names left out.

    An image name is any non-folder entry with an image extension, including a broken symbolic
    link or a FIFO: those are listed and become failed rows when read, never dropped here."""
    files, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(e.name)
                elif _is_image_name(e.name):
                    files.append(e.name)
    except PermissionError:
        raise DataError("permission denied while listing the folder", folder) from None
    except NotADirectoryError:
        raise DataError("not a folder", folder) from None
    return sorted(files), sorted(dirs)


def _unescape(value: str) -> str:
    """Undo :func:`morphocell._utils.csv_safe`: a ``'`` that morphocell put before a value a
    spreadsheet would run as a formula (``'=x.jpg`` -> ``=x.jpg``)."""
    from ._utils import FORMULA_PREFIXES

    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _iter_manifest(csv_path: Path, report: ListingReport, labelled: bool = False
                   ) -> Iterator[tuple[str, str, str | None]]:
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise DataError(f"manifest needs a 'path' column (found: {fields})", csv_path)
        has_label, has_id = "label" in fields, "id" in fields
        if labelled and not has_label:
            raise DataError(f"manifest needs a 'label' column to train (found: {fields})",
                            csv_path)
        report.labelled = report.labelled or has_label
        for r in reader:
            r = {k.strip(): _unescape((v or "").strip()) for k, v in r.items() if k is not None}
            if not r.get("path"):
                continue
            p = r["path"]
            path = str(Path(p if os.path.isabs(p) else os.path.join(base, p)))
            key = (r.get("id") if has_id else "") or os.path.abspath(path)
            label = (r.get("label") or None) if has_label else None
            yield key, path, label


def _folder_layout(folder: str, files: list[str], dirs: list[str], layout: str,
                   skip_derived: bool) -> str:
    if layout != "auto":
        return layout
    if not dirs:
        return "flat"
    loose = next((n for n in files
                  if not (skip_derived and is_derived(os.path.join(folder, n)))), None)
    if loose is None:
        return "classes"
    more_f = f" and {len(files) - 1} more" if len(files) > 1 else ""
    more_d = f" and {len(dirs) - 1} more" if len(dirs) > 1 else ""
    raise DataError(
        f"holds both images ({loose}{more_f}) and subfolders ({dirs[0]}/{more_d}); say which "
        "reading you want: layout='flat' (the images directly inside; subfolders ignored) or "
        "layout='classes' (one class per subfolder; loose images ignored) "
        "(command line: --layout flat|classes)", folder)


def iter_entries(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                 layout: str = "auto", labelled: bool = False, skip_derived: bool = True,
                 report: ListingReport | None = None
                 ) -> Iterator[tuple[str, str, str | None]]:
    """List images lazily as ``(id, path, label)`` tuples, never holding the whole list.

    Each input is read as follows:

    * a ``.csv`` file -> a manifest read row by row: a ``path`` column (relative paths are
      relative to the CSV's folder), optional ``label`` and ``id`` columns; ``id`` makes the
      row key, so one file listed several times with distinct ids gives distinct rows;
    * a folder -> by ``layout`` (:data:`LAYOUTS`): with ``"auto"``, a folder of images is
      unlabelled, a folder of subfolders is ``root/<label>/<image>`` (sorted by label then
      file name), and a folder holding both is a :class:`DataError` naming one image and one
      subfolder; ``"flat"`` / ``"classes"`` choose;
    * anything else -> one image path (a missing image file becomes a failed row when read;
      a missing path without an image extension, e.g. a mistyped folder, is a
      :class:`DataError`).

    Masks and overlays (:func:`is_derived`: ``*_mask.png``, ``*_overlay.png``, PNGs marked by
    morphocell) are skipped and recorded in ``report.skipped`` unless ``skip_derived=False``.
    A broken symbolic link or other non-regular file with an image name is listed (it becomes
    a failed row when read). One directory's names are held in memory at a time: for
    millions of files in one folder prefer a manifest. The row key ``id`` is the manifest's
    ``id`` when given, else the absolute path.

    Parameters
    ----------
    inputs : path or sequence of paths
    layout : {"auto", "flat", "classes"}
    labelled : bool
        Require a label for every row (training): an input without labels, an empty class
        folder or a manifest row with an empty label is a :class:`DataError`.
    skip_derived : bool
        Skip masks and overlays (default).
    report : ListingReport, optional
        Filled with what was skipped, ignored or empty while the generator runs.

    Raises
    ------
    DataError
        A manifest without a ``path`` column or not UTF-8, a folder that cannot be listed or
        mixes images and subfolders under ``layout="auto"``, missing labels when
        ``labelled``, or (when the generator is exhausted) nothing listed.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    yield from _entries([Path(i) for i in inputs], layout, labelled, skip_derived,
                        ListingReport() if report is None else report, False)


def _entries(items: list[Path], layout: str, labelled: bool, skip_derived: bool,
             rep: ListingReport, force_manifest: bool) -> Iterator[tuple[str, str, str | None]]:
    if not items:
        raise DataError("no input given")
    n = 0

    def keep(path: str) -> bool:
        if skip_derived and is_derived(path):
            rep.skipped.append(path)
            return False
        return True

    for item in items:
        if force_manifest or (item.suffix.lower() == ".csv" and not item.is_dir()):
            if not item.is_file():
                raise DataError("manifest not found", item)
            rep.layouts.append("manifest")
            try:
                for line, (key, path, label) in enumerate(_iter_manifest(item, rep, labelled),
                                                             start=2):
                    if labelled and not label:
                        raise DataError(f"row {line} has no label ({path}); every row needs "
                                        "a 'label' to train", item)
                    if keep(path):
                        n += 1
                        yield key, path, label
            except UnicodeDecodeError:
                raise DataError("manifest is not a UTF-8 CSV file", item) from None
            continue
        if not item.is_dir():
            if not _is_image_name(item.name) and not os.path.lexists(item):
                raise DataError("no such folder or file", item)  # a mistyped folder name
            if labelled:
                raise DataError("no labels: give a folder of class subfolders or a manifest "
                                "CSV with 'path' and 'label' columns", item)
            rep.layouts.append("file")
            if keep(str(item)):
                n += 1
                yield os.path.abspath(str(item)), str(item), None
            continue
        folder = str(item)
        files, dirs = _scan(folder)
        how = _folder_layout(folder, files, dirs, layout, skip_derived)
        rep.layouts.append(how)
        if how == "flat":
            if labelled:
                raise DataError("no labels: the folder holds images, not class subfolders "
                                "(give a folder of class subfolders or a manifest CSV with "
                                "'path' and 'label' columns)", item)
            rep.ignored.extend(os.path.join(folder, d) for d in dirs)
            for name in files:
                p = os.path.join(folder, name)
                if keep(p):
                    n += 1
                    yield os.path.abspath(p), p, None
            continue
        rep.labelled = True
        rep.ignored.extend(os.path.join(folder, f) for f in files
                           if not (skip_derived and is_derived(os.path.join(folder, f))))
        for cls in dirs:
            sub = os.path.join(folder, cls)
            names, nested = _scan(sub)
            rep.ignored.extend(os.path.join(sub, d) for d in nested)
            k = 0
            for name in names:
                p = os.path.join(sub, name)
                if keep(p):
                    k += 1
                    n += 1
                    yield os.path.abspath(p), p, cls
            if k == 0:
                rep.empty_classes.append(sub)
                if labelled:
                    raise DataError(f"class folder {cls!r} holds no image: remove it or add "
                                    "its images (a model cannot learn a class without "
                                    "examples)", sub)
    if n == 0:
        extra = (f" ({len(rep.skipped)} masks/overlays written by morphocell skipped)"
                 if rep.skipped else "")
        raise DataError("no images found in " + ", ".join(map(str, items)) + extra)


def list_entries(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                 layout: str = "auto", labelled: bool = False,
                 skip_derived: bool = True) -> Listing:
    """:func:`iter_entries` collected into a :class:`Listing` (ids, paths, labels, report)."""
    rep = ListingReport()
    ids, paths, labs = [], [], []
    for key, path, label in iter_entries(inputs, layout=layout, labelled=labelled,
                                         skip_derived=skip_derived, report=rep):
        ids.append(key)
        paths.append(path)
        labs.append(label or "")
    return Listing(ids, paths, labs if rep.labelled else None, rep)


def resolve_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                   layout: str = "auto", labelled: bool = False
                   ) -> tuple[list[str], list[str] | None]:
    """Turn CLI-style inputs into ``(paths, labels)`` (see :func:`iter_entries` for the rules;
    :func:`list_entries` also returns what was skipped)."""
    lst = list_entries(inputs, layout=layout, labelled=labelled)
    return lst.paths, lst.labels


def load_folder(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """List a folder of class subfolders: ``root/<label>/<image>``.

    Returns ``(paths, labels)`` sorted by label then file name. Hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints``), non-image files and masks/overlays are ignored.

    Raises
    ------
    DataError
        If ``root`` is not a folder, cannot be listed, holds no class subfolder with images,
        or a class subfolder holds no image.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError("not a folder (expected a folder of class subfolders)", root_p)
    if not _scan(str(root_p))[1]:
        raise DataError("no class subfolder with images found", root_p)
    lst = list_entries(root_p, layout="classes", labelled=True)
    return lst.paths, lst.labels  # type: ignore[return-value]


def load_manifest(csv_path: str | os.PathLike) -> tuple[list[str], list[str] | None]:
    """Read a manifest CSV with a ``path`` column and an optional ``label`` column.

    Relative paths are taken relative to the CSV's folder; a ``'`` that morphocell's CSV
    writers put before a value starting with ``=``, ``+``, ``-``, ``@``, tab or CR (so that a
    spreadsheet shows it as text) is removed. Paths are not checked here:
    missing files become failed rows later (a batch never dies on one bad image).
    Returns ``(paths, labels)``; ``labels`` is ``None`` when the CSV has no ``label`` column.
    """
    csv_p = Path(csv_path)
    if not csv_p.is_file():
        raise DataError("manifest not found", csv_p)
    rep = ListingReport()
    paths, labels = [], []
    try:
        for _, path, label in _entries([csv_p], "auto", False, True, rep, True):
            paths.append(path)
            labels.append(label or "")
    except DataError as exc:
        if exc.reason.startswith("no images found"):
            raise DataError("manifest lists no images", csv_p) from None
        raise
    return paths, (labels if rep.labelled else None)


def iter_chunks(items: Iterable, size: int):
    """Yield lists of at most ``size`` consecutive items."""
    chunk = []
    for it in items:
        chunk.append(it)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
