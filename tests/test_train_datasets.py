"""train.py on every kind of dataset: the presets, a community-layout folder (CREMA-D) and user datasets (save_to_disk,
parquet; config file and CLI flags), end to end with tiny encoders, plus the errors a wrong config gets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the layouts_ helpers, whatever the import mode

from layouts_writers import TINY_AUDIO, TINY_FRAMES, make_cremad  # noqa: E402

from hf_dimml import DIMMLForMultimodalClassification  # noqa: E402
from hf_dimml.data.builders import DEFAULT_MODALITIES  # noqa: E402
from hf_dimml.data.presets import (  # noqa: E402
    PRESETS,
    get_preset,
    load_preset_dataset,
    model_modalities_from_processor,
    parse_user_modalities,
    prepare_dataset,
)
from hf_dimml.processing_dimml import DIMMLProcessor, resolve_modality_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training_scripts" / "configs"


from hf_dimml import run as train_script  # noqa: E402  (what training_scripts/train.py runs)

#: Flags of a tiny two-stage run: one epoch each, no checkpoints kept in between, CPU.
TINY_RUN = [
    "--stage1_epochs", "1", "--stage2_epochs", "1", "--duc_start_epoch", "0", "--hidden_size", "8",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--learning_rate", "0.01",
    "--eval_strategy", "epoch", "--save_strategy", "no", "--load_best_model_at_end", "false",
    "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--use_cpu", "true",
    "--logging_steps", "1",
]


def _check_checkpoint(output_dir: Path, summary: dict, raw_row: dict) -> DIMMLForMultimodalClassification:
    """The saved folder holds a loadable model + processor that predict a raw row; the summary is on disk."""
    on_disk = json.loads((output_dir / "training_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert (output_dir / "README.md").is_file()
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    processor = DIMMLProcessor.from_pretrained(output_dir)
    assert processor.modality_names == model.config.modality_names
    inputs = processor(**{name: [raw_row[name]] for name in processor.modality_names}, is_batched=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, model.config.num_labels) and torch.isfinite(logits).all()
    return model


# --- presets ---------------------------------------------------------------------------------------------------


def test_presets_take_processor_configs_from_the_builders_and_derive_the_model():
    expected = {  # (DUC tau, logit T), docs/design.md §2; Kinetics-Sounds: our choice
        "cremad": (50.0, 1.0), "ave": (10.0, 3.0), "kinetics_sounds": (10.0, 1.0), "ucf101": (10.0, 1.0),
        "modelnet40": (50.0, 3.0),
    }
    kinds = {"audio": "spectrogram", "frames": "frames", "image": "image", "vector": "vector"}
    for name, temperatures in expected.items():
        preset = get_preset(name)
        assert (preset.duc_temperature, preset.logit_temperature) == temperatures
        assert preset.processor_modalities == [resolve_modality_config(m) for m in DEFAULT_MODALITIES[name]]
        processor = DIMMLProcessor(modalities=preset.processor_modalities)
        for cfg, entry in zip(processor.modalities, preset.model_modalities, strict=True):
            assert entry["name"] == cfg["name"] and entry["kind"] == kinds[cfg["kind"]]
            assert entry["encoder"] == "resnet18" and tuple(entry["input_shape"]) == processor.output_shape(cfg["name"])
        assert preset.hidden_size == 512
    assert get_preset("cremad").model_modalities[0]["input_shape"] == [1, 257, 188]  # 3 s at 22.05 kHz, hop 353
    assert get_preset("ucf101").model_modalities[1]["input_shape"] == [10, 2, 224, 224]  # a stack of 10 flow frames (u, v)
    av_digits = get_preset("av_digits")  # unchanged: MLP encoders on MFCCs and 8x8 images
    assert [m["input_shape"] for m in av_digits.model_modalities] == [[1, 13, 20], [1, 8, 8]]
    assert all(m["encoder"] == "mlp" and m["encoder_kwargs"] == {"hidden_sizes": [256]}
               for m in av_digits.model_modalities)
    assert set(PRESETS) == {"av_digits", *expected}
    with pytest.raises(ValueError, match="unknown dataset preset 'cremd'.*'user'"):
        get_preset("cremd")


def test_model_modalities_from_processor_open_shapes_and_encoders():
    configs = [{"name": "tab", "kind": "vector"}, {"name": "pic", "kind": "image", "image_size": None, "channels": 1}]
    with pytest.raises(ValueError, match="'tab' \\(set 'dim'\\), 'pic' \\(set 'image_size'\\)"):
        model_modalities_from_processor(configs)
    example = {"tab": [0.5, 1.0, 2.0, 3.0], "pic": np.zeros((5, 7), dtype=np.uint8)}
    entries = model_modalities_from_processor(configs, example=example, encoders={"pic": "test_resnet"})
    assert entries == [
        {"name": "tab", "kind": "vector", "encoder": "mlp", "input_shape": [4]},
        {"name": "pic", "kind": "image", "encoder": "test_resnet", "input_shape": [1, 5, 7]},
    ]
    with pytest.raises(ValueError, match="unknown modalities \\['nope'\\]"):
        model_modalities_from_processor(configs, example=example, encoders={"nope": "mlp"})


def test_load_preset_dataset_needs_a_data_root_for_community_datasets(tmp_path):
    with pytest.raises(ValueError, match="'ucf101' is read from a local folder.*--data_root"):
        load_preset_dataset("ucf101")
    with pytest.raises(FileNotFoundError, match="ave root folder"):
        load_preset_dataset("ave", tmp_path / "absent", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown dataset preset"):
        load_preset_dataset("imagenet", tmp_path)


def test_parse_user_modalities_columns_kinds_and_errors():
    columns, configs, encoders = parse_user_modalities(
        [{"name": "tab", "kind": "vector", "columns": ["x", "y"], "encoder_kwargs": {"hidden_sizes": [4]}},
         {"name": "pic", "kind": "image", "column": "img", "image_size": 8, "encoder": "test_resnet"}],
        modality_kinds={"extra": "vector"},
    )
    assert columns == {"tab": ["x", "y"], "pic": "img", "extra": "extra"}
    assert [c["name"] for c in configs] == ["tab", "pic", "extra"] and configs[1]["image_size"] == [8, 8]
    assert encoders == {"tab": {"encoder_kwargs": {"hidden_sizes": [4]}}, "pic": {"encoder": "test_resnet"}}
    with pytest.raises(ValueError, match="needs its modalities"):
        parse_user_modalities()
    with pytest.raises(ValueError, match="names modality 'ghost'"):
        parse_user_modalities(modality_kinds={"a": "vector"}, modality_columns={"ghost": "g"})
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['colum'\\]"):  # a misspelt key is not ignored
        parse_user_modalities([{"name": "a", "kind": "vector", "colum": "x"}])
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_user_modalities(modality_kinds={"a": "table"})


def test_example_configs_parse_and_match_the_presets():
    for name in ("cremad", "ave", "kinetics_sounds", "ucf101", "modelnet40"):
        model_args, data_args, training_args, _ = train_script.parse_arguments(
            [str(CONFIGS / f"{name}_dimml.yaml"), "--output_dir", "unused", "--use_cpu", "true"])
        preset = get_preset(name)
        assert data_args.dataset == name and data_args.data_root
        assert training_args.duc_temperature == preset.duc_temperature
        assert model_args.logit_temperature == preset.logit_temperature
        assert model_args.hidden_size == 512 and training_args.lr_step_epochs == 70
    _, data_args, _, _ = train_script.parse_arguments(
        [str(CONFIGS / "user_dataset_example.yaml"), "--output_dir", "unused", "--use_cpu", "true"])
    columns, configs, encoders = parse_user_modalities(data_args.processor_modalities)
    assert columns == {"tabular": ["age", "income", "score"], "embedding": "text_embedding", "photo": "image"}
    assert [c["kind"] for c in configs] == ["vector", "vector", "image"]
    assert encoders["photo"] == {"encoder": "resnet18"}


def test_data_arguments_parse_structured_values_from_the_command_line():
    _, data_args, _, _ = train_script.parse_arguments([
        "--dataset", "user", "--dataset_path", "x.parquet", "--output_dir", "unused", "--use_cpu", "true",
        "--modality_columns", "tab=a,b,c", "pic=img", "--modality_kinds", "tab=vector", "pic=image",
        "--recipe_overrides", '{"pic": {"image_size": 16}}', "--processor_modalities", "[{name: z, kind: vector}]",
    ])
    assert data_args.modality_columns == {"tab": ["a", "b", "c"], "pic": "img"}
    assert data_args.modality_kinds == {"tab": "vector", "pic": "image"}
    assert data_args.recipe_overrides == {"pic": {"image_size": 16}}
    assert data_args.processor_modalities == [{"name": "z", "kind": "vector"}]
    with pytest.raises(ValueError, match="--modality_kinds 'tab': expected name=value"):
        train_script.parse_arguments(["--output_dir", "unused", "--modality_kinds", "tab"])
    with pytest.raises(ValueError, match="--recipe_overrides must be a mapping"):
        train_script.parse_arguments(["--output_dir", "unused", "--recipe_overrides", "[1, 2]"])


# --- end to end ------------------------------------------------------------------------------------------------


def test_train_on_a_cremad_folder_end_to_end(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D", train_per_label=3)
    output_dir = tmp_path / "out-cremad"
    overrides = {"audio": TINY_AUDIO, "visual": {**TINY_FRAMES, "random_resized_crop": [0.5, 1.0]}}
    summary = train_script.main([
        "--dataset", "cremad", "--data_root", str(root), "--dataset_cache_dir", str(tmp_path / "cache"),
        "--recipe_overrides", json.dumps(overrides), "--encoders", "audio=test_resnet", "visual=test_resnet",
        "--output_dir", str(output_dir), *TINY_RUN,
    ])
    dataset = summary["dataset"]
    assert dataset["name"] == "cremad" and dataset["splits"]["test"] == 3
    processor_recipe = {m["name"]: m for m in dataset["recipe"]["processor"]}
    assert processor_recipe["audio"]["duration"] == TINY_AUDIO["duration"]
    assert processor_recipe["audio"]["n_fft"] == TINY_AUDIO["n_fft"] and processor_recipe["visual"]["num_frames"] == 2
    builder_recipe = json.loads(dataset["recipe"]["builder"])
    assert builder_recipe["dataset"] == "cremad" and builder_recipe["modalities"] == dataset["recipe"]["processor"]
    assert summary["method_hyperparameters"]["duc_temperature"] == 50.0  # the preset's reference values
    assert summary["method_hyperparameters"]["logit_temperature"] == 1.0
    assert {m["name"]: m["input_shape"] for m in summary["modalities"]} == {"audio": [1, 33, 32],
                                                                             "visual": [2, 3, 16, 16]}
    row = datasets.load_from_disk(str(next((tmp_path / "cache").iterdir())))["test"][0]
    model = _check_checkpoint(output_dir, summary, row)
    assert model.config.modalities[0]["encoder"] == "test_resnet" and model.config.id2label[0] == "NEU"


def _vector_table(n: int = 60, seed: int = 0) -> dict[str, list]:
    """Two vector modalities: `emb` (a list column, informative) and `f0..f2` (scalar columns); string labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    emb = rng.normal(size=(n, 5)) + labels[:, None]
    scalars = rng.normal(size=(n, 3)) + 0.5 * labels[:, None]
    return {"emb": emb.astype(np.float32).tolist(), "f0": scalars[:, 0].tolist(), "f1": scalars[:, 1].tolist(),
            "f2": scalars[:, 2].tolist(), "label": [["cat", "dog", "eel"][i] for i in labels],
            "note": ["x"] * n}


