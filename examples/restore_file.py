"""Restore a whole video file (the library form of `streamrestore INPUT --refs DIR`).

    python examples/restore_file.py input.mp4 ./actor/ [output.mp4]
"""
import sys

import streamrestore


def main():
    src, refs = sys.argv[1], sys.argv[2]
    dst = sys.argv[3] if len(sys.argv) > 3 else None
    # Models load and references are encoded here, once; the restorer can serve many files.
    restorer = streamrestore.FaceRestorer.from_options(refs=refs)
    stats = streamrestore.restore_video(src, dst, restorer, progress=True)
    print(stats.summary())


if __name__ == "__main__":
    main()
