"""From the official download to a DatasetDict: tiny but real files in each dataset's official layout (videos encoded
with PyAV, lists with CRLF / BOM / duplicate ids / pre-rename names, written from docs/design.md §9's descriptions), through
``prepare_dataset.py`` (extraction, then the builder), with corrupt media counted as skips with their reasons."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("av")

from layouts_writers import (  # noqa: E402
    KS31,
    TINY_AUDIO,
    make_ave_official,
    make_cremad_official,
    make_kinetics_sounds_dmrnet,
    make_kinetics_sounds_ogmge,
    make_modelnet40_official,
    make_ucf101_official,
    write_cremad_mla_lists,
    write_video,
)
from hf_dimml.data.prepare import main as prepare  # noqa: E402  (what training_scripts/prepare_dataset.py runs)

from hf_dimml.data.builders import build_ave, build_cremad, build_kinetics_sounds, dataset_recipe  # noqa: E402
from hf_dimml.data.extraction import MediaError  # noqa: E402
from hf_dimml.data.lists import (  # noqa: E402
    KINETICS_SOUNDS_31,
    ListFormatError,
    label_names_for,
    parse_ave_list,
    parse_cremad_list,
    parse_kinetics_sounds_list,
)

TINY_AV = ["--set", f"audio.sampling_rate={TINY_AUDIO['sampling_rate']}", "--set", f"audio.duration={TINY_AUDIO['duration']}",
           "--set", f"audio.n_fft={TINY_AUDIO['n_fft']}", "--set", f"audio.hop_length={TINY_AUDIO['hop_length']}",
           "--set", "visual.image_size=16", "--workers", "1"]  # fmt: skip
TINY_AV_RECIPE = {"audio": TINY_AUDIO, "visual": {"image_size": 16}}


def built(cache: Path) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(next(p for p in cache.iterdir() if not p.name.startswith("."))))


# -- the list readers --------------------------------------------------------------------------------------------


def test_cremad_lists_with_bom_crlf_and_mla_lines(tmp_path: Path) -> None:
    rows = make_cremad_official(tmp_path, actors=2)
    entries = parse_cremad_list(tmp_path / "train.csv")
    assert entries[0].clip_id == "1038_ITH_ANG_XX" and entries[0].label == "ANG"  # no '\ufeff' in front
    mla = write_cremad_mla_lists(tmp_path, rows)
    assert [(e.clip_id, e.label) for e in parse_cremad_list(mla / "train.txt")] == [(c, e) for c, e in rows["train"]]


def test_ave_list_duplicates_are_handled_as_the_reference_and_counted(tmp_path: Path) -> None:
    (tmp_path / "trainSet.txt").write_bytes(
        b"Banjo&-ty5tv-2kys&good&0&10\r\nDog&a1&good&2&8\r\nMandolin&-ty5tv-2kys&good&0&10\r\nDog&a1&good&2&8\r\n"
    )
    entries, notes = parse_ave_list(tmp_path / "trainSet.txt")
    assert [(e.clip_id, e.label) for e in entries] == [("-ty5tv-2kys", "Banjo"), ("a1", "Dog")]  # first line kept
    assert dict(entries[1].extra) == {"start": 2.0, "end": 8.0}
    assert notes["duplicate_lines"] == 2 and notes["relabelled_ids"] == 1 and "Mandolin" in notes["examples"][0]


def test_kinetics_sounds_lists_and_numeric_labels(tmp_path: Path) -> None:
    make_kinetics_sounds_ogmge(tmp_path)
    entries = parse_kinetics_sounds_list(tmp_path / "my_train.txt")
    assert {e.label for e in entries} == {"0", "2", "10"}  # the third field, not the clip length 10
    names, mapping = label_names_for([e.label for e in entries])
    assert names == ["0", "2", "10"]  # numerically sorted
    names, mapping = label_names_for([e.label for e in entries], KINETICS_SOUNDS_31)
    assert names == [KS31[0], KS31[2], KS31[10]] and mapping["10"] == "playing clarinet"
    plain = tmp_path / "plain.csv"
    plain.write_text("id,label\nx1,dog barking\nx2,singing\n")
    assert [e.label for e in parse_kinetics_sounds_list(plain)] == ["dog barking", "singing"]


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_kinetics_sounds_list, "a_0_10,10\nb_0_10,10\n", "every line has the label '10'"),
        (parse_kinetics_sounds_list, "a,1,2,3\n", "4 comma-separated field"),
        (parse_cremad_list, "1001_DFA_ANG_XX,ANG\n1001_DFA_DIS_XX,ANG\n", "every line has the label 'ANG'"),
        (parse_cremad_list, "1001_DFA_ANG_XX;ANG\n", "expected a clip and an emotion"),
        (lambda p: parse_ave_list(p)[0], "Dog&a&good&0&10\nDog&b&good&0&10\n", "every line has the label 'Dog'"),
    ],
)
def test_a_list_without_a_usable_label_column_is_an_error_showing_a_line(parser, text, message, tmp_path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(ListFormatError, match=message) as caught:
        parser(path)
    assert str(path) in str(caught.value) and "Accepted formats" in str(caught.value)


# -- from the official download, through prepare_dataset.py ---------------------------------------------------------


def test_cremad_from_the_download(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "CREMA-D"
    make_cremad_official(root)
    (root / "VideoFlash" / "1039_ITH_HAP_XX.flv").write_bytes(b"")  # an empty download
    with pytest.raises(MediaError, match="1039_ITH_HAP_XX.flv: empty file"):  # CREMA-D's default: stop, naming it
        prepare(["cremad", "--root", str(root), "--cache-dir", str(tmp_path / "cache"), *TINY_AV])
    assert not (tmp_path / "cache").exists()
    assert prepare(["cremad", "--root", str(root), "--cache-dir", str(tmp_path / "cache"), *TINY_AV,
                    "--on-missing", "skip"]) == 0
    out = capsys.readouterr().out
    # the stopped run had extracted the 4 clips before the bad one: they are not extracted again
    assert "cremad extraction: 4 extracted, 4 already done, 1 skipped (1 empty file (0 bytes))" in out
    assert "1039_ITH_HAP_XX.flv: empty file" in out
    dataset = built(tmp_path / "cache")
    recipe = dataset_recipe(dataset)
    assert recipe["skipped"]["count"] == 1 and "1039_ITH_HAP_XX" in recipe["skipped"]["clips"][0]["id"]
    assert recipe["list_notes"]["renamed_clips"] == 1  # 1040_ITH_SAD_XX listed, 1040_ITH_SAD_X on disk
    assert sum(dataset[s].num_rows for s in ("train", "validation")) == 5 and dataset["test"].num_rows == 3
    assert len(dataset["test"][0]["visual"]) == 3  # 3 s at 1 fps: the frames 00000, 00004, 00008
    # The same folder with MLA's lists.
    train = [(f"{actor}_ITH_{emotion}_XX", emotion) for actor in (1038, 1039) for emotion in ("ANG", "SAD")]
    mla = write_cremad_mla_lists(root, {"train": train, "test": [("1040_ITH_ANG_XX", "ANG"), ("1040_ITH_SAD_XX", "SAD")]})
    mla_build = build_cremad(root, cache_dir=tmp_path / "cache-mla", recipe=TINY_AV_RECIPE, progress=False,
                             train_list=str(mla / "train.txt"), test_list=str(mla / "test.txt"),
                             validation_fraction=0.5)
    assert {split: mla_build[split].num_rows for split in mla_build} == {"train": 2, "validation": 2, "test": 2}


def test_ave_from_the_download(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "AVE_Dataset"
    expected = make_ave_official(root)
    truncated = root / "AVE" / "12AbC-dEf_0.mp4"  # a test clip cut in half
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert prepare(["ave", "--root", str(root), "--cache-dir", str(tmp_path / "cache"), *TINY_AV,
                    "--set", "visual.num_frames=2", "--extract-option", "min_frames=2"]) == 0
    out = capsys.readouterr().out
    assert "2 skipped (2 unreadable)" in out  # its frames and its audio
    dataset = built(tmp_path / "cache")
    recipe = dataset_recipe(dataset)
    assert {s: dataset[s].num_rows for s in dataset} == {**expected, "test": expected["test"] - 1}
    assert recipe["list_notes"]["train"]["duplicate_lines"] == 2 and recipe["list_notes"]["train"]["relabelled_ids"] == 1
    assert recipe["label_names"] == ["Banjo", "Church bell", "Dog"]  # no Mandolin: the repeated line was dropped
    assert recipe["options"]["audio_dir"] == "Audios" and recipe["options"]["frames_dir"] == "Image-01-FPS-SE"
    assert len(dataset["train"][0]["visual"]) == 3  # StartTime 1 .. EndTime 3 at 1 fps
    assert any("12AbC-dEf_0" in entry["id"] for entry in recipe["skipped"]["clips"])


def test_ave_audio_is_cropped_to_the_annotated_window(tmp_path: Path) -> None:
    root = tmp_path / "AVE"
    make_ave_official(root)
    prepare(["ave", "--root", str(root), "--cache-dir", str(tmp_path / "c1"), *TINY_AV, "--set", "visual.num_frames=2"])
    rows = built(tmp_path / "c1")["validation"]
    recipe_options = dataset_recipe(rows)["options"]
    assert recipe_options["crop_audio_to_event"] is True
    uncropped = build_ave(root, cache_dir=tmp_path / "c2", recipe={**TINY_AV_RECIPE, "visual": {"image_size": 16, "num_frames": 2}},
                          crop_audio_to_event=False, progress=False)["validation"]
    assert rows["audio"][0] != uncropped["audio"][0]


def test_kinetics_sounds_ogmge_lists_and_videos(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ks"
    counts = make_kinetics_sounds_ogmge(root)
    # Two clips still as videos (the extraction writes their frames and audio).
    for clip, label in (("newclip01_000000_000010", 2), ("newclip02_000000_000010", 10)):
        write_video(root / "videos" / KS31[label] / f"{clip}.mp4", seconds=3.0, fps=4, audio_rate=16000)
        with open(root / "my_train.txt", "a") as handle:
            handle.write(f"{clip},10,{label}\n")
    assert prepare(["kinetics_sounds", "--root", str(root), "--cache-dir", str(tmp_path / "cache"), *TINY_AV]) == 0
    out = capsys.readouterr().out
    assert "kinetics_sounds extraction: 4 extracted" in out
    dataset = built(tmp_path / "cache")
    recipe = dataset_recipe(dataset)
    assert recipe["label_names"] == [KS31[0], KS31[2], KS31[10]]
    assert sum(dataset[s].num_rows for s in ("train", "validation")) == counts["train"] + 2
    assert dataset["test"].num_rows == counts["test"]


def test_kinetics_sounds_dmrnet_class_folders(tmp_path: Path) -> None:
    counts = make_kinetics_sounds_dmrnet(tmp_path / "ks")
    dataset = build_kinetics_sounds(tmp_path / "ks", cache_dir=tmp_path / "cache", recipe=TINY_AV_RECIPE, progress=False)
    assert dataset["train"].features["labels"].names == ["blowing_nose", "bowling", "playing_bagpipes"]
    assert sum(dataset[s].num_rows for s in ("train", "validation")) == counts["train"]
    assert dataset["test"].num_rows == counts["test"] and dataset_recipe(dataset)["skipped"]["count"] == 0


def test_kinetics_sounds_constant_label_column_stops_the_build(tmp_path: Path) -> None:
    root = tmp_path / "ks"
    make_kinetics_sounds_ogmge(root)
    lines = (root / "my_train.txt").read_text().splitlines()
    (root / "my_train.txt").write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    with pytest.raises(ListFormatError, match="my_train.txt.*every line has the label '10'"):
        build_kinetics_sounds(root, cache_dir=tmp_path / "cache", recipe=TINY_AV_RECIPE, progress=False)


def test_ucf101_from_the_avi_and_official_lists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("cv2")
    root = tmp_path / "UCF101"
    counts = make_ucf101_official(root)
    bad = root / "UCF-101" / "Archery" / "v_Archery_g02_c01.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage")
    assert prepare(["ucf101", "--root", str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "1",
                    "--on-missing", "skip", "--set", "rgb.image_size=16", "--set", "flow.image_size=16",
                    "--set", "flow.num_frames=3", "--extract-option", "flow_method=farneback"]) == 0
    out = capsys.readouterr().out
    assert "2 skipped (2 no video stream)" in out  # its frames and its flow
    dataset = built(tmp_path / "cache")
    assert sum(dataset[s].num_rows for s in ("train", "validation")) == counts["train+validation"] - 1
    assert dataset["test"].num_rows == counts["test"]
    row = dataset["test"][0]
    assert len(row["rgb"]) == 5 and len(row["flow"]) == 4  # flow: one frame fewer than RGB
    assert dataset_recipe(dataset)["options"]["rgb_dir"] == "jpegs_256"


@pytest.mark.parametrize("naming", ["mvcnn", "rotationnet"])
def test_modelnet40_both_render_namings(tmp_path: Path, naming: str) -> None:
    make_modelnet40_official(tmp_path / "mn", naming=naming)
    assert prepare(["modelnet40", "--root", str(tmp_path / "mn"), "--cache-dir", str(tmp_path / "cache"),
                    "--set", "front.image_size=8", "--set", "rear.image_size=8"]) == 0
    dataset = built(tmp_path / "cache")
    assert dataset["test"].num_rows == 2 and dataset["train"].features["labels"].names == ["airplane", "bathtub"]


def test_one_epoch_of_train_py_on_the_cremad_download(tmp_path: Path) -> None:
    root = tmp_path / "CREMA-D"
    make_cremad_official(root)
    cache = tmp_path / "cache"
    assert prepare(["cremad", "--root", str(root), "--cache-dir", str(cache), *TINY_AV]) == 0
    from test_train_datasets import TINY_RUN, train_script

    config = Path(__file__).resolve().parents[1] / "training_scripts" / "configs" / "cremad_dimml.yaml"
    summary = train_script.main([
        str(config), "--data_root", str(root), "--dataset_cache_dir", str(cache),
        "--recipe_overrides", json.dumps(TINY_AV_RECIPE), "--encoders", "audio=test_resnet", "visual=test_resnet",
        "--output_dir", str(tmp_path / "out"), *TINY_RUN, "--dataloader_persistent_workers", "false",
    ])  # fmt: skip
    assert summary["dataset"]["splits"]["test"] == 3
    assert {m["name"]: m["input_shape"] for m in summary["modalities"]}["visual"] == [3, 3, 16, 16]
