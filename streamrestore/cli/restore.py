"""``streamrestore INPUT``: the main command, one video file restored into another (or one photo).

    streamrestore talk.mp4 --refs anna/ [-o OUT] [--start T] [--end T] [model, face, temporal and encoder options]
    streamrestore photo.jpg --refs anna/ [-o OUT] [model and face options]

Parses and checks the options, then hands the work to :func:`streamrestore.restore_video` (a photo:
:func:`streamrestore.restore_photo`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamrestore.cli.options import (
    CommandParser,
    adapt_from_args,
    add_adapt_options,
    add_crop_resolution_option,
    add_deinterlace_option,
    add_encoder_options,
    add_face_choice_options,
    add_field_rate_option,
    add_identity_gate_option,
    add_model_options,
    add_progress_options,
    add_reference_detail_option,
    add_temporal_options,
    check_face_options,
    check_output_file,
    check_torch_threads,
    configure_logging,
    deinterlace_from_args,
    encoder_from_args,
    parse_time,
    pipeline_config,
    progress_from_args,
    restorer_options,
    set_torch_threads,
    whole,
)
from streamrestore.errors import InputError, OutputError, UserError, one_line
from streamrestore.stop_signals import preload_native_libraries, stop_signals_held
from streamrestore.threads import TORCH_THREADS_HELP

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.run import RunStats
    from streamrestore.stop_signals import StopState

#: the other commands, ``streamrestore <name> ...``: each is ``streamrestore.cli.<name>.main(argv) -> int``
SUBCOMMANDS = ("train", "eval", "live", "bench", "batch", "cache", "doctor")


class _Version(argparse.Action):
    """``--version``: the release number, and from a checkout its git commit (the number alone was the same for
    every commit: support F3), found only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from streamrestore.environment import version_text

        print(f"streamrestore {version_text()}")
        parser.exit()


class _Parser(CommandParser):
    """The main command's parser: its hidden ``more_inputs`` (several files given) is not named in a
    usage error ("the following arguments are required: input, more_inputs")."""

    given: Sequence[str] = ()  # the arguments being parsed (main sets them), for the error's hint

    def error(self, message: str):  # type: ignore[override]
        # a file whose name starts with "-" is read as an option ("the following arguments are required: input")
        dashed = [arg for arg in self.given if arg.startswith("-") and arg != "-" and os.path.isfile(arg)]
        unknown = self.unknown_options([arg for arg in self.given if arg not in dashed])
        if message.startswith("the following arguments are required") and unknown:
            # (`streamrestore --bogus`: the mistake is the option, not a missing input)
            message = f"unrecognized arguments: {' '.join(unknown)}"
        if message.startswith("unrecognized arguments") and unknown:
            from streamrestore.cli.batch import build_parser as batch_parser

            batch_only = [name for name in unknown if name in batch_parser().long_options()]
            if batch_only:  # (`streamrestore card/ --recursive`: what batch does)
                message += (f" ({' and '.join(batch_only)} {'is' if len(batch_only) == 1 else 'are'} streamrestore "
                            f"batch's, which restores many files: streamrestore batch INPUT... -o OUTDIR "
                            f"{' '.join(batch_only)})")
        if dashed:
            message += (f" ({dashed[0]} is read as an option: give it as ./{dashed[0]}, or after the options and "
                        f"--, as in streamrestore --refs DIR -- {dashed[0]})")
        super().error(message.replace(", more_inputs", ""))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="streamrestore",
        description="Restore the faces in a video (or a photo) using a few reference photos of the person.",
        epilog="A restored face's detail is synthesized (by a network, and from the reference photos): it is not "
               "recovered from the footage, and not evidence of what the person looked like. Other commands: "
               + ", ".join(f"streamrestore {c} --help" for c in SUBCOMMANDS),
    )
    p.add_argument("--version", action=_Version, help="show the version (and a checkout's git commit) and exit")
    p.add_argument("input", help="video file to restore, or a photo (.jpg, .heic, .png, .webp, .tif, .bmp, .avif)")
    p.add_argument("more_inputs", nargs="*", help=argparse.SUPPRESS)  # said to belong to `batch` (main())
    p.add_argument("-o", "--output", help="output file, or a folder to write <input stem>.restored.<ext> into "
                   "(default: that name next to the input; a photo is written as a photo, its format named by the "
                   "extension)")
    add_model_options(p, fast_vae=True)
    add_temporal_options(p)
    add_reference_detail_option(p)
    add_identity_gate_option(p)
    add_face_choice_options(p)
    add_crop_resolution_option(p)
    add_encoder_options(p)
    p.add_argument("--start", type=parse_time, help="start time (seconds or HH:MM:SS, counted from the start of "
                   "the file as players show it)")
    p.add_argument("--end", type=parse_time, help="end time (seconds or HH:MM:SS, on the same clock)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file (and --json file)")
    add_deinterlace_option(p)
    add_field_rate_option(p)
    p.add_argument("--torch-threads", type=whole, metavar="N", help=TORCH_THREADS_HELP)
    add_adapt_options(p)
    p.add_argument("--json", metavar="PATH|-", help="also write the run's figures as JSON (frames, faces restored and "
                   "left alone, each track, warnings; RunStats.as_dict) to PATH, or to standard output with -: the "
                   "program's only output there (messages go to standard error). A run that fails once its options "
                   "are accepted writes {\"failed\": true, \"error\", \"exit_code\", ...} there, which its rerun "
                   "replaces without --force")
    add_progress_options(p)
    return p


