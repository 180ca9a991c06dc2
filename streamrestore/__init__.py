"""streamrestore: identity-preserving face restoration for video files and live streams.

Public API: :func:`restore_video`, :class:`FaceRestorer`, :func:`build_face_restorer`,
:func:`load_model`, :class:`PipelineConfig`, :class:`RunStats`, :class:`EncoderSettings`. Imports are lazy so
``streamrestore --version`` and ``import streamrestore`` stay fast (no torch until a name is
used); the ``TYPE_CHECKING`` block shows the same names to type checkers and IDEs.
"""
from typing import TYPE_CHECKING

from streamrestore._version import __version__

if TYPE_CHECKING:  # pragma: no cover - never runs: what the lazy names below are
    from streamrestore.api import build_face_restorer, restore_video
    from streamrestore.model.registry import load_model
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.run import RunStats
    from streamrestore.video.writer import EncoderSettings

_LAZY = {
    "restore_video": "streamrestore.api",
    "build_face_restorer": "streamrestore.api",
    "FaceRestorer": "streamrestore.pipeline",
    "PipelineConfig": "streamrestore.pipeline",
    "RunStats": "streamrestore.run",
    "load_model": "streamrestore.model.registry",
    "EncoderSettings": "streamrestore.video.writer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrestore' has no attribute {name!r}")
