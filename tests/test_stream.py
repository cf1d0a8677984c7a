"""Streaming, resumable extraction into a Parquet dataset (morphocell.batch, `morphocell features`).

Real PBC images throughout. The reference is one uninterrupted in-process run over 64 images
(8 per class); every other way of producing the dataset (killed and resumed CLI, two local
processes, a two-worker Dask cluster, a repaired corrupt part) must give exactly its rows.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, pbc_subset
from morphocell.cli import main as cli_main
from morphocell.errors import DataError
from morphocell.features.extractor import extract_batch, feature_names
from morphocell.io import resolve_inputs
from morphocell.io import iter_entries
from morphocell.batch import META_NAME, extract_to_parquet, read_features

CHUNK = 4  # images per part: 64 images -> 16 parts


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _raw_rows(out: Path) -> pd.DataFrame:
    """Every row of every part file, without read_features' deduplication."""
    parts = sorted(out.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


@pytest.fixture(scope="module")
def manifest(data_dir, tmp_path_factory) -> Path:
    rows = [{"path": p, "label": lab} for p, lab in pbc_subset(8)]
    assert len(rows) == 64
    return _write_manifest(tmp_path_factory.mktemp("manifest") / "cells.csv", rows)


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """One uninterrupted in-process run (the values every other run must reproduce)."""
    out = tmp_path_factory.mktemp("ref") / "features.parquet"
    res = extract_to_parquet(manifest, out, chunk_size=CHUNK)
    assert (res.listed, res.written, res.skipped, res.parts) == (64, 64, 0, 16)
    return out, read_features(out)


# ---------------------------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------------------------

def test_lazy_listing_matches_resolve_inputs(manifest, tmp_path):
    from morphocell.datasets import sample_folder, sample_paths

    cases = [[sample_folder()], [manifest],
             [sample_paths()[0], str(Path(sample_paths()[-1]).parent), "missing.jpg"]]
    for inputs in cases:
        gen = iter_entries(inputs)
        assert isinstance(gen, types.GeneratorType)
        entries = list(gen)
        paths, labels = resolve_inputs(inputs)
        assert [e[1] for e in entries] == paths
        assert [e[2] for e in entries] == (labels or [None] * len(paths))
        assert [e[0] for e in entries] == [os.path.abspath(p) for p in paths]


def test_manifest_is_read_row_by_row(tmp_path, data_dir):
    """The first rows come out before a broken line further down is even read."""
    good = pbc_subset(1)[0][0]
    csv_p = tmp_path / "m.csv"
    # ~200 kB of good rows (far past any read buffer), then a line that is not UTF-8
    csv_p.write_bytes(b"path,label\n" + f"{good},x\n".encode() * 2000 + b"\xff\xfe,broken\n")
    gen = iter_entries(csv_p)
    assert next(gen)[1:] == (good, "x")
    with pytest.raises(DataError, match="UTF-8"):
        list(gen)
    with pytest.raises(DataError, match="'path' column"):
        list(iter_entries(_write_manifest(tmp_path / "bad.csv", [{"file": good}])))


# ---------------------------------------------------------------------------------------------
# the reference run itself
# ---------------------------------------------------------------------------------------------

def test_rows_carry_path_label_hash_features_status(reference, manifest):
    out, df = reference
    expected = pd.read_csv(manifest)
    assert list(df.columns) == (["id", "path", "label", "sha256"] + feature_names()
                                + ["status", "error"])
    assert df["path"].tolist() == expected["path"].tolist()  # listing order is kept
    assert df["label"].tolist() == expected["label"].tolist()
    assert df["id"].is_unique
    for p, h in zip(df["path"][:8], df["sha256"][:8], strict=True):
        assert h == hashlib.sha256(Path(p).read_bytes()).hexdigest()
    assert set(df["status"]) <= {"ok", "no_cell"} and (df["status"] == "ok").mean() > 0.9
    # the streamed values are the library's batch values, bit for bit
    X, st, _ = extract_batch(df["path"][:12].tolist())
    np.testing.assert_array_equal(df[feature_names()].to_numpy()[:12], X)
    assert st == df["status"][:12].tolist()
    meta = (out / META_NAME).read_text()
    assert '"families"' in meta and '"feature_names"' in meta


# ---------------------------------------------------------------------------------------------
# interruption and resumption
# ---------------------------------------------------------------------------------------------

def test_kill_minus_9_then_rerun_gives_each_image_once(manifest, reference, tmp_path):
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "morphocell.cli", "features", str(manifest), "--out", str(out),
           "--chunk-size", str(CHUNK), "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(out.glob("part-*.parquet")):
            break
        time.sleep(0.002)
    assert proc.poll() is None, f"run ended before the kill: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    assert 1 <= len(before) < 16  # interrupted after at least one part, before the end

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{CHUNK * len(before)} already done" in again.stdout
    for name, data in before.items():  # finished parts were kept, not redone
        assert (out / name).read_bytes() == data
    raw = _raw_rows(out)
    assert len(raw) == 64 and raw["id"].is_unique  # no duplicate, none missing
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    pd.testing.assert_frame_equal(read_features(out), reference[1], check_exact=True)


def test_corrupt_part_is_quarantined_and_redone(reference, tmp_path):
    out = tmp_path / "copy.parquet"
    shutil.copytree(reference[0], out)
    victim = out / "part-000005.parquet"
    victim.write_bytes(victim.read_bytes()[:100])  # e.g. data lost in a power cut
    (out / ".part-000016.tmp123.parquet").write_bytes(b"half written")  # a dead writer's temp
    with pytest.warns(RuntimeWarning, match="unreadable part file"):
        res = extract_to_parquet(read_features(reference[0])["path"].tolist(), out,
                                 chunk_size=CHUNK)
    assert (res.skipped, res.written) == (60, 4)
    assert (out / "_corrupt_part-000005.parquet").exists()
    assert not (out / ".part-000016.tmp123.parquet").exists()
    got = read_features(out)
    ref = reference[1].drop(columns="label")  # this run listed plain files: no labels
    pd.testing.assert_frame_equal(got.drop(columns="label"), ref, check_exact=True)


def test_failed_images_are_rows_not_aborts(tmp_path, data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is not an image\n")
    good = [p for p, _ in pbc_subset(1)[:2]]
    out = tmp_path / "f.parquet"
    args = ["features", *good, str(bad), str(tmp_path / "missing.png"), "--out", str(out), "-q"]
    assert cli_main(args) == 3  # some inputs failed, the rest written
    df = read_features(out).set_index("path")
    assert df.loc[good, "status"].tolist() == ["ok", "ok"]
    err = df.drop(index=good)
    assert (err["status"] == "error").all() and len(err) == 3
    assert err[feature_names()].isna().all().all()
    assert "empty" in err.loc[str(bad / "empty.jpg"), "error"]
    assert "not an image" in err.loc[str(bad / "notes.jpg"), "error"]
    assert "not found" in err.loc[str(tmp_path / "missing.png"), "error"]
    assert err.loc[str(bad / "empty.jpg"), "sha256"] == hashlib.sha256(b"").hexdigest()
    assert pd.isna(err.loc[str(tmp_path / "missing.png"), "sha256"])

    n_parts = len(list(out.glob("part-*.parquet")))
    assert cli_main(args) == 3  # nothing new: same content, same rows
    assert len(list(out.glob("part-*.parquet"))) == n_parts

    # the text file is replaced by a real image: its content hash changes -> measured again
    shutil.copyfile(good[0], bad / "notes.jpg")
    res = extract_to_parquet(args[1:5], out)
    assert (res.written, res.skipped) == (1, 4)
    df2 = read_features(out).set_index("path")
    assert df2["id"].is_unique and len(df2) == 5
    assert df2.loc[str(bad / "notes.jpg"), "status"] == "ok"
    np.testing.assert_array_equal(df2.loc[str(bad / "notes.jpg"), feature_names()].to_numpy(),
                                  df2.loc[good[0], feature_names()].to_numpy())


def test_a_failed_chunk_stops_the_run_and_keeps_the_written_parts(tmp_path, monkeypatch,
                                                                   data_dir):
    """A chunk that raises (a dead worker, a missing module) ends the run with a DataError
    that says how many parts were kept; the rerun resumes from them."""
    from morphocell.batch import parquet

    paths = [p for p, _ in pbc_subset(1)[:6]]
    real = parquet.extract_chunk
    calls = []

    def dies_on_third(entries, *a):
        calls.append(len(entries))
        if len(calls) == 3:
            raise RuntimeError("worker died")
        return real(entries, *a)

    monkeypatch.setattr(parquet, "extract_chunk", dies_on_third)
    out = tmp_path / "f.parquet"
    with pytest.raises(DataError, match=r"chunk failed in a worker \(RuntimeError: worker died\)"
                       r".* 2 part files .* kept"):
        extract_to_parquet(paths, out, chunk_size=2, families=("shape",))
    assert len(list(out.glob("part-*.parquet"))) == 2
    monkeypatch.setattr(parquet, "extract_chunk", real)
    res = extract_to_parquet(paths, out, chunk_size=2, families=("shape",))
    assert (res.skipped, res.written) == (4, 2)
    assert read_features(out)["path"].tolist() == paths


def test_repeated_paths_with_ids_give_distinct_rows(tmp_path, data_dir):
    p, lab = pbc_subset(1)[0]
    rows = [{"id": f"{p}#{k}", "path": p, "label": lab} for k in range(3)]
    m = _write_manifest(tmp_path / "rep.csv", rows)
    out = tmp_path / "rep.parquet"
    assert extract_to_parquet(m, out).written == 3
    df = read_features(out)
    assert df["id"].tolist() == [r["id"] for r in rows]
    assert (df[feature_names()].nunique(dropna=False) == 1).all()
    assert extract_to_parquet(m, out).skipped == 3


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------

def test_refuses_other_options_foreign_folders_and_concurrent_writers(reference, tmp_path):
    out = tmp_path / "copy.parquet"
    shutil.copytree(reference[0], out)
    paths = ["unused.jpg"]
    with pytest.raises(DataError, match="families"):
        extract_to_parquet(paths, out, families=("shape",))
    with pytest.raises(DataError, match="method"):
        extract_to_parquet(paths, out, method="unet")
    assert cli_main(["features", "unused.jpg", "--out", str(out), "--families", "shape",
                     "-q"]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference[0].iterdir())

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="not empty"):
        extract_to_parquet(paths, foreign)
    afile = tmp_path / "features.parquet"
    afile.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="is a file"):
        extract_to_parquet(paths, afile)

    import fcntl
    with open(out / "_morphocell.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another morphocell features run"):
            extract_to_parquet(paths, out)
    with pytest.raises(DataError, match="unknown column"):
        read_features(out, columns=["Nope"])


