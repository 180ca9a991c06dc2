"""Run ``streamrestore eval --video`` over the clips of ``video_benchmark.toml`` and write one table.

    python benchmarks/video_benchmark.py [--config benchmarks/video_benchmark.toml] [--shared DIR]
        [--model lite] [--max-frames N] [--degrade default,mild] [--out runs/video_benchmark] [--adapt]
        [--degraded-dir DIR] [any `streamrestore eval --video` option, e.g. --temporal-frame-strength 0]

For each clip and each degradation preset: one eval run (rows input, model_norefs, model_refs,
clean, clean_refs). References are a folder / photo of the shared set, or ``refs_frames`` frames
evenly spaced over another clip of the same person, extracted once into ``<out>/refs/<clip>/``.
With ``--degraded-dir`` each degraded copy is made once, kept there as ``<clip>_<preset>_<frames>.mp4``
and given to every later run (``eval --degraded``): x264 codes the same clip a little differently
from run to run (its threads), so two models compare exactly only on the same bytes.
Writes ``<out>/<model>/<clip>_<preset>.json`` per run and ``<out>/<model>/table.md`` +
``table.json`` with every row, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_root(given: str | None) -> Path:
    if given:
        return Path(given)
    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def frames_of_other_clip(video: Path, count: int, folder: Path, span: tuple[float, float] = (0.0, 1.0)) -> Path:
    """``count`` frames evenly spaced over the ``span`` (fractions of its length) of ``video`` as PNGs in
    ``folder`` (made once)."""
    import av
    import cv2

    start, end = span
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"refs_span must be two fractions 0 <= start < end <= 1, got {list(span)}")
    done = folder / ".done"
    stamp = f"{video}:{count}" + (f":{start}-{end}" if span != (0.0, 1.0) else "")
    if done.is_file() and done.read_text() == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    first, last = int(start * len(frames)), int(end * len(frames))
    picks = sorted({first + int((k + 0.5) * (last - first) / count) for k in range(count)})
    for index in picks:
        cv2.imwrite(str(folder / f"frame_{index:05d}.png"), frames[index])
    done.write_text(stamp)
    return folder


def kept_copy(video: Path, name: str, preset: str, max_frames: int | None, folder: Path) -> Path:
    """``video`` degraded with ``preset`` (first ``max_frames`` frames) as ``folder/<name>_<preset>_<frames>.mp4``,
    made on the first call and reused after."""
    from streamrestore.eval.video import degrade_video

    path = folder / f"{name}_{preset}_{max_frames or 'all'}.mp4"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.mp4")  # never reuse a copy cut short by a crash
        degrade_video(video, partial, preset, max_frames=max_frames)
        partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "benchmarks" / "video_benchmark.toml"))
    p.add_argument("--shared", help="shared media folder (default $STREAMRESTORE_SHARED or ../shared)")
    p.add_argument("--model", default="lite")
    p.add_argument("--max-frames", type=int, help="override the config's max_frames")
    p.add_argument("--every", type=int, help="override the config's every")
    p.add_argument("--degrade", help="comma-separated presets, overriding the config's")
    p.add_argument("--clips", help="comma-separated clip names (default: all)")
    p.add_argument("--out", default=str(REPO / "runs" / "video_benchmark"))
    p.add_argument("--adapt", action="store_true", help="per-identity adaptation (eval --adapt); results in <model>+adapt")
    p.add_argument("--degraded-dir", help="make each degraded copy once, keep it here and reuse it in later runs")
    args, passed = p.parse_known_args(argv)  # the rest goes to every `eval --video` (e.g. --temporal-frame-strength 0)

    from streamrestore.cli import main as cli_main
    from streamrestore.eval.video import format_video_table

    config = tomllib.loads(Path(args.config).read_text())
    bench = config.get("benchmark", {})
    shared = shared_root(args.shared)
    if not (shared / "data").is_dir():
        print(f"shared media not found at {shared}; pass --shared DIR", file=sys.stderr)
        return 2
    presets = args.degrade.split(",") if args.degrade else list(bench.get("degrade", ["default"]))
    max_frames = args.max_frames or bench.get("max_frames")
    every = args.every or bench.get("every", 1)
    wanted = set(args.clips.split(",")) if args.clips else None
    out = Path(args.out)
    model_name = Path(str(args.model)).stem + ("+adapt" if args.adapt else "")
    rows = []
    started = time.perf_counter()
    for clip in config["clip"]:
        if wanted and clip["name"] not in wanted:
            continue
        if "refs" in clip:
            refs = shared / clip["refs"]
        else:
            span = tuple(float(f) for f in clip.get("refs_span", (0.0, 1.0)))
            refs = frames_of_other_clip(shared / clip["refs_from"], int(clip.get("refs_frames", 4)),
                                        out / "refs" / clip["name"], span)  # type: ignore[arg-type]
        for preset in presets:
            table = out / model_name / f"{clip['name']}_{preset}.json"
            if args.degraded_dir:
                source = ["--degraded", str(kept_copy(shared / clip["video"], clip["name"], preset, max_frames,
                                                      Path(args.degraded_dir)))]
            else:
                source = ["--degrade", preset]
            argv = ["eval", "--video", str(shared / clip["video"]), *source, "--refs", str(refs),
                    "--model", str(args.model), "--models", str(shared / "models"), "--json", str(table),
                    "--every", str(every)]
            if max_frames:
                argv += ["--max-frames", str(max_frames)]
            if args.adapt:
                argv += ["--adapt"]
            argv += passed
            print(f"== {clip['name']} / {preset}: streamrestore {' '.join(argv)}", file=sys.stderr, flush=True)
            code = cli_main(argv)
            if code != 0:
                return code
            for row in json.loads(table.read_text())["rows"]:
                rows.append({"clip": clip["name"], "degradation": preset, **row})
    text = format_video_table(rows, first=("clip", "degradation", "method"))
    (out / model_name).mkdir(parents=True, exist_ok=True)
    header = (f"# Video benchmark: model {args.model}\n\n{len(presets)} preset(s) {', '.join(presets)}, "
              f"first {max_frames or 'all'} frames, face metrics every {every} frame(s), "
              f"{time.perf_counter() - started:.0f} s\n\n")
    (out / model_name / "table.md").write_text(header + text + "\n")
    (out / model_name / "table.json").write_text(json.dumps({"model": str(args.model), "rows": rows}, indent=2) + "\n")
    print(text)
    print(f"wrote {out / model_name / 'table.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
