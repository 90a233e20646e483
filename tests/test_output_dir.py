"""What training_scripts/train.py does before training: an output folder that holds another run is refused unless
resuming or overwriting, `--resume_from_checkpoint true|last` resumes from the last complete checkpoint, and a run
that `accelerate launch` started with fewer processes than asked warns with the command that works."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_dimml.checkpointing import prepare_output_dir, run_files

REPO = Path(__file__).resolve().parents[1]


from hf_dimml import run as train_script  # noqa: E402  (what training_scripts/train.py runs)


def earlier_run(folder: Path) -> Path:
    """What a finished run with checkpoints leaves (file contents do not matter here), plus a file of the user's."""
    for step in (10, 20):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_bytes(b"w")
        (checkpoint / "trainer_state.json").write_text("{}")
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "config.json", "training_summary.json", "README.md",
                 "training_args.bin", "modeling_dimml.py"):
        (folder / name).write_text("x")
    (folder / "runs").mkdir()
    (folder / "notes.txt").write_text("mine")
    return folder


def test_a_folder_holding_another_run_is_refused_with_the_flags_that_allow_it(tmp_path):
    folder = earlier_run(tmp_path / "out")
    with pytest.raises(FileExistsError) as error:
        train_script.main(["--output_dir", str(folder), "--disable_tqdm", "true"])  # refused before any data loads
    message = str(error.value)
    assert str(folder) in message and "checkpoint-10" in message
    assert "--resume_from_checkpoint last" in message and "--overwrite_output_dir true" in message
    assert len(run_files(folder)) == 11 and (folder / "checkpoint-10").is_dir()  # nothing touched

    # Resuming from another folder's checkpoint into it is refused too: it would still mix two runs.
    other = earlier_run(tmp_path / "other")
    with pytest.raises(FileExistsError, match="is not one of its checkpoints"):
        prepare_output_dir(folder, str(other / "checkpoint-20"), overwrite=False)


def test_overwrite_removes_the_earlier_run_and_nothing_else(tmp_path):
    folder = earlier_run(tmp_path / "out")
    removed = prepare_output_dir(folder, None, overwrite=True)
    assert "model.safetensors.index.json" in removed and "checkpoint-20" in removed and "runs" in removed
    assert sorted(entry.name for entry in folder.iterdir()) == ["notes.txt"]
    # An empty folder, a new folder, a folder of unrelated files (a README.md alone is not a run): accepted.
    assert prepare_output_dir(folder, None, overwrite=False) == []
    assert prepare_output_dir(tmp_path / "new", None, overwrite=False) == []
    (folder / "README.md").write_text("# a project folder\n")
    assert prepare_output_dir(folder, None, overwrite=False) == []


def test_resume_true_or_last_means_the_last_complete_checkpoint(tmp_path):
    folder = earlier_run(tmp_path / "out")
    (folder / "checkpoint-30").mkdir()  # written in place and cut short: no trainer state
    (folder / "checkpoint-30" / "model.safetensors").write_bytes(b"w")
    for value in ("true", "True", "last", "latest"):
        assert train_script.resolve_resume_checkpoint(value, folder) == str(folder / "checkpoint-20")
    assert train_script.resolve_resume_checkpoint("false", folder) is None
    assert train_script.resolve_resume_checkpoint(None, folder) is None
    # Resuming this run into its own folder is allowed, and keeps everything.
    assert prepare_output_dir(folder, str(folder / "checkpoint-20"), overwrite=True) == []
    assert (folder / "checkpoint-10").is_dir() and (folder / "model.safetensors.index.json").is_file()

    with pytest.raises(FileNotFoundError, match="no complete checkpoint-<step>"):
        train_script.main(["--output_dir", str(tmp_path / "empty"), "--resume_from_checkpoint", "true"])


def test_fewer_processes_than_asked_warns_with_the_command_that_works():
    script = ["training_scripts/train.py", "configs/x.yaml", "--bf16", "true"]
    launcher = [sys.executable, "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", *script]
    warning = train_script.fewer_processes_warning(1, launcher, script)
    assert "asked for 2 processes but started 1" in warning
    assert ("accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend "
            "no training_scripts/train.py configs/x.yaml --bf16 true") in warning
    assert "torchrun --standalone --nproc_per_node 2 training_scripts/train.py" in warning
    assert train_script.fewer_processes_warning(2, launcher, script) is None
    assert train_script.fewer_processes_warning(1, ["/usr/bin/python", *script], script) is None
    assert train_script.requested_processes(["python", "-m", "accelerate.commands.launch", "--num_processes=3"]) == 3


def test_accelerate_launch_num_processes_2_without_a_config_is_detected(tmp_path):
    # The real launcher: `accelerate launch --cpu --num_processes 2` starts one process (docs/design.md §7).
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(f"""
        import os, sys
        from hf_dimml import run as module
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        print(world_size, module.fewer_processes_warning(world_size, module.launcher_command_line(), sys.argv))
    """))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(probe)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 `accelerate launch` was asked for 2 processes but started 1" in result.stdout
    assert "torchrun --standalone --nproc_per_node 2" in result.stdout
