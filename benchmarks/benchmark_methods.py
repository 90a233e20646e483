#!/usr/bin/env python
"""Benchmark the five training methods of hf_dimml with one budget, the same encoders and the same seeds.

    python benchmarks/benchmark_methods.py                       # 5 methods x 3 seeds on av_digits
    python benchmarks/benchmark_methods.py --methods joint dimml --seeds 0 1 2 3 4
    python benchmarks/benchmark_methods.py --extra-args --stage1_epochs 20 --stage2_epochs 5
    python benchmarks/benchmark_methods.py --quick               # smoke test: 1 seed, 2 methods, tiny budget

Every run is `training_scripts/train.py <config> --method M --seed S` in its own subprocess; the benchmark measures
the child's wall time and peak memory (max RSS from `os.wait4`) and reads the Trainer's `train_runtime` from its log.
After each run it measures each modality's OWN accuracy with a linear probe on the frozen encoder: a
`LogisticRegression(max_iter=2000)` fitted on the standardized train-split features of that modality (the model
saved at the end of the run, i.e. the validation-selected one), scored on the test split. The method's own per-modality
accuracy (its heads, by its own subset rule) says how the trained model predicts from one modality; the probe says how
much the encoder itself learned, comparably across methods (docs/design.md §5).

Outputs, in `--output` (default `benchmarks/methods`):

- `results.csv`: one row per method x seed;
- `results.md`: mean ± std over seeds per method, the command, the machine, the date and the dataset knobs;
- `competition.png`: per-modality validation accuracy over epochs of `joint` vs `dimml` (first seed), read from the
  `log_history` of each run's last checkpoint.

The per-run folders (models, checkpoints, logs) go to `--work-dir` (default `outputs/benchmark_methods/<dataset>`,
git-ignored). `--reuse` keeps the runs of an interrupted benchmark whose record is already there.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hf_dimml.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "training_scripts" / "train.py"
DEFAULT_CONFIG = "training_scripts/configs/av_digits_dimml.yaml"
ALL_METHODS = list(METHODS)  # every registered training method, in the registry's order
QUICK_METHODS = ["joint", "dimml"]  # the two the competition plot compares
QUICK_ARGS = ["--stage1_epochs", "1", "--stage2_epochs", "1", "--max_train_samples", "128"]
RECORD_NAME = "benchmark_record.json"

# How each head layout predicts from one modality alone (the "<m> (method)" columns).
LAYOUT_NOTES = {
    "certainty_weighted": "per-modality private heads (certainty-weighted with the fusion head for the full input)",
    "shared_head": "shared head on each modality alone (entropy-weighted for the full input)",
    "gaussian_embedding": "the Gaussian-embedding head with the other modalities zeroed",
    "fused": "the fused head with the other modalities zeroed",
    "fused_with_private": "that modality's own head, trained beside the fused head (the full input: the fused head)",
    "unimodal_ensemble": "that modality's own unimodal model (the full input: ensemble of them)",
}


def method_note(name: str) -> str:
    return LAYOUT_NOTES[METHODS[name].head_layout]


# ----------------------------------------------------------------------------------------------------------------------
# Running one training job
# ----------------------------------------------------------------------------------------------------------------------


def train_command(config: str, method: str, seed: int, run_dir: Path, extra_args: list[str]) -> list[str]:
    return [
        sys.executable, str(TRAIN_SCRIPT), config,
        "--method", method, "--seed", str(seed), "--output_dir", str(run_dir),
        "--report_to", "none", "--disable_tqdm", "true",
        *extra_args,
    ]


def max_rss_mib(ru_maxrss: int) -> float:
    """`ru_maxrss` is KiB on Linux, bytes on macOS."""
    return ru_maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else ru_maxrss / 1024.0


# Runs the training command and reports ITS rusage. Measuring through this small launcher matters on Linux: exec keeps
# the peak RSS of the address space it replaces, so a child forked straight from this (large: torch, the data, the
# probe) process would report at least this process's peak; the launcher's own footprint is a few MiB.
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
wall = time.perf_counter() - start
process.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as handle:
    json.dump({"returncode": process.returncode, "wall_time_s": wall, "ru_maxrss": usage.ru_maxrss,
               "cpu_time_s": usage.ru_utime + usage.ru_stime}, handle)
"""


