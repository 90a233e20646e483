"""AVE: the official AVE_Dataset folder (lists with StartTime / EndTime), audio and frames extracted as DI-MML."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from hf_dimml.data.builders.engine import (
    BuildSettings,
    _audio_visual_index,
    _build_cached,
    _first_dir,
    _label_map,
    _OnMissing,
    _require_file,
    _resolve_modalities,
)
from hf_dimml.data.lists import ListEntry, parse_ave_list

logger = logging.getLogger(__name__)


def build_ave(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    lists: Mapping[str, str] | None = None,
    audio_dir: str | None = None,
    frames_dir: str | None = None,
    label_names: Sequence[str] | None = None,
    crop_audio_to_event: bool = True,
    on_missing: _OnMissing = "skip",
    verify_images: bool = True,
    max_frames: int | None = None,
    max_short_side: int | None = None,
    force_rebuild: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """AVE (Audio-Visual Event, 28 classes) from the official ``AVE_Dataset`` folder::

        root/trainSet.txt, root/valSet.txt, root/testSet.txt
            lines "Category&VideoID&Quality&StartTime&EndTime" (UTF-8 BOM, CRLF and a header accepted)
        root/Audios/<VideoID>.wav                the whole sound track (DI-MML's layout; or root/audio/)
        root/Image-01-FPS-SE/<VideoID>/*.jpg     frames at 1 fps within StartTime..EndTime (DI-MML; or root/frames/)

    ``prepare_dataset.py ave`` writes ``Audios/`` and ``Image-01-FPS-SE/`` from ``root/AVE/<VideoID>.mp4`` first
    (:mod:`hf_dimml.data.extraction`). The audio is cropped to [StartTime, EndTime) before the spectrogram, as
    DI-MML's ``extractWav_SE`` does (``crop_audio_to_event=False``: the first seconds of the whole track).

    Repeated ids, as in the official lists: within a list the first line of an id is kept and later ones are dropped
    (DI-MML's ``AVEDataset`` appends a clip only once); a clip listed in two splits is kept in the later split
    (test over validation over train; the reference would train on it as well); both are counted in the recipe's
    ``list_notes``. Label names are the sorted categories of the lists unless ``label_names`` is given. Missing clips
    are skipped by default (several YouTube videos are gone), counted and reported.
    """
    root_path = Path(root)
    modalities = _resolve_modalities("ave", recipe)
    split_lists = dict(lists or {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"})
    audio_dir = _first_dir(root_path, audio_dir, ("Audios", "audio"))
    frames_dir = _first_dir(root_path, frames_dir, ("Image-01-FPS-SE", "frames", "Image-01-FPS"))

    def make_index():
        split_entries: dict[str, list[ListEntry]] = {}
        notes: dict[str, Any] = {}
        for split, file_name in split_lists.items():
            entries, notes[split] = parse_ave_list(_require_file(root_path / file_name, f"AVE {split} list"))
            split_entries[split] = entries
        names, mapping = _label_map("ave", split_entries, label_names, expected_classes=28)
        index, skipped, dropped = _audio_visual_index(
            "ave", root_path, split_entries, mapping, modalities, audio_dir, frames_dir, on_missing,
            audio_window=crop_audio_to_event, cross_split="later",
        )  # fmt: skip
        notes["cross_split_duplicates_dropped"] = dropped
        repeated = sum(n["duplicate_lines"] for n in notes.values() if isinstance(n, dict)) + dropped
        if repeated:
            logger.warning("ave: %d repeated list line(s) dropped as the reference does (see list_notes)", repeated)
        provenance = {"validation": {"source": split_lists.get("validation", "?")}, "list_notes": notes}
        return index, names, provenance, skipped

    return _build_cached(
        "ave",
        root_path,
        BuildSettings(cache_dir, force_rebuild, on_missing, verify_images, max_frames, max_short_side, progress),
        modalities=modalities,
        sources={modalities[0]["name"]: "wav", modalities[1]["name"]: "frames"},
        options={
            "lists": split_lists,
            "audio_dir": audio_dir,
            "frames_dir": frames_dir,
            "label_names": label_names,
            "crop_audio_to_event": crop_audio_to_event,
        },
        make_index=make_index,
    )
