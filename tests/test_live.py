"""Live mode: newest-frame-wins input, outputs, reconnecting, clean shutdown, the preview window.

End-to-end runs use the identity restorer on a drawn-face clip with the drawn-face detector
(tests/synthetic_faces.py; subprocesses through tests/synthetic_cli.py), and the UDP test also on a
real clip with the shared SCRFD pack; the window test runs the CLI under Xvfb (skipped where
Xvfb, xdotool or xwd are missing).
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamrestore.cli import main
from streamrestore.errors import InputError, OutputError

REPO = Path(__file__).resolve().parents[1]
CLIP = "face_recognition/short_hamilton_clip.mp4"  # 640x360, 29.97 fps, two people
# the program with the drawn-face detector and embedder, for subprocesses
SYNTHETIC_CLI = [sys.executable, str(REPO / "tests" / "synthetic_cli.py")]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_args(shared_models=None):
    """The identity model; the shared SCRFD pack when given its folder (else the detector that
    ``create_detector`` gives: the drawn-face one in these tests)."""
    if shared_models is None:
        return ["--model", "identity"]
    return ["--model", "identity", "--face-models", str(shared_models / "insightface")]


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory):
    """48 frames (1.9 s) of a drawn face at 640x360, 25 fps, with an AAC tone."""
    from media_utils import make_face_clip

    path = tmp_path_factory.mktemp("live") / "talk.mp4"
    make_face_clip(path, width=640, height=360, frames=48, audio="aac")
    return path


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("streamrestore: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- units ----------------------------------------------------------------------------------

class _CountingSource:
    """Yields frames 0..n-1 as fast as asked; the payload is the index."""

    name, width, height, fps, reconnects = "fake", 8, 8, 30.0, 0

    def __init__(self, n, interval=0.0, can_wait=False):
        self.n, self.interval, self.can_wait, self.problems = n, interval, can_wait, []

    def frames(self, stop):
        from streamrestore.live.sources import LiveFrame

        for i in range(self.n):
            if stop.is_set():
                return
            if self.interval:
                time.sleep(self.interval)
            yield LiveFrame(i, time.monotonic(), np.full((8, 8, 3), i % 256, np.uint8))

    def close(self):
        pass


def test_latest_frame_drops_old_frames_and_keeps_order():
    from streamrestore.live.sources import LatestFrame

    grabber = LatestFrame(_CountingSource(200, interval=0.001)).start()
    taken = []
    while True:
        frame = grabber.get(timeout=1.0)
        if frame is None:
            if grabber.ended:
                break
            continue
        taken.append(frame.index)
        time.sleep(0.01)  # a consumer ten times slower than the source
    grabber.stop()
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert taken[-1] == 199  # the newest frame is never lost
    assert grabber.dropped > 0 and grabber.captured == 200
    assert len(taken) + grabber.dropped == grabber.captured


def test_latest_frame_holds_back_a_source_that_can_wait():
    from streamrestore.live.sources import LatestFrame

    grabber = LatestFrame(_CountingSource(30, can_wait=True)).start()
    taken = []
    while not grabber.ended:
        frame = grabber.get(timeout=1.0)
        if frame is not None:
            taken.append(frame.index)
            time.sleep(0.005)
    grabber.stop()
    assert taken == list(range(30)) and grabber.dropped == 0


def test_latest_frame_passes_source_errors_on():
    from streamrestore.live.sources import LatestFrame

    class Broken(_CountingSource):
        def frames(self, stop):
            raise RuntimeError("camera on fire")
            yield  # pragma: no cover

    grabber = LatestFrame(Broken(1)).start()
    with pytest.raises(RuntimeError, match="on fire"):
        for _ in range(50):
            grabber.get(timeout=0.1)
    grabber.stop()


def test_reconnect_policy():
    from streamrestore.live.sources import ReconnectPolicy

    p = ReconnectPolicy(retries=4, backoff=0.5, max_backoff=1.5)
    assert [p.delay(i) for i in range(4)] == [0.5, 1.0, 1.5, 1.5]
    with pytest.raises(ValueError, match="retries"):
        ReconnectPolicy(retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        ReconnectPolicy(timeout=0)


def test_output_clock_is_strictly_increasing():
    from streamrestore.live.sinks import TIME_BASE, _Clock

    clock = _Clock()
    times = [10.0, 10.04, 10.04, 10.0400001, 10.2]
    pts = [clock.pts(t) for t in times]
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))
    assert abs(pts[-1] * TIME_BASE - 0.2) < 1e-4


def test_latency_percentiles():
    from streamrestore.live.session import LiveStats

    rng = np.random.default_rng(0)
    values = list(rng.uniform(0.01, 0.3, 101))
    stats = LiveStats(frames_out=101, seconds=10.0, latencies=values)
    assert stats.percentile(50) == pytest.approx(sorted(values)[50] * 1000)
    assert stats.percentile(95) == pytest.approx(np.quantile(values, 0.95) * 1000)
    assert "p50" in stats.summary() and "p95" in stats.summary()
    assert LiveStats().percentile(50) is None


def test_the_live_summary_accounts_for_every_frame_captured():
    """Out + dropped + the one taken as the run stopped = captured (30 out, 31 captured, 0 dropped read
    as a frame lost); frames with restoration off are told apart from the run's own line's count."""
    from streamrestore.live.session import LiveStats

    text = LiveStats(frames_out=30, captured=31, dropped=0, seconds=3.0).summary()
    assert text.startswith("live: 30 frames out (10.0 fps over 3.0 s), 31 captured, 0 dropped at the input, "
                           "1 captured as the run stopped")
    text = LiveStats(frames_out=121, captured=121, unrestored=91, seconds=12.0).summary()
    assert "captured as the run stopped" not in text
    assert "91 of the frames out had restoration off (r; the line above counts the 30 restored)" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_on_signal_sets_flag_instead_of_exiting(signum):
    from streamrestore.live.session import _StopOnSignal

    before = signal.getsignal(signum)
    with _StopOnSignal() as stop:
        os.kill(os.getpid(), signum)
        assert stop.requested.wait(2)
    assert signal.getsignal(signum) is before


def test_bad_sources_and_outputs(tmp_path):
    from streamrestore.live.sinks import check_output
    from streamrestore.live.sources import open_source

    with pytest.raises(InputError, match="not found"):
        open_source(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="scheme"):
        open_source("gopher://example/x")
    (tmp_path / "taken.mp4").write_bytes(b"x")
    with pytest.raises(OutputError, match="--force"):
        check_output(str(tmp_path / "taken.mp4"))
    with pytest.raises(OutputError, match="does not exist"):
        check_output(str(tmp_path / "missing" / "out.mp4"))
    with pytest.raises(OutputError, match=".mp4"):
        check_output(str(tmp_path / "out.avi"))
    check_output("udp://127.0.0.1:5000")


def test_missing_camera_is_one_error_without_opencv_noise(capfd):
    """OpenCV logs a WARN/ERROR line per capture backend for a camera that is not there."""
    import cv2

    from streamrestore.live.sources import CameraSource

    level = cv2.utils.logging.getLogLevel()
    index = 63  # no machine running the tests has 64 cameras
    with pytest.raises(InputError, match="cannot open camera 63"):
        CameraSource(index)
    err = capfd.readouterr().err
    assert "WARN" not in err and "ERROR" not in err and "OpenCV" not in err, err
    assert cv2.utils.logging.getLogLevel() == level  # the caller's OpenCV log level is back


def test_a_live_output_file_is_encoded_as_asked(synthetic_faces, tmp_path, capsys):
    """--codec, --crf and --preset reach a file output (the main command's options and defaults); given
    with a stream output only they are refused at once: a stream is H.264 ultrafast, zerolatency."""
    from media_utils import make_clip

    src, out = tmp_path / "src.mp4", tmp_path / "out.mkv"
    make_clip(src, width=96, height=64, frames=6, fps=10)
    code = main(["live", "--source", str(src), "--as-fast-as-possible", "--no-window", "-o", str(out),
                 "--codec", "hevc", "--crf", "30", "--preset", "ultrafast", *_model_args()])
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "hevc" and sum(1 for _ in c.decode(video=0)) == 6
    code = main(["live", "--source", str(src), "--no-window", "-o", "udp://127.0.0.1:5999", "--preset", "slow",
                 *_model_args()])
    err = capsys.readouterr().err
    assert code == 2 and "--codec, --preset and --pix-fmt apply to file outputs" in err, err
    code = main(["live", "--source", str(src), "--no-window", "-o", str(tmp_path / "y.mp4"), "--pix-fmt", "yuv420p12le",
                 *_model_args()])  # (said before the models load, not when the first frame is written)
    err = capsys.readouterr().err
    assert code == 2 and "bad encoder option: libx264 cannot write yuv420p12le video" in err, err
    code = main(["live", "--source", str(src), "--no-window", "-o", str(tmp_path / "x.mp4"), "--preset", "9",
                 *_model_args()])
    err = capsys.readouterr().err
    assert code == 2 and "bad encoder option: libx264 presets are" in err and not (tmp_path / "x.mp4").exists(), err


def test_the_face_choice_and_format_options_reach_live(synthetic_faces, tmp_path, capsys, monkeypatch):
    """--match-threshold, --no-quality-gate and --pix-fmt are the main command's; live takes them
    into its pipeline and its file."""
    from media_utils import make_clip

    from streamrestore.pipeline import FaceRestorer

    built = []
    from_options = FaceRestorer.from_options.__func__

    def spy(cls, *args, **kwargs):
        built.append(kwargs.get("config"))
        return from_options(cls, *args, **kwargs)

    monkeypatch.setattr(FaceRestorer, "from_options", classmethod(spy))
    src, out = tmp_path / "src.mp4", tmp_path / "out.mkv"
    make_clip(src, width=96, height=64, frames=3, fps=10)
    code = main(["live", "--source", str(src), "--as-fast-as-possible", "--no-window", "-o", str(out),
                 "--match-threshold", "0.55", "--no-quality-gate", "--pix-fmt", "yuv444p", *_model_args()])
    assert code == 0, capsys.readouterr().err
    assert built and all(c.match_threshold == 0.55 and not c.gate.enabled for c in built), built
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_as_fast_as_possible_keeps_the_files_timestamps(synthetic_faces, tmp_path, capsys):
    """Read faster than real time, the output still plays at the file's pace."""
    from media_utils import make_clip, read_video_timing

    src = tmp_path / "src.mp4"
    make_clip(src, width=96, height=64, frames=12, fps=5)  # 2.4 s; decoding takes far less
    out = tmp_path / "out.mp4"
    code = main(["live", "--source", str(src), "--as-fast-as-possible", "--no-window", "-o", str(out),
                 *_model_args()])  # (-o as the main command takes it)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "audio is not kept" not in err  # the source has none
    source_times = read_video_timing(src)[0]
    out_times = read_video_timing(out)[0]
    assert len(out_times) == 12
    relative = [t - out_times[0] for t in out_times]
    expected = [t - source_times[0] for t in source_times]
    assert max(abs(a - b) for a, b in zip(relative, expected)) < 0.002, (relative, expected)


def test_an_output_file_says_the_sources_audio_is_not_kept(synthetic_faces, live_clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(["live", "--source", str(live_clip), "--as-fast-as-possible", "--no-window", "--max-frames", "3",
                 "--output", str(out), *_model_args()])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "the source's audio is not kept" in err and f"`streamrestore {live_clip}`" in err
    _faststart_copy(live_clip, tmp_path / "served.mp4")
    server = _HttpFiles({"clip.mp4": (tmp_path / "served.mp4").read_bytes()})  # a stream's audio: said too (it was not)
    try:
        code = main(["live", "--source", server.url + "clip.mp4", "--as-fast-as-possible", "--no-window",
                     "--max-frames", "3", "--output", str(tmp_path / "from_url.mp4"), *_model_args()])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"the audio of {server.url}clip.mp4 is not kept" in err


def test_a_run_whose_source_is_lost_ends_with_exit_1(synthetic_faces, tmp_path, capsys):
    """A script sees that the stream was lost (exit 0 read as "ended as asked"); what came before is kept."""
    from media_utils import make_clip

    make_clip(tmp_path / "tail.mp4", frames=12, fps=25)
    _faststart_copy(tmp_path / "tail.mp4", tmp_path / "clip.mp4")
    server = _HttpFiles({"clip.mp4": (tmp_path / "clip.mp4").read_bytes()})
    url = server.url + "clip.mp4?cuts"  # breaks off at the same place each time
    try:
        code = main(["live", "--source", url, "--no-window", "--as-fast-as-possible", "--retries", "1", "--timeout", "2",
                     "-o", str(tmp_path / "out.mp4"), *_model_args()])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"streamrestore: live ended because {url} was lost (exit 1); what came before is kept" in err
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert 0 < sum(1 for _ in container.decode(video=0)) < 12


def test_no_display_exit_2_and_one_line(monkeypatch, capsys, synthetic_faces, live_clip, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = main(["live", "--source", str(live_clip), *_model_args()])
    err = capsys.readouterr().err
    assert code == 2
    assert "--no-window" in _one_error_line(err)


def test_output_that_is_the_source_is_refused(capsys, synthetic_faces, tmp_path):
    from media_utils import make_clip

    src = tmp_path / "talk.mp4"
    make_clip(src, frames=4)
    original = src.read_bytes()
    (tmp_path / "link.mp4").symlink_to(src)
    code = main(["live", "--source", str(src), "--no-window", "--output", str(tmp_path / "link.mp4"), "--force",
                 *_model_args()])
    assert code == 2 and "is the input file" in _one_error_line(capsys.readouterr().err)
    assert src.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["link.mp4", "talk.mp4"]
    out = tmp_path / "out.mp4"  # one file named twice: two writers on it
    code = main(["live", "--source", str(src), "--no-window", "--output", str(out), "--output",
                 str(tmp_path / "." / "out.mp4"), *_model_args()])
    assert code == 2 and "given more than once" in _one_error_line(capsys.readouterr().err) and not out.exists()


def test_webcam_example_with_a_file_source(monkeypatch, synthetic_faces, synthetic_refs, live_clip, tmp_path,
                                           capsys):
    import runpy

    import streamrestore.pipeline as pipeline

    build = pipeline.build_face_restorer
    built = []
    monkeypatch.setattr(pipeline, "build_face_restorer", lambda *a, **kw: built.append(build(
        *a, **{**kw, "model": "identity"})) or built[-1])
    out = tmp_path / "out.mp4"
    monkeypatch.setattr(sys, "argv", ["webcam.py", str(synthetic_refs), str(live_clip), "--no-window",
                                      "--max-frames", "5", "--output", str(out)])
    runpy.run_path(str(REPO / "examples/webcam.py"), run_name="__main__")
    assert "5 frames out" in capsys.readouterr().out
    (fr,) = built
    assert [s.name for s in fr.reference_sets] == ["refs"] and fr.detector.calls > 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    # the output now exists: refused before the models load (after them, with a traceback naming a
    # --force the example did not have); --force replaces it
    from streamrestore.errors import OutputError

    with pytest.raises(OutputError, match="exists"):
        runpy.run_path(str(REPO / "examples/webcam.py"), run_name="__main__")
    assert len(built) == 1
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--force"])
    runpy.run_path(str(REPO / "examples/webcam.py"), run_name="__main__")
    assert len(built) == 2 and "5 frames out" in capsys.readouterr().out


def test_adapt_fine_tunes_before_the_first_frame_and_a_second_run_loads_it(monkeypatch, synthetic_faces, live_clip,
                                                                          tmp_path, capsys):
    """``live --adapt``: the person's fine-tune is made before the source is opened (no stream waits
    unread for it), kept on disk, and a second run loads it instead of training again."""
    from model_utils import headed_restorer
    from synthetic_faces import write_portraits

    from streamrestore.model import save_restorer
    from streamrestore.model.config import DetailHeadSettings

    model = save_restorer(headed_restorer(DetailHeadSettings(channels=8, blocks=1)).net, tmp_path / "tiny.safetensors")
    refs = write_portraits(tmp_path / "ann", "ann", count=3)  # adaptation needs three photos
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))  # the fine-tunes and ONNX programs
    adapted_dir = tmp_path / "cache" / "adapted"

    def run(out):
        code = main(["live", "--source", str(live_clip), "--as-fast-as-possible", "--no-window", "--max-frames", "6",
                     "--output", str(out), "--refs", str(refs), "--model", str(model), "--adapt", "--adapt-steps", "2"])
        err = capsys.readouterr().err
        assert code == 0, err
        with av.open(str(out)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 6
        # the fine-tune (or its loading) is said before the stream starts; the track's line says
        # whether the adaptation served it (the drawn faces' photos decide which)
        said = [err.find(line) for line in ("adapting the model's head", "adapted weights loaded from")]
        assert 0 <= max(said) < err.index("live: ")
        assert "; adapted" in err or "; not adapted (its photos fit poorly)" in err
        return err

    first = run(tmp_path / "first.mp4")
    assert "adapting the model's head to 3 reference photo(s)" in first
    (kept,) = adapted_dir.glob("*.safetensors")
    second = run(tmp_path / "second.mp4")
    assert "adapted weights loaded from" in second and "adapting" not in second
    assert list(adapted_dir.glob("*.safetensors")) == [kept]


def test_adapt_settings_are_checked_before_the_source_opens(capsys):
    assert main(["live", "--source", "rtsp://nowhere.invalid/x", "--no-window", "--adapt", "--adapt-steps", "0"]) == 2
    assert "--adapt-steps" in capsys.readouterr().err


def test_warm_up_runs_each_persons_network_and_the_unadapted_one():
    """With ``--adapt`` every person has a network (an ONNX program) of their own, and a track whose
    photos match poorly is restored by the base with references: warm-up runs each once, so no first
    frame pays for an export."""
    from types import SimpleNamespace

    from streamrestore.live.session import warm_up

    ann, bob, plain = object(), object(), object()
    seen = []

    class Adapted:
        resolution = 8

        def unadapted(self, cache):
            return plain  # the head's adaptation: one base encoding object serves for both people here

        def restore(self, faces, caches, noise_seeds=None):
            seen.append(caches[0])
            return faces

    detector = SimpleNamespace(detect=lambda image: [])
    warm_up(SimpleNamespace(detector=detector, restorer=Adapted(), caches={"ann": ann, "bob": bob}), 64, 48)
    assert seen == [ann, bob, plain]


class _CountingRestorer:
    """The identity restorer, counting calls and noting when restore first ran."""

    def __init__(self):
        from streamrestore.model.identity import IdentityRestorer

        self.inner = IdentityRestorer()
        self.resolution = self.inner.resolution
        self.encodes = 0
        self.restores: list = []

    def encode_references(self, faces):
        self.encodes += 1
        return self.inner.encode_references(faces)

    def restore(self, faces, caches, noise_seeds=None):
        self.restores.append(time.monotonic())
        return self.inner.restore(faces, caches)


def test_references_encoded_once_and_model_warm_before_first_frame(synthetic_faces, synthetic_refs, live_clip):
    from streamrestore.api import build_face_restorer
    from streamrestore.live import FileSource, LiveConfig, LiveSession
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import QualityGateConfig

    restorer = _CountingRestorer()
    # (the gate off: the drawn faces are clean, and a clean face is not given to the restorer)
    fr = build_face_restorer(synthetic_refs, model=restorer,
                             config=PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False)))
    assert restorer.encodes == 1 and not restorer.restores

    class Recorder:
        name, frames_written = "recorder", 0
        times: list = []

        def write(self, rgb, timestamp):
            self.times.append(timestamp)

        def close(self):
            pass

    class RecordingFileSource(FileSource):
        captured: list = []

        def frames(self, stop):
            for live in super().frames(stop):
                self.captured.append(live.captured)
                yield live

    sink = Recorder()
    source = RecordingFileSource(live_clip, realtime=False)
    stats = LiveSession(fr, source, [sink], config=LiveConfig(window=False, max_frames=6)).run()
    assert stats.frames_out == 6 and len(sink.times) == 6
    assert stats.dropped == 0  # a file read as fast as possible waits for the consumer
    # outputs are timed by the file's own clock, in order, from 0
    assert sink.times[0] == 0.0 and sink.times == sorted(sink.times)
    assert restorer.encodes == 1  # never per frame
    assert restorer.restores[0] < source.captured[0]  # warm-up ran before the first frame was captured
    assert len(restorer.restores) == 1 + fr.stats.frames_with_faces
    assert fr.stats.frames_with_faces == 6  # the drawn face is in every frame


