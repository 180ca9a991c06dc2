"""Faces cut from whole degraded clips: training samples with the damage a video really has.

The presets of :mod:`streamrestore.data.degrade` damage each aligned crop on its own. A video is
damaged whole: the frame is blurred, shrunk, H.264-coded and scaled back up
(:func:`streamrestore.eval.video.degrade_video`), and the pipeline then cuts the face out of that
frame, resampling the codec's blocks and the frame's blur with the alignment. A model fitted only
to crop-level damage misjudges frame-level damage (lite v6's detail head overshot on it by a
third; ``docs/video_eval.md``). These samples are such faces: each train-ok clip of the training
people is degraded whole with drawn settings, frames are drawn from it, and the face is cut from
the degraded frame with the *clean* frame's alignment (SCRFD on the clean frame), next to its
clean crop.

:func:`iter_video_faces` yields them clip by clip with the clip's random generator, so a caller
that draws more per face (references, for the detail head) keeps one seeded stream per clip;
:func:`make_video_faces` collects them into arrays for :class:`~streamrestore.data.samples.RestorationDataset`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from streamrestore.errors import InputError

__all__ = ["VideoFaceSettings", "VideoFace", "video_sources", "iter_video_faces", "make_video_faces"]


@dataclass(frozen=True)
class VideoFaceSettings:
    """How many faces are cut from how damaged copies of each clip.

    Args:
        frames: frames drawn per clip and draw (0: no video faces).
        draws: degraded copies of each clip, each with its own settings.
        max_frames: the first frames of a clip that are degraded and drawn from (decoding and
            coding a whole clip costs seconds a frame on a CPU; 60 frames are 2-2.5 s of motion).
        scale, blur, crf: ranges ``(low, high)`` of the whole-frame damage, drawn uniformly (the
            crf an integer): around ``degrade_video.py``'s defaults (4x smaller, blur 1.2, crf 32).
    """

    frames: int = 8
    draws: int = 3
    max_frames: int = 60
    scale: tuple[float, float] = (3.0, 5.0)
    blur: tuple[float, float] = (0.8, 1.6)
    crf: tuple[int, int] = (28, 36)

    def __post_init__(self) -> None:
        if self.frames < 0 or min(self.draws, self.max_frames) < 1:
            raise ValueError(f"need frames >= 0 and draws, max_frames >= 1, got {self.frames}, {self.draws}, "
                             f"{self.max_frames}")
        for name, low_limit in (("scale", 1.0), ("blur", 0.0), ("crf", 0)):
            span = tuple(getattr(self, name))
            if len(span) != 2 or not low_limit <= span[0] <= span[1]:
                raise ValueError(f"{name} must be (low, high) with {low_limit} <= low <= high, got {span}")
            object.__setattr__(self, name, span)
        if self.crf[1] > 51:
            raise ValueError(f"crf must be within 0..51, got {self.crf}")

    def key(self) -> str:
        """The settings as text, to tell a cached set of faces made with other settings."""
        return repr((self.frames, self.draws, self.max_frames, self.scale, self.blur, self.crf))


class VideoFace(NamedTuple):
    """One face of a degraded clip: uint8 (R, R, 3) crops, landmarks (5, 2) in [0, 1] of the crop."""

    degraded: np.ndarray
    clean: np.ndarray
    landmarks: np.ndarray
    time_s: float


def video_sources(pack, people: Sequence[str]) -> list[tuple[int, str, int]]:
    """(source index, source name, identity index) of the pack's clips whose crops are all of one
    of ``people``."""
    allowed = {pack.identities.index(name) for name in people}
    sources = []
    for i, (name, kind) in enumerate(zip(pack.source_names, pack.source_kinds)):
        found = set(np.unique(pack.identity[np.asarray(pack.source) == i]).tolist())
        if kind == "video" and len(found) == 1 and found <= allowed:
            sources.append((i, name, found.pop()))
    return sources


def _frames_at(path: Path, indices: set[int]) -> tuple[dict[int, np.ndarray], float]:
    """The decoded RGB frames ``indices`` (0-based, decode order) of ``path``, and its frame rate."""

    from streamrestore.video.reader import open_local_media, stream_frame_rate, turned_upright

    frames = {}
    with open_local_media(path) as container:
        stream = container.streams.video[0]
        rate = float(stream_frame_rate(stream) or 25)
        for i, frame in enumerate(container.decode(stream)):
            if i in indices:  # as shown (a phone's portrait clip is stored sideways)
                frames[i] = turned_upright(frame.to_ndarray(format="rgb24"), frame.rotation)
            if i >= max(indices):
                break
    return frames, rate


def iter_video_faces(pack, people: Sequence[str], settings: VideoFaceSettings, *, shared: str | Path,
                     face_models: str | Path, seed: int, log: Callable[[str], None] = print,
                     ) -> Iterator[tuple[int, int, np.random.Generator, list[VideoFace]]]:
    """Per draw and clip: ``(source index, identity index, the clip's generator, its faces)``.

    The generator (seeded by ``seed``, the draw and the clip's place) has drawn the clip's damage
    and frames; further draws for its faces continue the same stream.

    Raises:
        InputError: the pack has no clip of ``people``, or no face was found in any drawn frame.
    """
    from streamrestore.eval.video import VideoDegradation, degrade_video
    from streamrestore.faces.align import alignment_matrix, crop_face
    from streamrestore.faces.detect import create_detector, detect_padded
    from streamrestore.pixels import RgbPixels

    sources = video_sources(pack, people)
    if not sources:
        raise InputError("the pack has no clip of the training people to cut video faces from")
    root = Path(shared) / "data"
    detector = create_detector("scrfd", models_dir=str(face_models))
    side = pack.resolution
    found = 0
    start = time.time()
    for draw in range(settings.draws):
        for k, (source, name, person) in enumerate(sources):
            rng = np.random.default_rng([seed, 3, draw, k])
            damage = VideoDegradation(name="sample", scale=float(rng.uniform(*settings.scale)),
                                      blur=float(rng.uniform(*settings.blur)),
                                      crf=int(rng.integers(settings.crf[0], settings.crf[1] + 1)))
            clip = root / name
            with tempfile.TemporaryDirectory(prefix="streamrestore-video-faces-") as tmp:
                degraded_path = Path(tmp) / "degraded.mp4"
                count = degrade_video(clip, degraded_path, damage, max_frames=settings.max_frames)
                picks = set(rng.choice(count, size=min(settings.frames, count), replace=False).tolist())
                clean, rate = _frames_at(clip, picks)
                degraded, _ = _frames_at(degraded_path, picks)
            faces = []
            for index in sorted(picks):
                detected = detect_padded(detector, clean[index])
                if not detected:
                    continue
                face = max(detected, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                matrix = alignment_matrix(face.kps, side)
                points = np.asarray(face.kps, np.float64) @ matrix[:, :2].T + matrix[:, 2]
                faces.append(VideoFace(crop_face(RgbPixels(degraded[index]), matrix, side),
                                       crop_face(RgbPixels(clean[index]), matrix, side),
                                       (points / side).astype(np.float32), index / rate))
            found += len(faces)
            yield source, person, rng, faces
        log(f"video faces: draw {draw + 1}/{settings.draws}, {found} faces of {len(sources)} clips, "
            f"{time.time() - start:.0f} s")
    if not found:
        raise InputError(f"no face was found in the drawn frames of {len(sources)} clips under {root}")


def make_video_faces(pack, people: Sequence[str], settings: VideoFaceSettings, **options) -> dict[str, np.ndarray]:
    """:func:`iter_video_faces` collected: ``degraded``, ``clean`` (N, R, R, 3) uint8, ``landmarks``
    (N, 5, 2), ``identity`` and ``source`` (N,) pack indices, ``time_s`` (N,)."""
    out: dict[str, list] = {"degraded": [], "clean": [], "landmarks": [], "identity": [], "source": [], "time_s": []}
    for source, person, _, faces in iter_video_faces(pack, people, settings, **options):
        for face in faces:
            out["degraded"].append(face.degraded)
            out["clean"].append(face.clean)
            out["landmarks"].append(face.landmarks)
            out["identity"].append(person)
            out["source"].append(source)
            out["time_s"].append(face.time_s)
    return {"degraded": np.stack(out["degraded"]), "clean": np.stack(out["clean"]),
            "landmarks": np.stack(out["landmarks"]), "identity": np.asarray(out["identity"], np.int64),
            "source": np.asarray(out["source"], np.int64), "time_s": np.asarray(out["time_s"], np.float32)}