def _check_not_a_mistyped_command(given: str) -> None:
    """A missing input without a file extension that reads like a command name (``evaluate``,
    ``bach``) is a mistyped command: say which one, not "input not found"."""
    import difflib

    if Path(given).suffix or Path(given).exists():
        return
    close = difflib.get_close_matches(given.lower(), SUBCOMMANDS, n=1, cutoff=0.6)
    if close or given.lower() in ("help", "restore"):
        hint = f"streamrestore {close[0]} --help" if close else "streamrestore --help"
        raise InputError(f"input not found: {given} (a command? see `{hint}`)")


#: the options that only a video takes: (attribute, option)
_VIDEO_ONLY = (("start", "--start"), ("end", "--end"), ("crf", "--crf"), ("preset", "--preset"), ("codec", "--codec"),
               ("pix_fmt", "--pix-fmt"), ("no_deinterlace", "--no-deinterlace"), ("field_rate", "--field-rate"))


def _check_photo_options(args: argparse.Namespace) -> None:
    """A photo given with an option only a video takes (``--start``, ``--crf``, ...): say so rather
    than ignore it. A camera raw photo: say how to export it."""
    from streamrestore.images import UNREAD_PHOTO_FORMATS, is_image

    suffix = Path(args.input).suffix.lower()
    if suffix in UNREAD_PHOTO_FORMATS:
        raise InputError(f"{args.input}: {UNREAD_PHOTO_FORMATS[suffix]}")
    if not is_image(args.input):
        return
    given = [option for attribute, option in _VIDEO_ONLY if getattr(args, attribute) not in (None, False)]
    if given:
        raise UserError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to videos only; "
                        f"{args.input} is a photo")


def _check_input_is_a_file(given: str) -> None:
    """A URL or a folder as the input: say what takes them (``live --source URL``, ``batch DIR``),
    not "input not found" or "input is a folder"."""
    import re

    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", given):
        raise InputError(f"{given} is a URL: this command restores files (download it first); "
                         f"`streamrestore live --source {given}` plays it restored")
    if Path(given).is_dir():
        raise InputError(f"input is a folder: {given}; `streamrestore batch {given} -o OUTDIR` restores every "
                         "video and photo in it")


