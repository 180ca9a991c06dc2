"""Face detection: SCRFD (insightface model pack) or dlib (HOG + landmark predictor).

Every detector takes an RGB uint8 frame and returns :class:`~streamrestore.types.Face` values
with five landmarks in the SCRFD order: left eye, right eye, nose tip, left mouth corner, right
mouth corner (left/right as seen in the image), sorted by score, best first.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from streamrestore.errors import ModelError, out_of_memory
from streamrestore.faces.align import FFHQ_TEMPLATE_512, similarity_transform
from streamrestore.types import Face
from streamrestore.video.reader import quarter_turns, turned_upright

__all__ = [
    "Detector",
    "ScrfdDetector",
    "DlibDetector",
    "create_detector",
    "detect_padded",
    "detect_upright",
    "find_model_pack",
    "DEFAULT_PACK",
]

logger = logging.getLogger(__name__)

#: The insightface pack to get when SCRFD is asked for and no pack is on disk (insightface's own
#: default; its weights are for non-commercial research and are never shipped with us, nor
#: downloaded: the user fetches it, see :func:`missing_pack_message`).
DEFAULT_PACK = "buffalo_l"

_INSIGHTFACE_HOME = Path("~/.insightface")


@runtime_checkable
class Detector(Protocol):
    """Finds faces in one RGB uint8 (H, W, 3) image; faces sorted by score, highest first."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be an RGB uint8 array of shape (H, W, 3), got shape {shape} dtype {dtype}")
    return image


def _check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    return float(threshold)


# --------------------------------------------------------------------------------------------
# Model packs


def _det_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("det_*.onnx") if p.is_file())


def find_model_pack(models_dir: str | Path | None = None) -> Path | None:
    """The insightface pack folder to use, or None when there is none.

    ``models_dir`` may be an insightface root (``<root>/models/<pack>/det_*.onnx``), a pack
    folder, or a ``det_*.onnx`` file (its folder is the pack). Without it, packs under
    ``~/.insightface/models`` are searched, :data:`DEFAULT_PACK` first. When ``models_dir`` is
    given but holds no detector, :class:`ModelError` is raised rather than silently falling
    back to another detector.
    """
    if models_dir is not None:
        path = Path(models_dir).expanduser()
        if path.is_file():
            if path.suffix == ".onnx" and path.name.startswith("det_"):
                return path.parent
            raise ModelError(f"--face-models {path}: expected an insightface det_*.onnx file or a model-pack folder")
        if path.is_dir():
            if _det_files(path):
                return path
            pack = _first_pack(path / "models") or _first_pack(path)
            if pack is not None:
                return pack
        elif not path.exists():  # (a typo: "found there" read as if the folder were there)
            raise ModelError(f"--face-models {path}: no such file or folder")
        raise ModelError(
            f"--face-models {path}: no insightface detector (det_*.onnx) found there; give a pack folder, "
            "an insightface root with models/<pack>/, or use --detector dlib"
        )
    return _first_pack(_INSIGHTFACE_HOME.expanduser() / "models")


def check_face_models(models_dir: str | Path) -> None:
    """:class:`ModelError` at once where ``models_dir`` (``--face-models``) holds no insightface pack: what
    :func:`create_detector` and the embedder would say later, after the model had loaded."""
    find_model_pack(models_dir)


def _first_pack(models_root: Path) -> Path | None:
    if not models_root.is_dir():
        return None
    packs = sorted(p for p in models_root.iterdir() if p.is_dir() and _det_files(p))
    packs.sort(key=lambda p: p.name != DEFAULT_PACK)  # stable: default pack first, then by name
    return packs[0] if packs else None


