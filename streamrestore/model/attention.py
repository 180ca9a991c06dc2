"""Shared-image attention as pure diffusers attention processors.

In the shared layers (``attn1`` of every up-block transformer block) the restoration UNet's
queries attend to the keys/values its references produced in the reference network. Nothing is
stored on modules: everything per call travels through ``cross_attention_kwargs``, which the
UNet hands unchanged to every attention processor:

``shared_kv``: :class:`ReferenceBatch` | None
    the references of each face in the batch, per layer name.
``record_kv``: dict | None
    a caller-owned dict; each shared layer writes ``record_kv[name] = (keys, values)`` of its
    own input, shape (B, tokens, channels) each. The reference pass uses it.
``attention_maps``: dict | None
    a caller-owned dict whose keys name the layers wanted (values ignored on input); those
    layers compute attention with an explicit softmax (differentiable, slower) and store an
    :class:`AttentionMap`. This is the training path of the landmark attention loss; at
    inference leave it None and every layer uses ``scaled_dot_product_attention``.

With ``position_sigma > 0`` the scores of reference keys get a Gaussian position prior
(``RestorerConfig.reference_position_sigma``): aligned faces put the same feature at about the
same place in every photo. The prior falls so fast (lite: e^-2 one token away, e^-32 four tokens
away on the 32x32 grid) that a query only ever weighs the reference tokens near its own place:
:func:`local_reference_attention` attends in tiles of queries to the reference window around
each tile only, leaving out keys whose prior is below ``e^-WINDOW_CUTOFF`` (lite's 32x32 grid:
64 of its 1024 keys per reference; the output within a quarter of an 8-bit level of full attention's).

Key order inside a shared layer: ``[own tokens (only where used)] + ref0 tokens + ref1 tokens...``
Faces whose references are fewer than the batch maximum are padded and masked (a padded key gets
exactly zero weight). A face with no references attends to its own keys/values (plain
self-attention, what the UNet does without the method); ``include_input_kv`` makes every face
attend to its own tokens as well as its references.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LayerReferences:
    """Reference keys/values of one shared layer for a batch of B faces, N reference slots.

    ``keys``/``values``: (B, N, L, C) with L tokens of C channels (heads not split);
    ``value_mean``/``value_std``: (B, N, 1, C) per-reference value statistics over tokens,
    used by AdaIN (padded slots: mean 0, std 1).
    """

    keys: torch.Tensor
    values: torch.Tensor
    value_mean: torch.Tensor
    value_std: torch.Tensor


@dataclass(frozen=True)
class ReferenceBatch:
    """The references of a batch of faces for all shared layers.

    ``ref_mask``: (B, N) bool, True for real references; None when every slot is real.
    ``input_mask``: (B,) bool, faces that also attend to their own tokens; None when no face
    does (then the own keys/values are not concatenated at all, the fast common case).
    ``input_mask_all``: True when ``input_mask`` is all True (no mask needed for that part);
    a plain bool so the choice of kernel never depends on tensor values (export, compile).
    """

    layers: Mapping[str, LayerReferences]
    ref_mask: torch.Tensor | None = None
    input_mask: torch.Tensor | None = None
    input_mask_all: bool = False

    def key_mask(self, input_tokens: int, ref_tokens: int) -> torch.Tensor | None:
        """Boolean mask (B, 1, 1, keys) for SDPA over ``[own] + refs``; None when nothing is masked."""
        needs_input_mask = self.input_mask is not None and not self.input_mask_all
        if self.ref_mask is None and not needs_input_mask:
            return None
        parts = []
        any_ref = self.ref_mask if self.ref_mask is not None else None
        if self.input_mask is not None:
            parts.append(self.input_mask[:, None].expand(-1, input_tokens))
        if any_ref is None:
            b = self.input_mask.shape[0]
            n = next(iter(self.layers.values())).keys.shape[1]
            any_ref = torch.ones(b, n, dtype=torch.bool, device=self.input_mask.device)
        parts.append(any_ref[:, :, None].expand(-1, -1, ref_tokens).reshape(any_ref.shape[0], -1))
        return torch.cat(parts, dim=1)[:, None, None, :]


@dataclass(frozen=True)
class AttentionMap:
    """Attention probabilities of one shared layer (training path).

    ``probs``: (B, heads, queries, keys); keys are ``[own tokens] * (input_tokens > 0)`` followed
    by ``num_refs`` blocks of ``ref_tokens`` tokens each.
    """

    probs: torch.Tensor
    input_tokens: int
    ref_tokens: int
    num_refs: int

    def for_reference(self, index: int) -> torch.Tensor:
        """(B, heads, queries, ref_tokens): the part of the map over reference ``index``."""
        if not 0 <= index < self.num_refs:
            raise ValueError(f"reference index {index} out of range [0, {self.num_refs})")
        start = self.input_tokens + index * self.ref_tokens
        return self.probs[..., start : start + self.ref_tokens]


def position_bias(query_tokens: int, ref_tokens: int, sigma: float) -> torch.Tensor:
    """(query_tokens, ref_tokens) score bias ``-d^2 / (2 (sigma/32)^2)``; d is the distance between
    token centres of two square grids covering the same image, in image sides."""
    centres = []
    for tokens in (int(query_tokens), int(ref_tokens)):  # int(): a traced shape (ONNX export) is a tensor
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"the position prior needs square token grids, got {tokens} tokens")
        c = (torch.arange(side, dtype=torch.float32) + 0.5) / side
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        centres.append(torch.stack([yy.flatten(), xx.flatten()], 1))
    d2 = (centres[0][:, None] - centres[1][None]).square().sum(-1)
    s = sigma / 32.0
    return -d2 / (2 * s * s)


#: keys whose position prior is below ``-WINDOW_CUTOFF`` for every query of a tile are left out
#: of the windowed path. e^-18 is 1.5e-8 of the nearest key's weight: content scores would have to
#: differ by ~10 for a left-out key to reach 1e-4. Measured on lite with 4 references (the demo
#: set's 12 faces): outputs within 0.13 of 255 levels of full attention (0.0 at a cutoff of 40),
#: restore 50 against 63 ms per face (ONNX Runtime, one thread, tiles of 4 against 8 at 40).
#: Training and ``--adapt`` take the same path (no attention map asked for): the same rounding.
WINDOW_CUTOFF = 18.0
#: queries per tile side in the windowed path. Every reference token is copied into
#: (window / tile)^2 windows, so small tiles pay in copies what they save in keys per query; with
#: the cutoff above the window is tile + 4 on lite's 32x32 grid (8 for tiles of 4: 4x copies, 64
#: keys per reference per query against 256 for tiles of 8 at a cutoff of 40). ONNX Runtime, one
#: thread, 4 / 2 / 1 references: 50 / 43 / 40 ms per face against 63 / 50 / 43 before.
WINDOW_TILE = 4


def window_margin(side: int, sigma: float, cutoff: float = WINDOW_CUTOFF) -> int:
    """Reference tokens kept on each side of a query tile on a ``side`` x ``side`` grid: the
    first token left out is ``margin + 1`` tokens from the tile, where the prior is below ``-cutoff``."""
    if sigma <= 0:
        raise ValueError(f"the window needs a position prior, got sigma {sigma!r}")
    # prior at k tokens along one axis: -(k / side)^2 / (2 (sigma/32)^2) <= -cutoff
    return max(0, math.ceil(side * sigma / 32.0 * math.sqrt(2.0 * cutoff)) - 1)


@dataclass(frozen=True)
class ReferenceWindows:
    """The fixed layout of the windowed path for one grid size and reference count.

    ``index``: (tiles * window_tokens,) each tile's window in the zero-padded reference grid
    (flattened, row-major), tile after tile;
    ``bias``: (tiles, 1, tile_tokens, refs * window_tokens) the position prior of every query of a
    tile on its window of each reference, -inf on padding outside the grid.
    """

    side: int
    tile: int
    margin: int
    index: torch.Tensor
    bias: torch.Tensor

    @property
    def window(self) -> int:
        return self.tile + 2 * self.margin

    @staticmethod
    def build(side: int, num_refs: int, sigma: float, tile: int, like: torch.Tensor) -> "ReferenceWindows":
        margin = window_margin(side, sigma)
        window = tile + 2 * margin
        tiles_per_side = side // tile
        start = torch.arange(tiles_per_side) * tile  # top-left of each window in the padded grid
        offsets = torch.arange(window)
        rows = (start[:, None, None, None] + offsets[None, None, :, None])  # (ty, 1, wy, 1)
        cols = (start[None, :, None, None] + offsets[None, None, None, :])  # (1, tx, 1, wx)
        index = (rows * (side + 2 * margin) + cols).reshape(-1)
        inside = ((rows >= margin) & (rows < side + margin)) & ((cols >= margin) & (cols < side + margin))
        inside = inside.reshape(tiles_per_side * tiles_per_side, window * window)
        # query (a, b) of a tile against window key (c, d): c - margin - a tokens apart
        q = torch.arange(tile)
        dy = (offsets[None, :] - margin - q[:, None]).float() / side  # (tile, window)
        d2 = dy[:, None, :, None].square() + dy[None, :, None, :].square()  # (a, b, c, d)
        s = sigma / 32.0
        prior = (-d2 / (2 * s * s)).reshape(tile * tile, window * window)
        bias = prior[None].expand(inside.shape[0], -1, -1).masked_fill(~inside[:, None, :], float("-inf"))
        bias = bias.repeat(1, 1, num_refs)[:, None]
        return ReferenceWindows(side, tile, margin, index.to(like.device), bias.to(like.device, like.dtype))


def local_reference_attention(query: torch.Tensor, ref_keys: torch.Tensor, ref_values: torch.Tensor,
                              heads: int, scale: float, windows: ReferenceWindows,
                              ref_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of a square grid of queries on the references' keys near each query only.

    ``query``: (B, side*side, C); ``ref_keys``/``ref_values``: (B, N, side*side, C), the
    references on the same grid; ``ref_mask``: (B, N) bool, False for padded slots. Returns
    (B, side*side, C), what full attention with the position prior gives, but for keys whose
    weight is below e^-WINDOW_CUTOFF of the nearest.
    """
    b, tokens, c = query.shape
    n = ref_keys.shape[1]
    side, tile, margin, window = windows.side, windows.tile, windows.margin, windows.window
    per_side = side // tile
    tiles = per_side * per_side
    head_dim = c // heads

    def windowed(x: torch.Tensor) -> torch.Tensor:  # (B, N, L, C) -> (B*tiles, heads, N*window^2, hd)
        padded = side + 2 * margin
        grid = F.pad(x.reshape(b * n, side, side, c), (0, 0, margin, margin, margin, margin))
        # a gather of whole tokens (C contiguous floats each): fast, and every exporter knows it
        win = grid.reshape(b * n, padded * padded, c).index_select(1, windows.index)
        win = win.reshape(b, n, tiles, window * window, heads, head_dim).permute(0, 2, 4, 1, 3, 5)
        return win.reshape(b * tiles, heads, n * window * window, head_dim)

    q = query.reshape(b, per_side, tile, per_side, tile, heads, head_dim)
    q = q.permute(0, 1, 3, 5, 2, 4, 6).reshape(b * tiles, heads, tile * tile, head_dim)
    mask = windows.bias[None].expand(b, -1, -1, -1, -1)  # (B, tiles, 1, tile^2, N*window^2)
    if ref_mask is not None:
        slots = ref_mask[:, :, None].expand(-1, -1, window * window).reshape(b, 1, 1, 1, n * window * window)
        mask = mask.masked_fill(~slots, float("-inf"))
    mask = mask.reshape(b * tiles, 1, tile * tile, n * window * window)
    out = F.scaled_dot_product_attention(q, windowed(ref_keys), windowed(ref_values), attn_mask=mask, scale=scale)
    out = out.reshape(b, per_side, per_side, heads, tile, tile, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, tokens, c)


