"""``streamrestore eval``: measure a restorer the way the InstantRestore paper does, or on a video
against its clean original.

    streamrestore eval --data ../shared/data/instantrestore --models ../shared/models --model lite --json eval.json
    streamrestore eval --video CLEAN.mp4 [--degrade PRESET | --degraded FILE] [--refs DIR] [--model M]
                       [--json PATH] [--max-frames N] [--every K]

With ``--video`` the clean clip is degraded (``--degrade``, default ``default``) or an already
degraded copy is taken (``--degraded``), restored by the whole pipeline with and without the
references and measured against the clean clip: face-region PSNR/SSIM, paddle identity to the
ground truth and to the references, E_warp flicker; the clean clip restored as is is measured
too. The table goes to stdout; ``--json PATH`` writes ``{"rows": [{"method", "psnr", "ssim",
"id_gt", "id_refs", "id_std", "ewarp", "ewarp_face", "ewarp_input", "frames", "pairs", "faces_changed",
"faces_seen"}], ...}`` (the last two: of a restored row's faces, those the model changed, the rest
left by the quality gate; ``--no-quality-gate`` has the model change them all). What each value
means: :mod:`streamrestore.eval.video`.

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

from streamrestore.cli.options import (
    BACKEND_NAMES,
    CommandParser,
    adapt_from_args,
    add_adapt_options,
    add_crop_resolution_option,
    add_identity_gate_option,
    add_progress_options,
    add_quality_gate_option,
    add_reference_detail_option,
    add_temporal_options,
    check_output_file,
    check_torch_threads,
    crop_resolution_from_args,
    decimal,
    identity_gate_from_args,
    progress_from_args,
    quality_gate_from_args,
    reference_detail_from_args,
    set_torch_threads,
    temporal_from_args,
    whole,
)
from streamrestore.errors import InputError, ModelError, one_line
from streamrestore.threads import TORCH_THREADS_HELP

log = logging.getLogger(__name__)


_MODELS_HELP = "the evaluation models folder: face judges and detectors, laid out as streamrestore.model_files says"


def default_models_dir() -> Path | None:
    """``$STREAMRESTORE_MODELS``: where ``--models`` points when it is not given (None: unset)."""
    env = os.environ.get("STREAMRESTORE_MODELS")
    return Path(env) if env else None


def _model_files(args: argparse.Namespace, *needed: str):
    """The :class:`~streamrestore.model_files.EvalModelFiles` of ``--models`` (or of
    :func:`default_models_dir`), with the files ``needed`` on disk, else a one-line error."""
    from streamrestore.model_files import EvalModelFiles

    folder = Path(args.models) if args.models else default_models_dir()
    if folder is None:
        raise ModelError(f"no evaluation models folder given; pass --models DIR ({_MODELS_HELP}) "
                         "or set STREAMRESTORE_MODELS")
    files = EvalModelFiles.from_dir(folder)
    missing = files.missing(*needed)
    if missing:
        raise ModelError(f"evaluation models not found in {folder} (no {', '.join(map(str, missing))}); "
                         f"pass --models DIR ({_MODELS_HELP})")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="streamrestore eval",
        description="Evaluate a face restorer on aligned test cases (--data): PSNR, SSIM, identity similarity "
                    "(MobileFaceNet, paddle MobileFaceNet = the judge, dlib) and landmark distance; or on a "
                    "video against its clean original (--video): face PSNR/SSIM, identity to the ground truth "
                    "and the references, E_warp flicker.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", metavar="DIR",
                      help="InstantRestore test layout (<id>/degraded.png, gt.png, conditioning/), clean identity "
                           "folders (<id>/*.jpg), or a packed .npz dataset")
    what.add_argument("--video", metavar="CLEAN",
                      help="a clean clip: the ground truth of a video evaluation (see the video options below)")
    p.add_argument("--model", default="lite", help="lite (default), identity, instantrestore, or a model file")
    p.add_argument("--json", metavar="PATH", help="also write the averaged table as JSON")
    p.add_argument("--models", metavar="DIR",
                   help=f"{_MODELS_HELP} (default $STREAMRESTORE_MODELS)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    p.add_argument("--torch-threads", type=whole, metavar="N", help=TORCH_THREADS_HELP)
    add_adapt_options(p)
    add_reference_detail_option(p)
    add_crop_resolution_option(p)
    p.add_argument("-v", "--verbose", action="store_true")
    add_progress_options(p)
    _add_data_options(p.add_argument_group("test-case evaluation (--data)"))
    _add_video_options(p.add_argument_group("video evaluation (--video)"))
    return p


def _add_data_options(p) -> None:
    p.add_argument("--out", metavar="DIR", help="folder for eval.md and grid.png (default ./eval_<data>_<model>)")
    p.add_argument("--limit", type=whole, metavar="N", help="evaluate only the first N people (sorted by name)")
    p.add_argument("--preset", default=None,
                   help="degradation of clean sets (--data; a clip's is --degrade): severe (default), moderate, "
                        "mild, video. Its downsampling "
                        "factors are not scaled with the crop: on 128-px packs severe leaves ~11 px faces; "
                        "moderate there is closer to severe on 512-px crops")
    p.add_argument("--seed", type=whole, default=0, help="base of the fixed per-person degradation seeds")
    p.add_argument("--split", default="all", choices=["all", "train", "val"],
                   help="for a packed .npz: evaluate its held-out (val) or training identities")
    p.add_argument("--val-fraction", type=decimal, default=0.15, help="hold-out fraction of --split (as in training)")
    p.add_argument("--split-seed", type=whole, default=0, help="seed of --split (as in training)")
    p.add_argument("--no-dlib", action="store_true", help="skip the dlib judge (slowest)")


def _add_video_options(v) -> None:
    degraded = v.add_mutually_exclusive_group()
    degraded.add_argument("--degrade", metavar="PRESET",
                          help="degrade the clean clip with this preset: default (blur 1.2, x4 down, crf 32, "
                               "bicubic up, crf 16), mild, severe")
    degraded.add_argument("--degraded", metavar="FILE", help="an already degraded copy of the clean clip, frame for frame")
    v.add_argument("--refs", metavar="DIR",
                   help="reference photos of the person (without: only model_norefs is run, no identity to refs)")
    v.add_argument("--max-frames", type=whole, metavar="N", help="measure only the first N frames")
    v.add_argument("--every", type=whole, default=1, metavar="K",
                   help="face metrics on every K-th frame (default 1; E_warp always uses every frame pair)")
    v.add_argument("--save", metavar="DIR",
                   help="keep the degraded copy and every measured stream (lossless <row>.mkv) in DIR")
    v.add_argument("--detector", default="auto", choices=["auto", "scrfd", "dlib"],
                   help="the pipeline's face detector (the measured faces always come from SCRFD-2.5G on the "
                        "clean frames)")
    v.add_argument("--face-models", metavar="DIR",
                   help="the pipeline's insightface model pack (default: the one in the --models folder, if any)")
    add_temporal_options(v)  # the pipeline's temporal fusion, as `streamrestore` and `live` take it
    add_quality_gate_option(v)
    add_identity_gate_option(v)  # (the pipeline's: --data restores the aligned crops directly)


def _given(args: argparse.Namespace, add_options) -> list[str]:
    """The options that ``add_options`` puts on a parser which ``args`` holds at other than
    their defaults, as typed (``--max-frames``): the other mode's, which it would ignore."""
    scratch = argparse.ArgumentParser(add_help=False)
    add_options(scratch)
    return [f"--{name.replace('_', '-')}" for name, default in vars(scratch.parse_args([])).items()
            if getattr(args, name) != default]


