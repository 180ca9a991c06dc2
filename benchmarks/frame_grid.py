"""A frame-by-frame look at what the pipeline does to a real clip: input | restored face crops.

Runs the whole pipeline (detection, tracking, the restorer, temporal smoothing, paste-back) on a
clip and writes a PNG grid: one row per sampled frame, the face region of the input on the left,
the same region of the output on the right, so artefacts, seams, flicker and identity drift can
be checked by eye.

    python benchmarks/frame_grid.py CLIP -o grid.png [--refs DIR] [--model lite] [--rows 6]
        [--face-models DIR] [--size 256] [--clean CLEAN_CLIP] [--adapt]

Clips under a non-commercial licence (e.g. KEEP's ``real_*.mp4`` in ../shared/data/keep) are for
looking at, not for shipping: write their grids outside the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np

from streamrestore.api import build_face_restorer
from streamrestore.pipeline import PipelineConfig


def face_box(faces, shape, margin: float = 0.35) -> tuple[int, int, int, int] | None:
    """A square around the largest restored face (its crop's footprint plus ``margin``)."""
    best = None
    for f in faces:
        inv = cv2.invertAffineTransform(f.matrix)
        r = f.pixels.shape[0]
        corners = np.array([[0, 0, 1], [r, 0, 1], [0, r, 1], [r, r, 1]], np.float64) @ inv.T
        side = float(np.ptp(corners[:, 0]))
        if best is None or side > best[2]:
            best = (*corners.mean(0), side)
    if best is None:
        return None
    cx, cy, side = best
    half = side * (1 + margin) / 2
    h, w = shape[:2]
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    return x0, y0, int(min(cx + half, w)), int(min(cy + half, h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    ap.add_argument("--refs", action="append", default=[])
    ap.add_argument("--model", default="lite")
    ap.add_argument("--face-models")
    ap.add_argument("--rows", type=int, default=6, help="frames to show, evenly spaced")
    ap.add_argument("--size", type=int, default=256, help="side of each tile in pixels")
    ap.add_argument("--clean", help="the clean clip the input was degraded from: a third column")
    ap.add_argument("--adapt", action="store_true", help="per-identity adaptation (uses the adapted-weights cache)")
    args = ap.parse_args()

    with av.open(args.clip) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    clean = None
    if args.clean:
        with av.open(args.clean) as container:
            clean = [f.to_ndarray(format="rgb24") for _, f in zip(frames, container.decode(video=0))]
    adapt = None
    if args.adapt:
        from streamrestore.model.adapt import AdaptConfig

        adapt = AdaptConfig()
    fr = build_face_restorer(args.refs, model=args.model, face_models=args.face_models,
                             config=PipelineConfig(lookahead=0), adapt=adapt)
    picks = set(np.linspace(0, len(frames) - 1, args.rows).round().astype(int).tolist())
    rows = []
    for i, frame in enumerate(frames):
        out = fr.process(frame.copy())  # every frame, so tracking and smoothing run as in a real run
        if i not in picks:
            continue
        box = face_box(fr.last_faces, frame.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        tiles = [cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (args.size, args.size),
                            interpolation=cv2.INTER_AREA)
                 for img in (frame, out) + ((clean[i],) if clean is not None else ())]
        rows.append(np.hstack(tiles))
    if not rows:
        raise SystemExit("no face was restored in the sampled frames")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.output, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"could not write {args.output} (an image file name: .png or .jpg)")
    print(f"wrote {args.output}: {len(rows)} frames, input | {fr.restorer.name if hasattr(fr.restorer, 'name') else args.model}")


if __name__ == "__main__":
    main()