@pytest.mark.parametrize("rotation", [90, -90])
def test_a_phone_video_plays_upright_and_its_faces_are_found(tmp_path, rotation):
    """A phone's portrait video is stored sideways with a display rotation. The file source gives
    its frames turned as shown, at the turned size (what the outputs are opened with), so the
    preview and the outputs are upright and a detector of upright faces finds the face."""
    import synthetic_faces as sf
    from media_utils import make_clip

    from streamrestore.live import FileSource, LiveConfig, LiveSession
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.video.reader import quarter_turns

    width, height, frames = 160, 224, 6
    pictures = [sf.scene(width, height, [("ann", sf.face_matrix((80 + i, 112), 26, rotation))], i)[0]
                for i in range(frames)]
    src = tmp_path / "phone.mp4"
    make_clip(src, width=width, height=height, frames=frames, rotation=rotation, picture=pictures.__getitem__)

    class Recorder:
        name, frames_written = "recorder", 0

        def __init__(self):
            self.pictures = []

        def write(self, rgb, timestamp):
            self.pictures.append(rgb)

        def close(self):
            pass

    source = FileSource(src, realtime=False)
    assert (source.width, source.height) == (height, width)  # the picture as shown: landscape
    fr = FaceRestorer(IdentityRestorer(128), sf.UprightFaceDetector(), config=PipelineConfig(lookahead=0))
    sink = Recorder()
    LiveSession(fr, source, [sink], config=LiveConfig(window=False, warm_up=False)).run()
    assert len(sink.pictures) == frames and fr.stats.frames_with_faces == frames
    for shown, drawn in zip(sink.pictures, pictures):
        assert shown.shape == (width, height, 3)
        upright = np.rot90(drawn, quarter_turns(rotation)).astype(float)
        assert np.abs(shown - upright).mean() < 3  # the drawn picture turned, less the codec's loss


