"""Restore a webcam live: original and restored side by side in a window.

    python examples/webcam.py ./me/                 # camera 0
    python examples/webcam.py ./me/ talk.mp4        # a video file played in real time instead
    python examples/webcam.py ./me/ rtsp://cam.local/stream --output udp://127.0.0.1:5000 --no-window

Keys: q quit, r toggle restoration, s snapshot, space pause. The same as `streamrestore live`,
written against the library: a source, a FaceRestorer without lookahead, optional outputs, and
the live session that keeps only the newest frame whenever restoring falls behind.
"""
import argparse

import streamrestore
from streamrestore.live import LiveConfig, LiveSession, check_output, open_sink, open_source


def main():
    p = argparse.ArgumentParser(description="Restore a webcam (or file / stream) live.")
    p.add_argument("refs", help="folder of photos of the person")
    p.add_argument("source", nargs="?", default="0", help="camera index, video file or URL (default 0)")
    p.add_argument("--output", help="also write to a file or URL")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--no-window", action="store_true")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--face-models", metavar="DIR", help="an insightface model pack (SCRFD finds far more faces than dlib)")
    args = p.parse_args()

    if args.output:
        check_output(args.output, force=args.force)  # an output that cannot be written: said before models load
    source = open_source(args.source)
    # Reference photos are loaded and encoded here, once, before the first frame.
    config = streamrestore.PipelineConfig(lookahead=0)  # live: no frame may wait
    restorer = streamrestore.FaceRestorer.from_options(args.refs, config=config, fps=source.fps,
                                                       face_models=args.face_models)
    sinks = [open_sink(args.output, source.width, source.height, fps=source.fps, force=args.force)] if args.output else []
    session = LiveSession(restorer, source, sinks,
                          config=LiveConfig(window=not args.no_window, max_frames=args.max_frames))
    stats = session.run()  # Ctrl-C ends it cleanly too
    print(stats.summary())


if __name__ == "__main__":
    main()
