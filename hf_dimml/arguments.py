"""The training script's arguments: dataclasses in the transformers / trl style, parsed from a YAML or JSON config
file and command-line flags (flags override the file).

    model_args, data_args, training_args, run_args = parse_arguments(["config.yaml", "--seed", "1"])

`DIMMLTrainingArguments` (hf_dimml.trainer) holds the training knobs, every method's included; `ModelArguments` the
model, `DataArguments` the dataset, `RunArguments` how a run treats its output folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser

from .methods import METHODS
from .trainer import DIMMLTrainingArguments

__all__ = ["DataArguments", "ModelArguments", "RunArguments", "has_accelerator", "parse_arguments"]


@dataclass
class ModelArguments:
    """The model: the method and its encoders (defaults come from the dataset preset). The methods' training knobs
    (`--duc_weight`, `--mla_alpha_start`, ...) are `DIMMLTrainingArguments` fields."""

    method: str = field(
        default="dimml",
        metadata={"help": f"Training method: one of {', '.join(METHODS)} (hf_dimml.methods). The one-stage methods "
                          "train the encoders for stage1_epochs (stage2_epochs is set to 0)."},
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Common feature size d (default: preset's)."})
    encoders: list[str] | None = field(
        default=None, metadata={"help": "Override encoders as name=timm_model_or_mlp, e.g. audio=resnet18."}
    )
    logit_temperature: float | None = field(default=None, metadata={
        "help": "DI-MML inference: temperature T of the certainty-aware weighting (default: the preset's)."})
    dmrnet_latent_size: int | None = field(default=None, metadata={
        "help": "DMRNet: size of the Gaussian embedding (default: hidden_size)."})


@dataclass
class DataArguments:
    """The data: a preset name and its knobs, or `user` and the columns of your own dataset (docs/datasets.md).

    Structured values (`recipe_overrides`, `dataset_kwargs`, `processor_modalities`) are JSON/YAML text on the command
    line and plain mappings / lists in a config file; `__post_init__` turns them into Python objects.
    """

    dataset: str = field(default="av_digits", metadata={
        "help": "Dataset preset (av_digits, cremad, ave, kinetics_sounds, ucf101, modelnet40; see "
                "hf_dimml.data.presets) or `user` for your own data (--dataset_path and the modalities)."})
    data_root: str | None = field(default=None, metadata={"help": "Local folder of a community-layout dataset."})
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "Where built datasets are cached."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the splits carved out of train."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    recipe_overrides: str | None = field(default=None, metadata={
        "help": "Processor-config overrides per modality, e.g. '{\"audio\": {\"duration\": 2.0}}' (community "
                "datasets: passed to the builder as its recipe, so the stored spectrograms follow it)."})
    dataset_kwargs: str | None = field(default=None, metadata={
        "help": "Other keyword arguments of the dataset loader as a mapping, e.g. '{\"on_missing\": \"skip\"}'."})
    dataset_path: str | None = field(default=None, metadata={
        "help": "dataset user: a save_to_disk folder, a parquet / csv / json(l) file or a data folder."})
    data_format: str | None = field(default=None, metadata={
        "help": "dataset user: force the datasets builder of dataset_path (parquet, csv, json, imagefolder, ...)."})
    label_column: str = field(default="labels", metadata={"help": "dataset user: the column holding the class."})
    processor_modalities: str | None = field(default=None, metadata={
        "help": "dataset user: list of processor modality configs (a YAML list in the config file), each "
                "optionally with column / columns (source columns, default: the name) and encoder / encoder_kwargs."})
    modality_columns: list[str] | None = field(default=None, metadata={
        "help": "dataset user: name=column, or name=col1,col2,... (numeric columns stacked into one vector)."})
    modality_kinds: list[str] | None = field(default=None, metadata={
        "help": "dataset user: name=kind (audio, spectrogram, image, frames, vector) for modalities without a "
                "processor config (default parameters of the kind)."})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "dataset user: fraction of train held out as validation when there is no validation split."})
    test_fraction: float = field(default=0.1, metadata={
        "help": "dataset user: fraction of train held out as test when there is no test split."})

    def __post_init__(self) -> None:
        self.recipe_overrides = _structured(self.recipe_overrides, "recipe_overrides", dict)
        self.dataset_kwargs = _structured(self.dataset_kwargs, "dataset_kwargs", dict)
        self.processor_modalities = _structured(self.processor_modalities, "processor_modalities", list)
        self.modality_columns = _pairs(self.modality_columns, "modality_columns", split_values=True)
        self.modality_kinds = _pairs(self.modality_kinds, "modality_kinds", split_values=False)


def _structured(value: Any, name: str, expected: type) -> Any:
    """JSON / YAML text (CLI, or a config file's mapping passed on as JSON) -> a dict or list."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)  # YAML is a superset of JSON
        except yaml.YAMLError as err:
            raise ValueError(f"--{name}: not valid JSON/YAML: {err}") from err
    if value is not None and not isinstance(value, expected):
        raise ValueError(f"--{name} must be a {'mapping' if expected is dict else 'list'}, got {value!r}")
    return value


def _pairs(value: Any, name: str, split_values: bool) -> dict[str, Any] | None:
    """`["a=x", "b=y,z"]` (CLI) or one JSON mapping (a config file's mapping) -> {"a": "x", "b": ["y", "z"]}."""
    if value is None or isinstance(value, dict):
        return value
    if len(value) == 1 and str(value[0]).lstrip().startswith("{"):
        return _structured(value[0], name, dict)
    result: dict[str, Any] = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        if not sep or not key or not text:
            raise ValueError(f"--{name} {item!r}: expected name=value")
        result[key] = text.split(",") if split_values and "," in text else text
    return result


@dataclass
class RunArguments:
    """How the run treats an output folder that already holds a run (`--resume_from_checkpoint` continues it)."""

    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Delete the files of the run --output_dir holds (checkpoints, weights, trainer state, summary, card) "
                "and start afresh; without it (or --resume_from_checkpoint) such a folder is refused."})


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, DIMMLTrainingArguments, RunArguments]:
    """CLI flags, optionally after a YAML/JSON file whose keys are the same flags (CLI flags override the file)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, DIMMLTrainingArguments, RunArguments))
    file_args: list[str] = []
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        path = Path(argv.pop(0))
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a mapping of argument names to values")
        for key, value in values.items():
            file_args.append(f"--{key}")
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
                file_args.append(json.dumps(value))  # structured (e.g. processor_modalities): parsed by the dataclass
            elif isinstance(value, list):
                file_args.extend(str(item) for item in value)
            elif isinstance(value, bool):
                file_args.append("true" if value else "false")
            elif value is not None:
                file_args.append(str(value))
    if "--output_dir" not in file_args + argv:
        argv = [*argv, "--output_dir", "outputs/dimml-av-digits"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "--use_cpu" not in file_args + argv and not has_accelerator():
        # Launched as several processes on a machine without an accelerator: Accelerate only builds a CPU (gloo)
        # process group when told use_cpu; otherwise every process would silently train alone.
        argv = [*argv, "--use_cpu", "true"]
    return parser.parse_args_into_dataclasses(args=file_args + argv)


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        torch.backends.mps.is_available())
