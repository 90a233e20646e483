"""The training summary (`training_summary.json`, which the model card is built from) and the plots beside it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .methods import get_method

__all__ = ["plot_modality_contribution", "plot_training_curves", "print_results", "strip_prefix",
           "write_json_atomic"]

logger = logging.getLogger(__name__)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a warning) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots in the output folder (pip install 'hf_dimml[plots]')")
        return None
    return plt


def _save_figure(plt, figure, path: Path) -> None:
    figure.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def plot_training_curves(log_history: list[dict[str, Any]], modality_names: list[str], path: Path,
                         model_selection: dict[str, Any] | None = None) -> bool:
    """Validation accuracy of each head over epochs (the picture of modality competition), with a star where the
    final model's encoders and the rest of the model were taken (`model_selection`, the trainer's summary). False
    without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    evals = [entry for entry in log_history if "eval_accuracy" in entry]
    series = {f"{name} alone": f"eval_accuracy_{name}" for name in modality_names}
    series["fusion head"] = "eval_accuracy_fusion"
    series["weighted prediction"] = "eval_accuracy"
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, key in series.items():
        points = [(entry["epoch"], entry[key]) for entry in evals if key in entry]
        if points:
            (line,) = axis.plot(*zip(*points), marker="o", markersize=3, label=label)
            selected = _selected_epoch(model_selection, key, modality_names)
            marks = [(epoch, value) for epoch, value in points if selected is not None and abs(epoch - selected) < 1e-6]
            if marks:
                axis.plot(*zip(*marks), marker="*", markersize=14, linestyle="none", color=line.get_color(),
                          markeredgecolor="black")
    if model_selection:
        axis.plot([], [], marker="*", markersize=10, linestyle="none", color="gray", markeredgecolor="black",
                  label=f"selected ({model_selection['rule'].replace('_', '-')})")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    _save_figure(plt, figure, path)
    return True


def plot_modality_contribution(shapley: dict[str, float], num_classes: int, path: Path) -> bool:
    """Bar plot of each modality's Shapley value on test accuracy (percentage points above chance). False without
    matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    names = list(shapley)
    values = [100 * shapley[name] for name in names]
    figure, axis = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3))
    bars = axis.bar(names, values, color=[f"C{index}" for index in range(len(names))])
    axis.bar_label(bars, fmt="%.1f")
    axis.margins(y=0.15)  # room for the labels
    axis.set_ylabel("Shapley value (accuracy points)")
    axis.set_title(f"Contribution to test accuracy above chance ({100 / num_classes:.1f} %)", fontsize=9)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.grid(axis="y", alpha=0.3)
    _save_figure(plt, figure, path)
    return True


def _selected_epoch(model_selection: dict[str, Any] | None, key: str, modality_names: list[str]) -> float | None:
    """The epoch the final model took the head behind the curve `key` from (a modality's encoder, or the rest)."""
    if not model_selection:
        return None
    for name in modality_names:
        if key == f"eval_accuracy_{name}":
            return (model_selection.get("encoders") or {}).get(name, {}).get("epoch")
    return (model_selection.get("final") or {}).get("epoch")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(temporary, path)


def strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, Any]:
    """`test_accuracy_subset_audio` -> {"accuracy": ..., "subset_accuracy": {"audio": ...}} (card schema)."""
    result: dict[str, Any] = {"subset_accuracy": {}}
    for key, value in metrics.items():
        if not key.startswith(prefix + "_"):
            continue
        name = key[len(prefix) + 1:]
        if name.startswith("accuracy_subset_"):
            result["subset_accuracy"][name[len("accuracy_subset_"):]] = value
        elif name.startswith(("accuracy", "macro_f1", "loss")):
            result[name] = value
    return result


def print_results(summary: dict[str, Any], modality_names: list[str]) -> None:
    test = summary["metrics"]["test"]
    rows = [(f"full prediction ({summary['method']})", test.get("accuracy"))]
    if get_method(summary["method"]).num_stages == 2:
        # None: the selected checkpoint is from stage 1, so the fusion head is not used
        rows.append(("fusion head", test.get("accuracy_fusion")))
    rows += [(f"{name} alone", test.get(f"accuracy_{name}")) for name in modality_names]
    rows += [(f"subset {subset}", value) for subset, value in test["subset_accuracy"].items()]
    width = max(len(name) for name, _ in rows)
    print(f"\nTest accuracy ({summary['dataset']['name']}, {summary['dataset']['splits']['test']} samples), "
          f"macro-F1 {test.get('macro_f1', float('nan')):.4f}")
    for name, value in rows:
        shown = f"{value:.4f}" if value is not None else "not used (best checkpoint is from stage 1)"
        print(f"  {name:<{width}}  {shown}")
    selection = summary.get("model_selection") or {}
    if selection:
        parts = [f"{name} encoder from epoch {entry['epoch']:g}" for name, entry in selection["encoders"].items()]
        if selection.get("final"):
            parts.append(f"the rest from epoch {selection['final']['epoch']:g} (stage {selection['final']['stage']})")
        print(f"Model selection ({selection['rule']}): " + ", ".join(parts))
