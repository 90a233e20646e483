"""UCF101: RGB frames + TV-L1 optical flow (the public downloads, or extracted from the official .avi)."""

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
    _first_dir,
    _index_missing,
    _OnMissing,
    _require_dir,
    _require_file,
    _resolve_modalities,
)
from hf_dimml.data.lists import read_lines

_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")


def build_ucf101(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    split: int = 1,
    lists_dir: str = "ucfTrainTestlist",
    rgb_dir: str | None = None,
    flow_dir: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    on_missing: _OnMissing = "error",
    verify_images: bool = True,
    max_frames: int | None = None,
    max_short_side: int | None = None,
    force_rebuild: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """UCF101 (101 actions) as RGB frames + TV-L1 optical flow, official split ``split`` (1..3)::

        root/ucfTrainTestlist/classInd.txt       "<index> <ClassName>", index from 1
        root/ucfTrainTestlist/trainlist01.txt    "<ClassName>/<video>.avi <index>"
        root/ucfTrainTestlist/testlist01.txt     "<ClassName>/<video>.avi"
            (the lists may also lie directly in root)
        root/jpegs_256/<video>/frame000001.jpg   RGB frames (feichtenhofer's download; or root/rgb/, also
                                                 root/rgb/<ClassName>/<video>/)
        root/tvl1_flow/u/<video>/frame000001.jpg horizontal flow, one grey JPEG per frame pair (one fewer than
                                                 RGB; or root/flow/u/)
        root/tvl1_flow/v/<video>/*.jpg           vertical flow (same count as u)

    From the official ``root/UCF-101/<ClassName>/<video>.avi``, ``prepare_dataset.py ucf101`` writes
    ``jpegs_256/`` and, when no flow folder exists, ``tvl1_flow/`` (:mod:`hf_dimml.data.extraction`) first.

    ``<video>`` is the list entry's file name without extension (``v_ApplyEyeMakeup_g08_c01``).
    Modalities ``rgb`` and ``flow`` (2 channels u, v). Validation: ``validation_fraction`` of
    train, stratified by class and holding out whole groups (``_gXX_``: clips of one source video
    are never split between train and validation).
    """
    root_path = Path(root)
    modalities = _resolve_modalities("ucf101", recipe)
    rgb_name, flow_name = (m["name"] for m in modalities)
    rgb_dir = _first_dir(root_path, rgb_dir, ("jpegs_256", "rgb"))
    flow_dir = _first_dir(root_path, flow_dir, ("tvl1_flow", "flow"))

    def video_dir(base: Path, class_name: str, video: str) -> Path:
        flat = base / video
        return flat if flat.is_dir() or not (base / class_name / video).is_dir() else base / class_name / video

    def make_index():
        lists_path = root_path / lists_dir if (root_path / lists_dir).is_dir() else root_path
        class_file = _require_file(lists_path / "classInd.txt", "UCF101 class index")
        classes: dict[int, str] = {}
        for line_number, line in read_lines(class_file):
            fields = line.split()
            if len(fields) != 2 or not fields[0].isdigit():
                raise ValueError(f"{class_file}:{line_number}: expected '<index> <ClassName>', got {line!r}")
            classes[int(fields[0])] = fields[1]
        names = [classes[i] for i in sorted(classes)]
        _require_dir(root_path / rgb_dir, "UCF101 RGB frames folder")
        for direction in ("u", "v"):
            _require_dir(root_path / flow_dir / direction, f"UCF101 flow {direction} folder")
        index: dict[str, list[dict[str, Any]]] = {}
        groups: list[str] = []
        for split_name, file_name in (("train", f"trainlist{split:02d}.txt"), ("test", f"testlist{split:02d}.txt")):
            list_path = _require_file(lists_path / file_name, f"UCF101 {split_name} list")
            clips = []
            for line_number, line in read_lines(list_path):
                fields = line.split()
                entry = fields[0].replace("\\", "/")
                if "/" not in entry:
                    raise ValueError(f"{list_path}:{line_number}: expected '<ClassName>/<video>.avi', got {line!r}")
                class_name, video = entry.split("/")[0], Path(entry).stem
                if class_name not in names:
                    raise ValueError(
                        f"{list_path}:{line_number}: class {class_name!r} of {video!r} is not in {class_file}"
                    )
                if len(fields) > 1 and (not fields[1].isdigit() or classes.get(int(fields[1])) != class_name):
                    raise ValueError(
                        f"{list_path}:{line_number}: label index {fields[1]!r} of {video!r} does not match its class "
                        f"folder {class_name!r} in {class_file}"
                    )
                clips.append(
                    {
                        "id": video,
                        "label": class_name,
                        rgb_name: str(video_dir(root_path / rgb_dir, class_name, video)),
                        flow_name: [
                            str(video_dir(root_path / flow_dir / "u", class_name, video)),
                            str(video_dir(root_path / flow_dir / "v", class_name, video)),
                        ],
                    }
                )
            index[split_name] = clips
        _check_disjoint("ucf101", index)
        skipped: list[dict[str, str]] = []
        both_dirs = lambda pair: all(os.path.isdir(p) for p in pair)  # noqa: E731
        for split_name in list(index):
            index[split_name] = _index_missing(
                "ucf101",
                index[split_name],
                {rgb_name: os.path.isdir, flow_name: both_dirs},
                on_missing,
                skipped,
                split_name,
            )
        for clip in index["train"]:
            match = _UCF_GROUP.search(clip["id"])
            groups.append(f"{clip['label']}/{match.group(1) if match else clip['id']}")
        train, validation = _carve_validation(index["train"], validation_fraction, seed, groups)
        provenance = {
            "official_split": split,
            "validation": {
                "source": "train",
                "fraction": validation_fraction,
                "seed": seed,
                "stratified_by": "label",
                "grouped_by": "UCF101 group (_gXX_)",
            },
        }
        return {"train": train, "validation": validation, "test": index["test"]}, names, provenance, skipped

    return _build_cached(
        "ucf101",
        root_path,
        BuildSettings(cache_dir, force_rebuild, on_missing, verify_images, max_frames, max_short_side, progress),
        modalities=modalities,
        sources={rgb_name: "frames", flow_name: "flow"},
        options={
            "split": split,
            "lists_dir": lists_dir,
            "rgb_dir": rgb_dir,
            "flow_dir": flow_dir,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        make_index=make_index,
    )
