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
from pathlib import Path
from typing import Sequence

from streamrestore.data.pack import pack_dataset
from streamrestore.data.sources import read_train_ok_folders, shared_sources
from streamrestore.faces.detect import ScrfdDetector
from streamrestore.model_files import EvalModelFiles


def _default_shared() -> Path:
    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else Path("../shared")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrestore.data",
                                     description="Pack the train-ok faces of the shared data folder into one .npz.")
    parser.add_argument("--shared", type=Path, default=_default_shared(), help="the shared folder (data/ and models/)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames-per-video", type=int, default=12)
    parser.add_argument("--detector", type=Path, metavar="ONNX",
                        help="the SCRFD file that aligns the faces (default: the SCRFD-2.5G of <shared>/models)")
    parser.add_argument("--licences", type=Path, default=Path("configs/shared_data.toml"),
                        help="TOML file with train_ok_folders: the folders of <shared>/data that may train a "
                             "shipped model (default: configs/shared_data.toml of the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    detector = ScrfdDetector(args.detector or EvalModelFiles.from_dir(args.shared / "models").detector)
    sources = shared_sources(args.shared / "data", train_ok_folders=read_train_ok_folders(args.licences))
    report = pack_dataset(sources, args.out, args.resolution, detector=detector, frames_per_video=args.frames_per_video)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