def onnxruntime_module() -> ModuleType:
    """onnxruntime, imported without its telemetry: a release built with it records a usage event per process
    (a device id, the system, the Python path) under ``~/.cache/Microsoft``, which ``ORT_DISABLE_TELEMETRY=1``
    turns off, as insightface's import does (set only where the user has not set it: ``=0`` keeps it on)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def onnx_providers() -> list[str]:
    """CUDA when onnxruntime has it, else CPU (the CPU provider is always last as a fallback)."""
    onnxruntime = onnxruntime_module()

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]


def onnx_session_options(threads: int = 1):
    """Session options for models that run once per frame next to a video encoder.

    onnxruntime's default thread pool spins between runs: measured on 2 cores, SCRFD-500M on a
    720p frame cost 44 ms of CPU per call with spinning and 9 ms without, for the same wall
    time, and the spinning threads starve the encoder. One thread without spinning is the
    better citizen in a pipeline that already runs decode, encode and restore in parallel.
    """
    onnxruntime = onnxruntime_module()

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


# --------------------------------------------------------------------------------------------
# SCRFD


#: faces narrower than this (:attr:`Face.size`, px) in the picture SCRFD looks at are found in some frames only (a
#: 45-px face of 1080p frames looked at 640 wide, 15 px there: found in 15 of 30 frames; at 960, 22 px: in all)
SMALL_AT_INPUT = 20.0
#: the sides SCRFD's picture may be given (``PipelineConfig.detect_size``, ``--detect-size``): a multiple of 32
DETECT_SIZE_LEAST, DETECT_SIZE_MOST = 160, 4096


class ScrfdDetector:
    """SCRFD through insightface: fast, accurate, five landmarks of its own.

    ``det_size`` is the square network input (640 is what the packs were tuned for; smaller is
    faster but misses small faces); ``threshold`` is the face probability to keep a box.
    """

    name = "scrfd"

    def __init__(self, model_file: str | Path, *, det_size: int = 640, threshold: float = 0.5,
                 providers: Sequence[str] | None = None):
        if det_size < 32 or det_size % 32:
            raise ValueError(f"det_size must be a positive multiple of 32, got {det_size!r}")
        self.threshold = _check_threshold(threshold)
        self.det_size = int(det_size)
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise ModelError(f"SCRFD model {self.model_file} not found; check --face-models")
        get_model = insightface_model_zoo().get_model
        providers = list(providers) if providers is not None else onnx_providers()
        try:
            self._model = get_model(str(self.model_file), providers=providers, sess_options=onnx_session_options())
        except Exception as error:  # onnxruntime raises many types for a bad file
            raise ModelError(f"cannot load SCRFD model {self.model_file}: {error}") from error
        if self._model is None or getattr(self._model, "taskname", None) != "detection":
            raise ModelError(f"{self.model_file} is not an insightface detection model")
        ctx_id = 0 if providers[0] == "CUDAExecutionProvider" else -1
        self._model.prepare(ctx_id=ctx_id, input_size=(self.det_size, self.det_size), det_thresh=self.threshold)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input (width, height): the longer side ``det_size``, the other scaled to the
        frame's aspect ratio (multiple of 32). A square input would spend half its work on
        letterbox padding for a 16:9 frame; the same faces come out at half the cost. Smaller
        frames are still upscaled to ``det_size``: landmarks of a 240p face came out 5.7 % of
        the eye distance off at native size and 1.8 % upscaled (against the same photo at 1080p)."""
        side = self.det_size
        longer = max(height, width)
        shorter = int(np.ceil(side * min(height, width) / longer / 32.0)) * 32
        shorter = max(32, min(shorter, side))
        return (side, shorter) if width >= height else (shorter, side)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _check_image(image)
        h, w = image.shape[:2]
        size = self.input_size(h, w)
        # Resize first, then swap to BGR (insightface wants BGR): swapping the channels of a
        # whole 1080p frame costs more than the shrink itself.
        scale = min(size[0] / w, size[1] / h)
        small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if small_size == (w, h):  # the pipeline hands over frames already shrunk to this size
            small, scale = image, 1.0
        else:
            small = cv2.resize(image, small_size, interpolation=cv2.INTER_LINEAR)
        boxes, kpss = self._model.detect(np.ascontiguousarray(small[:, :, ::-1]), input_size=size)
        boxes = boxes.copy()
        boxes[:, :4] /= scale
        kpss = kpss / scale
        faces = [
            Face(box=boxes[i, :4].astype(np.float32), kps=kpss[i].astype(np.float32), score=float(boxes[i, 4]))
            for i in range(boxes.shape[0])
        ]
        faces.sort(key=lambda face: -face.score)
        return faces


