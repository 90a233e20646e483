"""DIMMLTrainer and the DI-MML losses: gradient isolation, DUC and effective dimensions against naive references,
gradient accumulation, bf16 autocast, two-process data parallel training, kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from safetensors.torch import load_file

from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification
from hf_dimml.methods import METHOD_STATE_FILE
from hf_dimml.losses import dimml_stage1_loss, duc_loss, effective_dimension_accuracy, select_effective_dimensions
from hf_dimml.trainer import DIMMLTrainer, DIMMLTrainingArguments, modality_subsets

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4


def vector_config(**overrides) -> DIMMLConfig:
    kwargs = dict(
        modalities=[
            {"name": "a", "kind": "vector", "input_shape": [6], "encoder_kwargs": {"hidden_sizes": [16]}},
            {"name": "b", "kind": "vector", "input_shape": [5], "encoder_kwargs": {"hidden_sizes": [16]}},
        ],
        hidden_size=8,
        num_labels=NUM_CLASSES,
    )
    kwargs.update(overrides)
    return DIMMLConfig(**kwargs)


def vector_config3(**overrides) -> DIMMLConfig:
    """Three modalities: `a` informative, `b` weakly, `c` barely (see `vector_dataset3`)."""
    config = vector_config(**overrides)
    config.modalities.append(
        {"name": "c", "kind": "vector", "input_shape": [4], "encoder": "mlp", "encoder_kwargs": {"hidden_sizes": [16]}})
    return DIMMLConfig(**{**config.to_dict(), "modalities": config.modalities})


def vector_dataset3(size: int = 256, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed + 100)
    base = vector_dataset(size, seed)
    labels = np.asarray(base["labels"])
    c = rng.normal(size=(size, 4)) + 0.3 * np.eye(NUM_CLASSES, 4)[labels]
    return base.add_column("c", list(c.astype("float32"))).with_format("torch")


def vector_dataset(size: int = 256, seed: int = 0) -> datasets.Dataset:
    """Modality a is informative, b weakly so: an imbalanced pair."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size)
    a = rng.normal(size=(size, 6)) + 2.0 * np.eye(NUM_CLASSES, 6)[labels]
    b = rng.normal(size=(size, 5)) + 0.7 * np.eye(NUM_CLASSES, 5)[labels]
    return datasets.Dataset.from_dict(
        {"a": a.astype("float32"), "b": b.astype("float32"), "labels": labels}
    ).with_format("torch")


def training_args(tmp_path, **overrides) -> DIMMLTrainingArguments:
    kwargs = dict(
        output_dir=str(tmp_path),
        stage1_epochs=2,
        stage2_epochs=1,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=0.03,
        optim="adamw_torch",
        logging_steps=2,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        duc_start_epoch=1,
        duc_temperature=2.0,
    )
    kwargs.update(overrides)
    return DIMMLTrainingArguments(**kwargs)


def make_trainer(tmp_path, config=None, dataset=None, init_seed=0, **arg_overrides) -> DIMMLTrainer:
    torch.manual_seed(init_seed)
    model = DIMMLForMultimodalClassification(config or vector_config())
    dataset = dataset if dataset is not None else vector_dataset()
    return DIMMLTrainer(model=model, args=training_args(tmp_path, **arg_overrides),
                        train_dataset=dataset, eval_dataset=dataset)


# --- losses against hand computations -----------------------------------------------------------------------------


def naive_duc(features: list[torch.Tensor], mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference's per-sample loop: one softmax per anchor sample i over all samples j."""
    total = torch.zeros(())
    for t, teacher in enumerate(features):
        for s, student in enumerate(features):
            if t == s:
                continue
            dims = [k for k in range(mask.shape[1]) if mask[t, k] and not mask[s, k]]
            if not dims:
                continue
            per_sample = []
            for i in range(student.shape[0]):
                scores = torch.stack([
                    sum(student[i, k] * teacher[j, k].detach() for k in dims) / temperature
                    for j in range(student.shape[0])
                ])
                per_sample.append(-(scores[i] - torch.logsumexp(scores, 0)))
            total = total + torch.stack(per_sample).mean()
    return total


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_duc_equals_naive_per_sample_reference(num_modalities):
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(5, 7, generator=generator, requires_grad=True) for _ in range(num_modalities)]
    mask = torch.rand(num_modalities, 7, generator=generator) > 0.5
    fast = duc_loss(features, mask, temperature=0.7)
    slow = naive_duc(features, mask, temperature=0.7)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    fast_grads = torch.autograd.grad(fast, features)
    slow_grads = torch.autograd.grad(slow, features)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-5, atol=1e-6)


