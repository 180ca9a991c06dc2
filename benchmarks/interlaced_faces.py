"""Faces of an interlaced video, restored deinterlaced (the default) and woven (``--no-deinterlace``).

A progressive clip becomes an interlaced one as a camcorder writes it: each frame woven from two
consecutive source frames as its two fields, flagged interlaced (x264 codes PyAV's frames bottom
field first: odd rows from source frame 2i, even rows from 2i + 1). The truth for frame i is source
frame 2i, the first field's instant. Reported per version: face-box PSNR against the truth (SCRFD
boxes on the truth), and the combing (each row against the mean of its neighbours, levels).

    python benchmarks/interlaced_faces.py ../shared/data/liveportrait/source/s13.mp4 --out runs/interlaced \
        --face-models ../shared/models/insightface [--frames 96] [--model lite]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

from streamrestore.faces.detect import create_detector


def write(path: Path, pictures: list[np.ndarray], rate, options: dict[str, str]) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "14", "preset": "fast", **options})
        stream.width, stream.height, stream.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p"
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def combing(rgb: np.ndarray) -> float:
    rows = rgb.astype(float)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face-models", required=True)
    p.add_argument("--frames", type=int, default=96, help="source frames used (two per interlaced frame)")
    p.add_argument("--model", default="lite")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with av.open(args.clip) as c:
        rate = c.streams.video[0].average_rate / 2
    source = decoded(Path(args.clip))[: args.frames // 2 * 2]
    woven = []
    for i in range(len(source) // 2):
        picture = source[2 * i + 1].copy()
        picture[1::2] = source[2 * i][1::2]
        woven.append(picture)
    interlaced, truth = args.out / "interlaced.mp4", args.out / "truth.mp4"
    write(interlaced, woven, rate, {"flags": "+ildct+ilme"})
    write(truth, source[::2], rate, {})
    versions = {"input (woven)": interlaced}
    for name, extra in (("restored, deinterlaced", []), ("restored, --no-deinterlace", ["--no-deinterlace"])):
        dst = args.out / f"{name.split(', ')[1].strip('-')}.mp4"
        subprocess.run([sys.executable, "-m", "streamrestore.cli", str(interlaced), "-o", str(dst), "--force",
                        "--model", args.model, "--face-models", args.face_models, "--no-progress", *extra], check=True)
        versions[name] = dst
    detector = create_detector("scrfd", models_dir=args.face_models)
    truths = decoded(truth)
    boxes = []
    for picture in truths:
        faces = detector.detect(picture)
        boxes.append(None if not faces else [max(0, int(v)) for v in faces[0].box])
    for name, path in versions.items():
        pictures = decoded(path)
        scores = [psnr(o[y0:y1, x0:x1], t[y0:y1, x0:x1])
                  for o, t, b in zip(pictures, truths, boxes) if b is not None for x0, y0, x1, y1 in [b]]
        print(f"{name:28s} face PSNR {np.mean(scores):.2f} dB over {len(scores)} frames, "
              f"combing {np.mean([combing(o) for o in pictures]):.2f}")


if __name__ == "__main__":
    main()
