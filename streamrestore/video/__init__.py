"""Video input/output: decode with timestamps intact, encode with audio remuxed untouched."""
from streamrestore.video.reader import VideoInfo, VideoReader, frame_to_rgb, probe
from streamrestore.video.writer import (
    EncoderSettings,
    VideoWriter,
    default_output_path,
    resolve_codec,
)

__all__ = [
    "EncoderSettings",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "default_output_path",
    "frame_to_rgb",
    "probe",
    "resolve_codec",
]
