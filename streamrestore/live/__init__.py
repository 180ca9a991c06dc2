"""Live mode: restore a camera, a video file played in real time, or a network stream, with low
latency, into a preview window and/or a file or network output.

    from streamrestore import FaceRestorer, PipelineConfig
    from streamrestore.live import LiveConfig, LiveSession, open_sink, open_source

    source = open_source("0")                      # camera 0; or a file, or "udp://..." etc.
    restorer = FaceRestorer.from_options("me/", config=PipelineConfig(lookahead=0), fps=source.fps)
    sink = open_sink("udp://127.0.0.1:5000", source.width, source.height)
    stats = LiveSession(restorer, source, [sink], config=LiveConfig(window=True)).run()
    print(stats.summary())

Modules: :mod:`~streamrestore.live.sources` (sources, reconnecting, newest-frame-wins capture),
:mod:`~streamrestore.live.sinks` (file and network outputs), :mod:`~streamrestore.live.preview`
(window), :mod:`~streamrestore.live.session` (the loop, latency statistics, clean shutdown).
The names below are imported lazily; the ``TYPE_CHECKING`` block shows them to type checkers
and IDEs.
"""
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - never runs: what the lazy names below are
    # "as" re-exports: the names are the package's, not unused imports
    from streamrestore.live.preview import PreviewWindow as PreviewWindow
    from streamrestore.live.preview import check_display as check_display
    from streamrestore.live.session import LiveConfig as LiveConfig
    from streamrestore.live.session import LiveSession as LiveSession
    from streamrestore.live.session import LiveStats as LiveStats
    from streamrestore.live.session import warm_up as warm_up
    from streamrestore.live.sinks import FileSink as FileSink
    from streamrestore.live.sinks import StreamSink as StreamSink
    from streamrestore.live.sinks import check_output as check_output
    from streamrestore.live.sinks import open_sink as open_sink
    from streamrestore.live.sources import CameraSource as CameraSource
    from streamrestore.live.sources import FileSource as FileSource
    from streamrestore.live.sources import LatestFrame as LatestFrame
    from streamrestore.live.sources import LiveFrame as LiveFrame
    from streamrestore.live.sources import LiveSource as LiveSource
    from streamrestore.live.sources import ReconnectPolicy as ReconnectPolicy
    from streamrestore.live.sources import StreamSource as StreamSource
    from streamrestore.live.sources import open_source as open_source

_LAZY = {
    "CameraSource": "sources", "FileSource": "sources", "LatestFrame": "sources", "LiveFrame": "sources",
    "LiveSource": "sources", "ReconnectPolicy": "sources", "StreamSource": "sources", "open_source": "sources",
    "FileSink": "sinks", "StreamSink": "sinks", "check_output": "sinks", "open_sink": "sinks",
    "PreviewWindow": "preview", "check_display": "preview",
    "LiveConfig": "session", "LiveSession": "session", "LiveStats": "session", "warm_up": "session",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    """The lazily imported name ``name`` (so a process that only sends or receives a stream
    does not import torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"streamrestore.live.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'streamrestore.live' has no attribute {name!r}")
