"""What the commands share: option groups, their conversion into library values, logging set-up.

Every command module (:mod:`streamrestore.cli.restore`, ``batch``, ``bench``, ``live``, ...)
builds its parser from these helpers, so an option means the same everywhere. Nothing here
imports torch at module level: ``streamrestore --version`` must stay fast.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from streamrestore.errors import OutputError, UserError, one_line

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.model.adapt import AdaptConfig
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import IdentityGateConfig
    from streamrestore.reference_detail import ReferenceDetailConfig
    from streamrestore.run import ProgressMode
    from streamrestore.temporal import TemporalConfig
    from streamrestore.video.writer import EncoderSettings

__all__ = [
    "FAST_VAE_HELP",
    "adapt_from_args",
    "add_adapt_options",
    "add_encoder_options",
    "add_field_rate_option",
    "add_model_options",
    "add_progress_options",
    "add_crop_resolution_option",
    "add_deinterlace_option",
    "add_identity_gate_option",
    "add_reference_detail_option",
    "add_temporal_options",
    "check_face_options",
    "check_output_file",
    "deinterlace_from_args",
    "configure_logging",
    "encoder_from_args",
    "crop_resolution_from_args",
    "decimal",
    "whole",
    "identity_gate_from_args",
    "log",
    "parse_time",
    "pipeline_config",
    "progress_from_args",
    "restorer_options",
    "set_torch_threads",
    "temporal_from_args",
]

T = TypeVar("T")

log = logging.getLogger("streamrestore")  # the package's root logger: the CLI gives it its handler; modules log to children


def check_output_file(path: str | None, option: str, inputs: Sequence[str | os.PathLike | None] = (),
                      judge_existing: bool = True) -> None:
    """Fails at once (OutputError naming ``option``) where a file cannot be written at ``path``: a
    folder there, or a nearest existing folder above it that is not writable; a long run then does
    not end without its results. Folders missing above it are made when it is written.

    An existing file there is replaced (a run's figures written again), unless it is one of the command's
    ``inputs``, or a video or photo: a slip of tab completion (``--json clip.mp4``) replaced the video with
    its figures. ``judge_existing`` False leaves an existing file to the caller (the main command asks for
    ``--force``)."""
    from pathlib import Path

    from streamrestore.images import is_image
    from streamrestore.output_file import same_file
    from streamrestore.video.reader import VIDEO_SUFFIXES

    if path is None:
        return
    if path == "-":  # (the main command's --json - is standard output; here the table is)
        raise OutputError(f"{option} -: this command prints its table on standard output; give {option} a file name")
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name")
    for given in inputs if judge_existing else ():
        if given is not None and target.exists() and same_file(target, Path(given).expanduser()):
            raise OutputError(f"{option} {path} is this command's input {given}; give the figures a file of their own")
    real = target.resolve() if target.exists() else target  # (a link is written through: its target is judged)
    if judge_existing and target.exists() and (real.suffix.lower() in VIDEO_SUFFIXES or is_image(real)):
        raise OutputError(f"{option} {path} is a {'photo' if is_image(real) else 'video'}, which the figures would "
                          "replace; give them a file of their own (such as figures.json)")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {folder}; pick another path")


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _not_a_number(text: str, what: str, use: str, decimals: bool = True) -> argparse.ArgumentTypeError:
    comma = re.fullmatch(r"(-?\d+),(\d+)", text.strip()) if decimals else None
    hint = f"decimals take a point: {comma.group(1)}.{comma.group(2)}" if comma else use
    return argparse.ArgumentTypeError(f"not {what}: {text!r} ({hint})")


def decimal(text: str) -> float:
    """A number as a person writes it (``0.5``, ``2``, ``1e-3``): an argparse ``type`` for the options that
    take one. Python's ``float`` also read ``1_5`` as 15, and ``nan``/``inf``, none of which anyone means."""
    if not _DECIMAL.fullmatch(text.strip()) or not math.isfinite(float(text)):  # (1e400 is inf)
        raise _not_a_number(text, "a number", "digits, with a point for decimals")
    return float(text)


def whole(text: str) -> int:
    """A whole number as a person writes it (``4``, ``+2``): the argparse ``type`` of the options that count.
    Python's ``int`` read ``1_5`` as 15."""
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise _not_a_number(text, "a whole number", "digits only, without separators", decimals=False)
    return int(text)


def parse_time(text: str) -> float:
    """Seconds from ``SS``, ``SS.s``, ``MM:SS`` or ``HH:MM:SS`` (an argparse ``type``)."""
    parts = text.strip().removeprefix("+").split(":")
    if len(parts) > 3 or not all(re.fullmatch(r"\d+\.?\d*|\.\d+", p) for p in parts):
        raise _not_a_number(text, "a time", "use seconds or HH:MM:SS")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds


def add_progress_options(p: argparse.ArgumentParser) -> None:
    """``--progress auto|bar|lines|none`` and ``--no-progress`` (:func:`progress_from_args` reads them)."""
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="auto (default): a bar on a terminal that redraws one, else a plain line every few seconds; "
                   "lines: the plain lines on a terminal too (a screen reader reads each once, where a bar is "
                   "redrawn ten times a second); bar; none")
    p.add_argument("--no-progress", action="store_true", help="the same as --progress none")


