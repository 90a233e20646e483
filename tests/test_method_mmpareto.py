"""MMPareto: the gradient rule against a hand computation (both branches, M = 2 and 3), training, kill / resume,
two processes, and prediction from a saved checkpoint with a modality missing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_trainer import (KillAtStep, last_checkpoint, make_trainer, train_two_processes, vector_config,
                          vector_config3, vector_dataset, vector_dataset3)

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.methods import METHOD_STATE_FILE
from hf_dimml.methods.mmpareto import mmpareto_encoder_gradient

ONE_STAGE = dict(stage2_epochs=0)


def hand_rule(g_mm: list[torch.Tensor], g_uni: list[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """docs/design.md §11, written out per tensor."""
    flat_mm = torch.cat([g.flatten() for g in g_mm])
    flat_uni = torch.cat([g.flatten() for g in g_uni])
    if F.cosine_similarity(flat_mm, flat_uni, dim=0) > 0:
        w1 = 0.5
    elif flat_mm @ flat_uni >= flat_mm @ flat_mm:  # the reference solver's end cases: a zero gradient
        w1 = 0.999
    elif flat_mm @ flat_uni >= flat_uni @ flat_uni:
        w1 = 0.001
    else:
        w1 = float(((flat_uni - flat_mm) @ flat_uni / (flat_mm - flat_uni).norm() ** 2).clamp(0, 1))
    result = []
    for a, b in zip(g_mm, g_uni):
        new = 2 * (w1 * a + (1 - w1) * b)
        r = (a + b).norm() / new.norm()
        result.append(gamma * max(float(r), 1.0) * new)
    return result


def test_rule_on_fixed_vectors_both_branches():
    sizes = [2, 1]  # two parameter tensors: elements 0-1 and 2
    # Positive cosine: (1/2, 1/2), new = g_mm + g_uni, r = 1.
    g_mm, g_uni = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    grad, cosine, conflict = mmpareto_encoder_gradient(g_mm, g_uni, sizes, gamma=1.5)
    torch.testing.assert_close(grad, 1.5 * (g_mm + g_uni))
    assert cosine > 0 and conflict == 0
    # Negative cosine: closed-form MGDA weights w1 = ((g2 - g1) . g2) / ||g1 - g2||^2.
    g_mm, g_uni = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([-1.0, 1.0, 0.0])
    w1 = float((g_uni - g_mm) @ g_uni / (g_mm - g_uni).norm() ** 2)
    assert 0 < w1 < 1
    new = 2 * (w1 * g_mm + (1 - w1) * g_uni)
    torch.testing.assert_close(new @ g_mm, new @ g_uni)  # the min-norm point is equally aligned with both
    expected = []
    for part in (slice(0, 2), slice(2, 3)):
        r = (g_mm[part] + g_uni[part]).norm() / new[part].norm()
        expected.append(1.5 * max(float(r), 1.0) * new[part])
    grad, cosine, conflict = mmpareto_encoder_gradient(g_mm, g_uni, sizes, gamma=1.5)
    torch.testing.assert_close(grad, torch.cat(expected))
    assert cosine < 0 and conflict == 1
    torch.testing.assert_close(grad, torch.cat(hand_rule([g_mm[:2], g_mm[2:]], [g_uni[:2], g_uni[2:]], 1.5)))


def _set_fusion_to_private(model, name: str, sign: float) -> None:
    """Fused logits = sign * (private head of `name`), the other modalities' blocks zero: g_mm = sign-aligned g_m."""
    hidden = model.config.hidden_size
    index = model.config.modality_names.index(name)
    with torch.no_grad():
        model.fusion_head.weight.zero_()
        model.fusion_head.weight[:, index * hidden:(index + 1) * hidden] = sign * model.private_heads[name].weight
        model.fusion_head.bias.copy_(sign * model.private_heads[name].bias)


@pytest.mark.parametrize("case", ["positive", "negative", "random3"])
def test_training_step_matches_hand_computation(tmp_path, case):
    three = case == "random3"
    config = (vector_config3 if three else vector_config)(method="mmpareto", head_layout="fused_with_private")
    trainer = make_trainer(tmp_path, config=config, dataset=vector_dataset3(32) if three else vector_dataset(32),
                           mmpareto_gamma=1.7, **ONE_STAGE)
    model = trainer.model
    names = model.config.modality_names
    if not three:
        _set_fusion_to_private(model, "a", 1.0 if case == "positive" else -1.0)
    data = vector_dataset3(16)[:] if three else vector_dataset(16)[:]
    inputs, labels = {n: data[n] for n in names}, data["labels"]

    # Hand computation: every encoder with its own unimodal loss; heads get the plain sum.
    out = model(**inputs)
    loss_mm = F.cross_entropy(out.logits, labels)
    uni = {n: F.cross_entropy(out.modality_logits[n], labels) for n in names}
    expected, unimodal_grads = {}, {}
    for n in names:
        params = list(model.dimml.encoders[n].named_parameters(prefix=f"dimml.encoders.{n}"))
        tensors = [p for _, p in params]
        g_mm = torch.autograd.grad(loss_mm, tensors, retain_graph=True)
        g_uni = unimodal_grads[n] = torch.autograd.grad(uni[n], tensors, retain_graph=True)
        expected.update(zip([k for k, _ in params], hand_rule(list(g_mm), list(g_uni), 1.7)))
    total = loss_mm + sum(uni.values())
    heads = [(k, p) for k, p in model.named_parameters() if not k.startswith("dimml.")]
    expected.update(zip([k for k, _ in heads], torch.autograd.grad(total, [p for _, p in heads])))

    model.zero_grad(set_to_none=True)
    loss = trainer.method.training_step(model, inputs, labels)
    torch.testing.assert_close(loss, total.detach())
    for key, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[key], rtol=1e-5, atol=1e-7, msg=key)
    sums = {name: float(value) for keys, values in trainer._train_sums.items() for name, value in zip(keys, values)}
    if not three:  # b's fusion block is zero: g_mm = 0 for encoder b, which then gets gamma g_b (reference)
        for param, g_b in zip(model.dimml.encoders["b"].parameters(), unimodal_grads["b"]):
            torch.testing.assert_close(param.grad, 1.7 * g_b, rtol=1e-5, atol=1e-7)
    if case == "positive":
        assert sums["conflict_a"] == 0 and sums["cosine_a"] / 16 == pytest.approx(1.0, abs=1e-5)
    elif case == "negative":
        assert sums["conflict_a"] == 16 and sums["cosine_a"] < 0  # the MGDA branch ran
    assert {f"conflict_{n}" for n in names} | {f"loss_{n}" for n in names} | {"loss_fusion"} <= set(sums)


