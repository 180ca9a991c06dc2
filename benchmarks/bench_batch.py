"""Throughput of `streamrestore batch --workers 2` against the main command run once per clip.

Cuts ``--clips`` clips of ``--frames`` frames each from CLIP (consecutive windows, re-encoded
with x264, the source's audio dropped), then, in one run, times

* sequential: ``streamrestore CLIP_i -o ... --torch-threads 1`` once per clip, one after the
  other (each run loads the model, as a shell loop over the files would);
* batch: ``streamrestore batch CLIPS... --workers 2 --torch-threads 1 --ray local`` (Ray start,
  two actors each loading the model once, every clip one piece).

Both as subprocesses of this script, wall-clock, and prints frames/s of each and the ratio
(batch over sequential). Also checks that every batch output has the input's frame count and pts.

    python benchmarks/bench_batch.py [CLIP] [--refs DIR] [--model lite] [--clips 4] [--frames 40]
        [--face-models DIR] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

SHARED = Path(os.environ.get("STREAMRESTORE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def cut_clips(src: Path, folder: Path, count: int, frames: int) -> list[Path]:
    """``count`` clips of ``frames`` frames: consecutive windows of ``src``, re-encoded."""
    paths = [folder / f"clip{i}.mp4" for i in range(count)]
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        decoded = c.decode(stream)
        for path in paths:
            with av.open(str(path), "w") as out:
                v = out.add_stream("libx264", rate=stream.average_rate, options={"crf": "18", "preset": "fast"})
                v.width, v.height, v.pix_fmt = stream.width, stream.height, "yuv420p"
                for k in range(frames):
                    frame = av.VideoFrame.from_ndarray(next(decoded).to_ndarray(format="rgb24"), format="rgb24")
                    frame.pts = k
                    out.mux(v.encode(frame))
                out.mux(v.encode(None))
    return paths


def frames_of(path: Path) -> list:
    with av.open(str(path)) as c:
        return sorted(p.pts for p in c.demux(c.streams.video[0]) if p.size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", nargs="?", default=str(SHARED / "data/face_recognition/short_hamilton_clip.mp4"))
    ap.add_argument("--refs", help="reference folder (default: a folder holding lin-manuel-miranda.png)")
    ap.add_argument("--model", default="lite")
    ap.add_argument("--face-models", default=str(SHARED / "models/insightface"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=40, help="frames per clip")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the figures as JSON")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_batch."))
    try:
        refs = args.refs
        if refs is None:
            refs = work / "refs"
            refs.mkdir()
            shutil.copy(SHARED / "data/face_recognition/lin-manuel-miranda.png", refs)
        clips = cut_clips(Path(args.clip), work, args.clips, args.frames)
        common = ["--refs", str(refs), "--model", args.model, "--face-models", str(args.face_models),
                  "--torch-threads", "1"]
        cli = [sys.executable, "-m", "streamrestore.cli"]
        env = dict(os.environ, OMP_NUM_THREADS="1")

        t0 = time.perf_counter()
        for i, clip in enumerate(clips):
            subprocess.run(cli + [str(clip), "-o", str(work / f"seq{i}.mp4"), "--no-progress"] + common,
                           check=True, env=env, stderr=subprocess.DEVNULL)
        sequential = time.perf_counter() - t0

        out = work / "batch"
        t0 = time.perf_counter()
        proc = subprocess.run(cli + ["batch", *map(str, clips), "-o", str(out), "--workers", str(args.workers),
                                     "--ray", "local"] + common, env=env, capture_output=True, text=True)
        batch = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        for clip in clips:
            assert frames_of(out / f"{clip.stem}.restored.mp4") == frames_of(clip), clip
        total = args.clips * args.frames
        result = {
            "clips": args.clips, "frames_per_clip": args.frames, "model": args.model, "workers": args.workers,
            "cpus": os.cpu_count(), "sequential_s": round(sequential, 2), "batch_s": round(batch, 2),
            "sequential_fps": round(total / sequential, 3), "batch_fps": round(total / batch, 3),
            "ratio": round(sequential / batch, 3),
        }
        print(f"{args.clips} clips x {args.frames} frames ({Path(args.clip).name}), model {args.model}, "
              f"{os.cpu_count()} CPUs, 1 torch thread per process")
        print(f"sequential main command: {sequential:7.1f} s  {result['sequential_fps']:.2f} frames/s")
        print(f"batch --workers {args.workers}:      {batch:7.1f} s  {result['batch_fps']:.2f} frames/s")
        print(f"throughput ratio (batch / sequential): {result['ratio']:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
