"""Model cards for trained hf_dimml checkpoints.

The training script writes ``training_summary.json`` into its output folder; this module turns it
into a Hub model card (``README.md``): YAML metadata with ``model-index`` evaluation results built
from :class:`huggingface_hub.EvalResult` objects, and text rendered from the Jinja template
``model_cards/dimml_model_card_template.md`` through :meth:`huggingface_hub.ModelCard.from_template`.

Summary schema (keys other than ``method`` are optional)::

    {"method": "dimml", "method_hyperparameters": {...},
     "modalities": [{"name": "audio", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 13, 20]}, ...],
     "dataset": {"name": "av_digits", "config": "...", "recipe": {"processor": [...], ...},
                 "splits": {"train": 2100, ...}, "dataset_name": "my_data", "description": "..."},
     "training": {"epochs": 30, ...}, "labels": ["zero", ...],
     "model_selection": {"rule": "per_modality", "metric": "accuracy",
                         "encoders": {"audio": {"epoch": 6, "validation_accuracy": 0.89}, ...},
                         "final": {"epoch": 38, "stage": 2, "validation_accuracy": 0.95}},
     "metrics": {"test": {"accuracy": 0.9, "macro_f1": 0.89, "accuracy_audio": 0.85, "accuracy_fusion": 0.88,
                          "subset_accuracy": {"audio": 0.85, "audio+image": 0.9}}, "validation": {...}},
     "plot": "training_curves.png", "contribution_plot": "modality_contribution.png", "repo_id": "user/name"}

    Each split's metrics may hold ``modality_shapley``: each modality's Shapley value on accuracy
    (:func:`hf_dimml.metrics.modality_shapley_values`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sysconfig
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .methods import METHODS as METHOD_CLASSES

__all__ = [
    "CITATIONS",
    "METHODS",
    "SUMMARY_FILENAME",
    "TEMPLATE_ENV_VAR",
    "TEMPLATE_NAME",
    "build_model_card",
    "dataset_display_name",
    "eval_results_files",
    "eval_results_from_summary",
    "find_model_card_template",
    "load_training_summary",
    "write_model_card",
]

SUMMARY_FILENAME = "training_summary.json"
TEMPLATE_NAME = "dimml_model_card_template.md"
TEMPLATE_ENV_VAR = "HF_DIMML_MODEL_CARD_TEMPLATE"  # override the template without editing the package

# `model-index` task id: the Hub has no multimodal-classification task id, and the model-index
# schema accepts any string for `task.type`.
TASK_TYPE = "multimodal-classification"
TASK_NAME = "Multimodal classification"

# The card's text of every training method comes from the method's class (hf_dimml.methods).
CITATIONS: dict[str, str] = {name: method.citation for name, method in METHOD_CLASSES.items() if method.citation}
METHODS: dict[str, dict[str, str]] = {
    name: {"display": method.display, "venue": method.venue, "description": method.description}
    for name, method in METHOD_CLASSES.items()
}


def find_model_card_template() -> Path:
    """Locate ``dimml_model_card_template.md``.

    Looked up, in order: the ``HF_DIMML_MODEL_CARD_TEMPLATE`` environment variable; the top-level
    ``model_cards/`` folder of a source checkout or editable install; a copy shipped as package data
    under ``hf_dimml/model_cards/``; and ``<data prefix>/share/hf_dimml/model_cards/``, where
    setup.cfg's ``[options.data_files]`` installs it (prefix of the environment, or the user scheme).
    """
    candidates: list[Path] = []
    if os.environ.get(TEMPLATE_ENV_VAR):
        candidates.append(Path(os.environ[TEMPLATE_ENV_VAR]))
    candidates.append(Path(__file__).resolve().parent.parent / "model_cards" / TEMPLATE_NAME)
    try:
        candidates.append(Path(str(resources.files("hf_dimml") / "model_cards" / TEMPLATE_NAME)))
    except (ModuleNotFoundError, TypeError):  # not importable as a package (e.g. file copied alone)
        pass
    # `[options.data_files]` installs: <prefix>/share/... (venv, system) or the user scheme (`pip --user`).
    for scheme in (None, f"{os.name}_user"):
        try:
            data_root = sysconfig.get_path("data") if scheme is None else sysconfig.get_path("data", scheme)
        except KeyError:  # scheme unknown on this platform
            continue
        candidates.append(Path(data_root) / "share" / "hf_dimml" / "model_cards" / TEMPLATE_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"model card template {TEMPLATE_NAME} not found; looked in: " + ", ".join(str(c) for c in candidates)
    )


def load_training_summary(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<output_dir>/training_summary.json``."""
    path = Path(output_dir) / SUMMARY_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the training script writes it at the end of training")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(summary, dict) or "method" not in summary:
        raise ValueError(f"{path} is not a training summary (a JSON object with at least a 'method' key)")
    return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_rows(metrics: Mapping[str, Any], modality_names: list[str]) -> list[tuple[str, str, str, dict | None]]:
    """``(key, metric_type, label, metric_args)`` for every scalar metric of one split, known ones first."""
    rows: list[tuple[str, str, str, dict | None]] = []
    if _is_number(metrics.get("accuracy")):
        rows.append(("accuracy", "accuracy", "Accuracy (all modalities)", None))
    if _is_number(metrics.get("macro_f1")):
        rows.append(("macro_f1", "f1", "Macro F1 (all modalities)", {"average": "macro"}))
    for name in modality_names:
        key = f"accuracy_{name}"
        if _is_number(metrics.get(key)):
            rows.append((key, "accuracy", f"Accuracy ({name} branch)", None))
    for name in modality_names:
        key = f"macro_f1_{name}"
        if _is_number(metrics.get(key)):
            rows.append((key, "f1", f"Macro F1 ({name} branch)", {"average": "macro"}))
    for name in modality_names:
        key = f"accuracy_shared_{name}"
        if _is_number(metrics.get(key)):
            rows.append((key, "accuracy", f"Accuracy (shared classifier, {name})", None))
    if _is_number(metrics.get("accuracy_fusion")):
        rows.append(("accuracy_fusion", "accuracy", "Accuracy (fusion head)", None))
    known = {row[0] for row in rows}
    for key, value in metrics.items():  # anything else the trainer reported, under its own name
        is_loss = key == "loss" or key.endswith("_loss") or key.startswith("loss_")
        if key not in known and _is_number(value) and not is_loss:
            rows.append((key, key, key.replace("_", " "), None))
    return rows


