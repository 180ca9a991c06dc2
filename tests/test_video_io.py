"""Video I/O: every frame, timestamp and audio packet survives decode -> encode."""
from __future__ import annotations

import gc
import os
import queue
import stat
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_utils import (
    decode_rgb,
    make_audio_only,
    make_clip,
    make_raw_stream,
    make_zero_pts_clip,
    pattern,
    read_audio_packets,
    read_video_timing,
)

from streamrestore.errors import InputError, OutputError
from streamrestore.video import (
    EncoderSettings,
    VideoReader,
    VideoWriter,
    default_output_path,
    frame_to_rgb,
    probe,
    resolve_codec,
)
from streamrestore.video.writer import check_not_input, repaired_dts

FAST = EncoderSettings(preset="ultrafast")

REAL_CLIPS = [
    "face_recognition/short_hamilton_clip.mp4",  # 640x360, starts at 0.85 s, aac
    "liveportrait/driving/d19.mp4",  # 480x480 30 fps, aac
    "facenet_pytorch/video.mp4",  # 1920x1080, 105 frames, aac
]


def passthrough(src: Path, dst: Path, settings=FAST, **window) -> VideoReader:
    with VideoReader(src, **window) as reader, VideoWriter(
        dst, reader.info, settings, audio_from=src, **window
    ) as writer:
        for frame in reader.frames():
            writer.write(frame)
    return reader


def notes_of_passthrough(src: Path, dst: Path, settings=FAST) -> list[str]:
    """What the writer's notes say of ``src`` written to ``dst`` (what the output does not keep, how it plays)."""
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, settings, audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    return writer.notes


def container_duration(path: Path) -> float:
    with av.open(str(path)) as c:
        return c.duration / av.time_base


# -- real clips (and drawn-face stand-ins) --------------------------------------------------


def _clip(request, name: str) -> Path:
    """``"synthetic"``: the drawn-face clip (16 frames, 25 fps, AAC); else a shared clip."""
    if name == "synthetic":
        return request.getfixturevalue("face_clip").path
    return request.getfixturevalue("shared_data") / name


@pytest.fixture(params=["synthetic", "real"])
def clip30(request, tmp_path_factory):
    """A clip of at least 2 s at 30 fps with AAC audio: drawn (75 frames, 320x240) or d19.mp4."""
    if request.param == "real":
        return request.getfixturevalue("shared_data") / "liveportrait/driving/d19.mp4"
    path = tmp_path_factory.mktemp("clip30") / "drawn30.mp4"
    _soft_face_clip(path, frames=75, fps=30, audio="aac")
    return path


def _soft_face_clip(path: Path, frames: int, **options) -> None:
    """A drawn-face clip (320x240) softened like camera footage (Gaussian blur, sigma 1): its
    hard-edged, saturated drawing would otherwise cost a codec, and chroma subsampling, far more
    than real faces do."""
    import cv2
    from synthetic_faces import face_frames

    pictures, _ = face_frames(frames, 320, 240)
    make_clip(path, width=320, height=240, frames=frames,
              picture=lambda i: cv2.GaussianBlur(pictures[i], (0, 0), 1.0), **options)


@pytest.mark.parametrize("clip", ["synthetic", *REAL_CLIPS])
def test_passthrough_keeps_frames_timestamps_audio_and_duration(request, tmp_path, clip):
    src = _clip(request, clip)
    dst = tmp_path / "out.mp4"
    reader = passthrough(src, dst)
    assert reader.problems == []

    src_times, src_durations = read_video_timing(src)
    out_times, out_durations = read_video_timing(dst)
    assert reader.frames_decoded == len(src_times)
    assert out_times == src_times  # exact rational times, every frame
    assert out_durations == src_durations

    src_audio, out_audio = read_audio_packets(src), read_audio_packets(dst)
    assert len(src_audio) == len(out_audio) >= 1
    for k in src_audio:
        assert len(out_audio[k]) == len(src_audio[k])
        assert out_audio[k] == src_audio[k]  # same bytes, same pts and dts

    # Tolerance: one millisecond (the container duration is in microseconds).
    assert container_duration(dst) == pytest.approx(container_duration(src), abs=1e-3)
    src_info, out_info = probe(src), probe(dst)
    assert (out_info.width, out_info.height) == (src_info.width, src_info.height)
    assert out_info.frame_count == src_info.frame_count
    for tag in ("color_range", "color_space", "color_primaries", "color_trc", "rotation"):
        assert getattr(out_info, tag) == getattr(src_info, tag), tag
    assert not list(tmp_path.glob(".*"))  # no temp file left beside the output


def test_a_bogus_average_rate_is_passed_over(tmp_path):
    """A Matroska file remuxed with PyAV's add_stream_from_template says its frames last one tick of the
    codec's time base: an average rate of 2500 fps for a 25 fps clip (FFmpeg's own probe says so too).
    Such a rate is passed over for the next one FFmpeg gives; the output is written at 25 fps."""
    src, remuxed = tmp_path / "in.mp4", tmp_path / "remuxed.mkv"
    make_clip(src, frames=25)
    with av.open(str(src)) as c, av.open(str(remuxed), "w") as out:
        copy = out.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(video=0):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
    with av.open(str(remuxed)) as c:
        assert c.streams.video[0].average_rate == 2500  # (the file's doing; else this test tests nothing)
    info = probe(remuxed)
    assert info.frame_rate == 25
    assert info.frame_count == 25
    dst = tmp_path / "out.mkv"
    passthrough(remuxed, dst)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].average_rate == 25
    # a high-speed camera's file, 1000 fps by every reading, keeps its rate
    fast = tmp_path / "fast.mkv"
    make_clip(fast, frames=20, fps=1000, time_base=Fraction(1, 1000))
    assert probe(fast).frame_rate == 1000 and probe(fast).frame_count == 20


def test_probe_describes_hamilton_clip(shared_data):
    info = probe(shared_data / "face_recognition/short_hamilton_clip.mp4")
    assert (info.width, info.height) == (640, 360)
    assert info.frame_rate == Fraction(2997, 100)
    assert info.frame_count == 275
    assert info.audio_streams == 1
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.rotation == 0
    assert 9.0 < info.duration < 10.1


def test_rgb_frames_from_pipeline_keep_timing_and_picture(clip30, tmp_path):
    """New frames built from numpy (pts/time_base copied, no duration) encode like the source."""
    src = clip30
    dst = tmp_path / "out.mp4"  # (Matroska would round times to milliseconds)
    originals = []
    with VideoReader(src, end=1.0) as reader, VideoWriter(
        dst, reader.info, EncoderSettings(preset="ultrafast"), audio_from=src, end=1.0
    ) as writer:
        for frame in reader.frames():
            rgb = frame_to_rgb(frame)
            originals.append(rgb)
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            writer.write(new)
    times, durations = read_video_timing(dst)
    assert len(times) == len(originals) == 30  # 1 s at 30 fps
    assert times == [Fraction(i, 30) for i in range(30)]
    assert all(d == Fraction(1, 30) for d in durations)  # inferred from the next frame
    out = decode_rgb(dst, 10).astype(np.float64)
    mse = np.mean((out - originals[10]) ** 2)
    assert 10 * np.log10(255**2 / mse) > 38  # the default crf: visually lossless


