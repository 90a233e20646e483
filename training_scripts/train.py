#!/usr/bin/env python
"""Train a multimodal classifier with DI-MML on a dataset preset, evaluate it and save a shareable checkpoint.

    python training_scripts/train.py --output_dir outputs/dimml-av-digits
    python training_scripts/train.py training_scripts/configs/av_digits_dimml.yaml [--overrides ...]
    accelerate launch training_scripts/train.py training_scripts/configs/av_digits_dimml.yaml

Flow: dataset (preset loader) -> processor transforms -> model -> DIMMLTrainer (stage 1, stage 2, validation for
model selection) -> test split evaluated once -> `output_dir` gets the model, the processor, `training_summary.json`,
`training_curves.png` and the model card (`README.md`); `--push_to_hub` uploads that folder.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml
from transformers import HfArgumentParser, set_seed

from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification
from hf_dimml.checkpointing import prepare_output_dir, resolve_resume_checkpoint
from hf_dimml.data import MultimodalDataCollator
from hf_dimml.data.presets import DatasetPreset, prepare_dataset
from hf_dimml.methods import METHODS, get_method
from hf_dimml.metrics import modality_shapley_values
from hf_dimml.processing_dimml import DIMMLProcessor
from hf_dimml.trainer import DIMMLTrainer, DIMMLTrainingArguments, modality_subsets

logger = logging.getLogger("hf_dimml.train")


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


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, DIMMLTrainingArguments]:
    """CLI flags, optionally after a YAML/JSON file whose keys are the same flags (CLI flags override the file)."""
    return parse_all_arguments(argv)[:3]


def parse_all_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, DIMMLTrainingArguments, RunArguments]:
    """`parse_arguments` plus the `RunArguments`."""
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


def load_dataset_dict(data_args: DataArguments) -> tuple[DatasetPreset, datasets.DatasetDict]:
    """The dataset and its preset as loaded (recipe overrides applied; a user dataset's preset derived from its
    processor configs): the processor is `DIMMLProcessor(preset.processor_modalities)`, the model reads
    `preset.model_modalities`."""
    return prepare_dataset(
        data_args.dataset,
        data_root=data_args.data_root,
        cache_dir=data_args.dataset_cache_dir,
        split_seed=data_args.split_seed,
        recipe_overrides=data_args.recipe_overrides,
        dataset_kwargs=data_args.dataset_kwargs,
        dataset_path=data_args.dataset_path,
        data_format=data_args.data_format,
        label_column=data_args.label_column,
        processor_modalities=data_args.processor_modalities,
        modality_columns=data_args.modality_columns,
        modality_kinds=data_args.modality_kinds,
        validation_fraction=data_args.validation_fraction,
        test_fraction=data_args.test_fraction,
    )


def build_config(model_args: ModelArguments, preset, label_names: list[str]) -> DIMMLConfig:
    modalities = [dict(spec) for spec in preset.model_modalities]
    for override in model_args.encoders or []:
        name, _, encoder = override.partition("=")
        matches = [spec for spec in modalities if spec["name"] == name]
        if not matches or not encoder:
            raise ValueError(f"--encoders {override!r}: expected name=encoder with name in "
                             f"{[s['name'] for s in modalities]}")
        matches[0]["encoder"] = encoder
        if encoder != "mlp":
            matches[0]["encoder_kwargs"] = {}
    return DIMMLConfig(
        modalities=modalities,
        hidden_size=model_args.hidden_size or preset.hidden_size,
        method=model_args.method,
        head_layout=get_method(model_args.method).head_layout,
        logit_temperature=model_args.logit_temperature or preset.logit_temperature,
        dmrnet_latent_size=model_args.dmrnet_latent_size,
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a warning) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots in the output folder (pip install 'hf_dimml[plots]')")
        return None
    return plt


def _save_figure(plt, figure, path: Path) -> None:
    figure.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def plot_training_curves(log_history: list[dict[str, Any]], modality_names: list[str], path: Path,
                         model_selection: dict[str, Any] | None = None) -> bool:
    """Validation accuracy of each head over epochs (the picture of modality competition), with a star where the
    final model's encoders and the rest of the model were taken (`model_selection`, the trainer's summary). False
    without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    evals = [entry for entry in log_history if "eval_accuracy" in entry]
    series = {f"{name} alone": f"eval_accuracy_{name}" for name in modality_names}
    series["fusion head"] = "eval_accuracy_fusion"
    series["weighted prediction"] = "eval_accuracy"
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, key in series.items():
        points = [(entry["epoch"], entry[key]) for entry in evals if key in entry]
        if points:
            (line,) = axis.plot(*zip(*points), marker="o", markersize=3, label=label)
            selected = _selected_epoch(model_selection, key, modality_names)
            marks = [(epoch, value) for epoch, value in points if selected is not None and abs(epoch - selected) < 1e-6]
            if marks:
                axis.plot(*zip(*marks), marker="*", markersize=14, linestyle="none", color=line.get_color(),
                          markeredgecolor="black")
    if model_selection:
        axis.plot([], [], marker="*", markersize=10, linestyle="none", color="gray", markeredgecolor="black",
                  label=f"selected ({model_selection['rule'].replace('_', '-')})")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    _save_figure(plt, figure, path)
    return True


