"""Do chunk joins flicker? E_warp of `streamrestore batch` output around each join vs the clip's mean.

Cuts the first ``--seconds`` of CLIP (a talking head; re-encoded with x264, a keyframe every
``--keyint`` frames so ``--chunk-seconds`` cuts where asked, audio dropped), then restores it

* chunked: ``streamrestore batch CLIP --chunk-seconds S --workers 2`` (several chunks, joined);
* unchunked: the main command ``streamrestore CLIP -o ...``;

with the same model and references, and measures the temporal warping error of each output with
the optical flow of the *input* (:class:`streamrestore.eval.flicker_metric.WarpError`, both outputs
against one flow). A pair k is (frame k-1, frame k); the pairs "at a join" are those with
|k - j| <= ``--window`` for each chunk start j > 0 (from the batch manifest). Reports, for each
output (and for the input itself), mean E_warp x 1e3 at the joins, over all pairs, and their
ratio (the acceptance bar is join <= 1.1 x mean), the chunked output's join figure over the
unchunked one's at the same frames (what the joins add), and the identity matching of both
runs: the reference sets the main command's summary says it matched, and those each chunk
matched (batch manifest).

    python benchmarks/bench_batch_joins.py [CLIP] [--refs DIR | --refs-from VIDEO] [--seconds 10]
        [--chunk-seconds 2] [--model lite] [--json PATH] [--keep DIR]
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
import numpy as np

SHARED = Path(os.environ.get("STREAMRESTORE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def cut(src: Path, dst: Path, seconds: float, keyint: int) -> int:
    """The first ``seconds`` of ``src`` re-encoded into ``dst`` (x264, keyframe every ``keyint``)."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        stream = c.streams.video[0]
        rate = stream.average_rate
        limit = int(round(seconds * float(rate)))
        v = out.add_stream("libx264", rate=rate, options={"crf": "16", "preset": "fast", "g": str(keyint),
                                                         "keyint_min": str(keyint), "sc_threshold": "0"})
        v.width, v.height, v.pix_fmt = stream.width, stream.height, "yuv420p"
        n = 0
        for frame in c.decode(stream):
            if n >= limit:
                break
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            f.pts = n
            out.mux(v.encode(f))
            n += 1
        out.mux(v.encode(None))
    return n


