"""TensorRT engines: exported from the per-frame core, built by Torch-TensorRT, cached on disk.

An engine is kept under a hash of everything it depends on
(:func:`~streamrestore.backends.engine_files.engine_path`), so a second run with the same model
and shapes loads it instead of building it (minutes). A stale or damaged file is rebuilt.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from streamrestore.cache_dir import cache_temp_name, keep_private_if_personal, make_cache_folders

log = logging.getLogger(__name__)


def tensorrt_engine(core: nn.Module, args, dtype: torch.dtype, path: Path):
    """The TensorRT program of ``core`` for ``args`` (the core's inputs): loaded from ``path``
    when a good engine is there, else exported, built in ``dtype`` and saved there."""
    import torch_tensorrt

    from streamrestore.cache_dir import trusted_cached_file

    if trusted_cached_file(path, "TensorRT engine"):
        try:
            program = torch_tensorrt.load(str(path)).module()
            log.info("TensorRT engine loaded from %s", path)
            return program
        except Exception as exc:  # a stale or damaged engine is rebuilt
            log.warning("cannot load TensorRT engine %s (%s); building it again", path, exc)
    x, noise, keys, values, means, stds, ref_mask, input_mask, reference_faces = args
    kwargs = {name: t for name, t in (("input_mask", input_mask), ("reference_faces", reference_faces))
              if t is not None}
    exported = torch.export.export(core, (x, noise, keys, values, means, stds, ref_mask), kwargs=kwargs)
    inputs = [x, noise, *keys, *values, *means, *stds, ref_mask, *kwargs.values()]
    options = dict(enabled_precisions={dtype}, use_explicit_typing=False,
                   # our attention is not causal; Torch-TensorRT's default would make it so
                   attn_bias_is_causal=False)
    try:
        program = torch_tensorrt.dynamo.compile(exported, inputs=inputs, **options)
    except TypeError:  # an older torch_tensorrt without one of the options
        options.pop("attn_bias_is_causal")
        options.pop("use_explicit_typing")
        program = torch_tensorrt.dynamo.compile(exported, inputs=inputs, **options)
    tmp = cache_temp_name(path)  # (two processes building one engine: each writes its own)
    try:
        make_cache_folders(path.parent)
        torch_tensorrt.save(program, str(tmp), inputs=inputs)
        keep_private_if_personal(tmp)
        tmp.replace(path)
    except Exception as exc:
        log.warning("could not cache the TensorRT engine at %s: %s", path, exc)
    finally:  # (a failed save's half file, or Ctrl-C's)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return program
