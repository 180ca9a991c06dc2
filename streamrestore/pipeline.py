"""The frame loop: frames in, frames out.

:class:`FaceRestorer` is the one object the CLI, the live mode and library users drive. Per
frame it detects, tracks, aligns, restores (batched over every face of the frame, each with its
identity's cached references), smooths and pastes back. The threaded file loop around it and
the run's statistics (:class:`~streamrestore.run.RunStats`) are :mod:`streamrestore.run`'s.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from streamrestore.blend import (
    PasteBack,
    PasteConfig,
    crop_box,
    keep_monochrome_tone,
    keep_monochrome_tone_tensor,
)
from streamrestore.errors import ModelError, ReferencesError
from streamrestore.faces.align import alignment_matrix, crop_face
from streamrestore.faces.detect import detect_upright
from streamrestore.faces.identity import IdentityMatcher
from streamrestore.faces.propagate import FacePropagator
from streamrestore.faces.track import FaceTracker, TrackerConfig
from streamrestore.hdr import SdrView, coded_levels, sdr_view
from streamrestore.images import is_image
from streamrestore.model.resample import auto_crop_side, crop_sides, restore_batches
from streamrestore.pixels import (
    RgbCanvas,
    RgbPixels,
    Yuv420Pixels,
    copy_timing,
    frame_like,
    frame_planes,
    pixels_of,
    plane_view,
)
from streamrestore.quality import IdentityGate, IdentityGateConfig, QualityGate, QualityGateConfig
from streamrestore.reference_detail import PreparedReferences, ReferenceDetail, ReferenceDetailConfig
from streamrestore.run import POOR_MATCH_MIN_FACES, RunStats, poor_reference_match
from streamrestore.settings import check_kinds
from streamrestore.temporal import FrameFusion, TemporalConfig, TemporalSmoother
from streamrestore.threads import resolve_torch_threads
from streamrestore.threads import torch_threads as _torch_threads
from streamrestore.types import AlignedFace, Face, Restorer, TrackedFace
from streamrestore.video.reader import quarter_turns

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.faces.detect import Detector
    from streamrestore.faces.identity import FaceEmbedder, ReferenceSet
    from streamrestore.model.adapt import AdaptConfig
    from streamrestore.pixels import Yuv420Canvas

log = logging.getLogger(__name__)

#: with no face held, a frame whose grey thumbnail (:data:`CUT_THUMBNAIL` px) differs from the one the
#: detector last looked at by at least this mean level (0-255) is looked at at once: a cut (back from
#: a slide to a video call's grid: ~60; a face walking into a still shot: a few levels)
CUT_LEVELS = 20.0
CUT_THUMBNAIL = (32, 18)
#: with ``max_faces``, how many times larger than a face restored on the frame before another face
#: must be to take its place
MAX_FACES_SWITCH = 1.25
#: a decided track's face is checked against its first faces every this many faces (IdentityMatcher.another_person):
#: another person under the same track is found within 2 checks (8 frames, a third of a second at 25 fps), at one
#: recognition (a few ms) every 4 frames a face
RECHECK_EVERY = 4


@dataclass(frozen=True)
class PipelineConfig:
    """Per-run choices of the frame loop.

    Args:
        max_faces: restore at most this many faces per frame, largest first (default None: all).
            The faces restored on the frame before keep their place unless another is
            :data:`MAX_FACES_SWITCH` times larger: the equal tiles of a video call, each face's size
            jittering from frame to frame, swapped places (restored, then not, then again).
        unmatched: what to do with a face whose track matches no reference set: ``"restore"``
            (restore without references, the default: still better than the input) or ``"skip"``
            (leave it untouched).
        lookahead: frames the tracker may wait before a frame is final (default 5: a face the
            detector misses for up to 5 frames is interpolated instead of flickering back to the
            unrestored original). 0 for live sources, where no frame may wait.
        min_face: faces smaller than this many pixels (:attr:`Face.size`: the side of the square
            of the box's area) are left alone (default 16: too small for any restorer to help, and
            detectors misfire there).
        detect_every: run the detector on every k-th frame and follow the landmarks with optical
            flow in between (``streamrestore.faces.propagate``); a face the flow loses triggers
            a detection on the next frame. Default 3: the carried landmarks differ from a fresh
            detection by ~1 % of the eye distance (95th percentile < 3 %, measured on 720p and
            480p talking heads with ``benchmarks/bench_detect_every.py``), less than the
            detector's own frame-to-frame jitter, at a third of the detection cost; a face
            entering the picture is picked up at most two frames late, and on its first frame
            after a cut from frames without faces (a slide, a title: :data:`CUT_LEVELS`).
        detect_size: the longer side, in pixels, of the picture a detector that works at a size of its own
            (SCRFD) looks at; frames are shrunk (or enlarged) so that their longer side is it. Default 640,
            what insightface's packs were tuned at; a face under ~20 px there is missed in some frames (a
            45-px face of a 1080p overview camera is 15 px at 640: found in half the frames, all of them at
            960), and the run says so (:data:`~streamrestore.faces.detect.SMALL_AT_INPUT`). 1280 finds faces
            half the size at about four times the detection time. A multiple of 32, 160 to 4096; dlib's
            detector searches the whole frame and ignores it.
        frame_path: where crops are cut and faces pasted: ``"host"`` (OpenCV on the CPU, 4:2:0
            frames kept in YUV), ``"device"`` (on the restorer's device with the kernels of
            ``streamrestore/kernels/``: the frame is copied there once and back once, see
            ``streamrestore.device_frames``), or ``"auto"`` (default: ``"device"`` when the
            restorer runs on CUDA, else ``"host"``; on a CPU the OpenCV path is 30-200x faster
            than the kernels' PyTorch references).
        paste: see :class:`streamrestore.blend.PasteConfig`.
        temporal: motion-compensated temporal fusion of each track's restored change, in
            aligned-crop space and then, after the paste, along the input frames' own flow
            (causal: live mode gets it too); ``TemporalConfig.off()`` turns it off. See
            :class:`streamrestore.temporal.TemporalConfig`.
        gate: how much of the restorer's change each face gets, from an estimate of how
            degraded it is (clean faces pass through unchanged); see
            :class:`streamrestore.quality.QualityGateConfig`.
        reference_detail: the person's fine detail from the reference photos, registered onto
            each face by optical flow and added where it matches (after the gates, scaled by the
            quality gate's weight; before the fusion); ``ReferenceDetailConfig.off()`` turns it off. See
            :class:`streamrestore.reference_detail.ReferenceDetailConfig`.
        crop_resolution: side of the aligned crops the pipeline cuts, registers the references
            on, gates, fuses and pastes back; a restorer made for smaller crops (``lite``: 128)
            sees each one shrunk to its own size, and its change, enlarged, is added to the crop
            (:class:`streamrestore.model.resample.ResampledRestorer`). None: the restorer's own.
            Default ``"auto"``: per face (kept per track), the restorer's side x1, x2 or x4 (up to
            512), the largest that still holds 1.25 frame pixels per crop pixel
            (:func:`streamrestore.model.resample.auto_crop_side`): large faces keep the detail
            the frame and the references have above the model's resolution (video benchmark:
            +0.09 to +0.34 dB face PSNR on three of four faces of 2.9-5.8 frame px per 128-px
            crop pixel), and faces near the model's size stay at it (a 256-px face at 256
            flickered more: Andrew Ng's 1.22x the input's E_warp against 1.15x; ``docs/video_eval.md``,
            "Session 20" and "Sessions 22-23").
        identity_gate: holds back the restorer's change where it makes a face less like its
            person's references (after the quality gate, before the reference detail and the fusion; needs references and an
            insightface embedder); see :class:`streamrestore.quality.IdentityGateConfig`.
        match_threshold: the similarity (cosine, in [-1, 1]) a track needs to a person's photos to be
            that person (default None: the value measured for the embedder, 0.40 for insightface's;
            :class:`~streamrestore.faces.identity.IdentityMatcher`). Lower it when photos from other
            light or years score a little under it against the person's own face.
    """

    max_faces: int | None = None
    unmatched: str = "restore"
    lookahead: int = 5
    min_face: int = 16
    detect_every: int = 3
    detect_size: int = 640
    frame_path: str = "auto"
    paste: PasteConfig = field(default_factory=PasteConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    gate: QualityGateConfig = field(default_factory=QualityGateConfig)
    reference_detail: ReferenceDetailConfig = field(default_factory=ReferenceDetailConfig)
    identity_gate: IdentityGateConfig = field(default_factory=IdentityGateConfig)
    crop_resolution: int | str | None = "auto"
    match_threshold: float | None = None

    def __post_init__(self) -> None:
        check_kinds(self)
        if self.match_threshold is not None and not -1.0 <= self.match_threshold <= 1.0:
            raise ValueError(f"match_threshold is a cosine similarity in [-1, 1], got {self.match_threshold!r}")
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 or None, got {self.max_faces}")
        if self.unmatched not in ("restore", "skip"):
            raise ValueError(f"unmatched must be 'restore' or 'skip', got {self.unmatched!r}")
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {self.lookahead}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        from streamrestore.faces.detect import DETECT_SIZE_LEAST, DETECT_SIZE_MOST

        if not (DETECT_SIZE_LEAST <= self.detect_size <= DETECT_SIZE_MOST and self.detect_size % 32 == 0):
            raise ValueError(f"detect_size must be a multiple of 32 from {DETECT_SIZE_LEAST} to {DETECT_SIZE_MOST}, "
                             f"got {self.detect_size!r}")
        if self.frame_path not in ("auto", "host", "device"):
            raise ValueError(f"frame_path must be 'auto', 'host' or 'device', got {self.frame_path!r}")
        if self.crop_resolution not in (None, "auto") and not (
                isinstance(self.crop_resolution, int) and not isinstance(self.crop_resolution, bool)
                and self.crop_resolution >= 32):
            raise ValueError(f"crop_resolution must be None, 'auto' or an integer >= 32, got {self.crop_resolution!r}")


def _shown_centre(kps: np.ndarray, height: int, width: int, rotation: float) -> tuple[float, float]:
    """The centre of a face's landmarks ``kps`` (stored coordinates of a ``height`` x ``width``
    picture) as fractions across and down the picture as shown with a display rotation of
    ``rotation`` degrees counter-clockwise (``np.rot90``'s turns, :func:`quarter_turns`)."""
    x, y = kps.mean(axis=0)
    across, down = (float(x) + 0.5) / width, (float(y) + 0.5) / height
    turns = quarter_turns(rotation)
    if turns == 1:  # np.rot90(a, 1)[i, j] == a[j, W-1-i]
        return down, 1.0 - across
    if turns == 2:
        return 1.0 - across, 1.0 - down
    if turns == 3:
        return 1.0 - down, across
    return across, down


class FaceRestorer:
    """Restores the faces in a stream of frames.

    One object follows one stream (its tracker, fusions and statistics carry from frame to
    frame): give frames from one thread, in order; for another stream at the same time use
    :meth:`fresh` (which shares the loaded models; :func:`~streamrestore.api.restore_video` does
    so itself for an object another run is using). It serves the process that built it: the
    models' native thread pools do not survive a ``fork`` (a ``multiprocessing`` pool's default
    on Linux), so a worker process builds its own (the ``spawn`` start method with an initializer). A frame without a face to restore comes back
    as the object it was given (a numpy frame too: copy it before drawing on it), a frame with
    one as a new object: 4:2:0 video frames in their own format, other video frames as ``rgb24``.

    Args:
        restorer: any object implementing :class:`streamrestore.types.Restorer`.
        detector: a face detector (``streamrestore.faces.detect``).
        reference_sets: the people to restore towards (``streamrestore.faces.identity.ReferenceSet``);
            their references are encoded once here and reused for every frame.
        embedder: face embedder used to match tracks to reference sets; required when more than
            one reference set is given or ``unmatched="skip"`` (with one set and ``"restore"``,
            every face is that person and no embedding is computed). One with ``embed_aligned``
            (insightface) also serves the identity gate (``config.identity_gate``); without one
            that gate is off.
        config: see :class:`PipelineConfig`.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy frames (``av.VideoFrame`` needs none).
        tracker_config: the face tracker's settings (default None: the defaults of
            :class:`~streamrestore.faces.track.TrackerConfig`, with the lookahead of ``config``).
        fps: the stream's frame rate (the tracker's smoothing is tuned in seconds).
        torch_threads: CPU threads torch uses for this object's work (None: half the cores, the
            CLI's default; see :mod:`streamrestore.threads`). Set only while it works (encoding
            references, restoring a frame); the caller's ``torch.get_num_threads()`` is put back
            after each call.
        reference_caches: references already encoded by this restorer, by set name (these sets
            are not encoded again; see :meth:`fresh`).
        prepared_references: the reference detail stage's prepared references, by set name and
            crop side, made with the same ``config.reference_detail`` (not prepared again; see
            :meth:`fresh`).
        pixel_aspect: a stored pixel's width over its height as shown (a video's sample aspect
            ratio, e.g. 32:27 for a 16:9 DVD): faces are cut out and pasted back as shown, not
            squeezed (default 1: square pixels; :func:`~streamrestore.api.restore_video` sets it
            from the file).

    Raises:
        ValueError: a bad ``channel_order`` or ``pixel_aspect``, or several reference sets (or
            ``unmatched="skip"``) without an ``embedder``.
    """

    def __init__(
        self,
        restorer: Restorer,
        detector: Detector,
        reference_sets: Sequence[ReferenceSet] = (),
        *,
        embedder: FaceEmbedder | None = None,
        config: PipelineConfig = PipelineConfig(),
        channel_order: str = "rgb",
        tracker_config: TrackerConfig | None = None,
        fps: float = 30.0,
        torch_threads: int | None = None,
        reference_caches: dict[str, Any] | None = None,
        prepared_references: dict[tuple[str, int], PreparedReferences] | None = None,
        pixel_aspect: float = 1.0,
    ) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        _check_config(config)
        if not (math.isfinite(pixel_aspect) and pixel_aspect > 0):
            raise ValueError(f"pixel_aspect must be a positive number, got {pixel_aspect!r}")
        #: the stream's stored pixel width over height as shown (see :meth:`fresh`)
        self.pixel_aspect = float(pixel_aspect)
        self.restorer = restorer
        self.detector = detector
        self.embedder = embedder
        self.config = config
        self.channel_order = channel_order
        #: the crop sides faces may be cut at, smallest first (one unless ``crop_resolution="auto"``)
        self.crop_sides = crop_sides(int(restorer.resolution), config.crop_resolution)
        #: the largest crop side
        self.resolution = self.crop_sides[-1]
        # as given: each stage takes them at its side (``_at_side``), from the nearest side they have
        self.reference_sets = list(reference_sets)
        self._track_sides: dict[Hashable, int] = {}
        self._selected: set[Hashable] = set()  # the tracks max_faces chose on the last frame
        # per track: (identity, whether an adapted restorer's adaptation serves it, decided for good); _cache_for
        self._adaptation: dict[Hashable, tuple[str, bool, bool]] = {}
        self.torch_threads = resolve_torch_threads(torch_threads)
        self.stats = RunStats()

        needs_matching = len(self.reference_sets) > 1 or (self.reference_sets and config.unmatched == "skip")
        if needs_matching and embedder is None:
            raise ValueError("an embedder is needed to tell reference sets apart (several sets or unmatched='skip')")
        # one set and unmatched="restore": every face is restored toward it; the matcher still scores
        # each track (a few embeddings per track) so that a face of someone else is reported, not hidden
        self._single_identity = self.reference_sets[0].name if len(self.reference_sets) == 1 and not needs_matching else None
        scoring = needs_matching or (self._single_identity is not None and embedder is not None
                                     and self.reference_sets[0].embedder in (None, getattr(embedder, "name", None)))
        self._matcher = IdentityMatcher(self.reference_sets, threshold=config.match_threshold) if scoring else None
        self._said_unlike = False  # a face restored toward someone else's photos was said mid-run
        self._renamed: dict[Hashable, int] = {}  # tracker's id -> the id its faces go on now (_people_of)
        #: say it mid-run (False: a batch chunk's worker, whose track and frame numbers are its chunk's;
        #: the joined input's warnings say it)
        self.say_unlike_early = True
        self.stats.references = bool(self.reference_sets)
        self.stats.reference_names = [ref.name for ref in self.reference_sets]
        self.stats.references_skipped = {ref.name: list(ref.skipped) for ref in self.reference_sets if ref.skipped}
        self.stats.matching = bool(needs_matching)
        self.stats.match_threshold = self._matcher.threshold if self._matcher is not None else None
        self.stats.unlike_threshold = self._matcher.unlike_below if self._matcher is not None else None

        # Per-identity work happens once, here, never per frame.
        self.caches: dict[str, Any] = dict(reference_caches or {})
        with _torch_threads(self.torch_threads):
            for ref in self.reference_sets:
                if ref.name in self.caches:  # encoded already (see fresh())
                    continue
                t0 = time.perf_counter()
                # one encoding serves every side: the model sees every crop at its own side
                model_side = int(restorer.resolution)
                crops = _at_side(ref, model_side).crops
                chosen = typical_references(ref.embeddings, ENCODED_AT_MOST)
                if len(chosen) < len(crops):
                    log.warning("reference set %s: the %d photos of its %d most alike to the rest are used (each "
                                "one adds to every frame's attention time)", ref.name, len(chosen), len(crops))
                self.caches[ref.name] = restorer.encode_references(_to_tensor(crops[chosen]))
                self.stats.add_time("references", time.perf_counter() - t0)

        tcfg = tracker_config if tracker_config is not None else TrackerConfig()
        self._tracker = FaceTracker(tcfg, fps=fps, lookahead=config.lookahead)
        self._fps = fps
        self._pastes = {side: PasteBack(side, config.paste) for side in self.crop_sides}
        self._device_paths = {side: _device_frame_path(restorer, side, config) for side in self.crop_sides}
        self._device_path = self._device_paths[self.resolution]
        self._propagator = FacePropagator() if config.detect_every > 1 else None
        self._since_detection = 0
        self._detected_shape: tuple[int, ...] | None = None  # of the last frame faces were found in
        self._looked_at: np.ndarray | None = None  # CUT_THUMBNAIL of the last frame the detector looked at
        self._tracked_shape: tuple[int, ...] | None = None  # of the last frame tracked
        self._smoother = TemporalSmoother(config.temporal)
        self._frame_fusion = FrameFusion(config.temporal)
        self._gate = QualityGate(config.gate)
        self.stats.strength = config.gate.strength
        self._identity_gate = IdentityGate(config.identity_gate, getattr(embedder, "embed_aligned", None))
        for ref in self.reference_sets:  # at the model's side, where the gate was measured
            self._identity_gate.set_references(ref.name, _at_side(ref, int(restorer.resolution)).crops)
        # each identity's references, prepared once for the reference detail stage
        self._reference_detail = ReferenceDetail(config.reference_detail)
        # by (set name, crop side); prepared here for every side, off the frame path
        self._prepared: dict[tuple[str, int], PreparedReferences] = dict(prepared_references or {})
        if config.reference_detail.enabled:
            for ref in self.reference_sets:
                for side in self.crop_sides:
                    if (ref.name, side) not in self._prepared:
                        self._prepared[ref.name, side] = self._reference_detail.prepare(_at_side(ref, side).crops)
        # one worker registers the references onto the faces while the restorer runs (host path):
        # both release the GIL, and on 2 cores the detail's ~6 ms per face then costs no frame time
        self._detail_worker: ThreadPoolExecutor | None = None
        # the identity gate's checks of the last frame, running on that worker (beside the next
        # frame's restore, or part of it); their result is waited for before that frame's faces are weighted
        self._identity_checks: Future | None = None
        self._pending: dict[int, tuple[Any, np.ndarray]] = {}
        self._next_index = 0
        # stream()'s finishing thread and the step last sent to it (see stream())
        self._finish_worker: ThreadPoolExecutor | None = None
        self._finishing: Future | None = None
        #: the faces of the frame returned last that went to the restorer (:class:`AlignedFace`: each as cut
        #: from the input and as pasted back, its frame → crop matrix, track id, identity and the share of the
        #: change the quality gate kept): for previews, overlays, tests and looking at the stages
        self.last_faces: list[AlignedFace] = []
        # a whole run (restore_video, restore_photo) holds it while it lasts (_claim): a second run at the
        # same time, from another thread, gets a fresh() copy instead of sharing this one's tracker
        self._run_claim = threading.Lock()
        # the process whose models these are: ONNX Runtime's and torch's thread pools do not survive a fork,
        # where the first detection then hung for ever (_check_process)
        self._built_in = os.getpid()

    def _claim(self) -> bool:
        """Takes this object for a whole run; False when another run holds it (see :meth:`_release`)."""
        return self._run_claim.acquire(blocking=False)

    def _release(self) -> None:
        """Ends :meth:`_claim`'s hold."""
        self._run_claim.release()

    def _check_process(self) -> None:
        """RuntimeError where this object is used in a process forked from the one that built it."""
        if os.getpid() != self._built_in:
            raise RuntimeError(
                f"this FaceRestorer was built in process {self._built_in} and is used in process {os.getpid()}, "
                "forked from it (multiprocessing's default on Linux): the models' native thread pools (ONNX Runtime, "
                "torch) do not survive a fork and the work would hang; build the FaceRestorer in each worker process "
                "(e.g. ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn'), initializer=...))")

    @classmethod
    def from_options(cls, refs: str | Path | Iterable[str | Path | ReferenceSet] | None = (),
                     **options: Any) -> "FaceRestorer":
        """Builds one from the same options as the CLI: loads the model, the face models and
        the reference photos.

        Args:
            refs: the reference photos, as for :func:`build_face_restorer`.
            **options: the other options of :func:`build_face_restorer`.
                ``config=PipelineConfig(lookahead=0)`` gives an object whose :meth:`process`
                returns each frame at once (live sources).
        """
        return build_face_restorer(refs, **options)

    @property
    def fps(self) -> float:
        """The frame rate the tracker's smoothing is tuned for (see :meth:`fresh`)."""
        return self._fps

    def fresh(self, fps: float | None = None, pixel_aspect: float | None = None) -> "FaceRestorer":
        """A new object for another stream (tracker, temporal state and stats start empty) that
        shares this one's restorer, face models, reference sets, encoded references and the
        reference detail's prepared references: what a worker restoring many files or chunks
        keeps loaded.

        Args:
            fps: the new stream's rate (default None: this one's).
            pixel_aspect: the new stream's pixel aspect (a video's sample aspect ratio; default
                None: this one's): its faces are cut out as shown
                (:func:`~streamrestore.faces.align.alignment_matrix`).
        """
        self._check_process()  # (a copy shares the models)
        copy = FaceRestorer(
            self.restorer, self.detector, self.reference_sets, embedder=self.embedder, config=self.config,
            channel_order=self.channel_order, tracker_config=self._tracker.config,
            fps=self._fps if fps is None else fps, torch_threads=self.torch_threads, reference_caches=self.caches,
            prepared_references=self._prepared,
            pixel_aspect=self.pixel_aspect if pixel_aspect is None else pixel_aspect,
        )
        copy._built_in = self._built_in
        return copy

    # --- public entry points -------------------------------------------------------------

    def process(self, frame: Any) -> Any:
        """Restores one frame and returns it at once (no lookahead; for live use).

        Args:
            frame: an RGB/BGR uint8 numpy array (per ``channel_order``), taken as shown, or an
                ``av.VideoFrame`` (or what :meth:`prepare` returned for one), whose display
                rotation is followed: faces are searched with the picture turned upright
                (a phone's portrait video is stored sideways).

        Returns:
            The restored frame, of the same type (a VideoFrame keeps its pts and time base;
            its picture stays as stored).

        Raises:
            ValueError: this object was built with lookahead (use :meth:`stream`).
            RuntimeError: used in a process forked from the one that built it (see the class).
        """
        if self.config.lookahead != 0:
            raise ValueError("process() returns each frame at once and needs lookahead=0; use stream() for files")
        self._check_process()
        out = [self._finish_here(finishing) for finishing in self._push(frame)]
        if len(out) != 1:  # pragma: no cover - lookahead 0 always returns the frame pushed
            raise RuntimeError(f"tracker returned {len(out)} frames for one input")
        return out[0]

    def stream(self, frames: Iterable[Any]) -> Iterator[Any]:
        """Generator form: yields every input frame, restored, in order (with lookahead).

        Each frame is restored in two steps: the faces restored, on the caller's thread, then
        the frame finished (:meth:`_emit_frame`: on the host path the faces gated, fused and
        pasted, on the device path the frame-space fusion) on a thread of this object's, while
        the next frame's faces are restored: on 2 cores the pasting and both temporal fusions
        then cost little frame time (they took ~17 ms of a 720p frame's ~78 on the restorer's
        thread). The frames and everything in them are the same as :meth:`process` gives, but
        each comes out once the next one's faces are restored (one frame later, even with
        ``lookahead=0``: a live source wants :meth:`process`). Should the stream fail, the
        frames finished before the failure still come out first.

        Args:
            frames: frames as :meth:`process` takes them. Each is read until it comes back
                restored (with lookahead, several frames later), so an iterator must not refill
                one frame's buffer with the next.

        Raises:
            ValueError: ``frames`` is one frame (an (H, W, 3) array or a video frame), not frames.
            RuntimeError: used in a process forked from the one that built it (see the class).
        """
        if (isinstance(frames, np.ndarray) and frames.ndim == 3) or hasattr(frames, "planes"):
            raise ValueError("stream takes frames (e.g. [frame], or a reader's frames); one frame is restored by "
                             "process(frame)")
        self._check_process()
        self._wait_finishing()  # a stream given up half-way may have left its last frame: not this one's
        pending: Future | None = None
        ended = False
        try:
            for finishing in self._restored(frames):
                done = self._wait_finishing()  # the frame before finishes first
                pending = self._finishing = self._finisher().submit(finishing)
                if done is not None:
                    yield self._finished(done)
            ended = True
            done = self._wait_finishing()
            if done is not None:
                yield self._finished(done)
        except Exception:
            if self._finishing is pending:  # the failure was not its: the frame before comes out first
                done = self._wait_finishing()
                if done is not None:
                    yield self._finished(done)
            raise
        finally:
            if not ended:  # given up or failed: the frames held back for lookahead are not the next stream's
                self._tracker.flush()
                self._pending.clear()

    def _restored(self, frames: Iterable[Any]) -> Iterator[Callable[[], "_Finished"]]:
        """The finishing step of every frame of ``frames``, in order (the stream's end included)."""
        for frame in frames:
            yield from self._push(frame)
        for index, tracked in self._tracker.flush():
            yield self._emit(index, tracked)

    def finish(self) -> Iterator[Any]:
        """Yields the frames the tracker still holds back (none with ``lookahead=0``, the only
        setting :meth:`process` takes; :meth:`stream` flushes its own)."""
        for index, tracked in self._tracker.flush():
            yield self._finish_here(self._emit(index, tracked))

    def _finisher(self) -> ThreadPoolExecutor:
        """The one thread that finishes :meth:`stream`'s frames (see there)."""
        if self._finish_worker is None:
            self._finish_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrestore-finish")
            weakref.finalize(self, self._finish_worker.shutdown, wait=False)
        return self._finish_worker

    def _wait_finishing(self) -> "_Finished | None":
        """Waits for the last frame sent to the finishing thread (the per-track states the
        finishing step keeps are touched by one frame at a time, in order) and returns it
        finished (None: none was sent); its error is raised here. The wait counts as busy time."""
        pending, self._finishing = self._finishing, None
        if pending is None:
            return None
        t0 = time.perf_counter()
        try:
            return pending.result()
        finally:
            self.stats.busy_seconds += time.perf_counter() - t0

    def _finish_here(self, finishing: Callable[[], "_Finished"]) -> Any:
        """Runs a finishing step on this thread; the frame restored."""
        self._wait_finishing()
        t0 = time.perf_counter()
        try:
            return self._finished(finishing())
        finally:
            self.stats.busy_seconds += time.perf_counter() - t0

    def _finished(self, done: "_Finished") -> Any:
        """A finished frame handed out: its stage times counted here, on the caller's thread
        (two threads adding to one stage's time could lose one)."""
        for stage, seconds in done.seconds.items():
            self.stats.add_time(stage, seconds)
        for face in done.faces:
            if face.identity_kept is not None:
                self.stats.add_identity_gate_weight(face.track_id, face.identity_kept)
        self.last_faces = done.faces
        return done.frame

    @property
    def identity_gate_active(self) -> bool:
        """Whether the identity gate judges faces (enabled, an embedder that can, reference photos)."""
        return self._identity_gate.active

    # --- frame loop ----------------------------------------------------------------------

    @property
    def frames_in(self) -> int:
        """Frames given to this object's tracker so far (with lookahead, some are not out yet)."""
        return self._next_index

    def prepare(self, frame: Any, track: bool = False) -> "DecodedFrame":
        """Pixel access and face detection of one frame (and, with ``track``, its tracking),
        ahead of :meth:`stream`.

        Call it from one thread, on the frames in order (detection between key frames follows
        the faces of the frame before), e.g. on the reader thread: the detector then works on
        frame i+1 while frame i is restored. ``stream``/``process`` accept what it returns.

        Args:
            frame: a frame as :meth:`process` takes it (one already prepared comes back as it is).
            track: also give the frame to this object's tracker, so tracking overlaps the
                restoring too (``run.restore_frames`` does). Such a frame counts as given to this
                object: it must then go to this object's ``stream``/``process``, in order.

        Raises:
            ValueError: ``frame`` was tracked by another :class:`FaceRestorer`.
        """
        if isinstance(frame, DecodedFrame):
            if frame.ready is not None:
                if frame.tracked_by is not self:
                    raise ValueError("this frame was prepared with track=True by another FaceRestorer: "
                                     "give it to that one")
                return frame
            if frame.faces is not None and not track:
                return frame
        source = frame.frame if isinstance(frame, DecodedFrame) else frame
        pixels = frame.pixels if isinstance(frame, DecodedFrame) else _pixels(frame, self.channel_order)
        faces = frame.faces if isinstance(frame, DecodedFrame) else None
        t0 = time.perf_counter()
        if faces is None:
            # a decoded frame says how it is shown (phones store portrait video sideways)
            faces = self._find_faces(sdr_view(pixels), getattr(source, "rotation", 0))
            self.stats.add_time("detect", time.perf_counter() - t0)
        if not track:
            return DecodedFrame(source, pixels, faces)
        t1 = time.perf_counter()
        index = self._next_index
        self._next_index += 1
        self._pending[index] = (source, pixels)
        # frames of another size (a new source on the same object) start a new shot: no track is
        # carried to landmarks of another picture
        resized = self._tracked_shape is not None and pixels.shape[:2] != self._tracked_shape
        self._tracked_shape = pixels.shape[:2]
        ready = tuple(self._tracker.push(index, faces, _thumbnail(pixels), cut=resized))
        self.stats.add_time("track", time.perf_counter() - t1)
        return DecodedFrame(source, pixels, faces, ready, tracked_by=self)

    def _push(self, frame) -> Iterator[Callable[[], "_Finished"]]:
        """Tracks ``frame`` and restores the faces of the frames that became final: their finishing steps."""
        t0 = time.perf_counter()
        prepared = self.prepare(frame, track=True)
        self.stats.busy_seconds += time.perf_counter() - t0
        for done_index, tracked in prepared.ready:  # type: ignore[union-attr]  # prepare() tracked it
            yield self._emit(done_index, tracked)

    def _find_faces(self, pixels, rotation: float) -> list[Face]:
        prop = self._propagator
        if pixels.shape[:2] != self._detected_shape:  # faces are not carried into a picture of another size
            self._detected_shape = pixels.shape[:2]
            self._since_detection = 0
        if prop is not None and self._since_detection % self.config.detect_every != 0:
            if prop.held:
                expected = prop.held
                faces = prop.propagate(pixels)
                if len(faces) == expected:
                    self._since_detection += 1
                    return faces
            elif not self._cut(pixels):  # (no face, and the same picture: none yet)
                self._since_detection += 1
                return []
        faces = [f for f in self._detect(pixels, rotation) if f.size >= self.config.min_face]
        if prop is not None:
            prop.observe(pixels, faces)
            if not faces:  # (only then is no face held, and :meth:`_cut` asked)
                self._looked_at = pixels.gray(*CUT_THUMBNAIL).astype(np.float32)
        self._since_detection = 1
        return faces

    def _cut(self, pixels) -> bool:
        """Whether the picture changed since the detector last looked (:data:`CUT_LEVELS`): with no
        face held, the faces after a slide, a title or another shot are then found on their first
        frame, not up to two frames late; faceless footage keeps the ``detect_every`` cadence."""
        if self._looked_at is None:
            return True
        thumbnail = pixels.gray(*CUT_THUMBNAIL).astype(np.float32)
        return float(np.abs(thumbnail - self._looked_at).mean()) >= CUT_LEVELS

    def _detect(self, pixels, rotation: float) -> list[Face]:
        """Detections in frame coordinates, found with the frame shown upright (``rotation``:
        its display rotation, :func:`~streamrestore.faces.detect.detect_upright`). A detector
        that says what size it works at (``input_size``, as SCRFD does) gets the frame already
        shrunk to it: for video frames that is one scaled conversion instead of a full-size one.
        A frame where nothing is found is looked at again with a black border: a face that fills
        the frame (a 256 px talking head, a close-up) is larger than the detector's anchors, and
        on soft or degraded video it is then missed on most frames."""
        input_size = getattr(self.detector, "input_size", None)
        h, w = pixels.shape[:2]
        scale = seen = 1.0
        if input_size is not None:
            size_w, size_h = input_size(h, w)  # the same scale for the picture turned
            seen = min(size_w / w, size_h / h)  # (the detector enlarges a smaller frame itself)
            scale = min(seen, 1.0)
        small_w, small_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = pixels.full() if (small_w, small_h) == (w, h) else pixels.resized(small_w, small_h)
        found = detect_upright(self.detector, image, rotation)
        if input_size is not None:  # (faces too small for it there are missed in some frames: the run says so)
            self.stats.add_detections([f.size * seen / scale for f in found], (w, h),
                                      (max(1, round(w * seen)), max(1, round(h * seen))), self.config.min_face * seen)
        if image.shape[:2] == (h, w):
            return found
        to_frame = np.array([w / small_w, h / small_h], np.float32)
        return [Face(box=f.box * np.tile(to_frame, 2), kps=f.kps * to_frame, score=f.score) for f in found]

    def _emit(self, index: int, tracked: list[TrackedFace]) -> Callable[[], "_Finished"]:
        """The faces of frame ``index`` restored, with torch on this object's threads (the caller's
        after); the step that finishes the frame (:meth:`_emit_frame`)."""
        t0 = time.perf_counter()
        try:
            with _torch_threads(self.torch_threads):
                return self._emit_frame(index, tracked)
        finally:
            self.stats.busy_seconds += time.perf_counter() - t0

    def _emit_frame(self, index: int, tracked: list[TrackedFace]) -> Callable[[], "_Finished"]:
        """Frame ``index``'s faces matched, aligned and restored; returns the step that finishes
        the frame: the faces gated, fused in crop space and pasted (the host path; the device
        path does that here), then fused in frame space. That step keeps per-track states
        (gates, fusions) and runs one frame at a time, in order, on any one thread: after this
        method for its frame, and possibly while the next frame's faces are restored."""
        frame, pixels = self._pending.pop(index)
        stats = self.stats
        stats.frames += 1
        tracked = self._people_of(tracked, pixels, index)
        selected = self._select(tracked)
        height, width = pixels.shape[:2]
        rotation = getattr(frame, "rotation", 0)
        shown_at = getattr(frame, "time", None)  # (a decoded frame's, on the input's clock; a numpy frame has none)
        if len(selected) < len(tracked):  # beyond max_faces: left alone
            kept = {id(t) for t in selected}
            for t in tracked:
                if id(t) not in kept:
                    stats.add_face(t.track_id, index, stats.identities.get(t.track_id), restored=False,
                                   beyond_max_faces=True, centre=_shown_centre(t.kps, height, width, rotation),
                                   time=shown_at)
        tracked = selected
        if not tracked:
            return lambda: _Finished(frame)  # untouched: not even a colour-space round trip
        stats.frames_with_faces += 1
        t0 = time.perf_counter()
        # what reads faces sees an HDR frame in SDR, as the restorer, the recognisers and the photos know faces
        view = sdr_view(pixels)
        matrices, sides, caches, ids, prepared, identities = [], [], [], [], [], []
        for t in tracked:
            identity = self._identity(t, view)
            unmatched = identity is None and self._matcher is not None
            stats.unmatched_faces += unmatched
            skip = unmatched and self.config.unmatched == "skip"
            stats.add_face(t.track_id, index, identity, restored=not skip,
                           centre=_shown_centre(t.kps, height, width, rotation), time=shown_at)
            if self._matcher is not None:
                track = stats.per_track[t.track_id]
                if not track.scores or not self._matcher.is_decided(t.track_id):  # frozen once decided
                    track.scores = self._matcher.scores_of(t.track_id)
                # (not of a track the quality gate has left as it was so far: this frame's face, counted as
                # changed until the gate weighs it, aside; nothing of the photos reached it)
                changed_before = track.faces_changed > 1 or track.left_by_gate == 0
                if (self.say_unlike_early and not self._said_unlike and not stats.photo and changed_before
                        and self._matcher.is_decided(t.track_id) and stats.unlike(t.track_id)):
                    self._said_unlike = True  # (once a run: a crowd would give a line a track)
                    log.warning("%s", stats.unlike_now(t.track_id))
            if skip:
                continue
            side = self._crop_side(t)
            matrices.append(alignment_matrix(t.kps, side, self.pixel_aspect))
            sides.append(side)
            caches.append(self._cache_for(t.track_id, identity, view, matrices[-1], side)
                          if identity is not None else None)
            ids.append(t.track_id)
            identities.append(identity)
            prepared.append(self._prepared.get((identity, side)) if identity is not None else None)
        if not matrices:
            align_seconds = time.perf_counter() - t0
            return lambda: _Finished(frame, seconds={"align": align_seconds})
        # a 10/12-bit frame: restored in its 8-bit copy (4:2:0) or RGB conversion (other layouts), what
        # changed added back at the end
        deep = pixels if isinstance(pixels, (Yuv420Pixels, RgbPixels)) and pixels.deep is not None else None
        if isinstance(deep, Yuv420Pixels):
            frame = deep.frame
        live = {t.track_id for t in tracked}
        self._track_sides = {tid: side for tid, side in self._track_sides.items() if tid in live}
        # (the quality gate's weights are taken as the faces are restored, in frame order: so are its ended tracks dropped)
        self._gate.forget(live)
        self._adaptation = {tid: decided for tid, decided in self._adaptation.items() if tid in live}
        self.stats.faces_restored += len(matrices)
        self.stats.frames_restored += 1
        seconds: dict[str, float] = {}
        if self._device_path is not None and view is pixels:  # (HDR frames: restored on the host)
            self._forget_ended_in_crops(live)
            crops, weights, identity_kept, result = self._restore_on_device(
                frame, pixels, matrices, sides, caches, ids, identities, prepared, t0)
            paste = lambda: result  # noqa: E731
        else:
            crops, weights, paste_on_host = self._restore_on_host(pixels, view, matrices, sides, caches, ids, prepared,
                                                                  t0)
            identity_kept = [None] * len(ids)  # (the paste sets each face's)

            def paste() -> Any:
                self._forget_ended_in_crops(live)
                return paste_on_host(frame, identities, seconds, faces)

        boxes = ([(tid, crop_box(pixels.shape[:2], m, side)) for tid, m, side in zip(ids, matrices, sides)]
                 if self._frame_fusion.active else [])
        faces = [AlignedFace(pixels=c, matrix=m, track_id=tid, identity=self.stats.identities[tid], change_kept=w,
                             identity_kept=k)
                 for c, m, tid, w, k in zip(crops, matrices, ids, weights, identity_kept)]

        def finish() -> _Finished:
            result = paste()
            self._frame_fusion.forget(live)
            if self._frame_fusion.active:
                t1 = time.perf_counter()
                self._frame_fusion.fuse(index, pixels, frame_planes(result), boxes)
                seconds["temporal"] = seconds.get("temporal", 0.0) + time.perf_counter() - t1
            if deep is not None:
                t1 = time.perf_counter()
                result = deep.deepen(result)
                seconds["paste"] = seconds.get("paste", 0.0) + time.perf_counter() - t1
            if isinstance(frame, np.ndarray) and self.channel_order == "bgr":
                result = np.ascontiguousarray(result[..., ::-1])
            return _Finished(result, faces, seconds)

        return finish

    def _gate_weights(self, ids: list, pixels: Any, matrices: list, sides: list) -> list[float]:
        """The quality gate's weights for a frame's faces (in frame order, before their restore: the
        host and device paths alike), counted into the run's statistics as they are taken (faces
        left clean or too dark or flat to judge; each track's mean weight), on the thread that takes them."""
        weights = [self._gate.weight(tid, pixels, m, side) for tid, m, side in zip(ids, matrices, sides)]
        for tid, weight in zip(ids, weights):
            self.stats.faces_left_clean += weight <= 0.0
            self.stats.faces_left_dim += weight <= 0.0 and self._gate.dim(tid)
            self.stats.faces_left_tinted += weight <= 0.0 and self._gate.dim(tid) and self._gate.tinted(tid)
            self.stats.faces_left_grainy += weight <= 0.0 and self._gate.grainy(tid) and not self._gate.dim(tid)
            if self._gate.config.enabled:  # (off: every face gets the whole change, nothing to say)
                self.stats.add_gate_weight(tid, weight)
        strength = self._gate.config.strength  # (after the counts: a face given half the change is not "clean")
        self.stats.add_changes(ids, [weight * strength > 0.0 for weight in weights])
        return weights if strength == 1.0 else [weight * strength for weight in weights]

    def _forget_ended_in_crops(self, live: set[int]) -> None:
        """Drops the crop stages' per-track states of the tracks not in ``live`` (ended tracks);
        where these stages run with the restore (the device path), before the frame's finishing step."""
        self._smoother.forget(live)
        self._identity_gate.forget(live)

    def _cache_for(self, track_id: Hashable, identity: str, pixels: Any, matrix: np.ndarray, side: int) -> Any:
        """``identity``'s encoded references for the face of track ``track_id`` (cut by ``matrix`` at
        ``side``). With an adapted restorer (``--adapt``), a track whose photos do not match its face
        (the reference detail stage's match below ``POOR_REFERENCE_MATCH``) is restored without the
        adaptation: a detail head adapted to frames in another light cost the furious clip 1.5 dB
        against the unadapted model, where the photos match 0.06 (docs/video_eval.md, "Session 31").
        Decided twice per track and identity, so that a face never flips between the two: on its
        first face (matched here, before its restore; the stage's own measurement runs beside it),
        and again on the track's average once it has ``POOR_MATCH_MIN_FACES`` faces. With the stage
        off nothing is measured: the adaptation serves every face. An identity the restorer did not
        adapt (too few photos: ``unadapted`` gives its cache back) is served as it is, and its tracks
        are not reported as adapted."""
        cache = self.caches.get(identity)
        unadapted = getattr(self.restorer, "unadapted", None)
        if cache is None or unadapted is None or unadapted(cache) is cache:
            return cache
        track = self.stats.per_track[track_id]
        if not self._reference_detail.config.enabled:
            track.adapted = True
            return cache
        decided = self._adaptation.get(track_id)
        if decided is None or decided[0] != identity:
            prepared = self._prepared.get((identity, side))
            match = self._reference_detail.detail(crop_face(pixels, matrix, side), prepared)[1] if prepared else 1.0
            decided = self._adaptation[track_id] = (identity, not poor_reference_match(match), False)
        elif not decided[2] and track.match_faces >= POOR_MATCH_MIN_FACES and track.reference_match is not None:
            decided = self._adaptation[track_id] = (identity, not poor_reference_match(track.reference_match), True)
        track.adapted = decided[1]
        return cache if decided[1] else unadapted(cache)

    def _restore_on_host(self, pixels, view, matrices, sides, caches, ids, prepared, t0):
        """Crops cut and restored on the CPU: ``(crops, weights, paste)`` (the crops as cut from the frame, the quality
        gate's weights); ``paste(frame, identities, seconds, faces)`` gates, fuses and pastes the faces (OpenCV; 4:2:0
        frames stay in YUV), adds its stages' times to ``seconds``, gives each of ``faces`` (the frame's
        :class:`AlignedFace`, in the same order) the face it pasted, and returns the frame restored. ``view``: what the stages
        see of ``pixels`` (an HDR frame's :class:`~streamrestore.hdr.SdrView`: the crops are
        restored in SDR, and their change is coded back before the paste)."""
        transfer = view.transfer if isinstance(view, SdrView) else None
        if transfer is None:
            crops = coded = [crop_face(pixels, m, side) for m, side in zip(matrices, sides)]
        else:  # one warp per face, at the frame's own depth: the SDR crop and the coded base from it
            exact = [crop_face(view.coded, m, side) for m, side in zip(matrices, sides)]
            crops, coded = [transfer.to_sdr(crop) for crop in exact], [coded_levels(crop) for crop in exact]
        weights = self._gate_weights(ids, view, matrices, sides)
        t1 = time.perf_counter()
        self.stats.add_time("align", t1 - t0)

        def restore_busy() -> list[Any]:  # (a face the gate leaves alone keeps its crop)
            outputs = self._restore_gated(crops, caches, ids, weights)
            return [crop if out is None else _to_uint8(out)[0] for crop, out in zip(crops, outputs)]

        with torch.inference_mode():
            restored, added, detail_seconds = self._restore_beside_detail(restore_busy, crops, prepared, ids)
        self.stats.add_time("restore", time.perf_counter() - t1)
        if added is not None:
            self.stats.add_time("reference_detail", detail_seconds)  # the worker's own time (it overlapped the restore)
        details = added if added is not None else [None] * len(crops)

        def paste(frame: Any, identities: list[str | None], seconds: dict[str, float], faces: list[AlignedFace]) -> Any:
            t2 = time.perf_counter()
            canvas, result = _canvas(pixels, frame)
            shape = pixels.shape[:2]
            smoothing = 0.0
            checking = self._finish_identity_checks()
            checks = []
            for crop, face_out, detail, m, side, tid, identity, coded_crop, weight, face in zip(
                    crops, restored, details, matrices, sides, ids, identities, coded, weights, faces):
                face_out = self._gate.blend(crop, face_out, weight)
                if self._identity_gate.due(tid, identity):  # the model's own change (the module docstring)
                    checks.append((tid, identity, crop.copy(), face_out.copy()))
                    if not self._identity_gate.checked(tid):  # a new track's first check weights its first face
                        ts = time.perf_counter()
                        self._identity_gate.update(*checks.pop())
                        checking += time.perf_counter() - ts
                kept = self._identity_gate.weight(tid)
                face_out = self._gate.blend(crop, face_out, kept)
                if self._identity_gate.judges(identity):
                    face.identity_kept = kept
                face_out = self._reference_detail.add(face_out, detail, weight)
                ts = time.perf_counter()
                face_out = self._smoother.smooth(tid, crop, face_out, denoise_weight=weight)
                smoothing += time.perf_counter() - ts
                # (black-and-white film, a toned print: the restorer would tint it)
                face_out = keep_monochrome_tone(crop, face_out)
                if transfer is not None:
                    crop, face_out = coded_crop, transfer.coded_change(coded_crop, crop, face_out)
                # (as the frame codes it, as `pixels` is; a face left as it was is its crop itself: a copy)
                face.restored = face_out.copy() if face_out is face.pixels else face_out
                plan = self._pastes[side].plan(shape, face_out, crop, m)
                if plan is not None:
                    canvas.paste(plan)
            seconds["temporal"] = seconds.get("temporal", 0.0) + smoothing
            self._start_identity_checks(checks)
            if self._identity_gate.active:
                seconds["identity_gate"] = seconds.get("identity_gate", 0.0) + checking
            seconds["paste"] = seconds.get("paste", 0.0) + time.perf_counter() - t2 - smoothing - checking
            return result

        return coded, weights, paste

    def _restore_beside_detail(self, restore: Callable[[], list[Any]], crops: Sequence[np.ndarray],
                               prepared: list[PreparedReferences | None], ids: Sequence[Hashable]
                               ) -> tuple[list[Any], list[np.ndarray | None] | None, float]:
        """``restore()`` run while the worker thread computes the reference detail of ``crops``
        (uint8 input faces, of the tracks ``ids``): ``(restored, details, worker seconds)``;
        ``details`` is None when the stage has nothing to do, else one per face (None where it has
        no references). How well each face's references matched goes to its track's stats."""
        if not self._reference_detail.config.enabled or all(p is None for p in prepared):
            return restore(), None, 0.0
        details = self._start_detail(crops, prepared)
        try:
            restored = restore()
        except BaseException:  # the worker finishes first; the restore's error is the one raised
            wait([details])
            raise
        results, seconds = details.result()
        for tid, result in zip(ids, results):
            if result is not None:
                self.stats.add_reference_match(tid, result[1])
        return restored, [None if r is None else r[0] for r in results], seconds

    def _worker(self) -> ThreadPoolExecutor:
        """The one thread that works beside the restorer (reference detail, identity checks)."""
        if self._detail_worker is None:
            self._detail_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrestore-detail")
            # its thread ends with this object (batch chunks, eval and bench make many of them)
            weakref.finalize(self, self._detail_worker.shutdown, wait=False)
        return self._detail_worker

    def _start_identity_checks(self, checks: list[tuple[Hashable, str, np.ndarray, np.ndarray]]) -> None:
        """Embeds the faces the identity gate checks on the worker; the next frame waits for them."""
        if checks:
            gate = self._identity_gate

            def work() -> None:
                for check in checks:
                    gate.update(*check)

            self._identity_checks = self._worker().submit(work)

    def _finish_identity_checks(self) -> float:
        """Waits for the last frame's identity checks (their result weights this frame's faces:
        one frame late, the same on every run; a new track's first check is made at once, on
        its first face); returns the seconds waited."""
        if self._identity_checks is None:
            return 0.0
        t0 = time.perf_counter()
        pending, self._identity_checks = self._identity_checks, None
        pending.result()
        return time.perf_counter() - t0

    def _start_detail(self, crops: Sequence[np.ndarray], prepared: list[PreparedReferences | None]) -> Future:
        """The reference detail of each face (``(detail, match)`` as :meth:`ReferenceDetail.detail`
        gives it, or None where it has no references), computed by the worker thread; its result
        is ``(results, seconds)``."""
        stage = self._reference_detail

        def work() -> tuple[list[tuple[np.ndarray, float] | None], float]:
            t0 = time.perf_counter()
            out = [None if p is None else stage.detail(c, p) for c, p in zip(crops, prepared)]
            return out, time.perf_counter() - t0

        return self._worker().submit(work)

    def _restore_on_device(self, frame, pixels, matrices, sides, caches, ids, identities, prepared, t0):
        """The frame goes to the restorer's device once; crops are cut and faces pasted there
        (``streamrestore.device_frames``); all faces restored in one call, then gated, fused and
        pasted one group per crop side; one copy comes back."""
        groups = [[i for i, s in enumerate(sides) if s == side] for side in sorted(set(sides))]
        checks: list[tuple[Hashable, str, np.ndarray, np.ndarray]] = []
        with torch.inference_mode():
            on_device = self._device_path.upload(pixels, frame)
            # every group's crops are cut before any is pasted: overlapping faces of two sides
            # must both be restored from the frame as it came
            cut = [self._device_paths[sides[g[0]]].crops(on_device, np.stack([matrices[i] for i in g]))
                   for g in groups]
            t1 = time.perf_counter()
            self.stats.add_time("align", t1 - t0)
            # the small crops to the host (they wait only for the crop kernels): for last_faces and
            # the reference detail's flow, which then runs on the CPU while the device restores
            host_cut = [_to_uint8(c) for c in cut]
            on_device_crops: list[Any] = [None] * len(sides)
            host_crops: list[Any] = [None] * len(sides)
            for group, crops, host in zip(groups, cut, host_cut):
                for k, i in enumerate(group):
                    on_device_crops[i], host_crops[i] = crops[k], host[k]
            # as on the host: the gate's weights first, and a face it leaves alone keeps its crop
            gate = self._gate_weights(ids, pixels, matrices, sides)

            def restore_busy() -> list[Any]:
                outputs = self._restore_gated(on_device_crops, caches, ids, gate)
                return [crop[None] if out is None else out for crop, out in zip(on_device_crops, outputs)]

            outputs, added, seconds = self._restore_beside_detail(restore_busy, host_crops, prepared, ids)
            self.stats.add_time("restore", time.perf_counter() - t1)
            if added is not None:
                self.stats.add_time("reference_detail", seconds)
            identity_kept: list[float | None] = [None] * len(sides)
            for n, (group, crops, host) in enumerate(zip(groups, cut, host_cut)):
                pick = lambda values: [values[i] for i in group]  # noqa: E731
                kept = self._finish_group_on_device(
                    sides[group[0]], on_device, pixels, crops, host, torch.cat(pick(outputs)).float(),
                    None if added is None else pick(added), np.stack(pick(matrices)), pick(ids), pick(identities),
                    pick(gate), checks, first=n == 0)
                for i, k in zip(group, kept):
                    identity_kept[i] = k
            t0 = time.perf_counter()
            self._start_identity_checks(checks)  # beside the next frame's restore
            result = self._device_path.download(on_device)
        self.stats.add_time("paste", time.perf_counter() - t0)
        return host_crops, gate, identity_kept, result

    def _finish_group_on_device(self, side, on_device, pixels, crops, host_crops, restored, added, matrices, ids,
                                identities, gate, checks, first):
        """The restored faces of one crop side (``crops``, cut from the device frame; ``added``: their
        reference detail; ``gate``: their quality gate weights) gated, fused and pasted on it. Identity
        checks due for them are added to ``checks`` (started after the last group); the first group
        waits for the last frame's. Returns the share of each face's change the identity gate kept (None
        where it did not judge the face)."""
        path = self._device_paths[side]
        t2 = time.perf_counter()
        weights = torch.tensor(gate, device=restored.device, dtype=restored.dtype)
        restored = crops.to(restored.dtype) + weights[:, None, None, None] * (restored - crops.to(restored.dtype))
        checking = self._finish_identity_checks() if first else 0.0
        # the crops at their own side: shrunk to the model's first (an area average), the gate let more of
        # the change through on d14 (identity to the ground truth -0.002, spread over the input's)
        due = [(tid, identity, host_crops[i], _to_uint8(restored[i:i + 1])[0])
               for i, (tid, identity) in enumerate(zip(ids, identities)) if self._identity_gate.due(tid, identity)]
        ts = time.perf_counter()
        for check in due:
            if self._identity_gate.checked(check[0]):
                checks.append(check)  # to the host only when checked; on the worker
            else:
                self._identity_gate.update(*check)  # new tracks: now
        checking += time.perf_counter() - ts
        kept = [self._identity_gate.weight(tid) for tid in ids]
        if any(k < 1.0 for k in kept):
            held = torch.tensor(kept, device=restored.device, dtype=restored.dtype)
            restored = crops.to(restored.dtype) + held[:, None, None, None] * (restored - crops.to(restored.dtype))
        if added is not None:  # after the identity gate, weighted by the quality gate's (the host path's order)
            strength = self._reference_detail.config.strength
            zeros = np.zeros(host_crops.shape[1:], np.float32)
            stacked = np.stack([zeros if d is None else d for d in added])
            detail = torch.from_numpy(stacked).permute(0, 3, 1, 2).to(restored.device, restored.dtype)
            restored = (restored + (strength / 255.0) * weights[:, None, None, None] * detail).clamp(0.0, 1.0)
        if self._identity_gate.active:
            self.stats.add_time("identity_gate", checking)
        t3 = time.perf_counter()
        restored = torch.stack([self._smoother.smooth_tensor(tid, c, r, denoise_weight=w)
                                for tid, c, r, w in zip(ids, crops, restored, gate)])
        t4 = time.perf_counter()  # the fusion's flow needs the crops on the host: this waits for the device
        self.stats.add_time("temporal", t4 - t3)
        restored = keep_monochrome_tone_tensor(crops, restored)  # (black-and-white film stays grey)
        path.paste(on_device, restored, crops, matrices)
        self.stats.add_time("paste", time.perf_counter() - t2 - (t4 - t3) - checking)
        return [k if self._identity_gate.judges(identity) else None for k, identity in zip(kept, identities)]

    def _crop_side(self, t: TrackedFace) -> int:
        """The crop side for this frame's face of track ``t``: the one side, or with
        ``crop_resolution="auto"`` the one its size asks for (kept per track, with hysteresis)."""
        if len(self.crop_sides) == 1:
            return self.crop_sides[0]
        model_side = self.crop_sides[0]
        m = alignment_matrix(t.kps, model_side, self.pixel_aspect)
        frame_pixels = model_side / max(float(np.sqrt(abs(np.linalg.det(m[:, :2])))), 1e-9)
        side = auto_crop_side(frame_pixels, self.crop_sides, self._track_sides.get(t.track_id))
        self._track_sides[t.track_id] = side
        return side

    def _restore_gated(self, crops: Sequence[torch.Tensor | np.ndarray], caches: list, ids: list,
                       weights: Sequence[float]) -> list[torch.Tensor | None]:
        """:meth:`_restore_crops`, but None for a face whose quality gate weight is 0: its output would
        be thrown away, so the model is not run for it (clean footage costs no model time; the output
        is the same to the bit). ``QualityGateConfig.skip_clean_faces=False`` restores every face."""
        skip = self._gate.config.skip_clean_faces
        busy = [i for i, w in enumerate(weights) if not (skip and w <= 0.0)]
        out: list[torch.Tensor | None] = [None] * len(crops)
        if busy:
            restored = self._restore_crops([crops[i] for i in busy], [caches[i] for i in busy], [ids[i] for i in busy])
            for i, face in zip(busy, restored):
                out[i] = face
        return out

    def _restore_crops(self, crops: Sequence[torch.Tensor | np.ndarray], caches: list, ids: list) -> list[torch.Tensor]:
        """Each face restored, in order, ``(1, 3, S, S)`` at its crop's side: the faces of each side
        batched, and all sides in one call of the model (``restore_batches``). ``crops``: (3, S, S)
        tensors or (S, S, 3) uint8 arrays."""
        sides = [int(c.shape[-1]) if isinstance(c, torch.Tensor) else int(c.shape[0]) for c in crops]
        groups = [[i for i, s in enumerate(sides) if s == side] for side in sorted(set(sides))]
        batches = [torch.stack([crops[i] for i in g]) if isinstance(crops[g[0]], torch.Tensor)  # type: ignore[misc]
                   else _to_tensor(np.stack([crops[i] for i in g])) for g in groups]
        order = [i for g in groups for i in g]
        # the track id seeds each face's noise: fixed noise per track makes an unchanged face
        # restore identically frame after frame (see streamrestore.types.Restorer)
        restored = restore_batches(self.restorer, batches, [caches[i] for i in order], noise_seeds=[ids[i] for i in order])
        if not self._restorer_checked:  # (once: a GPU would wait for it)
            for given, batch in zip(batches, restored):
                check_restorer_output(self.restorer, given, batch)
            self._restorer_checked = True
        restored = [self._finite(given, batch) for given, batch in zip(batches, restored)]
        out: list[Any] = [None] * len(sides)
        for group, batch in zip(groups, restored):
            for k, i in enumerate(group):
                out[i] = batch[k:k + 1]
        return out

    _restorer_checked = False  # (check_restorer_output has seen the restorer's first batch)
    _invalid_on_device: "torch.Tensor | None" = None  # faces with invalid values counted on a GPU, not yet in stats

    def _finite(self, given: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        """``restored``, its faces holding a NaN or an infinity replaced by their ``given`` input (left as they
        were): a damaged model file or cached program gave NaN, cast to uint8 as noise with a raw numpy warning
        (support F6). Counted in ``RunStats.faces_invalid``: at once on the CPU; on a GPU on the device, brought
        back once, when a whole run ends (:meth:`settle_device_counts`; a count per frame would wait for it)."""
        bad = ~torch.isfinite(restored).flatten(1).all(1)
        if restored.device.type == "cpu":
            count = int(bad.sum())
            if not count:
                return restored
            self.stats.faces_invalid += count
        else:
            counted = bad.sum()
            self._invalid_on_device = counted if self._invalid_on_device is None else self._invalid_on_device + counted
        return torch.where(bad[:, None, None, None], given.to(restored.device, restored.dtype), restored)

    def settle_device_counts(self) -> None:
        """Adds what was counted on the device (faces the restorer gave invalid values for) to :attr:`stats`:
        one wait for the device, at the end of a whole run."""
        if self._invalid_on_device is not None:
            self.stats.faces_invalid += int(self._invalid_on_device)
            self._invalid_on_device = None

    def _select(self, tracked: list[TrackedFace]) -> list[TrackedFace]:
        """The faces to restore (``max_faces``), largest first; those chosen on the frame before
        count as :data:`MAX_FACES_SWITCH` times their size. Called once per frame, in order."""
        limit = self.config.max_faces
        if limit is not None and len(tracked) > limit:
            before = self._selected
            tracked = sorted(tracked, key=lambda t: -t.face.size * (MAX_FACES_SWITCH if t.track_id in before else 1.0))
            tracked = tracked[:limit]
        self._selected = {t.track_id for t in tracked}
        return tracked

    def _people_of(self, tracked: list[TrackedFace], pixels: Any, index: int) -> list[TrackedFace]:
        """``tracked`` with each face on the track of the person it shows. The tracker follows a place in the
        picture: a dissolve between two people's close-ups kept one track, and the second person was restored
        toward the first one's photos (left changed under ``--unmatched skip``). So a decided track's face is
        checked every :data:`RECHECK_EVERY` faces against its first ones
        (:meth:`~streamrestore.faces.identity.IdentityMatcher.another_person`); one found someone else's goes,
        with the rest of its track, on a new track, matched to the photos afresh."""
        if self._matcher is None or not self._matcher.checks_another_person:
            return tracked
        view = None
        people = []
        for t in tracked:
            tid = self._renamed.get(t.track_id, t.track_id)
            track = self.stats.per_track.get(tid)
            if (not t.interpolated and track is not None and track.faces % RECHECK_EVERY == 0
                    and self._matcher.is_decided(tid)):
                view = sdr_view(pixels) if view is None else view
                t0 = time.perf_counter()
                embedding = self._embedding_of(view, t.face)
                self.stats.add_time("identity", time.perf_counter() - t0)
                if self._matcher.another_person(tid, embedding):
                    self._renamed[t.track_id] = new = self._tracker.new_track_id()
                    log.info("track %s shows someone else from frame %d (a dissolve, a face passing in front): "
                             "followed as track %d", tid, index, new)
                    tid = new
            people.append(t if tid == t.track_id else dataclasses.replace(t, track_id=tid))
        return people

    def _embedding_of(self, pixels: Any, face: Face) -> np.ndarray:
        """The embedder's vector of ``face``, from the part of the frame around it: a frame's whole RGB, converted
        for it, cost a 4K frame ~30 ms (the frame path converts only the faces' regions)."""
        height, width = pixels.shape[:2]
        centre_x, centre_y = face.kps.mean(axis=0)
        reach = 2.0 * max(face.size, 8.0)  # (the recogniser's crop, ~1.5 face widths, well inside)
        x0, y0 = max(0, int(centre_x - reach)), max(0, int(centre_y - reach))
        x1, y1 = min(width, int(centre_x + reach) + 1), min(height, int(centre_y + reach) + 1)
        corner = np.array([x0, y0], np.float32)
        local = Face(box=face.box - np.tile(corner, 2), kps=face.kps - corner, score=face.score)
        return self.embedder.embed(pixels.region(x0, y0, x1, y1), [local])[0]  # type: ignore[union-attr]  # (__init__)

    def _identity(self, t: TrackedFace, pixels) -> str | None:
        if self._matcher is not None and not t.interpolated and self._matcher.needs_embedding(t.track_id):
            t0 = time.perf_counter()
            embedding = self._embedding_of(pixels, t.face)  # (matching needs an embedder: __init__)
            self.stats.add_time("identity", time.perf_counter() - t0)
            self._matcher.observe(t.track_id, embedding)
        if self._single_identity is not None or self._matcher is None:
            return self._single_identity
        return self._matcher.identity_of(t.track_id)


# --- building a FaceRestorer from options (the CLI, the api and from_options) -----------------

def _as_specs(refs) -> list:
    """``refs`` as a list: of folder specs (str) and loaded ``ReferenceSet`` objects, in order."""
    from streamrestore.faces.identity import ReferenceSet

    if refs is None:
        return []
    if isinstance(refs, (str, Path)):
        return [str(refs)]
    if isinstance(refs, ReferenceSet):
        return [refs]
    return [s if isinstance(s, ReferenceSet) else str(s) for s in refs]


def build_face_restorer(
    refs: str | Path | Iterable[str | Path | ReferenceSet] | None = (),
    *,
    model: str | Path | Restorer = "lite",
    device: str = "auto",
    detector: "str | Detector" = "auto",
    face_models: str | Path | None = None,
    config: PipelineConfig = PipelineConfig(),
    channel_order: str = "rgb",
    fps: float = 30.0,
    backend: str = "auto",
    fast_vae: str | Path | None = None,
    torch_threads: int | None = None,
    adapt: "AdaptConfig | None" = None,
) -> FaceRestorer:
    """Loads the model, the face models and the reference photos, and encodes the references.

    Args:
        refs: a folder of photos of one person, or a list of folders / ``"NAME=DIR"`` specs for
            several people, or already loaded ``ReferenceSet`` objects. Empty: restore without
            references. A photo file or a video stands for a folder: each entry of a list is one
            person, so one person's photos go in one folder, not in a list of files.
        model: ``"lite"`` (shipped), ``"instantrestore"`` (official checkpoint, needs the base
            models locally), a checkpoint path, ``"identity"`` (a restorer that changes nothing, for testing:
            the other stages still act, the temporal denoise and the reference detail; with
            ``TemporalConfig.off()`` and no references the frames come back bit for bit), or
            any object implementing the :class:`streamrestore.types.Restorer` protocol.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        detector: ``"auto"`` (SCRFD when an insightface pack is found, else dlib), ``"scrfd"``, ``"dlib"``, or
            any object implementing the :class:`streamrestore.faces.detect.Detector` protocol (used as given;
            reference photos are found with it too).
        face_models: folder holding an insightface model pack (SCRFD + recognition).
        config: see :class:`PipelineConfig`.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy frames given to ``process``/``stream``.
        fps: the stream's frame rate (the tracker's smoothing is tuned in seconds).
        backend: how the restorer network runs: ``"auto"`` (the fastest available, said in one
            log line), ``"eager"``, ``"compile"``, ``"tensorrt"`` or ``"onnxruntime"`` (see ``streamrestore.backends``).
        fast_vae: a TAESD folder or decoder file to decode with instead of the model's VAE
            (latent models given by name; see ``streamrestore.model.fast_vae``).
        torch_threads: CPU threads torch uses for the restorer's work; None: half the cores (the
            CLI's default, :func:`streamrestore.threads.default_torch_threads`). Applied only
            while streamrestore works; your ``torch.get_num_threads()`` is left as it was.
        adapt: fine-tune the model on each person's reference photos before restoring (see
            :mod:`streamrestore.model.adapt`; minutes per person on a CPU, once: the result is
            cached on disk). None (default): no adaptation. The fine-tunes run eagerly; the
            adapted copies are served by ``backend`` where it resolves to onnxruntime, else
            eagerly (:func:`streamrestore.backends.per_person_backend`).

    The options are checked (device, reference folders) before anything is loaded.

    Raises:
        UserError: a :class:`~streamrestore.errors.UserError` subclass for a device that is not
            there, a missing ``fast_vae``, reference folders that cannot work, or a model or
            face model that cannot be loaded.
    """
    # looked up at call time: tests swap the detector and embedder factories
    from streamrestore.faces.detect import create_detector
    from streamrestore.faces.identity import ReferenceSet, create_embedder
    from streamrestore.faces.references import load_reference_sets

    _check_config(config)
    specs = _as_specs(refs)
    photos = [s for s in specs if isinstance(s, (str, Path)) and "=" not in str(s) and is_image(s)]
    if len(photos) > 1 and len(photos) == len(specs):
        log.warning("%d reference photos given one by one are %d people of one photo each (each entry of refs is "
                    "a person); one person's photos go in one folder", len(photos), len(photos))
    if isinstance(detector, str) and detector not in ("auto", "scrfd", "dlib"):
        raise ModelError(f"unknown detector {detector!r}: use auto, scrfd or dlib")
    if not isinstance(detector, str) and not callable(getattr(detector, "detect", None)):
        raise ValueError(f"detector must be auto, scrfd, dlib or a Detector (streamrestore.faces.detect.Detector); "
                         f"{type(detector).__name__} has no detect(image)")
    check_model_options(model, device=device, fast_vae=fast_vae)
    check_references(specs, unmatched=config.unmatched)
    if face_models is not None:  # (a folder without a pack: said now, not after the model has loaded)
        from streamrestore.faces import detect as face_detect

        face_detect.check_face_models(face_models)
    threads = resolve_torch_threads(torch_threads)
    restorer: Restorer
    with _torch_threads(threads):
        restorer = load_restorer(model, device=device, backend=backend, fast_vae=fast_vae, adapt=adapt)
        # the references are aligned at every crop side the faces may be cut at, and at the
        # model's own (its K/V: as aligned in training, not shrunk from a larger crop)
        reference_sides = sorted({int(restorer.resolution), *crop_sides(int(restorer.resolution), config.crop_resolution)})
        face_detector = (create_detector(detector, models_dir=face_models, det_size=config.detect_size)
                         if isinstance(detector, str) else detector)
        if config.detect_size != PipelineConfig.detect_size and not hasattr(face_detector, "input_size"):
            log.warning("--detect-size %d is not used: %s's face detector searches the whole frame at its own size",
                        config.detect_size, getattr(face_detector, "name", type(face_detector).__name__))
        embedder = None
        needs_embedder = len(specs) > 1 or (specs and config.unmatched == "skip")
        if specs and not all(isinstance(s, ReferenceSet) for s in specs):
            embedder = create_embedder("auto", models_dir=face_models)
            # folders loaded here, sets loaded before kept as they are, in the order given
            loaded = iter(load_reference_sets([s for s in specs if not isinstance(s, ReferenceSet)], face_detector,
                                              embedder, reference_sides))
            sets = [s if isinstance(s, ReferenceSet) else next(loaded) for s in specs]
        else:
            sets = specs
            if needs_embedder or (specs and config.identity_gate.enabled):
                embedder = create_embedder("auto", models_dir=face_models)
    if specs and config.identity_gate.enabled and not hasattr(embedder, "embed_aligned"):
        log.info("identity gate off: it needs an insightface recognition model (--face-models DIR)")
    return FaceRestorer(
        restorer, face_detector, sets, embedder=embedder, config=config, channel_order=channel_order, fps=fps,
        torch_threads=threads,
    )


def load_restorer(model: str | Path | Restorer = "lite", *, device: str = "auto", backend: str | None = "auto",
                  fast_vae: str | Path | None = None, adapt: "AdaptConfig | None" = None) -> Restorer:
    """A restorer from a name, a path, or an object that already is one (used as given).

    Args:
        model: as for :func:`build_face_restorer`.
        device: as for :func:`build_face_restorer`.
        backend: as for :func:`build_face_restorer`; None: the plain eager restorer, not
            wrapped by :func:`streamrestore.backends.build_backend`.
        fast_vae: decode with TAESD (see :func:`build_face_restorer`).
        adapt: as for :func:`build_face_restorer`: the eager model in an
            :class:`~streamrestore.model.adapt.AdaptedRestorer`, whose per-person copies ``backend``
            serves where :func:`streamrestore.backends.per_person_backend` says so.
    """
    if adapt is not None:
        from streamrestore.backends import per_person_backend
        from streamrestore.model.adapt import AdaptedRestorer

        base = load_restorer(model, device=device, backend=None, fast_vae=fast_vae)
        return AdaptedRestorer(base, adapt, serve=per_person_backend(base, backend) if backend else None)
    if not isinstance(model, (str, Path)):
        if not isinstance(model, Restorer):  # (a missing attribute failed deep in the pipeline: support F11)
            missing = [name for name in ("resolution", "encode_references", "restore") if not hasattr(model, name)]
            raise ValueError(f"model must be a name, a path or a Restorer (streamrestore.types.Restorer); "
                             f"{type(model).__name__} has no {', '.join(missing)}")
        return model
    if str(model) == "identity":
        from streamrestore.model.identity import IdentityRestorer

        if fast_vae:
            log.warning("--fast-vae ignored: the identity model has no decoder")
        return IdentityRestorer()
    from streamrestore.backends import build_backend
    from streamrestore.model.registry import load_model

    loaded = load_model(str(model), device=device, fast_vae=fast_vae or None)
    return loaded if backend is None else build_backend(loaded, backend)


def _check_config(config: object) -> None:
    """ValueError for a ``config`` that is not a :class:`PipelineConfig` (a dict of its fields:
    ``PipelineConfig(**fields)`` makes one)."""
    if not isinstance(config, PipelineConfig):
        hint = " (PipelineConfig(**fields) makes one of a dict)" if isinstance(config, dict) else ""
        raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}{hint}")


def check_model_options(model: str | Path | Restorer = "lite", *, device: str = "auto",
                        fast_vae: str | Path | None = None) -> None:
    """Fails at once, before any model loads, on options that cannot work. A restorer object
    given as ``model`` has its own device: nothing to check.

    Args:
        model: as for :func:`build_face_restorer`.
        device: as for :func:`build_face_restorer`.
        fast_vae: as for :func:`build_face_restorer`.

    Raises:
        DeviceError: a device that is not there (``cuda`` without CUDA).
        ModelError: a model name it does not know, a model file or ``fast_vae`` path that does
            not exist.
    """
    if not isinstance(model, (str, Path)):
        return
    from streamrestore.model.registry import check_model_name
    from streamrestore.model.restorer import pick_device

    check_model_name(model)
    pick_device(device)
    if fast_vae and str(model) != "identity" and not Path(fast_vae).expanduser().exists():
        raise ModelError(f"--fast-vae {fast_vae} does not exist; give the folder holding taesd_decoder.safetensors "
                         "or the file itself")


def check_references(refs: str | Path | Iterable[str | Path | ReferenceSet] | None,
                     unmatched: str = "restore") -> None:
    """Fails at once on reference specs that cannot work. Reads no photo (see
    :func:`streamrestore.faces.references.check_reference_specs`).

    Args:
        refs: as for :func:`build_face_restorer` (loaded sets are not checked).
        unmatched: :attr:`PipelineConfig.unmatched`: ``"skip"`` needs references to match faces to.

    Raises:
        ReferencesError: a folder that is missing or holds no photos, a set name given twice
            (``NAME=DIR``), or ``unmatched="skip"`` without references (it would restore every face, where
            only those of the people given were asked for: the faces of people who did not consent, say).
    """
    from streamrestore.faces.references import check_reference_specs, parse_reference_specs, refuse_repeated_names

    given = _as_specs(refs)
    if unmatched == "skip" and not given:
        raise ReferencesError("--unmatched skip restores only the faces that match the reference photos, and none "
                              "were given: name the people's photos with --refs NAME=DIR (library: refs=), or leave "
                              "out --unmatched skip to restore every face")
    specs = [s for s in given if isinstance(s, str)]
    if specs:
        check_reference_specs(specs)
    refuse_repeated_names([s.name for s in given if not isinstance(s, str)]
                          + [name for name, _ in parse_reference_specs(specs)])


# --- conversions ---------------------------------------------------------------------------

def _at_side(ref: ReferenceSet, side: int) -> ReferenceSet:
    """``ref`` with its crops at ``side`` px: as aligned at it when it was loaded there, else
    resized from the nearest larger side it has (area average), or enlarged from its largest."""
    have = {int(ref.crops.shape[1]): ref.crops, **ref.crops_at}
    if side in have:
        return ref if have[side] is ref.crops else dataclasses.replace(ref, crops=have[side])
    larger = [s for s in have if s > side]
    source = have[min(larger) if larger else max(have)]
    interpolation = cv2.INTER_AREA if larger else cv2.INTER_CUBIC
    crops = np.stack([cv2.resize(c, (side, side), interpolation=interpolation) for c in source])
    return dataclasses.replace(ref, crops=crops)


def _device_frame_path(restorer, resolution: int, config: PipelineConfig):
    """The device frame path the config asks for, or None for the host path."""
    device = getattr(restorer, "device", None)
    device = torch.device(device) if device is not None else None
    if config.frame_path == "host" or (config.frame_path == "auto" and (device is None or device.type != "cuda")):
        return None
    from streamrestore.device_frames import DeviceFramePath

    return DeviceFramePath(device if device is not None else "cpu", resolution, config.paste)


@dataclass
class _Finished:
    """A frame restored: the frame, its restored faces (``FaceRestorer.last_faces``) and the
    seconds its finishing step spent in each stage."""

    frame: Any
    faces: list[AlignedFace] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame with access to its pixels (and, from :meth:`FaceRestorer.prepare`, its
    faces and their tracks) already set up, e.g. on the reader thread, so that work overlaps
    the restoring of the frame before. :class:`FaceRestorer` accepts it wherever it accepts a
    frame and returns ``frame`` (restored) for it."""

    frame: Any
    pixels: Any  # streamrestore.pixels.RgbPixels or Yuv420Pixels
    faces: list | None = None  # None: not detected yet
    #: the frames the tracker finalised when this one was tracked, ``(index, tracked faces)``
    #: oldest first (with lookahead L, frame i is finalised by frame i + L); None: not tracked yet
    ready: tuple | None = None
    #: the FaceRestorer whose tracker took it (``prepare(track=True)``); only it may restore it
    tracked_by: Any = field(default=None, repr=False, compare=False)


def _pixels(frame, channel_order: str):
    if isinstance(frame, np.ndarray) and (frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8
                                          or not frame.shape[0] or not frame.shape[1]):
        raise ValueError(f"frames must be HxWx3 uint8 arrays, got shape {frame.shape} dtype {frame.dtype}")
    return pixels_of(frame, channel_order)


def _thumbnail(pixels) -> np.ndarray:
    """The 64-pixel-wide RGB picture scene-cut detection compares (see ``frame_signature``)."""
    h, w = pixels.shape[:2]
    return pixels.resized(64, max(1, round(64 * h / w)))


def _canvas(pixels: RgbPixels | Yuv420Pixels, frame: Any) -> tuple[RgbCanvas | Yuv420Canvas, Any]:
    """(canvas, result): where the restored faces are pasted, and what to return for it.

    4:2:0 video frames are changed in YUV (a new frame; the encoder takes it as it is). Other
    video frames get a new RGB frame whose own buffer is the canvas, so nothing is copied again
    afterwards (``VideoFrame.from_ndarray`` costs ~2 ms per 720p frame); it keeps the input's
    timestamps and side data (captions: :func:`~streamrestore.pixels.frame_like`).
    """
    canvas: RgbCanvas | Yuv420Canvas
    if isinstance(pixels, Yuv420Pixels):
        canvas = pixels.output()
        return canvas, canvas.frame
    if isinstance(frame, np.ndarray):
        canvas = pixels.output()
        return canvas, canvas.rgb
    rgb = pixels.full()
    h, w = rgb.shape[:2]
    result = frame_like(frame, "rgb24")
    buffer = plane_view(result.planes[0], h, w * 3).reshape(h, w, 3)
    buffer[...] = rgb
    copy_timing(frame, result)
    return RgbCanvas(buffer), result


#: the most reference photos of one person the restorer is given (it was trained with up to 4; each adds to
#: every frame's attention time: 300 photos ran at 0.4 fps)
ENCODED_AT_MOST = 8


def typical_references(embeddings: np.ndarray, most: int) -> np.ndarray:
    """The indices (in order) of the ``most`` rows of ``embeddings`` (one per photo) nearest their
    mean: the photos most alike to the rest, so an odd one out (another person, a poor photo) is left out
    first. All of them where there are no more than ``most``."""
    if len(embeddings) <= most:
        return np.arange(len(embeddings))
    rows = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)  # (dlib's: not unit)
    alike = rows @ rows.mean(axis=0)
    return np.sort(np.argsort(-alike, kind="stable")[:most])


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, R, R, 3) uint8 → (N, 3, R, R) float32 in [0, 1], contiguous (channels-last strides
    from a numpy permute crash some CPU conv kernels)."""
    # numpy does this layout change + cast several times faster than torch's strided copy.
    planar = np.asarray(crops).transpose(0, 3, 1, 2).astype(np.float32, order="C")
    planar *= np.float32(1.0 / 255.0)
    return torch.from_numpy(planar)


def check_restorer_output(restorer: Any, given: torch.Tensor, restored: Any) -> None:
    """Refuses a restorer's batch that is not what :class:`~streamrestore.types.Restorer` promises: a float
    tensor of its input's shape, in [0, 1] (within 0.5: a sharpening overshoot is clamped later). A new
    restorer that gave 0-255 floats or uint8 blew the faces out with exit 0, hidden by the quality gate in a
    first test; one of the wrong size failed deep inside OpenCV (support F11). NaN is left to
    :meth:`FaceRestorer._finite` (a damaged file, not a wrong restorer).

    Raises:
        ValueError: naming the restorer's class and what was wrong.
    """
    name = type(restorer).__name__
    if not isinstance(restored, torch.Tensor):
        raise ValueError(f"{name}.restore returned {type(restored).__name__}, not a torch.Tensor")
    if not restored.is_floating_point():
        raise ValueError(f"{name}.restore returned {restored.dtype} faces; they must be float, in [0, 1]")
    if tuple(restored.shape) != tuple(given.shape):
        raise ValueError(f"{name}.restore returned shape {tuple(restored.shape)} for faces of shape "
                         f"{tuple(given.shape)}; it must return one face per face given, at their size")
    finite = restored[torch.isfinite(restored)]
    if finite.numel() and (float(finite.min()) < -0.5 or float(finite.max()) > 1.5):
        raise ValueError(f"{name}.restore returned values from {float(finite.min()):.3g} to {float(finite.max()):.3g}; "
                         "faces are in [0, 1] (not 0-255)")


def _to_uint8(faces: torch.Tensor) -> np.ndarray:
    hwc = faces.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
    return np.clip(hwc * 255.0 + 0.5, 0, 255).astype(np.uint8)
