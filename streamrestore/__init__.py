"""streamrestore: identity-preserving face restoration for video files and live streams.

Public API: :func:`restore_video`, :func:`restore_photo`, :class:`FaceRestorer`, :func:`build_face_restorer`,
:func:`load_model`, :class:`PipelineConfig`, :class:`RunStats`, :class:`EncoderSettings`. Imports are lazy so
``streamrestore --version`` and ``import streamrestore`` stay fast (no torch until a name is
used); the ``TYPE_CHECKING`` block shows the same names to type checkers and IDEs.
"""
from typing import TYPE_CHECKING

from streamrestore._version import __version__

if TYPE_CHECKING:  # pragma: no cover - never runs: what the lazy names below are
    # "as" re-exports: the names are the package's, not unused imports
    from streamrestore.api import build_face_restorer as build_face_restorer
    from streamrestore.api import restore_photo as restore_photo
    from streamrestore.api import restore_video as restore_video
    from streamrestore.model.registry import load_model as load_model
    from streamrestore.pipeline import FaceRestorer as FaceRestorer
    from streamrestore.pipeline import PipelineConfig as PipelineConfig
    from streamrestore.run import RunStats as RunStats
    from streamrestore.video.writer import EncoderSettings as EncoderSettings

_LAZY = {
    "restore_video": "streamrestore.api",
    "restore_photo": "streamrestore.api",
    "build_face_restorer": "streamrestore.api",
    "FaceRestorer": "streamrestore.pipeline",
    "PipelineConfig": "streamrestore.pipeline",
    "RunStats": "streamrestore.run",
    "load_model": "streamrestore.model.registry",
    "EncoderSettings": "streamrestore.video.writer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    """The lazily imported name ``name`` (see the module docstring)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones (tab completion, ``dir(streamrestore)``)."""
    return sorted({*globals(), *__all__})