def test_a_stream_that_says_its_rotation_plays_upright(tmp_path):
    """A stream source learns the display rotation from its first frame, decoded at open (a path
    opens as a URL does), and gives that frame and the rest turned as shown."""
    from media_utils import make_clip

    from streamrestore.live.sources import StreamSource
    from streamrestore.video.reader import frame_to_rgb

    src = tmp_path / "turned.mp4"
    # 4 s, every frame a keyframe: the low-latency open drops the packets it probed (up to 2 s)
    make_clip(src, width=96, height=64, frames=100, rotation=-90, options={"preset": "ultrafast", "crf": "10", "g": "1"})
    stream = StreamSource(str(src))
    try:
        assert (stream.width, stream.height) == (64, 96)
        got = [live for live, _ in zip(stream.frames(threading.Event()), range(3))]
    finally:
        stream.close()
    with av.open(str(src)) as c:  # the stored pictures, by their time
        stored = {f.pts: frame_to_rgb(f) for f in c.decode(video=0)}
    assert got
    for live in got:
        shown, mirrored = (np.rot90(stored[live.payload.pts], turns) for turns in (3, 1))
        assert np.array_equal(live.rgb(), shown)
        assert not np.array_equal(live.rgb(), mirrored)


class _HttpFiles:
    """Serves byte strings at ``/NAME`` on a local port, as a plain web server does (its length said,
    no byte ranges); a path ending in ``?cut`` is answered with two thirds of its bytes the first
    time (a connection that breaks off), one ending in ``?cuts`` every time. ``live`` names are sent as a live server sends a stream:
    without a length, until the connection closes."""

    def __init__(self, files: dict[str, bytes], live: tuple[str, ...] = ()):
        import http.server

        self.requests: list[str] = []
        requests = self.requests

        class Serve(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                requests.append(self.path)
                data = files[self.path.split("?")[0].lstrip("/")]
                cut = self.path.endswith("?cut") and requests.count(self.path) == 1 or self.path.endswith("?cuts")
                self.send_response(200)
                if self.path.split("?")[0].lstrip("/") not in live:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) * 2 // 3] if cut else data)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_file_served_over_http_plays_once_whole(tmp_path):
    """``live --source http://host/clip.mp4`` plays the file as a file source would: every frame
    (the low-latency open used to drop the packets it probed, and with them a short clip's only
    keyframe: no frame, and reconnects for ever), timed by the file's clock (outputs keep it),
    once, and after a dropped connection resumed where it stopped, not replayed from the start."""
    from media_utils import make_clip

    from streamrestore.live.sources import ReconnectPolicy, open_source

    make_clip(tmp_path / "tail.mp4", frames=12, fps=25)  # one keyframe
    # its index moved to the front (as web servers hold mp4s), so a cut answer still opens
    with av.open(str(tmp_path / "tail.mp4")) as src, av.open(str(tmp_path / "clip.mp4"), "w",
                                                              options={"movflags": "faststart"}) as out:
        copy = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = copy
                out.mux(packet)
    server = _HttpFiles({"clip.mp4": (tmp_path / "clip.mp4").read_bytes()})
    url = server.url + "clip.mp4"
    try:
        source = open_source(url, realtime=False)
        assert source.can_wait  # read as fast as it decodes, waiting for the consumer
        got = list(source.frames(threading.Event()))
        source.close()
        assert [round(live.payload.time * 25) for live in got] == list(range(12)) and source.reconnects == 0
        assert [live.timestamp for live in got] == pytest.approx([i / 25 for i in range(12)])  # the file's clock
        paced = open_source(url)  # at its own pace: 12 frames at 25 fps take ~0.44 s
        started = time.monotonic()
        assert len(list(paced.frames(threading.Event()))) == 12 and time.monotonic() - started > 0.4
        paced.close()
        dropped = open_source(url + "?cut", realtime=False, policy=ReconnectPolicy(retries=2, backoff=0.1, timeout=2))
        got = list(dropped.frames(threading.Event()))
        dropped.close()
        assert dropped.reconnects == 1 and server.requests.count("/clip.mp4?cut") == 2
        assert [round(live.payload.time * 25) for live in got] == list(range(12))  # each frame once
    finally:
        server.close()


