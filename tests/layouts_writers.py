"""Writers of tiny, real dataset folders in each community layout, for the builder tests.

WAV files are written with the standard library ``wave`` module (16-bit PCM sine tones), frames
and renders with PIL (JPEG / PNG). Everything is a few kilobytes, so building is fast.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "TINY_AUDIO",
    "TINY_FRAMES",
    "TINY_IMAGE",
    "write_wav",
    "write_float_wav",
    "write_frames",
    "make_cremad",
    "make_ave",
    "make_kinetics_sounds",
    "make_ucf101",
    "make_modelnet40",
    "write_video",
]

#: Small recipe overrides so that building takes milliseconds: (33, 32) spectrograms, 16x16 frames.
TINY_AUDIO = {"sampling_rate": 8000, "duration": 0.125, "n_fft": 64, "hop_length": 32}
TINY_FRAMES = {"num_frames": 2, "image_size": 16}
TINY_IMAGE = {"image_size": 16}


def write_wav(
    path: Path,
    seconds: float = 0.1,
    rate: int = 16000,
    frequency: float = 440.0,
    channels: int = 1,
    sample_width: int = 2,
) -> Path:
    """A sine tone as integer PCM (``sample_width`` bytes) with the stdlib ``wave`` module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    tone = 0.5 * np.sin(2 * math.pi * frequency * np.arange(n) / rate)
    samples = np.repeat(tone[:, None], channels, axis=1)
    if sample_width == 1:
        data = np.round(samples * 127 + 128).astype(np.uint8).tobytes()
    elif sample_width == 2:
        data = np.round(samples * 32767).astype("<i2").tobytes()
    else:  # 24-bit: the three low bytes of little-endian int32
        ints = np.round(samples * (2**23 - 1)).astype("<i4").reshape(-1)
        data = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in ints)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(sample_width)
        handle.setframerate(rate)
        handle.writeframes(data)
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A mono IEEE-float32 WAV (format tag 3), which the stdlib ``wave`` module cannot read."""
    payload = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_frames(
    directory: Path,
    count: int,
    size: tuple[int, int] = (12, 18),
    mode: str = "RGB",
    seed: int = 0,
    suffix: str = ".jpg",
) -> list[Path]:
    """``count`` random images named ``000001.jpg`` ... in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    paths = []
    for i in range(count):
        path = directory / f"{i + 1:06d}{suffix}"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
        paths.append(path)
    return paths


def make_cremad(
    root: Path, labels: Sequence[str] = ("NEU", "HAP", "ANG"), train_per_label: int = 4, frames: int = 3
) -> Path:
    """CREMA-D layout: AudioWAV/<clip>.wav, Image-01-FPS/<clip>/*.jpg, train.csv / test.csv."""
    train_rows, test_rows = [], []
    for li, label in enumerate(labels):
        for i in range(train_per_label + 1):
            clip = f"10{li:02d}_IEO_{label}_X{i}"
            write_wav(root / "AudioWAV" / f"{clip}.wav", frequency=200.0 + 150 * li + 10 * i)
            write_frames(root / "Image-01-FPS" / clip, frames, seed=li * 10 + i)
            (test_rows if i == train_per_label else train_rows).append(f"{clip},{label}")
    (root / "train.csv").write_text("\n".join(train_rows) + "\n")
    (root / "test.csv").write_text("\n".join(test_rows) + "\n")
    return root


def make_ave(root: Path, classes: Sequence[str] = ("Church bell", "Dog", "Violin, fiddle"), per_split: int = 1) -> Path:
    """AVE layout: trainSet.txt / valSet.txt / testSet.txt ('Category&VideoID&Quality&Start&End'),
    audio/<id>.wav (stereo, 22.05 kHz) and frames/<id>/*.jpg."""
    for split_file, count in (("trainSet.txt", per_split + 1), ("valSet.txt", per_split), ("testSet.txt", per_split)):
        lines = ["Category&VideoID&Quality&StartTime&EndTime"]
        for ci, category in enumerate(classes):
            for i in range(count):
                video = f"{split_file[:2]}{ci}{i}Xy_AbC"
                write_wav(root / "audio" / f"{video}.wav", rate=22050, channels=2, frequency=300.0 + 100 * ci)
                write_frames(root / "frames" / video, 3, seed=ci * 7 + i)
                lines.append(f"{category}&{video}&good&0&10")
        (root / split_file).write_text("\n".join(lines) + "\n")
    return root


