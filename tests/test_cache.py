"""The feature cache (morphocell.batch.cache): keyed by image content, one table per
configuration, written as it goes; its rows are the batch engine's rows, bit for bit."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import pbc_subset
from morphocell.batch import FeatureCache, compute_features
from morphocell.features import extractor

FAMS = ("shape",)


@pytest.fixture(scope="module")
def paths(data_dir):
    return [p for p, _ in pbc_subset(1)]  # 8 real images, one per class


@pytest.fixture(scope="module")
def reference(paths):
    return extractor.extract_batch(paths, FAMS)


def test_rows_equal_the_engine_and_content_not_names_is_the_key(paths, reference, tmp_path):
    cache = FeatureCache(tmp_path / "c", families=FAMS)
    X, st, err = cache.extract(paths)
    assert cache.last_stats == {"hits": 0, "computed": 8, "uncached": 0}
    np.testing.assert_array_equal(X.to_numpy(), reference[0])
    assert st == reference[1] and err == reference[2]
    assert list(X.columns) == extractor.feature_names(FAMS)
    # a renamed copy hits; an edited file (other bytes) misses; a missing file is not cached
    copy = tmp_path / "renamed.jpg"
    shutil.copyfile(paths[2], copy)
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(open(paths[3], "rb").read() + b"\0")
    missing = str(tmp_path / "missing.jpg")
    X2, st2, err2 = cache.extract([str(copy), str(edited), missing, paths[0]])
    assert cache.last_stats == {"hits": 2, "computed": 1, "uncached": 1}
    np.testing.assert_array_equal(X2.to_numpy()[0], reference[0][2])
    np.testing.assert_array_equal(X2.to_numpy()[3], reference[0][0])
    assert st2[2] == "error" and missing in err2[2] and X2.iloc[2].isna().all()
    # other families: another table, computed again
    other = FeatureCache(tmp_path / "c", families=("shape", "color"))
    assert other.path != cache.path
    other.extract(paths[:2])
    assert other.last_stats["computed"] == 2


def test_interrupted_extraction_keeps_finished_chunks(paths, reference, monkeypatch, tmp_path):
    real = extractor.extract_batch
    calls = []

    def flaky(sources, *a, **k):
        calls.append(len(sources))
        if len(calls) == 3:
            raise KeyboardInterrupt                   # the user stops the run
        return real(sources, *a, **k)

    monkeypatch.setattr(extractor, "extract_batch", flaky)
    cache = FeatureCache(tmp_path, families=FAMS, write_every=3)
    with pytest.raises(KeyboardInterrupt):
        cache.extract(paths)
    assert calls == [3, 3, 2]
    monkeypatch.setattr(extractor, "extract_batch", real)
    X, st, _ = cache.extract(paths)
    assert cache.last_stats == {"hits": 6, "computed": 2, "uncached": 0}
    assert st == ["ok"] * 8
    np.testing.assert_array_equal(X.to_numpy(), reference[0])


def test_a_damaged_cache_file_is_rebuilt_not_trusted(paths, reference, tmp_path):
    cache = FeatureCache(tmp_path, families=FAMS)
    cache.extract(paths[:3])
    cache.path.write_bytes(b"PAR1 not really")
    X, _, _ = cache.extract(paths[:3])
    assert cache.last_stats["computed"] == 3
    np.testing.assert_array_equal(X.to_numpy(), reference[0][:3])


def test_compute_features_with_and_without_cache(paths, reference, tmp_path):
    X, st, _, stats = compute_features(paths[:4], FAMS)
    assert stats == {"hits": 0, "computed": 4, "uncached": 4}
    np.testing.assert_array_equal(X.to_numpy(), reference[0][:4])
    compute_features(paths[:4], FAMS, cache_dir=tmp_path)
    Xc, stc, _, stats = compute_features(paths[:4], FAMS, cache_dir=tmp_path, n_jobs=2)
    assert stats == {"hits": 4, "computed": 0, "uncached": 0}
    np.testing.assert_array_equal(Xc.to_numpy(), X.to_numpy())
    assert stc == st