def face_package(module: str, package: str, what: str, instead: str) -> ModuleType:
    """``module`` imported, or a :class:`ModelError` saying ``what`` needs the pip ``package`` (a plain
    install has it; an environment trimmed by hand, or a package whose own import fails, may not), and
    what to use ``instead``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if out_of_memory(exc) is not None:  # (a library's code not mapped under a memory limit: no package missing)
            raise MemoryError(f"{package} could not be loaded ({exc})") from exc
        # a package it imports in turn may be what is missing (insightface without onnxruntime): that one's name
        # (insightface raises its own ImportError from onnxruntime's ModuleNotFoundError)
        absent = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        missing = (getattr(absent, "name", None) or "").split(".")[0]
        if isinstance(absent, ModuleNotFoundError) and missing and missing != module.split(".")[0]:
            wanted = _PIP_NAMES.get(missing, missing)
            raise ModelError(f"{what} need the {package} package, which needs {wanted} ({exc}): pip install "
                             f"{wanted} ({instead})") from None
        raise ModelError(f"{what} need the {package} package, which cannot be imported ({exc}): pip install "
                         f"{package} ({instead})") from None


#: pip's names of modules whose import name differs (what the face packages import)
_PIP_NAMES = {"cv2": "opencv-python", "skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow",
              "google": "protobuf"}


def insightface_model_zoo() -> ModuleType:
    return face_package("insightface.model_zoo", "insightface", "insightface's face models (--face-models)",
                        "or leave out --face-models: dlib's models then serve")


def dlib_module() -> ModuleType:
    return face_package("dlib", "dlib-bin", "dlib's face models", "or give --face-models with an insightface pack")


# --------------------------------------------------------------------------------------------
# dlib


def face_recognition_models_dir() -> Path:
    """The ``models/`` folder of the face_recognition_models package (without importing it:
    its ``__init__`` needs pkg_resources, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the dlib detector needs the face_recognition_models package: pip install face_recognition_models "
            "(or use --detector scrfd)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


# Where dlib's 5-point nose landmark (the base of the nose, under the tip) sits on the FFHQ
# 512 template. The eye corners give the eye centres directly; this point, together with them,
# fixes the similarity that carries the template's nose tip and mouth corners into the frame.
# Measured: the median, over 92 faces in the train-ok photos of face_recognition/ and deepface/,
# of dlib's nose base mapped into the template frame through SCRFD-2.5G landmarks (std ~6 px).
_DLIB_NOSE_BASE_512 = np.array([255.7, 337.6])


class DlibDetector:
    """dlib's HOG frontal-face detector with a landmark predictor (no GPU, no insightface).

    ``landmarks``: ``"68"`` (default) reads eyes, nose tip and mouth corners straight off the
    68-point predictor; ``"5"`` uses the 5-point predictor (eye corners + nose base) and places
    the nose tip and mouth corners from the FFHQ layout. On shared photos the 68-point model is
    measurably closer to SCRFD (see the report in tests/test_faces_detect.py); note that the
    68-point model's training data (iBUG 300-W) is for non-commercial use.

    ``upsample``: how many times dlib doubles the image before searching (HOG finds faces of
    about 80 px and up). ``None`` picks it per image: enough doublings for the shorter side to
    reach ``min_side`` pixels (at most 2), so 360p video is searched at 720p.

    ``threshold`` is on the logistic of dlib's SVM margin, so the default 0.5 is dlib's own
    decision boundary (margin 0) and scores are comparable in range with SCRFD's.
    """

    name = "dlib"
    #: its cost grows with the picture's pixels (SCRFD's is its fixed input size): see detect_padded
    searches_every_pixel = True

    def __init__(self, *, landmarks: str = "68", upsample: int | None = None, min_side: int = 600,
                 threshold: float = 0.5, models_dir: str | Path | None = None):
        dlib = dlib_module()

        if landmarks not in ("5", "68"):
            raise ValueError(f"landmarks must be '5' or '68', got {landmarks!r}")
        if upsample is not None and not 0 <= int(upsample) <= 3:
            raise ValueError(f"upsample must be None or 0..3, got {upsample!r}")
        if min_side < 1:
            raise ValueError(f"min_side must be positive, got {min_side!r}")
        self.threshold = _check_threshold(threshold)
        self.upsample = upsample
        self.min_side = int(min_side)
        folder = Path(models_dir) if models_dir is not None else face_recognition_models_dir()
        predictor_file = folder / f"shape_predictor_{landmarks}_face_landmarks.dat"
        if not predictor_file.is_file():
            raise ModelError(f"dlib landmark model {predictor_file} not found; reinstall face_recognition_models")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_file))
        self.landmarks = landmarks
        self._margin = math.log(self.threshold / (1.0 - self.threshold))

    def upsample_for(self, image: np.ndarray) -> int:
        if self.upsample is not None:
            return int(self.upsample)
        short = min(image.shape[:2])
        times = 0
        while times < 2 and short * 2**times < self.min_side:
            times += 1
        return times

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _check_image(image)
        rects, margins, _ = self._detector.run(image, self.upsample_for(image), self._margin)
        faces = []
        for rect, margin in zip(rects, margins):
            shape = self._predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            kps = _five_from_68(points) if self.landmarks == "68" else _five_from_dlib5(points)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
            faces.append(Face(box=box, kps=kps.astype(np.float32), score=float(1.0 / (1.0 + math.exp(-margin)))))
        faces.sort(key=lambda face: -face.score)
        return faces