def run_child(command: list[str], log_path: Path) -> dict[str, Any]:
    """Run `command` with its output in `log_path`: its wall time, CPU time (user + system), peak RSS (max RSS of
    that process, from `os.wait4`) and exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log_path.with_suffix(".usage.json")
    usage_path.unlink(missing_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, str(usage_path), *command], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if not usage_path.is_file():
        return {"returncode": launcher.returncode or 1, "wall_time_s": float("nan"), "cpu_time_s": float("nan"),
                "peak_rss_mib": float("nan")}
    usage = json.loads(usage_path.read_text())
    return {"returncode": usage["returncode"], "wall_time_s": usage["wall_time_s"],
            "cpu_time_s": usage["cpu_time_s"], "peak_rss_mib": max_rss_mib(usage["ru_maxrss"])}


_TRAIN_RUNTIME = re.compile(r"""['"]train_runtime['"]\s*:\s*['"]?([0-9.eE+-]+)""")


def parse_train_runtime(log_text: str) -> float | None:
    """The Trainer's `train_runtime` (seconds) from the metrics dict it logs at the end of `train()`."""
    matches = _TRAIN_RUNTIME.findall(log_text)
    return float(matches[-1]) if matches else None


# ----------------------------------------------------------------------------------------------------------------------
# Linear probe on frozen encoder features
# ----------------------------------------------------------------------------------------------------------------------


def load_benchmark_data(config: str, extra_args: list[str]) -> tuple[Any, Any]:
    """(data arguments, DatasetDict) as train.py loads them for these arguments (train truncated as in training)."""
    from hf_dimml.arguments import parse_arguments
    from hf_dimml.run import load_dataset_dict

    argv = [config, *extra_args, "--output_dir", tempfile.gettempdir(), "--report_to", "none"]
    _, data_args, _, _ = parse_arguments(argv)
    _, raw = load_dataset_dict(data_args)
    if data_args.max_train_samples:
        raw["train"] = raw["train"].select(range(min(data_args.max_train_samples, len(raw["train"]))))
    return data_args, raw


def encoder_features(model, processor, split, modality_names: list[str], batch_size: int = 256):
    """Frozen eval-mode features of every modality on one split: ({modality: (N, d) array}, labels)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from hf_dimml.data import MultimodalDataCollator

    dataset = split.select_columns([*modality_names, "labels"]).with_transform(processor.make_transform(train=False))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=MultimodalDataCollator(modality_names))
    features: dict[str, list] = {name: [] for name in modality_names}
    labels = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            out = model.dimml(**{name: batch[name] for name in modality_names}).features
            for name in modality_names:
                features[name].append(out[name].float().cpu().numpy())
            labels.append(batch["labels"].numpy())
    return {name: np.concatenate(chunks) for name, chunks in features.items()}, np.concatenate(labels)


def linear_probe(run_dir: Path, raw) -> dict[str, float]:
    """Test accuracy of a logistic regression on each modality's standardized frozen features (fit on train)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from hf_dimml import DIMMLForMultimodalClassification
    from hf_dimml.processing_dimml import DIMMLProcessor

    model = DIMMLForMultimodalClassification.from_pretrained(run_dir)
    processor = DIMMLProcessor.from_pretrained(run_dir)
    names = list(model.config.modality_names)
    train_features, train_labels = encoder_features(model, processor, raw["train"], names)
    test_features, test_labels = encoder_features(model, processor, raw["test"], names)
    accuracies = {}
    for name in names:
        scaler = StandardScaler().fit(train_features[name])
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train_features[name]), train_labels)
        accuracies[name] = float(probe.score(scaler.transform(test_features[name]), test_labels))
    return accuracies


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint log history (the competition plot)
# ----------------------------------------------------------------------------------------------------------------------


def last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the largest step, compared as a number (checkpoint-990 < checkpoint-1155)."""
    checkpoints = []
    for path in run_dir.glob("checkpoint-*"):
        suffix = path.name[len("checkpoint-"):]
        if path.is_dir() and suffix.isdigit() and (path / "trainer_state.json").is_file():
            checkpoints.append((int(suffix), path))
    return max(checkpoints)[1] if checkpoints else None


def validation_history(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation entries of the last checkpoint's `log_history` (one per epoch)."""
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        return []
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [entry for entry in state.get("log_history", []) if "eval_accuracy" in entry]