def _refuse_other_modes(args: argparse.Namespace) -> None:
    """InputError naming the options of the mode not asked for (they would be ignored)."""
    if args.video:
        given, mode, hint = _given(args, _add_data_options), "--data", ""
        if "--preset" in given:
            hint = "; a clip's damage is --degrade PRESET"
    else:
        given, mode = _given(args, _add_video_options), "--video"
        hint = f"; {'it needs' if len(given) == 1 else 'they need'} --video CLEAN.mp4"
    if given:
        verb = f"is a {mode} option" if len(given) == 1 else f"are {mode} options"
        raise InputError(f"{', '.join(given)} {verb}{hint}")


def _restorer(args: argparse.Namespace, load_restorer):
    """The restorer to evaluate; with ``--adapt`` wrapped to adapt per person (fine-tuned eagerly,
    served by the backend as in the main command)."""
    return load_restorer(args.model, device=args.device, backend=args.backend,
                         adapt=adapt_from_args(args))


def _runner(restorer, args: argparse.Namespace) -> dict:
    """What ran the model, for the record (``onnxruntime`` on ``cpu``; the main command's ``--json`` keys), with
    what was asked under ``asked``: "auto" said nothing of it."""
    from streamrestore.api import runner_of

    backend, device = runner_of(restorer)
    return {"device": device or args.device, "backend": backend or args.backend,
            "asked": {"device": args.device, "backend": args.backend}}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_output_file(args.json, "--json", [args.video, getattr(args, "degraded", None)])  # before a long evaluation
    _refuse_other_modes(args)
    check_torch_threads(args)
    set_torch_threads(args.torch_threads)
    if args.video:
        return video_main(args)
    from streamrestore.api import load_restorer
    from streamrestore.data.degrade import PRESETS
    from streamrestore.eval.judges import load_judges, load_landmark_detector
    from streamrestore.eval.report import format_table, markdown_report, write_grid, write_json
    from streamrestore.eval.run import EvalConfig, evaluate, load_cases
    from streamrestore.model.resample import at_crop_resolution

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    preset_given = args.preset is not None
    args.preset = args.preset or "severe"
    if args.preset not in PRESETS:
        raise InputError(f"unknown --preset {args.preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    models_dir = _model_files(args, "mobilefacenet", "paddle", "landmark_detector").root
    data = Path(args.data)
    identities = None
    if args.split != "all":
        if not (data.is_file() and data.suffix == ".npz"):
            raise InputError("--split works on a packed .npz dataset; drop it for folders")
        from streamrestore.data.pack import PackedFaces

        train, val = PackedFaces(data).split(args.val_fraction, args.split_seed)
        identities = val if args.split == "val" else train
    config = EvalConfig(preset=args.preset, seed=args.seed, limit=args.limit, with_dlib=not args.no_dlib,
                        reference_detail=reference_detail_from_args(args))

    from streamrestore.eval.run import is_test_layout

    # (the InstantRestore layout brings its degraded photos: a preset asked for changed nothing, and the report
    # named it as used)
    own_degraded = data.is_dir() and is_test_layout(data)
    if own_degraded and preset_given:
        log.warning("--preset %s does not apply to %s: its cases bring their own degraded.png, used as they are "
                    "(presets degrade identity folders and packs)", args.preset, data)
    started = time.perf_counter()
    cases = load_cases(data, config, models_dir=models_dir, identities=identities)
    # as in the pipeline: crops of --crop-resolution px, the model's change enlarged onto them;
    # "auto" (a choice per face by its size in a frame) means the model's own side for photos
    crop_resolution = crop_resolution_from_args(args)
    loaded = _restorer(args, load_restorer)
    restorer = at_crop_resolution(loaded, None if crop_resolution == "auto" else crop_resolution)
    judges = load_judges(models_dir, with_dlib=config.with_dlib)
    landmarks = load_landmark_detector(models_dir)
    log.info("evaluating %s on %d people from %s", args.model, len(cases), data)

    from streamrestore.run import make_progress

    bar = make_progress(len(cases), progress_from_args(args), unit="person")  # (a minute a person or more: a class saw nothing)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)  # (called once a person)

    try:
        result = evaluate(cases, restorer, judges, landmarks, config, progress=progress)
    finally:
        if bar is not None:
            bar.close()
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
        "clean-set degradation": "none: the set's own degraded.png" if own_degraded else
                                 f"preset {config.preset}, seed {config.seed} + crc32(person)",
        "references": f"first 1 / first {config.many_refs} of each person's references (sorted by name); "
                      "model_refs4_other: the next person's",
        "judges": "id_* = cosine similarity to the ground truth; paddle MobileFaceNet is the judge",
        "time": f"{seconds:.1f} s",
    }
    report = markdown_report(result.rows, result.per_image, title=f"streamrestore eval: {model_name}",
                             facts=facts, notes=result.notes, grid=grid_name)
    (out / "eval.md").write_text(report, encoding="utf-8")
    if args.json:
        import dataclasses

        import torch

        from streamrestore import __version__
        from streamrestore.model.registry import model_provenance

        # (what a reader needs to make the table again, as eval --video's record holds)
        write_json(args.json, result.rows, model=str(args.model), data=str(data), people=len(cases),
                   resolution=restorer.resolution, notes=result.notes, version=__version__,
                   **model_provenance(args.model), degradation=None if own_degraded else
                   {"preset": config.preset, "seed": config.seed}, limit=args.limit, split=args.split,
                   crop_resolution=crop_resolution, reference_detail=dataclasses.asdict(config.reference_detail),
                   **_runner(loaded, args), torch_threads=torch.get_num_threads())
    print(format_table(result.rows, extra=("n", "lmd_missed")))
    print(one_line(f"wrote {out / 'eval.md'}" + (f", {out / grid_name}" if grid_name else "")
                   + (f", {args.json}" if args.json else "")), file=sys.stderr)
    return 0


