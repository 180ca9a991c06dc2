"""``streamrestore batch``: restore many videos (long ones in keyframe-aligned chunks) on Ray workers.

    streamrestore batch INPUT... | --list FILE | DIR  --refs ... -o OUTDIR
                        [--ray local|auto|ADDRESS] [--workers N] [--gpus-per-worker F]
                        [--chunk-seconds S] [--retries K] [model/face/encoder options as the main command]

Writes ``OUTDIR/<stem>.restored.<ext>`` per input and ``OUTDIR/batch-manifest.jsonl`` (state of
every input and chunk; a rerun skips what is done). Exit code 0: all succeeded; 1: some failed
(named in the summary), or no worker was left; 2: usage errors; 75: another batch writes OUTDIR, or Ray
cannot reach its cluster or place a worker (a rerun may work). Without Ray installed the inputs run one after the
other in this process. See :mod:`streamrestore.batch`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from streamrestore.batch import DEFAULT_CHUNK_SECONDS
from streamrestore.cli.options import (
    CommandParser,
    adapt_from_args,
    add_adapt_options,
    add_crop_resolution_option,
    add_deinterlace_option,
    add_encoder_options,
    add_face_choice_options,
    add_identity_gate_option,
    add_model_options,
    add_reference_detail_option,
    add_temporal_options,
    check_face_options,
    crop_resolution_from_args,
    decimal,
    identity_gate_from_args,
    match_threshold_from_args,
    quality_gate_from_args,
    reference_detail_from_args,
    temporal_from_args,
    whole,
)
from streamrestore.errors import UserError

log = logging.getLogger("streamrestore.batch")


def build_parser() -> CommandParser:
    p = CommandParser(
        prog="streamrestore batch",
        description="Restore the faces in many videos (and photos) on a pool of Ray workers (this machine or a cluster); "
                    "long videos are split into keyframe-aligned chunks restored in parallel and joined.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="video files or photos, or folders of them")
    p.add_argument("--list", metavar="FILE", help="a file naming one input per line (# comments)")
    p.add_argument("--recursive", action="store_true",
                   help="take the folders' subfolders too (a camera card's DCIM/100CANON), their outputs in the "
                        "same subfolders of OUTDIR (with several folders given, under each one's name)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="folder for the outputs (<stem>.restored.<ext>) and batch-manifest.jsonl")
    p.add_argument("--ray", metavar="local|auto|ADDRESS|none",
                   help="local (default; where RAY_ADDRESS is set, as under `ray job submit`, that cluster): start "
                        "Ray on this machine; auto: join the running cluster (RAY_ADDRESS, else this machine's); "
                        "or a cluster address (HOST:6379, ray://HOST:10001); none: restore the inputs one after "
                        "another in this process, as without Ray installed (whole files; Ray's own processes took "
                        "~0.9 GB more on a small machine)")
    p.add_argument("--workers", type=whole, metavar="N",
                   help="worker actors (default: one per GPU on CUDA, else CPUs / --torch-threads)")
    p.add_argument("--gpus-per-worker", type=decimal, metavar="F",
                   help="GPUs each worker reserves (default 1 when the cluster has GPUs and --device is not cpu, "
                        "else 0; 0.5 puts two workers on a GPU)")
    p.add_argument("--chunk-seconds", type=decimal, default=DEFAULT_CHUNK_SECONDS, metavar="S",
                   help=f"split videos longer than this into keyframe-aligned chunks of about S seconds "
                        f"(default {DEFAULT_CHUNK_SECONDS:g})")
    p.add_argument("--retries", type=whole, default=2, metavar="K",
                   help="tries again a failed chunk or file up to K times (default 2)")
    p.add_argument("--torch-threads", type=whole, default=1, metavar="N",
                   help="CPU threads torch uses in each worker (default 1; also the CPUs Ray reserves per worker)")
    add_model_options(p, fast_vae=True)
    add_temporal_options(p)
    add_reference_detail_option(p)
    add_identity_gate_option(p)
    add_face_choice_options(p)
    add_crop_resolution_option(p)
    add_adapt_options(p)
    add_encoder_options(p)
    add_deinterlace_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    # the main command's options a batch has no use for, taken to say why instead of argparse's
    # "unrecognized arguments"
    for name in ("--start", "--end"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    from streamrestore.batch import expand_inputs, output_subfolders, run

    args = build_parser().parse_args(argv)
    if args.start is not None or args.end is not None:
        raise UserError("batch restores whole files; a window (--start/--end) is the main command's: "
                        "streamrestore INPUT --start S --end E")
    if args.force:
        raise UserError("batch takes no --force: it writes over only the outputs it wrote itself, and a rerun skips "
                        "the ones it finished; delete an output to have it done again")
    check_face_options(args)
    temporal = temporal_from_args(args)
    adapt = adapt_from_args(args, has_refs=bool(args.refs))
    inputs = expand_inputs(args.inputs, args.list, recursive=args.recursive)
    ray = args.ray
    if ray is None:  # (`ray job submit -- streamrestore batch ...` sets RAY_ADDRESS: a private Ray ignored its cluster)
        import importlib.util

        # (without Ray installed: in this process, as before; a shell's stale RAY_ADDRESS refused the batch)
        joins = bool(os.environ.get("RAY_ADDRESS")) and importlib.util.find_spec("ray") is not None
        ray = "auto" if joins else "local"
        if joins:
            log.info("batch: joining the Ray cluster of RAY_ADDRESS=%s (--ray local starts Ray here instead)",
                     os.environ["RAY_ADDRESS"])
    result = run(
        inputs, refs=args.refs, out_dir=args.output_dir, ray=ray, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, chunk_seconds=args.chunk_seconds, retries=args.retries,
        model=args.model, device=args.device, detector=args.detector, face_models=args.face_models,
        backend=args.backend, fast_vae=args.fast_vae, max_faces=args.max_faces, unmatched=args.unmatched, detect_every=args.detect_every,
        detect_size=args.detect_size,
        temporal=temporal, reference_detail=reference_detail_from_args(args), identity_gate=identity_gate_from_args(args),
        quality_gate=quality_gate_from_args(args), match_threshold=match_threshold_from_args(args),
        crop_resolution=crop_resolution_from_args(args), adapt=adapt, codec=args.codec, crf=args.crf, preset=args.preset,
        pix_fmt=args.pix_fmt, tune=args.tune, strip_metadata=args.strip_metadata,
        torch_threads=args.torch_threads, deinterlace=not args.no_deinterlace,
        progress=not args.no_progress, subfolders=output_subfolders(args.inputs, inputs) if args.recursive else None,
    )
    print(result.summary(), file=sys.stderr)
    return result.exit_code
