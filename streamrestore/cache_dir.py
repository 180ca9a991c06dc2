"""Where streamrestore keeps what it computes once and reuses between runs.

Three kinds of file live there, each in its own place under one root:

* ``engines/``: exported ONNX programs and built TensorRT engines
  (:mod:`streamrestore.backends.engine_files`);
* ``adapted/``: per-person fine-tuned weights of ``--adapt`` (:mod:`streamrestore.model.adapt`);
* ``instantrestore_prompt_embeds.safetensors``: the official model's fixed prompt, embedded once
  (:mod:`streamrestore.model.registry`).

The root is ``$STREAMRESTORE_CACHE``, else ``$STREAMRESTORE_HOME`` (the name the engines and the
prompt were first kept under, still read), else ``$XDG_CACHE_HOME/streamrestore``, else
``~/.cache/streamrestore`` (``~`` in a variable is expanded). Everything there can be deleted
and is made again when needed, at a cost: seconds for an ONNX program, minutes for a TensorRT
engine or a fine-tune; the prompt needs SD-Turbo's text encoder again.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """The folder streamrestore's caches live under (the module docstring); read from the
    environment at each call, so a change takes effect at once."""
    for name in ("STREAMRESTORE_CACHE", "STREAMRESTORE_HOME"):
        value = os.environ.get(name)
        if value:
            return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "streamrestore"