@pytest.mark.parametrize("clip", ["synthetic", "real"])
def test_unchanged_rgb_frames_come_back_with_the_same_colours(request, tmp_path, clip):
    """frame_to_rgb + the writer's RGB -> YUV are inverse: no brightness or colour drift."""
    if clip == "synthetic":  # a drawn face tagged BT.709, limited range
        src = tmp_path / "bt709.mp4"
        _soft_face_clip(src, frames=30, color={"color_range": 1, "colorspace": 1, "color_primaries": 1,
                                              "color_trc": 1})
    else:
        src = request.getfixturevalue("shared_data") / "face_recognition/short_hamilton_clip.mp4"  # BT.709, limited
    dst = tmp_path / "lossless.mp4"
    sources = []
    with VideoReader(src, end=1.5) as reader, VideoWriter(
        dst, reader.info, EncoderSettings(crf=0, preset="ultrafast")  # x264 crf 0: lossless
    ) as writer:
        for frame in reader.frames():
            sources.append(frame.to_ndarray())  # yuv420p planes as decoded
            new = av.VideoFrame.from_ndarray(frame_to_rgb(frame), format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            writer.write(new)
    with av.open(str(dst)) as c:
        outputs = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(outputs) == len(sources) > 10
    h = reader.info.height
    diff = np.stack(outputs).astype(np.float64) - np.stack(sources)
    luma, chroma = diff[:, :h], diff[:, h:]
    assert abs(luma.mean()) < 0.1 and np.abs(luma).mean() < 0.2
    assert abs(chroma.mean()) < 0.1 and np.abs(chroma).mean() < 0.3


@pytest.mark.parametrize("clip", ["synthetic", "real"])
def test_start_end_window_shifts_video_and_audio_together(request, tmp_path, clip):
    if clip == "synthetic":  # 5 s of a drawn face whose first frame is at 10 ms, audio from 0
        from media_utils import make_face_clip

        src = tmp_path / "late.mp4"
        make_face_clip(src, frames=125, fps=25, audio="aac", audio_seconds=5.2,
                       pts=[10 + 40 * i for i in range(125)], time_base=Fraction(1, 1000))
    else:
        src = request.getfixturevalue("shared_data") / "face_recognition/short_hamilton_clip.mp4"
    dst = tmp_path / "window.mp4"
    reader = passthrough(src, dst, start=2.0, end=4.0)
    origin = Fraction(reader.info.origin)  # the file's own start (hamilton: 8 ms): the window's zero
    start, end = origin + 2, origin + 4

    src_times, _ = read_video_timing(src)
    in_window = [t for t in src_times if start <= t < end]
    out_times, _ = read_video_timing(dst)
    assert reader.frames_decoded == len(out_times) == len(in_window)
    offset = in_window[0]
    assert out_times == [t - offset for t in in_window]  # output starts at 0

    src_audio = read_audio_packets(src)[0]
    out_audio = read_audio_packets(dst)[0]
    kept = [p for p in src_audio if offset <= p[0] < end]
    assert [p[2] for p in out_audio] == [p[2] for p in kept]  # untouched packets
    # Same shift as the video. Tolerance 1 ms: MP4 stores the audio's leading gap as an
    # edit list in the movie timescale (1/1000 s); sync is off by < 1 ms, far below the
    # ~20 ms anyone can notice.
    assert all(abs(o[0] - (p[0] - offset)) < Fraction(1, 1000) for o, p in zip(out_audio, kept))
    audio_packet = src_audio[1][0] - src_audio[0][0]
    assert 0 <= out_audio[0][0] < audio_packet


# -- synthetic clips: VFR, odd sizes, rotation, colour, formats ----------------------------


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate_stays_variable(tmp_path, ext):
    tb = Fraction(1, 1000)
    gaps = [40, 40, 33, 100, 17, 40, 250, 40, 66, 20, 40]
    pts = [0]
    for gap in gaps:
        pts.append(pts[-1] + gap)
    src = tmp_path / f"vfr.{ext}"
    make_clip(src, pts=pts, time_base=tb, audio="aac")
    dst = tmp_path / f"out.{ext}"
    passthrough(src, dst)
    src_times, src_durations = read_video_timing(src)
    out_times, out_durations = read_video_timing(dst)
    assert src_times == [p * tb for p in pts]
    assert out_times == src_times
    assert out_durations == src_durations
    if ext == "mp4":  # Matroska stores no per-frame durations (it reports the default one)
        assert out_durations[:-1] == [g * tb for g in gaps]
    assert read_audio_packets(dst) == read_audio_packets(src)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_the_streams_own_timing_says_the_frame_rate(tmp_path, codec):
    """H.264/HEVC carry a frame rate of their own (VUI), which players of raw and TS streams and
    tools read: it says the clip's 25 fps, not the time base's ticks (x264 wrote 2500 here)."""
    src, dst = tmp_path / "clip.mp4", tmp_path / "out.mkv"
    make_clip(src, frames=6, fps=25)  # time base 1/2500
    passthrough(src, dst, EncoderSettings(codec=codec, preset="ultrafast"))
    with av.open(str(dst)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        assert stream.codec_context.framerate == 25 and len(frames) == 6
    assert read_video_timing(dst)[0] == read_video_timing(src)[0]


@pytest.mark.parametrize("codec", ["libx264", "libvpx-vp9"])
def test_odd_size_is_kept_exactly_without_shift(tmp_path, codec):
    w, h = 641, 361
    src = tmp_path / "odd.mkv"
    make_clip(src, width=w, height=h, frames=3, codec="ffv1", pix_fmt="yuv444p")
    dst = tmp_path / "out.mkv"
    # Low crf: this test is about geometry, so keep compression noise well below a 1 px shift.
    fast = "ultrafast" if codec == "libx264" else "8"
    passthrough(src, dst, settings=EncoderSettings(codec=codec, crf=8, preset=fast))
    info = probe(dst)
    assert (info.width, info.height) == (w, h)
    ref = decode_rgb(src, 1).astype(np.float64)
    out = decode_rgb(dst, 1).astype(np.float64)
    assert out.shape == ref.shape

    def mae(dx: int, dy: int) -> float:
        a = out[2 + dy : h - 2 + dy, 2 + dx : w - 2 + dx]
        b = ref[2 : h - 2, 2 : w - 2]
        return float(np.abs(a - b).mean())

    aligned = mae(0, 0)
    assert aligned < 4.0
    for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        assert mae(dx, dy) > aligned * 2


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_is_kept(tmp_path, rotation):
    src = tmp_path / "rot.mp4"
    make_clip(src, rotation=rotation, frames=4)
    assert probe(src).rotation == rotation
    dst = tmp_path / "out.mp4"
    passthrough(src, dst)
    assert probe(dst).rotation == rotation


@pytest.mark.parametrize(
    "ext,color",
    [
        ("mkv", {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1}),
        ("mp4", {"color_range": 2, "colorspace": 6, "color_primaries": 6, "color_trc": 6}),
    ],
)
def test_colour_tags_are_kept(tmp_path, ext, color):
    src = tmp_path / f"tagged.{ext}"
    make_clip(src, color=color, frames=4)
    src_info = probe(src)
    assert src_info.color_space == color["colorspace"]
    dst = tmp_path / f"out.{ext}"
    passthrough(src, dst)
    out_info = probe(dst)
    assert out_info.color_range == color["color_range"]
    assert out_info.color_space == color["colorspace"]
    assert out_info.color_primaries == color["color_primaries"]
    assert out_info.color_trc == color["color_trc"]


@pytest.mark.parametrize(
    "ext,codec,pix_fmt,audio",
    [
        ("mkv", "libx265", "yuv420p", "aac"),
        ("webm", "libvpx-vp9", "yuv420p", "libopus"),
        ("mkv", "libsvtav1", "yuv420p", None),
        ("mov", "mpeg4", "yuv420p", "aac"),
        ("mp4", "libx264", "yuv420p10le", None),
    ],
)
def test_decodes_formats_and_writes_same_container(tmp_path, ext, codec, pix_fmt, audio):
    if not any(f.name == pix_fmt for f in av.Codec(codec, "w").video_formats):
        pytest.skip(f"{codec} in this FFmpeg cannot write {pix_fmt}")
    src = tmp_path / f"src.{ext}"
    options = {"preset": "ultrafast"} if codec in ("libx264", "libx265") else {}
    if codec == "libsvtav1":
        options = {"preset": "12"}
    pts = make_clip(src, frames=8, codec=codec, pix_fmt=pix_fmt, options=options, audio=audio,
                    width=64, height=64)
    info = probe(src)
    assert info.pix_fmt == pix_fmt
    dst = tmp_path / f"out.{ext}"
    # .webm needs a WebM codec: the default (codec=None) picks VP9 there.
    passthrough(src, dst, settings=EncoderSettings(preset=None if ext == "webm" else "ultrafast"))
    out_times, _ = read_video_timing(dst)
    assert out_times == read_video_timing(src)[0]
    assert len(out_times) == len(pts)
    assert read_audio_packets(dst) == read_audio_packets(src)
    if pix_fmt.endswith("10le"):
        assert probe(dst).pix_fmt == pix_fmt  # depth kept


def test_x265_prints_no_banner(tmp_path, capfd):
    """libx265 writes [info] lines to stderr by itself; the writer turns its log down to errors."""
    src = tmp_path / "src.mkv"
    make_clip(src, frames=4, width=64, height=64)
    capfd.readouterr()
    passthrough(src, tmp_path / "out.mkv", settings=EncoderSettings(codec="libx265", preset="ultrafast"))
    err = capfd.readouterr().err
    assert "x265 [" not in err, err
    assert len(read_video_timing(tmp_path / "out.mkv")[0]) == 4


@pytest.mark.parametrize("ext, tag", [("mp4", "hvc1"), ("mov", "hvc1"), ("mkv", None)])
def test_hevc_for_apple_players_is_tagged_hvc1(tmp_path, ext, tag):
    """FFmpeg tags HEVC 'hev1', which QuickTime, iOS and Safari refuse; iPhones write 'hvc1'."""
    src = tmp_path / "src.mp4"
    make_clip(src, frames=4, width=64, height=64)
    dst = tmp_path / f"out.{ext}"
    passthrough(src, dst, settings=EncoderSettings(codec="hevc", preset="ultrafast"))
    with av.open(str(dst)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "hevc" and len([f for f in c.decode(stream)]) == 4
        if tag is not None:
            assert stream.codec_context.codec_tag == tag


def test_a_container_that_does_not_take_the_codec_is_one_error(tmp_path):
    """.m4v (FFmpeg's 'ipod' muxer) takes no HEVC: an OutputError saying so, not PyAV's ValueError."""
    src = tmp_path / "src.mp4"
    make_clip(src, frames=2, width=64, height=64)
    with pytest.raises(OutputError, match=r"a \.m4v file cannot hold libx265 video; write \.mkv"):
        VideoWriter(tmp_path / "out.m4v", probe(src), EncoderSettings(codec="hevc", preset="ultrafast"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]  # nothing left behind


@pytest.mark.skipif("h264_nvenc" not in av.codecs_available, reason="this FFmpeg has no NVENC encoder")
def test_a_hardware_encoder_that_cannot_open_says_so_not_to_try_mkv(tmp_path):
    """--codec h264_nvenc without its GPU said "try .mkv, which holds any codec", and .mkv failed the same."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: NVENC may open")
    src = tmp_path / "src.mp4"
    make_clip(src, frames=2, width=64, height=64)
    for suffix in (".mp4", ".mkv"):
        with pytest.raises(OutputError, match="h264_nvenc is a hardware encoder, which needs its device and driver") \
                as error:
            VideoWriter(tmp_path / f"out{suffix}", probe(src), EncoderSettings(codec="h264_nvenc"))
        assert ".mkv" not in str(error.value).split(";")[-1]


def test_ten_bit_video_is_written_as_hevc_main_10_where_it_plays(tmp_path, caplog):
    """A phone's 10-bit video (HDR, HEVC) is written as HEVC Main 10 by default, tagged for Apple's
    players, with its depth and colour tags: H.264's 10-bit profile, the former default, plays in
    editors only, not on the phone it came from. Asked for, H.264 is written, and said."""
    from streamrestore.video.writer import encoder_format

    hdr = {"color_primaries": 9, "color_trc": 18, "colorspace": 9}  # BT.2020, HLG (an iPhone's HDR)
    src = tmp_path / "iphone.mov"
    make_clip(src, frames=4, width=64, height=64, codec="libx265", pix_fmt="yuv420p10le", color=hdr,
              options={"preset": "ultrafast", "x265-params": "log-level=error"})
    assert encoder_format(tmp_path / "chunk.mov", probe(src))[0] == "yuv420p10le"
    assert not any("do not play it" in note for note in notes_of_passthrough(src, tmp_path / "out.mov"))
    with av.open(str(tmp_path / "out.mov")) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.codec_tag) == ("hevc", "hvc1")
    out = probe(tmp_path / "out.mov")
    assert out.pix_fmt == "yuv420p10le" and (out.color_primaries, out.color_trc) == (9, 18)
    notes = notes_of_passthrough(src, tmp_path / "h264.mov", EncoderSettings(codec="h264", preset="ultrafast"))
    assert any("most browsers, phones and QuickTime do not play it" in note for note in notes)
    with av.open(str(tmp_path / "h264.mov")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    eight = tmp_path / "eight.mov"
    make_clip(eight, frames=2, width=64, height=64)
    passthrough(eight, tmp_path / "eight_out.mov", settings=FAST)
    with av.open(str(tmp_path / "eight_out.mov")) as c:
        assert c.streams.video[0].codec_context.name == "h264"  # 8-bit stays H.264


def test_hdr10_static_metadata_is_kept(tmp_path):
    """An HDR10 video's mastering display and content light levels (what a TV tone-maps by) are read
    from its first frame and written again: x265 takes them as options only, and restored frames
    carrying them as side data would not be enough."""
    display = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"  # P3 D65, 1000 nits
    src = tmp_path / "hdr10.mkv"
    make_clip(src, frames=3, width=64, height=64, codec="libx265", pix_fmt="yuv420p10le",
              color={"color_primaries": 9, "color_trc": 16, "colorspace": 9},  # BT.2020, PQ
              options={"preset": "ultrafast",
                       "x265-params": f"log-level=error:hdr10=1:master-display={display}:max-cll=1000,400"})
    info = probe(src)
    assert (info.mastering_display, info.content_light) == (display, (1000, 400))
    passthrough(src, tmp_path / "out.mp4", settings=FAST)
    out = probe(tmp_path / "out.mp4")
    assert (out.mastering_display, out.content_light) == (display, (1000, 400))
    assert (out.color_primaries, out.color_trc, out.pix_fmt) == (9, 16, "yuv420p10le")
    plain = tmp_path / "sdr.mp4"
    make_clip(plain, frames=2, width=64, height=64)
    assert (probe(plain).mastering_display, probe(plain).content_light) == (None, None)
    # another encoder asked for (--pix-fmt yuv420p picks H.264) writes none of it: said, not dropped silently
    playable = EncoderSettings(preset="ultrafast", pix_fmt="yuv420p")
    notes = notes_of_passthrough(src, tmp_path / "web.mp4", playable)
    assert any("the input's HDR10 metadata (mastering display, light levels) is written by libx265 only: the libx264 "
               "output keeps the colour tags without it" in note for note in notes), notes
    assert not any("HDR10" in note for note in notes_of_passthrough(src, tmp_path / "again.mp4"))


def _timecoded_clip(path, timecode, fps=25):
    """A QuickTime clip of 10 frames whose video carries ``timecode`` (the muxer adds a tmcd track)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.metadata["timecode"] = timecode
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _timecode_of(path):
    with av.open(str(path)) as c:
        tracks = [s for s in c.streams if s.type == "data" and s.metadata.get("timecode")]
        video = {key.lower(): value for key, value in c.streams.video[0].metadata.items()}  # (Matroska: TIMECODE)
        return video.get("timecode"), [s.metadata["timecode"] for s in tracks]


def test_a_cameras_timecode_is_kept_and_moved_with_a_window(tmp_path):
    """A camera's timecode track (tmcd) is written again (it was said 'not copied' though kept); a
    window's output starts at its first frame's timecode, drop-frame ones too."""
    src = tmp_path / "camera.mov"
    _timecoded_clip(src, "01:02:03:04")
    assert _timecode_of(src) == ("01:02:03:04", ["01:02:03:04"])
    with VideoReader(src) as reader, VideoWriter(tmp_path / "out.mov", reader.info, FAST, audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert writer.notes == [] and _timecode_of(tmp_path / "out.mov") == ("01:02:03:04", ["01:02:03:04"])
    passthrough(src, tmp_path / "window.mov", start=0.2)  # 5 frames in at 25 fps
    assert _timecode_of(tmp_path / "window.mov") == ("01:02:03:09", ["01:02:03:09"])
    passthrough(src, tmp_path / "out.mkv")
    assert _timecode_of(tmp_path / "out.mkv")[0] == "01:02:03:04"  # Matroska: the video's tag
    passthrough(tmp_path / "out.mkv", tmp_path / "from_mkv.mov", start=0.2)  # its TIMECODE tag moved too
    assert _timecode_of(tmp_path / "from_mkv.mov") == ("01:02:03:09", ["01:02:03:09"])

    ntsc = tmp_path / "ntsc.mov"
    _timecoded_clip(ntsc, "00:59:59;28", fps=Fraction(30000, 1001))
    with VideoReader(ntsc, start=0.2) as reader, VideoWriter(tmp_path / "ntsc_out.mov", reader.info, FAST,
                                                              audio_from=ntsc, start=0.2) as writer:
        for frame in reader.frames():
            writer.write(frame)
    # drop-frame (SMPTE 12M): 6 frames on from ;28 crosses the hour, a tenth minute, whose numbers are all used
    assert writer.notes == [] and _timecode_of(tmp_path / "ntsc_out.mov") == ("01:00:00;04", ["01:00:00;04"])
    from streamrestore.video.writer import _timecode_after

    ntsc_rate = Fraction(30000, 1001)
    assert _timecode_after("00:00:59;29", 1 / float(ntsc_rate), ntsc_rate) == "00:01:00;02"  # ;00 and ;01 skipped
    assert _timecode_after("00:00:00;00", 17982 / float(ntsc_rate), ntsc_rate) == "00:10:00;00"  # ten minutes
    assert _timecode_after("00:00:59;59", 1 / 59.94, Fraction(60000, 1001)) == "00:01:00;04"
    assert _timecode_after("00:00:00;00", 1.0, Fraction(25)) is None  # no drop-frame at 25
    # FFmpeg keeps a Matroska file's timecode on the file (`-timecode` there): moved with the window too (it
    # was kept as it was, 25 frames early for a window 1 s in)
    with av.open(str(tmp_path / "file_tc.mkv"), "w") as out:
        out.metadata["timecode"] = "00:59:50:00"
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(pattern(64, 48, i), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert probe(tmp_path / "file_tc.mkv").frame_rate == 25
    passthrough(tmp_path / "file_tc.mkv", tmp_path / "file_tc_window.mkv", start=1.0)
    with av.open(str(tmp_path / "file_tc_window.mkv")) as c:
        assert {k.lower(): v for k, v in c.metadata.items()}.get("timecode") == "00:59:51:00", c.metadata
    # a start between frames: the window's first frame is the next one (frame 25 at 1.0 s), not the nearest
    passthrough(tmp_path / "file_tc.mkv", tmp_path / "between.mkv", start=0.97)
    with av.open(str(tmp_path / "between.mkv")) as c:
        assert {k.lower(): v for k, v in c.metadata.items()}.get("timecode") == "00:59:51:00", c.metadata
        assert next(c.decode(video=0)).pts == 0
    # non-drop at 29.97 counts 30 numbers a second, one a frame: 6 frames in (0.2 s) is 6 numbers on
    nondrop = tmp_path / "nondrop.mov"
    _timecoded_clip(nondrop, "01:02:03:27", fps=Fraction(30000, 1001))
    with VideoReader(nondrop, start=0.2) as reader, VideoWriter(tmp_path / "nondrop_out.mov", reader.info, FAST,
                                                                 audio_from=nondrop, start=0.2) as writer:
        frames = [writer.write(frame) for frame in reader.frames()]
    assert frames and writer.notes == []
    assert _timecode_of(tmp_path / "nondrop_out.mov") == ("01:02:04:03", ["01:02:04:03"])


def test_encoding_a_layout_few_players_play_is_said(tmp_path, caplog):
    """ProRes-style 4:2:2 10-bit stays 4:2:2 10-bit (H.264 High 4:2:2), which editors read and
    most browsers, phones and QuickTime do not: the run says so, once, among its warnings (a batch's
    workers asking for the format ahead say nothing); plain 4:2:0 says nothing."""
    from streamrestore.video.writer import encoder_format

    for pix_fmt, said in (("yuv422p10le", 1), ("yuv420p", 0)):
        src = tmp_path / f"{pix_fmt}.mkv"
        make_clip(src, frames=2, width=64, height=64, pix_fmt=pix_fmt)
        caplog.clear()
        with caplog.at_level("WARNING", logger="streamrestore"):
            assert encoder_format(tmp_path / "chunk.mkv", probe(src))[0] == pix_fmt
        assert "do not play it" not in caplog.text  # (asked ahead, nothing is said)
        notes = notes_of_passthrough(src, tmp_path / f"out_{pix_fmt}.mkv")
        assert probe(tmp_path / f"out_{pix_fmt}.mkv").pix_fmt == pix_fmt
        # a note of the run (its summary's warnings, and RunStats.warnings() for a library's caller)
        assert sum("most browsers, phones and QuickTime do not play it" in note for note in notes) == said, notes


def test_a_pixel_format_asked_for_is_written_with_no_warning(tmp_path):
    """A 4:2:2 10-bit master was written 4:2:2 10-bit, with a warning that most browsers do not play it,
    and nothing could ask for 4:2:0; EncoderSettings(pix_fmt=...) (--pix-fmt) does, for a batch's
    chunks too (encoder_format), and says what does not fit."""
    from streamrestore.video.writer import encoder_format

    src = tmp_path / "master.mkv"
    make_clip(src, frames=2, width=64, height=64, pix_fmt="yuv422p10le")
    playable = EncoderSettings(preset="ultrafast", pix_fmt="yuv420p")
    assert encoder_format(tmp_path / "chunk.mkv", probe(src), playable)[0] == "yuv420p"
    assert notes_of_passthrough(src, tmp_path / "web.mp4", playable) == []
    assert probe(tmp_path / "web.mp4").pix_fmt == "yuv420p"
    with pytest.raises(ValueError, match="pix_fmt 'yuv42p' is no pixel format FFmpeg knows"):
        EncoderSettings(pix_fmt="yuv42p")
    with pytest.raises(OutputError, match="libx264 cannot write rgb48le video; it writes .*yuv420p"):
        VideoWriter(tmp_path / "x.mp4", probe(src), EncoderSettings(pix_fmt="rgb48le"))
    odd = tmp_path / "odd.mkv"
    make_clip(odd, frames=2, width=65, height=64, pix_fmt="yuv444p")
    with pytest.raises(OutputError, match="a 65x64 picture cannot be written as yuv420p, whose chroma is halved"):
        VideoWriter(tmp_path / "y.mp4", probe(odd), playable)
    assert notes_of_passthrough(odd, tmp_path / "odd444.mkv", EncoderSettings(preset="ultrafast", pix_fmt="yuv444p")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.mkv", "odd.mkv", "odd444.mkv", "web.mp4"]


@pytest.mark.parametrize("source, codec", [("mjpeg", "prores_ks"), ("mjpeg", "libx264"), ("libx264", "mjpeg")])
def test_a_sources_levels_are_kept_in_every_encoder(tmp_path, source, codec):
    """ProRes (and MPEG-2) write limited range only: a full-range source (MJPEG, a phone's
    yuvj420p) went in with its levels as they were and came back tagged limited, its blacks
    crushed (median 18 -> 1 in an archivist's clip). Its levels are now converted, as an
    untagged (limited) source's are into MJPEG, which is full range."""
    src = tmp_path / "src.mov"
    make_clip(src, frames=2, width=64, height=64, codec=source, pix_fmt="yuvj420p" if source == "mjpeg" else "yuv420p")
    dst = tmp_path / f"out.{codec}.mov"
    notes_of_passthrough(src, dst, EncoderSettings(codec=codec, preset="ultrafast" if codec == "libx264" else None))

    def shown(path):
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)

    before, after = shown(src), shown(dst)  # (as limited range the dark and bright tenths moved by 9-15 levels)
    levels = [np.percentile(before, q) - np.percentile(after, q) for q in (10, 90)]
    assert np.median(np.abs(after - before)) < 4 and all(abs(moved) < 4 for moved in levels), levels


def test_editing_intermediates_are_written_as_asked_and_their_replacement_said(tmp_path):
    """An editor's round trip: DNxHR could not be written at all (its encoder opens only with a
    profile; the error blamed the audio and the container), MJPEG only with --pix-fmt yuvj422p, a
    ProRes 422 Standard master came back as HQ, and a ProRes input written as H.264 by default was
    not said."""
    src = tmp_path / "standard.mov"
    make_clip(src, frames=2, width=64, height=64, codec="prores_ks", pix_fmt="yuv422p10le",
              options={"profile": "standard"})
    assert probe(src).profile == "Standard"
    notes = notes_of_passthrough(src, tmp_path / "default.mov")
    assert ("the input is ProRes, an editing intermediate: written as libx264, a delivery codec (the default); "
            "--codec prores_ks -o NAME.mov writes it as one again") in notes, notes
    assert notes_of_passthrough(src, tmp_path / "kept.mov", EncoderSettings(codec="prores_ks")) == []
    assert probe(tmp_path / "kept.mov").profile == "Standard"  # (prores_ks wrote HQ)
    notes_of_passthrough(src, tmp_path / "aw.mov", EncoderSettings(codec="prores_aw"))  # (takes no profile name)
    # a profile is kept only where the chroma asked for is its own: 4444 written as 4:2:2 is not 4444
    full = tmp_path / "4444.mov"
    make_clip(full, frames=2, width=64, height=64, codec="prores_ks", pix_fmt="yuv444p10le", options={"profile": "4444"})
    notes_of_passthrough(full, tmp_path / "422.mov", EncoderSettings(codec="prores_ks", pix_fmt="yuv422p10le"))
    assert probe(full).profile == "4444" and probe(tmp_path / "422.mov").profile != "4444"
    assert probe(tmp_path / "422.mov").pix_fmt == "yuv422p10le"
    eight = tmp_path / "eight.mp4"
    make_clip(eight, frames=2, width=256, height=144)  # (DNxHR's least)
    for codec, pix_fmt, profile in (("dnxhd", "yuv422p", "DNXHR HQ"), ("mjpeg", "yuvj420p", None)):
        out = tmp_path / f"{codec}.mov"
        notes_of_passthrough(eight, out, EncoderSettings(codec=codec))
        info = probe(out)
        assert (info.pix_fmt, info.frame_count) == (pix_fmt, 2), info
        assert profile is None or info.profile == profile
    with pytest.raises(OutputError, match=r"a \.mkv file cannot hold qtrle video; choose another --codec"):
        VideoWriter(tmp_path / "x.mkv", probe(eight), EncoderSettings(codec="qtrle"))
    with pytest.raises(OutputError, match=r"a \.mkv file cannot hold dnxhd video; write \.mov or choose another"):
        VideoWriter(tmp_path / "x.mkv", probe(eight), EncoderSettings(codec="dnxhd"))
    # (in FFmpeg's words: PyAV's exception says "Invalid argument")
    with pytest.raises(OutputError, match=r"the dnxhd encoder would not open for 64x64 yuv422p10le video \(Input "
                                          r"dimensions too small, input must be at least 256x120\); choose another"):
        VideoWriter(tmp_path / "small.mov", probe(src), EncoderSettings(codec="dnxhd"))


def test_grey_stays_grey_in_a_full_range_output():
    """swscale's fast rounding into full-range YUV put grey's chroma at 127: a black-and-white film
    restored (its frames are RGB after the restore) came back with a faint green cast."""
    from streamrestore.video.writer import to_encoder_format

    grey = np.repeat(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))[..., None], 3, axis=2)
    frame = av.VideoFrame.from_ndarray(grey, format="rgb24")
    full = to_encoder_format(frame, "yuv420p", None, 2)
    assert np.unique(np.asarray(full.planes[1]).reshape(16, -1)[:, :32]).tolist() == [128]
    limited = to_encoder_format(frame, "yuv420p", None, None)  # (as it was: limited-range outputs unchanged)
    assert np.array_equal(limited.to_ndarray(), frame.reformat(format="yuv420p").to_ndarray())


def test_a_grey_archive_stays_grey_in_ffv1_and_plays_as_4_2_0_in_h264(tmp_path):
    """A black-and-white master in FFV1 (grey) came back from --codec ffv1 as 4:2:0 with neutral chroma:
    twice the planes for nothing. H.264's grey profile plays almost nowhere: there it stays 4:2:0."""
    src = tmp_path / "bw.mkv"
    make_clip(src, frames=3, width=64, height=48, codec="ffv1", pix_fmt="gray")
    passthrough(src, tmp_path / "bw_ffv1.mkv", settings=EncoderSettings(codec="ffv1"))
    assert probe(tmp_path / "bw_ffv1.mkv").pix_fmt == "gray"
    with av.open(str(src)) as a, av.open(str(tmp_path / "bw_ffv1.mkv")) as b:
        assert all(np.array_equal(x.to_ndarray(), y.to_ndarray()) for x, y in zip(a.decode(video=0), b.decode(video=0)))
    from streamrestore.video.writer import encoder_format, to_encoder_format

    grey = np.repeat(np.tile(np.arange(256, dtype=np.uint8), (2, 1))[..., None], 3, axis=2)
    written = to_encoder_format(av.VideoFrame.from_ndarray(grey, format="rgb24"), "gray", None, 2)
    assert np.array_equal(written.to_ndarray()[0], np.arange(256))  # (a restored frame, RGB: its levels kept)
    assert encoder_format(tmp_path / "x.mkv", probe(src), EncoderSettings(codec="libx264"))[0] == "yuv420p"


def test_a_depth_the_encoder_cannot_write_is_said(tmp_path):
    """A 12-bit master through H.264 (which writes 10 bits at most) became 8-bit 4:2:0 without a word: now
    the deepest H.264 writes, said."""
    src = tmp_path / "master12.mkv"
    # (3 frames: libx265's stream of one or two gets a garbage decode time one run in four; see repaired_dts)
    make_clip(src, frames=3, width=64, height=64, codec="libx265", pix_fmt="yuv420p12le",
              options={"preset": "ultrafast", "x265-params": "log-level=error"})
    notes = notes_of_passthrough(src, tmp_path / "h264.mkv", EncoderSettings(codec="libx264", preset="ultrafast"))
    assert any("libx264 cannot write the input's yuv420p12le (12 bits per sample): written as yuv420p10le (10 bits); "
               "--codec libx265 keeps up to 12" in note for note in notes), notes
    assert probe(tmp_path / "h264.mkv").pix_fmt == "yuv420p10le"  # (the most H.264 keeps: it was 8 bits)
    # a semi-planar 10-bit source (a hardware decoder's p010) keeps its 10 bits too (it was written at 8)
    import dataclasses

    from streamrestore.video.writer import encoder_format

    p010 = dataclasses.replace(probe(src), pix_fmt="p010le")
    assert encoder_format(tmp_path / "x.mp4", p010, EncoderSettings(codec="libx264"))[0] == "yuv420p10le"
    # deep grey (a film scan) has no chroma to keep: 4:2:0 at its depth, not 4:4:4 few players play
    grey = dataclasses.replace(probe(src), pix_fmt="gray10le")
    assert encoder_format(tmp_path / "x.mp4", grey, EncoderSettings(codec="libx264"))[0] == "yuv420p10le"
    notes = notes_of_passthrough(src, tmp_path / "h265.mkv", EncoderSettings(codec="libx265", preset="ultrafast"))
    assert not any("cannot write the input's" in note for note in notes) and probe(tmp_path / "h265.mkv").pix_fmt \
        == "yuv420p12le"
    # an odd-sized deep picture goes to 4:4:4 at the depth kept (it was 8 bits from 12, without a word)
    from streamrestore.video.writer import _chroma_note, _output_pix_fmt

    odd12 = dataclasses.replace(probe(src), width=65, pix_fmt="yuv420p12le")
    written, note = _output_pix_fmt("libx265", odd12)
    assert written == "yuv444p12le" and note.startswith("65x64 is odd-sized: encoding libx265 as yuv444p12le"), note
    written, note = _output_pix_fmt("libx264", odd12)
    assert written == "yuv444p10le" and note.startswith(
        "libx264 cannot write the input's yuv420p12le (12 bits per sample): written as yuv444p10le (10 bits); "
        "--codec libx265 keeps up to 12; 65x64 is odd-sized"), note
    assert _output_pix_fmt("libx264", dataclasses.replace(odd12, pix_fmt="yuv420p"))[0] == "yuv444p"
    # DV's 4:1:1 made 4:2:0 loses half its rows of colour: said (it went without a word; family F10)
    dv = dataclasses.replace(probe(src), pix_fmt="yuv411p")
    assert _output_pix_fmt("libx264", dv) == ("yuv420p", (
        "the input's colour (yuv411p) is written as yuv420p by libx264, with fewer colour samples down the picture "
        "(--pix-fmt yuv422p keeps them all)"))
    assert _output_pix_fmt("libx264", dataclasses.replace(dv, pix_fmt="yuv420p"))[1] is None
    assert "fewer colour samples across and down the picture (--pix-fmt yuv444p" in _chroma_note("libx264", "yuv444p",
                                                                                                   "yuv420p")


def test_cover_art_and_other_video_streams_not_copied_are_said(tmp_path):
    """The restored video is written with the audio; cover art (an attached picture) and a second
    video stream are not, and the writer's notes say so instead of dropping them silently."""
    src = tmp_path / "src.mp4"  # (Matroska keeps cover art as an attachment, not a stream)
    with av.open(str(src), "w") as out:
        streams = []
        for codec, side, pix_fmt in (("libx264", 64, "yuv420p"), ("mpeg4", 32, "yuv420p"), ("mjpeg", 64, "yuvj420p")):
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = side, side, pix_fmt
            streams.append(stream)
        streams[2].disposition = av.stream.Disposition.attached_pic
        for i in range(3):
            for stream in streams[:2] if i else streams:
                frame = av.VideoFrame.from_ndarray(pattern(stream.width, stream.height, i), format="rgb24")
                frame = frame.reformat(format=stream.pix_fmt)
                frame.pts = i
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode())
    with VideoReader(src) as reader, VideoWriter(tmp_path / "out.mkv", reader.info, FAST, audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert writer.notes == ["1 cover art stream of the input not copied",
                            "1 other video stream of the input not copied: only one video stream is restored and "
                            "written"]
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert [s.type for s in c.streams] == ["video"] and c.streams.video[0].width == 64


def test_mpeg4_real_clip_decodes(shared_data):
    src = shared_data / "sadtalker/WDA_KatieHill_000.mp4"
    with VideoReader(src, end=1.0) as reader:
        frames = list(reader.frames())
    assert reader.info.codec == "mpeg4"
    assert len(frames) == 25
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)


# -- output safety --------------------------------------------------------------------------


def _with_subtitles(video_file: Path, srt: Path, dst: Path) -> Path:
    """``video_file``'s streams and the subtitles of ``srt`` remuxed into ``dst`` (Matroska)."""
    with av.open(str(video_file)) as video, av.open(str(srt)) as text, av.open(str(dst), "w") as out:
        streams = {(0, s.index): out.add_stream_from_template(s) for s in video.streams}
        streams[1, 0] = out.add_stream_from_template(text.streams[0])
        for key, container in ((0, video), (1, text)):
            for packet in container.demux():
                if packet.size:
                    packet.stream = streams[key, packet.stream_index]
                    out.mux(packet)
    return dst


def _small_source(tmp_path) -> Path:
    src = tmp_path / "src.mp4"
    make_clip(src, frames=6, audio="aac")
    return src


def test_existing_output_needs_force(tmp_path):
    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists") as error:
        VideoWriter(dst, probe(src), FAST)
    assert "force=True" in str(error.value)  # the library's own argument, not only the CLI flag
    assert dst.read_bytes() == b"keep me"


def test_force_replaces_existing_output(tmp_path):
    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"old")
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, force=True) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert len(read_video_timing(dst)[0]) == 6


def _write_while_another_run_writes(src: Path, dst: Path, force: bool) -> None:
    """Writes ``src`` to ``dst`` while "another run" (this test) finishes ``dst`` first."""
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, force=force) as writer:
        for frame in reader.frames():
            writer.write(frame)
        dst.write_bytes(b"the other run's")