def test_duc_gradient_reaches_only_the_student():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(6, 4, generator=generator, requires_grad=True)
    student = torch.randn(6, 4, generator=generator, requires_grad=True)
    # Dimensions 0-1 are effective for the teacher only: the only non-empty direction is teacher -> student.
    mask = torch.tensor([[False, False, False, True], [True, True, False, True]])  # rows: student, teacher
    loss = duc_loss([student, teacher], mask, temperature=1.0)
    assert loss > 0
    student_grad, teacher_grad = torch.autograd.grad(loss, [student, teacher], allow_unused=True)
    assert teacher_grad is None or torch.count_nonzero(teacher_grad) == 0
    assert torch.count_nonzero(student_grad[:, :2]) > 0
    assert torch.count_nonzero(student_grad[:, 2:]) == 0  # dims outside K get nothing


def test_duc_with_no_decoupled_dimensions_is_zero():
    features = [torch.randn(4, 3), torch.randn(4, 3)]
    mask = torch.ones(2, 3, dtype=torch.bool)  # same effective dims: every K is empty
    assert duc_loss(features, mask, temperature=1.0).item() == 0.0


def test_effective_dimensions_equal_naive_per_sample_computation():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    features = rng.normal(size=(40, 9)) + labels[:, None] * rng.normal(size=9)
    features[:, 2] = 0.5  # a constant dimension: every class mean ties, argmin picks class 0
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    hits = np.zeros(9)
    for i in range(40):  # the reference's batch-size-1 loop
        for k in range(9):
            nearest = int(np.argmin([abs(features[i, k] - means[c, k]) for c in range(3)]))
            hits[k] += nearest == labels[i]
    naive_accuracy = hits / 40
    accuracy = effective_dimension_accuracy(torch.tensor(features), torch.tensor(labels), 3, chunk_size=7)
    np.testing.assert_allclose(accuracy.numpy(), naive_accuracy, rtol=1e-6)
    mask = select_effective_dimensions(torch.tensor(features), torch.tensor(labels), 3)
    assert mask.tolist() == (naive_accuracy > naive_accuracy.mean()).tolist()


def test_stage1_loss_matches_hand_computation():
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config())
    data = vector_dataset(8)[:]
    out = model(a=data["a"], b=data["b"], training_stage=1)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, :3] = True
    loss, parts = dimml_stage1_loss(out.modality_logits, out.shared_logits, out.features, data["labels"],
                                    shared_weight=0.5, duc_weight=2.0, duc_temperature=3.0, effective_mask=mask)
    expected = sum(F.cross_entropy(out.modality_logits[m], data["labels"]) for m in "ab")
    expected = expected + 0.5 * sum(F.cross_entropy(out.shared_logits[m], data["labels"]) for m in "ab")
    expected = expected + 2.0 * naive_duc([out.features["a"], out.features["b"]], mask, 3.0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"loss_private_a", "loss_private_b", "loss_shared_a", "loss_shared_b", "loss_duc"}


# --- gradient isolation ---------------------------------------------------------------------------------------------


