"""Small synthetic clips for tests, written with PyAV into a test's tmp_path.

Frames are textured (smooth gradients, sharp edges, fixed-seed noise, a moving square) so
that compression keeps them recognisable and a one-pixel shift is measurable.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np


def pattern(width: int, height: int, index: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB test picture; differs per ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(1234)
    noise = rng.integers(0, 40, size=(height, width), dtype=np.int64)
    r = (x * 255 // max(1, width - 1) + noise) % 256
    g = (y * 255 // max(1, height - 1) + 3 * index) % 256
    b = ((x // 8 + y // 8) % 2) * 180 + 40
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    side = max(4, min(width, height) // 4)
    x0 = (index * 5) % max(1, width - side)
    y0 = (index * 3) % max(1, height - side)
    img[y0 : y0 + side, x0 : x0 + side] = (250, 250, 20)
    return img


def make_clip(
    path: Path,
    *,
    width: int = 96,
    height: int = 64,
    frames: int = 12,
    fps: int = 25,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    color: dict[str, int] | None = None,
    audio: str | None = None,
    audio_seconds: float | None = None,
    picture: Callable[[int], np.ndarray] | None = None,
) -> list[int]:
    """Write a clip and return the pts (in ``time_base``) of its frames.

    ``pts`` given: frames at exactly those timestamps (variable frame rate); else ``frames``
    frames at ``fps``. ``audio``: an audio encoder name ("aac", "libopus") to add a tone.
    ``color``: codec-context colour fields, e.g. {"color_range": 1, "colorspace": 1}.
    ``picture``: the (height, width, 3) uint8 RGB of frame i (default: :func:`pattern`).
    """
    time_base = time_base or Fraction(1, fps * 100)
    if pts is None:
        step = int(1 / (fps * time_base))
        pts = [i * step for i in range(frames)]
    if options is None:
        options = {"preset": "ultrafast", "crf": "10"} if codec in ("libx264", "libx265") else {}
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        video.time_base = time_base
        for key, value in (color or {}).items():
            setattr(video.codec_context, key, value)
        if rotation:
            video.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream(audio, rate=48000)
            astream.layout = "mono"
        for i, p in enumerate(pts):
            rgb = picture(i) if picture is not None else pattern(width, height, i)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if astream is not None:
            last_step = pts[-1] - pts[-2] if len(pts) > 1 else 1
            seconds = audio_seconds or float((pts[-1] + last_step) * time_base)
            _write_tone(out, astream, seconds)
    return pts


def make_face_clip(path: Path, *, width: int = 160, height: int = 120, frames: int = 16, person: str = "ann",
                   grain: bool = False, **options) -> list[np.ndarray]:
    """A clip of one drawn face moving over a textured backdrop (:mod:`synthetic_faces`); returns
    the face's (5, 2) landmarks in each frame. ``grain``: the backdrop's noise changes every frame
    (large encoded frames). ``options``: as for :func:`make_clip` (fps, audio, codec...)."""
    from synthetic_faces import face_frames

    pictures, truth = face_frames(frames, width, height, person, grain)
    make_clip(path, width=width, height=height, frames=frames, picture=pictures.__getitem__, **options)
    return truth


def _write_tone(out, stream, seconds: float) -> None:
    rate = 48000
    if not stream.codec_context.is_open:
        stream.codec_context.open()  # frame_size is known once the encoder is open
    chunk = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    t = np.arange(total) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt = stream.codec_context.format.name
    for start in range(0, total, chunk):
        part = samples[start : start + chunk]
        if len(part) < chunk:
            part = np.pad(part, (0, chunk - len(part)))
        if fmt == "s16":
            pcm = (part * 32767).astype(np.int16)[None, :]
        else:
            pcm = part[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_audio_only(path: Path, seconds: float = 1.0, codec: str = "aac") -> None:
    """An audio-only file (e.g. .m4a) with a tone."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=48000)
        stream.layout = "mono"
        _write_tone(out, stream, seconds)


def make_raw_stream(src: Path, dst: Path) -> None:
    """``dst``: the video packets of ``src`` as an H.264 elementary stream (no timestamps at all)."""
    with av.open(str(src)) as c, av.open(str(dst), "w", format="h264") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(video=0):
            if packet.size:
                packet.stream = stream
                out.mux(packet)


