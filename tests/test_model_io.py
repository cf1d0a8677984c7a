"""Safe model files: round trip, refusal of pickles and untrusted types, checksums, versions."""
from __future__ import annotations

import hashlib
import json
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

import morphocell
from morphocell import FeatureExtractor, ModelFileError, StackedCellClassifier
from morphocell.ensembles import BaseLearner
from morphocell.model_io import (SavedModel, default_atypical_classes, load_model, read_header,
                                 save_model)


def _learners():
    return [("rf", BaseLearner("rf", params={"n_estimators": 20})),
            ("svc", BaseLearner("svc")),
            ("xgb", BaseLearner("xgb", params={"n_estimators": 20, "max_depth": 3}))]


@pytest.fixture(scope="module")
def fitted(pbc_small):
    """A real pipeline (image paths -> features -> stack) fitted on 24 real PBC images."""
    paths = [p for p, _ in pbc_small]
    y = [lab for _, lab in pbc_small]
    fe = FeatureExtractor(families=("shape", "color")).fit()
    X = fe.transform(paths)
    clf = StackedCellClassifier(estimators=_learners(), cv=2, random_state=0).fit(X, y)
    pipe = Pipeline([("features", fe), ("clf", clf)])
    return pipe, paths, X


def _rewrite(path, out, *, header=None, payload=None, recompute=True):
    """Copy a model file replacing header/payload; optionally recompute the checksums (what an
    attacker who knows the format would do)."""
    with zipfile.ZipFile(path) as z:
        h = json.loads(z.read("header.json"))
        p = z.read("model.skops")
        c = z.read("checksum.sha256").decode().strip()
    if header is not None:
        h.update(header)
    if payload is not None:
        p = payload
    if recompute:
        h["payload_sha256"] = hashlib.sha256(p).hexdigest()
    hb = json.dumps(h).encode()
    if recompute:
        c = hashlib.sha256(hb + p).hexdigest()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("header.json", hb)
        z.writestr("model.skops", p)
        z.writestr("checksum.sha256", c)
    return out


def test_round_trip_identical_predictions(fitted, tmp_path):
    pipe, paths, X = fitted
    f = save_model(pipe, tmp_path / "m.mcm", metadata={"cv_scores": pipe[-1].cv_scores_})
    m = load_model(f)
    assert isinstance(m, SavedModel)
    assert m.classes == [str(c) for c in pipe.classes_]
    assert m.feature_names == list(X.columns)
    assert m.morphocell_version == morphocell.__version__
    assert m.metadata["cv_scores"] == pipe[-1].cv_scores_
    assert m.atypical_classes == ["erythroblast", "ig"]
    # on the feature table and end to end on the image files
    np.testing.assert_array_equal(m.estimator[-1].predict_proba(X), pipe[-1].predict_proba(X))
    np.testing.assert_array_equal(m.predict_proba(paths[:6]), pipe.predict_proba(paths[:6]))
    assert read_header(f)["classes"] == m.classes
    # no temporary file left next to the model (atomic write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mcm"]


def test_atypical_classes_can_be_changed_and_saved(fitted, tmp_path):
    pipe, _, _ = fitted
    f = save_model(pipe, tmp_path / "m.mcm")
    m = load_model(f)
    m.atypical_classes = ["ig"]
    save_model(m, f)
    assert load_model(f).atypical_classes == ["ig"]
    with pytest.raises(ModelFileError, match="not classes of the model"):
        save_model(m, f, atypical_classes=["myeloblast"])


def test_default_atypical_classes():
    assert default_atypical_classes(["basophil", "ig", "erythroblast", "Myeloblast",
                                     "lymphocyte"]) == ["ig", "erythroblast", "Myeloblast"]


class _Boom:
    """Unpickling this writes a file: what a malicious 'model' would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _EvilState:
    """A class whose state restoration creates a file (code that skops would run if it
    trusted the type)."""

    def __init__(self, target):
        self.target = str(target)

    def __setstate__(self, state):  # pragma: no cover - must never run
        open(state["target"], "w").close()
        self.__dict__.update(state)


def test_pickle_payload_is_refused_and_never_executed(fitted, tmp_path):
    pipe, _, _ = fitted
    good = save_model(pipe, tmp_path / "good.mcm")
    marker = tmp_path / "pwned.txt"
    evil = pickle.dumps(_Boom(marker))
    # sanity: the payload really creates the file when unpickled
    pickle.loads(evil).close()
    assert marker.exists()
    marker.unlink()
    # 1) the pickle inside a container with valid checksums
    bad = _rewrite(good, tmp_path / "tampered.mcm", payload=evil)
    with pytest.raises(ModelFileError, match="corrupt model payload|could not be rebuilt"):
        load_model(bad)
    assert not marker.exists()
    # 2) the pickle as the model file itself (a joblib/pickle 'model')
    raw = tmp_path / "model.pkl"
    raw.write_bytes(evil)
    with pytest.raises(ModelFileError, match="pickle/joblib files are refused"):
        load_model(raw)
    assert not marker.exists()


def test_untrusted_type_in_skops_payload_is_refused(fitted, tmp_path):
    import skops.io as sio

    pipe, _, _ = fitted
    good = save_model(pipe, tmp_path / "good.mcm")
    marker = tmp_path / "pwned.txt"
    payload = sio.dumps({"model": _EvilState(marker)})
    assert any("_EvilState" in t for t in sio.get_untrusted_types(data=payload))
    bad = _rewrite(good, tmp_path / "tampered.mcm", payload=payload)
    with pytest.raises(ModelFileError, match="untrusted types"):
        load_model(bad)
    assert not marker.exists()


def test_saving_an_untrusted_type_is_refused(tmp_path):
    class Clf(StackedCellClassifier):
        pass

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.repeat(["a", "b"], 20)
    clf = Clf(estimators=[("rf", BaseLearner("rf", params={"n_estimators": 5}))], cv=2,
              random_state=0).fit(X, y)
    with pytest.raises(ModelFileError, match="cannot save safely"):
        save_model(clf, tmp_path / "m.mcm")
    assert not (tmp_path / "m.mcm").exists()


def test_corruption_and_version_checks(fitted, tmp_path):
    pipe, _, _ = fitted
    good = save_model(pipe, tmp_path / "good.mcm")
    # flipped bytes in the payload, checksums not recomputed
    with zipfile.ZipFile(good) as z:
        payload = bytearray(z.read("model.skops"))
    payload[len(payload) // 2] ^= 0xFF
    f = _rewrite(good, tmp_path / "flip.mcm", payload=bytes(payload), recompute=False)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(f)
    f = _rewrite(good, tmp_path / "fmt.mcm", header={"format_version": 99})
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        load_model(f)
    f = _rewrite(good, tmp_path / "ver.mcm", header={"morphocell_version": "9.0.0"})
    with pytest.raises(ModelFileError, match="written by morphocell 9.0.0"):
        load_model(f)
    truncated = tmp_path / "trunc.mcm"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ModelFileError):
        load_model(truncated)
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "missing.mcm")
    empty = tmp_path / "empty.mcm"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty model file"):
        load_model(empty)