def plot_modality_contribution(shapley: dict[str, float], num_classes: int, path: Path) -> bool:
    """Bar plot of each modality's Shapley value on test accuracy (percentage points above chance). False without
    matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    names = list(shapley)
    values = [100 * shapley[name] for name in names]
    figure, axis = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3))
    bars = axis.bar(names, values, color=[f"C{index}" for index in range(len(names))])
    axis.bar_label(bars, fmt="%.1f")
    axis.margins(y=0.15)  # room for the labels
    axis.set_ylabel("Shapley value (accuracy points)")
    axis.set_title(f"Contribution to test accuracy above chance ({100 / num_classes:.1f} %)", fontsize=9)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.grid(axis="y", alpha=0.3)
    _save_figure(plt, figure, path)
    return True


def _selected_epoch(model_selection: dict[str, Any] | None, key: str, modality_names: list[str]) -> float | None:
    """The epoch the final model took the head behind the curve `key` from (a modality's encoder, or the rest)."""
    if not model_selection:
        return None
    for name in modality_names:
        if key == f"eval_accuracy_{name}":
            return (model_selection.get("encoders") or {}).get(name, {}).get("epoch")
    return (model_selection.get("final") or {}).get("epoch")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(temporary, path)


def strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, Any]:
    """`test_accuracy_subset_audio` -> {"accuracy": ..., "subset_accuracy": {"audio": ...}} (card schema)."""
    result: dict[str, Any] = {"subset_accuracy": {}}
    for key, value in metrics.items():
        if not key.startswith(prefix + "_"):
            continue
        name = key[len(prefix) + 1:]
        if name.startswith("accuracy_subset_"):
            result["subset_accuracy"][name[len("accuracy_subset_"):]] = value
        elif name.startswith(("accuracy", "macro_f1", "loss")):
            result[name] = value
    return result


def launcher_command_line() -> list[str]:
    """The command line of the process that started this one (Linux; empty elsewhere)."""
    try:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def requested_processes(launcher: list[str]) -> int | None:
    """How many processes an `accelerate launch` command line asks for (`--num_processes`, else its config file's
    `num_processes`); None for any other launcher."""
    if "launch" not in " ".join(launcher) or not any("accelerate" in part for part in launcher[:3]):
        return None
    values = {}
    for index, part in enumerate(launcher):
        key, sep, value = part.partition("=")
        if key in ("--num_processes", "--config_file"):
            values[key] = value if sep else (launcher[index + 1] if index + 1 < len(launcher) else "")
    try:
        if "--num_processes" in values:
            return int(values["--num_processes"])
        if "--config_file" in values:
            return int((yaml.safe_load(Path(values["--config_file"]).read_text()) or {}).get("num_processes") or 1)
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        pass
    return None


