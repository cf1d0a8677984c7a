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

import os
import stat
import warnings

import numpy as np

from ..errors import ImageReadError


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
