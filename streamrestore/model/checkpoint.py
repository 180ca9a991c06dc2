"""Checkpoint formats: the official InstantRestore ``.pt`` and our own safetensors file.

Official (``final_model_ckpt.pt`` and the ablations): a torch-saved dict with
``unet_lora_target_modules``, ``vae_lora_target_modules``, ``rank_unet``, ``rank_vae``,
``state_dict_unet`` (UNet entries whose names contain ``lora`` or ``conv_in``) and
``state_dict_vae`` (entries containing ``lora`` or ``skip``), named as peft names them on
diffusers models (UNet adapter ``default``, VAE adapter ``vae_skip``). The base weights come
from SD-Turbo / sd-vae-ft-mse separately.

The official code also writes (and its ``test.py``/``gradio_demo.py`` load) a *training*
checkpoint: ``{"state_dict": FaceReplaceModel.state_dict(), "cfg": TrainConfig, "optimizer"?}``
with keys ``net.unet.*``, ``net.vae.*``, ``net.original_unet.*``... and no target lists (the
release hard-codes them). :func:`read_official_checkpoint` reads both layouts; from the second
it also takes the AdaIN and own-token settings (``cfg.model.use_adain``/``train_input``).

Ours (``*.safetensors``): every weight of the model (:meth:`InstantRestoreNet.weights_state_dict`)
with the :class:`RestorerConfig` that built it as JSON in the header, so one file rebuilds the
model with no other download (the ``lite`` model ships this way).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from streamrestore.errors import ModelError
from streamrestore.model.config import (
    PAPER_UNET_LORA_TARGETS,
    PAPER_VAE_LORA_TARGETS,
    LoraSettings,
    RestorerConfig,
)

FORMAT = "streamrestore.restorer"
FORMAT_VERSION = "1"
_SHOW = 8  # unmatched names listed in an error


@dataclass(frozen=True)
class OfficialCheckpoint:
    unet_targets: tuple[str, ...]
    vae_targets: tuple[str, ...]
    rank_unet: int
    rank_vae: int
    state_dict_unet: dict[str, torch.Tensor]
    state_dict_vae: dict[str, torch.Tensor]
    #: AdaIN on reference values, when the file says (training layout); None: not recorded
    adain: bool | None = None
    #: input attends to its own tokens too (``train_input``), when recorded
    include_input_kv: bool | None = None

    def apply_to_config(self, config: RestorerConfig) -> RestorerConfig:
        """``config`` with the checkpoint's LoRA ranks and targets (alpha = rank // 2) and, when the
        file records them, its AdaIN and own-token settings."""
        if config.latent != "vae":
            raise ModelError("the official checkpoint needs a VAE model config (latent='vae')")
        changes = {}
        if self.adain is not None:
            changes["adain"] = self.adain
        if self.include_input_kv is not None:
            changes["include_input_kv"] = self.include_input_kv
        return config.replace(
            unet_lora=LoraSettings(rank=self.rank_unet, targets=self.unet_targets, adapter="default"),
            vae_lora=LoraSettings(rank=self.rank_vae, targets=self.vae_targets, adapter="vae_skip"),
            **changes,
        )


def _from_training_checkpoint(raw: dict, path: Path) -> OfficialCheckpoint:
    """The training layout (``coach.get_save_dict``): pick the restoration UNet/VAE entries that
    ``save_model`` would have kept, and the settings from ``cfg.model``."""
    state, cfg = raw["state_dict"], raw["cfg"]
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(state, dict) or not isinstance(model, dict):
        raise ModelError(f"{path}: malformed InstantRestore training checkpoint (state_dict/cfg.model missing)")
    # accelerate/DDP may leave ".module." in the names; the official test.py strips it the same way
    state = {k.replace(".module.", "."): v for k, v in state.items()}
    unet = {k[len("net.unet."):]: v for k, v in state.items() if k.startswith("net.unet.")}
    vae = {k[len("net.vae."):]: v for k, v in state.items() if k.startswith("net.vae.")}
    if not unet or not vae:
        raise ModelError(f"{path}: no net.unet.* / net.vae.* entries; not an InstantRestore Pix2Pix_Turbo checkpoint")
    if model.get("use_shortcuts") or model.get("condition_on_face_embeds"):
        raise ModelError(f"{path}: trained with use_shortcuts/condition_on_face_embeds, which the released "
                         "models do not use and streamrestore does not implement")
    try:
        return OfficialCheckpoint(
            PAPER_UNET_LORA_TARGETS,  # hard-coded in the release (pix2pix_turbo.py), not stored
            PAPER_VAE_LORA_TARGETS,
            int(model["lora_rank_unet"]),
            int(model["lora_rank_vae"]),
            {k: v for k, v in unet.items() if "lora" in k or "conv_in" in k},
            {k: v for k, v in vae.items() if "lora" in k or "skip" in k},
            adain=bool(model.get("use_adain", False)),
            include_input_kv=bool(model.get("train_input", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: malformed InstantRestore training checkpoint cfg ({exc})") from exc


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Read an official ``.pt`` (either layout, see the module docstring) with
    ``torch.load(weights_only=True)``; damage -> ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ModelError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); "
                         "download it again (InstantRestore final_model_ckpt.pt)") from exc
    if isinstance(raw, dict) and "state_dict" in raw and "cfg" in raw:
        return _from_training_checkpoint(raw, path)
    need = ("unet_lora_target_modules", "vae_lora_target_modules", "rank_unet", "rank_vae",
            "state_dict_unet", "state_dict_vae")
    if not isinstance(raw, dict) or any(k not in raw for k in need):
        have = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ModelError(f"{path} is not an InstantRestore checkpoint: expected keys {list(need)}, found {have}")
    try:
        return OfficialCheckpoint(
            tuple(str(t) for t in raw["unet_lora_target_modules"]),
            tuple(str(t) for t in raw["vae_lora_target_modules"]),
            int(raw["rank_unet"]),
            int(raw["rank_vae"]),
            dict(raw["state_dict_unet"]),
            dict(raw["state_dict_vae"]),
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: malformed InstantRestore checkpoint header ({exc})") from exc


def _load_partial(module: torch.nn.Module, entries: dict[str, torch.Tensor], what: str, source: Path | str,
                  must_cover) -> None:
    """Copy ``entries`` into ``module``'s state; every entry must match a tensor of the same shape and
    every module tensor selected by ``must_cover(name)`` must be given."""
    state = module.state_dict()
    unknown = [k for k in entries if k not in state]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(state[k].shape)}" for k, v in entries.items()
             if k in state and tuple(v.shape) != tuple(state[k].shape)]
    missing = [k for k in state if must_cover(k) and k not in entries]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} {what} entries match no model tensor, first: {unknown[:_SHOW]}")
    if wrong:
        problems.append(f"{len(wrong)} {what} entries have the wrong shape, first: {wrong[:_SHOW]}")
    if missing:
        problems.append(f"{len(missing)} {what} model tensors are not in the checkpoint, first: {missing[:_SHOW]}")
    if problems:
        raise ModelError(f"checkpoint {source} does not fit this model: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in entries.items():
            state[k].copy_(v.to(state[k].dtype))


def apply_official_checkpoint(net, ckpt: OfficialCheckpoint, source: str | Path = "<checkpoint>") -> None:
    """Load the LoRA and ``conv_in`` weights of an official checkpoint into ``net`` (built with its config)."""
    if net.vae is None or net.config.unet_lora is None or net.config.vae_lora is None:
        raise ModelError("the official checkpoint needs a model with UNet and VAE LoRA (see OfficialCheckpoint.apply_to_config)")
    _load_partial(net.unet, ckpt.state_dict_unet, "UNet", source,
                  lambda k: "lora" in k or k.startswith("conv_in."))
    _load_partial(net.vae, ckpt.state_dict_vae, "VAE", source, lambda k: "lora" in k or "skip" in k)


def write_official_checkpoint(net, path: str | Path) -> Path:
    """Write ``net``'s LoRA/conv_in weights in the official format (for tests and interchange)."""
    if net.vae is None or net.config.unet_lora is None or net.config.vae_lora is None:
        raise ValueError("the official format needs a model with UNet and VAE LoRA")
    cfg = net.config
    data = {
        "unet_lora_target_modules": list(cfg.unet_lora.targets),
        "vae_lora_target_modules": list(cfg.vae_lora.targets),
        "rank_unet": cfg.unet_lora.rank,
        "rank_vae": cfg.vae_lora.rank,
        "state_dict_unet": {k: v.detach().cpu().clone() for k, v in net.unet.state_dict().items()
                            if "lora" in k or "conv_in" in k},
        "state_dict_vae": {k: v.detach().cpu().clone() for k, v in net.vae.state_dict().items()
                           if "lora" in k or "skip" in k},
    }
    path = Path(path)
    torch.save(data, path)
    return path


