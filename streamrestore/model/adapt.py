"""Per-identity adaptation: the restorer fine-tuned on one person's own reference photos.

Shared-image attention lets a restorer *look at* the references; adaptation also *teaches* it
the person: a short fine-tune on pairs made from the reference photos themselves (each photo
degraded -> the photo, with the person's other photos as references). By default only the detail
head is fine-tuned (``AdaptConfig.part = "head"``: about a minute per person on a CPU, the
person's 1.5-4 px detail, where the identity judge finds them); ``"unet"`` fine-tunes the UNet
through the frozen head (minutes). The adapted weights are cached on disk next to the identity's
key (photos + model + settings), so what it costs is paid once per person, not per run.

Measured on the video benchmark with ``lite`` (see the model card): where the photos are of the
same footage or session the adapted head gains up to +0.6 dB face PSNR and doubles the identity
gain; adapted to photos in another light it makes faces worse, so the pipeline uses an identity's
adaptation only for tracks whose photos match their face (:meth:`AdaptedRestorer.unadapted`,
``streamrestore.pipeline.FaceRestorer``). Only models that train in full (``lite``, no LoRA) can
be adapted: a paper-scale model would need a LoRA of its own.

:class:`AdaptedRestorer` wraps an :class:`~streamrestore.model.restorer.InstantRestorer` and
keeps one adapted copy per identity; its :meth:`~AdaptedRestorer.restore` runs each identity's
faces through that identity's weights.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from streamrestore.cache_dir import (
    ADAPTED_NAME,
    cache_temp_name,
    keep_private_if_personal,
    make_cache_folders,
    place_path,
    trusted_cached_file,
)
from streamrestore.errors import ModelError
from streamrestore.model.cache import ReferenceCache, reference_key
from streamrestore.settings import check_kinds

log = logging.getLogger(__name__)

__all__ = ["AdaptConfig", "AdaptedRestorer", "adapt_weights", "default_cache_dir", "store_adapted_weights"]


#: what ``AdaptConfig.part`` fine-tunes, and the settings it takes when they are left at None:
#: ``(steps, batch_size, lr, blend)``
_PART_DEFAULTS = {
    "unet": (100, 4, 5e-5, 0.5),
    "head": (300, 4, 2e-4, 1.0),
}


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one identity's fine-tune.

    The settings left at None take ``part``'s defaults when the object is made; ``dataclasses.replace``
    of a made object keeps the values it has (pass them again when changing ``part``).

    Args:
        part: what is fine-tuned. ``"head"`` (default): only the detail head (of a model with one),
            on the frozen UNet's outputs of the degraded photos: the person's fine detail, learnt
            by the small network that draws it. On the video benchmark it gained more than the
            UNet's fine-tune on every clip measured (Andrew +1.64 dB / +0.119 identity against
            +1.09 / +0.101, d11 +1.51 / +0.100 against +1.09 / +0.076) in a third of the time
            (docs/video_eval.md, "Session 31"). ``"unet"``: the UNet, through the frozen head.
        steps: optimiser steps (None: the part's default; ``"head"`` 300, about 70 s per person
            on the idle 2-core CPU (session 37: 72 s, of which 0.2 s make the pairs); 600, with
            96 pairs, gained 0.05 dB / 0.009 identity more on the video benchmark and lost 0.18 dB
            on dmdnet's photos (docs/video_eval.md, "Session 37"); ``"unet"`` 100: on the demo
            set the judge gain had formed by then, ~2.5-4 min per person).
        batch_size: pairs per step (None: 4, both parts).
        lr: AdamW learning rate (None: ``"unet"`` 5e-5, a tenth of lite's training rate, so 100
            steps specialise the model without forgetting how to restore; ``"head"`` 2e-4, a
            fifth of the head's own training rate).
        references_per_sample: the person's other photos shown as references per pair (2).
        min_photos: fewer usable photos than this and the identity is not adapted (default 3:
            with one photo every pair would show the model its own answer, and with two each
            photo's only reference is the other one; Obama's two studio photos lost face PSNR
            with every lite adapted to them: lite v7 −0.30 dB against the input at blend 1,
            −0.13 dB against not adapting at blend 0.5; docs/video_eval.md, "Session 18").
        pairs: with ``part="head"``, how many degraded photos (and the UNet's outputs for them)
            the head learns from, made once before its steps (default 24: each a photo drawn at
            random, with its own damage; the UNet runs once per pair, the head's steps are cheap).
            96 were measured: +0.03 dB / +0.005 identity on the video benchmark's adapted clips and
            +0.09 dB / +0.016 judge on dmdnet's nine unseen people, but 0.19 dB less on the demo
            set's twelve (+0.87 over the input against +1.06); two seeds of 48 pairs differ by
            0.14 dB / 0.009 identity on one clip (docs/video_eval.md, "Session 37").
        seed: seed of the degradation and sampling draws (the same photos give the same weights at one torch thread count: :meth:`AdaptedRestorer.key` holds it).
        blend: how much of the fine-tune's weight change is used (1.0: all of it; None: the part's
            default, ``"unet"`` 0.5: the weights halfway between the base and the adapted ones,
            ``"head"`` 1.0). Applied when the adapted weights are loaded, so it is not part of the
            cache key: another blend reuses the cached fine-tune. On the video benchmark 0.5 kept
            more of the UNet's face PSNR than 1.0 on all eight clips and less flicker, for less of
            the identity gain on the clips whose references are frames of the same person
            (docs/video_eval.md, "Session 18").
        cache_dir: where adapted weights are kept (None: :func:`default_cache_dir`).
    """

    part: str = "head"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    references_per_sample: int = 2
    min_photos: int = 3
    pairs: int = 24
    seed: int = 0
    blend: float | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        if self.part not in _PART_DEFAULTS:
            raise ValueError(f"part must be one of {sorted(_PART_DEFAULTS)}, got {self.part!r}")
        for name, default in zip(("steps", "batch_size", "lr", "blend"), _PART_DEFAULTS[self.part]):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: the part's default, once
        check_kinds(self)
        for name in ("steps", "batch_size", "references_per_sample", "min_photos", "pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend}")

    def cache_folder(self) -> Path:
        """Where the fine-tunes are kept: ``cache_dir``, else :func:`default_cache_dir`."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def key_fields(self) -> dict:
        """What the adapted weights depend on (the cache folder, the blend and the photo count
        needed do not; a UNet fine-tune keeps the key it had before heads could be adapted)."""
        data = asdict(self)
        for name in ("cache_dir", "blend", "min_photos"):
            data.pop(name)
        if self.part == "unet":
            data.pop("part")
            data.pop("pairs")
        return data


def default_cache_dir() -> Path:
    """``adapted/`` under :func:`streamrestore.cache_dir.cache_root` (``$STREAMRESTORE_CACHE``,
    else ``~/.cache/streamrestore``; the whole order there)."""
    return place_path("adapted")


def _weights_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.safetensors"


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Written under a name of this process's own, then moved into place: a reader never sees half
    a file, and processes that share the folder (a batch's workers) never write one file together."""
    from safetensors.torch import save  # noqa: PLC0415

    # (private: its files' names and times say whose faces were worked on; one an older version made 0755 too)
    make_cache_folders(path.parent, private=True)
    with contextlib.suppress(OSError, AttributeError):  # (another user's; os.getuid: POSIX only)
        if path.parent == default_cache_dir() and path.parent.stat().st_uid == os.getuid():
            os.chmod(path.parent, 0o700)  # (the cache's own folder; one the caller named is left as it is)
    tmp = cache_temp_name(path)
    try:
        tmp.write_bytes(save({k: v.contiguous() for k, v in state.items()}))
        keep_private_if_personal(tmp, personal=True)  # (a person's fine-tune, whatever the umask)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):  # (a read-only folder refuses even a missing file's unlink)
            tmp.unlink(missing_ok=True)
        raise


