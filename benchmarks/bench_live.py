"""Live-mode benchmark: output fps and capture→output latency (p50/p95) at 640x480, one face.

    python benchmarks/bench_live.py [--model lite] [--device auto] [--seconds 20] [--clip FILE]
        [--refs DIR] [--face-models DIR] [--output udp://127.0.0.1:5000]

A one-face clip is letterboxed to 640x480 and played at its own frame rate, looping, as a
stand-in camera; the live loop restores it with newest-frame-wins dropping, exactly as
``streamrestore live --no-window`` does. Goal on 2 CPU cores: >= 15 fps and p95 <= 150 ms.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from streamrestore.cli.options import add_crop_resolution_option, crop_resolution_from_args


def shared_root() -> Path:
    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def letterbox_clip(src: Path, dst: Path, width: int = 640, height: int = 480, seconds: float = 6.0) -> None:
    """Writes ``src`` scaled to fit ``width`` x ``height`` (black bars) as a near-lossless mp4."""
    import av
    import cv2

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or 25
        stream = out.add_stream("libx264", rate=rate, options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, frame in enumerate(inp.decode(stream_in)):
            if i >= seconds * float(rate):
                break
            rgb = frame.to_ndarray(format="rgb24")
            scale = min(width / rgb.shape[1], height / rgb.shape[0])
            w, h = round(rgb.shape[1] * scale) // 2 * 2, round(rgb.shape[0] * scale) // 2 * 2
            canvas = np.zeros((height, width, 3), np.uint8)
            y, x = (height - h) // 2, (width - w) // 2
            canvas[y : y + h, x : x + w] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def untrained_lite(path: Path) -> Path:
    """The lite architecture (configs/lite.toml) with random weights, saved as a model file:
    times the shipped model before its training has finished (the speed does not depend on the
    weights; the pictures do, so look at nothing but the timings)."""
    import torch

    from streamrestore.model import InstantRestoreNet
    from streamrestore.model.checkpoint import save_restorer
    from streamrestore.train.config import load_train_config

    config = load_train_config(Path(__file__).resolve().parents[1] / "configs/lite.toml")
    torch.manual_seed(0)
    return save_restorer(InstantRestoreNet(config.model).eval(), path, dtype=torch.float32)


def main() -> int:
    shared = shared_root()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lite", help="lite (default), identity, instantrestore, a model file, or lite-untrained (the lite "
                        "architecture with random weights: timings only, before lite.safetensors exists)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--clip", type=Path, default=shared / "data/liveportrait/driving/d0.mp4",
                   help="one-face clip, letterboxed to 640x480 (default: shared liveportrait d0, 25 fps)")
    p.add_argument("--refs", default=str(shared / "data/face_recognition/knn_train/obama"),
                   help="reference folder (its cost is what matters here, not whether it matches)")
    p.add_argument("--face-models", default=str(shared / "models/insightface"))
    p.add_argument("--detect-every", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run the live loop (default 20)")
    p.add_argument("--output", help="also send/write the restored stream (e.g. udp://127.0.0.1:5000)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    p.add_argument("--temporal-strength", type=float, default=None,
                   help="temporal fusion strength (default: TemporalConfig's; 0: off)")
    p.add_argument("--identity-tolerance", type=float, default=None,
                   help="the identity gate's tolerance (default: its default; 0 turns it off)")
    p.add_argument("--temporal-memory", type=int, default=None,
                   help="remembered frames per face (default: TemporalConfig's; 0: no track memory)")
    add_crop_resolution_option(p)
    p.add_argument("--adapt", action="store_true",
                   help="the model fine-tuned to the references first (as `streamrestore live --adapt`; the fine-tune is "
                        "made or loaded from its disk cache during start-up, the adapted copy runs on ONNX Runtime)")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from streamrestore.api import build_face_restorer
    from streamrestore.errors import ModelError
    from streamrestore.live import FileSource, LiveConfig, LiveSession, open_sink
    from streamrestore.model.adapt import AdaptConfig
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import IdentityGateConfig
    from streamrestore.temporal import TemporalConfig

    if args.temporal_strength == 0 and not args.temporal_memory:
        temporal = TemporalConfig.off()  # 0: no fusion at all (the input average too)
    else:
        temporal = TemporalConfig(**{k: v for k, v in (("strength", args.temporal_strength),
                                                       ("memory", args.temporal_memory)) if v is not None})
    if args.identity_tolerance is None:
        identity_gate = IdentityGateConfig()
    elif args.identity_tolerance == 0:
        identity_gate = IdentityGateConfig(enabled=False)
    else:
        identity_gate = IdentityGateConfig(tolerance=args.identity_tolerance)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "lite-untrained":
            args.model = untrained_lite(Path(tmp) / "lite_untrained.safetensors")
        clip = Path(tmp) / "live_640x480.mp4"
        letterbox_clip(args.clip, clip)
        source = FileSource(clip, realtime=True, loop=True)
        t0 = time.perf_counter()
        try:
            fr = build_face_restorer(
                args.refs, model=args.model, device=args.device, face_models=args.face_models,
                config=PipelineConfig(lookahead=0, detect_every=args.detect_every, temporal=temporal,
                                      identity_gate=identity_gate,
                                      crop_resolution=crop_resolution_from_args(args)),
                channel_order="rgb",
                fps=source.fps,
                adapt=AdaptConfig() if args.adapt else None,
            )
        except ModelError as exc:
            print(f"model {args.model!r} is not available ({exc}).\n"
                  f"Train or install it first, or time the rest of the loop with --model identity.", file=sys.stderr)
            return 2
        startup = time.perf_counter() - t0
        sinks = [open_sink(args.output, source.width, source.height, fps=source.fps, force=True)] if args.output else []
        frames = max(1, round(args.seconds * source.fps))  # an upper bound: the loop drops what it cannot keep up with
        session = LiveSession(fr, source, sinks, config=LiveConfig(window=False, max_frames=frames))
        # Stop by time rather than frame count: fps is what is being measured.
        stopper = threading.Timer(args.seconds, session.request_stop)
        stopper.start()
        stats = session.run()
        stopper.cancel()

    device = "cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())) else "cpu"
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model {args.model} on {where}; 640x480 @ {source.fps:.0f} fps source, one face, "
          f"detect every {args.detect_every}, temporal strength {temporal.strength:g}, memory {temporal.memory}{', adapted' if args.adapt else ''}; start-up (models + references) {startup:.1f} s")
    print(stats.summary())
    per = {k: 1000 * v / max(1, fr.stats.frames) for k, v in fr.stats.stage_seconds.items() if k != "references"}
    print("per frame out: " + ", ".join(f"{k} {v:.1f} ms" for k, v in per.items()))
    goal = stats.fps >= 15 and (stats.percentile(95) or 1e9) <= 150
    print(f"goal (>= 15 fps, p95 <= 150 ms): {'met' if goal else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
