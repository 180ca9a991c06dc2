"""ReferenceCache: one identity's reference keys/values, built once, reused every frame."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamrestore.errors import ReferencesError

_FORMAT = "streamrestore.reference_cache"
_VERSION = "1"


def reference_key(images: torch.Tensor, model_fingerprint: str) -> str:
    """Content key of a reference set: sha256 of the images (as float32) and the model identity."""
    digest = hashlib.sha256()
    digest.update(model_fingerprint.encode())
    pixels = images.detach().to("cpu", torch.float32).contiguous()
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ReferenceCache:
    """Keys/values of one identity's N references in every shared layer.

    ``keys[i]``/``values[i]``: (N, L_i, C_i) for layer ``layer_names[i]`` (heads not split);
    ``value_mean[i]``/``value_std[i]``: (N, 1, C_i), the per-reference value statistics AdaIN
    needs (stored so no frame recomputes them). ``key`` is :func:`reference_key` of the images
    that built it and ``model`` the fingerprint of the model that did; a cache only fits the
    model whose fingerprint it carries (not checked by ``restore``: the fingerprint hashes the weights' bytes,
    which differ between one model's fp32 and bf16 copies). ``face_mean``: (3, R, R), the mean of the aligned
    reference faces, for a detail head that sees references (None for models whose head does not).
    """

    layer_names: tuple[str, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    value_mean: tuple[torch.Tensor, ...]
    value_std: tuple[torch.Tensor, ...]
    key: str = ""
    model: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    face_mean: torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self):
        n = len(self.layer_names)
        for name in ("keys", "values", "value_mean", "value_std"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ReferenceCache.{name} has {len(getattr(self, name))} layers, expected {n}")
        if n == 0:
            raise ValueError("ReferenceCache needs at least one layer")
        counts = {t.shape[0] for t in self.keys + self.values}
        if len(counts) != 1:
            raise ValueError(f"ReferenceCache layers disagree on the number of references: {sorted(counts)}")

    @property
    def num_references(self) -> int:
        return self.keys[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by all tensors."""
        tensors = self.keys + self.values + self.value_mean + self.value_std
        if self.face_mean is not None:
            tensors += (self.face_mean,)
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "ReferenceCache":
        """A copy on ``device`` in ``dtype`` (self when nothing changes)."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        if device == self.device and dtype == self.dtype:
            return self

        def move(ts):
            return tuple(t.to(device=device, dtype=dtype) for t in ts)

        face_mean = None if self.face_mean is None else self.face_mean.to(device=device, dtype=dtype)
        return ReferenceCache(self.layer_names, move(self.keys), move(self.values), move(self.value_mean),
                              move(self.value_std), self.key, self.model, dict(self.extra), face_mean)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write as safetensors (atomic rename); metadata carries layer names, key and model."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i in range(len(self.layer_names)):
            tensors[f"k.{i}"] = self.keys[i].detach().contiguous().cpu()
            tensors[f"v.{i}"] = self.values[i].detach().contiguous().cpu()
            tensors[f"vmean.{i}"] = self.value_mean[i].detach().contiguous().cpu()
            tensors[f"vstd.{i}"] = self.value_std[i].detach().contiguous().cpu()
        if self.face_mean is not None:
            tensors["face_mean"] = self.face_mean.detach().contiguous().cpu()
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "layer_names": json.dumps(list(self.layer_names)),
            "key": self.key,
            "model": self.model,
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "ReferenceCache":
        """Read a cache written by :meth:`save`; a damaged file raises ReferencesError."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ReferencesError(f"reference cache {path} does not exist; encode the references again")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"not a reference cache (format {meta.get('format')!r})")
                names = tuple(json.loads(meta["layer_names"]))
                get = lambda prefix: tuple(f.get_tensor(f"{prefix}.{i}") for i in range(len(names)))  # noqa: E731
                face_mean = f.get_tensor("face_mean") if "face_mean" in f.keys() else None
                return cls(names, get("k"), get("v"), get("vmean"), get("vstd"), meta.get("key", ""),
                           meta.get("model", ""), face_mean=face_mean)
        except ReferencesError:
            raise
        except Exception as exc:  # safetensors raises several types for damaged files
            raise ReferencesError(
                f"reference cache {path} cannot be read ({exc}); delete it and encode the references again"
            ) from exc


def paper_cache_bytes_per_reference(unet_config: dict, latent_size: int, bytes_per_element: int = 2) -> int:
    """Bytes of keys+values one reference adds in the up-block self-attention layers.

    Computed from the UNet config: each attention up block at level ``i`` (counted from the
    deepest) has ``layers_per_block + 1`` transformer blocks over ``(latent_size / 2**depth)²``
    tokens of ``block_out_channels[level]`` channels (AdaIN statistics are negligible).
    """
    channels = list(unet_config["block_out_channels"])
    up_types = list(unet_config["up_block_types"])
    per_block = unet_config.get("layers_per_block", 2)
    per_block = per_block if isinstance(per_block, int) else per_block[0]
    depth = len(channels) - 1
    total = 0
    for i, kind in enumerate(up_types):
        if "CrossAttn" not in kind:
            continue
        level = depth - i  # up block i works at the resolution of down level depth - i
        tokens = (latent_size // 2**level) ** 2
        width = list(reversed(channels))[i]
        total += (per_block + 1) * 2 * tokens * width
    return total * bytes_per_element