def fewer_processes_warning(world_size: int, launcher: list[str], script_argv: list[str]) -> str | None:
    """A warning with the command that works when `accelerate launch` asked for more processes than started (with
    `--num_processes N` but no multi-process mode, e.g. `--cpu`, it silently starts one; docs/design.md §7)."""
    asked = requested_processes(launcher)
    if asked is None or asked <= world_size:
        return None
    command = shlex.join(script_argv)
    prefix = "" if has_accelerator() else "OMP_NUM_THREADS=1 "
    return (
        f"`accelerate launch` was asked for {asked} processes but started {world_size}: this run trains alone. "
        f"Stop it and start {asked} processes with\n    {prefix}accelerate launch --multi_gpu --num_processes {asked} "
        f"--num_machines 1 --mixed_precision no --dynamo_backend no {command}\nor\n    {prefix}torchrun --standalone "
        f"--nproc_per_node {asked} {command}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    script_argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args, run_args = parse_all_arguments(list(script_argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    warning = fewer_processes_warning(training_args.world_size, launcher_command_line(), [sys.argv[0], *script_argv])
    if warning:
        logger.warning(warning)
    # `true` / `last`: the last complete checkpoint of output_dir (the Trainer itself only takes a path).
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir)
    with training_args.main_process_first(local=True, desc="checking the output folder"):
        removed = prepare_output_dir(training_args.output_dir, training_args.resume_from_checkpoint,
                                     run_args.overwrite_output_dir, remove=training_args.local_process_index == 0)
    if removed:
        logger.info("removed from %s: %s", training_args.output_dir, ", ".join(removed))
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    datasets.utils.logging.set_verbosity(training_args.get_process_log_level())
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, by hf_dimml.hub
    if push_to_hub and not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name")  # before training, not after it
    if get_method(model_args.method).num_stages == 1 and training_args.stage2_epochs:
        # One-stage methods: the encoders get the same stage1_epochs budget as DI-MML's stage 1.
        training_args.stage2_epochs = 0
        training_args.num_train_epochs = training_args.stage1_epochs
    set_seed(training_args.seed)
    if torch.cuda.is_available() and not training_args.full_determinism:
        # The processor gives every batch the same shapes: cuDNN benchmarks its kernels once per shape and keeps
        # the fastest (timm's train.py does the same). full_determinism turns it back off in the Trainer.
        torch.backends.cudnn.benchmark = True

    preset, raw = load_dataset_dict(data_args)  # preset as loaded: recipe overrides applied, user modalities derived
    missing_splits = {"train", "validation", "test"} - set(raw)
    if missing_splits:
        raise ValueError(f"dataset {data_args.dataset!r} lacks split(s) {sorted(missing_splits)}")
    if data_args.max_train_samples:
        raw["train"] = raw["train"].select(range(min(data_args.max_train_samples, len(raw["train"]))))
    label_names = raw["train"].features["labels"].names

    processor = DIMMLProcessor(modalities=preset.processor_modalities)
    config = build_config(model_args, preset, label_names)
    if training_args.duc_temperature is None:
        training_args.duc_temperature = preset.duc_temperature  # the reference's temperature for this dataset
    model = DIMMLForMultimodalClassification(config)
    keep = [*config.modality_names, "labels"]
    splits = {
        name: raw[name].select_columns(keep).with_transform(processor.make_transform(train=name == "train"))
        for name in ("train", "validation", "test")
    }

    trainer = DIMMLTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=MultimodalDataCollator(config.modality_names),
        processing_class=processor,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # model + processor (processing_class) into output_dir
    trainer.log_metrics("train", train_result.metrics)

    validation_metrics = trainer.evaluate(splits["validation"], metric_key_prefix="validation")
    test_metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")  # reported once, never selected on
    trainer.log_metrics("validation", validation_metrics)
    trainer.log_metrics("test", test_metrics)

    summary: dict[str, Any] = {}
    push_error = None
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        metrics = {"test": strip_prefix(test_metrics, "test"),
                   "validation": strip_prefix(validation_metrics, "validation")}
        for split_metrics in metrics.values():
            # Each modality's Shapley value on accuracy over the modality subsets (empty set: chance).
            split_metrics["modality_shapley"] = modality_shapley_values(
                split_metrics["subset_accuracy"], config.modality_names, config.num_labels)
        contribution_plotted = plot_modality_contribution(
            metrics["test"]["modality_shapley"], config.num_labels, output_dir / "modality_contribution.png")
        model_selection = trainer.model_selection_summary()
        plotted = plot_training_curves(trainer.state.log_history, config.modality_names,
                                       output_dir / "training_curves.png", model_selection)
        summary = {
            "method": config.method,
            "method_hyperparameters": get_method(config.method).hyperparameters(training_args, config),
            "modalities": [
                {key: spec[key] for key in ("name", "kind", "encoder", "input_shape")} for spec in config.modalities
            ],
            "hidden_size": config.hidden_size,
            "dataset": {
                "name": data_args.dataset,
                "description": preset.description,
                "recipe": {"processor": processor.modalities, "builder": raw["train"].info.description},
                "splits": {name: len(split) for name, split in splits.items()},
            },
            "training": {
                "stage1_epochs": training_args.stage1_epochs,
                "stage2_epochs": training_args.stage2_epochs,
                "learning_rate": training_args.learning_rate,
                "optimizer": getattr(training_args.optim, "value", str(training_args.optim)),
                "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
                "seed": training_args.seed,
                "mixed_precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no",
                "num_processes": training_args.world_size,
                "train_runtime_s": train_result.metrics.get("train_runtime"),
            },
            "model_selection": model_selection,
            "labels": label_names,
            "subsets": ["+".join(subset) for subset in modality_subsets(config.modality_names)],
            "metrics": metrics,
            "plot": "training_curves.png" if plotted else None,
            "contribution_plot": "modality_contribution.png" if contribution_plotted else None,
            "repo_id": training_args.hub_model_id,
        }
        write_json_atomic(output_dir / "training_summary.json", summary)
        from hf_dimml.model_card import write_model_card

        write_model_card(output_dir)
        print_results(summary, config.modality_names)
        if push_to_hub:
            from hf_dimml.hub import push_to_hub as push_folder

            try:
                url = push_folder(output_dir, training_args.hub_model_id, token=training_args.hub_token,
                                  private=training_args.hub_private_repo)
                logger.info("pushed to %s", url)
            except (ValueError, OSError, RuntimeError) as error:  # no token, unreachable, refused, offline, HTTP
                push_error = (
                    f"error: could not push to {training_args.hub_model_id}: {error}\n"
                    f"The trained model is saved in {output_dir}; push it later with: python "
                    f"training_scripts/push_to_hub.py --output_dir {output_dir} --repo_id {training_args.hub_model_id}"
                )
    trainer.accelerator.wait_for_everyone()
    if push_error:
        raise SystemExit(push_error)  # exit status 1, after every process is done
    return summary


