"""ModelNet40: two views of the MVCNN 12-view renders."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from hf_dimml.data.builders.engine import (
    BuildSettings,
    _build_cached,
    _carve_validation,
    _image_files,
    _OnMissing,
    _resolve_modalities,
)

def build_modelnet40(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    front_view: int = 1,
    rear_view: int = 7,
    validation_fraction: float = 0.1,
    seed: int = 0,
    on_missing: _OnMissing = "error",
    verify_images: bool = True,
    max_short_side: int | None = None,
    force_rebuild: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """ModelNet40 as two views of the MVCNN 12-view renders (modalities ``front`` and ``rear``)::

        root/<class>/train/<object>.obj.shaded_v<view:03d>.png   MVCNN's modelnet40_images_new_12x, e.g.
                                                               airplane_0001.obj.shaded_v001.png
        root/<class>/train/<object>_<view:03d>.png               RotationNet's naming (.png or .jpg)
        root/<class>/test/...

    ``root`` may also be the folder that holds ``modelnet40_images_new_12x/``. Views ``front_view`` (001) and
    ``rear_view`` (007) become the modalities. Classes are the sub-folders of root that hold a train or test
    folder, sorted. Validation: a class-stratified ``validation_fraction`` of train objects, drawn with ``seed``. An
    object lacking one of the two views is an error (or skipped with ``on_missing="skip"``).
    """
    root_path = Path(root)
    if (root_path / "modelnet40_images_new_12x").is_dir():
        root_path = root_path / "modelnet40_images_new_12x"
    modalities = _resolve_modalities("modelnet40", recipe)
    front_name, rear_name = (m["name"] for m in modalities)
    # "airplane_0001_001" (modelnet40_images_new_12x) or "airplane_0001.obj.shaded_v001" (original MVCNN renders)
    view_pattern = re.compile(r"^(?P<object>.+?)(?:\.obj\.shaded)?_v?(?P<view>\d{3})$")

    def make_index():
        classes = sorted(
            p.name for p in root_path.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())
        )
        if not classes:
            raise FileNotFoundError(f"ModelNet40: no <class>/train or <class>/test folders under {root_path}")
        index: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
        skipped: list[dict[str, str]] = []
        for split in ("train", "test"):
            for class_name in classes:
                folder = root_path / class_name / split
                if not folder.is_dir():
                    continue
                views: dict[str, dict[int, Path]] = {}
                for path in _image_files(folder):
                    match = view_pattern.match(path.stem)
                    if match is None:
                        raise ValueError(
                            f"ModelNet40: {path} is not named <object>_<view:03d>.png "
                            f"(or <object>.obj.shaded_v<view:03d>.png)"
                        )
                    views.setdefault(match["object"], {})[int(match["view"])] = path
                for obj in sorted(views):
                    absent = [f"view {v:03d}" for v in (front_view, rear_view) if v not in views[obj]]
                    clip_id = f"{class_name}/{split}/{obj}"
                    if absent:
                        message = f"object {clip_id!r}: missing {', '.join(absent)} in {folder}"
                        if on_missing == "error":
                            raise FileNotFoundError(f"modelnet40 ({split}): {message}")
                        skipped.append({"split": split, "id": clip_id, "problem": "missing_file", "reason": message})
                        continue
                    index[split].append(
                        {
                            "id": clip_id,
                            "label": class_name,
                            front_name: str(views[obj][front_view]),
                            rear_name: str(views[obj][rear_view]),
                        }
                    )
        train, validation = _carve_validation(index["train"], validation_fraction, seed)
        provenance = {
            "views": {front_name: front_view, rear_name: rear_view},
            "validation": {"source": "train", "fraction": validation_fraction, "seed": seed, "stratified_by": "label"},
        }
        return {"train": train, "validation": validation, "test": index["test"]}, classes, provenance, skipped

    return _build_cached(
        "modelnet40",
        root_path,
        BuildSettings(cache_dir, force_rebuild, on_missing, verify_images, None, max_short_side, progress),
        modalities=modalities,
        sources={front_name: "image", rear_name: "image"},
        options={
            "front_view": front_view,
            "rear_view": rear_view,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        make_index=make_index,
    )
