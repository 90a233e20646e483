"""One training run from arguments to a shareable folder: the library side of `training_scripts/train.py`.

Flow: dataset (preset loader) -> processor transforms -> model -> DIMMLTrainer (the method's stages, validation for
model selection) -> test split evaluated once -> `output_dir` gets the model, the processor, `training_summary.json`,
the plots and the model card (`README.md`); `--push_to_hub` uploads that folder.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml
from transformers import set_seed

from .arguments import DataArguments, ModelArguments, has_accelerator, parse_arguments
from .checkpointing import prepare_output_dir, resolve_resume_checkpoint
from .configuration_dimml import DIMMLConfig
from .data import MultimodalDataCollator
from .data.presets import DatasetPreset, prepare_dataset
from .methods import get_method
from .metrics import modality_shapley_values
from .modeling_dimml import DIMMLForMultimodalClassification
from .processing_dimml import DIMMLProcessor
from .summary import (
    plot_modality_contribution,
    plot_training_curves,
    print_results,
    strip_prefix,
    write_json_atomic,
)
from .trainer import DIMMLTrainer, modality_subsets

__all__ = ["build_config", "fewer_processes_warning", "load_dataset_dict", "main"]

logger = logging.getLogger("hf_dimml.train")


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
    model_args, data_args, training_args, run_args = parse_arguments(list(script_argv))
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
                "dataset_name": preset.extra.get("dataset_name"),  # a user dataset's own name (folder / file)
                "recipe": {"processor": processor.modalities, "builder": raw["train"].info.description},
                "splits": {name: len(split) for name, split in splits.items()},
            },
            "training": {
                "stage1_epochs": training_args.stage1_epochs,
                "stage2_epochs": training_args.stage2_epochs,
                "learning_rate": training_args.learning_rate,
                "lr_scheduler": (f"StepLR every {training_args.lr_step_epochs} epochs x {training_args.lr_step_gamma}"
                                 if training_args.lr_step_epochs else str(getattr(
                                     training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))),
                "weight_decay": training_args.weight_decay,
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
