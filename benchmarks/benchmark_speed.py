#!/usr/bin/env python
"""Speed benchmarks of hf_dimml against naive baselines, with targets, written into BENCHMARKS.md.

    python benchmarks/benchmark_speed.py                      # full CPU run (<= 10 min on 2 cores)
    python benchmarks/benchmark_speed.py --quick              # every row at its smallest size (< 2 min)
    python benchmarks/benchmark_speed.py --device cuda        # GPU run, adds row 6 (stage-1 MFU, data pipeline)
    python benchmarks/benchmark_speed.py --device cpu --gpu-rows --quick   # row 6's code path on the CPU

On a shared machine (load average near or above the core count) add ``--threads 1``: measured on a loaded 2-core VM,
two torch threads made oneDNN's bf16 backward-weights kernels ~100x slower at small spatial sizes and small
elementwise ops ~40x slower (threads waiting on a descheduled peer), which says nothing about the package. OpenMP's
wait policy is left as it is (recorded in the output): ``OMP_WAIT_POLICY=PASSIVE`` helps a loaded machine, but on a
quiet one it costs every small parallel op a thread wake-up (2-thread DUC at B = 256: 2.5 ms instead of 0.7 ms).

Rows (each timed as the median over repeats; every ratio is measured side by side in one process, the two sides
interleaved, and reported as the median of the per-repeat ratios):

1. DUC loss forward + backward, package `duc_loss` vs a per-sample loop (one softmax term per sample i).
2. Effective-dimension statistics on precomputed features, package vs a per-sample accumulation loop; and the
   feature pass that feeds them (`DIMMLTrainer.select_effective_dimensions`), batched vs batch size 1.
3. `DIMMLTrainer` stage-1 training throughput vs a minimal hand-written loop doing the same math.
4. One stage-1 training step at the reference shapes, bf16 autocast vs fp32.
5. Peak memory of a training step per batch size; inference latency of the certainty-weighted prediction vs the
   fusion head alone (both with the encoders, as a user calls the model).
6. (`--device cuda` or `--gpu-rows`) stage-1 samples/s with bf16, channels_last and torch.compile on/off, model-FLOPs
   utilisation against the GPU's dense bf16 peak; as the ceiling for that MFU, one bare timm resnet18 trained on the
   same number of images per step (6c); the data pipeline (processor + collator + DataLoader) in samples/s.

The script replaces the section of BENCHMARKS.md between ``<!-- cpu -->`` and ``<!-- /cpu -->`` (or the ``cuda``
markers for a GPU run), so a CPU and a GPU run are both kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification  # noqa: E402
from hf_dimml.losses import dimml_stage1_loss, duc_loss, effective_dimension_accuracy  # noqa: E402

DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of torch.cuda.get_device_name().
# First match wins, so the more specific names come first. Override with --peak-tflops.
GPU_BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
]

# The DI-MML reference shapes (CREMA-D / AVE recipe of the OGM-GE line): a 257 x 188 spectrogram and 3 RGB frames.
REFERENCE_AUDIO = [1, 257, 188]
REFERENCE_FRAMES = [3, 3, 224, 224]


# ---------------------------------------------------------------------------------------------------------------------
# Results and timing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One table row. `ratio` is the compared quantity (speed-up, throughput ratio, overhead ...)."""

    row: str
    benchmark: str
    size: str
    package: str
    baseline: str = ""
    ratio: float | None = None
    ratio_text: str = ""
    target: str = ""
    holds: bool | None = None  # None: no target for this size / not applicable
    note: str = ""
    values: dict[str, float] = field(default_factory=dict)  # raw numbers (seconds, samples/s, bytes ...)

    @property
    def verdict(self) -> str:
        if self.holds is None:
            return "n/a" if self.target else ""
        return "yes" if self.holds else "**no**"


def speedup_result(row, benchmark, size, package_s, baseline_s, ratio, target=None, unit_scale=1e3, unit="ms",
                   note="", applies=True) -> Result:
    target_text = f"≥ {target:g}×" if target is not None else ""
    holds = (ratio >= target) if (target is not None and applies) else None
    return Result(
        row=row, benchmark=benchmark, size=size,
        package=f"{package_s * unit_scale:.3g} {unit}", baseline=f"{baseline_s * unit_scale:.3g} {unit}",
        ratio=ratio, ratio_text=f"{ratio:.1f}×", target=target_text, holds=holds, note=note,
        values={"package_s": package_s, "baseline_s": baseline_s},
    )


class Timer:
    """Interleaved timing of several callables: per repeat each runs `number` times, in alternating order."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], Any], number: int = 1) -> float:
        self.sync()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        self.sync()
        return (time.perf_counter() - start) / number

    def interleaved(self, fns: dict[str, Callable[[], Any]], repeats: int, number: int = 1,
                    warmup: int = 1) -> dict[str, list[float]]:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        self.sync()
        times: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        for repeat in range(repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                times[name].append(self.once(fns[name], number))
        return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of the per-repeat ratios (robust to load drifting between repeats)."""
    return median([n / d for n, d in zip(numerators, denominators)])


