"""Use streamrestore as a video filter inside your own frame loop (OpenCV here, BGR frames).

    python examples/filter_frames.py input.mp4 ./actor/ output.mp4

`FaceRestorer.stream` takes any iterable of frames (numpy RGB/BGR or av.VideoFrame) and yields
each one restored, in order. This example drops audio and timestamps (OpenCV's writer keeps
neither): use `restore_video` for files you care about.
"""
import sys

import cv2

import streamrestore


def read_frames(capture):
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def main():
    src, refs, dst = sys.argv[1:4]
    capture = cv2.VideoCapture(src)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    restorer = streamrestore.FaceRestorer.from_options(refs=refs, channel_order="bgr", fps=fps)
    for frame in restorer.stream(read_frames(capture)):
        writer.write(frame)
    writer.release()
    print(restorer.stats.summary())


if __name__ == "__main__":
    main()
