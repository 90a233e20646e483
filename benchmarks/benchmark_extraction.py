#!/usr/bin/env python
"""Video extraction benchmark (issue 14): clips/s with 1 and 2 workers, and the per-sample loading cost of the cached
result vs decoding the video at every read.

    python benchmarks/benchmark_extraction.py                 # 200 clips, 3 repeats (about 1 min on 2 cores)
    python benchmarks/benchmark_extraction.py --clips 200     # more clips
    python benchmarks/benchmark_extraction.py --quick         # smallest size (12 clips, 1 repeat), for the test

What it does:

1. Writes ``--clips`` synthetic clips at the real CREMA-D size and codec into a temporary folder in the official
   layout: ``VideoFlash/<clip>.flv`` (FLV1 480x360, 30 fps, 2.5 s, MP3 22.05 kHz mono track; smooth moving content,
   a few distinct encodes copied under every clip name), ``AudioWAV/<clip>.wav`` (16 kHz mono, 2.5 s) and the
   OGM-GE / DI-MML lists ``train.csv`` / ``test.csv``.
2. Times :func:`hf_dimml.data.extraction.extract_missing` ("cremad": 3 frames per clip at 1 fps, JPEG) with 1 and 2
   worker processes, on a fresh output folder each repeat (the two interleaved); clips/s = clips / median seconds.
   The 2-worker time includes starting the process pool, as a user pays it. With 1 worker FFmpeg decodes with its
   own threads (``thread_type="AUTO"``); workers decode single-threaded, one clip per process.
3. Builds the cached dataset (``build_cremad``, the default recipe: 3 frames, 257x188 spectrogram) and times one
   sample read through the processor's eval transform (stored JPEG frames decoded, resized, normalised + the stored
   spectrogram), against what a pipeline without the cache pays for the same sample: decoding the frames from the
   ``.flv`` (:func:`decode_video_frames`, 1 fps, 3 frames) and the spectrogram from the WAV, through the same
   processor. Both are medians of per-sample times over the same samples, interleaved.

Prints a markdown table; BENCHMARKS.md ("Reading the results") holds a recorded run.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
VIDEO_SIZE = (360, 480)  # height, width: CREMA-D's VideoFlash
VIDEO_FPS = 30
SECONDS = 2.5
DISTINCT_ENCODES = 3


def encode_flv(path: Path, seed: int, seconds: float = SECONDS, fps: int = VIDEO_FPS, audio_rate: int = 22050) -> None:
    """An FLV1 480x360 video with an MP3 track: a smooth random field drifting sideways (compresses like footage
    more than white noise does), plus a sine tone."""
    import av

    height, width = VIDEO_SIZE
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    coarse = rng.integers(0, 256, (height // 24 + 2, (width + 2 * frames) // 24 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((coarse.shape[1] * 24, coarse.shape[0] * 24), Image.BICUBIC))
    with av.open(str(path), "w") as container:
        video = container.add_stream("flv", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("libmp3lame", rate=audio_rate)
        for i in range(frames):
            image = np.ascontiguousarray(field[:height, 2 * i : 2 * i + width])
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        total = int(seconds * audio_rate)
        wave = 0.3 * np.sin(2 * math.pi * (220.0 + 40 * seed) * np.arange(total) / audio_rate)
        tone = (wave * 32767).astype(np.int16)
        chunk = audio.frame_size or 1152
        for start in range(0, total, chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="s16", layout="mono")
            frame.sample_rate = audio_rate
            frame.pts = start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


def write_cremad_layout(root: Path, clips: int) -> list[str]:
    """The official CREMA-D layout with ``clips`` clips (names ``<actor>_IEO_<EMO>_XX``); every third clip goes to
    test. Returns the clip ids."""
    from hf_dimml.data.extraction import write_pcm_wav

    (root / "VideoFlash").mkdir(parents=True, exist_ok=True)
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    encodes = []
    for seed in range(min(DISTINCT_ENCODES, clips)):
        path = root / f".encode{seed}.flv"
        encode_flv(path, seed)
        encodes.append(path)
    ids, rows = [], {"train": [], "test": []}
    for n in range(clips):
        emotion = EMOTIONS[n % len(EMOTIONS)]
        clip = f"{1001 + n // len(EMOTIONS)}_IEO_{emotion}_XX"
        shutil.copyfile(encodes[n % len(encodes)], root / "VideoFlash" / f"{clip}.flv")
        t = np.arange(int(SECONDS * 16000)) / 16000
        write_pcm_wav(root / "AudioWAV" / f"{clip}.wav", (0.3 * np.sin(2 * math.pi * (200 + 7 * n) * t) * 32767), 16000)
        rows["test" if n % 3 == 2 else "train"].append(f"{clip},{emotion}")
        ids.append(clip)
    for encode in encodes:
        encode.unlink()
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + "".join(f"{r}\r\n" for r in rows["train"]).encode())
    (root / "test.csv").write_bytes("".join(f"{r}\r\n" for r in rows["test"]).encode())
    return ids


def time_extraction(root: Path, workers: int) -> float:
    from hf_dimml.data.extraction import extract_missing

    shutil.rmtree(root / "Image-01-FPS", ignore_errors=True)  # a fresh output folder: everything to extract
    start = time.perf_counter()
    report = extract_missing("cremad", root, num_workers=workers, progress=False, on_error="error")
    seconds = time.perf_counter() - start
    if report.extracted == 0 or report.skipped:
        raise RuntimeError(f"extraction did not run as expected: {report.summary()}")
    return seconds


def run(clips: int, repeats: int, samples: int, workers: int) -> dict[str, float]:
    from hf_dimml.data.builders import build_cremad, processor_from_dataset
    from hf_dimml.data.extraction import decode_video_frames

    with tempfile.TemporaryDirectory(prefix="bench_extraction_") as tmp:
        root = Path(tmp) / "CREMA-D"
        ids = write_cremad_layout(root, clips)
        one, many = [], []
        for _ in range(repeats):  # interleaved, so a change of the machine's load hits both sides
            one.append(time_extraction(root, 1))
            many.append(time_extraction(root, workers))
        # the last repeat left a complete Image-01-FPS: build the cache from it
        dataset = build_cremad(root, cache_dir=Path(tmp) / "cache", progress=False, validation_fraction=0.25)
        split = dataset["train"]
        processor = processor_from_dataset(dataset)
        cached = split.with_transform(processor.eval_transform)
        count = min(samples, split.num_rows)
        cached[0]  # warm-up (first read maps the arrow files)
        processor(audio=str(root / "AudioWAV" / f"{ids[0]}.wav"), visual=[[image for _, image in
                  decode_video_frames(root / "VideoFlash" / f"{ids[0]}.flv", fps=1, min_frames=3)]])
        load_s, decode_s, video_s = [], [], []
        for i in range(count):
            clip = split[i]["id"]
            start = time.perf_counter()
            row = cached[i]
            load_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            frames = decode_video_frames(root / "VideoFlash" / f"{clip}.flv", fps=1, min_frames=3)
            video_s.append(time.perf_counter() - start)
            direct = processor(audio=str(root / "AudioWAV" / f"{clip}.wav"), visual=[[image for _, image in frames]])
            decode_s.append(time.perf_counter() - start)
        assert tuple(direct["visual"].shape[-3:]) == tuple(row["visual"].shape[-3:]), (direct["visual"].shape,
                                                                                        row["visual"].shape)
    return {
        "clips": clips,
        "repeats": repeats,
        "workers": workers,
        "samples": count,
        "extract_1_s": statistics.median(one),
        "extract_n_s": statistics.median(many),
        "load_ms": statistics.median(load_s) * 1e3,
        "decode_ms": statistics.median(decode_s) * 1e3,
        "video_ms": statistics.median(video_s) * 1e3,
    }


def table(result: dict[str, float]) -> str:
    clips, workers = result["clips"], result["workers"]
    rate_1 = clips / result["extract_1_s"]
    rate_n = clips / result["extract_n_s"]
    lines = [
        "| measurement | value | ratio |",
        "|---|---|---|",
        f"| extraction, 1 worker ({clips} clips) | {rate_1:.1f} clips/s ({result['extract_1_s']:.2f} s) | 1.00× |",
        f"| extraction, {workers} workers ({clips} clips) | {rate_n:.1f} clips/s ({result['extract_n_s']:.2f} s) "
        f"| {rate_n / rate_1:.2f}× of 1 worker |",
        f"| loading a cached sample (eval transform, {result['samples']} samples) | {result['load_ms']:.2f} ms "
        "| 1.00× |",
        f"| decoding the sample from the video + WAV (same processor) | {result['decode_ms']:.2f} ms "
        f"| {result['decode_ms'] / result['load_ms']:.2f}× of cached |",
        f"| of which decoding the 3 frames from the .flv | {result['video_ms']:.2f} ms "
        f"| {result['video_ms'] / result['load_ms']:.2f}× of cached |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="synthetic clips to write and extract (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="extraction repeats per worker count (default 3)")
    parser.add_argument("--samples", type=int, default=20, help="samples timed for loading (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="the N of the N-worker row (default 2)")
    parser.add_argument("--quick", action="store_true", help="smallest size: 12 clips, 1 repeat, 3 samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.repeats, args.samples = 12, 1, 3
    if args.clips < 12:
        parser.error("--clips must be at least 12 (two train clips per class for the validation carve)")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    result = run(args.clips, args.repeats, args.samples, args.workers)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"benchmark_extraction: {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.2f}; FLV1 480x360 {VIDEO_FPS} fps {SECONDS} s clips")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