def _user_config(tmp_path: Path, dataset_path: Path, output_dir: Path, **extra) -> Path:
    config = {
        "dataset": "user",
        "dataset_path": str(dataset_path),
        "dataset_cache_dir": str(tmp_path / "hf-cache"),
        "label_column": "label",
        "processor_modalities": [
            {"name": "emb", "kind": "vector", "encoder_kwargs": {"hidden_sizes": [16]}},
            {"name": "stats", "kind": "vector", "columns": ["f0", "f1", "f2"], "dim": 3},
        ],
        "output_dir": str(output_dir),
        "duc_temperature": 2.0,
        **extra,
    }
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("storage", ["save_to_disk", "parquet"])
def test_train_on_a_user_dataset_from_a_config_file(tmp_path, storage):
    table = datasets.Dataset.from_dict(_vector_table())
    if storage == "save_to_disk":
        dataset_path = tmp_path / "my_data"
        table.save_to_disk(str(dataset_path))
    else:
        dataset_path = tmp_path / "my_data.parquet"
        table.to_parquet(str(dataset_path))
    output_dir = tmp_path / f"out-{storage}"
    summary = train_script.main([str(_user_config(tmp_path, dataset_path, output_dir)), *TINY_RUN])
    assert summary["dataset"]["name"] == "user" and summary["labels"] == ["cat", "dog", "eel"]
    assert sum(summary["dataset"]["splits"].values()) == 60 and summary["dataset"]["splits"]["test"] == 6
    assert summary["modalities"] == [
        {"name": "emb", "kind": "vector", "encoder": "mlp", "input_shape": [5]},  # derived from the data
        {"name": "stats", "kind": "vector", "encoder": "mlp", "input_shape": [3]},
    ]
    assert summary["method_hyperparameters"]["duc_temperature"] == 2.0  # the config's, not the default
    builder_recipe = json.loads(summary["dataset"]["recipe"]["builder"])
    assert builder_recipe["modality_columns"] == {"emb": "emb", "stats": ["f0", "f1", "f2"]}
    assert builder_recipe["modalities"] == summary["dataset"]["recipe"]["processor"]
    model = _check_checkpoint(output_dir, summary, {"emb": [0.0] * 5, "stats": [0.1, 0.2, 0.3]})
    assert model.config.modalities[0]["encoder_kwargs"] == {"hidden_sizes": [16]}


