"""Where built engines are kept on disk: one file per model, shape and runtime version.

The TensorRT and ONNX Runtime backends both build a program per engine shape that costs time
to make (minutes, or seconds) and keep it under a hash of everything it depends on, so a second
run with the same model and shapes loads it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from streamrestore.cache_dir import cache_place, place_path

log = logging.getLogger(__name__)

#: the exported per-frame core's own version, part of every engine's key: bumped when the graph
#: an export produces changes for the same model (2: windowed reference attention; 3: its tighter
#: window), so programs built by older code are exported again instead of loaded
CORE_VERSION = 3
#: the kinds of file the engine folder holds (nothing else there is ever deleted)
ENGINE_SUFFIXES = cache_place("engines").suffixes


def engine_dir(override: str | Path | None = None) -> Path:
    """Folder of cached engines, TensorRT and ONNX (see :class:`BackendConfig`)."""
    if override is not None:
        return Path(override)
    return place_path("engines")


def engine_path(restorer, key, folder: str | Path | None = None, backend: str = "tensorrt") -> Path:
    """Where the engine for ``key`` of ``restorer`` is cached: a hash of everything it depends on.

    Args:
        restorer: the :class:`~streamrestore.model.restorer.InstantRestorer` compiled (its
            ``name``, ``fingerprint``, ``restoring_fingerprint``, ``detail_head_fingerprint``,
            ``resolution``, ``device`` and ``dtype``).
        key: the engine's (bucket, slots, with_refs, with_input).
        folder: the cache folder (default: :func:`engine_dir`).
        backend: ``tensorrt`` (a Torch-TensorRT program, ``.ep``) or ``onnxruntime`` (an ONNX
            program, ``.onnx``).
    """
    bucket, slots, with_refs, with_input = key
    device = restorer.device
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    runtime = "onnxruntime" if backend == "onnxruntime" else "torch_tensorrt"
    try:
        from importlib.metadata import version

        runtime_version = version(runtime)
    except Exception:
        runtime_version = "none"
    ident = {
        # the name carries "+taesd" when --fast-vae swapped the decoder (not in the fingerprint)
        "name": getattr(restorer, "name", "model"),
        "model": restorer.fingerprint, "detail_head": getattr(restorer, "detail_head_fingerprint", "none"),
        "restoring": getattr(restorer, "restoring_fingerprint", "none"),  # (a LoRA checkpoint's own weights)
        "lora_merged": True, "resolution": restorer.resolution,
        "batch": bucket, "slots": slots, "refs": with_refs, "input": with_input, "dtype": str(restorer.dtype),
        "gpu": gpu, "torch": torch.__version__, runtime: runtime_version, "core": CORE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    suffix = ".onnx" if backend == "onnxruntime" else ".ep"
    return engine_dir(folder) / f"{getattr(restorer, 'name', 'model')}-{digest}{suffix}"


def mark_used(path: Path) -> None:
    """Record that the engine at ``path`` was just loaded (its modification time: what
    :func:`prune_engines` orders by; access times are often not kept)."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune_engines(folder: Path, budget_bytes: float, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used engine files in ``folder`` until the rest fit in
    ``budget_bytes``; ``keep`` (the engine just built) and files that are not engines stay.
    Returns what was deleted."""
    files = []
    for p in folder.glob("*"):
        if p.suffix not in ENGINE_SUFFIXES or not p.is_file():
            continue
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile by another process
            continue
        files.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= budget_bytes:
            break
        if keep is not None and p.resolve() == keep.resolve():
            continue
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        deleted.append(p)
    if deleted:
        log.info("engine cache over %.0f MiB: deleted the %d least recently used program(s) in %s",
                 budget_bytes / 2**20, len(deleted), folder)
    return deleted