def adain_values(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, input_values: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """Renormalise reference values (B, N, L, C) to the input values' per-channel mean/std.

    Statistics are over tokens, per channel; ``mean``/``std`` are the references' own (B, N, 1, C).
    Standard deviations are unbiased plus ``eps`` (not ``sqrt(var + eps)``), as in the official
    release: the two differ by up to 3x on near-constant channels (see docs/parity.md).
    """
    in_mean = input_values.mean(dim=1, keepdim=True)  # (B, 1, C)
    in_std = input_values.std(dim=1, keepdim=True, correction=1) + eps
    scale = in_std[:, None] / std
    return (values - mean) * scale + in_mean[:, None]


def value_statistics(values: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (unbiased, + ``eps``) over tokens of (..., L, C) values, as AdaIN uses them."""
    mean = values.mean(dim=-2, keepdim=True)
    std = values.std(dim=-2, keepdim=True, correction=1) + eps
    return mean, std


class SharedImageAttnProcessor:
    """Attention processor for every attention module of the UNet.

    ``name`` is the module's path in the UNet (e.g. ``up_blocks.1.attentions.0.transformer_blocks.0.attn1``)
    and ``shared`` says whether it is a shared-image layer. Non-shared layers behave like
    diffusers' ``AttnProcessor2_0`` and accept (and ignore) the shared-attention kwargs, so one
    ``cross_attention_kwargs`` dict can go to the whole UNet without warnings.

    ``windowed`` (default True) lets a shared layer with a position prior take
    :func:`local_reference_attention` where it saves work (queries and references on the same
    square grid, no own tokens, no attention map asked for); False always attends to every
    reference token (benchmarks compare the two). ``window_tile``: its tile side (default
    :data:`WINDOW_TILE`).
    """

    def __init__(self, name: str, shared: bool, adain: bool = True, adain_eps: float = 1e-5,
                 position_sigma: float = 0.0):
        if adain_eps <= 0:
            raise ValueError(f"adain_eps must be > 0, got {adain_eps}")
        if position_sigma < 0:
            raise ValueError(f"position_sigma must be >= 0, got {position_sigma}")
        self.name = name
        self.shared = shared
        self.adain = adain
        self.adain_eps = adain_eps
        self.position_sigma = position_sigma
        # the windowed path (local_reference_attention) where it applies; False: always full attention
        self.windowed = True
        self.window_tile = WINDOW_TILE
        # (queries, ref tokens, refs, own tokens, device, dtype) -> bias or ReferenceWindows; a few shapes per model
        self._bias_cache: dict = {}

    def _reference_bias(self, query_tokens: int, ref_tokens: int, num_refs: int, input_tokens: int,
                        mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Float attention mask (1 or B, 1, queries, keys): the position prior on every reference
        block, 0 on own tokens, -inf where ``mask`` (bool) is False."""
        key = (query_tokens, ref_tokens, num_refs, input_tokens, like.device, like.dtype)
        full = self._bias_cache.get(key)
        if full is None:
            bias = position_bias(query_tokens, ref_tokens, self.position_sigma).to(like.device, like.dtype)
            parts = [bias] * num_refs
            if input_tokens:
                parts.insert(0, bias.new_zeros(query_tokens, input_tokens))
            full = torch.cat(parts, dim=1)[None, None]
            self._remember(key, full)
        if mask is not None:
            full = full.masked_fill(~mask, float("-inf"))
        return full

    def _windows(self, tokens: int, num_refs: int, like: torch.Tensor) -> ReferenceWindows | None:
        """The windowed path's layout for a square grid of ``tokens`` (queries and reference
        tokens alike), or None where it saves little (fewer than 4x fewer keys per query)."""
        side, tile = math.isqrt(int(tokens)), self.window_tile
        if side * side != tokens or side % tile:
            return None
        window = tile + 2 * window_margin(side, self.position_sigma)
        if 4 * window * window > tokens:  # under 4x fewer keys per query the tiling costs more than it saves
            return None
        key = ("window", tokens, num_refs, tile, like.device, like.dtype)
        windows = self._bias_cache.get(key)
        if windows is None:
            windows = ReferenceWindows.build(side, num_refs, self.position_sigma, tile, like)
            self._remember(key, windows)
        return windows

    def _remember(self, key, value) -> None:
        if len(self._bias_cache) >= 16:  # shapes are few; never grow without bound
            self._bias_cache.pop(next(iter(self._bias_cache)))
        self._bias_cache[key] = value

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        shared_kv: ReferenceBatch | None = None,
        record_kv: dict | None = None,
        attention_maps: dict | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        hidden_shape = hidden_states.shape
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        value = attn.to_v(context)

        refs = None
        is_shared = self.shared and encoder_hidden_states is None
        if is_shared and record_kv is not None:
            record_kv[self.name] = (key, value)
        if is_shared and shared_kv is not None:
            refs = shared_kv.layers.get(self.name)

        mask = None
        input_tokens, ref_tokens, num_refs = key.shape[1], 0, 0
        if refs is not None:
            num_refs, ref_tokens = refs.keys.shape[1], refs.keys.shape[2]
            ref_values = refs.values
            if self.adain:
                ref_values = adain_values(ref_values, refs.value_mean, refs.value_std, value, self.adain_eps)
            windows = None
            if (self.windowed and self.position_sigma > 0 and shared_kv.input_mask is None
                    and attn.norm_q is None and attn.norm_k is None  # the window path has no q/k norms
                    and ref_tokens == query.shape[1] and not (attention_maps and self.name in attention_maps)):
                windows = self._windows(ref_tokens, num_refs, query)
            if windows is not None:
                out = local_reference_attention(query, refs.keys, ref_values, attn.heads, attn.scale, windows,
                                                shared_kv.ref_mask)
                return self._finish(attn, out.to(query.dtype), residual, input_ndim, hidden_shape)
            ref_keys = refs.keys.reshape(batch, num_refs * ref_tokens, -1)
            ref_values = ref_values.reshape(batch, num_refs * ref_tokens, -1)
            if shared_kv.input_mask is not None:
                key = torch.cat([key, ref_keys], dim=1)
                value = torch.cat([value, ref_values], dim=1)
            else:
                key, value, input_tokens = ref_keys, ref_values, 0
            mask = shared_kv.key_mask(input_tokens, ref_tokens)
            if self.position_sigma > 0:
                mask = self._reference_bias(query.shape[1], ref_tokens, num_refs, input_tokens, mask, query)
        elif attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if is_shared and attention_maps is not None and self.name in attention_maps:
            scores = (query @ key.transpose(-1, -2)) * attn.scale
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
            probs = scores.softmax(dim=-1)
            attention_maps[self.name] = AttentionMap(probs, input_tokens, ref_tokens, num_refs)
            out = probs.to(value.dtype) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attn.scale)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        return self._finish(attn, out, residual, input_ndim, hidden_shape)

    @staticmethod
    def _finish(attn, out: torch.Tensor, residual: torch.Tensor, input_ndim: int, hidden_shape) -> torch.Tensor:
        """Output projection, back to the input's layout, residual: (B, tokens, C) -> the module's output."""
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(hidden_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_processors(unet, shared_prefix: str = "up_blocks.", adain: bool = True, adain_eps: float = 1e-5,
                       position_sigma: float = 0.0) -> list[str]:
    """Give every attention module of ``unet`` a :class:`SharedImageAttnProcessor`.

    Shared layers are the self-attention (``attn1``) modules under ``shared_prefix``. Returns
    their names in forward order. ``position_sigma``: the reference position prior (0: off).
    """
    processors = {}
    shared_names = []
    for proc_name in unet.attn_processors:  # "<module path>.processor"
        name = proc_name[: -len(".processor")]
        shared = name.startswith(shared_prefix) and name.endswith("attn1")
        if shared:
            shared_names.append(name)
        processors[proc_name] = SharedImageAttnProcessor(name, shared, adain=adain, adain_eps=adain_eps,
                                                         position_sigma=position_sigma)
    unet.set_attn_processor(processors)
    return shared_names
