"""PMR (docs/design.md §11): prototypes, prototype logits and scores, the rule and the loss against hand computations
(M = 2 and 3), training, kill / resume, two processes, and a saved checkpoint predicting with a modality missing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_trainer import (KillAtStep, last_checkpoint, make_trainer, train_two_processes, training_args,
                          vector_config, vector_config3, vector_dataset, vector_dataset3)

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.methods import METHOD_STATE_FILE
from hf_dimml.methods.pmr import pmr_prototype_logits, pmr_prototypes, pmr_scores, pmr_weights


def pmr_config(**overrides):
    return vector_config(method="pmr", head_layout="fused", **overrides)


# --- hand computations --------------------------------------------------------------------------------------------


def test_prototypes_are_class_means_blended_with_the_previous_ones():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -1.0], [0.0, 0.0], [2.0, 2.0]])
    labels = torch.tensor([0, 0, 2, 2, 0])
    previous = torch.tensor([[9.0, 9.0], [7.0, -7.0], [1.0, 1.0]])
    prototypes, counts = pmr_prototypes(features, labels, previous, momentum=None)
    assert counts.tolist() == [3, 0, 2]
    expected = torch.tensor([[2.0, 8.0 / 3.0], [7.0, -7.0], [2.5, -0.5]])  # class 1 unseen: the previous prototype
    torch.testing.assert_close(prototypes, expected)
    blended, _ = pmr_prototypes(features, labels, previous, momentum=0.2)
    torch.testing.assert_close(blended, 0.8 * expected + 0.2 * previous)


def test_prototype_logits_scores_and_rule_for_two_modalities():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = pmr_prototype_logits(features, prototypes)
    hand = torch.tensor([[-((features[i] - prototypes[k]) ** 2).sum() for k in range(2)] for i in range(3)])
    torch.testing.assert_close(logits, hand)
    torch.testing.assert_close(logits, torch.tensor([[0.0, -2.0], [-5.0, -1.0], [-1.0, -1.0]]))
    labels = torch.tensor([0, 1, 0])
    other = torch.zeros(3, 2)  # uniform: score 1.5
    scores = pmr_scores([logits, other], labels)
    softmax = torch.softmax(logits, dim=1)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores[0], softmax[0, 0] + softmax[1, 1] + softmax[2, 0])
    torch.testing.assert_close(scores[1], torch.tensor(1.5))
    # s'_0 = 0.881 + 0.982 + 0.5 > 1.5: modality 1 lags and alone gets alpha; equal scores: nobody.
    assert pmr_weights(scores, 0.7).tolist() == pytest.approx([0.0, 0.7])
    assert pmr_weights(torch.tensor([2.0, 2.0]), 0.7).tolist() == [0.0, 0.0]


def test_rule_for_three_modalities_compares_each_with_the_mean_of_the_others():
    # a: 1 < (2 + 3) / 2; b: 2 = (1 + 3) / 2, not below; c: 3 > 1.5.
    assert pmr_weights(torch.tensor([1.0, 2.0, 3.0]), 1.0).tolist() == [1.0, 0.0, 0.0]
    # a: 3 > 1.1; b: 1 < 2.1; c: 1.2 < 2.0: two modalities get the term.
    assert pmr_weights(torch.tensor([3.0, 1.0, 1.2]), 0.5).tolist() == [0.0, 0.5, 0.5]


def hand_loss(trainer, data, names, alpha):
    """CE(fused) + alpha CE(prototype logits) of every modality below the mean of the others, by loops."""
    model = trainer.model
    out = model(**{name: data[name] for name in names})
    labels = data["labels"]
    scores, proto_ce = [], []
    for index, name in enumerate(names):
        h, c = out.features[name], trainer.method.prototypes[index]
        p = torch.stack([torch.stack([-((h[i] - c[k]) ** 2).sum() for k in range(c.shape[0])])
                         for i in range(h.shape[0])])
        scores.append(sum(torch.softmax(p[i], 0)[labels[i]] for i in range(h.shape[0])))
        proto_ce.append(F.cross_entropy(p, labels))
    loss = F.cross_entropy(out.logits, labels)
    lagging = []
    for m, name in enumerate(names):
        others = sum(scores[n] for n in range(len(names)) if n != m) / (len(names) - 1)
        if scores[m] < others:
            lagging.append(name)
            loss = loss + alpha * proto_ce[m]
    return loss, lagging, {name: float(alpha * proto_ce[m].detach()) if name in lagging else 0.0 for m, name in enumerate(names)}


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_method_loss_matches_hand_computation(tmp_path, num_modalities):
    if num_modalities == 2:
        config, dataset, names = pmr_config(), vector_dataset(64), ["a", "b"]
    else:
        config, dataset, names = vector_config3(method="pmr", head_layout="fused"), vector_dataset3(64), ["a", "b", "c"]
    trainer = make_trainer(tmp_path, config=config, dataset=dataset, pmr_alpha=0.7, stage2_epochs=0)
    method = trainer.method
    method.begin_epoch(0)
    assert method.prototype_epoch == 0 and method.modulating
    assert method.prototype_counts.sum() == 7  # ceil(0.1 * 64) samples
    # The prototypes are the class means of the drawn samples' eval-mode features.
    data = dataset[:]
    indices = method.prototype_indices(0)
    with torch.no_grad():
        features = trainer.model.eval()(**{name: data[name][indices] for name in names}).features
    for index, name in enumerate(names):
        for k in range(4):
            rows = features[name][data["labels"][indices] == k]
            if len(rows):
                torch.testing.assert_close(method.prototypes[index, k], rows.mean(0), rtol=1e-5, atol=1e-6)
    trainer.model.train()
    batch = vector_dataset3(16, seed=5)[:] if num_modalities == 3 else vector_dataset(16, seed=5)[:]
    loss, components, _ = method.compute_loss(trainer.model, {n: batch[n] for n in names}, batch["labels"])
    expected, lagging, terms = hand_loss(trainer, batch, names, 0.7)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert lagging and len(lagging) < num_modalities
    assert set(components) == {"loss_fusion", *(f"loss_proto_{n}" for n in names)}
    for name in names:
        assert float(components[f"loss_proto_{name}"]) == pytest.approx(float(terms[name]), rel=1e-5, abs=1e-7)
    # Outside the modulation epochs: the fused CE alone, the same keys with 0.
    method.modulating = False
    loss, components, out = method.compute_loss(trainer.model, {n: batch[n] for n in names}, batch["labels"])
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch["labels"]))
    assert all(float(components[f"loss_proto_{n}"]) == 0.0 for n in names)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="pmr_momentum_coef"):
        _bad(pmr_momentum_coef=1.0)
    with pytest.raises(ValueError, match="pmr_prototype_fraction"):
        _bad(pmr_prototype_fraction=0.0)
    with pytest.raises(ValueError, match="pmr_modulation"):
        _bad(pmr_modulation_starts=5, pmr_modulation_ends=2)


def _bad(**kwargs):
    return training_args("unused", **kwargs)


# --- training -----------------------------------------------------------------------------------------------------


def test_trains_evaluates_every_subset_and_a_checkpoint_predicts_with_a_modality_missing(tmp_path):
    trainer = make_trainer(tmp_path, config=pmr_config(), stage1_epochs=3, stage2_epochs=0, save_strategy="epoch",
                           pmr_modulation_ends=1)
    computed = []
    original = trainer.method.compute_prototypes
    trainer.method.compute_prototypes = lambda epoch: (computed.append(epoch), original(epoch))
    trainer.train()
    assert computed == [0, 1]  # every epoch up to the last modulated one
    metrics = trainer.evaluate()
    for subset in ("a", "b", "a+b"):
        assert 0.0 <= metrics[f"eval_accuracy_subset_{subset}"] <= 1.0
    assert metrics["eval_accuracy"] > 0.4
    logged = [entry for entry in trainer.state.log_history if "loss" in entry and "eval_loss" not in entry]
    keys = {"train_loss_fusion", "train_loss_proto_a", "train_loss_proto_b"}
    assert logged and all(keys <= set(entry) for entry in logged)
    modulated = [entry for entry in logged if entry["epoch"] <= 2.0]
    assert any(entry["train_loss_proto_a"] + entry["train_loss_proto_b"] > 0 for entry in modulated)
    # Logged every 2 of 16 steps per epoch: the entries after epoch 2.0 cover epoch 2's steps only.
    assert all(entry["train_loss_proto_a"] == entry["train_loss_proto_b"] == 0 for entry in logged
               if entry["epoch"] > 2.0 + 1e-6)
    state = load_file(str(last_checkpoint(tmp_path) / METHOD_STATE_FILE))
    assert state["prototypes"].shape == (2, 4, 8) and int(state["prototype_epoch"]) == 1

    loaded = DIMMLForMultimodalClassification.from_pretrained(last_checkpoint(tmp_path)).eval()
    assert loaded.config.method == "pmr" and loaded.config.head_layout == "fused"
    data = vector_dataset(5)[:]
    model = trainer.model.eval()
    with torch.no_grad():
        only_a = loaded(a=data["a"])
        torch.testing.assert_close(only_a.logits, model(a=data["a"]).logits)
        h = loaded.dimml(a=data["a"]).features["a"]
        torch.testing.assert_close(only_a.logits, loaded.fusion_head(torch.cat([h, torch.zeros(5, 8)], dim=1)))
        assert loaded(b=data["b"]).logits.shape == (5, 4)


def test_kill_and_resume_reaches_the_same_result(tmp_path):
    # 16 steps per epoch; killed at epoch 2.5, after the third (blended) computation of the prototypes.
    common = dict(config=pmr_config(), stage1_epochs=4, stage2_epochs=0, save_strategy="steps", save_steps=1000,
                  eval_strategy="no")
    uninterrupted = make_trainer(tmp_path / "full", **common)
    uninterrupted.train()
    expected_state = uninterrupted.model.state_dict()

    killed = make_trainer(tmp_path / "killed", **common)
    killed.add_callback(KillAtStep(40))
    killed.train()
    checkpoint = tmp_path / "killed" / "checkpoint-40"
    assert int(load_file(str(checkpoint / METHOD_STATE_FILE))["num_computations"]) == 3

    resumed = make_trainer(tmp_path / "killed", init_seed=123, **common)
    computed = []
    original = resumed.method.compute_prototypes
    resumed.method.compute_prototypes = lambda epoch: (computed.append(epoch), original(epoch))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert computed == [3]  # epoch 2's prototypes come from the checkpoint
    torch.testing.assert_close(resumed.method.prototypes, uninterrupted.method.prototypes, rtol=1e-5, atol=1e-6)
    for key, value in expected_state.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_gather_the_prototypes_from_the_whole_training_set(tmp_path):
    output_dir, summary = train_two_processes(tmp_path, "pmr", "--pmr_prototype_fraction", "1", "--logging_steps", "1")
    assert summary["training"]["num_processes"] == 2
    checkpoint = last_checkpoint(output_dir)
    state = load_file(str(checkpoint / METHOD_STATE_FILE))
    # 256 training samples, 128 per process: the counts cover both processes' shares.
    assert int(state["prototype_counts"].sum()) == 256
    assert state["prototypes"].shape[:2] == (2, 10) and torch.isfinite(state["prototypes"]).all()
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "train_loss_proto_audio" in entry]
    assert logged and all("train_loss_proto_image" in entry for entry in logged)
    # Two modalities, modulated from epoch 0: one of them gets the prototype term at every step.
    assert all(entry["train_loss_proto_audio"] + entry["train_loss_proto_image"] > 0 for entry in logged)
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    assert model.config.method == "pmr"
    assert model(image=torch.rand(3, 1, 8, 8)).logits.shape == (3, 10)
