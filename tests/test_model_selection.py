"""Per-modality model selection for the detached methods (README.md, Training): each encoder from its own best validation
epoch, DI-MML's fusion head trained on the assembly and always part of the final model; `fused` keeps the reference's
single-epoch choice; resume keeps the bests."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.model_selection import MODALITY_SELECTION_FILE, ModalitySelection
from hf_dimml.trainer import DIMMLTrainer

from test_trainer import KillAtStep, training_args, vector_config, vector_dataset

STEPS_PER_EPOCH = 16  # 256 samples, batch 16

# Scripted validation metrics per epoch (1-based): a is best at epoch 2, b at epoch 4; the fused accuracy is best at
# epoch 1 over stage 1 and at epoch 6 over stage 2.
SCRIPT = {
    1: {"accuracy": 0.90, "accuracy_a": 0.60, "accuracy_b": 0.30, "loss_a": 0.9, "loss_b": 1.5},
    2: {"accuracy": 0.70, "accuracy_a": 0.80, "accuracy_b": 0.35, "loss_a": 1.2, "loss_b": 1.4},
    3: {"accuracy": 0.75, "accuracy_a": 0.70, "accuracy_b": 0.36, "loss_a": 0.7, "loss_b": 1.3},
    4: {"accuracy": 0.80, "accuracy_a": 0.80, "accuracy_b": 0.50, "loss_a": 1.0, "loss_b": 1.6},
    5: {"accuracy": 0.85, "accuracy_a": 0.80, "accuracy_b": 0.50, "loss_a": 1.0, "loss_b": 1.6},
    6: {"accuracy": 0.88, "accuracy_a": 0.80, "accuracy_b": 0.50, "loss_a": 1.0, "loss_b": 1.6},
}


class RecordWeights(TrainerCallback):
    """The model's weights at every evaluation, by epoch."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.by_epoch[round(state.epoch)] = {key: value.clone() for key, value in model.state_dict().items()}


def scripted_trainer(tmp_path, method="dimml", init_seed=0, script=SCRIPT, **overrides) -> DIMMLTrainer:
    torch.manual_seed(init_seed)
    model = DIMMLForMultimodalClassification(vector_config(method=method))
    args = dict(stage1_epochs=4, stage2_epochs=2 if method == "dimml" else 0, save_strategy="epoch",
                load_best_model_at_end=True, metric_for_best_model="accuracy")
    args.update(overrides)
    dataset = vector_dataset()
    trainer = DIMMLTrainer(model=model, args=training_args(tmp_path, **args), train_dataset=dataset,
                           eval_dataset=dataset, compute_metrics=lambda _: dict(script[round(trainer.state.epoch)]))
    return trainer


def assert_part_from_epoch(state: dict, recorded: dict, prefix: str, epoch: int) -> None:
    keys = [key for key in state if key.startswith(prefix)]
    assert keys, prefix
    for key in keys:
        assert torch.equal(state[key], recorded[epoch][key]), f"{key} is not from epoch {epoch}"


def train_recorded(tmp_path, **overrides) -> tuple[DIMMLTrainer, RecordWeights]:
    trainer = scripted_trainer(tmp_path, **overrides)
    recorder = RecordWeights()
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, recorder


def assert_modalities_from(trainer: DIMMLTrainer, recorder: RecordWeights, epochs: dict[str, int]) -> None:
    """Each modality's encoder and private head hold the weights of the given epoch."""
    state = trainer.model.state_dict()
    for name, epoch in epochs.items():
        for prefix in (f"dimml.encoders.{name}.", f"private_heads.{name}."):
            assert_part_from_epoch(state, recorder.by_epoch, prefix, epoch)


def test_each_encoder_comes_from_its_own_best_epoch_and_the_fusion_head_is_trained(tmp_path):
    trainer, recorder = train_recorded(tmp_path)
    assert_modalities_from(trainer, recorder, {"a": 2, "b": 4})  # ties (a: 0.80 at 2 and 4) keep the earlier epoch
    state = trainer.model.state_dict()
    # The final model is the best stage-2 evaluation (epoch 6), although epoch 1's fused score is higher.
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{6 * STEPS_PER_EPOCH}")
    assert bool(trainer.model.fusion_head_trained)
    assert torch.equal(state["fusion_head.weight"], recorder.by_epoch[6]["fusion_head.weight"])
    # Stage 2 trained the fusion head on the assembled encoders: they did not move since.
    assert_part_from_epoch(state, recorder.by_epoch, "dimml.encoders.", 6)
    summary = trainer.model_selection_summary()
    assert summary["rule"] == "per_modality" and summary["metric"] == "accuracy"
    assert {name: entry["epoch"] for name, entry in summary["encoders"].items()} == {"a": 2.0, "b": 4.0}
    assert summary["encoders"]["b"]["validation_accuracy"] == 0.50
    assert summary["final"] == {"epoch": 6.0, "stage": 2, "validation_accuracy": 0.88}


