"""Restore single frames as they come (no lookahead): the form a live source or a GUI uses.

    python examples/process_frame.py photo.jpg ./actor/ restored.jpg [--face-models DIR]

`process` returns each frame at once; with PyAV frames (`av.VideoFrame`) the result keeps the
input's pts and time base. OpenCV's frames are BGR: the restorer is told so (`channel_order`),
else it would take them for RGB and restore the faces in the wrong colours.
"""
import argparse
import sys

import cv2

import streamrestore


def main():
    p = argparse.ArgumentParser(description="Restore the faces of one picture, as a frame of a stream.")
    p.add_argument("input", help="a picture OpenCV reads")
    p.add_argument("refs", help="folder of photos of the person")
    p.add_argument("output", help="where to write the restored picture")
    p.add_argument("--face-models", metavar="DIR", help="an insightface model pack (SCRFD finds far more faces than dlib)")
    args = p.parse_args()
    # lookahead=0: the tracker holds no frame back, so process() returns each one at once
    config = streamrestore.PipelineConfig(lookahead=0)
    restorer = streamrestore.FaceRestorer.from_options(refs=args.refs, config=config, channel_order="bgr",
                                                       face_models=args.face_models)
    image = cv2.imread(args.input)
    if image is None:
        sys.exit(f"cannot read {args.input}")
    cv2.imwrite(args.output, restorer.process(image))
    # each face as cut (pixels) and as pasted back (restored), and the share of the change the quality gate kept:
    # 0 for a face it found clean and left as it was
    for face in restorer.last_faces:
        done = f"restored ({face.change_kept:.0%} of the change kept)" if face.change_kept else "left as it was (clean)"
        print(f"track {face.track_id} ({face.identity or 'no references'}): {done}")
    if not restorer.last_faces:
        print("no face found")


if __name__ == "__main__":
    main()