def plot_competition(histories: dict[str, list[dict[str, Any]]], modality_names: list[str], seed: int,
                     stage1_epochs: int | None, path: Path, dataset: str = "") -> bool:
    """Validation accuracy of each modality alone over epochs, one panel per modality, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(histories.values()):
        return False
    styles = {"joint": dict(color="tab:red", marker="o"), "dimml": dict(color="tab:blue", marker="s")}
    labels = {
        "joint": "joint: fused head, other modality zeroed",
        "dimml": "DI-MML: private head of the modality",
    }
    figure, axes = plt.subplots(1, len(modality_names) + 1, figsize=(4.2 * (len(modality_names) + 1), 3.8),
                                sharey=True)
    panels = [(f"{name} alone", f"eval_accuracy_{name}") for name in modality_names]
    panels.append(("full input (method's prediction)", "eval_accuracy"))
    for axis, (title, key) in zip(axes, panels):
        for method, history in histories.items():
            points = [(entry["epoch"], entry[key]) for entry in history if key in entry]
            if points:
                axis.plot(*zip(*points), markersize=3, linewidth=1.2,
                          label=labels.get(method, method), **styles.get(method, {}))
        if stage1_epochs and "dimml" in histories:
            axis.axvline(stage1_epochs, color="gray", linestyle=":", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(fontsize=8, loc="lower right")
    title = f"Modality competition{' on ' + dataset if dataset else ''}: joint vs DI-MML, validation split, seed {seed}"
    if stage1_epochs and "dimml" in histories:
        title += ("\ndotted line: end of DI-MML stage 1; stage 2 restarts from the best stage-1 checkpoint "
                  "and trains only the fusion head")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


def result_row(method: str, seed: int, summary: dict[str, Any], probe: dict[str, float], child: dict[str, Any],
               train_runtime: float | None) -> dict[str, Any]:
    test = summary["metrics"]["test"]
    names = [spec["name"] for spec in summary["modalities"]]
    row: dict[str, Any] = {"method": method, "seed": seed, "accuracy": test.get("accuracy"),
                           "macro_f1": test.get("macro_f1")}
    for name in names:
        row[f"accuracy_{name}"] = test.get(f"accuracy_{name}")
    for name in names:
        row[f"probe_accuracy_{name}"] = probe.get(name)
    for subset in summary.get("subsets", []):
        row[f"subset_accuracy_{subset}"] = test.get("subset_accuracy", {}).get(subset)
    # Each modality's Shapley value on test accuracy, from the subset accuracies (also for runs recorded before
    # train.py wrote it into the summary).
    from hf_dimml.metrics import modality_shapley_values

    shapley = modality_shapley_values(test.get("subset_accuracy", {}), names, len(summary["labels"]))
    for name in names:
        row[f"shapley_{name}"] = shapley[name]
    row["train_runtime_s"] = train_runtime
    row["wall_time_s"] = child["wall_time_s"]
    row["cpu_time_s"] = child.get("cpu_time_s")
    row["peak_rss_mib"] = child["peak_rss_mib"]
    return row


def write_csv(rows: list[dict[str, Any]], path: Path) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    return columns


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if not math.isnan(value) else ""
    return "" if value is None else value


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std, len(values)


def format_cell(values: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    stats = mean_std(values)
    if stats is None:
        return "–"
    mean, std, count = stats
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if count > 1 else "")


def code_version() -> str:
    """The git commit of the checkout (and whether the package or the scripts have uncommitted changes)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "hf_dimml",
                                "training_scripts"], cwd=REPO_ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changes = " with uncommitted changes to tracked files of hf_dimml/ or training_scripts/" if dirty else ""
    return f"git commit {commit}{changes}"