def progress_from_args(args: argparse.Namespace) -> ProgressMode:
    """The library's ``progress`` (:data:`streamrestore.run.ProgressMode`) for :func:`add_progress_options`'s."""
    if args.no_progress or args.progress == "none":
        return False
    return True if args.progress == "auto" else args.progress


FAST_VAE_HELP = ("decode with TAESD instead of the model's VAE: the folder holding taesd_decoder.safetensors "
                 "(madebyollin/taesd) or the file; ~12x faster decoding, some quality lost (see README). "
                 "Latent models only; ignored with a warning for lite")


def add_model_options(p: argparse.ArgumentParser, fast_vae: bool = False) -> None:
    """The model and face options every restoring command shares. ``fast_vae`` adds
    ``--fast-vae``, for commands that build the restorer with :func:`restorer_options`."""
    p.add_argument("--refs", action="append", default=[], metavar="DIR|NAME=DIR",
                   help="folder of photos of the person to restore towards, one photo, or a video of them (4 frames spread "
                        "over it; another clip in the same light helps most); repeat as NAME=DIR for several people "
                        "(optional: without it faces are restored without references)")
    p.add_argument("--model", default="lite", help="lite (shipped, default), instantrestore, identity (returns each "
                   "face as it was: with --reference-detail 0 --no-temporal --crf 0 an 8-bit H.264 output's pictures "
                   "are the input's, a control run), or a checkpoint path")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the restorer runs: auto (default) uses CUDA when a GPU is visible, else the CPU")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="how the restorer runs; auto picks the fastest available and says which")
    if fast_vae:
        p.add_argument("--fast-vae", metavar="PATH", help=FAST_VAE_HELP)
    p.add_argument("--detector", default="auto", choices=["auto", "scrfd", "dlib"],
                   help="auto: SCRFD when an insightface model pack is found, else dlib")
    p.add_argument("--face-models", metavar="DIR", help="folder with an insightface model pack (SCRFD detector + recognition)")
    p.add_argument("--max-faces", type=whole, metavar="N", help="restore at most N faces per frame (largest first)")
    p.add_argument("--unmatched", default="restore", choices=["restore", "skip"],
                   help="faces matching no reference set: restore without references (default) or leave them")
    p.add_argument("--detect-every", type=whole, default=3, metavar="K",
                   help="run the face detector on every K-th frame, optical flow in between (default 3; 1: every frame)")
    p.add_argument("--detect-size", type=whole, metavar="N",
                   help="SCRFD looks for faces in the frame scaled to N px on its longer side (default 640; a multiple "
                        "of 32): 1280 finds faces half as small (a wide shot, a 1080p overview camera) at ~4x the "
                        "detection time")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="more messages; the run summary adds each track's similarity to every reference set and "
                        "the share of the model's change the quality gate kept")