@pytest.mark.parametrize("refused", [None, 1, 22])
def test_an_output_another_run_wrote_meanwhile_is_kept_and_so_is_this_runs(tmp_path, monkeypatch, refused):
    """Two runs given the same output (a `make -j`): the later one silently replaced the earlier's
    file, both exiting 0. Without --force the output found at the end is kept, and this run's result
    is kept beside it under a visible name the error gives; where the file system has no hard links
    (FAT says EPERM here, EINVAL on Windows: any refusal), a check just before the rename does the
    same (an unexpected errno deleted the finished result)."""
    if refused is not None:
        def refuse(*_args, **_kwargs):
            raise OSError(refused, os.strerror(refused))

        monkeypatch.setattr(os, "link", refuse)
    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="appeared while this run was writing it") as error:
        _write_while_another_run_writes(src, dst, force=False)
    assert dst.read_bytes() == b"the other run's"
    kept = [p for p in tmp_path.iterdir() if p not in (src, dst)]
    assert len(kept) == 1 and kept[0].name.startswith("out.") and kept[0].suffix == ".mp4"
    assert str(kept[0]) in str(error.value) and "\n" not in str(error.value)
    assert len(read_video_timing(kept[0])[0]) == 6

    _write_while_another_run_writes(src, dst, force=True)  # --force: this run's result replaces it
    assert len(read_video_timing(dst)[0]) == 6


def test_a_photo_another_run_wrote_meanwhile_is_kept_and_so_is_this_runs(tmp_path):
    from streamrestore.output_file import write_atomically

    dst = tmp_path / "out.png"

    def write(temp):
        temp.write_bytes(b"mine")
        dst.write_bytes(b"theirs")  # another run finished first

    with pytest.raises(OutputError, match="appeared while this run was writing it"):
        write_atomically(dst, write, replace=False)
    assert dst.read_bytes() == b"theirs"
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"mine", b"theirs"]
    write_atomically(dst, write, replace=True)
    assert dst.read_bytes() == b"mine"


