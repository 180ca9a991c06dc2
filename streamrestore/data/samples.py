"""Training samples: a torch ``Dataset`` of (degraded target, clean target, references).

:class:`RestorationDataset` serves, from a :class:`~streamrestore.data.pack.PackedFaces`,
1-4 references of the same person (never the target itself), a reference mask and landmarks,
with seeded degradations from :mod:`streamrestore.data.degrade`.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from streamrestore.data.degrade import DegradationMix, degrade, get_preset
from streamrestore.data.pack import PackedFaces

__all__ = ["RestorationDataset", "jitter_reference", "IMAGE_KEYS", "images_to_float"]

#: the image entries of a sample (and of a batch of them)
IMAGE_KEYS = ("degraded", "target", "references")

#: Left/right partner of each of the 5 landmarks (for horizontal flips): eyes and mouth corners swap.
_FLIP_ORDER = np.array([1, 0, 2, 4, 3])


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    # (..., H, W, 3) -> contiguous (..., 3, H, W): torch CPU conv backward crashes on channels-last views
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, -3)))


def images_to_float(batch: dict) -> dict:
    """``batch`` (a sample or a collated batch) with its uint8 images (:data:`IMAGE_KEYS`) as
    float in [0, 1], converted where the tensors are (on the GPU once a batch is there); other
    entries, and images already float, are passed as they are."""
    out = dict(batch)
    for key in IMAGE_KEYS:
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
            out[key] = value.float().div_(255.0)
    return out


def _flip(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flipped = landmarks[_FLIP_ORDER].copy()
    flipped[:, 0] = 1.0 - flipped[:, 0] - 1.0 / image.shape[1]  # pixel centres mirror about (R-1)/2
    return np.ascontiguousarray(image[:, ::-1]), flipped


def jitter_reference(image: np.ndarray, rng: np.random.Generator, amount: float,
                     landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A reference as another photo of the person might be: slightly moved, turned, scaled and lit.

    At ``amount`` 1: up to 3 px of shift (at 128 px; in proportion at other sides), 4 degrees, 4 %
    of scale, ±20 % of light overall and ±7 % per channel, ±20 levels; the same draws at any
    amount, so 0 changes nothing. ``landmarks`` ((5, 2), x/y in [0, 1]) move with the face.
    Returns the float32 image (0-255) and the moved landmarks (None without them).
    """
    import cv2

    side = image.shape[0]
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-4, 4) * amount,
                                     1 + rng.uniform(-0.04, 0.04) * amount)
    matrix[:, 2] += rng.uniform(-3, 3, 2) * amount * side / 128
    moved = cv2.warpAffine(image.astype(np.float32), matrix, (side, side), borderMode=cv2.BORDER_REFLECT)
    gain = (1 + rng.uniform(-0.2, 0.2) * amount) * (1 + rng.uniform(-0.07, 0.07, 3) * amount)
    lit = np.clip(moved * gain + rng.uniform(-20, 20) * amount, 0, 255)
    if landmarks is None:
        return lit, None
    # pixel centres: landmark x in [0, 1] is pixel x * side (as _flip's mirror assumes)
    points = landmarks.astype(np.float64) * side
    points = points @ matrix[:, :2].T + matrix[:, 2]
    return lit, (points / side).astype(np.float32)