def store_adapted_weights(weights: Mapping[str, Mapping[str, torch.Tensor]], config: AdaptConfig = AdaptConfig()) -> int:
    """Puts fine-tunes made elsewhere (:meth:`AdaptedRestorer.adapted_weights`, by key) into
    ``config``'s cache folder, so that an :class:`AdaptedRestorer` here loads them instead of
    adapting again: how a batch's first worker shares its fine-tunes with workers on other
    machines. Weights already there are left as they are. Returns how many were written."""
    written = 0
    for key, state in weights.items():
        path = _weights_path(config.cache_folder(), key)
        if not path.is_file():
            try:
                _save_weights(path, dict(state))
            except Exception as exc:  # read-only, full: this worker adapts for itself (a crash ended it)
                log.warning("cannot keep a fine-tune in %s (%s): this worker makes its own; set STREAMRESTORE_CACHE "
                            "(library: cache_dir) to a folder you can write", path.parent,
                            getattr(exc, "strerror", None) or exc)
                continue
            written += 1
    return written


#: the damage of each part's pairs (streamrestore/data/degrade.py presets and weights), part of the cache
#: key: another mix adapts again. None has a clean share: a clean pair teaches nothing about this person
#: that the photo does not already show.
#: - "unet": lite's training mix.
#: - "head": three quarters the upload chain at any face size (``video_upload_any_size``), a quarter lite's
#:   mix. lite's mix damages a crop as the chain damages a small face (~2 frame pixels per crop pixel);
#:   a large face's crop gets milder damage from the same video, which lite's mix never draws. On the
#:   video benchmark's large faces the head so adapted gains 0.2-0.4 dB more (d13, d14, d11), on the
#:   small ones about as much as before, and on the demo set's photos +0.1 dB (docs/video_eval.md, "Session 36").
_MIXES = {
    "unet": (("severe_at_128", 0.2), ("video_upload", 0.45), ("video_small", 0.2), ("mild", 0.15)),
    "head": (("video_upload_any_size", 0.75), ("severe_at_128", 0.05), ("video_upload", 0.1125),
             ("video_small", 0.05), ("mild", 0.0375)),
}


