"""Image I/O: every supported format and every bad input gives the documented result."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from morphocell import DataError, ImageReadError, MorphocellError
from morphocell.io import (
    MAX_PIXELS,
    load_folder,
    load_manifest,
    read_image,
    resolve_inputs,
    validate_image,
)


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)


def _save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_lossless_formats_round_trip(tmp_path, rgb, fmt, ext):
    p = _save(tmp_path, "a" + ext, Image.fromarray(rgb), format=fmt)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_real_pbc_image(pbc_small):
    path = pbc_small[0][0]
    out = read_image(path)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert("RGB")))


def test_grey_becomes_rgb(tmp_path, rgb):
    g = rgb[..., 0]
    out = read_image(_save(tmp_path, "g.png", Image.fromarray(g)))
    assert out.shape == (*g.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_composited_on_white(tmp_path, rgb):
    a = np.zeros((*rgb.shape[:2], 4), np.uint8)
    a[..., :3] = rgb
    a[..., 3] = 255
    a[:10, :, 3] = 0  # fully transparent rows -> white
    out = read_image(_save(tmp_path, "a.png", Image.fromarray(a, "RGBA")))
    np.testing.assert_array_equal(out[10:], rgb[10:])
    assert (out[:10] == 255).all()


def test_palette_png(tmp_path, rgb):
    im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = read_image(_save(tmp_path, "p.png", im))
    np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))


def test_16bit_grey_png_scaled_by_257(tmp_path):
    a = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    out = read_image(_save(tmp_path, "g16.png", Image.fromarray(a)))
    expect = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expect)


def test_16bit_rgb_png_scaled_by_257(tmp_path, rgb):
    import cv2

    a16 = rgb.astype(np.uint16) * 257 + 100  # full 16-bit precision, low byte not zero
    p = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(p), a16[..., ::-1])
    out = read_image(p)
    np.testing.assert_array_equal(out, np.clip(np.rint(a16 / 257.0), 0, 255).astype(np.uint8))


def test_cmyk_jpeg(tmp_path, rgb):
    im = Image.fromarray(rgb).convert("CMYK")
    out = read_image(_save(tmp_path, "c.jpg", im, format="JPEG", quality=95))
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_blank_white_reads_fine(tmp_path):
    out = read_image(_save(tmp_path, "w.png", Image.new("RGB", (64, 64), "white")))
    assert (out == 255).all()


# ---- bad inputs -------------------------------------------------------------------------

def _reason(excinfo):
    return str(excinfo.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found") as e:
        read_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in _reason(e)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file") as e:
        read_image(p)
    assert e.value.path == str(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(p)


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file(tmp_path, fmt, ext):
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format=fmt)
    p = tmp_path / ("t" + ext)
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(p)


def test_wrong_extension_still_read_by_content(tmp_path, rgb):
    p = tmp_path / "really_png.jpg"
    Image.fromarray(rgb).save(p, format="PNG")
    np.testing.assert_array_equal(read_image(p), rgb)


def test_one_pixel_image(tmp_path):
    p = _save(tmp_path, "1x1.png", Image.new("RGB", (1, 1)))
    with pytest.raises(ImageReadError, match="too small: 1x1"):
        read_image(p)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # a 30000x30000 1-bit PNG is a few KB on disk but 900 megapixels once decoded
    p = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(p, optimize=True)
    assert p.stat().st_size < 200_000
    with pytest.raises(ImageReadError, match="too large") as e:
        read_image(p)
    assert str(MAX_PIXELS) in _reason(e)


def test_unreadable_permissions(tmp_path, rgb, monkeypatch):
    p = _save(tmp_path, "locked.png", Image.fromarray(rgb))
    p.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the OS call fail as it would for a user
        real_open = os.open

        def denied(path, *a, **k):
            if os.fspath(path) == str(p):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)
        monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(p)


def test_unreadable_folder(tmp_path, rgb, monkeypatch):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "a" / "1.png")
    (root / "a").chmod(0)
    if os.geteuid() == 0:
        real = os.scandir

        def scandir(path="."):
            if os.path.basename(os.fspath(path)) == "a":
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)
        monkeypatch.setattr(os, "scandir", scandir)
    try:
        with pytest.raises(DataError, match="permission denied") as e:
            load_folder(root)
        assert "a" in str(e.value)
    finally:
        (root / "a").chmod(0o755)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_errors_are_one_family():
    assert issubclass(ImageReadError, MorphocellError)
    assert issubclass(DataError, MorphocellError)


# ---- in-memory arrays -------------------------------------------------------------------

def test_validate_image_conversions(rgb):
    np.testing.assert_array_equal(validate_image(rgb), rgb)
    assert validate_image(rgb[..., 0]).shape == rgb.shape
    np.testing.assert_array_equal(validate_image(rgb / 255.0), rgb)
    with pytest.raises(ImageReadError):
        validate_image(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageReadError):
        validate_image(np.full((20, 20, 3), np.nan))
    with pytest.raises(ImageReadError):
        validate_image(np.zeros((20, 20, 5), np.uint8))


# ---- folders and manifests --------------------------------------------------------------

def _tree(tmp_path, rgb):
    for cls in ("b", "a"):
        d = tmp_path / "data" / cls
        d.mkdir(parents=True)
        for i in (2, 1):
            Image.fromarray(rgb).save(d / f"{i}.png")
        (d / ".DS_Store").write_bytes(b"\0")
        (d / "readme.txt").write_text("x")
    (tmp_path / "data" / ".hidden").mkdir()
    return tmp_path / "data"


def test_load_folder_sorted_hidden_ignored(tmp_path, rgb):
    root = _tree(tmp_path, rgb)
    paths, labels = load_folder(root)
    assert labels == ["a", "a", "b", "b"]
    assert [os.path.basename(p) for p in paths] == ["1.png", "2.png"] * 2
    assert load_folder(root) == (paths, labels)


def test_load_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolder"):
        load_folder(tmp_path / "empty")


def test_load_manifest_relative_paths_and_missing(tmp_path, rgb):
    root = _tree(tmp_path, rgb)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\ndata/a/1.png,a\ndata/zzz/missing.png,b\n")
    paths, labels = load_manifest(csv)
    assert paths[0] == str(root / "a" / "1.png") and labels == ["a", "b"]
    # a missing path is listed (it fails later, as one bad row), never silently dropped
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(paths[1])
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.png,a\n")
    with pytest.raises(DataError, match="'path' column"):
        load_manifest(bad)


def test_resolve_inputs(tmp_path, rgb):
    root = _tree(tmp_path, rgb)
    assert resolve_inputs(root)[1] == ["a", "a", "b", "b"]
    paths, labels = resolve_inputs([root / "a"])
    assert labels is None and len(paths) == 2


def test_pbc_real_folder(data_dir):
    paths, labels = load_folder(data_dir / "pbc")
    assert len(set(labels)) == 8 and len(paths) > 10000


def test_import_is_light():
    code = ("import sys, morphocell; "
            "bad = [m for m in ('tensorflow', 'keras', 'dask', 'distributed', 'torch') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_atomic_writes_get_the_umask_mode(tmp_path):
    """Files written atomically get open()'s mode (0666 less the umask), not mkstemp's 0600."""
    import importlib

    import morphocell._utils as u

    old = os.umask(0o022)
    try:
        importlib.reload(u)  # FILE_MODE is read from the umask at import
        with u.atomic_write(tmp_path / "a.txt", "w") as fh:
            fh.write("x")
        with u.atomic_path(tmp_path / "b.txt") as p:
            p.write_text("y")
        for name in ("a.txt", "b.txt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        assert not list(tmp_path.glob(".*"))
    finally:
        os.umask(old)


def test_progress_lines_when_stderr_is_a_log(capsys):
    """Without a terminal (nohup, a batch job's log) progress comes as plain lines at most every
    ``every`` seconds, after that much time only; all items pass through, in order."""
    import morphocell._utils as u

    ticks = iter(range(0, 1000, 10))  # the clock advances 10 s per call
    out = list(u._log_progress(range(12), total=None, desc="features", unit="img", every=25,
                               clock=lambda: next(ticks)))
    assert out == list(range(12))
    lines = capsys.readouterr().err.splitlines()
    # t0 = 0; after item n the clock reads 10 n: lines at 30, 60, 90, 120 s, then the summary
    assert lines[0] == "features: 3/12 img (25%), 30 s, ~90 s left"
    assert lines[3] == "features: 12/12 img (100%), 2 min, ~0 s left"
    assert lines[-1] == "features: 12 img done in 2 min" and len(lines) == 5
    # a short run says nothing, and verbose=0 or a generator of unknown length is handled
    assert list(u._log_progress(iter("abc"), total=None, desc="x", unit="img", every=60)) \
        == ["a", "b", "c"]
    assert list(u.progress([1, 2], verbose=0)) == [1, 2]
    assert capsys.readouterr().err == ""
    # the streaming counter (`morphocell features` in a log): no total, a rate instead
    ticks = iter(range(0, 1000, 20))
    c = u.LogCounter("features", every=60, clock=lambda: next(ticks))
    for _ in range(4):
        c.update(500)  # clock 20, 40, 60, 80 s
    c.close()
    assert capsys.readouterr().err.splitlines() == [
        "features: 1500 img, 60 s (25 img/s)", "features: 2000 img done in 100 s"]
