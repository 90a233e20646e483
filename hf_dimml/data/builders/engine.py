"""Dataset builders: community layouts on local disk -> cached ``datasets.DatasetDict``.

Each ``build_<name>(root, cache_dir=None, recipe=None, ...)`` reads a local folder in the layout
its community distributes (documented per builder), checks it, decodes it once and caches it
with ``save_to_disk``: written to a temporary directory first and moved in place with
``os.replace``, so a cache directory is either complete or absent. A second call with the same
arguments reloads the cache without touching the source files (``force_rebuild=True`` rebuilds).

Storage (per row: one column per modality, ``labels`` as ``ClassLabel``, and ``id``):

* audio: the spectrogram of the pinned recipe
  (:func:`hf_dimml.processing_dimml.compute_audio_spectrogram`, the one implementation, shared
  with the processor), ``Array2D((F, T), float32)``;
* frames: every frame's original encoded bytes, ``List(Image(decode=False))``, so that
  :class:`~hf_dimml.processing_dimml.DIMMLProcessor` samples and decodes ``num_frames`` of them
  per epoch (fresh random frames in training, uniformly spaced ones at evaluation);
* optical flow: ``List(List(Image(decode=False)))``, each frame the pair ``[u, v]`` of its
  single-channel JPEGs (stacked into 2 channels by the processor);
* still images: ``Image()``.

``max_short_side=N`` (every builder) stores instead each frame or image whose shorter side exceeds N pixels
re-encoded at that size (aspect kept, antialiased; JPEG at quality 95, other formats as PNG): decoding, the
largest per-sample cost of the data pipeline, follows the pixel count, and a training crop resized to 224 px
needs no more than that (N must be at least the recipe's ``image_size``).

The recipe (the processor's modality configs, the label names, the split provenance, skipped
clips) is stored as JSON in every split's ``info.description`` and in ``dimml_recipe.json`` next
to the arrow files; :func:`dataset_recipe` reads it back and :func:`processor_from_dataset` builds
the matching processor, so a model card can state exactly how its inputs were made.

Splits are ``train`` / ``validation`` / ``test``. Where the community ships only train and test,
a seeded, class-stratified validation split is carved out of train (model selection happens on
validation, never on test).

Bad data raises an error that names the file, clip or column: missing split lists or data
folders, labels outside the label set, malformed lines, a clip listed in two splits. Problems
with a single clip (a missing file; a file that cannot be read or decoded, whatever the decoder raises, including
an implausible WAV header; too few frames) raise too with
``on_missing="error"``; with ``on_missing="skip"`` (the default where the community routinely
has missing clips: AVE, Kinetics-Sounds) the clip is left out, counted, listed in the recipe and
reported in a warning at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.arrow_writer import ArrowWriter
from PIL import Image
from tqdm.auto import tqdm

from hf_dimml.data.lists import (
    CREMAD_LABELS,
    KINETICS_SOUNDS_31,
    ListEntry,
    ListFormatError,
    label_names_for,
    parse_ave_list,
    parse_cremad_list,
    parse_kinetics_sounds_list,
    read_class_txt,
    read_dmrnet_folders,
    read_lines,
)
from hf_dimml.processing_dimml import (
    DIMMLProcessor,
    audio_read_seconds,
    compute_audio_spectrogram,
    read_wav,
    resolve_modality_config,
    spectrogram_shape,
)

__all__ = [
    "BUILDER_VERSION",
    "CREMAD_LABELS",
    "DATASET_BUILDERS",
    "DEFAULT_MODALITIES",
    "build_ave",
    "build_cremad",
    "build_dataset",
    "build_kinetics_sounds",
    "build_modelnet40",
    "build_ucf101",
    "dataset_recipe",
    "load_user_dataset",
    "processor_from_dataset",
    "stratified_holdout",
]

logger = logging.getLogger(__name__)

#: Bumped whenever what a builder writes changes, so stale caches are never reused.
BUILDER_VERSION = "2"
RECIPE_FILE = "dimml_recipe.json"
SPLITS = ("train", "validation", "test")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_AUDIO_OGM_GE = {"kind": "audio", "sampling_rate": 22050, "n_fft": 512, "hop_length": 353}
_RGB = {
    "image_size": 224,
    "channels": 3,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "random_resized_crop": [0.08, 1.0],
    "random_flip": True,
}

#: UCF101's pixel mean / std over the training frames (DI-MML's ``ucf101_mean_std``, 0..255 scaled to 0..1).
UCF101_MEAN = [106.46409 / 255, 101.46796 / 255, 93.22408 / 255]
UCF101_STD = [68.28274 / 255, 66.40727 / 255, 67.58706 / 255]

#: Default processor modality configs per dataset, following the DI-MML reference protocol (frames per clip from
#: its run scripts and dataset classes: CREMA-D ``--num_frame 3``, AVE 4, Kinetics-Sounds 3 as OGM-GE, UCF101 1 RGB
#: frame + a stack of 10 flow frames, ``clip_len=10``); docs/datasets.md names the reference of every setting and the
#: deviations. A builder's ``recipe`` overrides them by name,
#: e.g. ``build_cremad(root, recipe={"audio": {"duration": 2.0}, "visual": {"num_frames": 2}})``.
DEFAULT_MODALITIES: dict[str, list[dict[str, Any]]] = {
    "cremad": [
        {"name": "audio", **_AUDIO_OGM_GE, "duration": 3.0},
        {"name": "visual", "kind": "frames", "num_frames": 3, **_RGB},
    ],
    "ave": [
        {"name": "audio", **_AUDIO_OGM_GE, "duration": 10.0},
        {"name": "visual", "kind": "frames", "num_frames": 4, **_RGB},
    ],
    "kinetics_sounds": [
        {"name": "audio", **_AUDIO_OGM_GE, "duration": 10.0},
        {"name": "visual", "kind": "frames", "num_frames": 3, **_RGB},
    ],
    "ucf101": [
        {"name": "rgb", "kind": "frames", "num_frames": 1, **_RGB, "mean": UCF101_MEAN, "std": UCF101_STD},
        {
            "name": "flow",
            "kind": "frames",
            "num_frames": 10,
            **_RGB,
            "channels": 2,
            "mean": [0.5, 0.5],
            "std": [0.5, 0.5],
            "flip_inverts_channels": [0],  # a horizontal flip negates the horizontal flow u
        },
    ],
    "modelnet40": [
        {"name": "front", "kind": "image", **_RGB},
        {"name": "rear", "kind": "image", **_RGB},
    ],
}

_OnMissing = str  # "error" | "skip"


# --------------------------------------------------------------------------------------------
# Small helpers: recipe, splits, files
# --------------------------------------------------------------------------------------------


def _resolve_modalities(dataset: str, recipe: Mapping[str, Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Default modality configs of ``dataset`` with the per-modality overrides of ``recipe``."""
    defaults = DEFAULT_MODALITIES[dataset]
    overrides = dict(recipe or {})
    names = [m["name"] for m in defaults]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"{dataset}: recipe names unknown modalities {unknown}; this dataset has {names}")
    resolved = []
    for modality in defaults:
        override = dict(overrides.get(modality["name"], {}))
        for fixed in ("name", "kind"):
            if fixed in override and override[fixed] != modality[fixed]:
                raise ValueError(f"{dataset}: the recipe cannot change {fixed!r} of modality {modality['name']!r}")
        resolved.append(resolve_modality_config({**modality, **override}))
    return resolved


