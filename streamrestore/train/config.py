"""Training configuration: one dataclass, read from a TOML, YAML or JSON file.

A file has top-level training keys and a ``[model]`` table that builds the
:class:`~streamrestore.model.config.RestorerConfig`::

    data = "runs/trainok_128.npz"      # a pack written by python -m streamrestore.data
    output_dir = "runs/lite"
    steps = 2000
    batch_size = 8

    [model]
    base = "none"                      # start from RestorerConfig defaults, "tiny" or "tiny-pixel"
    latent = "pixel"
    unet_lora = false                  # TOML has no null: false means None for optional fields
    ...
    [model.unet]
    block_out_channels = [64, 128, 192]

    [[phases]]                         # optional: phases run in order by one `streamrestore train`
    until = 500                        # steps 0-500 without the identity loss
    identity_weight = 0
    [[phases]]
    until = 2000                       # then the settings above, to step 2000 (the run ends there)

Relative paths in the file are resolved against the current directory (the repository root
when the documented commands are used), not against the file: the shipped
``configs/lite.toml`` points at ``runs/`` and ``../shared`` like every other tool here. The
package knows nothing of that folder: a config names the files it needs (``identity_weights``,
``judge_models``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrestore.errors import InputError
from streamrestore.model.config import RestorerConfig, tiny_config
from streamrestore.settings import check_kinds

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.train.video_faces import VideoFaceSettings

__all__ = ["TrainConfig", "load_train_config", "build_model_config", "parse_overrides", "open_training_pack"]

#: RestorerConfig fields that may be None; a file writes ``false`` (TOML has no null).
_OPTIONAL_MODEL_FIELDS = ("vae", "unet_lora", "vae_lora", "freeu")

#: Settings a phase cannot change, being built once per run: the network and its start, the
#: data and who is held out, the optimiser and its schedule (a resumed optimiser keeps the
#: state it saved), the data order (a function of the step, the batch size and the seed) and
#: where the checkpoints go.
#: the parts of the training loss, as ``losses.csv`` and ``heldout.csv`` name their columns
LOSS_PARTS = ("loss", "pixel", "ssim", "identity", "landmark")

RUN_SETTINGS = frozenset({
    "model", "init_weights", "data", "require_train_ok", "val_fraction", "val_split_seed", "holdout_identities",
    "lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "steps", "mixed_precision", "batch_size",
    "seed", "output_dir", "phases", "train_only",
})


def build_model_config(table: dict[str, Any]) -> RestorerConfig:
    """A :class:`RestorerConfig` from a ``[model]`` table.

    ``base`` picks the starting point: ``"none"`` (the dataclass defaults, i.e. the paper's
    network), ``"tiny"`` / ``"tiny-pixel"`` (:func:`tiny_config`, for tests). Every other key
    replaces that field; ``unet`` / ``vae`` tables are merged key by key into the base dicts;
    ``false`` for an optional field (vae, unet_lora, vae_lora, freeu) means None.
    """
    table = dict(table)
    base_name = table.pop("base", "none")
    if base_name == "none":
        base = RestorerConfig()
    elif base_name in ("tiny", "tiny-pixel"):
        base = tiny_config("pixel" if base_name == "tiny-pixel" else "vae")
    else:
        raise ValueError(f"model.base must be 'none', 'tiny' or 'tiny-pixel', got {base_name!r}")
    known = {f.name for f in fields(RestorerConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; valid ones are the RestorerConfig fields")
    data = json.loads(base.to_json())
    for key, value in table.items():
        if key in _OPTIONAL_MODEL_FIELDS and value is False:
            data[key] = None
        elif key in ("unet", "vae") and isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RestorerConfig.from_json(json.dumps(data))


@dataclass
class TrainConfig:
    """Everything a training run needs besides the machine.

    Loss weights follow the paper's balance (landmark attention 5000 next to weights ~1 for the
    others) unless a config says otherwise. Steps count optimiser updates (of all processes
    together: each step every process takes ``batch_size`` samples).
    """

    #: the model to build (see :func:`build_model_config`).
    model: RestorerConfig = field(default_factory=RestorerConfig)
    #: a packed dataset ``.npz`` (:func:`streamrestore.data.pack.pack_dataset`).
    data: str = "runs/trainok_128.npz"
    #: checkpoints, ``losses.csv``, ``validation.csv`` and the exported model go here.
    output_dir: str = "runs/train"
    #: refuse packs holding anything but train-ok sources (a shipped model must pass this).
    require_train_ok: bool = True
    #: the MobileFaceNet state dict (``mobilefacenet_foamliu.pt``) the identity loss runs;
    #: required when ``identity_weight > 0``.
    identity_weights: str | None = None
    #: the evaluation models folder (:class:`~streamrestore.model_files.EvalModelFiles`) whose
    #: identity judges score validation; None: validation without identity scores.
    judge_models: str | None = None
    seed: int = 0
    #: optimiser updates in total.
    steps: int = 1000
    #: samples per process per step.
    batch_size: int = 8
    #: AdamW settings. 3e-4 suits a from-scratch 10 M-parameter UNet; LoRA at paper scale uses
    #: about 1e-5 .. 5e-5.
    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    #: linear warm-up steps, then cosine decay to ``lr * min_lr_ratio``.
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    #: gradient norm clip (None: off).
    grad_clip: float | None = 1.0
    #: accelerate mixed precision: "no", "fp16" or "bf16" (GPU only; CPU always trains fp32).
    mixed_precision: str = "no"
    #: DataLoader worker processes (0: load in the training process, best on 2-core machines).
    num_workers: int = 0
    #: degradation of the training samples: a preset name (severe, moderate, mild, video) or a
    #: table of :class:`~streamrestore.data.degrade.DegradationPreset` fields.
    preset: Any = "severe"
    #: more presets to mix with ``preset``: a list of tables, each ``weight`` plus a preset
    #: ``name`` or preset fields (e.g. ``{name = "clean", weight = 0.15}``); ``preset`` itself
    #: has weight ``preset_weight``. Empty: every sample uses ``preset``.
    extra_presets: list = field(default_factory=list)
    preset_weight: float = 1.0
    #: share of the samples that are faces cut from whole degraded clips instead of pack crops
    #: degraded one by one (:mod:`streamrestore.train.video_faces`; 0: none). They are made once
    #: from the pack's train-ok clips of the training people and kept in
    #: ``output_dir/video_faces.npz``.
    video_weight: float = 0.0
    #: how they are made: :class:`~streamrestore.train.video_faces.VideoFaceSettings` fields
    #: (``frames``, ``draws``, ``max_frames``, ``scale``, ``blur``, ``crf``).
    video_faces: dict = field(default_factory=dict)
    #: the shared media folder the pack's sources are relative to, and the insightface folder
    #: (SCRFD) that finds the faces in the clean frames: for the video faces only.
    shared: str = "../shared"
    face_models: str = "../shared/models/insightface"
    min_refs: int = 1
    max_refs: int = 4
    #: fraction of identities held out for validation (by :meth:`PackedFaces.split`).
    val_fraction: float = 0.15
    val_split_seed: int = 0
    #: identity names (the pack's labels) never trained on, whatever the split draws: they join
    #: the validation identities. Benchmarks measure on these people.
    holdout_identities: list = field(default_factory=list)
    #: a model file (``save_restorer`` format, e.g. the shipped lite) whose weights start a run
    #: that is not resumed; its config must build the same network as ``model``.
    init_weights: str | None = None
    #: loss weights; a weight of 0 skips that loss (and its cost).
    pixel_weight: float = 1.0
    pixel_kind: str = "l1"
    ssim_weight: float = 1.0
    multiscale_ssim: bool = False
    identity_weight: float = 1.0
    landmark_weight: float = 5000.0
    #: index into the model's shared layers of the layer the landmark attention loss watches
    #: (negative counts from the end; -1 is the last, highest-resolution up-block layer).
    landmark_layer: int = -1
    #: how the landmark attention loss compares maps: "minmax" (the paper) or "kl" (see
    #: :func:`~streamrestore.train.losses.landmark_attention_loss`; weights ~1 instead of ~5000).
    landmark_kind: str = "minmax"
    #: let the loss gradients flow into the reference pass (the reference network learns to
    #: produce useful keys/values); False runs references under no_grad (cheaper).
    reference_grad: bool = True
    #: curriculum: probability that a reference slot holds an augmented copy of the target
    #: instead of another photo, falling linearly from ``self_ref_start`` at step 0 to 0 at
    #: ``self_ref_until`` (a fraction of ``steps``). Copies are trivially useful, so the
    #: reference attention learns to fetch detail before it must cope with other photos.
    self_ref_start: float = 0.0
    self_ref_until: float = 0.5
    #: the copies' random similarity warp (degrees, relative scale, fraction of the side) and
    #: colour jitter (relative gain), so copying pixels in place is not enough.
    self_ref_rotate: float = 8.0
    self_ref_scale: float = 0.08
    self_ref_shift: float = 0.05
    self_ref_color: float = 0.12
    #: every real reference moved, turned, scaled and relit at this amount
    #: (:func:`streamrestore.data.samples.jitter_reference`; 1: up to 3 px, 4 degrees, 4 %, ±20 %
    #: light), landmarks following. The pack's references are mostly frames of the target's own
    #: clip, aligned and lit as the target is; a user's photos are not. 0 leaves them as they are.
    reference_jitter: float = 0.0
    #: save a resumable checkpoint every N steps (and at the end); keep the newest K.
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    #: validate every N steps (0: only at the end) on at most ``val_cases`` held-out identities.
    val_every: int = 500
    val_cases: int = 8
    #: train only the parameters whose names contain one of these strings (e.g. ``["attn1"]``: the
    #: self-attention layers, where the references' keys and values join the face's); the others
    #: stay as initialised. Empty: everything the method trains.
    train_only: list = field(default_factory=list)
    #: every N steps (and before the first), the training losses on ``heldout_samples`` fixed samples
    #: of the held-out people (their real references, none dropped or swapped for copies), a row of
    #: ``heldout.csv``; the weights with the lowest held-out loss so far are kept as
    #: ``best.safetensors``. 0: off. Needs no judge files, so it runs where ``val_every`` cannot
    #: (a lent GPU without ONNX Runtime): runs of ~150k samples over ~100 training people learnt those
    #: people and lost identity on others (docs/video_eval.md, "Session 27").
    heldout_every: int = 0
    heldout_samples: int = 64
    #: which held-out loss picks ``best.safetensors``: ``loss`` (the weighted sum trained on) or one
    #: part, ``pixel``, ``ssim``, ``identity`` or ``landmark``.
    heldout_select: str = "loss"
    #: append a row to ``losses.csv`` every N steps (running means since the last row).
    log_every: int = 10
    #: write ``model.safetensors`` (the shippable format) at the end in this dtype.
    export_dtype: str = "float16"
    #: training phases, run in order by one run (``[[phases]]`` tables in a TOML file): each
    #: ``until = STEP``, where it ends, plus the top-level settings it trains with instead of
    #: the file's (any but :data:`RUN_SETTINGS`). A phase ends with a checkpoint; a resumed run
    #: continues in the phase of its step. The run ends, validates and exports at the last
    #: phase's ``until`` (:attr:`final_step`), which may come before ``steps``, the length of the
    #: learning-rate schedule. Empty: one phase, to ``steps``.
    phases: list = field(default_factory=list)

    def __post_init__(self) -> None:
        check_kinds(self)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if (len(self.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                                            for b in self.betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.landmark_kind not in ("minmax", "kl"):
            raise ValueError(f"landmark_kind must be 'minmax' or 'kl', got {self.landmark_kind!r}")
        if self.pixel_kind not in ("l1", "l2"):
            raise ValueError(f"pixel_kind must be 'l1' or 'l2', got {self.pixel_kind!r}")
        if not 1 <= self.min_refs <= self.max_refs:
            raise ValueError(f"need 1 <= min_refs <= max_refs, got {self.min_refs}, {self.max_refs}")
        if not 0.0 <= self.self_ref_start <= 1.0:
            raise ValueError(f"self_ref_start must be in [0, 1], got {self.self_ref_start}")
        if self.reference_jitter < 0:
            raise ValueError(f"reference_jitter must be >= 0, got {self.reference_jitter}")
        if not 0.0 <= self.self_ref_until <= 1.0:
            raise ValueError(f"self_ref_until must be in [0, 1], got {self.self_ref_until}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.val_every < 0:
            raise ValueError("checkpoint_every and log_every must be >= 1 and val_every >= 0, got "
                             f"{self.checkpoint_every}, {self.log_every}, {self.val_every}")
        if self.heldout_every < 0 or self.heldout_samples < 1:
            raise ValueError("heldout_every must be >= 0 and heldout_samples >= 1, got "
                             f"{self.heldout_every}, {self.heldout_samples}")
        if self.heldout_select not in LOSS_PARTS:
            raise ValueError(f"heldout_select must be one of {', '.join(LOSS_PARTS)}, got {self.heldout_select!r}")
        if self.export_dtype not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {self.export_dtype!r}")
        for name in ("pixel_weight", "ssim_weight", "identity_weight", "landmark_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.betas = tuple(self.betas)
        from streamrestore.data.degrade import get_preset  # noqa: PLC0415

        self.preset = _preset_from_table(self.preset)
        get_preset(self.preset)  # unknown names fail here, not mid-run
        if self.preset_weight < 0:
            raise ValueError(f"preset_weight must be >= 0, got {self.preset_weight}")
        for table in self.extra_presets:
            if not isinstance(table, dict) or "weight" not in table:
                raise ValueError(f"each extra_presets entry needs a weight, got {table!r}")
            _preset_from_table(table)
        if not 0.0 <= self.video_weight < 1.0:
            raise ValueError(f"video_weight must be in [0, 1), got {self.video_weight}")
        self.video_faces = dict(self.video_faces)
        self.video_settings  # unknown or invalid fields fail here
        self.holdout_identities = [str(n) for n in self.holdout_identities]
        self._check_phases()

    def _check_phases(self) -> None:
        self.phases = [dict(p) if isinstance(p, dict) else p for p in self.phases]
        known = {f.name for f in fields(self)}
        start = 0
        for number, phase in enumerate(self.phases, 1):
            if not isinstance(phase, dict) or "until" not in phase:
                raise ValueError(f"phase {number} needs until = STEP (where it ends), got {phase!r}")
            until = phase["until"]
            if isinstance(until, bool) or not isinstance(until, int) or not start < until <= self.steps:
                raise ValueError(f"phase {number}: until must be a step after {start} and at most steps = "
                                 f"{self.steps}, got {until!r}")
            unknown = sorted(set(phase) - known - {"until"})
            if unknown:
                raise ValueError(f"phase {number}: unknown settings {unknown}")
            fixed = sorted(set(phase) & RUN_SETTINGS)
            if fixed:
                raise ValueError(f"phase {number}: {fixed} cannot change within a run (they are built once)")
            start = until
        for number in range(len(self.phases)):  # each phase's settings must be valid too
            self.phase(self.phases[number - 1]["until"] if number else 0)

    @property
    def final_step(self) -> int:
        """The step where the run ends: the last phase's ``until``, or ``steps``."""
        return int(self.phases[-1]["until"]) if self.phases else self.steps

    def phase(self, step: int) -> tuple["TrainConfig", int]:
        """The settings that train from ``step`` on, and the step where they stop.

        Without phases: this config and :attr:`final_step`. With phases: this config with the
        changes of the phase that holds ``step`` (the last one from its ``until`` on), and without
        ``phases`` (a phase's settings never hold another phase); the step is that ``until``.
        """
        if not self.phases:
            return self, self.final_step
        current = next((p for p in self.phases if step < p["until"]), self.phases[-1])
        changes = {k: v for k, v in current.items() if k != "until"}
        return self.replace(phases=[], **changes), int(current["until"])

    @property
    def video_settings(self) -> VideoFaceSettings:
        """:attr:`video_faces` as :class:`~streamrestore.train.video_faces.VideoFaceSettings`."""
        from streamrestore.train.video_faces import VideoFaceSettings  # noqa: PLC0415

        known = {f.name for f in fields(VideoFaceSettings)}
        unknown = sorted(set(self.video_faces) - known)
        if unknown:
            raise ValueError(f"video_faces: unknown settings {unknown}; valid ones: {sorted(known)}")
        return VideoFaceSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.video_faces.items()})

    @property
    def degradation(self):
        """What the training samples are degraded with: ``preset``, or a
        :class:`~streamrestore.data.degrade.DegradationMix` when ``extra_presets`` are given."""
        from streamrestore.data.degrade import DegradationMix, get_preset  # noqa: PLC0415

        if not self.extra_presets:
            return get_preset(self.preset)
        presets = [get_preset(self.preset)] + [get_preset(_preset_from_table(t)) for t in self.extra_presets]
        weights = [self.preset_weight] + [float(t["weight"]) for t in self.extra_presets]
        return DegradationMix(tuple(presets), tuple(weights))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = json.loads(self.model.to_json())
        return data

    def self_ref_probability(self, step: int) -> float:
        """Curriculum: chance that a reference slot is an augmented copy of the target at ``step``."""
        end = self.self_ref_until * self.steps
        if self.self_ref_start <= 0 or step >= end:
            return 0.0
        return self.self_ref_start * (1.0 - step / end)

    def replace(self, **changes) -> "TrainConfig":
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return TrainConfig(**data)


