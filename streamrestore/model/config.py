"""Configuration of the InstantRestore restorer.

One dataclass describes every model this package builds: the paper-scale network (SD-Turbo UNet +
sd-vae-ft-mse VAE, both with LoRA), tiny test networks, and the small shipped ``lite`` model
(pixel latent space, no LoRA). The diffusers sub-configs are plain dicts in ``config.json`` form
so they can be read from a model folder or written into a safetensors header unchanged.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: The paper's fixed prompt; its embedding is computed once and stored with the model.
PROMPT = "A high-quality photo of a person; professional, 8k"

#: UNet LoRA targets of the official release (module-name suffixes, peft matching rules).
PAPER_UNET_LORA_TARGETS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
)
#: VAE LoRA targets of the official release.
PAPER_VAE_LORA_TARGETS = (
    "conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0",
)

#: ``stabilityai/sd-turbo`` UNet (SD 2.1 architecture, 865.9 M parameters), as its config.json.
SD_TURBO_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}

#: ``stabilityai/sd-vae-ft-mse`` (AutoencoderKL, 8x down-sampling, 4 latent channels).
SD_VAE_FT_MSE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on one sub-network (peft), as in the official release.

    ``rank`` 32 and ``alpha`` = rank // 2 are the released values; ``targets`` are module-name
    suffixes matched with peft's rules; ``adapter`` is the peft adapter name that appears in
    state-dict keys (``default`` for the UNet, ``vae_skip`` for the VAE in the release).
    """

    rank: int = 32
    alpha: int | None = None  # None: rank // 2, the released convention
    targets: tuple[str, ...] = PAPER_UNET_LORA_TARGETS
    adapter: str = "default"

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoRA targets must name at least one module suffix")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else max(1, self.rank // 2)


@dataclass(frozen=True)
class FreeU:
    """FreeU factors on the up blocks; the release uses them on both UNets."""

    s1: float = 0.9
    s2: float = 0.2
    b1: float = 1.4
    b2: float = 1.6


@dataclass(frozen=True)
class DetailHeadSettings:
    """The detail head (:mod:`streamrestore.model.detail_head`): ``blocks`` residual blocks of
    ``channels`` 3×3 convolutions on the face pixel-unshuffled by ``factor``. The defaults are
    lite's: 32 channels and 3 blocks at 64×64 cost about 0.3 GMAC per 128 px face.

    ``references``: the head also sees the mean of the identity's aligned reference faces (kept
    in its :class:`~streamrestore.model.cache.ReferenceCache`), a direct path for the person's
    own eyes, brows and skin that does not go through the attention's content matching. A face
    without references shows the head its own degraded face there instead (as in training).
    ``reference_detail_sigma`` > 0 shows it only the mean face's detail: the face minus its
    Gaussian blur of this sigma (pixels), so the references' light and colour, which differ from
    photo to photo, do not reach the output; 0 shows the mean face as it is.

    ``context`` > 0: the head also sees the whole face at once, as ``context`` features pooled over
    it (their mean and spread), which scale and shift its hidden features and its output per face.
    The convolutions alone see ~34 px of the 128 px face, too little to tell a mildly from a
    severely damaged face, and the change that suits one overshoots or undershoots on the other
    (lite v6's head, fitted to single-crop damage, was 0.07-0.13 dB better on video scaled by 0.7;
    lite v7's, fitted to both, lost 0.13 dB on photos). 0 (lite v7's head): no context.

    ``members`` > 1: that many heads of these settings, trained apart (other seeds), whose changes
    are averaged. One head's change on a given clip depends on its training draw by about as much
    as the bars' margins (two heads of one recipe whose samples differ by x264's threading:
    Obama's identity gain −0.004 and −0.026, Andrew Ng's identity spread 0.045 and 0.030); their
    mean is steadier. Each member costs the head's ~0.3 GMAC per face again. 1 (default): one head
    (lite v7); lite v8 and v9 ship 3.
    """

    channels: int = 32
    blocks: int = 3
    factor: int = 2
    references: bool = False
    reference_detail_sigma: float = 0.0
    context: int = 0
    members: int = 1

    def __post_init__(self):
        for name in ("channels", "factor", "members"):
            if getattr(self, name) < 1:
                raise ValueError(f"detail head {name} must be >= 1, got {getattr(self, name)}")
        if self.blocks < 0:
            raise ValueError(f"detail head blocks must be >= 0, got {self.blocks}")
        if self.context < 0:
            raise ValueError(f"detail head context must be >= 0, got {self.context}")
        if self.reference_detail_sigma < 0:
            raise ValueError(f"detail head reference_detail_sigma must be >= 0, got {self.reference_detail_sigma}")


