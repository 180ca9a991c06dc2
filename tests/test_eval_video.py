"""``streamrestore eval --video``: degradation, the measuring machinery on synthetic clips whose
answers are known, and one short real clip through the CLI (skipped without the shared folder)."""
import json
import logging
import math
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from media_utils import make_clip, pattern

from streamrestore.cli import main as cli_main
from streamrestore.eval.metrics import PSNR_CAP_DB
from streamrestore.eval.video import (
    DEFAULT_METHODS,
    MARGIN_FRAMES,
    VIDEO_PRESETS,
    FaceJudge,
    GroundTruthFaces,
    VideoDegradation,
    VideoMethod,
    degrade_video,
    evaluate_video,
    face_region,
    format_video_table,
)
from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.quality import QualityGateConfig
from streamrestore.types import Face

ROW_KEYS = ("method", "psnr", "ssim", "id_gt", "id_refs", "id_std", "ewarp", "ewarp_face", "ewarp_input", "frames",
            "pairs")
BOX = np.array([30.0, 14.0, 66.0, 50.0], np.float32)
KPS = np.array([[40, 26], [56, 26], [48, 34], [41, 42], [55, 42]], np.float32)


# --- synthetic clips and stand-ins for the detector and the judge ---------------------------


def write_frames(path, frames, fps=25):
    """Lossless (qp 0, 4:4:4) H.264: decoding gives back exactly what was written, to a level."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"qp": "0", "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))


class FixedFaceDetector:
    """Reports the same face on every image (or none)."""

    name = "fixed"

    def __init__(self, found=True):
        self.found = found

    def detect(self, image):
        return [Face(box=BOX.copy(), kps=KPS.copy(), score=0.9)] if self.found else []


class PixelEmbedder:
    """An identity 'judge' made of the crop's pixels: equal crops give cosine 1."""

    name = "pixels"

    def embed_crops(self, crops):
        small = np.stack([c[::14, ::14].astype(np.float32).ravel() for c in crops])
        return small - small.mean(axis=1, keepdims=True)


def ground_truth():
    return GroundTruthFaces(FixedFaceDetector(), FaceJudge(PixelEmbedder()), padded_retry=False)


def restorer_factory(detector):
    def make(method, fps):
        return FaceRestorer(IdentityRestorer(resolution=64), detector, fps=fps)

    return make


def run(clean, degraded, detector=None, **kwargs):
    faces = ground_truth()
    ref = faces.judge.embed(np.asarray(pattern(96, 64, 0)), KPS)
    rows = evaluate_video(clean, degraded, make_face_restorer=restorer_factory(detector or FixedFaceDetector(False)),
                          faces=faces, ref_embedding=ref, **kwargs)
    return {r["method"]: r for r in rows}


@pytest.fixture
def moving(tmp_path):
    path = tmp_path / "clean.mp4"
    write_frames(path, [pattern(96, 64, i) for i in range(8)])
    return path


# --- degradation --------------------------------------------------------------------------


def test_the_frames_measured_are_degraded_as_in_the_whole_clips_copy(tmp_path):
    """x264's look-ahead sees where a stream ends: the first 10 frames of a 10-frame encode came
    out 8 levels (mean) from the same frames of the whole clip's copy here, with 60 frames past
    them 0-1.3."""
    src = tmp_path / "src.mp4"
    make_clip(src, width=96, height=64, frames=80, fps=25)

    def first_ten(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(10), c.decode(video=0))]).astype(int)

    degrade_video(src, tmp_path / "whole.mp4", "default")
    assert degrade_video(src, tmp_path / "short.mp4", "default", max_frames=10) == 10
    assert degrade_video(src, tmp_path / "margin.mp4", "default", max_frames=10, margin_frames=60) == 70
    whole = first_ten(tmp_path / "whole.mp4")
    short, margin = (np.abs(first_ten(tmp_path / name) - whole).mean() for name in ("short.mp4", "margin.mp4"))
    assert margin < short / 3, (margin, short)
    assert MARGIN_FRAMES >= 150  # (identical frames on Obama_clip1 from 150 on)


