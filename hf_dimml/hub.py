"""Push a trained hf_dimml output folder to the Hugging Face Hub.

One place for the Hub upload (in the spirit of open_clip's ``push_to_hf_hub``): it uploads what a
user of the checkpoint needs and nothing else:

* the weights: ``model.safetensors``, or the ``model-XXXXX-of-YYYYY.safetensors`` shards and
  ``model.safetensors.index.json``;
* ``config.json`` (with ``auto_map``) and the ``*.py`` files ``save_pretrained`` copied next to it for
  ``trust_remote_code``, plus the processor files (``preprocessor_config.json``, ...);
* ``README.md``, the model card, (re)generated from ``training_summary.json`` when present, and the
  image files the card embeds (the training-curve plots);
* ``.eval_results/<dataset>_<split>.yaml``, the Hub's newer results format with the numbers of the
  card's ``model-index``, built from ``training_summary.json`` in memory (never written locally).

Never uploaded: optimizer/scheduler/RNG states, ``trainer_state.json``, ``training_args.bin``,
``checkpoint-*/`` folders, ``runs/`` logs, caches, and any pickle (``*.bin``, ``*.pt``, ``*.pth``,
``*.pkl``). Only top-level files of the folder are considered at all.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .model_card import SUMMARY_FILENAME, eval_results_files, load_training_summary, write_model_card

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "PushOutcomeUnknownError",
    "push_to_hub",
    "select_files_to_upload",
]

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload hf_dimml model"

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# Configuration and processor files that transformers writes and reads back.
_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")
# Relative image references in Markdown (`![alt](path)`) and HTML (`<img src="path">`).
_IMAGE_REFERENCE = re.compile(
    r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]*\ssrc=[\"']([^\"']+)[\"']"
)
# Never uploaded, whatever else is decided: pickles and training state.
_FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_FORBIDDEN_NAMES = ("trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt")

_LOGIN_HELP = (
    "Log in with `hf auth login` (or `huggingface_hub.login()`), set the HF_TOKEN environment variable, "
    "or pass `token=...` (a token with write access, from https://huggingface.co/settings/tokens)."
)


def _card_image_references(text: str) -> list[str]:
    """Relative image paths the card ``text`` embeds (URLs and absolute paths are not ours to upload)."""
    references = []
    for match in _IMAGE_REFERENCE.finditer(text):
        reference = (match.group(1) or match.group(2)).split("#")[0].split("?")[0]
        if "://" in reference or reference.startswith(("/", "data:")):
            continue
        references.append(str(PurePosixPath(reference)))
    return references


def _checkpoint_files(folder: Path, names: set[str]) -> set[str]:
    """The weights and ``config.json`` of the checkpoint in ``folder``; raise if any is missing."""
    if WEIGHTS_INDEX_NAME in names:
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text(encoding="utf-8"))
        shards = set((index.get("weight_map") or {}).values())
        missing = sorted(shard for shard in shards if shard not in names)
        if missing:
            raise FileNotFoundError(f"{folder}/{WEIGHTS_INDEX_NAME} lists shards that are missing: {missing}")
        weights = {WEIGHTS_INDEX_NAME, *shards}
    elif WEIGHTS_NAME in names:
        weights = {WEIGHTS_NAME}
    else:
        raise FileNotFoundError(
            f"no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME} + shards) in {folder}: save the model with "
            "`model.save_pretrained(output_dir)` (safetensors) before pushing"
        )
    if "config.json" not in names:
        raise FileNotFoundError(f"no config.json in {folder}: save the model with `model.save_pretrained` first")
    return weights | {"config.json"}


def _top_level_files(folder: Path) -> set[str]:
    return {entry.name for entry in folder.iterdir() if entry.is_file()}


def select_files_to_upload(output_dir: str | Path, card: str | None = None) -> list[str]:
    """The files of ``output_dir`` that :func:`push_to_hub` uploads, as sorted relative paths.

    Args:
        output_dir: the trained output folder.
        card: the text of a model card that will be uploaded as ``README.md`` instead of the folder's own (its
            images are then the ones uploaded); ``None`` reads the folder's ``README.md``, if any.

    Raises:
        FileNotFoundError: no ``config.json`` or no safetensors weights, or a shard listed in the
            index is missing.
    """
    folder = Path(output_dir)
    names = _top_level_files(folder)
    selected = _checkpoint_files(folder, names)
    selected |= {name for name in _CONFIG_FILES if name in names}
    # The remote code save_pretrained copied: configuration_*, modeling_*, processing_* and their
    # relative imports, all top-level `.py` files.
    selected |= {name for name in names if name.endswith(".py")}
    if card is None and "README.md" in names:
        card = (folder / "README.md").read_text(encoding="utf-8")
    if card is not None:
        selected.add("README.md")
        for reference in _card_image_references(card):
            path = folder / reference
            if reference.lower().endswith(_IMAGE_SUFFIXES) and path.is_file() and ".." not in Path(reference).parts:
                selected.add(reference)
            elif not path.is_file():
                logger.warning("README.md embeds %s, which is not in %s: the image will be missing", reference, folder)

    unsafe = sorted(n for n in selected if n.endswith(_FORBIDDEN_SUFFIXES) or n in _FORBIDDEN_NAMES)
    if unsafe:  # cannot happen with the rules above; kept as a guard against future edits
        raise RuntimeError(f"refusing to upload training state / pickles: {unsafe}")
    return sorted(selected)


def _warn_about_remote_code(folder: Path, names: set[str]) -> None:
    """trust_remote_code loading needs ``auto_map`` in config.json and the modules it names."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{folder}/config.json is not valid JSON") from None
    auto_map = config.get("auto_map")
    if not auto_map:
        logger.warning(
            "%s/config.json has no auto_map: the pushed model will not load with trust_remote_code=True "
            "where hf_dimml is not installed",
            folder,
        )
        return
    for reference in auto_map.values():
        for target in reference if isinstance(reference, list) else [reference]:
            if isinstance(target, str) and "--" not in target:  # "module.Class"; "repo--module.Class" is remote
                module = target.rsplit(".", 1)[0] + ".py"
                if module not in names:
                    logger.warning("config.json auto_map names %s, but %s is not in %s", target, module, folder)


