"""Carry faces from one frame to the next with sparse optical flow, between detections.

Running the detector on every frame is the costliest step of the CPU pipeline. With
``detect_every=k`` the detector runs on every k-th frame and, in between, each face's five
landmarks are followed with pyramidal Lucas-Kanade flow (about a millisecond for all faces of a
720p frame). Eyes, nostrils and mouth corners are well-textured points, which is what LK tracks
best; a face whose points are lost is dropped until the next detection.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamrestore.pixels import RgbPixels
from streamrestore.settings import check_kinds
from streamrestore.types import Face


@dataclass(frozen=True)
class PropagationConfig:
    """Args:
        window: LK search window in pixels of the flow image (default 21: covers the motion of a
            talking head between two 30 fps frames at 720p).
        levels: pyramid levels (default 3: follows fast head turns up to ~8x the window).
        max_side: the flow runs on a copy scaled so its longer side is at most this (default
            640: LK on 5 points is cheap, but the pyramid of a full 1080p frame is not).
        max_error: largest forward-backward error, in pixels of the flow image, for a landmark
            to count as followed (default 2.0).
    """

    window: int = 21
    levels: int = 3
    max_side: int = 640
    max_error: float = 2.0

    def __post_init__(self):
        check_kinds(self)
        if self.window < 5:
            raise ValueError(f"window must be >= 5, got {self.window}")
        if self.levels < 0:
            raise ValueError(f"levels must be >= 0, got {self.levels}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {self.max_side}")
        if self.max_error <= 0:
            raise ValueError(f"max_error must be positive, got {self.max_error}")


class FacePropagator:
    """Remembers the last frame and its faces; :meth:`propagate` moves them to the next frame."""

    def __init__(self, config: PropagationConfig = PropagationConfig()):
        self.config = config
        self._gray: np.ndarray | None = None
        self._scale = 1.0
        self._faces: list[Face] = []

    @property
    def held(self) -> int:
        """How many faces the next :meth:`propagate` will try to follow."""
        return len(self._faces)

    def _prepare(self, frame) -> tuple[np.ndarray, float]:
        """(small grey frame, scale). ``frame``: RGB array or ``streamrestore.pixels`` pixels."""
        pixels = RgbPixels(frame) if isinstance(frame, np.ndarray) else frame
        h, w = pixels.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        return pixels.gray(round(w * scale), round(h * scale)), scale

    def observe(self, rgb: np.ndarray, faces: list[Face]) -> None:
        """Records a frame whose faces were detected."""
        self._gray, self._scale = self._prepare(rgb)
        self._faces = list(faces)

    def propagate(self, rgb: np.ndarray) -> list[Face]:
        """The remembered faces moved onto ``rgb`` (which becomes the remembered frame)."""
        gray, scale = self._prepare(rgb)
        prev, faces = self._gray, self._faces
        self._gray, self._scale = gray, scale
        if prev is None or not faces or prev.shape != gray.shape:
            self._faces = []
            return []
        cfg = self.config
        points = np.concatenate([f.kps for f in faces]).astype(np.float32) * scale
        params = dict(winSize=(cfg.window, cfg.window), maxLevel=cfg.levels,
                      criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        forward, ok_f, _ = cv2.calcOpticalFlowPyrLK(prev, gray, points, None, **params)
        backward, ok_b, _ = cv2.calcOpticalFlowPyrLK(gray, prev, forward, None, **params)
        error = np.linalg.norm(backward - points, axis=1)
        good = (ok_f[:, 0] == 1) & (ok_b[:, 0] == 1) & (error <= cfg.max_error)
        moved: list[Face] = []
        for i, face in enumerate(faces):
            rows = slice(5 * i, 5 * i + 5)
            if good[rows].sum() < 4:
                continue  # lost: wait for the next detection rather than drift
            old = face.kps.astype(np.float64)
            new = forward[rows].astype(np.float64) / scale
            keep = good[rows]
            # A similarity fitted to the followed points also places any point that was lost.
            matrix, _ = cv2.estimateAffinePartial2D(old[keep], new[keep])
            if matrix is None:
                continue
            kps = (np.hstack([old, np.ones((5, 1))]) @ matrix.T).astype(np.float32)
            corners = np.array([[face.box[0], face.box[1], 1], [face.box[2], face.box[3], 1]], np.float64) @ matrix.T
            box = np.array([*corners.min(0), *corners.max(0)], np.float32)
            moved.append(Face(box=box, kps=kps, score=face.score))
        self._faces = moved
        return moved
