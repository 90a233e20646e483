"""Measure how hard each modality of ``av_digits`` is on its own.

Builds ``av_digits`` with the given knobs (no cache is touched unless ``--cache-dir`` is given),
turns every example into the same fixed-size representation the model side uses

* audio (13, T) -> linear interpolation over time to ``--audio-frames`` frames (default 20),
  i.e. ``np.interp`` at ``linspace(0, T-1, frames)``, the ``align_corners=True`` convention,
  flattened to 13 x 20 = 260 features;
* image (8, 8) -> 64 features;

z-scores every feature with train statistics, and prints validation / test accuracy of

* logistic regression and a one-hidden-layer MLP (scikit-learn) on each modality alone,
* logistic regression on the concatenated features (the multimodal reference),
* the product-of-experts ensemble of the two unimodal logistic regressions (sum of
  log-probabilities; the Bayes-optimal fusion when the modalities are independent given the
  label, as they are here by construction).

Example (the command that produced the numbers in ``docs/av_digits.md``)::

    python training_scripts/measure_av_digits.py --split-seeds 0 1 2

Runs in about 5 s per split seed on one CPU core (BLAS limited to ``--threads`` 1 by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

try:
    from hf_dimml.data.av_digits import AV_DIGITS_DEFAULTS, load_av_digits
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hf_dimml.data.av_digits import AV_DIGITS_DEFAULTS, load_av_digits

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

SPLITS = ("train", "validation", "test")


def interpolate_audio(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Resample a (coefficients, T) sequence to (coefficients, num_frames) by linear interpolation."""
    audio = np.asarray(audio, dtype=np.float64)
    source_times = np.arange(audio.shape[1])
    target_times = np.linspace(0.0, audio.shape[1] - 1, num_frames)
    return np.stack([np.interp(target_times, source_times, row) for row in audio])


def fixed_size_features(split, num_frames: int) -> dict[str, np.ndarray]:
    """Flattened fixed-size audio / image features and labels of one split."""
    split = split.with_format("numpy")
    audio = np.stack([interpolate_audio(a, num_frames).ravel() for a in split["audio"]])
    image = np.asarray(split["image"], dtype=np.float64).reshape(len(split), -1)
    return {"audio": audio, "image": image, "labels": np.asarray(split["labels"])}


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score every column with the train mean / std (constant columns left at 0)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    return [(x - mean) / std for x in (train, *others)]


def make_classifier(kind: str, seed: int):
    if kind == "logreg":
        return LogisticRegression(C=1.0, max_iter=5000)
    if kind == "mlp":
        return MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=300, random_state=seed)
    raise ValueError(f"unknown classifier kind {kind!r}")


def measure(dataset, num_frames: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
    """Accuracies {row name: {"validation": acc, "test": acc}} for one built dataset."""
    features = {name: fixed_size_features(dataset[name], num_frames) for name in SPLITS}
    labels = {name: features[name]["labels"] for name in SPLITS}
    inputs: dict[str, list[np.ndarray]] = {}
    for modality in ("audio", "image"):
        inputs[modality] = standardize(*(features[name][modality] for name in SPLITS))
    inputs["audio+image"] = [np.concatenate([a, i], axis=1) for a, i in zip(inputs["audio"], inputs["image"])]

    results: dict[str, dict[str, float]] = {}
    log_probs: dict[str, list[np.ndarray]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for modality, kinds in (("audio", ("logreg", "mlp")), ("image", ("logreg", "mlp")), ("audio+image", ("logreg",))):
            train_x, val_x, test_x = inputs[modality]
            for kind in kinds:
                model = make_classifier(kind, seed).fit(train_x, labels["train"])
                results[f"{modality} {kind}"] = {
                    "validation": float((model.predict(val_x) == labels["validation"]).mean()),
                    "test": float((model.predict(test_x) == labels["test"]).mean()),
                }
                if kind == "logreg" and modality != "audio+image":
                    log_probs[modality] = [model.predict_log_proba(val_x), model.predict_log_proba(test_x)]
    ensemble = [log_probs["audio"][i] + log_probs["image"][i] for i in range(2)]
    results["ensemble of unimodal logregs (product)"] = {
        "validation": float((ensemble[0].argmax(1) == labels["validation"]).mean()),
        "test": float((ensemble[1].argmax(1) == labels["test"]).mean()),
    }
    return results


def format_table(per_seed: dict[int, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per model, validation / test accuracy (%), mean ± std over seeds."""
    rows = list(next(iter(per_seed.values())))
    seeds = list(per_seed)
    header = "| model | validation acc. % | test acc. % |"
    lines = [f"split seeds: {seeds}", header, "|---|---|---|"]
    for row in rows:
        cells = []
        for split in ("validation", "test"):
            values = 100 * np.array([per_seed[s][row][split] for s in seeds])
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values[0]:.1f}")
        lines.append(f"| {row} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0], help="one dataset build per seed")
    parser.add_argument("--image-energy", type=float, default=AV_DIGITS_DEFAULTS["image_energy"])
    parser.add_argument("--image-noise", type=float, default=AV_DIGITS_DEFAULTS["image_noise"])
    parser.add_argument("--audio-noise", type=float, default=AV_DIGITS_DEFAULTS["audio_noise"])
    parser.add_argument("--audio-frames", type=int, default=20, help="frames after time interpolation")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="BLAS / OpenMP threads (default 1: small problems, and oversubscribed BLAS threads are ~20x slower)",
    )
    parser.add_argument("--cache-dir", default=None, help="cache the builds here (default: build in memory)")
    parser.add_argument("--json", default=None, help="also write the per-seed results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    per_seed = {}
    for seed in args.split_seeds:
        dataset = load_av_digits(
            split_seed=seed,
            image_energy=args.image_energy,
            image_noise=args.image_noise,
            audio_noise=args.audio_noise,
            cache_dir=args.cache_dir,
            use_cache=args.cache_dir is not None,
        )
        with threadpool_limits(limits=args.threads):
            per_seed[seed] = measure(dataset, num_frames=args.audio_frames, seed=seed)
    sizes = {name: len(dataset[name]) for name in SPLITS}
    print(
        f"av_digits image_energy={args.image_energy} image_noise={args.image_noise} "
        f"audio_noise={args.audio_noise} audio_frames={args.audio_frames} sizes={sizes}"
    )
    print(format_table(per_seed))
    print(f"elapsed {time.perf_counter() - start:.1f} s")
    report = {"knobs": vars(args), "sizes": sizes, "results": per_seed}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