class CommandParser(argparse.ArgumentParser):
    """A command's parser whose mistakes are said in one line first, the way to the options after it: the
    usage block (20-50 lines at 40 columns) came first, and a screen reader read all of it before the error.
    (Numbers are read by :func:`decimal` and :func:`whole`, which name a decimal comma and separators.)"""

    def error(self, message: str):  # type: ignore[override]
        unrecognized = "unrecognized arguments: "
        if message.startswith(unrecognized):  # (a typo: --detect-sise) the option meant, where one is close
            message += self.options_meant(message[len(unrecognized):].split())
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n(the options: {self.prog} --help)\n")

    def long_options(self) -> list[str]:
        """The long options this parser takes."""
        return [option for option in self._option_string_actions if option.startswith("--")]

    def unknown_options(self, args: Sequence[str]) -> list[str]:
        """The long options of ``args`` this parser does not know (nor takes as an abbreviation of one)."""
        known = self.long_options()
        names = [arg.split("=", 1)[0] for arg in args if arg.startswith("--") and arg != "--"]
        return [name for name in names if not any(option.startswith(name) for option in known)]

    def options_meant(self, args: Sequence[str]) -> str:
        """`` (--detect-sise: did you mean --detect-size?)`` for the options of ``args`` close to one this
        parser knows; empty where none is."""
        import difflib

        meant = [f"{name}: did you mean {close[0]}?" for name in self.unknown_options(args)
                 for close in [difflib.get_close_matches(name, self.long_options(), n=1, cutoff=0.75)] if close]
        return f" ({'; '.join(meant)})" if meant else ""


#: ``--backend``'s values: :data:`streamrestore.backends.selection.BACKENDS`, named here without loading torch
#: (every command's ``--help`` and mistakes stay fast; a test keeps the two the same)
BACKEND_NAMES = ("auto", "eager", "compile", "tensorrt", "onnxruntime")


def add_encoder_options(p: argparse.ArgumentParser, metadata: bool = True) -> None:
    """The output encoder's options (``streamrestore.video.writer.EncoderSettings``); ``metadata``: with
    ``--strip-metadata`` (not live's, whose outputs carry no tags of a source)."""
    if metadata:
        p.add_argument("--strip-metadata", action="store_true",
                       help="leave out the input's tags: a video's title, comments, recording date, location, "
                       "camera and author, its timecode, chapters and track names (each track's language stays); a "
                       "photo's EXIF (GPS, camera, owner, date), XMP and text. For footage of people who must not "
                       "be found; by default they are kept")
    p.add_argument("--crf", type=whole, help="encoder quality (lower is better; default visually lossless for faces; "
                   "live's streams: 23)")
    p.add_argument("--preset", help="encoder speed preset: x264/x265 a name (ultrafast ... veryslow; default "
                   "veryfast, e.g. medium for smaller files), vp9 -8..8, svt-av1 -2..13 (a number: lower is slower)")
    p.add_argument("--codec", help="libx264 (default; libx265 for 10-bit video, as phones record HDR; vp9 for "
                   ".webm), libx265, vp9, av1, or another video encoder of this FFmpeg by its name; for an editing "
                   "intermediate prores (prores_ks: a ProRes input keeps its profile) or dnxhr (DNxHR HQ, HQX at "
                   "10 bits) into .mov, ffv1 into .mkv")
    p.add_argument("--tune", metavar="TUNING", help="x264/x265 tuning: grain keeps film grain and tape noise "
                   "(the default encode smooths it by about a tenth, over the whole picture), animation, film, ...")
    p.add_argument("--pix-fmt", metavar="FORMAT", help="the output's pixel format (default: the input's chroma and "
                   "depth where the encoder takes them, so a 4:2:2 10-bit master stays so; yuv420p plays in every "
                   "browser and phone, and an odd-sized picture needs yuv444p; files only)")


def add_deinterlace_option(p: argparse.ArgumentParser) -> None:
    """``--no-deinterlace`` (``restore_video(deinterlace=False)``)."""
    p.add_argument("--no-deinterlace", action="store_true",
                   help="an interlaced input (DV, DVD, 1080i) is deinterlaced as it is read by default (bwdif, one "
                        "frame per frame, timestamps kept), so faces are restored whole and nothing combs; this "
                        "writes its two fields woven as they are")


def add_field_rate_option(p: argparse.ArgumentParser) -> None:
    """``--field-rate`` (``restore_video(deinterlace="fields")``)."""
    p.add_argument("--field-rate", action="store_true",
                   help="an interlaced input becomes one frame per field (50i gives 50p, 60i 60p): its motion is "
                        "kept whole, where the default gives one frame per frame (half the fields' instants), at "
                        "twice the frames to restore")


