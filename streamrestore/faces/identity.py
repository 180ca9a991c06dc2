"""Face identity: embeddings, and matching tracks to named reference sets.

An embedder turns detected faces into L2-normalised vectors whose cosine similarity is high
for the same person. :class:`IdentityMatcher` collects a few embeddings per track and assigns
the track to the reference set it resembles most, if it resembles one enough; the pipeline
then restores that track with that set's reference photos.
"""
from __future__ import annotations

import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Hashable, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from streamrestore.errors import ModelError
from streamrestore.faces.align import ARCFACE_TEMPLATE_112, arcface_matrix, similarity_transform, template
from streamrestore.faces.detect import (
    dlib_module,
    face_recognition_models_dir,
    find_model_pack,
    insightface_model_zoo,
    onnx_providers,
    onnx_session_options,
)
from streamrestore.types import Face

__all__ = [
    "FaceEmbedder",
    "InsightfaceEmbedder",
    "DlibEmbedder",
    "create_embedder",
    "default_threshold",
    "ReferenceSet",
    "IdentityMatcher",
]

logger = logging.getLogger(__name__)

# Cosine-similarity thresholds above which two faces count as the same person, per embedder.
# Measured on 81 shared photos of 22 people (deepface identity groups, face_recognition knn
# folders and portraits, facenet_pytorch, liveportrait/dlib portraits; largest SCRFD face each):
#   mobilefacenet_128d: same person mean 0.76, min 0.48 (175 pairs); different people mean
#     0.03, 99th pct 0.28, max 0.50 (a look-alike pair; 3065 pairs). At 0.40 no same-person
#     pair is rejected and 0.16% of different-person pairs are accepted.
#   dlib (descriptors L2-normalised, so every face scores high): same mean 0.97, min 0.93;
#     different mean 0.83, 99th pct 0.90, max 0.93. At 0.925 no same pair is rejected and
#     0.33% of different pairs are accepted.
_THRESHOLDS = {
    "insightface:mobilefacenet_128d": 0.40,
    "dlib": 0.925,
}
# Scores under which a face restored toward a set is said to look like someone else (the run's
# summary warns), where they differ from the thresholds above. dlib: frames of a video and restored
# faces of the person in the photos score lower than other photos of them do (0.87-0.90 on a phone
# user's own HLG clip and HEIC photos: warned on every run); under 0.85, near the different-people
# mean (0.83), the face is likelier someone else's.
_UNLIKE_BELOW = {"dlib": 0.85}
# For insightface recognition models not measured here (e.g. buffalo_l's w600k_r50): ArcFace
# models put different people near 0 and the same person well above 0.4.
_GENERIC_ARCFACE_THRESHOLD = 0.3


def default_threshold(embedder_name: str) -> float:
    """The same-person cosine threshold for embeddings made by the embedder of that name."""
    if embedder_name in _THRESHOLDS:
        return _THRESHOLDS[embedder_name]
    if embedder_name.startswith("insightface:"):
        return _GENERIC_ARCFACE_THRESHOLD
    raise ValueError(f"no default threshold for embedder {embedder_name!r}; pass threshold=")


