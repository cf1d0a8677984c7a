"""FeatureExtractor and extract_batch: the scikit-learn contract, parallel = serial, bad images
become NaN rows listed in the failures, doctests."""
from __future__ import annotations

import doctest
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from morphocell import FeatureExtractor, read_image
from morphocell.batch import engine
from morphocell.features import extractor, registry
from morphocell.features.extractor import (STATUS_ERROR, STATUS_NO_CELL, STATUS_OK,
                                           extract_batch, extract_features, feature_names)
from conftest import pbc_subset


@pytest.fixture(scope="module")
def paths(pbc_small):
    return [p for p, _ in pbc_small]


@pytest.fixture(scope="module")
def table(paths):
    """Features of the 24 pbc_small images, computed once (serial)."""
    return FeatureExtractor().fit_transform(paths)


def test_columns_are_the_registry_names_in_order(table):
    fe = FeatureExtractor().fit()
    names = feature_names()
    assert list(table.columns) == names == list(fe.get_feature_names_out())
    assert fe.n_features_out_ == len(names) == len(registry.names(["shape", "color", "texture"]))
    assert len(set(names)) == len(names)
    for fam in ("Shape", "Color", "Texture"):
        assert any(f"_{fam}_" in n for n in names)
    only = FeatureExtractor(families=("color",)).fit()
    assert list(only.get_feature_names_out()) == registry.names(["color"])


def test_transform_equals_per_image_extract_features(paths, table):
    assert table.shape == (len(paths), len(feature_names()))
    assert table.attrs["failures"] == []
    for i in (0, 7, 23):
        row = extract_features(read_image(paths[i]))
        np.testing.assert_array_equal(table.iloc[i].to_numpy(), np.array(list(row.values())))
    # every real PBC cell is found: the cell-level measurements exist for every image
    assert table["Cell_Shape_Area"].notna().all()
    assert table["Cell_Color_Mean_LabL"].between(0, 100).all()


def test_family_subsets_in_any_order_give_the_same_values_by_name(paths, table):
    """extract_array assembles the families' vectors by a cached layout: each family's values,
    asked alone or in another order, are the full extraction's columns of that name; each
    module's ``compute`` dict is its ``compute_array`` vector under its names."""
    from morphocell.features import color, shape, texture
    from morphocell.features.base import make_crop
    from morphocell.segmentation import segment

    for i in (2, 11):
        img = read_image(paths[i])
        for fams in (("texture", "shape"), ("color",), ("shape", "color", "texture")):
            vec, _ = extractor.extract_array(img, families=fams)
            names = feature_names(fams)
            assert len(vec) == len(names)
            np.testing.assert_array_equal(vec, table.iloc[i][names].to_numpy())
        crop = make_crop(img, segment(img))
        for mod in (shape, color, texture):
            d = mod.compute(crop)
            assert list(d) == registry.names([mod.__name__.rsplit(".", 1)[1]])
            np.testing.assert_array_equal(np.array(list(d.values())), mod.compute_array(crop))

def test_make_crop_box_is_the_cells_bounding_box_plus_pad():
    """make_crop's compiled bounding box equals numpy's on random masks (empty, one pixel,
    touching the borders, non-contiguous views), padded by PAD and clipped to the image."""
    from morphocell.features.base import PAD, make_crop
    from morphocell.segmentation import CellMasks

    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        nuc = rng.random((h, w)) < (0.0 if trial % 10 == 0 else rng.random() * 0.05)
        cyt = rng.random((h, 2 * w))[:, ::2] < (0.0 if trial % 7 == 0 else rng.random() * 0.05)
        crop = make_crop(img, CellMasks(nuc, cyt))
        cell = nuc | cyt
        if not cell.any():
            r0, r1, c0, c1 = 0, h, 0, w
        else:
            rows, cols = np.flatnonzero(cell.any(axis=1)), np.flatnonzero(cell.any(axis=0))
            r0, r1 = max(rows[0] - PAD, 0), min(rows[-1] + 1 + PAD, h)
            c0, c1 = max(cols[0] - PAD, 0), min(cols[-1] + 1 + PAD, w)
        assert crop.offset == (r0, c0)
        np.testing.assert_array_equal(crop.image, img[r0:r1, c0:c1])
        np.testing.assert_array_equal(crop.nucleus, nuc[r0:r1, c0:c1])



def test_n_jobs_2_gives_the_same_values(paths, table):
    X2 = FeatureExtractor(n_jobs=2).fit_transform(paths)
    np.testing.assert_array_equal(X2.to_numpy(), table.to_numpy())
    mat, st, err = extract_batch(paths[:5], n_jobs=2, chunk_size=2)
    np.testing.assert_array_equal(mat, table.to_numpy()[:5])
    assert st == [STATUS_OK] * 5 and err == [""] * 5


