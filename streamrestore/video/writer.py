"""Encoding restored frames with PyAV, keeping the source's timing, audio and metadata.

:class:`VideoWriter` encodes every frame at the presentation time it arrives with (variable
frame rate stays variable), copies the source's audio packets untouched (no re-encode: same
bytes, same timestamps), keeps rotation, colour tags and pixel aspect, and writes to a hidden
temporary file beside the destination that is renamed over it only when everything is
written. A failed or interrupted run leaves neither a partial output nor a temporary file.

Timing with ``start``: the output starts at 0. Video and audio are shifted by the same
offset, the time of the first video frame written, so they stay in sync; audio packets that
begin before that frame are left out (packets stay whole, so audio may start up to one
packet, ~20 ms, after the video). With ``end``, audio packets that begin at or after it are
left out. Without ``start`` nothing is shifted: the output has the source's timestamps
exactly (MP4/MOV keep them to the tick; Matroska rounds to 1 ms and, like FFmpeg, moves
everything later by the audio's priming delay when that starts before 0).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, cast

import av
import av.error
import av.logging
from av.video.reformatter import Interpolation

from streamrestore.errors import InputError, OutputError
from streamrestore.output_file import (
    SPACE_ERRNOS,
    check_output_path,
    hold_temp,
    move_into_place,
    output_target,
    release_temp,
    remove_stale_temps,
    same_file,
    temp_beside,
    write_failed,
)
from streamrestore.settings import check_kinds
from streamrestore.video.reader import (
    DEEP_PLANAR,
    DEEP_YUV420,
    VideoInfo,
    frame_ticks,
    open_input,
    open_local_media,
    pick_video_stream,
    seek_not_after,
)

logger = logging.getLogger(__name__)

# Short names users type -> FFmpeg encoder names.
_CODEC_ALIASES = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "hevc": "libx265",
    "h265": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": ("libsvtav1", "libaom-av1"),  # first one this FFmpeg build has
    "prores": "prores_ks", "dnxhr": "dnxhd",  # (editors' names: ProRes keeps its profile, DNxHR its depth)
}

# Default CRF per encoder: "visually lossless" on faces, i.e. skin texture, eyelashes and
# teeth edges survive; a restored face must not be softened again by the encoder.
# x264 17 is the usual visually-lossless point for 8-bit 4:2:0 at its "medium" preset (18 is
# often quoted; one step lower costs ~12% bitrate and keeps fine skin texture); at our default
# "veryfast" one step lower again, 16, gives medium-17's bitrate (below). x265's scale sits ~2
# higher for the same quality (19). libvpx-vp9 and AV1 use a 0-63 scale; 20 (VP9) and 22 (SVT-AV1/aom)
# are at the high-quality end of their recommended ranges for 480p-1080p.
# benchmarks/bench_video_io.py --quality measures PSNR/SSIM of these on a real clip.
_DEFAULT_CRF = {
    "libx264": 16,
    "libx265": 19,
    "libvpx-vp9": 20,
    "libsvtav1": 22,
    "libaom-av1": 22,
}
# Default speed/quality trade-off: the encoder's own balanced setting, but x264 "veryfast".
# x264 medium costs ~40 ms of CPU per 720p frame, a third of what a 2-core machine spends on a
# restored frame; veryfast ~15 ms (2.6x less), and at crf 16 it keeps medium-17's bitrate
# within 0.9 dB of its luma PSNR, at 45-47 dB, far above what shows (720p talking head:
# 45.59 dB at 2449 kbit/s against 46.42 at 2422; benchmarks/bench_video_io.py --quality).
# End to end on 2 cores (streamrestore bench, 720p one face; the preset alone): 13.0-13.8 fps ->
# 15.3-15.5. The usual choice for face tools (facefusion's default preset is veryfast too);
# --preset medium --crf 17, the former default, gets the 0.8 dB back for that CPU.
# x265 (the default for 10-bit 4:2:0 video) "veryfast" too: 40 frames of 1080x1920 10-bit video
# (latentsync demo1) on 2 cores encode at 10.7 fps, 48.4 dB luma PSNR, 1649 kbit/s, against
# medium's 4.4 fps, 50.8 dB, 1808 kbit/s (x264 veryfast crf 16 at 10 bits: 20 fps, 45.7 dB, 1984
# kbit/s): medium alone would be slower than the restorer at that size.
_DEFAULT_PRESET = {
    "libx264": "veryfast",
    "libx265": "veryfast",
    "libvpx-vp9": "2",  # cpu-used (0 slowest .. 8 fastest); 2 is libvpx's "good" default area
    "libsvtav1": "8",  # SVT-AV1 preset (0 slowest .. 13 fastest)
    "libaom-av1": "6",  # cpu-used
}
# What each encoder's speed preset and crf take (measured on this FFmpeg build: out of range, the
# encoder refuses to open): x264/x265 a preset name, the others a number. x264 clamps crf to 51,
# x265 refuses above it.
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                 "veryslow", "placebo")
_PRESET_RANGE = {"libvpx-vp9": (-8, 8), "libsvtav1": (-2, 13), "libaom-av1": (0, 9)}
_CRF_MAX = {"libx264": 51, "libx265": 51}
# These encoders refuse odd widths/heights in 4:2:0 / 4:2:2 (chroma is subsampled in pairs
# and H.264/HEVC crop in 2-pixel steps); VP9 and AV1 code odd sizes directly.
_NEEDS_EVEN_SUBSAMPLED = {"libx264", "libx265"}
_GREY_KEPT = {"ffv1"}  # encoders that write a grey source as grey (_output_pix_fmt)
# Containers whose HEVC Apple's players read only under the 'hvc1' tag (.m4v does not take HEVC).
_APPLE_CONTAINERS = {".mp4", ".mov"}
# The layouts each encoder's output plays in browsers, phones and QuickTime (others keep the
# input's chroma or depth, for editors: said when written).
_WIDELY_PLAYED = {"libx264": {"yuv420p"}, "libx265": {"yuv420p", "yuv420p10le"}}
# Output extensions that only take these video codecs.
_WEBM_VIDEO = {"libvpx-vp9", "libsvtav1", "libaom-av1", "libvpx"}
_WEBM_AUDIO = {"opus", "vorbis"}
#: subtitle decoders whose lines are timed by their packets alone (a bitmap subtitle carries its own display
#: time inside: not clipped)
_TEXT_SUBTITLES = {"srt", "subrip", "ass", "ssa", "webvtt", "mov_text", "text"}
#: seconds before a window's start (--start) that copied subtitles are read from: a line on screen at the
#: start began up to this long before it
SUBTITLE_LOOKBACK_S = 10.0
#: outputs whose tracks are named by their handler name (a stream's title is not written there)
_TRACK_NAMED_BY_HANDLER = {".mp4", ".m4v", ".mov", ".m4a", ".3gp"}
#: outputs that hold attached files (Matroska's; WebM's subset does not)
_ATTACHMENTS_KEPT = {".mkv", ".mka", ".mks"}
# Subtitle decoders (codec_context.name) whose packets each output container takes as they are
# (copied; others are reported, not converted)
_SUBTITLES_KEPT = {
    ".mkv": ("srt", "subrip", "ass", "ssa", "webvtt", "dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle", "text"),
    ".mp4": ("mov_text",), ".m4v": ("mov_text",), ".mov": ("mov_text",),
    ".webm": ("webvtt",),
}
# Containers that store each frame's own timestamp, so VFR timing survives. Others (AVI,
# FLV, ASF, ...) assume a fixed rate and would move frames; outputs there are refused.
TIMESTAMP_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".mts", ".m2ts", ".nut")

# AVColorSpace (what frames and VideoInfo carry) -> swscale's matrix id for RGB->YUV, so
# pixels are converted with the matrix the output is tagged with.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def _encoder_available(name: str) -> bool:
    """Whether this FFmpeg build has a *video* encoder of that name (an audio encoder such as aac
    would pass a plain lookup and fail later, when the stream is given a frame size)."""
    try:
        return av.Codec(name, "w").type == "video"
    except (av.error.FFmpegError, ValueError):
        return False


def resolve_codec(codec: str) -> str:
    """The FFmpeg encoder name for ``codec``.

    Args:
        codec: an encoder name or alias (h264, hevc, vp9, av1).

    Raises:
        ValueError: this FFmpeg build has no such encoder.
    """
    choice = _CODEC_ALIASES.get(codec.lower(), codec)
    candidates = choice if isinstance(choice, tuple) else (choice,)
    for name in candidates:
        if _encoder_available(name):
            return name
    raise ValueError(
        f"video encoder {codec!r} is not available in this FFmpeg build "
        f"(tried {', '.join(candidates)}); use libx264, libx265, libvpx-vp9 or libsvtav1 to deliver, or prores_ks, "
        "dnxhd or ffv1 for an editing intermediate"
    )


@dataclass
class EncoderSettings:
    """How the restored video is encoded.

    Args:
        codec: FFmpeg encoder or alias ("h264", "hevc", "vp9", "av1"). None picks libx264;
            libx265 for 10-bit 4:2:0 video (HDR and HEVC from phones: HEVC Main 10 plays where
            they are watched, H.264's 10-bit profile in editors only); libvpx-vp9 when the output
            is .webm (WebM cannot hold H.264).
        crf: constant-quality factor, lower is better. None uses a visually lossless value
            for faces: x264 16 (at veryfast), x265 19, vp9 20, av1 22.
        preset: encoder speed preset. None uses x264 and x265 "veryfast" (the encoder then costs
            a 2-core machine a third of the CPU that "medium" does, at a bitrate and quality far
            above what shows; see the module's notes) and the encoder's balanced default elsewhere
            (vp9 cpu-used 2, svt-av1 preset 8, aom cpu-used 6).
        threads: encoder threads, 0 lets FFmpeg choose.
        pix_fmt: the output's pixel format (default None: the input's chroma and depth where the
            encoder takes them, so a 4:2:2 10-bit master stays so, and editors read it while most
            browsers and phones do not play it; ``"yuv420p"`` plays everywhere).
        tune: x264's or x265's tuning (default None: none); ``"grain"`` keeps film grain and tape noise
            where the default smoothed it by about a tenth over the whole picture, at a larger file.
        strip_metadata: leave out the input's tags (default False: kept, so a library sorts the restored
            video by the day it was recorded): the file's (title, comment, recording date, a phone's
            location, make and model, author), each track's but its language, the timecode and the
            chapters. For footage of people who must not be found: where and when it was filmed, and on
            what, go with the file otherwise. The pictures, sound, subtitles and a Matroska file's attached
            files (fonts, a cover) are kept.

    Raises:
        ValueError: an encoder this FFmpeg build lacks, a ``crf`` outside 0-63, negative
            ``threads`` or a ``pix_fmt`` FFmpeg does not know.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    threads: int = 0
    pix_fmt: str | None = None
    tune: str | None = None
    strip_metadata: bool = False

    def __post_init__(self) -> None:
        check_kinds(self)
        if self.codec is not None:
            self.codec = resolve_codec(self.codec)
        if self.crf is not None and not (0 <= self.crf <= 63):
            raise ValueError(f"crf must be between 0 and 63 (libx264 and libx265 take 0-51), got {self.crf}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.pix_fmt is not None:
            try:
                av.VideoFormat(self.pix_fmt)
            except (ValueError, av.error.FFmpegError):
                raise ValueError(f"pix_fmt {self.pix_fmt!r} is no pixel format FFmpeg knows (yuv420p plays "
                                 "everywhere)") from None

    def codec_for(self, dst: Path, pix_fmt: str | None = None) -> str:
        """The encoder for an output at ``dst`` of a source in ``pix_fmt`` (the default depends on
        both: WebM takes VP9; 10-bit 4:2:0, what phones record HDR and HEVC video as, is written as
        HEVC Main 10, which phones, QuickTime, TVs and most browsers play, where H.264's 10-bit
        profile plays almost nowhere but in editors; else H.264)."""
        if self.codec is not None:
            return self.codec
        if dst.suffix.lower() == ".webm":
            return resolve_codec("vp9")
        pix_fmt = self.pix_fmt or pix_fmt  # (one asked for decides: 8-bit 4:2:0 asked of a 10-bit input is H.264)
        if pix_fmt in ("yuv420p10le", "p010le") and "libx265" in av.codecs_available:
            return "libx265"
        return "libx264"

    def check_for(self, codec: str) -> None:
        """Raises ValueError, naming what the encoder takes, for a ``preset``, ``crf`` or
        ``pix_fmt`` the encoder ``codec`` would refuse when it is opened."""
        if self.crf is not None and self.crf > _CRF_MAX.get(codec, 63):
            raise ValueError(f"{codec} takes crf 0-{_CRF_MAX[codec]}, got {self.crf}")
        writes = {f.name for f in (av.Codec(codec, "w").video_formats or ())}
        if self.pix_fmt is not None and writes and self.pix_fmt not in writes:
            raise ValueError(f"{codec} cannot write {self.pix_fmt} video; it writes {', '.join(sorted(writes))}")
        if self.tune is not None and self.tune not in _TUNES.get(codec, ()):
            raise ValueError(f"{codec} tunings are {', '.join(_TUNES[codec])}; got {self.tune!r}" if codec in _TUNES
                             else f"{codec} takes no tuning (x264 and x265 do: --tune grain keeps film grain)")
        if self.preset is None:
            return
        if codec in ("libx264", "libx265") and self.preset not in _X26X_PRESETS:
            raise ValueError(f"{codec} presets are {', '.join(_X26X_PRESETS)}; got {self.preset!r}")
        if codec in _PRESET_RANGE:
            low, high = _PRESET_RANGE[codec]
            try:
                ok = low <= int(self.preset) <= high
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{codec} takes a speed preset from {low} (slowest) to {high} (fastest), "
                                 f"got {self.preset!r}")

    def options_for(self, codec: str) -> dict[str, str]:
        """Encoder options (FFmpeg AVOptions) for the encoder ``codec``.

        Raises:
            ValueError: see :meth:`check_for`.
        """
        self.check_for(codec)
        crf = self.crf if self.crf is not None else _DEFAULT_CRF.get(codec)
        preset = self.preset if self.preset is not None else _DEFAULT_PRESET.get(codec)
        options: dict[str, str] = {}
        if crf is not None:
            options["crf"] = str(crf)
        if codec in ("libvpx-vp9", "libaom-av1"):
            # Constant quality needs the bitrate cap off; row-mt lets libvpx use all cores.
            options["b"] = "0"
            if codec == "libvpx-vp9":
                options["row-mt"] = "1"
                options["deadline"] = "good"
            if preset is not None:
                options["cpu-used"] = str(preset)
        elif preset is not None:
            options["preset"] = str(preset)
        if self.tune is not None:
            options["tune"] = self.tune
        if codec == "libx265":
            # x265 writes its own [info]/[warning] banner straight to stderr, past FFmpeg's log level.
            options["x265-params"] = "log-level=error"
            # closed captions in the frames' side data go into SEI, as libx264 does by default
            options["a53cc"] = "1"
        return options