def video_main(args: argparse.Namespace) -> int:
    """``eval --video``: degrade (or take the degraded copy), restore every way, measure, report."""
    import dataclasses
    import json
    import tempfile

    import torch

    from streamrestore import __version__
    from streamrestore.api import build_face_restorer, load_restorer
    from streamrestore.eval.video import (
        CLEAN_METHODS,
        DEFAULT_METHODS,
        MARGIN_FRAMES,
        VIDEO_PRESETS,
        FaceJudge,
        GroundTruthFaces,
        degrade_video,
        evaluate_video,
        format_video_table,
        json_ready,
        read_reference_photos,
        reference_embedding,
    )
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import QualityGateConfig
    from streamrestore.video.reader import probe

    clean = Path(args.video)
    if not clean.is_file():
        raise InputError(f"clean video {clean} does not exist")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.every < 1:
        raise InputError(f"--every must be at least 1, got {args.every}")
    temporal = temporal_from_args(args)  # a bad value fails before any model is loaded
    preset = args.degrade or ("default" if args.degraded is None else None)
    if preset is not None and preset not in VIDEO_PRESETS:
        raise InputError(f"unknown --degrade {preset!r}; choose one of {', '.join(VIDEO_PRESETS)}")
    if args.degraded is not None and not Path(args.degraded).is_file():
        raise InputError(f"degraded video {args.degraded} does not exist")
    # readable as video: InputError saying why, before any model loads
    infos = {video: probe(video) for video in (clean, args.degraded) if video is not None}
    if args.degraded is not None:
        damaged, truth = infos[args.degraded], infos[clean]
        if (damaged.width, damaged.height) != (truth.width, truth.height):
            raise InputError(f"--degraded {args.degraded} is {damaged.width}x{damaged.height} and the clean clip "
                             f"{truth.width}x{truth.height}: the degraded copy must be the clean clip's frames, at "
                             "its size (damaged and scaled back up)")
        if damaged.rotation != truth.rotation:
            log.warning("--degraded %s is shown turned by %d° and the clean clip by %d°: both are measured as the "
                        "clean clip is shown, and the restorer sees the degraded copy as its own tag says",
                        args.degraded, damaged.rotation, truth.rotation)
    files = _model_files(args, "paddle", "detector")
    models_dir = files.root
    face_models = args.face_models
    if face_models is None and files.face_models.is_dir():
        face_models = str(files.face_models)
    methods = list(DEFAULT_METHODS + CLEAN_METHODS)
    if args.refs is None:
        log.warning("no --refs: only model_norefs is run and identity to the references is not measured")
        methods = [m for m in methods if not m.refs]

    started = time.perf_counter()
    judge = FaceJudge.paddle(models_dir)
    faces = GroundTruthFaces.scrfd(models_dir, judge)
    ref_embedding = None
    if args.refs is not None:
        ref_embedding = reference_embedding(read_reference_photos(args.refs), faces)
        if ref_embedding is None:
            log.warning("no face found in the photos of %s: identity to the references is not measured", args.refs)
    restorer = _restorer(args, load_restorer)
    reference_detail = reference_detail_from_args(args)
    identity_gate = identity_gate_from_args(args)
    crop_resolution = crop_resolution_from_args(args)
    config = PipelineConfig(reference_detail=reference_detail, identity_gate=identity_gate,
                            crop_resolution=crop_resolution, temporal=temporal,
                            gate=quality_gate_from_args(args) or QualityGateConfig())

    def make_face_restorer(method, fps):
        options = dict(refs=[args.refs] if method.refs else [], model=restorer, device=args.device,
                       detector=args.detector, face_models=face_models, fps=fps, backend=args.backend,
                       config=config)
        options.update(method.options)
        return build_face_restorer(**options)

    with tempfile.TemporaryDirectory(prefix="streamrestore-eval-") as tmp:
        save = Path(args.save) if args.save else None
        if args.degraded is not None:
            degraded = Path(args.degraded)
        else:
            degraded = (save or Path(tmp)) / "degraded.mp4"
            # (frames past those measured: they come out as in the whole clip's degraded copy)
            count = degrade_video(clean, degraded, preset, max_frames=args.max_frames, margin_frames=MARGIN_FRAMES)
            log.info("degraded %d frames of %s with preset %s", count, clean, preset)
        from streamrestore.run import expected_frames, make_progress
        from streamrestore.video.reader import probe as probe_video

        measured = expected_frames(probe_video(degraded), None, None)
        measured = min(measured, args.max_frames) if measured and args.max_frames else (measured or args.max_frames)
        bar = make_progress(measured, progress_from_args(args))  # (each frame restored by every row's method)
        try:
            rows = evaluate_video(clean, degraded, make_face_restorer=make_face_restorer, faces=faces,
                                  ref_embedding=ref_embedding, methods=methods, max_frames=args.max_frames,
                                  every=args.every, save_dir=save, progress=None if bar is None else
                                  lambda done: bar.update(1))
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - started
    if faces.padded:
        log.info("%d clean frame(s) had their face found only in the padded frame (face fills the frame)",
                 faces.padded)
    path = None
    if args.json:  # (first: the figures are kept whatever becomes of the printing)
        from streamrestore.model.registry import model_provenance

        facts = {
            "video": str(clean), "degraded": None if args.degraded is None else str(args.degraded),
            "degrade": preset, "refs": args.refs, "model": str(args.model), "max_frames": args.max_frames,
            "every": args.every, "face_models": face_models, "detector": args.detector,
            "gt_missed": faces.missed, "gt_padded": faces.padded, "seconds": round(seconds, 1),
            # what a reader needs to make the table again
            "version": __version__, **model_provenance(args.model), **_runner(restorer, args),
            "torch_threads": torch.get_num_threads(),
            "adapt": None if adapt_from_args(args) is None else dataclasses.asdict(adapt_from_args(args)),
            "degradation": None if preset is None else dataclasses.asdict(VIDEO_PRESETS[preset]),
            "degraded_past": None if args.degraded is not None or args.max_frames is None else MARGIN_FRAMES,
            "pipeline": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        }
        from streamrestore.output_file import write_text_file

        path = write_text_file(Path(args.json), json.dumps({"rows": json_ready(rows), **facts}, indent=2,
                                                           allow_nan=False) + "\n")
    print(format_video_table(rows))
    if path is not None:
        print(one_line(f"wrote {path}"), file=sys.stderr)
    return 0