def _output_path(given: str | None, default: Path) -> Path:
    """The output file: ``-o`` as given, ``default`` (the input's name with ``.restored``) where it is
    not, and that name inside ``-o`` where ``-o`` is a folder (as ``cp`` and ``mv`` do). A name
    ending in a slash is a folder even before it exists (said, rather than "extension-less")."""
    if given is None:
        # (a folder marked read-only for everyone, as a class's shared data is: root, as in many containers,
        # wrote its output there all the same, beside the data, where no one asked for it)
        folder = default.parent if str(default.parent) else Path(".")
        try:  # (not on Windows: its Read-only attribute on Videos, Documents... says nothing of writing there)
            if os.name != "nt" and not folder.stat().st_mode & 0o222:
                raise OutputError(f"the input's folder {folder.absolute()} is read-only (no one may write there), where the "
                                  "output would go by default; name it with -o")
        except OSError:
            pass
        return default
    if Path(given).is_dir():
        return Path(given) / default.name
    if given.endswith(("/", os.sep)):
        raise OutputError(f"output folder {given} does not exist; create it first")
    return Path(given)


def main(argv: list[str], stop: StopState | None = None) -> int:
    if "--" in argv:  # after it everything is an input, "-take1.mp4" too, which argparse's intermixed
        # parsing refuses: such a name is given as the same relative path that does not look like an option
        at = argv.index("--")
        options = [arg for arg in argv[at + 1:] if arg.startswith("-") and not os.path.lexists(arg)]
        if options:  # (said as "2 inputs given: `streamrestore batch ./-dash.mp4 ./--refs ...`")
            raise UserError(f"{options[0]} comes after --, where everything is an input file; put the options "
                            "before --")
        argv = argv[:at] + [f"./{arg}" if arg.startswith("-") else arg for arg in argv[at + 1:]]
    parser = build_parser()
    parser.given = argv  # type: ignore[attr-defined]
    args = parser.parse_intermixed_args(argv)
    configure_logging(args.verbose)
    if args.more_inputs:  # `streamrestore *.jpg`: the shell gave several
        given = " ".join([args.input, *args.more_inputs][:3]) + (" ..." if len(args.more_inputs) > 2 else "")
        raise UserError(f"{len(args.more_inputs) + 1} inputs given; this command restores one: "
                        f"`streamrestore batch {given} -o OUTDIR` restores several")
    _check_not_a_mistyped_command(args.input)
    _check_input_is_a_file(args.input)
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UserError(f"--end ({args.end}s) must be after --start ({args.start}s)")
    check_face_options(args)
    _check_photo_options(args)
    deinterlace = deinterlace_from_args(args)
    check_torch_threads(args)
    if args.json != "-":
        check_output_file(args.json, "--json", judge_existing=False)  # (_check_json_path judges an existing one)
    config = pipeline_config(args)
    adapt = adapt_from_args(args, has_refs=bool(args.refs))
    set_torch_threads(args.torch_threads)
    from streamrestore.api import restore_photo, restore_video
    from streamrestore.images import default_photo_output, is_image
    from streamrestore.pipeline import FaceRestorer, check_model_options, check_references
    from streamrestore.video.writer import default_output_path

    # The cheap checks first (encoder options, device, reference folders here; the input, its
    # window and the output in restore_video), so a mistake costs no model loading.
    encoder = encoder_from_args(args)
    check_model_options(args.model, device=args.device, fast_vae=args.fast_vae)
    check_references(args.refs, unmatched=args.unmatched)

    def build(fps: float) -> FaceRestorer:
        # A stop signal in the middle of a native library's import could crash the interpreter:
        # loading (seconds) holds the signals back; adapting (minutes) must stay interruptible, so
        # with --adapt only the imports are held.
        with stop_signals_held():
            if adapt is None:
                return FaceRestorer.from_options(args.refs, config=config, fps=fps,
                                                 torch_threads=args.torch_threads, **restorer_options(args))
            preload_native_libraries()
        return FaceRestorer.from_options(args.refs, config=config, fps=fps, torch_threads=args.torch_threads,
                                         adapt=adapt, **restorer_options(args))

    default = default_photo_output(args.input) if is_image(args.input) else default_output_path(args.input)
    output = _output_path(args.output, default)
    _check_json_path(args.json, Path(args.input), output, args.force)
    started = _utc_now()
    try:
        if is_image(args.input):
            stats = restore_photo(args.input, output, build, force=args.force, strip_metadata=args.strip_metadata)
        else:
            stats = restore_video(args.input, output, build, encoder=encoder, start=args.start, end=args.end,
                                  force=args.force, progress=progress_from_args(args), deinterlace=deinterlace)
    except (Exception, KeyboardInterrupt) as exc:
        if args.json:  # (a scheduler's monitor reads the record: a failed run left none, or a stale one)
            # (a stop signal ends the command with its own code and words, whatever but a UserError it surfaced as:
            # app._main's order)
            said = stop.interrupted() if stop is not None and stop.signum is not None \
                and not isinstance(exc, UserError) else exc
            _write_failure_json(args.json, said or exc, {"input": str(args.input), "output": str(output)},
                                argv=argv, started=started)
        raise
    print(stats.summary(verbose=args.verbose), file=sys.stderr)
    print(one_line(f"wrote {output}"), file=sys.stderr)
    if args.json:
        try:  # (the input and output are hashed: seconds a gigabyte)
            made_with = _made_with(args, stats, config=config, encoder=encoder, adapt=adapt, deinterlace=deinterlace,
                                   output=output, started=started, argv=argv)
            _write_json(args.json, {"input": str(args.input), "output": str(output), **stats.as_dict(), **made_with})
        except KeyboardInterrupt as exc:  # (the output is there: "not written" would be untrue)
            exc.kept = f"{output} was written; its --json record was not"  # type: ignore[attr-defined]
            raise
    return 0