def test_train_on_a_parquet_user_dataset_with_an_image_column_from_flags(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    n = 24
    labels = [i % 2 for i in range(n)]
    images = [Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) // (1 + y)) for y in labels]
    table = datasets.Dataset.from_dict(
        {"img": images, "v0": rng.normal(size=n).tolist(), "v1": rng.normal(size=n).tolist(), "y": labels},
        features=datasets.Features({"img": datasets.Image(), "v0": datasets.Value("float64"),
                                    "v1": datasets.Value("float64"), "y": datasets.Value("int64")}),
    )
    path = tmp_path / "pictures.parquet"
    table.to_parquet(str(path))
    output_dir = tmp_path / "out-image"
    summary = train_script.main([
        "--dataset", "user", "--dataset_path", str(path), "--dataset_cache_dir", str(tmp_path / "hf-cache"),
        "--label_column", "y", "--modality_kinds", "photo=image", "feats=vector",
        "--modality_columns", "photo=img", "feats=v0,v1",
        "--recipe_overrides", '{photo: {image_size: 8, channels: 3}}', "--encoders", "photo=test_resnet",
        "--output_dir", str(output_dir), *TINY_RUN,
    ])
    assert {m["name"]: (m["encoder"], m["input_shape"]) for m in summary["modalities"]} == {
        "photo": ("test_resnet", [3, 8, 8]), "feats": ("mlp", [2])}
    assert summary["labels"] == ["0", "1"]
    _check_checkpoint(output_dir, summary, {"photo": images[0], "feats": [0.3, -0.2]})


# --- bad input -------------------------------------------------------------------------------------------------


def test_user_config_naming_an_absent_column_is_a_clear_error(tmp_path):
    dataset_path = tmp_path / "my_data"
    datasets.Dataset.from_dict(_vector_table(12)).save_to_disk(str(dataset_path))
    config = _user_config(tmp_path, dataset_path, tmp_path / "never")
    values = yaml.safe_load(config.read_text())
    values["processor_modalities"][1]["columns"] = ["f0", "f_missing", "f2"]
    config.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match="column 'f_missing' \\(modality 'stats'\\) is not in split 'train'.*'f1'"):
        train_script.main([str(config), *TINY_RUN])
    values["label_column"] = "kind"
    values["processor_modalities"][1]["columns"] = ["f0", "f1", "f2"]
    config.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match="label column 'kind' is not in split 'train'"):
        train_script.main([str(config), *TINY_RUN])
    assert not (tmp_path / "never").exists()


def test_dataset_arguments_that_do_not_fit_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="'cremad' is read from a local folder"):
        prepare_dataset("cremad")
    with pytest.raises(ValueError, match="describe a user dataset: use --dataset user"):
        prepare_dataset("cremad", data_root=tmp_path, dataset_path=tmp_path)
    with pytest.raises(ValueError, match="dataset 'user' needs dataset_path"):
        prepare_dataset("user", modality_kinds={"a": "vector"})
    root = make_cremad(tmp_path / "CREMA-D", train_per_label=2)
    with pytest.raises(ValueError, match="recipe names unknown modalities \\['video'\\]"):
        prepare_dataset("cremad", data_root=root, cache_dir=tmp_path / "cache", recipe_overrides={"video": {}})
