"""morphocell.deep: CNN embedder, persistence, determinism, leakage-free cross-fitting.

Tiny configurations (a few real PBC images, 32 px, small networks, a few epochs). Tests
that need TensorFlow carry the ``deep`` marker; those over ~5 s on a 2-core CPU also ``slow``.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone

from conftest import REPO, pbc_subset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = ("lymphocyte", "neutrophil", "platelet")


def _subset(n, split="train", classes=CLASSES, offset=0):
    rows = [(p, lab) for p, lab in pbc_subset(n, split, offset) if lab in classes]
    return [p for p, _ in rows], np.array([lab for _, lab in rows])


def test_import_morphocell_does_not_import_tensorflow():
    code = ("import sys, morphocell, morphocell.deep, morphocell.deep.embedder, "
            "morphocell.deep.crossfit, morphocell.deep.models, morphocell.deep.augment\n"
            "from morphocell.deep import CNNEmbedder, fit_deep_model\n"
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


SMALL = dict(architecture="small-cnn", input_size=32, embedding_dim=24, batch_size=8,
             augment=False, validation_fraction=0.0, verbose=0)


def _state(est) -> dict:
    """Attribute name -> identity and, for arrays, a copy: what ``predict_proba`` must not
    change."""
    return {k: (id(v), v.copy() if isinstance(v, np.ndarray) else None)
            for k, v in vars(est).items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and (a[k][1] is None or np.array_equal(a[k][1], b[k][1]))
        for k in a)


def test_deep_estimators_have_their_settings_as_parameters():
    """get_params / set_params / clone see every setting, the networks' included, before any
    fit (no TensorFlow needed)."""
    from morphocell.deep import CNNEmbedder, default_embedder
    from morphocell.deep.crossfit import DEFAULT_EMBEDDER, DeepModel, FusedModel
    from morphocell.errors import MorphocellError

    emb = CNNEmbedder(**SMALL, epochs=2)
    for est in (DeepModel(embedder=emb, cv=2, inner_cv=2, random_state=3),
                FusedModel(embedder=emb, cv=2, stack_params={"estimators": ("svc",)},
                           random_state=3, n_jobs=1)):
        params = est.get_params(deep=True)
        assert params["embedder"] is emb and params["embedder__epochs"] == 2
        assert params["embedder__input_size"] == 32 and params["random_state"] == 3
        twin = clone(est)
        assert twin is not est and twin.embedder is not emb
        assert {k: v for k, v in twin.get_params(deep=True).items() if k != "embedder"} == \
            {k: v for k, v in params.items() if k != "embedder"}
        twin.set_params(embedder__epochs=5, cv=3)
        assert twin.embedder.epochs == 5 and twin.cv == 3 and emb.epochs == 2
    # no embedder: the cross-fit uses DEFAULT_EMBEDDER's networks
    d = default_embedder(epochs=4)
    assert {k: d.get_params()[k] for k in DEFAULT_EMBEDDER} == {**DEFAULT_EMBEDDER, "epochs": 4}
    assert DeepModel().get_params()["embedder"] is None
    with pytest.raises(MorphocellError, match="embedder must be a CNNEmbedder"):
        DeepModel(embedder="small-cnn", cv=2).fit(["a.jpg"] * 4, ["x", "y"] * 2)


tf = pytest.importorskip("tensorflow")
from morphocell.deep import CNNEmbedder, crossfit_embeddings, decode_images  # noqa: E402
from morphocell.errors import ModelFileError, MorphocellError  # noqa: E402



@pytest.fixture(scope="module")
def train_set(data_dir):
    return _subset(8)  # 24 real images, 3 classes


@pytest.fixture(scope="module")
def fitted(train_set):
    paths, y = train_set
    return CNNEmbedder(**SMALL, epochs=12, random_state=0).fit(paths, y)


@pytest.mark.deep
def test_transform_shape_names_and_proba(fitted, train_set):
    paths, y = train_set
    df = fitted.transform(paths)
    names = [f"Cell_Embedding_Cnn_{i:04d}" for i in range(24)]
    assert df.shape == (len(paths), 24)
    assert list(df.columns) == names == list(fitted.get_feature_names_out())
    assert np.isfinite(df.to_numpy()).all() and df.attrs["failures"] == []
    assert list(fitted.classes_) == sorted(CLASSES)
    p = fitted.predict_proba(paths)
    assert p.shape == (len(paths), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert set(fitted.predict(paths)) <= set(CLASSES)
    assert fitted.n_epochs_ == 12 and len(fitted.history_["loss"]) == 12
    assert fitted.device_ in ("CPU", "GPU")
    # the estimator contract: fitted state ends in "_", inference sets nothing
    params = set(fitted.get_params(deep=False))
    assert all(k.endswith("_") for k in set(vars(fitted)) - params)
    before = _state(fitted)
    fitted.transform(paths[:3]), fitted.predict_proba(paths[:3]), fitted.predict(paths[:3])
    assert _same_state(before, _state(fitted))


@pytest.mark.deep
def test_inference_mode_gives_the_accuracy_the_training_curve_claims(fitted, train_set):
    """No train-mode batch norm at inference: predictions in inference mode, one image at a
    time or in a batch, reach the accuracy the last training epoch reported."""
    paths, y = train_set
    claimed = fitted.history_["accuracy"][-1]
    assert claimed >= 0.8, fitted.history_["accuracy"]  # the curve claims something
    acc = np.mean(fitted.predict(paths) == y)
    assert acc >= claimed - 0.1
    assert fitted.precise_bn_batches_ >= 1
    # batch-size independence: inference mode uses moving statistics, not batch statistics
    one = np.vstack([fitted.predict_proba([p]) for p in paths[:4]])
    np.testing.assert_allclose(one, fitted.predict_proba(paths[:4]), atol=1e-5)


@pytest.mark.deep
@pytest.mark.slow
def test_seeded_fits_are_identical(fitted, train_set):
    paths, y = train_set
    again = CNNEmbedder(**SMALL, epochs=12, random_state=0).fit(paths, y)
    e1, e2 = fitted.transform(paths).to_numpy(), again.transform(paths).to_numpy()
    np.testing.assert_array_equal(e1, e2)
    assert again.history_["loss"] == fitted.history_["loss"]
    # (training moved the weights: the fixture's curve reaches >= 0.8 accuracy, so equality
    # is not the trivial equality of two untrained networks)


@pytest.mark.deep
def test_augmented_stream_is_deterministic_and_valid(data_dir):
    from morphocell.deep.augment import augment_image

    img, _, _ = decode_images(_subset(1)[0][:1], 48)
    a = augment_image(tf.constant(img[0]), tf.constant([3, 7])).numpy()
    b = augment_image(tf.constant(img[0]), tf.constant([3, 7])).numpy()
    c = augment_image(tf.constant(img[0]), tf.constant([3, 8])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (48, 48, 3) and a.min() >= 0 and a.max() <= 255
    # colour jitter is small: the mean colour stays close to the original's
    assert np.abs(a.mean((0, 1)) - img[0].mean((0, 1))).max() < 40



@pytest.mark.deep
def test_stain_augmentation_adds_gamma_and_tint_and_keeps_the_standard_draws(data_dir):
    from morphocell.deep.augment import (STAIN, STANDARD, AugmentConfig, augment_config,
                                         augment_image)

    img, _, _ = decode_images(_subset(1)[0][:1], 48)
    x, seed = tf.constant(img[0]), tf.constant([3, 7])
    std = augment_image(x, seed, STANDARD).numpy()
    # gamma and tint act after the standard steps, whose draws they leave as they were:
    # with a tint of exactly 1 and gamma 1 the "stain" path gives the standard image
    neutral = AugmentConfig(gamma=(1.0, 1.0 + 1e-9), tint=(1.0 - 1e-9, 1.0 + 1e-9))
    np.testing.assert_allclose(augment_image(x, seed, neutral).numpy(), std, atol=1e-3)
    stain = [augment_image(x, tf.constant([3, s]), STAIN).numpy() for s in range(16)]
    assert all(a.shape == (48, 48, 3) and a.min() >= 0 and a.max() <= 255 for a in stain)
    np.testing.assert_array_equal(stain[7], augment_image(x, seed, STAIN).numpy())
    # per-channel gains move the channels apart: the spread of the mean colour ratios over
    # seeds is wider than with the standard jitter
    def ratio_spread(imgs):
        m = np.array([a.mean((0, 1)) for a in imgs])
        return np.std(m[:, 0] / m[:, 2])
    std16 = [augment_image(x, tf.constant([3, s]), STANDARD).numpy() for s in range(16)]
    assert ratio_spread(stain) > 1.5 * ratio_spread(std16)
    assert augment_config(True) is STANDARD and augment_config("standard") is STANDARD
    assert augment_config("stain") is STAIN
    assert augment_config(False) is None and augment_config("none") is None
    with pytest.raises(MorphocellError, match="augment="):
        augment_config("strong")
    with pytest.raises(MorphocellError, match="augment="):
        CNNEmbedder(augment="strong").fit(_subset(1)[0][:2], ["a", "b"])

@pytest.mark.deep
def test_save_load_roundtrip_identical(fitted, train_set, tmp_path):
    paths, _ = train_set
    ref = fitted.transform(paths).to_numpy()
    back = CNNEmbedder.from_bytes(fitted.to_bytes())
    np.testing.assert_array_equal(back.transform(paths).to_numpy(), ref)
    np.testing.assert_array_equal(back.predict_proba(paths), fitted.predict_proba(paths))
    assert list(back.classes_) == list(fitted.classes_)
    assert back.get_params() == fitted.get_params()
    f = tmp_path / "emb.mcnn"
    fitted.save(f)
    np.testing.assert_array_equal(CNNEmbedder.load(f).transform(paths).to_numpy(), ref)
    # pickling goes through the .keras bytes too (no Keras object is pickled)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).transform(paths)
                                  .to_numpy(), ref)
    with pytest.raises(ModelFileError, match="not a saved CNNEmbedder"):
        CNNEmbedder.from_bytes(b"not a zip", "x.bin")
    with pytest.raises(ModelFileError, match="model file not found"):
        CNNEmbedder.load(tmp_path / "missing.mcnn")


@pytest.mark.deep
@pytest.mark.slow
def test_crop_keeps_the_centre_of_the_image(fitted, train_set, tmp_path):
    import cv2

    from morphocell.io import read_image

    paths, y = train_set
    img = read_image(paths[0])
    h, w = img.shape[:2]
    got, ok, _ = decode_images([img[:, : w - 20]], 32, crop=0.5)  # non-square input
    side = round(min(h, w - 20) * 0.5)  # of the shorter side
    y0, x0 = (h - side) // 2, (w - 20 - side) // 2
    ref = cv2.resize(img[y0:y0 + side, x0:x0 + side], (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got[0], ref)
    full, _, _ = decode_images([img], 32)
    assert not np.array_equal(got[0], full[0])
    # a fitted embedder crops every input the same way, and the crop survives save/load
    emb = clone(fitted).set_params(crop=0.6, epochs=2).fit(paths, y)
    pre, _, _ = decode_images(paths, 32, crop=0.6)
    np.testing.assert_array_equal(emb.transform(paths).to_numpy(),
                                  emb.transform(pre).to_numpy())
    back = CNNEmbedder.from_bytes(emb.to_bytes())
    assert back.crop == 0.6
    np.testing.assert_array_equal(back.transform(paths).to_numpy(),
                                  emb.transform(paths).to_numpy())
    # embedders pickled before the parameter existed load as whole-image ones
    state = emb.__getstate__()
    del state["crop"]
    old = CNNEmbedder.__new__(CNNEmbedder)
    old.__setstate__(state)
    assert old.crop == 1.0 and old.get_params()["crop"] == 1.0
    for bad in (0, 1.5, "half"):
        with pytest.raises(MorphocellError, match="crop must be a number in"):
            clone(fitted).set_params(crop=bad).fit(paths, y)


@pytest.mark.deep
def test_tta_averages_the_eight_symmetries_and_is_invariant_to_them(fitted, train_set):
    from morphocell._utils import DIHEDRAL, dihedral

    paths, _ = train_set
    imgs, _, _ = decode_images(paths[:6], fitted.input_size)
    views = [fitted.transform(dihedral(imgs, k, flip, axes=(1, 2))).to_numpy()
             for k, flip in DIHEDRAL]
    # the network is not itself invariant: the views differ, so the checks below are not void
    assert not np.allclose(views[0], views[1], atol=1e-3)
    tta = pickle.loads(pickle.dumps(fitted)).set_params(tta=True)
    e = tta.transform(imgs).to_numpy()
    np.testing.assert_allclose(e, np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    turned = dihedral(imgs, 3, True, axes=(1, 2))
    np.testing.assert_allclose(tta.transform(turned).to_numpy(), e, rtol=1e-5, atol=1e-6)
    p = tta.predict_proba(paths[:6])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tta.predict_proba(turned), p, rtol=1e-5, atol=1e-6)
    # the fitted embedder itself is untouched, and the switch survives saving
    np.testing.assert_array_equal(fitted.transform(imgs).to_numpy(), views[0])
    assert CNNEmbedder.from_bytes(tta.to_bytes()).tta is True


@pytest.mark.deep
def test_weights_file_errors_and_warm_start(fitted, tmp_path, train_set):
    from morphocell.deep.models import build_model, load_backbone_weights

    paths, y = train_set
    with pytest.raises(ModelFileError, match="weights file not found") as ei:
        CNNEmbedder(**SMALL, weights=tmp_path / "nope.weights.h5").fit(paths, y)
    assert "nope.weights.h5" in str(ei.value)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"this is not HDF5")
    with pytest.raises(ModelFileError, match="incompatible weights file") as ei:
        CNNEmbedder(**SMALL, weights=junk, epochs=1).fit(paths, y)
    assert "junk.weights.h5" in str(ei.value)
    saved = tmp_path / "small_cnn.mcnn"
    fitted.save(saved)
    other = build_model("small-resnet", 32, 3, 24).get_layer("backbone")
    with pytest.raises(ModelFileError, match="incompatible weights"):
        load_backbone_weights(other, saved, "small-resnet")
    # same architecture: the backbone starts from exactly the saved weights
    same = build_model("small-cnn", 32, 5, 16).get_layer("backbone")
    load_backbone_weights(same, saved, "small-cnn")
    for a, b in zip(same.get_weights(), fitted.model_.get_layer("backbone").get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(MorphocellError, match="unknown architecture"):
        CNNEmbedder(architecture="vgg99").fit(paths, y)


@pytest.mark.deep
def test_unreadable_image_gives_nan_row(fitted, train_set, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    paths, _ = train_set
    df = fitted.transform([paths[0], bad, paths[1]])
    assert np.isnan(df.iloc[1]).all() and np.isfinite(df.iloc[[0, 2]].to_numpy()).all()
    assert df.attrs["failures"][0][0] == str(bad)


@pytest.fixture(scope="module")
def crossfit(train_set):
    paths, y = train_set
    params = {k: v for k, v in SMALL.items() if k != "verbose"}
    return crossfit_embeddings(paths, y, cv=2, random_state=0, verbose=0, epochs=3, **params)


@pytest.mark.deep
@pytest.mark.slow
def test_crossfit_gives_every_image_an_embedding_from_a_network_that_did_not_see_it(
        crossfit, train_set):
    paths, y = train_set
    cf = crossfit
    n = len(paths)
    assert cf.embeddings.shape == (n, 24) and np.isfinite(cf.embeddings).all()
    assert set(np.unique(cf.fold)) == {0, 1}
    for k, net in enumerate(cf.embedders):
        held = np.flatnonzero(cf.fold == k)
        assert len(np.intersect1d(net.train_index_, held)) == 0  # never saw its fold
        assert len(net.train_index_) + len(held) == n  # ... and saw everything else
        assert net.n_train_images_ == len(net.train_index_)
        # the stored out-of-fold rows are exactly this network's embeddings of those images
        np.testing.assert_array_equal(net.transform(cf.images[held]).to_numpy(),
                                      cf.embeddings[held])
        # ... and not the other network's (different, unaligned embedding space)
        other = cf.embedders[1 - k]
        assert not np.allclose(other.transform(cf.images[held]).to_numpy(), cf.embeddings[held])


@pytest.mark.deep
@pytest.mark.slow
def test_crossfit_with_tta_trains_the_same_networks_and_averages_their_views(
        crossfit, train_set):
    from morphocell._utils import DIHEDRAL, dihedral

    paths, y = train_set
    params = {k: v for k, v in SMALL.items() if k != "verbose"}
    cf = crossfit_embeddings(paths, y, cv=2, random_state=0, verbose=0, epochs=3, tta=True,
                             **params)
    np.testing.assert_array_equal(cf.fold, crossfit.fold)
    for k, (net, ref) in enumerate(zip(cf.embedders, crossfit.embedders, strict=True)):
        assert net.tta is True
        for a, b in zip(net.model_.get_weights(), ref.model_.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # TTA changes inference only
        held = np.flatnonzero(cf.fold == k)
        views = [ref.transform(dihedral(cf.images[held], t, flip, axes=(1, 2))).to_numpy()
                 for t, flip in DIHEDRAL]
        np.testing.assert_allclose(cf.embeddings[held], np.mean(views, axis=0), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.deep
@pytest.mark.slow
def test_deep_and_fused_models_predict_and_save(crossfit, data_dir, tmp_path):
    import pandas as pd

    from morphocell import model_io
    from morphocell.deep.crossfit import TRUSTED_TYPES, DeepModel, FusedModel, proba_names
    from morphocell.errors import DataError
    from morphocell.features.extractor import extract_batch, feature_names

    cf = crossfit
    deep = DeepModel(cv=2, inner_cv=2, random_state=0)._fit_crossfit(cf)
    assert deep.oof_proba_.shape == (len(cf.y), 3)
    for k, g in enumerate(deep.classifiers_):  # g_k fitted on f_k's held-out fold only
        assert g.n_features_in_ == 24
    test_paths, test_y = _subset(2, "test")
    p = deep.predict_proba(test_paths)
    assert p.shape == (len(test_paths), 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    # p(x) is the mean over the K (network, classifier) pairs
    imgs, _, _ = decode_images(test_paths, 32, crop=deep.crop_)
    manual = np.mean([g.predict_proba(f.transform(imgs).to_numpy())
                      for f, g in zip(deep.embedders_, deep.classifiers_, strict=True)], axis=0)
    np.testing.assert_allclose(p, manual, atol=1e-10)

    fams = ("shape",)
    hc = pd.DataFrame(extract_batch(_subset(8)[0], fams)[0], columns=feature_names(fams))
    fused = FusedModel(cv=2, stack_params={"estimators": ("svc",)}, random_state=0)
    fused._fit_tables(deep, hc, cf.y)
    assert list(fused.feature_names_in_[-3:]) == proba_names(3)
    hct = pd.DataFrame(extract_batch(test_paths, fams)[0], columns=feature_names(fams))
    before = _state(fused), _state(fused.deep_)
    pf = fused.predict_proba(test_paths, handcrafted=hct)
    assert pf.shape == (len(test_paths), 3) and np.isfinite(pf).all()
    assert _same_state(before[0], _state(fused)) and _same_state(before[1], _state(fused.deep_))
    pf2, failures = fused.predict_proba_with_failures(test_paths, handcrafted=hct)
    np.testing.assert_array_equal(pf2, pf)
    assert failures == []

    # the stack's folds are the networks' folds
    stack_folds = np.empty(len(cf.y), int)
    for k, (_, te) in enumerate(fused.stack_.cv.split()):
        stack_folds[te] = k
    np.testing.assert_array_equal(stack_folds, cf.fold)
    # domain copies (here: the hand-crafted rows of 4 images, perturbed) train the
    # hand-crafted learner only; the deep learner is the one fitted without them
    src = np.array([0, 3, 5, 6])
    rng = np.random.default_rng(0)
    hcc = hc.iloc[src].reset_index(drop=True) * rng.uniform(0.9, 1.1, size=(4, hc.shape[1]))
    fc = FusedModel(cv=2, stack_params={"estimators": ("svc",)}, random_state=0)
    fc._fit_tables(deep, hc, cf.y, (hcc, src))
    assert fc.n_domain_copies_ == 4 and fused.n_domain_copies_ == 0
    # ... each copy in its source image's fold
    np.testing.assert_array_equal(fc.stack_.cv.test_fold, np.r_[cf.fold, cf.fold[src]])
    learners = [dict((n, e) for n, e, _ in m.stack_.learners_) for m in (fused, fc)]
    dp = deep.oof_proba_
    np.testing.assert_allclose(learners[0]["svc_deep"].predict_proba(dp),  # float noise
                               learners[1]["svc_deep"].predict_proba(dp), rtol=0, atol=1e-7)
    assert not np.array_equal(learners[0]["svc_handcrafted"].predict_proba(hc.to_numpy()),
                              learners[1]["svc_handcrafted"].predict_proba(hc.to_numpy()))
    with pytest.raises(DataError, match="copies lack"):
        FusedModel(cv=2)._fit_tables(deep, hc, cf.y, (hcc.iloc[:, 1:], src))

    model_io.register_trusted_types(TRUSTED_TYPES)
    f = tmp_path / "fused.mcm"
    model_io.save_model(fused, f)
    back = model_io.load_model(f).estimator
    np.testing.assert_allclose(back.predict_proba(test_paths, handcrafted=hct), pf, atol=1e-12)


@pytest.mark.deep
@pytest.mark.slow
def test_deep_model_clone_refits_to_the_same_predictions_and_predict_writes_nothing(
        train_set, tmp_path):
    from morphocell.deep import fit_deep_model
    from morphocell.deep.crossfit import DeepModel

    paths, y = train_set
    params = {k: v for k, v in SMALL.items() if k != "verbose"}
    model = fit_deep_model(paths, y, features="deep", cv=2, inner_cv=2, random_state=0,
                           epochs=2, verbose=0, **params)
    # fitted state ends in "_"; the keyword arguments became the embedder parameter
    assert all(k.endswith("_") for k in set(vars(model)) - set(model.get_params(deep=False)))
    assert model.embedder.get_params()["epochs"] == 2
    assert model.embedder.get_params()["architecture"] == "small-cnn"
    assert [n.epochs for n in model.embedders_] == [2, 2]
    test_paths, _ = _subset(2, "test")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    before = _state(model)
    p = model.predict_proba([*test_paths, bad])
    model.predict([*test_paths, bad])
    assert _same_state(before, _state(model))  # predict_proba / predict set nothing
    assert np.isnan(p[-1]).all() and np.isfinite(p[:-1]).all()
    p2, failures = model.predict_proba_with_failures([*test_paths, bad])
    np.testing.assert_array_equal(p2, p)
    assert [f[0] for f in failures] == [str(bad)]
    # clone: the same settings, unfitted; refitted, the same predictions (same random_state)
    twin = clone(model)
    assert not hasattr(twin, "classifiers_")
    np.testing.assert_array_equal(twin.fit(paths, y).predict_proba(test_paths), p[:-1])
    # a model file keeps the embedder parameter (an unfitted CNNEmbedder) and the predictions
    from morphocell import model_io
    from morphocell.deep.crossfit import TRUSTED_TYPES

    model_io.register_trusted_types(TRUSTED_TYPES)
    model_io.save_model(model, tmp_path / "deep.mcm")
    back = model_io.load_model(tmp_path / "deep.mcm").estimator
    assert back.embedder.get_params() == model.embedder.get_params()
    np.testing.assert_array_equal(back.predict_proba(test_paths), p[:-1])
    # models saved before ``embedder`` was a parameter get their networks' settings back
    state = model.__getstate__()
    del state["embedder"]
    old = DeepModel.__new__(DeepModel)
    old.__setstate__(state)
    assert old.embedder.get_params() == {**model.embedders_[0].get_params(),
                                         "random_state": None}
    np.testing.assert_array_equal(old.predict_proba(test_paths), p[:-1])


@pytest.mark.deep
def test_fit_deep_model_rejects_bad_arguments(train_set):
    from morphocell.deep import fit_deep_model
    from morphocell.errors import DataError

    paths, y = train_set
    with pytest.raises(MorphocellError, match="features must be 'deep' or 'fused'"):
        fit_deep_model(paths, y, features="cnn")
    with pytest.raises(DataError, match="images but"):
        fit_deep_model(paths, y[:-1])
    with pytest.raises(MorphocellError, match="domain copies need hand-crafted learners"):
        fit_deep_model(paths, y, features="deep", copies=(None, []))
    with pytest.raises(DataError, match="at least 9 images per class"):
        crossfit_embeddings(paths, y, cv=9, input_size=32, verbose=0)
    with pytest.raises(MorphocellError, match="cv must be an integer >= 2"):
        crossfit_embeddings(paths, y, cv=1, input_size=32, verbose=0)
