"""MLA, DMRNet, joint and unimodal: their mechanics, training a few steps, and prediction from every modality subset."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from test_trainer import make_trainer, vector_config, vector_dataset

from hf_dimml import DIMMLForMultimodalClassification, entropy_weighted_logits
from hf_dimml.losses import dmrnet_loss, draw_modality_subsets, mla_project_head_gradient, mla_update_projector
from hf_dimml.trainer import modality_subsets

METHODS = ["dimml", "mla", "dmrnet", "joint", "unimodal"]


def one_stage(method: str) -> dict:
    return {"stage2_epochs": 0} if method != "dimml" else {}


# --- MLA ----------------------------------------------------------------------------------------------------------


def test_mla_projection_makes_head_gradient_orthogonal_to_previous_mean_feature():
    generator = torch.Generator().manual_seed(0)
    d = 6
    projector = torch.eye(d)
    previous_mean = torch.randn(d, generator=generator)
    gradient = torch.randn(3, d, generator=generator)
    assert (gradient @ previous_mean).abs().max() > 0.1  # not orthogonal before
    alpha = 1e-4
    mla_update_projector(projector, previous_mean, alpha)
    projected = mla_project_head_gradient(gradient, projector)
    # The weight update W -= lr * grad P no longer changes W r: (grad P) r = grad k alpha / (alpha + r^T k).
    relative = (projected @ previous_mean).abs().max() / (gradient.norm() * previous_mean.norm())
    assert relative < 1e-4
    # A second modality's direction is projected out too, while the first stays out.
    other_mean = torch.randn(d, generator=generator)
    mla_update_projector(projector, other_mean, alpha)
    projected = mla_project_head_gradient(gradient, projector)
    assert (projected @ other_mean).abs().max() / (gradient.norm() * other_mean.norm()) < 1e-4
    assert (projected @ previous_mean).abs().max() / (gradient.norm() * previous_mean.norm()) < 1e-3
    torch.testing.assert_close(projector, projector.T)  # stays symmetric


def test_mla_projector_formula_is_the_scalar_one():
    projector = torch.eye(3)
    r = torch.tensor([1.0, 2.0, 0.0])
    mla_update_projector(projector, r, alpha=0.5)
    k = r  # P0 = I
    expected = torch.eye(3) - torch.outer(k, k) / (0.5 + r @ k)
    torch.testing.assert_close(projector, expected)


def test_mla_fusion_weights_are_per_sample():
    confident = torch.tensor([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    other = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, 5.0]])
    logits, weights = entropy_weighted_logits([confident, other])
    assert weights.shape == (2, 2)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert weights[0, 0] > 0.5 and weights[1, 1] > 0.5  # each sample trusts its own confident modality
    for i in range(2):
        entropies = [-(F.softmax(z[i], 0) * F.log_softmax(z[i], 0)).sum() for z in (confident, other)]
        w = torch.softmax(-torch.stack(entropies), 0)
        torch.testing.assert_close(weights[i], w)
        torch.testing.assert_close(logits[i], w[0] * confident[i] + w[1] * other[i])


def test_mla_training_applies_projection_and_state_is_saved(tmp_path):
    trainer = make_trainer(tmp_path, config=vector_config(method="mla"), stage1_epochs=1, stage2_epochs=0,
                           eval_strategy="no", save_strategy="epoch")
    calls = []
    import hf_dimml.methods.mla as mla_module

    original = mla_module.mla_project_head_gradient
    mla_module.mla_project_head_gradient = lambda g, p: calls.append(1) or original(g, p)
    try:
        trainer.train()
    finally:
        mla_module.mla_project_head_gradient = original
    method = trainer.method
    steps = trainer.state.global_step
    assert len(calls) == 2 * steps  # every modality step (the first with P = I: no previous mean yet)
    assert not torch.allclose(method.projector, torch.eye(8))
    assert method.previous_mean.abs().sum() > 0
    # The checkpoint keeps the projector for a resume; a resumed trainer reads it back.
    checkpoint = tmp_path / f"checkpoint-{steps}"
    resumed = make_trainer(tmp_path / "resumed", config=vector_config(method="mla"), stage1_epochs=1,
                           stage2_epochs=0, eval_strategy="no")
    assert resumed.method.load_state(checkpoint)
    assert torch.equal(resumed.method.projector, method.projector.cpu())
    assert torch.equal(resumed.method.previous_mean, method.previous_mean.cpu())


def test_mla_rejects_gradient_accumulation(tmp_path):
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        make_trainer(tmp_path, config=vector_config(method="mla"), stage2_epochs=0, gradient_accumulation_steps=2)


# --- DMRNet -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_dmrnet_dropout_draws_only_non_empty_subsets_uniformly(num_modalities):
    generator = torch.Generator().manual_seed(0)
    draws = 14000
    mask = draw_modality_subsets(draws, num_modalities, generator=generator)
    assert mask.shape == (draws, num_modalities) and mask.dtype == torch.bool
    assert mask.any(dim=1).all()  # never an empty subset
    counts = torch.bincount((mask.long() * 2 ** torch.arange(num_modalities)).sum(1), minlength=2**num_modalities)
    assert counts[0] == 0
    expected = draws / (2**num_modalities - 1)
    assert ((counts[1:].float() - expected).abs() < 5 * math.sqrt(expected)).all()


def test_dmrnet_loss_matches_hand_computation():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=generator)
    mean, logvar = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    combination = torch.tensor([0, 2, 2, 1, 2, 0])
    loss, parts = dmrnet_loss(logits, mean, logvar, labels, combination, hard_combination=2, kl_weight=0.1,
                              hcr_weight=0.3)
    kl = sum(-0.5 * (1 + logvar[i] - mean[i] ** 2 - logvar[i].exp()).sum() for i in range(6)) / 6
    hcr = F.cross_entropy(logits[[1, 2, 4]], labels[[1, 2, 4]])
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels) + 0.1 * kl + 0.3 * hcr)
    assert set(parts) == {"loss_ce", "loss_kl", "loss_hcr"}
    warmup_loss, warmup_parts = dmrnet_loss(logits, mean, logvar, labels, combination, -1, kl_weight=0.1,
                                            hcr_weight=0.3)
    assert "loss_hcr" not in warmup_parts
    torch.testing.assert_close(warmup_loss, F.cross_entropy(logits, labels) + 0.1 * kl)


def test_dmrnet_hard_combination_is_chosen_by_variance_after_warmup(tmp_path):
    trainer = make_trainer(tmp_path, config=vector_config(method="dmrnet"), dmrnet_warmup_epochs=2,
                           stage1_epochs=3, stage2_epochs=0, eval_strategy="no")
    chosen_at = []
    method = trainer.method
    original = method.begin_epoch

    def spy(epoch):
        original(epoch)
        chosen_at.append((epoch, method.hard_combination))

    method.begin_epoch = spy
    trainer.train()
    assert chosen_at[0][1] == -1 and chosen_at[1][1] == -1  # still warming up
    hard = chosen_at[2][1]
    assert hard >= 0
    mean_variance = method.variance_sum / method.variance_count
    assert (method.variance_count > 0).all()
    assert hard == int(mean_variance.argmax())
    logged = [entry for entry in trainer.state.log_history if "train_loss_hcr" in entry]
    assert logged, "the hard-combination regulariser must be active after the warm-up"


# --- every method: trains, and predicts from every subset ----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_and_predicts_from_every_subset(tmp_path, method):
    trainer = make_trainer(tmp_path, config=vector_config(method=method), stage1_epochs=3, **one_stage(method))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    metrics = trainer.evaluate()
    for subset in ("a", "b", "a+b"):
        assert 0.0 <= metrics[f"eval_accuracy_subset_{subset}"] <= 1.0
    assert metrics["eval_accuracy"] > 0.4  # chance is 0.25; modality a is informative
    assert "eval_accuracy_a" in metrics and "eval_accuracy_b" in metrics
    model = trainer.model.eval()
    # Every encoder was trained.
    for name in ("a", "b"):
        first = f"dimml.encoders.{name}.backbone.layers.0.weight"
        assert not torch.equal(before[first], model.state_dict()[first]), f"{method}: encoder {name} not trained"
    data = vector_dataset(5)[:]
    for size in (1, 2):
        for subset in itertools.combinations(["a", "b"], size):
            out = model(**{name: data[name] for name in subset})
            assert out.logits.shape == (5, 4) and torch.isfinite(out.logits).all()
    # Round trip keeps the method and its predictions.
    model.save_pretrained(tmp_path / "saved")
    loaded = DIMMLForMultimodalClassification.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.method == method
    torch.testing.assert_close(loaded(a=data["a"], b=data["b"]).logits, model(a=data["a"], b=data["b"]).logits)


@pytest.mark.parametrize("method", ["mla", "dmrnet", "joint", "unimodal"])
def test_one_stage_methods_refuse_a_second_stage(tmp_path, method):
    with pytest.raises(ValueError, match="single stage"):
        make_trainer(tmp_path, config=vector_config(method=method), stage2_epochs=1)


def test_unimodal_prediction_is_the_ensemble_of_heads():
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config(method="unimodal")).eval()
    data = vector_dataset(4)[:]
    out = model(a=data["a"], b=data["b"])
    torch.testing.assert_close(out.logits, (out.modality_logits["a"] + out.modality_logits["b"]) / 2)
    torch.testing.assert_close(model(a=data["a"]).logits, out.modality_logits["a"])


def test_joint_zeroes_a_missing_modality():
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config(method="joint")).eval()
    data = vector_dataset(4)[:]
    features = model.dimml(a=data["a"]).features
    expected = model.fusion_head(torch.cat([features["a"], torch.zeros(4, 8)], dim=1))
    torch.testing.assert_close(model(a=data["a"]).logits, expected)


def test_modality_subsets_cover_three_modalities():
    assert len(modality_subsets(["x", "y", "z"])) == 7
