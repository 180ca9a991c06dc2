"""Identity judges and the landmark detector used by evaluation.

All of them work on FFHQ-aligned square crops (the restorer's layout, any size, uint8 RGB
``(R, R, 3)``): the 112-px ArcFace crop is computed from the fixed template, so nothing is
detected before embedding and restored / ground-truth images are compared on exactly the same
geometry.

Embedders (cosine similarity of their vectors is the identity score, higher is better):

- :class:`OnnxEmbedder` with the MobileFaceNet of the models folder (RGB input): the same
  weights a training identity loss may use, so it is reported but never the judge.
- :class:`OnnxEmbedder` with the paddle MobileFaceNet (**BGR** input): an independently trained
  MobileFaceNet that no loss has seen: **the judge**.
- :class:`DlibCropEmbedder`: dlib's ResNet descriptor (``dlib_face_recognition_resnet_model_v1.dat``
  from ``face_recognition_models``). dlib's own rule is "same person if L2 distance < 0.6";
  :meth:`DlibCropEmbedder.distance` gives that, the reports use the cosine like the others.

Model files are passed as paths: the shared folder is not part of the package (insightface
weights are not redistributable), ``streamrestore eval --models DIR`` points at them; where each
file lies in that folder is :class:`streamrestore.model_files.EvalModelFiles`'s to say.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from streamrestore.errors import ModelError
from streamrestore.faces.mobilefacenet import (
    INPUT_SIZE,
    arcface_prescale_size,
    ffhq_to_arcface_matrix,
)
from streamrestore.model_files import EvalModelFiles

#: Face box (x1, y1, x2, y2) as a fraction of an FFHQ-aligned crop, given to dlib's shape
#: predictor instead of running its detector. Measured: mean dlib HOG box on the 24 frontal
#: 512-px crops of the instantrestore demo set was (100, 157, 404, 460) px.
DLIB_FACE_BOX = (100 / 512, 157 / 512, 404 / 512, 460 / 512)


def _check_crop(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (R, R, 3) RGB crop, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    return image


def arcface_crop(image: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace-aligned crop (uint8 RGB) of an FFHQ-aligned crop ``(R, R, 3)``.

    Large crops are first shrunk with area averaging to the size where the warp is about 1:1,
    which avoids aliasing (the differentiable training version does the same with antialiased
    interpolation).
    """
    image = _check_crop(image)
    size = image.shape[0]
    target = arcface_prescale_size()
    if size > target:
        image = cv2.resize(image, (target, target), interpolation=cv2.INTER_AREA)
        size = target
    return cv2.warpAffine(image, ffhq_to_arcface_matrix(size), (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) (or (D,)) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


class Embedder(Protocol):
    """Something that turns FFHQ-aligned crops into identity vectors."""

    name: str

    def embed(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray: ...


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} not found at {path}; pass the folder that holds it with --models DIR")
    return path


class OnnxEmbedder:
    """An ArcFace-style ONNX embedder (112x112 input, (x - 127.5) / 127.5).

    Args:
        path: the ``.onnx`` file.
        channel_order: ``"rgb"`` or ``"bgr"``: what the network was trained on (the paddle
            MobileFaceNet wants BGR, the insightface/foamliu one RGB).
        name: label used in reports (default: the file stem).
    """

    def __init__(self, path: str | Path, channel_order: str = "rgb", name: str | None = None):
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        from streamrestore.faces.detect import onnxruntime_module  # noqa: PLC0415  (heavy: when a judge is built)

        ort = onnxruntime_module()

        self.path = _require_file(path, "face-embedding model")
        self.channel_order = channel_order
        self.name = name or self.path.stem
        try:
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            raise ModelError(f"cannot load {self.path} as an ONNX model: {exc}") from exc
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        # some exports fix the batch at 1 (a Reshape to [1, -1]): feed them one crop at a time
        self._batch_one = isinstance(inp.shape[0], int) and inp.shape[0] == 1

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB ArcFace crops -> (N, D) float32 embeddings."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected (N, 112, 112, 3) crops, got {crops.shape}")
        if self.channel_order == "bgr":
            crops = crops[..., ::-1]
        x = ((crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if self._batch_one:
            out = [self._session.run(None, {self._input_name: x[i : i + 1]})[0] for i in range(len(x))]
            return np.concatenate(out, 0).reshape(len(x), -1)
        return self._session.run(None, {self._input_name: x})[0].reshape(len(x), -1)

    def embed(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """FFHQ-aligned uint8 RGB crops (a list or an (N, R, R, 3) array) -> (N, D) embeddings."""
        return self.embed_crops(np.stack([arcface_crop(im) for im in images]))


class DlibCropEmbedder:
    """dlib's ResNet face descriptor on FFHQ-aligned crops (the pipeline's
    :class:`streamrestore.faces.identity.DlibEmbedder` takes whole frames and detected faces).

    The 5-point shape is predicted by dlib's 5-landmark model inside the fixed box
    :data:`DLIB_FACE_BOX` (no detector), then dlib aligns its own 150-px chip from it.

    Args:
        recognition_model: ``dlib_face_recognition_resnet_model_v1.dat``; default: the copy in
            the installed ``face_recognition_models`` package.
        shape_predictor: ``shape_predictor_5_face_landmarks.dat``; default as above.
        name: label used in reports.
    """

    def __init__(self, recognition_model: str | Path | None = None, shape_predictor: str | Path | None = None, name: str = "dlib"):
        import dlib  # noqa: PLC0415

        if recognition_model is None or shape_predictor is None:
            from streamrestore.faces.detect import face_recognition_models_dir  # noqa: PLC0415

            folder = face_recognition_models_dir()
            recognition_model = recognition_model or folder / "dlib_face_recognition_resnet_model_v1.dat"
            shape_predictor = shape_predictor or folder / "shape_predictor_5_face_landmarks.dat"
        self._recognizer = dlib.face_recognition_model_v1(str(_require_file(recognition_model, "dlib recognition model")))
        self._predictor = dlib.shape_predictor(str(_require_file(shape_predictor, "dlib shape predictor")))
        self._dlib = dlib
        self.name = name

    def embed(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """FFHQ-aligned uint8 RGB crops -> (N, 128) dlib descriptors."""
        out = []
        for image in images:
            image = np.ascontiguousarray(_check_crop(image))
            size = image.shape[0]
            x1, y1, x2, y2 = (round(v * size) for v in DLIB_FACE_BOX)
            shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2, y2))
            out.append(np.asarray(self._recognizer.compute_face_descriptor(image, shape), dtype=np.float32))
        return np.stack(out)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """dlib's own measure: Euclidean distance; < 0.6 means "same person"."""
        return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def identity_similarity(embedder: Embedder, restored: list[np.ndarray] | np.ndarray, reference: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Cosine similarity, pair by pair, between the embeddings of two lists of aligned crops."""
    if len(restored) != len(reference):
        raise ValueError(f"got {len(restored)} restored images but {len(reference)} references")
    return cosine_similarity(embedder.embed(restored), embedder.embed(reference))


class LandmarkDetector:
    """SCRFD face detector used only for its 5 landmarks (landmark distance, LMD).

    Each crop is resized to ``working_size`` before detection, so landmarks come back in
    pixels of a ``working_size`` crop whatever the restorer's resolution (default 512, the
    paper's and FFHQ's size).

    Args:
        path: an SCRFD ``.onnx`` (e.g. :attr:`EvalModelFiles.landmark_detector`, SCRFD-500M).
        working_size: side of the crop the detector sees and the unit of the returned pixels.
        threshold: detection score below which a crop counts as "no face" (landmarks NaN).
        det_size: the detector's input side. An aligned crop is nearly all face, larger than
            the faces SCRFD was trained on: at 640 SCRFD-500M scored the 24 instantrestore
            gt/degraded crops 0.10-0.73 (many misses), at 320 0.74-0.88 (all found).
    """

    def __init__(self, path: str | Path, working_size: int = 512, threshold: float = 0.3, det_size: int = 320):
        if working_size < 64:
            raise ValueError(f"working_size must be >= 64, got {working_size}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if det_size < 64 or det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32 and >= 64, got {det_size}")
        from insightface.model_zoo import get_model  # noqa: PLC0415

        self.path = _require_file(path, "SCRFD detector")
        self.working_size = working_size
        try:
            self._model = get_model(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load {self.path} as an SCRFD detector: {exc}") from exc
        if self._model is None or not hasattr(self._model, "detect"):
            raise ModelError(f"{self.path} is not a face detector; pass an SCRFD .onnx")
        self._model.prepare(ctx_id=-1, input_size=(det_size, det_size), det_thresh=threshold)

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """(5, 2) landmarks of the most confident face in pixels of a ``working_size`` crop.

        NaN when no face is found (heavily degraded inputs), so averages can skip it.
        """
        image = _check_crop(image)
        if image.shape[0] != self.working_size:
            interp = cv2.INTER_AREA if image.shape[0] > self.working_size else cv2.INTER_CUBIC
            image = cv2.resize(image, (self.working_size, self.working_size), interpolation=interp)
        bgr = np.ascontiguousarray(image[..., ::-1])  # insightface models take OpenCV's BGR
        boxes, kps = self._model.detect(bgr, max_num=1)
        if kps is None or len(boxes) == 0:
            return np.full((5, 2), np.nan)
        return np.asarray(kps[0], dtype=np.float64)


def load_judges(models_dir: str | Path, with_dlib: bool = True) -> dict[str, Embedder]:
    """The evaluation embedders keyed as the report columns: ``mobilefacenet``, ``paddle``, ``dlib``.

    ``models_dir`` is the evaluation models folder (:class:`~streamrestore.model_files.EvalModelFiles`).
    """
    files = EvalModelFiles.from_dir(models_dir)
    if not files.root.is_dir():
        raise ModelError(f"models folder {files.root} does not exist; pass --models DIR (the evaluation models folder)")
    judges: dict[str, Embedder] = {
        "mobilefacenet": OnnxEmbedder(files.mobilefacenet, "rgb", "mobilefacenet"),
        "paddle": OnnxEmbedder(files.paddle, "bgr", "paddle"),
    }
    if with_dlib:
        judges["dlib"] = DlibCropEmbedder()
    return judges


def load_landmark_detector(models_dir: str | Path, working_size: int = 512) -> LandmarkDetector:
    """The LMD detector (SCRFD-500M) of the evaluation models folder ``models_dir``."""
    return LandmarkDetector(EvalModelFiles.from_dir(models_dir).landmark_detector, working_size=working_size)
