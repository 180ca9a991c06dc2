"""Drawn faces for tests that need *a* face, not a particular person's.

A face is drawn once on the 512x512 FFHQ template (eyes, nose tip and mouth corners exactly on
:data:`FFHQ_TEMPLATE_512`) and warped into a picture with a similarity transform, so its five
landmarks in the picture are known to a fraction of a pixel. Three people differ by hair colour
(dark blue, blond, teal) and skin tone.

:class:`SyntheticFaceDetector` finds these faces again from their colours: each skin-coloured
region with two blue irises and red lips inside is a face, and the similarity that carries the
template's eye centres and mouth centre onto the irises and the lips gives all five landmarks.
It needs no model files, works on frames, photos and crops alike (after video compression too),
and finds nothing in pictures without a drawn face. :class:`SyntheticFaceEmbedder` tells the
people apart by the colour of the hair above the forehead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from streamrestore.faces.align import FFHQ_TEMPLATE_512, alignment_matrix, similarity_transform
from streamrestore.types import Face

T = FFHQ_TEMPLATE_512
EYE_DISTANCE_512 = float(T[1, 0] - T[0, 0])  # ~126 px on the template
MOUTH_CENTRE_512 = (T[3] + T[4]) / 2
FACE_CENTRE_512 = np.array([256.0, 300.0])
FACE_AXES_512 = (112, 150)  # the skin ellipse's half width and half height
HAIR_CENTRE_512, HAIR_AXES_512 = np.array([256.0, 262.0]), (132, 168)
# the face's box on the template: where SCRFD puts it on FFHQ-aligned faces (median over photos)
BOX_512 = np.array([129.0, 92.0, 403.0, 472.0])
# where the embedder reads the hair colour (template pixels between the hair's top and the forehead)
HAIR_PATCH_512 = (slice(104, 140), slice(226, 288))

IRIS = (40, 80, 205)
PUPIL = (20, 30, 110)
LIPS = (200, 45, 65)


@dataclass(frozen=True)
class Person:
    name: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]


PEOPLE = {
    "ann": Person("ann", skin=(228, 180, 148), hair=(40, 40, 150)),
    "ben": Person("ben", skin=(200, 146, 110), hair=(196, 170, 60)),
    "cal": Person("cal", skin=(214, 164, 126), hair=(70, 190, 170)),
}


@lru_cache(maxsize=None)
def _sprite(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(512, 512, 3) uint8 RGB of one person's head on the template and its (512, 512) float alpha."""
    person = PEOPLE[name]
    s = 4  # drawn at 4x with fractional coordinates (cv2 shift), then shrunk: smooth edges
    big = np.zeros((512 * s, 512 * s, 3), np.uint8)
    alpha = np.zeros((512 * s, 512 * s), np.uint8)

    def pt(p) -> tuple[int, int]:
        return int(round(p[0] * s * 16)), int(round(p[1] * s * 16))

    def ellipse(centre, axes, colour, angle=0.0, target=big):
        cv2.ellipse(target, pt(centre), (int(axes[0] * s * 16), int(axes[1] * s * 16)), angle, 0, 360, colour,
                    -1, cv2.LINE_AA, 4)

    ellipse(HAIR_CENTRE_512, HAIR_AXES_512, person.hair)
    ellipse(HAIR_CENTRE_512, HAIR_AXES_512, 255, target=alpha)
    ellipse(FACE_CENTRE_512, FACE_AXES_512, person.skin)
    ellipse(FACE_CENTRE_512, FACE_AXES_512, 255, target=alpha)
    shade = tuple(int(c * 0.8) for c in person.skin)
    brow = (70, 45, 35)
    for eye in (T[0], T[1]):
        cv2.line(big, pt(eye + (-26, -36)), pt(eye + (26, -36)), brow, 10 * s, cv2.LINE_AA, 4)
        ellipse(eye, (27, 14), (245, 245, 240))
        ellipse(eye, (12, 12), IRIS)
        ellipse(eye, (5, 5), PUPIL)
    nose = T[2]
    cv2.fillConvexPoly(big, np.array([pt(nose + (0, -62)), pt(nose + (-20, 4)), pt(nose + (20, 4))]), shade,
                       cv2.LINE_AA, 4)
    ellipse(nose + (-10, 4), (6, 4), (120, 70, 60))
    ellipse(nose + (10, 4), (6, 4), (120, 70, 60))
    ellipse(MOUTH_CENTRE_512, ((T[4, 0] - T[3, 0]) / 2, 13), LIPS)
    cv2.line(big, pt(T[3]), pt(T[4]), (120, 25, 40), 2 * s, cv2.LINE_AA, 4)
    rgb = cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, (512, 512), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return rgb, a