def stratified_holdout(
    labels: Sequence[int], fraction: float, seed: int, groups: Sequence[str] | None = None
) -> tuple[list[int], list[int]]:
    """Split indices into ``(kept, held_out)``, stratified by label, reproducibly from ``seed``.

    Per class, ``round(fraction * n)`` items are held out (at least one, and at least one is
    kept, when the class has two or more). With ``groups``, whole groups (within a class) are held
    out, so that e.g. clips cut from one UCF101 video group never straddle the two sides.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    label_array = np.asarray(labels)
    held_out: list[int] = []
    for label in sorted(set(label_array.tolist())):
        members = np.flatnonzero(label_array == label)
        by_group: dict[str, list[int]] = {}
        for index in members:
            key = str(groups[index]) if groups is not None else str(index)
            by_group.setdefault(key, []).append(int(index))
        keys = sorted(by_group)
        if len(keys) < 2:
            continue
        target = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        taken = 0
        for position in rng.permutation(len(keys)):
            group = by_group[keys[position]]
            if taken >= target or len(members) - taken - len(group) < 1:
                break
            held_out.extend(group)
            taken += len(group)
    held = set(held_out)
    return [i for i in range(len(label_array)) if i not in held], sorted(held)


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: expected the directory {path}")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected the file {path}")
    return path


def _first_dir(root: Path, given: str | None, candidates: Sequence[str]) -> str:
    """``given``, or the first of ``candidates`` that is a folder of ``root`` (the reference layouts' names first);
    the first candidate when none exists (its absence is then reported by the caller)."""
    if given is not None:
        return given
    return next((name for name in candidates if (root / name).is_dir()), candidates[0])


def _first_file(root: Path, given: str | None, candidates: Sequence[str]) -> str:
    """``given``, or the first of ``candidates`` that is a file of ``root``, else the first candidate."""
    if given is not None:
        return given
    return next((name for name in candidates if (root / name).is_file()), candidates[0])


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))


def _uniform_subset(items: list[Any], limit: int | None) -> list[Any]:
    if limit is None or len(items) <= limit:
        return items
    return [items[int((i + 0.5) * len(items) / limit)] for i in range(limit)]


def _read_image_bytes(path: Path, verify: bool) -> bytes:
    """The file's bytes, checked to be an image (fully decoded when ``verify``)."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if verify:
                image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"unreadable image {path}: {err}") from err
    return data


