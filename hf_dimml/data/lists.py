"""The split lists in circulation, read under their own formats (docs/design.md §9).

Every reader takes the file as its authors wrote it: UTF-8 with or without a byte-order mark (``utf-8-sig``, as the
reference loaders read them), LF or CRLF line ends, blank lines ignored. A line no format accepts, a list whose label
column is constant, or a list that parses into fewer than 2 classes is a :class:`ListFormatError` that shows the file,
the line and the formats accepted, instead of a dataset built with a wrong label column.

Formats:

* CREMA-D (:func:`parse_cremad_list`): ``<clip>,<EMO>`` rows (OGM-GE / DI-MML ``train.csv`` / ``test.csv``, an optional
  header) and MLA's ``<clip>.flv <Emotion>`` lines (``Anger``, ``Disgust``, ``Fear``, ``Happy``, ``Neutral``, ``Sad``).
* AVE (:func:`parse_ave_list`): ``Category&VideoID&Quality&StartTime&EndTime`` lines (the official ``trainSet.txt`` /
  ``valSet.txt`` / ``testSet.txt`` / ``Annotations.txt``, an optional header). The official lists repeat ids; as
  DI-MML's ``AVEDataset`` (which appends a clip only when its path is not already in the split), the first line of an
  id in a list is kept and the others are dropped, and counted.
* Kinetics-Sounds (:func:`parse_kinetics_sounds_list`): ``<id>,<label>`` rows (an optional ``id,label`` header) and
  OGM-GE's ``<ytid>_<start>_<end>,10,<int label>`` rows (``my_train.txt`` / ``my_test.txt``; the middle field is the
  clip length in seconds); DMRNet's ``class.txt`` (:func:`read_class_txt`) and its class folders, which stand for
  its lists (:func:`read_dmrnet_folders`).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AVE_FORMATS",
    "CREMAD_FORMATS",
    "CREMAD_LABELS",
    "KINETICS_SOUNDS_31",
    "KINETICS_SOUNDS_FORMATS",
    "ListEntry",
    "ListFormatError",
    "check_label_column",
    "label_names_for",
    "parse_ave_list",
    "parse_cremad_list",
    "parse_kinetics_sounds_list",
    "read_class_txt",
    "read_dmrnet_folders",
    "read_lines",
]

CREMAD_LABELS = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
#: MLA's emotion names -> the CREMA-D codes.
CREMAD_EMOTION_NAMES = {"neutral": "NEU", "happy": "HAP", "sad": "SAD", "fear": "FEA", "disgust": "DIS", "anger": "ANG"}
#: The 31 Kinetics-Sounds classes of the OGM-GE line, alphabetical (the list in circulation, e.g. IBM/AdaMML issue 3).
#: OGM-GE's lists carry integer labels 0..30; they are read as indices into this list (alphabetical order), and
#: ``label_names`` overrides that where a copy of the lists uses another order.
KINETICS_SOUNDS_31 = [
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball", "laughing",
    "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar", "playing clarinet",
    "playing drums", "playing guitar", "playing harmonica", "playing keyboard", "playing organ", "playing piano",
    "playing saxophone", "playing trombone", "playing trumpet", "playing violin", "playing xylophone",
    "ripping paper", "shoveling snow", "shuffling cards", "singing", "stomping grapes", "tap dancing",
    "tapping guitar", "tapping pen", "tickling",
]  # fmt: skip

CREMAD_FORMATS = (
    "'<clip>,<EMO>' rows with EMO in NEU HAP SAD FEA DIS ANG (OGM-GE / DI-MML train.csv, test.csv; optional header), "
    "or '<clip>.flv <Emotion>' lines with Emotion in Anger Disgust Fear Happy Neutral Sad (MLA)"
)
AVE_FORMATS = "'Category&VideoID&Quality&StartTime&EndTime' lines (AVE trainSet.txt / valSet.txt / testSet.txt)"
KINETICS_SOUNDS_FORMATS = (
    "'<id>,<label>' rows (optional 'id,label' header), or OGM-GE's '<ytid>_<start>_<end>,10,<integer label>' rows "
    "(my_train.txt / my_test.txt; the 10 is the clip length), or DMRNet's class folders with class.txt"
)
_HEADER_WORDS = {"id", "clip", "name", "video", "video_id", "youtube_id", "file", "label", "labels", "class",
                 "category", "emotion", "filename"}  # fmt: skip
_MEDIA_SUFFIX = re.compile(r"\.(wav|flv|mp4|avi|mkv|webm)$", re.IGNORECASE)


class ListFormatError(ValueError):
    """A split list that no accepted format reads, or that does not give a usable label column."""


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One list line: the clip id, its label (a string), where it came from and format-specific fields."""

    clip_id: str
    label: str
    where: str
    extra: tuple[tuple[str, Any], ...] = ()


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines, read ``utf-8-sig`` (a BOM is dropped), CRLF or LF."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _error(path: Path, number: int, line: str, problem: str, formats: str) -> ListFormatError:
    return ListFormatError(f"{path}:{number}: {problem}: {line!r}. Accepted formats: {formats}")


