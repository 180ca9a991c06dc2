"""Use streamrestore as a video filter inside your own frame loop (OpenCV here, BGR frames).

    python examples/filter_frames.py input.mp4 ./actor/ output.mp4 [--face-models DIR]

`FaceRestorer.stream` takes any iterable of frames (numpy RGB/BGR or av.VideoFrame) and yields
each one restored, in order. This example drops audio and timestamps (OpenCV's writer keeps
neither): use `restore_video` for files you care about.
"""
import argparse

import cv2

import streamrestore


def read_frames(capture):
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def main():
    p = argparse.ArgumentParser(description="Restore a video's faces frame by frame in an OpenCV loop.")
    p.add_argument("input", help="the video")
    p.add_argument("refs", help="folder of photos of the person")
    p.add_argument("output", help="the restored video (OpenCV's writer: no audio)")
    p.add_argument("--face-models", metavar="DIR", help="an insightface model pack (SCRFD finds far more faces than dlib)")
    args = p.parse_args()
    capture = cv2.VideoCapture(args.input)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    # OpenCV's frames are BGR: said here, or the faces are restored in the wrong colours
    restorer = streamrestore.FaceRestorer.from_options(refs=args.refs, channel_order="bgr", fps=fps,
                                                       face_models=args.face_models)
    for frame in restorer.stream(read_frames(capture)):
        writer.write(frame)
    writer.release()
    print(restorer.stats.summary())


if __name__ == "__main__":
    main()
