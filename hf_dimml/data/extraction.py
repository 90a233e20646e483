"""Decoding the official video distributions once: frames, audio and optical flow (docs/design.md §9).

The benchmarks are distributed as videos (CREMA-D ``VideoFlash/*.flv``, AVE ``AVE/*.mp4``, UCF101 ``UCF-101/*/*.avi``,
Kinetics clips ``*.mp4``); the reference codes train on frames, WAV files and TV-L1 flow extracted beforehand by their
preprocessing scripts. This module does that extraction, into the folder layouts those scripts produce, so that the
builders of :mod:`hf_dimml.data.builders` read the result under its usual names:

================  ==========================================  ===================================================
dataset           source                                      written (next to the source, in ``root``)
================  ==========================================  ===================================================
``cremad``        ``VideoFlash/<clip>.flv``                   ``Image-01-FPS/<clip>/<frame index:05d>.jpg`` (1 fps,
                                                              at least 3 frames)
``ave``           ``AVE/<id>.mp4`` + ``Annotations.txt``      ``Image-01-FPS-SE/<id>/<frame index:05d>.jpg`` (1 fps,
                                                              StartTime..EndTime, at least 10 frames),
                                                              ``Audios/<id>.wav`` (44.1 kHz mono, whole clip)
``kinetics_sounds`` ``videos/**/<id>.mp4``                    ``visual/<id>/frame_<n:05d>.jpg`` (1 fps, n from 1),
                                                              ``audio/<id>.wav`` (16 kHz mono)
``ucf101``        ``UCF-101/<Class>/<video>.avi``             ``jpegs_256/<video>/frame<n:06d>.jpg`` (every frame),
                                                              ``tvl1_flow/{u,v}/<video>/frame<n:06d>.jpg`` (one
                                                              frame fewer), when no flow folder exists
================  ==========================================  ===================================================

Frames are picked as the DI-MML scripts pick them: the first decoded frame of every ``1/fps`` interval of the
presentation time (``{index:05d}.jpg`` names the frame's index in the video); a clip that gives fewer than
``min_frames`` is padded with evenly spaced other frames of the same window (the reference draws them at random).
Audio is decoded, mixed to mono and resampled by FFmpeg's resampler and written as 16-bit PCM WAV. Optical flow is
OpenCV's TV-L1 (``cv2.optflow.DualTVL1OpticalFlow``, the algorithm of the public ``tvl1_flow`` download) or, faster,
Farnebäck (``flow_method="farneback"``), quantised like the public download: ``u, v`` clipped to ±20 pixels and
mapped linearly to 0..255 grey JPEGs.

The decoder is PyAV (``pip install "hf_dimml[video]"``): its wheels ship their own FFmpeg (H.264, FLV1, MPEG-4, AAC,
MP3 decoders included), so nothing has to be installed on the system; torchcodec needs a system FFmpeg and a torch
build matching its own.

Every clip is written to a temporary sibling (``.<name>.part-<pid>``) and renamed into place when complete, so a
killed extraction leaves no folder that later counts as complete, and a new run does only the clips whose output is
absent (stale temporaries are removed). A media file that cannot give what is asked (unreadable, no video / audio
stream, no frames, truncated) raises :class:`MediaError` naming it (``on_error="error"``) or is counted with its reason
in the :class:`ExtractionReport` (``on_error="skip"``); the builder then reports the clip as skipped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import logging
import multiprocessing
import os
import shutil
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

__all__ = [
    "EXTRACTORS",
    "ExtractionJob",
    "ExtractionReport",
    "MediaError",
    "decode_audio",
    "decode_video_frames",
    "extract_missing",
    "flow_to_images",
    "plan_ave",
    "plan_cremad",
    "plan_kinetics_sounds",
    "plan_ucf101",
    "run_extraction",
    "write_pcm_wav",
]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov")
JPEG_QUALITY = 95  # OpenCV's imencode default, which the reference scripts use
FLOW_BOUND = 20.0  # pixels: the public TV-L1 download's quantisation range
_PART = ".part-"


class MediaError(ValueError):
    """A media file cannot give what is asked of it (unreadable, empty, truncated, no such stream)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _require(module: str, purpose: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        hint = f'pip install "hf_dimml[video]" (or pip install {package})'
        raise ImportError(f"{purpose} needs {package}: {hint}") from err


def _require_av() -> Any:
    return _require("av", "decoding videos (PyAV wheels ship their own FFmpeg)", "av")


def _require_cv2() -> Any:
    return _require("cv2", "optical flow", "opencv-contrib-python-headless")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _open(path: Path, kind: str) -> tuple[Any, Any, Any]:
    """``(av, container, first stream of kind)``; a missing, empty or unreadable file or no such stream is a
    :class:`MediaError`."""
    av = _require_av()
    if not path.is_file():
        raise MediaError(path, "missing file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise MediaError(path, f"unreadable: {err}") from err
    streams = getattr(container.streams, kind)
    if not streams:
        container.close()
        raise MediaError(path, f"no {kind} stream")
    return av, container, streams[0]


def _stream_seconds(stream: Any, container: Any) -> float | None:
    """The duration a stream (or, failing that, the container) declares, in seconds."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _check_not_truncated(path: Path, declared: float | None, decoded: float, period: float, what: str) -> None:
    """A clip whose decoded media ends well before its declared duration is truncated."""
    if declared is None or declared <= 0:
        return
    tolerance = max(2 * period, 0.1 * declared)
    if decoded + period < declared - tolerance:
        raise MediaError(path, f"truncated: {what} ends at {decoded:.2f} s of the {declared:.2f} s declared")


def decode_video_frames(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    min_frames: int = 1,
    threads: int = 0,
) -> list[tuple[int, Image.Image]]:
    """``(frame index, RGB image)`` pairs of a video, sampled at ``fps`` within ``[start, end]`` seconds.

    ``fps=None`` keeps every frame. Otherwise the first frame of every ``1/fps`` interval is kept, from ``start``
    (default 0) up to and including the interval that starts at ``end`` (the DI-MML scripts keep the seconds
    ``start..end``); fewer than ``min_frames`` are completed with evenly spaced other frames of the window.

    Raises:
        MediaError: unreadable or empty file, no video stream, no decodable frame, or decoding that stops well
            before the declared duration (a truncated file).
    """
    path = Path(path)
    av, container, stream = _open(path, "video")
    with container:
        stream.thread_type = "AUTO" if threads == 0 else "SLICE"
        if threads:
            stream.thread_count = threads
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        period = 1.0 / rate
        low = 0.0 if start is None else float(start)
        high = None if end is None else float(end) + (1.0 / fps if fps else period)
        kept: list[tuple[int, Image.Image]] = []
        window: list[int] = []
        last_bucket = None
        last_time = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = float(frame.time) if frame.time is not None else index * period
                last_time = max(last_time, time)
                if time < low - 1e-6 or (high is not None and time >= high - 1e-6):
                    continue
                window.append(index)
                if fps is None:
                    kept.append((index, frame.to_image()))
                    continue
                bucket = int(np.floor((time - low) * fps + 1e-6))
                if bucket != last_bucket:
                    last_bucket = bucket
                    kept.append((index, frame.to_image()))
        except (av.FFmpegError, OSError, ValueError) as err:
            raise MediaError(path, f"decoding failed after {len(window)} frame(s): {err}") from err
        if not window:
            raise MediaError(path, "no decodable video frame" + (" in the annotated window" if start or end else ""))
        declared = _stream_seconds(stream, container)
    _check_not_truncated(path, declared, last_time, period, "the video")
    if len(kept) < min_frames and len(window) > len(kept):
        chosen = {index for index, _ in kept}
        others = [index for index in window if index not in chosen]
        need = min(min_frames - len(kept), len(others))
        extra = {others[int((i + 0.5) * len(others) / need)] for i in range(need)}
        _, container, stream = _open(path, "video")
        with container:
            for index, frame in enumerate(container.decode(stream)):
                if index in extra:
                    kept.append((index, frame.to_image()))
                if index >= max(extra):
                    break
        kept.sort(key=lambda pair: pair[0])
    return kept


def decode_audio(
    path: str | os.PathLike, sample_rate: int, *, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """The audio track of a media file as mono int16 samples at ``sample_rate``, cropped to ``[start, end)`` s.

    Raises:
        MediaError: unreadable or empty file, no audio stream, no sample (in the window), or a truncated track.
    """
    path = Path(path)
    av, container, stream = _open(path, "audio")
    with container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=int(sample_rate))
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except (av.FFmpegError, OSError, ValueError) as err:
            raise MediaError(path, f"audio decoding failed: {err}") from err
        declared = _stream_seconds(stream, container)
    samples = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    if samples.size == 0:
        raise MediaError(path, "the audio track has no samples")
    _check_not_truncated(path, declared, samples.size / sample_rate, 0.05, "the audio track")
    first = 0 if start is None else int(round(float(start) * sample_rate))
    last = samples.size if end is None else int(round(float(end) * sample_rate))
    cropped = samples[first:last]
    if cropped.size == 0:
        lasts = samples.size / sample_rate
        raise MediaError(path, f"no audio samples in [{start}, {end}) s (the track lasts {lasts:.2f} s)")
    return cropped


def write_pcm_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def flow_to_images(flow: np.ndarray, bound: float = FLOW_BOUND) -> tuple[Image.Image, Image.Image]:
    """``(H, W, 2)`` flow in pixels -> the grey ``u``, ``v`` images of the public download (±bound -> 0..255)."""
    scaled = np.clip((flow + bound) * (255.0 / (2 * bound)), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled[..., 0], mode="L"), Image.fromarray(scaled[..., 1], mode="L")


def _flow_function(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    cv2 = _require_cv2()
    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise ImportError(
                "TV-L1 flow needs OpenCV's contrib modules: pip install opencv-contrib-python-headless "
                '(or use flow_method="farneback", in plain OpenCV)'
            )
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda previous, current: tvl1.calc(previous, current, None)
    if method == "farneback":
        return lambda previous, current: cv2.calcOpticalFlowFarneback(
            previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0
        )
    raise ValueError(f"flow_method must be 'tvl1' or 'farneback', got {method!r}")


# --------------------------------------------------------------------------------------------
# Jobs: one clip's outputs, written atomically
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExtractionJob:
    """What to extract from one source file; ``targets`` are complete when they all exist.

    ``kind``: ``"frames"`` (``targets = (folder,)``), ``"audio"`` (``(wav file,)``) or ``"flow"``
    (``(u folder, v folder)``; ``source`` a video or a folder of frames). ``params`` are the keyword arguments of
    the decoding (fps, start, end, min_frames, naming / sample_rate / flow_method).
    """

    clip_id: str
    kind: str
    source: str
    targets: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()

    def complete(self) -> bool:
        return all(os.path.exists(target) for target in self.targets)


@dataclasses.dataclass
class ExtractionReport:
    """What one :func:`run_extraction` did: counts, and the skipped clips with their reasons."""

    extracted: int = 0
    already_done: int = 0
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    by_kind: Counter = dataclasses.field(default_factory=Counter)

    def merge(self, other: ExtractionReport) -> None:
        self.extracted += other.extracted
        self.already_done += other.already_done
        self.skipped.extend(other.skipped)
        self.by_kind.update(other.by_kind)

    def summary(self) -> str:
        reasons = Counter(entry["reason"].split(":")[0] for entry in self.skipped)
        text = f"{self.extracted} extracted, {self.already_done} already done, {len(self.skipped)} skipped"
        if reasons:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")"
        return text


def _frame_name(naming: str, index: int, position: int) -> str:
    if naming == "index":  # DI-MML: the frame's index in the video
        return f"{index:05d}.jpg"
    if naming == "frame_":  # OGM-GE (VGGSound / Kinetics-Sounds): frame_00001.jpg ...
        return f"frame_{position + 1:05d}.jpg"
    if naming == "frame":  # feichtenhofer's UCF101 download: frame000001.jpg ...
        return f"frame{position + 1:06d}.jpg"
    raise ValueError(f"unknown frame naming {naming!r}")


def _save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY)


def _frames_from_folder(folder: Path) -> list[tuple[int, Image.Image]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    frames = []
    for position, file in enumerate(files):
        try:
            with Image.open(file) as image:
                frames.append((position, image.convert("RGB")))
        except OSError as err:
            raise MediaError(file, f"unreadable image: {err}") from err
    if not frames:
        raise MediaError(folder, "no frame images")
    return frames


def _write_job(job: ExtractionJob, parts: list[Path], threads: int) -> None:
    params = dict(job.params)
    source = Path(job.source)
    if job.kind == "frames":
        frames = decode_video_frames(
            source,
            fps=params.get("fps"),
            start=params.get("start"),
            end=params.get("end"),
            min_frames=params.get("min_frames", 1),
            threads=threads,
        )
        parts[0].mkdir()
        for position, (index, image) in enumerate(frames):
            _save_jpeg(image, parts[0] / _frame_name(params.get("naming", "index"), index, position))
    elif job.kind == "audio":
        rate = int(params["sample_rate"])
        samples = decode_audio(source, rate, start=params.get("start"), end=params.get("end"))
        write_pcm_wav(parts[0], samples, rate)
    elif job.kind == "flow":
        frames = _frames_from_folder(source) if source.is_dir() else decode_video_frames(source, threads=threads)
        if len(frames) < 2:
            raise MediaError(source, f"too short for optical flow: {len(frames)} frame(s)")
        flow = _flow_function(params.get("flow_method", "tvl1"))
        for part in parts:
            part.mkdir()
        previous = np.asarray(frames[0][1].convert("L"))
        for position, (_, image) in enumerate(frames[1:]):
            current = np.asarray(image.convert("L"))
            u_image, v_image = flow_to_images(flow(previous, current))
            _save_jpeg(u_image, parts[0] / _frame_name("frame", position, position))
            _save_jpeg(v_image, parts[1] / _frame_name("frame", position, position))
            previous = current
    else:
        raise ValueError(f"unknown extraction kind {job.kind!r}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _run_job(job: ExtractionJob, threads: int = 0) -> tuple[str, str] | None:
    """Extract one clip; ``None`` on success, ``(file, reason)`` for a media problem."""
    if job.complete():
        return None
    targets = [Path(target) for target in job.targets]
    for target in targets:  # an earlier run may have renamed some of the targets before it was killed
        _remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
    parts = [target.with_name(f".{target.name}{_PART}{os.getpid()}") for target in targets]
    for part in parts:
        _remove(part)
    try:
        _write_job(job, parts, threads)
        for part, target in zip(parts, targets, strict=True):  # the last rename makes the clip complete
            os.replace(part, target)
    except MediaError as err:
        return err.path, err.reason
    finally:
        for part in parts:
            _remove(part)
    return None


def _remove_stale_parts(jobs: Iterable[ExtractionJob]) -> None:
    """Temporaries of killed runs: ``.<target>.part-<pid>`` siblings of the targets."""
    parents = {Path(target).parent for job in jobs for target in job.targets}
    for parent in parents:
        if parent.is_dir():
            for entry in parent.iterdir():
                if entry.name.startswith(".") and _PART in entry.name:
                    _remove(entry)


def _worker_init() -> None:  # pragma: no cover - runs in the worker processes
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def run_extraction(
    jobs: Sequence[ExtractionJob],
    *,
    num_workers: int = 1,
    on_error: str = "skip",
    progress: bool = True,
    desc: str = "extracting",
) -> ExtractionReport:
    """Run the jobs whose outputs are absent, over ``num_workers`` processes, with a progress bar.

    Args:
        on_error: ``"skip"`` records a clip whose media is bad in the report (``skipped``: id, source, reason) and
            goes on; ``"error"`` raises :class:`MediaError` naming the file.
    """
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error must be 'error' or 'skip', got {on_error!r}")
    report = ExtractionReport()
    todo = [job for job in jobs if not job.complete()]
    report.already_done = len(jobs) - len(todo)
    if not todo:
        return report
    _remove_stale_parts(todo)

    def record(job: ExtractionJob, problem: tuple[str, str] | None) -> None:
        if problem is None:
            report.extracted += 1
            report.by_kind[job.kind] += 1
            return
        if on_error == "error":
            raise MediaError(*problem)
        report.skipped.append({"id": job.clip_id, "kind": job.kind, "source": problem[0], "reason": problem[1]})

    with tqdm(total=len(todo), desc=desc, unit="clip", disable=not progress) as bar:
        if num_workers <= 1:
            for job in todo:
                record(job, _run_job(job))
                bar.update(1)
        else:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=num_workers, mp_context=multiprocessing.get_context(method), initializer=_worker_init
            ) as pool:
                futures = {pool.submit(_run_job, job, 1): job for job in todo}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        record(futures[future], future.result())
                        bar.update(1)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    return report


# --------------------------------------------------------------------------------------------
# Per dataset: which jobs the official distribution needs
# --------------------------------------------------------------------------------------------


def _videos(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def plan_cremad(root: str | os.PathLike, *, fps: int = 1, min_frames: int = 3) -> list[ExtractionJob]:
    """``VideoFlash/<clip>.flv`` -> ``Image-0<fps>-FPS/<clip>/<index:05d>.jpg`` (DI-MML's CREMA-D script)."""
    root = Path(root)
    out = root / f"Image-{fps:02d}-FPS"
    params = (("fps", fps), ("min_frames", min_frames), ("naming", "index"))
    return [
        ExtractionJob(video.stem, "frames", str(video), (str(out / video.stem),), params)
        for video in _videos(root / "VideoFlash")
    ]


def read_ave_annotations(path: Path) -> dict[str, tuple[str, float, float]]:
    """``VideoID -> (Category, StartTime, EndTime)`` of an AVE list (first line of a repeated id wins)."""
    entries: dict[str, tuple[str, float, float]] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = [field.strip() for field in line.split("&")]
        if len(fields) < 5 or fields[0].lower() == "category" or not fields[1]:
            continue
        try:
            start, end = float(fields[3]), float(fields[4])
        except ValueError as err:
            raise ValueError(f"{path}:{line_number}: StartTime / EndTime are not numbers in {line!r}") from err
        entries.setdefault(fields[1], (fields[0], start, end))
    return entries


def _ave_source_folder(root: Path) -> Path:
    for candidate in (root / "AVE", root / "AVE_Dataset" / "AVE"):
        if candidate.is_dir():
            return candidate
    return root / "AVE"


def plan_ave(
    root: str | os.PathLike, *, fps: int = 1, min_frames: int = 10, audio_rate: int = 44100
) -> list[ExtractionJob]:
    """``AVE/<id>.mp4`` -> ``Image-01-FPS-SE/<id>/`` (1 fps, StartTime..EndTime of ``Annotations.txt`` or the
    split lists) and ``Audios/<id>.wav`` (the whole track; the builder crops it), as DI-MML's AVE scripts."""
    root = Path(root)
    videos = {video.stem: video for video in _videos(_ave_source_folder(root))}
    windows: dict[str, tuple[str, float, float]] = {}
    for name in ("Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt"):
        if (root / name).is_file():
            for video_id, entry in read_ave_annotations(root / name).items():
                windows.setdefault(video_id, entry)
    jobs = []
    for video_id, video in videos.items():
        _, start, end = windows.get(video_id, ("", None, None))
        frame_params = (("fps", fps), ("start", start), ("end", end), ("min_frames", min_frames), ("naming", "index"))
        frames = str(root / f"Image-{fps:02d}-FPS-SE" / video_id)
        wav = str(root / "Audios" / f"{video_id}.wav")
        jobs.append(ExtractionJob(video_id, "frames", str(video), (frames,), frame_params))
        jobs.append(ExtractionJob(video_id, "audio", str(video), (wav,), (("sample_rate", audio_rate),)))
    return jobs


def plan_kinetics_sounds(
    root: str | os.PathLike, *, fps: int = 1, min_frames: int = 3, audio_rate: int = 16000
) -> list[ExtractionJob]:
    """``videos/**/<id>.mp4`` -> ``visual/<id>/frame_<n:05d>.jpg`` (1 fps) and ``audio/<id>.wav`` (16 kHz), the
    OGM-GE Kinetics-Sounds layout."""
    root = Path(root)
    jobs = []
    for video in _videos(root / "videos", recursive=True):
        frame_params = (("fps", fps), ("min_frames", min_frames), ("naming", "frame_"))
        jobs.append(ExtractionJob(video.stem, "frames", str(video), (str(root / "visual" / video.stem),), frame_params))
        wav = str(root / "audio" / f"{video.stem}.wav")
        jobs.append(ExtractionJob(video.stem, "audio", str(video), (wav,), (("sample_rate", audio_rate),)))
    return jobs


def plan_ucf101(root: str | os.PathLike, *, flow_method: str = "tvl1") -> list[ExtractionJob]:
    """``UCF-101/<Class>/<video>.avi`` -> ``jpegs_256/<video>/frame<n:06d>.jpg`` (every frame) and, when the root
    has no flow folder (``tvl1_flow/`` or ``flow/``), ``tvl1_flow/{u,v}/<video>/`` computed from the frames."""
    root = Path(root)
    jobs = []
    has_flow = any((root / name / "u").is_dir() for name in ("tvl1_flow", "flow"))
    source_folder = root / "UCF-101" if (root / "UCF-101").is_dir() else root / "UCF101"
    for video in _videos(source_folder, recursive=True):
        frames_dir = root / "jpegs_256" / video.stem
        jobs.append(ExtractionJob(video.stem, "frames", str(video), (str(frames_dir),), (("naming", "frame"),)))
        if not has_flow:
            targets = (str(root / "tvl1_flow" / "u" / video.stem), str(root / "tvl1_flow" / "v" / video.stem))
            jobs.append(ExtractionJob(video.stem, "flow", str(video), targets, (("flow_method", flow_method),)))
    if not has_flow and not jobs and (root / "jpegs_256").is_dir():  # frames but no videos: flow from the frames
        for folder in sorted(p for p in (root / "jpegs_256").iterdir() if p.is_dir()):
            targets = (str(root / "tvl1_flow" / "u" / folder.name), str(root / "tvl1_flow" / "v" / folder.name))
            jobs.append(ExtractionJob(folder.name, "flow", str(folder), targets, (("flow_method", flow_method),)))
    return jobs


def _plan_nothing(root: str | os.PathLike) -> list[ExtractionJob]:
    return []


#: Dataset name -> planner of the extraction jobs its official distribution needs.
EXTRACTORS: dict[str, Callable[..., list[ExtractionJob]]] = {
    "cremad": plan_cremad,
    "ave": plan_ave,
    "kinetics_sounds": plan_kinetics_sounds,
    "ucf101": plan_ucf101,
    "modelnet40": _plan_nothing,  # distributed as rendered images
}


def extract_missing(
    name: str,
    root: str | os.PathLike,
    *,
    num_workers: int = 1,
    on_error: str = "skip",
    progress: bool = True,
    **options: Any,
) -> ExtractionReport:
    """Extract what dataset ``name``'s builder needs and ``root`` lacks (see the module docs); resumable.

    ``options`` go to the dataset's planner (e.g. ``fps``, ``min_frames``, ``audio_rate``, ``flow_method``).
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(EXTRACTORS)}")
    jobs = EXTRACTORS[name](root, **options)
    tvl1 = sum(
        1 for job in jobs if job.kind == "flow" and dict(job.params).get("flow_method") == "tvl1" and not job.complete()
    )
    if tvl1:
        logger.warning(
            "%s: TV-L1 optical flow for %d clip(s): about 2 s per frame pair and core (measured on 320x240 frames, "
            "about 6 CPU-minutes per UCF101 clip); the public tvl1_flow download, more workers, or "
            "flow_method=farneback (about 70x faster, a less accurate flow) are the alternatives",
            name,
            tvl1,
        )
    return run_extraction(
        jobs, num_workers=num_workers, on_error=on_error, progress=progress, desc=f"extracting {name}"
    )