# ---------------------------------------------------------------------------------------------
# parallel and distributed runs equal the serial one
# ---------------------------------------------------------------------------------------------

def test_two_processes_equal_one(manifest, reference, tmp_path):
    out = tmp_path / "nj2.parquet"
    res = extract_to_parquet(manifest, out, n_jobs=2, chunk_size=CHUNK)
    assert (res.written, res.parts) == (64, 16)
    pd.testing.assert_frame_equal(read_features(out), reference[1], check_exact=True)
    assert _raw_rows(out)["id"].is_unique


@pytest.mark.dist
def test_dask_cluster_equals_local(manifest, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        out = tmp_path / "dask.parquet"
        res = extract_to_parquet(manifest, out, client=client, chunk_size=CHUNK)
        assert (res.written, res.parts) == (64, 16)
        ran_on = client.run(os.getpid)
        assert len(ran_on) == 2 and os.getpid() not in ran_on.values()
        # in-memory results through the same executor: the library's batch on the cluster
        ref = reference[1]
        X, st, _ = extract_batch(ref["path"][:6].tolist(), client=client, chunk_size=2)
        np.testing.assert_array_equal(X, ref[feature_names()].to_numpy()[:6])
        assert st == ref["status"][:6].tolist()
        # the CLI path: --scheduler tcp://127.0.0.1:PORT
        out_cli = tmp_path / "dask_cli.parquet"
        rc = cli_main(["features", str(manifest), "--out", str(out_cli), "--chunk-size",
                       str(CHUNK), "--scheduler", cluster.scheduler_address, "-q"])
        assert rc == 0
    pd.testing.assert_frame_equal(read_features(out), reference[1], check_exact=True)
    pd.testing.assert_frame_equal(read_features(out_cli), reference[1], check_exact=True)


_FAULTS_SCRIPT = r"""
import json, resource, sys
from morphocell.batch.engine import tune_malloc
from morphocell.batch.parquet import extract_chunk
paths = json.loads(sys.argv[1])
ents = [(i, p, p, None, None) for i, p in enumerate(paths)]
extract_chunk(ents, None, "otsu")  # warm-up: imports, numba cache, heap grown to size
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
res = extract_chunk(ents, None, "otsu")
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": tune_malloc(), "faults": (r1 - r0) / len(ents),
                  "X": res["X"].tolist()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_dask_malloc_env_does_not_fault_every_buffer(data_dir):
    """Under Dask's MALLOC_TRIM_THRESHOLD_ the worker would page-fault every image buffer.

    extract_chunk sets fixed malloc thresholds in that case (morphocell.batch.engine.tune_malloc);
    MORPHOCELL_KEEP_MALLOC=1 leaves glibc alone. Page-fault counts, not timings: the tuned
    process must fault several times less per image, and give identical values.
    """
    import json

    paths = [p for p, _ in pbc_subset(2)]
    runs = {}
    for name, extra in (("tuned", {}), ("kept", {"MORPHOCELL_KEEP_MALLOC": "1"})):
        env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", **extra}
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, json.dumps(paths)],
                             env=env, capture_output=True, text=True, timeout=600, check=True)
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["tuned"]["tuned"] is True and runs["kept"]["tuned"] is False
    assert runs["tuned"]["faults"] * 4 < runs["kept"]["faults"], runs
    np.testing.assert_array_equal(np.array(runs["tuned"]["X"], dtype=float),
                                  np.array(runs["kept"]["X"], dtype=float))


def test_a_refused_run_leaves_no_dataset_folder(tmp_path):
    """An error before the first part (here: a folder with no image) leaves neither the new
    dataset folder nor its lock file behind; a folder that existed before is kept."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "f.parquet"
    assert cli_main(["features", str(empty), "--out", str(out), "-q"]) == 2
    assert not out.exists()
    out.mkdir()
    with pytest.raises(DataError):
        extract_to_parquet([str(empty)], out)
    assert out.is_dir()


def test_progress_shows_the_total_in_a_log(manifest, tmp_path, monkeypatch, capsys):
    """In a log (stderr not a terminal) the progress line carries the total and time left."""
    import morphocell._utils as utils

    monkeypatch.setattr(utils, "LOG_PROGRESS_EVERY", 0.0)
    extract_to_parquet(manifest, tmp_path / "f.parquet", chunk_size=CHUNK, verbose=1)
    err = capsys.readouterr().err
    assert "/64 img (" in err and "left" in err
