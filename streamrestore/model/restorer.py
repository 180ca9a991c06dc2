"""The InstantRestore network and the Restorer the pipeline calls.

One step, as in the paper: the degraded aligned face is encoded (VAE latent *mean*, or a
pixel-unshuffle latent for small models), noised to ``timestep`` with a fixed seeded noise,
denoised once by the LoRA UNet whose up-block self-attention layers also see the references'
keys/values, turned into an x0 estimate with the DDPM formula and decoded.

References pass once through the *reference network* — the base UNet/VAE without LoRA (the
released method), or the restoration UNet itself for models without LoRA — at
``reference_timestep``; their up-block self-attention keys/values form a
:class:`~streamrestore.model.cache.ReferenceCache`.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamrestore.errors import DeviceError
from streamrestore.model.attention import ReferenceBatch, install_processors, value_statistics
from streamrestore.model.cache import ReferenceCache, reference_key
from streamrestore.model.config import RestorerConfig
from streamrestore.model.detail_head import DetailHead
from streamrestore.model.freeu import install_freeu
from streamrestore.model.packing import pack_caches, pack_face_means

log = logging.getLogger(__name__)


def _inject_lora(module: nn.Module, settings) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=settings.rank, lora_alpha=settings.lora_alpha, target_modules=list(settings.targets),
                     init_lora_weights=True)
    inject_adapter_in_model(cfg, module, adapter_name=settings.adapter)


def _tie_to_base(shadow: nn.Module, wrapped: nn.Module, keep: tuple[str, ...] = ()) -> None:
    """Make ``shadow`` (a plain copy of the architecture, on meta) use ``wrapped``'s base weights.

    peft wraps targeted layers as ``<name>.base_layer``; stripping that gives the plain name.
    Modules named in ``keep`` get their own copy instead (the trained ``conv_in``).
    """
    base = {n.replace(".base_layer", ""): p for n, p in wrapped.named_parameters() if "lora_" not in n}
    for mod_name, mod in shadow.named_modules():
        for p_name in list(mod._parameters):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if mod._parameters[p_name] is None or any(full.startswith(k + ".") for k in keep):
                continue
            mod._parameters[p_name] = base[full]
    for k in keep:
        parent_name, _, child = k.rpartition(".")
        parent = shadow.get_submodule(parent_name) if parent_name else shadow
        source = wrapped.get_submodule(k)
        setattr(parent, child, copy.deepcopy(source))
    left = [n for n, t in list(shadow.named_parameters()) + list(shadow.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"reference network tensors left untied: {left[:5]}")


class InstantRestoreNet(nn.Module):
    """All weights of one restorer: restoration UNet (+LoRA), VAE (+LoRA), reference network, prompt.

    ``ref_unet``/``ref_vae`` share storage with the restoration networks' frozen base weights
    (no extra memory); only the base ``conv_in`` is a separate tensor because the method trains
    ``conv_in`` of the restoration UNet in full.

    Args:
        config: the architecture and the method's settings.

    Raises:
        ValueError: the UNet config has no up block with attention (nothing to share).
    """

    prompt_embeds: torch.Tensor  # (1, tokens, width) buffer, registered in __init__

    def __init__(self, config: RestorerConfig) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, UNet2DConditionModel

        self.config = config
        self.unet = UNet2DConditionModel.from_config(config.unet)
        if config.unet_lora is not None:
            _inject_lora(self.unet, config.unet_lora)
            with torch.device("meta"):
                ref_unet = UNet2DConditionModel.from_config(config.unet)
            _tie_to_base(ref_unet, self.unet, keep=("conv_in",))
            self.ref_unet = ref_unet
        else:
            self.ref_unet = None

        self.vae = None
        self.ref_vae = None
        #: optional fast decoder (TAESD) replacing the VAE decoder at inference; see use_fast_decoder
        self.fast_decoder: nn.Module | None = None
        if config.latent == "vae":
            self.vae = AutoencoderKL.from_config(config.vae)
            if config.vae_lora is not None:
                _inject_lora(self.vae, config.vae_lora)
                with torch.device("meta"):
                    ref_vae = AutoencoderKL.from_config(config.vae)
                _tie_to_base(ref_vae, self.vae)
                self.ref_vae = ref_vae

        self.shared_layers = tuple(install_processors(self.unet, adain=config.adain, adain_eps=config.adain_eps,
                                                      position_sigma=config.reference_position_sigma))
        if self.ref_unet is not None:
            install_processors(self.ref_unet, adain=config.adain, adain_eps=config.adain_eps,
                               position_sigma=config.reference_position_sigma)
        if not self.shared_layers:
            raise ValueError("the UNet config has no up block with attention: nothing to share")
        if config.freeu is not None:
            # our FFT-free FreeU (model/freeu.py), not diffusers' enable_freeu: torch.fft splits
            # compiled (inductor) and TensorRT graphs; the output is the same
            for net in (self.unet, self.ref_unet):
                if net is not None:
                    install_freeu(net, config.freeu, config.latent_size)

        if config.prediction_type == "residual":
            # a fresh residual net is the identity; loaded weights replace these zeros
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        self.register_buffer("prompt_embeds", torch.zeros(1, config.prompt_tokens, config.prompt_dim))
        self.detail_head = DetailHead(config.detail_head) if config.detail_head is not None else None
        a_t = config.alphas_cumprod(config.timestep)
        a_r = config.alphas_cumprod(config.reference_timestep)
        # python floats: constants in traced/exported graphs
        self._sqrt_a, self._sqrt_1ma = a_t**0.5, (1 - a_t) ** 0.5
        self._sqrt_a_ref, self._sqrt_1ma_ref = a_r**0.5, (1 - a_r) ** 0.5
        self.scaling_factor = float(config.vae.get("scaling_factor", 0.18215)) if config.vae else 1.0

    # -- networks seen from outside ------------------------------------------------------
    @property
    def reference_unet(self) -> nn.Module:
        """The UNet references pass through: the base one without LoRA, else the restoration UNet."""
        return self.ref_unet if self.ref_unet is not None else self.unet

    @property
    def reference_vae(self) -> nn.Module | None:
        """The VAE references are encoded with (as :attr:`reference_unet`); None without a VAE."""
        return self.ref_vae if self.ref_vae is not None else self.vae

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the method trains: LoRA weights and ``unet.conv_in`` (all UNet/VAE weights without LoRA)."""
        params = []
        if self.config.unet_lora is None:
            params += list(self.unet.parameters())
        else:
            params += [p for n, p in self.unet.named_parameters() if "lora_" in n or n.startswith("conv_in.")]
        if self.vae is not None and self.config.vae_lora is not None:
            params += [p for n, p in self.vae.named_parameters() if "lora_" in n]
        return params

    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that defines the model once, without the tied reference-network copies."""
        state = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        if self.vae is not None:
            state.update({f"vae.{k}": v for k, v in self.vae.state_dict().items()})
        if self.ref_unet is not None:
            state.update({f"ref_unet.conv_in.{k}": v for k, v in self.ref_unet.conv_in.state_dict().items()})
        state["prompt_embeds"] = self.prompt_embeds
        if self.detail_head is not None:
            state.update({f"detail_head.{k}": v for k, v in self.detail_head.state_dict().items()})
        return state

    def load_base_weights(self, unet_state: dict | None = None, vae_state: dict | None = None) -> None:
        """Load plain (diffusers-named) base weights into the reference network and the LoRA nets' base layers.

        Args:
            unet_state: the base UNet's state dict (None: left as it is).
            vae_state: the base VAE's state dict (None: left as it is).

        Raises:
            ValueError: ``vae_state`` for a model without a VAE.
        """
        if unet_state is not None:
            target = self.reference_unet
            target.load_state_dict(unet_state, strict=True)
            if self.ref_unet is not None:  # the trained conv_in starts from the base one
                self.unet.conv_in.load_state_dict(self.ref_unet.conv_in.state_dict())
        if vae_state is not None:
            if self.vae is None:
                raise ValueError("this model has no VAE (latent='pixel')")
            self.reference_vae.load_state_dict(vae_state, strict=True)

    def use_fast_decoder(self, decoder: nn.Module | None) -> None:
        """Decode with another decoder instead of the VAE.

        It is not part of the model's weights (``weights_state_dict``) nor of its fingerprint:
        the reference path never decodes.

        Args:
            decoder: scaled SD latents -> images in [-1, 1] (e.g. TAESD's, see
                :mod:`streamrestore.model.fast_vae`); None goes back to the VAE.

        Raises:
            ValueError: a decoder for a model without a VAE (``latent="pixel"``).
        """
        if decoder is not None and self.config.latent != "vae":
            raise ValueError("a fast decoder replaces the VAE decoder; this model has latent='pixel' and no VAE")
        if decoder is None:
            if "fast_decoder" in self._modules:
                del self._modules["fast_decoder"]
            self.fast_decoder = None
            return
        param = next(self.parameters())
        self.fast_decoder = decoder.to(device=param.device, dtype=param.dtype)

    # -- latent space ---------------------------------------------------------------------
    def encode(self, images: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """Images (B, 3, R, R) in [0, 1] -> scaled latents (deterministic: the VAE mean).

        Args:
            images: the images.
            reference: encode with the reference network's VAE (:attr:`reference_vae`).
        """
        x = images * 2 - 1
        if self.config.latent == "pixel":
            return F.pixel_unshuffle(x, self.config.pixel_factor)
        vae = self.reference_vae if reference else self.vae
        return vae.encode(x).latent_dist.mean * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1]."""
        if self.config.latent == "pixel":
            x = F.pixel_shuffle(latents, self.config.pixel_factor)
        elif self.fast_decoder is not None:
            x = self.fast_decoder(latents)  # TAESD works on the scaled latents the UNet sees
        else:
            x = self.vae.decode(latents / self.scaling_factor).sample
        return (x.clamp(-1, 1) + 1) / 2

    @property
    def head_sees_references(self) -> bool:
        """Whether the detail head takes each face's mean reference face (:meth:`refine`)."""
        return self.detail_head is not None and self.detail_head.settings.references

    def refine(self, faces: torch.Tensor, restored: torch.Tensor,
               reference_faces: torch.Tensor | None = None) -> torch.Tensor:
        """The detail head's pass over the decoded faces (unchanged without a head).

        Args:
            faces: the degraded input faces (B, 3, R, R) in [0, 1].
            restored: :meth:`decode`'s output for them.
            reference_faces: each face's mean aligned reference face (B, 3, R, R)
                (:func:`~streamrestore.model.packing.pack_face_means`); read only when
                :attr:`head_sees_references`, and None there means no references.
        """
        return restored if self.detail_head is None else self.detail_head(faces, restored, reference_faces)

    # -- the two UNet passes --------------------------------------------------------------
    def reference_kv(self, latents: torch.Tensor, noise: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Run references through the reference UNet at ``reference_timestep``.

        Args:
            latents: the references' scaled latents (N, C, h, w).
            noise: their fixed noise, same shape.

        Returns:
            The shared layers' (keys, values), by layer name.
        """
        noisy = self._sqrt_a_ref * latents + self._sqrt_1ma_ref * noise
        record: dict = {}
        t = torch.full((latents.shape[0],), self.config.reference_timestep, device=latents.device)
        self.reference_unet(noisy, t, encoder_hidden_states=self.prompt_embeds.expand(latents.shape[0], -1, -1),
                            cross_attention_kwargs={"record_kv": record})
        return {name: record[name] for name in self.shared_layers}

    def denoise(self, latents: torch.Tensor, noise: torch.Tensor, references: ReferenceBatch | None,
                attention_maps: dict | None = None) -> torch.Tensor:
        """One restoration step: clean latent (B, C, h, w) -> x0 estimate, same shape.

        Args:
            latents: the faces' scaled latents.
            noise: their fixed noise, same shape.
            references: each face's references (None: plain self-attention).
            attention_maps: a caller-owned dict naming the layers whose attention maps are
                wanted (the training path; see :mod:`streamrestore.model.attention`).
        """
        cfg = self.config
        x_t = self._sqrt_a * latents + self._sqrt_1ma * noise if cfg.add_noise else latents
        t = torch.full((latents.shape[0],), cfg.timestep, device=latents.device)
        kwargs = {"shared_kv": references}
        if attention_maps is not None:
            kwargs["attention_maps"] = attention_maps
        pred = self.unet(x_t, t, encoder_hidden_states=self.prompt_embeds.expand(latents.shape[0], -1, -1),
                         cross_attention_kwargs=kwargs).sample
        if cfg.prediction_type == "epsilon":
            return (x_t - self._sqrt_1ma * pred) / self._sqrt_a
        if cfg.prediction_type == "v_prediction":
            return self._sqrt_a * x_t - self._sqrt_1ma * pred
        if cfg.prediction_type == "residual":
            return x_t + pred
        return pred


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a device option names.

    Args:
        device: ``"auto"``: CUDA when available, else the CPU; or any torch device.

    Raises:
        DeviceError: an unknown device, or a CUDA device that is not there (one line, instead
            of failing deep in torch).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device}: no CUDA device is visible; use cpu or auto")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return chosen


class InstantRestorer:
    """The restorer the pipeline calls (implements :class:`streamrestore.types.Restorer`).

    Inputs are float tensors in [0, 1] on any device; computation runs on ``device`` in
    ``dtype``; outputs are float32 on the input's device.

    Args:
        net: the network (moved to ``device`` and ``dtype``, in eval mode, without gradients).
        device: as for :func:`pick_device`.
        dtype: None: fp16 on CUDA, fp32 on the CPU.
        name: the model's name; it gets a ``+taesd`` suffix when ``fast_vae`` is used (so
            engine caches keep them apart).
        fast_vae: a TAESD folder or decoder file (see :mod:`streamrestore.model.fast_vae`) to
            decode with instead of the VAE (faster, some quality lost); default None: the model's
            VAE. Pixel-latent models (``lite``) have no VAE to replace: a warning says it is
            ignored.

    Raises:
        DeviceError: see :func:`pick_device`.
        ModelError: a ``fast_vae`` whose latents do not fit the model's.
        ValueError: a ``dtype`` that is not floating point.
    """

    #: fixed-noise tensors kept per (seed, device, dtype); a handful of tracks at a time
    noise_cache_size = 64

    def __init__(self, net: InstantRestoreNet, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                 name: str = "custom", fast_vae: str | Path | None = None) -> None:
        if fast_vae is not None:
            if net.config.latent != "vae":
                log.warning("--fast-vae ignored: the model %r decodes pixels directly (no VAE to replace)", name)
            else:
                from streamrestore.errors import ModelError
                from streamrestore.model.fast_vae import TAESD_FACTOR, load_taesd_decoder

                if net.config.latent_factor != TAESD_FACTOR or net.config.latent_channels != 4:
                    raise ModelError(f"--fast-vae: TAESD decodes 4-channel latents of 1/{TAESD_FACTOR} the image size; "
                                     f"this model's are {net.config.latent_channels}-channel at 1/{net.config.latent_factor}")
                net.use_fast_decoder(load_taesd_decoder(fast_vae))
                name = f"{name}+taesd"
        self.device = pick_device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        self.dtype = dtype
        self.net = net.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.config = net.config
        self.resolution = net.config.resolution
        self.name = name
        self._fingerprint: str | None = None
        self._restoring_fingerprint: str | None = None
        self._noise: OrderedDict = OrderedDict()

    # -- identity of the weights ----------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 of the config and the reference-network weights + prompt (what a cache depends on).

        Computed once, lazily (a second or two at paper scale): weights changed afterwards are
        not seen (training builds a new restorer on a copy, see ``Trainer.restorer``).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256(self.config.to_json().encode())
            if self.config.adain:
                # caches hold AdaIN std; since parity with the official code it is std + eps, not
                # sqrt(var + eps): older caches of AdaIN models must not be reused
                digest.update(b"adain-std:std+eps")
            tensors = dict(self.net.reference_unet.state_dict())
            if self.net.reference_vae is not None:
                tensors.update({f"vae.{k}": v for k, v in self.net.reference_vae.state_dict().items()})
            tensors["prompt"] = self.net.prompt_embeds
            for k in sorted(tensors):
                t = tensors[k].detach().to("cpu").contiguous()
                digest.update(k.encode())
                digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def restoring_fingerprint(self) -> str:
        """sha256 of the restoring UNet's and VAE's weights: what a compiled engine depends on beyond
        :attr:`fingerprint` and :attr:`detail_head_fingerprint`. A LoRA checkpoint's reference network is
        its base model's, so :attr:`fingerprint` is the same for every checkpoint of one base: the
        engine of another was run for it. Each tensor is read strided (at most 65536 values, with its
        name and shape): a trained or merged change reaches all of a layer's values, and the paper-scale
        UNet is read in well under a second. Computed once, lazily."""
        if self._restoring_fingerprint is None:
            digest = hashlib.sha256()
            nets = [("unet", self.net.unet)] + ([("vae", self.net.vae)] if self.net.vae is not None else [])
            for prefix, net in nets:
                for k, v in sorted(net.state_dict().items()):
                    flat = v.detach().reshape(-1)
                    sample = flat[::max(1, -(-flat.numel() // 65536))].to("cpu", torch.float32).contiguous()
                    digest.update(f"{prefix}.{k}{tuple(v.shape)}".encode())
                    digest.update(sample.numpy().tobytes())
            self._restoring_fingerprint = digest.hexdigest()
        return self._restoring_fingerprint

    @property
    def detail_head_fingerprint(self) -> str:
        """sha256 of the detail head's weights ("none" without a head): what a compiled engine
        depends on beyond :attr:`fingerprint` (reference caches do not)."""
        head = self.net.detail_head
        if head is None:
            return "none"
        digest = hashlib.sha256()
        for k, v in sorted(head.state_dict().items()):
            digest.update(k.encode())
            digest.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    # -- helpers ----------------------------------------------------------------------------
    def _check_faces(self, faces: torch.Tensor, what: str) -> None:
        r = self.resolution
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[2] != r or faces.shape[3] != r:
            raise ValueError(f"{what} must have shape (N, 3, {r}, {r}), got {tuple(faces.shape)}")

    def fixed_noise(self, seed: int, batch: int = 1) -> torch.Tensor:
        """The noise tensor of ``seed``, drawn on CPU in float32 so it is the same everywhere.

        Args:
            seed: the noise's seed.
            batch: how many faces it is for.

        Returns:
            (batch, C, h, w): the one (1, C, h, w) noise, expanded.
        """
        cache_key = (int(seed), self.device, self.dtype)
        noise = self._noise.get(cache_key)
        if noise is None:
            c, s = self.config.latent_channels, self.config.latent_size
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(1, c, s, s, generator=gen).to(self.device, self.dtype)
            self._noise[cache_key] = noise
            if len(self._noise) > self.noise_cache_size:
                self._noise.popitem(last=False)
        else:
            self._noise.move_to_end(cache_key)
        return noise.expand(batch, -1, -1, -1)

    def reference_noise(self, n: int) -> torch.Tensor:
        """The fixed noise of N references (N, C, h, w), per ``config.reference_noise``."""
        seed = self.config.reference_noise_seed
        if self.config.reference_noise == "shared":
            return self.fixed_noise(seed, n)
        return torch.cat([self.fixed_noise(seed + i) for i in range(n)])

    # -- Restorer protocol ------------------------------------------------------------------
    @torch.inference_mode()
    def encode_references(self, faces: torch.Tensor) -> ReferenceCache:
        """Encode the aligned reference faces of one identity.

        Args:
            faces: N aligned faces (N, 3, R, R) in [0, 1].

        Raises:
            ValueError: faces of the wrong shape, or none.
        """
        self._check_faces(faces, "reference faces")
        n = faces.shape[0]
        if n == 0:
            raise ValueError("encode_references needs at least one reference face")
        if n > self.config.max_references:
            # ("all are used" after the pipeline's "the 8 of its 14 are used" read as a contradiction)
            log.warning("the model is given %d reference photos of one person, and was trained with up to %d: each "
                        "one adds to every frame's attention time, and %d in the video's light and pose are enough",
                        n, self.config.max_references, self.config.max_references)
        x = faces.to(self.device, self.dtype)
        latents = self.net.encode(x, reference=True)
        kv = self.net.reference_kv(latents, self.reference_noise(n))
        keys, values, means, stds = [], [], [], []
        for name in self.net.shared_layers:
            k, v = kv[name]
            mean, std = value_statistics(v.float(), self.config.adain_eps)
            keys.append(k.contiguous())
            values.append(v.contiguous())
            means.append(mean.to(self.dtype))
            stds.append(std.to(self.dtype))
        face_mean = x.float().mean(0).to(self.dtype) if self.net.head_sees_references else None
        return ReferenceCache(self.net.shared_layers, tuple(keys), tuple(values), tuple(means), tuple(stds),
                              key=reference_key(faces, self.fingerprint), model=self.fingerprint,
                              face_mean=face_mean)

    @torch.inference_mode()
    def check_restore_args(self, faces: torch.Tensor, caches: Sequence, noise_seeds: Sequence[int] | None) -> list[int]:
        """Validates :meth:`restore`'s arguments.

        Returns:
            One noise seed per face.

        Raises:
            ValueError: faces of the wrong shape, or a count of caches or seeds that is not
                the faces'.
        """
        self._check_faces(faces, "faces")
        b = faces.shape[0]
        if len(caches) != b:
            raise ValueError(f"got {b} faces but {len(caches)} caches; pass one cache (or None) per face")
        if noise_seeds is not None and len(noise_seeds) != b:
            raise ValueError(f"got {b} faces but {len(noise_seeds)} noise seeds")
        return list(noise_seeds) if noise_seeds is not None else [self.config.noise_seed] * b

    def restore(self, faces: torch.Tensor, caches: Sequence[ReferenceCache | None],
                noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Restore B aligned faces. The same face, references and seed always give the same
        output (bitwise on CPU), whatever else is in the batch up to float rounding.

        Args:
            faces: (B, 3, R, R) in [0, 1].
            caches: ``caches[i]`` is face i's identity (:meth:`encode_references`) or None.
            noise_seeds: ``noise_seeds[i]`` picks face i's fixed noise (pass the track id so
                each track keeps one noise for its whole life); default: ``config.noise_seed``
                for every face.

        Returns:
            The restored faces, float32 (B, 3, R, R) in [0, 1] on ``faces``' device.
        """
        seeds = self.check_restore_args(faces, caches, noise_seeds)
        b = faces.shape[0]
        if b == 0:
            return faces.new_zeros(faces.shape, dtype=torch.float32)
        x = faces.to(self.device, self.dtype)
        latents = self.net.encode(x)
        if len(set(seeds)) == 1:
            noise = self.fixed_noise(seeds[0], b)
        else:
            noise = torch.cat([self.fixed_noise(s) for s in seeds])
        refs = pack_caches(self.net, caches, self.device, self.dtype)
        x0 = self.net.denoise(latents, noise, refs)
        reference_faces = pack_face_means(caches, x) if self.net.head_sees_references else None
        out = self.net.refine(x, self.net.decode(x0), reference_faces)
        return out.to(device=faces.device, dtype=torch.float32)
