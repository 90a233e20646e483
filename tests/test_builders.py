"""Tests of ``hf_dimml.data.builders`` on tiny folders written in each community layout."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the layouts_ helpers, whatever the import mode

from layouts_writers import (
    TINY_AUDIO,
    TINY_FRAMES,
    TINY_IMAGE,
    make_ave,
    make_cremad,
    make_kinetics_sounds,
    make_modelnet40,
    make_ucf101,
    write_frames,
    write_wav,
)

from hf_dimml.data import builders
from hf_dimml.data.builders import (
    CREMAD_LABELS,
    build_ave,
    build_cremad,
    build_kinetics_sounds,
    build_modelnet40,
    build_ucf101,
    dataset_recipe,
    load_user_dataset,
    processor_from_dataset,
    stratified_holdout,
)
from hf_dimml.processing_dimml import DIMMLProcessor

AV_RECIPE = {"audio": TINY_AUDIO, "visual": TINY_FRAMES}


def build_tiny_cremad(root: Path, cache: Path, **kwargs) -> datasets.DatasetDict:
    return build_cremad(root, cache_dir=cache, recipe=AV_RECIPE, validation_fraction=0.25, progress=False, **kwargs)


def assert_disjoint_splits(dataset: datasets.DatasetDict) -> None:
    ids = {split: set(dataset[split]["id"]) for split in ("train", "validation", "test")}
    assert (
        not ids["train"] & ids["validation"] and not ids["train"] & ids["test"] and not ids["validation"] & ids["test"]
    )


def fail(*args, **kwargs):
    raise AssertionError("the source files were decoded again")


# -- building each layout ------------------------------------------------------------------


def test_cremad_build_shapes_labels_splits_and_recipe(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    dataset = build_tiny_cremad(root, tmp_path / "cache")
    assert list(dataset) == ["train", "validation", "test"]
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 9, "validation": 3, "test": 3}
    assert dataset["train"].features["labels"].names == CREMAD_LABELS
    assert sorted(set(dataset["validation"]["labels"])) == [0, 1, 5]  # stratified: one clip per present class
    assert_disjoint_splits(dataset)
    row = dataset["test"][0]
    assert np.asarray(row["audio"]).shape == (33, 32)
    assert len(row["visual"]) == 3 and set(row["visual"][0]) == {"bytes", "path"}
    recipe = dataset_recipe(dataset)
    assert recipe["dataset"] == "cremad" and recipe["skipped"]["count"] == 0
    assert recipe["modalities"][0]["hop_length"] == 32 and recipe["validation"]["source"] == "train"
    cache_dirs = [p for p in (tmp_path / "cache").iterdir()]
    assert len(cache_dirs) == 1 and not cache_dirs[0].name.startswith(".")  # no staging directory left behind
    assert json.loads((cache_dirs[0] / "dimml_recipe.json").read_text())["label_names"] == CREMAD_LABELS


def test_built_rows_and_raw_clips_go_through_the_same_processor(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    dataset = build_tiny_cremad(root, tmp_path / "cache")
    processor = processor_from_dataset(dataset)
    clip = dataset["test"][0]["id"]
    row = dataset["test"].with_transform(processor.eval_transform)[0]
    raw = processor(audio=str(root / "AudioWAV" / f"{clip}.wav"), visual=str(root / "Image-01-FPS" / clip))
    torch.testing.assert_close(row["audio"], raw["audio"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(row["visual"], raw["visual"][0], atol=0, rtol=0)
    assert row["visual"].shape == (2, 3, 16, 16)
    train_batch = dataset["train"].with_transform(processor.train_transform)[:4]
    assert train_batch["visual"].shape == (4, 2, 3, 16, 16) and train_batch["labels"].dtype == torch.long


def test_second_call_reloads_the_cache_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_cremad(tmp_path / "cremad")
    first = build_tiny_cremad(root, tmp_path / "cache")
    monkeypatch.setattr(builders.engine, "read_wav", fail)
    monkeypatch.setattr(builders.engine, "_read_image_bytes", fail)
    monkeypatch.setattr(builders.cremad, "parse_cremad_list", fail)
    again = build_tiny_cremad(root, tmp_path / "cache")
    assert again["train"]["id"] == first["train"]["id"]
    with pytest.raises(AssertionError, match="decoded again"):
        build_tiny_cremad(root, tmp_path / "cache", force_rebuild=True)
    # A different recipe is a different cache entry, so it is built.
    with pytest.raises(AssertionError, match="decoded again"):
        build_cremad(
            root, cache_dir=tmp_path / "cache", recipe={"audio": {**TINY_AUDIO, "hop_length": 16}}, progress=False
        )


def test_failed_build_leaves_no_cache(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    (root / "AudioWAV" / "1002_IEO_ANG_X0.wav").write_bytes(b"RIFF-but-broken")
    with pytest.raises(ValueError, match=r"1002_IEO_ANG_X0.*unreadable WAV"):
        build_tiny_cremad(root, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_ave_build_uses_the_official_lists(tmp_path: Path) -> None:
    root = make_ave(tmp_path / "ave")
    dataset = build_ave(root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, progress=False)
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 6, "validation": 3, "test": 3}
    assert dataset["train"].features["labels"].names == ["Church bell", "Dog", "Violin, fiddle"]
    assert dataset_recipe(dataset)["validation"]["source"] == "valSet.txt"
    assert np.asarray(dataset["validation"][0]["audio"]).shape == (33, 32)  # stereo 22.05 kHz -> mono 8 kHz


def test_kinetics_sounds_build_carves_validation(tmp_path: Path) -> None:
    root = make_kinetics_sounds(tmp_path / "ks")
    dataset = build_kinetics_sounds(
        root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, validation_fraction=0.25, progress=False
    )
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 6, "validation": 2, "test": 2}
    assert dataset["train"].features["labels"].names == ["dog barking", "playing bagpipes"]
    assert_disjoint_splits(dataset)


def test_ucf101_build_rgb_and_flow_with_grouped_validation(tmp_path: Path) -> None:
    root = make_ucf101(tmp_path / "ucf", nested_rgb=True)
    dataset = build_ucf101(
        root,
        cache_dir=tmp_path / "cache",
        recipe={"rgb": TINY_FRAMES, "flow": TINY_FRAMES},
        validation_fraction=0.3,
        progress=False,
    )
    assert dataset["train"].features["labels"].names == ["ApplyEyeMakeup", "Archery"]
    assert dataset["test"].num_rows == 4 and all("_g01_" in clip for clip in dataset["test"]["id"])
    train_groups = {clip.rsplit("_c", 1)[0] for clip in dataset["train"]["id"]}
    validation_groups = {clip.rsplit("_c", 1)[0] for clip in dataset["validation"]["id"]}
    assert validation_groups and not train_groups & validation_groups  # whole groups held out
    row = dataset["train"][0]
    assert len(row["flow"]) == 3 and len(row["flow"][0]) == 2  # [u, v] per frame
    processed = dataset["train"].with_transform(processor_from_dataset(dataset).eval_transform)[:2]
    assert processed["rgb"].shape == (2, 2, 3, 16, 16) and processed["flow"].shape == (2, 2, 2, 16, 16)


def test_max_short_side_stores_smaller_frames_in_the_same_format(tmp_path: Path) -> None:
    import io

    from PIL import Image

    root = make_ucf101(tmp_path / "ucf", nested_rgb=True)
    big = tmp_path / "big"
    write_frames(big, 1, size=(40, 60))  # an RGB JPEG larger than the cap, 2:3
    write_frames(big, 1, size=(40, 60), mode="L", suffix=".png")
    for frame_file in sorted(big.iterdir()):
        shrunk = Image.open(io.BytesIO(builders.engine._shrink_encoded(frame_file.read_bytes(), 20)))
        original = Image.open(frame_file)
        assert shrunk.size == (30, 20) and shrunk.format == original.format and shrunk.mode == original.mode
        assert abs(np.asarray(shrunk, dtype=float).mean() - np.asarray(original, dtype=float).mean()) < 3
    small = sorted(big.iterdir())[0].read_bytes()
    assert builders.engine._shrink_encoded(small, 40) == small  # not larger than the cap: the original bytes

    kwargs = dict(cache_dir=tmp_path / "cache", recipe={"rgb": {**TINY_FRAMES, "image_size": 8},
                  "flow": {**TINY_FRAMES, "image_size": 8}}, validation_fraction=0.3, progress=False)
    plain = build_ucf101(root, **kwargs)
    capped = build_ucf101(root, max_short_side=8, **kwargs)
    assert dataset_recipe(capped)["max_short_side"] == 8 and dataset_recipe(plain)["max_short_side"] is None
    assert capped["train"].cache_files[0]["filename"] != plain["train"].cache_files[0]["filename"]
    row = capped["train"][0]
    rgb = Image.open(io.BytesIO(row["rgb"][0]["bytes"]))
    flow_u = Image.open(io.BytesIO(row["flow"][0][0]["bytes"]))
    assert min(rgb.size) == 8 and min(flow_u.size) == 8  # the layout writes 12 x 18 frames
    processed = capped["train"].with_transform(processor_from_dataset(capped).eval_transform)[:2]
    assert processed["rgb"].shape == (2, 2, 3, 8, 8) and processed["flow"].shape == (2, 2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"max_short_side=4 is below modality 'rgb'"):
        build_ucf101(root, max_short_side=4, **kwargs)


def test_modelnet40_build_front_and_rear_views(tmp_path: Path) -> None:
    root = make_modelnet40(tmp_path / "mn")
    dataset = build_modelnet40(
        root,
        cache_dir=tmp_path / "cache",
        recipe={"front": TINY_IMAGE, "rear": TINY_IMAGE},
        validation_fraction=0.25,
        progress=False,
    )
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 6, "validation": 2, "test": 2}
    row = dataset["train"][0]
    # The test renders encode the view in the grey level: view 1 and view 7 differ by 6 * 15.
    front, rear = np.asarray(row["front"])[0, 0, 0], np.asarray(row["rear"])[0, 0, 0]
    assert int(rear) - int(front) == 90
    processed = dataset["test"].with_transform(processor_from_dataset(dataset).eval_transform)[:2]
    assert processed["front"].shape == (2, 3, 16, 16)


# -- bad data ------------------------------------------------------------------------------


def test_missing_wav_is_an_error_naming_the_clip(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    (root / "AudioWAV" / "1001_IEO_HAP_X2.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1001_IEO_HAP_X2.*AudioWAV"):
        build_tiny_cremad(root, tmp_path / "cache")


def test_missing_clip_is_skipped_counted_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_kinetics_sounds(tmp_path / "ks")
    (root / "audio" / "ks1_001.wav").unlink()
    with caplog.at_level(logging.WARNING, logger="hf_dimml.data.builders"):
        dataset = build_kinetics_sounds(root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, progress=False)
    assert "ks1_001" not in [clip for split in dataset.values() for clip in split["id"]]
    skipped = dataset_recipe(dataset)["skipped"]
    assert skipped["count"] == 1 and skipped["clips"][0]["id"] == "ks1_001"
    assert "skipped 1 clip" in caplog.text


def test_a_split_left_empty_by_skips_is_an_error_with_the_reasons(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    for line in (root / "test.csv").read_text().splitlines():
        (root / "Image-01-FPS" / line.split(",")[0] / "000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"split\(s\) \['test'\] have no rows \(test: 3 clip\(s\) skipped\).*000001.jpg"):
        build_tiny_cremad(root, tmp_path / "cache", on_missing="skip")
    assert not any(p.name.startswith("cremad-") for p in (tmp_path / "cache").iterdir())


def test_split_list_naming_an_absent_clip(tmp_path: Path) -> None:
    root = make_ave(tmp_path / "ave")
    with open(root / "testSet.txt", "a") as handle:
        handle.write("Dog&NoSuchVideo&good&0&10\n")
    with pytest.raises(FileNotFoundError, match="NoSuchVideo"):
        build_ave(root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, on_missing="error", progress=False)
    dataset = build_ave(root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, progress=False)  # AVE default: skip
    assert dataset_recipe(dataset)["skipped"]["count"] == 1


def test_unreadable_frame_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    (root / "Image-01-FPS" / "1000_IEO_NEU_X1" / "000002.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"1000_IEO_NEU_X1.*000002\.jpg"):
        build_tiny_cremad(root, tmp_path / "cache")


def test_clip_with_too_few_frames(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    for path in sorted((root / "Image-01-FPS" / "1000_IEO_NEU_X3").iterdir())[1:]:
        path.unlink()
    with pytest.raises(ValueError, match=r"1000_IEO_NEU_X3.*1 frame\(s\), fewer than num_frames=2"):
        build_tiny_cremad(root, tmp_path / "cache")
    dataset = build_tiny_cremad(root, tmp_path / "cache", on_missing="skip")
    assert dataset_recipe(dataset)["skipped"]["clips"][0]["id"] == "1000_IEO_NEU_X3"


def test_label_outside_the_label_set(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    with open(root / "train.csv", "a") as handle:
        handle.write("1000_IEO_NEU_X0b,BORED\n")
    with pytest.raises(ValueError, match=r"train\.csv:13: 'BORED' is not a CREMA-D emotion.*Accepted formats"):
        build_tiny_cremad(root, tmp_path / "cache")


def test_explicit_label_names_reject_other_labels(tmp_path: Path) -> None:
    root = make_ave(tmp_path / "ave")
    with pytest.raises(ValueError, match=r"label 'Violin, fiddle'.*not in label_names"):
        build_ave(
            root, cache_dir=tmp_path / "cache", recipe=AV_RECIPE, label_names=["Church bell", "Dog"], progress=False
        )


def test_clip_listed_in_two_splits(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    with open(root / "test.csv", "a") as handle:
        handle.write("1000_IEO_NEU_X0,NEU\n")
    with pytest.raises(ValueError, match=r"1000_IEO_NEU_X0.*both 'train' and.*'test'"):
        build_tiny_cremad(root, tmp_path / "cache")


def test_missing_split_list_and_folder(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    (root / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test split list.*test\.csv"):
        build_tiny_cremad(root, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="frames folder"):
        build_tiny_cremad(root, tmp_path / "cache", frames_dir="Frames")


def test_ucf101_label_index_mismatch_and_flow_count_mismatch(tmp_path: Path) -> None:
    root = make_ucf101(tmp_path / "ucf")
    recipe = {"rgb": TINY_FRAMES, "flow": TINY_FRAMES}
    train_list = root / "ucfTrainTestlist" / "trainlist01.txt"
    original = train_list.read_text()
    train_list.write_text(original.replace("v_Archery_g02_c01.avi 2", "v_Archery_g02_c01.avi 1"))
    with pytest.raises(ValueError, match=r"trainlist01\.txt:\d+: label index '1' of 'v_Archery_g02_c01'"):
        build_ucf101(root, cache_dir=tmp_path / "cache", recipe=recipe, progress=False)
    train_list.write_text(original)
    v_dir = root / "flow" / "v" / "v_Archery_g03_c02"
    (v_dir / "000009.jpg").write_bytes((v_dir / "000001.jpg").read_bytes())  # one v frame too many
    with pytest.raises(ValueError, match=r"v_Archery_g03_c02.*3 u frames.*4 v frames"):
        build_ucf101(root, cache_dir=tmp_path / "cache", recipe=recipe, progress=False)


def test_modelnet40_object_missing_a_view(tmp_path: Path) -> None:
    root = make_modelnet40(tmp_path / "mn")
    (root / "chair" / "train" / "chair_0002_007.png").unlink()
    recipe = {"front": TINY_IMAGE, "rear": TINY_IMAGE}
    with pytest.raises(FileNotFoundError, match=r"chair/train/chair_0002.*view 007"):
        build_modelnet40(root, cache_dir=tmp_path / "cache", recipe=recipe, progress=False)
    dataset = build_modelnet40(root, cache_dir=tmp_path / "cache", recipe=recipe, on_missing="skip", progress=False)
    assert dataset_recipe(dataset)["skipped"]["count"] == 1
    assert dataset["train"].num_rows + dataset["validation"].num_rows == 7


def test_bad_builder_arguments(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    with pytest.raises(ValueError, match="on_missing"):
        build_tiny_cremad(root, tmp_path / "cache", on_missing="ignore")
    with pytest.raises(ValueError, match=r"unknown modalities \['video'\]"):
        build_cremad(root, cache_dir=tmp_path / "cache", recipe={"video": {}}, progress=False)
    with pytest.raises(FileNotFoundError, match="root folder"):
        build_cremad(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    dataset = build_tiny_cremad(root, tmp_path / "cache")
    with pytest.raises(ValueError, match="audio recipe is fixed"):
        processor_from_dataset(dataset, overrides={"audio": {"hop_length": 64}})


# -- splits --------------------------------------------------------------------------------


def test_stratified_holdout_is_seeded_stratified_and_grouped() -> None:
    labels = [0] * 10 + [1] * 20 + [2]
    kept, held = stratified_holdout(labels, 0.2, seed=3)
    assert sorted(kept + held) == list(range(31))
    assert Counter(labels[i] for i in held) == {0: 2, 1: 4}  # the singleton class stays in the kept part
    assert stratified_holdout(labels, 0.2, seed=3) == (kept, held)
    assert stratified_holdout(labels, 0.2, seed=4) != (kept, held)
    groups = [f"g{i // 2}" for i in range(31)]  # pairs of consecutive items share a group
    kept, held = stratified_holdout(labels, 0.2, seed=3, groups=groups)
    assert {groups[i] for i in held}.isdisjoint({groups[i] for i in kept})


# -- user datasets -------------------------------------------------------------------------


def test_load_user_dataset_maps_columns_and_carves_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = {
        "wave": [rng.normal(size=(13, 5)).astype(np.float32).tolist() for _ in range(40)],
        "pixels": [rng.random((4, 4)).astype(np.float32).tolist() for _ in range(40)],
        "f1": rng.normal(size=40).tolist(),
        "f2": rng.normal(size=40).tolist(),
        "kind": ["cat", "dog"] * 20,
        "note": ["x"] * 40,
    }
    source = datasets.Dataset.from_dict(table)
    dataset = load_user_dataset(
        source,
        {"audio": "wave", "image": "pixels", "tabular": ["f1", "f2"]},
        label_column="kind",
        processor_modalities=[
            {"name": "audio", "kind": "spectrogram", "num_frames": 8},
            {"name": "image", "kind": "image", "channels": 1, "image_size": None},
            {"name": "tabular", "kind": "vector", "dim": 2},
        ],
    )
    assert list(dataset) == ["train", "validation", "test"]
    assert sum(d.num_rows for d in dataset.values()) == 40
    assert set(dataset["train"].column_names) == {"audio", "image", "tabular", "labels"}
    assert dataset["train"].features["labels"].names == ["cat", "dog"]
    row = dataset["validation"][0]
    assert len(row["tabular"]) == 2
    batch = dataset["train"].with_transform(processor_from_dataset(dataset).eval_transform)[:3]
    assert (
        batch["audio"].shape == (3, 1, 13, 8)
        and batch["image"].shape == (3, 1, 4, 4)
        and batch["tabular"].shape == (3, 2)
    )


def test_load_user_dataset_swaps_names_keeps_int_labels_and_reads_disk(tmp_path: Path) -> None:
    source = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"a": [[1.0]] * 6, "b": [[2.0]] * 6, "y": [0, 2, 0, 2, 0, 2]}),
            "val": datasets.Dataset.from_dict({"a": [[1.0]] * 2, "b": [[2.0]] * 2, "y": [0, 2]}),
            "test": datasets.Dataset.from_dict({"a": [[1.0]] * 2, "b": [[2.0]] * 2, "y": [2, 0]}),
        }
    )
    source.save_to_disk(str(tmp_path / "saved"))
    dataset = load_user_dataset(tmp_path / "saved", {"b": "a", "a": "b"}, label_column="y")
    assert dataset["train"][0]["b"] == [1.0] and dataset["train"][0]["a"] == [2.0]
    assert dataset["test"]["labels"][:2] == [2, 0]  # integer ids keep their meaning
    assert dataset["train"].features["labels"].num_classes == 3
    assert dataset["validation"].num_rows == 2  # "val" was recognised, nothing carved


def test_load_user_dataset_from_parquet_and_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    parquet = tmp_path / "table.parquet"
    datasets.Dataset.from_dict({"x": [[float(i), 1.0] for i in range(20)], "label": ["a", "b"] * 10}).to_parquet(
        str(parquet)
    )
    dataset = load_user_dataset(parquet, {"features": "x"}, label_column="label", cache_dir=tmp_path / "hf")
    assert sum(d.num_rows for d in dataset.values()) == 20
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(folder / f"{i}.png")
    images = load_user_dataset(tmp_path / "images", {"image": "image"}, label_column="label", cache_dir=tmp_path / "hf")
    assert images["train"].features["labels"].names == ["cat", "dog"]
    assert images["test"].num_rows == 10 and images["validation"].num_rows == 2


@pytest.mark.parametrize(
    ("mapping", "label", "message"),
    [
        ({"audio": "sound"}, "labels", r"column 'sound' \(modality 'audio'\).*available columns: \['wave', 'labels'\]"),
        ({"audio": "wave"}, "target", r"label column 'target'.*available columns"),
        ({"labels": "wave"}, "labels", r"modality name 'labels'"),
        ({"a": "wave", "b": "wave"}, "labels", r"mapped to more than one modality"),
        ({}, "labels", r"modality_columns is empty"),
    ],
)
def test_load_user_dataset_bad_columns(mapping: dict, label: str, message: str) -> None:
    source = datasets.Dataset.from_dict({"wave": [[0.0]] * 4, "labels": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=message):
        load_user_dataset(source, mapping, label_column=label)


def test_load_user_dataset_audio_column_is_read_without_torchcodec(tmp_path: Path) -> None:
    paths = [str(write_wav(tmp_path / f"{i}.wav", rate=8000, frequency=300.0 + 50 * i)) for i in range(10)]
    source = datasets.Dataset.from_dict({"speech": paths, "y": [0, 1] * 5}).cast_column("speech", datasets.Audio())
    modalities = [{"name": "audio", **TINY_AUDIO, "kind": "audio"}]
    dataset = load_user_dataset(source, {"audio": "speech"}, label_column="y", processor_modalities=modalities)
    assert dataset["train"].features["audio"].decode is False
    batch = dataset["train"].with_transform(processor_from_dataset(dataset).eval_transform)[:2]
    assert batch["audio"].shape == (2, 1, 33, 32)


def test_processor_from_plain_user_dataset_needs_modalities() -> None:
    source = datasets.Dataset.from_dict({"wave": [[0.0]] * 10, "labels": [0, 1] * 5})
    dataset = load_user_dataset(source, {"audio": "wave"})
    with pytest.raises(ValueError, match="no processor modalities"):
        processor_from_dataset(dataset)
    assert isinstance(
        processor_from_dataset(
            load_user_dataset(source, {"audio": "wave"}, processor_modalities=[{"name": "audio", "kind": "vector"}])
        ),
        DIMMLProcessor,
    )


def test_write_wav_helper_is_read_back(tmp_path: Path) -> None:
    from hf_dimml.processing_dimml import read_wav

    samples, rate = read_wav(write_wav(tmp_path / "a.wav", seconds=0.01, rate=8000))
    assert rate == 8000 and samples.shape == (1, 80)


def test_prepare_script_builds_and_saves_the_processor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hf_dimml.data import prepare as module  # what training_scripts/prepare_dataset.py runs

    root = make_modelnet40(tmp_path / "mn")
    argv = [
        "modelnet40",
        "--root",
        str(root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--processor-out",
        str(tmp_path / "proc"),
    ]
    argv += [
        "--set",
        "front.image_size=16",
        "--set",
        "rear.image_size=[16, 12]",
        "--option",
        "validation_fraction=0.25",
    ]
    assert module.main(argv) == 0
    assert "modelnet40: train 6, validation 2, test 2 rows" in capsys.readouterr().out
    processor = DIMMLProcessor.from_pretrained(tmp_path / "proc")
    assert processor.modality_config("rear")["image_size"] == [16, 12]


def test_user_dataset_from_a_hub_id_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is no local path but looks like a Hub id is loaded with datasets.load_dataset (Hub reachable)."""
    rows = {"x": [[0.0, 1.0], [1.0, 0.0]] * 10, "y": ["a", "b"] * 10}
    asked = []

    def fake_load_dataset(name, cache_dir=None, **kwargs):
        asked.append(name)
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})

    monkeypatch.setattr(builders.datasets, "load_dataset", fake_load_dataset)
    loaded = load_user_dataset("someone/feature-set", {"feats": "x"}, label_column="y")
    assert asked == ["someone/feature-set"]
    assert set(loaded) == {"train", "validation", "test"}
    assert "feats" in loaded["train"].column_names


def test_user_dataset_hub_id_offline_fails_clearly() -> None:
    with pytest.raises(FileNotFoundError, match="no local dataset at .*from the Hugging Face Hub failed"):
        load_user_dataset("someone/not-here-offline", {"feats": "x"})
