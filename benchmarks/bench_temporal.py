"""Temporal fusion on real clips: flicker (E_warp) against the input, face PSNR against the ground
truth and per-track identity spread, for several fusion settings side by side.

    python benchmarks/bench_temporal.py INPUT[:GT] [INPUT[:GT] ...] [--refs DIR] [--frames 90]
        [--settings off,default,0.8/30/0.7/0/0] [--json PATH]

``INPUT`` is what the restorer gets (e.g. a clip degraded with ``shared/tools/degrade_video.py``);
``GT``, when given, is the clean clip it was made from: face PSNR is then taken on the largest
ground-truth face (its detector box, enlarged 1.2x), with ``detail``: the region's fine detail
(mean |grey - blur|) relative to the first setting's (does the fusion soften the restoration?). E_warp (x 1e3) of the input and of each
output uses the input's flow (``streamrestore.eval.flicker_metric``). Identity spread: per
track, the std over frames of the paddle MobileFaceNet similarity of the restored crop to the
mean reference embedding (needs ``<shared>/models/recog/mobilefacenet_paddle_128d.onnx``).

The restorer runs once per distinct crop: the settings share its outputs through a cache (the
detection, tracking and crops do not depend on the fusion), so a sweep costs little more than
one run. Frames are processed in file mode (lookahead 5), as ``streamrestore INPUT`` does
(``--lookahead 0``: as ``streamrestore live`` and ``FaceRestorer.process`` do).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np


def shared_root() -> Path:
    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


class CachedRestorer:
    """Wraps a restorer; identical (crop, references, seed) calls are answered from memory."""

    def __init__(self, inner):
        self.inner = inner
        self.resolution = inner.resolution
        self.device = getattr(inner, "device", None)
        self._cache: dict = {}
        self.seconds = 0.0
        self.calls = 0

    def encode_references(self, faces):
        return self.inner.encode_references(faces)

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        keys = []
        for i in range(faces.shape[0]):
            h = hashlib.sha1(faces[i].numpy().tobytes()).hexdigest()
            keys.append((h, id(caches[i]), None if noise_seeds is None else noise_seeds[i]))
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            t0 = time.perf_counter()
            out = self.inner.restore(faces[missing], [caches[i] for i in missing],
                                     noise_seeds=None if noise_seeds is None else [noise_seeds[i] for i in missing])
            self.seconds += time.perf_counter() - t0
            self.calls += len(missing)
            for j, i in enumerate(missing):
                self._cache[keys[i]] = out[j].clone()
        return torch.stack([self._cache[k] for k in keys])


def decoded(path: Path, limit: int):
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate or 30)
        for i, frame in enumerate(c.decode(stream)):
            if i >= limit:
                return
            yield frame.to_ndarray(format="rgb24"), rate


def region(box, shape, scale=1.2):
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, scale * max(x2 - x1, y2 - y1) / 2
    h, w = shape[:2]
    return (max(0, int(cx - half)), max(0, int(cy - half)), min(w, int(cx + half)), min(h, int(cy + half)))


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse < 1e-10 else 10 * math.log10(255.0 ** 2 / mse)


def detail(rgb):
    """Fine detail of a face region: mean |grey - Gaussian blur (sigma 1)| (0-255 levels)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0)).mean())