def deinterlace_from_args(args: argparse.Namespace) -> bool | str:
    """``restore_video``'s ``deinterlace`` of ``--no-deinterlace`` and ``--field-rate``; UserError for both."""
    if getattr(args, "field_rate", False):
        if args.no_deinterlace:
            raise UserError("--field-rate and --no-deinterlace: choose one (fields made frames, or kept woven)")
        return "fields"
    return not args.no_deinterlace


def add_temporal_options(p: argparse.ArgumentParser) -> None:
    """The temporal fusion's settings (``streamrestore.temporal.TemporalConfig``)."""
    p.add_argument("--temporal-strength", type=decimal, default=None, metavar="F",
                   help="temporal fusion: the most weight the previous frame's motion-compensated restoration "
                        "keeps, in [0, 1); 0 turns that part off (default 0.8; docs/temporal.md)")
    p.add_argument("--temporal-tolerance", type=decimal, default=None, metavar="LEVELS",
                   help="warp error (0-255 levels) at which the previous frame's weight has fallen to 1/e; "
                        "lower follows fast motion sooner (default 30)")
    p.add_argument("--temporal-denoise", type=decimal, default=None, metavar="F",
                   help="the most weight the previous frame's motion-compensated input keeps in the average "
                        "that removes compression flicker from degraded faces, in [0, 1); 0 turns it off "
                        "(default 0.7; clean faces are never averaged)")
    p.add_argument("--temporal-denoise-sigma", type=decimal, default=None, metavar="PX",
                   help="the input average splits each frame's difference by a Gaussian of this sigma (pixels "
                        "of a 128-px crop) and carries its fine part only by --temporal-denoise-fine, so that "
                        "the flow's small misregistrations do not flicker on a soft face (default 1.0)")
    p.add_argument("--temporal-denoise-fine", type=decimal, default=None, metavar="F",
                   help="the share of that fine part the input average carries, in [0, 1] (default 0.3; 1: all)")
    p.add_argument("--temporal-memory", type=whole, default=None, metavar="N",
                   help="how many earlier restored frames (one every 8) each face keeps and averages in where "
                        "they match it, which steadies small, heavily damaged faces over about a second; it "
                        "softens large faces (default 0: off; 4 is the measured setting, docs/temporal.md)")
    p.add_argument("--temporal-frame-strength", type=decimal, default=None, metavar="F",
                   help="the most weight the previous frame's change to the picture keeps, carried along the "
                        "optical flow of the input frames (after the crop-space fusion above: the added detail "
                        "follows the face as the frame shows it moving), in [0, 1); 0 turns it off (default 0.8)")
    p.add_argument("--temporal-frame-tolerance", type=decimal, default=None, metavar="LEVELS",
                   help="grey warp error of the input frames at which that weight has fallen to 1/e (default 1)")
    p.add_argument("--no-temporal", action="store_true",
                   help="no temporal fusion at all: every frame restored on its own")


def add_reference_detail_option(p: argparse.ArgumentParser) -> None:
    """The reference detail stage's strength (``streamrestore.reference_detail.ReferenceDetailConfig``)."""
    p.add_argument("--reference-detail", type=decimal, default=None, metavar="F",
                   help="how much of the reference photos' fine detail, registered onto each face by optical "
                        "flow, is added where it matches the face, in [0, 2]; 0 turns it off (default 0.4; "
                        "docs/video_eval.md)")


def reference_detail_from_args(args: argparse.Namespace) -> ReferenceDetailConfig:
    """The ``ReferenceDetailConfig`` of ``--reference-detail``; raises UserError out of range."""
    from streamrestore.reference_detail import ReferenceDetailConfig

    strength = getattr(args, "reference_detail", None)
    return _config_of_option("--reference-detail", ReferenceDetailConfig,
                             None if strength is None else {"strength": strength})


def add_identity_gate_option(p: argparse.ArgumentParser) -> None:
    """The identity gate's tolerance (``streamrestore.quality.IdentityGateConfig``)."""
    p.add_argument("--identity-tolerance", type=decimal, default=None, metavar="F",
                   help="how far the restorer's change may lower a face's similarity to its reference photos "
                        "(cosine, the face embedder's) before it is held back: at F none of the change is kept; "
                        "0 turns this identity check off (default 0.02; needs an insightface model pack)")


