"""``streamrestore bench``: per-stage ms/frame and end-to-end fps on a clip, backends side by side.

    streamrestore bench INPUT --refs DIR [--model M] [--device D] [--backend B] [--json PATH] [--fast-vae PATH]
        [--temporal-strength F] [--no-flicker]

Prints a table (stages down, backends across) and, with ``--json PATH``, writes
``{"fps", "device", "backend", "rows": [{"stage", "backend", "ms_per_frame"}], ...}`` where
``fps`` and ``backend`` are the best backend's end-to-end figures. A ``flicker`` row gives each
backend's output E_warp (x 1e3, flow from the input; ``flicker_by_backend`` and ``input_flicker``
in the JSON); the temporal fusion's cost is the ``temporal`` stage. Without ``--backend`` every
backend available on the device runs, one after the other in this process.
"""
from __future__ import annotations

import argparse
import sys

from streamrestore.cli.options import (
    BACKEND_NAMES,
    FAST_VAE_HELP,
    CommandParser,
    add_crop_resolution_option,
    add_identity_gate_option,
    add_reference_detail_option,
    add_temporal_options,
    check_face_options,
    check_output_file,
    check_torch_threads,
    crop_resolution_from_args,
    identity_gate_from_args,
    reference_detail_from_args,
    set_torch_threads,
    temporal_from_args,
    whole,
)
from streamrestore.errors import one_line
from streamrestore.threads import TORCH_THREADS_HELP

#: ``--dtype``'s values: :data:`streamrestore.bench.DTYPES`' names, without loading torch (a test keeps them the same)
DTYPE_NAMES = ("bf16", "fp16", "fp32")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="streamrestore bench",
        description="Time every stage of the pipeline and the end-to-end frame rate on a clip, "
                    "for each execution backend of the restorer.",
    )
    p.add_argument("input", help="video file to run on")
    p.add_argument("--refs", action="append", default=[], metavar="DIR|NAME=DIR",
                   help="folder of photos of the person, or a video of them (repeat as NAME=DIR for several people)")
    p.add_argument("--model", default="lite", help="lite (default), instantrestore, identity, random-paper (the paper-scale "
                   "network with random weights: real speed, noise output), or a model file")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the restorer runs: auto (default) uses CUDA when a GPU is visible, else the CPU")
    p.add_argument("--backend", choices=BACKEND_NAMES, action="append", default=None,
                   help="run only this backend; repeat to compare several in one run, one after the other "
                        "(default: every backend available on the device)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="compute dtype (default fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--frames", type=whole, metavar="N", help="time only the first N frames (default: all)")
    p.add_argument("--warmup-frames", type=whole, default=8, metavar="N",
                   help="untimed frames per backend first, so compiling is not timed (default 8)")
    p.add_argument("--detector", default="auto", choices=["auto", "scrfd", "dlib"],
                   help="auto: SCRFD when an insightface model pack is found, else dlib")
    p.add_argument("--face-models", metavar="DIR", help="folder with an insightface model pack")
    p.add_argument("--resolution", type=whole, help="crop size of --model identity (default 512)")
    p.add_argument("--fast-vae", metavar="PATH", help=FAST_VAE_HELP)
    p.add_argument("--torch-threads", type=whole, metavar="N", help=TORCH_THREADS_HELP)
    p.add_argument("--detect-every", type=whole, default=3, metavar="K",
                   help="run the face detector on every K-th frame, optical flow in between (default 3; 1: every frame)")
    p.add_argument("--max-faces", type=whole, metavar="N", help="restore at most N faces per frame (largest first)")
    add_temporal_options(p)
    add_reference_detail_option(p)
    add_identity_gate_option(p)
    add_crop_resolution_option(p)
    p.add_argument("--no-flicker", dest="flicker", action="store_false",
                   help="skip the flicker measure (E_warp of the output with the input's flow, after each run)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="more messages")
    return p


def main(argv: list[str]) -> int:
    from streamrestore.errors import UserError

    args = build_parser().parse_args(argv)  # (--help and a mistyped option: before torch loads, 2.5 s)
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if args.warmup_frames < 0:
        raise UserError(f"--warmup-frames must be 0 or more, got {args.warmup_frames}")
    import torch

    from streamrestore.bench import DTYPES, run_bench, write_bench_json

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    check_torch_threads(args)
    if args.resolution is not None and args.resolution < 8:
        raise UserError(f"--resolution must be at least 8, got {args.resolution}")
    check_output_file(args.json, "--json", [args.input])
    check_face_options(args)
    temporal = temporal_from_args(args)
    set_torch_threads(args.torch_threads)
    result = run_bench(
        args.input, args.refs, model=args.model, device=args.device,
        backends=args.backend, frames=args.frames,
        warmup_frames=args.warmup_frames, detector=args.detector, face_models=args.face_models,
        dtype=DTYPES[args.dtype] if args.dtype else None, resolution=args.resolution, fast_vae=args.fast_vae,
        torch_threads=args.torch_threads, temporal=temporal, flicker=args.flicker,
        identity_gate=identity_gate_from_args(args), crop_resolution=crop_resolution_from_args(args),
        detect_every=args.detect_every, max_faces=args.max_faces, reference_detail=reference_detail_from_args(args),
    )
    print(result.table())
    if args.json:
        path = write_bench_json(result, args.json)
        print(one_line(f"wrote {path}"), file=sys.stderr)
    return 0
