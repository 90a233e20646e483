"""Your own data through train.py (issue 15, points 2, 3, 5): a `(C, T)` time-series dataset of variable lengths
(`sequence` kind, 1-D CNN / MLP encoders) trained with the methods, normalisation fitted on the training split and
shipped with the processor (raw features in, the training-time scaling applied), and the card of a user dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.data.presets import model_modalities_from_processor, prepare_dataset
from hf_dimml.model_card import build_model_card, dataset_display_name
from hf_dimml.processing_dimml import DIMMLProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling test module, whatever the import mode

from test_train_datasets import TINY_RUN as BASE_RUN  # noqa: E402
from test_train_datasets import train_script  # noqa: E402

#: One epoch per stage, CPU, no checkpoints in between (later flags win).
TINY_RUN = [*BASE_RUN, "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16"]


def _sensor_table(n: int = 48, seed: int = 0) -> dict[str, list]:
    """Two sensors of variable length: `acc` (3 channels, 20..39 steps, far from zero mean / unit scale) and `gyro`
    (2 channels, 10..19 steps); integer labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    acc, gyro = [], []
    for label in labels:
        t = np.linspace(0, 1, int(rng.integers(20, 40)))
        acc.append((100 + 30 * np.sin(2 * np.pi * (1 + 2 * label) * t)[None] + rng.normal(0, 5, (3, t.size)))
                   .astype(np.float32).tolist())
        gyro.append((rng.normal(label, 1, (2, int(rng.integers(10, 20))))).astype(np.float32).tolist())
    return {"acc": acc, "gyro": gyro, "activity": labels.tolist()}


