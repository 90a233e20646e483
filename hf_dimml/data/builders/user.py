"""Any user dataset: a datasets.Dataset / DatasetDict, a save_to_disk folder, a parquet / csv / json file."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_dimml.data.builders.engine import BUILDER_VERSION, SPLITS, stratified_holdout
from hf_dimml.processing_dimml import resolve_modality_config

logger = logging.getLogger(__name__)


_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


def _load_any(dataset_or_path: Any, data_format: str | None, cache_dir: str | None) -> datasets.DatasetDict:
    if isinstance(dataset_or_path, datasets.DatasetDict):
        return datasets.DatasetDict(dict(dataset_or_path))
    if isinstance(dataset_or_path, datasets.Dataset):
        return datasets.DatasetDict({"train": dataset_or_path})
    if not isinstance(dataset_or_path, (str, os.PathLike)):
        raise ValueError(f"expected a datasets.Dataset, DatasetDict or a path, got {type(dataset_or_path).__name__}")
    path = Path(dataset_or_path)
    if not path.exists():
        name = str(dataset_or_path)
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and not name.startswith("."):
            # Not a local path but shaped like a Hub dataset id ("name" or "owner/name"): the Hub, when reachable.
            try:
                return _load_any(datasets.load_dataset(name, cache_dir=cache_dir), None, cache_dir)
            except Exception as error:  # offline, unknown repo, no access: one clear message
                raise FileNotFoundError(
                    f"no local dataset at {path}, and loading {name!r} from the Hugging Face Hub failed: {error}"
                ) from error
        raise FileNotFoundError(f"no dataset at {path}")
    if (
        path.is_dir()
        and data_format is None
        and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    ):
        loaded = datasets.load_from_disk(str(path))
        return _load_any(loaded, None, cache_dir)
    if path.is_file():
        builder = data_format or _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"cannot tell the format of {path}; pass data_format (e.g. 'parquet', 'csv', 'json')")
        return datasets.load_dataset(builder, data_files={"train": str(path)}, cache_dir=cache_dir)
    if data_format is not None:
        return datasets.load_dataset(data_format, data_dir=str(path), cache_dir=cache_dir)
    # A local folder: parquet / csv / json files or an imagefolder, splits inferred from the file names.
    return datasets.load_dataset(str(path), cache_dir=cache_dir)


def _encode_labels(dataset: datasets.DatasetDict, column: str) -> datasets.DatasetDict:
    """Make ``column`` a ``ClassLabel`` named ``labels`` with ONE mapping shared by all splits."""
    feature = dataset["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):
        return dataset if column == "labels" else dataset.rename_column(column, "labels")
    values_by_split = {split: list(ds[column]) for split, ds in dataset.items()}
    every_value = [v for values in values_by_split.values() for v in values]
    if any(v is None for v in every_value):
        raise ValueError(f"label column {column!r} has missing (None) values")
    integer = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in every_value)
    if integer:
        if min(every_value) < 0:
            raise ValueError(f"label column {column!r} has negative integers")
        names = [str(i) for i in range(max(every_value) + 1)]  # identity mapping: ids keep their meaning
        mapping = {i: i for i in range(len(names))}
    else:
        unique = sorted({str(v) for v in every_value})
        names, mapping = unique, {name: i for i, name in enumerate(unique)}
    label_feature = datasets.ClassLabel(names=names)
    encoded = {}
    for split, ds in dataset.items():
        ids = [mapping[v if integer else str(v)] for v in values_by_split[split]]
        encoded[split] = ds.remove_columns(column).add_column("labels", ids, feature=label_feature)
    return datasets.DatasetDict(encoded)


def load_user_dataset(
    dataset_or_path: datasets.Dataset | datasets.DatasetDict | str | os.PathLike,
    modality_columns: Mapping[str, str | Sequence[str]],
    label_column: str = "labels",
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    keep_columns: Sequence[str] = (),
    data_format: str | None = None,
    processor_modalities: Sequence[Mapping[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Any dataset as hf_dimml expects it: one column per modality, ``labels``, three splits.

    Args:
        dataset_or_path: a ``Dataset`` (taken as train), a ``DatasetDict``, a ``save_to_disk``
            folder, a parquet / csv / json(l) file, or a local folder ``datasets.load_dataset``
            understands (data files named by split, or an ``imagefolder`` of class sub-folders,
            whose label column is ``label``).
        modality_columns: modality name -> source column; a list of numeric columns makes one
            float32 feature-vector modality (e.g. tabular features). An ``Audio()`` column is
            switched to ``Audio(decode=False)`` (the processor reads the WAV bytes itself).
        label_column: the column holding the class; becomes a ``ClassLabel`` named ``labels``
            (strings: sorted names; integers: kept as ids ``0..max``), with one mapping for all splits.
        validation_fraction, test_fraction, seed: a missing validation (or test) split is carved
            out of train, class-stratified and seeded (test first, then validation).
        keep_columns: other columns to keep (everything else is dropped).
        data_format: force the ``datasets`` builder of a path (``"parquet"``, ``"imagefolder"``, ...).
        processor_modalities: processor modality configs to record in the recipe, so that
            :func:`processor_from_dataset` works on the result.
        cache_dir: ``datasets`` cache for files read with ``load_dataset`` (default: its own).

    Raises:
        ValueError: a named column is absent (the message lists the available ones), a modality
            name is reserved or repeated, or there is no train split.
    """
    loaded = _load_any(dataset_or_path, data_format, None if cache_dir is None else str(cache_dir))
    renamed: dict[str, datasets.Dataset] = {}
    for split, ds in loaded.items():
        canonical = _SPLIT_ALIASES.get(split.lower())
        if canonical is None:
            raise ValueError(
                f"split {split!r} is not one of train / validation / test (or an alias {sorted(_SPLIT_ALIASES)})"
            )
        if canonical in renamed:
            raise ValueError(f"two splits map to {canonical!r}: rename one of them")
        renamed[canonical] = ds
    if "train" not in renamed:
        raise ValueError(f"the dataset has no train split (splits: {list(loaded)})")
    if not modality_columns:
        raise ValueError("modality_columns is empty: map at least one modality name to a column")
    for name in modality_columns:
        if not str(name).isidentifier() or name in ("labels", "id"):
            raise ValueError(f"modality name {name!r} must be an identifier other than 'labels' / 'id'")

    sources = {name: [cols] if isinstance(cols, str) else list(cols) for name, cols in modality_columns.items()}
    used = [c for cols in sources.values() for c in cols]
    repeated = sorted({c for c in used if used.count(c) > 1})
    if repeated:
        raise ValueError(f"column(s) {repeated} are mapped to more than one modality")
    for split, ds in renamed.items():
        available = ds.column_names
        for name, cols in sources.items():
            for column in cols:
                if column not in available:
                    raise ValueError(
                        f"column {column!r} (modality {name!r}) is not in split {split!r}; "
                        f"available columns: {available}"
                    )
        if label_column not in available:
            raise ValueError(f"label column {label_column!r} is not in split {split!r}; available columns: {available}")
        for column in keep_columns:
            if column not in available:
                raise ValueError(f"keep_columns: {column!r} is not in split {split!r}; available columns: {available}")

    dataset = datasets.DatasetDict(renamed)
    # Temporary names first, so that swapping two column names cannot collide.
    temporary = {label_column: "__dimml_label"}
    for name, cols in sources.items():
        if len(cols) == 1:
            temporary[cols[0]] = f"__dimml_{name}"
    keep = set(temporary) | {c for cols in sources.values() for c in cols} | set(keep_columns)
    dataset = dataset.remove_columns([c for c in dataset["train"].column_names if c not in keep])
    for split in list(dataset):
        ds = dataset[split]
        for name, cols in sources.items():
            if len(cols) > 1:
                vectors = np.stack([np.asarray(list(ds[c]), dtype=np.float32) for c in cols], axis=1)
                ds = ds.remove_columns(cols).add_column(
                    f"__dimml_{name}", list(vectors), feature=datasets.List(datasets.Value("float32"))
                )
        dataset[split] = ds.rename_columns({old: new for old, new in temporary.items() if old in ds.column_names})
    dataset = _encode_labels(dataset, "__dimml_label")
    dataset = dataset.rename_columns({f"__dimml_{name}": name for name in sources})
    for name in sources:
        feature = dataset["train"].features[name]
        if isinstance(feature, datasets.Audio) and feature.decode:
            # datasets decodes Audio() with torchcodec + FFmpeg, often absent: hand the processor the
            # encoded file instead ({"bytes", "path"}), which it reads as WAV itself.
            dataset = dataset.cast_column(name, datasets.Audio(decode=False))

    provenance: dict[str, Any] = {}
    train = dataset["train"]
    if "test" not in dataset:
        kept, held = stratified_holdout(list(train["labels"]), test_fraction, seed)
        dataset["test"], train = train.select(held), train.select(kept)
        provenance["test"] = {"source": "train", "fraction": test_fraction, "seed": seed, "stratified_by": "label"}
    if "validation" not in dataset:
        kept, held = stratified_holdout(list(train["labels"]), validation_fraction, seed + 1)
        dataset["validation"], train = train.select(held), train.select(kept)
        provenance["validation"] = {
            "source": "train",
            "fraction": validation_fraction,
            "seed": seed + 1,
            "stratified_by": "label",
        }
    dataset["train"] = train
    if provenance:
        logger.info("load_user_dataset: carved %s out of train", ", ".join(provenance))

    recipe = {
        "dataset": "user",
        "builder_version": BUILDER_VERSION,
        "modality_columns": {name: cols[0] if len(cols) == 1 else cols for name, cols in sources.items()},
        "label_names": dataset["train"].features["labels"].names,
        "modalities": [resolve_modality_config(m) for m in processor_modalities] if processor_modalities else None,
        **provenance,
    }
    description = json.dumps(recipe, sort_keys=True)
    ordered = datasets.DatasetDict({split: dataset[split] for split in SPLITS})
    for ds in ordered.values():
        ds.info.description = description
    return ordered
