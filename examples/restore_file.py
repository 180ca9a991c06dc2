"""Restore a whole video file (the library form of `streamrestore INPUT --refs DIR`).

    python examples/restore_file.py input.mp4 ./actor/ [output.mp4] [--face-models DIR] [--force]

The library's mistakes are exceptions of ``streamrestore.errors.UserError`` (an output already there, a
folder without photos, ...), each with a message written for the person at the keyboard: said in one line here.
"""
import argparse
import sys

import streamrestore
from streamrestore.errors import UserError


def main():
    p = argparse.ArgumentParser(description="Restore the faces of a video file toward a person's photos.")
    p.add_argument("input", help="the video")
    p.add_argument("refs", help="folder of photos of the person")
    p.add_argument("output", nargs="?", help="default: <input stem>.restored.<ext> beside it")
    p.add_argument("--face-models", metavar="DIR", help="an insightface model pack (SCRFD finds far more faces than dlib)")
    p.add_argument("--force", action="store_true", help="replace the output if it exists (a second run of the example)")
    args = p.parse_args()
    try:
        # Models load and references are encoded here, once; the restorer can serve many files.
        restorer = streamrestore.FaceRestorer.from_options(refs=args.refs, face_models=args.face_models)
        stats = streamrestore.restore_video(args.input, args.output, restorer, progress=True, force=args.force)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(stats.summary())


if __name__ == "__main__":
    main()