# ---------------------------------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def machine_info(device: torch.device) -> dict[str, Any]:
    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "bf16_flags": {flag: flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["gpu_bf16_peak_tflops"] = gpu_peak_tflops(info["gpu"])
    return info


def gpu_peak_tflops(name: str) -> float | None:
    for key, peak in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------------------------------------


def make_config(audio_shape, visual_shape, encoder="resnet18", hidden_size=512, num_labels=6, visual_kind="frames",
                encoder_kwargs=None, **overrides) -> DIMMLConfig:
    visual_kind = "frames" if len(visual_shape) == 4 else visual_kind
    audio_kind = "spectrogram" if len(audio_shape) == 3 else "vector"
    modalities = [
        {"name": "audio", "kind": audio_kind, "encoder": encoder if audio_kind != "vector" else "mlp",
         "input_shape": list(audio_shape)},
        {"name": "visual", "kind": visual_kind, "encoder": encoder if visual_kind != "vector" else "mlp",
         "input_shape": list(visual_shape)},
    ]
    if encoder_kwargs:
        for spec in modalities:
            spec["encoder_kwargs"] = dict(encoder_kwargs)
    kwargs = dict(modalities=modalities, hidden_size=hidden_size, num_labels=num_labels)
    kwargs.update(overrides)
    return DIMMLConfig(**kwargs)


def half_mask(num_modalities: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """A random effective-dimension mask, about half of the dimensions per modality (as `acc > mean` selects)."""
    return torch.rand(num_modalities, dim, generator=generator) > 0.5


# The DI-MML reference weights (w = 1, lambda = 1) and CREMA-D's DUC temperature.
SHARED_WEIGHT, DUC_WEIGHT, DUC_TEMPERATURE = 1.0, 1.0, 50.0


def make_model(config: DIMMLConfig, device: torch.device, seed: int = 0):
    """The model, with `duc_mask`: a fixed effective-dimension mask, so that DUC is active from the first step (no
    feature pass inside the timing)."""
    torch.manual_seed(seed)
    model = DIMMLForMultimodalClassification(config).to(device)
    model.duc_mask = half_mask(len(config.modalities), config.hidden_size,
                               torch.Generator().manual_seed(seed)).to(device)
    return model


def use_fixed_duc_mask(trainer, mask: torch.Tensor) -> None:
    """The trainer's DI-MML method with DUC active from the first step with `mask` (as the hand loop has it)."""
    trainer.method.duc_mask, trainer.method.duc_mask_ready = mask, True


def random_inputs(config: DIMMLConfig, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {spec["name"]: torch.randn(batch, *spec["input_shape"], generator=generator)
              for spec in config.modalities}
    inputs["labels"] = torch.randint(0, config.num_labels, (batch,), generator=generator)
    return {name: tensor.to(device) for name, tensor in inputs.items()}


class TensorDictDataset(torch.utils.data.Dataset):
    """Preprocessed samples held in memory: one dict of tensors per sample (what the collator stacks)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.length = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.tensors.items()}


def stage1_step(model, inputs: dict[str, torch.Tensor], optimizer, autocast_dtype=None, max_grad_norm=None):
    """One DI-MML stage-1 step by hand: forward, stage-1 loss with DUC, backward, (clip,) optimiser step."""
    modality_inputs = {name: value for name, value in inputs.items() if name != "labels"}
    device_type = inputs["labels"].device.type
    context = (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
    with context:
        outputs = model(**modality_inputs, training_stage=1)
        base = model._orig_mod if hasattr(model, "_orig_mod") else model
        loss, _ = dimml_stage1_loss(
            outputs.modality_logits, outputs.shared_logits, outputs.features, inputs["labels"],
            shared_weight=SHARED_WEIGHT, duc_weight=DUC_WEIGHT, duc_temperature=DUC_TEMPERATURE,
            effective_mask=base.duc_mask,
        )
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def sgd(model) -> torch.optim.Optimizer:
    """The DI-MML reference optimiser."""
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Row 1: DUC
# ---------------------------------------------------------------------------------------------------------------------


def naive_duc(features: list[torch.Tensor], mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Reference style: for every ordered pair, a Python loop over anchor samples i, one softmax term each."""
    total = features[0].new_zeros((), dtype=torch.float32)
    for t, teacher in enumerate(features):
        for s, student in enumerate(features):
            if t == s:
                continue
            dims = torch.nonzero(mask[t] & ~mask[s]).flatten()
            if dims.numel() == 0:
                continue
            teacher_dims = teacher[:, dims].detach()
            terms = []
            for i in range(student.shape[0]):
                scores = (student[i, dims] @ teacher_dims.T) / temperature
                terms.append(torch.logsumexp(scores, dim=0) - scores[i])
            total = total + torch.stack(terms).mean()
    return total


def duc_masks(dim: int, per_direction: int) -> torch.Tensor:
    """Two modalities whose effective sets each hold `per_direction` dimensions the other lacks."""
    mask = torch.zeros(2, dim, dtype=torch.bool)
    half = dim // 2
    mask[0, :half] = True
    mask[1, per_direction:per_direction + half] = True
    return mask


def row_duc(ctx: "Context") -> list[Result]:
    batches = [16] if ctx.quick else [16, 64, 256]
    targets = {64: 20.0, 256: 40.0}
    dim, per_direction = 512, 150
    mask = duc_masks(dim, per_direction).to(ctx.device)
    results = []
    for batch in batches:
        generator = torch.Generator().manual_seed(batch)
        features = [torch.randn(batch, dim, generator=generator).to(ctx.device).requires_grad_() for _ in range(2)]
        fast, slow = duc_loss(features, mask, 50.0), naive_duc(features, mask, 50.0)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)

        def package():
            duc_loss(features, mask, 50.0).backward()

        def baseline():
            naive_duc(features, mask, 50.0).backward()

        # The floor under any implementation: per ordered pair one B x |K| x B matmul forward and one backward (the
        # teacher side gets no gradient), at this device's matmul speed.
        pair_sides = [torch.randn(batch, per_direction, device=ctx.device) for _ in range(2)]
        pair_similarity = torch.randn(batch, batch, device=ctx.device)

        def matmuls():
            for _ in range(2):
                torch.mm(pair_sides[0], pair_sides[1].T)
                torch.mm(pair_similarity, pair_sides[1])

        package_number = max(1, 2000 // batch) if not ctx.tiny else 1
        times = ctx.timer.interleaved({"package": package, "baseline": baseline, "matmuls": matmuls},
                                      repeats=ctx.repeats(7), number=package_number, warmup=1)
        ratio = paired_ratio(times["baseline"], times["package"])
        floor = median(times["matmuls"])
        matmul_flops = 4 * 2 * batch * batch * per_direction
        note = (f"the four B×{per_direction}×B matmuls alone take {floor * 1e3:.3g} ms here "
                f"({matmul_flops / floor / 1e9:.0f} GFLOP/s): no implementation of this loss can exceed "
                f"{paired_ratio(times['baseline'], times['matmuls']):.0f}× on this device; the package spends "
                f"{median(times['package']) / floor:.2f}× the matmul time")
        results.append(speedup_result(
            "1", "DUC loss fwd+bwd (2 modalities, d 512, 150 dims/direction)", f"B={batch}",
            median(times["package"]), median(times["baseline"]), ratio, targets.get(batch), unit="ms", note=note,
        ))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Row 2: effective-dimension statistics and the feature pass
# ---------------------------------------------------------------------------------------------------------------------


def naive_effective_dimension_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Reference style: class means accumulated sample by sample, then per sample a hit per dimension."""
    dim = features.shape[1]
    sums = torch.zeros(num_classes, dim, dtype=features.dtype, device=features.device)
    counts = torch.zeros(num_classes, dtype=features.dtype, device=features.device)
    for i in range(features.shape[0]):
        sums[labels[i]] += features[i]
        counts[labels[i]] += 1
    means = sums / counts.clamp_min(1)[:, None]
    hits = torch.zeros(dim, dtype=torch.float64, device=features.device)
    for i in range(features.shape[0]):
        hits += (features[i] - means).abs().argmin(dim=0) == labels[i]
    return (hits / features.shape[0]).float()


def synthetic_features(num_samples: int, dim: int, num_classes: int, seed: int = 0):
    """Pooled-CNN-like features: non-negative (post-ReLU average pool), each dimension weakly class dependent."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    class_shift = torch.randn(num_classes, dim, generator=generator) * 0.5
    features = torch.relu(torch.randn(num_samples, dim, generator=generator) + class_shift[labels] + 0.5)
    return features, labels


def row_effective_dimensions(ctx: "Context") -> list[Result]:
    num_samples = 1674 if ctx.quick else 6698  # CREMA-D's training split: 6,698 clips
    if ctx.tiny:
        num_samples = 400
    dim, num_classes = 512, 6
    features, labels = synthetic_features(num_samples, dim, num_classes)
    features, labels = features.to(ctx.device), labels.to(ctx.device)
    fast = effective_dimension_accuracy(features, labels, num_classes)
    slow = naive_effective_dimension_accuracy(features, labels, num_classes)
    # The means are summed in another order: a sample sitting exactly on a boundary could flip; allow one.
    assert float((fast - slow).abs().max()) <= 1.0 / num_samples + 1e-7, "package and naive statistics disagree"
    times = ctx.timer.interleaved(
        {"package": lambda: effective_dimension_accuracy(features, labels, num_classes),
         "baseline": lambda: naive_effective_dimension_accuracy(features, labels, num_classes)},
        repeats=ctx.repeats(5), warmup=1,
    )
    ratio = paired_ratio(times["baseline"], times["package"])
    results = [speedup_result(
        "2a", f"effective-dim statistics ({dim} dims, {num_classes} classes)", f"N={num_samples}",
        median(times["package"]), median(times["baseline"]), ratio, 40.0, applies=not ctx.quick,
    )]
    results.append(row_feature_pass(ctx))
    return results


def feature_pass_trainers(model, dataset, output_dir: str, batch_sizes: list[int], device: torch.device):
    from hf_dimml.data import MultimodalDataCollator
    from hf_dimml.trainer import DIMMLTrainer, DIMMLTrainingArguments

    trainers = {}
    for batch in batch_sizes:
        args = DIMMLTrainingArguments(
            output_dir=output_dir, stage1_epochs=1, stage2_epochs=0, per_device_eval_batch_size=batch,
            per_device_train_batch_size=batch, report_to=[], disable_tqdm=True, save_strategy="no",
            eval_strategy="no", logging_steps=10 ** 6, use_cpu=device.type == "cpu", dataloader_num_workers=0,
        )
        trainers[batch] = DIMMLTrainer(model=model, args=args, train_dataset=dataset,
                                       data_collator=MultimodalDataCollator(["audio", "visual"]))
    return trainers


def row_feature_pass(ctx: "Context") -> Result:
    side = 32 if ctx.quick else 64
    num_samples = 16 if ctx.tiny else (64 if ctx.quick else 256)
    config = make_config([1, side, side], [3, side, side], visual_kind="image")
    model = make_model(config, ctx.device)
    generator = torch.Generator().manual_seed(1)
    dataset = TensorDictDataset({
        "audio": torch.randn(num_samples, 1, side, side, generator=generator),
        "visual": torch.randn(num_samples, 3, side, side, generator=generator),
        "labels": torch.randint(0, 6, (num_samples,), generator=generator),
    })
    with tempfile.TemporaryDirectory() as output_dir:
        trainers = feature_pass_trainers(model, dataset, output_dir, [64, 1], ctx.device)
        masks = {batch: trainer.method.select_effective_dimensions() for batch, trainer in trainers.items()}
        agree = float((masks[64] == masks[1]).float().mean())
        times = ctx.timer.interleaved(
            {batch: trainer.method.select_effective_dimensions for batch, trainer in trainers.items()},
            repeats=ctx.repeats(3), warmup=0,
        )
    per_sample = {batch: [t / num_samples for t in values] for batch, values in times.items()}
    ratio = paired_ratio(per_sample[1], per_sample[64])
    return speedup_result(
        "2b", f"feature pass for the statistics: 2×resnet18, {side}px, batch 64 vs 1, per sample",
        f"N={num_samples}", median(per_sample[64]), median(per_sample[1]), ratio, 3.0,
        note=f"The DI-MML method's select_effective_dimensions() with per_device_eval_batch_size 64 vs 1 (eval mode: "
             f"same features up to float rounding; the selected masks agree on {agree:.1%} of the dimensions)",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Row 3: Trainer vs hand-written loop
# ---------------------------------------------------------------------------------------------------------------------


class StepClock:
    """TrainerCallback that timestamps the end of every optimiser step."""

    def __init__(self, device: torch.device) -> None:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.stamp()

        self.callback = _Callback()
        self.device = device
        self.stamps: list[float] = []

    def stamp(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def throughput(self, batch: int, warmup_steps: int) -> float:
        steps = len(self.stamps) - 1 - warmup_steps
        return steps * batch / (self.stamps[-1] - self.stamps[warmup_steps])


def row_trainer_throughput(ctx: "Context") -> list[Result]:
    from hf_dimml.data import MultimodalDataCollator
    from hf_dimml.trainer import DIMMLTrainer, DIMMLTrainingArguments

    if ctx.quick:
        # MLPs of moderate width: per-step compute still well above the per-step bookkeeping.
        config = make_config([1024], [1024], encoder="mlp", encoder_kwargs={"hidden_sizes": [1024, 512]},
                             visual_kind="vector")
        batch, steps, warmup_steps = 64, (6 if ctx.tiny else 20), 2
        description = "2 MLP encoders (1024→1024→512), batch 64"
    elif ctx.device.type == "cuda":
        # On a GPU, 64-px inputs leave each step launch-bound; the reference shapes give it real work.
        config = make_config(REFERENCE_AUDIO, REFERENCE_FRAMES)
        batch, steps, warmup_steps = 32, 14, 2
        description = f"2 resnet18 encoders, reference shapes (audio 1×257×188, 3 frames 224 px), batch {batch}"
    else:
        side = 64
        config = make_config([1, side, side], [3, side, side], visual_kind="image")
        batch, steps, warmup_steps = 16, 14, 2
        description = f"2 resnet18 encoders, {side}×{side} inputs, batch {batch}"
    model = make_model(config, ctx.device)
    num_samples = batch * steps
    generator = torch.Generator().manual_seed(2)
    dataset = TensorDictDataset({
        **{spec["name"]: torch.randn(num_samples, *spec["input_shape"], generator=generator)
           for spec in config.modalities},
        "labels": torch.randint(0, config.num_labels, (num_samples,), generator=generator),
    })
    collator = MultimodalDataCollator(config.modality_names)
    max_grad_norm = 1.0  # the Trainer's default; the loop clips too

    clock = StepClock(ctx.device)
    optimizer = sgd(model)
    output_dir = tempfile.mkdtemp(prefix="dimml-bench-")
    args = DIMMLTrainingArguments(
        output_dir=output_dir, stage1_epochs=1, stage2_epochs=0, per_device_train_batch_size=batch,
        learning_rate=1e-3, lr_scheduler_type="constant", max_grad_norm=max_grad_norm, report_to=[],
        disable_tqdm=True, logging_steps=10 ** 6, eval_strategy="no", save_strategy="no",
        use_cpu=ctx.device.type == "cpu", dataloader_num_workers=0, dataloader_pin_memory=False, seed=0,
    )
    trainer = DIMMLTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                           optimizers=(optimizer, None), callbacks=[clock.callback])
    use_fixed_duc_mask(trainer, model.duc_mask)

    def run_trainer() -> float:
        clock.stamps.clear()
        trainer.train()
        return clock.throughput(batch, warmup_steps)

    def run_loop() -> float:
        clock.stamps.clear()
        model.train()
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collator,
                                             generator=torch.Generator().manual_seed(0), num_workers=0)
        for inputs in loader:
            inputs = {name: tensor.to(ctx.device) for name, tensor in inputs.items()}
            stage1_step(model, inputs, optimizer, max_grad_norm=max_grad_norm)
            clock.stamp()
        return clock.throughput(batch, warmup_steps)

    run_loop()  # warm-up of both (allocator, kernels)
    run_trainer()
    measured: dict[str, list[float]] = {"trainer": [], "loop": []}
    for repeat in range(ctx.repeats(3)):
        order = ("trainer", "loop") if repeat % 2 == 0 else ("loop", "trainer")
        for name in order:
            measured[name].append(run_trainer() if name == "trainer" else run_loop())
    ratio = paired_ratio(measured["trainer"], measured["loop"])
    holds = ratio >= 0.9
    # What the Trainer adds per step, device-independently (each call a dispatch, most a kernel launch on a GPU;
    # backward ops run on the calling thread only on a CPU, so a GPU counts the forward side).
    calls = {"trainer": count_operator_calls(run_trainer) / steps, "loop": count_operator_calls(run_loop) / steps}
    return [Result(
        row="3", benchmark=f"stage-1 training throughput, DIMMLTrainer vs hand loop ({description}, DUC on)",
        size=f"{steps} steps", package=f"{median(measured['trainer']):.1f} samples/s",
        baseline=f"{median(measured['loop']):.1f} samples/s", ratio=ratio, ratio_text=f"{ratio:.2f}×",
        target="≥ 0.9×", holds=holds if not ctx.tiny else None,
        note=f"same model, dataset, collator, batch size, SGD(momentum 0.9, wd 1e-4), grad clipping 1.0; steady state "
             f"after {warmup_steps} steps; ATen operator calls per step: Trainer {calls['trainer']:.0f}, "
             f"loop {calls['loop']:.0f}",
        values={"trainer_samples_per_s": median(measured["trainer"]), "loop_samples_per_s": median(measured["loop"])},
    )]


# ---------------------------------------------------------------------------------------------------------------------
# Row 7: each training method's step relative to joint's
# ---------------------------------------------------------------------------------------------------------------------

# Targets of the field's comparison methods (issue: OGM-GE and PMR within 1.3x of joint, MMPareto, one extra backward
# per modality, within 2.5x); the other methods are reported without a target.
METHOD_STEP_TARGETS = {"ogm": 1.3, "ogm_ge": 1.3, "pmr": 1.3, "mmpareto": 2.5}


def row_method_steps(ctx: "Context") -> list[Result]:
    """Every registered method's training step (DIMMLTrainer, same encoders, data, batch and optimiser), as time per
    step relative to `joint`'s; DI-MML's stage 1 with DUC on."""
    from hf_dimml.data import MultimodalDataCollator
    from hf_dimml.methods import METHODS
    from hf_dimml.trainer import DIMMLTrainer, DIMMLTrainingArguments

    if ctx.quick:
        base = make_config([1024], [1024], encoder="mlp", encoder_kwargs={"hidden_sizes": [1024, 512]},
                           visual_kind="vector")
        batch, steps, warmup_steps = 64, (5 if ctx.tiny else 16), 2
        description = "2 MLP encoders (1024→1024→512), batch 64"
    else:
        side = 64
        base = make_config([1, side, side], [3, side, side], visual_kind="image")
        batch, steps, warmup_steps = 32, 12, 2
        description = f"2 resnet18 encoders, {side}×{side} inputs, batch {batch}"
    generator = torch.Generator().manual_seed(3)
    dataset = TensorDictDataset({
        **{spec["name"]: torch.randn(batch * steps, *spec["input_shape"], generator=generator)
           for spec in base.modalities},
        "labels": torch.randint(0, base.num_labels, (batch * steps,), generator=generator),
    })
    collator = MultimodalDataCollator(base.modality_names)
    runs: dict[str, Callable[[], float]] = {}
    for name, method in METHODS.items():
        config = DIMMLConfig(**{**base.to_dict(), "method": name, "head_layout": method.head_layout})
        model = make_model(config, ctx.device)
        clock = StepClock(ctx.device)
        args = DIMMLTrainingArguments(
            output_dir=tempfile.mkdtemp(prefix=f"dimml-bench-{name}-"), stage1_epochs=1, stage2_epochs=0,
            per_device_train_batch_size=batch, learning_rate=1e-3, lr_scheduler_type="constant", report_to=[],
            disable_tqdm=True, logging_steps=10 ** 6, eval_strategy="no", save_strategy="no",
            use_cpu=ctx.device.type == "cpu", dataloader_num_workers=0, dataloader_pin_memory=False, seed=0,
        )
        trainer = DIMMLTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               optimizers=(sgd(model), None), callbacks=[clock.callback])
        if name == "dimml":
            use_fixed_duc_mask(trainer, model.duc_mask)

        def run(trainer=trainer, clock=clock) -> float:
            clock.stamps.clear()
            trainer.train()
            return 1.0 / clock.throughput(1, warmup_steps)  # seconds per step

        runs[name] = run
    for run in runs.values():
        run()  # warm-up (allocator, kernels)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(ctx.repeats(3)):
        for name in names if repeat % 2 == 0 else names[::-1]:
            seconds[name].append(runs[name]())
    results = []
    for name in names:
        ratio = paired_ratio(seconds[name], seconds["joint"])
        target = METHOD_STEP_TARGETS.get(name)
        results.append(Result(
            row="7", benchmark=f"training step of `{name}` vs `joint` ({description})", size=f"{steps} steps",
            package=f"{median(seconds[name]) * 1e3:.3g} ms", baseline=f"{median(seconds['joint']) * 1e3:.3g} ms",
            ratio=ratio, ratio_text=f"{ratio:.2f}×", target=f"≤ {target:g}×" if target else "",
            holds=(ratio <= target) if target and not ctx.tiny else None,
            note="" if results else (
                "DIMMLTrainer, SGD(momentum 0.9, wd 1e-4), grad clipping 1.0, steady state after "
                f"{warmup_steps} steps, interleaved repeats; per-epoch hooks outside the timed steps"),
            values={"seconds_per_step": median(seconds[name]), "joint_seconds_per_step": median(seconds["joint"])},
        ))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Row 4: bf16 autocast vs fp32
# ---------------------------------------------------------------------------------------------------------------------


def row_bf16(ctx: "Context") -> list[Result]:
    if ctx.quick:
        audio, frames, batch = [1, 64, 48], [3, 3, 64, 64], 4
        if ctx.tiny:
            audio, frames, batch = [1, 32, 24], [2, 3, 32, 32], 2
    else:
        audio, frames, batch = REFERENCE_AUDIO, REFERENCE_FRAMES, 16
    config = make_config(audio, frames)
    size = f"B={batch}, audio {'×'.join(map(str, audio))}, frames {'×'.join(map(str, frames))}"
    models = {
        "fp32": make_model(config, ctx.device),
        "bf16": make_model(config, ctx.device),
        "bf16+channels_last": make_model(config, ctx.device).to(memory_format=torch.channels_last),
    }
    optimizers = {name: sgd(model) for name, model in models.items()}
    inputs = random_inputs(config, batch, ctx.device)
    last_inputs = {
        name: (tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor)
        for name, tensor in inputs.items()
    }
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "bf16+channels_last": torch.bfloat16}
    fns = {
        name: (lambda name=name: stage1_step(models[name], last_inputs if "channels_last" in name else inputs,
                                             optimizers[name], autocast_dtype=dtypes[name]))
        for name in models
    }
    times = ctx.timer.interleaved(fns, repeats=ctx.repeats(3), warmup=1)
    applies = ctx.device.type == "cpu" and cpu_has_bf16()
    flags = sorted(flag for flag in ("avx512_bf16", "amx_bf16") if flag in cpu_flags())
    note = (f"CPU bf16 instructions: {', '.join(flags) or 'none'}; "
            + ("target applies" if applies else
               "the 2× target is for CPUs with bf16 instructions: not applicable here"))
    if ctx.quick:
        note += "; quick mode: small shapes, target not evaluated"
    results = []
    for name in ("bf16", "bf16+channels_last"):
        ratio = paired_ratio(times["fp32"], times[name])
        target = 2.0 if name == "bf16" and ctx.device.type == "cpu" else None
        results.append(speedup_result(
            "4", f"one stage-1 step (2×resnet18, SGD), {name} autocast vs fp32", size,
            median(times[name]), median(times["fp32"]), ratio, target, unit="s", unit_scale=1.0,
            applies=applies and not ctx.quick, note=note if name == "bf16" else "",
        ))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Row 5: peak memory per batch size, inference latency of the weighting
# ---------------------------------------------------------------------------------------------------------------------


def memory_probe(spec: dict[str, Any]) -> dict[str, float]:
    """One process, one batch size: peak memory of two stage-1 training steps above what the process held before."""
    device = torch.device(spec["device"])
    config = make_config(spec["audio"], spec["frames"])
    model = make_model(config, device)
    optimizer = sgd(model)
    inputs = random_inputs(config, spec["batch"], device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        exact = reset_peak_rss()  # Linux: the high-water mark restarts from the current resident set
        before = proc_status_bytes("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        stage1_step(model, inputs, optimizer, autocast_dtype=torch.bfloat16 if spec.get("bf16") else None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = proc_status_bytes("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"batch": spec["batch"], "peak_bytes": float(peak - before)}


def reset_peak_rss() -> bool:
    """Restart the process's resident-set high-water mark (VmHWM) from the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure_memory(spec: dict[str, Any]) -> dict[str, float]:
    if spec["device"] == "cuda":  # the CUDA allocator keeps exact statistics: no subprocess needed
        return memory_probe(spec)
    # CPU: ru_maxrss is a high-water mark of the whole process, so each batch size gets a fresh process.
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", json.dumps(spec),
               "--threads", str(torch.get_num_threads())]
    # Fixed mmap threshold: freed tensors go back to the OS, so the resident set follows the live tensors and the
    # high-water mark minus the resident set before the steps is the steps' peak.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=str(REPO), env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def row_memory_and_latency(ctx: "Context") -> list[Result]:
    results = []
    if ctx.quick:
        audio, frames, batch_sizes = [1, 64, 48], [3, 3, 64, 64], [2] if ctx.tiny else [2, 8]
    elif ctx.device.type == "cuda":
        audio, frames, batch_sizes = REFERENCE_AUDIO, REFERENCE_FRAMES, [16, 32, 64]
    else:
        audio, frames, batch_sizes = REFERENCE_AUDIO, REFERENCE_FRAMES, [4, 8, 16]
    method = ("torch.cuda.max_memory_allocated minus memory allocated before the steps" if ctx.device.type == "cuda"
              else "peak RSS (VmHWM, reset before the steps) minus RSS before two steps (SGD state included), "
                   "one process per batch size")
    for batch in batch_sizes:
        probe = measure_memory({"device": ctx.device.type, "audio": audio, "frames": frames, "batch": batch,
                                "bf16": ctx.device.type == "cuda"})
        mib = probe["peak_bytes"] / 2 ** 20
        results.append(Result(
            row="5a", benchmark=f"peak memory of a stage-1 training step "
                                f"({'bf16' if ctx.device.type == 'cuda' else 'fp32'}, 2×resnet18, SGD)",
            size=f"B={batch}", package=f"{mib:.0f} MiB", ratio_text=f"{mib / batch:.1f} MiB/sample",
            note=method + (f"; audio {'×'.join(map(str, audio))}, frames {'×'.join(map(str, frames))}"
                           if batch == batch_sizes[0] else ""),
            values={"peak_bytes": probe["peak_bytes"]},
        ))
    results.extend(row_latency(ctx))
    return results


def row_latency(ctx: "Context") -> list[Result]:
    if ctx.quick:
        audio, frames = ([1, 32, 24], [2, 3, 32, 32]) if ctx.tiny else ([1, 64, 48], [3, 3, 64, 64])
    else:
        audio, frames = REFERENCE_AUDIO, REFERENCE_FRAMES
    # Batch 1 is the latency a user sees for one clip; on a GPU batch 64 gives the per-sample cost of batched
    # inference (at batch 1 a GPU forward is bound by kernel launches, so a fixed ~20 extra small kernels show).
    batch_sizes = [1, 64] if ctx.device.type == "cuda" and not ctx.quick else [1]
    config = make_config(audio, frames)
    model = make_model(config, ctx.device).eval()
    with torch.no_grad():
        model.fusion_head_trained.fill_(True)  # after stage 2: the fusion head takes part in the weighting
    results = []
    for batch in batch_sizes:
        inputs = random_inputs(config, batch, ctx.device)
        modality_inputs = {name: tensor for name, tensor in inputs.items() if name != "labels"}

        def weighted_logits():
            return model(**modality_inputs).logits

        def fused_logits():
            features = model.dimml(**modality_inputs).features
            return model.fusion_head(torch.cat([features[name] for name in config.modality_names], dim=1))

        weighted, fused_only = torch.inference_mode()(weighted_logits), torch.inference_mode()(fused_logits)
        operator_calls = {"weighted": count_operator_calls(weighted), "fused": count_operator_calls(fused_only)}

        number = 1 if ctx.tiny else (5 if ctx.device.type == "cuda" else 3)
        variants = [("", weighted, fused_only)]
        if ctx.compile:
            # The whole forward is one graph (no breaks, a test checks it), so on a GPU "reduce-overhead" replays
            # it as a CUDA graph: the way to serve at batch 1, where eager mode is bound by kernel launches.
            # (no_grad, not inference_mode: compiled graphs cannot take inference tensors' version counters.)
            variants.append((", torch.compile(mode='reduce-overhead')",
                             torch.no_grad()(torch.compile(weighted_logits, mode="reduce-overhead", fullgraph=True)),
                             torch.no_grad()(torch.compile(fused_logits, mode="reduce-overhead", fullgraph=True))))
        for suffix, weighted_fn, fused_fn in variants:
            times = ctx.timer.interleaved({"weighted": weighted_fn, "fused": fused_fn},
                                          repeats=ctx.repeats(21 if ctx.device.type == "cuda" else 15),
                                          number=number, warmup=3 if suffix else 2)
            overhead = paired_ratio(times["weighted"], times["fused"]) - 1.0
            results.append(Result(
                row="5b", benchmark=f"inference latency per sample, batch {batch}: certainty-weighted prediction vs "
                                    f"fusion head alone (encoders included){suffix}",
                size=f"B={batch}, audio {'×'.join(map(str, audio))}, frames {'×'.join(map(str, frames))}",
                package=f"{median(times['weighted']) / batch * 1e3:.3g} ms",
                baseline=f"{median(times['fused']) / batch * 1e3:.3g} ms",
                ratio=overhead, ratio_text=f"{overhead * 100:+.1f} %", target="≤ 5 %",
                holds=(overhead <= 0.05) if not ctx.tiny else None,
                note="weighted = model(**inputs).logits (private heads, shared classifier, fusion head, weighting); "
                     "fused = model.dimml(**inputs) features + fusion_head; ATen operator calls per prediction "
                     f"(each a dispatch, most a kernel): weighted {operator_calls['weighted']}, fused "
                     f"{operator_calls['fused']}" if not results else "",
                values={"weighted_s": median(times["weighted"]), "fused_s": median(times["fused"])},
            ))
    return results


def count_operator_calls(fn: Callable[[], Any]) -> int:
    """ATen operator calls made by one call of `fn` (views and no-op conversions included): on a GPU at batch 1
    each costs a dispatch and most a kernel launch, whatever its size."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.calls += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.calls


# ---------------------------------------------------------------------------------------------------------------------
# Row 6: GPU training throughput, MFU, data pipeline
# ---------------------------------------------------------------------------------------------------------------------


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of `fn` (matmuls and convolutions), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def count_step_flops(model, inputs, autocast_dtype) -> float:
    """FLOPs of one stage-1 forward + backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    return count_flops(lambda: stage1_step(model, inputs, optimizer, autocast_dtype=autocast_dtype))


def row_gpu_training(ctx: "Context") -> list[Result]:
    if ctx.device.type == "cuda" and not ctx.quick:
        audio, frames, batch, steps = REFERENCE_AUDIO, REFERENCE_FRAMES, 64, 30
    elif ctx.device.type == "cuda":
        audio, frames, batch, steps = REFERENCE_AUDIO, REFERENCE_FRAMES, 16, 8
    else:  # --gpu-rows on the CPU: the same code path at a tiny size
        audio, frames, batch, steps = [1, 32, 24], [2, 3, 32, 32], 4, 3
    config = make_config(audio, frames)
    inputs = random_inputs(config, batch, ctx.device)
    autocast_dtype = torch.bfloat16
    flops = count_step_flops(make_model(config, ctx.device), inputs, autocast_dtype)
    peak = ctx.peak_tflops
    if peak is None and ctx.device.type == "cuda":
        peak = gpu_peak_tflops(torch.cuda.get_device_name(ctx.device))
    compile_options = [False, True] if ctx.compile else [False]
    results = []
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (usual for CNN training)
    size = f"B={batch}, audio {'×'.join(map(str, audio))}, frames {'×'.join(map(str, frames))}"
    for use_compile in compile_options:
        for channels_last in (False, True):
            model = make_model(config, ctx.device)
            step_inputs = inputs
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                step_inputs = {name: (t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
                               for name, t in inputs.items()}
            optimizer = sgd(model)
            runner = torch.compile(model) if use_compile else model
            compile_start = time.perf_counter()
            for _ in range(3 if use_compile else 2):  # warm-up (and compilation)
                stage1_step(runner, step_inputs, optimizer, autocast_dtype=autocast_dtype)
            ctx.timer.sync()
            warmup_s = time.perf_counter() - compile_start
            per_step = [ctx.timer.once(lambda: stage1_step(runner, step_inputs, optimizer,
                                                           autocast_dtype=autocast_dtype), number=steps)
                        for _ in range(ctx.repeats(3))]
            step_s = median(per_step)
            samples_per_s = batch / step_s
            achieved = flops / step_s / 1e12
            mfu = achieved / peak if peak else None
            name = f"bf16{', channels_last' if channels_last else ''}{', torch.compile' if use_compile else ''}"
            results.append(Result(
                row="6a", benchmark=f"stage-1 training, 2×resnet18, {name}", size=size,
                package=f"{samples_per_s:.0f} samples/s", baseline=f"{achieved:.1f} TFLOP/s",
                ratio=mfu, ratio_text=f"{mfu * 100:.1f} % MFU" if mfu is not None else "n/a (unknown peak)",
                target="≥ 25 % MFU", holds=(mfu >= 0.25) if (mfu is not None and not ctx.quick) else None,
                note="; ".join(part for part in (
                    f"{flops / 1e9:.1f} GFLOP per step (FlopCounterMode, fwd+bwd); peak {peak} TFLOP/s bf16 dense; "
                    f"data already on the device; cudnn.benchmark on" if not results else "",
                    f"{name}: warm-up incl. compilation {warmup_s:.0f} s" if use_compile else "") if part),
                values={"samples_per_s": samples_per_s, "tflops": achieved, "mfu": mfu or float("nan"),
                        "flops_per_step": flops},
            ))
    results.append(row_bare_encoder(ctx, peak, image_batch=(frames[0] + 1) * batch, image_size=frames[-1]))
    torch.backends.cudnn.benchmark = cudnn_benchmark
    results.append(row_data_pipeline(ctx, batch))
    return results


def row_bare_encoder(ctx: "Context", peak: float | None, image_batch: int, image_size: int) -> Result:
    """The ceiling for row 6a: ONE bare timm resnet18 (no hf_dimml code, no second encoder, no heads), trained by
    a minimal bf16 channels_last loop on as many images per step as row 6a's step holds (3 frames + 1 spectrogram
    per sample). The MFU it reaches is the most these encoders allow on the device."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).to(ctx.device).to(memory_format=torch.channels_last)
    images = torch.randn(image_batch, 3, image_size, image_size, device=ctx.device)
    images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss = model(images).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops = count_flops(step)
    step()
    ctx.timer.sync()
    steps = 3 if ctx.device.type != "cuda" else 30
    step_s = median([ctx.timer.once(step, number=steps) for _ in range(ctx.repeats(3))])
    achieved = flops / step_s / 1e12
    mfu = achieved / peak if peak else None
    return Result(
        row="6c", benchmark="ceiling: one bare timm resnet18 (no hf_dimml), bf16, channels_last, SGD, hand loop",
        size=f"{image_batch} images 3×{image_size}×{image_size}",
        package=f"{image_batch / step_s:.0f} images/s", baseline=f"{achieved:.1f} TFLOP/s",
        ratio=mfu, ratio_text=f"{mfu * 100:.1f} % MFU" if mfu is not None else "n/a (unknown peak)",
        note="the images of row 6a's step in one network: what the encoders themselves reach, before any package code",
        values={"images_per_s": image_batch / step_s, "tflops": achieved, "mfu": mfu or float("nan")},
    )


def synthetic_av_dataset(num_clips: int, frames_per_clip: int, frame_size: tuple[int, int], seed: int = 0):
    """A `datasets.Dataset` laid out like the builders write it: cached spectrograms (Array2D, computed with the
    real DIMMLProcessor audio recipe from synthetic waveforms) and JPEG-encoded frames (List(Image(decode=False)))."""
    import datasets
    from PIL import Image

    from hf_dimml.processing_dimml import DIMMLProcessor, resolve_modality_config, spectrogram_shape

    audio_recipe = resolve_modality_config({"name": "audio", "kind": "audio", "sampling_rate": 22050, "n_fft": 512,
                                            "hop_length": 353, "duration": 3.0})
    spectrogram_processor = DIMMLProcessor(modalities=[audio_recipe])
    rng = np.random.default_rng(seed)
    height, width = frame_size
    yy, xx = np.mgrid[0:height, 0:width]
    spectrograms, clips, labels = [], [], []
    for clip in range(num_clips):
        waveform = rng.standard_normal(int(22050 * 2.5)).astype(np.float32) * 0.1
        spectrogram = spectrogram_processor(audio=[{"array": waveform, "sampling_rate": 22050}],
                                            is_batched=True)["audio"][0, 0]
        spectrograms.append(spectrogram.numpy())
        frames = []
        for index in range(frames_per_clip):
            base = (np.sin(xx / (7.0 + clip % 5) + index) + np.cos(yy / (9.0 + index)) + 2) * 60
            pixels = np.clip(base[..., None] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            frames.append({"bytes": buffer.getvalue(), "path": None})
        clips.append(frames)
        labels.append(clip % 6)
    features = datasets.Features({
        "audio": datasets.Array2D(shape=spectrogram_shape(audio_recipe), dtype="float32"),
        "visual": datasets.List(datasets.Image(decode=False)),
        "labels": datasets.ClassLabel(names=["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]),
    })
    dataset = datasets.Dataset.from_dict({"audio": spectrograms, "visual": clips, "labels": labels},
                                         features=features)
    return dataset, audio_recipe


def row_data_pipeline(ctx: "Context", batch: int) -> Result:
    from hf_dimml.data import MultimodalDataCollator
    from hf_dimml.processing_dimml import DIMMLProcessor

    if ctx.device.type == "cuda" and not ctx.quick:
        num_clips, frame_size, frames_per_clip, num_frames, image_size = 512, (360, 480), 5, 3, 224
        workers = ctx.workers if ctx.workers is not None else min(16, max(1, (os.cpu_count() or 2) - 1))
    elif ctx.device.type == "cuda" or not ctx.tiny:
        num_clips, frame_size, frames_per_clip, num_frames, image_size = 2 * batch + 8, (360, 480), 5, 3, 224
        workers = ctx.workers if ctx.workers is not None else min(4, os.cpu_count() or 1)
    else:
        num_clips, frame_size, frames_per_clip, num_frames, image_size = 3 * batch, (60, 80), 3, 2, 32
        workers = ctx.workers if ctx.workers is not None else 1
    dataset, audio_recipe = synthetic_av_dataset(num_clips, frames_per_clip, frame_size)
    processor = DIMMLProcessor(modalities=[
        audio_recipe,
        {"name": "visual", "kind": "frames", "num_frames": num_frames, "image_size": image_size, "channels": 3,
         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "random_resized_crop": [0.08, 1.0],
         "random_flip": True},
    ])
    transformed = dataset.with_transform(processor.make_transform(train=True))
    # Steady state: the workers prefetch `prefetch_factor` batches each while the first one is awaited, so batches
    # are timed only after that many have been taken (timing from the first batch of a short epoch measured the
    # head start: 1,000 to 15,000 samples/s on one host). Clips are drawn with replacement to make the run long
    # enough without building more of them.
    prefetched = max(1, workers) * 2 + 1
    timed = 2 if ctx.tiny else max(8, 4 * workers, 256 // batch)
    sampler = torch.utils.data.RandomSampler(transformed, replacement=True, num_samples=(prefetched + timed) * batch)
    loader = torch.utils.data.DataLoader(
        transformed, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=MultimodalDataCollator(),
        pin_memory=ctx.device.type == "cuda", drop_last=True, persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    rates = []
    for _ in range(ctx.repeats(2)):
        start, count = None, 0
        for index, batch_inputs in enumerate(loader):
            for tensor in batch_inputs.values():
                tensor.to(ctx.device, non_blocking=True)
            if index + 1 == prefetched:
                ctx.timer.sync()
                start = time.perf_counter()
            elif start is not None:
                count += batch_inputs["labels"].shape[0]
        ctx.timer.sync()
        if count:
            rates.append(count / (time.perf_counter() - start))
    rate = median(rates) if rates else float("nan")
    return Result(
        row="6b", benchmark=f"data pipeline: JPEG frames + cached spectrograms → DIMMLProcessor (train) → collator → "
                            f"DataLoader({workers} workers, pin_memory={ctx.device.type == 'cuda'})",
        size=f"B={batch}, {num_frames} frames {frame_size[1]}×{frame_size[0]} JPEG → {image_size} px",
        package=f"{rate:.0f} samples/s",
        note=f"compare with row 6a: the slower side limits training; frames decoded, random-resized-cropped, "
             f"flipped and normalised per sample; {timed} batches timed after the first {prefetched} (steady state)",
        values={"samples_per_s": rate},
    )


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    quick: bool = False
    tiny: bool = False  # the test's size: quick sizes, one repeat, no target evaluation where sizes shrink further
    repeat_override: int | None = None
    compile: bool = False
    peak_tflops: float | None = None
    workers: int | None = None
    timer: Timer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.timer = Timer(self.device)

    def repeats(self, default: int) -> int:
        if self.repeat_override is not None:
            return self.repeat_override
        return max(2, default - 2) if self.quick else default


ROWS: dict[str, Callable[[Context], list[Result]]] = {
    "1": row_duc,
    "2": row_effective_dimensions,
    "3": row_trainer_throughput,
    "4": row_bf16,
    "5": row_memory_and_latency,
    "6": row_gpu_training,
    "7": row_method_steps,
}


def run_benchmarks(device: str = "cpu", quick: bool = False, rows: list[str] | None = None, gpu_rows: bool = False,
                   repeats: int | None = None, tiny: bool = False, compile: bool | None = None,
                   peak_tflops: float | None = None, workers: int | None = None,
                   log: Callable[[str], None] | None = print,
                   on_row: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Run the selected rows and return their results (row 6 only on CUDA unless `gpu_rows`)."""
    torch_device = torch.device(device)
    context = Context(device=torch_device, quick=quick or tiny, tiny=tiny, repeat_override=repeats,
                      compile=(torch_device.type == "cuda") if compile is None else compile,
                      peak_tflops=peak_tflops, workers=workers)
    selected = rows or [row for row in ROWS if row != "6" or torch_device.type == "cuda" or gpu_rows]
    results: list[Result] = []
    for row in selected:
        start = time.perf_counter()
        row_results = ROWS[row](context)
        if context.quick:  # reduced sizes: the targets are stated but not evaluated
            for result in row_results:
                result.holds = None
        results.extend(row_results)
        if log:
            for result in row_results:
                log(format_line(result))
            log(f"   (row {row}: {time.perf_counter() - start:.1f} s)")
        if on_row:
            on_row(results)
    return results


def format_line(result: Result) -> str:
    parts = [f"[{result.row}] {result.benchmark} | {result.size} | {result.package}"]
    if result.baseline:
        parts.append(f"vs {result.baseline}")
    if result.ratio_text:
        parts.append(f"→ {result.ratio_text}")
    if result.target:
        parts.append(f"(target {result.target}: {result.verdict})")
    return " ".join(parts)


def markdown_table(results: list[Result]) -> str:
    lines = ["| row | benchmark | size | package | baseline | ratio | target | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.row} | {r.benchmark} | {r.size} | {r.package} | {r.baseline} | {r.ratio_text} | "
                     f"{r.target} | {r.verdict} |")
    notes = [f"- row {r.row} ({r.size}): {r.note}" for r in results if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def render_section(device: str, command: str, info: dict[str, Any], results: list[Result], elapsed: float,
                   load_after: list[float] | None) -> str:
    flags = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in info["bf16_flags"].items())
    machine = [
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"run time {elapsed / 60:.1f} min",
        f"- CPU: {info['cpu_model']}, {info['cpu_cores']} cores available, torch threads {info['torch_threads']}, "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}",
        f"- CPU flags: {flags}",
        f"- torch {info['torch']}, Python {info['python']}",
    ]
    if "gpu" in info:
        machine.append(f"- GPU: {info['gpu']} (CUDA {info['cuda']}), dense bf16 peak used for MFU: "
                       f"{info['gpu_bf16_peak_tflops']} TFLOP/s")
    if info.get("load_average") is not None:
        machine.append(f"- load average (1, 5, 15 min) at start {info['load_average']}, at end {load_after} "
                       "(the machine may be shared: ratios are measured side by side, interleaved)")
    with_target = [r for r in results if r.holds is not None]
    held = sum(r.holds for r in with_target)
    summary = f"Targets evaluated: {len(with_target)}, holding: {held}."
    if "--quick" in command:
        summary += " (--quick: reduced sizes, targets not evaluated.)"
    failing = [f"row {r.row} ({r.size}: {r.ratio_text}, target {r.target})" for r in with_target if not r.holds]
    if failing:
        summary += " Not holding: " + "; ".join(failing) + "."
    title = "GPU" if device == "cuda" else "CPU"
    return "\n".join([f"<!-- {device} -->", f"## {title} run", "", *machine, "", markdown_table(results), "",
                      summary, f"<!-- /{device} -->"])


HEADER = """# Benchmarks

Written by `benchmarks/benchmark_speed.py` (see its docstring for what each row measures). Each device's run
replaces only its own section below: `python benchmarks/benchmark_speed.py` for the CPU section,
`python benchmarks/benchmark_speed.py --device cuda` for the GPU section.

Times are medians over repeats; a ratio is the median of per-repeat ratios of the two sides, timed interleaved in one
process. "holds: n/a" marks a target that does not apply at that size or on that machine.
"""


def write_section(path: Path, device: str, section: str) -> None:
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- {device} -->.*?<!-- /{device} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="every row at its smallest size (< 2 min on 2 cores)")
    parser.add_argument("--rows", default=None, help="comma-separated rows to run, e.g. 1,2 (default: all)")
    parser.add_argument("--gpu-rows", action="store_true", help="also run row 6 on the CPU (tiny sizes)")
    parser.add_argument("--repeats", type=int, default=None, help="override every row's number of repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="measure torch.compile variants in rows 5b and 6 (auto: on for cuda)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for the MFU")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the data-pipeline row")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file to update (BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return []
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    device = torch.device(args.device)
    info = machine_info(device)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/benchmark_speed.py", *given])
    print(f"# {command}\n# {json.dumps(info)}")
    start = time.perf_counter()
    results = run_benchmarks(
        device=args.device, quick=args.quick, rows=args.rows.split(",") if args.rows else None,
        gpu_rows=args.gpu_rows, repeats=args.repeats,
        compile=None if args.compile == "auto" else args.compile == "on",
        peak_tflops=args.peak_tflops, workers=args.workers,
        on_row=(lambda partial: Path(args.json).write_text(json.dumps(
            {"machine": info, "results": [asdict(r) for r in partial]}, indent=2))) if args.json else None,
    )
    elapsed = time.perf_counter() - start
    load_after = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    section = render_section(device.type, command, info, results, elapsed, load_after)
    print()
    print(section)
    if not args.no_write:
        write_section(Path(args.output), device.type, section)
        print(f"\nupdated {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=2))
    return results


if __name__ == "__main__":
    main()
