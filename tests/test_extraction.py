"""Tests of ``hf_dimml.data.extraction`` on tiny videos encoded with PyAV (the decoder it uses)."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("av")

from layouts_writers import write_video  # noqa: E402

from hf_dimml.data import extraction  # noqa: E402
from hf_dimml.data.extraction import (  # noqa: E402
    ExtractionJob,
    MediaError,
    decode_audio,
    decode_video_frames,
    plan_ave,
    plan_cremad,
    plan_ucf101,
    run_extraction,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_video(folder / "clip.mp4", seconds=3.0, fps=5, audio_rate=16000),
        "flv": write_video(folder / "clip.flv", seconds=3.0, fps=5, audio_rate=22050),
        "avi": write_video(folder / "clip.avi", seconds=1.2, fps=5, audio_rate=None),
    }


def test_frames_at_one_fps_from_each_container(videos: dict[str, Path]) -> None:
    for suffix in ("mp4", "flv", "avi"):
        frames = decode_video_frames(videos[suffix], fps=1)
        expected = [0, 5, 10] if suffix != "avi" else [0, 5]
        assert [index for index, _ in frames] == expected, suffix
        assert frames[0][1].size == (32, 24) and frames[0][1].mode == "RGB"
    assert len(decode_video_frames(videos["mp4"])) == 15  # fps=None: every frame


def test_window_and_padding_to_min_frames(videos: dict[str, Path]) -> None:
    # AVE's StartTime..EndTime: the seconds 1..1 -> the frames of [1 s, 2 s), padded to 4 with evenly spaced ones
    frames = decode_video_frames(videos["mp4"], fps=1, start=1, end=1, min_frames=4)
    assert [index for index, _ in frames] == [5, 6, 8, 9]
    with pytest.raises(MediaError, match="no decodable video frame"):
        decode_video_frames(videos["mp4"], fps=1, start=7, end=9)


def test_audio_track_resampled_mono_and_cropped(videos: dict[str, Path]) -> None:
    samples = decode_audio(videos["mp4"], 8000)
    assert samples.dtype == np.int16 and abs(samples.size - 3 * 8000) < 8000 * 0.1
    assert decode_audio(videos["flv"], 8000, start=1.0, end=2.0).size == 8000
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(videos["avi"], 8000)


def test_bad_media_are_media_errors_naming_the_file(videos: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.flv"
    garbage.write_bytes(b"not a video at all" * 50)
    truncated = tmp_path / "truncated.flv"
    data = videos["flv"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    truncated_mp4 = tmp_path / "truncated.mp4"  # index (moov) at the end: unreadable once cut
    data = videos["mp4"].read_bytes()
    truncated_mp4.write_bytes(data[: len(data) // 2])
    for path, reason in (
        (empty, "empty file"),
        (garbage, "unreadable"),
        (truncated, "truncated"),
        (truncated_mp4, "unreadable"),
        (tmp_path / "absent.mp4", "missing file"),
    ):
        with pytest.raises(MediaError, match=reason) as caught:
            decode_video_frames(path, fps=1)
        assert caught.value.path == str(path)


def test_cremad_extraction_is_resumable_and_counts_skips(videos: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "CREMA-D"
    (root / "VideoFlash").mkdir(parents=True)
    for clip in ("1001_DFA_ANG_XX", "1001_DFA_DIS_XX", "1001_DFA_FEA_XX"):
        (root / "VideoFlash" / f"{clip}.flv").write_bytes(videos["flv"].read_bytes())
    (root / "VideoFlash" / "1002_DFA_HAP_XX.flv").write_bytes(b"")  # an empty download
    out = root / "Image-01-FPS"
    # A run killed mid-clip left a temporary folder, and one earlier clip is complete.
    stale = out / ".1001_DFA_DIS_XX.part-99999"
    stale.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stale / "00000.jpg")
    done = out / "1001_DFA_ANG_XX"
    done.mkdir()
    Image.new("RGB", (4, 4)).save(done / "00000.jpg")

    jobs = plan_cremad(root)
    assert len(jobs) == 4 and not jobs[2].complete()
    report = run_extraction(jobs, progress=False)
    assert (report.extracted, report.already_done, len(report.skipped)) == (2, 1, 1)
    assert report.skipped[0]["id"] == "1002_DFA_HAP_XX" and "empty file" in report.skipped[0]["reason"]
    assert "1 skipped (1 empty file (0 bytes))" in report.summary()
    assert not stale.exists() and not (out / "1002_DFA_HAP_XX").exists()
    assert sorted(p.name for p in (out / "1001_DFA_FEA_XX").iterdir()) == ["00000.jpg", "00005.jpg", "00010.jpg"]
    assert not any(p.name.startswith(".") for p in out.iterdir())
    again = run_extraction(plan_cremad(root), progress=False)
    assert (again.extracted, again.already_done) == (0, 3)
    with pytest.raises(MediaError, match="1002_DFA_HAP_XX.flv: empty file"):
        run_extraction(plan_cremad(root), progress=False, on_error="error")


def test_interrupted_clip_leaves_nothing_that_counts_as_complete(
    videos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "frames" / "clip"
    job = ExtractionJob("clip", "frames", str(videos["mp4"]), (str(target),), (("fps", 1),))
    real_save = extraction._save_jpeg
    calls = []

    def killed_after_one_frame(image: Image.Image, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(image, path)

    monkeypatch.setattr(extraction, "_save_jpeg", killed_after_one_frame)
    with pytest.raises(KeyboardInterrupt):
        run_extraction([job], progress=False)
    assert not target.exists() and not job.complete()
    assert calls[0].parent.name.startswith(".clip.part-")
    monkeypatch.setattr(extraction, "_save_jpeg", real_save)
    assert run_extraction([job], progress=False).extracted == 1 and len(list(target.iterdir())) == 3


def test_ave_plan_crops_frames_and_writes_whole_audio_with_workers(videos: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "AVE_Dataset"
    (root / "AVE").mkdir(parents=True)
    for video_id in ("-0A9suni5YA", "-1Ee6ZAgaLA"):
        (root / "AVE" / f"{video_id}.mp4").write_bytes(videos["mp4"].read_bytes())
    (root / "Annotations.txt").write_text(
        "Category&VideoID&Quality&StartTime&EndTime\r\n"
        "Church bell&-0A9suni5YA&good&1&1\r\n"
        "Dog&-1Ee6ZAgaLA&good&0&3\r\n"
        "Banjo&-1Ee6ZAgaLA&good&2&3\r\n",  # a repeated id: its first line's window is used
        encoding="utf-8",
    )
    report = run_extraction(plan_ave(root, min_frames=2), num_workers=2, progress=False)
    assert report.extracted == 4 and not report.skipped
    assert sorted(p.name for p in (root / "Image-01-FPS-SE" / "-0A9suni5YA").iterdir()) == ["00005.jpg", "00008.jpg"]
    assert len(list((root / "Image-01-FPS-SE" / "-1Ee6ZAgaLA").iterdir())) == 3
    with wave.open(str(root / "Audios" / "-0A9suni5YA.wav")) as handle:
        assert handle.getframerate() == 44100 and handle.getnchannels() == 1
        assert abs(handle.getnframes() - 3 * 44100) < 44100 * 0.1


def test_ucf101_frames_and_tvl1_flow(videos: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    root = tmp_path / "UCF101"
    video = root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(videos["avi"].read_bytes())
    jobs = plan_ucf101(root)
    assert [job.kind for job in jobs] == ["frames", "flow"]
    assert run_extraction(jobs, progress=False).extracted == 2
    rgb = sorted(p.name for p in (root / "jpegs_256" / "v_Archery_g01_c01").iterdir())
    u = sorted(p.name for p in (root / "tvl1_flow" / "u" / "v_Archery_g01_c01").iterdir())
    assert rgb[0] == "frame000001.jpg" and len(rgb) == 6 and u == rgb[:-1]
    with Image.open(root / "tvl1_flow" / "v" / "v_Archery_g01_c01" / "frame000001.jpg") as image:
        assert image.mode == "L" and image.size == (32, 24)
    assert [job.kind for job in plan_ucf101(root)] == ["frames"]  # a flow folder exists now: no flow job


def test_flow_quantisation_matches_the_public_download() -> None:
    flow = np.stack([np.full((2, 2), -20.0), np.full((2, 2), 30.0)], axis=-1)
    u, v = extraction.flow_to_images(flow)
    assert np.asarray(u).max() == 0 and np.asarray(v).min() == 255
    assert np.asarray(extraction.flow_to_images(np.zeros((1, 1, 2)))[0])[0, 0] == 128
