"""Shared fixtures: where the real data lives, small real subsets of it."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MORPHOCELL_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "pbc").is_dir():
        pytest.skip(f"real data not found at {DATA} (set MORPHOCELL_DATA)")
    return DATA


def pbc_subset(n_per_class: int, split: str = "train", offset: int = 0) -> list[tuple[str, str]]:
    """Deterministic (path, label) pairs: the first ``n_per_class`` rows per class of a split."""
    with open(DATA / "pbc_split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out, seen = [], {}
    for r in rows:
        if r["split"] != split:
            continue
        k = seen.get(r["label"], 0)
        seen[r["label"]] = k + 1
        if offset <= k < offset + n_per_class:
            out.append((str(DATA / r["path"]), r["label"]))
    return out


@pytest.fixture(scope="session")
def pbc_small(data_dir):
    """3 train images per class (24 real PBC images)."""
    return pbc_subset(3)


@pytest.fixture(scope="session")
def pbc_20(data_dir):
    """20 train images per class (160 real PBC images)."""
    return pbc_subset(20)
