"""Video I/O cost per frame: decode only, decode + RGB round trip, decode + encode.

The pipeline benchmark compares its per-frame time against "decode+encode" here: that is
the floor any restoration run pays. Example:

    python benchmarks/bench_video_io.py ../shared/data/face_recognition/short_hamilton_clip.mp4
    python benchmarks/bench_video_io.py clip.mp4 --codec libx264 --preset medium --quality

``--quality`` also encodes the RGB round trip at several CRFs and reports PSNR / SSIM
against the decoded source (the basis of the default CRFs in streamrestore.video.writer).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from streamrestore.video import EncoderSettings, VideoReader, VideoWriter, frame_to_rgb


def _decode_only(src: Path, end: float | None) -> tuple[int, float]:
    t0 = time.perf_counter()
    with VideoReader(src, end=end) as reader:
        n = sum(1 for _ in reader.frames())
    return n, time.perf_counter() - t0


def _decode_rgb(src: Path, end: float | None) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with VideoReader(src, end=end) as reader:
        for frame in reader.frames():
            frame_to_rgb(frame)
            n += 1
    return n, time.perf_counter() - t0


def _decode_encode(src: Path, dst: Path, settings: EncoderSettings, end: float | None,
                   rgb: bool) -> tuple[int, float]:
    t0 = time.perf_counter()
    with VideoReader(src, end=end) as reader, VideoWriter(
        dst, reader.info, settings, audio_from=src, end=end, force=True
    ) as writer:
        for frame in reader.frames():
            if rgb:
                new = av.VideoFrame.from_ndarray(frame_to_rgb(frame), format="rgb24")
                new.pts, new.time_base = frame.pts, frame.time_base
                frame = new
            writer.write(frame)
    return writer.frames_written, time.perf_counter() - t0


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images (8x8 box windows; enough to rank CRFs)."""
    import cv2

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.blur(x, (8, 8))  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def _quality(src: Path, dst: Path, codec: str, preset: str | None, crf: int,
             end: float | None) -> tuple[float, float, int]:
    settings = EncoderSettings(codec=codec, crf=crf, preset=preset)
    _decode_encode(src, dst, settings, end, rgb=True)
    with VideoReader(src, end=end) as a, VideoReader(dst) as b:
        psnrs, ssims = [], []
        for fa, fb in zip(a.frames(), b.frames()):
            ya = fa.to_ndarray(format="gray")
            yb = fb.to_ndarray(format="gray")
            mse = np.mean((ya.astype(np.float64) - yb) ** 2)
            psnrs.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
            ssims.append(_ssim(ya, yb))
    return float(np.mean(psnrs)), float(np.mean(ssims)), dst.stat().st_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--codec", default=None, help="encoder or alias (default: libx264)")
    parser.add_argument("--preset", default=None, help="encoder preset (default: the writer's)")
    parser.add_argument("--crf", type=int, default=None)
    parser.add_argument("--end", type=float, default=None, help="only the first END seconds")
    parser.add_argument("--quality", action="store_true", help="PSNR/SSIM per CRF (luma)")
    parser.add_argument("--crfs", default="12,15,17,19,23", help="CRFs for --quality")
    args = parser.parse_args(argv)

    settings = EncoderSettings(codec=args.codec, crf=args.crf, preset=args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / f"bench{args.clip.suffix or '.mp4'}"
        rows = [
            ("decode", *_decode_only(args.clip, args.end)),
            ("decode+rgb", *_decode_rgb(args.clip, args.end)),
            ("decode+encode", *_decode_encode(args.clip, dst, settings, args.end, rgb=False)),
            ("decode+rgb+encode", *_decode_encode(args.clip, dst, settings, args.end, rgb=True)),
        ]
        codec = settings.codec_for(dst)
        options = settings.options_for(codec)
        print(f"clip: {args.clip}  encoder: {codec} {options}")
        print(f"{'stage':<20}{'frames':>8}{'total s':>10}{'ms/frame':>10}{'fps':>8}")
        for name, n, seconds in rows:
            print(f"{name:<20}{n:>8}{seconds:>10.2f}{1000 * seconds / n:>10.2f}{n / seconds:>8.1f}")

        if args.quality:
            print(f"\n{'crf':>4}{'PSNR-Y dB':>11}{'SSIM-Y':>9}{'kbit/s':>9}")
            for crf in (int(c) for c in args.crfs.split(",")):
                psnr, ssim, size = _quality(args.clip, dst, codec, args.preset, crf, args.end)
                with av.open(str(dst)) as c:
                    seconds = c.duration / av.time_base
                print(f"{crf:>4}{psnr:>11.2f}{ssim:>9.4f}{size * 8 / 1000 / seconds:>9.0f}")


if __name__ == "__main__":
    main()