def test_selection_by_loss_takes_each_modality_lowest(tmp_path):
    trainer, recorder = train_recorded(tmp_path, modality_selection_metric="loss")
    assert_modalities_from(trainer, recorder, {"a": 3, "b": 3})


def test_fused_selection_reproduces_the_reference_choice(tmp_path):
    # The reference rule: one epoch by the fused score over every evaluation. Epoch 1 wins over all, so stage 2
    # starts from it and the final model is that stage-1 checkpoint, its fusion head untrained and unused.
    trainer, recorder = train_recorded(tmp_path, model_selection="fused")
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{1 * STEPS_PER_EPOCH}")
    assert not bool(trainer.model.fusion_head_trained)
    assert_part_from_epoch(trainer.model.state_dict(), recorder.by_epoch, "dimml.encoders.", 1)
    assert not (tmp_path / f"checkpoint-{STEPS_PER_EPOCH}" / MODALITY_SELECTION_FILE).exists()
    summary = trainer.model_selection_summary()
    assert summary["rule"] == "fused"
    assert summary["final"]["epoch"] == 1.0 and summary["final"]["stage"] == 1
    assert summary["encoders"] == {"a": {"epoch": 1.0}, "b": {"epoch": 1.0}}


def test_unimodal_is_the_assembly_of_each_modality_best(tmp_path):
    trainer, recorder = train_recorded(tmp_path, method="unimodal")
    assert_modalities_from(trainer, recorder, {"a": 2, "b": 4})
    summary = trainer.model_selection_summary()
    assert "final" not in summary and summary["encoders"]["a"]["epoch"] == 2.0


def test_resume_in_stage_1_keeps_the_per_modality_bests(tmp_path):
    uninterrupted = scripted_trainer(tmp_path / "full")
    uninterrupted.train()

    killed = scripted_trainer(tmp_path / "killed")
    killed.add_callback(KillAtStep(3 * STEPS_PER_EPOCH))  # after epoch 3's checkpoint: a's best (epoch 2) is past
    killed.train()
    checkpoint = tmp_path / "killed" / f"checkpoint-{3 * STEPS_PER_EPOCH}"
    assert (checkpoint / MODALITY_SELECTION_FILE).is_file()

    resumed = scripted_trainer(tmp_path / "killed", init_seed=123)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.model_selection_summary()["encoders"] == uninterrupted.model_selection_summary()["encoders"]
    expected = uninterrupted.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_dimml_per_modality_selection_needs_a_stage_2(tmp_path):
    with pytest.raises(ValueError, match="stage2_epochs >= 1"):
        scripted_trainer(tmp_path, stage2_epochs=0)
    with pytest.raises(ValueError, match="model_selection"):
        training_args(tmp_path, model_selection="best")