def _shrink_encoded(data: bytes, max_short_side: int) -> bytes:
    """The image re-encoded with its shorter side at ``max_short_side`` pixels, or ``data`` if it is not larger."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if min(width, height) <= max_short_side:
            return data
        scale = max_short_side / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        source_format = image.format
        resized = image.resize(size, Image.Resampling.BILINEAR)  # PIL filters over the whole footprint: antialiased
    buffer = io.BytesIO()
    if source_format == "JPEG":
        resized.save(buffer, format="JPEG", quality=95)
    else:
        resized.save(buffer, format="PNG")
    return buffer.getvalue()


#: What reading and decoding one file can raise. Decoders do not keep to ValueError / OSError: PIL raises
#: SyntaxError, EOFError, struct.error, DecompressionBombError (and MemoryError on a huge claimed size), numpy
#: ValueError or MemoryError. Each of them is about that one file, so a build counts it as a skip (or names the file
#: in its error) instead of stopping; an interrupt or a bug in the build loop itself is not caught here.
_FILE_READ_ERRORS = (
    ValueError, OSError, SyntaxError, EOFError, struct.error, MemoryError, Image.DecompressionBombError
)


def _read_error(path: Path, err: BaseException) -> str:
    """The reason a file could not be read, naming it once (most of our own messages already do)."""
    message = str(err) or type(err).__name__
    if isinstance(err, (ValueError, OSError)) and str(path) in message:
        return message
    return f"cannot read {path}: {type(err).__name__}: {message}"


class _ClipProblem(Exception):
    """A problem confined to one clip: an error, or a skip with ``on_missing="skip"``."""

    def __init__(self, message: str, missing_file: bool = False) -> None:
        super().__init__(message)
        self.missing_file = missing_file


# --------------------------------------------------------------------------------------------
# The build engine
# --------------------------------------------------------------------------------------------


def _default_cache_root() -> Path:
    root = os.environ.get("HF_DIMML_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hf_dimml"


_STORAGE_DESCRIPTION = {
    "wav": "log-magnitude spectrogram of the audio recipe, Array2D (F, T) float32",
    "frames": "all frames as encoded image bytes, List(Image(decode=False))",
    "flow": "all flow frames as [u, v] encoded grey images, List(List(Image(decode=False)))",
    "image": "encoded image, Image()",
}


def _features(
    modalities: list[dict[str, Any]], sources: Mapping[str, str], label_names: list[str]
) -> datasets.Features:
    columns: dict[str, Any] = {"id": datasets.Value("string")}
    for cfg in modalities:
        source = sources[cfg["name"]]
        if source == "wav":
            columns[cfg["name"]] = datasets.Array2D(shape=spectrogram_shape(cfg), dtype="float32")
        elif source == "frames":
            columns[cfg["name"]] = datasets.List(datasets.Image(decode=False))
        elif source == "flow":
            columns[cfg["name"]] = datasets.List(datasets.List(datasets.Image(decode=False)))
        else:
            columns[cfg["name"]] = datasets.Image()
    columns["labels"] = datasets.ClassLabel(names=label_names)
    return datasets.Features(columns)


class _RowMaker:
    """Decodes one indexed clip into a row; clip-level problems raise ``_ClipProblem``."""

    def __init__(
        self,
        root: Path,
        modalities: list[dict[str, Any]],
        sources: Mapping[str, str],
        verify_images: bool,
        max_frames: int | None,
        max_short_side: int | None,
    ) -> None:
        self.root = root
        self.modalities = modalities
        self.sources = sources
        self.verify_images = verify_images
        self.max_frames = max_frames
        self.max_short_side = max_short_side

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def _encoded(self, path: Path, clip: str) -> dict[str, Any]:
        if not path.is_file():
            raise _ClipProblem(f"clip {clip!r}: missing file {path}", missing_file=True)
        try:
            data = _read_image_bytes(path, self.verify_images)
            if self.max_short_side is not None:
                data = _shrink_encoded(data, self.max_short_side)
            return {"bytes": data, "path": self._relative(path)}
        except _FILE_READ_ERRORS as err:
            raise _ClipProblem(f"clip {clip!r}: {_read_error(path, err)}") from err

    def _frame_files(self, directory: Path, clip: str, cfg: Mapping[str, Any]) -> list[Path]:
        if not directory.is_dir():
            raise _ClipProblem(f"clip {clip!r}: missing frame directory {directory}", missing_file=True)
        try:
            files = _image_files(directory)
        except OSError as err:  # unreadable directory (permissions, a network drive gone)
            raise _ClipProblem(f"clip {clip!r}: cannot list frame directory {directory}: {err}") from err
        if len(files) < cfg["num_frames"]:
            raise _ClipProblem(
                f"clip {clip!r}: {directory} has {len(files)} frame(s), fewer than num_frames={cfg['num_frames']} "
                f"of modality {cfg['name']!r}"
            )
        return files

    def __call__(self, clip: Mapping[str, Any]) -> dict[str, Any]:
        clip_id = clip["id"]
        row: dict[str, Any] = {"id": clip_id, "labels": clip["label"]}
        for cfg in self.modalities:
            name, source, location = cfg["name"], self.sources[cfg["name"]], clip[cfg["name"]]
            if source == "wav":
                if not Path(location).is_file():
                    raise _ClipProblem(f"clip {clip_id!r}: missing audio file {location}", missing_file=True)
                try:
                    window = clip.get("audio_window")  # AVE: [StartTime, EndTime) seconds of the event
                    # Only what the recipe uses is read: a long or mislabelled file costs no more than a good one.
                    seconds = audio_read_seconds(cfg) + (window[0] if window else 0.0)
                    waveform, rate = read_wav(location, max_seconds=seconds)
                    if window:
                        event = waveform[:, int(window[0] * rate) : int(window[1] * rate)]
                        if event.shape[1] == 0:
                            raise ValueError(
                                f"{location} has no samples in the event window [{window[0]}, {window[1]}) s "
                                f"({waveform.shape[1] / rate:.2f} s read)"
                            )
                        waveform = event
                    row[name] = compute_audio_spectrogram(waveform, rate, cfg)
                except _FILE_READ_ERRORS as err:
                    raise _ClipProblem(f"clip {clip_id!r}: {_read_error(Path(location), err)}") from err
            elif source == "frames":
                files = _uniform_subset(self._frame_files(Path(location), clip_id, cfg), self.max_frames)
                row[name] = [self._encoded(path, clip_id) for path in files]
            elif source == "flow":
                u_dir, v_dir = (Path(p) for p in location)
                u_files, v_files = self._frame_files(u_dir, clip_id, cfg), self._frame_files(v_dir, clip_id, cfg)
                if len(u_files) != len(v_files):
                    raise _ClipProblem(
                        f"clip {clip_id!r}: {len(u_files)} u frames in {u_dir} but {len(v_files)} v frames in {v_dir}"
                    )
                pairs = _uniform_subset(list(zip(u_files, v_files, strict=True)), self.max_frames)
                row[name] = [[self._encoded(u, clip_id), self._encoded(v, clip_id)] for u, v in pairs]
            else:
                row[name] = self._encoded(Path(location), clip_id)
        return row


def _cache_key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build_cached(
    name: str,
    root: Path,
    *,
    cache_dir: str | os.PathLike | None,
    force_rebuild: bool,
    modalities: list[dict[str, Any]],
    sources: Mapping[str, str],
    options: Mapping[str, Any],
    make_index: Callable[[], tuple[dict[str, list[dict[str, Any]]], list[str], dict[str, Any], list[dict[str, str]]]],
    on_missing: str,
    verify_images: bool,
    max_frames: int | None,
    max_short_side: int | None,
    progress: bool,
) -> datasets.DatasetDict:
    """Reload ``name`` from its cache, or index, decode, write and cache it (atomically)."""
    _check_on_missing(on_missing)
    if max_frames is not None and max_frames < max((m.get("num_frames") or 1) for m in modalities):
        raise ValueError(f"{name}: max_frames={max_frames} is below a modality's num_frames")
    if max_short_side is not None:
        for cfg in modalities:
            size = cfg.get("image_size")
            needed = max(size) if isinstance(size, (list, tuple)) else (size or 1)
            if int(max_short_side) < needed:
                raise ValueError(
                    f"{name}: max_short_side={max_short_side} is below modality {cfg['name']!r}'s image_size "
                    f"{size}: stored frames would be upsampled again by the processor"
                )
    root = Path(root).expanduser().resolve()
    _require_dir(root, f"{name} root folder")
    key_payload = {
        "builder": name,
        "version": BUILDER_VERSION,
        "root": str(root),
        "modalities": modalities,
        "options": options,
        "on_missing": on_missing,
        "verify_images": verify_images,
        "max_frames": max_frames,
        "max_short_side": max_short_side,
    }
    cache_root = Path(cache_dir) if cache_dir is not None else _default_cache_root() / name
    target = cache_root / f"{name}-{_cache_key(key_payload)}"
    if target.is_dir() and not force_rebuild:
        logger.info("%s: loading the cached build %s", name, target)
        return datasets.load_from_disk(str(target))

    index, label_names, provenance, skipped = make_index()
    features = _features(modalities, sources, label_names)
    make_row = _RowMaker(root, modalities, sources, verify_images, max_frames, max_short_side)
    label_to_id = {label: i for i, label in enumerate(label_names)}
    recipe: dict[str, Any] = {
        "dataset": name,
        "builder_version": BUILDER_VERSION,
        "source_folder": root.name,  # not the full path: the recipe travels with pushed datasets
        "modalities": modalities,
        "storage": {m["name"]: _STORAGE_DESCRIPTION[sources[m["name"]]] for m in modalities},
        "label_names": label_names,
        "options": dict(options),
        "on_missing": on_missing,
        "max_frames": max_frames,
        "max_short_side": max_short_side,
        **provenance,
    }

    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
    try:
        split_files: dict[str, Path] = {}
        total = sum(len(clips) for clips in index.values())
        with tqdm(total=total, desc=f"building {name}", unit="clip", disable=not progress) as bar:
            for split, clips in index.items():
                split_files[split] = staging / f"{split}.arrow"
                bar.set_postfix_str(split)
                with ArrowWriter(features=features, path=str(split_files[split])) as writer:
                    for clip in clips:
                        bar.update(1)
                        try:
                            row = make_row(clip)
                        except _ClipProblem as problem:
                            if on_missing == "error":
                                exception = FileNotFoundError if problem.missing_file else ValueError
                                raise exception(f"{name} ({split}): {problem}") from problem.__cause__
                            problem_kind = "missing_file" if problem.missing_file else "bad_data"
                            skipped.append(
                                {"split": split, "id": clip["id"], "problem": problem_kind, "reason": str(problem)}
                            )
                            continue
                        row["labels"] = label_to_id[row["labels"]]
                        writer.write(features.encode_example(row))
                    writer.finalize()
        recipe["skipped"] = {"count": len(skipped), "clips": skipped}
        recipe["num_rows"] = {}
        splits = {}
        for split, path in split_files.items():
            dataset = datasets.Dataset.from_file(str(path))
            recipe["num_rows"][split] = dataset.num_rows
            splits[split] = dataset
        description = json.dumps(recipe, sort_keys=True)
        for split, dataset in splits.items():
            info = datasets.DatasetInfo(description=description, features=features)
            splits[split] = datasets.Dataset(dataset.data, info=info, split=datasets.NamedSplit(split))
        output = staging / "dataset"
        bars_were_enabled = datasets.is_progress_bar_enabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            datasets.DatasetDict(splits).save_to_disk(str(output))
        finally:
            if bars_were_enabled:
                datasets.enable_progress_bars()
        with open(output / RECIPE_FILE, "w", encoding="utf-8") as handle:
            json.dump(recipe, handle, indent=2, sort_keys=True)
        if target.is_dir():  # force_rebuild: drop the old build (a reader may still see it until now)
            shutil.rmtree(target)
        try:
            os.replace(output, target)  # atomic: a reader sees a complete cache or none
        except OSError:
            if not target.is_dir():  # not a lost race with a concurrent build of the same key
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    if skipped:
        reasons = Counter(entry["problem"] for entry in skipped)
        logger.warning(
            "%s: skipped %d clip(s) (%s); they are listed under 'skipped' in %s",
            name,
            len(skipped),
            ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())),
            target / RECIPE_FILE,
        )
    return datasets.load_from_disk(str(target))


def _index_missing(
    name: str,
    clips: list[dict[str, Any]],
    required: Mapping[str, Callable[[Any], bool]],
    on_missing: str,
    skipped: list[dict[str, str]],
    split: str,
) -> list[dict[str, Any]]:
    """Check that each clip's files exist before any decoding: fail fast, or drop and record."""
    kept = []
    for clip in clips:
        absent = [str(clip[modality]) for modality, exists in required.items() if not exists(clip[modality])]
        if not absent:
            kept.append(clip)
            continue
        message = f"clip {clip['id']!r}: missing {', '.join(absent)}"
        if on_missing == "error":
            raise FileNotFoundError(f"{name} ({split}): {message}")
        skipped.append({"split": split, "id": clip["id"], "problem": "missing_file", "reason": message})
    return kept


