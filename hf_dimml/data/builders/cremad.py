"""CREMA-D: the official AudioWAV/ + frames extracted from VideoFlash/, with the OGM-GE / DI-MML or MLA lists."""

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
    _check_disjoint,
    _index_missing,
    _OnMissing,
    _require_dir,
    _require_file,
    _resolve_modalities,
)
from hf_dimml.data.lists import CREMAD_LABELS, parse_cremad_list

def build_cremad(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    train_list: str = "train.csv",
    test_list: str = "test.csv",
    audio_dir: str = "AudioWAV",
    frames_dir: str = "Image-01-FPS",
    validation_fraction: float = 0.1,
    seed: int = 0,
    on_missing: _OnMissing = "error",
    verify_images: bool = True,
    max_frames: int | None = None,
    max_short_side: int | None = None,
    force_rebuild: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """CREMA-D (6 emotions) as audio spectrograms + video frames, in the OGM-GE / DI-MML layout::

        root/AudioWAV/<clip>.wav                 e.g. 1001_DFA_ANG_XX.wav (the official download)
        root/Image-01-FPS/<clip>/*.jpg           frames at 1 fps (``hf_dimml.data.extraction`` writes them from
                                                 root/VideoFlash/<clip>.flv: prepare_dataset.py cremad)
        root/train.csv, root/test.csv            rows "<clip>,<LABEL>", LABEL in NEU HAP SAD FEA DIS ANG (the
                                                 OGM-GE / DI-MML lists: 6,698 / 744 rows; UTF-8 BOM, CRLF and a
                                                 header accepted), or MLA's "<clip>.flv <Emotion>" lines

    Clips named before the 2022 rename (``1040_ITH_SAD_X``) are found under either name, and counted
    (``list_notes.renamed_clips`` of the recipe).

    Modalities ``audio`` and ``visual`` (see ``DEFAULT_MODALITIES["cremad"]``; ``recipe``
    overrides them by name). Validation: a class-stratified ``validation_fraction`` of train,
    drawn with ``seed``. File names can be overridden with the keyword arguments.
    """
    root_path = Path(root)
    modalities = _resolve_modalities("cremad", recipe)
    audio_name, visual_name = (m["name"] for m in modalities)

    def make_index():
        skipped: list[dict[str, str]] = []
        lists = {"train": root_path / train_list, "test": root_path / test_list}
        index: dict[str, list[dict[str, Any]]] = {}
        _require_dir(root_path / audio_dir, "CREMA-D audio folder")
        _require_dir(root_path / frames_dir, "CREMA-D frames folder")
        # Copies from before the 2022 rename name a few clips with a one-letter level ("1040_ITH_SAD_X"), the
        # lists (or the other modality's folder) with the new one ("..._XX"), or the other way round.
        renamed: set[str] = set()

        def on_disk(folder: Path, clip_id: str, suffix: str) -> str:
            path = folder / f"{clip_id}{suffix}"
            if not path.exists():
                other = re.sub(r"_X$", "_XX", clip_id) if clip_id.endswith("_X") else re.sub(r"_XX$", "_X", clip_id)
                if other != clip_id and (folder / f"{other}{suffix}").exists():
                    renamed.add(clip_id)
                    return str(folder / f"{other}{suffix}")
            return str(path)

        for split, list_path in lists.items():
            _require_file(list_path, f"CREMA-D {split} split list")
            index[split] = [
                {
                    "id": entry.clip_id,
                    "label": entry.label,
                    audio_name: on_disk(root_path / audio_dir, entry.clip_id, ".wav"),
                    visual_name: on_disk(root_path / frames_dir, entry.clip_id, ""),
                }
                for entry in parse_cremad_list(list_path)
            ]
        _check_disjoint("cremad", index)
        for split in list(index):
            index[split] = _index_missing(
                "cremad",
                index[split],
                {audio_name: os.path.isfile, visual_name: os.path.isdir},
                on_missing,
                skipped,
                split,
            )
        train, validation = _carve_validation(index["train"], validation_fraction, seed)
        provenance = {
            "validation": {"source": "train", "fraction": validation_fraction, "seed": seed, "stratified_by": "label"},
            "list_notes": {"renamed_clips": len(renamed)},
        }
        return (
            {"train": train, "validation": validation, "test": index["test"]},
            list(CREMAD_LABELS),
            provenance,
            skipped,
        )

    return _build_cached(
        "cremad",
        root_path,
        BuildSettings(cache_dir, force_rebuild, on_missing, verify_images, max_frames, max_short_side, progress),
        modalities=modalities,
        sources={audio_name: "wav", visual_name: "frames"},
        options={
            "train_list": train_list,
            "test_list": test_list,
            "audio_dir": audio_dir,
            "frames_dir": frames_dir,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        make_index=make_index,
    )
