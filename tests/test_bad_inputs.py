"""The bad-input table of docs/bad_inputs.md, row by row, through the API and the CLI.

Every bad file is generated here (no committed binaries). For each: the API result (a
MorphocellError subclass, or a flagged row) and the CLI result (exit code, message on stderr,
rows written for the good images).
"""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from morphocell import FeatureExtractor, ImageReadError, read_image, segment
from morphocell.datasets import sample_paths
from morphocell.features.extractor import extract_batch


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _make_bad_files(d):
    """name -> expected outcome: ('error', substring) or ('no_cell', None) or ('ok', None)."""
    rng = np.random.default_rng(0)
    good = read_image(sample_paths()[0])
    files = {}

    def put(name, data, expect):
        (d / name).write_bytes(data)
        files[name] = expect

    put("zero_byte.jpg", b"", ("error", "empty file"))
    jpg = io.BytesIO()
    Image.fromarray(good).save(jpg, format="JPEG")
    put("truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 3],
        ("error", "truncated or corrupt"))
    png = _png_bytes(good)
    put("truncated.png", png[: len(png) // 3], ("error", "truncated or corrupt"))
    put("text_named.jpg", b"patient list, not an image\n", ("error", "not an image"))
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, format="PNG", optimize=True)
    put("bomb.png", bomb.getvalue(), ("error", "too large"))
    put("one_pixel.png", _png_bytes(np.zeros((1, 1, 3), np.uint8)), ("error", "too small"))
    put("wrong_ext.jpg", png, ("ok", None))  # a PNG named .jpg: read by content
    put("grey.png", _png_bytes(good[..., 1]), ("ok", None))
    rgba = np.dstack([good, np.full(good.shape[:2], 255, np.uint8)])
    put("rgba.png", _png_bytes(rgba, "RGBA"), ("ok", None))
    pal = io.BytesIO()
    Image.fromarray(good).convert("P", palette=Image.Palette.ADAPTIVE).save(pal, format="PNG")
    put("palette.png", pal.getvalue(), ("ok", None))
    g16 = io.BytesIO()
    Image.fromarray(good[..., 1].astype(np.uint16) * 257).save(g16, format="PNG")
    put("grey16.png", g16.getvalue(), ("ok", None))
    cmyk = io.BytesIO()
    Image.fromarray(good).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    put("cmyk.jpg", cmyk.getvalue(), ("ok", None))
    put("blank_white.png", _png_bytes(np.full((128, 128, 3), 255, np.uint8)),
        ("no_cell", None))
    put("all_black.png", _png_bytes(np.zeros((128, 128, 3), np.uint8)), ("no_cell", None))
    bg = np.median(good.reshape(-1, 3), axis=0).astype(np.uint8)
    put("slide_no_cell.png", _png_bytes(np.broadcast_to(bg, (128, 128, 3)).copy()),
        ("no_cell", None))
    put("noise.png", _png_bytes(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        ("no_cell", None))
    return files


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    files = _make_bad_files(d)
    good = sample_paths()[:2]
    for p in good:
        shutil.copy(p, d / ("good_" + p.rsplit("/", 1)[-1]))
    return d, files, ["good_" + p.rsplit("/", 1)[-1] for p in good]


def test_read_image_table(bad_dir):
    d, files, _ = bad_dir
    for name, (kind, msg) in files.items():
        if kind == "error":
            with pytest.raises(ImageReadError) as e:
                read_image(d / name)
            assert msg in str(e.value) and name in str(e.value), name
        else:
            img = read_image(d / name)
            assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, name


def test_segment_and_features_table(bad_dir):
    d, files, good = bad_dir
    names = list(files) + good
    mat, statuses, errors = extract_batch([str(d / n) for n in names])
    by_name = dict(zip(names, zip(statuses, errors, strict=True), strict=True))
    for name, (kind, msg) in files.items():
        status, err = by_name[name]
        if kind == "error":
            assert status == "error" and msg in err, (name, status, err)
        elif kind == "no_cell":
            assert status == "no_cell", (name, status, err)
            assert not segment(read_image(d / name)).found
        else:
            assert status == "ok", (name, status, err)
    for name in good:  # the good images are never lost
        assert by_name[name][0] == "ok"
        assert np.isfinite(mat[names.index(name)]).sum() > 0.9 * mat.shape[1]
    # failed and no-cell rows are all-NaN, never partially filled
    for i, n in enumerate(names):
        if by_name[n][0] != "ok":
            assert np.isnan(mat[i]).all(), n


def test_feature_extractor_keeps_good_rows(bad_dir):
    d, files, good = bad_dir
    names = ["zero_byte.jpg", good[0], "text_named.jpg", good[1]]
    X = FeatureExtractor().fit_transform([str(d / n) for n in names])
    assert X.shape[0] == 4
    assert X.iloc[[1, 3]].notna().any(axis=1).all()
    assert X.iloc[[0, 2]].isna().all(axis=1).all()
    failed = {f[0].rsplit("/", 1)[-1] for f in X.attrs["failures"]}
    assert failed == {"zero_byte.jpg", "text_named.jpg"}


def test_two_white_cells_keeps_the_central_one():
    """Three whole white cells side by side: only the one at the centre is kept."""
    from morphocell.datasets import sample_folder

    a = read_image(sorted((sample_folder() / "lymphocyte").iterdir())[0])
    b = read_image(sorted((sample_folder() / "neutrophil").iterdir())[0])
    w = a.shape[1]
    canvas = np.concatenate([b, a, b], axis=1)
    m = segment(canvas)
    assert m.found
    cols = np.flatnonzero(m.cell.any(axis=0))
    assert w <= cols.min() and cols.max() < 2 * w  # inside the middle image only
    ref = segment(a)
    # the same cell as when it is alone
    from morphocell.segmentation.metrics import dice
    assert dice(m.cell[:, w:2 * w], ref.cell) > 0.9


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "morphocell.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_features_on_the_table(bad_dir, tmp_path):
    from morphocell.batch import read_features

    d, files, good = bad_dir
    out = tmp_path / "f.parquet"
    r = _cli("features", d, "--out", out, "--quiet")
    assert r.returncode == 3, r.stderr  # some inputs failed; the good rows are written
    assert "Traceback" not in r.stderr
    df = read_features(out)
    by_name = {p.rsplit("/", 1)[-1]: (s, e) for p, s, e in zip(df["path"], df["status"],
                                                                df["error"], strict=True)}
    assert set(by_name) == set(files) | set(good)
    for name, (kind, msg) in files.items():
        status, err = by_name[name]
        assert status == kind, (name, status, err)
        if msg:
            assert msg in err
    assert all(by_name[g][0] == "ok" for g in good)


def test_cli_segment_on_the_table(bad_dir, tmp_path):
    d, files, good = bad_dir
    out = tmp_path / "masks"
    r = _cli("segment", d, "--out", out, "--quiet")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    for name, (kind, msg) in files.items():
        stem = name.rsplit(".", 1)[0]
        written = (out / f"{stem}_mask.png").exists()
        if kind == "error":
            assert not written and msg in r.stderr, name
        else:  # readable: a mask is written (empty when no cell, with a warning)
            assert written, name
            if kind == "no_cell":
                assert f"{name}: no cell found" in r.stderr
    for g in good:
        assert (out / f"{g.rsplit('.', 1)[0]}_overlay.png").exists()
    assert not list(out.glob(".*tmp"))  # nothing half-written left behind


def test_cli_manifest_with_missing_paths(tmp_path):
    from morphocell.batch import read_features

    good = sample_paths()[:2]
    for p in good:
        shutil.copy(p, tmp_path / p.rsplit("/", 1)[-1])
    rows = [f"{p.rsplit('/', 1)[-1]},x" for p in good] + ["gone/missing.jpg,x"]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "f.parquet"
    r = _cli("features", tmp_path / "m.csv", "--out", out, "--quiet")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "missing.jpg: file not found" in r.stderr
    df = read_features(out)
    assert list(df["status"]) == ["ok", "ok", "error"]  # the good rows are written, in order


def test_cli_unreadable_folder(tmp_path, monkeypatch, capsys):
    """A class folder that cannot be listed: exit 2, the folder named, no traceback."""
    import os

    from morphocell.cli import main

    root = tmp_path / "data"
    for cls in ("lymphocyte", "neutrophil"):
        (root / cls).mkdir(parents=True)
        shutil.copy(sample_paths()[0], root / cls / "a.jpg")
    (root / "neutrophil").chmod(0)
    if os.geteuid() == 0:  # root lists anything: make the OS call fail as for a user
        real = os.scandir

        def scandir(path="."):
            if os.fspath(path).rstrip("/").endswith("neutrophil"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)
        monkeypatch.setattr(os, "scandir", scandir)
    try:
        rc = main(["features", str(root), "--out", str(tmp_path / "f.parquet"), "--quiet"])
    finally:
        (root / "neutrophil").chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "permission denied" in err and "neutrophil" in err and "Traceback" not in err
    # what was measured before the listing failed stays, complete and readable: a rerun
    # after fixing the permissions resumes from it
    out = tmp_path / "f.parquet"
    if out.exists():
        from morphocell.batch import read_features

        df = read_features(out)
        assert (df["status"] == "ok").all() and df["path"].str.contains("lymphocyte").all()