def _five_from_68(points: np.ndarray) -> np.ndarray:
    # iBUG 68 layout: 36-41 and 42-47 are the eyes (image left, then right), 30 the nose tip,
    # 48 and 54 the mouth corners.
    return np.stack([
        points[36:42].mean(axis=0),
        points[42:48].mean(axis=0),
        points[30],
        points[48],
        points[54],
    ])


def _five_from_dlib5(points: np.ndarray) -> np.ndarray:
    # dlib's 5-point layout: 0-1 the image-right eye's corners, 2-3 the image-left eye's, 4 the
    # base of the nose. Eye centres are the corner midpoints; the rest comes from the template.
    left_eye = points[2:4].mean(axis=0)
    right_eye = points[0:2].mean(axis=0)
    known = np.stack([left_eye, right_eye, points[4]])
    template_known = np.stack([FFHQ_TEMPLATE_512[0], FFHQ_TEMPLATE_512[1], _DLIB_NOSE_BASE_512])
    to_frame = similarity_transform(template_known, known)
    derived = FFHQ_TEMPLATE_512[2:] @ to_frame[:, :2].T + to_frame[:, 2]
    return np.vstack([left_eye, right_eye, derived])


# --------------------------------------------------------------------------------------------
# Factory and helpers


def create_detector(kind: str = "auto", *, models_dir: str | Path | None = None, det_size: int = 640,
                    threshold: float = 0.5) -> Detector:
    """Build a detector.

    ``kind``: ``"scrfd"``, ``"dlib"`` or ``"auto"`` (SCRFD when an insightface pack is found in
    ``models_dir`` or ``~/.insightface/models``, else dlib). ``"scrfd"`` without a pack on disk
    raises :class:`ModelError` saying which pack to get (nothing is downloaded).
    """
    if kind not in ("auto", "scrfd", "dlib"):
        raise ValueError(f"kind must be 'auto', 'scrfd' or 'dlib', got {kind!r}")
    _check_threshold(threshold)
    if kind == "dlib":
        return DlibDetector(threshold=threshold)
    pack = find_model_pack(models_dir)
    if pack is None and kind == "auto":
        logger.warning("no insightface model pack found (--face-models DIR, or insightface's buffalo_l unzipped "
                       "into ~/.insightface/models/): using dlib's face detector, which misses small, turned and "
                       "partly hidden faces")
        return DlibDetector(threshold=threshold)
    if pack is None:
        raise ModelError(missing_pack_message())
    if models_dir is not None and Path(models_dir).is_file():
        det_file = Path(models_dir)
    else:
        det_file = _det_files(pack)[0]
    return ScrfdDetector(det_file, det_size=det_size, threshold=threshold)


