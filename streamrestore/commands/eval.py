"""``streamrestore eval``: measure a restorer the way the InstantRestore paper does.

    streamrestore eval --data ../shared/data/instantrestore --model lite --json eval.json

Writes ``<out>/eval.md`` (averaged and per-image tables) and ``<out>/grid.png`` (degraded |
no refs | refs | ground truth), prints the averaged table, and with ``--json PATH`` writes
``{"rows": [{"method", "psnr", "ssim", "id_mobilefacenet", "id_paddle", "id_dlib", "lmd", "n"}]}``
(``null`` where a value could not be measured). What each row means: :mod:`streamrestore.eval.run`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from streamrestore.errors import InputError, ModelError

log = logging.getLogger("streamrestore")


def default_models_dir() -> Path | None:
    """``$STREAMRESTORE_SHARED/models``, else ``../shared/models`` (from the current folder, then
    next to the source checkout), if it exists."""
    env = os.environ.get("STREAMRESTORE_SHARED")
    candidates = [Path(env) / "models"] if env else []
    candidates += [Path("../shared/models"), Path(__file__).resolve().parents[3] / "shared" / "models"]
    for folder in candidates:
        if (folder / "recog").is_dir():
            return folder
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrestore eval",
        description="Evaluate a face restorer on aligned test cases: PSNR, SSIM, identity similarity "
                    "(MobileFaceNet, paddle MobileFaceNet = the judge, dlib) and landmark distance.",
    )
    p.add_argument("--data", required=True, metavar="DIR",
                   help="InstantRestore test layout (<id>/degraded.png, gt.png, conditioning/), clean identity "
                        "folders (<id>/*.jpg), or a packed .npz dataset")
    p.add_argument("--model", default="lite", help="lite (default), identity, instantrestore, or a model file")
    p.add_argument("--json", metavar="PATH", help="also write the averaged table as JSON")
    p.add_argument("--out", metavar="DIR", help="folder for eval.md and grid.png (default ./eval_<data>_<model>)")
    p.add_argument("--models", metavar="DIR",
                   help="folder with recog/ and insightface/ (default $STREAMRESTORE_SHARED/models or ../shared/models)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N people (sorted by name)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--preset", default="severe",
                   help="degradation of clean sets: severe (default), moderate, mild, video. Its downsampling "
                        "factors are not scaled with the crop: on 128-px packs severe leaves ~11 px faces; "
                        "moderate there is closer to severe on 512-px crops")
    p.add_argument("--seed", type=int, default=0, help="base of the fixed per-person degradation seeds")
    p.add_argument("--split", default="all", choices=["all", "train", "val"],
                   help="for a packed .npz: evaluate its held-out (val) or training identities")
    p.add_argument("--val-fraction", type=float, default=0.15, help="hold-out fraction of --split (as in training)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of --split (as in training)")
    p.add_argument("--no-dlib", action="store_true", help="skip the dlib judge (slowest)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from streamrestore.api import load_restorer
    from streamrestore.eval.judges import load_judges, load_landmark_detector
    from streamrestore.eval.report import format_table, markdown_report, write_grid, write_json
    from streamrestore.eval.run import EvalConfig, evaluate, load_cases
    from streamrestore.train.degrade import PRESETS

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.preset not in PRESETS:
        raise InputError(f"unknown --preset {args.preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    models_dir = Path(args.models) if args.models else default_models_dir()
    if models_dir is None or not (models_dir / "recog").is_dir():
        where = models_dir or "$STREAMRESTORE_SHARED/models or ../shared/models"
        raise ModelError(f"evaluation models not found in {where}; pass --models DIR (the folder with recog/ and insightface/)")
    data = Path(args.data)
    identities = None
    if args.split != "all":
        if not (data.is_file() and data.suffix == ".npz"):
            raise InputError("--split works on a packed .npz dataset; drop it for folders")
        from streamrestore.train.data import PackedFaces

        train, val = PackedFaces(data).split(args.val_fraction, args.split_seed)
        identities = val if args.split == "val" else train
    config = EvalConfig(preset=args.preset, seed=args.seed, limit=args.limit, with_dlib=not args.no_dlib)

    started = time.perf_counter()
    cases = load_cases(data, config, models_dir=models_dir, identities=identities)
    restorer = load_restorer(args.model, device=args.device)
    judges = load_judges(models_dir, with_dlib=config.with_dlib)
    landmarks = load_landmark_detector(models_dir)
    log.info("evaluating %s on %d people from %s", args.model, len(cases), data)

    def progress(done: int, total: int) -> None:
        log.debug("eval: %d/%d people", done, total)

    result = evaluate(cases, restorer, judges, landmarks, config, progress=progress)
    seconds = time.perf_counter() - started

    model_name = Path(str(args.model)).stem
    out = Path(args.out) if args.out else Path(f"eval_{data.stem or data.resolve().name}_{model_name}")
    out.mkdir(parents=True, exist_ok=True)
    grid_name = None
    if result.images:
        write_grid(out / "grid.png", result.images)
        grid_name = "grid.png"
    facts = {
        "data": f"{data} ({len(cases)} people" + (f", split {args.split}" if args.split != "all" else "") + ")",
        "model": f"{args.model} (resolution {restorer.resolution}: crops resized to it, outputs resized back "
                 f"to the ground truth's size with bicubic)",
        "bicubic": f"area downscale x{config.bicubic_factor}, bicubic upscale back (classical baseline)",
        "clean-set degradation": f"preset {config.preset}, seed {config.seed} + crc32(person)",
        "references": f"first 1 / first {config.many_refs} of each person's references (sorted by name); "
                      "model_refs4_other: the next person's",
        "judges": "id_* = cosine similarity to the ground truth; paddle MobileFaceNet is the judge",
        "time": f"{seconds:.1f} s",
    }
    report = markdown_report(result.rows, result.per_image, title=f"streamrestore eval: {model_name}",
                             facts=facts, notes=result.notes, grid=grid_name)
    (out / "eval.md").write_text(report, encoding="utf-8")
    if args.json:
        write_json(args.json, result.rows, model=str(args.model), data=str(data), people=len(cases),
                   resolution=restorer.resolution, notes=result.notes)
    print(format_table(result.rows, extra=("n", "lmd_missed")))
    print(f"wrote {out / 'eval.md'}" + (f", {out / grid_name}" if grid_name else "")
          + (f", {args.json}" if args.json else ""), file=sys.stderr)
    return 0