def run_clip(spec: str, args, restorer, detector, ref_sets, judge, ref_emb) -> list[dict]:
    from streamrestore.eval.flicker_metric import IdentitySpread, WarpError
    from streamrestore.eval.judges import arcface_crop
    from streamrestore.faces.align import crop_face
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.pixels import pixels_of

    inp, _, gt = spec.partition(":")
    frames = list(itertools.islice(decoded(Path(inp), args.frames), args.frames))
    rate = frames[0][1]
    frames = [f for f, _ in frames]
    gts = [f for f, _ in decoded(Path(gt), args.frames)] if gt else None
    names = [f"s={c.strength:g}/t={c.tolerance:g}/d={c.denoise:g}/m={c.memory}/f={c.frame_strength:g}"
             for c in args.settings]
    variants = []
    for temporal in args.settings:
        config = PipelineConfig(lookahead=args.lookahead, temporal=temporal)
        variants.append(FaceRestorer(restorer, detector, ref_sets, config=config, fps=rate))
    meter = WarpError(candidates=1 + len(variants))
    spreads = [IdentitySpread(ref_emb) for _ in variants]
    psnrs = [[] for _ in variants]
    details = [[] for _ in variants]
    seconds = [0.0] * len(variants)
    gens = [iter(v.stream(iter(frames))) for v in variants]
    for i in range(len(frames)):
        outs = []
        for j, (v, g) in enumerate(zip(variants, gens)):
            t0 = time.perf_counter()
            out = next(g)
            seconds[j] += time.perf_counter() - t0
            outs.append(out)
            if judge is not None and v.last_faces:
                px = pixels_of(out, "rgb")
                crops = [crop_face(px, f.matrix, f.pixels.shape[0]) for f in v.last_faces]
                embs = judge.embed_crops(np.stack([arcface_crop(c) for c in crops]))
                for f, e in zip(v.last_faces, embs):
                    spreads[j].add_embedding(f.track_id, e)
        meter.add(frames[i], [frames[i], *outs])
        if gts is not None and i < len(gts):
            faces = detector.detect(gts[i])
            if faces:
                big = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                x0, y0, x1, y1 = region(big.box, gts[i].shape)
                for j, out in enumerate(outs):
                    psnrs[j].append(psnr(out[y0:y1, x0:x1], gts[i][y0:y1, x0:x1]))
                    details[j].append(detail(out[y0:y1, x0:x1]))
    rows = []
    e_in = meter.value(0)
    for j, name in enumerate(names):
        e_out = meter.value(j + 1)
        rows.append({
            "clip": Path(inp).name, "setting": name, "frames": len(frames), "pairs": meter.pairs,
            "ewarp_in": round(e_in, 4), "ewarp_out": round(e_out, 4), "ratio": round(e_out / e_in, 4),
            "face_psnr": round(float(np.mean(psnrs[j])), 3) if psnrs[j] else None,
            "detail": round(float(np.mean(details[j]) / np.mean(details[0])), 4) if details[0] else None,
            "id_spread": round(spreads[j].spread(), 4) if judge is not None else None,
            "id_mean": round(float(np.mean([r["mean"] for r in spreads[j].per_track().values()])), 4)
            if judge is not None and spreads[j].per_track() else None,
            "tracks": variants[j].stats.tracks,
            "frames_with_faces": variants[j].stats.frames_with_faces,
            "temporal_ms": round(1000 * variants[j].stats.stage_seconds.get("temporal", 0.0) / len(frames), 3),
        })
    return rows


def main() -> int:
    shared = shared_root()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+", help="INPUT or INPUT:GT video files")
    p.add_argument("--refs", default=str(shared / "data/face_recognition/knn_train/obama"))
    p.add_argument("--model", default="lite")
    p.add_argument("--face-models", default=str(shared / "models/insightface"))
    p.add_argument("--frames", type=int, default=90, help="first N frames of each clip (default 90)")
    p.add_argument("--settings", default="off,default",
                   help="comma-separated fusion settings STRENGTH[/TOLERANCE[/DENOISE[/MEMORY[/FRAME]]]] (FRAME: "
                        "frame_strength; what is left out: TemporalConfig's default; 'default': TemporalConfig's; "
                        "'off' or '0': no fusion at all; default 'off,default')")
    p.add_argument("--lookahead", type=int, default=5, help="tracker lookahead (default 5, as files; 0: live)")
    p.add_argument("--no-identity", action="store_true", help="skip the paddle identity spread")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows as JSON")
    args = p.parse_args()
    from streamrestore.temporal import TemporalConfig

    def setting(text: str) -> TemporalConfig:
        if text == "default":
            return TemporalConfig()
        if text in ("off", "0"):
            return TemporalConfig.off()
        parts = text.split("/")
        values: list[float | int] = [float(v) for v in parts[:3]] + [int(v) for v in parts[3:4]] + \
            [float(v) for v in parts[4:5]]
        return TemporalConfig(**dict(zip(("strength", "tolerance", "denoise", "memory", "frame_strength"), values)))

    args.settings = [setting(x) for x in args.settings.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    from streamrestore.api import build_face_restorer

    template = build_face_restorer([args.refs] if args.refs else [], model=args.model, device="cpu",
                                   face_models=args.face_models)
    restorer = CachedRestorer(template.restorer)
    judge, ref_emb = None, None
    paddle = shared / "models/recog/mobilefacenet_paddle_128d.onnx"
    if not args.no_identity and paddle.is_file() and template.reference_sets:
        from streamrestore.eval.judges import OnnxEmbedder, arcface_crop

        judge = OnnxEmbedder(paddle, channel_order="bgr", name="paddle")
        crops = template.reference_sets[0].crops
        ref_emb = judge.embed_crops(np.stack([arcface_crop(c) for c in crops]))
        ref_emb = ref_emb / np.linalg.norm(ref_emb, axis=1, keepdims=True)
    rows = []
    for spec in args.clips:
        t0 = time.perf_counter()
        clip_rows = run_clip(spec, args, restorer, template.detector, template.reference_sets, judge, ref_emb)
        for r in clip_rows:
            print(json.dumps(r), flush=True)
        print(f"# {spec}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        rows += clip_rows
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