def test_gradient_isolation_between_modalities():
    """Modality a's loss terms give no gradient to encoder b (and vice versa); the shared classifier gets both."""
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config())
    data = vector_dataset(16)[:]
    out = model(a=data["a"], b=data["b"], training_stage=1)
    labels = data["labels"]
    encoder = {m: list(model.dimml.encoders[m].parameters()) for m in "ab"}
    shared = list(model.shared_classifier.parameters())
    for own, other in (("a", "b"), ("b", "a")):
        terms = F.cross_entropy(out.modality_logits[own], labels) + F.cross_entropy(out.shared_logits[own], labels)
        grads = torch.autograd.grad(terms, encoder[other] + encoder[own] + shared, allow_unused=True,
                                    retain_graph=True)
        n_other, n_own = len(encoder[other]), len(encoder[own])
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads[:n_other]), f"encoder {other} got gradient"
        assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads[n_other:n_other + n_own])
        assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads[-len(shared):])
    # The full stage-1 loss, DUC included: encoder b's gradient equals that of the terms b learns from alone.
    mask = torch.tensor([[True] * 4 + [False] * 4, [False] * 2 + [True] * 6])
    full, _ = dimml_stage1_loss(out.modality_logits, out.shared_logits, out.features, labels, shared_weight=1.0,
                                duc_weight=1.0, duc_temperature=1.0, effective_mask=mask)
    b_only = F.cross_entropy(out.modality_logits["b"], labels) + F.cross_entropy(out.shared_logits["b"], labels)
    # Only the a -> b direction: teacher row D_a \ D_b, student row empty (so b -> a has no dimensions).
    a_to_b = torch.stack([mask[0] & ~mask[1], torch.zeros_like(mask[1])])
    b_only = b_only + duc_loss([out.features["a"], out.features["b"]], a_to_b, 1.0)
    full_grads = torch.autograd.grad(full, encoder["b"], retain_graph=True)
    b_grads = torch.autograd.grad(b_only, encoder["b"])
    for g_full, g_b in zip(full_grads, b_grads):
        torch.testing.assert_close(g_full, g_b, rtol=1e-5, atol=1e-7)


# --- the trainer ----------------------------------------------------------------------------------------------------