def _split_metrics(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The summary's metric splits, test first (it is the reported one)."""
    metrics = summary.get("metrics") or {}
    order = ["test", "validation"] + sorted(k for k in metrics if k not in ("test", "validation"))
    return [(split, metrics[split]) for split in order if isinstance(metrics.get(split), Mapping)]


_USER_DESCRIPTION = re.compile(r"^user dataset (?P<name>.+?) \(label column ")


def dataset_display_name(dataset: Mapping[str, Any] | None) -> str | None:
    """The dataset's own name: ``dataset["dataset_name"]`` when the summary has it; for ``--dataset user`` without
    it, the folder / file name the data was loaded from (``hf_dimml.data.presets`` writes it into the description:
    ``user dataset NAME (label column ...)``); otherwise the preset name."""
    dataset = dataset or {}
    if dataset.get("dataset_name"):
        return str(dataset["dataset_name"])
    if dataset.get("name") == "user":
        match = _USER_DESCRIPTION.match(str(dataset.get("description") or ""))
        if match:
            return match.group("name")
    return str(dataset["name"]) if dataset.get("name") else None


def _model_name(summary: Mapping[str, Any], repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    dataset = dataset_display_name(summary.get("dataset"))
    return f"{summary['method']}-{dataset}" if dataset else f"hf_dimml-{summary['method']}"


def _reported_results(summary: Mapping[str, Any]):
    """Every reported result, per split: ``(split, key, metric_type, label, metric_args, subset, value)``.

    The one source of both the card's ``model-index`` and the ``.eval_results`` files: full-modality
    accuracy and macro-F1, each modality's accuracy (and macro-F1), the shared classifier's and the
    fusion head's, and the accuracy of each subset of available modalities (``subset`` names it).
    """
    modality_names = [m["name"] for m in summary.get("modalities") or []]
    for split, metrics in _split_metrics(summary):
        for key, metric_type, label, metric_args in _metric_rows(metrics, modality_names):
            yield split, key, metric_type, label, metric_args, None, float(metrics[key])
        for subset, value in (metrics.get("subset_accuracy") or {}).items():
            if _is_number(value):
                yield (split, f"accuracy_subset_{subset}", "accuracy", f"Accuracy (inputs: {subset})", None, subset,
                       float(value))


def eval_results_from_summary(summary: Mapping[str, Any]) -> list[EvalResult]:
    """One :class:`EvalResult` per reported metric (see :func:`_reported_results`), for every split in
    ``summary["metrics"]``; ``metric_config`` names the modality subset of a subset's accuracy."""
    dataset = summary.get("dataset") or {}
    dataset_type = dataset_display_name(dataset) or "unknown"
    dataset_config = dataset.get("config") or None
    dataset_pretty = f"{dataset_type} ({dataset_config})" if dataset_config else dataset_type
    return [
        EvalResult(
            task_type=TASK_TYPE,
            task_name=TASK_NAME,
            dataset_type=dataset_type,
            dataset_name=dataset_pretty,
            dataset_config=dataset_config,
            dataset_split=split,
            metric_type=metric_type,
            metric_value=value,
            metric_name=label,
            metric_args=metric_args,
            metric_config=subset,
        )
        for split, _, metric_type, label, metric_args, subset, value in _reported_results(summary)
    ]


def eval_results_files(summary: Mapping[str, Any]) -> dict[str, str]:
    """The Hub's ``.eval_results/*.yaml`` files for a checkpoint, path in the repo -> YAML text.

    One file per split (``.eval_results/<dataset>_<split>.yaml``), one entry per result of the card's
    ``model-index``, with the same values: ``dataset.id`` is the dataset, ``task_id`` the summary's
    name of the metric (e.g. ``accuracy``, ``accuracy_audio``, ``accuracy_subset_audio+image``) and
    ``notes`` the card's, with the split.
    """
    import yaml
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    dataset_id = dataset_display_name(summary.get("dataset")) or "unknown"
    entries: dict[str, list[EvalResultEntry]] = {}
    for split, key, _, label, _, _, value in _reported_results(summary):
        entries.setdefault(split, []).append(
            EvalResultEntry(dataset_id=dataset_id, task_id=key, value=value, notes=f"{label}, {split} split")
        )
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_id)
    return {
        f".eval_results/{stem}_{split}.yaml": yaml.safe_dump(
            eval_result_entries_to_yaml(split_entries), sort_keys=False, allow_unicode=True
        )
        for split, split_entries in entries.items()
    }


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        return "`" + json.dumps(value) + "`"
    return str(value)


def _format_shape(shape: Any) -> str:
    if isinstance(shape, (list, tuple)):
        return "(" + ", ".join(str(s) for s in shape) + ")"
    return str(shape) if shape is not None else "-"


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _raw_input_hint(modality: Mapping[str, Any], processor_config: Mapping[str, Any] | None) -> str:
    """What a user passes to the processor for one modality (the "How to use" snippet's comment)."""
    kind = modality.get("kind")
    shape = modality.get("input_shape")
    shape = list(shape) if isinstance(shape, (list, tuple)) else []
    processor_config = processor_config or {}
    if kind == "audio":
        rate = processor_config.get("sampling_rate")
        rate_text = f" at {rate} Hz" if rate else ""
        hint = f"a waveform{rate_text}: 1-D array (with sampling_rate=...), WAV path or {{'array', 'sampling_rate'}}"
    elif kind == "spectrogram":
        bins = shape[-2] if len(shape) >= 2 else processor_config.get("n_bins", "F")
        hint = f"a ({bins}, T) array of spectrogram frames, any length T"
    elif kind == "image":
        value_range = processor_config.get("value_range")
        values = f", values in [{value_range[0]:g}, {value_range[1]:g}]" if value_range else ""
        hint = f"an image: PIL image, (H, W) / (H, W, C) array{values}, or file path"
    elif kind == "frames":
        hint = "a clip: list of frames, (N, H, W[, C]) array, or folder of image files"
    elif kind == "vector":
        hint = f"a ({shape[-1]},) array" if shape else "a 1-D array"
        if (processor_config.get("mean") is not None):
            hint += " of raw (unscaled) features"
    elif kind == "sequence":
        channels = shape[0] if shape else processor_config.get("channels", "C")
        hint = f"a ({channels}, T) array of raw values, any length T"
    else:
        hint = f"a raw {kind} input"
    return f"{hint}; processed to {_format_shape(modality.get('input_shape'))}"


def _stats_text(cfg: Mapping[str, Any], unit: str) -> str | None:
    """The dataset normalisation a processor config applies, in words (None: none)."""
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        return None
    if mean == "train":
        return f"standardised per {unit} with the training split's mean / std"
    mean, std = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (mean, std))
    if len(mean) <= 4:
        values = f"mean {_format_numbers(mean)}, std {_format_numbers(std)}"
    else:
        values = f"{len(mean)} means and stds, stored in `preprocessor_config.json`"
    return f"standardised per {unit}: (x - mean) / std with {values}"