def _pairs(photos: np.ndarray, rng: np.random.Generator, count: int, refs_per_sample: int,
           mix: Sequence[tuple[str, float]]):
    """``count`` training pairs from one person's photos: a photo degraded with a preset drawn from
    ``mix`` ((name, weight) pairs), the photo, and ``refs_per_sample`` of the person's other photos."""
    from streamrestore.data.degrade import degrade, get_preset  # noqa: PLC0415

    names, weights = zip(*mix)
    p = np.asarray(weights) / sum(weights)
    n = len(photos)
    targets, degraded, references = [], [], []
    for _ in range(count):
        i = int(rng.integers(n))
        preset = get_preset(names[int(rng.choice(len(names), p=p))])
        others = [j for j in range(n) if j != i] or [i]
        picks = rng.choice(others, size=refs_per_sample, replace=len(others) < refs_per_sample)
        targets.append(photos[i])
        degraded.append(degrade(photos[i], preset, int(rng.integers(0, 2**31 - 1))))
        references.append(photos[picks])

    def tensor(images):
        array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2) if images[0].ndim == 3
                                     else np.stack(images).transpose(0, 1, 4, 2, 3))
        return torch.from_numpy(array).float().div_(255.0)

    return tensor(degraded), tensor(targets), tensor(references)


#: the detail head's loss when it is adapted: lite v9's head recipe (configs/lite_v9_head.toml),
#: L1 plus three times the error's band between blurs of 1.5 and 4 px of a 128-px face
_HEAD_BAND_WEIGHT = 3.0
_HEAD_BAND_SIGMAS = (1.5, 4.0)


def adapt_weights(net, photos: np.ndarray, config: AdaptConfig = AdaptConfig()) -> dict[str, torch.Tensor]:
    """Fine-tune a copy of ``net``'s ``config.part`` (``net``: an :class:`InstantRestoreNet`) on one
    person's aligned photos.

    Args:
        net: the restorer's network (left unchanged).
        photos: (N, R, R, 3) uint8 RGB aligned crops at the model's resolution, N >= 1.

    Returns:
        The adapted part's state dict (float32, CPU): the UNet's, or the detail head's.

    Raises:
        ModelError: a model that cannot be adapted so (a LoRA on a latent UNet; no detail head
            for ``part="head"``).
    """
    if config.part == "head":
        return _adapt_head(net, photos, config)
    return _adapt_unet(net, photos, config)


#: seconds between two progress lines of a fine-tune (a minute per person: a user should see it move)
_PROGRESS_SECONDS = 10.0