@pytest.mark.filterwarnings("ignore:.*tasks (have been|which were):UserWarning")
def test_n_jobs_2_on_arrays_goes_through_shared_files_and_cleans_up(paths, table, tmp_path,
                                                                    monkeypatch):
    """In-memory images reach the workers through one file per chunk (not pickled): same
    values as serial, a bad array is an error row, paths mixed in still work, and no chunk
    file is left behind, also when the batch fails half-way."""
    import glob
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where files go without /dev/shm
    imgs = [read_image(p) for p in paths[:6]]
    bad = np.zeros((3, 3, 3), np.uint8)  # too small: a validation error, not a crash
    sources = [imgs[0], paths[1], bad, *imgs[3:6], np.asfortranarray(imgs[1])]
    mat, st, err = extract_batch(sources, n_jobs=2, chunk_size=2)
    ref = table.to_numpy()
    for row, i in ((0, 0), (1, 1), (3, 3), (4, 4), (5, 5), (6, 1)):
        np.testing.assert_array_equal(mat[row], ref[i])
    assert st[2] == STATUS_ERROR and err[2] and np.isnan(mat[2]).all()
    assert [s for i, s in enumerate(st) if i != 2] == [STATUS_OK] * 6

    def leftovers():
        return (glob.glob("/dev/shm/morphocell-chunk-*")
                + glob.glob(str(tmp_path / "morphocell-chunk-*")))

    assert leftovers() == []
    packed = engine.pack_chunk([imgs[0], paths[1]], files := [])
    assert isinstance(packed, engine.PackedChunk) and len(files) == 1
    out = engine.measure_chunk(packed, extractor._families(None), "otsu")
    np.testing.assert_array_equal(out[0][0], ref[0])
    np.testing.assert_array_equal(out[1][0], ref[1])
    assert leftovers() == []  # the worker side removed its file
    # a chunk file gone before the worker reads it: error rows for its arrays, not a crash
    packed = engine.pack_chunk([imgs[0], paths[1]], files4 := [])
    os.unlink(files4[0])
    out = engine.measure_chunk(packed, extractor._families(None), "otsu")
    assert out[0][1] == STATUS_ERROR and "lost" in out[0][2] and np.isnan(out[0][0]).all()
    np.testing.assert_array_equal(out[1][0], ref[1])
    assert engine.pack_chunk([paths[0]], files2 := []) == [paths[0]] and files2 == []

    import morphocell._utils as utils

    def failing_progress(it, **kw):
        for i, x in enumerate(it):
            if i == 1:
                raise RuntimeError("stop")
            yield x

    # no room for the file (ENOSPC): the chunk falls back to pickling, nothing is left behind
    class Full:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, b):
            raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(engine.os, "fdopen", Full)
        files3: list = []
        chunk = [imgs[0], paths[1]]
        assert engine.pack_chunk(chunk, files3) is chunk and files3 == []
    assert leftovers() == []

    monkeypatch.setattr(utils, "progress", failing_progress)
    with pytest.raises(RuntimeError, match="stop"):
        extract_batch(imgs * 4, n_jobs=2, chunk_size=1)
    assert leftovers() == []


def test_small_batches_on_several_workers_are_cut_finer():
    from morphocell.batch.engine import TAIL_CHUNKS_PER_WORKER
    from morphocell.batch.engine import batch_chunk_size as _batch_chunk_size

    assert TAIL_CHUNKS_PER_WORKER == 16
    assert _batch_chunk_size(500, 32, None) == 32 and _batch_chunk_size(500, 32, 1) == 32
    assert _batch_chunk_size(500, 32, 2) == 16  # ceil(500 / (16 * 2))
    assert _batch_chunk_size(100_000, 32, 2) == 32  # large batches keep chunk_size
    assert _batch_chunk_size(5, 32, 2) == 1
    assert _batch_chunk_size(0, 32, 2) == 1


def test_failed_images_are_nan_rows_listed_in_failures(tmp_path, paths, table):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"this is not a jpeg")
    missing = tmp_path / "missing.png"
    blank = np.full((64, 64, 3), 255, np.uint8)  # no cell to find
    X = FeatureExtractor().fit_transform([paths[0], str(bad), str(missing), blank, paths[1]])
    assert X.shape[0] == 5
    assert X.iloc[[1, 2, 3]].isna().all(axis=None)
    np.testing.assert_array_equal(X.iloc[[0, 4]].to_numpy(), table.iloc[[0, 1]].to_numpy())
    fails = X.attrs["failures"]
    assert [f[0] for f in fails] == [str(bad), str(missing), "<array (64, 64, 3)>"]
    assert [f[1] for f in fails] == [STATUS_ERROR, STATUS_ERROR, STATUS_NO_CELL]
    assert all(f[2] for f in fails)  # a reason for each
    # the serial and the parallel batch report the same failures
    _, st, err = extract_batch([str(bad), paths[0]], n_jobs=2, chunk_size=1)
    assert st == [STATUS_ERROR, STATUS_OK] and str(bad) in err[0]


