"""Restore photos (the library form of `streamrestore photo.jpg --refs DIR`): one restorer, many photos.

    python examples/restore_photos.py ./actor/ old1.jpg old2.png ...

Each is written beside its photo as `<stem>.restored.<ext>`, upright, with its colour profile and EXIF.
"""
import sys

import streamrestore


def main():
    refs, photos = sys.argv[1], sys.argv[2:]
    # Models load and references are encoded here, once, for every photo.
    restorer = streamrestore.FaceRestorer.from_options(refs=refs)
    for photo in photos:
        stats = streamrestore.restore_photo(photo, restorer=restorer, force=True)
        print(f"{photo}: {stats.faces_restored} face(s)")


if __name__ == "__main__":
    main()