#: what the face-choice options do (add_face_choice_options)
_FACE_CHOICE_HELP = {
    "--no-quality-gate": "restore every face, also those the quality gate finds clean (by default a face that looks "
                         "sharp at its size in the frame is left as it was: a clean face must not get worse; small "
                         "faces in old photos often measure so)",
    "--match-threshold": "similarity a face needs to a person's photos to be that person, with several --refs sets "
                         "or --unmatched skip (cosine; default: the face embedder's measured value, which the "
                         "no-match warning names and -v shows each track's score against); lower it a little when "
                         "the photos' light or age keeps the person's own face just under it",
}


def add_face_choice_options(p: argparse.ArgumentParser) -> None:
    """Which faces are restored and toward whom: ``--no-quality-gate``
    (``QualityGateConfig(enabled=False)``) and ``--match-threshold`` (``PipelineConfig.match_threshold``)."""
    add_quality_gate_option(p)
    p.add_argument("--match-threshold", type=decimal, metavar="F", help=_FACE_CHOICE_HELP["--match-threshold"])


def add_quality_gate_option(p) -> None:
    """``--no-quality-gate`` and ``--strength`` (``QualityGateConfig``; alone in ``eval --video``, which matches
    no faces to sets)."""
    p.add_argument("--no-quality-gate", action="store_true", help=_FACE_CHOICE_HELP["--no-quality-gate"])
    p.add_argument("--strength", type=decimal, default=None, metavar="F",
                   help="how much of the restorer's change each face gets, in [0, 1] (default 1: all of it; 0.5 "
                        "keeps the face halfway between its input and the restored face, for more of the original "
                        "look; 0 leaves faces as they are)")


def match_threshold_from_args(args: argparse.Namespace) -> float | None:
    """``--match-threshold`` checked (UserError outside [-1, 1]); None when not given."""
    value = getattr(args, "match_threshold", None)
    if value is not None and not -1.0 <= value <= 1.0:
        raise UserError(f"--match-threshold is a cosine similarity in [-1, 1], got {value}")
    return value


def quality_gate_from_args(args: argparse.Namespace):
    """The ``QualityGateConfig`` of ``--no-quality-gate`` and ``--strength``; None without either (the default
    gate). UserError for a strength outside [0, 1]."""
    from streamrestore.quality import QualityGateConfig

    fields: dict[str, Any] = {}
    if getattr(args, "no_quality_gate", False):
        fields["enabled"] = False
    if getattr(args, "strength", None) is not None:
        fields["strength"] = args.strength
    return _config_of_option("--strength", QualityGateConfig, fields) if fields else None


def add_crop_resolution_option(p: argparse.ArgumentParser) -> None:
    """The side of the pipeline's aligned crops (``PipelineConfig.crop_resolution``)."""
    p.add_argument("--crop-resolution", type=_crop_resolution, default=None, metavar="N|auto",
                   help="side in pixels of the aligned crops the reference detail, gates, temporal fusion and "
                        "paste-back work on; the model sees them shrunk to its own size (lite: 128) and its change "
                        "is enlarged onto them. 'auto' (the default) picks the model's side x1, x2 or x4 (up to 512) per "
                        "face, the largest that keeps 1.25 frame pixels per crop pixel (docs/video_eval.md, "
                        "Sessions 22-23); N: one side for every face (128: the fastest)")


#: crop sides above this get a warning: twice auto's largest (a 512 px crop already serves a face of ~640 px)
LARGE_CROP = 1024


