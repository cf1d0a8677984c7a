"""The first-run kernel compilation helper: when it acts and when it stays out of the way."""
from __future__ import annotations

from morphocell import _warmup


def test_cache_is_cold_follows_the_colour_kernel_index_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert _warmup.cache_is_cold()
    sub = tmp_path / "some" / "mirrored" / "path"
    sub.mkdir(parents=True)
    (sub / "color.color_stats-296.py311.nbi").write_bytes(b"")
    assert not _warmup.cache_is_cold()


def test_compile_kernels_does_nothing_with_one_job_or_a_warm_or_unwritable_cache(tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cold"))
    (tmp_path / "cold").mkdir()
    assert _warmup.compile_kernels(n_jobs=1) is False  # one process compiles for itself anyway
    monkeypatch.setattr(_warmup, "_cache_writable", lambda: False)
    assert _warmup.compile_kernels(n_jobs=2) is False
    monkeypatch.setattr(_warmup, "_cache_writable", lambda: True)
    monkeypatch.setattr(_warmup, "cache_is_cold", lambda: False)
    assert _warmup.compile_kernels(n_jobs=2) is False


def test_compile_group_measures_the_bundled_images_without_error():
    # in this process the kernels are compiled (or loaded) already: this checks the code path
    _warmup._compile_group(("shape", "color", "texture"))


def test_compile_kernels_reads_n_jobs_as_joblib_does(monkeypatch):
    import joblib
    import pytest

    if joblib.cpu_count() < 2:
        pytest.skip("needs 2 CPUs: with one, compile_kernels never starts worker processes")
    monkeypatch.setattr(_warmup, "cache_is_cold", lambda: True)
    monkeypatch.setattr(_warmup, "_cache_writable", lambda: True)
    monkeypatch.setattr(_warmup, "_compile_group", lambda g: None)  # runs in the workers
    assert _warmup.compile_kernels(n_jobs=-1) is True  # -1: all CPUs, as in joblib
    assert _warmup.compile_kernels(n_jobs=1) is False
