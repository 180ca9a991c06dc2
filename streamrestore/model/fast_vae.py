"""TAESD, the tiny autoencoder for Stable Diffusion latents, as an optional fast decoder.

``--fast-vae PATH`` swaps the paper-scale model's VAE decoder (sd-vae-ft-mse + LoRA, ~49 M
parameters) for TAESD's decoder (~1.2 M) through ``diffusers.AutoencoderTiny``. TAESD decodes
the *scaled* SD latents the UNet works in (its ``scaling_factor`` is 1), so the restorer hands it
the x0 estimate as is. It was trained to imitate the SD VAE, not our LoRA-tuned one: the
restorer's own decoder LoRA is bypassed, and the quality cost is measured in
``benchmarks/bench_fast_vae.py`` (README, backend section).

Accepted files (MIT weights by madebyollin; nothing is bundled, the user points at them):

- a folder holding ``taesd_decoder.safetensors`` (and ``taesd_encoder.safetensors``): the
  original TAESD release layout, keys ``<index>.<param>`` of its ``nn.Sequential``;
- a folder in diffusers layout (``diffusion_pytorch_model.safetensors`` [+ ``config.json``],
  keys ``decoder.layers.<i>...``), as ``madebyollin/taesd`` on the Hugging Face Hub;
- one of those ``.safetensors`` files directly.

The original decoder's index 0 is a clamp without weights, which ``DecoderTiny`` applies in its
forward instead: original decoder index ``i`` is diffusers' ``decoder.layers.<i-1>``; encoder
indices are the same in both.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from streamrestore.errors import ModelError

#: pixels per latent cell along a side (TAESD decodes SD's 8x latents)
TAESD_FACTOR = 8
#: file names looked up in a folder, in order
DECODER_FILES = ("taesd_decoder.safetensors", "diffusion_pytorch_model.safetensors")
ENCODER_FILES = ("taesd_encoder.safetensors", "diffusion_pytorch_model.safetensors")


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read TAESD weights {path} ({exc}); download taesd_decoder.safetensors "
                         "again (madebyollin/taesd)") from exc


def _part_state(path: Path, part: str) -> dict[str, torch.Tensor]:
    """The raw state of ``part`` from ``path`` (folder or file; see the module doc)."""
    names = DECODER_FILES if part == "decoder" else ENCODER_FILES
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return _read(path / name)
        raise ModelError(f"no TAESD {part} in {path}: expected one of {', '.join(names)} "
                         "(from https://github.com/madebyollin/taesd or the Hugging Face repo madebyollin/taesd)")
    if not path.is_file():
        raise ModelError(f"--fast-vae {path} does not exist; give the folder holding taesd_decoder.safetensors "
                         "or the file itself")
    state = _read(path)
    diffusers_layout = any(k.startswith(("encoder.", "decoder.")) for k in state)
    if part == "decoder" or diffusers_layout:
        return state
    # an original-layout file holds one part; its encoder is the sibling file
    return _part_state(path.parent, part)


def _to_diffusers(state: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """Keys of ``part`` (encoder/decoder) in ``AutoencoderTiny``'s naming, from either layout."""
    prefix = f"{part}.layers."
    if any(k.startswith(prefix) for k in state):  # diffusers layout: keep this part only
        return {k: v for k, v in state.items() if k.startswith(prefix)}
    if any(k.startswith(("encoder.", "decoder.")) for k in state):
        return {}  # a diffusers file without this part
    offset = -1 if part == "decoder" else 0
    out = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or not rest:
            raise ModelError(f"unexpected key {key!r}: not a TAESD {part} file")
        out[f"{prefix}{int(index) + offset}.{rest}"] = value
    return out


def load_taesd(path: str | Path, encoder: bool = False) -> nn.Module:
    """``diffusers.AutoencoderTiny`` with TAESD's decoder (and encoder with ``encoder=True``) from ``path``.

    Parts not loaded keep random weights; use only what was loaded. Raises :class:`ModelError`
    naming what is missing or does not fit.
    """
    from diffusers import AutoencoderTiny

    path = Path(path).expanduser()
    model = AutoencoderTiny()  # the default config is TAESD's (SD 1/2 latents, 4 channels)
    parts = ["decoder"] + (["encoder"] if encoder else [])
    state = {}
    for part in parts:
        mapped = _to_diffusers(_part_state(path, part), part)
        if not mapped:
            raise ModelError(f"{path} holds no TAESD {part} weights")
        state.update(mapped)
    target = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in parts}
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(target) & set(state) if target[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise ModelError(f"{path} is not a TAESD (SD latents) file: missing {missing[:3]}, unexpected {extra[:3]}, "
                         f"wrong shapes {wrong[:3]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return model.eval().requires_grad_(False)


def load_taesd_decoder(path: str | Path) -> nn.Module:
    """TAESD's decoder alone (``DecoderTiny``): scaled SD latents (B, 4, h, w) -> images in [-1, 1]."""
    return load_taesd(path).decoder