@dataclass(frozen=True)
class RestorerConfig:
    """Everything that defines a restorer network (weights aside).

    Defaults are the paper's values; :func:`paper_config` and :func:`tiny_config` fill in the
    architecture dicts.
    """

    #: diffusers ``UNet2DConditionModel`` config (config.json form).
    unet: dict[str, Any] = field(default_factory=lambda: dict(SD_TURBO_UNET))
    #: ``"vae"``: AutoencoderKL latent space (paper); ``"pixel"``: no VAE, the image is
    #: pixel-unshuffled by ``pixel_factor`` into 3·f² channels (cheap latent for small models).
    latent: str = "vae"
    #: diffusers ``AutoencoderKL`` config, used when ``latent == "vae"``.
    vae: dict[str, Any] | None = field(default_factory=lambda: dict(SD_VAE_FT_MSE))
    #: down-sampling factor of the pixel latent (128 px, f=4 -> 32x32x48).
    pixel_factor: int = 4
    #: side of the aligned face in pixels (512 in the paper).
    resolution: int = 512
    #: LoRA on the restoration UNet; None trains/uses the UNet weights directly. With LoRA the
    #: reference network is the base UNet (adapters off, base ``conv_in``); without it the
    #: reference network is the restoration UNet itself.
    unet_lora: LoraSettings | None = LoraSettings()
    #: LoRA on the restoration VAE (adapter ``vae_skip``); the reference path uses the base VAE.
    vae_lora: LoraSettings | None = LoraSettings(targets=PAPER_VAE_LORA_TARGETS, adapter="vae_skip")
    #: FreeU on both UNets (None: off).
    freeu: FreeU | None = FreeU()
    #: diffusion timestep of the single restoration step (249 in the paper).
    timestep: int = 249
    #: timestep at which references pass through the reference network (1 in the paper).
    reference_timestep: int = 1
    #: add the (fixed, seeded) noise at ``timestep`` before the UNet; False feeds the clean
    #: latent (an option for small models trained from scratch).
    add_noise: bool = True
    #: what the UNet predicts: "epsilon" (SD-Turbo), "v_prediction", "sample" (x0 directly) or
    #: "residual" (x0 = UNet input + output; a new residual net starts as the identity because its
    #: ``conv_out`` is zeroed, so a small model trained from scratch begins at the input's quality).
    prediction_type: str = "epsilon"
    #: DDPM noise schedule of SD-Turbo (scaled_linear 0.00085 -> 0.012 over 1000 steps).
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    num_train_timesteps: int = 1000
    #: AdaIN on reference values (the final released model uses it).
    adain: bool = True
    #: epsilon added to the variance in AdaIN (keeps flat channels finite).
    adain_eps: float = 1e-5
    #: let the input also attend to its own keys/values (released configs: False).
    include_input_kv: bool = False
    #: width of a Gaussian position prior on the shared attention to reference tokens, in
    #: 1/32 of the image side (0: off, the paper's content-only attention). Faces are aligned
    #: to one template, so the reference token at the query's own place is the likely match; a
    #: UNet trained from scratch never learns that match from content alone (its reference
    #: attention stays near uniform and the references change nothing), while with the prior
    #: it copies from a reference within a few hundred steps. The score of reference key k
    #: for query q gets ``-d(q, k)^2 / (2 s^2)``, d measured in image sides, s = this / 32;
    #: the model's own tokens get no prior.
    reference_position_sigma: float = 0.0
    #: references the method was trained with; more still work but log a warning.
    max_references: int = 4
    #: shape of the stored prompt embedding (tokens, width); width must equal the UNet's
    #: cross_attention_dim. SD 2.1: 77 CLIP tokens x 1024.
    prompt_tokens: int = 77
    #: seed of the fixed noise added to references at ``reference_timestep``.
    reference_noise_seed: int = 1234
    #: ``"shared"``: every reference gets the noise of ``reference_noise_seed`` (what our training
    #: loop does; ``lite``); ``"per_reference"``: reference i gets seed ``reference_noise_seed + i``,
    #: independent draws like the official release's (which draws them afresh on every call).
    #: :func:`paper_config` uses ``"per_reference"``: the released weights were trained that way.
    reference_noise: str = "shared"
    #: default seed of the per-face noise when ``restore`` gets no ``noise_seeds``.
    noise_seed: int = 0
    #: a detail head after the UNet (None: none, the paper's model); see
    #: :mod:`streamrestore.model.detail_head`.
    detail_head: DetailHeadSettings | None = None

    def __post_init__(self):
        if self.latent not in ("vae", "pixel"):
            raise ValueError(f"latent must be 'vae' or 'pixel', got {self.latent!r}")
        if self.latent == "vae" and not self.vae:
            raise ValueError("latent='vae' needs a vae config")
        if self.latent == "pixel" and self.vae_lora is not None:
            raise ValueError("vae_lora must be None when latent='pixel' (there is no VAE)")
        if self.pixel_factor < 1:
            raise ValueError(f"pixel_factor must be >= 1, got {self.pixel_factor}")
        if self.resolution % self.latent_factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by the latent factor {self.latent_factor}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample", "residual"):
            raise ValueError("prediction_type must be epsilon, v_prediction, sample or residual, "
                             f"got {self.prediction_type!r}")
        if self.beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(f"beta_schedule must be scaled_linear or linear, got {self.beta_schedule!r}")
        for name in ("timestep", "reference_timestep"):
            t = getattr(self, name)
            if not 0 <= t < self.num_train_timesteps:
                raise ValueError(f"{name} must be in [0, {self.num_train_timesteps}), got {t}")
        if self.reference_noise not in ("shared", "per_reference"):
            raise ValueError(f"reference_noise must be 'shared' or 'per_reference', got {self.reference_noise!r}")
        if self.reference_position_sigma < 0:
            raise ValueError(f"reference_position_sigma must be >= 0, got {self.reference_position_sigma}")
        if self.max_references < 1:
            raise ValueError(f"max_references must be >= 1, got {self.max_references}")
        if self.prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.detail_head is not None and self.resolution % self.detail_head.factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by the detail head's factor "
                             f"{self.detail_head.factor}")
        want = self.latent_channels
        if self.unet.get("in_channels", 4) != want or self.unet.get("out_channels", 4) != want:
            raise ValueError(
                f"unet in/out channels ({self.unet.get('in_channels')}, {self.unet.get('out_channels')}) "
                f"must equal the latent channels {want}"
            )

    # -- derived values ------------------------------------------------------------------
    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell along one side."""
        if self.latent == "pixel":
            return self.pixel_factor
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        if self.latent == "pixel":
            return 3 * self.pixel_factor**2
        return int(self.vae.get("latent_channels", 4))

    @property
    def latent_size(self) -> int:
        return self.resolution // self.latent_factor

    @property
    def prompt_dim(self) -> int:
        return int(self.unet.get("cross_attention_dim", 1280))

    def alphas_cumprod(self, t: int) -> float:
        """ᾱ_t of the DDPM schedule, computed in float64."""
        n = self.num_train_timesteps
        if self.beta_schedule == "scaled_linear":
            lo, hi = math.sqrt(self.beta_start), math.sqrt(self.beta_end)
            betas = [(lo + (hi - lo) * i / (n - 1)) ** 2 for i in range(n)]
        else:
            betas = [self.beta_start + (self.beta_end - self.beta_start) * i / (n - 1) for i in range(n)]
        prod = 1.0
        for b in betas[: t + 1]:
            prod *= 1.0 - b
        return prod

    # -- (de)serialisation ---------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RestorerConfig":
        data = json.loads(text)
        for key in ("unet_lora", "vae_lora"):
            if data.get(key) is not None:
                data[key] = LoraSettings(**data[key])
        if data.get("freeu") is not None:
            data["freeu"] = FreeU(**data["freeu"])
        if data.get("detail_head") is not None:
            data["detail_head"] = DetailHeadSettings(**data["detail_head"])
        return cls(**data)

    def replace(self, **changes) -> "RestorerConfig":
        return replace(self, **changes)


def paper_config(**changes) -> RestorerConfig:
    """The paper's network: SD-Turbo UNet + sd-vae-ft-mse, LoRA rank 32, FreeU, 512 px, an
    independent fixed noise per reference (as the official release draws them)."""
    return RestorerConfig(**{"reference_noise": "per_reference", **changes})


def tiny_config(latent: str = "vae", **changes) -> RestorerConfig:
    """A ~0.5 M-parameter network with the paper's structure, for tests (32 px faces).

    Two up blocks carry attention (shared layers at 8x8 and 16x16 tokens, two each).
    """
    unet = {
        "sample_size": 16,
        "block_out_channels": [16, 32, 32],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "cross_attention_dim": 16,
        "attention_head_dim": 8,
        "norm_num_groups": 8,
        "use_linear_projection": True,
        "in_channels": 4,
        "out_channels": 4,
    }
    base: dict[str, Any] = dict(resolution=32, prompt_tokens=5)
    if latent == "vae":
        base.update(
            vae={
                "block_out_channels": [8, 16],
                "down_block_types": ["DownEncoderBlock2D"] * 2,
                "up_block_types": ["UpDecoderBlock2D"] * 2,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 4,
                "sample_size": 32,
            },
            unet_lora=LoraSettings(rank=4),
            vae_lora=LoraSettings(rank=4, targets=PAPER_VAE_LORA_TARGETS, adapter="vae_skip"),
        )
    else:
        unet["in_channels"] = unet["out_channels"] = 12  # 3 * 2**2
        base.update(latent="pixel", vae=None, pixel_factor=2, unet_lora=None, vae_lora=None)
    base["unet"] = unet
    base.update(changes)
    return RestorerConfig(**base)