#: the tunings x264 and x265 take (``EncoderSettings.tune``)
_TUNES = {"libx264": ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
          "libx265": ("grain", "animation", "psnr", "ssim", "fastdecode", "zerolatency")}


#: tags the muxer or the encoder writes for itself, and Matroska's per-stream statistics: not copied
_OWN_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "vendor_id", "rotate", "duration",
             "number_of_frames", "number_of_bytes", "bps"}


def _timecode_after(timecode: str, seconds: float, rate: Fraction | None) -> str | None:
    """``timecode`` (HH:MM:SS:FF, or drop-frame HH:MM:SS;FF) ``seconds`` later at ``rate``
    frames a second; itself for 0 s; None where it cannot be counted (a rate neither whole nor
    NTSC's, drop-frame at a rate other than 29.97 or 59.94, a malformed one). A non-drop timecode
    at an NTSC rate (30000/1001...) counts its frames at the whole rate above (30), one number a
    frame, as cameras do; drop-frame skips the first 2 (at 59.94: 4) numbers of each minute but
    every tenth (SMPTE 12M), so it keeps to the clock."""
    if not seconds:
        return timecode
    drop_frame = ";" in timecode
    parts = timecode.replace(";", ":").split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or not rate:
        return None
    fps = round(float(rate))
    ntsc = abs(fps / float(rate) - 1.001) <= 1e-4
    if fps < 1 or not (abs(float(rate) - fps) <= 1e-3 or ntsc):
        return None
    drop = fps // 15 if drop_frame else 0  # (numbers skipped a minute: 2 at 29.97, 4 at 59.94)
    if drop_frame and not (ntsc and fps in (30, 60)):
        return None
    hours, minutes, secs, frames = map(int, parts)
    counted = ((hours * 60 + minutes) * 60 + secs) * fps + frames  # the numbers, skipped ones too
    minutes_in = hours * 60 + minutes
    frame = counted - drop * (minutes_in - minutes_in // 10) + round(seconds * float(rate))
    if drop:  # back to numbers: add those skipped before this frame
        per_ten, per_minute = 600 * fps - 9 * drop, 60 * fps - drop
        tens, rest = divmod(frame, per_ten)
        frame += 9 * drop * tens + (drop * ((rest - drop) // per_minute) if rest > drop else 0)
    frames, total = frame % fps, frame // fps
    return f"{total // 3600 % 24:02d}:{total // 60 % 60:02d}:{total % 60:02d}{';' if drop_frame else ':'}{frames:02d}"


def _kept_tags(tags: dict[str, str]) -> dict[str, str]:
    """The input's tags worth keeping on the output (see :data:`_OWN_TAGS`)."""
    return {key: value for key, value in tags.items()
            if key.lower() not in _OWN_TAGS and not key.startswith("_STATISTICS")}


_D = av.stream.Disposition
#: the track flags a copied audio or subtitle stream keeps: which one a player picks or shows unasked,
#: and whom it is for (not what would misdescribe the copy, e.g. cover art or a dependent layer)
_TRACK_FLAGS = (_D.default | _D.forced | _D.dub | _D.original | _D.comment | _D.hearing_impaired
                | _D.visual_impaired | _D.captions | _D.descriptions)
#: ... and the restored video (re-encoded as one plain stream)
_VIDEO_FLAGS = _D.default | _D.forced | _D.original | _D.comment

#: a file's standard tags and the QuickTime metadata keys Apple's players read them from: with
#: ``movflags=use_metadata_tags`` (an iPhone's video) FFmpeg writes every tag as a key of its own name,
#: and the standard atoms (©nam, ©xyz...) not at all
_APPLE_KEYS = {"title": "com.apple.quicktime.title", "artist": "com.apple.quicktime.artist",
               "comment": "com.apple.quicktime.comment", "description": "com.apple.quicktime.description",
               "location": "com.apple.quicktime.location.ISO6709"}

#: MPEG-TS: holds no chapters, nor a file's tags
_MPEG_TS = {".ts", ".mts", ".m2ts"}
#: containers whose edit lists (where the video starts after 0: a dashcam's fragmented MP4, a cut) count in the
#: movie's time scale (:func:`movie_timescale`)
_MOVIE_TIMESCALE_CONTAINERS = {".mp4", ".m4v", ".mov"}


def movie_timescale(time_base: Fraction | None) -> int:
    """The MP4/MOV movie time scale that holds every pts of a video stream of ``time_base`` exactly and
    every millisecond (FFmpeg's default, 1000, for the audio's edits): their least common multiple. At
    1000 a stream starting at 1024/15360 s (a fragmented MP4 from a dashcam) started 10 ticks early: the
    edit list that delays it is written in the movie's scale."""
    if not time_base:
        return 1000
    for scale in (math.lcm(1000, time_base.denominator), time_base.denominator):
        if scale <= 2**31 - 1:  # (the muxer's limit)
            return scale
    return 1000


def _is_chapter_track(stream: av.stream.Stream) -> bool:
    """Whether ``stream`` is an MP4/MOV chapter track (a text track FFmpeg reads as a data stream with
    no codec; FFmpeg names its handler "SubtitleHandler", Apple's tools "Chapter...")."""
    handler = stream.metadata.get("handler_name", "")
    return stream.type == "data" and (handler == "SubtitleHandler" or handler.lower().startswith("chapter"))


def _n_streams(count: int, kind: str) -> str:
    return f"{count} {kind} stream{'s' if count != 1 else ''}"


def _notes_on(info: VideoInfo) -> list[str]:
    """What the output will not keep of a video described by ``info`` (see ``VideoWriter.notes``)."""
    notes = []
    bits = _bits(info.pix_fmt)
    if bits > 8 and info.pix_fmt not in DEEP_YUV420 and info.pix_fmt not in DEEP_PLANAR:  # (those keep it)
        notes.append(f"the input has {bits} bits per sample ({info.pix_fmt}): frames with faces are restored "
                     "at 8 bits, frames without keep theirs")
    if info.alpha:
        notes.append("the input has transparency (an alpha channel): the output is written without it (its "
                     "codecs carry none); keep the original for compositing")
    if info.interlaced:
        notes.append("the input is interlaced: the output keeps its two fields woven in each frame, coded and "
                     "tagged interlaced by libx264 (other encoders tag it only; shown as progressive, it is combed "
                     "where things move); deinterlaced (the default; library: deinterlace=True) the faces are "
                     "restored on whole frames")
    return notes


#: the containers tried, in order, for audio that the one an output would be (``.mkv``) cannot hold as it is: a
#: DVR's AVI with G.711 (pcm_alaw, pcm_mulaw), which Matroska and MP4 refuse and MOV takes
_AUDIO_CONTAINERS = {".mkv": "matroska", ".mov": "mov", ".mp4": "mp4"}


def containers_holding(streams: list) -> list[str]:
    """The suffixes of :data:`_AUDIO_CONTAINERS` whose container takes every one of ``streams`` (an input's audio
    and subtitle streams) as it is, remuxed."""
    import io

    holding = []
    for suffix, name in _AUDIO_CONTAINERS.items():
        out = av.open(io.BytesIO(), "w", format=name)
        try:
            for stream in streams:
                out.add_stream_from_template(stream)
            holding.append(suffix)
        except ValueError:  # (PyAV's words for "this container does not take that codec")
            pass
        finally:
            with contextlib.suppress(av.error.FFmpegError, ValueError):
                out.close()
    return holding


def default_output_path(src: str | os.PathLike) -> Path:
    """``<stem>.restored<ext>`` beside ``src``.

    The extension is the source's when that container keeps per-frame timestamps (mp4, mov,
    mkv, webm, ts, ...); an animated GIF's ``.mp4`` (it has no sound or subtitles to need more,
    and an MP4 plays wherever a GIF is shared); otherwise (avi, flv, no extension) ``.mkv``,
    which holds almost any codec; where it does not hold the input's audio as it is (a DVR's G.711), ``.mov``.
    """
    src = Path(src)
    suffix = src.suffix if src.suffix.lower() in TIMESTAMP_CONTAINERS else ".mp4" if src.suffix.lower() == ".gif" \
        else ".mkv"
    if suffix.lower() == ".mkv":
        suffix = _container_for_the_audio_of(src, suffix)
    return src.with_name(f"{src.stem if src.suffix else src.name}.restored{suffix}")


def _container_for_the_audio_of(src: Path, suffix: str) -> str:
    """``suffix``, or the first container of :data:`_AUDIO_CONTAINERS` that holds ``src``'s audio and subtitles as
    they are where ``suffix``'s does not (``suffix`` where none does, or ``src`` cannot be read: said later)."""
    try:
        with open_local_media(src) as container:
            streams = [*container.streams.audio, *container.streams.subtitles]
            holding = containers_holding(streams) if streams else []
    except (av.error.FFmpegError, OSError, ValueError):
        return suffix
    return suffix if not streams or suffix.lower() in holding or not holding else holding[0]


def check_not_input(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Refuses an output that is the input itself: replacing it would destroy the original
    video, so this is refused even with ``force``.

    Args:
        src: the input.
        dst: the output.

    Raises:
        OutputError: ``dst`` is ``src`` (however spelled: relative, symlink, hard link).
    """
    if same_file(src, dst):
        raise OutputError(
            f"output {dst} is the input file {src}; writing it would destroy the original, "
            "so choose another output name"
        )


def _pts(frame: av.VideoFrame) -> int:
    """The pts of a frame :meth:`VideoWriter.write` took (it refuses frames without one)."""
    return cast(int, frame.pts)


def _output_pix_fmt(codec: str, info: VideoInfo, wanted: str | None = None) -> tuple[str, str | None]:
    """Pixel format that keeps the source's depth and, for odd sizes, every pixel exact; and a
    warning when few players play it (None: widely played). Only the writer says the warning (in its
    notes): a batch converts each chunk's frames ahead (:func:`encoder_format`) and would say it per chunk.
    ``wanted`` (``EncoderSettings.pix_fmt``) is taken as asked, with no warning.

    Raises:
        OutputError: ``wanted`` is not one ``codec`` writes, or halves the chroma of an odd-sized picture.
    """
    supported = {f.name for f in (av.Codec(codec, "w").video_formats or ())}
    if wanted is not None:
        if supported and wanted not in supported:
            raise OutputError(f"{codec} cannot write {wanted} video; it writes {', '.join(sorted(supported))}")
        luma, *chroma = av.VideoFormat(wanted, 4, 4).components
        halved_across = any(c.width < luma.width for c in chroma)
        halved_down = any(c.height < luma.height for c in chroma)
        if (halved_across and info.width % 2) or (halved_down and info.height % 2):
            raise OutputError(f"a {info.width}x{info.height} picture cannot be written as {wanted}, whose chroma is "
                              "halved (an even size is needed); write yuv444p, or leave the format out")
        return wanted, None
    # yuvj* are deprecated aliases for full-range yuv; the range goes in the colour tags.
    source = info.pix_fmt.replace("yuvj", "yuv")
    # (a black-and-white archive stays grey in FFV1, its lossless home; a delivery codec's grey profile
    # plays almost nowhere: 4:2:0 at neutral chroma)
    keeps = ("yuv", "gray") if codec in _GREY_KEPT else ("yuv",)
    pix_fmt = source if source in supported and source.startswith(keeps) else "yuv420p"
    if pix_fmt != source and _bits(source) > 8:  # a deep source keeps what depth the encoder writes
        pix_fmt = _nearest_yuv(source, supported)
    if pix_fmt not in supported and supported:
        pix_fmt = _fallback_format(source, supported)
    odd = info.width % 2 or info.height % 2
    if odd and codec in _NEEDS_EVEN_SUBSAMPLED and not pix_fmt.startswith("yuv444"):
        # 4:4:4 codes odd sizes exactly; padding would shift nothing but could not be
        # cropped back off in 4:2:0 (crop steps are 2 pixels), changing the size. At the
        # depth chosen above (a 12-bit source through HEVC stays 12).
        full = [name for name in supported if name.startswith("yuv444p") and _bits(name) <= _bits(pix_fmt)]
        high = max(full, key=_bits) if full else "yuv444p"
        odd_note = (f"{info.width}x{info.height} is odd-sized: encoding {codec} as {high} (4:4:4), which some "
                    "players and phones do not decode; use an even size or --codec vp9/av1 for widest playback")
        depth = _depth_note(codec, source, high)
        return high, odd_note if depth is None else f"{depth}; {odd_note}"
    depth = _depth_note(codec, source, pix_fmt)
    fewer = _chroma_note(codec, source, pix_fmt)
    if fewer is not None:
        depth = fewer if depth is None else f"{depth}; {fewer}"
    if codec in _WIDELY_PLAYED and pix_fmt not in _WIDELY_PLAYED[codec]:
        played = (f"encoding {codec} as {pix_fmt} to keep the input's chroma and depth: editors read it, but most "
                  "browsers, phones and QuickTime do not play it (--pix-fmt yuv420p plays everywhere; library: "
                  "EncoderSettings(pix_fmt=...))")
        return pix_fmt, played if depth is None else f"{depth}; {played}"
    return pix_fmt, depth


def _chroma_note(codec: str, source: str, written: str) -> str | None:
    """The note for a YUV source whose colour samples ``written`` holds fewer of, across or down (DV's 4:1:1
    made 4:2:0 has half the rows of colour: said, where it went without a word; None: none fewer)."""
    if not source.startswith("yuv") or source == written:
        return None
    try:
        had = av.VideoFormat(source, 16, 16).components[1]
        has = av.VideoFormat(written, 16, 16).components[1]
    except (ValueError, IndexError):
        return None
    if has.width >= had.width and has.height >= had.height:
        return None
    full = "yuv444p" if had.width == 16 else "yuv422p"
    fewer = [way for way, less in (("across", has.width < had.width), ("down", has.height < had.height)) if less]
    return (f"the input's colour ({source}) is written as {written} by {codec}, with fewer colour samples "
            f"{' and '.join(fewer)} the picture (--pix-fmt {full} keeps them all)")


def _depth_note(codec: str, source: str, written: str) -> str | None:
    """The note for a source written with fewer bits per sample than it has (None: as many).
    A depth the encoder cannot write (12 bits, or 10-bit RGB, in H.264) was dropped to 8
    without a word."""
    if _bits(written) >= _bits(source):
        return None
    deeper = "; --codec libx265 keeps up to 12" if codec != "libx265" and _bits(source) <= 12 else ""
    return (f"{codec} cannot write the input's {source} ({_bits(source)} bits per sample): written as {written} "
            f"({_bits(written)} bits){deeper}")


def _layout(name: str) -> tuple[int, int]:
    """How many luma samples across and down share a chroma sample in the format ``name``
    ((2, 2) for 4:2:0, (2, 1) for 4:2:2, (1, 1) for 4:4:4 and planar RGB)."""
    try:
        luma, *chroma = av.VideoFormat(name, 4, 4).components
    except (ValueError, av.error.FFmpegError):
        return (2, 2)
    if not chroma:  # grey: 4:2:0 loses nothing of it and plays widely
        return (2, 2)
    return (luma.width // max(chroma[0].width, 1), luma.height // max(chroma[0].height, 1))


def _nearest_yuv(source: str, supported: set[str]) -> str:
    """The planar YUV format of ``supported`` nearest ``source``: its chroma layout (planar RGB as
    4:4:4) at its depth, else the deepest below it (p010le is yuv420p10le; 12 bits through H.264
    are 10); yuv420p where none has its layout."""
    plain = [name for name in supported if name.startswith("yuv") and not name.startswith(("yuvj", "yuva"))
             and _bits(name) <= _bits(source)]
    for wanted in (_layout(source), (2, 2)):  # its layout, else 4:2:0, at the most depth the encoder writes
        same = [name for name in plain if _layout(name) == wanted]
        if same:
            return max(same, key=_bits)
    return "yuv420p"


def _fallback_format(source: str, supported: set[str]) -> str:
    """The format of an encoder that writes neither ``source`` nor 4:2:0 (an editing
    intermediate: ProRes, DNxHR): planar YUV at no fewer bits than the source where it can, in
    the source's chroma layout where it can, else the nearest to 4:2:0 (4:2:2 before 4:4:4), at
    the fewest bits; its first format where it writes no planar YUV."""
    plain = [name for name in supported if name.startswith("yuv") and not name.startswith(("yuvj", "yuva"))]
    if not plain:
        return sorted(supported)[0]
    return min(plain, key=lambda name: (_bits(name) < _bits(source), _layout(name) != _layout(source),
                                        -_layout(name)[0] * _layout(name)[1], _bits(name), name))


#: decoders of editing intermediates (intra-only, high rate, or lossless) -> what to ask for to keep one
_INTERMEDIATES = {"prores": ("ProRes", "prores_ks"), "dnxhd": ("DNxHD/DNxHR", "dnxhd"),
                  "ffv1": ("FFV1 (lossless)", "ffv1"), "cfhd": ("CineForm", "ffv1"), "v210": ("v210", "ffv1")}
#: the containers each suggested encoder is written into
_INTERMEDIATE_CONTAINERS = {"prores_ks": ".mov", "dnxhd": ".mov", "ffv1": ".mkv"}


def _intermediate_replaced(info: VideoInfo, codec: str, asked: str | None) -> str | None:
    """A note when an editing intermediate's video is written by a delivery codec nobody asked
    for (the default H.264 or HEVC): an editor dropping the output back into a timeline gets
    another kind of file than the one they gave, and a lossy generation of the whole picture."""
    kind = _INTERMEDIATES.get(info.codec)
    if kind is None or asked is not None or av.Codec(codec, "w").intra_only:
        return None
    name, keeps = kind
    into = _INTERMEDIATE_CONTAINERS[keeps]
    return (f"the input is {name}, an editing intermediate: written as {codec}, a delivery codec (the default); "
            f"--codec {keeps} -o NAME{into} writes {'it as one again' if keeps != 'ffv1' else 'a lossless intermediate'}")


#: FFmpeg's names of ProRes profiles (the decoder's) -> the encoders' ``profile`` option
_PRORES_PROFILES = {"proxy": "proxy", "lt": "lt", "standard": "standard", "hq": "hq", "4444": "4444",
                    "xq": "4444xq", "4444xq": "4444xq"}


def _profile_options(codec: str, pix_fmt: str, info: VideoInfo) -> dict[str, str]:
    """The encoder's ``profile`` where it needs one or the input names one to keep: DNxHD's
    encoder opens only with a profile (DNxHR's, which takes any size: HQ at 8 bits, HQX at 10,
    444 for 4:4:4); a ProRes input written by prores_ks keeps its profile where the output's
    chroma is the profile's (422 Standard came back as HQ). prores_aw (FFmpeg's "prores") takes
    profiles by number only, and is left to choose."""
    if codec == "dnxhd":
        return {"profile": "dnxhr_444" if _layout(pix_fmt) == (1, 1) else "dnxhr_hqx" if _bits(pix_fmt) > 8
                else "dnxhr_hq"}
    if codec == "prores_ks" and info.codec == "prores" and info.profile:
        profile = _PRORES_PROFILES.get(info.profile.lower().replace(" ", ""))
        # (only where the chroma asked for is the profile's: 4444 and XQ are 4:4:4, the others 4:2:2)
        if profile is not None and (_layout(pix_fmt) == (1, 1)) == profile.startswith("4444"):
            return {"profile": profile}
    return {}


def _bits(pix_fmt: str) -> int:
    """The most bits per sample of the pixel format ``pix_fmt`` (8 where FFmpeg does not know it)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8


def encoder_format(dst: str | os.PathLike, info: VideoInfo, settings: EncoderSettings | None = None
                   ) -> tuple[str, int | None, int | None]:
    """What a :class:`VideoWriter` converts frames to before encoding: with
    :func:`to_encoder_format` a frame can be converted ahead, elsewhere (e.g. by a batch
    worker), exactly as the writer would.

    Args:
        dst: the output file.
        info: the source's description.
        settings: the writer's (default None: ``EncoderSettings()``).

    Returns:
        (pixel format, swscale matrix, colour range).
    """
    settings = settings if settings is not None else EncoderSettings()
    codec = settings.codec_for(Path(dst), info.pix_fmt)
    pix_fmt, _ = _output_pix_fmt(codec, info, settings.pix_fmt)
    matrix = _SWS_MATRIX.get(info.color_space) if info.color_space else None
    return pix_fmt, matrix, _output_range(codec, info)


#: encoders that write every stream as limited range (measured on this FFmpeg: a full-range
#: source's stream came back tagged limited, its levels unchanged, so its blacks were crushed)
_LIMITED_RANGE_ENCODERS = frozenset({"prores_ks", "prores_aw", "mpeg2video"})


def _output_range(codec: str, info: VideoInfo) -> int | None:
    """The colour range the output is written in (FFmpeg's numbers: 1 limited, 2 full; None
    unspecified): the source's, limited where ``codec`` writes only that (the levels are
    converted into it)."""
    if info.color_range is not None:
        color_range = info.color_range or None
    else:
        color_range = 2 if "yuvj" in info.pix_fmt else None
    if color_range == 2 and codec in _LIMITED_RANGE_ENCODERS:
        return 1
    if codec == "mjpeg":  # (JPEG is full range: the encoder refuses limited-range input)
        return 2
    return color_range


def to_encoder_format(frame: av.VideoFrame, pix_fmt: str, matrix: int | None, color_range: int | None
                      ) -> av.VideoFrame:
    """``frame`` converted to what the encoder takes (itself when it already is that format).

    Args:
        frame: the frame.
        pix_fmt: as :func:`encoder_format` returns them.
        matrix: as :func:`encoder_format` returns them.
        color_range: as :func:`encoder_format` returns them.
    """
    # (a frame without a range tag is limited, or full in a yuvj format: what swscale takes it for)
    has = int(frame.color_range) or (2 if frame.format.name.startswith("yuvj") else 1)
    if frame.format.name == pix_fmt and (color_range is None or has == color_range):
        return frame
    # swscale's fast rounding into full-range YUV puts grey's chroma at 127 where it is 128 (a green cast
    # over a black-and-white film); exact rounding there only, so limited-range outputs stay as they were
    exact = Interpolation.BILINEAR | Interpolation.ACCURATE_RND if color_range == 2 else None
    return frame.reformat(
        format=pix_fmt,
        dst_colorspace=matrix,
        src_color_range=int(frame.color_range) or None,
        dst_color_range=color_range,
        interpolation=exact,
    )


#: encoders that count time in frames: their time base must be one frame of a rate their standard
#: has (MPEG-1/2: 23.976 to 60 fps, and fractions of those); the output's pts stay the source's
_FRAME_CLOCK_ENCODERS = frozenset({"mpeg1video", "mpeg2video"})

#: the name endings of FFmpeg's encoders that run on a GPU or other device (h264_nvenc, hevc_qsv, ...):
#: one that fails to open says so, not that another container might hold it
_HARDWARE_ENCODERS = ("nvenc", "qsv", "vaapi", "videotoolbox", "amf", "v4l2m2m", "mediacodec", "vulkan", "mf")


def repaired_dts(pts: int | None, dts: int | None, last_dts: int | None, earliest: int | None) -> int | None:
    """The decode time to mux an encoded video packet with: its own, or ``pts`` where that
    cannot be right.

    libx265 (in the FFmpeg 8 build PyAV 18 ships) gives a stream of one or two frames a garbage
    decode time in about one run of four (measured: -139677624546368, or above the pts): the
    muxer then refuses the packet (Matroska "pts < dts", MP4 "not yet implemented") and the
    output is lost. A decode time is taken as garbage when it is after the presentation time,
    before the last packet's, or (the first packet) before ``earliest``. Without reordering pts
    is the right decode time; a valid stream passes unchanged.

    Args:
        pts, dts: the packet's times (None: not set; returned as they are).
        last_dts: the decode time of the stream's previous packet, None for the first.
        earliest: the earliest decode time a first packet can validly have (None: not
            checked). An encoder that reorders starts its decode times as far before the first
            frame's time as frames it holds back span, so the writer gives ``first - (last -
            first)`` of the frames given to the encoder so far, less one frame.
    """
    if pts is None or dts is None:
        return dts
    garbage = dts > pts or (last_dts is not None and dts < last_dts) or (
        last_dts is None and earliest is not None and dts < earliest)
    if garbage and (last_dts is None or last_dts < pts):
        return pts
    return dts


#: the frame rates MPEG-1/2 code directly (their table; MPEG-2's extension reaches fractions of these)
_MPEG_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50),
               Fraction(60000, 1001), Fraction(60))


def _standard_rate(rate: Fraction) -> Fraction:
    """The MPEG rate within 0.5 % of ``rate`` (an average counted from a file's duration: 34560000/1153153 for
    29.97, which MPEG-2 refused), else ``rate`` itself, as ffmpeg's own command picks."""
    nearest = min(_MPEG_RATES, key=lambda standard: abs(standard - rate))
    return nearest if abs(nearest - rate) <= rate / 200 else rate


#: PyAV's log settings are the process's: one block at a time changes them (_ffmpeg_errors)
_LOG_SETTINGS = threading.Lock()


@contextlib.contextmanager
def _ffmpeg_errors(names: set[str]) -> Iterator[list[str]]:
    """FFmpeg's own error lines of the contexts ``names`` (an encoder's or a muxer's name) while the block runs,
    on this thread (why an encoder or a muxer refused: 'MPEG-1/2 does not support 7/1 fps' where the exception
    says 'Invalid argument'), in the list given, filled on leaving. PyAV passes FFmpeg's log on only while a
    level is set, and drops a line equal to the last one it passed in the process: both set for the block
    alone (a second run's same refusal was said 'Invalid argument', and another encoder's last line was taken
    for the next refusal)."""
    said: list[str] = []
    with _LOG_SETTINGS:
        level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)
        capture = av.logging.Capture()
        try:
            with capture:
                yield said
        finally:
            av.logging.set_level(level)
            av.logging.set_skip_repeated(skip)
            said.extend(" ".join(message.split()) for at, name, message in capture.logs
                        if at <= av.logging.ERROR and name in names)


