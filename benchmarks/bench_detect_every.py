"""What `detect_every=k` costs in landmark accuracy and saves in time.

For each k, the detector runs on every k-th frame and optical flow carries the landmarks in
between (as the pipeline does); the carried landmarks of every skipped frame are compared with
what the detector finds on that frame. Error in % of the inter-ocular distance (mean and 95th
percentile), and detection+flow ms/frame.

    python benchmarks/bench_detect_every.py CLIP [--face-models DIR] [--frames 150] [--k 1,2,3,5]
"""
from __future__ import annotations

import argparse
import time

import av
import numpy as np

from streamrestore.faces.detect import create_detector
from streamrestore.faces.propagate import FacePropagator


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--face-models")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--k", default="1,2,3,5")
    args = ap.parse_args()
    detector = create_detector(args.detector, models_dir=args.face_models)
    with av.open(args.clip) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == args.frames:
                break
    t0 = time.perf_counter()
    truth = [detector.detect(f) for f in frames]
    detect_ms = 1000 * (time.perf_counter() - t0) / len(frames)
    print(f"clip: {args.clip}  frames: {len(frames)}  detector: {detector.name} {detect_ms:.1f} ms/frame")
    print(f"{'k':>3} {'ms/frame':>9} {'mean err %IOD':>14} {'p95 err %IOD':>13} {'faces kept %':>13}")
    for k in [int(x) for x in args.k.split(",")]:
        prop = FacePropagator()
        errors, kept, wanted = [], 0, 0
        spent = 0.0
        for i, frame in enumerate(frames):
            t = time.perf_counter()
            if i % k == 0:
                faces = truth[i]
                spent += detect_ms / 1000  # the detector's own cost, measured above
                prop.observe(frame, faces)
                continue
            moved = prop.propagate(frame)
            spent += time.perf_counter() - t
            for ref in truth[i]:
                wanted += 1
                if not moved:
                    continue
                best = min(moved, key=lambda m: np.abs(m.kps - ref.kps).mean())
                iod = np.linalg.norm(ref.kps[1] - ref.kps[0])
                err = np.linalg.norm(best.kps - ref.kps, axis=1).mean() / iod * 100
                if err < 50:
                    errors.append(err)
                    kept += 1
        mean = np.mean(errors) if errors else 0.0
        p95 = np.percentile(errors, 95) if errors else 0.0
        kept_pct = 100.0 * kept / wanted if wanted else 100.0
        print(f"{k:>3} {1000 * spent / len(frames):>9.1f} {mean:>14.2f} {p95:>13.2f} {kept_pct:>13.1f}")


if __name__ == "__main__":
    main()
