"""The training loop: InstantRestore restorers trained through ``accelerate``.

One :class:`Trainer` runs on one CPU, one GPU or many processes (``accelerate launch``) with
the same code: accelerate places the model, wraps it for data parallelism, shards the batches,
scales fp16 losses and saves/loads the full training state.

A step, per process:

1. a batch of ``batch_size`` samples from :class:`~streamrestore.data.samples.RestorationDataset`
   (degraded target, clean target, 1-4 references of the same person, landmarks);
2. the curriculum may swap reference slots for augmented copies of the target
   (:meth:`TrainConfig.self_ref_probability`), and ``no_ref_probability`` of the faces get no
   reference at all (the self-attention path the pipeline uses for unknown people);
3. references pass through the reference network (with gradients unless
   ``reference_grad=False``), their shared-layer keys/values are padded per face and masked;
4. one restoration step; losses: pixel + (1 - (MS-)SSIM) + MobileFaceNet identity + the landmark
   attention loss on one shared layer and the first reference;
5. AdamW with gradient clipping; warm-up + cosine learning rate.

Every ``log_every`` steps a row goes to ``losses.csv``; every ``checkpoint_every`` steps
``accelerator.save_state`` writes a checkpoint that resumes *exactly* (weights, optimiser,
scheduler, RNG; the data order is a pure function of the step); every ``val_every`` steps the
model is measured on held-out identities (``validation.csv``): PSNR/SSIM and the judges'
identity similarity with 4 references, without references and with another person's references
(the signal that references are really used). Every ``heldout_every`` steps the training losses
on fixed samples of the held-out people go to ``heldout.csv``, and the weights with the lowest
so far to ``best.safetensors`` (no judge files needed: this is the check a lent GPU can run).
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from streamrestore.errors import InputError
from streamrestore.model.restorer import InstantRestoreNet
from streamrestore.model.training import TrainingModel
from streamrestore.stop_signals import stop_signals_held
from streamrestore.train.config import LOSS_PARTS, RUN_SETTINGS, TrainConfig, open_training_pack

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "StepBatchSampler", "augment_copies", "train"]

_STATE_FILE = "trainer_state.json"
#: seconds between progress lines where no terminal shows the progress bar
PROGRESS_LINE_SECONDS = 30.0


# --------------------------------------------------------------------------------------------
# Data order


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices as a pure function of the batch number (exact resume).

    The dataset is a :class:`RestorationDataset` whose length is ``targets * epochs``; batch
    ``k`` holds global sample positions ``k*B .. k*B+B-1``; position ``p`` is epoch
    ``p // targets`` and the ``p % targets``-th entry of that epoch's permutation (seeded by
    ``(seed, epoch)``), so index ``epoch * targets + perm[j]`` selects target ``perm[j]`` with
    fresh degradation and reference draws every epoch.
    """

    def __init__(self, targets: int, batch_size: int, num_batches: int, seed: int = 0, start_batch: int = 0):
        if targets < 1 or batch_size < 1:
            raise ValueError(f"targets and batch_size must be >= 1, got {targets}, {batch_size}")
        if not 0 <= start_batch <= num_batches:
            raise ValueError(f"start_batch must be in [0, {num_batches}], got {start_batch}")
        self.targets, self.batch_size, self.num_batches = targets, batch_size, num_batches
        self.seed, self.start_batch = seed, start_batch

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.targets)

    def __iter__(self) -> Iterator[list[int]]:
        cache: dict[int, np.ndarray] = {}
        for k in range(self.start_batch, self.num_batches):
            batch = []
            for p in range(k * self.batch_size, (k + 1) * self.batch_size):
                epoch, j = divmod(p, self.targets)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = self._perm(epoch)
                batch.append(int(epoch * self.targets + cache[epoch][j]))
            yield batch

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


# --------------------------------------------------------------------------------------------
# Curriculum: augmented copies of the target as references