# -- our own format ---------------------------------------------------------------------------
def save_restorer(net, path: str | Path, dtype: torch.dtype | None = None, recipe: dict | None = None) -> Path:
    """Save every weight of ``net`` plus its config as one safetensors file (atomic rename);
    ``recipe`` (JSON-able settings of the training that made the weights) is kept beside the config,
    so the file says what made it (:func:`read_model_recipe`)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in net.weights_state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": net.config.to_json()}
    if recipe is not None:
        meta["recipe"] = json.dumps(recipe, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    umask = os.umask(0)  # (read by setting it; put back at once)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; a model file is for others too, as any file a tool writes
    tmp.replace(path)
    return path


def read_model_recipe(path: str | Path) -> dict | None:
    """The training recipe a model file records (see :func:`save_restorer`), or None (files made without one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"cannot read model file {path} ({exc}); it is damaged or not a safetensors file") from exc
    return json.loads(meta["recipe"]) if "recipe" in meta else None


def read_model_file(path: str | Path):
    """Rebuild an :class:`InstantRestoreNet` (the network, on the CPU) from a file written by
    :func:`save_restorer`.

    Not to be confused with :func:`streamrestore.api.load_restorer`, which builds a ready
    restorer (device, backend) from a model name; :func:`streamrestore.model.registry.load_model`
    makes an ``InstantRestorer`` of this network.
    """
    from safetensors import safe_open

    from streamrestore.model.restorer import InstantRestoreNet

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelError(f"cannot read model file {path} ({exc}); it is damaged or not a safetensors file") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelError(f"{path} is not a streamrestore model file (no '{FORMAT}' header); "
                         "official InstantRestore checkpoints are .pt files: use load_model('instantrestore', checkpoint=...)")
    try:
        config = RestorerConfig.from_json(meta["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: the stored model config is invalid ({exc})") from exc
    net = InstantRestoreNet(config)
    state = net.weights_state_dict()
    unknown = [k for k in tensors if k not in state]
    missing = [k for k in state if k not in tensors]
    wrong = [k for k in tensors if k in state and tuple(tensors[k].shape) != tuple(state[k].shape)]
    if unknown or missing or wrong:
        raise ModelError(
            f"model file {path} does not match its config: unknown {unknown[:_SHOW]}, missing {missing[:_SHOW]}, "
            f"wrong shape {wrong[:_SHOW]}"
        )
    with torch.no_grad():
        for k, v in tensors.items():
            state[k].copy_(v.to(state[k].dtype))
    return net
