"""Atomic checkpoints (hf_dimml.checkpointing): a crash or a full disk during a save never leaves a checkpoint that
resume picks up, a full disk says so, and resuming from the last complete checkpoint ends where an uninterrupted run
ends. The tiny model, data and trainer are those of test_trainer.py."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from safetensors.torch import save_file
from test_trainer import make_trainer
from transformers.trainer_utils import get_last_checkpoint

from hf_dimml.checkpointing import (
    DiskFullError,
    is_complete_checkpoint,
    last_complete_checkpoint,
    prepare_output_dir,
    resolve_resume_checkpoint,
)
from hf_dimml.hub import select_files_to_upload
from hf_dimml.trainer import DIMMLTrainer

# 256 samples, batch 16: 16 steps an epoch, 48 in all; DUC from epoch 1 (step 16), stage 2 from step 32.
COMMON = dict(stage1_epochs=2, stage2_epochs=1, save_strategy="steps", save_steps=8, eval_strategy="no")
FAILING_STEP = 24  # mid stage 1, DUC on


def checkpoint_names(folder: Path) -> list[str]:
    return sorted((entry.name for entry in folder.iterdir() if entry.is_dir()), key=lambda name: (len(name), name))


def fail_torch_save(monkeypatch, step: int) -> None:
    """torch.save on a full disk: part of the file written, then the zip writer's RuntimeError."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if f"checkpoint-{step}" in str(f):
            Path(f).write_bytes(b"PK\x03\x04 half a file")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4310")
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def fail_safetensors(monkeypatch, step: int) -> None:
    """The model writer (save_pretrained's safetensors) on a full disk: a truncated file, then ENOSPC."""
    original = transformers.modeling_utils.safe_save_file

    def save(tensors, filename, *args, **kwargs):
        if f"checkpoint-{step}" in str(filename):
            Path(filename).write_bytes(b"\x08\x00\x00")
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save)


@pytest.mark.parametrize("fail", [fail_torch_save, fail_safetensors], ids=["torch-writer", "safetensors-writer"])
def test_full_disk_during_a_save_then_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, fail):
    uninterrupted = make_trainer(tmp_path / "full", save_total_limit=2, **COMMON)
    uninterrupted.train()
    expected = uninterrupted.model.state_dict()
    assert checkpoint_names(tmp_path / "full") == ["checkpoint-40", "checkpoint-48"]  # rotated after each rename

    output = tmp_path / "run"
    trainer = make_trainer(output, **COMMON)
    with monkeypatch.context() as patch:
        fail(patch, FAILING_STEP)
        with pytest.raises(DiskFullError) as error:
            trainer.train()
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC
    assert f"checkpoint-{FAILING_STEP} into {output}" in message and "MiB are free there now" in message
    assert "--resume_from_checkpoint last` continues from checkpoint-16" in message
    # Nothing half-written is left, and nothing that resume could take for a checkpoint.
    assert checkpoint_names(output) == ["checkpoint-8", "checkpoint-16"]
    assert get_last_checkpoint(str(output)) == str(output / "checkpoint-16")
    assert resolve_resume_checkpoint("true", output) == resolve_resume_checkpoint("last", output) == str(
        output / "checkpoint-16")

    resumed = make_trainer(output, init_seed=123, **COMMON)
    resumed.train(resume_from_checkpoint=resolve_resume_checkpoint("last", output))
    assert resumed.state.global_step == 48
    for key, value in expected.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert all(is_complete_checkpoint(output / name) for name in checkpoint_names(output))


def test_a_failing_save_leaves_no_checkpoint_and_keeps_its_error(tmp_path, monkeypatch):
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-8" in str(f) and str(f).endswith("scheduler.pt"):
            raise ValueError("a bug in a writer")
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    trainer = make_trainer(tmp_path, **COMMON)
    with pytest.raises(ValueError, match="a bug in a writer"):
        trainer.train()
    assert not any(tmp_path.iterdir())  # neither checkpoint-8 nor its temporary folder