def face_matrix(centre: Sequence[float], eye_distance: float, roll_degrees: float = 0.0) -> np.ndarray:
    """(2, 3) template -> picture similarity: the face centred at ``centre`` (the middle of the
    eyes-and-mouth triangle), ``eye_distance`` pixels between the eyes, turned by ``roll_degrees``."""
    scale = eye_distance / EYE_DISTANCE_512
    a = math.radians(roll_degrees)
    linear = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    anchor = (T[0] + T[1] + MOUTH_CENTRE_512) / 3
    return np.hstack([linear, (np.asarray(centre, float) - linear @ anchor)[:, None]])


def landmarks(matrix: np.ndarray) -> np.ndarray:
    """The (5, 2) landmarks of a face drawn with ``matrix`` (see :func:`face_matrix`)."""
    return T @ matrix[:, :2].T + matrix[:, 2]


def background(width: int, height: int, index: int = 0, grain: bool = False) -> np.ndarray:
    """A grey-green textured backdrop (gradients, fixed noise, stripes drifting with ``index``):
    no skin, blue or red in it, and enough texture that a codec keeps it recognisable.
    ``grain``: the noise changes from frame to frame (a clip that does not compress)."""
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7 + index * grain).integers(0, 24, size=(height, width))
    base = 70 + (x * 60) // max(1, width - 1) + (y * 40) // max(1, height - 1) + noise
    stripes = (((x + 2 * index) // 6) % 2) * 18
    grey = np.clip(base + stripes, 0, 255)
    return np.stack([grey, np.clip(grey + 12, 0, 255), grey], axis=-1).astype(np.uint8)


def draw_faces(canvas: np.ndarray, faces: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """Draws ``(person name, template -> picture matrix)`` faces onto ``canvas`` (RGB uint8, in
    place) and returns their landmarks, in the order given."""
    h, w = canvas.shape[:2]
    out = canvas.astype(np.float32)
    kps = []
    for name, matrix in faces:
        rgb, alpha = _sprite(name)
        warped = cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32)
        a = cv2.warpAffine(alpha, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        out = out * (1 - a) + warped * a
        kps.append(landmarks(matrix))
    canvas[:] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return kps


def scene(width: int, height: int, faces: Sequence[tuple[str, np.ndarray]], index: int = 0, grain: bool = False
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A backdrop with faces drawn on it: (RGB picture, landmarks of each face)."""
    canvas = background(width, height, index, grain)
    return canvas, draw_faces(canvas, faces)


def moving_face(index: int, frames: int, width: int, height: int, person: str = "ann", size: float = 0.26
                ) -> tuple[str, np.ndarray]:
    """The face of frame ``index`` of a clip: drifts left to right, grows and shrinks by 10 %,
    rolls up to 6 degrees; its eye distance is ``size`` times the picture's smaller side."""
    t = index / max(1, frames - 1)
    eye = size * min(width, height) * (1.0 + 0.1 * math.sin(2 * math.pi * t))
    centre = (width * (0.42 + 0.16 * t), height * (0.5 + 0.04 * math.sin(3 * math.pi * t)))
    return person, face_matrix(centre, eye, 6.0 * math.sin(2 * math.pi * t))


def face_frames(frames: int = 16, width: int = 160, height: int = 120, person: str = "ann", grain: bool = False,
                size: float = 0.26) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames`` RGB pictures of one moving face and its (5, 2) landmarks in each (``grain``:
    see :func:`background`; ``size``: see :func:`moving_face`)."""
    pictures, truth = [], []
    for i in range(frames):
        rgb, (kps,) = scene(width, height, [moving_face(i, frames, width, height, person, size)], i, grain)
        pictures.append(rgb)
        truth.append(kps)
    return pictures, truth


def two_people(width: int = 320, height: int = 160, shift: tuple[float, float] = (0.0, 0.0)
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ann on the left and Ben on the right: (RGB picture, [ann's landmarks, ben's])."""
    dx, dy = shift
    eye = 0.2 * min(width, height)
    faces = [("ann", face_matrix((width * 0.27 + dx, height * 0.5 + dy), eye, -4.0)),
             ("ben", face_matrix((width * 0.73 + dx, height * 0.5 + dy), eye * 1.1, 5.0))]
    return scene(width, height, faces)


def _portrait_matrix(size: int, variant: int) -> np.ndarray:
    eye = size * (0.3 + 0.02 * variant)
    centre = (size * (0.5 + 0.03 * variant), size * (0.52 - 0.02 * variant))
    return face_matrix(centre, eye, 4.0 * variant - 3.0)


def portrait(person: str, size: int = 192, variant: int = 0) -> np.ndarray:
    """A reference photo: ``person``'s face filling about half of a ``size`` square picture;
    ``variant`` changes the pose a little."""
    rgb, _ = scene(size, size, [(person, _portrait_matrix(size, variant))], variant)
    return rgb


def aligned_face(person: str, size: int = 512, variant: int = 0) -> np.ndarray:
    """``person``'s face aligned on the FFHQ template at ``size`` px, as an aligned photo is:
    :func:`portrait` cut out through its known landmarks (border: its backdrop)."""
    to_crop = alignment_matrix(landmarks(_portrait_matrix(256, variant)), size)
    return cv2.warpAffine(portrait(person, 256, variant), to_crop, (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


def write_portraits(folder: Path, person: str, count: int = 2) -> Path:
    """``count`` reference photos of ``person`` as PNG files in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{person}{i + 1}.png"), portrait(person, variant=i)[:, :, ::-1])
    return folder


# --- finding them again --------------------------------------------------------------------


def _masks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skin, iris and lip masks (uint8 0/1) of an RGB picture."""
    r, g, b = (image[..., i].astype(np.int16) for i in range(3))
    skin = (r > 150) & (r - g >= 25) & (r - g <= 80) & (g - b >= 15) & (g - b <= 60)
    iris = (b - r >= 60) & (b - g >= 40)
    lips = (r - g >= 100) & (r - b >= 80)
    return skin.astype(np.uint8), iris.astype(np.uint8), lips.astype(np.uint8)


def _blobs(mask: np.ndarray, min_area: int) -> list[tuple[float, np.ndarray]]:
    """(area, centroid) of each 8-connected blob of at least ``min_area`` pixels, largest first."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    found = [(float(stats[i, cv2.CC_STAT_AREA]), centroids[i]) for i in range(1, count)
             if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return sorted(found, key=lambda blob: -blob[0])


class SyntheticFaceDetector:
    """Finds the drawn faces of this module (see the module's doc); a
    :class:`streamrestore.faces.detect.Detector`. ``min_eye_distance``: smaller faces are not
    reported (their irises are a few pixels)."""

    name = "synthetic"

    def __init__(self, min_eye_distance: float = 8.0, score: float = 0.99):
        self.min_eye_distance = float(min_eye_distance)
        self.score = float(score)
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError(f"expected an RGB uint8 picture, got {getattr(image, 'shape', image)!r}")
        self.calls += 1
        skin, iris, lips = _masks(image)
        # a face is the convex hull of a skin region (the skin ellipse with eyes and lips in it)
        contours, _ = cv2.findContours(skin, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        faces = []
        for contour in contours:
            hull = cv2.convexHull(contour)
            area = cv2.contourArea(hull)
            if area < 150:
                continue
            region = np.zeros_like(skin)
            cv2.fillConvexPoly(region, hull, 1)
            # irises and lips are small parts of a face (blue hair next to the face is not an iris)
            eyes = [blob for blob in _blobs(iris & region, 3) if blob[0] <= area / 25][:2]
            mouth = [blob for blob in _blobs(lips & region, 4) if blob[0] <= area / 5][:1]
            if len(eyes) < 2 or not mouth or eyes[0][0] > 3 * eyes[1][0]:
                continue
            (_, e1), (_, e2) = eyes
            left, right = sorted([e1, e2], key=lambda p: p[0])
            mouth_centre = mouth[0][1]
            eye_distance = float(np.hypot(*(right - left)))
            if eye_distance < self.min_eye_distance:
                continue
            # the mouth sits ~1 eye distance below the eyes' midpoint on the template
            below = float(np.hypot(*(mouth_centre - (left + right) / 2))) / eye_distance
            if not 0.7 < below < 1.4:
                continue
            matrix = similarity_transform(np.stack([T[0], T[1], MOUTH_CENTRE_512]),
                                          np.stack([left, right, mouth_centre]))
            corners = np.array([[BOX_512[0], BOX_512[1]], [BOX_512[2], BOX_512[1]],
                                [BOX_512[0], BOX_512[3]], [BOX_512[2], BOX_512[3]]])
            mapped = corners @ matrix[:, :2].T + matrix[:, 2]
            box = np.concatenate([mapped.min(axis=0), mapped.max(axis=0)]).astype(np.float32)
            faces.append(Face(box=box, kps=landmarks(matrix).astype(np.float32), score=self.score))
        faces.sort(key=lambda f: (-f.score, float(f.box[0])))
        return faces


class UprightFaceDetector(SyntheticFaceDetector):
    """The drawn-face detector made to report only upright faces (eyes level, mouth below), as
    detectors trained on upright photos mostly do: a face in a picture stored turned (a phone's
    portrait video) is missed unless the picture is turned upright first."""

    def detect(self, image: np.ndarray) -> list[Face]:
        def upright(face: Face) -> bool:
            eyes = face.kps[1] - face.kps[0]
            return bool(eyes[0] > 2 * abs(eyes[1]) and face.kps[3:, 1].mean() > face.kps[:2, 1].mean())

        return [face for face in super().detect(image) if upright(face)]


class SyntheticFaceEmbedder:
    """Embeds a drawn face by its hair colour (read above the forehead on the aligned face): a
    :class:`streamrestore.faces.identity.FaceEmbedder`. The same person scores ~1.0, the three
    people of :data:`PEOPLE` below 0 against each other. Named as an insightface model so that
    the generic same-person threshold (0.3) applies to it."""

    name = "insightface:synthetic"
    threshold = 0.3

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        rows = []
        for face in faces:
            aligned = cv2.warpAffine(image, alignment_matrix(face.kps, 512), (512, 512), borderValue=(128, 128, 128))
            hair = aligned[HAIR_PATCH_512].reshape(-1, 3).astype(np.float32).mean(axis=0)
            rows.append(hair - 128.0)
        return _unit_rows(rows)

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """The same vectors from FFHQ-aligned crops (N, R, R, 3), as the identity gate asks."""
        rows = []
        for crop in np.asarray(crops):
            aligned = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR)
            rows.append(aligned[HAIR_PATCH_512].reshape(-1, 3).astype(np.float32).mean(axis=0) - 128.0)
        return _unit_rows(rows)


def _unit_rows(rows: list[np.ndarray]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 3), np.float32)
    vectors = np.stack(rows)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def install(monkeypatch=None) -> None:
    """Makes ``create_detector`` and ``create_embedder`` (what ``build_face_restorer``, the
    command line and the examples call) give the synthetic detector and embedder, whatever kind
    and model folder they are asked for. With a pytest ``monkeypatch``: undone after the test;
    without: for the rest of the process (a subprocess's entry point)."""
    import streamrestore.faces.detect as detect
    import streamrestore.faces.identity as identity

    def make_detector(*_args, **_kwargs):
        return SyntheticFaceDetector()

    def make_embedder(*_args, **_kwargs):
        return SyntheticFaceEmbedder()

    def any_folder(*_args, **_kwargs):  # (the model folder asked for is not looked at)
        return None

    if monkeypatch is not None:
        monkeypatch.setattr(detect, "create_detector", make_detector)
        monkeypatch.setattr(detect, "check_face_models", any_folder)
        monkeypatch.setattr(identity, "create_embedder", make_embedder)
    else:
        detect.create_detector = make_detector
        detect.check_face_models = any_folder
        identity.create_embedder = make_embedder
