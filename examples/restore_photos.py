"""Restore photos (the library form of `streamrestore photo.jpg --refs DIR`): one restorer, many photos.

    python examples/restore_photos.py ./actor/ old1.jpg old2.png ... [--face-models DIR]

Each is written beside its photo as `<stem>.restored.<ext>`, upright, with its colour profile and EXIF.
A photo whose faces the quality gate found clean is copied as it is.
"""
import argparse

import streamrestore


def main():
    p = argparse.ArgumentParser(description="Restore the faces of photos toward a person's photos.")
    p.add_argument("refs", help="folder of photos of the person")
    p.add_argument("photos", nargs="+", help="the photos to restore")
    p.add_argument("--face-models", metavar="DIR", help="an insightface model pack (SCRFD finds far more faces than dlib)")
    args = p.parse_args()
    # Models load and references are encoded here, once, for every photo.
    restorer = streamrestore.FaceRestorer.from_options(refs=args.refs, face_models=args.face_models)
    for photo in args.photos:
        stats = streamrestore.restore_photo(photo, restorer=restorer, force=True)
        changed = stats.faces_restored - stats.faces_left_clean
        print(f"{photo}: {stats.faces_restored} face(s), {changed} restored, {stats.faces_left_clean} left clean")


if __name__ == "__main__":
    main()