def test_real_metrics_drive_the_selection(tmp_path):
    # Without a script: the trainer's own evaluation gives every modality's accuracy, macro-F1 and loss.
    torch.manual_seed(0)
    model = DIMMLForMultimodalClassification(vector_config())
    dataset = vector_dataset()
    trainer = DIMMLTrainer(model=model, args=training_args(
        tmp_path, stage1_epochs=3, stage2_epochs=1, save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", modality_selection_metric="macro_f1"), train_dataset=dataset,
        eval_dataset=dataset)
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_macro_f1_a" in entry]
    assert len(evaluations) == 4 and all(entry["eval_loss_b"] > 0 for entry in evaluations)
    for name, entry in trainer.model_selection_summary()["encoders"].items():
        stage1 = [e[f"eval_macro_f1_{name}"] for e in evaluations[:3]]
        assert entry["validation_macro_f1"] == max(stage1)
        assert entry["epoch"] == 1 + stage1.index(max(stage1))


# --- the tracker alone ------------------------------------------------------------------------------------------


def test_tracker_update_save_and_load_round_trip(tmp_path):
    modules = {"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(4, 2)}
    selection = ModalitySelection(["a", "b"], "loss")
    assert selection.update({"eval_loss_a": 1.0, "eval_loss_b": 2.0}, 1.0, 10, modules) == ["a", "b"]
    kept_a = modules["a"].weight.detach().clone()
    with torch.no_grad():
        for module in modules.values():
            module.weight.add_(1.0)
    assert selection.update({"eval_loss_a": 1.5, "eval_loss_b": float("nan")}, 2.0, 20, modules) == []
    assert selection.update({"eval_loss_a": 1.5, "eval_loss_b": 1.0}, 3.0, 30, modules) == ["b"]
    selection.save(tmp_path)
    restored = ModalitySelection(["a", "b"], "loss")
    assert restored.load(tmp_path)
    assert restored.summary() == selection.summary()
    assert restored.summary()["b"] == {"epoch": 3.0, "step": 30, "validation_loss": 1.0}
    restored.assemble(modules)
    assert torch.equal(modules["a"].weight, kept_a)
    with pytest.raises(KeyError, match="eval_loss_b"):
        selection.update({"eval_loss_a": 0.1}, 4.0, 40, modules)
    with pytest.raises(ValueError, match="selected by 'loss'"):
        ModalitySelection(["a", "b"], "accuracy").load(tmp_path)
    assert not ModalitySelection(["a", "b"], "loss").load(tmp_path / "elsewhere")


# --- what the user sees: the card and the summary ---------------------------------------------------------------


def test_card_states_which_epoch_each_encoder_came_from():
    from hf_dimml.model_card import build_model_card

    summary = {
        "method": "dimml",
        "modalities": [{"name": "audio", "kind": "spectrogram"}, {"name": "image", "kind": "image"}],
        "metrics": {"test": {"accuracy": 0.95, "macro_f1_image": 0.63, "loss_image": 0.99}},
        "model_selection": {
            "rule": "per_modality", "metric": "accuracy",
            "encoders": {"audio": {"epoch": 6.0, "step": 198, "validation_accuracy": 0.8911},
                         "image": {"epoch": 19.0, "step": 627, "validation_accuracy": 0.6778}},
            "final": {"epoch": 31.0, "stage": 2, "validation_accuracy": 0.9489},
        },
    }
    card = str(build_model_card(summary))
    section = card.split("## Model selection", 1)[1].split("## Results", 1)[0]
    assert "| `audio` encoder | 6 | accuracy 0.8911 |" in section
    assert "| `image` encoder | 19 | accuracy 0.6778 |" in section
    assert "| rest of the model (stage 2) | 31 | accuracy 0.9489 |" in section
    assert "Macro F1 (image branch)" in card and "loss image" not in card  # losses stay out of the results
    summary["model_selection"] = {"rule": "fused", "encoders": {"audio": {"epoch": 1.0}, "image": {"epoch": 1.0}},
                                  "final": {"epoch": 1.0, "stage": 1, "validation_accuracy": 0.9}}
    assert "reference implementation's rule" in str(build_model_card(summary))
    del summary["model_selection"]
    assert "## Model selection" not in str(build_model_card(summary))


def test_train_script_records_the_selection_in_summary_card_and_plot(tmp_path, monkeypatch):
    from pathlib import Path

    from hf_dimml.run import main

    pytest.importorskip("matplotlib")
    script = Path(__file__).resolve().parents[1] / "training_scripts" / "train.py"
    monkeypatch.setenv("HF_DIMML_CACHE", str(tmp_path / "cache"))
    output = tmp_path / "run"
    summary = main([
        str(script.parent / "configs" / "av_digits_dimml.yaml"), "--output_dir", str(output),
        "--stage1_epochs", "3", "--stage2_epochs", "1", "--duc_start_epoch", "1", "--max_train_samples", "256",
        "--disable_tqdm", "true", "--use_cpu", "true",
    ])
    selection = summary["model_selection"]
    assert selection["rule"] == "per_modality" and set(selection["encoders"]) == {"audio", "image"}
    assert all(1 <= entry["epoch"] <= 3 for entry in selection["encoders"].values())
    assert selection["final"]["epoch"] == 4 and selection["final"]["stage"] == 2
    assert bool(DIMMLForMultimodalClassification.from_pretrained(output).fusion_head_trained)
    assert summary["metrics"]["test"]["accuracy_fusion"] is not None
    card = (output / "README.md").read_text()
    assert "## Model selection" in card and "| `image` encoder |" in card
    assert (output / "training_curves.png").stat().st_size > 0
    # Each modality's contribution (issue: Shapley values over the subsets) rides along in the summary and the card.
    test = summary["metrics"]["test"]
    chance = 1 / 10
    assert sum(test["modality_shapley"].values()) == pytest.approx(test["accuracy"] - chance)
    assert "## Modality contribution" in card and (output / "modality_contribution.png").stat().st_size > 0