def make_kinetics_sounds(
    root: Path, classes: Sequence[str] = ("playing bagpipes", "dog barking"), train_per_class: int = 4
) -> Path:
    """Kinetics-Sounds layout: train.csv / test.csv ('id,label', with a header), audio/<id>.wav, frames/<id>/*.jpg."""
    train_rows, test_rows = ["id,label"], ["id,label"]
    for ci, label in enumerate(classes):
        for i in range(train_per_class + 1):
            clip = f"ks{ci}_{i:03d}"
            write_wav(
                root / "audio" / f"{clip}.wav", rate=8000, sample_width=1 if i % 2 else 2, frequency=250.0 + 200 * ci
            )
            write_frames(root / "frames" / clip, 3, seed=ci * 11 + i)
            (test_rows if i == train_per_class else train_rows).append(f"{clip},{label}")
    (root / "train.csv").write_text("\n".join(train_rows) + "\n")
    (root / "test.csv").write_text("\n".join(test_rows) + "\n")
    return root


def make_ucf101(
    root: Path, classes: Sequence[str] = ("ApplyEyeMakeup", "Archery"), groups: int = 4, nested_rgb: bool = False
) -> Path:
    """UCF101 layout: ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt, rgb/<video>/*.jpg,
    flow/u/<video>/*.jpg, flow/v/<video>/*.jpg. Groups g01 go to test, the others to train (2 clips each)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train_lines, test_lines = [], []
    for ci, class_name in enumerate(classes):
        for g in range(1, groups + 1):
            for c in (1, 2):
                video = f"v_{class_name}_g{g:02d}_c{c:02d}"
                rgb_dir = root / "rgb" / class_name / video if nested_rgb else root / "rgb" / video
                write_frames(rgb_dir, 4, seed=ci * 100 + g * 10 + c)
                write_frames(root / "flow" / "u" / video, 3, mode="L", seed=ci + g + c)
                write_frames(root / "flow" / "v" / video, 3, mode="L", seed=ci + g + c + 1)
                if g == 1:
                    test_lines.append(f"{class_name}/{video}.avi")
                else:
                    train_lines.append(f"{class_name}/{video}.avi {ci + 1}")
    (lists / "trainlist01.txt").write_text("\n".join(train_lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test_lines) + "\n")
    return root


def make_modelnet40(
    root: Path, classes: Sequence[str] = ("airplane", "chair"), train_objects: int = 4, views: int = 12
) -> Path:
    """MVCNN 12-view layout: <class>/<split>/<class>_<NNNN>_<view:03d>.png."""
    for ci, class_name in enumerate(classes):
        for split, count in (("train", train_objects), ("test", 1)):
            for o in range(count):
                obj = f"{class_name}_{o + 1 + (100 if split == 'test' else 0):04d}"
                folder = root / class_name / split
                folder.mkdir(parents=True, exist_ok=True)
                for view in range(1, views + 1):
                    value = (ci * 60 + view * 15) % 256
                    Image.new("RGB", (10, 10), (value, value, value)).save(folder / f"{obj}_{view:03d}.png")
    return root


def write_video(
    path: Path,
    seconds: float = 2.0,
    fps: int = 5,
    size: tuple[int, int] = (24, 32),
    audio_rate: int | None = 16000,
    codec: str | None = None,
    seed: int = 0,
) -> Path:
    """A real video encoded with PyAV: moving random frames (``size`` = height, width) and, unless
    ``audio_rate`` is None, a sine tone track (AAC in .mp4, MP3 in .flv / .avi). The codec follows the
    container as in the official distributions: H.264 (.mp4), FLV1 (.flv, CREMA-D), MPEG-4 part 2 (.avi, UCF101)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    video_codec = codec or {".mp4": "libx264", ".flv": "flv", ".avi": "mpeg4"}[suffix]
    audio_codec = "aac" if suffix == ".mp4" else "libmp3lame"
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0], size[1] + 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = size[1], size[0], "yuv420p"
        audio = container.add_stream(audio_codec, rate=audio_rate) if audio_rate else None
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, 2 * i : 2 * i + size[1]]), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            total = int(seconds * audio_rate)
            tone = (0.3 * np.sin(2 * math.pi * 440.0 * np.arange(total) / audio_rate) * 32767).astype(np.int16)
            chunk = audio.frame_size or 1024
            for start in range(0, total, chunk):
                piece = tone[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
                frame.sample_rate = audio_rate
                frame.pts = start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path