class PushOutcomeUnknownError(ConnectionError):
    """The connection was lost after the commit request was sent and the Hub could not be asked whether it
    applied it: the push may or may not have happened. The message says how to check."""


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions meaning 'could not talk to the endpoint', for the HTTP stacks huggingface_hub uses."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        types.append(module.TransportError)
    try:
        import requests

        types.append(requests.exceptions.ConnectionError)
    except ImportError:
        pass
    return tuple(types)


def _resolve_token(token: str | None) -> str:
    resolved = token or get_token()
    if not resolved:
        raise ValueError(f"No Hugging Face token found, so nothing can be pushed. {_LOGIN_HELP}")
    return resolved


def _stale_remote_files(remote_files: Iterable[str], uploading: set[str]) -> list[str]:
    """Remote files from an earlier push that this push replaces (e.g. old shards, renamed plots).

    Only top-level files of the kinds this module uploads are deleted, so files added to the repo
    by other means (and ``.gitattributes``) stay.
    """
    stale = []
    for path in remote_files:
        if "/" in path or path in uploading or path == ".gitattributes":
            continue
        managed = (
            path in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "README.md", *_CONFIG_FILES)
            or _SHARD_PATTERN.match(path) is not None
            or path.endswith(".py")
            or path.lower().endswith(_IMAGE_SUFFIXES)
        )
        if managed:
            stale.append(path)
    return sorted(stale)


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    endpoint: str | None = None,
    *,
    write_card: bool = True,
) -> str:
    """Upload a trained hf_dimml output folder to a Hub model repo; return the commit URL.

    The repo is created if needed (``exist_ok``). With ``write_card`` and a
    ``training_summary.json`` in the folder, the card is (re)generated and uploaded as ``README.md``;
    the local ``README.md`` is rewritten with it only once the commit exists (the only file written
    locally), so a push that fails or is interrupted leaves the folder byte-identical. A second push
    to the same repo makes a new commit that updates the files and deletes the ones an earlier push
    uploaded that are no longer part of the checkpoint (e.g. old weight shards); a push whose files
    are all on the Hub already makes no commit.

    If the connection is lost after the commit request was sent, the Hub is asked whether the commit
    was made: if it was, the push counts as done; if the Hub cannot be asked,
    :class:`PushOutcomeUnknownError` says so and how to check.

    Args:
        output_dir: the folder ``save_pretrained`` / the training script wrote.
        repo_id: ``"user/name"`` (or ``"name"`` for the token owner's namespace).
        token: a write token; defaults to ``HF_TOKEN`` or the token stored by ``hf auth login``.
        private: visibility of a newly created repo (``None``: the Hub's default).
        commit_message: the commit title.
        endpoint: the Hub URL; defaults to ``HF_ENDPOINT`` or https://huggingface.co.

    Raises:
        ValueError: no token found (nothing is sent and nothing written).
        ConnectionError: the endpoint cannot be reached, or the connection was lost before the commit
            was made (nothing was pushed).
        PushOutcomeUnknownError: (a ``ConnectionError``) the connection was lost after the commit was
            sent and whether the Hub applied it cannot be known now.
        PermissionError: the endpoint rejected the token or denied write access.
        RuntimeError: offline mode (``HF_HUB_OFFLINE=1``) is on, or another commit reached the repo
            while this push was being prepared.
        FileNotFoundError: the folder, its weights or its ``config.json`` are missing, or it has neither
            a ``README.md`` nor a ``training_summary.json`` to build one from.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    resolved_endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    summary_exists = (folder / SUMMARY_FILENAME).is_file()
    if not summary_exists and not (folder / "README.md").is_file():
        raise FileNotFoundError(
            f"{folder} has no README.md and no {SUMMARY_FILENAME} to generate one from: a pushed model needs a card"
        )
    names = _top_level_files(folder)
    _checkpoint_files(folder, names)  # fail on missing weights/config before any network call
    _warn_about_remote_code(folder, names)
    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"Cannot push to {resolved_endpoint}: huggingface_hub offline mode is on (HF_HUB_OFFLINE=1). "
            "Unset HF_HUB_OFFLINE to push."
        )
    resolved_token = _resolve_token(token)

    try:
        from . import __version__ as library_version
    except ImportError:
        library_version = None
    api = HfApi(
        endpoint=resolved_endpoint, token=resolved_token, library_name="hf_dimml", library_version=library_version
    )
    network_errors = _network_error_types()
    full_repo_id, head = repo_id, None
    try:
        full_repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        # The card is built in memory and uploaded from there: the folder stays as it is until the commit exists.
        card = _render_model_card(folder, full_repo_id) if write_card and summary_exists else None
        files = select_files_to_upload(folder, card=card)
        # The Hub's newer results format, the same numbers as the card's model-index; uploaded from memory.
        eval_results = eval_results_files(load_training_summary(folder)) if summary_exists else {}
        # The commit is made on top of this head (parent_commit), so that the deletions below are those of the
        # files it holds and a concurrent commit makes this one fail instead of being merged blindly.
        head = api.repo_info(full_repo_id, repo_type="model").sha
        remote_files = api.list_repo_files(full_repo_id, repo_type="model")
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationDelete(path_in_repo=path) for path in _stale_remote_files(remote_files, set(files))
        ]
        for path in files:
            source = card.encode("utf-8") if card is not None and path == "README.md" else str(folder / path)
            operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=source))
        operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=text.encode("utf-8"))
                       for path, text in eval_results.items()]
        commit_url = api.create_commit(
            full_repo_id, operations, commit_message=commit_message, repo_type="model", parent_commit=head
        ).commit_url
    except OfflineModeIsEnabled as error:
        raise RuntimeError(f"Cannot push to {resolved_endpoint}: offline mode is on; unset HF_HUB_OFFLINE") from error
    except network_errors as error:
        if head is None or not _commit_was_sent(error):  # head is read before the commit request is made
            raise ConnectionError(
                f"Could not reach the Hugging Face Hub at {resolved_endpoint} ({type(error).__name__}: {error}). "
                "Check the network connection and the HF_ENDPOINT / endpoint setting; nothing was committed and "
                f"{folder} is unchanged."
            ) from error
        commit_url = _find_lost_commit(api, full_repo_id, head, commit_message, folder, error)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PermissionError(
                f"{resolved_endpoint} refused the push to {repo_id!r} (HTTP {status}): the token is invalid or "
                f"lacks write access to that namespace. {_LOGIN_HELP}"
            ) from error
        if status == 412:
            raise RuntimeError(
                f"{full_repo_id} received another commit while this push was being prepared; nothing was pushed "
                f"and {folder} is unchanged: push again"
            ) from error
        raise
    if write_card and summary_exists:
        # The commit exists: now the local card may follow (the same content, built again from the same summary).
        try:
            write_model_card(folder, repo_id=full_repo_id)
        except OSError as error:
            logger.warning("Pushed, but could not update %s/README.md: %s", folder, error)
    logger.info("Pushed %s to %s: %s", folder, full_repo_id, commit_url)
    return commit_url


def _render_model_card(folder: Path, repo_id: str) -> str:
    """The ``README.md`` that :func:`~hf_dimml.model_card.write_model_card` writes for ``folder``, written into a
    temporary mirror of the folder's files instead, so that the folder stays untouched until the commit exists."""
    with tempfile.TemporaryDirectory(prefix="hf_dimml_card_") as mirror:
        for entry in folder.iterdir():
            if entry.is_file() and entry.name != "README.md":
                try:
                    os.symlink(entry.resolve(), os.path.join(mirror, entry.name))
                except OSError:  # no symlinks here (Windows without the privilege)
                    shutil.copy2(entry, os.path.join(mirror, entry.name))
        return write_model_card(mirror, repo_id=repo_id).read_text(encoding="utf-8")


