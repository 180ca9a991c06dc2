"""Video evaluation against a clean ground truth: ``streamrestore eval --video CLEAN.mp4``.

A clean clip is degraded frame for frame (:func:`degrade_video`, presets in
:data:`VIDEO_PRESETS`), or an already degraded copy is given; the degraded clip is then restored
by the whole pipeline (:func:`streamrestore.api.build_face_restorer` and
:meth:`~streamrestore.pipeline.FaceRestorer.stream`, as the main command does, without the final
encode) once per method, and every stream is measured against the clean clip, frame by frame.

Rows (:func:`evaluate_video`):

- ``input``: the degraded clip itself;
- one row per :class:`VideoMethod` restoring the degraded clip (default ``model_norefs`` and
  ``model_refs``: :data:`DEFAULT_METHODS`);
- ``clean``: the clean clip itself (identity to the references, and its own E_warp: the floor
  of the flicker measure on this motion);
- one row per method restoring the clean clip (default ``clean_refs``): a restorer should leave
  a clean face alone, so its PSNR and identity to the clean frame should be high and its
  identity to the references not below ``clean``'s.

Metrics, per frame and then averaged over frames:

- face region: the largest face found by SCRFD-2.5G on the *clean* frame (threshold 0.4,
  640-px input; when it finds none, once more on the frame padded with black, see
  :func:`streamrestore.faces.detect.detect_padded`, for faces that fill the frame), its box
  grown to a square of 1.3x its longer side about the box centre, clipped to the frame. Every
  stream is measured in that region, with the clean frame's landmarks.
- ``psnr``: over RGB in the region (capped at 100 dB, :func:`streamrestore.eval.metrics.psnr`);
  ``ssim``: on the luma (BT.601, as OpenCV's grey) of the region
  (:func:`streamrestore.eval.metrics.ssim_luma`).
- ``id_gt``: cosine similarity, under the paddle MobileFaceNet judge (112-px ArcFace crop from
  the clean frame's landmarks), between the stream's face and the clean frame's face;
  ``id_refs``: the same to the mean embedding of the reference photos; ``id_std``: the standard
  deviation of ``id_refs`` over frames (identity steadiness).
- ``ewarp``: flow warping error (Lai et al. 2018) between consecutive frames of the stream, with
  the optical flow (DIS, medium preset) taken from the *clean* clip so that a method cannot
  hide flicker by changing the motion; pixels failing the forward-backward check are left out;
  mean squared error of RGB in [0, 1] summed over channels, averaged over pixels then pairs,
  x 1e3. Whole frame. ``ewarp_face``: the same inside the face region only (the region of the
  latest measured frame). ``ewarp_input``: the same over the whole frame with the flow of the
  stream's own *input* instead (the degraded clip for ``input`` and the rows restoring it, the
  clean clip for ``clean`` and the rows restoring that), the definition of the shared
  ``flicker.py`` run as ``flicker.py INPUT OUTPUT``. The two differ where the degraded clip does
  not move as the clean one does: a strongly compressed copy holds a slowly moving face still for
  a few frames and then jumps (the encoder copies the blocks that moved by under a pixel of its
  small picture). Under the clean clip's flow each such hold and jump counts as flicker of the
  input, and of any output that follows the input, in proportion to how sharp it is; under the
  input's own flow it does not (``docs/temporal.md``, "Session 32").

Face metrics are taken on every ``every``-th frame (default 1: all); E_warp on all consecutive
pairs. The numbers are meant to agree with the shared measurement scripts
(``video_gt_metrics.py``, ``clip_identity.py``, ``flicker.py``); ``docs/video_eval.md`` shows
both side by side.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import av
import cv2
import numpy as np

from streamrestore.errors import InputError
from streamrestore.eval.flicker_metric import ReferenceFlow
from streamrestore.eval.judges import OnnxEmbedder
from streamrestore.eval.metrics import psnr, ssim_luma
from streamrestore.faces.align import arcface_matrix
from streamrestore.faces.detect import ScrfdDetector, detect_padded
from streamrestore.faces.references import list_reference_files, reference_pictures
from streamrestore.model_files import EvalModelFiles
from streamrestore.types import Face
from streamrestore.video.reader import (
    VideoReader,
    frame_to_rgb,
    open_local_media,
    probe,
    stream_frame_rate,
    turned_upright,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VideoDegradation",
    "VIDEO_PRESETS",
    "degrade_video",
    "VideoMethod",
    "DEFAULT_METHODS",
    "CLEAN_METHODS",
    "VIDEO_METRICS",
    "face_region",
    "FaceJudge",
    "GroundTruthFaces",
    "reference_embedding",
    "evaluate_video",
    "format_video_table",
]

#: Keys of every row, after ``method``.
VIDEO_METRICS = ("psnr", "ssim", "id_gt", "id_refs", "id_std", "ewarp", "ewarp_face", "ewarp_input")

#: Growth of the detector's box to the measured face region (square, about the box centre).
REGION_SCALE = 1.3


# --------------------------------------------------------------------------------------------
# Degradation


@dataclass(frozen=True)
class VideoDegradation:
    """A deterministic degradation of a whole clip, frame for frame.

    Each frame: Gaussian blur (``blur`` sigma in px, 0 = none), area downscale by ``scale`` to
    an even size of at least 16 px per side; the small clip is coded with libx264 at ``crf``
    (``x264_preset``), decoded, scaled back up with bicubic interpolation and coded again at
    ``final_crf``: what a low-bitrate, low-resolution upload looks like after a player's
    upscale. Same frame count, size and frame rate as the input; no audio.

    libx264 runs on one thread without its assembly (:func:`_encode_h264`'s ``plain_code``): the same
    clip gives the same bytes in every run, where the shared ``tools/degrade_video.py``'s threaded
    x264 does not (measured: 8 copies of a 720p clip in 8 runs); the frames differ from that tool's by
    ~1 level on average.
    """

    name: str = "default"
    scale: float = 4.0
    blur: float = 1.2
    crf: int = 32
    final_crf: int = 16
    x264_preset: str = "medium"

    def __post_init__(self) -> None:
        if not self.scale >= 1.0:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.blur < 0:
            raise ValueError(f"blur must be >= 0, got {self.blur}")
        for name in ("crf", "final_crf"):
            if not 0 <= getattr(self, name) <= 51:
                raise ValueError(f"{name} must be in 0..51, got {getattr(self, name)}")

    def small_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the coded small clip: ``round(side / scale)`` down to even, >= 16."""
        return (max(16, int(round(width / self.scale)) // 2 * 2), max(16, int(round(height / self.scale)) // 2 * 2))


#: ``default`` is the shared ``tools/degrade_video.py`` with its default options (x4, sigma 1.2,
#: crf 32, re-coded at crf 16), byte for byte.
VIDEO_PRESETS: dict[str, VideoDegradation] = {
    "default": VideoDegradation("default"),
    "mild": VideoDegradation("mild", scale=2.0, blur=0.8, crf=28),
    "severe": VideoDegradation("severe", scale=6.0, blur=1.6, crf=36),
}


def _encode_h264(path: Path, frames: Iterable[np.ndarray], rate, size: tuple[int, int], crf: int, preset: str,
                 rotation: int = 0, plain_code: bool = False) -> int:
    """``frames`` (RGB) coded with libx264 into ``path``; ``plain_code``: on one thread and without its assembly.
    Threaded, or with its assembly, it coded the same frames otherwise from run to run here (320x180 at crf 32, 25
    runs each: 3-4 distinct files with either change alone, 1 with both; a whole 720p degrade with only the
    assembly off: 2 copies in 6 runs, with both: 1 in 8), so that a class measuring one clip got as many tables
    as students. It takes several times as long, still a small part of a restore's."""

    count = 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset,
                          **({"x264-params": "asm=0", "threads": "1"} if plain_code else {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
            count += 1
        for packet in stream.encode():
            out.mux(packet)
    return count


def _decoded_rgb(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames as PyAV's default conversion gives them (what the shared tools read)."""

    with open_local_media(path) as container:
        for frame in itertools.islice(container.decode(video=0), max_frames):
            yield frame.to_ndarray(format="rgb24")


#: frames :func:`degrade_video` encodes past those measured (``eval --video``): x264's look-ahead
#: sees where a stream ends, so the last frames of a short encode come out worse than the same
#: frames of the whole clip's (Obama_clip1, 30 frames: 26.60 dB against 26.86 for the whole clip).
#: 150 frames past made frames 0-29 identical to the whole clip's copy there, 90 did not.
MARGIN_FRAMES = 250


def degrade_video(src: str | Path, dst: str | Path, preset: str | VideoDegradation = "default",
                  max_frames: int | None = None, margin_frames: int = 0) -> int:
    """Write the degraded copy of the first ``max_frames`` frames (None: all) of ``src`` to
    ``dst`` (an .mp4), and ``margin_frames`` more where the clip has them (see
    :data:`MARGIN_FRAMES`); returns the frame count. Frames are streamed: memory stays flat.
    The copy keeps ``src``'s display rotation (a phone's portrait video stays upright)."""

    degradation = VIDEO_PRESETS[preset] if isinstance(preset, str) else preset
    src, dst = Path(src), Path(dst)
    try:
        with open_local_media(src) as container:
            stream = container.streams.video[0]
            rate, width, height = stream_frame_rate(stream), stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"cannot read a video stream from {src}: {exc}") from None
    if not rate:
        raise InputError(f"{src} has no frame rate; cannot write its degraded copy")
    rotation = probe(src).rotation
    small = degradation.small_size(width, height)

    def shrink(image: np.ndarray) -> np.ndarray:
        if degradation.blur > 0:
            image = cv2.GaussianBlur(image, (0, 0), degradation.blur)
        return cv2.resize(image, small, interpolation=cv2.INTER_AREA)

    def enlarge(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for image in frames:
            yield cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamrestore-degrade-") as tmp:
        low = Path(tmp) / "low.mp4"
        # Decode fully, then encode (only the small frames are held: 1/scale^2 of the clip).
        # Encoding while the source is still being decoded gave other bytes than the shared
        # tools/degrade_video.py (same frames in, x264 output differed); this order matches it.
        shrunk = [shrink(image) for image in _decoded_rgb(src, None if max_frames is None else max_frames + margin_frames)]
        _encode_h264(low, shrunk, rate, small, degradation.crf, degradation.x264_preset, plain_code=True)
        shrunk = list(_decoded_rgb(low))
        count = _encode_h264(dst, enlarge(shrunk), rate, (width, height), degradation.final_crf,
                             degradation.x264_preset, rotation, plain_code=True)
    if count == 0:
        raise InputError(f"no frame of {src} could be decoded")
    return count


# --------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class VideoMethod:
    """One way of restoring a clip: a row of the table.

    Args:
        name: the row's label.
        refs: give the restorer the reference photos (``--refs``).
        source: ``"degraded"`` (restore the degraded clip) or ``"clean"`` (restore the clean one).
        options: more keyword arguments for :func:`streamrestore.api.build_face_restorer`
            (e.g. ``{"model": "other.pt"}`` or ``{"config": PipelineConfig(...)}``), over the
            run's own.
    """

    name: str
    refs: bool = True
    source: str = "degraded"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ("degraded", "clean"):
            raise ValueError(f"source must be 'degraded' or 'clean', got {self.source!r}")
        if self.name in ("input", "clean"):
            raise ValueError(f"{self.name!r} is the name of a fixed row; choose another")


DEFAULT_METHODS: tuple[VideoMethod, ...] = (VideoMethod("model_norefs", refs=False), VideoMethod("model_refs", refs=True))
CLEAN_METHODS: tuple[VideoMethod, ...] = (VideoMethod("clean_refs", refs=True, source="clean"),)


# --------------------------------------------------------------------------------------------
# Faces and judges


def face_region(box: Sequence[float], shape: tuple[int, ...], scale: float = REGION_SCALE) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end exclusive: the square of ``scale`` times the box's longer side
    about its centre, clipped to a frame of ``shape`` (H, W, ...)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, scale * max(x1 - x0, y1 - y0) / 2
    h, w = shape[:2]
    return (int(round(max(0.0, cx - half))), int(round(max(0.0, cy - half))),
            int(round(min(float(w), cx + half))), int(round(min(float(h), cy + half))))


class FaceJudge:
    """Identity vectors of faces in whole frames, by the landmarks given: the 112-px ArcFace crop
    (same geometry as insightface's ``norm_crop``) through an embedder with ``embed_crops``
    (:class:`streamrestore.eval.judges.OnnxEmbedder`, the paddle MobileFaceNet by default)."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.name = getattr(embedder, "name", "judge")

    @classmethod
    def paddle(cls, models_dir: str | Path) -> "FaceJudge":
        """The paddle MobileFaceNet of the evaluation models folder ``models_dir``."""

        return cls(OnnxEmbedder(EvalModelFiles.from_dir(models_dir).paddle, "bgr", "paddle"))

    def crop(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:

        matrix = arcface_matrix(kps)
        return cv2.warpAffine(rgb, matrix, (112, 112), borderValue=0.0)

    def embed(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """Unit-length embedding of the face at ``kps`` (5, 2) in the RGB frame ``rgb``."""
        vector = np.asarray(self.embedder.embed_crops(self.crop(rgb, kps)[None]), np.float64)[0]
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


@dataclass
class GroundTruthFace:
    box: np.ndarray
    kps: np.ndarray
    region: tuple[int, int, int, int]
    embedding: np.ndarray


class GroundTruthFaces:
    """Finds the measured face of each clean frame: the largest SCRFD face, with the padded
    retry for faces that fill the frame."""

    def __init__(self, detector, judge: FaceJudge, *, padded_retry: bool = True):
        self.detector = detector
        self.judge = judge
        self.padded_retry = padded_retry
        self.missed = 0
        self.padded = 0

    @classmethod
    def scrfd(cls, models_dir: str | Path, judge: FaceJudge, **kwargs) -> "GroundTruthFaces":
        """With the SCRFD-2.5G of the evaluation models folder ``models_dir``."""

        class SquareInputScrfd(ScrfdDetector):
            """The measuring definition: insightface's own resize into a square 640x640
            letterboxed input. The pipeline's detector fits its input to the frame's aspect and
            rounds the size differently: landmarks of a 1200x626 photo moved by 1.3-1.6 px and
            its identity by 0.006-0.008, enough to blur a comparison with the shared tools."""

            def detect(self, image: np.ndarray) -> list:

                boxes, kpss = self._model.detect(np.ascontiguousarray(image[:, :, ::-1]),
                                                 input_size=(self.det_size, self.det_size))
                faces = [Face(box=boxes[i, :4].astype(np.float32), kps=kpss[i].astype(np.float32),
                              score=float(boxes[i, 4])) for i in range(boxes.shape[0])]
                return sorted(faces, key=lambda face: -face.score)

        detector = SquareInputScrfd(EvalModelFiles.from_dir(models_dir).detector, det_size=640, threshold=0.4,
                                    providers=["CPUExecutionProvider"])
        return cls(detector, judge, **kwargs)

    def largest(self, rgb: np.ndarray):
        """The largest face (``streamrestore.types.Face``) in ``rgb``, or None."""

        faces = self.detector.detect(rgb)
        if not faces and self.padded_retry:
            faces = detect_padded(self.detector, rgb)
            if faces:
                self.padded += 1
        if not faces:
            return None
        return max(faces, key=lambda f: f.size)

    def __call__(self, rgb: np.ndarray) -> GroundTruthFace | None:
        face = self.largest(rgb)
        if face is None:
            self.missed += 1
            return None
        box, kps = np.asarray(face.box, np.float64), np.asarray(face.kps, np.float64)
        return GroundTruthFace(box, kps, face_region(box, rgb.shape), self.judge.embed(rgb, kps))


def reference_embedding(images: Sequence[np.ndarray], faces: GroundTruthFaces) -> np.ndarray | None:
    """Unit mean of the judge's unit embeddings of the largest face of each RGB photo (photos
    without a face are skipped); None when no photo has one."""
    vectors = []
    for rgb in images:
        face = faces.largest(rgb)
        if face is not None:
            vectors.append(faces.judge.embed(rgb, face.kps))
    if not vectors:
        return None
    mean = np.mean(vectors, axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def read_reference_photos(path: str | Path) -> list[np.ndarray]:
    """RGB pictures of a reference folder (or one photo or video), as the pipeline reads them."""
    return [rgb for file in list_reference_files(Path(path)) for _, rgb in reference_pictures(file)]


# --------------------------------------------------------------------------------------------
# Measuring


#: the first frames of both clips :class:`_StepCheck` compares, the farthest step it looks for, and how much
#: better a step's match must be than the frames as paired (correlation of frame-to-frame changes) to be said:
#: on Obama, Andrew and s32 degraded by the default preset the frames as paired score 0.55-0.76 and any step
#: 0.14-0.59; one frame off, the step one scores 0.57-0.75 and the pairing 0.28-0.58
STEP_CHECK_FRAMES = 40
STEP_CHECK_MAX = 4
STEP_CHECK_MARGIN = 0.1


class _StepCheck:
    """Whether a degraded copy is in step with its clean clip: a copy cut or made one frame off pairs every
    frame with another moment, and every figure with it. Its frame-to-frame changes are compared with the
    clean clip's at steps of up to :data:`STEP_CHECK_MAX` frames: what the degradation does to the picture
    changes little from one frame to the next, the motion does."""

    def __init__(self) -> None:
        self.clean: list[np.ndarray] = []
        self.degraded: list[np.ndarray] = []

    @staticmethod
    def _thumb(rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = 64 / max(grey.shape)
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        return cv2.GaussianBlur(cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32), (0, 0), 1.0)

    def add(self, clean: np.ndarray, degraded: np.ndarray) -> bool:
        """Keeps a pair (shown as the clean clip); True once it has :data:`STEP_CHECK_FRAMES`."""
        self.clean.append(self._thumb(clean))
        self.degraded.append(self._thumb(degraded))
        return len(self.clean) >= STEP_CHECK_FRAMES

    def step(self) -> int:
        """How many frames into the clean clip the degraded copy's first frame is (negative: the clean clip's
        first frame is that far into the copy); 0 in step, or where the frames move too little to tell."""
        k = STEP_CHECK_MAX
        changes_clean = np.diff(np.stack(self.clean), axis=0)
        changes_degraded = np.diff(np.stack(self.degraded), axis=0)
        pairs = len(changes_clean) - 2 * k
        if pairs < 4:
            return 0
        b = changes_degraded[k:k + pairs]
        b = b - b.mean()
        scores = {}
        for step in range(-k, k + 1):
            a = changes_clean[k + step:k + step + pairs]
            a = a - a.mean()
            scores[step] = float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))
        best = max(scores, key=lambda s: scores[s])
        return best if scores[best] - scores[0] >= STEP_CHECK_MARGIN else 0

    def say(self, clean: Path, degraded: Path) -> None:
        """Warns of a copy out of step (once, after the first frames)."""
        step = self.step()
        if step:
            where = (f"its first frame is the clean clip's frame {step}" if step > 0
                     else f"the clean clip's first frame is its frame {-step}")
            logger.warning("eval: %s looks %d frame(s) out of step with %s (%s, by how the two move): every figure "
                           "compares different moments; make the copy from the same frames, or let eval degrade the "
                           "clean clip (--degrade)", degraded.name, abs(step), clean.name, where)


class _Meter:
    """What one row accumulates."""

    def __init__(self, name: str):
        self.name = name
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.id_gt: list[float] = []
        self.id_refs: list[float] = []
        self.ewarp: list[float] = []
        self.ewarp_face: list[float] = []
        self.ewarp_input: list[float] = []
        self.prev: np.ndarray | None = None
        #: a restored row's faces (the pipeline's counts): changed by the model, and all it saw
        #: (the rest the quality gate left as they were); None for the input and clean rows
        self.faces: tuple[int, int] | None = None

    def row(self) -> dict:
        def mean(values):
            finite = [v for v in values if math.isfinite(v)]
            return float(np.mean(finite)) if finite else float("nan")

        return {
            "method": self.name,
            "psnr": mean(self.psnr),
            "ssim": mean(self.ssim),
            "id_gt": mean(self.id_gt),
            "id_refs": mean(self.id_refs),
            "id_std": float(np.std(self.id_refs)) if self.id_refs else float("nan"),
            "ewarp": 1e3 * mean(self.ewarp),
            "ewarp_face": 1e3 * mean(self.ewarp_face),
            "ewarp_input": 1e3 * mean(self.ewarp_input),
            "frames": len(self.psnr),
            "pairs": sum(1 for v in self.ewarp if math.isfinite(v)),
            "faces_changed": None if self.faces is None else self.faces[0],
            "faces_seen": None if self.faces is None else self.faces[1],
        }


def _measure_face(meter: _Meter, clean: np.ndarray, out: np.ndarray, gt: GroundTruthFace, judge: FaceJudge,
                  refs: np.ndarray | None) -> None:

    x0, y0, x1, y1 = gt.region
    a, b = clean[y0:y1, x0:x1], out[y0:y1, x0:x1]
    meter.psnr.append(psnr(b, a))
    meter.ssim.append(ssim_luma(b, a) if min(a.shape[:2]) >= 11 else float("nan"))
    embedding = judge.embed(out, gt.kps)
    meter.id_gt.append(float(embedding @ gt.embedding))
    if refs is not None:
        meter.id_refs.append(float(embedding @ refs))


def _as_rgb(frame, rotation: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """RGB uint8 of a frame (``av.VideoFrame`` or array) as shown with the clip's display
    ``rotation``, resized with bicubic to the clean frame's ``shape`` (given) when they differ."""
    rgb = turned_upright(frame if isinstance(frame, np.ndarray) else frame_to_rgb(frame), rotation)
    if shape is not None and rgb.shape[:2] != tuple(shape[:2]):
        rgb = cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return rgb


class _LosslessWriter:
    """RGB frames to a lossless FFV1 .mkv (bgr0), for checking the measured streams with other
    tools: decoding it gives back exactly the frames measured."""

    def __init__(self, path: Path, rate):

        self.path = path
        self._out = av.open(str(path), "w")
        self._stream = self._out.add_stream("ffv1", rate=rate)
        self._stream.pix_fmt = "bgr0"
        self._started = False

    def write(self, rgb: np.ndarray) -> None:
        if not self._started:
            self._stream.height, self._stream.width = rgb.shape[:2]
            self._started = True
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self._out.mux(packet)

    def close(self) -> None:
        try:
            if self._started:
                for packet in self._stream.encode():
                    self._out.mux(packet)
        finally:
            self._out.close()


def _frames(stack: contextlib.ExitStack, path: Path, max_frames: int | None) -> Iterator:

    reader = stack.enter_context(VideoReader(path))
    return itertools.islice(reader.frames(), max_frames)


def evaluate_video(
    clean: str | Path,
    degraded: str | Path,
    *,
    make_face_restorer: Callable[[VideoMethod, float], Any],
    faces: GroundTruthFaces,
    ref_embedding: np.ndarray | None = None,
    methods: Sequence[VideoMethod] = DEFAULT_METHODS + CLEAN_METHODS,
    max_frames: int | None = None,
    every: int = 1,
    save_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Restore ``degraded`` (and ``clean``) by every method and measure all rows against ``clean``.

    Args:
        clean, degraded: the ground truth and its degraded copy (same frames; a degraded copy of
            another size is resized with bicubic for measuring).
        make_face_restorer: ``(method, fps) -> FaceRestorer`` built with lookahead (the command
            uses :func:`streamrestore.api.build_face_restorer`); called once per method.
        faces: finds the measured face of each clean frame (its judge measures identity).
        ref_embedding: the judge's unit mean embedding of the reference photos (None: no
            ``id_refs``).
        methods: the restoring rows; ``input`` and ``clean`` are always measured.
        max_frames: measure only the first N frames.
        every: face metrics on every k-th frame (E_warp uses every pair).
        save_dir: also write every measured stream there as lossless ``<row>.mkv``.
        progress: called with the number of frames done.

    Returns the rows (dicts with ``method`` and :data:`VIDEO_METRICS`, ``frames``, ``pairs``),
    in the order ``input``, degraded-source methods, ``clean``, clean-source methods. Streams
    are decoded, restored and measured in lockstep, one frame at a time: memory does not grow
    with the clip. Every picture is measured as the clean clip is shown (turned by its display
    rotation): the degraded copy holds the same frames, stored the same way.
    """

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be None or >= 1, got {max_frames}")
    clean, degraded = Path(clean), Path(degraded)
    info = probe(clean)
    fps = float(info.frame_rate) if info.frame_rate else 30.0
    from_degraded = [m for m in methods if m.source == "degraded"]
    from_clean = [m for m in methods if m.source == "clean"]
    names = ["input"] + [m.name for m in from_degraded] + ["clean"] + [m.name for m in from_clean]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must differ, got {names}")
    meters = {name: _Meter(name) for name in names}
    judge = faces.judge
    warp = ReferenceFlow()
    input_warp = ReferenceFlow()  # the degraded clip's own flow, for ewarp_input
    from_clean_rows = {"clean"} | {m.name for m in from_clean}
    writers: dict[str, _LosslessWriter] = {}
    step_check: _StepCheck | None = _StepCheck()
    missed_before = faces.missed  # (one GroundTruthFaces may serve several clips: this clip's are said)
    count = 0
    last_region: tuple[int, int, int, int] | None = None
    with contextlib.ExitStack() as stack:
        restorers = [make_face_restorer(m, fps) for m in from_degraded + from_clean]
        streams = [_frames(stack, clean, max_frames), _frames(stack, degraded, max_frames)]
        for method, restorer in zip(from_degraded + from_clean, restorers):
            source = degraded if method.source == "degraded" else clean
            streams.append(restorer.stream(_frames(stack, source, max_frames)))
        if save_dir is not None:
            save_dir = Path(save_dir)
            save_dir.mkdir(parents=True, exist_ok=True)
            rate = info.frame_rate or 30
            for name in names:
                writers[name] = _LosslessWriter(save_dir / f"{name}.mkv", rate)
                stack.callback(writers[name].close)
        order = ["clean", "input"] + [m.name for m in from_degraded + from_clean]
        for index, frames in enumerate(itertools.zip_longest(*streams)):
            if any(f is None for f in frames):
                short = [order[k] for k, f in enumerate(frames) if f is None]
                logger.warning("eval: %s ended after %d frames, before the others; measured %d frames",
                               ", ".join(short), index, index)
                break
            clean_rgb = _as_rgb(frames[0], info.rotation)
            outputs = {"clean": clean_rgb}
            for name, frame in zip(order[1:], frames[1:]):
                outputs[name] = _as_rgb(frame, info.rotation, clean_rgb.shape)
            if step_check is not None and step_check.add(clean_rgb, outputs["input"]):
                step_check.say(clean, degraded)
                step_check = None
            paired = warp.next_pair(clean_rgb)
            input_paired = input_warp.next_pair(outputs["input"])
            gt = faces(clean_rgb) if index % every == 0 else None
            if gt is not None:
                last_region = gt.region  # ewarp_face between measured frames uses the latest one
            for name in names:
                meter, out = meters[name], outputs[name]
                if gt is not None:
                    _measure_face(meter, clean_rgb, out, gt, judge, ref_embedding)
                if paired and meter.prev is not None:
                    meter.ewarp.append(warp.error(meter.prev, out))
                    if last_region is not None:
                        meter.ewarp_face.append(warp.error(meter.prev, out, last_region))
                    if name in from_clean_rows:
                        meter.ewarp_input.append(meter.ewarp[-1])
                    elif input_paired:
                        meter.ewarp_input.append(input_warp.error(meter.prev, out))
                meter.prev = out
                if name in writers:
                    writers[name].write(out)
            count = index + 1
            if progress is not None:
                progress(count)
    if count == 0:
        raise InputError(f"no frame of {clean} or {degraded} could be read")
    if step_check is not None:  # (a clip shorter than the check's frames)
        step_check.say(clean, degraded)
    for method, restorer in zip(from_degraded + from_clean, restorers):
        stats = restorer.stats
        changed = stats.faces_restored - stats.faces_left_clean
        meters[method.name].faces = (changed, stats.faces_restored)
        if stats.faces_restored and not changed:
            logger.warning("eval: %s changed none of its %d faces: the quality gate left them as they were (clean, "
                           "too dark or flat, or too grainy to judge), so the row is the %s's; --no-quality-gate "
                           "measures the model on them", method.name, stats.faces_restored,
                           "input" if method.source == "degraded" else "clean clip")
    if faces.missed > missed_before:
        logger.warning("eval: no face found in %d measured clean frame(s); they are left out of the face metrics",
                       faces.missed - missed_before)
    return [meters[name].row() for name in names]


# --------------------------------------------------------------------------------------------
# Reports

#: (key, header, format) of the table's columns.
VIDEO_COLUMNS = (
    ("psnr", "face PSNR ↑", "{:.2f}"),
    ("ssim", "face SSIM ↑", "{:.4f}"),
    ("id_gt", "ID to GT ↑", "{:.4f}"),
    ("id_refs", "ID to refs ↑", "{:.4f}"),
    ("id_std", "ID std ↓", "{:.4f}"),
    ("ewarp", "E_warp ×1e3 ↓", "{:.3f}"),
    ("ewarp_face", "E_warp face ×1e3 ↓", "{:.3f}"),
    ("ewarp_input", "E_warp input flow ×1e3 ↓", "{:.3f}"),
    ("frames", "frames", "{}"),
    ("faces_changed", "faces changed", "{}"),
)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def format_video_table(rows: Sequence[Mapping], first: Sequence[str] = ("method",)) -> str:
    """GitHub markdown table of video rows; NaN and None show as ``–``. ``first``: the leading
    label columns (e.g. ``("clip", "degradation", "method")`` for a benchmark)."""
    headers = list(first) + [h for _, h, _ in VIDEO_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] * len(first) + ["---:"] * len(VIDEO_COLUMNS)) + "|"]
    for row in rows:
        cells = [str(row.get(k, "")) for k in first] + [_cell(row.get(k), f) for k, _, f in VIDEO_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def json_ready(rows: Sequence[Mapping]) -> list[dict]:
    """Rows with NaN and infinities as None, for strict JSON."""
    out = []
    for row in rows:
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return out