def _preset_from_table(value: Any) -> Any:
    """A preset name as is; a table: ``name`` alone picks a named preset, other keys build a
    :class:`~streamrestore.data.degrade.DegradationPreset` (``false`` turns a step off)."""
    from streamrestore.data.degrade import DegradationPreset  # noqa: PLC0415

    if not isinstance(value, dict):
        return value
    table = {k: v for k, v in value.items() if k != "weight"}
    if set(table) == {"name"}:
        return table["name"]
    table = {k: tuple(v) if isinstance(v, list) else (None if v is False else v) for k, v in table.items()}
    return DegradationPreset(**table)


def _read_table(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        from streamrestore import toml_text  # noqa: PLC0415

        return toml_text.loads(text)
    if suffix == ".json":
        return json.loads(text)
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415
        except ImportError as exc:
            raise InputError(f"reading {path} needs PyYAML (pip install pyyaml); or write the config as .toml") from exc
        return yaml.safe_load(text) or {}
    raise InputError(f"{path}: unknown config format {suffix!r}; use .toml, .json or .yaml")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["identity_weight=0.2", "output_dir=\"runs/x\""]`` -> ``{"identity_weight": 0.2, ...}``.

    Values are TOML literals; a bare word that is not one (``runs/x``) is taken as a string.
    """
    from streamrestore import toml_text  # noqa: PLC0415

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = toml_text.loads(f"v = {value.strip()}")["v"]
        except toml_text.TOMLDecodeError:
            out[key] = value.strip()
    return out


def load_train_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a training config file; ``overrides`` replace top-level keys after reading."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training config {path} not found")
    try:
        table = _read_table(path)
    except (ValueError, OSError) as exc:  # tomllib/json decode errors are ValueErrors
        raise InputError(f"cannot read training config {path}: {exc}") from exc
    table.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"{path}: unknown training settings {unknown}; valid ones: {sorted(known)}")
    try:
        model = table.pop("model", {})
        model_config = model if isinstance(model, RestorerConfig) else build_model_config(model)
        return TrainConfig(model=model_config, **table)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: invalid training config: {exc}") from exc


def open_training_pack(config: TrainConfig):
    """The pack ``config`` trains on, checked, with its (train, validation) identities.

    The pack must be train-ok when ``config.require_train_ok`` and hold crops at the model's
    resolution. The identities are the pack's seeded split with the held-out people taken out of
    the training half and added to validation (those with at least 3 crops). Every stage trained
    from ``config`` (the UNet, a detail head after it) draws from the same people.

    Returns:
        ``(pack, train_ids, val_ids)``: a :class:`~streamrestore.data.pack.PackedFaces` and two
        lists of identity names.

    Raises:
        InputError: a pack that is not train-ok, at another resolution, or holding none of the
            configured held-out people.
    """
    from streamrestore.data.pack import PackedFaces  # noqa: PLC0415

    pack = PackedFaces(config.data)
    if config.require_train_ok:
        pack.require_train_ok()
    else:
        # the switch is for data of your own (unknown licence); data marked eval-only is never trained on
        from streamrestore.data.sources import EVAL_ONLY, EvalOnlyDataError  # noqa: PLC0415

        eval_only = [n for n, lic in zip(pack.source_names, pack.source_licences) if lic == EVAL_ONLY]
        if eval_only:
            raise EvalOnlyDataError(f"{config.data} holds {len(eval_only)} eval-only source(s) (e.g. {eval_only[0]}): "
                                    "they are never trained on, require_train_ok = false or not")
        logger.warning("require_train_ok = false: training on %s, whose sources are %s; a model trained so "
                       "is not one to ship", config.data, ", ".join(sorted(pack.licence_classes)))
    if pack.resolution != config.model.resolution:
        raise InputError(f"{config.data} holds {pack.resolution} px crops but the model works at "
                         f"{config.model.resolution} px; pack the data at the model's resolution")
    train_ids, val_ids = pack.split(config.val_fraction, config.val_split_seed)
    held = set(config.holdout_identities) & set(pack.identities)
    if config.holdout_identities and not held:
        raise InputError(f"none of holdout_identities {config.holdout_identities[:3]} is in {config.data}")
    train_ids = [n for n in train_ids if n not in held]
    val_ids = sorted(set(val_ids) | {n for n in held if len(pack.indices_of(n)) >= 3})
    return pack, train_ids, val_ids