def _commit_was_sent(error: BaseException) -> bool:
    """Whether a network error struck the commit request itself after it may have been sent (so it may have been
    applied). A refused connection, or an error in an earlier request (repo creation, listing, upload), never is."""
    if type(error).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionRefusedError", "PoolTimeout"):
        return False
    try:
        url = str(error.request.url)  # httpx errors carry the request; `.request` raises when it was never set
    except (AttributeError, RuntimeError):
        return True  # unknown request: assume the worst
    return "/commit/" in url


def _find_lost_commit(
    api: HfApi, repo_id: str, head: str | None, commit_message: str, folder: Path, error: BaseException
) -> str:
    """After the connection was lost during the commit request: the commit's URL if the Hub has it, a
    ``ConnectionError`` if it certainly has not, :class:`PushOutcomeUnknownError` if that cannot be known."""
    try:
        # repo_info first: one request, no retries with back-off (list_repo_commits waits ~20 s on a dead host).
        sha = api.repo_info(repo_id, repo_type="model").sha
        latest = api.list_repo_commits(repo_id, repo_type="model")[0] if sha != head else None
    except Exception as check_error:  # the Hub is still unreachable (or answers errors): cannot tell
        raise PushOutcomeUnknownError(
            f"The connection to {api.endpoint} was lost after the commit to {repo_id} was sent "
            f"({type(error).__name__}: {error}), and the Hub could not be asked since "
            f"({type(check_error).__name__}): whether the commit was made is unknown. Check {api.endpoint}/{repo_id}"
            f"/commits/main for a commit titled {commit_message!r} newer than {head}, or simply push again: a push "
            f"whose files are already on the Hub makes no new commit. {folder} is unchanged (its README.md is "
            "written only once the commit is known to exist)."
        ) from error
    if latest is not None and latest.commit_id == sha and latest.title == commit_message:
        logger.warning("The connection was lost after the commit was sent; the Hub has it: %s", latest.commit_id)
        return f"{api.endpoint}/{repo_id}/commit/{latest.commit_id}"
    if latest is None:
        raise ConnectionError(
            f"The connection to {api.endpoint} was lost during the commit to {repo_id} "
            f"({type(error).__name__}: {error}); the Hub's main branch is still at {head}, so nothing was "
            f"committed and {folder} is unchanged: push again"
        ) from error
    raise PushOutcomeUnknownError(
        f"The connection to {api.endpoint} was lost during the commit to {repo_id} ({type(error).__name__}: "
        f"{error}), and the newest commit there is {sha} ({latest.title!r}), not this push's: "
        f"check {api.endpoint}/{repo_id}/commits/main, then push again if needed. {folder} is unchanged."
    ) from error