def _is_header(fields: Sequence[str]) -> bool:
    return all(field.strip().lower() in _HEADER_WORDS for field in fields[:2])


def check_label_column(path: str | Path, entries: Sequence[ListEntry], formats: str) -> None:
    """A list whose labels are all the same value (fewer than 2 classes) is read with the wrong label column or is
    not a split list: an error showing a line and the formats accepted."""
    labels = {entry.label for entry in entries}
    if not entries:
        raise ListFormatError(f"{path}: no list line was read. Accepted formats: {formats}")
    if len(labels) < 2:
        example = entries[0]
        raise ListFormatError(
            f"{path}: every line has the label {example.label!r} (e.g. {example.where}, clip {example.clip_id!r}): a "
            f"list with fewer than 2 classes, or a constant label column, is not a classification split list. "
            f"Accepted formats: {formats}"
        )


def parse_cremad_list(path: str | Path, check: bool = True) -> list[ListEntry]:
    """CREMA-D split list (see the module docs); labels are returned as the codes of :data:`CREMAD_LABELS`."""
    path = Path(path)
    entries = []
    for number, line in read_lines(path):
        fields = next(csv.reader([line])) if "," in line else line.split()
        fields = [field.strip() for field in fields]
        if len(fields) < 2:
            raise _error(path, number, line, "expected a clip and an emotion", CREMAD_FORMATS)
        clip, label = _MEDIA_SUFFIX.sub("", fields[0]), fields[1]
        code = label.upper() if label.upper() in CREMAD_LABELS else CREMAD_EMOTION_NAMES.get(label.lower())
        if code is None:
            if number == 1 and _is_header(fields):
                continue
            raise _error(path, number, line, f"{label!r} is not a CREMA-D emotion", CREMAD_FORMATS)
        entries.append(ListEntry(clip, code, f"{path}:{number}"))
    if check:
        check_label_column(path, entries, CREMAD_FORMATS)
    return entries


def parse_ave_list(path: str | Path, check: bool = True) -> tuple[list[ListEntry], dict[str, Any]]:
    """AVE list lines -> entries (``extra``: ``start``, ``end`` seconds) and duplicate counts.

    Returns ``(entries, notes)``; ``notes``: ``duplicate_lines`` (lines of an id already read, dropped),
    ``relabelled_ids`` (ids listed again under another category) and a few ``examples``.
    """
    path = Path(path)
    entries: list[ListEntry] = []
    first: dict[str, ListEntry] = {}
    duplicates, relabelled, examples = 0, 0, []
    for number, line in read_lines(path):
        fields = [field.strip() for field in line.split("&")]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise _error(path, number, line, "expected '&'-separated fields", AVE_FORMATS)
        if number == 1 and fields[0].lower() == "category":
            continue
        extra: tuple[tuple[str, Any], ...] = ()
        if len(fields) >= 5:
            try:
                extra = (("start", float(fields[3])), ("end", float(fields[4])))
            except ValueError as err:
                raise _error(path, number, line, "StartTime / EndTime are not numbers", AVE_FORMATS) from err
        entry = ListEntry(fields[1], fields[0], f"{path}:{number}", extra)
        if entry.clip_id in first:
            duplicates += 1
            if first[entry.clip_id].label != entry.label:
                relabelled += 1
                if len(examples) < 3:
                    examples.append(
                        f"{entry.clip_id}: {first[entry.clip_id].label!r} ({first[entry.clip_id].where}) kept, "
                        f"{entry.label!r} ({entry.where}) dropped"
                    )
            continue
        first[entry.clip_id] = entry
        entries.append(entry)
    if check:
        check_label_column(path, entries, AVE_FORMATS)
    return entries, {"duplicate_lines": duplicates, "relabelled_ids": relabelled, "examples": examples}