def test_a_retried_link_that_already_made_the_output_is_this_runs_result(tmp_path, monkeypatch):
    """A network file system whose reply to a hard link was lost retries it and says "exists": the file
    there is this run's own, not another run's."""
    from streamrestore.output_file import write_atomically

    real_link = os.link

    def link_then_say_it_exists(src, dst, *args, **kwargs):
        real_link(src, dst)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(os, "link", link_then_say_it_exists)
    dst = tmp_path / "out.png"
    write_atomically(dst, lambda temp: temp.write_bytes(b"mine"), replace=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"] and dst.read_bytes() == b"mine"


def test_a_link_loop_or_a_link_to_another_kind_of_file_is_said(tmp_path):
    src = _small_source(tmp_path)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(OutputError, match="is a symbolic link that leads nowhere"):
        VideoWriter(loop, probe(src), FAST, force=True)
    (tmp_path / "blob").write_bytes(b"old")
    other = tmp_path / "other.mp4"
    other.symlink_to(tmp_path / "blob")
    with pytest.raises(OutputError, match="links to .*blob, a file of another kind \\(no extension\\)"):
        VideoWriter(other, probe(src), FAST, force=True)
    assert (tmp_path / "blob").read_bytes() == b"old"
    # one format under two spellings is no other kind (a photo's out.jpg linked to a .jpeg file)
    from streamrestore.output_file import output_target

    (tmp_path / "photo.jpeg").write_bytes(b"old")
    (tmp_path / "out.jpg").symlink_to(tmp_path / "photo.jpeg")
    assert output_target(tmp_path / "out.jpg") == tmp_path / "photo.jpeg"


def test_a_link_as_the_output_is_written_through(tmp_path):
    """``-o link.mp4 --force`` replaced the link with a file and left its target as it was; cp and
    FFmpeg write through a link."""
    src = _small_source(tmp_path)
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "target.mp4"
    target.write_bytes(b"old")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    with VideoReader(src) as reader, VideoWriter(link, reader.info, FAST, force=True) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert link.is_symlink() and len(read_video_timing(target)[0]) == 6
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["target.mp4"]


def test_a_link_to_nothing_at_the_output_name_needs_force(tmp_path):
    """One planted in a shared folder at the name a run derives (clip.restored.mp4) made the run create its
    output where the link pointed, saying "wrote clip.restored.mp4"."""
    src = _small_source(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    planted = tmp_path / "elsewhere" / "planted.mp4"
    link = tmp_path / "out.mp4"
    link.symlink_to(planted)
    with pytest.raises(OutputError, match=r"out.mp4 is a symbolic link to .*planted.mp4, which does not exist: the "
                                          r"output would be written there; .* with --force"):
        VideoWriter(link, probe(src), FAST)
    assert not planted.exists()
    with VideoReader(src) as reader, VideoWriter(link, reader.info, FAST, force=True) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert len(read_video_timing(planted)[0]) == 6


def test_a_picture_as_a_videos_output_says_how_to_look_at_one_frame(tmp_path):
    """``streamrestore clip.mp4 --start 3 --end 3.04 -o frame.png`` (a preview, as other tools give) said
    "cannot write .png files keeping every frame's timing"."""
    with pytest.raises(OutputError, match=r"a video is written as a video, not as a \.png picture; to look at one "
                                          r"frame restored, restore a short window"):
        VideoWriter(tmp_path / "frame.png", probe(_small_source(tmp_path)), FAST)


@pytest.mark.parametrize("output, said", [
    ("-", "writing to standard output \\(-o -\\) is not supported"),
    (os.devnull, "is not a regular file \\(a device, pipe or socket\\)"),
])
def test_standard_output_or_a_device_as_the_output_is_said_so(tmp_path, output, said):
    """``-o -`` was "cannot write extension-less files", ``-o /dev/null`` "already exists" and, with
    --force, the extension-less message again."""
    for force in (False, True):
        with pytest.raises(OutputError, match=said):
            VideoWriter(output, probe(_small_source(tmp_path)), FAST, force=force)


@pytest.mark.parametrize("interrupt", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_run_leaves_nothing(tmp_path, interrupt):
    src = _small_source(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "out.mp4"
    with pytest.raises(type(interrupt)):
        with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, audio_from=src) as w:
            for i, frame in enumerate(reader.frames()):
                w.write(frame)
                if i == 3:
                    raise interrupt
    assert list(out_dir.iterdir()) == []


def test_dropped_writer_removes_its_temp_file(tmp_path):
    src = _small_source(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    writer = VideoWriter(out_dir / "out.mp4", probe(src), FAST)
    assert len(list(out_dir.iterdir())) == 1  # the hidden temp file
    with VideoReader(src) as reader:
        writer.write(next(iter(reader.frames())))
    del writer  # e.g. a worker thread died without closing it
    gc.collect()
    assert list(out_dir.iterdir()) == []


def test_reader_and_writer_on_separate_threads(clip30, tmp_path):
    src = clip30
    dst = tmp_path / "threaded.mp4"
    frames: queue.Queue = queue.Queue(maxsize=4)
    with VideoReader(src, end=2.0) as reader:

        def produce():
            for frame in reader.frames():
                frames.put(frame)
            frames.put(None)

        thread = threading.Thread(target=produce)
        thread.start()
        with VideoWriter(dst, reader.info, FAST, audio_from=src, end=2.0) as writer:
            while (frame := frames.get()) is not None:
                writer.write(frame)
        thread.join()
    times, _ = read_video_timing(dst)
    assert times == [Fraction(i, 30) for i in range(60)]
    src_audio = read_audio_packets(src)[0]
    assert [p[2] for p in read_audio_packets(dst)[0]] == [p[2] for p in src_audio if p[0] < 2]


def test_interrupted_forced_run_keeps_old_output(tmp_path):
    src = _small_source(tmp_path)
    dst = tmp_path / "old.mp4"
    dst.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(dst, probe(src), FAST, force=True):
            assert dst.read_bytes() == b"previous result"  # nothing written to dst yet
            raise RuntimeError("stop")
    assert dst.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4", "src.mp4"]


def test_unwritable_destinations_raise_output_error(tmp_path):
    # Tests run as root, where chmod cannot deny writes: use paths no one can create files in.
    info = probe(_small_source(tmp_path))
    a_file = tmp_path / "plain_file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="cannot write to output folder .*Not a directory"):
        VideoWriter(a_file / "out.mp4", info, FAST)  # a "folder" that is a regular file
    with pytest.raises(OutputError, match="cannot write to output folder"):
        VideoWriter(Path("/proc/out.mp4"), info, FAST)
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", info, FAST)
    with pytest.raises(OutputError, match="is a folder"):
        VideoWriter(tmp_path, info, FAST)


def test_output_container_must_fit_codec_and_audio(tmp_path):
    src = _small_source(tmp_path)  # H.264 + AAC
    info = probe(src)
    with pytest.raises(OutputError, match="WebM cannot hold"):
        VideoWriter(tmp_path / "a.webm", info, EncoderSettings(codec="h264"))
    with pytest.raises(OutputError, match="aac audio"):
        VideoWriter(tmp_path / "b.webm", info, EncoderSettings(codec="vp9"), audio_from=src)
    with pytest.raises(OutputError, match="cannot write .xyz"):
        VideoWriter(tmp_path / "c.xyz", info, FAST)
    with pytest.raises(OutputError, match="cannot write .avi files keeping"):
        VideoWriter(tmp_path / "d.avi", info, FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


def test_writer_rejects_wrong_frames(tmp_path):
    src = _small_source(tmp_path)
    info = probe(src)
    writer = VideoWriter(tmp_path / "o.mp4", info, FAST)
    bad = av.VideoFrame.from_ndarray(pattern(32, 32), format="rgb24")
    bad.pts, bad.time_base = 0, info.time_base
    with pytest.raises(ValueError, match="32x32"):
        writer.write(bad)
    nopts = av.VideoFrame.from_ndarray(pattern(info.width, info.height), format="rgb24")
    with pytest.raises(ValueError, match="no pts"):
        writer.write(nopts)
    good = av.VideoFrame.from_ndarray(pattern(info.width, info.height), format="rgb24")
    good.pts, good.time_base = 5, info.time_base
    writer.write(good)
    earlier = av.VideoFrame.from_ndarray(pattern(info.width, info.height), format="rgb24")
    earlier.pts, earlier.time_base = 5, info.time_base
    with pytest.raises(ValueError, match="presentation order"):
        writer.write(earlier)
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


# -- bad input ---------------------------------------------------------------------------------


def _one_line_input_error(path, match):
    with pytest.raises(InputError, match=match) as err:
        probe(path)
    assert "\n" not in str(err.value)


def test_bad_inputs_raise_one_line_input_errors(tmp_path):
    import cv2

    _one_line_input_error(tmp_path / "nope.mp4", "not found")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    _one_line_input_error(text, "cannot read .* as a video")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    _one_line_input_error(empty, "empty")
    _one_line_input_error(tmp_path, "folder")
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), pattern(160, 120))
    _one_line_input_error(photo, "is a photo, not a video; photos are restored by restore_photo")
    audio = tmp_path / "voice.m4a"
    make_audio_only(audio)
    _one_line_input_error(audio, "audio but no video")


def test_standard_input_or_a_pipe_as_the_input_is_said_so(tmp_path):
    """``cat clip.mkv | streamrestore /dev/stdin`` said "input is empty (0 bytes)" and ``-`` "not found"."""
    _one_line_input_error("-", "reading the video from standard input \\(-\\) is not supported: .*save it to a file")
    fifo = tmp_path / "recording.mkv"
    os.mkfifo(fifo)
    _one_line_input_error(fifo, "is a pipe or a device, not a file: .*save it to a file first")


def test_truncated_mkv_yields_what_decodes_and_reports_the_loss(tmp_path, caplog):
    src = tmp_path / "full.mkv"
    make_clip(src, width=128, height=96, frames=75, fps=25, audio="aac")  # 3 s
    cut = tmp_path / "cut.mkv"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as reader:
        frames = list(reader.frames())
    assert 5 < len(frames) < 75
    assert reader.frames_decoded == len(frames)
    assert reader.problems and reader.problems[0].startswith("input is truncated")
    assert f"(frame {len(frames)})" in reader.problems[0]
    # Recorded, not logged: whoever runs the reader reports it once (the run summary, live's exit).
    assert "truncated" not in caplog.text


def test_a_whole_mkv_whose_video_starts_after_its_audio_is_not_called_truncated(tmp_path):
    """Matroska's per-stream DURATION tag is the stream's end time: a video from 0.7 s to 2.2 s lasts
    1.5 s (it was read as 2.2 s long, and "input is truncated: stopped at 2.2 s of 2.9 s" said)."""
    src = tmp_path / "late_video.mkv"
    make_clip(src, pts=[700 + 100 * i // 3 for i in range(45)], time_base=Fraction(1, 1000), audio="aac",
              audio_seconds=2.2)
    with VideoReader(src) as reader:
        frames = list(reader.frames())
    assert len(frames) == 45 and not reader.problems
    assert reader.info.start_time == pytest.approx(0.7) and reader.info.duration == pytest.approx(1.5, abs=0.04)


def test_truncated_mp4_without_index_is_an_input_error(tmp_path):
    src = tmp_path / "full.mp4"
    make_clip(src, frames=25)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size - 200])  # loses the moov index
    # what happened and what may help, for the commonest damage: a camera that died while recording
    _one_line_input_error(cut, r"is a recording whose index \(its moov box\) is missing: it was cut off before it "
                               r"was finished .* \(such as untrunc\) may recover it")
    data = src.read_bytes()  # a recorder that died: its media box still sized "to the end", no index after it
    media = data.index(b"mdat") - 4
    cut.write_bytes(data[:media] + bytes(4) + data[media + 4:data.index(b"moov") - 4])
    _one_line_input_error(cut, r"is a recording whose index \(its moov box\) is missing")
    cut.write_bytes(b"\x00\x00\x00\x10ftypisom" + bytes(50))  # a broken header, not a cut: the plain words
    _one_line_input_error(cut, "damaged")


def test_window_without_frames_is_an_input_error(tmp_path):
    src = tmp_path / "short.mp4"
    make_clip(src, frames=10, fps=25)  # 0.4 s
    # A start past the end fails when the reader opens (before a caller loads any model).
    with pytest.raises(InputError, match=r"no video frame .* lies from 5 s \(its video frames lie between 0.00 s "
                                         r"and 0.40 s, counted from the start of the file"):
        VideoReader(src, start=5.0)
    with pytest.raises(InputError, match="lies between 0.21 s and 0.23 s"):
        VideoReader(src, start=0.21, end=0.23)  # frames at 0.20 and 0.24, none between
    with pytest.raises(InputError, match="lies between 0.2101 s and 0.2105 s"):  # (both were "0.21 s")
        VideoReader(src, start=0.2101, end=0.2105)


@pytest.mark.parametrize("start, end", [(1.5, 2.6), (0.7, 2.0)])
def test_a_window_of_an_mpeg_ts_keeps_every_frame_and_audio_packet_in_it(tmp_path, start, end):
    """MPEG-TS has no index: a seek by time lands past the keyframe before the window (up to a
    second late here), and the decoder dropped every frame before the next keyframe (18 of 33 frames
    and their audio were written once). The reader seeks again from further back."""
    src = tmp_path / "gop.ts"
    make_clip(src, frames=90, fps=30, audio="aac", options={"preset": "ultrafast", "crf": "10", "g": "30"})
    dst = tmp_path / "window.mkv"
    reader = passthrough(src, dst, start=start, end=end)
    origin = Fraction(reader.info.origin)
    src_times, _ = read_video_timing(src)
    in_window = [t for t in src_times if origin + Fraction(start) <= t < origin + Fraction(end)]
    out_times, _ = read_video_timing(dst)
    assert len(out_times) == len(in_window) == round((end - start) * 30) and not reader.problems
    offset = in_window[0]
    assert [round(t, 3) for t in out_times] == [round(t - offset, 3) for t in in_window]
    kept = [p for p in read_audio_packets(src)[0] if offset <= p[0] < origin + Fraction(end)]
    adts = 7  # the ts packets' ADTS header, which Matroska stores once (as the codec's extradata)
    assert [p[2] for p in read_audio_packets(dst)[0]] == [p[2][adts:] for p in kept]  # from the first frame on


def test_an_mpeg_ts_whose_clock_wraps_keeps_every_frame_and_the_audio_in_step(tmp_path):
    """MPEG-TS times are 33-bit 90 kHz ticks: they wrap after 26.5 h, and a broadcast capture
    that starts near the wrap wraps within seconds. FFmpeg's demuxer unwraps them (the times
    before the wrap come out negative), and the run keeps every frame, every audio packet and
    the audio's offset to the video across it."""
    src, dst = tmp_path / "wraps.ts", tmp_path / "out.ts"
    # 6 s starting 2.7 s before the 2**33-tick wrap (95443.7 s)
    with av.open(str(src), "w", format="mpegts", options={"output_ts_offset": "95441"}) as out:
        video = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        samples = 0
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(pattern(64, 48, i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
            while samples < (i + 1) * 4800:
                tone = np.sin(np.arange(samples, samples + 1024) / 20.0).astype(np.float32)[None]
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, samples, Fraction(1, 48000)
                samples += 1024
                out.mux(audio.encode(chunk))
        out.mux(video.encode())
        out.mux(audio.encode())
    src_times = read_video_timing(src)[0]
    assert src_times[0] < 0 < src_times[-1]  # the wrap lies inside the file
    reader = passthrough(src, dst)
    dst_times = read_video_timing(dst)[0]
    assert len(dst_times) == 60 and not reader.problems
    assert [t - dst_times[0] for t in dst_times] == [t - src_times[0] for t in src_times]
    src_audio, dst_audio = read_audio_packets(src)[0], read_audio_packets(dst)[0]
    assert [p[2] for p in dst_audio] == [p[2] for p in src_audio] and len(src_audio) > 250
    assert dst_audio[0][0] - dst_times[0] == src_audio[0][0] - src_times[0]  # in step, to the tick


def test_a_seek_that_lands_late_is_tried_again_from_further_back():
    """``seek_not_after``, which the reader (frames) and the writer (copied packets) share: a landing
    after the window is tried again 1, 2, 4 ... s back, then from the file's start; a container that
    cannot seek at all is read as opened."""
    import av.error

    from streamrestore.video.reader import seek_not_after

    def run(landings, when=40.0, origin=0.0, refuse_from=None):
        """``landings``: how late each try lands (seconds after where it sought)."""
        tries = []

        def seek(at):
            if refuse_from is not None and len(tries) >= refuse_from:
                raise av.error.FFmpegError(22, "cannot seek")
            tries.append(at)

        def first_time():
            at = tries[-1]
            return (origin if at is None else at + landings[len(tries) - 1])

        return seek_not_after(when, origin, seek, first_time, tolerance=0.01), tries

    assert run([0.0]) == (True, [40.0])  # landed at its target
    assert run([0.005]) == (True, [40.0])  # within the tolerance
    assert run([1.5, 1.5, 1.5]) == (True, [40.0, 39.0, 38.0])  # 1.5 s late: 2 s back is early enough
    assert run([9.0] * 6) == (True, [40.0, 39.0, 38.0, 36.0, 32.0, 24.0])  # 16 s back lands at 33 s
    assert run([50.0] * 8) == (True, [40.0, 39.0, 38.0, 36.0, 32.0, 24.0, 8.0, None])  # then the file's start
    assert run([5.0] * 4, when=10.0, origin=3.0) == (True, [10.0, 9.0, 8.0, 6.0, None])  # never before the origin
    assert run([0.0], refuse_from=0) == (False, [])  # cannot seek: read as opened, from the start
    assert run([5.0, 5.0], refuse_from=2) == (True, [40.0, 39.0])  # the last landing stands


def test_subtitles_are_copied_and_what_the_output_does_not_keep_is_noted(tmp_path):
    """Subtitles are copied where the output's container takes their codec; what is not kept (such a
    subtitle elsewhere, data streams, interlacing, samples over 8 bits) the writer says (the run's summary
    prints it) instead of dropping it silently."""
    import dataclasses

    base = tmp_path / "base.mkv"
    make_clip(base, frames=10, audio="aac")
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,300\nhello\n")
    src = _with_subtitles(base, srt, tmp_path / "subs.mkv")
    for name, kept in (("out.mkv", True), ("out.mp4", False)):  # Matroska takes SubRip as it is, MP4 does not
        dst = tmp_path / name
        with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, audio_from=src) as writer:
            for frame in reader.frames():
                writer.write(frame)
        with av.open(str(dst)) as written:
            assert [s.type for s in written.streams] == ["video", "audio"] + ["subtitle"] * kept
            copied = [bytes(p) for p in written.demux(written.streams.subtitles) if p.size] if kept else []
        if kept:
            assert writer.notes == [] and copied == [b"hello"]
        else:
            assert writer.notes == ["1 subtitle stream of the input not copied: .mp4 holds only mov_text subtitles; "
                                    ".mkv holds most"]
    writer = VideoWriter(tmp_path / "ten.mkv", dataclasses.replace(reader.info, pix_fmt="yuv420p10le"), FAST)
    assert writer.notes == []  # 4:2:0 at 10 bits keeps its depth (Yuv420Pixels.of_deep)
    writer.abort()
    info = dataclasses.replace(reader.info, pix_fmt="p010le", interlaced=True)
    with VideoWriter(tmp_path / "ten.mkv", info, FAST) as writer:  # (HEVC at 10 bits: see repaired_dts)
        assert writer.notes == [
            "the input has 10 bits per sample (p010le): frames with faces are restored at 8 bits, frames "
            "without keep theirs",
            "the input is interlaced: the output keeps its two fields woven in each frame, coded and tagged interlaced "
            "by libx264 (other encoders tag it only; shown as progressive, it is combed where things move); "
            "deinterlaced (the default; library: deinterlace=True) the faces are restored on whole frames"]
        with VideoReader(base) as one:
            writer.write(next(one.frames()))


def test_a_garbage_decode_time_from_the_encoder_is_replaced_and_a_valid_one_kept():
    # Values libx265 gave one- and two-frame streams here (ms ticks, 40 ms frames; earliest as the
    # writer gives it: first - (last - first) of the frames given, less one frame).
    assert repaired_dts(0, -139677624546368, None, -40) == 0
    assert repaired_dts(0, -4611756388245323776, None, -80) == 0
    assert repaired_dts(0, 9187201950435737472, None, -40) == 0  # after its pts
    assert repaired_dts(40, -139677624546328, 0, None) == 40  # before the last packet's
    # A reordered stream (x265's B-frames: the first decode time two frames early) is kept.
    stream = [(0, -80), (160, -40), (80, 0), (40, 40), (120, 80)]
    last = None
    for pts, dts in stream:
        assert repaired_dts(pts, dts, last, 0 - 160 - 40) == dts
        last = dts
    assert repaired_dts(0, -10**12, None, None) == -10**12  # earliest unknown: not checked
    assert repaired_dts(None, 5, None, 0) == 5 and repaired_dts(7, None, None, 0) is None
    assert repaired_dts(40, 50, 60, None) == 50  # no decode time fits: left for the muxer to refuse


def test_a_variable_rate_stream_with_b_frames_keeps_its_decode_times(tmp_path):
    """x264's first decode time lies as far before the first frame as the frames it holds back
    span: with a 1-tick first frame (a live capture's nudge) that is many "frames"; a first-packet
    bound by the frame's own duration took it for garbage and the muxer then refused the stream."""
    import dataclasses

    src = tmp_path / "src.mkv"
    make_clip(src, frames=2, width=64, height=64)
    pts = [0, 1] + [34 + 33 * i for i in range(10)]
    info = dataclasses.replace(probe(src), time_base=Fraction(1, 1000), frame_rate=None)
    for ext in ("mkv", "mp4"):
        dst = tmp_path / f"vfr.{ext}"
        with VideoWriter(dst, info, EncoderSettings(preset="veryfast")) as writer:
            for i, t in enumerate(pts):
                frame = av.VideoFrame.from_ndarray(pattern(64, 64, i), format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                writer.write(frame)
        with av.open(str(dst)) as written:
            assert [round(f.time * 1000) for f in written.decode(video=0)] == pts


@pytest.mark.parametrize("frames", [1, 2])
def test_a_one_or_two_frame_hevc_output_is_written(tmp_path, frames):
    """libx265 gives such streams a garbage decode time in about one run of four; before
    repaired_dts the muxer refused it and the output was lost (MP4 in 22 of 24 runs here)."""
    src = tmp_path / "src.mkv"
    # (the source in FFV1: libx265, as make_clip drives it, has the very fault for such a short clip)
    make_clip(src, frames=frames, width=64, height=64, codec="ffv1", pix_fmt="yuv420p10le")
    for run in range(8):
        for ext in ("mp4", "mkv"):
            dst = tmp_path / f"out{run}.{ext}"
            with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST) as writer:
                for frame in reader.frames():
                    writer.write(frame)
            with av.open(str(dst)) as written:
                assert [f.time for f in written.decode(video=0)] == pytest.approx([0.04 * i for i in range(frames)])


def test_a_container_that_cannot_hold_the_inputs_audio_names_it(tmp_path):
    src = tmp_path / "src.mkv"
    make_clip(src, frames=2, width=64, height=64, audio="libopus")
    with pytest.raises(OutputError, match=r"cannot write libx264 video and the input's opus streams to a \.mov "
                                          r"file .*; try \.mkv"):
        VideoWriter(tmp_path / "out.mov", probe(src), FAST, audio_from=src)
    assert not (tmp_path / "out.mov").exists()


def test_an_audio_codec_the_container_cannot_take_is_a_clear_error(tmp_path):
    """mu-law audio (a .mov's) cannot go into .mp4 as it is: a one-line error naming it and what to
    write instead (was a traceback from PyAV's ValueError), and nothing written."""
    src = tmp_path / "src.mov"
    make_clip(src, frames=2, width=64, height=64, audio="pcm_mulaw")
    with pytest.raises(OutputError, match=r"a \.mp4 file cannot hold the input's pcm_mulaw audio without "
                                          r"re-encoding it; write \.mov, which holds it"):
        VideoWriter(tmp_path / "out.mp4", probe(src), FAST, audio_from=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mov"]
    # (it said "write .mkv (holds any audio)", which is refused too: Matroska takes no G.711, cctv 1)
    with pytest.raises(OutputError, match=r"a \.mkv file cannot hold the input's pcm_mulaw audio without "
                                          r"re-encoding it; write \.mov, which holds it"):
        VideoWriter(tmp_path / "out.mkv", probe(src), FAST, audio_from=src)


def test_a_dvr_export_with_g711_audio_is_written_as_mov_by_default(tmp_path):
    """A DVR's AVI with G.711 audio (pcm_mulaw, pcm_alaw) was refused by default: its default .mkv takes no G.711
    (cctv 1). The default output is then .mov, which holds it; other AVIs stay .mkv."""
    from streamrestore.video.writer import containers_holding, default_output_path

    dvr = tmp_path / "cam02.avi"
    make_clip(dvr, codec="mjpeg", pix_fmt="yuvj420p", audio="pcm_mulaw", frames=4)
    assert default_output_path(dvr) == tmp_path / "cam02.restored.mov"
    plain = tmp_path / "plain.avi"
    make_clip(plain, codec="mjpeg", pix_fmt="yuvj420p", audio="aac", frames=4)
    assert default_output_path(plain) == tmp_path / "plain.restored.mkv"
    with av.open(str(dvr)) as container:
        assert containers_holding(list(container.streams.audio)) == [".mov"]
    with VideoWriter(default_output_path(dvr), probe(dvr), FAST, audio_from=dvr) as writer, \
            VideoReader(dvr) as reader:
        for frame in reader.frames():
            writer.write(frame)
    with av.open(str(tmp_path / "cam02.restored.mov")) as out:
        assert [s.codec_context.name for s in out.streams.audio] == ["pcm_mulaw"]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_which_tracks_a_player_picks_is_kept(tmp_path, suffix):
    """A film with two audio languages, the second the default, and forced subtitles: the output keeps
    which track is the default and which subtitles are forced (a player picked the other language)."""
    base = tmp_path / "base.mkv"
    make_clip(base, frames=10, audio="aac")
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,300\nhello\n")
    src = tmp_path / f"two{suffix}"
    default, forced = av.stream.Disposition.default, av.stream.Disposition.forced
    with av.open(str(base)) as video, av.open(str(srt)) as text, av.open(str(src), "w") as out:
        streams = {(0, s.index): out.add_stream_from_template(s) for s in video.streams}
        streams[2, 0] = out.add_stream_from_template(video.streams.audio[0])  # a second language
        if suffix == ".mkv":  # (SubRip: Matroska's)
            streams[1, 0] = out.add_stream_from_template(text.streams[0])
            streams[1, 0].disposition = forced
        streams[0, video.streams.video[0].index].disposition = default
        streams[0, video.streams.audio[0].index].disposition = av.stream.Disposition(0)
        streams[2, 0].disposition = default
        for packet in video.demux(video.streams.audio[0]):
            if packet.size:
                packet.stream = streams[2, 0]
                out.mux(packet)
        video.seek(0)
        for key, container in ((0, video), (1, text)):
            for packet in container.demux():
                if packet.size and (key, packet.stream_index) in streams:
                    packet.stream = streams[key, packet.stream_index]
                    out.mux(packet)

    def marks(path):
        with av.open(str(path)) as c:
            return [(s.type, bool(s.disposition & default), bool(s.disposition & forced)) for s in c.streams]

    expected = [("video", True, False), ("audio", False, False), ("audio", True, False)]
    expected += [("subtitle", False, True)] * (suffix == ".mkv")
    assert marks(src) == expected
    dst = tmp_path / f"out{suffix}"
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert marks(dst) == expected


def test_a_killed_runs_hidden_file_is_removed_by_the_next_run_that_writes_in_its_folder(tmp_path, caplog):
    """``kill -9`` (or the OOM killer) ends a run before its clean-up: its hidden temporary file, as large
    as what it had written, was left for ever. The next run that writes an output in that folder removes such
    files; one another live process holds (its lock), or a fresh one, may be another running writer's."""
    import logging
    import subprocess
    import sys

    from streamrestore.output_file import OTHER_OUTPUT_IDLE_SECONDS, STALE_TEMP_SECONDS, remove_stale_temps

    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    killed, fresh, live = (tmp_path / f".out.{tag}.partial.mp4" for tag in ("0badf00d", "12345678", "abcdef01"))
    other = tmp_path / ".other.0badf00d.partial.mkv"
    recent_other = tmp_path / ".other2.0badf00d.partial.mkv"  # (two minutes: perhaps a writer not seen)
    mine = tmp_path / ".notes.txt.partial.mp4"
    for path in (killed, fresh, live, other, mine, recent_other):
        path.write_bytes(b"x" * 1000)
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    for path in (killed, live, other, mine, recent_other):
        os.utime(path, (long_ago, long_ago))
    hour_ago = time.time() - OTHER_OUTPUT_IDLE_SECONDS - 60  # (another output's: an hour untouched)
    os.utime(other, (hour_ago, hour_ago))
    # another process writing the same output holds its file (a run loading its models for minutes)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from streamrestore.output_file import hold_temp; "
                               f"hold_temp(Path({str(live)!r})); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.INFO, logger="streamrestore"):
            with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST) as writer:
                for frame in reader.frames():
                    writer.write(frame)
    finally:
        holder.communicate("")
    # another output's, killed too, goes as well (an OOM-killed run, then one with smaller settings under another
    # name, left it hidden for ever); a file of another pattern is not ours
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name, fresh.name, live.name, mine.name,
                                                                 recent_other.name])
    for gone in (killed, other):
        assert f"removed {gone.name}, the unfinished output of an earlier run that was killed" in caplog.text
    # once its holder is gone (killed), the next run's clean-up takes it too
    assert remove_stale_temps(dst) == [live]


def test_writer_with_no_frames_creates_nothing(tmp_path):
    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="no frames"):
        with VideoWriter(dst, probe(src), FAST, audio_from=src):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