def _utc_now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _made_with(args: argparse.Namespace, stats: RunStats, *, config, encoder, adapt, deinterlace, output: Path,
               started: str, argv: list[str]) -> dict:
    """How the output was made, for a record that must show it (a newsroom's, an analyst's): the tool and model
    (its file's sha256), where it ran, every setting with its defaults, the reference files and the input and
    output with their sha256, and when."""
    import dataclasses
    import json

    import torch

    from streamrestore import __version__
    from streamrestore.environment import environment_record
    from streamrestore.faces.references import reference_files_record
    from streamrestore.images import is_image
    from streamrestore.model.registry import model_provenance
    from streamrestore.output_file import sha256_of
    from streamrestore.video.reader import probe

    def plain(value) -> object:  # (a dataclass of settings, as JSON takes it)
        return json.loads(json.dumps(dataclasses.asdict(value), default=str)) if value is not None else None

    encoded = None
    if not is_image(args.input):  # (the encoder and its options as they were resolved for this input)
        codec = encoder.codec_for(output, probe(args.input).pix_fmt)
        encoded = {"codec": codec, **encoder.options_for(codec)}

    return {
        "version": __version__, "model": str(args.model), **model_provenance(args.model),
        # (what ran, where the options said "auto")
        "device": stats.device or args.device, "backend": stats.backend or args.backend,
        "asked": {"device": args.device, "backend": args.backend}, "torch_threads": torch.get_num_threads(),
        "settings": {"pipeline": plain(config), "encoder": plain(encoder), "encoded_with": encoded, "adapt": plain(adapt),
                     "start": args.start, "end": args.end, "deinterlace": deinterlace,
                     "detector": args.detector, "face_models": args.face_models, "fast_vae": args.fast_vae},
        "reference_files": reference_files_record(args.refs or []),
        # (what ran for the faces, each file with its sha256: a settings block alone named only the folder)
        "faces_ran": {**stats.face_models, **{f"{part}_sha256": sha256_of(stats.face_models[f"{part}_file"])
                                             if stats.face_models.get(f"{part}_file") else None
                                             for part in ("detector", "embedder")}},
        "command": ["streamrestore", *argv], "environment": environment_record(),
        "input_sha256": sha256_of(args.input), "output_sha256": sha256_of(output),
        "started": started, "finished": _utc_now(),
    }