class _StepProgress:
    """Logs how far a fine-tune is, at most every ``_PROGRESS_SECONDS``: steps done, and the time
    left at the pace so far."""

    def __init__(self, total: int, what: str):
        self.total, self.what = total, what
        self.start = self.last = time.perf_counter()

    def step(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < _PROGRESS_SECONDS or done >= self.total:
            return
        self.last = now
        left = (now - self.start) / done * (self.total - done)
        log.info("adapting the %s: %d of %d steps, about %.0f s left", self.what, done, self.total, left)


def _adapt_head(net, photos: np.ndarray, config: AdaptConfig) -> dict[str, torch.Tensor]:
    """:func:`adapt_weights` of the detail head: ``config.pairs`` degraded photos go once through the
    frozen network without its head (the person's other photos as references), then the head learns
    the photos from them."""
    from streamrestore.model.losses import band_loss  # noqa: PLC0415
    from streamrestore.model.restorer import InstantRestorer  # noqa: PLC0415

    if net.detail_head is None:
        raise ModelError("this model has no detail head to adapt; adapt its UNet (part 'unet') instead")
    unet_only = copy.deepcopy(net).to("cpu", torch.float32).eval().requires_grad_(False)
    head = unet_only.detail_head
    unet_only.detail_head = None
    restorer = InstantRestorer(unet_only, device="cpu", dtype=torch.float32, name="adapt")
    rng = np.random.default_rng(config.seed)
    degraded, targets, references = _pairs(photos, rng, config.pairs, config.references_per_sample, _MIXES["head"])
    with torch.inference_mode():
        restored = torch.cat([restorer.restore(degraded[i:i + 1], [restorer.encode_references(references[i])])
                              for i in range(len(degraded))])
    restored = restored.clone()  # out of inference mode: the head's graph takes it as an input
    means = references.mean(1) if head.settings.references else None
    head = head.train().requires_grad_(True)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    progress = _StepProgress(config.steps, "head")
    for step in range(config.steps):
        idx = torch.from_numpy(rng.integers(0, len(degraded), config.batch_size))
        batch = [degraded[idx], restored[idx], targets[idx], None if means is None else means[idx]]
        if rng.random() < 0.5:  # a mirrored face is as much the person's
            batch = [None if x is None else x.flip(-1) for x in batch]
        faces, base, target, mean = batch
        error = head(faces, base, mean) - target
        loss = error.abs().mean() + _HEAD_BAND_WEIGHT * band_loss(error, _HEAD_BAND_SIGMAS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.step(step + 1)
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _adapt_unet(net, photos: np.ndarray, config: AdaptConfig) -> dict[str, torch.Tensor]:
    """:func:`adapt_weights` of the UNet, trained through the frozen detail head."""
    from streamrestore.model.losses import pixel_loss, ssim_loss  # noqa: PLC0415
    from streamrestore.model.training import TrainingModel  # noqa: PLC0415

    if net.config.unet_lora is not None or net.config.latent != "pixel":
        raise ModelError("per-identity adaptation is for models trained in full in pixel space (lite); "
                         "this model is a LoRA on a latent UNet")
    work = copy.deepcopy(net).to("cpu", torch.float32).train().requires_grad_(True)
    model = TrainingModel(work, reference_grad=True)
    params = list(work.unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    c, s = work.config.latent_channels, work.config.latent_size
    ref_noise = torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(work.config.reference_noise_seed))
    noise = torch.zeros(config.batch_size, c, s, s)  # lite adds no noise; the shape is what matters
    mask = torch.ones(config.batch_size, config.references_per_sample, dtype=torch.bool)
    progress = _StepProgress(config.steps, "UNet")
    for step in range(config.steps):
        degraded, targets, references = _pairs(photos, rng, config.batch_size, config.references_per_sample,
                                               _MIXES["unet"])
        restored, _ = model(degraded, references, mask, noise, ref_noise, None)
        restored = restored.float()
        loss = pixel_loss(restored, targets, "l1") + 0.5 * ssim_loss(restored, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        progress.step(step + 1)
    return {k: v.detach().clone() for k, v in work.unet.state_dict().items()}


class AdaptedRestorer:
    """A restorer whose identities each get their own fine-tuned weights (see the module docstring).

    Implements :class:`streamrestore.types.Restorer`: :meth:`encode_references` adapts (or loads
    the cached adaptation), then encodes the references with the adapted network; faces restored
    with that cache go through the adapted network, faces without references through the base.

    Args:
        base: the eager restorer (it is fine-tuned in copies; ``serve`` only runs them).
        config: see :class:`AdaptConfig`.
        serve: wraps the base and each adapted copy in what restores with it (what
            :func:`streamrestore.backends.per_person_backend` gives: ONNX Runtime on a CPU); None
            (default): the eager networks themselves.
    """

    def __init__(self, base, config: AdaptConfig = AdaptConfig(), serve=None):
        if not hasattr(base, "net") or not hasattr(base, "fingerprint"):
            raise ModelError(f"model {getattr(base, 'name', '?')} has no network to fine-tune: only a model "
                             "loaded from its weights (lite, a model file) can be adapted")
        if config.part == "head" and base.net.detail_head is None:
            raise ModelError(f"model {getattr(base, 'name', '?')} has no detail head to adapt; "
                             "adapt its UNet instead (part 'unet')")
        self.base = base
        self.config = config
        self.resolution = base.resolution
        self.name = getattr(base, "name", "custom") + ADAPTED_NAME  # (its programs' names say so: cache_dir)
        self.device = getattr(base, "device", None)
        self.cache_dir = config.cache_folder()
        self._adapted: dict[str, object] = {}  # key -> InstantRestorer with adapted weights
        self._weights: dict[str, dict[str, torch.Tensor]] = {}  # key -> the fine-tune, as cached
        self._by_cache: dict[int, tuple[ReferenceCache, str]] = {}  # id(cache) -> (cache, key)
        self._unadapted: dict[int, ReferenceCache] = {}  # id(adapted cache) -> the base's cache of its photos
        #: seconds spent adapting per key (0 when loaded from the disk cache)
        self.adapt_seconds: dict[str, float] = {}
        self._warned_too_few = False  # the too-few-photos warning is said once, not per person
        self._serve = serve if serve is not None else (lambda restorer: restorer)
        self._served_base = self._serve(base)

    @property
    def backend(self) -> str | None:
        """How the base runs (:attr:`streamrestore.backends.BackendRestorer.backend`; None where it is no backend's)."""
        return getattr(self._served_base, "backend", None)

    def key(self, faces: torch.Tensor) -> str:
        """The adapted weights' key: the photos, the base model (detail head included: the UNet
        adapts through it), the settings, and torch's thread count now (the fine-tune's sums come out
        otherwise in another count: 1 and 2 threads gave outputs up to 37 levels apart under one key, so
        a run's bytes depended on which run had filled the cache)."""
        digest = hashlib.sha256(reference_key(faces, self.base.fingerprint).encode())
        head = getattr(self.base, "detail_head_fingerprint", "none")
        if head != "none":  # models without a head hash no head fingerprint
            digest.update(head.encode())
        recipe: dict = {**self.config.key_fields(), "mix": _MIXES[self.config.part], "threads": torch.get_num_threads()}
        if self.config.part == "head":  # the head's loss and its pairs' damage shape its weights too
            from streamrestore.data.degrade import get_preset  # noqa: PLC0415

            recipe["head_loss"] = [_HEAD_BAND_WEIGHT, list(_HEAD_BAND_SIGMAS)]
            recipe["presets"] = {name: dataclasses.asdict(get_preset(name)) for name, _ in _MIXES["head"]}
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        return digest.hexdigest()[:32]

    def _restorer_for(self, faces: torch.Tensor, key: str):
        from safetensors.torch import load_file  # noqa: PLC0415

        from streamrestore.model.restorer import InstantRestorer  # noqa: PLC0415

        if key in self._adapted:
            return self._adapted[key]
        path = _weights_path(self.cache_dir, key)
        state = None
        if trusted_cached_file(path, "fine-tune"):
            try:
                state = load_file(str(path))
                self.adapt_seconds[key] = 0.0
                log.info("adapted weights loaded from %s", path)
            except Exception as exc:  # a damaged cache file is rebuilt, not fatal
                log.warning("adapted-weights cache %s is unreadable (%s); adapting again", path, exc)
        if state is None:
            photos = (faces.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
            photos = photos.permute(0, 2, 3, 1).numpy()
            t0 = time.perf_counter()
            log.info("adapting the model's %s to %d reference photo(s) (%d steps, once per person)",
                     self.config.part, len(photos), self.config.steps)
            with torch.inference_mode(False), torch.enable_grad():
                state = adapt_weights(self.base.net, photos, self.config)
            self.adapt_seconds[key] = time.perf_counter() - t0
            try:
                _save_weights(path, state)
                log.info("adapted in %.0f s; kept in %s", self.adapt_seconds[key], path)
            except Exception as exc:  # read-only, full: the fine-tune serves this run (it ended it, after the work)
                log.warning("adapted in %.0f s, but cannot keep it in %s (%s): it is made again in every run; set "
                            "STREAMRESTORE_CACHE (library: cache_dir) to a folder you can write",
                            self.adapt_seconds[key], path.parent,
                            getattr(exc, "strerror", None) or exc)
        self._weights[key] = state
        net = copy.deepcopy(self.base.net).to("cpu", torch.float32)
        part = net.detail_head if self.config.part == "head" else net.unet
        if self.config.blend < 1.0:
            base_state = part.state_dict()
            state = {k: base_state[k] + self.config.blend * (v.to(base_state[k].dtype) - base_state[k])
                     if base_state[k].is_floating_point() else v for k, v in state.items()}
        part.load_state_dict(state)
        restorer = self._serve(InstantRestorer(net, device=self.base.device, dtype=self.base.dtype, name=self.name))
        self._adapted[key] = restorer
        return restorer

    def adapted_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The fine-tunes this restorer holds (adapted here or loaded), by key, as they are cached
        (before ``blend``): what :func:`store_adapted_weights` puts into another cache folder."""
        return dict(self._weights)

    def key_of(self, cache: ReferenceCache) -> str | None:
        """The key of the fine-tune that serves ``cache`` (None: the identity was not adapted)."""
        return self._by_cache.get(id(cache), (None, None))[1]

    def encode_references(self, faces: torch.Tensor) -> ReferenceCache:
        if faces.shape[0] < self.config.min_photos:
            if not self._warned_too_few:
                log.warning("%d reference photo(s) of a person: adaptation needs at least %d (with fewer it "
                            "learns the photos themselves); people with fewer photos are restored without it",
                            faces.shape[0], self.config.min_photos)
                self._warned_too_few = True
            return self._served_base.encode_references(faces)
        key = self.key(faces)
        restorer = self._restorer_for(faces, key)
        cache = restorer.encode_references(faces)
        self._by_cache[id(cache)] = (cache, key)  # the cache itself is kept: its id stays unique
        # an adapted head leaves the UNet's encoding as it was: a second object (its id picks the base) will do
        self._unadapted[id(cache)] = (dataclasses.replace(cache) if self.config.part == "head"
                                      else self._served_base.encode_references(faces))
        return cache

    def unadapted(self, cache: ReferenceCache) -> ReferenceCache:
        """What restores a face of ``cache``'s identity without its adaptation: the base model's
        encoding of the same photos (``cache`` itself when it is not an adapted identity's). The
        pipeline passes it for faces whose photos do not match (:class:`~streamrestore.pipeline.FaceRestorer`)."""
        return self._unadapted.get(id(cache), cache)

    def restore(self, faces: torch.Tensor, caches: Sequence[ReferenceCache | None],
                noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        keys = [self.key_of(c) if c is not None else None for c in caches]
        seeds = list(noise_seeds) if noise_seeds is not None else None
        if len(set(keys)) <= 1:
            restorer = self._adapted[keys[0]] if keys and keys[0] is not None else self._served_base
            return restorer.restore(faces, caches, seeds)
        out = torch.empty(faces.shape, dtype=torch.float32, device=faces.device)
        for key in dict.fromkeys(keys):
            idx = [i for i, k in enumerate(keys) if k == key]
            restorer = self._adapted[key] if key is not None else self._served_base
            out[idx] = restorer.restore(faces[idx], [caches[i] for i in idx],
                                        [seeds[i] for i in idx] if seeds is not None else None)
        return out