def test_clean_file_has_no_problems(tmp_path):
    src = tmp_path / "ok.mkv"
    make_clip(src, frames=10)
    with VideoReader(src) as reader:
        assert len(list(reader.frames())) == 10
    assert reader.problems == []


# -- small API pieces ----------------------------------------------------------------------


def test_encoder_settings_defaults_and_validation():
    assert resolve_codec("h264") == "libx264"
    assert resolve_codec("vp9") == "libvpx-vp9"
    assert resolve_codec("av1") in ("libsvtav1", "libaom-av1")
    with pytest.raises(ValueError, match="video encoder 'aac'"):  # an audio encoder is refused up front
        resolve_codec("aac")
    settings = EncoderSettings()
    assert settings.codec_for(Path("a.mp4")) == "libx264"
    assert settings.codec_for(Path("a.webm")) == "libvpx-vp9"
    options = settings.options_for("libx264")
    assert options == {"crf": "16", "preset": "veryfast"}
    assert EncoderSettings(crf=23, preset="fast").options_for("libx264") == {
        "crf": "23", "preset": "fast"}
    assert EncoderSettings(codec="hevc").codec == "libx265"
    with pytest.raises(ValueError, match="nosuchcodec"):
        EncoderSettings(codec="nosuchcodec")
    with pytest.raises(ValueError, match="99"):
        EncoderSettings(crf=99)


@pytest.mark.parametrize("codec, preset, crf, message", [
    ("libx264", "bogus", None, "libx264 presets are ultrafast, superfast, .*placebo; got 'bogus'"),
    ("libx265", None, 52, "libx265 takes crf 0-51, got 52"),
    ("libvpx-vp9", "medium", None, "libvpx-vp9 takes a speed preset from -8 .* to 8 .*got 'medium'"),
    ("libvpx-vp9", "9", None, "from -8"),
    ("libsvtav1", "14", None, "libsvtav1 takes a speed preset from -2"),
])
def test_an_encoder_option_the_encoder_refuses_is_named_before_a_frame_is_restored(tmp_path, codec, preset, crf,
                                                                                      message):
    """x264 names its presets, the others take numbers; each encoder's range was measured (an out-of-range
    value made FFmpeg refuse to open it, which read as "cannot write ... to a .mp4 file; try .mkv")."""
    settings = EncoderSettings(codec=codec, preset=preset, crf=crf)
    with pytest.raises(ValueError, match=message):
        settings.check_for(settings.codec)
    src = tmp_path / "src.mkv"
    make_clip(src, frames=1)
    dst = tmp_path / "out.mkv"
    with VideoReader(src) as reader, pytest.raises(OutputError, match="bad encoder option: .*" + message):
        VideoWriter(dst, reader.info, settings)
    assert list(tmp_path.iterdir()) == [src]  # nothing left behind
    takes = {"libx264": ["veryfast", "placebo"], "libx265": ["medium"], "libvpx-vp9": ["-8", "8"],
             "libsvtav1": ["-2", "13"]}
    for good in [*takes[codec], None]:  # the ends of each range pass
        EncoderSettings(codec=codec, preset=good, crf=51).check_for(codec)


def test_default_output_path():
    assert default_output_path("/v/clip.mov") == Path("/v/clip.restored.mov")
    assert default_output_path("talk.final.mkv") == Path("talk.final.restored.mkv")
    assert default_output_path("/v/noext") == Path("/v/noext.restored.mkv")
    assert default_output_path("/v/old.avi") == Path("/v/old.restored.mkv")  # AVI: fixed rate only
    assert default_output_path("/v/meme.GIF") == Path("/v/meme.restored.mp4")  # no sound: MP4 plays everywhere


def test_reader_validates_window(tmp_path):
    src = tmp_path / "ok.mp4"
    make_clip(src, frames=4)
    with pytest.raises(ValueError, match="-1"):
        VideoReader(src, start=-1)
    with pytest.raises(ValueError, match="after start"):
        VideoReader(src, start=2, end=1)
    with VideoReader(src) as reader:
        list(reader.frames())
        with pytest.raises(RuntimeError):
            list(reader.frames())


# -- damaged data, output that is the input, file mode ------------------------------------------