def refs_from_video(video: Path, folder: Path, count: int = 3) -> Path:
    """``count`` frames spread over ``video`` as PNGs in ``folder`` (one reference set)."""
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as c:
        frames = [f.to_image() for f in c.decode(video=0)]
    for i in range(count):
        frames[(i + 1) * len(frames) // (count + 1)].save(folder / f"ref{i}.png")
    return folder


def rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def chunk_records(out_dir: Path) -> list[dict]:
    """The batch manifest's last record of every chunk, in order."""
    last = {}
    for line in (out_dir / "batch-manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        last[rec["key"]] = rec
    return sorted((r for r in last.values() if r["key"].startswith("chunk:")), key=lambda r: r["first"])


def matched_in_summary(stderr: str) -> list[str]:
    """The main command's summary line "... identities matched: A, B" (``none``: [])."""
    for line in stderr.splitlines()[::-1]:
        if "identities matched:" in line:
            names = line.split("identities matched:", 1)[1].strip().rstrip(".")
            return [] if names == "none" else sorted(n.strip() for n in names.split(","))
    return ["?"]


def warp_errors(src: Path, outputs: list[Path]) -> np.ndarray:
    """(len(outputs), frames) array: E_warp of pair (k-1, k) at column k (nan where none)."""
    from streamrestore.eval.flicker_metric import WarpError

    ref = rgb_frames(src)
    cands = [rgb_frames(p) for p in outputs]
    assert all(len(c) == len(ref) for c in cands), [len(c) for c in cands]
    metric = WarpError(candidates=len(outputs))
    errors = np.full((len(outputs), len(ref)), np.nan)
    for k, frame in enumerate(ref):
        values = metric.add(frame, [c[k] for c in cands])
        if values:
            errors[:, k] = values
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", nargs="?", default=str(SHARED / "data/styletalk/source_video/andrew_clip_1.mp4"))
    ap.add_argument("--refs", help="reference folder (default: frames of --refs-from)")
    ap.add_argument("--refs-from", default=str(SHARED / "data/styletalk/source_video/andrew_clip_2.mp4"),
                    help="video of the same person: a few of its frames become the references")
    ap.add_argument("--model", default="lite")
    ap.add_argument("--face-models", default=str(SHARED / "models/insightface"))
    ap.add_argument("--seconds", type=float, default=10.0, help="restore the first this many seconds")
    ap.add_argument("--chunk-seconds", type=float, default=2.0)
    ap.add_argument("--keyint", type=int, default=25, help="keyframe interval of the cut clip (frames)")
    ap.add_argument("--window", type=int, default=2, help="pairs within this many frames of a join")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the figures as JSON")
    ap.add_argument("--keep", help="keep the clip and outputs in this folder")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_joins."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        refs = Path(args.refs) if args.refs else refs_from_video(Path(args.refs_from), work / "refs" / "person")
        clip = work / "clip.mp4"
        frames = cut(Path(args.clip), clip, args.seconds, args.keyint)
        common = ["--refs", str(refs), "--model", args.model, "--face-models", str(args.face_models),
                  "--torch-threads", "1"]
        cli = [sys.executable, "-m", "streamrestore.cli"]
        env = dict(os.environ, OMP_NUM_THREADS="1")

        t0 = time.perf_counter()
        single = work / "single.mp4"
        proc = subprocess.run(cli + [str(clip), "-o", str(single), "--no-progress", "--force"] + common,
                              check=True, env=env, stderr=subprocess.PIPE, text=True)
        single_ids = matched_in_summary(proc.stderr)
        single_s = time.perf_counter() - t0
        out = work / "batch"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cli + ["batch", str(clip), "-o", str(out), "--workers", str(args.workers),
                                     "--ray", "local", "--chunk-seconds", str(args.chunk_seconds)] + common,
                              env=env, capture_output=True, text=True)
        batch_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        chunked = out / "clip.restored.mp4"
        chunks = chunk_records(out)
        joins = [r["first"] for r in chunks if r["first"] > 0]
        # the input itself too: where the clip's own E_warp is higher around a join (motion, the
        # cut clip's keyframes there) the outputs' is too, whether chunked or not
        errors = warp_errors(clip, [chunked, single, clip])
        near = sorted({k for j in joins for k in range(j - args.window, j + args.window + 1) if 1 <= k < frames})
        result = {"clip": Path(args.clip).name, "frames": frames, "model": args.model,
                  "chunk_seconds": args.chunk_seconds, "joins": joins, "window": args.window,
                  "refs": str(refs), "single_s": round(single_s, 1), "batch_s": round(batch_s, 1)}
        print(f"{Path(args.clip).name}: first {frames} frames, model {args.model}, refs {refs}, "
              f"chunks joined at frames {joins} (pairs within +-{args.window})")
        for name, row in zip(("chunked", "unchunked", "input"), errors):
            mean, at_joins = float(np.nanmean(row[1:]) * 1e3), float(np.nanmean(row[near]) * 1e3)
            result[name] = {"mean": round(mean, 4), "joins": round(at_joins, 4), "ratio": round(at_joins / mean, 3)}
            print(f"{name:>9}: E_warp x1e3 at joins {at_joins:.4f}, clip mean {mean:.4f}, "
                  f"ratio {at_joins / mean:.3f} (bar <= 1.1)")
        diff = np.abs(errors[0] - errors[1])
        result["max_pair_diff_x1e3"] = round(float(np.nanmax(diff) * 1e3), 4)
        result["chunked_over_unchunked_at_joins"] = round(result["chunked"]["joins"] / result["unchunked"]["joins"], 4)
        print(f"at the joins, chunked / unchunked: {result['chunked_over_unchunked_at_joins']:.4f}; "
              f"largest per-pair difference {result['max_pair_diff_x1e3']:.4f}")
        # Identity matching: the reference sets each chunk matched vs the unchunked run's
        per_chunk = [sorted(r.get("identities") or []) for r in chunks]
        same = all(ids == single_ids for ids in per_chunk)
        result["identity"] = {"unchunked": single_ids, "chunks": per_chunk, "same": same}
        print(f"identities matched: unchunked {single_ids}, per chunk {per_chunk}: "
              f"{'same' if same else 'DIFFERENT'}; single {single_s:.1f} s, batch {batch_s:.1f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
