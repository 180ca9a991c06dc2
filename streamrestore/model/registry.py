"""Model registry: ``lite`` (shipped), ``instantrestore`` (official weights), or a path.

``instantrestore`` needs four things, looked up in this order: explicit arguments, a local
root folder (``root=``; layout below), the Hugging Face cache, then a download through
``huggingface_hub`` (skipped when ``HF_HUB_OFFLINE=1`` or ``download=False``). When anything is
missing it fails at once with one message naming every missing file and where to put it.

Local root layout::

    <root>/final_model_ckpt.pt                 (hwdz15508/InstantRestore)
    <root>/sd-turbo/unet/config.json           (stabilityai/sd-turbo)
    <root>/sd-turbo/unet/diffusion_pytorch_model.safetensors   (or .fp16.safetensors)
    <root>/sd-vae-ft-mse/config.json           (stabilityai/sd-vae-ft-mse)
    <root>/sd-vae-ft-mse/diffusion_pytorch_model.safetensors
    <root>/prompt_embeds.safetensors           (optional; else computed once from sd-turbo's
                                                text_encoder/ + tokenizer/ with transformers)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamrestore.cache_dir import cache_temp_name
from streamrestore.errors import ModelError
from streamrestore.model.checkpoint import apply_official_checkpoint, read_model_file, read_official_checkpoint
from streamrestore.model.config import PROMPT, RestorerConfig, paper_config
from streamrestore.model.restorer import InstantRestoreNet, InstantRestorer

log = logging.getLogger(__name__)

LITE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "lite.safetensors"
CHECKPOINT_REPO = "hwdz15508/InstantRestore"
CHECKPOINT_FILES = {
    "final": "final_model_ckpt.pt",
    "base": "base_ablation_ckpt.pt",
    "adain": "adain_ablation_ckpt.pt",
    "lmattn": "lmattn_ablation_ckpt.pt",
}
#: AdaIN in each released variant (configs: train_base.yaml has use_adain false, the final model's
#: train_landmarkloss_adain.yaml true); the landmark loss changes training only, not the forward
VARIANT_ADAIN = {"final": True, "base": False, "adain": True, "lmattn": False}
UNET_REPO = "stabilityai/sd-turbo"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
MODEL_NAMES = ("lite", "instantrestore")
#: the paper-scale network with random weights: its speed and memory are the real model's, its
#: output is noise. For benchmarks on machines without the official files (``bench --model``).
RANDOM_PAPER = "random-paper"


def prompt_cache_path() -> Path:
    """Where a computed prompt embedding is kept between runs."""
    from streamrestore.cache_dir import place_path  # noqa: PLC0415

    return place_path("prompt")


@dataclass
class _Need:
    """One file the official model needs and where it may be."""

    label: str  # repo/file, as the user would download it
    local: list[Path]  # local candidates, first existing wins
    repo: str | None = None
    filename: str | None = None
    found: Path | None = None

    def hint(self) -> str:
        where = " or ".join(str(p) for p in self.local[:1])
        # (huggingface_hub's command since 0.34; the versions constraints.txt pins have no huggingface-cli)
        get = f"hf download {self.repo} {self.filename}" if self.repo else ""
        return f"  - {self.label}: put it at {where}" + (f" (or: {get})" if get else "")


def _resolve(need: _Need, download: bool) -> bool:
    """Fill ``need.found``; return False when a download failed for lack of network."""
    for p in need.local:
        if p.is_file():
            need.found = p
            return True
    if need.repo is None or need.filename is None:  # only local candidates
        return True
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(need.repo, need.filename)
    if isinstance(cached, str) and Path(cached).is_file():
        need.found = Path(cached)
        return True
    if not download:
        return True
    from huggingface_hub import hf_hub_download

    try:
        need.found = Path(hf_hub_download(need.repo, need.filename))
        return True
    except Exception as exc:  # offline, gated, missing: report it with the rest
        log.warning("could not download %s/%s: %s", need.repo, need.filename, exc)
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub, so an offline machine fails in seconds, not after retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _plain_config(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read weights {path} ({exc}); download the file again") from exc


def compute_prompt_embedding(text_encoder_dir: Path, tokenizer_dir: Path) -> torch.Tensor:
    """Embed :data:`PROMPT` with SD-Turbo's CLIP text encoder (transformers), (1, 77, 1024).

    Args:
        text_encoder_dir: SD-Turbo's ``text_encoder/`` folder.
        tokenizer_dir: its ``tokenizer/`` folder.

    Raises:
        ModelError: the ``transformers`` package is not installed.
    """
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise ModelError("computing the prompt embedding needs the 'transformers' package "
                         "(pip install transformers), or pass prompt_embeds=<file>") from exc
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    encoder = CLIPTextModel.from_pretrained(str(text_encoder_dir)).eval()
    ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0].float()


def _read_prompt(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["prompt_embeds"]
    except Exception as exc:
        raise ModelError(f"cannot read the prompt embedding {path} ({exc}); delete it to compute it again") from exc


def load_instantrestore_net(
    checkpoint: str | Path | None = None,
    sd_turbo: str | Path | None = None,
    vae: str | Path | None = None,
    prompt_embeds: str | Path | None = None,
    root: str | Path | None = None,
    variant: str = "final",
    download: bool | None = None,
    config: RestorerConfig | None = None,
) -> InstantRestoreNet:
    """Build the official model: SD-Turbo + sd-vae-ft-mse base weights + an official checkpoint.

    Each file is looked up as the module docstring says: explicit arguments, ``root``, the
    Hugging Face cache, then a download.

    Args:
        checkpoint: the official checkpoint file.
        sd_turbo: a local SD-Turbo folder in the Hugging Face repo layout.
        vae: a local sd-vae-ft-mse folder in the Hugging Face repo layout.
        prompt_embeds: a ``prompt_embeds.safetensors`` file (else computed once from
            SD-Turbo's text encoder, and kept at :func:`prompt_cache_path`).
        root: a local folder with the layout of the module docstring.
        variant: the released checkpoint (final, base, adain, lmattn); unless the file records
            it or ``config`` is given, it also says whether AdaIN is on (:data:`VARIANT_ADAIN`).
        download: fetch missing files from the Hub (default None: unless ``HF_HUB_OFFLINE`` is
            1, true or yes).
        config: supplies everything the files do not (default None: paper defaults); the
            UNet/VAE architecture always comes from their ``config.json``.

    Raises:
        ModelError: files missing (one message naming every one and where to put it), or
            files that cannot be read or do not fit together.
        ValueError: an unknown ``variant``.
    """
    if variant not in CHECKPOINT_FILES:
        raise ValueError(f"variant must be one of {sorted(CHECKPOINT_FILES)}, got {variant!r}")
    if download is None:
        download = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes")
    root = Path(root) if root is not None else None
    sd_dir = Path(sd_turbo) if sd_turbo else (root / "sd-turbo" if root else None)
    vae_dir = Path(vae) if vae else (root / "sd-vae-ft-mse" if root else None)
    ckpt_name = CHECKPOINT_FILES[variant]

    def local(*cands):
        return [c for c in cands if c is not None]

    needs = {
        "checkpoint": _Need(f"{CHECKPOINT_REPO}/{ckpt_name}",
                            local(Path(checkpoint) if checkpoint else None, root / ckpt_name if root else None,
                                  Path("<root>") / ckpt_name),
                            CHECKPOINT_REPO, ckpt_name),
        "unet_config": _Need(f"{UNET_REPO}/unet/config.json",
                             local(sd_dir / "unet/config.json" if sd_dir else Path("<root>/sd-turbo/unet/config.json")),
                             UNET_REPO, "unet/config.json"),
        "unet_weights": _Need(f"{UNET_REPO}/unet/diffusion_pytorch_model.safetensors",
                              [sd_dir / "unet" / n for n in ("diffusion_pytorch_model.safetensors",
                                                             "diffusion_pytorch_model.fp16.safetensors")]
                              if sd_dir else [Path("<root>/sd-turbo/unet/diffusion_pytorch_model.safetensors")],
                              UNET_REPO, "unet/diffusion_pytorch_model.safetensors"),
        "vae_config": _Need(f"{VAE_REPO}/config.json",
                            local(vae_dir / "config.json" if vae_dir else Path("<root>/sd-vae-ft-mse/config.json")),
                            VAE_REPO, "config.json"),
        "vae_weights": _Need(f"{VAE_REPO}/diffusion_pytorch_model.safetensors",
                             local(vae_dir / "diffusion_pytorch_model.safetensors" if vae_dir
                                   else Path("<root>/sd-vae-ft-mse/diffusion_pytorch_model.safetensors")),
                             VAE_REPO, "diffusion_pytorch_model.safetensors"),
    }
    # the prompt: explicit file, root file, our cache, else computed from sd-turbo's text encoder
    prompt_need = _Need("prompt embedding (prompt_embeds.safetensors)",
                        local(Path(prompt_embeds) if prompt_embeds else None,
                              root / "prompt_embeds.safetensors" if root else None, prompt_cache_path()))
    if download and not all(n.local and n.local[0].is_file() for n in needs.values()):
        download = _hub_reachable()
    online = True
    for need in list(needs.values()) + [prompt_need]:
        if need.found is None:
            online = _resolve(need, download and online) and online
    text_needs: dict[str, _Need] = {}
    if prompt_need.found is None:
        for key, fname in (("te_config", "text_encoder/config.json"), ("te_weights", "text_encoder/model.safetensors"),
                           ("tok_vocab", "tokenizer/vocab.json"), ("tok_merges", "tokenizer/merges.txt"),
                           ("tok_config", "tokenizer/tokenizer_config.json"),
                           ("tok_special", "tokenizer/special_tokens_map.json")):
            need = _Need(f"{UNET_REPO}/{fname}",
                         local(sd_dir / fname if sd_dir else Path("<root>/sd-turbo") / fname), UNET_REPO, fname)
            online = _resolve(need, download and online) and online
            text_needs[key] = need
    missing = [n for n in needs.values() if n.found is None]
    missing_text = [n for n in text_needs.values() if n.found is None]
    if missing or missing_text:
        lines = [n.hint() for n in missing]
        if missing_text:
            lines.append(f"  - the prompt embedding: put prompt_embeds.safetensors at {prompt_need.local[0]}, "
                         "or provide sd-turbo's text encoder and tokenizer:")
            lines += ["    " + n.hint().strip() for n in missing_text]
        error = ModelError("the InstantRestore model files are missing" + ("" if download else " (offline)")
                           + "; put them in a folder with this layout and pass it (root=<folder>, or the folder as"
                           " the model name), or into the Hugging Face cache:\n" + "\n".join(lines))
        error.several_lines = True
        raise error
    # every file was found (else the error above)
    found = {key: need.found for key, need in (needs | text_needs).items() if need.found is not None}

    ckpt = read_official_checkpoint(found["checkpoint"])
    if ckpt.adain is None and config is None:
        # the compact layout does not record AdaIN: take it from the released file's name, else
        # from ``variant`` (a base/lmattn ablation run with AdaIN is not the model that was trained)
        by_name = {f: v for v, f in CHECKPOINT_FILES.items()}.get(found["checkpoint"].name, variant)
        config = paper_config(adain=VARIANT_ADAIN[by_name])
    cfg = (config or paper_config()).replace(
        unet=_plain_config(found["unet_config"]), vae=_plain_config(found["vae_config"])
    )
    if prompt_need.found is not None:
        embeds = _read_prompt(prompt_need.found)
    else:
        te_dir = found["te_config"].parent
        tok_dir = found["tok_vocab"].parent
        embeds = compute_prompt_embedding(te_dir, tok_dir)
        kept = prompt_cache_path()
        temp = cache_temp_name(kept)  # (two first runs at once: neither reads the other's half file)
        try:  # keep it so later runs skip the text encoder
            from safetensors.torch import save_file

            kept.parent.mkdir(parents=True, exist_ok=True)
            save_file({"prompt_embeds": embeds.contiguous()}, str(temp))
            temp.replace(kept)
        except OSError as exc:
            log.warning("could not store the prompt embedding at %s: %s", kept, exc)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
    if embeds.ndim != 3 or embeds.shape[0] != 1:
        raise ModelError(f"prompt embedding {prompt_need.found} has shape {tuple(embeds.shape)}, expected (1, tokens, width)")
    try:
        cfg = ckpt.apply_to_config(cfg.replace(prompt_tokens=int(embeds.shape[1])))
    except ValueError as exc:
        raise ModelError(f"the model files do not fit together: {exc}") from exc
    net = InstantRestoreNet(cfg)
    try:
        net.load_base_weights(_load_weights(found["unet_weights"]), _load_weights(found["vae_weights"]))
    except RuntimeError as exc:
        raise ModelError(f"base weights do not fit their config: {str(exc)[:600]}") from exc
    apply_official_checkpoint(net, ckpt, found["checkpoint"])
    if embeds.shape[-1] != net.prompt_embeds.shape[-1]:
        raise ModelError(f"prompt embedding width {embeds.shape[-1]} != UNet cross_attention_dim {net.prompt_embeds.shape[-1]}")
    with torch.no_grad():
        net.prompt_embeds.copy_(embeds)
    return net


def load_model(name_or_path: str | Path, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
               fast_vae: str | Path | None = None, **options: Any) -> InstantRestorer:
    """A ready restorer.

    Args:
        name_or_path: ``"lite"``, ``"instantrestore"``, a ``.safetensors`` file of ours, an
            official ``.pt`` checkpoint (base weights resolved as for ``instantrestore``), a
            folder holding the official files, or :data:`RANDOM_PAPER` (random weights, for
            timing).
        device: ``"auto"`` picks CUDA when present.
        dtype: None: fp16 on CUDA, fp32 on CPU.
        fast_vae: a TAESD folder or decoder file to decode with instead of the VAE (see
            :class:`~streamrestore.model.restorer.InstantRestorer`; ignored with a warning for
            ``lite``).
        **options: for ``instantrestore``, a checkpoint or a folder: see
            :func:`load_instantrestore_net`.

    Raises:
        ModelError: an unknown model, a ``fast_vae`` that does not exist, or model files that
            are missing or do not fit.
    """
    name = str(name_or_path)

    def ready(net: InstantRestoreNet, label: str) -> InstantRestorer:
        return InstantRestorer(net, device, dtype, name=label, fast_vae=fast_vae)

    if fast_vae is not None and not Path(fast_vae).expanduser().exists():
        # before the (slow) model load, so a typo fails at once
        raise ModelError(f"--fast-vae {fast_vae} does not exist; give the folder holding taesd_decoder.safetensors "
                         "or the file itself")
    if name == "lite":
        if not LITE_WEIGHTS.is_file():
            raise ModelError(f"the built-in 'lite' model weights are not installed (expected {LITE_WEIGHTS}); "
                             "reinstall streamrestore, or pass --model instantrestore or a model file")
        return ready(read_model_file(LITE_WEIGHTS), "lite")
    if name == "instantrestore":
        return ready(load_instantrestore_net(**options), "instantrestore")
    if name == RANDOM_PAPER:
        log.warning("model %s: the paper-scale network with RANDOM weights (for timing only; its faces are noise)", name)
        torch.manual_seed(0)
        return ready(InstantRestoreNet(paper_config()), RANDOM_PAPER)
    path = Path(name).expanduser()
    check_model_name(name)
    if path.suffix == ".safetensors":
        return ready(read_model_file(path), path.stem)
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return ready(load_instantrestore_net(checkpoint=path, **options), path.stem)
    return ready(load_instantrestore_net(root=path, **options), path.name)


def model_provenance(model: str) -> dict:
    """The model file a run used and its sha256 (``lite``: the shipped file); None for a model that is no
    one file (``instantrestore``'s folder, ``identity``). For a record of how an output was made."""
    from streamrestore.output_file import sha256_of

    path = LITE_WEIGHTS if str(model) == "lite" else Path(str(model)).expanduser()
    if not path.is_file():
        return {"model_file": None, "model_sha256": None}
    return {"model_file": str(path), "model_sha256": sha256_of(path)}


def check_model_name(name: str | Path) -> None:
    """Fails at once, reading nothing, on a ``--model`` that :func:`load_model` cannot load: a
    name it does not know, or a model file or folder that is not there.

    Raises:
        ModelError: naming what ``--model`` takes.
    """
    name = str(name)
    if name in (*MODEL_NAMES, RANDOM_PAPER, "identity"):
        return
    path = Path(name).expanduser()
    if path.suffix in (".safetensors", ".pt", ".pth", ".ckpt"):
        if not path.is_file():
            raise ModelError(f"model file {name} does not exist")
        return
    if path.is_dir():
        return
    raise ModelError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)}, a .safetensors model file, "
                     "an InstantRestore .pt checkpoint, a folder holding the official files, or identity (returns "
                     "each face as it was; for testing)")
