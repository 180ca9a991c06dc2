"""Restore single frames as they come (no lookahead): the form a live source or a GUI uses.

    python examples/process_frame.py photo.jpg ./actor/ restored.jpg

`process` returns each frame at once; with PyAV frames (`av.VideoFrame`) the result keeps the
input's pts and time base.
"""
import sys

import cv2

import streamrestore


def main():
    src, refs, dst = sys.argv[1:4]
    # lookahead=0: the tracker holds no frame back, so process() returns each one at once
    config = streamrestore.PipelineConfig(lookahead=0)
    restorer = streamrestore.FaceRestorer.from_options(refs=refs, config=config, channel_order="bgr")
    image = cv2.imread(src)
    if image is None:
        sys.exit(f"cannot read {src}")
    cv2.imwrite(dst, restorer.process(image))
    faces = restorer.last_faces
    print(f"{len(faces)} face(s) restored: " + ", ".join(f"track {f.track_id} as {f.identity}" for f in faces))


if __name__ == "__main__":
    main()
