"""The command line of `training_scripts/prepare_dataset.py` (and the `prepare_<name>.py` wrappers): build and cache a
benchmark dataset from its official download, extracting what is missing first. Usage and options: that script's
docstring, or `--help`."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from typing import Any

from .builders import DATASET_BUILDERS, dataset_recipe, processor_from_dataset
from .extraction import extract_missing

__all__ = ["main", "parse_arguments"]


def _parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists, null), the raw string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(pairs: list[str], flag: str) -> list[tuple[str, Any]]:
    parsed = []
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed.append((key, _parse_value(value)))
    return parsed


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASET_BUILDERS), help="which benchmark layout to read")
    parser.add_argument("--root", required=True, help="the dataset folder, in its community layout")
    parser.add_argument("--cache-dir", default=None, help="where cached builds live")
    parser.add_argument(
        "--set",
        dest="recipe",
        action="append",
        default=[],
        metavar="MODALITY.KEY=VALUE",
        help="override a processor/recipe parameter, e.g. audio.duration=2.0 (repeatable)",
    )
    parser.add_argument("--recipe-json", default=None, help='JSON file {"modality": {"key": value}} of overrides')
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a builder keyword argument, e.g. train_list=train_v2.csv or split=2 (repeatable)",
    )
    parser.add_argument("--on-missing", choices=("error", "skip"), default=None, help="missing/bad clips: fail or skip")
    parser.add_argument(
        "--max-frames", type=int, default=None, help="keep at most this many (uniformly spaced) frames per clip"
    )
    parser.add_argument(
        "--max-short-side", type=int, default=None,
        help="store frames/images larger than this re-encoded with this shorter side (faster decoding in training)",
    )
    parser.add_argument(
        "--no-verify-images", action="store_true", help="only check image headers, do not decode every frame"
    )
    parser.add_argument(
        "--no-extract", action="store_true", help="do not decode videos: the frames / audio / flow folders exist"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="extraction processes")
    parser.add_argument(
        "--extract-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extraction setting, e.g. fps=1, min_frames=3, audio_rate=44100, flow_method=farneback (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a cached build exists")
    parser.add_argument("--processor-out", default=None, help="also save the matching DIMMLProcessor to this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)

    recipe: dict[str, dict[str, Any]] = {}
    if args.recipe_json:
        with open(args.recipe_json, encoding="utf-8") as handle:
            recipe = json.load(handle)
    for dotted, value in _key_values(args.recipe, "--set"):
        modality, _, key = dotted.partition(".")
        if not key:
            raise SystemExit(f"--set expects MODALITY.KEY=VALUE, got {dotted!r}")
        recipe.setdefault(modality, {})[key] = value

    kwargs: dict[str, Any] = dict(_key_values(args.option, "--option"))
    kwargs.update(cache_dir=args.cache_dir, recipe=recipe or None, force_rebuild=args.force, progress=True)
    if args.on_missing is not None:
        kwargs["on_missing"] = args.on_missing
    if args.no_verify_images:
        kwargs["verify_images"] = False
    if args.max_frames is not None:
        kwargs["max_frames"] = args.max_frames
    if args.max_short_side is not None:
        kwargs["max_short_side"] = args.max_short_side

    builder = DATASET_BUILDERS[args.dataset]
    if not args.no_extract:
        report = extract_missing(
            args.dataset,
            args.root,
            num_workers=args.workers,
            # the builder's own default where --on-missing is not given: an error names the bad file
            on_error=args.on_missing or inspect.signature(builder).parameters["on_missing"].default,
            **dict(_key_values(args.extract_option, "--extract-option")),
        )
        print(f"{args.dataset} extraction: {report.summary()}")
        for entry in report.skipped:
            print(f"  skipped {entry['kind']} of {entry['id']}: {entry['source']}: {entry['reason']}")
    dataset = builder(args.root, **kwargs)
    stored = dataset_recipe(dataset)
    print(f"{args.dataset}: {', '.join(f'{split} {dataset[split].num_rows}' for split in dataset)} rows")
    print(f"  labels ({len(stored['label_names'])}): {', '.join(stored['label_names'])}")
    skipped = stored["skipped"]
    print(f"  skipped clips: {skipped['count']}")
    for entry in skipped["clips"]:
        print(f"    {entry['split']} {entry['id']}: {entry['reason']}")
    for key, value in sorted(stored.get("list_notes", {}).items()):
        print(f"  {key}: {value}")
    print(f"  cached at: {dataset['train'].cache_files[0]['filename'].rsplit('/train/', 1)[0]}")
    if args.processor_out:
        processor_from_dataset(dataset).save_pretrained(args.processor_out)
        print(f"  processor saved to: {args.processor_out}")
    return 0