def format_timing(values: list[float | None]) -> str:
    """Median (min–max): a run slowed by other load on a shared machine shows as the max, not in the middle."""
    values = sorted(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not values:
        return "–"
    middle = len(values) // 2
    median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    return f"{median:.0f}" + (f" ({values[0]:.0f}–{values[-1]:.0f})" if len(values) > 1 else "")


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    import torch

    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "cores_available": available,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_markdown(rows: list[dict[str, Any]], summaries: dict[tuple[str, int], dict[str, Any]], meta: dict[str, Any],
                   methods: list[str], seeds: list[int], plotted: bool, path: Path) -> None:
    """`meta`: command, started (date), elapsed_s, machine, load_start, load_end."""
    machine = meta["machine"]
    first = next(iter(summaries.values()))
    names = [spec["name"] for spec in first["modalities"]]
    subsets = first.get("subsets", [])
    by_method = {method: [row for row in rows if row["method"] == method] for method in methods}
    lines = [
        f"# Methods benchmark on `{first['dataset']['name']}`",
        "",
        f"Test-split results over seeds {', '.join(map(str, seeds))} ({len(seeds)} run(s) per method): "
        "accuracies in %, mean ± sample std; times and memory: median (min–max). Generated by "
        "`benchmarks/benchmark_methods.py`.",
        "",
        "- **accuracy**, **macro-F1**: the method's own prediction from the full input.",
        f"- **<m> (method)**: the method's prediction from modality m alone, by its own rule "
        f"({'; '.join(f'{m}: {method_note(m)}' for m in methods)}).",
        "- **<m> (probe)**: linear probe on the frozen encoder of m: `LogisticRegression(max_iter=2000)` on "
        "standardized train-split features, test accuracy. How much that encoder learned, comparable across "
        "methods.",
        "- **<m> (Shapley)**: m's Shapley value on test accuracy over the modality subsets (accuracy points; the "
        "empty subset is chance): how much the method's prediction relies on m. The values sum to the accuracy "
        "minus chance.",
        "- **train s**: the Trainer's `train_runtime` (wall clock); **wall s**: the whole child process (startup, "
        "data, training, evaluation, saving); **CPU s**: user + system CPU time of the child process, less sensitive "
        "than wall time to other load on a shared machine (though not immune: torch's threads spin while they wait "
        "for a core); **peak RSS**: max resident memory of the child process (`os.wait4`).",
        "",
    ]
    header = ["method", "accuracy", "macro-F1", *[f"{n} (method)" for n in names], *[f"{n} (probe)" for n in names],
              *[f"{n} (Shapley)" for n in names], "train s", "wall s", "CPU s", "peak RSS MiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, method_rows in by_method.items():
        if not method_rows:
            continue
        cells = [f"`{method}`", format_cell([r["accuracy"] for r in method_rows]),
                 format_cell([r["macro_f1"] for r in method_rows])]
        cells += [format_cell([r.get(f"accuracy_{n}") for r in method_rows]) for n in names]
        cells += [format_cell([r.get(f"probe_accuracy_{n}") for r in method_rows]) for n in names]
        cells += [format_cell([r.get(f"shapley_{n}") for r in method_rows]) for n in names]
        cells += [format_timing([r.get(key) for r in method_rows])
                  for key in ("train_runtime_s", "wall_time_s", "cpu_time_s", "peak_rss_mib")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Every modality subset (the method's prediction from that subset; test accuracy %):", ""]
    lines += ["| method | " + " | ".join(subsets) + " |", "|---|" + "---|" * len(subsets)]
    for method, method_rows in by_method.items():
        if method_rows:
            cells = [format_cell([r.get(f"subset_accuracy_{s}") for r in method_rows]) for s in subsets]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines += ["", "Per run (accuracy %, probe %):", "",
              "| method | seed | accuracy | " + " | ".join(f"{n} (method)" for n in names) + " | "
              + " | ".join(f"{n} (probe)" for n in names) + " | train s | CPU s |",
              "|---|---|---|" + "---|" * (2 * len(names) + 2)]
    for row in rows:
        cells = [f"{100 * row['accuracy']:.1f}" if row.get("accuracy") is not None else "–"]
        cells += [f"{100 * row[f'accuracy_{n}']:.1f}" if row.get(f"accuracy_{n}") is not None else "–" for n in names]
        cells += [f"{100 * row[f'probe_accuracy_{n}']:.1f}" if row.get(f"probe_accuracy_{n}") is not None else "–"
                  for n in names]
        for key in ("train_runtime_s", "cpu_time_s"):
            cells.append(f"{row[key]:.0f}" if row.get(key) is not None else "–")
        lines.append(f"| `{row['method']}` | {row['seed']} | " + " | ".join(cells) + " |")

    training = first["training"]
    dataset = first["dataset"]
    modalities = ", ".join(f"{spec['name']} ({spec['kind']}, {spec['encoder']}, input {spec['input_shape']})"
                           for spec in first["modalities"])
    stage2 = {s["method"]: s["training"]["stage2_epochs"] for s in summaries.values()}
    lines += [
        "",
        "## Setup",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['started']} (total {meta['elapsed_s'] / 60:.1f} min for {len(rows)} runs, probes included); "
        f"code: {meta.get('code', 'unknown')}"
        + (f" (at the end: {meta['code_end']})" if meta.get("code_end", meta.get("code")) != meta.get("code") else ""),
        f"- Machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['cores_available']} available to the process, torch threads {machine['threads']}); "
        f"{machine['platform']}; Python {machine['python']}, torch {machine['torch']}, "
        f"transformers {machine.get('transformers', '?')}. Load average (1/5/15 min) at start "
        f"{'/'.join(f'{v:.1f}' for v in meta['load_start'])}, at end {'/'.join(f'{v:.1f}' for v in meta['load_end'])} "
        "(a shared machine: timings are indicative).",
        f"- Budget (same for every method): stage 1 {training['stage1_epochs']} epochs "
        f"(the one-stage methods train this long); DI-MML stage 2 (fusion head on frozen encoders) "
        f"{stage2.get('dimml', '–')} epochs; learning rate {training['learning_rate']}, optimizer "
        f"{str(training['optimizer']).removeprefix('OptimizerNames.').lower()}, batch size "
        f"{training['batch_size']}; model selection on the validation split "
        "(the saved model, probed here, is the selected one).",
        f"- Encoders / modalities: {modalities}; hidden size {first['hidden_size']}.",
        f"- Dataset: {dataset.get('description', dataset['name'])}. Splits: "
        + ", ".join(f"{k} {v}" for k, v in dataset["splits"].items()) + ".",
        f"- Dataset knobs: {dataset.get('recipe', {}).get('builder', '–')}",
    ]
    if plotted:
        lines += ["", "![Validation accuracy of each modality alone over epochs, joint vs DI-MML](competition.png)"]
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def config_dataset(config: str) -> str:
    """The dataset named in a train.py config file (train.py's default, av_digits, when it names none)."""
    import yaml

    path = Path(config) if Path(config).is_absolute() else REPO_ROOT / config
    values = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml", ".json") and path.is_file() else {}
    return str((values or {}).get("dataset", "av_digits"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None,
                        help="Dataset preset passed to train.py (default: the config's, av_digits).")
    parser.add_argument("--methods", nargs="+", default=None, choices=ALL_METHODS,
                        help=f"Methods to train (default: all: {' '.join(ALL_METHODS)}).")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="Training seeds (default: 0 1 2).")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="train.py config file shared by every run.")
    parser.add_argument("--output", default=None, help="Where results.{csv,md} and competition.png go "
                                                        "(default: benchmarks/methods; --quick: a temporary folder).")
    parser.add_argument("--work-dir", default=None,
                        help="Folder of the per-run outputs (default: outputs/benchmark_methods/<dataset>; "
                             "--quick: <output>/runs).")
    parser.add_argument("--reuse", action="store_true",
                        help="Keep runs whose benchmark record exists in the work dir instead of retraining them.")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke test: 1 seed, methods joint and dimml, " + " ".join(QUICK_ARGS) + ".")
    parser.add_argument("--extra-args", nargs=argparse.REMAINDER, default=[],
                        help="Everything after this flag is passed to every train.py run (e.g. --stage1_epochs 20).")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods = args.methods or list(QUICK_METHODS)
        args.seeds = args.seeds or [0]
        args.extra_args = [*QUICK_ARGS, *args.extra_args]
    args.methods = args.methods or list(ALL_METHODS)
    args.seeds = args.seeds or [0, 1, 2]
    if args.dataset:
        args.extra_args = ["--dataset", args.dataset, *args.extra_args]
    if args.output is None:
        args.output = tempfile.mkdtemp(prefix="benchmark_methods_") if args.quick else str(
            REPO_ROOT / "benchmarks" / "methods")
    if args.work_dir is None:
        args.work_dir = str(Path(args.output) / "runs") if args.quick else str(
            REPO_ROOT / "outputs" / "benchmark_methods" / (args.dataset or config_dataset(args.config)))
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    command = " ".join(["python benchmarks/benchmark_methods.py",
                        shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    output, work_dir = Path(args.output), Path(args.work_dir)
    output.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "started": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine_description(), "load_start": list(os.getloadavg()), "code": code_version()}
    begin = time.perf_counter()
    trained_any = False
    print(f"benchmark: methods {args.methods}, seeds {args.seeds}, config {args.config}, extra {args.extra_args}\n"
          f"  runs in {work_dir}, results in {output}", flush=True)

    _, raw = load_benchmark_data(args.config, args.extra_args)
    rows: list[dict[str, Any]] = []
    summaries: dict[tuple[str, int], dict[str, Any]] = {}
    failures = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir = work_dir / f"{method}-seed{seed}"
            record_path = run_dir / RECORD_NAME
            if args.reuse and record_path.is_file():
                record = json.loads(record_path.read_text())
                print(f"[{method} seed {seed}] reused {record_path}", flush=True)
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # stale checkpoints would confuse the last-checkpoint lookup
                command_line = train_command(args.config, method, seed, run_dir, args.extra_args)
                print(f"[{method} seed {seed}] training ...", flush=True)
                trained_any = True
                child = run_child(command_line, work_dir / "logs" / f"{method}-seed{seed}.log")
                if child["returncode"] != 0:
                    failures.append(f"{method} seed {seed}: exit code {child['returncode']} "
                                    f"(log: {work_dir / 'logs' / f'{method}-seed{seed}.log'})")
                    print("  FAILED: " + failures[-1], flush=True)
                    continue
                log_text = (work_dir / "logs" / f"{method}-seed{seed}.log").read_text(errors="replace")
                summary = json.loads((run_dir / "training_summary.json").read_text())
                probe = linear_probe(run_dir, raw)
                record = {"summary": summary, "probe": probe, "child": child,
                          "train_runtime_s": parse_train_runtime(log_text)}
                record_path.write_text(json.dumps(record, indent=2))
            summaries[(method, seed)] = record["summary"]
            row = result_row(method, seed, record["summary"], record["probe"], record["child"],
                             record["train_runtime_s"])
            rows.append(row)
            print(f"  accuracy {row['accuracy']:.4f}, "
                  + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("accuracy_", "probe_")))
                  + f"; train {row['train_runtime_s']}s, wall {row['wall_time_s']:.0f}s, "
                  f"CPU {row['cpu_time_s'] or float('nan'):.0f}s, "
                  f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    if not rows:
        raise SystemExit("benchmark: every run failed:\n" + "\n".join(failures))

    write_csv(rows, output / "results.csv")
    first = next(iter(summaries.values()))
    names = [spec["name"] for spec in first["modalities"]]
    plot_seed = args.seeds[0]
    histories = {m: validation_history(work_dir / f"{m}-seed{plot_seed}") for m in ("joint", "dimml")
                 if (m, plot_seed) in summaries}
    stage1 = summaries[("dimml", plot_seed)]["training"]["stage1_epochs"] if ("dimml", plot_seed) in summaries else None
    plotted = bool(histories) and plot_competition(histories, names, plot_seed, stage1, output / "competition.png",
                                                      first["dataset"]["name"])
    meta.update(elapsed_s=time.perf_counter() - begin, load_end=list(os.getloadavg()), code_end=code_version())
    meta_path = work_dir / "benchmark_meta.json"
    if not trained_any and meta_path.is_file():
        meta = json.loads(meta_path.read_text())  # every run reused: report the benchmark that trained them
    else:
        meta_path.write_text(json.dumps(meta, indent=2))
    write_markdown(rows, summaries, meta, args.methods, args.seeds, plotted, output / "results.md")
    print(f"\nwrote {output / 'results.csv'}, {output / 'results.md'}"
          + (f", {output / 'competition.png'}" if plotted else "") + f" ({meta['elapsed_s'] / 60:.1f} min)")
    if failures:
        raise SystemExit("benchmark: some runs failed:\n" + "\n".join(failures))
    return output


if __name__ == "__main__":
    main()