def _format_numbers(values: list[Any]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def _preprocessing_steps(cfg: Mapping[str, Any]) -> str:
    """What the bundled processor does to one modality's raw input, from its config: every step it applies, and
    nothing it does not."""
    kind = cfg.get("kind")
    steps: list[str] = []
    if kind == "audio":
        steps.append(f"waveform mixed to mono, resampled to {cfg.get('sampling_rate')} Hz, its first "
                     f"{cfg.get('duration')} s kept ({'tiled' if cfg.get('short_clip') == 'tile' else 'zero-padded'} "
                     "when shorter)")
        steps.append(f"STFT (n_fft {cfg.get('n_fft')}, hop {cfg.get('hop_length')}, Hann window), log magnitude")
        if cfg.get("normalize"):
            steps.append("z-scored per clip")
    elif kind in ("spectrogram", "sequence"):
        if kind == "sequence":
            steps.append(_stats_text(cfg, "channel") or "values used as given (no scaling)")
        if cfg.get("num_frames"):
            how = {"interpolate": "linear interpolation", "tile_crop": "tiled, then cropped",
                   "crop_pad": "cropped or zero-padded at the end"}.get(cfg.get("time_resize"), cfg.get("time_resize"))
            crop = ", a random window in training" if cfg.get("random_crop") else ""
            steps.append(f"time axis resized to {cfg['num_frames']} steps ({how}{crop})")
        if kind == "spectrogram":
            if cfg.get("normalize"):
                steps.append("z-scored per sample")
            stats = _stats_text(cfg, "channel")
            if stats:
                steps.append(stats)
    elif kind in ("image", "frames"):
        if kind == "frames":
            steps.append(f"{cfg.get('num_frames')} frames per clip (evenly spaced; random ones in training)")
        value_range = cfg.get("value_range")
        steps.append("pixels scaled to [0, 1] (8-bit by 255" + (
            f", others from [{value_range[0]:g}, {value_range[1]:g}])" if value_range else ")"))
        if cfg.get("random_resized_crop"):
            low, high = cfg["random_resized_crop"]
            steps.append(f"random resized crop (scale {low:g}-{high:g}), training only")
        if cfg.get("image_size"):
            height, width = cfg["image_size"]
            steps.append(f"resized to {height}x{width} ({cfg.get('interpolation', 'bilinear')})")
        if cfg.get("random_flip"):
            steps.append("random horizontal flip, training only")
        stats = _stats_text(cfg, "channel")
        if stats:
            steps.append(stats)
    elif kind == "vector":
        stats = _stats_text(cfg, "feature")
        steps.append(stats or "used as given (no scaling: give features on the training data's scale)")
    return "; ".join(steps) if steps else "-"


def _without_modalities(value: Any) -> Any:
    """A builder's stored recipe (JSON text) without its processor configs, which the preprocessing rows describe."""
    try:
        recipe = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return value
    if not isinstance(recipe, dict) or "modalities" not in recipe:
        return value
    return json.dumps({k: v for k, v in recipe.items() if k != "modalities"}, sort_keys=True)


def _model_selection_section(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card's "Model selection" paragraph and table from ``summary["model_selection"]`` (train.py writes it)."""
    selection = summary.get("model_selection")
    if not isinstance(selection, Mapping) or "rule" not in selection:
        return None
    rule = selection["rule"]
    final = selection.get("final") or {}
    final_metric = next((key[len("validation_"):] for key in final if key.startswith("validation_")), None)
    if rule == "per_modality":
        metric = selection.get("metric", "accuracy")
        text = (f"Each modality's encoder and private head come from the epoch where that modality's own validation "
                f"{metric} was best (the modalities peak at different epochs).")
        if final:
            text += (f" The fusion head was trained on these frozen encoders, and the final model was chosen among "
                     f"the stage-2 epochs by the validation {final_metric} of the full prediction.")
        else:
            text += " The model is the assembly of these."
    elif rule == "fused":
        text = (f"One epoch for the whole model, by the validation {final_metric or 'score'} of the full prediction "
                "(the reference implementation's rule).")
    else:
        text = "No model selection: the weights after the last epoch."
    rows = []
    for name, entry in (selection.get("encoders") or {}).items():
        score = next(((key[len("validation_"):], value) for key, value in entry.items()
                      if key.startswith("validation_")), None)
        rows.append({"part": f"`{name}` encoder", "epoch": _format_value(entry.get("epoch")),
                     "score": f"{score[0]} {score[1]:.4f}" if score and _is_number(score[1]) else "-"})
    if final:
        value = final.get(f"validation_{final_metric}")
        score = f"{final_metric} {value:.4f}" if _is_number(value) else "-"
        rows.append({"part": f"rest of the model (stage {final.get('stage', '?')})",
                     "epoch": _format_value(final.get("epoch")), "score": score})
    return {"text": text, "rows": rows}


def _contribution_section(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of the card's "Modality contribution" table: each modality's Shapley value on test accuracy."""
    test = (summary.get("metrics") or {}).get("test") or {}
    shapley = test.get("modality_shapley") or {}
    total = sum(value for value in shapley.values() if _is_number(value))
    return [
        {"modality": f"`{name}`", "value": f"{100 * value:+.2f}",
         "share": f"{100 * value / total:.0f} %" if total > 0 else "-"}
        for name, value in shapley.items() if _is_number(value)
    ]


def build_model_card(
    summary: Mapping[str, Any],
    plot_path: str | None = None,
    *,
    contribution_plot_path: str | None = None,
    repo_id: str | None = None,
    template_path: str | os.PathLike[str] | None = None,
) -> ModelCard:
    """Build the model card of a trained checkpoint from its training summary.

    Args:
        summary: the content of ``training_summary.json`` (see the module docstring).
        plot_path: the training-curves image, relative to the repo root (e.g. ``"training_curves.png"``);
            ``None`` leaves the plot section out. An absolute path is reduced to its file name, which
            is where :func:`hf_dimml.hub.push_to_hub` uploads it.
        contribution_plot_path: the bar plot of each modality's contribution, relative to the repo root (e.g.
            ``"modality_contribution.png"``); ``None`` leaves the plot out (the table stays).
        repo_id: the Hub repo the card is for (used in the loading snippet and as ``model_name``);
            defaults to ``summary["repo_id"]``.
        template_path: a Jinja template to use instead of :func:`find_model_card_template`.
    """
    method = str(summary["method"])
    method_info = METHODS.get(method, {"display": method, "venue": "", "description": ""})
    repo_id = repo_id or summary.get("repo_id")
    model_name = _model_name(summary, repo_id)
    modalities = list(summary.get("modalities") or [])
    modality_names = [m["name"] for m in modalities]
    dataset = summary.get("dataset") or {}
    dataset_name = dataset_display_name(dataset)
    labels = [str(label) for label in summary.get("labels") or []]
    training = summary.get("training") or {}

    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["hf_dimml", "multimodal", method, "balanced-multimodal-learning", "custom_code", *modality_names],
        datasets=[dataset_name] if dataset_name else None,
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results_from_summary(summary) or None,
    )

    result_splits = []
    for split, metrics in _split_metrics(summary):
        rows = [
            {
                "label": label,
                "value": _percent(metrics[key]) if metric_type in ("accuracy", "f1") else _format_value(metrics[key]),
            }
            for key, metric_type, label, _ in _metric_rows(metrics, modality_names)
        ]
        subsets = [
            {"label": subset.replace("+", " + "), "value": _percent(value)}
            for subset, value in (metrics.get("subset_accuracy") or {}).items()
            if _is_number(value)
        ]
        if rows or subsets:
            result_splits.append({"name": split, "rows": rows, "subsets": subsets})

    if plot_path is not None and os.path.isabs(plot_path):
        plot_path = os.path.basename(plot_path)
    other_methods = [name for name in CITATIONS if name != method]
    splits = dataset.get("splits") or {}
    # The processor's per-modality configs, when the summary records them (train.py does, under the recipe).
    processor_recipe = (dataset.get("recipe") or {}).get("processor")
    processor_configs = {
        cfg["name"]: cfg for cfg in processor_recipe or [] if isinstance(cfg, Mapping) and "name" in cfg
    }

    template = Path(template_path) if template_path is not None else find_model_card_template()
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_title=f"{method_info['display']} classifier: {model_name}"
        if repo_id
        else f"{method_info['display']} classifier",
        repo_id=repo_id or "<user>/<model>",
        method_display=method_info["display"],
        method_venue=method_info["venue"] or method,
        method_description=method_info["description"],
        method_hyperparameters=[
            (k, _format_value(v)) for k, v in (summary.get("method_hyperparameters") or {}).items()
        ],
        modalities=[
            {
                "name": m["name"],
                "kind": m.get("kind", "-"),
                "encoder": m.get("encoder", "-"),
                "input_shape": _format_shape(m.get("input_shape")),
                "raw_input": _raw_input_hint(m, processor_configs.get(m["name"])),
            }
            for m in modalities
        ],
        modality_names=modality_names,
        dataset_name=dataset_name or "unknown",
        preset_name=dataset.get("name"),
        preprocessing=[
            {"name": name, "steps": _preprocessing_steps(cfg)} for name, cfg in processor_configs.items()
        ],
        dataset_config=dataset.get("config"),
        # The processor's steps are the `preprocessing` rows; other recipe entries (what a builder stored) as given.
        dataset_recipe=[(k, _format_value(_without_modalities(v) if processor_configs else v))
                        for k, v in (dataset.get("recipe") or {}).items() if not (k == "processor" and processor_configs)],
        dataset_splits=[(k, v) for k, v in splits.items()],
        labels=labels,
        num_labels=len(labels) if labels else "?",
        training=[(k, _format_value(v)) for k, v in training.items()],
        seed=training.get("seed", "?"),
        result_splits=result_splits,
        model_selection=_model_selection_section(summary),
        contribution=_contribution_section(summary),
        contribution_plot_path=os.path.basename(contribution_plot_path) if contribution_plot_path else None,
        supports_missing_modalities=any(r["subsets"] for r in result_splits) and len(modalities) > 1,
        plot_path=plot_path,
        method_citation=CITATIONS.get(method, ""),
        other_citations=[CITATIONS[name] for name in other_methods]
        if method in CITATIONS
        else list(CITATIONS.values()),
    )


def write_model_card(
    output_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    template_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``<output_dir>/README.md`` from ``<output_dir>/training_summary.json`` and return its path.

    The plots named by ``summary["plot"]`` and ``summary["contribution_plot"]`` are embedded only if those files
    exist in ``output_dir``.
    Only ``README.md`` is written, atomically (temporary file + ``os.replace``) so an interrupted
    write never leaves a truncated card, and only when its content changes.
    """
    folder = Path(output_dir)
    summary = load_training_summary(folder)
    plot_path, contribution_plot_path = (
        name if isinstance(name, str) and (folder / name).is_file() else None
        for name in (summary.get("plot"), summary.get("contribution_plot"))
    )
    card = build_model_card(summary, plot_path, contribution_plot_path=contribution_plot_path, repo_id=repo_id,
                            template_path=template_path)
    readme = folder / "README.md"
    content = str(card)
    if not content.endswith("\n"):
        content += "\n"
    if readme.is_file() and readme.read_text(encoding="utf-8") == content:
        return readme
    # Not tempfile.mkstemp: its 0600 mode would survive os.replace; "x" mode honours the umask like a plain write.
    temporary = folder / f".README.md.{secrets.token_hex(8)}.tmp"
    try:
        with open(temporary, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(content)
        os.replace(temporary, readme)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return readme