class RestorationDataset:
    """Training samples from a :class:`PackedFaces`: a torch ``Dataset`` (map-style).

    Sample ``i`` is deterministic given ``(seed, epoch, i)`` (:meth:`set_epoch` changes the
    draws between epochs). Each sample is a dict of tensors:

    - ``degraded``, ``target``: (3, R, R) float in [0, 1] (uint8 0-255 with ``uint8_images``);
    - ``references``: (max_refs, 3, R, R), zero beyond ``ref_count``; ``ref_mask``: (max_refs,)
      bool; ``ref_count``: int64; ``ref_indices``: (max_refs,) crop indices, -1 when padding;
    - ``landmarks``: (5, 2) of the target, ``ref_landmarks``: (max_refs, 5, 2), x/y in [0, 1];
    - ``identity``, ``index``: int64; ``flipped``: bool, whether the target was mirrored.

    References are other crops of the target's identity, never the target itself, and from the
    same clip only when at least ``min_time_gap_s`` apart from the target frame.

    Args:
        faces: the pack.
        identities: names to draw from (e.g. the train half of :meth:`PackedFaces.split`);
            default all.
        preset: degradation preset name or object (:mod:`streamrestore.data.degrade`), or a
            :class:`~streamrestore.data.degrade.DegradationMix` (one preset drawn per sample).
        min_refs, max_refs: the number of references is drawn uniformly in this range (capped
            by what the identity has); the paper uses 1-4.
        seed: base seed of all draws.
        samples_per_epoch: dataset length; default one sample per usable target crop.
        min_time_gap_s: least time between a target frame and a reference from the same clip.
        flip: mirror the target (with its degraded copy) and each reference independently
            with probability 1/2 (landmarks follow).
        max_border: leave out crops with more than this fraction of black border.
        video_faces: faces cut from whole degraded clips
            (:func:`streamrestore.train.video_faces.make_video_faces`: their own degraded and clean
            crops, landmarks, pack identity, source and time); a share ``video_weight`` of the
            samples is one of them (drawn at random) instead of a pack crop degraded by
            ``preset``. Their references are pack crops of the same person, from the same clip
            only when ``min_time_gap_s`` apart from the face's frame.
        video_weight: that share, in [0, 1) (0: no video faces, and the samples are what they
            were without them).
        reference_jitter: each reference moved, turned, scaled and relit by
            :func:`jitter_reference` at this amount (landmarks follow). The pack's references are
            mostly frames of the target's own clip, which a user's photos are not; 0 (the default)
            leaves them as they are.
        uint8_images: serve the images (:data:`IMAGE_KEYS`) as uint8, to be made float where the
            batch is used (:func:`images_to_float`: the same values on the CPU, on a GPU within a
            float32 rounding, as it divides by multiplying with the reciprocal): a quarter of the bytes
            through a loader's worker queues and the copy to the GPU (0.8 MB per sample as float
            at 128 px with two references). Default False: float in [0, 1].
    """

    def __init__(self, faces: PackedFaces, identities: Sequence[str] | None = None, *, preset="severe",
                 min_refs: int = 1, max_refs: int = 4, seed: int = 0, samples_per_epoch: int | None = None,
                 min_time_gap_s: float = 1.0, flip: bool = True, max_border: float = 1.0,
                 video_faces: dict[str, np.ndarray] | None = None, video_weight: float = 0.0,
                 reference_jitter: float = 0.0, uint8_images: bool = False):
        if not 1 <= min_refs <= max_refs:
            raise ValueError(f"need 1 <= min_refs <= max_refs, got {min_refs}, {max_refs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.faces = faces
        self.preset = preset if isinstance(preset, DegradationMix) else get_preset(preset)
        self.min_refs, self.max_refs = int(min_refs), int(max_refs)
        self.seed = int(seed)
        self.epoch = 0
        self.flip = flip
        if reference_jitter < 0:
            raise ValueError(f"reference_jitter must be >= 0, got {reference_jitter}")
        self.reference_jitter = float(reference_jitter)
        self.uint8_images = bool(uint8_images)
        wanted = set(faces.identities if identities is None else identities)
        unknown = wanted - set(faces.identities)
        if unknown:
            raise ValueError(f"identities not in the pack: {sorted(unknown)[:5]}")
        usable = faces.border <= max_border
        self._candidates: dict[int, np.ndarray] = {}
        for name in sorted(wanted):
            members = faces.indices_of(name)
            members = members[usable[members]]
            for t in members:
                refs = [int(r) for r in members if r != t and self._far_enough(int(t), int(r), min_time_gap_s)]
                if refs:
                    self._candidates[int(t)] = np.asarray(refs)
        self.targets = np.asarray(sorted(self._candidates), dtype=np.int64)
        if len(self.targets) == 0:
            raise ValueError("no target crop has a reference of the same identity; pack more photos per person")
        self.samples_per_epoch = int(samples_per_epoch or len(self.targets))
        if not 0.0 <= video_weight < 1.0:
            raise ValueError(f"video_weight must be in [0, 1), got {video_weight}")
        self.video_weight = float(video_weight) if video_faces is not None else 0.0
        self.video_faces = video_faces
        self._video_candidates: list[tuple[int, np.ndarray]] = []  # (video face, its reference crops)
        if self.video_weight > 0 and video_faces is not None:
            names = {faces.identities.index(n) for n in wanted}
            for j, (person, source, when) in enumerate(zip(video_faces["identity"], video_faces["source"],
                                                            video_faces["time_s"])):
                if int(person) not in names:
                    continue
                members = faces.indices_of(faces.identities[int(person)])
                members = members[usable[members]]
                far = (faces.source[members] != source) | (np.abs(faces.time_s[members] - when) >= min_time_gap_s)
                if far.any():
                    self._video_candidates.append((j, members[far]))
            if not self._video_candidates:
                raise ValueError("no video face is of these identities with a reference crop in the pack")

    def _far_enough(self, target: int, ref: int, gap: float) -> bool:
        f = self.faces
        if f.source[target] != f.source[ref]:
            return True
        # the same photo cannot be its own reference; frames of one clip only if far apart
        return bool(np.isfinite(f.time_s[target]) and abs(float(f.time_s[target] - f.time_s[ref])) >= gap)

    def with_uint8_images(self, uint8_images: bool = True) -> "RestorationDataset":
        """The same samples (same draws), their images served as uint8 (or float); see
        ``uint8_images``. A shallow copy: the pack and video faces are shared, not copied."""
        view = copy.copy(self)
        view.uint8_images = bool(uint8_images)
        return view

    def set_epoch(self, epoch: int) -> None:
        """Draw new degradations and references for this epoch (still reproducible)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def references_of(self, target: int) -> np.ndarray:
        """Every crop index that may serve as a reference of crop ``target``."""
        return self._candidates[int(target)]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        # no draw without video faces, so those samples stay what they always were
        video = self.video_weight > 0 and rng.random() < self.video_weight
        if video:
            j, candidates = self._video_candidates[int(rng.integers(len(self._video_candidates)))]
            target, identity = -1, int(self.video_faces["identity"][j])  # type: ignore[index]
        else:
            target = int(self.targets[i % len(self.targets)])
            candidates, identity = self._candidates[target], int(self.faces.identity[target])
        high = min(self.max_refs, len(candidates))
        count = int(rng.integers(min(self.min_refs, high), high + 1))
        chosen = rng.choice(candidates, size=count, replace=False)
        if video:
            clean, landmarks = self.video_faces["clean"][j], self.video_faces["landmarks"][j]  # type: ignore[index]
        else:
            clean, landmarks = self.faces.image(target), self.faces.landmarks[target]
        flipped = bool(self.flip and rng.random() < 0.5)
        if flipped:
            clean, landmarks = _flip(clean, landmarks)
        if video:
            degraded = self.video_faces["degraded"][j]  # type: ignore[index]
            degraded = degraded[:, ::-1] if flipped else degraded
        else:
            # a single preset draws nothing here, so its samples stay what they always were
            preset = self.preset.choose(rng) if isinstance(self.preset, DegradationMix) else self.preset
            degraded = degrade(clean, preset, int(rng.integers(0, 2**31 - 1)))
        r = self.faces.resolution
        refs = np.zeros((self.max_refs, r, r, 3), np.uint8)
        ref_landmarks = np.zeros((self.max_refs, 5, 2), np.float32)
        for k, index in enumerate(chosen):
            image, points = self.faces.image(int(index)), self.faces.landmarks[int(index)]
            if self.flip and rng.random() < 0.5:
                image, points = _flip(image, points)
            if self.reference_jitter > 0:  # no draw without it, so those samples stay what they were
                image, points = jitter_reference(image, rng, self.reference_jitter, points)
                image = (image + 0.5).astype(np.uint8)
            refs[k], ref_landmarks[k] = image, points
        indices = np.full(self.max_refs, -1, np.int64)
        indices[:count] = chosen
        sample = {
            "degraded": _to_tensor(degraded),
            "target": _to_tensor(clean),
            "references": _to_tensor(refs),
            "ref_mask": torch.arange(self.max_refs) < count,
            "ref_count": torch.tensor(count, dtype=torch.int64),
            "ref_indices": torch.from_numpy(indices),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            "ref_landmarks": torch.from_numpy(ref_landmarks),
            "identity": torch.tensor(identity, dtype=torch.int64),
            "index": torch.tensor(target, dtype=torch.int64),
            "flipped": torch.tensor(flipped),
        }
        return sample if self.uint8_images else images_to_float(sample)
