"""Random weights that depend only on each tensor's name, shape and a seed.

Two programs that build the same diffusers/peft network get the same weights, whatever order
their library versions create (and initialise) the modules in: each tensor is drawn from its
own generator, seeded by ``crc32("<seed>:<name>")``. The parity check against the official
InstantRestore code (``tools/official_parity.py``, ``tests/test_official_parity.py``) builds
both networks this way, so its fixture needs no stored weights.

This module imports only torch and the standard library: the parity tool loads it by file path
inside the official code's own environment (older diffusers), without the rest of the package.
"""
from __future__ import annotations

import math
import zlib

import torch

#: scale of the LoRA ``B`` matrices relative to a unit-variance draw; peft starts them at zero,
#: which would hide the whole LoRA path from a comparison
LORA_B_SCALE = 0.3


def random_tensor(name: str, shape, seed: int = 0, role: str = "base") -> torch.Tensor:
    """A float32 tensor for the parameter ``name`` (a state-dict key) of ``shape``.

    Weights with two or more dimensions get N(0, 1/fan_in) (activations stay O(1) through deep
    stacks); norm scales 1 + N(0, 0.1²); biases and other vectors N(0, 0.05²). ``role`` enters
    the seed, so ``"base"`` and e.g. ``"trained"`` copies of one name differ.

    Args:
        name: the tensor's key; peft's ``.base_layer`` is ignored so a wrapped layer gets the
            same base weight as the plain layer of the same name.
        shape: the tensor shape.
        seed: the weight set.
        role: a label mixed into the seed (``"base"``, ``"trained"``, ``"lora"``...).
    """
    name = name.replace(".base_layer", "")
    shape = tuple(int(s) for s in shape)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{role}:{name}".encode()))
    t = torch.randn(shape, generator=gen, dtype=torch.float32)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        scale = 1.0 / math.sqrt(max(fan_in, 1))
        if "lora_B" in name:
            scale *= LORA_B_SCALE
        return t * scale
    if name.endswith(".weight") and any(k in name for k in ("norm", "ln_", "layer_norm")):
        return 1.0 + 0.1 * t
    return 0.05 * t


def fill_module(module: torch.nn.Module, seed: int = 0, role_of=lambda name: "base", prefix: str = "") -> None:
    """Overwrite every parameter and floating buffer of ``module`` in place with :func:`random_tensor`.

    ``role_of(name)`` picks the role per key (e.g. ``"lora"`` for LoRA tensors, ``"trained"`` for a
    trained ``conv_in``); ``None`` leaves that tensor as it is. ``prefix`` is put before every key
    (fill a sub-module as its parent would name it, e.g. ``"conv_in."``).
    """
    with torch.no_grad():
        for key, t in module.state_dict(keep_vars=True).items():
            name = prefix + key
            if not t.is_floating_point():
                continue
            role = role_of(name)
            if role is None:
                continue
            t.copy_(random_tensor(name, t.shape, seed, role).to(t.dtype))
