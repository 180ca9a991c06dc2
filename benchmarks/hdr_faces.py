"""Faces of HDR video (HLG, PQ) restored in SDR (the default) and in the coded values (as before).

A clean SDR clip is degraded (``streamrestore eval --video``'s default preset), then coded as HDR
the way BT.2408 places SDR in HDR (``streamrestore.hdr.HdrTransfer``: SDR white at the reference
white, BT.2020 primaries), 10-bit 4:2:0 HEVC tagged HLG or PQ, as an iPhone (HLG) or an HDR10
camera (PQ) writes it. Each version is restored with the main command's pipeline; outputs are
mapped back to SDR and measured against the clean clip in the face region (SCRFD boxes on the
clean frames): face PSNR and paddle identity to the ground truth. Rows:

- ``sdr``: the degraded SDR clip restored (what an HDR face could gain at most);
- ``hlg`` / ``pq``: the HDR clip restored (faces seen in SDR, their change coded back);
- ``hlg_coded`` / ``pq_coded``: the same with the SDR view turned off: faces restored in their
  coded values, as before;
- ``*_input``: the degraded clip itself, mapped back the same way.

Each restored row also gives the pipeline's time a frame (``RunStats.busy_seconds``: decoding and
encoding left out), the SDR view's cost against the ``_coded`` row.

    python benchmarks/hdr_faces.py ../shared/data/styletalk/source_video/Obama_clip1.mp4 \
        --refs ../shared/data/face_recognition/knn_train/obama --out runs/hdr \
        --face-models ../shared/models [--frames 30] [--model lite]
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

import streamrestore.pipeline as pipeline
from streamrestore.api import restore_video
from streamrestore.eval.video import FaceJudge, GroundTruthFaces, degrade_video
from streamrestore.hdr import TRC_HLG, TRC_PQ, HdrTransfer


def decoded(path: Path, hdr: HdrTransfer | None = None) -> list[np.ndarray]:
    """The clip's frames as SDR RGB uint8 (an HDR clip's mapped back)."""
    with av.open(str(path)) as container:
        if hdr is None:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        frames = []
        for f in container.decode(video=0):
            rgb = f.to_ndarray(format="rgb48le", src_colorspace=Colorspace.BT2020, src_color_range=ColorRange.MPEG)
            frames.append(hdr.to_sdr(np.rint(rgb / 257.0).astype(np.uint8)))
        return frames


def write_hdr(path: Path, pictures: list[np.ndarray], rate, hdr: HdrTransfer) -> None:
    """``pictures`` (SDR RGB) coded as ``hdr``: 10-bit 4:2:0 HEVC with BT.2020 and the curve's tags."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=rate, options={"crf": "12", "preset": "fast", "x265-params": "log-level=error"})
        stream.width, stream.height, stream.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p10le"
        context = stream.codec_context  # (x265 takes the tags from the stream, not the frames)
        context.colorspace, context.color_range, context.color_primaries = 9, 1, 9
        context.color_trc = TRC_PQ if hdr.curve == "pq" else TRC_HLG
        for i, picture in enumerate(pictures):
            coded = np.clip(np.rint(hdr.to_coded(picture) * 257.0), 0, 65535).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(coded, format="rgb48le").reformat(
                format="yuv420p10le", dst_colorspace=Colorspace.BT2020, dst_color_range=ColorRange.MPEG)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-10)))


@contextmanager
def coded_values():
    """Faces restored in the coded values, as before the SDR view."""
    view = pipeline.sdr_view
    pipeline.sdr_view = lambda pixels: pixels
    try:
        yield
    finally:
        pipeline.sdr_view = view


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip")
    p.add_argument("--refs", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face-models", required=True)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--model", default="lite")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    degraded_path = args.out / "degraded.mp4"
    degrade_video(args.clip, degraded_path, "default", max_frames=args.frames)
    with av.open(args.clip) as c:
        rate = c.streams.video[0].average_rate
    clean = decoded(Path(args.clip))[: args.frames]
    degraded = decoded(degraded_path)
    judge = FaceJudge.paddle(args.face_models)
    truth = GroundTruthFaces.scrfd(args.face_models, judge)
    faces = [truth(rgb) for rgb in clean]

    restorer = pipeline.FaceRestorer.from_options(refs=args.refs, model=args.model, face_models=args.face_models)

    seconds: dict[str, float] = {}

    def restored(src: Path, name: str, hdr: HdrTransfer | None) -> list[np.ndarray]:
        dst = args.out / f"{name}{src.suffix}"
        stats = restore_video(src, dst, restorer, force=True)
        seconds[name] = stats.busy_seconds / max(stats.frames, 1)
        return decoded(dst, hdr)

    outputs = {"sdr_input": degraded, "sdr": restored(degraded_path, "sdr", None)}
    for curve in ("hlg", "pq"):
        hdr = HdrTransfer(curve)
        src = args.out / f"{curve}_degraded.mp4"
        write_hdr(src, degraded, rate, hdr)
        outputs[f"{curve}_input"] = decoded(src, hdr)
        outputs[curve] = restored(src, curve, hdr)
        with coded_values():
            outputs[f"{curve}_coded"] = restored(src, f"{curve}_coded", hdr)
    rows = []
    for method, frames in outputs.items():
        psnrs, ids = [], []
        for gt, rgb, face in zip(clean, frames, faces):
            if face is None:
                continue
            x0, y0, x1, y1 = face.region
            psnrs.append(psnr(rgb[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
            ids.append(float(judge.embed(rgb, face.kps) @ face.embedding))
        rows.append({"method": method, "frames": len(psnrs), "psnr": float(np.mean(psnrs)), "id_gt": float(np.mean(ids)),
                     "ms_per_frame": 1000 * seconds[method] if method in seconds else None})
        cost = f"  {rows[-1]['ms_per_frame']:5.1f} ms a frame (pipeline)" if method in seconds else ""
        print(f"{method:12s} {len(psnrs):3d} frames  face PSNR {rows[-1]['psnr']:6.2f}  id_gt {rows[-1]['id_gt']:.3f}{cost}",
              flush=True)
    (args.out / "hdr_faces.json").write_text(json.dumps({"clip": args.clip, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
