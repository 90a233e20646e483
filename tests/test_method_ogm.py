"""OGM and OGM-GE (docs/design.md §11): scores and coefficients against the reference's formulas (M = 2) and hand
computations (M = 3), the modulated gradients of real training steps (k g; k g + N(0, std(g)^2) replayed from the RNG),
the modulation epochs, the 4-D-only default on a timm encoder, gradient accumulation, kill / resume, two processes
whose noise streams differ, and a saved checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_trainer import KillAtStep, make_trainer, vector_config, vector_config3, vector_dataset, vector_dataset3

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.methods import get_method
from hf_dimml.methods.ogm import ogm_coefficients, ogm_scores
from hf_dimml.trainer import DIMMLTrainingArguments

TESTS = Path(__file__).resolve().parent


def ogm_config(method: str = "ogm", three: bool = False, **overrides):
    build = vector_config3 if three else vector_config
    return build(method=method, head_layout="fused", **overrides)


def small(**overrides) -> dict:
    """4 steps per epoch (64 samples, batch 16), one log per epoch, one stage, no evaluation."""
    kwargs = dict(stage1_epochs=2, stage2_epochs=0, eval_strategy="no", logging_steps=4, ogm_modulate="all",
                  learning_rate=0.05)
    kwargs.update(overrides)
    return kwargs


def record_modulation(method) -> list[dict]:
    """Wraps `method.modulate`: per optimiser step, every gradient before and after, the summed scores, the CPU RNG
    state before, the returned coefficients and the epoch."""
    records: list[dict] = []
    original = method.modulate

    def spy():
        named = dict(method.model.named_parameters())
        before = {n: p.grad.clone() for n, p in named.items() if p.grad is not None}
        scores = None if method._scores is None else method._scores.clone()
        rng = torch.get_rng_state()
        coefficients = original()
        after = {n: p.grad.clone() for n, p in named.items() if p.grad is not None}
        records.append({"before": before, "after": after, "scores": scores, "rng": rng,
                        "coefficients": coefficients.clone(), "epoch": method.epoch})
        return coefficients

    method.modulate = spy
    return records


def encoder_of(parameter_name: str) -> str | None:
    prefix = "dimml.encoders."
    return parameter_name[len(prefix):].split(".")[0] if parameter_name.startswith(prefix) else None


# --- scores and coefficients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_scores_split_the_fused_head_per_modality(num_modalities):
    generator = torch.Generator().manual_seed(0)
    d, classes, batch = 4, 5, 7
    features = [torch.randn(batch, d, generator=generator) for _ in range(num_modalities)]
    weight = torch.randn(classes, num_modalities * d, generator=generator)
    bias = torch.randn(classes, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    scores = ogm_scores(features, weight, bias, labels)
    assert scores.shape == (num_modalities,) and scores.dtype == torch.float32
    for m in range(num_modalities):  # the reference: out_m = mm(h_m, W[:, block m].T) + b / M, summed per sample
        out = features[m] @ weight[:, m * d:(m + 1) * d].T + bias / num_modalities
        expected = sum(F.softmax(out, dim=1)[i][labels[i]] for i in range(batch))
        torch.testing.assert_close(scores[m], expected)


@pytest.mark.parametrize("score_a, score_v", [(30.0, 12.0), (5.0, 9.5), (1.0, 1.0001), (40.0, 0.5)])
@pytest.mark.parametrize("alpha", [0.1, 0.8])
def test_two_modalities_follow_the_reference_code(score_a, score_v, alpha):
    # GeWu-Lab/OGM-GE_CVPR2022 main.py, train_epoch:
    ratio_v = score_v / score_a
    ratio_a = 1 / ratio_v
    if ratio_v > 1:
        coeff_v, coeff_a = 1 - math.tanh(alpha * max(ratio_v, 0.0)), 1.0
    else:
        coeff_a, coeff_v = 1 - math.tanh(alpha * max(ratio_a, 0.0)), 1.0
    ratio, coefficients = ogm_coefficients(torch.tensor([score_a, score_v]), alpha)
    torch.testing.assert_close(ratio, torch.tensor([ratio_a, ratio_v]))
    torch.testing.assert_close(coefficients, torch.tensor([coeff_a, coeff_v]))
    # relu(rho), not rho - 1: the modality ahead is slowed down by at least 1 - tanh(alpha).
    assert coefficients.min() <= 1 - math.tanh(alpha) + 1e-6


def test_three_modalities_compare_each_with_the_mean_of_the_others():
    ratio, coefficients = ogm_coefficients(torch.tensor([3.0, 2.0, 0.5]), 0.5)
    torch.testing.assert_close(ratio, torch.tensor([3.0 / 1.25, 2.0 / 1.75, 0.5 / 2.5]))
    expected = [1 - math.tanh(0.5 * 3.0 / 1.25), 1 - math.tanh(0.5 * 2.0 / 1.75), 1.0]  # two modalities ahead
    torch.testing.assert_close(coefficients, torch.tensor(expected))
    # Equal scores: nobody is ahead; a zero score elsewhere gives no NaN.
    assert ogm_coefficients(torch.tensor([2.0, 2.0, 2.0]), 0.5)[1].tolist() == [1.0, 1.0, 1.0]
    assert torch.isfinite(ogm_coefficients(torch.tensor([1.0, 0.0, 0.0]), 0.5)[1]).all()


def test_compute_loss_is_the_fused_ce_and_accumulates_the_scores(tmp_path):
    trainer = make_trainer(tmp_path, config=ogm_config(three=True), dataset=vector_dataset3(64), **small())
    method, model = trainer.method, trainer.model
    method.begin_epoch(0)
    batch = vector_dataset3(16)[:]
    inputs = {n: batch[n] for n in ("a", "b", "c")}
    loss, components, outputs = method.compute_loss(model, inputs, batch["labels"])
    torch.testing.assert_close(loss, F.cross_entropy(outputs.logits, batch["labels"]))
    assert set(components) == {"loss_fusion"}
    d = model.config.hidden_size
    weight, bias = model.fusion_head.weight, model.fusion_head.bias
    expected = torch.stack([
        F.softmax(outputs.features[n] @ weight[:, m * d:(m + 1) * d].T + bias / 3, dim=1)
        .gather(1, batch["labels"][:, None]).sum()
        for m, n in enumerate(("a", "b", "c"))
    ]).detach()
    torch.testing.assert_close(method._scores, expected)
    method.compute_loss(model, inputs, batch["labels"])  # a second micro-batch adds up
    torch.testing.assert_close(method._scores, 2 * expected)
    # Outside the modulation epochs no score is computed.
    method._scores = None
    method.begin_epoch(51)
    method.compute_loss(model, inputs, batch["labels"])
    assert method._scores is None


# --- the modulated gradients ----------------------------------------------------------------------------------------


def test_ogm_scales_each_encoder_gradient_by_its_coefficient(tmp_path):
    trainer = make_trainer(tmp_path, config=ogm_config("ogm"), dataset=vector_dataset(64), **small(ogm_alpha=0.5))
    records = record_modulation(trainer.method)
    trainer.train()
    assert len(records) == trainer.state.global_step == 8
    index = {"a": 0, "b": 1}
    for record in records:
        _, expected = ogm_coefficients(record["scores"], 0.5)
        torch.testing.assert_close(record["coefficients"], expected)
        for name, before in record["before"].items():
            encoder = encoder_of(name)
            if encoder is None:  # the fused head is never modulated
                assert torch.equal(record["after"][name], before), name
            else:
                k = record["coefficients"][index[encoder]]
                torch.testing.assert_close(record["after"][name], k * before, rtol=0, atol=0, msg=name)
    # The informative modality a runs ahead and is slowed down; the other is left alone.
    coefficients = torch.stack([record["coefficients"] for record in records])
    assert (coefficients[:, 0] < 1).any() and (coefficients <= 1).all() and (coefficients > 0).all()
    assert (coefficients.min(dim=1).values < 1).all()  # two modalities: one of them is always ahead


def test_ogm_ge_adds_gaussian_noise_with_each_gradients_std_from_the_global_rng(tmp_path):
    trainer = make_trainer(tmp_path, config=ogm_config("ogm_ge"), dataset=vector_dataset(64), **small(ogm_alpha=0.5))
    records = record_modulation(trainer.method)
    trainer.train()
    names = ["a", "b"]
    for record in records:
        state = torch.get_rng_state()
        torch.set_rng_state(record["rng"])  # replay the draws: modality order, then parameter order
        for m, modality in enumerate(names):
            k = record["coefficients"][m]
            for name, before in record["before"].items():
                if encoder_of(name) != modality:
                    continue
                noise = torch.randn_like(before) * (before.std() + 1e-8)
                torch.testing.assert_close(record["after"][name], k * before + noise, msg=name)
            assert record["coefficients"][m] <= 1
        torch.set_rng_state(state)
        for name, before in record["before"].items():
            if encoder_of(name) is None:
                assert torch.equal(record["after"][name], before), name
    # The noise's spread is the gradient's own (the largest tensor: the first layer of a, 16 x 6).
    name = "dimml.encoders.a.backbone.layers.0.weight"
    ratios = []
    for record in records:
        k = record["coefficients"][0]
        noise = record["after"][name] - k * record["before"][name]
        ratios.append(float(noise.std() / record["before"][name].std()))
    assert 0.7 < float(np.mean(ratios)) < 1.3


def test_modulation_only_in_its_epochs_and_the_coefficients_are_logged(tmp_path):
    trainer = make_trainer(tmp_path, config=ogm_config("ogm_ge"), dataset=vector_dataset(64),
                           **small(stage1_epochs=3, ogm_modulation_starts=1, ogm_modulation_ends=1, ogm_alpha=0.5))
    records = record_modulation(trainer.method)
    trainer.train()
    for record in records:
        unchanged = all(torch.equal(record["after"][n], g) for n, g in record["before"].items())
        assert unchanged == (record["epoch"] != 1)
        if record["epoch"] != 1:
            assert record["coefficients"].tolist() == [1.0, 1.0]
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3  # one per epoch
    for entry in logged:
        assert {"train_ogm_coeff_a", "train_ogm_coeff_b", "train_loss_fusion", "train_accuracy",
                "train_accuracy_a"} <= set(entry)
    assert logged[0]["train_ogm_coeff_a"] == logged[0]["train_ogm_coeff_b"] == 1.0
    assert logged[2]["train_ogm_coeff_a"] == logged[2]["train_ogm_coeff_b"] == 1.0
    in_window = [record["coefficients"] for record in records if record["epoch"] == 1]
    mean = torch.stack(in_window).mean(dim=0)  # equal batches: the sample-weighted mean is the plain one
    assert min(logged[1]["train_ogm_coeff_a"], logged[1]["train_ogm_coeff_b"]) < 1.0
    assert logged[1]["train_ogm_coeff_a"] == pytest.approx(float(mean[0]), abs=1e-6)
    assert logged[1]["train_ogm_coeff_b"] == pytest.approx(float(mean[1]), abs=1e-6)


def test_conv_mode_touches_only_4d_gradients(tmp_path, caplog):
    """The reference's default: only 4-D (convolution) gradients are modulated; a timm `test_resnet` on 8x8 images
    has them, an MLP encoder has none (warned about)."""
    config = ogm_config("ogm_ge", modalities=[
        {"name": "a", "kind": "image", "encoder": "test_resnet", "input_shape": [1, 8, 8]},
        {"name": "b", "kind": "vector", "input_shape": [5], "encoder_kwargs": {"hidden_sizes": [16]}},
    ])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 32)
    dataset = datasets.Dataset.from_dict({
        "a": (rng.normal(size=(32, 1, 8, 8)) + labels[:, None, None, None]).astype("float32"),
        "b": rng.normal(size=(32, 5)).astype("float32"),
        "labels": labels,
    }).with_format("torch")
    with caplog.at_level(logging.WARNING, logger="hf_dimml.methods.ogm"):
        trainer = make_trainer(tmp_path, config=config, dataset=dataset,
                               **small(ogm_modulate="conv", stage1_epochs=1, ogm_alpha=0.5))
    assert any("ogm_modulate='all'" in r.getMessage() and "['b']" in r.getMessage() for r in caplog.records)
    assert trainer.args.ogm_modulate == "conv"
    modulated = {p for p in trainer.method.modulated_parameters("a")}
    assert modulated and all(p.dim() == 4 for p in modulated) and not trainer.method.modulated_parameters("b")
    records = record_modulation(trainer.method)
    trainer.train()
    shapes = {n: p.dim() for n, p in trainer.model.named_parameters()}
    changed = set()
    for record in records:
        for name, before in record["before"].items():
            if not torch.equal(record["after"][name], before):
                changed.add(name)
    assert changed, "no gradient was modulated"
    assert all(shapes[name] == 4 and encoder_of(name) == "a" for name in changed), changed
    four_d = {n for n, dims in shapes.items() if dims == 4 and encoder_of(n) == "a"}
    assert changed == four_d  # every convolution kernel of a got noise


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """2 x batch 4 with accumulation: the scores of both micro-batches decide, and the accumulated gradient is scaled
    once: the same update as batch 8."""
    data = vector_dataset(8)
    torch.manual_seed(0)
    initial = DIMMLForMultimodalClassification(ogm_config("ogm")).state_dict()
    results, coefficients = [], []
    for batch, accumulation in ((8, 1), (4, 2)):
        trainer = make_trainer(tmp_path / f"b{batch}", config=ogm_config("ogm"), dataset=data, stage1_epochs=1,
                               stage2_epochs=0, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, eval_strategy="no", learning_rate=0.5,
                               ogm_modulate="all", ogm_alpha=1.0, optim="sgd")
        trainer.model.load_state_dict(initial)
        records = record_modulation(trainer.method)
        trainer.train()
        assert trainer.state.global_step == 1 and len(records) == 1
        coefficients.append(records[0]["coefficients"])
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    torch.testing.assert_close(coefficients[0], coefficients[1])
    assert coefficients[0].min() < 1
    for key in initial:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)


# --- arguments, training, checkpoints --------------------------------------------------------------------------------


def test_arguments_are_checked(tmp_path):
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, stage2_epochs=0)
    defaults = DIMMLTrainingArguments(**base)
    assert (defaults.ogm_alpha, defaults.ogm_modulation_starts, defaults.ogm_modulation_ends,
            defaults.ogm_modulate) == (0.1, 0, 50, "conv")
    for bad in ({"ogm_alpha": -0.1}, {"ogm_modulation_starts": -1}, {"ogm_modulation_starts": 5,
                                                                     "ogm_modulation_ends": 4},
                {"ogm_modulate": "conv2d"}):
        with pytest.raises(ValueError, match="ogm_"):
            DIMMLTrainingArguments(**base, **bad)
    with pytest.raises(ValueError, match="single stage"):
        make_trainer(tmp_path, config=ogm_config("ogm_ge"), stage2_epochs=1)
    # Both methods share one arguments dataclass; the card and the summary get them.
    assert get_method("ogm").arguments is get_method("ogm_ge").arguments
    assert get_method("ogm_ge").hyperparameters(defaults, None) == {
        "ogm_alpha": 0.1, "ogm_modulation_starts": 0, "ogm_modulation_ends": 50, "ogm_modulate": "conv"}
    from hf_dimml.model_card import CITATIONS, METHODS

    assert METHODS["ogm_ge"]["display"] == "OGM-GE" and METHODS["ogm"]["display"] == "OGM"
    assert "On-the-fly Gradient Modulation" in CITATIONS["ogm_ge"]


@pytest.mark.parametrize("method", ["ogm", "ogm_ge"])
def test_trains_evaluates_every_subset_and_round_trips(tmp_path, method):
    trainer = make_trainer(tmp_path, config=ogm_config(method), stage1_epochs=3, stage2_epochs=0, ogm_modulate="all")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] > 0.4  # chance 0.25
    for subset in ("a", "b", "a+b"):
        assert 0.0 <= metrics[f"eval_accuracy_subset_{subset}"] <= 1.0
    model = trainer.model.eval()
    for name in ("a", "b"):
        key = f"dimml.encoders.{name}.backbone.layers.0.weight"
        assert not torch.equal(before[key], model.state_dict()[key])
    model.save_pretrained(tmp_path / "saved")
    loaded = DIMMLForMultimodalClassification.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.method == method and loaded.config.head_layout == "fused"
    data = vector_dataset(5)[:]
    torch.testing.assert_close(loaded(a=data["a"], b=data["b"]).logits, model(a=data["a"], b=data["b"]).logits)
    torch.testing.assert_close(loaded(b=data["b"]).logits, model(b=data["b"]).logits)  # a missing: zeroed


def test_kill_and_resume_reaches_the_same_result(tmp_path):
    """OGM-GE's noise comes from the global RNG, which the Trainer saves with each checkpoint."""
    common = dict(config=ogm_config("ogm_ge"), stage1_epochs=3, stage2_epochs=0, save_strategy="steps",
                  save_steps=1000, eval_strategy="no", ogm_modulate="all", ogm_alpha=0.5,
                  ogm_modulation_ends=1)  # the kill at step 24 is mid-epoch 1, inside the window
    uninterrupted = make_trainer(tmp_path / "full", **common)
    uninterrupted.train()
    expected_state = uninterrupted.model.state_dict()

    killed = make_trainer(tmp_path / "killed", **common)
    killed.add_callback(KillAtStep(24))
    killed.train()
    assert killed.state.global_step == 24
    checkpoint = tmp_path / "killed" / "checkpoint-24"
    resumed = make_trainer(tmp_path / "killed", init_seed=123, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for key, value in expected_state.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


# --- two processes ----------------------------------------------------------------------------------------------------

_TWO_PROCESS_SCRIPT = """
import json, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from transformers import TrainerCallback
from test_trainer import make_trainer, vector_config, vector_dataset


class DifferentNoiseStreams(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1000 + args.process_index)


trainer = make_trainer({output!r}, config=vector_config(method="ogm_ge", head_layout="fused"),
                       dataset=vector_dataset(128), stage1_epochs=2, stage2_epochs=0, eval_strategy="no",
                       ogm_modulate="all", ogm_alpha=0.5, logging_steps=1)
trainer.add_callback(DifferentNoiseStreams())
records = []
original = trainer.method.modulate
trainer.method.modulate = lambda: records.append(original()) or records[-1]
trainer.train()
params = torch.cat([p.detach().double().reshape(-1) for p in trainer.model.parameters()])
coefficients = torch.stack(records).double().reshape(-1)
gathered = trainer.accelerator.gather(torch.cat([params, coefficients])[None])
if trainer.accelerator.is_main_process:
    with open({result!r}, "w") as handle:
        json.dump({{"world": trainer.accelerator.num_processes, "steps": trainer.state.global_step,
                   "max_difference": float((gathered[0] - gathered[1]).abs().max()),
                   "min_coefficient": float(coefficients.min())}}, handle)
"""


def test_two_processes_keep_identical_weights_with_different_noise_streams(tmp_path):
    """The scores are summed over the processes (same coefficients everywhere) and the main process's noisy gradients
    are broadcast: the replicas stay identical even when their RNG streams differ."""
    script = tmp_path / "two_processes.py"
    result = tmp_path / "result.json"
    script.write_text(textwrap.dedent(_TWO_PROCESS_SCRIPT.format(
        tests=str(TESTS), output=str(tmp_path / "out"), result=str(result))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    outcome = json.loads(result.read_text())
    assert outcome["world"] == 2 and outcome["steps"] == 8  # 128 samples, 2 x 16 per step, 2 epochs
    assert outcome["max_difference"] == 0.0
    assert outcome["min_coefficient"] < 1.0