def _carve_validation(
    train: list[dict[str, Any]], fraction: float, seed: int, groups: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kept, held = stratified_holdout([clip["label"] for clip in train], fraction, seed, groups)
    return [train[i] for i in kept], [train[i] for i in held]


def _check_disjoint(name: str, index: Mapping[str, list[dict[str, Any]]]) -> None:
    seen: dict[str, str] = {}
    for split, clips in index.items():
        for clip in clips:
            if clip["id"] in seen:
                where = "twice in" if seen[clip["id"]] == split else f"in both {seen[clip['id']]!r} and"
                raise ValueError(f"{name}: clip {clip['id']!r} is listed {where} split {split!r}")
            seen[clip["id"]] = split


# --------------------------------------------------------------------------------------------
# CREMA-D
# --------------------------------------------------------------------------------------------


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
        cache_dir=cache_dir,
        force_rebuild=force_rebuild,
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
        on_missing=on_missing,
        verify_images=verify_images,
        max_frames=max_frames,
        max_short_side=max_short_side,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# AVE and Kinetics-Sounds: id lists + audio/<id>.wav + frames/<id>/*.jpg
# --------------------------------------------------------------------------------------------


def _audio_visual_index(
    name: str,
    root: Path,
    split_entries: Mapping[str, list[ListEntry]],
    label_map: Mapping[str, str],
    modalities: list[dict[str, Any]],
    audio_dir: str,
    frames_dir: str,
    on_missing: str,
    audio_window: bool = False,
    cross_split: str = "error",
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, str]], int]:
    """Shared indexing of list entries of audio-visual datasets: ``audio_dir/<id>.wav`` + ``frames_dir/<id>/``.

    ``label_map`` maps each list label to its class name. ``audio_window``: each clip's audio is cropped to the
    entry's ``start`` / ``end`` seconds. ``cross_split="later"`` keeps a clip listed in two splits in the later one
    (test over validation over train) and counts the drops; ``"error"`` refuses it. Returns the index, the skipped
    clips and the number of cross-split drops.
    """
    audio_name, visual_name = (m["name"] for m in modalities)
    _require_dir(root / audio_dir, f"{name} audio folder")
    _require_dir(root / frames_dir, f"{name} frames folder")
    index: dict[str, list[dict[str, Any]]] = {}
    for split, entries in split_entries.items():
        clips = []
        for entry in entries:
            extra = dict(entry.extra)
            clip = {
                "id": entry.clip_id,
                "label": label_map[entry.label],
                audio_name: extra.get("audio", str(root / audio_dir / f"{entry.clip_id}.wav")),
                visual_name: extra.get("frames", str(root / frames_dir / entry.clip_id)),
            }
            if audio_window and "start" in extra and extra["end"] > extra["start"]:
                clip["audio_window"] = [extra["start"], extra["end"]]
            clips.append(clip)
        index[split] = clips
    dropped = 0
    if cross_split == "later":
        later: set[str] = set()
        for split in reversed(list(index)):
            kept = [clip for clip in index[split] if clip["id"] not in later]
            dropped += len(index[split]) - len(kept)
            later.update(clip["id"] for clip in index[split])
            index[split] = kept
    _check_disjoint(name, index)
    skipped: list[dict[str, str]] = []
    for split in list(index):
        index[split] = _index_missing(
            name, index[split], {audio_name: os.path.isfile, visual_name: os.path.isdir}, on_missing, skipped, split
        )
    return index, skipped, dropped


