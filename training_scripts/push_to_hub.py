#!/usr/bin/env python
"""Push an existing hf_dimml output folder (what training_scripts/train.py wrote) to a Hugging Face Hub model repo.

    python training_scripts/push_to_hub.py --output_dir outputs/dimml-av-digits --repo_id user/dimml-av-digits
    python training_scripts/push_to_hub.py --output_dir X --repo_id user/name --private --commit_message "Retrain"
    python training_scripts/push_to_hub.py --output_dir X --dry_run        # list what would be uploaded

The token comes from the HF_TOKEN environment variable or from `hf auth login`; the Hub from HF_ENDPOINT (default
https://huggingface.co). Uploaded: the weights (safetensors), config.json, the processor config, the code files for
`trust_remote_code`, the model card README.md and the images it embeds; never optimizer/scheduler/RNG states,
training_args.bin, checkpoint-*/ or runs/. The card is regenerated from training_summary.json (so that its
snippet names the repo) unless --keep_card is given, which uploads README.md as it is (e.g. after editing it).
Pushing again to the same repo makes a new commit. Exit status: 0 on success, 1 when the push fails (the reason is
printed; the local folder is left as it was, byte for byte), 2 on bad arguments, 3 when the connection was lost after
the commit was sent and the Hub could not be asked whether it made it (the message says how to check; pushing again is
safe: files already on the Hub make no new commit).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
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
    args = parse_arguments(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_dimml").setLevel(logging.INFO)  # our progress lines; not every HTTP request
    from huggingface_hub.errors import HfHubHTTPError

    from hf_dimml.hub import DEFAULT_COMMIT_MESSAGE, PushOutcomeUnknownError, push_to_hub, select_files_to_upload

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


if __name__ == "__main__":
    sys.exit(main())