def _faststart_copy(src, dst) -> None:
    """``src`` with its index (moov) moved to the front, as web servers hold mp4s (video and audio)."""
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = [*source.streams.video[:1], *source.streams.audio[:1]]
        copies = {stream.index: out.add_stream_from_template(stream) for stream in streams}
        for packet in source.demux(streams):
            if packet.size:
                packet.stream = copies[packet.stream.index]
                out.mux(packet)


def test_a_file_over_http_that_gives_nothing_new_is_given_up_not_reconnected_for_ever(tmp_path):
    """A connection that breaks off at the same place each time gives no new frame after a reconnect:
    after the policy's retries in a row it is given up, saying why (each reconnect started its
    attempts again: it reconnected for ever). An MP4 whose index is at its end cannot be read from
    a server without byte ranges: an error at open that says how to fix the file (it opened, gave
    no frame, and was reconnected for ever, exit 0)."""
    from media_utils import make_clip

    from streamrestore.errors import InputError
    from streamrestore.live.sources import ReconnectPolicy, open_source

    make_clip(tmp_path / "tail.mp4", frames=12, fps=25)
    _faststart_copy(tmp_path / "tail.mp4", tmp_path / "clip.mp4")
    noise = np.random.default_rng(0).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)
    # ~2 MB, index at the end: FFmpeg reads to the end for it, then cannot go back for the frames
    make_clip(tmp_path / "big.mp4", width=320, height=240, frames=8, options={"crf": "0", "preset": "ultrafast"},
              picture=lambda i: noise[i])
    server = _HttpFiles({"clip.mp4": (tmp_path / "clip.mp4").read_bytes(),
                         "tail.mp4": (tmp_path / "big.mp4").read_bytes()})
    url = server.url + "clip.mp4?cuts"
    policy = ReconnectPolicy(retries=2, backoff=0.05, timeout=2)
    try:
        source = open_source(url, realtime=False, policy=policy)
        got = list(source.frames(threading.Event()))
        source.close()
        assert 0 < len(got) < 12 and server.requests.count("/clip.mp4?cuts") == 4 and source.lost
        assert source.problems == [f"{url} reconnected 3 times in a row without a new frame "
                                   f"({source._read_error or 'it ended at once'}); given up: check that the sender "
                                   "is running and the URL is right"]
        with pytest.raises(InputError, match=r"cannot open stream .*tail.mp4: it opened, but no frame could be read "
                                             r"from it \(.*\); a file over http needs its index \(moov\) at its start"):
            open_source(server.url + "tail.mp4", realtime=False, policy=ReconnectPolicy(retries=1, backoff=0.05))
    finally:
        server.close()


