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

from hf_dimml.data.lists import KINETICS_SOUNDS_31

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
    "make_ave_official",
    "make_cremad_official",
    "make_kinetics_sounds_dmrnet",
    "make_kinetics_sounds_ogmge",
    "make_modelnet40_official",
    "make_ucf101_official",
    "write_cremad_mla_lists",
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
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    key = (suffix, seconds, fps, tuple(size), audio_rate, codec, seed)
    if key in _ENCODED:  # encoding (AAC especially) costs more than copying: identical requests share one encode
        path.write_bytes(_ENCODED[key])
        return path
    _encode_video(path, seconds, fps, size, audio_rate, codec, seed)
    _ENCODED[key] = path.read_bytes()
    return path


_ENCODED: dict[tuple, bytes] = {}


def _encode_video(
    path: Path, seconds: float, fps: int, size: tuple[int, int], audio_rate: int | None, codec: str | None, seed: int
) -> None:
    import av

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


# --------------------------------------------------------------------------------------------
# The official distributions and the reference lists, as docs/design.md §9 describes them
# --------------------------------------------------------------------------------------------

_CREMAD_EMOTION_NAMES = {"NEU": "Neutral", "HAP": "Happy", "SAD": "Sad", "FEA": "Fear", "DIS": "Disgust", "ANG": "Anger"}


def make_cremad_official(root: Path, emotions: Sequence[str] = ("ANG", "SAD", "HAP"), actors: int = 3) -> dict[str, list]:
    """CREMA-D as downloaded: ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` (16 kHz mono) and
    ``VideoFlash/<clip>.flv`` (FLV1 video with an MP3 track), plus the OGM-GE / DI-MML lists ``train.csv``
    (UTF-8 BOM, CRLF) and ``test.csv`` (CRLF), rows ``clip,EMO``. The last actor's clips are the test split.
    Actor 1040's SAD clip has the pre-2022 name ``1040_ITH_SAD_X`` on disk while the lists use the renamed
    ``1040_ITH_SAD_XX``. Returns the list rows per split."""
    rows: dict[str, list] = {"train": [], "test": []}
    for actor in range(actors):
        for ei, emotion in enumerate(emotions):
            listed = f"{1038 + actor}_ITH_{emotion}_XX"
            on_disk = "1040_ITH_SAD_X" if listed == "1040_ITH_SAD_XX" else listed
            write_wav(root / "AudioWAV" / f"{on_disk}.wav", seconds=0.5, rate=16000, frequency=200.0 + 120 * ei)
            write_video(root / "VideoFlash" / f"{on_disk}.flv", seconds=3.0, fps=4, audio_rate=22050, seed=actor * 7 + ei)
            rows["test" if actor == actors - 1 else "train"].append((listed, emotion))
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + "".join(f"{c},{e}\r\n" for c, e in rows["train"]).encode())
    (root / "test.csv").write_bytes("".join(f"{c},{e}\r\n" for c, e in rows["test"]).encode())
    return rows