@runtime_checkable
class FaceEmbedder(Protocol):
    """Embeds faces of one RGB uint8 image; returns (N, D) float32 rows of unit length."""

    name: str

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class InsightfaceEmbedder:
    """An insightface recognition model (ArcFace-style 112x112 crops, RGB input)."""

    def __init__(self, model_file: str | Path, *, providers: Sequence[str] | None = None):
        get_model = insightface_model_zoo().get_model
        self.model_file = Path(model_file)
        try:
            self._model = get_model(str(self.model_file),
                                    providers=list(providers) if providers is not None else onnx_providers(),
                                    sess_options=onnx_session_options())
        except Exception as error:  # onnxruntime raises many types for a bad file
            raise ModelError(f"cannot load face recognition model {self.model_file}: {error}") from error
        if self._model is None or getattr(self._model, "taskname", None) != "recognition":
            raise ModelError(f"{self.model_file} is not an insightface recognition model")
        self.name = f"insightface:{self.model_file.stem}"
        self.threshold = default_threshold(self.name)
        self._batch = self._model.session.get_inputs()[0].shape[0]

    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 RGB crop the model sees (same geometry as insightface's norm_crop)."""
        matrix = arcface_matrix(face.kps)
        return cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0)

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self._model.output_shape[1]), dtype=np.float32)
        # get_feat expects BGR (it swaps to RGB for the network).
        crops = [np.ascontiguousarray(self.crop(image, face)[:, :, ::-1]) for face in faces]
        return self._features(crops)

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """Unit embeddings of FFHQ-aligned face crops ``(N, R, R, 3)`` uint8 RGB (the restorer's
        crops, :func:`streamrestore.faces.align.crop_face`), warped to the model's 112-px crop."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"expected (N, R, R, 3) aligned crops, got shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self._model.output_shape[1]), dtype=np.float32)
        matrix = similarity_transform(template(crops.shape[1]), ARCFACE_TEMPLATE_112)
        return self._features([np.ascontiguousarray(cv2.warpAffine(c, matrix, (112, 112))[:, :, ::-1]) for c in crops])

    def _features(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit embeddings of 112-px BGR crops (get_feat swaps them to RGB for the network)."""
        if isinstance(self._batch, int):  # exported with a fixed batch size (1 for the shared pack)
            features = np.concatenate([self._model.get_feat([c]) for c in crops])
        else:
            features = self._model.get_feat(crops)
        return _normalise(features)


class DlibEmbedder:
    """dlib's ResNet face descriptor (face_recognition_models), landmarks from dlib's 5-point
    predictor inside the detector's box (it needs its own landmark layout)."""

    name = "dlib"

    def __init__(self, *, models_dir: str | Path | None = None):
        dlib = dlib_module()

        folder = Path(models_dir) if models_dir is not None else face_recognition_models_dir()
        predictor = folder / "shape_predictor_5_face_landmarks.dat"
        network = folder / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (predictor, network):
            if not path.is_file():
                raise ModelError(f"dlib model {path} not found; reinstall face_recognition_models")
        self._predictor = dlib.shape_predictor(str(predictor))
        self._network = dlib.face_recognition_model_v1(str(network))
        self._rectangle = dlib.rectangle
        self.threshold = default_threshold(self.name)

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        image = np.ascontiguousarray(image)
        rows = []
        for face in faces:
            x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
            shape = self._predictor(image, self._rectangle(x1, y1, x2, y2))
            rows.append(np.asarray(self._network.compute_face_descriptor(image, shape), dtype=np.float32))
        return _normalise(np.stack(rows)) if rows else np.zeros((0, 128), dtype=np.float32)


def _recognition_file(pack: Path) -> Path | None:
    """The recognition model of an insightface pack: the first non-detector ONNX model whose
    input is a 112x112 image (landmark and gender/age models have other input sizes).

    Raises:
        ModelError: none is, and a model of the pack cannot be read: a damaged recognition model was taken
            for a missing one, and the run went on with dlib's descriptors and the identity gate off (support F5).
    """
    from streamrestore.faces.detect import onnxruntime_module

    onnxruntime = onnxruntime_module()

    unreadable: list[str] = []
    for path in sorted(pack.glob("*.onnx")):
        if path.name.startswith("det_"):
            continue
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # not a model we can read; look at the next one
            unreadable.append(f"{path} ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})")
            continue
        shape = session.get_inputs()[0].shape
        if len(shape) == 4 and shape[2] == 112 and shape[3] == 112:
            return path
    if unreadable:
        raise ModelError(f"cannot load the face models' recognition model: {'; '.join(unreadable)}; the file may be "
                         "damaged: copy the model pack again (--face-models DIR)")
    return None


def create_embedder(kind: str = "auto", *, models_dir: str | Path | None = None) -> FaceEmbedder:
    """Build an embedder: ``"insightface"`` (the pack's recognition model), ``"dlib"`` (ResNet
    descriptor from face_recognition_models) or ``"auto"`` (insightface when a pack with a
    recognition model is found in ``models_dir`` or ``~/.insightface/models``, else dlib)."""
    if kind not in ("auto", "insightface", "dlib"):
        raise ValueError(f"kind must be 'auto', 'insightface' or 'dlib', got {kind!r}")
    if kind == "dlib":
        return DlibEmbedder()
    pack = find_model_pack(models_dir)
    model_file = _recognition_file(pack) if pack is not None else None
    if model_file is not None:
        return InsightfaceEmbedder(model_file)
    if kind == "auto":
        logger.info("no insightface recognition model found; using dlib face descriptors")
        return DlibEmbedder()
    raise ModelError(
        f"no insightface recognition model found (searched {pack or '~/.insightface/models'}); "
        "point --face-models at a model pack or use the dlib embedder"
    )


