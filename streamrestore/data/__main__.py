"""Pack the train-ok faces of the shared data folder into one ``.npz`` (prints the figures)::

    python -m streamrestore.data --shared ../shared --resolution 128 --out runs/trainok_128.npz

What the shared folder holds (its ``data/`` with ``MANIFEST.tsv``, its ``models/``: the
evaluation models folder, whose SCRFD-2.5G aligns the faces, see
:class:`streamrestore.model_files.EvalModelFiles`) and which of its folders are train-ok
(``configs/shared_data.toml``, ``--licences``) is known here, by the command; the library
functions take paths and the folder list as arguments.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from streamrestore.data.pack import pack_dataset
from streamrestore.data.sources import read_train_ok_folders, shared_sources
from streamrestore.errors import InputError, OutputError, UserError
from streamrestore.faces.detect import ScrfdDetector
from streamrestore.model_files import EvalModelFiles


def _default_shared() -> Path:
    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else Path("../shared")


def _default_licences() -> Path:
    """``configs/shared_data.toml`` of the repository this package runs from (a checkout), else of the
    current folder."""
    in_checkout = Path(__file__).resolve().parents[2] / "configs" / "shared_data.toml"
    return in_checkout if in_checkout.is_file() else Path("configs/shared_data.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrestore.data",
                                     description="Pack the train-ok faces of the shared data folder into one .npz.")
    parser.add_argument("--shared", type=Path, default=_default_shared(),
                        help="the shared folder (data/ and models/; default $STREAMRESTORE_SHARED, else ../shared)")
    parser.add_argument("--resolution", type=int, default=128, help="side of the aligned crops in pixels (default 128)")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument("--frames-per-video", type=int, default=12,
                        help="frames taken from each train-ok video (default 12)")
    parser.add_argument("--detector", type=Path, metavar="ONNX",
                        help="the SCRFD file that aligns the faces (default: the SCRFD-2.5G of <shared>/models)")
    parser.add_argument("--licences", type=Path, default=_default_licences(),
                        help="TOML file with train_ok_folders: the folders of <shared>/data that may train a "
                             "shipped model (default: configs/shared_data.toml of the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return _pack(args)
    except UserError as exc:  # a mistake of the user's: one line, not a traceback
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def _pack(args: argparse.Namespace) -> int:
    if args.resolution < 32:  # (pack_dataset's own bound, said in the option's words)
        raise UserError(f"--resolution must be at least 32, got {args.resolution}")
    if args.frames_per_video < 1:
        raise UserError(f"--frames-per-video must be at least 1, got {args.frames_per_video}")
    if args.out.is_dir():
        raise OutputError(f"--out {args.out} is a folder; give a file name such as {args.out}/pack.npz")
    if args.out.exists() and not args.force:
        raise OutputError(f"--out {args.out} already exists; replace it with --force")
    if not (args.shared / "data").is_dir():
        raise InputError(f"--shared {args.shared} has no data/ folder; give the shared folder (or set "
                         "STREAMRESTORE_SHARED)")
    folders = read_train_ok_folders(args.licences)
    missing = sorted(f for f in folders if not (args.shared / "data" / f).is_dir())
    if missing:
        logging.getLogger(__name__).warning("train_ok_folders of %s not in %s: %s", args.licences,
                                            args.shared / "data", ", ".join(missing))
    if args.detector is not None and not args.detector.is_file():
        raise InputError(f"--detector {args.detector} does not exist")
    detector = ScrfdDetector(args.detector or EvalModelFiles.from_dir(args.shared / "models").detector)
    sources = shared_sources(args.shared / "data", train_ok_folders=folders)
    report = pack_dataset(sources, args.out, args.resolution, detector=detector, frames_per_video=args.frames_per_video)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
