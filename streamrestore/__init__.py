"""streamrestore: identity-preserving face restoration for video files and live streams.

Public API: :func:`restore_video`, :class:`FaceRestorer`, :func:`build_face_restorer`,
:func:`load_model`, :class:`PipelineConfig`. Imports are lazy so ``streamrestore --version``
and ``import streamrestore`` stay fast.
"""
from streamrestore._version import __version__

_LAZY = {
    "restore_video": "streamrestore.api",
    "build_face_restorer": "streamrestore.api",
    "FaceRestorer": "streamrestore.pipeline",
    "PipelineConfig": "streamrestore.pipeline",
    "RunStats": "streamrestore.run",
    "load_model": "streamrestore.model.registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrestore' has no attribute {name!r}")