def test_training_logs_components_and_accuracies(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    logs = trainer.state.log_history
    train_keys = set().union(*[entry for entry in logs if "loss" in entry])
    for key in ("train_loss_private_a", "train_loss_shared_b", "train_loss_duc", "train_loss_fusion",
                "train_accuracy_a", "train_accuracy_shared_b", "train_accuracy_fusion", "train_accuracy"):
        assert key in train_keys, key
    final_eval = [entry for entry in logs if "eval_accuracy" in entry][-1]
    for key in ("eval_accuracy", "eval_macro_f1", "eval_accuracy_a", "eval_accuracy_shared_b",
                "eval_accuracy_fusion", "eval_accuracy_subset_a", "eval_accuracy_subset_a+b"):
        assert key in final_eval, key
    assert 0.0 <= final_eval["eval_accuracy"] <= 1.0
    assert trainer.method.duc_mask_ready and bool(trainer.model.fusion_head_trained)
    assert trainer.method.duc_mask.any(dim=1).all()


def test_stage2_trains_only_the_fusion_head(tmp_path):
    trainer = make_trainer(tmp_path, stage1_epochs=1, stage2_epochs=1)
    trainer.train()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer2 = make_trainer(tmp_path / "again", stage1_epochs=1, stage2_epochs=2)
    trainer2.model.load_state_dict(before)
    trainer2.model.fusion_head_trained.fill_(True)  # as if stage 1 were done
    trainer2.method.stage = 2
    trainer2.method.begin_epoch = lambda epoch: None  # stay in stage 2
    trainer2.train()
    after = trainer2.model.state_dict()
    for key, value in before.items():
        if key.startswith("fusion_head."):
            assert not torch.equal(value, after[key]), key
        elif value.is_floating_point():
            assert torch.equal(value, after[key]), f"{key} changed in stage 2"


def test_learning_rate_schedule_per_stage(tmp_path):
    trainer = make_trainer(tmp_path, stage1_epochs=4, stage2_epochs=2, lr_step_epochs=2, lr_step_gamma=0.1,
                           stage2_learning_rate=0.2, learning_rate=0.05, logging_steps=1, eval_strategy="no")
    trainer.train()
    steps_per_epoch = math.ceil(256 / 16)
    lrs = {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}
    # The lr logged at step s is the one after s optimizer steps.
    assert lrs[1] == pytest.approx(0.05)
    assert lrs[2 * steps_per_epoch + 1] == pytest.approx(0.005)
    assert lrs[4 * steps_per_epoch + 1] == pytest.approx(0.2)
    assert lrs[6 * steps_per_epoch - 1] == pytest.approx(0.2)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """2 x batch 4 with accumulation gives the same update as batch 8 (the loss is divided exactly once)."""
    config = vector_config()
    data = vector_dataset(8)
    torch.manual_seed(0)
    initial = DIMMLForMultimodalClassification(config).state_dict()
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        trainer = make_trainer(tmp_path / f"b{batch}", config=config, dataset=data, stage1_epochs=1,
                               stage2_epochs=0, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, eval_strategy="no", learning_rate=0.5,
                               duc_start_epoch=5)  # DUC's negatives depend on the batch, so keep it off
        trainer.model.load_state_dict(initial)
        trainer.train()
        assert trainer.state.global_step == 1
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    changed = 0
    for key in initial:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(initial[key], results[0][key])
    assert changed > 0


def test_bf16_autocast_on_cpu_trains(tmp_path):
    trainer = make_trainer(tmp_path, bf16=True, stage1_epochs=4, stage2_epochs=1)
    seen = set()
    first_linear = trainer.model.dimml.encoders["a"].backbone.layers[0]
    first_linear.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    trainer.train()
    assert torch.bfloat16 in seen
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_accuracy"] > 0.25
    # Subset predictions run under the same autocast as the full forward: they agree exactly.
    assert metrics["eval_accuracy_subset_a"] == metrics["eval_accuracy_a"]
    assert metrics["eval_accuracy_subset_a+b"] == metrics["eval_accuracy"]


def test_channels_last_trains_the_same_model_in_nhwc(tmp_path):
    config = vector_config(modalities=[
        {"name": "a", "kind": "image", "encoder": "test_resnet", "input_shape": [3, 12, 12]},
        {"name": "b", "kind": "frames", "encoder": "test_resnet", "input_shape": [2, 3, 12, 12]},
    ])
    rng = np.random.default_rng(0)
    dataset = datasets.Dataset.from_dict({
        "a": rng.normal(size=(32, 3, 12, 12)).astype("float32"),
        "b": rng.normal(size=(32, 2, 3, 12, 12)).astype("float32"),
        "labels": rng.integers(0, NUM_CLASSES, 32),
    }).with_format("torch")
    runs = {}
    for channels_last in (False, True):
        trainer = make_trainer(tmp_path / str(channels_last), config=config, dataset=dataset,
                               channels_last=channels_last, stage1_epochs=1, stage2_epochs=1, eval_strategy="no",
                               optim="sgd", learning_rate=0.01)  # (Adam's first steps amplify rounding: ~sign(g))
        convolutions = [module for module in trainer.model.modules() if isinstance(module, torch.nn.Conv2d)]
        assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
                   for conv in convolutions if conv.kernel_size != (1, 1))  # a 1x1 kernel is both
        layouts = []
        convolutions[0].register_forward_hook(
            lambda module, args, output: layouts.append(output.is_contiguous(memory_format=torch.channels_last)))
        trainer.train()
        assert layouts and all(layout == channels_last for layout in layouts)  # the inputs stay NCHW
        trainer.save_model(str(tmp_path / f"saved-{channels_last}"))
        runs[channels_last] = trainer.model.state_dict()
    # Same math in another memory layout: the same weights after training (up to rounding), and the saved
    # checkpoint loads back exactly.
    for name, tensor in runs[False].items():
        torch.testing.assert_close(runs[True][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    reloaded = DIMMLForMultimodalClassification.from_pretrained(tmp_path / "saved-True")
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, runs[True][name], rtol=0, atol=0, msg=name)


class KillAtStep(TrainerCallback):
    """Saves and stops at a given global step, like a job killed right after its checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


@pytest.mark.parametrize("kill_step", [40, 72])  # mid-epoch after DUC started (epoch 2.5); in stage 2 (epoch 4.5)
def test_kill_and_resume_reaches_the_same_result(tmp_path, kill_step):
    common = dict(stage1_epochs=4, stage2_epochs=2, save_strategy="steps", save_steps=1000, eval_strategy="no")
    uninterrupted = make_trainer(tmp_path / "full", **common)
    uninterrupted.train()
    expected_metrics = uninterrupted.evaluate()
    expected_state = uninterrupted.model.state_dict()

    killed = make_trainer(tmp_path / "killed", **common)
    killed.add_callback(KillAtStep(kill_step))
    killed.train()
    assert killed.state.global_step == kill_step
    checkpoint = tmp_path / "killed" / f"checkpoint-{kill_step}"
    assert (checkpoint / "model.safetensors").exists()

    # Same command (arguments, seed) as the killed run; a different initialisation, which the checkpoint overrides.
    resumed = make_trainer(tmp_path / "killed", init_seed=123, **common)
    resumed.method.select_effective_dimensions = lambda: pytest.fail("effective dimensions were selected again")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert torch.equal(resumed.method.duc_mask, uninterrupted.method.duc_mask)
    for key, value in expected_state.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    metrics = resumed.evaluate()
    for key in ("eval_accuracy", "eval_macro_f1", "eval_accuracy_fusion", "eval_accuracy_b"):
        assert metrics[key] == pytest.approx(expected_metrics[key], abs=1e-6), key
    assert metrics["eval_loss"] == pytest.approx(expected_metrics["eval_loss"], rel=1e-5)


def test_trainer_requires_dimml_arguments(tmp_path):
    from transformers import TrainingArguments

    model = DIMMLForMultimodalClassification(vector_config())
    with pytest.raises(TypeError, match="DIMMLTrainingArguments"):
        DIMMLTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                     train_dataset=vector_dataset())
    with pytest.raises(ValueError, match="stage1_epochs"):
        training_args(tmp_path, stage1_epochs=0)


def test_modality_subsets_are_all_non_empty_subsets():
    subsets = modality_subsets(["a", "b", "c"])
    assert len(subsets) == 7 and len(set(subsets)) == 7
    assert subsets[0] == ("a",) and subsets[-1] == ("a", "b", "c")


# --- end to end through accelerate launch, two processes -----------------------------------------------------------


def train_two_processes(tmp_path, method: str, *extra_args: str) -> tuple[Path, dict]:
    """train.py on av_digits (256 samples, 2 + 1 epochs, a checkpoint per epoch) under `accelerate launch` with two
    CPU processes (gloo); returns the output folder and the training summary, after checking that both processes
    ran."""
    output_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DIMML_CACHE": str(tmp_path / "cache")}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "training_scripts/accelerate_configs/cpu_two_processes.yaml"),
        str(REPO / "training_scripts/train.py"), str(REPO / "training_scripts/configs/av_digits_dimml.yaml"),
        "--output_dir", str(output_dir), "--stage1_epochs", "2", "--stage2_epochs", "1", "--duc_start_epoch", "1",
        "--max_train_samples", "256", "--load_best_model_at_end", "false", "--save_strategy", "epoch",
        "--disable_tqdm", "true", "--method", method, *extra_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["training"]["num_processes"] == 2  # world size seen inside the run
    assert 0.1 < summary["metrics"]["test"]["accuracy"] <= 1.0
    return output_dir, summary


def last_checkpoint(output_dir: Path) -> Path:
    return max(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))


@pytest.mark.parametrize("method", ["dimml", "mla"])  # mla: several optimiser steps per batch under DDP
def test_two_process_accelerate_launch_trains_and_saves(tmp_path, method):
    output_dir, summary = train_two_processes(tmp_path, method)
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    assert model.config.method == method
    # The method's training state, as the last checkpoint keeps it for a resume.
    state = load_file(str(last_checkpoint(output_dir) / METHOD_STATE_FILE))
    if method == "dimml":
        assert bool(state["duc_mask_ready"]) and state["duc_mask"].any() and bool(model.fusion_head_trained)
    else:
        assert not torch.equal(state["projector"], torch.eye(model.config.hidden_size))
    out = model(audio=torch.randn(3, 1, 13, 20), image=torch.rand(3, 1, 8, 8))
    assert out.logits.shape == (3, 10)


def test_a_diverged_run_is_reported_once(tmp_path, caplog):
    # The Trainer filters non-finite losses out of the logged mean; the components and grad_norm still show it.
    trainer = make_trainer(tmp_path)
    with caplog.at_level("WARNING", logger="hf_dimml.trainer"):
        trainer.log({"loss": 0.5, "grad_norm": 1.0})
        assert not caplog.records
        trainer.log({"loss": 0.5, "grad_norm": float("inf")})
        trainer.log({"loss": 0.5, "train_loss_private_a": float("nan")})
    assert len(caplog.records) == 1 and "non-finite" in caplog.records[0].getMessage()
    # No per-step device sync to filter NaN losses out of the log (the Trainer's default would add one).
    assert trainer.args.logging_nan_inf_filter is False