def _label_map(
    name: str,
    split_entries: Mapping[str, list[ListEntry]],
    label_names: Sequence[str] | None,
    expected_classes: int,
    known: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Class names (given, or from the lists: strings sorted, integers numerically, ``known`` names for integer
    labels) and the map from list labels to them; a label outside given ``label_names`` is an error."""
    entries = [entry for group in split_entries.values() for entry in group]
    if label_names is not None:
        names = list(label_names)
        for entry in entries:
            if entry.label not in names:
                raise ValueError(f"{entry.where}: label {entry.label!r} of clip {entry.clip_id!r} is not in label_names {names}")
        return names, {label: label for label in names}
    names, mapping = label_names_for((entry.label for entry in entries), known)
    if len(names) < 2:
        raise ListFormatError(f"{name}: the split lists name {len(names)} class(es) {names}: at least 2 are needed")
    if len(names) != expected_classes:
        logger.info("%s: the split lists name %d classes", name, len(names))
    return names, mapping


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
        cache_dir=cache_dir,
        force_rebuild=force_rebuild,
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
        on_missing=on_missing,
        verify_images=verify_images,
        max_frames=max_frames,
        max_short_side=max_short_side,
        progress=progress,
    )


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
        cache_dir=cache_dir,
        force_rebuild=force_rebuild,
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
        on_missing=on_missing,
        verify_images=verify_images,
        max_frames=max_frames,
        max_short_side=max_short_side,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# UCF101
# --------------------------------------------------------------------------------------------

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
        cache_dir=cache_dir,
        force_rebuild=force_rebuild,
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
        on_missing=on_missing,
        verify_images=verify_images,
        max_frames=max_frames,
        max_short_side=max_short_side,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# ModelNet40 front / rear views
# --------------------------------------------------------------------------------------------


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

    ``root`` may also be the folder that holds ``modelnet40_images_new_12x/``. Views ``front_view`` (001) and ``rear_view`` (007) become the modalities. Classes are the
    sub-folders of root that hold a train or test folder, sorted. Validation: a class-stratified
    ``validation_fraction`` of train objects, drawn with ``seed``. An object lacking one of the
    two views is an error (or skipped with ``on_missing="skip"``).
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
        cache_dir=cache_dir,
        force_rebuild=force_rebuild,
        modalities=modalities,
        sources={front_name: "image", rear_name: "image"},
        options={
            "front_view": front_view,
            "rear_view": rear_view,
            "validation_fraction": validation_fraction,
            "seed": seed,
        },
        make_index=make_index,
        on_missing=on_missing,
        verify_images=verify_images,
        max_frames=None,
        max_short_side=max_short_side,
        progress=progress,
    )


#: Builder by dataset name (the names of ``DEFAULT_MODALITIES``).
DATASET_BUILDERS: dict[str, Callable[..., datasets.DatasetDict]] = {
    "cremad": build_cremad,
    "ave": build_ave,
    "kinetics_sounds": build_kinetics_sounds,
    "ucf101": build_ucf101,
    "modelnet40": build_modelnet40,
}


def build_dataset(name: str, root: str | os.PathLike, **kwargs: Any) -> datasets.DatasetDict:
    """Dispatch to ``build_<name>`` (``name`` in ``DATASET_BUILDERS``)."""
    if name not in DATASET_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASET_BUILDERS)}")
    return DATASET_BUILDERS[name](root, **kwargs)


# --------------------------------------------------------------------------------------------
# Recipe access
# --------------------------------------------------------------------------------------------


def dataset_recipe(dataset: datasets.Dataset | datasets.DatasetDict) -> dict[str, Any]:
    """The recipe JSON a builder (or :func:`load_user_dataset`) stored in ``info.description``."""
    split = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    try:
        recipe = json.loads(split.info.description or "")
    except json.JSONDecodeError as err:
        raise ValueError(
            "this dataset carries no hf_dimml recipe in info.description (not built by hf_dimml?)"
        ) from err
    if not isinstance(recipe, dict) or "dataset" not in recipe:
        raise ValueError("this dataset carries no hf_dimml recipe in info.description (not built by hf_dimml?)")
    return recipe


def processor_from_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> DIMMLProcessor:
    """A ``DIMMLProcessor`` with the dataset's stored modality configs (``overrides`` by name).

    Overriding audio recipe keys is refused: the stored spectrograms were made with them.
    """
    recipe = dataset_recipe(dataset)
    modalities = recipe.get("modalities")
    if not modalities:
        raise ValueError(
            "the dataset recipe has no processor modalities (pass processor_modalities to load_user_dataset)"
        )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {m["name"] for m in modalities})
    if unknown:
        raise ValueError(
            f"overrides name unknown modalities {unknown}; the dataset has {[m['name'] for m in modalities]}"
        )
    merged = []
    for modality in modalities:
        override = dict(overrides.get(modality["name"], {}))
        if modality["kind"] == "audio" and override:
            raise ValueError(f"modality {modality['name']!r}: the audio recipe is fixed by the stored spectrograms")
        merged.append({**modality, **override})
    return DIMMLProcessor(modalities=merged)


# --------------------------------------------------------------------------------------------
# Any user dataset
# --------------------------------------------------------------------------------------------

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