def _check_json_path(given: str | None, src: Path, output: Path, force: bool) -> None:
    """Refuses a ``--json`` file that is the input or the output (a slip of tab completion would
    replace the video with its figures), that exists or is a link to nothing without ``--force``, or whose
    folder does not exist: the rules of ``-o``."""
    if given is None or given == "-":
        return
    try:
        path = Path(given).expanduser().resolve()
        others = [(other.expanduser().resolve(), what) for other, what in ((src, "the input"), (output, "the output"))]
    except (RuntimeError, OSError) as exc:  # (a link loop, before Python 3.13)
        raise OutputError(f"--json {given}: {exc}; give a file name") from None
    for other, what in others:
        if path == other:
            raise OutputError(f"--json {given} is {what} file; give the figures a file of their own")
    if path.exists() and not path.is_file():
        raise OutputError(f"--json {given} is not a regular file (a device, pipe or socket); give a file name, "
                          "or - for standard output")
    if path.exists() and not force and not _records_a_failure(path):  # (a failed run's record: its rerun replaces it)
        raise OutputError(f"--json {given} already exists; replace it with --force")
    named = Path(given).expanduser()
    if named.is_symlink() and not path.exists() and not force:  # (a link planted at a name the user reuses)
        raise OutputError(f"--json {given} is a symbolic link to {os.readlink(named)}, which does not exist: the "
                          "figures would be written there; name another file, or write through the link with --force")
    if not path.parent.is_dir():  # (a typo made a folder tree, where -o's refuses)
        folder = path.parent if named.is_symlink() else named.parent  # (a link's: the folder it points into)
        raise OutputError(f"--json folder {folder} does not exist; create it first")


def _write_failure_json(path: str, exc: BaseException, record: dict, *, argv: list[str], started: str) -> None:
    """The ``--json`` record of a run that failed: what it was given, the error as the command says it, and the
    exit code it ends with (:func:`streamrestore.cli.app._main`'s). ``"failed": true`` marks it; a later run
    replaces such a record without ``--force`` (it holds no output's figures)."""
    from streamrestore import __version__
    from streamrestore.errors import out_of_memory

    if isinstance(exc, KeyboardInterrupt):
        how = getattr(exc, "signal_name", None)
        error, code = f"interrupted{f' by {how}' if how else ''}", getattr(exc, "exit_code", 130)
    elif isinstance(exc, UserError):
        error, code = str(exc), exc.exit_code
    else:  # (out of memory, or an unexpected error: the command ends with 1)
        error, code = f"{'out of memory: ' if out_of_memory(exc) else ''}{type(exc).__name__}: {exc}".strip(), 1
    failure = {**record, "failed": True, "error": error, "exit_code": code, "version": __version__,
               "command": ["streamrestore", *argv], "started": started, "finished": _utc_now()}
    try:
        _write_json(path, failure)
    except (OutputError, OSError) as write_error:  # (the run's own error is what the command says)
        print(one_line(f"streamrestore: warning: the failed run's --json record was not written ({write_error})"),
              file=sys.stderr)


def _records_a_failure(path: Path) -> bool:
    """Whether the file at ``path`` is a failed run's ``--json`` record (:func:`_write_failure_json`)."""
    import json

    try:
        if path.stat().st_size > 1 << 20:
            return False
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("failed") is True


def _write_json(path: str, record: dict) -> None:
    import json

    from streamrestore.output_file import write_text_file

    text = json.dumps(record, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        write_text_file(Path(path).expanduser(), text)
    except OutputError as exc:
        raise OutputError(f"the output was written, but not --json {path} ({exc})") from None
