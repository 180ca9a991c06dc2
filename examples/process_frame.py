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
    faces = restorer.last_faces
    print(f"{len(faces)} face(s) restored: " + ", ".join(f"track {f.track_id} as {f.identity}" for f in faces))


if __name__ == "__main__":
    main()