# --- command line (training_scripts/push_to_hub.py) ---------------------------------------------------------------


def _parse_cli_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Push a trained hf_dimml output folder to the Hugging Face Hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="Folder written by training_scripts/train.py.")
    parser.add_argument("--repo_id", help='Hub model repo, "user/name" (or "name" for the token owner).')
    parser.add_argument("--private", action="store_true", help="Create the repo as private (if it does not exist).")
    parser.add_argument("--commit_message", default=None, help="Commit title (default: hf_dimml's).")
    parser.add_argument(
        "--keep_card",
        action="store_true",
        help="Upload README.md as it is instead of regenerating it from training_summary.json.",
    )
    parser.add_argument("--dry_run", action="store_true", help="Only list the files that would be uploaded.")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.repo_id:
        parser.error("--repo_id is required (unless --dry_run)")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line of `training_scripts/push_to_hub.py` (see its docstring); returns the exit status."""
    args = _parse_cli_arguments(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_dimml").setLevel(logging.INFO)  # our progress lines; not every HTTP request
    target = args.repo_id or "the Hub"
    try:
        if args.keep_card and not (args.output_dir / "README.md").is_file():
            raise FileNotFoundError(f"--keep_card: {args.output_dir} has no README.md to upload")
        if args.dry_run:
            if not args.output_dir.is_dir():
                raise FileNotFoundError(f"output folder {args.output_dir} does not exist")
            for name in select_files_to_upload(args.output_dir):
                print(name)
            return 0
        url = push_to_hub(
            args.output_dir,
            args.repo_id,
            private=True if args.private else None,
            commit_message=args.commit_message or DEFAULT_COMMIT_MESSAGE,
            write_card=not args.keep_card,
        )
    except PushOutcomeUnknownError as error:
        print(f"error: the push of {args.output_dir} to {target} may or may not have happened: {error}",
              file=sys.stderr)
        return 3
    except (ValueError, ConnectionError, PermissionError, FileNotFoundError, RuntimeError, HfHubHTTPError) as error:
        # The expected failures (no token, Hub unreachable, token refused, offline mode, incomplete folder, an error
        # answer of the Hub): one clear line, no traceback. Anything else is a bug and keeps its traceback.
        print(f"error: could not push {args.output_dir} to {target}: {error}", file=sys.stderr)
        return 1
    print(url)
    return 0