def make_zero_pts_clip(path: Path, frames: int, keyframe_every: int = 25) -> None:
    """A broken mux: ``frames`` H.264 frames at 25 fps whose packets all sit at pts 0 (each frame's
    time, 1/15360 s after the one before, rounds to 0 at the stream's 1/25)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": str(keyframe_every)})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 15360)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def make_size_switch_clip(path: Path, frames: int = 30, options: dict[str, str] | None = None) -> None:
    """An MPEG-TS capture whose H.264 video switches from 96x64 to 64x48 after ``frames`` frames (a
    broadcast's SD advert), timestamps going on at 25 fps: the two parts' packets in one stream."""
    hd, sd = path.with_name(path.stem + "-hd.ts"), path.with_name(path.stem + "-sd.ts")
    make_clip(hd, width=96, height=64, frames=frames, options=options)
    make_clip(sd, width=64, height=48, frames=frames, options=options, picture=lambda i: pattern(64, 48, i))
    with av.open(str(hd)) as first, av.open(str(sd)) as second, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(first.streams.video[0])
        for part, shift in ((first, 0), (second, frames * 3600)):  # (90 kHz / 25 per frame)
            for packet in part.demux(part.streams.video[0]):
                if packet.size:
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = stream
                    out.mux(packet)
    hd.unlink()
    sd.unlink()


def _caption_sei(pairs: list[tuple[int, int]]) -> bytes:
    """An H.264 SEI NAL unit (Annex B) holding CEA-608 byte pairs as ATSC A/53 cc_data, as broadcast
    encoders send captions: user data registered by ITU-T T.35 (USA, provider 0x31, "GA94")."""
    cc = bytes([0x03, 0x40 | len(pairs), 0xFF]) + b"".join(bytes([0xFC, a, b]) for a, b in pairs) + b"\xff"
    payload = bytes([0xB5, 0x00, 0x31]) + b"GA94" + cc
    rbsp = bytes([4, len(payload)]) + payload + b"\x80"  # payload type 4, its size; the stop bit
    escaped, zeros = bytearray(), 0
    for byte in rbsp:  # emulation prevention: no 00 00 0x (x <= 3) inside a NAL unit
        if zeros >= 2 and byte <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return b"\x00\x00\x00\x01\x06" + bytes(escaped)


def add_captions(src: Path, dst: Path) -> None:
    """``dst`` (MPEG-TS): ``src``'s H.264 packets (an Annex B stream: an MPEG-TS file) each with a
    closed-caption SEI before its picture, two CEA-608 bytes that differ per packet. Decoded, each
    frame carries them as A53_CC side data (see :func:`read_captions`)."""
    with av.open(str(src)) as c, av.open(str(dst), "w", format="mpegts") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for i, packet in enumerate(p for p in c.demux(video=0) if p.size):
            data, at = bytes(packet), 0
            while True:  # the first picture NAL unit (non-IDR 1, IDR 5) after its start code
                at = data.index(b"\x00\x00\x01", at) + 3
                if data[at] & 0x1F in (1, 5):
                    break
            start = at - 4 if at >= 4 and data[at - 4] == 0 else at - 3
            captioned = av.Packet(data[:start] + _caption_sei([(0x41 + i % 26, 0x61 + i % 26)]) + data[start:])
            captioned.pts, captioned.dts, captioned.time_base = packet.pts, packet.dts, packet.time_base
            captioned.is_keyframe = packet.is_keyframe
            captioned.stream = stream
            out.mux(captioned)


def read_captions(path: Path) -> list[bytes | None]:
    """Each decoded frame's closed captions (its A53_CC side data), None where it has none."""
    with av.open(str(path)) as c:
        return [next((bytes(d) for d in f.side_data.keys() if d.type.name == "A53_CC"), None)
                for f in c.decode(video=0)]


def read_video_timing(path: Path) -> tuple[list[Fraction], list[Fraction]]:
    """(presentation times, durations) of every video packet, in presentation order, exact."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rows = sorted(
            (p.pts * p.time_base, (p.duration or 0) * p.time_base) for p in c.demux(v) if p.size
        )
    return [r[0] for r in rows], [r[1] for r in rows]


def read_audio_packets(path: Path) -> dict[int, list[tuple[Fraction, Fraction, bytes]]]:
    """Per audio stream (by order): (pts time, dts time, payload bytes) of every packet."""
    with av.open(str(path)) as c:
        streams = list(c.streams.audio)
        order = {s.index: k for k, s in enumerate(streams)}
        result: dict[int, list] = {k: [] for k in order.values()}
        if streams:
            for p in c.demux(streams):
                if p.size:
                    result[order[p.stream_index]].append(
                        (p.pts * p.time_base, p.dts * p.time_base, bytes(p))
                    )
    return result


def decode_rgb(path: Path, index: int = 0) -> np.ndarray:
    """RGB of the ``index``-th decoded frame of ``path``."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise IndexError(f"{path} has no frame {index}")


def read_rgb(path, size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, optionally resized to ``size`` x ``size``."""
    import cv2

    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    if size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1])


def moving_bar(width: int, height: int, instant: int) -> np.ndarray:
    """A bright upright bar on grey that moves 4 px per field instant (what an interlaced clip's
    fields show at their own instants)."""
    rgb = np.full((height, width, 3), 60, np.uint8)
    x = 8 + 4 * instant
    rgb[height // 6: height - height // 6, x: x + width // 6] = 220
    return rgb


def make_interlaced_clip(path: Path, *, width: int = 96, height: int = 64, frames: int = 8,
                         options: dict[str, str] | None = None, first: int = 0) -> None:
    """An interlaced H.264 clip as a camcorder writes one: each frame flagged interlaced and woven
    from two fields of :func:`moving_bar` at different instants. x264 codes PyAV's frames bottom
    field first, so frame i's odd rows are instant 2i and its even rows instant 2i + 1. ``first``: the
    number of frame 0 (its instants and its time at 25 fps), for a clip that goes on another."""
    def woven(i: int) -> np.ndarray:
        rgb = moving_bar(width, height, 2 * (i + first) + 1)
        rgb[1::2] = moving_bar(width, height, 2 * (i + first))[1::2]
        return rgb

    make_clip(path, width=width, height=height, picture=woven, pts=[(first + i) * 100 for i in range(frames)],
              time_base=Fraction(1, 2500),
              options={"preset": "ultrafast", "crf": "10", "flags": "+ildct+ilme", **(options or {})})


def combing(rgb: np.ndarray) -> float:
    """How much each row differs from the mean of its neighbours (levels): high where two fields
    of different instants are woven, low in a progressive picture."""
    rows = rgb.astype(float)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def remux_with_tags(src: Path, dst: Path, tags: dict[str, str]) -> None:
    """``dst``: the video packets of ``src`` as they are, in a file with the file tags ``tags``."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        out.metadata.update(tags)
        stream = out.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
