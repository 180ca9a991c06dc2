"""Photos restored by the main command: each clean photo degraded, restored, measured against itself.

Each photo (at most 1200 px on its longer side) is blurred (1.2 px), shrunk 4x, saved as JPEG at
quality 40 and enlarged back (bicubic): the video benchmark's default damage, on a still. It is then
restored with ``streamrestore PHOTO -o OUT.png`` (without references unless ``--refs``), and the face
boxes SCRFD finds on the clean photo are compared: PSNR of the degraded input and of the restored
photo against the clean one.

    python benchmarks/degraded_photos.py ../shared/data/deepface/img10.jpg ... --out runs/photos \
        --face-models ../shared/models/insightface [--refs DIR]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from streamrestore.faces.detect import create_detector
from streamrestore.images import read_rgb


def degraded(clean: np.ndarray) -> np.ndarray:
    h, w = clean.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(clean, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    small = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face-models", required=True)
    p.add_argument("--refs")
    p.add_argument("--model", default="lite")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    detector = create_detector("scrfd", models_dir=args.face_models)
    gains = []
    for photo in map(Path, args.photos):
        clean = read_rgb(photo)
        h, w = clean.shape[:2]
        if max(h, w) > 1200:
            scale = 1200 / max(h, w)
            clean = cv2.resize(clean, (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2), interpolation=cv2.INTER_AREA)
        damaged = args.out / f"{photo.stem}_degraded.png"
        cv2.imwrite(str(damaged), degraded(clean)[:, :, ::-1])
        restored = args.out / f"{photo.stem}_restored.png"
        refs = ["--refs", args.refs] if args.refs else []
        subprocess.run([sys.executable, "-m", "streamrestore.cli", str(damaged), "-o", str(restored), "--force",
                        "--model", args.model, "--face-models", args.face_models, *refs], check=True,
                       capture_output=True)
        before, after = read_rgb(damaged), read_rgb(restored)
        for face in detector.detect(clean):
            x0, y0, x1, y1 = (max(0, int(v)) for v in face.box)
            box = (slice(y0, y1), slice(x0, x1))
            gain = psnr(after[box], clean[box]) - psnr(before[box], clean[box])
            gains.append(gain)
            print(f"{photo.name}: face {x1 - x0} px, input {psnr(before[box], clean[box]):.2f} dB, "
                  f"restored {psnr(after[box], clean[box]):.2f} dB ({gain:+.2f})", flush=True)
    print(f"mean gain over {len(gains)} faces: {np.mean(gains):+.2f} dB")


if __name__ == "__main__":
    main()
