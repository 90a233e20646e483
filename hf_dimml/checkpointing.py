"""Checkpoints that are complete or absent, and output folders that hold one run.

`AtomicCheckpointMixin` (the first base of `DIMMLTrainer`) makes the Trainer write each checkpoint into a temporary
sibling folder, `<output_dir>/.partial-checkpoint-<step>/checkpoint-<step>`, and rename it to
`<output_dir>/checkpoint-<step>` once every process has written its part: a crash, a kill or a full disk never leaves
a `checkpoint-<step>` folder that `--resume_from_checkpoint` (or `transformers.trainer_utils.get_last_checkpoint`)
would pick up half-written. The final `save_model` goes through a temporary folder too, and removes the weight files
of an earlier save that the new one does not have (a stale `model.safetensors.index.json` next to a new
`model.safetensors`). A full disk is reported as such, with the folder and its free space, whatever the writer
(torch's says `unexpected pos`, safetensors' `StorageFull`).

Subclasses that write more files into a checkpoint: do it from `save_model(output_dir, _internal_call=True)` into
`output_dir`, or from a `_save_checkpoint` override after `super()._save_checkpoint(...)` into
`os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")`: both are the temporary folder
while a checkpoint is being saved, and every `_save_checkpoint` override is wrapped (`__init_subclass__`) so that the
rename happens after the outermost one returns.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

__all__ = [
    "AtomicCheckpointMixin",
    "DiskFullError",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "prepare_output_dir",
    "remove_partial_saves",
    "remove_run_files",
    "resolve_resume_checkpoint",
    "run_files",
]

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
PARTIAL_PREFIX = ".partial-"  # not "checkpoint-...": neither get_last_checkpoint nor the rotation ever sees it
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHT_FILE = re.compile(
    r"^(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)$"
    r"|^(model\.safetensors|pytorch_model\.bin)\.index\.json$"
)
# What a training run leaves in its output folder (train.py, the Trainer, save_pretrained, the model card); a folder
# holds a run when it has checkpoints, weights or one of the markers (a README.md or config.json alone is not a run).
_RUN_MARKERS = re.compile(r"^(trainer_state\.json|training_args\.bin|training_summary\.json)$")
_RUN_FILES = re.compile(
    r"^(config\.json|training_curves\.png|(all|train|eval|test|validation)_results\.json|preprocessor_config\.json"
    r"|processor_config\.json|(configuration|modeling|processing)_\w+\.py|README\.md|runs)$"
)
RESUME_LATEST = ("true", "last", "latest")
_RESUME_NONE = ("", "false", "none", "no")


# --- finding checkpoints -------------------------------------------------------------------------------------------


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A checkpoint folder with its trainer state (the Trainer writes it after the weights, optimizer and RNG
    states) and every weight shard its index lists."""
    folder = Path(path)
    if not (folder / TRAINER_STATE_NAME).is_file():
        return False
    for index in folder.glob("*.index.json"):
        try:
            shards = set((json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}).values())
        except (OSError, ValueError):
            return False
        if not all((folder / shard).is_file() for shard in shards):
            return False
    return True


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """`checkpoint-<step>` sub-folders of `folder`, by step, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), entry) for entry in folder.iterdir()
             if entry.is_dir() and (match := _CHECKPOINT.match(entry.name))]
    return sorted(found)


def last_complete_checkpoint(folder: str | os.PathLike[str]) -> str | None:
    """The complete checkpoint of `folder` with the highest step, or None."""
    for _, checkpoint in reversed(_checkpoints(Path(folder))):
        if is_complete_checkpoint(checkpoint):
            return str(checkpoint)
        logger.warning("%s is incomplete (no %s or a missing shard): skipped", checkpoint, TRAINER_STATE_NAME)
    return None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str | os.PathLike[str]) -> str | None:
    """`--resume_from_checkpoint` as a folder: `true` / `last` / `latest` mean the last complete checkpoint of
    `output_dir`; `false` / `none` / empty mean no resuming; a path must be a complete checkpoint.

    Raises:
        FileNotFoundError: `last` with no complete checkpoint in `output_dir`, or a path that does not exist.
        ValueError: a path to an incomplete checkpoint.
    """
    if value is None or value is False:
        return None
    text = "true" if value is True else str(value).strip()
    if text.lower() in _RESUME_NONE:
        return None
    if text.lower() in RESUME_LATEST:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {text}: {output_dir} holds no complete {PREFIX_CHECKPOINT_DIR}-<step> "
                "folder to resume from (start without --resume_from_checkpoint)"
            )
        return checkpoint
    path = Path(text)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {text}: no such folder (or pass `last` for the last "
                                f"complete checkpoint of {output_dir})")
    if not is_complete_checkpoint(path):
        last = last_complete_checkpoint(path.parent)
        raise ValueError(f"--resume_from_checkpoint {text}: the checkpoint is incomplete (no {TRAINER_STATE_NAME} "
                         f"or a missing shard); the last complete one there is {last or 'none'} "
                         "(`--resume_from_checkpoint last` picks it)")
    return str(path)


# --- output folders ------------------------------------------------------------------------------------------------


def run_files(folder: str | os.PathLike[str]) -> list[str]:
    """The names of what a training run left in `folder` (checkpoints, weights, trainer state, summary, card, ...);
    other files are not a run's."""
    root = Path(folder)
    names = [entry.name for entry in root.iterdir()] if root.is_dir() else []
    markers = [name for name in names if _CHECKPOINT.match(name) or _WEIGHT_FILE.match(name)
               or _RUN_MARKERS.match(name) or name.startswith(PARTIAL_PREFIX)]
    return sorted(markers + [name for name in names if _RUN_FILES.match(name)]) if markers else []