def test_trains_and_evaluates_every_subset(tmp_path):
    trainer = make_trainer(tmp_path, config=vector_config(method="mmpareto", head_layout="fused_with_private"),
                           stage1_epochs=3, **ONE_STAGE)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    metrics = trainer.evaluate()
    for key in ("eval_accuracy_subset_a", "eval_accuracy_subset_b", "eval_accuracy_subset_a+b", "eval_accuracy_a",
                "eval_accuracy_b"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["eval_accuracy"] > 0.4 and metrics["eval_accuracy_a"] > 0.4  # chance 0.25
    for name in ("a", "b"):
        key = f"dimml.encoders.{name}.backbone.layers.0.weight"
        assert not torch.equal(before[key], trainer.model.state_dict()[key]), name
    logged = set().union(*[entry for entry in trainer.state.log_history if "loss" in entry])
    for key in ("train_loss_fusion", "train_loss_a", "train_conflict_b", "train_cosine_a", "train_accuracy_a"):
        assert key in logged, key
    # Same component keys at every logging step.
    steps = [set(entry) for entry in trainer.state.log_history if "loss" in entry and "train_loss" not in entry]
    assert all(keys == steps[0] for keys in steps)


def test_refuses_accumulation_and_fp16(tmp_path):
    config = vector_config(method="mmpareto", head_layout="fused_with_private")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        make_trainer(tmp_path, config=config, gradient_accumulation_steps=2, **ONE_STAGE)
    with pytest.raises(ValueError, match="mmpareto_gamma"):
        make_trainer(tmp_path, config=config, mmpareto_gamma=0.0, **ONE_STAGE)
    trainer = make_trainer(tmp_path, config=config, **ONE_STAGE)
    trainer.args.fp16 = True  # (fp16 needs a GPU to construct; the method's own check is what is tested)
    with pytest.raises(ValueError, match="fp16"):
        trainer.method.check()


def test_bf16_autocast_trains(tmp_path):
    trainer = make_trainer(tmp_path, config=vector_config(method="mmpareto", head_layout="fused_with_private"),
                           bf16=True, stage1_epochs=2, eval_strategy="no", **ONE_STAGE)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_kill_and_resume_reaches_the_same_result(tmp_path):
    config = vector_config(method="mmpareto", head_layout="fused_with_private")
    common = dict(config=config, stage1_epochs=3, save_strategy="steps", save_steps=1000, eval_strategy="no",
                  **ONE_STAGE)
    uninterrupted = make_trainer(tmp_path / "full", **common)
    uninterrupted.train()
    expected_state = uninterrupted.model.state_dict()

    killed = make_trainer(tmp_path / "killed", **common)
    killed.add_callback(KillAtStep(24))  # mid-epoch 2
    killed.train()
    checkpoint = tmp_path / "killed" / "checkpoint-24"
    assert (checkpoint / "model.safetensors").exists()
    resumed = make_trainer(tmp_path / "killed", init_seed=123, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for key, value in expected_state.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_saved_checkpoint_predicts_with_a_modality_missing(tmp_path):
    trainer = make_trainer(tmp_path, config=vector_config3(method="mmpareto", head_layout="fused_with_private"),
                           dataset=vector_dataset3(64), stage1_epochs=1, eval_strategy="no", save_strategy="epoch",
                           **ONE_STAGE)
    trainer.train()
    model = DIMMLForMultimodalClassification.from_pretrained(last_checkpoint(tmp_path)).eval()
    assert model.config.method == "mmpareto" and model.config.head_layout == "fused_with_private"
    data = vector_dataset3(5)[:]
    with torch.no_grad():
        full = model(a=data["a"], b=data["b"], c=data["c"])
        partial = model(a=data["a"], c=data["c"])
    assert partial.logits.shape == (5, 4) and torch.isfinite(partial.logits).all()
    assert set(partial.modality_logits) == {"a", "c"}
    torch.testing.assert_close(partial.modality_logits["a"], full.modality_logits["a"])  # private heads
    assert not torch.allclose(partial.logits, full.logits)  # b's block zeroed in the fused head


def test_two_processes_keep_identical_weights(tmp_path):
    output_dir, summary = train_two_processes(tmp_path, "mmpareto", "--logging_steps", "1")
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    assert model.config.method == "mmpareto" and summary["training"]["num_processes"] == 2
    checkpoint = last_checkpoint(output_dir)
    checks, mismatches = load_file(str(checkpoint / METHOD_STATE_FILE))["replica_checks"].tolist()
    assert checks >= 2 and mismatches == 0  # weights compared at every epoch start, the second after training
    logs = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in logs if "train_conflict_audio" in entry]
    assert logged and all(0.0 <= entry["train_conflict_audio"] <= 1.0 for entry in logged)
    assert all("train_cosine_image" in entry for entry in logged)