def test_sklearn_pipeline_fits_and_beats_chance(table, pbc_small):
    """Images in, classes out: FeatureExtractor -> impute -> scale -> logistic regression.
    Trained on 3 images per class, tested on 2 other images per class (16 images)."""
    y = [lab for _, lab in pbc_small]
    test = pbc_subset(2, offset=3)
    pipe = make_pipeline(FeatureExtractor(), SimpleImputer(), StandardScaler(),
                         LogisticRegression(max_iter=2000))
    pipe.fit([p for p, _ in pbc_small], y)
    assert list(pipe[:-1].get_feature_names_out()) == feature_names()
    pred = pipe.predict([p for p, _ in test])
    acc = np.mean(pred == np.array([lab for _, lab in test]))
    assert set(pred) <= set(y)
    assert acc > 2 / 8, acc  # chance is 1/8


def test_cache_dir_measures_each_image_once_across_cv_folds(paths, table, pbc_small, tmp_path,
                                                             monkeypatch):
    """FeatureExtractor(cache_dir=...): a cross-validation over a Pipeline measures each file
    once (the folds after the first read the cache), with the values of the plain transform;
    in-memory images and unreadable files mixed in still give their rows."""
    from sklearn.model_selection import cross_val_score

    measured = []
    real = extractor.extract_batch

    def counting(sources, *a, **k):
        measured.extend(sources)
        return real(sources, *a, **k)

    monkeypatch.setattr(extractor, "extract_batch", counting)
    cache = tmp_path / "cache"
    fe = FeatureExtractor(families=("shape", "color"), cache_dir=cache)
    assert clone(fe).get_params()["cache_dir"] == cache
    y = [lab for _, lab in pbc_small]
    pipe = make_pipeline(fe, SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, paths, y, cv=3)
    assert len(scores) == 3
    assert sorted(measured) == sorted(paths)  # each image once over the three folds
    cols = feature_names(("shape", "color"))
    img = read_image(paths[5])
    missing = str(tmp_path / "missing.jpg")
    measured.clear()
    X = FeatureExtractor(families=("shape", "color"), cache_dir=cache).fit_transform(
        [paths[3], img, missing, paths[0]])
    assert len(measured) == 1 and measured[0] is img  # the files came from the cache
    np.testing.assert_array_equal(X.to_numpy()[[0, 1, 3]], table[cols].to_numpy()[[3, 5, 0]])
    assert X.iloc[2].isna().all()
    assert [(f[0], f[1]) for f in X.attrs["failures"]] == [(missing, STATUS_ERROR)]


def test_set_output_pandas_and_default(paths):
    fe = FeatureExtractor(families=("color",)).set_output(transform="pandas")
    X = fe.fit_transform(paths[:2])
    assert isinstance(X, pd.DataFrame)
    assert list(X.columns) == list(fe.get_feature_names_out())
    assert "failures" in X.attrs
    pipe = make_pipeline(FeatureExtractor(families=("color",)), StandardScaler())
    pipe.set_output(transform="pandas")
    Z = pipe.fit_transform(paths[:3])
    assert isinstance(Z, pd.DataFrame) and list(Z.columns) == registry.names(["color"])


def test_clone_and_params():
    fe = FeatureExtractor(families=("shape", "color"), n_jobs=2, verbose=0)
    c = clone(fe)
    assert c.get_params() == fe.get_params()
    assert not hasattr(c, "feature_names_out_")
    c.set_params(families=("texture",))
    assert c.fit().get_feature_names_out().tolist() == registry.names(["texture"])
    with pytest.raises(Exception, match="not fitted|fit"):
        FeatureExtractor().get_feature_names_out()


def test_inputs_arrays_dataframe_series(paths, table):
    imgs = np.stack([read_image(p) for p in paths[:2]])
    fe = FeatureExtractor().fit()
    np.testing.assert_array_equal(fe.transform(imgs).to_numpy(), table.to_numpy()[:2])
    np.testing.assert_array_equal(fe.transform(pd.DataFrame({"path": paths[:2]})).to_numpy(),
                                  table.to_numpy()[:2])
    np.testing.assert_array_equal(fe.transform(pd.Series(paths[:1])).to_numpy(),
                                  table.to_numpy()[:1])
    from morphocell import FeatureError

    with pytest.raises(FeatureError, match="path"):
        fe.transform(pd.DataFrame({"file": paths[:1]}))
    with pytest.raises(Exception, match="family"):
        FeatureExtractor(families=("colour",)).fit()


def test_doctests():
    from morphocell.batch import cache

    for mod in (extractor, cache):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_opencv_runs_single_threaded_inside_and_is_restored(paths, monkeypatch):
    """Segmentation and features run OpenCV with one thread and give the same values as with
    the caller's setting; the caller's setting is back afterwards."""
    import cv2

    img = read_image(paths[0])
    before = cv2.getNumThreads()
    seen = []
    orig_blur = cv2.GaussianBlur

    def spy(*a, **k):
        seen.append(cv2.getNumThreads())
        return orig_blur(*a, **k)

    monkeypatch.setattr(cv2, "GaussianBlur", spy)
    try:
        cv2.setNumThreads(2)
        a = extractor.extract_features(img)
        assert cv2.getNumThreads() == 2
        cv2.setNumThreads(1)
        b = extractor.extract_features(img)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
    assert seen and set(seen) == {1}
    np.testing.assert_array_equal(np.array(list(a.values())), np.array(list(b.values())))
    assert list(a) == list(b)