def _damage_packets(src: Path, dst: Path, indices) -> list[int]:
    """Copy ``src`` to ``dst`` with the payload of the video packets at ``indices`` (decode
    order) overwritten by 0xFF bytes: the container still lists every packet, the decoder
    cannot rebuild those frames. Returns the presentation times (pts) of all packets."""
    with av.open(str(src)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(src.read_bytes())
    for i in indices:
        _, pos, size = packets[i]
        assert pos > 0 and size > 8
        data[pos : pos + size] = b"\xff" * size  # H.264 in MP4: NAL length 0xFFFFFFFF, invalid
    dst.write_bytes(bytes(data))
    return sorted(p[0] for p in packets)


def test_damaged_packets_mid_file_keep_every_frame_and_timestamp(tmp_path):
    clean = tmp_path / "clean.mp4"
    make_clip(clean, width=160, height=120, frames=60, audio="aac",
              options={"preset": "ultrafast", "crf": "20", "g": "10"})
    bad = tmp_path / "bad.mp4"
    pts = _damage_packets(clean, bad, [25, 37])  # two P-frames in the middle (keyframes 0, 10, 20, ...)
    with VideoReader(clean) as reader:
        clean_pts = [f.pts for f in reader.frames()]
    assert clean_pts == pts

    with VideoReader(bad) as reader:
        frames = list(reader.frames())
    assert [f.pts for f in frames] == clean_pts  # same count, same timestamps
    assert reader.frames_decoded == 60
    assert len(reader.problems) == 1  # one warning, with the count
    assert reader.problems[0].startswith("damaged data in the file: 2 frame(s) affected")
    # where: the lost frames' times from the file's start, to look at (frames 25 and 37 at 25 fps)
    assert reader.problems[0].endswith(") at 1.00 s, 1.48 s; timestamps are kept"), reader.problems
    # The lost frames repeat the frame before them (pixels), at their own time.
    by_pts = {f.pts: i for i, f in enumerate(frames)}
    for lost in (pts[25], pts[37]):
        i = by_pts[lost]
        assert np.array_equal(frames[i].to_ndarray(), frames[i - 1].to_ndarray())
        assert frames[i].duration == frames[i - 1].duration

    # Through the writer, the output has the clean file's timing and all of its audio.
    dst = tmp_path / "out.mp4"
    passthrough(bad, dst)
    assert read_video_timing(dst) == read_video_timing(clean)
    assert read_audio_packets(dst) == read_audio_packets(clean)


def test_an_mpeg2_ts_starting_near_zero_keeps_its_timestamps(tmp_path):
    """An MPEG-2 broadcast capture (no B-frames: dts = pts) whose video starts 40 ms in, written as
    H.264 with B-frames (the default encoder): its first dts lies before 0, and FFmpeg moved every
    stream 40 ms later; the TS muxer's own delay keeps such a dts positive, so nothing is moved."""
    src = tmp_path / "broadcast.ts"
    make_clip(src, codec="mpeg2video", audio="mp2", pts=list(range(1, 26)), time_base=Fraction(1, 25))
    dst = tmp_path / "out.ts"
    passthrough(src, dst, settings=EncoderSettings())  # (veryfast: B-frames)
    assert read_video_timing(dst)[0] == read_video_timing(src)[0]
    assert [p[0] for p in read_audio_packets(dst)[0]] == [p[0] for p in read_audio_packets(src)[0]]


@pytest.mark.parametrize("src_name, dst_name", [("in.mp4", "out.mp4"), ("in.mkv", "out.mkv"), ("in.mkv", "out.mp4"),
                                                    ("in.ts", "out.ts")])
def test_mpeg2_output_keeps_the_timing_of_sources_with_fine_time_bases(tmp_path, src_name, dst_name):
    """MPEG-1/2 encoders count time in frames: given the source's time base (1/2500 of an MP4,
    1/1000 of Matroska, 1/90000 of MPEG-TS) they would not open ("does not support 2500/1 fps").
    They are given frame numbers and their packets put back on the source's pts."""
    src = tmp_path / src_name
    make_clip(src, frames=10, audio="aac" if src.suffix != ".ts" else "mp2")
    dst = tmp_path / dst_name
    passthrough(src, dst, settings=EncoderSettings(codec="mpeg2video"))
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg2video"
    (times, durations), (source_times, source_durations) = read_video_timing(dst), read_video_timing(src)
    assert times == source_times
    assert durations == (source_durations if src.suffix != ".ts" else [Fraction(1, 25)] * 10)  # (TS gives none)
    assert [p[0] for p in read_audio_packets(dst)[0]] == [p[0] for p in read_audio_packets(src)[0]]


@pytest.mark.parametrize("pts, time_base", [
    ([0, 40, 80, 90, 120, 160], Fraction(1, 1000)),  # (two frames 10 ms apart in a 25 fps stream)
    ([round(i * 3600 + (900 if i % 3 == 1 else 0)) for i in range(12)], Fraction(1, 90000)),  # (a live clock's jitter)
])
def test_mpeg2_output_of_a_variable_rate_keeps_every_frame_and_its_time(tmp_path, pts, time_base):
    """Frames that fall on one MPEG-2 frame number (a variable rate, a live capture's jittered clock) take the
    next: every frame is written at its own time. It had stopped the run there (or, before that, the encoder
    would not open at all)."""
    src = tmp_path / "vfr.mkv"
    make_clip(src, pts=pts, time_base=time_base)
    given = []
    with VideoReader(src) as reader, VideoWriter(tmp_path / "out.mkv", reader.info,
                                                 EncoderSettings(codec="mpeg2video")) as writer:
        for frame in reader.frames():
            writer.write(frame)
            given.append((frame, frame.pts, frame.time_base))
    assert read_video_timing(tmp_path / "out.mkv")[0] == read_video_timing(src)[0]
    # (the caller's frames as they came, though the encoder was given frame numbers)
    assert all((frame.pts, frame.time_base) == (pts, base) for frame, pts, base in given)


def test_mpeg2_output_of_an_inexact_average_rate_takes_the_standard_rate_near_it(tmp_path):
    """A 29.97 fps MOV's average rate, counted from its duration, is 34560000/1153153: MPEG-2 refused it,
    saying the video was 29.97 fps. The standard rate within 0.5 % is taken."""
    import dataclasses

    src = tmp_path / "ntsc.mov"
    make_clip(src, frames=6, pts=[i * 1001 for i in range(6)], time_base=Fraction(1, 30000))
    info = dataclasses.replace(probe(src), frame_rate=Fraction(34560000, 1153153))
    with VideoReader(src) as reader, VideoWriter(tmp_path / "out.mov", info, EncoderSettings(codec="mpeg2video"),
                                                 audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert read_video_timing(tmp_path / "out.mov")[0] == read_video_timing(src)[0]


def test_mpeg2_output_at_a_rate_its_standard_lacks_names_the_rate(tmp_path):
    """Said in FFmpeg's words every time (PyAV drops a log line equal to the last one in the process: a second
    run said 'Invalid argument'), and another encoder's refusal after it in its own (it was given this one's)."""
    src = tmp_path / "seven.mkv"
    make_clip(src, frames=4, fps=7)
    for _ in range(2):
        with pytest.raises(OutputError, match=r"\(MPEG-1/2 does not support 7/1 fps\); mpeg2video holds only the "
                                              r"frame rates of its standard \(this video: 7 fps\)"):
            passthrough(src, tmp_path / "out.mkv", settings=EncoderSettings(codec="mpeg2video"))
    small = tmp_path / "small.mov"
    make_clip(small, frames=2, width=64, height=64)
    with pytest.raises(OutputError, match=r"would not open for 64x64 yuv422p video \(Input dimensions too small"):
        VideoWriter(tmp_path / "x.mov", probe(small), EncoderSettings(codec="dnxhd"))
    # (set for the encoder's second opening alone: PyAV logs nothing otherwise)
    assert av.logging.get_level() is None and av.logging.get_skip_repeated()


def test_a_file_cut_mid_gop_says_the_frames_it_starts_without(tmp_path):
    """A clip cut without its first keyframe (an editor's or a recorder's cut mid-GOP): the pictures
    before the first keyframe cannot be decoded and, with no frame before them to repeat, are left
    out: said, with where the video now starts (they were left out silently). A whole clip says
    nothing."""
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    make_clip(whole, frames=40, options={"preset": "ultrafast", "x264-params":
                                         "open-gop=1:keyint=12:min-keyint=12:scenecut=0:bframes=3"})
    with av.open(str(whole)) as c, av.open(str(cut), "w") as out:
        copy = out.add_stream_from_template(c.streams.video[0])
        packets = [p for p in c.demux(video=0) if p.size]
        for packet in packets[5:]:  # decode order: the keyframe and four pictures after it gone
            packet.stream = copy
            out.mux(packet)
    with VideoReader(whole) as reader:
        assert len(list(reader.frames())) == 40 and reader.problems == []
    with av.open(str(cut)) as c:  # (packets before the edit list's start are not shown: not lost)
        shown = sum(1 for p in c.demux(video=0) if p.size and not p.is_discard)
    with VideoReader(cut) as reader:
        frames = list(reader.frames())
        lost = shown - len(frames)
        assert lost > 0
        first = frames[0].time - reader.info.origin
        assert reader.problems == [f"the file starts without the keyframe its first {lost} frame(s) need (cut mid-GOP?): "
                                   "they cannot be decoded and are left out; the video starts at the first frame "
                                   f"that decodes, {first:.2f} s in"]


def test_places_of_damage_are_said_as_spans():
    from streamrestore.video.reader import PLACES_SAID, _places

    assert _places([], Fraction(25)) == ""
    assert _places([1.0, 1.04, 1.08, 2.0], Fraction(25)) == " at 1.00-1.08 s, 2.00 s"
    assert _places([float(t) for t in range(PLACES_SAID + 2)], Fraction(25)) == \
        " at 0.00 s, 1.00 s, 2.00 s, 3.00 s and 2 more places"


def test_damaged_packets_with_a_window(tmp_path):
    clean = tmp_path / "clean.mp4"
    make_clip(clean, frames=50, options={"preset": "ultrafast", "g": "10"})
    bad = tmp_path / "bad.mp4"
    pts = _damage_packets(clean, bad, [24])
    with VideoReader(bad, start=0.6, end=1.6) as reader:  # frames 15 .. 39 at 25 fps
        got = [f.pts for f in reader.frames()]
    assert got == pts[15:40]
    assert reader.problems == ["damaged data in the file: 1 frame(s) affected "
                               "(1 could not be decoded and repeat the frame before) at 0.96 s; timestamps are kept"]


@pytest.mark.parametrize("spelling", ["same", "relative", "dotdot", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused_even_with_force(tmp_path, monkeypatch, spelling):
    src = _small_source(tmp_path)
    original = src.read_bytes()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    dst = {
        "same": src,
        "relative": Path("src.mp4"),
        "dotdot": Path("sub/../src.mp4"),
        "symlink": tmp_path / "link.mp4",
        "hardlink": tmp_path / "hard.mp4",
    }[spelling]
    if spelling == "symlink":
        dst.symlink_to(src)
    if spelling == "hardlink":
        os.link(src, dst)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError, match="is the input file") as err:
        VideoWriter(dst, probe(src), FAST, audio_from=src, force=True)
    assert "\n" not in str(err.value)
    with pytest.raises(OutputError, match="is the input file"):
        check_not_input(src, dst)
    assert src.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file either
    check_not_input(src, tmp_path / "other.mp4")  # a new file is fine


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_output_file_mode_follows_the_umask(tmp_path, umask, mode):
    src = _small_source(tmp_path)
    dst = tmp_path / "out.mp4"
    previous = os.umask(umask)
    try:
        passthrough(src, dst)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(dst.stat().st_mode) == mode


def test_frames_whose_timestamps_do_not_increase_are_placed_after_the_frame_before(tmp_path):
    """A broken mux (every frame at pts 0) ended in the writer's "pts 0 is not after the previous 0"
    traceback; each such frame is now placed one frame after the one before, and the run says so."""
    src = tmp_path / "zero.mov"
    make_zero_pts_clip(src, 6)
    with av.open(str(src)) as c:
        assert {f.pts for f in c.decode(video=0)} == {0}  # the broken file this test needs
    dst = tmp_path / "out.mov"
    reader = passthrough(src, dst, start=None, end=None)
    times, _ = read_video_timing(dst)
    assert len(times) == 6 and all(b > a for a, b in zip(times, times[1:]))
    assert [round(float(b - a), 3) for a, b in zip(times, times[1:])] == [0.04] * 5
    assert any("5 frame(s) had a timestamp not after the frame before" in p for p in reader.problems)


def test_a_raw_stream_without_timestamps_is_written_at_its_rate(tmp_path):
    """An H.264 elementary stream carries no timestamps (every frame's pts is None, which the writer
    refused); its frames are placed one frame apart at the stream's rate."""
    clip = tmp_path / "a.mp4"
    make_clip(clip, frames=8, fps=25)
    raw = tmp_path / "a.h264"
    make_raw_stream(clip, raw)
    dst = tmp_path / "out.mp4"
    reader = passthrough(raw, dst)
    times, _ = read_video_timing(dst)
    assert len(times) == 8 and [round(float(t), 3) for t in times] == [round(i / 25, 3) for i in range(8)]
    assert any("8 frame(s) had no timestamp (a raw stream?)" in p and "25 fps" in p for p in reader.problems)


def test_a_raw_stream_cut_mid_gop_says_the_pictures_it_lost(tmp_path):
    """A DVR's raw .h264 cut before a keyframe lost its first pictures unsaid (46 of 69 decoded), where the same
    cut in MPEG-TS said so: a raw stream's packets have no timestamps to tell, but their count does."""
    clip = tmp_path / "a.mp4"
    make_clip(clip, frames=30, fps=25, options={"preset": "ultrafast", "g": "10"})
    whole = tmp_path / "whole.h264"
    make_raw_stream(clip, whole)
    with av.open(str(whole)) as c:
        starts = [packet.pos for packet in c.demux(video=0) if packet.size]
    cut = tmp_path / "cut.h264"  # (from the 4th picture: the 4th to 10th need the keyframe before)
    cut.write_bytes(whole.read_bytes()[starts[3]:])
    for path, frames, said in ((whole, 30, None), (cut, 20, "7 picture(s) of the stream could not be decoded")):
        with VideoReader(path) as reader:
            assert len(list(reader.frames())) == frames
        lost = [p for p in reader.problems if "could not be decoded" in p]
        assert lost == ([] if said is None else [f"{said} and are left out: a raw stream cut before a keyframe "
                                                 "(mid-GOP?) loses the pictures up to it, damaged data the pictures "
                                                 "that need it"])


DEINTERLACED = ("the input is interlaced: each frame was deinterlaced (bwdif: one frame at its first field's instant, "
                "timestamps kept); --no-deinterlace (library: deinterlace=False) keeps the fields woven as they are")


def test_an_interlaced_clip_is_deinterlaced_frame_for_frame_when_asked(tmp_path):
    """DV, DVDs and 1080i weave two fields of different instants into each frame: asked to, the reader
    gives each frame whole, at its first field's instant, with the file's timing; a progressive clip
    comes as decoded."""
    from media_utils import combing, make_interlaced_clip, moving_bar

    src = tmp_path / "camcorder.mp4"
    make_interlaced_clip(src, frames=8)
    with VideoReader(src) as plain:
        woven = list(plain.frames())
        assert plain.info.interlaced and plain.problems == []
    with VideoReader(src, deinterlace=True) as reader:
        frames = list(reader.frames())
        assert not reader.info.interlaced and reader.problems == [DEINTERLACED]
    timing = [(f.pts, f.time_base, f.duration, f.pict_type) for f in woven]
    assert [(f.pts, f.time_base, f.duration, f.pict_type) for f in frames] == timing and len(timing) == 8
    for i, (before, after) in enumerate(zip(woven, frames)):
        before_rgb, after_rgb = before.to_ndarray(format="rgb24"), after.to_ndarray(format="rgb24")
        assert combing(before_rgb) > 8 and combing(after_rgb) < 1, i
        assert np.abs(after_rgb.astype(float) - moving_bar(96, 64, 2 * i)).mean() < 1, i  # the first field's instant

    progressive = tmp_path / "progressive.mp4"
    make_clip(progressive, frames=4)
    with VideoReader(progressive) as plain, VideoReader(progressive, deinterlace=True) as reader:
        assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(plain.frames(), reader.frames()))
        assert reader.problems == []


def test_fields_woven_into_frames_the_file_does_not_flag_are_found_and_deinterlaced(tmp_path):
    """A capture card's MJPEG (or a re-encode that lost the flag) weaves two fields into each frame without
    saying so: the faces stayed combed, and the output was tagged progressive (family F9). FFmpeg's idet finds
    the weave in the first frames; every frame is then deinterlaced in that field order. A progressive clip
    of the same motion is left as decoded."""
    from media_utils import combing, make_interlaced_clip, moving_bar

    from streamrestore.video.reader import woven_field_order

    flagged, unflagged = tmp_path / "flagged.mp4", tmp_path / "capture.mp4"
    make_interlaced_clip(flagged, frames=12, width=192, height=128)
    # the same woven pictures, coded progressive (no interlace flags)
    with av.open(str(flagged)) as container:
        woven = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    make_clip(unflagged, width=192, height=128, picture=lambda i: woven[i], frames=12,
              options={"preset": "ultrafast", "crf": "10"})
    with VideoReader(unflagged) as plain:
        as_decoded = list(plain.frames())
        assert not any(f.interlaced_frame for f in as_decoded) and not plain.deinterlaced
    assert woven_field_order(as_decoded) == "bff"  # (x264 codes PyAV's woven frames bottom field first)
    with VideoReader(unflagged, deinterlace=True) as reader:
        frames = list(reader.frames())
        assert reader.deinterlaced
        assert any("woven from two fields though the file does not flag them interlaced" in p for p in reader.problems)
    assert [f.pts for f in frames] == [f.pts for f in as_decoded]
    before = [combing(f.to_ndarray(format="rgb24")) for f in as_decoded]
    after = [combing(f.to_ndarray(format="rgb24")) for f in frames]
    assert min(before) > 4 and max(after) < 0.1 * min(before), (before, after)

    with VideoReader(unflagged, deinterlace="fields") as fields:  # (a frame each: said, review 52)
        assert len(list(fields.frames())) == 12
        assert any("--field-rate needs the file's own flags" in p for p in fields.problems)
    # a window (--start, a batch chunk) that opens on a still shot decides as the whole file does (review 52)
    still = tmp_path / "then_still.mp4"
    make_clip(still, width=192, height=128, frames=24, options={"preset": "ultrafast", "crf": "10"},
              picture=lambda i: woven[i] if i < 12 else moving_bar(192, 128, 0))
    with VideoReader(still) as plain:
        times = [float(f.pts * f.time_base) for f in plain.frames()]
    with VideoReader(still, deinterlace=True, start=times[14]) as window:
        list(window.frames())
        assert window.deinterlaced and any("on the file's first frames" in p for p in window.problems)

    progressive = tmp_path / "progressive.mp4"
    make_clip(progressive, width=192, height=128, frames=12, picture=lambda i: moving_bar(192, 128, 2 * i))
    with VideoReader(progressive) as plain, VideoReader(progressive, deinterlace=True) as reader:
        given = list(plain.frames())
        assert woven_field_order(given) is None
        assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(given, reader.frames()))
        assert reader.problems == [] and not reader.deinterlaced


def test_a_video_that_changes_size_mid_stream_is_read_at_its_first_size(tmp_path):
    """A broadcast capture may switch size (an SD advert in an HD channel): the frames after the switch
    are scaled to the first frame's size, said once, so the restorer and the writer see one size and
    every frame is written (the writer took the first size and refused the rest)."""
    import cv2

    first, second = tmp_path / "hd.ts", tmp_path / "sd.ts"
    make_clip(first, width=96, height=64, frames=5)
    make_clip(second, width=64, height=48, frames=4, picture=lambda i: pattern(64, 48, i))
    capture = tmp_path / "capture.ts"
    capture.write_bytes(first.read_bytes() + second.read_bytes())
    with VideoReader(capture) as reader:
        frames = list(reader.frames())
        assert [(f.width, f.height) for f in frames] == [(96, 64)] * 9
        said = [p for p in reader.problems if "changes size" in p]
        assert said == ["the video changes size mid-stream: 4 frame(s) from 0.20 s were scaled to 96x64, the size "
                        "of its first frame (the output holds one size)"]
    with av.open(str(second)) as c:
        sd = [f.to_ndarray(format="rgb24").astype(float) for f in c.decode(video=0)]
    for k, frame in enumerate(frames[5:]):  # each the SD picture enlarged, in order
        shrunk = cv2.resize(frame.to_ndarray(format="rgb24"), (64, 48), interpolation=cv2.INTER_AREA)
        errors = [np.abs(shrunk - picture).mean() for picture in sd]
        assert int(np.argmin(errors)) == k and errors[k] < 12, errors
    out = tmp_path / "out.mkv"
    passthrough(capture, out)
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


@pytest.mark.parametrize("name, codec, pix_fmt", [("graphics.mov", "png", "rgba"),
                                                  ("overlay.webm", "libvpx-vp9", "yuva420p"),
                                                  ("plain.mov", "png", "rgb24")])
def test_transparency_the_output_cannot_keep_is_said(tmp_path, name, codec, pix_fmt):
    """Motion graphics with an alpha channel (PNG/ProRes 4444 in MOV, VP9 with alpha in WebM, which
    FFmpeg decodes without it): the restored video holds none, and the run says so."""
    src = tmp_path / name
    make_clip(src, frames=2, codec=codec, pix_fmt=pix_fmt, options={})
    said = "the input has transparency (an alpha channel): the output is written without it"
    with VideoReader(src) as reader, VideoWriter(tmp_path / f"out{src.suffix}", reader.info,
                                                  EncoderSettings(preset="8" if name.endswith("webm") else "ultrafast")
                                                  ) as writer:
        assert reader.info.alpha == (pix_fmt != "rgb24")
        for frame in reader.frames():
            writer.write(frame)
        assert any(note.startswith(said) for note in writer.notes) == (pix_fmt != "rgb24")


def _tagged_clip(path: Path) -> None:
    """2 s at 25 fps with a title, a recording date, a place, an audio language and three chapters."""
    from media_utils import _write_tone as write_tone

    with av.open(str(path), "w") as out:
        out.metadata.update({"title": "Holiday 2009", "creation_time": "2009-07-01T12:00:00.000000Z",
                             "location": "+48.8577+002.2950/"})
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        audio.metadata["language"] = "fra"
        tb = Fraction(1, 1000)
        out.set_chapters([{"id": k + 1, "start": a, "end": b, "time_base": tb, "metadata": {"title": title}}
                          for k, (a, b, title) in enumerate([(0, 800, "Arrival"), (800, 1400, "Beach"),
                                                             (1400, 2000, "Dinner")])])
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(pattern(64, 48, i), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        write_tone(out, audio, 2.0)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_the_inputs_tags_and_chapters_are_kept(tmp_path, ext):
    """A phone's or camcorder's video says when and where it was recorded (photo libraries sort by it),
    its title, its audio's language and its chapters: the restored copy says the same; a window keeps
    the chapters it overlaps, moved with it."""
    src = tmp_path / f"holiday.{ext}"
    _tagged_clip(src)
    passthrough(src, tmp_path / f"out.{ext}")
    passthrough(src, tmp_path / f"window.{ext}", start=1.0)
    for name, chapters in ((f"out.{ext}", [("Arrival", 0.0, 0.8), ("Beach", 0.8, 1.4), ("Dinner", 1.4, 2.0)]),
                           (f"window.{ext}", [("Beach", 0.0, 0.4), ("Dinner", 0.4, 1.0)])):
        with av.open(str(tmp_path / name)) as c:
            tags = {key.lower(): value for key, value in c.metadata.items()}
            assert tags["title"] == "Holiday 2009" and tags["creation_time"].startswith("2009-07-01T12:00:00")
            assert c.streams.audio[0].metadata.get("language") == "fra"
            got = c.chapters()
        assert [ch["metadata"]["title"] for ch in got] == [title for title, _, _ in chapters], name
        times = [float(t * ch["time_base"]) for ch in got for t in (ch["start"], ch["end"])]
        assert times == pytest.approx([t for _, a, b in chapters for t in (a, b)], abs=0.05), (name, times)


@pytest.mark.parametrize("ext", ["mov", "mp4"])
def test_an_iphones_place_make_model_and_local_time_are_kept(tmp_path, ext):
    """An iPhone writes where, on what and at what local time a video was recorded as QuickTime
    metadata keys (com.apple.quicktime.*); MP4/MOV dropped them unless written as such keys."""
    base = tmp_path / "base.mov"
    make_clip(base, frames=10, audio="aac")
    keys = {"com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
            "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 12",
            "com.apple.quicktime.creationdate": "2019-05-04T12:11:12+0200"}
    src = tmp_path / f"IMG_0001.{ext}"
    with av.open(str(base)) as c, av.open(str(src), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update({**keys, "title": "Paris"})
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams}
        for packet in c.demux():
            if packet.size:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    with av.open(str(src)) as c:
        assert {k: c.metadata.get(k) for k in keys} == keys
    dst = tmp_path / f"out.{ext}"
    passthrough(src, dst)
    with av.open(str(dst)) as c:
        assert {k: c.metadata.get(k) for k in keys} == keys and c.metadata.get("title") == "Paris"
        # (written as keys, the standard atoms are not: the title under Apple's key too, which its players read)
        assert c.metadata.get("com.apple.quicktime.title") == "Paris"


@pytest.mark.parametrize("ext", ["mov", "mkv"])
def test_strip_metadata_leaves_out_where_when_and_on_what_a_video_was_filmed(tmp_path, ext):
    """Footage of people who must not be found carried the place, time, camera, title and comments of the
    input: ``strip_metadata`` leaves out every tag of the file, the tracks' but their language, and the chapters
    and timecode; the pictures and sound are the same as without it."""
    from dataclasses import replace

    base = tmp_path / f"base.{ext}"
    _tagged_clip(base)
    src = tmp_path / f"IMG_0002.{ext}"
    tags = {"com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
            "com.apple.quicktime.model": "iPhone 15 Pro", "title": "Interview with J.", "comment": "source",
            "creation_time": "2026-03-01T10:00:00.000000Z", "timecode": "10:11:12:13"}
    with av.open(str(base)) as c, av.open(str(src), "w", options={"movflags": "use_metadata_tags"} if ext == "mov"
                                          else {}) as out:
        out.metadata.update(tags)
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams if s.type in ("video", "audio")}
        streams[1].metadata.update({"language": "fra", "title": "Interview J. mic"})
        out.set_chapters(c.chapters())
        for packet in c.demux():
            if packet.size and packet.stream_index in streams:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    with av.open(str(src)) as c:
        assert "iPhone" in str(c.metadata) and len(c.chapters()) == 3
    passthrough(src, tmp_path / f"kept.{ext}")
    # (asked for: not said lost; an MP4's chapter track was said "1 data stream of the input not copied")
    assert notes_of_passthrough(src, tmp_path / f"stripped.{ext}", replace(FAST, strip_metadata=True)) == []
    with av.open(str(tmp_path / f"kept.{ext}")) as kept, av.open(str(tmp_path / f"stripped.{ext}")) as stripped:
        assert "iPhone" in str(kept.metadata) and "Interview" in str(kept.metadata)
        assert {key.lower() for key in stripped.metadata} <= {"encoder", "major_brand", "minor_version", "compatible_brands"}
        assert stripped.chapters() == [] and len(kept.chapters()) == 3
        for stream in stripped.streams:
            assert {key.lower() for key in stream.metadata} - {"language", "handler_name", "vendor_id", "encoder", "duration"} == set()
            assert "Interview" not in str(stream.metadata) and "10:11" not in str(stream.metadata)
        assert stripped.streams.audio[0].metadata.get("language") == "fra"
        assert [s.type for s in stripped.streams] == ["video", "audio"]
        assert [bytes(p) for p in stripped.demux(stripped.streams.audio[0])] == \
            [bytes(p) for p in kept.demux(kept.streams.audio[0])]


def test_chapters_are_said_lost_only_where_the_output_cannot_hold_them(tmp_path):
    """An MP4's chapters are a text track FFmpeg reads as a data stream: it was said "not copied"
    though the chapters were written again. MPEG-TS holds neither chapters nor a file's tags: both
    were dropped without a word."""
    src = tmp_path / "holiday.mp4"
    _tagged_clip(src)
    with av.open(str(src)) as c:
        assert [s.type for s in c.streams].count("data") == 1 and len(c.chapters()) == 3

    def notes(name):
        with VideoReader(src) as reader, VideoWriter(tmp_path / name, reader.info, FAST, audio_from=src) as writer:
            for frame in reader.frames():
                writer.write(frame)
        return writer.notes

    assert notes("out.mp4") == [] and notes("out.mkv") == []
    assert notes("out.ts") == [
        "the input's chapters are not kept: .ts files hold none (.mkv, .mp4 and .mov do)",
        "the input's tags (creation_time, location, location-eng, title) are not kept: .ts files hold none (.mkv, .mp4 "
        "and .mov do)"]


def test_a_playlist_or_list_of_other_files_is_refused_and_a_name_like_an_address_is_a_file(tmp_path, monkeypatch):
    """FFmpeg picks a demuxer by a file's content: a 43-byte concat list called upload.mp4, or an HLS playlist,
    made the tool read and restore other files; a file named ``concat:a|b`` or ``http:host:port`` in the current
    folder was taken for an address (the concat protocol read other files, http made a request)."""
    from streamrestore.batch import count_frames
    from streamrestore.eval.flicker_metric import _decoded

    other = tmp_path / "private_other.mp4"
    make_clip(other, frames=5)
    upload = tmp_path / "upload.mp4"
    upload.write_text("ffconcat version 1.0\nfile private_other.mp4\n")
    _one_line_input_error(upload, r"upload.mp4 is an FFmpeg concat list, not a video: streamrestore reads only the "
                                  r"file it is given")
    playlist = tmp_path / "pl.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\nfile://{other}\n#EXT-X-ENDLIST\n")
    _one_line_input_error(playlist, r"pl.m3u8 is an HLS playlist, not a video")
    assert count_frames(upload) == count_frames(playlist) == -1 and count_frames(other) == 5
    with pytest.raises(av.error.ArgumentError):
        next(_decoded(upload, None))
    monkeypatch.chdir(tmp_path)  # (the name must begin the path FFmpeg is given to read as an address)
    named = tmp_path / f"concat:{other.name}|{other.name}"
    named.write_text("not a video\n")  # (taken for the concat protocol, the other video was read, twice)
    with pytest.raises(InputError, match=r"cannot read concat:private_other.mp4\|private_other.mp4 as a video"):
        VideoReader(named.name)
    named.write_bytes(other.read_bytes())
    with VideoReader(named.name) as reader:  # a video of that name is read as itself
        assert len(list(reader.frames())) == 5


