"""Whole-pipeline benchmark on one clip: per-stage ms/frame, and the ratio of the pipeline
(identity restorer by default) to a plain decode+encode of the same clip, measured in one run.

    python benchmarks/bench_pipeline.py CLIP [--refs DIR] [--model identity] [--detector auto]
        [--face-models DIR] [--frames N] [--repeat 2]

Both runs go through the library's threaded file loop (:func:`streamrestore.run.restore_frames`,
as ``streamrestore INPUT`` does) with the same reader, writer, encoder settings and threads; only
the face work differs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def first_frames(reader, frames):
    for i, f in enumerate(reader.frames()):
        if frames and i >= frames:
            return
        yield f


def transcode(clip, dst, frames, settings, face_restorer=None):
    """Decode → ``face_restorer`` (None: nothing) → encode in :func:`streamrestore.run.restore_frames`;
    returns (seconds, encode seconds)."""
    from streamrestore.run import restore_frames
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import VideoWriter

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with VideoReader(clip) as reader, VideoWriter(dst, reader.info, settings, audio_from=clip, force=True) as writer:
        encode = restore_frames(first_frames(reader, frames), writer, face_restorer)
    transcode.cpu_seconds = time.process_time() - cpu0  # all threads of this process
    return time.perf_counter() - t0, encode


def plain_transcode(clip, dst, frames, settings):
    """The baseline: the same loop with no face work (frames pass through as decoded)."""
    return transcode(clip, dst, frames, settings)[0]


def pipeline(clip, dst, frames, settings, args):
    from streamrestore.api import build_face_restorer

    model = args.model
    if model == "identity":
        from streamrestore.model.identity import IdentityRestorer

        model = IdentityRestorer(args.resolution)
    from streamrestore.pipeline import PipelineConfig

    fr = build_face_restorer(args.refs or (), model=model, detector=args.detector, face_models=args.face_models,
                             device=args.device, config=PipelineConfig(detect_every=args.detect_every))
    fr.stats.stage_seconds.clear()
    total, encode = transcode(clip, dst, frames, settings, fr)
    fr.stats.add_time("encode (writer thread)", encode)
    fr.stats.stage_seconds["detect (reader thread)"] = fr.stats.stage_seconds.pop("detect", 0.0)
    return total, fr.stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--refs", action="append")
    ap.add_argument("--model", default="identity")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=512, help="crop size of the identity restorer (lite: 128)")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--face-models")
    ap.add_argument("--detect-every", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=None, help="default: half the cores, as the CLI")
    ap.add_argument("--frames", type=int, default=0, help="only the first N frames (0: all)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    ap.add_argument("--preset", default=None)
    args = ap.parse_args()
    import os

    from streamrestore.video.writer import EncoderSettings

    torch.set_num_threads(args.torch_threads or max(1, (os.cpu_count() or 2) // 2))
    settings = EncoderSettings(preset=args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        suffix = Path(args.clip).suffix
        plain, stats_best, pipe, cpu_plain, cpu_pipe = [], None, [], [], []
        for _ in range(args.repeat):  # interleaved so drift of a shared machine hits both alike
            plain.append(plain_transcode(args.clip, Path(tmp) / f"plain{suffix}", args.frames, settings))
            cpu_plain.append(transcode.cpu_seconds)
            secs, stats = pipeline(args.clip, Path(tmp) / f"pipe{suffix}", args.frames, settings, args)
            pipe.append(secs)
            cpu_pipe.append(transcode.cpu_seconds)
            if stats_best is None or secs <= min(pipe):
                stats_best = stats
    n = stats_best.frames
    print(f"clip: {args.clip}  frames: {n}  model: {args.model} ({args.resolution} px)  detector: {args.detector}  torch threads: {torch.get_num_threads()}")
    print(f"{'stage':<26}{'ms/frame':>10}")
    for stage, secs in sorted(stats_best.stage_seconds.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<26}{1000 * secs / max(n, 1):>10.2f}")
    p, q = min(plain), min(pipe)
    print(f"{'decode+encode alone':<26}{1000 * p / max(n, 1):>10.2f}   ({n / p:.1f} fps)")
    print(f"{'whole pipeline':<26}{1000 * q / max(n, 1):>10.2f}   ({n / q:.1f} fps)")
    print(f"ratio pipeline / decode+encode: {q / p:.2f}x  (best of {args.repeat} each, interleaved)")
    cp, cq = min(cpu_plain), min(cpu_pipe)
    print(f"CPU time per frame (all threads): decode+encode {1000 * cp / max(n, 1):.1f} ms, "
          f"pipeline {1000 * cq / max(n, 1):.1f} ms, ratio {cq / cp:.2f}x")


if __name__ == "__main__":
    main()