def test_live_outputs_are_bt709_converted_and_tagged(tmp_path):
    """The restored picture is SDR RGB: a live file was converted with swscale's default BT.601 and left
    untagged, and players take an untagged HD picture for BT.709: a face's red came out 14 levels off."""
    from streamrestore.live.sinks import FileSink
    from streamrestore.provenance import restored_comment
    from streamrestore.video.reader import frame_to_rgb

    rgb = np.zeros((720, 1280, 3), np.uint8)
    rgb[...] = (200, 60, 40)
    sink = FileSink(tmp_path / "live.mp4", 1280, 720, fps=25)
    for i in range(3):
        sink.write(rgb, i / 25)
    sink.close()
    with av.open(str(tmp_path / "live.mp4")) as container:
        frame = next(container.decode(video=0))
        assert container.metadata.get("comment") == restored_comment()  # (its faces' detail made by a network)
    assert (int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc), int(frame.color_range)) == (1, 1, 1, 1)
    assert np.abs(frame_to_rgb(frame)[360, 640].astype(int) - (200, 60, 40)).max() <= 2


def test_a_live_file_few_players_play_is_said_when_it_opens(tmp_path, caplog):
    """An odd-sized live picture is written 4:4:4; the writer's note of it (once a log line) was
    dropped by the live sink when it became a note."""
    import logging

    from streamrestore.live.sinks import FileSink

    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        FileSink(tmp_path / "odd.mp4", 321, 241, fps=25).abort()
        FileSink(tmp_path / "even.mp4", 320, 240, fps=25).abort()
    said = [r.getMessage() for r in caplog.records if "4:4:4" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'odd.mp4'}: 321x241 is odd-sized"), said


def test_a_protocol_this_ffmpeg_lacks_is_named_as_such(tmp_path):
    """PyPI's PyAV wheels have no SRT: "Protocol not found; check that the sender is running" sent a
    user to debug a sender that was never reached; said at once, as in and out."""
    from streamrestore.errors import InputError, OutputError
    from streamrestore.live.sinks import open_sink
    from streamrestore.live.sources import ReconnectPolicy, open_source

    try:
        av.open("srt://127.0.0.1:9", timeout=0.1).close()
    except av.error.ProtocolNotFoundError:
        pass
    except Exception:
        pytest.skip("this FFmpeg has SRT")
    with pytest.raises(InputError, match=r"cannot open stream srt://127.0.0.1:9: this FFmpeg \(PyAV .*'s\) has no "
                                         r"srt:// support; use udp://, rtmp:// or tcp://"):
        open_source("srt://127.0.0.1:9", policy=ReconnectPolicy(retries=3, backoff=4))  # (no retries)
    with pytest.raises(OutputError, match=r"srt://127.0.0.1:9: this FFmpeg \(PyAV .*'s\) has no srt:// support"):
        open_sink("srt://127.0.0.1:9", 64, 48, fps=25)