def test_a_long_output_name_is_written_or_said_too_long(tmp_path):
    """A 240-byte input's output (253 bytes) failed as "cannot write to output folder ." (its temporary file's
    name was too long); a 251-byte one's gave a traceback."""
    from streamrestore.output_file import check_output_path, stale_temps, temp_beside

    long = tmp_path / ("a" * 240 + ".restored.mp4")
    check_output_path(long, force=False, example="out.mp4")
    temp = temp_beside(long)
    assert temp.exists() and len(temp.name) <= 255 and stale_temps(long) == [temp]
    too_long = tmp_path / ("b" * 251 + ".restored.mp4")
    with pytest.raises(OutputError, match=r"output name b+\.restored\.mp4 is too long for the file system \(264 "
                                          r"bytes\); give a shorter one with -o"):
        check_output_path(too_long, force=False, example="out.mp4")


def test_a_file_cut_off_in_its_header_is_said_cut_off_not_a_disk_error(tmp_path):
    """FFmpeg's "Input/output error" for a Matroska file cut off in its header sent an archivist to check the disk."""
    src = tmp_path / "full.mkv"
    make_clip(src, frames=10, audio="aac")
    cut = tmp_path / "cut.mkv"
    for size in (120, 400, 1000):
        cut.write_bytes(src.read_bytes()[:size])
        try:
            probe(cut)
        except InputError as exc:
            if "ends before its header could be read (cut off: a copy or download that did not finish?)" in str(exc):
                break
            assert "Input/output error" not in str(exc)
    else:
        pytest.fail("no cut gave FFmpeg's input/output error")


def test_a_video_that_turns_interlaced_after_a_progressive_start_is_deinterlaced_from_there(tmp_path):
    """A broadcast capture that opens on a progressive ident kept its combing, tagged progressive, with no
    word: only the first frame was looked at."""
    from media_utils import combing, make_interlaced_clip, moving_bar

    progressive, interlaced = tmp_path / "p.ts", tmp_path / "i.ts"
    make_clip(progressive, frames=6, picture=lambda i: moving_bar(96, 64, 2 * i))
    make_interlaced_clip(interlaced, frames=8, first=6)
    mixed = tmp_path / "mixed.ts"
    mixed.write_bytes(progressive.read_bytes() + interlaced.read_bytes())
    with VideoReader(mixed) as woven:
        flags = [frame.interlaced_frame for frame in woven.frames()]
    assert flags == [False] * 6 + [True] * 8 and not woven.info.interlaced  # (the case: the first frame progressive)
    with VideoReader(mixed, deinterlace=True) as reader:
        frames = list(reader.frames())
    after = [combing(f.to_ndarray(format="rgb24")) for f in frames[6:]]
    with VideoReader(mixed) as kept:
        as_decoded = [f.to_ndarray(format="rgb24") for f in kept.frames()]
    before = [combing(rgb) for rgb in as_decoded[6:]]
    assert len(frames) == 14 and sum(after) < 0.2 * sum(before), (after, before)  # (the bar leaves the picture)
    assert all(np.array_equal(f.to_ndarray(format="rgb24"), rgb) for f, rgb in zip(frames[:6], as_decoded))
    assert [f.pts for f in frames] == [f.pts for f in VideoReader(mixed).frames()]
    assert any("the input turns interlaced at 0.24 s (frame 6 of the window): from there each frame flagged "
               "interlaced was deinterlaced" in problem for problem in reader.problems), reader.problems