def parse_kinetics_sounds_list(path: str | Path, check: bool = True) -> list[ListEntry]:
    """Kinetics-Sounds list rows (see the module docs); labels are returned as written (strings)."""
    path = Path(path)
    entries = []
    for number, line in read_lines(path):
        fields = [field.strip() for field in next(csv.reader([line]))]
        if number == 1 and _is_header(fields):
            continue
        if len(fields) == 2 and all(fields):
            clip, label = fields
        elif len(fields) == 3 and fields[1].isdigit() and fields[2].lstrip("-").isdigit() and fields[0]:
            clip, label = fields[0], fields[2]  # OGM-GE: <id>,<clip length>,<label>
        else:
            raise _error(path, number, line, f"{len(fields)} comma-separated field(s) of no known format",
                         KINETICS_SOUNDS_FORMATS)
        entries.append(ListEntry(clip, label, f"{path}:{number}"))
    if check:
        check_label_column(path, entries, KINETICS_SOUNDS_FORMATS)
    return entries


def read_class_txt(path: str | Path) -> list[str]:
    """DMRNet's ``class.txt``: class names separated by commas (spaces inside a name become ``_``, as DMRNet's
    loader does, so that they match the class folders)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    names = ["_".join(part.split()) for part in text.replace("\n", ",").split(",")]
    return [name for name in names if name]


def label_names_for(labels: Iterable[str], known: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Class names and the map from a list's label strings to them.

    String labels: sorted names, identity map. Integer labels: sorted numerically (``2`` before ``10``); with
    ``known`` names (e.g. :data:`KINETICS_SOUNDS_31` or a ``class.txt``), label ``i`` is ``known[i]``, else ``"i"``.
    """
    present = sorted(set(labels))
    if present and all(label.lstrip("-").isdigit() for label in present):
        numbers = sorted({int(label) for label in present})
        if known is not None:
            outside = [n for n in numbers if not 0 <= n < len(known)]
            if outside:
                raise ListFormatError(f"integer labels {outside} are outside the {len(known)} known class names")
            mapping = {label: known[int(label)] for label in present}
            return [known[n] for n in numbers], mapping
        return [str(n) for n in numbers], {label: str(int(label)) for label in present}
    return present, {label: label for label in present}


#: DMRNet's Kinetics-Sounds folders per split: (frames folder, audio folder), each holding ``<class>/`` sub-folders.
DMRNET_FOLDERS = {
    "train": ("visual/train_img/Image-01-FPS", "audio/train"),
    "test": ("visual/val_img/Image-01-FPS", "audio/test"),
}


def read_dmrnet_folders(root: str | Path) -> dict[str, list[ListEntry]]:
    """DMRNet's Kinetics-Sounds layout, where the class folders are the lists::

        root/class.txt                                           the class names, comma-separated
        root/visual/train_img/Image-01-FPS/<class>/<id>/*.jpg    train frames (val_img/ for test)
        root/audio/train/<class>/<id>.wav                        train audio (test/ for test)

    Entries carry their own ``frames`` / ``audio`` paths (``extra``); the label is the class folder, which must be
    a name of ``class.txt`` (spaces as ``_``).
    """
    root = Path(root)
    names = read_class_txt(root / "class.txt")
    splits: dict[str, list[ListEntry]] = {}
    for split, (frames_folder, audio_folder) in DMRNET_FOLDERS.items():
        base = root / frames_folder
        entries = []
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
            if class_dir.name not in names:
                raise ListFormatError(
                    f"{class_dir}: the class folder {class_dir.name!r} is not in {root / 'class.txt'} ({names})"
                )
            for clip_dir in sorted(p for p in class_dir.iterdir() if p.is_dir()):
                audio = root / audio_folder / class_dir.name / f"{clip_dir.name}.wav"
                paths = (("frames", str(clip_dir)), ("audio", str(audio)))
                entries.append(ListEntry(clip_dir.name, class_dir.name, str(clip_dir), paths))
        check_label_column(base, entries, KINETICS_SOUNDS_FORMATS)
        splits[split] = entries
    return splits