def prepare_output_dir(
    output_dir: str | os.PathLike[str], resume_checkpoint: str | None, overwrite: bool, remove: bool = True
) -> list[str]:
    """Checks that a run may write into `output_dir` and clears what it must not find there; returns the names
    removed (only where `remove`: one process per machine).

    - resuming from a checkpoint of `output_dir`: that run continues; only its unfinished saves are removed;
    - `overwrite`: the files of the run the folder holds are removed (never the checkpoint being resumed from);
    - otherwise a folder that holds a run is refused: training into it would rotate its checkpoints away and leave
      its stale weight files beside the new ones.

    Raises:
        FileExistsError: `output_dir` holds another run; the message names the flags that allow it.
    """
    folder = Path(output_dir)
    found = run_files(folder)
    resuming_here = resume_checkpoint is not None and folder.resolve() in Path(resume_checkpoint).resolve().parents
    if found and not resuming_here and not overwrite:
        shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        reason = (f"--resume_from_checkpoint {resume_checkpoint} is not one of its checkpoints" if resume_checkpoint
                  else "training into it would mix the two runs")
        raise FileExistsError(
            f"--output_dir {folder} holds another training run ({shown}); {reason}. Pass --resume_from_checkpoint "
            "last to continue that run, --overwrite_output_dir true to delete its files and start afresh, or choose "
            "another --output_dir."
        )
    if not remove:
        return []
    if overwrite and not resuming_here:
        return remove_run_files(folder)
    return remove_partial_saves(folder)


def remove_run_files(folder: str | os.PathLike[str]) -> list[str]:
    """Deletes what `run_files` lists (an explicit overwrite); returns the names."""
    names = run_files(folder)
    for name in names:
        _remove(Path(folder) / name)
    return names


def remove_partial_saves(folder: str | os.PathLike[str]) -> list[str]:
    """Deletes the temporary folders of saves that never completed (a crash, a kill); returns their names."""
    root = Path(folder)
    names = sorted(entry.name for entry in root.iterdir() if entry.name.startswith(PARTIAL_PREFIX)) \
        if root.is_dir() else []
    for name in names:
        _remove(root / name)
    return names


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- writing -------------------------------------------------------------------------------------------------------


class DiskFullError(OSError):
    """A save ran out of disk space; the message names the folder and the free space left."""