def missing_pack_message() -> str:
    """What to do when ``--detector scrfd`` finds no insightface pack (we never download one)."""
    home = _INSIGHTFACE_HOME / "models"
    return (
        f"--detector scrfd: no insightface model pack found in {home}; get insightface's {DEFAULT_PACK} pack "
        f"({DEFAULT_PACK}.zip from insightface's model zoo; non-commercial research licence) and unzip it to "
        f"{home / DEFAULT_PACK}, or point --face-models at a pack folder, or use --detector dlib"
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detect_padded(detector: Detector, image: np.ndarray, *, pad_fraction: float = 0.5,
                  shrink: bool = False, also_plain: bool = True) -> list[Face]:
    """Detect on ``image`` and on it padded with black by ``pad_fraction`` of its longer side.

    Detectors are trained on faces with context around them; an aligned crop that the face
    fills (FFHQ-style references, restorer outputs) is often missed or badly landmarked until
    it is shrunk inside a border. Boxes and landmarks are mapped back to ``image``; of two
    overlapping detections (IoU > 0.5) the higher score is kept.

    ``shrink``: the padded picture is shrunk to ``image``'s longer side before the search (default
    False): for a detector that searches every pixel (dlib's HOG), the padded 720p frame cost six
    times a plain search (0.67 s against 0.10 s), every detection of faceless video; a face that
    fills the frame is still large once halved. Its landmarks are then found at half the resolution.
    Not where the shrunk picture's shorter side would be under the detector's ``min_side``, if it has
    one (dlib would double it back).
    ``also_plain``: False leaves out the search of ``image`` itself (one that found nothing already).
    """
    image = _check_image(image)
    if not pad_fraction > 0:
        raise ValueError(f"pad_fraction must be positive, got {pad_fraction!r}")
    pad = int(round(max(image.shape[:2]) * pad_fraction))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    scale = np.ones(2, dtype=np.float32)  # (x, y): padded picture searched -> padded picture
    f = max(image.shape[:2]) / max(padded.shape[:2])
    size = (max(1, round(padded.shape[1] * f)), max(1, round(padded.shape[0] * f)))
    # (dlib doubles a picture whose shorter side is under its min_side before searching it: shrunk
    # under that, the search would cost as much, on a coarser picture)
    if shrink and min(size) >= getattr(detector, "min_side", 0):
        scale = np.array([size[0] / padded.shape[1], size[1] / padded.shape[0]], dtype=np.float32)
        padded = cv2.resize(padded, size, interpolation=cv2.INTER_AREA)

    def back(points: np.ndarray) -> np.ndarray:  # (pixel centres: an area shrink keeps them at +0.5)
        return ((points.reshape(-1, 2) + 0.5) / scale - 0.5 - pad).reshape(points.shape).astype(np.float32)

    candidates = (list(detector.detect(image)) if also_plain else []) + [
        Face(box=back(face.box), kps=back(face.kps), score=face.score) for face in detector.detect(padded)
    ]
    candidates.sort(key=lambda face: -face.score)
    kept: list[Face] = []
    for face in candidates:
        if all(box_iou(face.box, other.box) <= 0.5 for other in kept):
            kept.append(face)
    return kept


def _turned_back(face: Face, turns: int, height: int, width: int) -> Face:
    """``face`` found in ``np.rot90(image, turns)`` in the coordinates of ``image`` (``height`` x ``width``)."""

    def back(points: np.ndarray) -> np.ndarray:
        x, y = points[:, 0], points[:, 1]
        # np.rot90(a, 1)[i, j] == a[j, W-1-i]; two turns: a[H-1-i, W-1-j]; three: a[H-1-j, i]
        # (pixel centres, so a point keeps its place on the picture to the sub-pixel)
        if turns == 1:
            return np.stack([width - 1 - y, x], axis=1)
        if turns == 2:
            return np.stack([width - 1 - x, height - 1 - y], axis=1)
        return np.stack([y, height - 1 - x], axis=1)

    corners = back(face.box.reshape(2, 2))
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)
    return Face(box=box, kps=back(face.kps).astype(np.float32), score=face.score)


def detect_upright(detector: Detector, image: np.ndarray, rotation: float = 0) -> list[Face]:
    """Faces of a picture whose display rotation is ``rotation`` degrees counter-clockwise,
    found upright and given in ``image``'s own (stored) coordinates.

    Detectors are trained on upright faces: in a phone's portrait video, stored sideways, they
    miss most faces and place the landmarks of the rest 3-10 % of the face off (upside down,
    the eyes swap sides). The picture is turned upright for the detector (a copy of the
    detector-sized image), with :func:`detect_padded`'s retry where nothing is found, and the
    boxes and landmarks are turned back. Everything after detection works in stored
    coordinates: the alignment takes the rotation out of the face crop.
    """
    turns = quarter_turns(rotation)
    upright = turned_upright(image, rotation)
    found = detector.detect(upright) or detect_padded(
        detector, upright, shrink=getattr(detector, "searches_every_pixel", False), also_plain=False)
    if not turns:
        return found
    height, width = image.shape[:2]
    return [_turned_back(face, turns, height, width) for face in found]