def _write_config(tmp_path: Path, dataset_path: Path, output_dir: Path, modalities: list[dict], **extra) -> Path:
    config = {"dataset": "user", "dataset_path": str(dataset_path), "dataset_cache_dir": str(tmp_path / "hf-cache"),
              "label_column": "activity", "processor_modalities": modalities, "output_dir": str(output_dir),
              "duc_temperature": 2.0, **extra}
    path = tmp_path / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def sensors(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "my_sensors"
    datasets.Dataset.from_dict(_sensor_table()).save_to_disk(str(path))
    return path


SENSOR_MODALITIES = [
    {"name": "acc", "kind": "sequence", "num_frames": 24, "mean": "train", "std": "train",
     "encoder_kwargs": {"channels": [8, 8], "kernel_size": 3}},
    {"name": "gyro", "kind": "sequence", "time_resize": "crop_pad", "random_crop": True, "encoder": "mlp",
     "encoder_kwargs": {"hidden_sizes": [8]}},
]


@pytest.mark.parametrize("method", ["dimml", "joint", "mla", "dmrnet", "unimodal"])
def test_a_variable_length_time_series_dataset_trains_with_every_method(tmp_path, sensors, method):
    output_dir = tmp_path / f"out-{method}"
    config = _write_config(tmp_path, sensors, output_dir, SENSOR_MODALITIES)
    summary = train_script.main([str(config), "--method", method, *TINY_RUN])
    # Default encoder of a sequence: the 1-D CNN; open sizes come from the first training example and are recorded.
    modalities = {m["name"]: m for m in summary["modalities"]}
    assert modalities["acc"]["kind"] == "sequence" and modalities["acc"]["encoder"] == "cnn1d"
    assert modalities["acc"]["input_shape"] == [3, 24] and modalities["gyro"]["encoder"] == "mlp"
    processor = DIMMLProcessor.from_pretrained(output_dir)
    acc, gyro = (processor.modality_config(name) for name in ("acc", "gyro"))
    assert acc["channels"] == 3 and len(acc["mean"]) == 3 and 90 < acc["mean"][0] < 110 and acc["std"][0] > 5
    assert gyro["channels"] == 2 and gyro["num_frames"] == modalities["gyro"]["input_shape"][1]
    assert gyro["mean"] is None  # not asked for: nothing is applied, and the card says so
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    row = _sensor_table(2, seed=5)
    inputs = processor(acc=row["acc"], gyro=row["gyro"], is_batched=True)
    assert inputs["acc"].shape == (2, 3, 24) and inputs["gyro"].shape == (2, 2, gyro["num_frames"])
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
    with pytest.raises(ValueError, match="modality 'acc': expected 3 channel\\(s\\), got shape \\(2, 30\\)"):
        processor(acc=np.zeros((2, 30)))
    card = (output_dir / "README.md").read_text()
    assert "datasets:\n- my_sensors" in card and "datasets:\n- user" not in card
    assert "`my_sensors`" in card and "**acc + gyro**" in card and "audio-visual" not in card
    assert "| `acc` | standardised per channel: (x - mean) / std with mean [" in card
    assert "| `gyro` | values used as given (no scaling); time axis resized to 1" in card
    assert "random window in training" in card


def test_raw_vector_features_through_the_saved_processor_predict_as_the_scaled_training_features(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    labels = np.arange(n) % 3
    # Raw features on wildly different scales (a sensor in the thousands, one around 1e-3): no scaling in the data.
    scale, offset = np.array([1000.0, 1e-3, 5.0, 1.0]), np.array([5000.0, 0.0, -20.0, 3.0])
    view1 = (rng.normal(size=(n, 4)) + labels[:, None]) * scale + offset
    view2 = rng.normal(size=(n, 3)) + 0.5 * labels[:, None]
    path = tmp_path / "views.parquet"
    datasets.Dataset.from_dict({"view1": view1.tolist(), "view2": view2.tolist(), "activity": labels.tolist()}) \
        .to_parquet(str(path))
    output_dir = tmp_path / "out-views"
    config = _write_config(tmp_path, path, output_dir, [
        {"name": "view1", "kind": "vector", "mean": "train", "std": "train"},
        {"name": "view2", "kind": "vector", "mean": 0.5, "std": 2.0},
    ])
    summary = train_script.main([str(config), *TINY_RUN])
    saved = json.loads((output_dir / "preprocessor_config.json").read_text())["modalities"]
    assert [m["dim"] for m in saved] == [4, 3]  # the inferred size is recorded, not left null
    assert saved[1]["mean"] == [0.5] * 3 and saved[1]["std"] == [2.0] * 3

    # What the model was trained on: the training split scaled with its own statistics.
    _, raw = prepare_dataset("user", dataset_path=path, label_column="activity",
                             cache_dir=tmp_path / "hf-cache", processor_modalities=[{"name": "view1", "kind": "vector"}])
    train = np.asarray(raw["train"]["view1"], dtype=np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(saved[0]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(saved[0]["std"], std, rtol=1e-6)
    assert summary["dataset"]["splits"]["train"] == len(train)

    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    processor = DIMMLProcessor.from_pretrained(output_dir)
    raw_view1, raw_view2 = view1[:8], view2[:8]
    scaled = {"view1": torch.tensor((raw_view1 - mean) / std, dtype=torch.float32),
              "view2": torch.tensor((raw_view2 - 0.5) / 2.0, dtype=torch.float32)}
    with torch.no_grad():
        from_raw = model(**processor(view1=list(raw_view1), view2=list(raw_view2), is_batched=True)).logits
        from_scaled = model(**scaled).logits
    torch.testing.assert_close(from_raw, from_scaled, rtol=1e-4, atol=1e-4)
    assert torch.equal(from_raw.argmax(-1), from_scaled.argmax(-1))
    with pytest.raises(ValueError, match="modality 'view1': expected a vector of length dim=4, got length 5"):
        processor(view1=[0.0] * 5)
    card = (output_dir / "README.md").read_text()
    assert "| `view1` | standardised per feature: (x - mean) / std with mean [" in card
    assert "# view1_sample = a (4,) array of raw (unscaled) features" in card


def test_default_encoders_per_kind_and_open_sequence_sizes():
    configs = [{"name": "series", "kind": "sequence"}, {"name": "feats", "kind": "vector"},
               {"name": "pic", "kind": "image", "channels": 1, "image_size": 8}]
    with pytest.raises(ValueError, match="'series' \\(set 'channels, num_frames'\\), 'feats' \\(set 'dim'\\)"):
        model_modalities_from_processor(configs)
    example = {"series": np.zeros((2, 17)), "feats": [1.0, 2.0, 3.0]}
    entries = model_modalities_from_processor(configs, example=example)
    assert [(e["kind"], e["encoder"], e["input_shape"]) for e in entries] == [
        ("sequence", "cnn1d", [2, 17]), ("vector", "mlp", [3]), ("image", "resnet18", [1, 8, 8])]


def test_the_card_names_a_user_dataset_by_its_own_name(tmp_path):
    path = tmp_path / "views_for_name.parquet"
    datasets.Dataset.from_dict({"view1": [[0.0, 1.0]] * 20, "activity": [0, 1] * 10}).to_parquet(str(path))
    preset, _ = prepare_dataset("user", dataset_path=path, label_column="activity", cache_dir=tmp_path / "cache",
                                processor_modalities=[{"name": "view1", "kind": "vector"}])
    assert preset.extra["dataset_name"] == "views_for_name.parquet"  # what train.py writes as dataset.dataset_name
    summary = {"method": "joint", "dataset": {"name": "user", "dataset_name": "HAR sensors", "description": "x"},
               "modalities": [{"name": "acc", "kind": "sequence", "encoder": "cnn1d", "input_shape": [3, 24]},
                              {"name": "gyro", "kind": "sequence", "encoder": "mlp", "input_shape": [2, 16]}]}
    assert dataset_display_name(summary["dataset"]) == "HAR sensors"
    card = str(build_model_card(summary))
    assert "datasets:\n- HAR sensors" in card and "**acc + gyro**" in card and "audio-visual" not in card
    older = {"name": "user", "description": "user dataset my data.csv (label column 'y')"}  # no dataset_name yet
    assert dataset_display_name(older) == "my data.csv"
    assert dataset_display_name({"name": "cremad", "description": "CREMA-D: ..."}) == "cremad"
