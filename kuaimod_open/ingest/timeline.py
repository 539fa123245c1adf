"""Time-faithful frame selection: which frames to sample, and which timestamps can be believed.

Sampling goes by *time*, not by frame number: a variable-frame-rate clip with 100 frames in its
first second and 9 over the next 8 seconds is sampled across all 9 seconds, not 8 times in the
first one. The times are the stream's presentation timestamps (what a player shows). A frame with a
negative presentation time is one the file's edit list cuts (a player never shows it, and decoders
hand back a neighbouring picture for it): it is never sampled, so it can never be labelled, say,
-7200 s.

The timestamps are cross-checked against the durations the file claims (container header and
stream header). A timeline that runs backwards, does not advance, holds a non-finite value, or
runs far past every duration the file claims cannot be trusted: frames are then spread by number
instead and their timestamps recorded as unknown (``None``). An impossible timestamp is never
written. Pure functions (numpy only): the decoders live in :mod:`kuaimod_open.ingest.frames`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kuaimod_open.errors import InputError

# A frame smaller than this on a side shows nothing a model or a reviewer could judge (and decord
# cannot copy frames this small out of its buffers): such a video is an error verdict, i.e. review.
MIN_SIDE = 32
# How far the frames may run past the longest duration the headers claim before the timeline is
# called impossible: container and stream durations are rounded, and the last frame has a length.
SLACK_S = 2.0
SLACK_FRACTION = 0.05
# Presentation times this close below zero are rounding (B-frame reordering, rounded edit lists): 0.
PRESENTED_FROM_S = -0.05


@dataclass(frozen=True)
class Claims:
    """Durations a file's headers claim, in seconds (None: not stated)."""

    container_s: float | None = None
    stream_s: float | None = None

    @property
    def longest(self) -> float | None:
        """The longest positive, finite claim."""
        known = [c for c in (self.container_s, self.stream_s) if c is not None and np.isfinite(c) and c > 0]
        return max(known) if known else None


@dataclass(frozen=True)
class Plan:
    """The frames to decode (indices into the stream) and the timestamp to record for each."""

    indices: list[int]
    timestamps: list[float | None]
    trusted: bool  # False: the timeline was impossible; frames spread by number, times unknown
    reason: str = ""  # why the timeline was not trusted


def check_size(video: object, width: int | None, height: int | None) -> None:
    """Refuse frames under ``MIN_SIDE`` pixels a side (InputError): nothing there to judge."""
    if width and height and min(width, height) < MIN_SIDE:
        raise InputError(
            f"{video}: the video is {width}x{height} pixels, too small to show anything to judge "
            f"(at least {MIN_SIDE} pixels a side are needed)"
        )


def frame_indices(total: int, k: int) -> list[int]:
    """The first frame plus the centres of ``k`` equal segments of a ``total``-frame video (by number)."""
    if total <= 0:
        return []
    if k <= 0:
        return [0]
    picks = [0] + [min(total - 1, int((i + 0.5) * total / k)) for i in range(k)]
    return sorted(set(picks))


def target_times(duration: float, k: int) -> list[float]:
    """The first instant plus the centres of ``k`` equal segments of ``duration`` seconds."""
    if duration <= 0 or k <= 0:
        return [0.0]
    return [0.0] + [(i + 0.5) * duration / k for i in range(k)]


def check_timeline(times: Sequence[float] | np.ndarray, claims: Claims) -> tuple[np.ndarray | None, str]:
    """Presentation times of the frames a player shows, if they form a possible timeline, else ``(None, why)``.

    Returns an array as long as ``times``: frames an edit list cuts (negative times) are ``nan``;
    the others are clipped at 0.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return None, "no frame timestamps"
    if not np.all(np.isfinite(t)):
        return None, "a frame timestamp is not a number"
    shown = t >= PRESENTED_FROM_S
    if not shown.any():
        return None, "every frame lies before the start of the presentation"
    kept = t[shown]
    if kept.size > 1:
        if np.any(np.diff(kept) < 0):
            return None, "frame timestamps run backwards"
        if kept[-1] == kept[0]:
            return None, "frame timestamps do not advance"
    limit = claims.longest
    if limit is not None and kept[-1] > limit * (1 + SLACK_FRACTION) + SLACK_S:
        return None, f"frames run to {kept[-1]:.1f}s but the file claims {limit:.1f}s"
    return np.where(shown, np.maximum(t, 0.0), np.nan), ""


def time_indices(rel: np.ndarray, k: int) -> list[int]:
    """Indices of the frames nearest the first instant and the centres of ``k`` equal spans of time.

    ``rel`` holds non-decreasing presentation times (``nan`` for frames not shown, which are never
    picked). When several targets fall on one frame (a frame that covers hours, a burst of frames),
    the picks are topped up to ``min(k + 1, shown frames)`` distinct frames, each time the frame
    farthest in time from those picked (then farthest by number), so a video whose frames bunch up
    is still covered.
    """
    shown = np.flatnonzero(~np.isnan(rel))
    n = len(shown)
    if n == 0:
        return []
    times = rel[shown]
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    picks = {_nearest(times, t) for t in target_times(float(times[-1]) + step, k)}
    want = min(max(k, 0) + 1, n)
    if len(picks) < want:
        positions = np.arange(n)
        time_gap = np.full(n, np.inf)
        index_gap = np.full(n, np.inf)
        for p in picks:
            time_gap = np.minimum(time_gap, np.abs(times - times[p]))
            index_gap = np.minimum(index_gap, np.abs(positions - p))
        while len(picks) < want:
            # Farthest in time; among frames at the same time (gap 0), farthest by number.
            best = int(np.argmax(time_gap)) if time_gap.max() > 0 else int(np.argmax(index_gap))
            picks.add(best)
            time_gap = np.minimum(time_gap, np.abs(times - times[best]))
            index_gap = np.minimum(index_gap, np.abs(positions - best))
            time_gap[best] = index_gap[best] = -1.0
    return sorted(int(shown[p]) for p in picks)


def _nearest(rel: np.ndarray, t: float) -> int:
    i = int(np.searchsorted(rel, t))
    if i <= 0:
        return 0
    if i >= len(rel):
        return len(rel) - 1
    return i if rel[i] - t < t - rel[i - 1] else i - 1


def plan_frames(times: Sequence[float] | np.ndarray, claims: Claims, k: int) -> Plan:
    """Which of a video's frames to sample (the first plus ``k`` spread in time) and their timestamps."""
    rel, why = check_timeline(times, claims)
    if rel is None:
        indices = frame_indices(len(times), k)
        return Plan(indices, [None] * len(indices), trusted=False, reason=why)
    indices = time_indices(rel, k)
    return Plan(indices, [round(float(rel[i]), 3) for i in indices], trusted=True)


def nearest(times: np.ndarray, targets: list[float]) -> list[int]:
    """Indices into ``times`` of the entries nearest each target, de-duplicated, in time order."""
    if len(times) == 0:
        return []
    return sorted({int(np.abs(times - t).argmin()) for t in targets})


__all__ = [
    "MIN_SIDE",
    "PRESENTED_FROM_S",
    "Claims",
    "Plan",
    "check_size",
    "check_timeline",
    "frame_indices",
    "nearest",
    "plan_frames",
    "target_times",
    "time_indices",
]