def write_cremad_mla_lists(root: Path, rows: dict[str, list], folder: str = "mla") -> Path:
    """MLA's CREMA-D lists: ``<clip>.flv <Emotion>`` lines (full emotion names)."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for split, entries in rows.items():
        lines = "".join(f"{clip}.flv {_CREMAD_EMOTION_NAMES[emotion]}\n" for clip, emotion in entries)
        (root / folder / f"{split}.txt").write_text(lines)
    return root / folder


def make_ave_official(root: Path) -> dict[str, int]:
    """AVE_Dataset as downloaded: ``AVE/<id>.mp4`` (H.264 + AAC), ``Annotations.txt`` and the lists
    ``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` (``Category&VideoID&Quality&StartTime&EndTime``; the
    official ones have no header and CRLF line ends). Like the official lists, one id is repeated inside train
    with another label (its first line is Banjo, its second Mandolin) and one train line is repeated verbatim.
    Returns the expected rows per split after the reference's duplicate handling."""
    categories = ("Banjo", "Dog", "Church bell")
    lines: dict[str, list[str]] = {"trainSet.txt": [], "valSet.txt": [], "testSet.txt": []}
    annotations = ["Category&VideoID&Quality&StartTime&EndTime"]
    counter = 0
    for split_file, per_class in (("trainSet.txt", 3), ("valSet.txt", 1), ("testSet.txt", 1)):
        for ci, category in enumerate(categories):
            for _ in range(per_class):
                video = f"{counter:02d}AbC-dEf_{ci}"[:11]
                counter += 1
                write_video(root / "AVE" / f"{video}.mp4", seconds=4.0, fps=4, audio_rate=16000, seed=counter % 2)
                line = f"{category}&{video}&good&1&3"
                lines[split_file].append(line)
                annotations.append(line)
    first_banjo = lines["trainSet.txt"][0].split("&")[1]
    lines["trainSet.txt"].append(f"Mandolin&{first_banjo}&good&0&4")  # the same video under a second label
    lines["trainSet.txt"].append(lines["trainSet.txt"][3])  # a line repeated verbatim
    for split_file, split_lines in lines.items():
        (root / split_file).write_bytes("".join(f"{line}\r\n" for line in split_lines).encode())
    (root / "Annotations.txt").write_bytes("".join(f"{line}\r\n" for line in annotations).encode())
    return {"train": 9, "validation": 3, "test": 3}


#: The 31 Kinetics-Sounds classes of the OGM-GE line (the list in circulation, alphabetical), as the package holds it.
KS31 = tuple(KINETICS_SOUNDS_31)


def make_kinetics_sounds_ogmge(root: Path, labels: Sequence[int] = (0, 2, 10), per_label: int = 3) -> dict[str, int]:
    """Kinetics-Sounds as the OGM-GE scripts leave it: ``visual/<id>/frame_0000N.jpg`` (1 fps),
    ``audio/<id>.wav`` (16 kHz) and ``my_train.txt`` / ``my_test.txt`` lines ``<ytid>_<start>_<end>,10,<int>``
    (the 10 is the clip length). Labels 0, 2, 10 check that integer labels sort numerically."""
    rows: dict[str, list[str]] = {"my_train.txt": [], "my_test.txt": []}
    for label in labels:
        for i in range(per_label + 1):
            clip = f"{label:03d}yTiD{i:03d}_{10 * i:06d}_{10 * i + 10:06d}"
            write_wav(root / "audio" / f"{clip}.wav", seconds=0.5, rate=16000, frequency=200.0 + 40 * label)
            directory = root / "visual" / clip
            directory.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(label * 10 + i)
            for n in range(1, 4):
                Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(directory / f"frame_{n:05d}.jpg")
            rows["my_test.txt" if i == per_label else "my_train.txt"].append(f"{clip},10,{label}")
    for name, lines in rows.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return {"train": per_label * len(labels), "test": len(labels)}


def make_kinetics_sounds_dmrnet(root: Path, per_class: int = 3) -> dict[str, int]:
    """DMRNet's Kinetics-Sounds folders: ``class.txt`` (one line, comma-separated names, some with spaces, some
    with underscores), ``visual/train_img/Image-01-FPS/<class>/<id>/*.jpg`` (``val_img`` for test) and
    ``audio/{train,test}/<class>/<id>.wav``; class folders spell spaces as underscores."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "class.txt").write_text("blowing nose, bowling, tying_tie,playing bagpipes")
    for ci, folder in enumerate(("blowing_nose", "bowling", "playing_bagpipes")):
        for split, image_dir, count in (("train", "train_img", per_class), ("test", "val_img", 1)):
            for i in range(count):
                clip = f"{folder[:4]}{ci}{split[:2]}{i}_000010_000020"
                write_frames(root / "visual" / image_dir / "Image-01-FPS" / folder / clip, 3, seed=ci * 10 + i)
                write_wav(root / "audio" / split / folder / f"{clip}.wav", seconds=0.3, rate=16000)
    return {"train": 3 * per_class, "test": 3}


def make_ucf101_official(root: Path, classes: Sequence[str] = ("ApplyEyeMakeup", "Archery"), groups: int = 3) -> dict[str, int]:
    """UCF101 as downloaded: ``UCF-101/<Class>/v_<Class>_gXX_cXX.avi`` (MPEG-4, no audio) and
    ``ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt`` with CRLF line ends. Group g01 is the test split."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)).encode())
    train, test = [], []
    for ci, class_name in enumerate(classes):
        for g in range(1, groups + 1):
            for c in (1, 2):
                video = f"v_{class_name}_g{g:02d}_c{c:02d}"
                write_video(root / "UCF-101" / class_name / f"{video}.avi", seconds=1.0, fps=5, audio_rate=None,
                            seed=ci * 50 + g * 5 + c)
                (test if g == 1 else train).append(f"{class_name}/{video}.avi" + ("" if g == 1 else f" {ci + 1}"))
    (lists / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in train).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in test).encode())
    return {"train+validation": len(train), "test": len(test)}


def make_modelnet40_official(root: Path, classes: Sequence[str] = ("airplane", "bathtub"), naming: str = "mvcnn") -> Path:
    """``modelnet40_images_new_12x/<class>/<split>/<class>_<NNNN>.obj.shaded_v<VVV>.png`` (MVCNN) or
    ``..._<NNNN>_<VVV>.png`` (RotationNet), 12 views per object."""
    base = root / "modelnet40_images_new_12x"
    for ci, class_name in enumerate(classes):
        for split, count in (("train", 4), ("test", 1)):
            folder = base / class_name / split
            folder.mkdir(parents=True, exist_ok=True)
            for o in range(count):
                obj = f"{class_name}_{o + 1 + (600 if split == 'test' else 0):04d}"
                for view in range(1, 13):
                    name = f"{obj}.obj.shaded_v{view:03d}.png" if naming == "mvcnn" else f"{obj}_{view:03d}.png"
                    Image.new("RGB", (10, 10), ((ci * 90 + view * 20) % 256, 0, 0)).save(folder / name)
    return root