def test_an_mpeg_ts_file_over_http_plays_once_though_it_names_no_duration(tmp_path):
    """An MPEG-TS file names its duration only to a reader that can seek to its end; a plain web server
    (no byte ranges) does not let FFmpeg, but says the file's size: it is a file, played once, not a
    live stream reconnected and replayed for ever."""
    from media_utils import make_clip

    from streamrestore.live.sources import ReconnectPolicy, open_source

    make_clip(tmp_path / "clip.ts", frames=10, fps=25)
    server = _HttpFiles({"clip.ts": (tmp_path / "clip.ts").read_bytes()})
    try:
        source = open_source(server.url + "clip.ts", realtime=False, policy=ReconnectPolicy(retries=2, backoff=0.1))
        assert not source._container.duration  # what the case is about
        got = list(source.frames(threading.Event()))
        source.close()
    finally:
        server.close()
    assert len(got) == 10 and source.reconnects == 0 and server.requests == ["/clip.ts"]


def test_a_file_over_http_whose_timestamps_go_back_keeps_every_frame(tmp_path):
    """Two MPEG-TS segments joined into one file (each from time 0), served over http: every frame is
    given once and in order, those after the jump placed one frame after the frame before, as the file
    mode places them (the frames after the jump were dropped as if already given). A connection that
    breaks off inside the second segment resumes after the last frame given."""
    from media_utils import make_clip, pattern

    from streamrestore.live.sources import ReconnectPolicy, open_source

    make_clip(tmp_path / "a.ts", frames=6, fps=25)
    make_clip(tmp_path / "b.ts", frames=6, fps=25, picture=lambda i: pattern(96, 64, 6 + i))
    server = _HttpFiles({"joined.ts": (tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes()})
    truth = [pattern(96, 64, k).astype(float) for k in range(12)]
    try:
        for path in ("joined.ts", "joined.ts?cut"):
            source = open_source(server.url + path, realtime=False,
                                 policy=ReconnectPolicy(retries=2, backoff=0.1, timeout=2))
            got = list(source.frames(threading.Event()))
            source.close()
            assert source.reconnects == (path.endswith("?cut")), path
            shown = [int(np.argmin([np.abs(live.rgb() - t).mean() for t in truth])) for live in got]
            assert shown == list(range(12)), (path, shown)
            assert [live.timestamp for live in got] == pytest.approx([i / 25 for i in range(12)])
            assert source.problems == [f"6 frame(s) of {server.url + path} had no timestamp, or one not after the "
                                       "frame before's: each was placed one frame after it"]
    finally:
        server.close()


def test_a_live_stream_over_http_is_reconnected_at_its_end():
    """A live FLV stream over http says its duration is 0 (a file says how long it is): when its
    answer ends, the source reconnects as for any live stream instead of ending."""
    from streamrestore.live.sources import ReconnectPolicy, open_source

    class Sink:  # FLV written where it cannot seek back: as a live encoder sends it (duration 0)
        data = bytearray()

        def write(self, chunk):
            self.data += bytes(chunk)
            return len(chunk)

    sink = Sink()
    with av.open(sink, "w", format="flv") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "5"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
    server = _HttpFiles({"live.flv": bytes(sink.data)}, live=("live.flv",))
    stop = threading.Event()
    try:
        source = open_source(server.url + "live.flv", policy=ReconnectPolicy(retries=1, backoff=0.1, timeout=2))
        assert source._container.duration == 0  # what the case is about
        for _live in source.frames(stop):
            if source.reconnects:  # a frame of the stream opened again
                stop.set()
        source.close()
    finally:
        server.close()
    assert stop.is_set() and source.reconnects == 1


FLV_SENDER = """
import sys, time
import av, numpy as np
# 3 s over TCP as an encoder sends them (FLV, what RTMP carries), then gone (the receiver's
# low-latency open drops what it probes: up to 2 s)
with av.open(f"tcp://127.0.0.1:{sys.argv[1]}?listen=1", "w", format="flv") as out:
    video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency", "g": "5"})
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    for i in range(75):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 3 * i, np.uint8), format="rgb24")
        frame.pts = i
        out.mux(video.encode(frame))
        time.sleep(0.04)
    out.mux(video.encode())
"""


def test_a_live_flv_stream_that_stops_is_reconnected_not_ended():
    """A live FLV stream says its duration is 0: it is not a file, so when its sender stops the
    source tries to reconnect instead of ending as at a file's end (which an http file does)."""
    from streamrestore.live.sources import ReconnectPolicy, StreamSource

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = subprocess.Popen([sys.executable, "-c", FLV_SENDER, str(port)], env=_env())
    try:
        policy = ReconnectPolicy(retries=1, backoff=0.1, timeout=2)
        source = None
        for _ in range(100):  # the sender listens once Python and PyAV have started
            try:
                source = StreamSource(f"tcp://127.0.0.1:{port}", policy=policy)
                break
            except InputError:
                time.sleep(0.1)
        assert source is not None
        got = list(source.frames(threading.Event()))
        source.close()
    finally:
        sender.kill()
        sender.wait()
    assert got  # frames came, then the sender was gone: a reconnect was tried
    assert source.problems == [f"tcp://127.0.0.1:{port} dropped and did not come back after 1 attempts"]
    assert source.lost


# --- network output -------------------------------------------------------------------------

@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_udp_output_is_decodable_with_faces(request, capsys, media):
    """A drawn-face clip (drawn-face detector) or a real one (shared SCRFD pack) streamed out."""
    if media == "synthetic":
        import synthetic_faces

        request.getfixturevalue("synthetic_faces")
        source, model_args = request.getfixturevalue("live_clip"), _model_args()
        detector = synthetic_faces.SyntheticFaceDetector()
    else:
        from streamrestore.faces.detect import create_detector

        shared_models = request.getfixturevalue("shared_models")
        source, model_args = request.getfixturevalue("shared_data") / CLIP, _model_args(shared_models)
        detector = create_detector("scrfd", models_dir=shared_models / "insightface")

    port = _free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    received: list = []
    errors: list = []

    def receive():
        try:
            with av.open(url, options={"overrun_nonfatal": "1"}, timeout=(30, 10)) as container:
                for frame in container.decode(video=0):
                    received.append(frame.to_ndarray(format="rgb24"))
                    if len(received) >= 8:
                        return
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    time.sleep(0.3)  # the reader binds the port before anything is sent
    code = main(["live", "--source", str(source), "--no-window", "--output", url,
                 "--max-frames", "30", *model_args])
    err = capsys.readouterr().err
    reader.join(15)
    assert code == 0, err
    assert "p50" in err and "p95" in err
    assert len(received) >= 8, (errors, err)
    assert all(f.shape == (360, 640, 3) for f in received)
    assert any(len(detector.detect(f)) >= 1 for f in received[-3:])


# --- source drop ----------------------------------------------------------------------------

_SENDER = """
import sys, time
import numpy as np
from streamrestore.live.sinks import StreamSink
url, colour = sys.argv[1], [int(c) for c in sys.argv[2].split(",")]
rng = np.random.default_rng(0)
frame = np.empty((120, 160, 3), np.uint8)
frame[:] = colour
frame[::8] = 255  # some texture; the colour says which sender this is
sink = StreamSink(url, 160, 120)
start = time.monotonic()
for i in range(100000):
    now = time.monotonic()
    sink.write(frame, now)
    time.sleep(max(0.0, start + (i + 1) / 25 - time.monotonic()))
"""

RED, BLUE = (200, 30, 30), (30, 30, 200)


def _start_sender(url, colour, env):
    return subprocess.Popen([sys.executable, "-c", _SENDER, url, ",".join(map(str, colour))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(proc_err: list, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in proc_err):
            return True
        time.sleep(0.1)
    return False


def test_source_drop_is_reconnected_and_sigint_finishes_the_file(tmp_path):
    port = _free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    out = tmp_path / "live.ts"
    env = _env()
    sender = _start_sender(url, RED, env)
    receiver = subprocess.Popen(
        [*SYNTHETIC_CLI, "live", "--source", url, "--no-window", "--output", str(out),
         "--timeout", "1", "--retries", "8", *_model_args()],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)
    lines: list = []
    pump = threading.Thread(target=lambda: lines.extend(receiver.stderr), daemon=True)
    pump.start()
    try:
        assert _wait_for(lines, "info: live:", 60), "".join(lines)
        time.sleep(1.5)  # red frames flow
        sender.kill()  # the stream drops...
        sender.wait()
        assert _wait_for(lines, "dropped; reconnecting", 15), "".join(lines)
        sender = _start_sender(url, BLUE, env)  # ...and comes back
        assert _wait_for(lines, "reconnected", 20), "".join(lines)
        time.sleep(1.5)  # blue frames flow
        receiver.send_signal(signal.SIGINT)
        code = receiver.wait(30)
    finally:
        sender.kill()
        if receiver.poll() is None:
            receiver.kill()
    pump.join(5)
    err = "".join(lines)
    assert code == 0, err
    assert "reconnected 1 time" in err
    with av.open(str(out)) as container:  # finished: it plays
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert frames and frames[0].shape == (120, 160, 3)
    means = [f[4:7].reshape(-1, 3).mean(0) for f in frames]  # rows between the texture lines
    red = [m[0] > 150 and m[2] < 80 for m in means]
    blue = [m[2] > 150 and m[0] < 80 for m in means]
    assert any(red) and any(blue), "both senders must appear in the output"
    assert max(i for i, r in enumerate(red) if r) < min(i for i, b in enumerate(blue) if b)  # in order


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_finishes_the_live_output_file(tmp_path, live_clip, signum):
    """`timeout`, `docker stop`, systemd (SIGTERM) or a closed terminal (SIGHUP) end a live run
    like q or Ctrl-C: the output file is finished and plays, exit code 0."""
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen(
        [*SYNTHETIC_CLI, "live", "--source", str(live_clip), "--loop", "--no-window", "--output", str(out),
         *_model_args()],
        env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)
    lines: list = []
    pump = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    pump.start()
    try:
        assert _wait_for(lines, "info: live:", 120), "".join(lines)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(  # frames flow: the first 32 KB reached the file
                p.name.endswith(".partial.mp4") and p.stat().st_size >= 32 * 1024 for p in tmp_path.iterdir()):
            time.sleep(0.1)
        proc.send_signal(signum)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(5)
    err = "".join(lines)
    assert code == 0, err
    assert f"{signal.Signals(signum).name} received" in err
    with av.open(str(out)) as container:  # finished: it plays
        assert sum(1 for _ in container.decode(video=0)) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["live.mp4"]


# --- preview window -------------------------------------------------------------------------

def _read_xwd(data: bytes) -> np.ndarray:
    """RGB pixels of an ``xwd -root`` dump (ZPixmap, 24 or 32 bits per pixel, 8 bits per colour)."""
    header = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order, bits_per_pixel, bytes_per_line, ncolors = (
        header[0], header[4], header[5], header[7], header[11], header[12], header[19])
    step = bits_per_pixel // 8
    assert step in (3, 4) and bytes_per_line >= step * width, header
    start = header_size + 12 * ncolors  # after the window name and the colour map
    rows = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=start).reshape(height, bytes_per_line)
    px = rows[:, : step * width].reshape(height, width, step)
    if byte_order == 1:  # MSBFirst: [x] r g b
        return np.ascontiguousarray(px[..., step - 3 :])
    return np.ascontiguousarray(px[..., 2::-1])  # LSBFirst: b g r [x]


@pytest.fixture
def xvfb():
    if not all(shutil.which(t) for t in ("Xvfb", "xdotool", "xwd")):
        pytest.skip("needs Xvfb, xdotool and xwd (apt: xvfb xdotool x11-apps)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x900x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


def _x(display, *args) -> str:
    return subprocess.run(list(args), env=_env(DISPLAY=display), capture_output=True, text=True,
                          timeout=30).stdout


def _panes(display, wid):
    geometry = dict(line.split("=") for line in _x(display, "xdotool", "getwindowgeometry", "--shell", wid).split())
    x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    shot = subprocess.run(["xwd", "-root", "-silent"], env=_env(DISPLAY=display), capture_output=True,
                          timeout=30).stdout
    window = _read_xwd(shot)[y : y + h, x : x + w]
    return window[:, : w // 2], window[:, w // 2 :], (w, h)


def _same_scene(left, right) -> bool:
    """Both panes show a picture, and the same one: the identity restorer changes nothing
    (the text overlays aside, hence the margins)."""
    if left.shape != right.shape or left.std() < 20 or right.std() < 20:
        return False
    a, b = (p[40:-40].astype(float).ravel() for p in (left, right))
    return np.corrcoef(a, b)[0, 1] > 0.9


def test_window_shows_both_panes_and_keys_work(xvfb, tmp_path, live_clip):
    snapshots = tmp_path / "shots"
    snapshots.mkdir()
    proc = subprocess.Popen(
        [*SYNTHETIC_CLI, "live", "--source", str(live_clip), "--loop", "--snapshots", str(snapshots),
         *_model_args()],
        env=_env(DISPLAY=xvfb), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wid = _x(xvfb, "timeout", "60", "xdotool", "search", "--sync", "--name", "streamrestore live").split()[0]
        deadline = time.monotonic() + 30
        while True:  # until the window has its size and frames are painted in it
            left, right, size = _panes(xvfb, wid)
            if size == (2 * 640, 360) and _same_scene(left, right) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for key in ("r", "space", "space", "r", "s"):  # restoration off, pause, resume, on, snapshot
            _x(xvfb, "xdotool", "key", "--window", wid, key)
            time.sleep(0.3)
        deadline = time.monotonic() + 15
        while not list(snapshots.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.2)
        _x(xvfb, "xdotool", "key", "--window", wid, "q")
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 0, err
    assert size == (2 * 640, 360)  # original | restored at the clip's size
    assert left.std() > 20 and right.std() > 20, "both panes show a picture"
    assert _same_scene(left, right)
    shots = list(snapshots.glob("*.png"))
    assert len(shots) == 1
    import cv2

    assert cv2.imread(str(shots[0])).shape == (360, 1280, 3)
    assert "frames out" in err and "p95" in err
    assert "of the frames out had restoration off (r; the line above counts the " in err
    for message in ("restoration off", "paused", "resumed", "restoration on", "saved snapshot"):
        assert message in err


@pytest.mark.parametrize("timeout", ["0", "inf", "nan"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(timeout, capsys):
    if timeout == "0":
        assert main(["live", "--source", "rtsp://nowhere.invalid/x", "--no-window", "--timeout", timeout]) == 2
        assert "--timeout must be a positive number of seconds" in _one_error_line(capsys.readouterr().err)
        return
    with pytest.raises(SystemExit) as refused:  # (not a number as people write one: said as the options are read)
        main(["live", "--source", "rtsp://nowhere.invalid/x", "--no-window", "--timeout", timeout])
    assert refused.value.code == 2
    assert f"argument --timeout: not a number: '{timeout}'" in capsys.readouterr().err.splitlines()[0]


def test_a_stream_that_sends_nothing_is_named_as_such():
    """FFmpeg's "Immediate exit requested" (our open timeout) is said in the user's words."""
    import socket

    from streamrestore.errors import InputError
    from streamrestore.live.sources import ReconnectPolicy, StreamSource

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free port nobody sends to
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputError, match=r"nothing received for 1 s; check that the sender is running"):
        StreamSource(f"udp://127.0.0.1:{port}", policy=ReconnectPolicy(retries=0, timeout=1.0))


def test_an_interlaced_file_or_stream_plays_deinterlaced(tmp_path):
    """An interlaced source (a DV file, broadcast 1080i over the network) is deinterlaced as the main
    command's reader does it, every frame kept (bwdif gives the last one up when the source ends);
    ``deinterlace=False`` keeps the woven fields."""
    from media_utils import combing, make_interlaced_clip

    from streamrestore.live.sources import open_source

    src = tmp_path / "camcorder.mp4"
    make_interlaced_clip(src, frames=8)
    server = _HttpFiles({"camcorder.mp4": src.read_bytes()})
    try:
        for spec in (str(src), server.url + "camcorder.mp4"):
            for deinterlace in (True, False):
                source = open_source(spec, realtime=False, deinterlace=deinterlace)
                got = [live.rgb() for live in source.frames(threading.Event())]
                source.close()
                assert len(got) == 8, (spec, deinterlace)
                combs = [combing(rgb) for rgb in got]
                assert (max(combs) < 1) if deinterlace else (min(combs) > 8), (spec, deinterlace, combs)
    finally:
        server.close()


def test_a_stream_that_changes_size_is_given_at_its_first_size(tmp_path):
    """A broadcast switching to an SD advert: the outputs were opened at the first size, so the
    frames after the switch come scaled to it."""
    from media_utils import make_clip

    from streamrestore.live.sources import open_source

    make_clip(tmp_path / "hd.ts", width=96, height=64, frames=5)
    make_clip(tmp_path / "sd.ts", width=64, height=48, frames=4)
    capture = (tmp_path / "hd.ts").read_bytes() + (tmp_path / "sd.ts").read_bytes()
    server = _HttpFiles({"channel.ts": capture}, live=("channel.ts",))
    stop = threading.Event()
    try:
        source = open_source(server.url + "channel.ts")
        got = []
        for live in source.frames(stop):
            got.append(live.rgb().shape)
            if len(got) == 9:
                stop.set()
        source.close()
    finally:
        server.close()
    assert (source.width, source.height) == (96, 64) and got == [(64, 96, 3)] * 9


def test_a_source_of_wide_pixels_says_their_aspect_as_its_frames_are_given(tmp_path):
    """A DVD's 32:27 pixels (the file says so): the live pipeline cuts its faces as shown
    (``FaceRestorer.pixel_aspect``); a phone's clip turned upright turns its pixels too."""
    from fractions import Fraction

    from media_utils import make_clip

    from streamrestore.live.sources import open_source

    make_clip(tmp_path / "dvd.mp4", width=64, height=48, frames=3, color={"sample_aspect_ratio": Fraction(32, 27)})
    make_clip(tmp_path / "turned.mp4", width=64, height=48, frames=3, rotation=90,
              color={"sample_aspect_ratio": Fraction(32, 27)})
    make_clip(tmp_path / "square.mp4", width=64, height=48, frames=3)
    server = _HttpFiles({"dvd.mp4": (tmp_path / "dvd.mp4").read_bytes()})
    try:
        aspects = {}
        for spec in (tmp_path / "dvd.mp4", tmp_path / "turned.mp4", tmp_path / "square.mp4", server.url + "dvd.mp4"):
            source = open_source(str(spec), realtime=False)
            aspects[Path(str(spec)).name] = source.pixel_aspect
            source.close()
    finally:
        server.close()
    assert aspects == pytest.approx({"dvd.mp4": 32 / 27, "turned.mp4": 27 / 32, "square.mp4": 1.0})