def print_results(summary: dict[str, Any], modality_names: list[str]) -> None:
    test = summary["metrics"]["test"]
    rows = [(f"full prediction ({summary['method']})", test.get("accuracy"))]
    if get_method(summary["method"]).num_stages == 2:
        # None: the selected checkpoint is from stage 1, so the fusion head is not used
        rows.append(("fusion head", test.get("accuracy_fusion")))
    rows += [(f"{name} alone", test.get(f"accuracy_{name}")) for name in modality_names]
    rows += [(f"subset {subset}", value) for subset, value in test["subset_accuracy"].items()]
    width = max(len(name) for name, _ in rows)
    print(f"\nTest accuracy ({summary['dataset']['name']}, {summary['dataset']['splits']['test']} samples), "
          f"macro-F1 {test.get('macro_f1', float('nan')):.4f}")
    for name, value in rows:
        shown = f"{value:.4f}" if value is not None else "not used (best checkpoint is from stage 1)"
        print(f"  {name:<{width}}  {shown}")
    selection = summary.get("model_selection") or {}
    if selection:
        parts = [f"{name} encoder from epoch {entry['epoch']:g}" for name, entry in selection["encoders"].items()]
        if selection.get("final"):
            parts.append(f"the rest from epoch {selection['final']['epoch']:g} (stage {selection['final']['stage']})")
        print(f"Model selection ({selection['rule']}): " + ", ".join(parts))


if __name__ == "__main__":
    main()