def test_default_preset_is_the_shared_tools_default():
    d = VIDEO_PRESETS["default"]
    assert (d.scale, d.blur, d.crf, d.final_crf, d.x264_preset) == (4.0, 1.2, 32, 16, "medium")
    assert d.small_size(256, 256) == (64, 64)
    assert d.small_size(1280, 720) == (320, 180)
    assert d.small_size(90, 50) == (22, 16)  # round(90/4)=22 even; 12 -> at least 16


def test_degrade_video_keeps_frames_size_and_rate(tmp_path):
    src = tmp_path / "src.mp4"
    make_clip(src, width=96, height=64, frames=10, fps=25)
    dst = tmp_path / "deg.mp4"
    assert degrade_video(src, dst, "default", max_frames=7) == 7
    with av.open(str(dst)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert stream.average_rate == Fraction(25)
    assert len(frames) == 7 and frames[0].shape == (64, 96, 3)
    with av.open(str(src)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(frames[0].astype(int) - first).mean() > 2  # really degraded
    # Repeatable to the byte: libx264 threaded, or with its assembly, coded the same frames otherwise from run to
    # run (up to 1.7 levels mean on a late P frame here; a 720p clip gave 8 copies in 8 runs, ~40 dB apart), and
    # each student of a class got another table (_encode_h264's plain_code)
    for run in range(3):
        again = tmp_path / f"again{run}.mp4"
        degrade_video(src, again, "default", max_frames=7)
        assert again.read_bytes() == dst.read_bytes(), run
    # (a small clip is often repeatable even threaded: the settings that make it so are checked where x264 says them)
    assert b" threads=1 lookahead_threads=1 " in dst.read_bytes()
    import streamrestore.eval.video as video_module

    asked, encode = [], video_module._encode_h264

    def recording(*args, **kwargs):  # (the assembly's switch is not in x264's own summary: asked for here)
        asked.append(kwargs.get("plain_code"))
        return encode(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(video_module, "_encode_h264", recording)
        degrade_video(src, tmp_path / "asked.mp4", "default", max_frames=2)
    assert asked == [True, True]


# --- the measuring machinery ---------------------------------------------------------------


def test_face_region_is_grown_square_clipped():
    assert face_region([10, 20, 30, 60], (100, 100)) == (0, 14, 46, 66)
    assert face_region([0, 0, 100, 100], (100, 100)) == (0, 0, 100, 100)


def test_degraded_same_as_clean_gives_capped_psnr_and_identity_one(moving):
    rows = run(moving, moving)
    for name in ("input", "model_norefs", "model_refs", "clean", "clean_refs"):
        row = rows[name]
        assert row["psnr"] == PSNR_CAP_DB and row["ssim"] == pytest.approx(1.0)
        assert row["id_gt"] == pytest.approx(1.0)
        assert row["frames"] == 8 and row["pairs"] == 7
        assert row["ewarp"] == pytest.approx(rows["clean"]["ewarp"])
    assert rows["clean"]["ewarp"] > 0  # the pattern moves: the flow does not explain all of it


def test_a_phone_clip_is_degraded_with_its_rotation_and_measured_as_shown(tmp_path, caplog):
    """A phone's portrait clip (stored sideways, tagged 90°): its degraded copy keeps the tag, and
    every picture is measured upright, so a detector of upright faces finds the measured face in
    every clean frame and the restorer restores the degraded copy's faces."""
    import synthetic_faces as sf

    from streamrestore.video.reader import probe

    pictures = [sf.scene(160, 224, [("ann", sf.face_matrix((80 + i, 112), 30, 90))], i)[0] for i in range(6)]
    clean, degraded = tmp_path / "clean.mp4", tmp_path / "deg.mp4"
    make_clip(clean, width=160, height=224, frames=6, rotation=90, picture=pictures.__getitem__,
              options={"qp": "0", "preset": "ultrafast"})
    degrade_video(clean, degraded, VideoDegradation(name="light", scale=1.0, blur=0.0, crf=12, final_crf=10))
    assert probe(degraded).rotation == 90
    faces = GroundTruthFaces(sf.UprightFaceDetector(), FaceJudge(PixelEmbedder()), padded_retry=False)
    restored = []

    def make(method, fps):
        restorer = FaceRestorer(IdentityRestorer(resolution=64), sf.UprightFaceDetector(), fps=fps)
        restored.append(restorer)
        return restorer

    rows = {r["method"]: r for r in evaluate_video(clean, degraded, make_face_restorer=make, faces=faces)}
    assert faces.missed == 0
    assert rows["clean"]["psnr"] == PSNR_CAP_DB and rows["clean"]["frames"] == 6
    assert rows["input"]["psnr"] < PSNR_CAP_DB and rows["input"]["id_gt"] is not None
    assert [r.stats.frames_with_faces for r in restored] == [6] * len(restored)
    # each restored row says how many of its faces the model changed: the gate left these (the identity
    # model changes nothing), which the log says; without the gate every face is the model's
    assert rows["input"]["faces_seen"] is None and rows["clean"]["faces_changed"] is None
    assert all((rows[m.name]["faces_changed"], rows[m.name]["faces_seen"]) == (0, 6) for m in DEFAULT_METHODS)
    assert "model_refs changed none of its 6 faces: the quality gate left them" in caplog.text

    def ungated(method, fps):
        return FaceRestorer(IdentityRestorer(resolution=64), sf.UprightFaceDetector(), fps=fps,
                            config=PipelineConfig(gate=QualityGateConfig(enabled=False)))

    rows = {r["method"]: r for r in evaluate_video(clean, degraded, make_face_restorer=ungated, faces=faces)}
    assert all(rows[m.name]["faces_changed"] == 6 for m in DEFAULT_METHODS)


def test_restorer_that_finds_no_face_gives_exactly_the_input_metrics(moving, tmp_path):
    degraded = tmp_path / "deg.mp4"
    degrade_video(moving, degraded, "default")
    rows = run(moving, degraded)
    for key in ROW_KEYS[1:]:
        assert rows["model_norefs"][key] == rows["input"][key], key
        assert rows["model_refs"][key] == rows["input"][key], key
        assert rows["clean_refs"][key] == rows["clean"][key], key
    assert rows["input"]["psnr"] < 40 and rows["input"]["id_gt"] < 1


def test_identity_restorer_through_the_pipeline_stays_close_to_the_input(moving, tmp_path):
    degraded = tmp_path / "deg.mp4"
    degrade_video(moving, degraded, "default")
    rows = run(moving, degraded, detector=FixedFaceDetector(True))
    assert rows["model_norefs"]["psnr"] == pytest.approx(rows["input"]["psnr"], abs=0.5)
    assert rows["model_norefs"]["id_gt"] == pytest.approx(rows["input"]["id_gt"], abs=0.05)
    assert rows["clean_refs"]["psnr"] > 30


def test_static_clip_has_no_flicker(tmp_path):
    still = tmp_path / "still.mp4"
    write_frames(still, [pattern(96, 64, 3)] * 6)
    rows = run(still, still, methods=(VideoMethod("model_norefs", refs=False),))
    assert list(rows) == ["input", "model_norefs", "clean"]
    for row in rows.values():
        assert row["ewarp"] == 0.0 and row["ewarp_face"] == 0.0 and row["ewarp_input"] == 0.0 and row["pairs"] == 5
        assert row["id_std"] == pytest.approx(0.0, abs=1e-9)


def test_input_flow_flicker_follows_a_degraded_copy_that_holds_and_jumps(tmp_path):
    """A compressed copy that holds the picture for two frames and then jumps to where the clean
    clip is (what an encoder does with slow motion at a small size): under the clean clip's flow
    each hold counts as flicker, under the copy's own flow (``ewarp_input``) it does not."""
    clean, held = tmp_path / "clean.mp4", tmp_path / "held.mp4"
    write_frames(clean, [pattern(96, 64, i) for i in range(9)])
    write_frames(held, [pattern(96, 64, 3 * (i // 3)) for i in range(9)])
    rows = run(clean, held)
    assert rows["input"]["ewarp"] > 0.0
    assert rows["input"]["ewarp_input"] < 0.5 * rows["input"]["ewarp"]
    assert rows["clean"]["ewarp_input"] == rows["clean"]["ewarp"]  # the clean clip is its own input
    assert rows["model_norefs"]["ewarp_input"] == rows["input"]["ewarp_input"]  # no face: the input itself


class _FlickeringRestorer(IdentityRestorer):
    """Brightens each face by a different amount per call: an output that is not its input."""

    def __init__(self):
        super().__init__(resolution=64)
        self.calls = 0

    def restore(self, faces, caches, noise_seeds=None):
        self.calls += 1
        return (faces * 0.8 + 0.1 + 0.03 * (self.calls % 3)).clamp(0, 1)


def test_input_flow_flicker_of_a_restored_row_is_its_frames_under_the_inputs_flow(tmp_path):
    """``ewarp_input`` of a row that changes the faces: its own saved frames measured with the flow
    of the saved input frames (as ``flicker.py INPUT OUTPUT`` does), not the input's value."""
    from streamrestore.eval.flicker_metric import e_warp_files
    from streamrestore.temporal import TemporalConfig

    clean, held, saved = tmp_path / "clean.mp4", tmp_path / "held.mp4", tmp_path / "saved"
    write_frames(clean, [pattern(96, 64, i) for i in range(9)])
    write_frames(held, [pattern(96, 64, 3 * (i // 3)) for i in range(9)])
    faces = ground_truth()

    def make(method, fps):
        # the gate off: the sharp test pattern would count as a clean face and keep its input
        return FaceRestorer(_FlickeringRestorer(), FixedFaceDetector(True), fps=fps,
                            config=PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False)))

    rows = {r["method"]: r for r in evaluate_video(clean, held, make_face_restorer=make, faces=faces,
                                                    methods=(VideoMethod("model_norefs", refs=False),),
                                                    save_dir=saved)}
    own, measured, pairs = e_warp_files(saved / "input.mkv", saved / "model_norefs.mkv")
    assert pairs == 8 and rows["model_norefs"]["ewarp_input"] == pytest.approx(measured, rel=1e-6)
    assert rows["input"]["ewarp_input"] == pytest.approx(own, rel=1e-6)
    assert measured > 1.2 * own  # the brightness steps in the face region show under the input's flow


@pytest.mark.parametrize("step", [0, 1, -2])
def test_a_degraded_copy_out_of_step_is_warned_of(tmp_path, caplog, step):
    """A degraded copy one frame off (cut without its first frame, or a frame too many) paired every frame
    with another moment and said nothing: its figures looked like a bad restorer's."""
    clean, copy = tmp_path / "clean.mp4", tmp_path / "copy.mp4"
    write_frames(clean, [pattern(96, 64, i) for i in range(2, 22)])
    # blurred, as a degraded copy is: the check must not need equal pictures
    write_frames(copy, [cv2.GaussianBlur(pattern(96, 64, i + step), (0, 0), 1.5) for i in range(2, 22)])
    with caplog.at_level(logging.WARNING):
        run(clean, copy, methods=())
    said = [r.getMessage() for r in caplog.records if "out of step" in r.getMessage()]
    if step == 0:
        assert said == []
    else:
        where = "its first frame is the clean clip's frame 1" if step == 1 else "the clean clip's first frame is its frame 2"
        assert len(said) == 1 and f"copy.mp4 looks {abs(step)} frame(s) out of step with clean.mp4 ({where}" in said[0]


def test_frames_without_a_face_are_counted_per_clip(moving, caplog):
    """One GroundTruthFaces over two clips (a library loop): the second clip's warning counted the first's
    frames too."""
    faces = GroundTruthFaces(FixedFaceDetector(False), FaceJudge(PixelEmbedder()), padded_retry=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            evaluate_video(moving, moving, make_face_restorer=restorer_factory(FixedFaceDetector(False)), faces=faces,
                           methods=())
    said = [r.getMessage() for r in caplog.records if "no face found" in r.getMessage()]
    assert len(said) == 2 and all("no face found in 8 measured clean frame(s)" in line for line in said)


def test_reference_flow_counts_a_changed_frame():
    from streamrestore.eval.flicker_metric import ReferenceFlow

    warp = ReferenceFlow()
    a = pattern(96, 64, 3)
    assert warp.next_pair(a) is False
    assert warp.next_pair(a) is True
    assert warp.error(a, a) == 0.0
    brighter = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert warp.error(a, brighter) > 0
    assert math.isnan(warp.error(a, a, region=(0, 0, 0, 0)))


def test_every_k_and_max_frames(moving):
    rows = run(moving, moving, max_frames=6, every=2)
    assert rows["input"]["frames"] == 3 and rows["input"]["pairs"] == 5


def test_save_writes_lossless_streams(moving, tmp_path):
    run(moving, moving, max_frames=4, save_dir=tmp_path / "saved")
    with av.open(str(tmp_path / "saved" / "clean.mkv")) as c:
        saved = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    from streamrestore.video.reader import VideoReader, frame_to_rgb

    with VideoReader(moving) as reader:
        original = [frame_to_rgb(f) for f in reader.frames()][:4]
    assert len(saved) == 4 and all((a == b).all() for a, b in zip(saved, original))


def test_table_shows_missing_values_as_dash():
    table = format_video_table([{"method": "input", "psnr": 20.0, "id_refs": None, "ewarp": float("nan")}])
    assert "| input | 20.00 |" in table and "–" in table


def test_cli_rejects_bad_video_options(tmp_path, capsys):
    assert cli_main(["eval", "--video", str(tmp_path / "missing.mp4")]) == 2
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3)
    assert cli_main(["eval", "--video", str(clip), "--degrade", "nosuch"]) == 2
    assert cli_main(["eval", "--data", str(tmp_path), "--max-frames", "3"]) == 2
    assert "unknown --degrade" in capsys.readouterr().err
    assert cli_main(["eval", "--data", str(tmp_path), "--temporal-memory", "4"]) == 2
    assert cli_main(["eval", "--data", str(tmp_path), "--no-temporal"]) == 2
    assert "is a --video option" in capsys.readouterr().err
    assert cli_main(["eval", "--video", str(clip), "--temporal-denoise-fine", "2"]) == 2
    assert "--temporal-denoise-fine" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    for argv in (["--video", str(notes)], ["--video", str(clip), "--degraded", str(notes)]):
        # said before any model is looked for (no --models here: the models are not found either)
        assert cli_main(["eval", *argv]) == 2
        assert f"cannot read {notes} as a video" in capsys.readouterr().err
    other = tmp_path / "other.mp4"
    make_clip(other, frames=3, width=80, height=64)
    assert cli_main(["eval", "--video", str(clip), "--degraded", str(other)]) == 2  # another clip's size
    assert "is 80x64 and the clean clip 96x64" in capsys.readouterr().err
    for option, value in (("--preset", "mild"), ("--limit", "2"), ("--split", "val"), ("--seed", "3"),
                          ("--out", "x"), ("--split-seed", "1"), ("--val-fraction", "0.3")):  # --data's, not ignored
        assert cli_main(["eval", "--video", str(clip), option, value]) == 2
        assert f"{option} is a --data option" in capsys.readouterr().err
    assert cli_main(["eval", "--video", str(clip), "--no-dlib", "--seed", "3"]) == 2
    assert "--seed, --no-dlib are --data options" in capsys.readouterr().err
    # --video's, which --data ignored silently; --backend and the model's options serve both
    for argv in (["--every", "2"], ["--detector", "dlib"], ["--temporal-frame-strength", "0.5"],
                 ["--temporal-frame-tolerance", "3"], ["--refs", str(tmp_path)], ["--no-quality-gate"],
                 ["--identity-tolerance", "0.1"]):
        assert cli_main(["eval", "--data", str(tmp_path), *argv]) == 2
        assert f"{argv[0]} is a --video option; it needs --video CLEAN.mp4" in capsys.readouterr().err
    assert cli_main(["eval", "--data", str(tmp_path), "--every", "2", "--no-temporal"]) == 2
    assert "--every, --no-temporal are --video options; they need --video CLEAN.mp4" in capsys.readouterr().err


# --- a real clip through the CLI (shared folder) --------------------------------------------


@pytest.fixture(scope="module")
def real_run(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_eval")
    clip = shared / "data/styletalk/source_video/Obama_clip1.mp4"
    refs = shared / "data/face_recognition/knn_train/obama"
    argv = ["eval", "--video", str(clip), "--refs", str(refs), "--model", "identity", "--max-frames", "6",
            "--models", str(shared / "models"), "--json", str(out / "t.json"), "--torch-threads", "1",
            "--progress", "lines"]
    import contextlib
    import io

    import streamrestore.run as run_module

    said = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(said):
        patch.setattr(run_module, "PROGRESS_INTERVAL", 0.0)
        assert cli_main(argv) == 0
    return {**json.loads((out / "t.json").read_text()), "stderr": said.getvalue()}


def test_cli_says_its_progress(real_run):
    """Minutes of restoring every row's frames said nothing: a class thought it hung."""
    assert "progress: 1/6 frames" in real_run["stderr"] and "progress: 6/6 frames (100%)" in real_run["stderr"]


def test_cli_json_rows_on_a_real_clip(real_run):
    rows = {r["method"]: r for r in real_run["rows"]}
    assert list(rows) == ["input", "model_norefs", "model_refs", "clean", "clean_refs"]
    for name, row in rows.items():
        assert set(ROW_KEYS) <= set(row), name
        assert row["frames"] == 6 and row["pairs"] == 5
        for key in ("psnr", "ssim", "id_gt", "id_refs", "ewarp"):
            assert row[key] is not None and math.isfinite(row[key]), (name, key)
    assert rows["clean"]["psnr"] == PSNR_CAP_DB and rows["clean"]["id_gt"] == pytest.approx(1.0)
    assert rows["clean"]["id_refs"] > 0.7  # the same person as the photos
    assert 20 < rows["input"]["psnr"] < 40 and rows["input"]["id_gt"] < 0.9
    # the identity model changes (nearly) nothing: the pipeline's crop, paste and smoothing only
    for name in ("model_norefs", "model_refs"):
        assert rows[name]["psnr"] == pytest.approx(rows["input"]["psnr"], abs=0.2)
        # (the temporal denoise steadies the blocks of 6 frames: +0.031 on the copy degraded as since session 51)
        assert rows[name]["id_gt"] == pytest.approx(rows["input"]["id_gt"], abs=0.04)
    assert rows["clean_refs"]["psnr"] > 40 and rows["clean_refs"]["id_gt"] > 0.99
    assert real_run["degrade"] == "default" and real_run["max_frames"] == 6
    # what a reader needs to make the table again
    from streamrestore import __version__

    assert real_run["version"] == __version__ and real_run["model_sha256"] is None  # (identity: no file)
    assert real_run["degradation"]["crf"] == 32 and real_run["degraded_past"] == 250
    assert real_run["pipeline"]["temporal"]["strength"] == 0.8 and real_run["pipeline"]["gate"]["enabled"] is True
    assert real_run["backend"] == "auto" and real_run["adapt"] is None and real_run["torch_threads"] == 1


def test_cli_takes_the_temporal_options(shared, tmp_path):
    """``--no-temporal`` reaches the pipeline: the identity restorer without references changes no
    pixel of the degraded frames (the paste adds its change, none), so without the fusion, whose
    input average steadies the degraded face, its row is the input's. (Not to the last digit: the
    output frames are turned into RGB by swscale a level or so differently from the decoded ones.)"""
    clip = shared / "data/styletalk/source_video/Obama_clip1.mp4"
    rows = {}
    for extra in ([], ["--no-temporal"]):
        table = tmp_path / f"t{len(extra)}.json"
        argv = ["eval", "--video", str(clip), "--model", "identity", "--max-frames", "8", *extra,
                "--models", str(shared / "models"), "--json", str(table)]
        assert cli_main(argv) == 0
        rows[bool(extra)] = {r["method"]: r for r in json.loads(table.read_text())["rows"]}
    off, on = rows[True], rows[False]
    assert off["input"] == on["input"]
    assert abs(off["model_norefs"]["psnr"] - off["input"]["psnr"]) < 0.02
    assert abs(off["model_norefs"]["ewarp"] / off["input"]["ewarp"] - 1) < 0.01
    assert on["model_norefs"]["ewarp"] < 0.97 * on["input"]["ewarp"]  # the input average at work


def test_the_json_names_the_model_file_and_its_hash(tmp_path):
    import hashlib

    from streamrestore.model.registry import LITE_WEIGHTS, model_provenance

    lite = model_provenance("lite")
    assert lite == {"model_file": str(LITE_WEIGHTS), "model_sha256": hashlib.sha256(LITE_WEIGHTS.read_bytes()).hexdigest()}
    own = tmp_path / "mine.safetensors"
    own.write_bytes(b"weights")
    assert model_provenance(str(own))["model_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert model_provenance("instantrestore") == {"model_file": None, "model_sha256": None}