def augment_copies(images: torch.Tensor, landmarks: torch.Tensor, generator: torch.Generator, *,
                   rotate_deg: float, scale: float, shift: float, color: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly warped and colour-jittered copies of ``images`` (M, 3, R, R) with their landmarks.

    A similarity warp (rotation ±``rotate_deg``, scale 1±``scale``, shift ±``shift`` of the side)
    and a per-channel gain 1±``color``; ``landmarks`` (M, 5, 2) in [0, 1] (x = pixel / R) move
    with the warp. Random numbers come from ``generator`` (CPU) so a step is reproducible.
    """
    m, _, r, _ = images.shape
    u = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731  U(-1, 1)
    angle = u(m) * math.radians(rotate_deg)
    s = 1 + u(m) * scale
    t = u(m, 2) * shift * 2  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    # theta maps output coordinates to input coordinates (affine_grid convention)
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = (1 + u(m, 3, 1, 1) * color).to(images.device, images.dtype)
    warped = (warped * gain).clamp(0, 1)
    # landmarks: input point q (normalised) came from output point p with q = A p + t
    q = landmarks.to(theta.dtype) * 2 + 1.0 / r - 1  # x = i / R  ->  align_corners=False coordinates
    a, b = theta[:, :, :2], theta[:, :, 2]
    p = torch.linalg.solve(a, (q - b[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return warped.contiguous(), ((p + 1 - 1.0 / r) / 2).to(landmarks.dtype)


def _init_from_file(net: InstantRestoreNet, path: str | Path) -> None:
    """Copy the weights of a shipped model file into ``net`` (same network config required).

    A file with a detail head (the shipped ``lite``) gives its network's weights: the head is
    trained on its own base afterwards (``streamrestore.train.detail_head``), never here."""
    from streamrestore.model.checkpoint import read_model_file  # noqa: PLC0415

    source = read_model_file(path)
    if source.config.unet != net.config.unet or source.config.latent != net.config.latent:
        raise InputError(f"init_weights {path} was built with another network than this config's [model]")
    with torch.no_grad():
        state = net.weights_state_dict()
        given = source.weights_state_dict()
        missing = sorted(set(state) - set(given))
        if missing:
            raise InputError(f"init_weights {path} lacks {len(missing)} of the network's weights (e.g. {missing[0]})")
        for k, v in state.items():
            v.copy_(given[k].to(v.dtype))
    logger.info("weights initialised from %s", path)


def _check_model_files(config: TrainConfig) -> None:
    """The files a config names for its losses and judges exist (before any step is taken)."""
    weights = config.identity_weights
    if config.identity_weight > 0 and (weights is None or not Path(weights).is_file()):
        raise InputError(f"the identity loss needs identity_weights, the MobileFaceNet state dict "
                         f"(mobilefacenet_foamliu.pt); {'none is set' if weights is None else f'{weights} not found'}"
                         "; set identity_weights or identity_weight = 0")
    if config.judge_models is not None:
        from streamrestore.model_files import EvalModelFiles  # noqa: PLC0415

        missing = EvalModelFiles.from_dir(config.judge_models).missing("mobilefacenet", "paddle")
        if missing:
            raise InputError(f"judge_models {config.judge_models}: no {', '.join(map(str, missing))}; set "
                             "judge_models to the evaluation models folder, or leave it out to validate "
                             "without identity scores")


def _checkpoint_step(path: str | Path) -> int:
    """The step a complete checkpoint folder was saved at."""
    state_file = Path(path) / _STATE_FILE
    if not state_file.is_file():
        raise InputError(f"{path} is not a complete training checkpoint (no {_STATE_FILE})")
    return int(json.loads(state_file.read_text())["step"])


# --------------------------------------------------------------------------------------------
# Trainer


@dataclass
class TrainResult:
    """What a (possibly interrupted) run reached."""

    step: int
    losses: dict[str, float] = field(default_factory=dict)  # means over the last logged window
    checkpoint: Path | None = None
    exported: Path | None = None
    validation: list[dict] = field(default_factory=list)


class TimeBudget:
    """How much of a wall-time budget a run has used, for a schedule that must end with it.

    Args:
        seconds: the budget; 0 counts as spent from the start.
    """

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.seconds = seconds
        self.started: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def used(self) -> float:
        """The share of the budget spent, in [0, 1] (0 before :meth:`start`)."""
        if self.started is None:
            return 0.0
        if self.seconds <= 0:
            return 1.0
        return min(1.0, (time.monotonic() - self.started) / self.seconds)


def _lr_lambda(config: TrainConfig, budget: TimeBudget | None = None):
    """Warm-up over ``warmup_steps``, then a cosine from 1 to ``min_lr_ratio`` over the steps, or
    over ``budget`` (whichever is further along), so a run stopped by its time budget ends at its
    lowest rate too."""
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        if budget is not None:
            progress = max(progress, budget.used())
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and trains.

    With ``config.phases`` the run goes through them in order: :attr:`plan` is the whole run,
    :attr:`config` the settings of the phase being trained (:meth:`TrainConfig.phase`); at a
    phase's end the trainer checkpoints and rebuilds what depends on the phase's settings (the
    degraded samples, the losses), keeping the network, the optimiser and the schedule.

    Args:
        config: the run.
        resume: a checkpoint folder, ``"latest"`` (the newest under ``output_dir/checkpoints``,
            if any) or None (start fresh).
        accelerator: an ``accelerate.Accelerator``; default one with ``config.mixed_precision``
            on GPU (always fp32 on CPU).
        no_ref_probability: share of faces trained without references (keeps the plain
            self-attention path the pipeline uses for unknown people working).
        time_budget: when given, the learning rate's cosine also runs over this wall time
            (started by :meth:`train`, which also stops there unless given another
            ``max_seconds``): for a machine lent for minutes, whose speed is not known before the
            run. The rate then depends on the clock, so a resumed run does not repeat it exactly.
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, accelerator=None,
                 no_ref_probability: float = 0.1, time_budget: TimeBudget | None = None):
        from accelerate import Accelerator  # noqa: PLC0415
        from accelerate.utils import set_seed  # noqa: PLC0415

        if not 0.0 <= no_ref_probability < 1.0:
            raise ValueError(f"no_ref_probability must be in [0, 1), got {no_ref_probability}")
        #: the whole run (with its phases); :attr:`config` is the phase being trained
        self.plan = config
        self.no_ref_probability = no_ref_probability
        self.time_budget = time_budget
        if accelerator is None:
            precision = config.mixed_precision if torch.cuda.is_available() else "no"
            accelerator = Accelerator(mixed_precision=precision)
        self.accelerator = accelerator
        set_seed(config.seed)
        self.output_dir = Path(config.output_dir)
        if accelerator.is_main_process:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file there, no permission
                raise InputError(f"cannot use {self.output_dir} as the output folder: {exc.strerror or exc}") from None

        if resume == "latest":
            resume = self.latest_checkpoint()
            if resume is None:
                logger.warning("--resume latest: no checkpoint in %s; starting from step 0", self.checkpoint_dir)
        self._fresh = resume is None  # a run from step 0: train() refuses a folder holding another run's checkpoints
        self._progress_said = -math.inf  # when the last progress line was logged (without a terminal)
        phases = [config.phase(start)[0] for start in [0] + [p["until"] for p in config.phases[:-1]]]
        for phase in phases:  # every phase's files, before any step
            _check_model_files(phase)
        config = self.config = config.phase(_checkpoint_step(resume) if resume is not None else 0)[0]
        self.pack, self.train_ids, self.val_ids = open_training_pack(config)
        self._build_dataset()

        net = InstantRestoreNet(config.model)
        if config.init_weights and resume is None:
            _init_from_file(net, config.init_weights)
        with torch.no_grad():  # a fixed, seeded "prompt": the lite model has no text encoder
            gen = torch.Generator().manual_seed(config.seed + 7)
            if not net.prompt_embeds.abs().sum():
                net.prompt_embeds.copy_(torch.randn(net.prompt_embeds.shape, generator=gen))
        self.net = net
        for phase in phases:
            if not -len(net.shared_layers) <= phase.landmark_layer < len(net.shared_layers):
                raise ValueError(f"landmark_layer {phase.landmark_layer} out of range for {len(net.shared_layers)} "
                                 "shared layers")
        self.model = TrainingModel(net, config.reference_grad)
        params = net.trainable_parameters()
        if config.train_only:
            names = {id(p): n for n, p in net.named_parameters()}
            kept = [p for p in params if any(part in names[id(p)] for part in config.train_only)]
            if not kept:
                raise ValueError(f"train_only {config.train_only} matches none of the trained parameters' names")
            kept_ids = {id(p) for p in kept}
            for p in params:
                p.requires_grad_(id(p) in kept_ids)
            params = kept
        self.num_parameters = sum(p.numel() for p in net.parameters())
        self.num_trainable = sum(p.numel() for p in params)
        # fused on a GPU: one kernel for the whole update instead of a few per tensor (the foreach
        # update was ~8 % of a step's CPU time on a lent H200, where the CPU bounds the step)
        fused = True if accelerator.device.type == "cuda" else None
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                      fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, time_budget))
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, optimizer, scheduler)

        self._build_losses()
        c, s = config.model.latent_channels, config.model.latent_size
        # the same fixed reference noise InstantRestorer uses at inference (config.reference_noise)
        seed = config.model.reference_noise_seed
        slots = 1 if config.model.reference_noise == "shared" else max(config.model.max_references, 16)
        self.ref_noise = torch.cat([torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(seed + i))
                                    for i in range(slots)]).to(accelerator.device)

        self.step = 0
        if resume is not None:
            self.load_checkpoint(resume)
            for group in self.optimizer.param_groups:  # a checkpoint's groups carry the settings it was made with
                group["fused"] = fused
        self._config_phase = self.phase_number  # the phase self.config holds
        self._heldout: list[dict] | None = None  # the held-out samples, made at their first use

    def _build_dataset(self) -> None:
        """The training samples of the phase (degradation, references per sample)."""
        from streamrestore.data.samples import RestorationDataset  # noqa: PLC0415

        config = self.config
        common = dict(preset=config.degradation, min_refs=config.min_refs, max_refs=config.max_refs, seed=config.seed,
                      reference_jitter=config.reference_jitter)
        if config.video_weight > 0:
            common.update(video_faces=self._video_faces(), video_weight=config.video_weight)
        probe = RestorationDataset(self.pack, self.train_ids, **common)
        self.targets = len(probe.targets)
        total_batches = config.steps * self.accelerator.num_processes
        epochs = math.ceil(total_batches * config.batch_size / self.targets) + 1
        self.dataset = RestorationDataset(self.pack, self.train_ids, samples_per_epoch=epochs * self.targets, **common)

    def _video_faces(self) -> dict[str, np.ndarray]:
        """The faces cut from whole degraded clips (:attr:`TrainConfig.video_faces`), made once and
        kept in ``output_dir/video_faces.npz`` (made again when the settings, seed or pack differ)."""
        from streamrestore.train.video_faces import make_video_faces  # noqa: PLC0415

        config, path = self.config, self.output_dir / "video_faces.npz"
        key = f"{config.video_settings.key()} seed={config.seed} pack={Path(config.data).resolve()}"
        if path.is_file():
            with np.load(path) as cached:
                if str(cached["key"]) == key:
                    return {k: cached[k] for k in cached.files if k != "key"}
        faces = make_video_faces(self.pack, self.train_ids, config.video_settings, shared=config.shared,
                                 face_models=config.face_models, seed=config.seed, log=logger.info)
        if self.accelerator.is_main_process:
            np.savez(path, key=np.array(key), **faces)
        return faces

    def _build_losses(self) -> None:
        """The identity loss and the watched attention layer of the phase."""
        config = self.config
        self.identity_loss = None
        if config.identity_weight > 0:
            from streamrestore.train.losses import IdentityLoss  # noqa: PLC0415

            self.identity_loss = (IdentityLoss(config.identity_weights).to(self.accelerator.device).eval()
                                  .requires_grad_(False))
        self.map_layer = self.net.shared_layers[config.landmark_layer] if config.landmark_weight > 0 else None
        self.accelerator.unwrap_model(self.model).reference_grad = config.reference_grad

    def _enter_phase(self) -> None:
        """Switch to the settings of the phase that trains from the current step on."""
        self.config = self.plan.phase(self.step)[0]
        self._config_phase = self.phase_number
        self._build_dataset()
        self._build_losses()
        logger.info("step %d: phase %d of %d", self.step, self.phase_number, len(self.plan.phases))

    @property
    def phase_number(self) -> int:
        """1-based number of the phase the next step belongs to (1 without phases)."""
        return 1 + sum(1 for p in self.plan.phases[:-1] if self.step >= p["until"])

    # -- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        found = sorted(self.checkpoint_dir.glob("step_*/" + _STATE_FILE))
        if not found:
            return None
        return max((p.parent for p in found), key=lambda p: int(p.name.split("_")[1]))

    def save_checkpoint(self) -> Path:
        """Everything needed to continue exactly: accelerate state + step (+ old ones pruned)."""
        path = self.checkpoint_dir / f"step_{self.step:07d}"
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            # written last: a folder without it is an interrupted save and is never resumed from
            (path / _STATE_FILE).write_text(json.dumps({"step": self.step, "config": self.config.to_dict()}, indent=1))
            done = sorted(self.checkpoint_dir.glob("step_*/" + _STATE_FILE))
            for old in [p.parent for p in done][: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        state_file = path / _STATE_FILE
        if not state_file.is_file():
            raise InputError(f"{path} is not a complete training checkpoint (no {_STATE_FILE})")
        saved = json.loads(state_file.read_text())
        if saved["config"]["model"] != self.config.to_dict()["model"]:
            raise InputError(f"checkpoint {path} was trained with another model config; resume with the same config")
        # the settings one run keeps (RUN_SETTINGS): a resumed optimiser, schedule and data order are the saved ones
        now = json.loads(json.dumps(self.config.to_dict()))  # as saved (tuples read back as lists)
        changed = sorted(k for k in RUN_SETTINGS - {"model", "output_dir"}
                         if k in saved["config"] and saved["config"][k] != now.get(k))
        if changed:
            k = changed[0]
            raise InputError(f"checkpoint {path} was trained with {k} = {saved['config'][k]!r}, not {now.get(k)!r}: "
                             f"{', '.join(changed)} cannot change within a run; resume with the run's settings, or "
                             "start another run in another output folder")
        self.accelerator.load_state(str(path))
        self.step = int(saved["step"])
        logger.info("resumed from %s at step %d", path, self.step)

    # -- one step ---------------------------------------------------------------------------
    def _curriculum(self, batch: dict, generator: torch.Generator) -> None:
        """Swap reference slots for augmented copies of the target; drop all references of some faces."""
        cfg = self.config
        mask = batch["ref_mask"]
        b, n = mask.shape
        p = cfg.self_ref_probability(self.step)
        if p > 0:
            # copies for every slot, kept where drawn (fixed shapes; see TrainingModel.forward)
            swap = (torch.rand(b, n, generator=generator) < p).to(mask.device) & mask
            copies, points = augment_copies(
                batch["target"].repeat_interleave(n, 0), batch["landmarks"].repeat_interleave(n, 0), generator,
                rotate_deg=cfg.self_ref_rotate, scale=cfg.self_ref_scale, shift=cfg.self_ref_shift,
                color=cfg.self_ref_color)
            batch["references"] = torch.where(swap[:, :, None, None, None], copies.view_as(batch["references"]),
                                              batch["references"])
            batch["ref_landmarks"] = torch.where(swap[:, :, None, None], points.view_as(batch["ref_landmarks"]),
                                                 batch["ref_landmarks"])
        if self.no_ref_probability > 0:
            drop = (torch.rand(b, generator=generator) < self.no_ref_probability).to(mask.device)
            batch["ref_mask"] = mask & ~drop[:, None]

    def _losses(self, batch: dict, generator: torch.Generator, curriculum: bool = True,
                model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The loss parts of ``batch``; ``curriculum``: swap in copies and drop references first
        (training); ``model``: another than the prepared one (the unwrapped model, which one
        process may run alone)."""
        from streamrestore.train.losses import landmark_attention_loss, pixel_loss, ssim_loss  # noqa: PLC0415

        cfg = self.config
        model = self.model if model is None else model
        if curriculum:
            self._curriculum(batch, generator)
        degraded, target = batch["degraded"], batch["target"]
        b = degraded.shape[0]
        if cfg.model.add_noise:
            noise = torch.randn(b, *self.ref_noise.shape[1:], generator=generator).to(degraded.device)
        else:
            noise = torch.zeros(b, *self.ref_noise.shape[1:], device=degraded.device)
        with self.accelerator.autocast():
            restored, probs = model(degraded, batch["references"], batch["ref_mask"], noise, self.ref_noise,
                                    self.map_layer)
        restored = restored.float()
        zero = restored.new_zeros(())
        parts = {"pixel": zero, "ssim": zero, "identity": zero, "landmark": zero}
        if cfg.pixel_weight > 0:
            parts["pixel"] = pixel_loss(restored, target, cfg.pixel_kind)
        if cfg.ssim_weight > 0:
            parts["ssim"] = ssim_loss(restored, target, multiscale=cfg.multiscale_ssim)
        if self.identity_loss is not None:
            parts["identity"] = self.identity_loss(restored, target)
        if probs is not None:
            grid = int(round(probs.shape[-1] ** 0.5))
            valid = batch["ref_mask"][:, 0:1].expand(-1, batch["landmarks"].shape[1])
            parts["landmark"] = landmark_attention_loss(probs, batch["landmarks"], batch["ref_landmarks"][:, 0],
                                                        grid, valid=valid, kind=cfg.landmark_kind)
        parts["loss"] = (cfg.pixel_weight * parts["pixel"] + cfg.ssim_weight * parts["ssim"]
                         + cfg.identity_weight * parts["identity"] + cfg.landmark_weight * parts["landmark"])
        return parts

    def _generator(self) -> torch.Generator:
        # one stream per (seed, step, process): the same draws after a resume
        seed = (self.config.seed * 1_000_003 + self.step * 101 + self.accelerator.process_index) % (2**63)
        return torch.Generator().manual_seed(seed)

    def dataloader(self) -> Iterator[dict]:
        """The batches from the current step on, on the accelerator's device, images as float in
        [0, 1] (the config's ``num_workers`` processes make them).

        The samples cross the workers' queues and the copy to the device as uint8 and become
        float there (the dataset's float values; on a GPU within a float32 rounding). On a GPU the
        batches are pinned and copied without waiting: a lent GPU's run is bound by its one Python
        process (docs/video_eval.md, "Session 25"), and the copy of float batches (0.8 MB per
        sample) was a part of that process's time per step.
        """
        from streamrestore.data.samples import images_to_float  # noqa: PLC0415

        world, device = self.accelerator.num_processes, self.accelerator.device
        sampler = StepBatchSampler(self.targets, self.config.batch_size, self.config.steps * world,
                                   seed=self.config.seed, start_batch=self.step * world)
        loader = torch.utils.data.DataLoader(self.dataset.with_uint8_images(), batch_sampler=sampler,
                                             num_workers=self.config.num_workers, persistent_workers=False,
                                             pin_memory=device.type == "cuda")
        for batch in self.accelerator.prepare_data_loader(loader, device_placement=False):
            yield images_to_float({k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                                   for k, v in batch.items()})

    # -- held-out losses --------------------------------------------------------------------
    def _heldout_batches(self) -> list[dict]:
        """``heldout_samples`` fixed samples of the held-out people, in batches of at most 32, on the
        CPU as float: the degradation of the phase that made them (the first one the run trains),
        their real references unjittered, a seed of their own."""
        if self._heldout is None:
            from streamrestore.data.samples import RestorationDataset  # noqa: PLC0415

            cfg = self.config
            dataset = RestorationDataset(self.pack, self.val_ids, preset=cfg.degradation, min_refs=cfg.min_refs,
                                         max_refs=cfg.max_refs, seed=cfg.seed + 1)
            samples = [dataset[i] for i in range(min(cfg.heldout_samples, len(dataset)))]
            size = min(cfg.batch_size, 32)
            self._heldout = [torch.utils.data.default_collate(samples[i:i + size])
                             for i in range(0, len(samples), size)]
        return self._heldout

    def heldout_losses(self) -> dict[str, float]:
        """The loss parts of the current weights on the held-out samples (means over the samples);
        nothing is trained, and the model is back in training mode afterwards."""
        device, model = self.accelerator.device, self.accelerator.unwrap_model(self.model)
        sums, count = dict.fromkeys(LOSS_PARTS, 0.0), 0
        model.eval()
        try:
            with torch.no_grad():
                for batch in self._heldout_batches():
                    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    parts = self._losses(batch, torch.Generator().manual_seed(0), curriculum=False, model=model)
                    n = batch["degraded"].shape[0]
                    count += n
                    for k in LOSS_PARTS:
                        sums[k] += float(parts[k]) * n
        finally:
            model.train()
        return {k: v / count for k, v in sums.items()}

    def record_heldout(self) -> dict[str, float]:
        """The held-out losses of the current weights as a row of ``heldout.csv``; the weights are
        exported to ``best.safetensors`` when their ``heldout_select`` loss is the lowest so far (the
        best step and value are kept in ``heldout_best.json``, so a resumed run goes on comparing).
        Main process only."""
        if not self.accelerator.is_main_process or not self.val_ids:
            return {}
        if not self._heldout_batches():
            logger.warning("held-out losses skipped: the held-out people %s give no sample", self.val_ids)
            return {}
        losses = self.heldout_losses()
        best_path, csv_path = self.output_dir / "heldout_best.json", self.output_dir / "heldout.csv"
        key = self.config.heldout_select
        best = json.loads(best_path.read_text()) if best_path.is_file() else None
        is_best = best is None or best.get("select") != key or losses[key] < best["value"]
        new = not csv_path.is_file()
        with csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", *LOSS_PARTS, "best"])
            writer.writerow([self.step, *(f"{losses[k]:.6f}" for k in LOSS_PARTS), int(is_best)])
        if is_best:
            self.export(self.output_dir / "best.safetensors")
            best_path.write_text(json.dumps({"step": self.step, "select": key, "value": losses[key]}))
        logger.info("held out at step %d: loss %.4f, identity %.4f, landmark %.4f%s", self.step, losses["loss"],
                    losses["identity"], losses["landmark"], f" (lowest {key} so far)" if is_best else "")
        return losses

    # -- the loop ---------------------------------------------------------------------------
    def train(self, stop_at: int | None = None, max_seconds: float | None = None, progress: bool = True) -> TrainResult:
        """Train to the run's last step (:attr:`TrainConfig.final_step`), or to ``stop_at``, or for
        ``max_seconds`` of wall time, then save a checkpoint; at the last step also validate and
        export ``model.safetensors``. Phases are entered in order, each ending with a checkpoint."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        acc, final = self.accelerator, self.plan.final_step
        end = min(final, stop_at) if stop_at is not None else final
        if self._fresh and self.step == 0 and self.latest_checkpoint() is not None:
            # a fresh run here would interleave its checkpoints and losses with the other run's
            raise InputError(f"{self.output_dir} holds the checkpoints of a run (newest {self.latest_checkpoint()}); "
                             "continue it with --resume latest, or give another output folder")
        if end <= self.step:
            logger.warning("nothing to train: the run is at step %d and would stop at %d", self.step, end)
        self._fresh = False  # a second train() on this object continues its own run
        self.model.train()
        log_path = self.output_dir / "losses.csv"
        result = TrainResult(step=self.step)
        started = time.monotonic()
        if self.time_budget is not None:
            self.time_budget.start()
            max_seconds = self.time_budget.seconds if max_seconds is None else max_seconds
        bar = tqdm(total=end, initial=self.step, disable=not (progress and acc.is_main_process),
                   desc="train", dynamic_ncols=True)
        try:
            self._train_until(end, max_seconds, started, bar, result, log_path)
        except KeyboardInterrupt as exc:
            # Ctrl-C or a stop signal: keep the steps done (the update itself is never cut in two)
            bar.close()
            self._save_on_interrupt(result)
            if result.checkpoint is not None:  # said by the command line instead of "the output was not written"
                exc.kept = f"checkpoint {result.checkpoint}; go on with --resume latest"  # type: ignore[attr-defined]
            raise
        bar.close()
        result.step = self.step
        if self.step >= final:
            if not self._checkpointed_now(result):
                result.checkpoint = self.save_checkpoint()
            result.validation = self.validate()
            result.exported = self.export(self.output_dir / "model.safetensors")
        return result

    def _checkpointed_now(self, result: TrainResult) -> bool:
        """Whether ``result``'s checkpoint is of the current step."""
        return result.checkpoint is not None and result.checkpoint.name.endswith(f"{self.step:07d}")

    def _save_on_interrupt(self, result: TrainResult) -> None:
        """Checkpoint the steps done since the last checkpoint, so an interrupted run resumes
        where it stopped. Only a single-process run does it: the other processes of a
        distributed run may not have seen the signal, and the save waits for all of them."""
        if self._checkpointed_now(result) or self.accelerator.num_processes != 1 or self.step == 0:
            return
        result.checkpoint = self.save_checkpoint()
        logger.warning("interrupted at step %d; checkpoint %s; resume with --resume latest", self.step,
                       result.checkpoint)

    def _train_until(self, end: int, max_seconds: float | None, started: float, bar, result: TrainResult,
                     log_path: Path) -> None:
        """The steps up to ``end`` (or the time limit); fills ``result``'s losses and checkpoint."""
        acc, final = self.accelerator, self.plan.final_step
        window: dict[str, list[float]] = {k: [] for k in LOSS_PARTS}
        window_start, window_samples = started, 0
        out_of_time = False
        if self.config.heldout_every and self.step == 0:
            self.record_heldout()  # where the run starts from
        while self.step < end and not out_of_time:
            if self.phase_number != self._config_phase:
                self._enter_phase()
            cfg = self.config
            stop = min(end, self.plan.phase(self.step)[1])
            for batch in self.dataloader():
                parts = self.train_step(batch)
                window_samples += batch["degraded"].shape[0] * acc.num_processes
                for k in LOSS_PARTS:
                    window[k].append(float(parts[k].detach()))
                bar.update(1)
                out_of_time = max_seconds is not None and time.monotonic() - started > max_seconds
                if self.step % cfg.log_every == 0 or self.step == stop or out_of_time:
                    result.losses = self._log(log_path, window, window_start, window_samples)
                    bar.set_postfix(loss=f"{result.losses['loss']:.4f}", refs_self=f"{cfg.self_ref_probability(self.step):.2f}")
                    window = {k: [] for k in LOSS_PARTS}
                    window_start, window_samples = time.monotonic(), 0
                if cfg.val_every and self.step % cfg.val_every == 0 and self.step < final:
                    result.validation = self.validate()
                if cfg.heldout_every and (self.step % cfg.heldout_every == 0 or self.step == stop or out_of_time):
                    self.record_heldout()
                if self.step % cfg.checkpoint_every == 0 or self.step == stop or out_of_time:
                    result.checkpoint = self.save_checkpoint()
                if out_of_time:
                    logger.warning("time limit reached at step %d; resume with --resume latest", self.step)
                if out_of_time or self.step >= stop:
                    break
            else:  # pragma: no cover - the sampler holds batches up to config.steps >= stop
                break

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimiser update on ``batch`` (one of :meth:`dataloader`'s); returns the loss parts."""
        acc, cfg = self.accelerator, self.config
        parts = self._losses(batch, self._generator())
        loss = float(parts["loss"].detach())  # (the loop reads it right after anyway)
        if not math.isfinite(loss):  # before the update: the weights and the last checkpoint stay sound
            latest = self.latest_checkpoint()
            raise InputError(f"the training loss is {loss} at step {self.step + 1}: the run diverged (too high a "
                             "learning rate, or a bad setting); nothing of this step was applied"
                             + (f"; the last checkpoint is {latest}" if latest else ""))
        acc.backward(parts["loss"])
        # a signal waits for the whole update: weights, optimiser, schedule and step agree
        with stop_signals_held():
            if cfg.grad_clip is not None and acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
        return parts

    def _log(self, path: Path, window: dict, since: float, samples: int) -> dict[str, float]:
        means = {k: float(np.mean(v)) if v else float("nan") for k, v in window.items()}
        if self.accelerator.is_main_process:
            new = not path.is_file()
            with path.open("a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["step", "lr", *LOSS_PARTS, "self_ref_p", "samples_per_s", "time"])
                rate = samples / max(1e-9, time.monotonic() - since)
                writer.writerow([self.step, f"{self.scheduler.get_last_lr()[0]:.3e}",
                                 *(f"{means[k]:.6f}" for k in LOSS_PARTS),
                                 f"{self.config.self_ref_probability(self.step):.3f}", f"{rate:.2f}",
                                 time.strftime("%Y-%m-%dT%H:%M:%S")])
            # without a terminal the progress bar shows nothing (a log file, nohup): a line every 30 s instead
            now = time.monotonic()
            if not sys.stderr.isatty() and now - self._progress_said >= PROGRESS_LINE_SECONDS:
                self._progress_said = now
                logger.info("step %d/%d: loss %.4f, %.1f samples/s", self.step, self.plan.final_step, means["loss"],
                            rate)
        return means

    # -- validation and export --------------------------------------------------------------
    def restorer(self, device: str | torch.device | None = None):
        """An :class:`InstantRestorer` on a copy of the current weights (training is untouched)."""
        from streamrestore.model.restorer import InstantRestorer  # noqa: PLC0415

        net = copy.deepcopy(self.accelerator.unwrap_model(self.model).net)
        return InstantRestorer(net, device or self.accelerator.device, torch.float32, name="training")

    def validate(self) -> list[dict]:
        """Held-out identities: averaged rows of :func:`streamrestore.eval.run.evaluate`
        (input, bicubic, model without / with 1 / with 4 / with another person's references),
        judged by both MobileFaceNets of ``judge_models`` (dlib off: too slow for a training loop;
        no identity scores without ``judge_models``). Main process only; rows are appended to
        ``validation.csv``."""
        if not self.accelerator.is_main_process or not self.val_ids:
            return []
        from streamrestore.eval.judges import load_judges  # noqa: PLC0415
        from streamrestore.eval.run import EvalConfig, evaluate, load_cases  # noqa: PLC0415

        eval_config = EvalConfig(preset=self.config.preset, limit=self.config.val_cases, grid_cases=0, with_dlib=False)
        try:
            cases = load_cases(self.config.data, eval_config, identities=self.val_ids)
        except InputError as exc:
            logger.warning("validation skipped: %s", exc)
            return []
        judges = load_judges(self.config.judge_models, with_dlib=False) if self.config.judge_models else {}
        result = evaluate(cases, self.restorer(), judges, None, eval_config)
        path = self.output_dir / "validation.csv"
        new = not path.is_file()
        keys = ("psnr", "ssim", "id_paddle", "id_mobilefacenet")
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "method", "n", *keys])
            for row in result.rows:
                writer.writerow([self.step, row["method"], row["n"], *(f"{row[k]:.4f}" for k in keys)])
        summary = {r["method"]: r for r in result.rows}
        if "model_refs4" in summary:
            logger.info("validation at step %d: refs4 %.2f dB / id %.3f, norefs id %.3f, other id %.3f", self.step,
                        summary["model_refs4"]["psnr"], summary["model_refs4"]["id_paddle"],
                        summary["model_norefs"]["id_paddle"], summary["model_refs4_other"]["id_paddle"])
        self.model.train()
        return result.rows

    def export(self, path: str | Path, dtype: str | None = None) -> Path:
        """Write the current weights in the shippable format (:func:`save_restorer`)."""
        from streamrestore.model.checkpoint import save_restorer  # noqa: PLC0415

        dtype = getattr(torch, dtype or self.config.export_dtype)
        if not self.accelerator.is_main_process:
            return Path(path)
        return save_restorer(self.accelerator.unwrap_model(self.model).net, path, dtype=dtype)


def train(config: TrainConfig, resume: str | Path | None = None, **options) -> TrainResult:
    """Build a :class:`Trainer` and run it (``options`` go to :meth:`Trainer.train`)."""
    return Trainer(config, resume=resume).train(**options)