def _is_disk_full(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        # torch's zip writer and safetensors do not raise ENOSPC: they report a short write.
        if re.search(r"unexpected pos|PytorchStreamWriter failed|No space left|StorageFull|os error 28",
                     str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file()) if path.is_dir() else 0


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _disk_full_error(what: str, folder: Path, error: BaseException) -> DiskFullError:
    try:
        free = _mib(shutil.disk_usage(folder if folder.exists() else folder.parent).free)
    except OSError:
        free = "an unknown amount"
    last = last_complete_checkpoint(folder)
    need = f"; a checkpoint there takes {_mib(_size(Path(last)))}" if last else ""
    resume = (f"`--resume_from_checkpoint last` continues from {Path(last).name}" if last
              else "no complete checkpoint exists yet, so a new run starts from the beginning")
    return DiskFullError(
        errno.ENOSPC,
        f"No space left on the device while writing {what} into {folder} ({type(error).__name__}: {error}). "
        f"The partial files were removed; {free} are free there now{need}. Free some space (or lower "
        f"--save_total_limit, or use another --output_dir): {resume}.",
    )


@dataclass
class _Staging:
    """One checkpoint being written: `folder` (inside `root`) becomes `final` when complete."""

    run_dir: str
    name: str

    @property
    def root(self) -> str:
        return os.path.join(self.run_dir, PARTIAL_PREFIX + self.name)

    @property
    def folder(self) -> str:
        return os.path.join(self.root, self.name)

    @property
    def final(self) -> str:
        return os.path.join(self.run_dir, self.name)


def _atomic(save_checkpoint):
    """Runs a `_save_checkpoint` (and everything its overrides write after `super()`) into a temporary folder, then
    publishes it; nested calls (the chain of overrides) write into the same temporary folder."""

    @functools.wraps(save_checkpoint)
    def save_atomically(self, model, trial) -> None:
        if self._checkpoint_staging is not None:
            return save_checkpoint(self, model, trial)
        staging = _Staging(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self._writes_locally():
            shutil.rmtree(staging.root, ignore_errors=True)  # left by a crash at this same step
        self.accelerator.wait_for_everyone()
        self._checkpoint_staging = staging
        try:
            save_checkpoint(self, model, trial)
        except BaseException as error:
            self._checkpoint_staging = None
            self._abandon(staging, error)
            raise
        self._checkpoint_staging = None
        try:
            self._publish(staging, trial)
        except BaseException as error:
            self._abandon(staging, error)
            raise

    save_atomically._atomic = True
    return save_atomically


class AtomicCheckpointMixin:
    """A `transformers.Trainer` mixin (put it first among the bases): checkpoints are written into a temporary
    sibling folder and renamed when complete; the final `save_model` replaces the files of an earlier save without
    leaving stale weight files; a full disk is reported with the folder and its free space (module docstring)."""

    _checkpoint_staging: _Staging | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        override = cls.__dict__.get("_save_checkpoint")
        if override is not None and not getattr(override, "_atomic", False):
            cls._save_checkpoint = _atomic(override)

    @_atomic
    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is saved, the Trainer's `run_dir/checkpoint-<step>` is the temporary folder.
        if self._checkpoint_staging is not None:
            return self._checkpoint_staging.root
        return super()._get_output_dir(trial)

    def _writes_locally(self) -> bool:
        """One process per machine renames and removes folders (each machine has its own disk, or they share one
        and the first rename wins)."""
        return self.args.local_process_index == 0

    def _publish(self, staging: _Staging, trial) -> None:
        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states, shards)
        best = self.state.best_model_checkpoint
        if best is not None and os.path.normpath(best) == os.path.normpath(staging.folder):
            # The Trainer recorded the folder it wrote; the checkpoint's trainer state must name the final one.
            self.state.best_model_checkpoint = staging.final
            state_file = os.path.join(staging.folder, TRAINER_STATE_NAME)
            if self.args.should_save and os.path.isfile(state_file):
                self.state.save_to_json(state_file)
        if self._writes_locally() and os.path.isdir(staging.folder):
            try:
                if os.path.lexists(staging.final):  # the same step saved again: the old folder goes after the swap
                    os.replace(staging.final, os.path.join(staging.root, "replaced"))
                os.replace(staging.folder, staging.final)
            except FileNotFoundError:  # another machine sharing this disk renamed it first
                pass
            shutil.rmtree(staging.root, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            # The Trainer rotated the temporary folder (alone there); the real one is rotated now.
            rotate_checkpoints(
                output_dir=staging.run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def _abandon(self, staging: _Staging, error: BaseException) -> None:
        """Removes the partial checkpoint; a full disk becomes a `DiskFullError` (raised from `error`)."""
        if self._writes_locally():
            shutil.rmtree(staging.root, ignore_errors=True)
        if _is_disk_full(error) and not isinstance(error, DiskFullError):
            raise _disk_full_error(staging.name, Path(staging.run_dir), error) from error

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Inside a checkpoint save the folder is already temporary; a process that writes nothing has nothing to move.
        if self._checkpoint_staging is not None or not self.args.should_save:
            return super()._save(output_dir, state_dict)
        target = Path(output_dir if output_dir is not None else self.args.output_dir)
        staging = target / f"{PARTIAL_PREFIX}save"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            super()._save(str(staging), state_dict)
            _move_into(staging, target)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if _is_disk_full(error):
                raise _disk_full_error("the model", target, error) from error
            raise


def _move_into(staging: Path, target: Path) -> None:
    """Moves every entry of `staging` into `target` (each file appears whole), then deletes the weight files of an
    earlier save that this one does not have (old shards, a stale index)."""
    new = sorted(entry.name for entry in staging.iterdir())
    for name in new:
        destination = target / name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        os.replace(staging / name, destination)
    for entry in target.iterdir():
        if _WEIGHT_FILE.match(entry.name) and entry.name not in new:
            logger.info("removing %s, a weight file of an earlier save", entry)
            entry.unlink()
    staging.rmdir()