@dataclass
class ReferenceSet:
    """The reference photos of one person, ready for the restorer and the matcher.

    ``crops``: (N, R, R, 3) uint8 RGB, aligned on the FFHQ template; ``embeddings``: (N, D)
    unit rows in the same order; ``files``: where each came from; ``embedder``: the name of
    the embedder that made ``embeddings`` (selects the default match threshold); ``crops_at``:
    the same photos aligned at other sides, by side, where they were loaded for several (empty:
    other sides are resized from ``crops``); ``skipped``: the files of the folder not used, each
    with why (``"wall.png (no face)"``, ``"scan.tif (not readable)"``).
    """

    name: str
    crops: np.ndarray
    embeddings: np.ndarray
    files: list[str]
    embedder: str | None = None
    crops_at: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a set pickled by an older version lacks the fields added since, which take their
        defaults (a service that kept its sets on disk across an upgrade met an AttributeError mid-run)."""
        for known in fields(self):
            if known.name not in state:
                if known.default is not MISSING:
                    state[known.name] = known.default
                elif known.default_factory is not MISSING:
                    state[known.name] = known.default_factory()
        self.__dict__.update(state)


@dataclass
class _TrackSamples:
    embeddings: list[np.ndarray] = field(default_factory=list)
    decided: bool = False
    identity: str | None = None
    scores: dict = field(default_factory=dict)  # each set's score for the samples so far
    mean: np.ndarray | None = None  # the samples' unit mean, once decided (what a later face is checked against)
    unlike_in_a_row: int = 0  # later checks in a row that found someone else (IdentityMatcher.another_person)


#: a face of a decided track scoring under this against the track's own first faces is someone else's (the
#: face of a track whose person changed under it: a dissolve between two close-ups, a face passing in front):
#: the largest face of 44 shared single-person clips, every 4th frame against its first 5, scored 0.50 at least
#: (1831 faces); two clips that cut to another person dropped to -0.03-0.25 at the cut; different people's
#: faces 0.02 at the median, 0.20 at the 95th percentile (MobileFaceNet)
ANOTHER_PERSON_BELOW = 0.25
#: checks in a row under it before the track is taken for another person's (one face blurred or turned is not)
ANOTHER_PERSON_CHECKS = 2
#: embedders for which no such level was measured: no check (dlib's descriptors score different people ~0.83)
_NO_ANOTHER_PERSON_CHECK = {"dlib"}


class IdentityMatcher:
    """Decides which reference set (if any) each track shows.

    A track's embedding samples are averaged; each set scores the mean of its ``top_k`` best
    cosine similarities to that average (robust to a set mixing poses); the best set wins if
    it scores at least ``threshold``. Until ``samples_per_track`` samples are in, the answer
    is provisional; afterwards it is frozen, so a restored face never switches identity.

    ``threshold`` defaults to the measured value for the embedder recorded in the sets.
    """

    def __init__(self, reference_sets: Sequence[ReferenceSet], *, threshold: float | None = None,
                 samples_per_track: int = 5, top_k: int = 3):
        if samples_per_track < 1:
            raise ValueError(f"samples_per_track must be >= 1, got {samples_per_track!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        names = [s.name for s in reference_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"reference set names must be unique, got {names}")
        dims = {s.embeddings.shape[1] for s in reference_sets if len(s.embeddings)}
        if len(dims) > 1:
            raise ValueError(f"reference sets have embeddings of different sizes {sorted(dims)}")
        unlike_below = threshold
        if threshold is None:
            embedders = {s.embedder for s in reference_sets}
            if len(embedders) > 1:
                raise ValueError(f"reference sets were embedded by different embedders {embedders}")
            embedder = next(iter(embedders), None)
            threshold = default_threshold(embedder) if embedder else _GENERIC_ARCFACE_THRESHOLD
            unlike_below = _UNLIKE_BELOW.get(embedder or "", threshold)
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        self.threshold = float(threshold)
        #: a track restored toward a set it scores below this is reported as perhaps someone else
        #: (``threshold`` but for embedders whose restored and video faces score lower: dlib)
        self.unlike_below = float(unlike_below)
        self.samples_per_track = int(samples_per_track)
        self.top_k = int(top_k)
        #: whether a decided track's later faces are checked for another person's (another_person)
        self.checks_another_person = not any(s.embedder in _NO_ANOTHER_PERSON_CHECK for s in reference_sets)
        self._sets = [(s.name, _normalise(s.embeddings)) for s in reference_sets if len(s.embeddings)]
        self._tracks: dict[Hashable, _TrackSamples] = {}

    def needs_embedding(self, track_id: Hashable) -> bool:
        """True until the track has ``samples_per_track`` samples (so not every frame is embedded)."""
        if not self._sets:
            return False
        samples = self._tracks.get(track_id)
        return samples is None or not samples.decided

    def observe(self, track_id: Hashable, embedding: np.ndarray) -> None:
        """Add one embedding (D,) of the track's face; ignored once the identity is decided."""
        samples = self._tracks.setdefault(track_id, _TrackSamples())
        if samples.decided:
            return
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(vector)):
            raise ValueError(f"embedding of track {track_id!r} has non-finite values")
        samples.embeddings.append(vector)
        samples.scores = self.scores(samples.embeddings) if self._sets else {}
        samples.identity = self._pick(samples.scores)
        if len(samples.embeddings) >= self.samples_per_track:
            samples.decided = True
            samples.mean = _normalise(np.mean(_normalise(np.asarray(samples.embeddings)), axis=0))
            samples.embeddings = []  # no longer needed

    def another_person(self, track_id: Hashable, embedding: np.ndarray) -> bool:
        """Whether a decided track's face ``embedding`` (a later one, checked now and then) is, with the checks
        before it, someone else's than the faces it was decided on: :data:`ANOTHER_PERSON_CHECKS` in a row under
        :data:`ANOTHER_PERSON_BELOW` against their mean. The tracker follows a place in the picture, and a
        dissolve between two people's close-ups kept one track: the second person was restored toward the
        first's photos, and left changed under ``--unmatched skip``. False for a track not decided, and for an
        embedder for which the level was not measured (dlib: :attr:`checks_another_person`)."""
        samples = self._tracks.get(track_id)
        if samples is None or samples.mean is None or not self.checks_another_person:
            return False
        vector = _normalise(np.asarray(embedding, dtype=np.float32).reshape(-1))
        unlike = float(vector @ samples.mean) < ANOTHER_PERSON_BELOW
        samples.unlike_in_a_row = samples.unlike_in_a_row + 1 if unlike else 0
        return samples.unlike_in_a_row >= ANOTHER_PERSON_CHECKS

    def scores(self, embeddings: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
        """Each set's score for a track with these embedding samples."""
        query = _normalise(np.mean(_normalise(np.asarray(embeddings)), axis=0))
        result = {}
        for name, set_embeddings in self._sets:
            similarities = np.sort(set_embeddings @ query)[::-1]
            result[name] = float(np.mean(similarities[: self.top_k]))
        return result

    def _pick(self, scores: dict[str, float]) -> str | None:
        if not scores:
            return None
        name = max(scores, key=scores.get)
        return name if scores[name] >= self.threshold else None

    def scores_of(self, track_id: Hashable) -> dict[str, float]:
        """Each set's similarity score for the track (as when its identity was decided); {} if unseen."""
        samples = self._tracks.get(track_id)
        return dict(samples.scores) if samples is not None else {}

    def identity_of(self, track_id: Hashable) -> str | None:
        """The reference set the track shows, or None (unknown track, no sample, no match)."""
        samples = self._tracks.get(track_id)
        return samples.identity if samples is not None else None

    def is_decided(self, track_id: Hashable) -> bool:
        """True once the track's identity is frozen."""
        samples = self._tracks.get(track_id)
        return samples is not None and samples.decided

    def forget(self, track_id: Hashable) -> None:
        """Drop a track that ended (tracks never come back after a cut or a long gap)."""
        self._tracks.pop(track_id, None)
