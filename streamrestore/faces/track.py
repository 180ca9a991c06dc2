"""Tracking faces across frames: stable ids, gap filling, scene cuts, landmark smoothing.

:class:`FaceTracker` wraps a norfair tracker (association by landmark distance) and adds what
restoration needs on top:

* one id per person through short detection misses; a fresh id after a hard scene cut, so no
  id (and no reference identity decided for it) spans two shots;
* gap filling: with ``lookahead`` L > 0 (files) a miss of at most L frames is bridged by
  linearly interpolated landmarks once the face is found again; with L = 0 (live) the last
  smoothed landmarks are held for up to ``max_gap`` frames;
* a causal One-Euro filter on each track's landmarks, so the aligned crop of a still face does
  not jitter while a moving face is followed with little lag.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from streamrestore.faces.detect import box_iou
from streamrestore.settings import check_kinds
from streamrestore.types import Face, TrackedFace

__all__ = ["TrackerConfig", "FaceTracker", "OneEuroFilter", "frame_signature", "signature_distance"]


@dataclass
class TrackerConfig:
    """Settings of :class:`FaceTracker`.

    distance_threshold: largest mean landmark distance, in face sizes (square root of the box
        area), at which a detection still continues a track. 0.5 allows a face to move half
        its size between two frames, while two people side by side (about one face size or
        more apart) are never merged.
    max_gap: frames a track survives without a detection and keeps its id. 10 frames (1/3 s
        at 30 fps) covers blinks of the detector on blur, profile turns and hands passing.
    scene_cut_threshold: Bhattacharyya distance between the hue/saturation histograms of
        consecutive (downscaled) frames above which a hard cut is declared and all tracks end.
        Measured on short_hamilton_clip.mp4: its three hard cuts (1.52 s, 3.59 s, 7.89 s) score
        0.41-0.57 while other frame pairs stay below 0.17 there and below 0.13 on the shared
        talking-head and street clips; 0.3 sits between.
        Values >= 1 disable cut detection.
    min_cutoff: One-Euro cutoff frequency (Hz) for a still face. 0.5 Hz gives a new sample
        weight ~0.1 at 30 fps: measured on a still 100-pixel face with 2-pixel landmark noise,
        frame-to-frame crop motion drops to 0.17 of the raw detections'.
    beta: how fast the cutoff rises with speed, per face size per second. 5 means a face
        moving one face size per second is filtered at ~5.5 Hz; measured lag at 0.9 face sizes
        per second: 1.9 pixels on a 100-pixel face, under 2/3 of a frame's motion.
    d_cutoff: cutoff (Hz) of the speed estimate that drives the adaptive cutoff; 1 Hz, the
        value the One-Euro authors recommend.
    """

    distance_threshold: float = 0.5
    max_gap: int = 10
    scene_cut_threshold: float = 0.3
    min_cutoff: float = 0.5
    beta: float = 5.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        check_kinds(self)
        if not self.distance_threshold > 0:
            raise ValueError(f"distance_threshold must be positive, got {self.distance_threshold!r}")
        if self.max_gap < 1:  # (a whole number: check_kinds)
            raise ValueError(f"max_gap must be an integer >= 1, got {self.max_gap!r}")
        if not self.scene_cut_threshold > 0:
            raise ValueError(f"scene_cut_threshold must be positive, got {self.scene_cut_threshold!r}")
        for name in ("min_cutoff", "d_cutoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}")


class OneEuroFilter:
    """Causal One-Euro filter (Casiez et al., CHI 2012) for an array of 2-D points.

    The speed that opens the cutoff is measured per point in ``scale`` units per second (pass
    the face size), so the same ``beta`` suits small and large faces.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        time_constant = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + time_constant / dt)

    def __call__(self, points: np.ndarray, dt: float, scale: float) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self._value is None:
            self._value = points.copy()
            self._speed = np.zeros_like(points)
            return self._value.copy()
        derivative = (points - self._value) / dt
        self._speed = self._speed + self._alpha(self.d_cutoff, dt) * (derivative - self._speed)
        speed = np.linalg.norm(self._speed, axis=-1, keepdims=True) / max(scale, 1e-6)
        alpha = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self._value = self._value + alpha * (points - self._value)
        return self._value.copy()


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """A cheap summary of a frame for cut detection: its normalised hue/saturation histogram
    (16 x 8 bins) computed on a 64-pixel-wide thumbnail."""
    height, width = frame.shape[:2]
    thumbnail = cv2.resize(frame, (64, max(1, round(64 * height / width))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(histogram, None, alpha=1.0, norm_type=cv2.NORM_L1)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance between two :func:`frame_signature` values (0 same, 1 disjoint)."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


#: pictures after a cut within which the picture coming back to the one before the cut makes it a flash (1-2
#: frames of a camera flash or a strobe at 25-60 fps), not a cut: the tracks before go on
FLASH_FRAMES = 2


class _Track:
    """What the tracker keeps about one person between frames."""

    def __init__(self, track_id: int, config: TrackerConfig):
        self.track_id = track_id
        self.filter = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
        self.last_frame: int | None = None  # frame index of the last detection
        self.last_push: int = -1  # push counter of the last detection
        self.last_face: Face | None = None
        self.smoothed: np.ndarray | None = None


class FaceTracker:
    """Assigns track ids to detections frame by frame; see the module docstring.

    Frame indices must increase from push to push; ``fps`` converts index steps to seconds for
    the landmark filter.

    ``lookahead``: frames the tracker waits before a frame is final (file mode). With L > 0 a
    miss of at most L frames is filled with interpolated landmarks; 0 is for live streams
    (nothing is delayed; misses hold the last landmarks). 0 by default because it is the only
    value that adds no latency; the frame loop passes
    :attr:`streamrestore.pipeline.PipelineConfig.lookahead` (5 for files). Gaps longer than
    ``config.max_gap`` are never bridged, whatever the lookahead.
    """

    def __init__(self, config: TrackerConfig | None = None, fps: float = 30.0, *, lookahead: int = 0):
        self.config = config if config is not None else TrackerConfig()
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        if int(lookahead) != lookahead or lookahead < 0:
            raise ValueError(f"lookahead must be an integer >= 0, got {lookahead!r}")
        self.lookahead = int(lookahead)
        self.fps = float(fps)
        self._norfair = self._new_norfair()
        self._tracks: dict[int, _Track] = {}  # norfair id -> track
        self._ids = itertools.count(1)  # (next() of it is atomic: new_track_id is called from the restoring thread)
        self._pending: deque[tuple[int, dict[int, TrackedFace]]] = deque()
        self._last_index: int | None = None
        self._push_count = 0
        self._signature: np.ndarray | None = None
        #: frame indices at which a scene cut was detected (for logs and tests)
        self.cuts: list[int] = []
        #: frame indices of flashes: pictures as unlike the one before as a cut's, whose next ones (within
        #: FLASH_FRAMES) are like the one before again (a guest's camera flash, a strobe): no cut
        self.flashes: list[int] = []
        # each cut of the last FLASH_FRAMES pushes, newest last: [the tracker and tracks before it, the picture's
        # signature before it, its place in ``cuts``, the frames since it, its own counted]
        self._before_cuts: list[list] = []
        # the frames a flash's undo left faces of tracks of their own in: frame index -> those tracks' ids
        self._flash_faces: dict[int, set[int]] = {}

    def _new_norfair(self):
        from norfair import Tracker

        return Tracker(
            distance_function=_landmark_distance,
            distance_threshold=self.config.distance_threshold,
            hit_counter_max=int(self.config.max_gap),
            initialization_delay=0,  # report a face from its first detection
            past_detections_length=0,
        )

    def _reset(self) -> None:
        self._norfair = self._new_norfair()
        self._tracks.clear()

    def push(self, frame_index: int, faces: list[Face], frame: np.ndarray | None = None, cut: bool = False
             ) -> list[tuple[int, list[TrackedFace]]]:
        """Add one frame's detections; returns the frames that became final, oldest first.

        ``frame`` (RGB uint8) is only used for scene-cut detection; pass None to skip that.
        ``cut``: this frame starts a new shot whatever its picture says (the caller knows: the
        frames changed size), so every track ends before it.
        With ``lookahead`` L, frame i is returned by the push of frame i + L (or by flush).
        """
        if self._last_index is not None and frame_index <= self._last_index:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._last_index}")
        dt = (frame_index - self._last_index) / self.fps if self._last_index is not None else 1.0 / self.fps
        self._last_index = frame_index
        self._push_count += 1

        signature = frame_signature(frame) if frame is not None else None
        if cut:  # (the caller knows: no flash)
            self._before_cuts.clear()
        back_to = next((before for before in reversed(self._before_cuts) if signature is not None and
                        signature_distance(before[1], signature) <= self.config.scene_cut_threshold), None)
        if back_to is not None:
            self._undo_cut(back_to)  # (the picture is back as it was before a "cut": a flash)
        for before in self._before_cuts:
            before[3] += 1
        # (a flash longer than the tracks may miss a face would have ended them)
        self._before_cuts = [b for b in self._before_cuts if b[3] <= min(FLASH_FRAMES, self.config.max_gap)]
        if cut or (signature is not None and self._signature is not None and self.config.scene_cut_threshold < 1.0
                   and signature_distance(self._signature, signature) > self.config.scene_cut_threshold):
            self.cuts.append(frame_index)
            # (kept a few frames: a flash's picture is as unlike the one before as a cut's; the ones after it are
            # not. One a cut: a flash of two pictures unlike each other, a flash just after a cut)
            if not cut and self._signature is not None:
                self._before_cuts.append([(self._norfair, dict(self._tracks)), self._signature, len(self.cuts) - 1, 1])
            self._reset()
        if signature is not None:
            self._signature = signature

        from norfair import Detection

        detections = [Detection(points=np.asarray(face.kps, dtype=np.float64), data=face) for face in faces]
        active = self._norfair.update(detections)
        current: dict[int, TrackedFace] = {}
        for obj in active:
            if obj.id is None:
                continue
            track = self._tracks.get(obj.id)
            if track is None:
                track = self._tracks[obj.id] = _Track(next(self._ids), self.config)
            if any(obj.last_detection is detection for detection in detections):
                self._fill_gap(track, obj.last_detection.data, frame_index)
                current[track.track_id] = self._observe(track, obj.last_detection.data, frame_index, dt)
            elif (self.lookahead == 0 and track.smoothed is not None
                    and frame_index - track.last_frame <= self.config.max_gap):
                # Live: nothing to interpolate towards yet, so hold the last smoothed landmarks.
                current[track.track_id] = TrackedFace(face=track.last_face, track_id=track.track_id,
                                                      kps=track.smoothed.astype(np.float32), interpolated=True)
        alive = {obj.id for obj in self._norfair.tracked_objects if obj.id is not None}
        for norfair_id in [key for key in self._tracks if key not in alive]:
            del self._tracks[norfair_id]

        if self._flash_faces:
            self._settle_flash()
        self._pending.append((frame_index, current))
        ready = []
        while len(self._pending) > self.lookahead:
            ready.append(self._emit(self._pending.popleft()))
        return ready

    def _undo_cut(self, before: list) -> None:
        """The tracks ``before`` a flash's "cuts" back, aged by the flash's frames (which they did not see: a
        track that misses more than ``max_gap`` frames in all ends). The faces of the flash's frames on tracks
        of their own stay, until a track from before fills the same face in as it fills any gap
        (``_fill_gap``, with lookahead: :meth:`_settle_flash`); live, they were given out already."""
        (self._norfair, self._tracks), self._signature, first_cut, flash = before  # (the next picture: against it)
        self._before_cuts.clear()
        for _ in range(flash):
            self._norfair.update([])
        held = list(self._pending)[-flash:] if flash else []
        self._flash_faces = {index: set(faces) for index, faces in held}
        self.flashes.append(self.cuts[first_cut])
        del self.cuts[first_cut:]

    def _settle_flash(self) -> None:
        """In each held frame of a flash, a face on a track of its own that a track from before the flash now also
        fills in (the same face twice) is taken off; the others stay (a face new at the flash, one found again too
        late for its gap to be filled)."""
        held = {index for index, _ in self._pending}
        self._flash_faces = {index: ids for index, ids in self._flash_faces.items() if index in held}
        for index, faces in self._pending:
            made = self._flash_faces.get(index)
            if not made:
                continue
            filled = [face for track_id, face in faces.items() if track_id not in made]
            for track_id in made & faces.keys():
                if any(box_iou(faces[track_id].face.box, other.face.box) > 0.3 for other in filled):
                    del faces[track_id]

    def new_track_id(self) -> int:
        """An id no track had or will have: for a face the caller finds is another person's than its track's (the
        tracker follows a place in the picture; :meth:`IdentityMatcher.another_person`)."""
        return next(self._ids)

    def flush(self) -> list[tuple[int, list[TrackedFace]]]:
        """Return every frame still waiting for lookahead (call at the end of the stream)."""
        ready = [self._emit(item) for item in self._pending]
        self._pending.clear()
        return ready

    @staticmethod
    def _emit(item: tuple[int, dict[int, TrackedFace]]) -> tuple[int, list[TrackedFace]]:
        frame_index, faces = item
        return frame_index, [faces[key] for key in sorted(faces)]

    def _observe(self, track: _Track, face: Face, frame_index: int, dt: float) -> TrackedFace:
        if track.last_frame is not None:
            dt = (frame_index - track.last_frame) / self.fps
        track.smoothed = track.filter(face.kps, dt, max(face.size, 1.0))
        track.last_frame = frame_index
        track.last_push = self._push_count
        track.last_face = face
        return TrackedFace(face=face, track_id=track.track_id, kps=track.smoothed.astype(np.float32))

    def _fill_gap(self, track: _Track, face: Face, frame_index: int) -> None:
        """Interpolate the frames a track missed, when all of them are still pending."""
        if track.last_face is None or self.lookahead == 0:
            return
        missed = self._push_count - track.last_push - 1
        if missed < 1 or missed > self.lookahead:
            return
        start, end, previous = track.last_frame, frame_index, track.last_face
        for pending_index, faces in list(self._pending_between(start, end)):
            weight = (pending_index - start) / (end - start)
            filled = Face(
                box=((1 - weight) * previous.box + weight * face.box).astype(np.float32),
                kps=((1 - weight) * previous.kps + weight * face.kps).astype(np.float32),
                score=float((1 - weight) * previous.score + weight * face.score),
            )
            tracked = self._observe(track, filled, pending_index, 0.0)
            faces[track.track_id] = TrackedFace(face=filled, track_id=track.track_id, kps=tracked.kps,
                                                interpolated=True)

    def _pending_between(self, start: int, end: int) -> Iterator[tuple[int, dict[int, TrackedFace]]]:
        for pending_index, faces in self._pending:
            if start < pending_index < end:
                yield pending_index, faces


def _landmark_distance(detection, tracked_object) -> float:
    """Mean landmark distance between a detection and a track's prediction, in face sizes."""
    size = max(detection.data.size, 1.0)
    return float(np.mean(np.linalg.norm(detection.points - tracked_object.estimate, axis=1)) / size)