def test_a_matroska_files_attached_fonts_are_kept_in_matroska_and_named_elsewhere(tmp_path):
    """The font an MKV's ASS subtitles are styled with (an attached file) was dropped while the subtitles were
    copied, said only as "1 attachment stream of the input not copied". Its title goes with it (it was dropped).
    """
    import numpy as np

    src = tmp_path / "film.mkv"
    font = bytes(range(256)) * 40
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        out.add_attachment("Film Sans.ttf", "application/x-truetype-font", font).metadata["title"] = "Film Sans"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)

    def copy_to(dst):
        with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, audio_from=src) as writer:
            for frame in reader.frames():
                writer.write(frame)
        return writer.notes

    assert not any("attached" in note for note in copy_to(tmp_path / "out.mkv"))
    with av.open(str(tmp_path / "out.mkv")) as kept:
        attached = [s for s in kept.streams if s.type == "attachment"]
        assert [(s.name, s.mimetype, bytes(s.data)) for s in attached] == \
            [("Film Sans.ttf", "application/x-truetype-font", font)]
        assert attached[0].metadata.get("title") == "Film Sans"
    assert "1 attached file of the input not copied (Film Sans.ttf): .mp4 files hold none (.mkv does)" in \
        copy_to(tmp_path / "out.mp4")


def test_a_subtitle_line_on_screen_at_the_windows_start_or_end_is_kept_clipped(tmp_path):
    """--start 0.8 --end 2.0 dropped the lines on screen at 0.8 s (dialogue lost at a reel's cut) and let a line
    run 0.4 s past the end of the video."""
    base = tmp_path / "base.mkv"
    make_clip(base, frames=75, audio="aac")  # 3 s at 25 fps
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:01,200\non at the start\n\n"
                   "2\n00:00:01,500 --> 00:00:02,800\non at the end\n\n"
                   "3\n00:00:02,500 --> 00:00:02,900\nafter the end\n")
    src = _with_subtitles(base, srt, tmp_path / "subs.mkv")
    dst = tmp_path / "window.mkv"
    with VideoReader(src, start=0.8, end=2.0) as reader, \
            VideoWriter(dst, reader.info, FAST, audio_from=src, start=0.8, end=2.0) as writer:
        for frame in reader.frames():
            writer.write(frame)
    with av.open(str(dst)) as written:
        lines = [(bytes(p), round(float(p.pts * p.time_base), 3), round(float(p.duration * p.time_base), 3))
                 for p in written.demux(written.streams.subtitles) if p.size]
    assert lines == [(b"on at the start", 0.0, 0.4), (b"on at the end", 0.7, 0.5)], lines


def test_tune_grain_keeps_film_grain_the_default_encode_smooths(tmp_path):
    """The default encode smoothed film grain by about a tenth over the whole picture, faces restored or not, and
    there was no way to ask x264 to keep it."""
    import cv2

    rng = np.random.default_rng(0)
    src = tmp_path / "grain.mkv"
    make_clip(src, width=128, height=96, frames=8, codec="ffv1", options={},
              picture=lambda i: np.clip(96 + rng.normal(0, 14, (96, 128, 1)).repeat(3, 2), 0, 255).astype(np.uint8))

    def fine_grain(path):
        with VideoReader(path) as reader:
            lumas = [f.to_ndarray(format="gray").astype(np.float32) for f in reader.frames()]
        return float(np.mean([(y - cv2.GaussianBlur(y, (0, 0), 1)).std() for y in lumas]))

    kept = {}
    for tune in (None, "grain"):
        dst = tmp_path / f"out_{tune}.mp4"
        with VideoReader(src) as reader, VideoWriter(dst, reader.info, EncoderSettings(tune=tune)) as writer:
            for frame in reader.frames():
                writer.write(frame)
        kept[tune] = fine_grain(dst) / fine_grain(src)
    assert kept["grain"] > kept[None] + 0.03 and kept["grain"] > 0.9, kept
    assert EncoderSettings(tune="grain").options_for("libx265")["tune"] == "grain"
    with pytest.raises(ValueError, match="libx264 tunings are film, animation, grain"):
        EncoderSettings(tune="grainy").options_for("libx264")
    with pytest.raises(ValueError, match="libvpx-vp9 takes no tuning"):
        EncoderSettings(tune="grain").options_for("libvpx-vp9")


def test_a_tracks_title_names_it_in_an_mp4(tmp_path):
    """MKV to MP4: the tracks' titles ("日本語 Opus") were not their names there (MP4 players name a track by
    its handler name: "SoundHandler")."""
    base = tmp_path / "base.mkv"
    make_clip(base, frames=5, audio="aac")
    src = tmp_path / "titled.mkv"
    with av.open(str(base)) as given, av.open(str(src), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in given.streams}
        streams[1].metadata["title"] = "日本語 commentary"
        for packet in given.demux():
            if packet.size:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    dst = tmp_path / "out.mp4"
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, FAST, audio_from=src) as writer:
        for frame in reader.frames():
            writer.write(frame)
    with av.open(str(dst)) as written:
        assert written.streams.audio[0].metadata.get("handler_name") == "日本語 commentary"
        assert "handler_name" not in written.streams.video[0].metadata or \
            written.streams.video[0].metadata["handler_name"] != "日本語 commentary"


def test_field_rate_makes_a_frame_of_each_field(tmp_path):
    """50i lost every second field's instant (one frame per frame): --field-rate gives 50p, the motion whole."""
    from media_utils import combing, make_interlaced_clip

    src = tmp_path / "i.mkv"
    make_interlaced_clip(src, frames=8)
    with VideoReader(src) as reader:
        per_frame = list(reader.frames())
    with VideoReader(src, deinterlace="fields") as reader:
        frames = list(reader.frames())
        info = reader.info
    assert len(frames) == 2 * len(per_frame) == 16
    assert info.frame_rate == 50 and info.time_base == per_frame[0].time_base / 2 and not info.interlaced
    assert [f.pts for f in frames[::2]] == [2 * f.pts for f in per_frame]  # (each field at its own instant)
    assert [b.pts - a.pts for a, b in zip(frames, frames[1:])] == [per_frame[1].pts - per_frame[0].pts] * 15
    pictures = [f.to_ndarray(format="rgb24") for f in frames]
    assert max(combing(p) for p in pictures) < 0.5 * combing(per_frame[3].to_ndarray(format="rgb24"))
    # each field's instant: the two frames of one woven frame show the bar in two places (motion kept)
    assert all(np.abs(pictures[2 * i].astype(int) - pictures[2 * i + 1]).mean() > 1 for i in range(8))
    dst = tmp_path / "p.mp4"
    with VideoWriter(dst, info, FAST, audio_from=src) as writer:
        for frame in frames:
            writer.write(frame)
    with VideoReader(dst) as written:
        assert len(list(written.frames())) == 16 and written.info.frame_rate == 50
    with pytest.raises(ValueError, match="deinterlace must be True, False or 'fields'"):
        VideoReader(src, deinterlace="field")


def test_a_cameras_raw_streams_are_read_windowed_and_listed(tmp_path):
    """A DVR's raw .h264 with --start failed ("no video frame could be decoded; the file is damaged": the seeks
    left the demuxer at its end, cctv 3); an IP camera's MJPEG dump (JPEGs one after another) was "a still
    image" (cctv 4); a batch's folder left both out (cctv 9)."""
    import cv2

    from streamrestore.batch import expand_inputs

    raw = tmp_path / "ch1.h264"
    make_clip(raw, frames=30, fps=30, time_base=Fraction(1, 30))  # (x264 writes its timing into the stream)
    with VideoReader(raw) as reader:
        whole = len(list(reader.frames()))
    assert reader.info.frame_rate == 30  # (the stream's own: FFmpeg's raw demuxer says 25, cctv 7)
    with VideoReader(raw, start=0.4) as reader:
        windowed = list(reader.frames())
    assert whole == 30 and 0 < len(windowed) < 30

    dump = tmp_path / "cam.mjpeg"
    pictures = [cv2.imencode(".jpg", np.full((48, 64, 3), 40 * i, np.uint8))[1].tobytes() for i in range(3)]
    dump.write_bytes(b"".join(pictures))
    with VideoReader(dump) as reader:
        assert len(list(reader.frames())) == 3
    single = tmp_path / "one.mjpeg"
    single.write_bytes(pictures[0])
    with pytest.raises(InputError, match="is a still image"):
        VideoReader(single)
    assert {p.name for p in expand_inputs([tmp_path], None)} >= {"ch1.h264", "cam.mjpeg"}


@pytest.mark.parametrize("dst_name", ["out.mp4", "out.mov"])
def test_a_video_starting_between_milliseconds_keeps_its_first_pts_in_mp4(tmp_path, dst_name):
    """A dashcam's fragmented MP4 starting at 1024/15360 s came out 10 ticks early, every frame: MP4's edit
    list that delays the video counts in the movie's time scale, 1000 by default (66 ms for 66.67). The
    movie's scale now holds the stream's every tick (:func:`streamrestore.video.writer.movie_timescale`)."""
    src = tmp_path / "cam.mp4"
    # (a fragmented MP4 has no edit list: the B-frames' delay puts its first frame at 1024/15360 s)
    with av.open(str(src), "w", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            picture = np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert read_video_timing(src)[0][0] == Fraction(1024, 15360)
    dst = tmp_path / dst_name
    passthrough(src, dst, settings=EncoderSettings())  # (veryfast: B-frames, an edit list of their own too)
    assert read_video_timing(dst)[0] == read_video_timing(src)[0]


def test_movie_timescale():
    from streamrestore.video.writer import movie_timescale

    assert movie_timescale(Fraction(1, 15360)) == 384000  # (every tick, and every millisecond)
    assert movie_timescale(Fraction(1, 12800)) == 64000
    assert movie_timescale(Fraction(1, 25)) == movie_timescale(Fraction(1, 1000)) == movie_timescale(None) == 1000
    assert movie_timescale(Fraction(1001, 30000)) == 30000
    assert movie_timescale(Fraction(1, 2**31 - 1)) == 2**31 - 1  # (the muxer's largest)


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv", "webm"])
def test_a_restored_video_says_so_in_its_comment_ahead_of_the_inputs(tmp_path, ext, synthetic_faces):
    """A restored shop camera's export kept its title, date and comment ("DVR export, evidence #1234"), and
    nothing in it said its faces were made by a network: passed on, it read as the camera's own. Its comment
    now says so, the input's after it; a file restored again carries one mark; without tags to keep
    (``strip_metadata``) the mark alone."""
    from dataclasses import replace

    from media_utils import remux_with_tags

    from streamrestore.api import restore_video
    from streamrestore.pipeline import FaceRestorer
    from streamrestore.provenance import ORIGINAL_COMMENT, restored_comment

    src = tmp_path / f"cam.{ext}"
    codec = "libvpx-vp9" if ext == "webm" else "libx264"
    make_clip(src, frames=3, codec=codec, options={} if ext == "webm" else {"preset": "ultrafast"})
    tagged = tmp_path / f"tagged.{ext}"
    remux_with_tags(src, tagged, {"title": "CAM02 SHOP", "comment": "DVR export, evidence #1234"})

    def comment(path: Path) -> str | None:
        with av.open(str(path)) as c:
            return next((value for key, value in c.metadata.items() if key.lower() == "comment"), None)

    assert comment(tagged) == "DVR export, evidence #1234"
    mark = restored_comment()
    assert mark.startswith("faces restored by streamrestore ") and "generated, not recorded" in mark
    encoder = replace(FAST, codec="vp9", preset="8") if ext == "webm" else FAST
    once, twice, stripped = (tmp_path / f"{name}.{ext}" for name in ("once", "twice", "stripped"))
    restore_video(tagged, once, FaceRestorer.from_options(model="identity"), encoder=encoder)
    assert comment(once) == f"{mark}{ORIGINAL_COMMENT}DVR export, evidence #1234"
    with av.open(str(once)) as c:
        assert any(value == "CAM02 SHOP" for value in c.metadata.values())  # (the input's other tags kept)
    restore_video(once, twice, FaceRestorer.from_options(model="identity"), encoder=encoder)
    assert comment(twice) == comment(once)
    restore_video(tagged, stripped, FaceRestorer.from_options(model="identity"),
                  encoder=replace(encoder, strip_metadata=True))
    assert comment(stripped) == mark
    passthrough(tagged, tmp_path / f"plain.{ext}", settings=encoder)  # (the writer alone: the input's, as it was)
    assert comment(tmp_path / f"plain.{ext}") == "DVR export, evidence #1234"


@pytest.mark.parametrize("ext", ["mov", "mkv"])
def test_a_mov_tracks_names_are_kept(tmp_path, ext):
    """A camera's MOV names its lav mics' tracks ("lav1", "lav2"), read as each track's ``name``, which no
    muxer writes under that key: the names were dropped. They are written as the tracks' titles."""
    from media_utils import _write_tone as write_tone

    src = tmp_path / "interview.mov"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        mics = [out.add_stream("aac", rate=48000) for _ in range(2)]
        for number, mic in enumerate(mics, 1):
            mic.layout = "mono"
            mic.metadata["title"] = f"lav{number}"  # (MOV writes a title as the track's name)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(pattern(64, 48, i), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for mic in mics:
            write_tone(out, mic, 0.4)
    with av.open(str(src)) as c:
        assert [s.metadata.get("name") for s in c.streams.audio] == ["lav1", "lav2"]
    dst = tmp_path / f"out.{ext}"
    passthrough(src, dst)
    with av.open(str(dst)) as c:
        named = [{key.lower(): value for key, value in s.metadata.items()} for s in c.streams.audio]
    assert [track.get("name", track.get("title")) for track in named] == ["lav1", "lav2"]


def test_frames_whose_side_data_was_read_are_freed_as_the_run_goes(tmp_path, monkeypatch):
    """PyAV 18 keeps a frame whose side data was read in a reference cycle with it: freed by Python's cyclic
    collector only, which a run of few Python objects seldom wakes. A 4K 10-bit clip held ~100 such frames
    (1.1 GB of a 4.9 GB peak). ``restore_frames`` runs the collector every SWEEP_EVERY_BYTES of frames."""
    import gc

    import streamrestore.run as run_module

    src = tmp_path / "a.mp4"
    make_clip(src, frames=40, width=128, height=96)

    def live_frames() -> int:
        return sum(1 for thing in gc.get_objects() if type(thing) is av.VideoFrame)

    def frames_touched():
        with VideoReader(src) as reader:
            for frame in reader.frames():
                len(frame.side_data)  # (what frame_like reads of each frame it copies)
                yield frame

    class Sink:
        written = 0
        held = 0  # frames alive as the last one is written

        def write(self, frame) -> None:
            self.written += 1
            if self.written == 40:
                self.held = live_frames()

    held = {}
    was_enabled = gc.isenabled()
    gc.collect()
    before = live_frames()  # (frames other tests keep, in a whole run)
    gc.disable()  # (as a run of few Python objects: the collector never woken by itself)
    try:
        for sweep in (1 << 60, 1):
            monkeypatch.setattr(run_module, "SWEEP_EVERY_BYTES", sweep)
            sink = Sink()
            run_module.restore_frames(frames_touched(), sink)
            held[sweep] = sink.held - before
            assert live_frames() <= before  # (and whatever was left, collected as the run ended)
    finally:
        if was_enabled:
            gc.enable()
    # (the queues hold up to 8 frames each, the reader and the writer one more)
    assert held[1 << 60] >= 30 and held[1] <= 20, held
    assert gc.get_freeze_count() == 0  # (the heap frozen for the run's collections only: given back)
    # a run's last frames (since its last sweep) are collected as it ends: the next run froze them, and a batch
    # worker's chunks piled up 12, 24, 36... frames
    gc.disable()
    try:
        monkeypatch.setattr(run_module, "SWEEP_EVERY_BYTES", 1 << 60)
        for _ in range(3):
            run_module.restore_frames(frames_touched(), Sink())
            assert live_frames() <= before
        # a heap the application froze itself (before forking its workers) stays frozen
        gc.freeze()
        frozen = gc.get_freeze_count()
        run_module.restore_frames(frames_touched(), Sink())
        assert gc.get_freeze_count() == frozen
        gc.unfreeze()
    finally:
        if was_enabled:
            gc.enable()
