"""Faces of a video of non-square pixels (an anamorphic DVD or DV), restored by the main command.

The degraded copy of a clip is squeezed to the width a DVD would store it at (its width divided by
the pixel aspect, default 32:27) and tagged with that aspect; it is restored as the file says it is
shown, the output stretched back and its face boxes (SCRFD on the clean clip) compared with the clean
clip. The same squeezed copy stretched back to square pixels first is restored too: the bound that
storing the picture narrower leaves. ``--checkout`` runs another checkout's command (before/after).

    python benchmarks/anamorphic_faces.py CLEAN.mp4 DEGRADED.mp4 --refs DIR --out runs/anamorphic \
        --face-models ../shared/models/insightface [--aspect 32/27] [--frames 48] [--checkout PATH]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamrestore.faces.detect import create_detector


def decoded(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(count))]


def write(path: Path, pictures: list[np.ndarray], aspect: Fraction | None = None) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "12", "preset": "fast"})
        stream.width, stream.height, stream.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p"
        if aspect is not None:
            stream.codec_context.sample_aspect_ratio = aspect
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clean")
    p.add_argument("degraded")
    p.add_argument("--refs", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face-models", required=True)
    p.add_argument("--aspect", type=Fraction, default=Fraction(32, 27))
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--checkout", help="run the command of this checkout (default: the installed package)")
    args = p.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    clean, damaged = decoded(Path(args.clean), args.frames), decoded(Path(args.degraded), args.frames)
    height, width = damaged[0].shape[:2]
    stored = int(round(width / args.aspect / 2)) * 2
    squeezed = [cv2.resize(d, (stored, height), interpolation=cv2.INTER_AREA) for d in damaged]

    def stretched(pictures):
        return [cv2.resize(x, (width, height), interpolation=cv2.INTER_CUBIC) for x in pictures]

    write(args.out / "squeezed.mp4", squeezed, args.aspect)
    write(args.out / "square.mp4", stretched(squeezed))
    env = dict(os.environ, **({"PYTHONPATH": args.checkout} if args.checkout else {}))
    for name in ("squeezed", "square"):
        # run from the output folder: `python -m` puts the working folder before PYTHONPATH
        subprocess.run([sys.executable, "-m", "streamrestore.cli", str(args.out / f"{name}.mp4"), "-o",
                        str(args.out / f"{name}_restored.mp4"), "--force", "--refs", str(Path(args.refs).resolve()),
                        "--face-models", str(Path(args.face_models).resolve()), "--no-progress"], check=True, env=env,
                       capture_output=True, cwd=args.out)
    detector = create_detector("scrfd", models_dir=args.face_models)
    boxes = [detector.detect(c)[0].box for c in clean]

    def face_psnr(pictures):
        values = []
        for picture, truth, box in zip(pictures, clean, boxes):
            x0, y0, x1, y1 = (max(0, int(v)) for v in box)
            values.append(psnr(picture[y0:y1, x0:x1], truth[y0:y1, x0:x1]))
        return np.mean(values)

    print(f"pixel aspect {args.aspect}, stored {stored} x {height} for {width} x {height} shown")
    print(f"input, shown:                    {face_psnr(stretched(decoded(args.out / 'squeezed.mp4', args.frames))):.2f} dB")
    print(f"restored as the file says:       {face_psnr(stretched(decoded(args.out / 'squeezed_restored.mp4', args.frames))):.2f} dB")
    print(f"restored from square pixels:     {face_psnr(decoded(args.out / 'square_restored.mp4', args.frames)):.2f} dB")


if __name__ == "__main__":
    main()
