"""Kinetics-Sounds: the OGM-GE, plain or DMRNet lists over extracted audio and frames."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from hf_dimml.data.builders.engine import (
    BuildSettings,
    _audio_visual_index,
    _build_cached,
    _carve_validation,
    _first_dir,
    _first_file,
    _label_map,
    _OnMissing,
    _require_file,
    _resolve_modalities,
    SPLITS,
)
from hf_dimml.data.lists import KINETICS_SOUNDS_31, parse_kinetics_sounds_list, read_class_txt, read_dmrnet_folders

def build_kinetics_sounds(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    train_list: str | None = None,
    validation_list: str | None = None,
    test_list: str | None = None,
    audio_dir: str | None = None,
    frames_dir: str | None = None,
    label_names: Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    on_missing: _OnMissing = "skip",
    verify_images: bool = True,
    max_frames: int | None = None,
    max_short_side: int | None = None,
    force_rebuild: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """Kinetics-Sounds (a subset of Kinetics-400; the circulating lists have 31 or 33 classes) from extracted audio
    and frames::

        root/my_train.txt, root/my_test.txt      OGM-GE's lists: "<ytid>_<start>_<end>,10,<integer label>" (the 10 is
                                                 the clip length), 31 classes
        (or root/train.csv, root/test.csv        rows "<id>,<label>", an "id,label" header skipped)
        root/val.csv                             optional; else a stratified validation split is carved
                                                 out of train (validation_fraction, seed)
        root/audio/<id>.wav                      16 kHz (OGM-GE)
        root/visual/<id>/frame_0000N.jpg         1 fps (OGM-GE; or root/frames/<id>/*.jpg)
        root/class.txt                           optional (DMRNet): the class names, comma-separated; integer
                                                 labels index it
        (or DMRNet's class folders, without lists: root/visual/train_img/Image-01-FPS/<class>/<id>/,
         root/visual/val_img/Image-01-FPS/<class>/<id>/ (test), root/audio/{train,test}/<class>/<id>.wav)

    ``prepare_dataset.py kinetics_sounds`` writes ``audio/`` and ``visual/`` from ``root/videos/**/<id>.mp4`` first.
    Class names: ``label_names`` if given; else integer labels (sorted numerically) name the entries of
    ``class.txt`` when present, else of the 31-class list of the OGM-GE line
    (:data:`hf_dimml.data.lists.KINETICS_SOUNDS_31`, alphabetical) when they are 0..30, else stay numbers;
    string labels are sorted. The class count follows the lists. Missing clips are skipped by default (Kinetics
    videos disappear from YouTube), counted and reported.
    """
    root_path = Path(root)
    modalities = _resolve_modalities("kinetics_sounds", recipe)
    train_list = _first_file(root_path, train_list, ("my_train.txt", "train.csv", "train.txt"))
    test_list = _first_file(root_path, test_list, ("my_test.txt", "test.csv", "test.txt"))
    validation_list = _first_file(root_path, validation_list, ("val.csv", "my_val.txt", "val.txt"))
    audio_dir = _first_dir(root_path, audio_dir, ("audio", "Audios"))
    frames_dir = _first_dir(root_path, frames_dir, ("visual", "frames", "Image-01-FPS"))

    dmrnet = not (root_path / train_list).is_file() and (root_path / "visual" / "train_img").is_dir()

    def make_index():
        lists = {"train": root_path / train_list, "test": root_path / test_list}
        has_validation = not dmrnet and (root_path / validation_list).is_file()
        if has_validation:
            lists["validation"] = root_path / validation_list
        if dmrnet:  # DMRNet's class folders stand for its lists
            split_entries = read_dmrnet_folders(root_path)
        else:
            split_entries = {
                split: parse_kinetics_sounds_list(_require_file(path, f"Kinetics-Sounds {split} list"))
                for split, path in lists.items()
            }
        labels = {entry.label for entries in split_entries.values() for entry in entries}
        known = None
        if (root_path / "class.txt").is_file():
            known = read_class_txt(root_path / "class.txt")
        elif all(label.isdigit() and int(label) < len(KINETICS_SOUNDS_31) for label in labels):
            known = KINETICS_SOUNDS_31
        names, mapping = _label_map("kinetics_sounds", split_entries, label_names, expected_classes=31, known=known)
        index, skipped, _ = _audio_visual_index(
            "kinetics_sounds", root_path, split_entries, mapping, modalities, audio_dir, frames_dir, on_missing
        )
        if has_validation:
            provenance = {"validation": {"source": validation_list}}
        else:
            index["train"], index["validation"] = _carve_validation(index["train"], validation_fraction, seed)
            provenance = {
                "validation": {
                    "source": "train",
                    "fraction": validation_fraction,
                    "seed": seed,
                    "stratified_by": "label",
                }
            }
        ordered = {split: index[split] for split in SPLITS}
        return ordered, names, provenance, skipped

    return _build_cached(
        "kinetics_sounds",
        root_path,
        BuildSettings(cache_dir, force_rebuild, on_missing, verify_images, max_frames, max_short_side, progress),
        modalities=modalities,
        sources={modalities[0]["name"]: "wav", modalities[1]["name"]: "frames"},
        options={
            "train_list": None if dmrnet else train_list,
            "dmrnet_class_folders": dmrnet,
            "validation_list": validation_list,
            "test_list": test_list,
            "audio_dir": audio_dir,
            "frames_dir": frames_dir,
            "label_names": label_names,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        make_index=make_index,
    )