def _crop_resolution(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', got {text!r}") from None


def crop_resolution_from_args(args: argparse.Namespace) -> int | str | None:
    """``--crop-resolution``, checked by ``PipelineConfig``: UserError for a value it refuses."""
    from streamrestore.pipeline import PipelineConfig

    value = getattr(args, "crop_resolution", None)
    if isinstance(value, int) and value < 32:  # the config's own words name its None
        raise UserError(f"--crop-resolution takes 'auto' or a side of at least 32 pixels, got {value}")
    if isinstance(value, int) and value > LARGE_CROP:
        log.warning("--crop-resolution %d: every stage's work on a face grows with the square of the side "
                    "('auto' picks at most 512)", value)
    fields = None if value is None else {"crop_resolution": value}  # None: the config's default
    return _config_of_option("--crop-resolution", PipelineConfig, fields).crop_resolution


def identity_gate_from_args(args: argparse.Namespace) -> IdentityGateConfig:
    """The ``IdentityGateConfig`` of ``--identity-tolerance``; raises UserError for a negative value."""
    from streamrestore.quality import IdentityGateConfig

    tolerance = getattr(args, "identity_tolerance", None)
    if tolerance is not None and not tolerance >= 0:
        raise UserError(f"--identity-tolerance must be 0 (off) or more, got {tolerance}")
    fields = None if tolerance is None else {"enabled": False} if tolerance == 0 else {"tolerance": tolerance}
    return _config_of_option("--identity-tolerance", IdentityGateConfig, fields)


def _config_of_option(flag: str, config: Callable[..., T], fields: dict[str, Any] | None) -> T:
    """``config(**fields)`` (its defaults when the option was not given: ``fields`` None); a
    value the config refuses is a UserError naming the option."""
    try:
        return config(**(fields or {}))
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None


def add_adapt_options(p: argparse.ArgumentParser) -> None:
    """Per-identity adaptation (``streamrestore.model.adapt.AdaptConfig``): ``--adapt`` and its settings."""
    p.add_argument("--adapt", action="store_true",
                   help="fine-tune the model on each person's reference photos first (lite; about a minute per "
                        "person on a CPU, once: cached in the cache folder's adapted/, which `streamrestore cache` "
                        "shows); stronger identity where the photos match the video")
    p.add_argument("--adapt-part", choices=("head", "unet"), default=None,
                   help="what --adapt fine-tunes: only the detail head (default; about a minute per person on a "
                        "CPU) or the UNet (minutes)")
    p.add_argument("--adapt-steps", type=whole, default=None, metavar="N",
                   help="fine-tuning steps per person with --adapt (default 300 for the head, 100 for the UNet)")
    p.add_argument("--adapt-blend", type=decimal, default=None, metavar="F",
                   help="how much of the fine-tune's weight change is used with --adapt, in [0, 1] (default 1 "
                        "for the head, 0.5 for the UNet; "
                        "another blend reuses the cached fine-tune; docs/video_eval.md)")


def adapt_from_args(args: argparse.Namespace, has_refs: bool = True) -> AdaptConfig | None:
    """The ``AdaptConfig`` of ``--adapt`` (None without it); raises UserError on a bad setting.
    Warns about settings that do nothing: ``--adapt-*`` without ``--adapt``, and ``--adapt``
    where no reference photos were given (``has_refs`` False)."""
    from streamrestore.model.adapt import AdaptConfig

    changes = {name: value for name, value in (("part", args.adapt_part), ("steps", args.adapt_steps),
                                              ("blend", args.adapt_blend)) if value is not None}
    try:
        config = AdaptConfig(**changes)
    except ValueError as exc:
        raise UserError(f"--adapt-{str(exc).split()[0]}: {exc}") from None
    if changes and not args.adapt:
        given = ", ".join(f"--adapt-{name}" for name in changes)
        log.warning("%s ignored: %s only with --adapt", given, "it applies" if len(changes) == 1 else "they apply")
    if args.adapt and not has_refs:
        log.warning("--adapt ignored: it fine-tunes the model on reference photos, and no --refs were given")
    return config if args.adapt else None


def temporal_from_args(args: argparse.Namespace) -> TemporalConfig:
    """The ``TemporalConfig`` of the ``--temporal-*`` options (defaults for what is not given;
    ``--no-temporal``: off); raises UserError for values out of range."""
    from streamrestore.temporal import TemporalConfig

    if getattr(args, "no_temporal", False):
        return TemporalConfig.off()
    values = {k: v for k, v in (("strength", getattr(args, "temporal_strength", None)),
                                ("tolerance", getattr(args, "temporal_tolerance", None)),
                                ("denoise", getattr(args, "temporal_denoise", None)),
                                ("denoise_sigma", getattr(args, "temporal_denoise_sigma", None)),
                                ("denoise_fine", getattr(args, "temporal_denoise_fine", None)),
                                ("memory", getattr(args, "temporal_memory", None)),
                                ("frame_strength", getattr(args, "temporal_frame_strength", None)),
                                ("frame_tolerance", getattr(args, "temporal_frame_tolerance", None)))
              if v is not None}
    try:
        return TemporalConfig(**values)
    except ValueError as exc:
        raise UserError(f"--temporal-{str(exc).split()[0].replace('_', '-')}: {exc}") from None


def check_face_options(args: argparse.Namespace) -> None:
    """UserError naming ``--max-faces``, ``--detect-every`` or ``--detect-size`` when out of range (before any
    :class:`~streamrestore.pipeline.PipelineConfig` would raise a plain ValueError)."""
    if args.max_faces is not None and args.max_faces < 1:
        raise UserError(f"--max-faces must be at least 1, got {args.max_faces}")
    if args.detect_every < 1:
        raise UserError(f"--detect-every must be at least 1, got {args.detect_every}")
    size = getattr(args, "detect_size", None)
    if size is not None:
        from streamrestore.faces.detect import DETECT_SIZE_LEAST, DETECT_SIZE_MOST

        if not (DETECT_SIZE_LEAST <= size <= DETECT_SIZE_MOST and size % 32 == 0):
            raise UserError(f"--detect-size must be a multiple of 32 from {DETECT_SIZE_LEAST} to {DETECT_SIZE_MOST} "
                            f"(640, 960, 1280, ...), got {size}")


def pipeline_config(args: argparse.Namespace, **changes: Any) -> PipelineConfig:
    """The :class:`~streamrestore.pipeline.PipelineConfig` of the face options and the
    ``--temporal-*`` options; ``changes`` sets more fields (``lookahead=0`` for live sources)."""
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import QualityGateConfig

    check_face_options(args)
    return PipelineConfig(max_faces=args.max_faces, unmatched=args.unmatched, detect_every=args.detect_every,
                          temporal=temporal_from_args(args), reference_detail=reference_detail_from_args(args),
                          identity_gate=identity_gate_from_args(args), crop_resolution=crop_resolution_from_args(args),
                          gate=quality_gate_from_args(args) or QualityGateConfig(),
                          match_threshold=match_threshold_from_args(args),
                          **({"detect_size": args.detect_size} if args.detect_size is not None else {}), **changes)


def restorer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :meth:`FaceRestorer.from_options
    <streamrestore.pipeline.FaceRestorer.from_options>` that the model options give (the
    library loads the model, TAESD with ``--fast-vae`` included: no command loads one itself)."""
    return {"model": args.model, "device": args.device, "detector": args.detector,
            "face_models": args.face_models, "backend": args.backend,
            "fast_vae": getattr(args, "fast_vae", None)}


def encoder_from_args(args: argparse.Namespace) -> EncoderSettings:
    """The :class:`~streamrestore.video.writer.EncoderSettings` of ``--codec/--crf/--preset/--pix-fmt``;
    OutputError for a value the encoder cannot take."""
    from streamrestore.video.writer import EncoderSettings

    try:
        return EncoderSettings(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
                               tune=getattr(args, "tune", None), strip_metadata=getattr(args, "strip_metadata", False))
    except ValueError as exc:
        raise OutputError(f"bad encoder option: {exc}") from None


class _LowerCaseLevel(logging.Formatter):
    """``warning: ...``, as the run's summary writes its warnings (not ``WARNING: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        # (one line: a file name in the message cannot start a line of its own; a traceback keeps its lines)
        return f"{record.levelname.lower()}: {one_line(record.getMessage())}" + (
            "\n" + self.formatException(record.exc_info) if record.exc_info else "")


class CliHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it), on a line of its own: a progress bar on
    the terminal is cleared first and drawn again below it (a warning mid-run was glued to the bar's line,
    "5/99 ETA 00:05warning: ...", and read so by a screen reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_LowerCaseLevel())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # (logging's own rule: a message that cannot be written does not end the run)
            self.handleError(record)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(verbose: bool) -> None:
    """Gives the package's logger the CLI's handler (once) and its level (``-v``: debug)."""
    if not any(isinstance(h, CliHandler) for h in log.handlers):
        log.addHandler(CliHandler())
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def check_torch_threads(args: argparse.Namespace) -> None:
    """UserError for a ``--torch-threads`` under 1, said before anything loads."""
    if args.torch_threads is not None and args.torch_threads < 1:
        raise UserError(f"--torch-threads must be at least 1, got {args.torch_threads}")


def set_torch_threads(requested: int | None) -> None:
    """The CLI owns its process, so it sizes torch's thread pool for all of it (the library
    only around its own work); the default is :func:`streamrestore.threads.default_torch_threads`."""
    import torch

    from streamrestore.threads import resolve_torch_threads

    torch.set_num_threads(resolve_torch_threads(requested))
