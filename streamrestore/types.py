"""The values that flow between stages (the seams of the pipeline).

Every stage takes and returns these plain values; no stage reaches into another's state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from streamrestore.video.reader import VideoInfo

#: what a restorer's ``encode_references`` returns and its ``restore`` takes back (the lite and
#: InstantRestore models: :class:`streamrestore.model.cache.ReferenceCache`)
CacheT = TypeVar("CacheT")


@dataclass(frozen=True)
class Face:
    """One detected face in one frame (frame pixel coordinates)."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    kps: np.ndarray  # (5, 2) left eye, right eye, nose, left mouth corner, right mouth corner
    score: float

    @property
    def size(self) -> float:
        """How big the face is, in pixels: the side of the square with the box's area (one number
        whatever the box's aspect; the largest face of a frame is the one of largest size)."""
        width, height = float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1])
        return math.sqrt(max(width, 0.0) * max(height, 0.0))


@dataclass(frozen=True)
class TrackedFace:
    """A face with the id of the track it belongs to and its smoothed landmarks."""

    face: Face
    track_id: int
    kps: np.ndarray  # (5, 2) smoothed landmarks used for alignment
    interpolated: bool = False  # True when the detector missed it and the tracker filled the gap


@dataclass
class AlignedFace:
    """A face of a frame, warped onto the FFHQ template at the crop's size (the restorer's, or
    ``crop_resolution``'s): what the pipeline gave the restorer and, on the CPU, what it pasted back.
    ``FaceRestorer.last_faces`` holds those of the frame returned last: for previews, overlays, tests
    and for looking at each stage (a teacher's "before and after" of the faces, not of whole frames)."""

    pixels: np.ndarray  # (R, R, 3) uint8 RGB: the face as cut from the input frame (the restorer's input)
    matrix: np.ndarray  # (2, 3) frame -> crop affine; its inverse pastes back
    track_id: int
    identity: str | None  # name of the matched reference set, None if unmatched
    #: the face as pasted back, on the same template (R, R, 3) uint8 RGB: the restorer's output after the
    #: quality and identity gates, the reference detail and the temporal smoothing; None where the faces were
    #: restored and pasted on a GPU (not brought back one by one) or not yet pasted
    restored: np.ndarray | None = None
    #: the share of the restorer's change the quality gate let through (0: the face left as it was, a clean one;
    #: times ``--strength``); the identity gate may hold back more of it
    change_kept: float | None = None
    #: the share of that the identity gate kept (1: all of it; 0: none, the change made the face less like its
    #: person's photos); None where the gate did not judge the face (no references, or the gate off)
    identity_kept: float | None = None


@runtime_checkable
class Restorer(Protocol[CacheT]):
    """What the pipeline needs from a face restorer: aligned faces of side ``resolution`` in,
    restored faces out, each restored towards its identity's encoded references.

    Generic in the type of the encoded references (``Restorer`` alone: any).
    """

    resolution: int

    def encode_references(self, faces: "torch.Tensor") -> CacheT:
        """Encodes one identity's reference photos, once, for every frame after.

        Args:
            faces: the aligned reference crops, float in [0, 1], RGB, (N, 3, R, R) with
                R == ``resolution``.
        """
        ...

    def restore(self, faces: "torch.Tensor", caches: Sequence[CacheT | None],
                noise_seeds: Sequence[int] | None = None) -> "torch.Tensor":
        """Restores a batch of faces.

        Args:
            faces: float tensors in [0, 1], RGB, shape (B, 3, R, R) with R == ``resolution``.
            caches: ``caches[i]`` is the reference encoding of face i's identity (what
                :meth:`encode_references` returned), or None (no references).
            noise_seeds: ``noise_seeds[i]`` is the seed of face i's fixed noise (the pipeline
                passes the track id, so an unchanged face restores identically frame after
                frame); None: the restorer's default seed for every face. Restorers without
                noise accept it and ignore it.

        Returns:
            The restored faces, (B, 3, R, R) in [0, 1].
        """
        ...


# --- where frames come from and go to ------------------------------------------------------


@runtime_checkable
class FrameSource(Protocol):
    """A video to restore (:class:`streamrestore.video.reader.VideoReader`): what
    :func:`streamrestore.run.restore_frames` and :func:`streamrestore.restore_video` read.

    ``frames()`` yields the decoded frames in presentation order (``av.VideoFrame`` with their
    timestamps, or HxWx3 uint8 arrays); ``info`` describes the stream; ``problems`` collects what
    went wrong while reading (damaged packets, a truncated end), for the run's summary.
    """

    info: "VideoInfo"
    problems: list[str]

    def frames(self) -> Iterator[Any]:
        """The decoded frames, in presentation order."""
        ...


@runtime_checkable
class FrameSink(Protocol):
    """Where restored frames go, in order (:class:`streamrestore.video.writer.VideoWriter`, a
    ``batch`` chunk's part file): ``write`` one frame at a time on the loop's writer thread,
    ``close`` once after the last (it finishes the output)."""

    def write(self, frame: Any) -> None:
        """Takes the next restored frame."""
        ...

    def close(self) -> None:
        """Finishes the output, after the last frame."""
        ...


@runtime_checkable
class LiveSink(Protocol):
    """An output of a live session (:mod:`streamrestore.live.sinks`: a file or a network
    stream): ``write`` takes each restored RGB frame with the time it was captured (the
    output's clock), ``close`` finishes the output, ``abort`` drops it after a failure.
    ``name`` is what it writes to, ``frames_written`` how many frames it took."""

    name: str
    frames_written: int

    def write(self, rgb: np.ndarray, captured: float) -> None:
        """Takes the next restored frame.

        Args:
            rgb: the frame, (H, W, 3) uint8 RGB.
            captured: when it was captured, in seconds (the output's clock).
        """
        ...

    def close(self) -> None:
        """Finishes the output."""
        ...

    def abort(self) -> None:
        """Drops the output after a failure."""
        ...