def _reason(exc: av.error.FFmpegError, said: list[str]) -> str:
    """Why FFmpeg refused, in its own words: its first error line (the last ones are its plumbing's, e.g.
    'ff_frame_thread_encoder_init failed'), without a list it announces ('Valid DNxHD profiles:')."""
    if not said:
        return str(exc.strerror or exc)
    first = said[0]
    if first.endswith(":") and ". " in first:
        first = first.rsplit(". ", 1)[0]
    return first.rstrip(".:")


class VideoWriter:
    """Encode frames to ``dst``, remuxing the audio of ``audio_from`` untouched.

    Args:
        dst: output file; its extension picks the container (mp4, mkv, mov, webm, ...).
        info: the source's :class:`VideoInfo` (size, timing, rotation, colour tags).
        settings: encoder choice and quality.
        audio_from: file whose audio streams are copied packet for packet (normally the
            source); None writes video only.
        start: the start of the window given to the reader (seconds from ``info.origin``);
            see the module docstring for how times are shifted.
        end: the end of that window.
        force: replace an existing ``dst``.
        comment: written as the file's ``comment`` tag (MP4, MOV, Matroska, WebM; MPEG-TS holds none), ahead
            of the input's comment (:func:`streamrestore.provenance.comment_with`); None (default): the input's
            is kept as it is. What restores faces gives :func:`streamrestore.provenance.restored_comment`.

    ``write`` takes frames with ``pts`` and ``time_base`` set (decoded frames, or new frames
    with those copied from the decoded ones; ``duration`` too where known), in presentation
    order; do not modify a frame after writing it (the writer holds one frame back). Use
    as a context manager: a normal exit calls :meth:`close`, any exception
    (KeyboardInterrupt included) calls :meth:`abort`. One thread only.

    Raises:
        OutputError: ``dst`` cannot be written (exists without ``force``, is the input, a
            container that cannot keep every frame's timing or hold the codec or audio, a
            folder that is missing or not writable).
        ValueError: ``end`` not after ``start``.
    """

    def __init__(
        self,
        dst: str | os.PathLike,
        info: VideoInfo,
        settings: EncoderSettings | None = None,
        *,
        audio_from: str | os.PathLike | None = None,
        start: float | None = None,
        end: float | None = None,
        force: bool = False,
        comment: str | None = None,
    ) -> None:
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end ({end}) must be after start ({start})")
        self.dst = Path(dst)
        self.info = info
        self.settings = settings if settings is not None else EncoderSettings()
        self.start = start
        self.end = end
        self.comment = comment
        self.frames_written = 0
        #: what the output does not keep of the input, a sentence each (for the run's summary): streams
        #: other than video and audio, interlacing, samples over 8 bits where frames are restored
        self.notes: list[str] = _notes_on(info)
        self._closed = False
        self._output: av.container.OutputContainer | None = None  # None once closed or aborted
        self._copy_from: av.container.InputContainer | None = None
        self._temp: Path | None = None  # None once renamed to dst or removed
        self._held: int | None = None  # the temp file's lock (output_file.hold_temp) while it is written
        # One frame is held back so a frame without a duration can get it from the next.
        self._pending: av.VideoFrame | None = None
        self._last_interval: int | None = None
        self._offset: int | None = None  # video pts subtracted when `start` shifts times
        self._offset_s: Fraction = Fraction(0)
        self._durations: dict[int, int] = {}  # output pts -> duration, until its packet is muxed
        self._last_dts: int | None = None  # of the last video packet muxed (see repaired_dts)
        self._given: tuple[int, int] | None = None  # the first and last pts given to the encoder
        # an encoder that counts in frames (_FRAME_CLOCK_ENCODERS): its time base, and which output pts
        # each frame it was given had, until its packet is muxed
        self._frame_clock: Fraction | None = None
        self._clock_pts: dict[int, int] = {}
        self._last_number: int | None = None  # the frame number given last
        self._check_destination(force)
        self._target = output_target(self.dst)  # (a link at dst is written through)
        self._replace = force  # whether an output another run wrote meanwhile may be replaced at the end
        if audio_from is not None:
            check_not_input(audio_from, self.dst)
        self._codec = self.settings.codec_for(self.dst, info.pix_fmt)
        if self.dst.suffix.lower() == ".webm" and self._codec not in _WEBM_VIDEO:
            raise OutputError(
                f"{self.dst.name}: WebM cannot hold {self._codec} video; "
                "write .mp4/.mkv or choose --codec vp9/av1"
            )
        self._temp = temp_beside(self._target)
        self._held = hold_temp(self._temp)  # (a live run's: never taken for a killed one's, remove_stale_temps)
        try:
            self._open(audio_from)
        except BaseException:
            self.abort()
            raise

    # -- set-up ---------------------------------------------------------------------------

    def _check_destination(self, force: bool) -> None:
        dst = self.dst
        check_output_path(dst, force, "out.mp4")
        from streamrestore.images import PHOTO_OUTPUT_SUFFIXES  # noqa: PLC0415

        if dst.suffix.lower() in PHOTO_OUTPUT_SUFFIXES:  # (a look at one restored frame, as other tools give)
            raise OutputError(
                f"a video is written as a video, not as a {dst.suffix} picture; to look at one frame restored, "
                "restore a short window (--start 3 --end 3.5 -o preview.mp4), or save the frame as a photo first "
                "(ffmpeg -ss 3 -i IN -frames:v 1 frame.png) and restore that"
            )
        if dst.suffix.lower() not in TIMESTAMP_CONTAINERS:
            raise OutputError(
                f"cannot write {dst.suffix or 'extension-less'} files keeping every frame's "
                "timing; use .mp4, .mkv, .mov or .webm"
            )

    def _open(self, audio_from) -> None:
        info = self.info
        try:
            # The temp name ends with ".partial.<ext>", so FFmpeg picks the muxer from <ext>.
            # MPEG-TS: the encoder's B-frame delay puts the first dts before a stream that starts near
            # 0 (an MPEG-2 broadcast without B-frames); FFmpeg would shift every stream later, when
            # the TS muxer's own delay keeps such a dts positive: timestamps are kept exactly
            keep = {"avoid_negative_ts": "disabled"} if self.dst.suffix.lower() in _MPEG_TS else {}
            if self.dst.suffix.lower() in _MOVIE_TIMESCALE_CONTAINERS:
                keep["movie_timescale"] = str(movie_timescale(info.time_base))
            if audio_from is not None:  # (first: its tags say how the output's are written)
                self._copy_from = open_input(audio_from)
                # an iPhone's place, make, model and local recording time are QuickTime metadata keys
                # ("com.apple.quicktime.*"), which MP4/MOV keep only written as such
                if self.dst.suffix.lower() in _APPLE_CONTAINERS and not self.settings.strip_metadata and any(
                        key.startswith("com.apple.") for key in self._copy_from.metadata):
                    keep["movflags"] = "use_metadata_tags"
            self._metadata_keys = "movflags" in keep
            self._output = av.open(str(self._temp), mode="w", options=keep)
        except ValueError:
            raise OutputError(
                f"cannot write {self.dst.suffix} files; use .mp4, .mkv, .mov or .webm"
            ) from None
        out = self._output
        try:
            options = self.settings.options_for(self._codec)
        except ValueError as exc:
            raise OutputError(f"bad encoder option: {exc}") from None
        pix_fmt, playback = _output_pix_fmt(self._codec, info, self.settings.pix_fmt)
        options.update(_profile_options(self._codec, pix_fmt, info))
        replaced = _intermediate_replaced(info, self._codec, self.settings.codec)
        if replaced:
            self.notes.append(replaced)
        if self._codec == "libx264" and info.frame_rate:
            # x264 writes the stream's timing info (H.264 VUI) from the time base unless told the
            # rate is constant: players and tools that read it saw 15360 fps (a 1/15360 time base).
            # The pts stay the file's, a variable rate's too (x264 passes them through).
            options["x264-params"] = "force-cfr=1"
        if self._codec == "libx264" and info.interlaced:  # woven fields (--no-deinterlace): coded as fields
            order = "bff=1" if info.field_order in (3, 4) else "tff=1"
            options["x264-params"] = ":".join(filter(None, [options.get("x264-params"), order]))
        if self._codec == "libx265" and (info.mastering_display or info.content_light):
            # HDR10's static metadata, which a TV tone-maps by: x265 writes it from its own options
            # only (FFmpeg hands it no frame's side data)
            hdr10 = ["hdr10=1"]
            if info.mastering_display:
                hdr10.append(f"master-display={info.mastering_display}")
            if info.content_light:
                hdr10.append("max-cll={},{}".format(*info.content_light))
            options["x265-params"] = ":".join([options.get("x265-params", ""), *hdr10]).strip(":")
        elif info.mastering_display or info.content_light:  # (another encoder, asked for: its loss said)
            self.notes.append(f"the input's HDR10 metadata (mastering display, light levels) is written by libx265 "
                              f"only: the {self._codec} output keeps the colour tags without it, and a TV tone-maps "
                              "it by guess")
        # add_stream's type covers audio and subtitle encoders too; self._codec is a video encoder
        # (resolve_codec refuses others)
        try:
            stream = cast(av.video.stream.VideoStream, out.add_stream(self._codec, options=options))
        except ValueError:  # PyAV's words for "this container does not take that codec"
            home = _INTERMEDIATE_CONTAINERS.get(self._codec, ".mkv")  # (DNxHD and ProRes: .mov)
            where = f"write {home}{' (holds most codecs)' if home == '.mkv' else ''} or " \
                if self.dst.suffix.lower() != home else ""
            raise OutputError(f"a {self.dst.suffix} file cannot hold {self._codec} video; {where}choose another "
                              "--codec") from None
        stream.width = info.width
        stream.height = info.height
        stream.pix_fmt = pix_fmt
        if playback:  # (a note, not a log line: a run's stats carry it to a library's caller too)
            self.notes.append(playback)
        # Encoder and stream work in the source's time base so every pts maps 1:1; an encoder that
        # counts in frames is given frame numbers, its packets put back on the source's pts (_mux_video)
        stream.codec_context.time_base = info.time_base
        stream.time_base = info.time_base
        if self._codec in _FRAME_CLOCK_ENCODERS:
            if not info.frame_rate:
                raise OutputError(f"{self._codec} counts time in frames, and this video's frame rate is unknown; "
                                  "choose another --codec")
            self._frame_clock = 1 / _standard_rate(Fraction(info.frame_rate))
            stream.codec_context.time_base = self._frame_clock
        if info.frame_rate:
            stream.codec_context.framerate = info.frame_rate
        stream.thread_type = "AUTO"
        stream.thread_count = self.settings.threads
        color_range = _output_range(self._codec, info)
        if color_range is not None:
            stream.codec_context.color_range = color_range
        if info.color_space is not None:
            stream.codec_context.colorspace = info.color_space
        if info.color_primaries is not None:
            stream.codec_context.color_primaries = info.color_primaries
        if info.color_trc is not None:
            stream.codec_context.color_trc = info.color_trc
        if info.sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
        if info.field_order:  # (an interlaced input's, or progressive once deinterlaced: ProRes said "unknown")
            stream.codec_context.field_order = info.field_order
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        if self.dst.suffix.lower() in _APPLE_CONTAINERS and av.Codec(self._codec, "w").canonical_name == "hevc":
            # FFmpeg tags HEVC 'hev1'; QuickTime, iOS and Safari play only 'hvc1' (what iPhones write)
            stream.codec_context.codec_tag = "hvc1"
        self._video = stream
        self._range = stream.codec_context.color_range or None
        self._matrix = _SWS_MATRIX.get(info.color_space) if info.color_space else None

        # the streams copied untouched from ``audio_from`` (audio, and subtitles the container takes),
        # by their index there, and their packets in demux order
        self._copied: dict[int, av.stream.Stream] = {}
        self._copied_packets: Iterator[av.Packet]  # set below when there is something to copy
        self._copied_next: av.Packet | None = None
        if self._copy_from is not None:
            audio_streams = list(self._copy_from.streams.audio)
            # subtitles are copied where the output's container takes their codec; the rest is said
            takes = _SUBTITLES_KEPT.get(self.dst.suffix.lower(), ())
            subtitles = [s for s in self._copy_from.streams.subtitles if s.codec_context.name in takes]
            # a camera's timecode track (QuickTime tmcd) is written again from the video's "timecode"
            # tag (_copy_tags): kept, not said lost
            timecodes = [s for s in self._copy_from.streams if s.type == "data" and s.metadata.get("timecode")]
            # an MP4/MOV's chapters are a text track (read as a data stream): written again with the
            # chapters (_copy_tags) where the output holds chapters, else said lost
            input_chapters = bool(self._copy_from.chapters())
            has_chapters = input_chapters and not self.settings.strip_metadata  # (kept, or said lost)
            holds_chapters = self.dst.suffix.lower() not in _MPEG_TS
            # (their track is never said "not copied": chapters are written again, or said lost, or stripped)
            chapter_tracks = [s for s in self._copy_from.streams if input_chapters and _is_chapter_track(s)]
            if has_chapters and not holds_chapters:
                self.notes.append(f"the input's chapters are not kept: {self.dst.suffix} files hold none (.mkv, .mp4 "
                                  "and .mov do)")
            tags = sorted(_kept_tags(self._copy_from.metadata)) if not self.settings.strip_metadata else []
            if tags and not holds_chapters:  # (MPEG-TS holds neither chapters nor a file's tags)
                self.notes.append(f"the input's tags ({', '.join(tags)}) are not kept: {self.dst.suffix} files hold "
                                  "none (.mkv, .mp4 and .mov do)")
            # Matroska's attached files (the fonts its ASS subtitles are styled with) are written into the
            # output's header where it is Matroska too; elsewhere they are named, with what they served
            attachments: list[Any] = [s for s in self._copy_from.streams if s.type == "attachment"]  # (AttachmentStream)
            if attachments and self.dst.suffix.lower() in _ATTACHMENTS_KEPT:
                for attached in attachments:
                    copy = self._output.add_attachment(attached.name or "attachment", attached.mimetype or
                                                       "application/octet-stream", bytes(attached.data))
                    for key, value in attached.metadata.items():  # (its title, its description: a font's name)
                        if key.lower() not in ("filename", "mimetype"):
                            copy.metadata[key] = value
            elif attachments:
                names = ", ".join(s.name or "unnamed" for s in attachments)
                styled = any(s.codec_context.name in ("ass", "ssa") for s in subtitles)
                files = f"{len(attachments)} attached file{'s' if len(attachments) > 1 else ''}"
                self.notes.append(f"{files} of the input not copied ({names}): "
                                  f"{self.dst.suffix} files hold none (.mkv does)"
                                  + ("; the styled subtitles kept may show in another font" if styled else ""))
            others = Counter(stream.type for stream in self._copy_from.streams
                             if stream.type not in ("video", "audio", "attachment") and stream not in subtitles
                             and stream not in timecodes and stream not in chapter_tracks)
            if others.get("subtitle"):
                holds = f"holds only {', '.join(takes)} subtitles" if takes else "holds no subtitles here"
                other = "" if self.dst.suffix.lower() == ".mkv" else "; .mkv holds most"
                self.notes.append(f"{_n_streams(others.pop('subtitle'), 'subtitle')} of the input not copied: "
                                  f"{self.dst.suffix} {holds}{other}")
            for kind, count in sorted(others.items()):
                self.notes.append(f"{_n_streams(count, kind)} of the input not copied (only video, audio and "
                                  "subtitles are)")
            # the restored video is one of the input's video streams, never cover art (marked as such)
            videos = self._copy_from.streams.video
            covers = sum(bool(s.disposition & av.stream.Disposition.attached_pic) for s in videos)
            other_videos = len(videos) - 1 - covers
            if covers:
                self.notes.append(f"{_n_streams(covers, 'cover art')} of the input not copied")
            if other_videos:
                self.notes.append(f"{_n_streams(other_videos, 'other video')} of the input not copied: only one video "
                                  "stream is restored and written")
            for in_stream in audio_streams:
                name = in_stream.codec_context.name
                if self.dst.suffix.lower() == ".webm" and name not in _WEBM_AUDIO:
                    raise OutputError(
                        f"WebM cannot hold the input's {name} audio without re-encoding it; "
                        "write .mkv (holds any audio) or .mp4"
                    )
            # remuxed untouched, in time order with the video; added in the input's order
            copied: list[av.stream.Stream] = sorted([*audio_streams, *subtitles], key=lambda s: s.index)
            for copied_stream in copied:
                try:
                    kept = out.add_stream_from_template(copied_stream)
                except ValueError:  # PyAV's words for "this container does not take that codec"
                    holding = [suffix for suffix in containers_holding([copied_stream]) if suffix != self.dst.suffix]
                    write = f"write {' or '.join(holding)}, which holds it" if holding else \
                        "convert it first (ffmpeg -i IN -c:v copy -c:a aac OUT.mkv)"
                    raise OutputError(
                        f"a {self.dst.suffix} file cannot hold the input's {copied_stream.codec_context.name} "
                        f"{copied_stream.type} without re-encoding it; {write}") from None
                kept.metadata.update(self._track_tags(copied_stream.metadata))
                # which track a player picks (default), shows unasked (forced subtitles) or offers to whom
                kept.disposition = copied_stream.disposition & _TRACK_FLAGS
                self._copied[copied_stream.index] = kept
            try:  # (the stream the reader restores: the default one where several are)
                stream.disposition = pick_video_stream(self._copy_from, self.dst).disposition & _VIDEO_FLAGS
            except InputError:  # pragma: no cover - the reader found one in the same file
                pass
            self._copy_tags(stream, timecodes[0].metadata["timecode"] if timecodes else None)
            if copied:
                self._copied_packets = self._copy_from.demux(copied)
                self._copied_next = self._next_copied_packet()
                if self.start:
                    # a subtitle line on screen at the window's start began before it (it is kept, clipped)
                    back = SUBTITLE_LOOKBACK_S if any(s.type == "subtitle" for s in copied) else 0.0
                    self._seek_copied(copied, self.info.origin + max(0.0, self.start - back))
            else:
                self._copy_from.close()
                self._copy_from = None
        self._write_comment()
        self._open_encoder()  # the encoder first: what it refuses is not the container's doing
        try:
            # Open the encoder and write the header now, so a codec the container cannot
            # hold fails here rather than after the first frames were restored.
            with _ffmpeg_errors({out.format.name, *out.format.name.split(",")}) as said:
                out.start_encoding()
        except av.error.FFmpegError as exc:
            if getattr(exc, "errno", None) in SPACE_ERRNOS:
                raise write_failed(self.dst, exc) from None
            codecs = sorted({stream.codec_context.name for stream in self._copied.values()})
            what = f"{self._codec} video" + (f" and the input's {', '.join(codecs)} streams" if codecs else "")
            hint = "; try .mkv, which holds any codec" if self.dst.suffix.lower() != ".mkv" else ""
            if self._codec.rsplit("_", 1)[-1] in _HARDWARE_ENCODERS:  # (the container is not what failed)
                hint = f"; {self._codec} is a hardware encoder, which needs its device and driver on this machine"
            raise OutputError(f"cannot write {what} to a {self.dst.suffix} file ({_reason(exc, said)}){hint}") from None

    def _open_encoder(self) -> None:
        """Opens the video encoder; OutputError saying why where it refuses. One that refuses is asked again,
        on one thread, with FFmpeg's log taken (_ffmpeg_errors) for its words. Not on the first try: while the
        log is on, an encoder's own threads that log wait for the thread opening them (PyAV #751); a hardware
        encoder is not asked again."""
        context, info = self._video.codec_context, self.info
        said: list[str] = []
        hardware = self._codec.rsplit("_", 1)[-1] in _HARDWARE_ENCODERS
        try:
            context.open()
            return
        except av.error.FFmpegError as exc:
            refused = exc
        if not hardware:
            context.thread_count = 1
            try:
                with _ffmpeg_errors({self._codec, context.codec.name}) as said:
                    context.open()
                logger.debug("%s opened on one thread (with more: %s)", self._codec, refused)
                return
            except av.error.FFmpegError:
                pass
        if hardware:
            hint = f"{self._codec} is a hardware encoder, which needs its device and driver on this machine"
        else:
            hint = "choose another --codec or --pix-fmt"
        if self._frame_clock is not None:  # (what MPEG-1/2 refuse most often: a rate they have no code for)
            hint = f"{self._codec} holds only the frame rates of its standard (this video: " \
                   f"{float(info.frame_rate or 0):.6g} fps); {hint}"
        raise OutputError(f"the {self._codec} encoder would not open for {info.width}x{info.height} "
                          f"{self._video.pix_fmt} video ({_reason(refused, said)}); {hint}")

    def _track_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """A stream's tags to keep (:func:`_kept_tags`); its title (or a MOV track's name: a lav mic's "lav1",
        which no muxer writes under that key) also as its handler name in an MP4 or MOV, which names its tracks
        so ("日本語 Opus" from a Matroska file came out as "SoundHandler"). Its language only where the settings
        strip the input's tags (a player picks a track by it)."""
        if self.settings.strip_metadata:
            return {key: value for key, value in tags.items() if key.lower() == "language"}
        kept = _kept_tags(tags)
        title = next((value for key, value in kept.items() if key.lower() == "title"), None)
        name = next((value for key, value in kept.items() if key.lower() == "name"), None)
        if name and not title:  # (a MOV track's name, "lav1": written as a title, which MOV reads back as its name)
            kept = {key: value for key, value in kept.items() if key.lower() != "name"}
            kept["title"] = title = name
        if title and self.dst.suffix.lower() in _TRACK_NAMED_BY_HANDLER and \
                not any(key.lower() == "handler_name" for key in kept):
            kept["handler_name"] = title
        return kept

    def _write_comment(self) -> None:
        """:attr:`comment` as the file's comment, ahead of the input's (kept as copied: :meth:`_copy_tags`)."""
        if self.comment is None:
            return
        from streamrestore.provenance import comment_with

        tags = self._muxer.metadata
        # (Matroska's is COMMENT; an iPhone's MOV also has it as a QuickTime key)
        keys = [key for key in tags if key.lower() in ("comment", _APPLE_KEYS["comment"])]
        original = next((tags[key] for key in keys if key.lower() == "comment"), None) or \
            next((tags[key] for key in keys), None)
        for key in keys:
            del tags[key]
        tags["comment"] = comment_with(self.comment, original)
        if self._metadata_keys:  # (written as QuickTime keys only: under Apple's name too)
            tags[_APPLE_KEYS["comment"]] = tags["comment"]

    def _copy_tags(self, video: av.video.stream.VideoStream, timecode: str | None = None) -> None:
        """The input's tags (title, recording date, a phone's location, each stream's language) and
        chapters, onto the output: photo and video libraries sort a restored home video by the date
        it was recorded, not the day it was restored. Chapters outside a window are dropped, the
        others moved with it. A camera's timecode (the video's tag, else ``timecode``, its timecode
        track's) goes on the video, which MP4/MOV write as a timecode track again; a window's starts
        at its first frame. With ``strip_metadata`` only the video's language (:meth:`_track_tags`)."""
        source, out = cast(av.container.InputContainer, self._copy_from), self._muxer
        if self.settings.strip_metadata:
            with contextlib.suppress(InputError):  # (the reader found one in the same file)
                video.metadata.update(self._track_tags(pick_video_stream(source, self.dst).metadata))
            return
        out.metadata.update(_kept_tags(source.metadata))
        if self._metadata_keys:  # written as QuickTime keys only: the standard ones under Apple's names too
            for name, key in _APPLE_KEYS.items():
                if name in out.metadata and key not in out.metadata:
                    out.metadata[key] = out.metadata[name]
        try:
            video.metadata.update(self._track_tags(pick_video_stream(source, self.dst).metadata))
        except InputError:  # pragma: no cover - the reader found one in the same file
            pass
        # (Matroska stores tags upper case; FFmpeg puts a Matroska file's timecode on the file, an
        # MP4's or MOV's on the video and its timecode track)
        video_key = next((k for k in video.metadata if k.lower() == "timecode"), None)
        file_keys = [k for k in out.metadata if k.lower() == "timecode"]
        timecode = (video.metadata[video_key] if video_key else None) or timecode or (
            out.metadata[file_keys[0]] if file_keys else None)
        if timecode:
            # the timecode is the first frame's: a window's first frame is this much later
            video_first = self.info.start_time - self.info.origin if self.info.start_time is not None else 0.0
            later = max(0.0, (self.start or 0.0) - video_first)
            if later and self.info.frame_rate:  # (the window's first frame is the first at or after its start)
                fps = float(self.info.frame_rate)
                later = math.ceil(later * fps - 1e-6) / fps
            shifted = _timecode_after(timecode, later, self.info.frame_rate)
            if shifted is None:
                if video_key:
                    video.metadata.pop(video_key, None)
                for key in file_keys:
                    out.metadata.pop(key, None)
                rate, fields = self.info.frame_rate, timecode.replace(";", ":").split(":")
                if len(fields) != 4 or not all(field.isdigit() for field in fields):
                    why = "a malformed timecode"
                elif not rate:
                    why = "a timecode without a known frame rate"
                elif ";" in timecode:
                    why = f"a drop-frame timecode at {float(rate):g} frames a second (counted at 29.97 and 59.94)"
                else:
                    why = f"a timecode at {float(rate):g} frames a second"
                self.notes.append(f"the input's timecode ({timecode}) is not kept: a window of {why} is not counted "
                                  "here")
            else:
                if video_key or not file_keys:  # (a timecode track's goes on the video, which writes it again)
                    video.metadata[video_key or "timecode"] = shifted
                for key in file_keys:
                    out.metadata[key] = shifted
        start = self.info.origin + (self.start or 0.0)
        end = self.info.origin + self.end if self.end is not None else None
        chapters = []
        for chapter in source.chapters():
            tb = chapter["time_base"] or Fraction(1, 1000)
            first, last = chapter["start"] * tb, chapter["end"] * tb
            if last <= start or (end is not None and first >= end):
                continue
            shift = round(Fraction(start) / tb) if self.start else 0  # a window's output starts at 0
            moved = chapter.copy()
            moved["start"], moved["end"] = max(chapter["start"] - shift, 0), chapter["end"] - shift
            chapters.append(moved)
        if chapters:
            out.set_chapters(chapters)

    @property
    def _muxer(self) -> av.container.OutputContainer:
        """The output container: set by ``_open``, None only once closed or aborted, after
        which nothing is muxed."""
        return cast(av.container.OutputContainer, self._output)

    # -- audio ----------------------------------------------------------------------------

    def _clip_subtitle(self, packet: av.Packet) -> bool:
        """A text subtitle line (``packet``, shown from its pts for its duration) that overlaps the window
        (``start``/``end``) clipped to it: one on screen at the window's start begins there, one running past
        its end ends there (they were dropped, and left to run 0.4 s past a 1 s output). Returns whether
        the line is written; one that lies outside the window, or has no duration, is left to the rules of
        every packet (its start inside the window)."""
        if not packet.duration or packet.pts is None:
            return True
        tb = packet.time_base
        start_t = packet.pts * tb
        ends = start_t + packet.duration * tb
        window_start = self._offset_s if self.start is not None else None
        window_end = self.info.origin + self.end if self.end is not None else None
        if window_start is not None and start_t < window_start:
            if ends <= window_start:
                return False
            begin = math.ceil(window_start / tb)
            packet.duration -= begin - packet.pts
            if packet.dts is not None:
                packet.dts += begin - packet.pts
            packet.pts = begin
        if window_end is not None and ends > window_end > packet.pts * tb:
            packet.duration = max(1, math.floor(window_end / tb) - packet.pts)
        return True

    def _next_copied_packet(self):
        return self._next_packet_of(self._copied_packets)  # (size 0: demux's end-of-stream marker)

    def _seek_copied(self, streams, when: float) -> None:
        """Skips demuxing the copied streams before the window at ``when`` (packets before it are
        dropped by time anyway), never past its first packets (:func:`seek_not_after`); a file
        that cannot seek is demuxed as it was opened, from the start."""
        source = self._copy_from
        if source is None:
            return

        def seek(at: float | None) -> None:
            source.seek(0 if at is None else int(at * av.time_base), backward=True)

        def first_time() -> Fraction | None:
            self._copied_packets = source.demux(streams)
            self._copied_next = self._next_copied_packet()
            return None if self._copied_next is None else self._packet_time(self._copied_next)

        seek_not_after(when, self.info.origin, seek, first_time)

    @staticmethod
    def _next_packet_of(packets):
        for packet in packets:
            if packet.size:
                return packet
        return None

    @staticmethod
    def _packet_time(packet) -> Fraction | None:
        ts = packet.dts if packet.dts is not None else packet.pts
        return None if ts is None else ts * packet.time_base

    def _mux_copied_until(self, until: Fraction | None) -> None:
        """Mux the copied streams' packets up to source time ``until`` (None: all that are left)."""
        while self._copied_next is not None:
            packet = self._copied_next
            t = self._packet_time(packet)
            if until is not None and t is not None and t > until:
                return
            self._copied_next = self._next_copied_packet()
            if t is not None:
                if packet.stream.type == "subtitle" and packet.stream.codec_context.name in _TEXT_SUBTITLES \
                        and not self._clip_subtitle(packet):
                    continue
                start_t = packet.pts * packet.time_base if packet.pts is not None else t
                if self.start is not None and start_t < self._offset_s:
                    continue
                if self.end is not None and start_t >= self.info.origin + self.end:
                    continue
                if self._offset_s:
                    shift = round(self._offset_s / packet.time_base)
                    if packet.pts is not None:
                        packet.pts -= shift
                    if packet.dts is not None:
                        packet.dts -= shift
            packet.stream = self._copied[packet.stream_index]
            self._muxer.mux(packet)

    # -- video ----------------------------------------------------------------------------

    def write(self, frame: av.VideoFrame) -> None:
        """Queue one frame (presentation order, ``pts`` and ``time_base`` set).

        Raises:
            ValueError: a frame without pts, of another size or time base, or not after the
                one before.
            OutputError: encoding failed (e.g. the disk is full); nothing is left behind.
            RuntimeError: after :meth:`close` or :meth:`abort`.
        """
        if self._closed:
            raise RuntimeError("write() after close() or abort()")
        if frame.pts is None:
            raise ValueError("frame has no pts; copy pts and time_base from the decoded frame")
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise ValueError(
                f"frame is {frame.width}x{frame.height}, the writer encodes "
                f"{self.info.width}x{self.info.height}"
            )
        tb = frame.time_base or self.info.time_base
        if tb != self.info.time_base:
            raise ValueError(
                f"frame time_base {tb} differs from the stream's {self.info.time_base}"
            )
        if self._offset is None:
            self._offset = frame.pts if self.start is not None else 0
            self._offset_s = self._offset * self.info.time_base
        pending = self._pending
        if pending is not None:
            interval = frame.pts - _pts(pending)
            if interval <= 0:
                raise ValueError(
                    f"frame pts {frame.pts} is not after the previous {pending.pts}; "
                    "write frames in presentation order"
                )
            self._last_interval = interval
            try:
                self._encode(pending, None if pending.duration else interval)
            except (OSError, av.error.FFmpegError) as exc:  # disk full, file-size limit, ...
                self.abort()
                raise write_failed(self.dst, exc) from None
        self._pending = frame

    def _encode(self, frame: av.VideoFrame, duration: int | None) -> None:
        pix_fmt = cast(str, self._video.pix_fmt)  # set in _open
        converted = to_encoder_format(frame, pix_fmt, self._matrix, self._range)
        owned = converted is not frame
        original = (frame.pts, frame.duration, frame.time_base)
        converted.pts = _pts(frame) - cast(int, self._offset)  # write() sets the offset first
        converted.time_base = self.info.time_base
        converted.duration = duration if duration is not None else frame.duration
        # Encoders guess packet durations from the frame rate (wrong for VFR and for the
        # last frame, which sets the file's duration); give each packet its frame's.
        self._durations[converted.pts] = converted.duration
        lo, hi = self._given or (converted.pts, converted.pts)
        self._given = (min(lo, converted.pts), max(hi, converted.pts))
        if self._frame_clock is not None:
            self._to_frame_clock(converted)
        try:
            packets = self._video.encode(converted)
        finally:
            if not owned:  # the caller's frame: leave it as it came (an encoder counting frames renumbers it)
                frame.pts, frame.duration, frame.time_base = original
        self._mux_video(packets)
        self.frames_written += 1

    def _to_frame_clock(self, frame: av.VideoFrame) -> None:
        """Number ``frame`` (output pts, the source's time base) in frames, for an encoder that counts so."""
        clock = cast(Fraction, self._frame_clock)
        pts = _pts(frame)
        # a frame that falls on its predecessor's number (a variable rate, a live capture's jittered clock) takes
        # the next: the encoder needs them rising, and the file keeps every frame's own pts (_from_frame_clock)
        number = round(pts * self.info.time_base / clock)
        if self._last_number is not None:
            number = max(number, self._last_number + 1)
        self._last_number = number
        self._clock_pts[number] = pts
        frame.duration = max(1, round(frame.duration * self.info.time_base / clock)) if frame.duration else 0
        frame.pts = number
        frame.time_base = clock

    def _from_frame_clock(self, packet: av.Packet) -> None:
        """Put a packet of an encoder that counts in frames back on the output's pts."""
        clock = cast(Fraction, self._frame_clock)
        ticks = clock / self.info.time_base
        if packet.pts is not None:
            packet.pts = self._clock_pts.pop(packet.pts, round(packet.pts * ticks))
        if packet.dts is not None:
            packet.dts = round(packet.dts * ticks)
        packet.duration = round((packet.duration or 0) * ticks)
        packet.time_base = self.info.time_base

    def _mux_video(self, packets) -> None:
        for packet in packets:
            if self._frame_clock is not None:
                self._from_frame_clock(packet)
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            earliest = None
            if self._given is not None:
                first, last = self._given
                earliest = first - (last - first) - (packet.duration or 0)
            dts = repaired_dts(packet.pts, packet.dts, self._last_dts, earliest)
            if dts != packet.dts:
                logger.debug("%s gave pts %s a dts of %s; written with dts %s", self._codec, packet.pts,
                             packet.dts, dts)
                packet.dts = dts
            if packet.dts is not None:
                self._last_dts = packet.dts
            self._muxer.mux(packet)
            t = self._packet_time(packet)
            if t is not None:
                # Audio follows the video already in the file (source time = t + offset).
                self._mux_copied_until(t + self._offset_s)

    # -- finishing ------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, finish the file, rename it to dst.

        Raises:
            OutputError: no frame was written, or finishing the file failed; nothing is left
                behind.
        """
        if self._closed:
            return
        try:
            if self._pending is None and self.frames_written == 0:
                raise OutputError(f"no frames were given to write, so {self.dst} was not created")
            if self._pending is not None:
                frame = self._pending
                self._pending = None
                duration = None
                if not frame.duration:
                    if self._last_interval is not None:
                        duration = self._last_interval
                    elif self.info.frame_rate:
                        duration = frame_ticks(self.info.frame_rate, self.info.time_base)
                self._encode(frame, duration)
            self._mux_video(self._video.encode(None))
            self._mux_copied_until(None)
            self._muxer.close()
            self._output = None
            if self._copy_from is not None:
                self._copy_from.close()
                self._copy_from = None
            move_into_place(cast(Path, self._temp), self._target, self._replace)  # (_temp: set until moved or removed)
            self._temp = None
            release_temp(self._held)
            self._held = None
            for left in remove_stale_temps(self._target, every_output=True):
                logger.info("removed %s, the unfinished output of an earlier run that was killed", left.name)
        except (OSError, av.error.FFmpegError) as exc:  # disk full, file-size limit, folder removed, ...
            self.abort()
            raise write_failed(self.dst, exc) from None
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Stop without output: close everything, delete the temp file, leave dst untouched."""
        self._closed = True
        self._pending = None
        for container in (self._output, self._copy_from):
            if container is not None:
                try:
                    container.close()
                except Exception:  # already failing; the temp file is removed below
                    pass
        self._output = None
        self._copy_from = None
        if self._temp is not None:
            try:
                self._temp.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove temporary file %s: %s", self._temp, exc)
            self._temp = None
        release_temp(self._held)
        self._held = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close/abort (e.g. a crashed thread) must not leave a temp.
        if getattr(self, "_temp", None) is not None:
            self.abort()
