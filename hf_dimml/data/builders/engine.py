"""The cache engine of the dataset builders: community layouts on local disk -> cached ``datasets.DatasetDict``.

Each ``build_<name>(root, cache_dir=None, recipe=None, ...)`` (one module per dataset in this package) reads a local
folder in the layout its community distributes (documented per builder), checks it, decodes it once and caches it
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

import dataclasses
import hashlib
import io
import json
import logging
import os
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

from hf_dimml.data.lists import ListEntry, ListFormatError, label_names_for
from hf_dimml.processing_dimml import (
    DIMMLProcessor,
    audio_read_seconds,
    compute_audio_spectrogram,
    read_wav,
    resolve_modality_config,
    spectrogram_shape,
)

logger = logging.getLogger(__name__)


#: Bumped whenever what a builder writes changes, so stale caches are never reused.
BUILDER_VERSION = "2"
RECIPE_FILE = "dimml_recipe.json"
SPLITS = ("train", "validation", "test")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_AUDIO_OGM_GE = {"kind": "audio", "sampling_rate": 22050, "n_fft": 512, "hop_length": 353}
#: DI-MML's audio spectrogram (``data/CREMAD/audio_preprocessing.py``; OGM-GE's ``obtain_audio_spectrogram.py`` for
#: AVE is the same): ``librosa.load`` at its default 22,050 Hz, tiled and cut to 160,000 samples (7.26 s; the script's
#: ``sr=16000`` only sets that length), clipped to [-1, 1], ``scipy.signal.spectrogram(nperseg=512, noverlap=353)``
#: (Tukey 0.25 window, hop 159, no padding, per-segment mean removed, one-sided PSD), ``log(S + 1e-7)``, z-scored
#: with ``std + 1e-9``: ``(257, 1004)``. An option, not the presets' default (docs/datasets.md says why):
#: ``recipe={"audio": AUDIO_DIMML_SCIPY}``.
AUDIO_DIMML_SCIPY = {
    "sampling_rate": 22050,
    "duration": 160000 / 22050,
    "n_fft": 512,
    "win_length": 512,
    "hop_length": 159,
    "window": "tukey",
    "stft_style": "scipy",
    "center": False,
    "log_offset": 1e-7,
    "normalize_eps": 1e-9,
}
#: Keys added to the processor configs after caches were first written, with the value that means "as before": left
#: out of the cache key at that value, so that existing caches keep their keys.
_KEY_NEUTRAL_DEFAULTS = {"stft_style": "librosa", "frame_sampling": "spread", "random_crop": None}
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
#: DI-MML's UCF101 transform (``clip_transform_ucf101``): GroupRandomCrop(224) + flip in training, GroupCenterCrop(224)
#: at evaluation, of the 256-px frames, never resized.
_UCF101_CROP = {**{k: v for k, v in _RGB.items() if k != "random_resized_crop"}, "random_crop": 224}

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
        {"name": "rgb", "kind": "frames", "num_frames": 1, **_UCF101_CROP, "mean": UCF101_MEAN, "std": UCF101_STD},
        {
            "name": "flow",
            "kind": "frames",
            "num_frames": 10,
            "frame_sampling": "contiguous_window",  # DI-MML's sample_flow: 10 consecutive u/v frames
            **_UCF101_CROP,
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


def _keyed_modalities(modalities: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The modality configs as the cache key hashes them: without the later keys left at their neutral value."""
    return [
        {k: v for k, v in m.items() if k not in _KEY_NEUTRAL_DEFAULTS or v != _KEY_NEUTRAL_DEFAULTS[k]}
        for m in modalities
    ]


def _cache_key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """What every builder passes to the engine unchanged: the cache (``cache_dir``, ``force_rebuild``), what a bad
    clip does (``on_missing``), how images are checked and stored (``verify_images``, ``max_frames``,
    ``max_short_side``) and the progress bar."""

    cache_dir: str | os.PathLike | None
    force_rebuild: bool
    on_missing: str
    verify_images: bool
    max_frames: int | None
    max_short_side: int | None
    progress: bool


def _build_cached(
    name: str,
    root: Path,
    settings: BuildSettings,
    *,
    modalities: list[dict[str, Any]],
    sources: Mapping[str, str],
    options: Mapping[str, Any],
    make_index: Callable[[], tuple[dict[str, list[dict[str, Any]]], list[str], dict[str, Any], list[dict[str, str]]]],
) -> datasets.DatasetDict:
    """Reload ``name`` from its cache, or index, decode, write and cache it (atomically)."""
    cache_dir, force_rebuild, on_missing, verify_images, max_frames, max_short_side, progress = (
        dataclasses.astuple(settings)
    )
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
        "modalities": _keyed_modalities(modalities),
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
        empty = [split for split, rows in recipe["num_rows"].items() if rows == 0]
        if empty:  # a split with nothing to train or evaluate on: say why instead of writing an unusable cache
            lost = Counter(entry["split"] for entry in skipped)
            raise ValueError(
                f"{name}: split(s) {empty} have no rows ("
                + ", ".join(f"{split}: {lost[split]} clip(s) skipped" for split in empty)
                + "); check the lists and the folders, or the skipped clips' reasons: "
                + "; ".join(entry["reason"] for entry in skipped if entry["split"] in empty)[:2000]
            )
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
# Audio-visual datasets (AVE, Kinetics-Sounds): list entries -> audio/<id>.wav + frames/<id>/
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
                raise ValueError(
                    f"{entry.where}: label {entry.label!r} of clip {entry.clip_id!r} is not in label_names {names}"
                )
        return names, {label: label for label in names}
    names, mapping = label_names_for((entry.label for entry in entries), known)
    if len(names) < 2:
        raise ListFormatError(f"{name}: the split lists name {len(names)} class(es) {names}: at least 2 are needed")
    if len(names) != expected_classes:
        logger.info("%s: the split lists name %d classes", name, len(names))
    return names, mapping



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