def test_a_crash_mid_save_is_never_resumed_from(tmp_path):
    trainer = make_trainer(tmp_path, **dict(COMMON, stage1_epochs=1, stage2_epochs=0))
    trainer.train()
    assert checkpoint_names(tmp_path) == ["checkpoint-8", "checkpoint-16"]
    # What a kill -9 during the save of step 24 leaves: the temporary folder, half-written.
    partial = tmp_path / ".partial-checkpoint-24" / "checkpoint-24"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"\x08\x00")
    # An old-style checkpoint folder without its trainer state (written in place by another tool) is skipped too.
    (tmp_path / "checkpoint-32").mkdir()
    (tmp_path / "checkpoint-32" / "model.safetensors").write_bytes(b"\x08\x00")

    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-16")
    with pytest.raises(ValueError, match="incomplete.*checkpoint-16"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-32"), tmp_path)
    # Resuming this run clears the unfinished save.
    removed = prepare_output_dir(tmp_path, str(tmp_path / "checkpoint-16"), overwrite=False)
    assert removed == [".partial-checkpoint-24"] and not (tmp_path / ".partial-checkpoint-24").exists()


def test_best_checkpoint_is_recorded_under_its_final_name(tmp_path):
    trainer = make_trainer(tmp_path, stage1_epochs=2, stage2_epochs=1, eval_strategy="epoch", save_strategy="epoch",
                           load_best_model_at_end=True, metric_for_best_model="accuracy")
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.parent == tmp_path and best.name.startswith("checkpoint-") and is_complete_checkpoint(best)
    for checkpoint in tmp_path.glob("checkpoint-*"):
        recorded = json.loads((checkpoint / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert recorded is None or ".partial-" not in recorded


def test_subclass_writes_into_the_checkpoint_before_it_is_published(tmp_path):
    seen = []

    class ExtraFileTrainer(DIMMLTrainer):
        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            seen.append(folder.exists() and not (tmp_path / folder.name).exists())  # written, not yet published
            (folder / "extra.json").write_text("{}")

    reference = make_trainer(tmp_path, **dict(COMMON, stage1_epochs=1, stage2_epochs=0))
    trainer = ExtraFileTrainer(model=reference.model, args=reference.args, train_dataset=reference.train_dataset)
    trainer.train()
    assert seen == [True, True]
    assert checkpoint_names(tmp_path) == ["checkpoint-8", "checkpoint-16"]
    assert all((tmp_path / name / "extra.json").is_file() for name in checkpoint_names(tmp_path))


def test_final_save_replaces_an_earlier_sharded_save_without_stale_files(tmp_path):
    # An earlier, bigger model saved in two shards in the same folder (another run, with --overwrite_output_dir
    # off by a script that called save_model itself).
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        save_file({"w": torch.zeros(2)}, str(tmp_path / shard))
    weight_map = {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "notes.txt").write_text("mine")

    trainer = make_trainer(tmp_path)
    trainer.save_model()

    names = {entry.name for entry in tmp_path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names and "notes.txt" in names
    assert not {name for name in names if name.startswith(("model-", "model.safetensors.index", ".partial"))}
    (tmp_path / "README.md").write_text("# card\n")
    assert "model.safetensors" in select_files_to_upload(tmp_path)  # the push no longer fails on missing shards


def test_full_disk_during_the_final_save_names_the_folder(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    trainer.save_model()
    before = {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()}

    def full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x08")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    with pytest.raises(DiskFullError, match=f"the model into {tmp_path} .*free there now"):
        trainer.save_model()
    assert {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()} == before  # the old save intact
    assert os.path.getsize(tmp_path / "model.safetensors") > 100


def test_two_processes_publish_checkpoints_with_every_process_part(tmp_path):
    # Each process writes its RNG state into the temporary folder; the rename waits for both.
    from test_trainer import train_two_processes

    output, _ = train_two_processes(tmp_path, "dimml", "--save_total_limit", "2")
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert len(checkpoints) == 2 and not list(output.glob(".partial-*"))
    for checkpoint in checkpoints:
        assert is_complete_checkpoint(checkpoint)
        assert {"rng_state_0.pth", "rng_state_1.pth", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
