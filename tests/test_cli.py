"""The command line on bad input: one clear line, exit code 2, nothing written; Ctrl-C → 130."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from media_utils import make_audio_only, make_clip

from streamrestore import __version__
from streamrestore.cli import main

REPO = Path(__file__).resolve().parents[1]
# the program with the drawn-face detector and embedder (tests/synthetic_faces.py), for subprocesses
SYNTHETIC_CLI = [sys.executable, str(REPO / "tests" / "synthetic_cli.py")]


def _runner(capsys, face_args):
    def _run(*args, model="identity"):
        argv = [str(a) for a in args] + ["--model", model, *face_args, "--no-progress"]
        code = main(argv)
        out = capsys.readouterr()
        return code, out.err

    return _run


@pytest.fixture
def run(synthetic_faces, capsys):
    """Runs the CLI in-process with the identity model and the drawn-face detector."""
    return _runner(capsys, [])


@pytest.fixture
def run_scrfd(shared_models, capsys):
    """Runs the CLI in-process with the identity model and the shared SCRFD pack."""
    return _runner(capsys, ["--face-models", str(shared_models / "insightface")])


@pytest.fixture(scope="module")
def long_face_clip(tmp_path_factory):
    """300 frames (12 s) of a drawn face on a grainy backdrop (a few KB a frame once encoded): a
    run long enough to stop half way, with a temp file that grows as it goes."""
    from media_utils import make_face_clip

    path = tmp_path_factory.mktemp("long") / "long.mp4"
    make_face_clip(path, frames=300, grain=True, options={"preset": "ultrafast", "crf": "18"})
    return path


def _slow_synthetic_env(**extra):
    """A subprocess environment in which each drawn-face detection takes 0.1 s (300 frames,
    detected every 3rd: ~10 s of frame loop, however fast the machine)."""
    return dict(os.environ, SYNTHETIC_DETECT_SECONDS="0.1", **extra)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("streamrestore: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    make_clip(path, width=96, height=64, frames=6)
    return path


@pytest.mark.parametrize("module", ["streamrestore", "streamrestore.cli"])
def test_version(module):
    """``python -m streamrestore`` runs the program too (its script may not be on PATH)."""
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_version_names_a_checkouts_commit():
    """--version said "0.1.0" for every one of 821 commits (support F3): a checkout adds its git commit."""
    from streamrestore.environment import git_commit, version_text

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        assert version_text() == __version__
        return
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit() in (head, f"{head}, modified")
    assert version_text() == f"{__version__} (git {git_commit()})"


def test_doctor_prints_what_a_bug_report_needs(capsys, shared_models):
    """One "attach this" report (support F3): the build, the libraries, the cache, the model files with their
    sha256, as text and as JSON."""
    from streamrestore.output_file import sha256_of

    pack = shared_models / "insightface"
    assert main(["doctor", "--face-models", str(pack), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["streamrestore"].startswith(__version__) and record["libraries"]["av"]
    assert record["model"]["lite"]["model_sha256"] == sha256_of(record["model"]["lite"]["model_file"])
    files = record["face_models"]["files"]
    assert any(name.startswith("det_") for name in files)
    assert all(digest == sha256_of(Path(record["face_models"]["pack"]) / name) for name, digest in files.items())
    assert main(["doctor", "--face-models", str(pack / "nothere")]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"streamrestore {__version__}") and "face models: --face-models" in out.out

    # the variables that change a run, by name: a prefix took Ray's cluster token into the report (review 52)
    from streamrestore.environment import environment_record

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_TOKEN", "s3cr3t")
        patch.setenv("STREAMRESTORE_SOME_TOKEN", "hf_abc")
        patch.setenv("OMP_NUM_THREADS", "3")
        variables = environment_record()["variables"]
    assert variables.get("OMP_NUM_THREADS") == "3" and "s3cr3t" not in str(variables) and "hf_abc" not in str(variables)
    assert "no such file or folder" in out.out and "attach this" in out.err


def test_missing_file(run, tmp_path):
    code, err = run(tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4")
    assert code == 2 and "nope.mp4" in _one_error_line(err)
    assert not (tmp_path / "o.mp4").exists()


def test_a_mistyped_command_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for given, command in (("evaluate", "eval"), ("bach", "batch"), ("help", None)):
        assert main([given]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"input not found: {given} (a command? see `streamrestore {command + ' ' if command else ''}--help`)" \
            in line
    (tmp_path / "evaluate").write_text("a file of that name is an input")
    assert main(["evaluate"]) == 2
    assert "a command?" not in capsys.readouterr().err
    assert main(["nothing_like_a_command"]) == 2
    assert "a command?" not in capsys.readouterr().err


def test_a_url_or_a_folder_as_input_names_the_command_that_takes_it(capsys, tmp_path):
    assert main(["https://example.com/talk.mp4"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "streamrestore: error: https://example.com/talk.mp4 is a URL: this command restores files (download it "
        "first); `streamrestore live --source https://example.com/talk.mp4` plays it restored")
    assert main([str(tmp_path)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"streamrestore: error: input is a folder: {tmp_path}; `streamrestore batch {tmp_path} -o OUTDIR` restores "
        "every video and photo in it")


def test_no_deinterlace_writes_the_woven_fields(run, tmp_path):
    from media_utils import make_interlaced_clip

    src = tmp_path / "camcorder.mp4"
    make_interlaced_clip(src, frames=4)
    code, err = run(src, "-o", tmp_path / "o.mp4")
    assert code == 0 and "each frame was deinterlaced" in err, err
    code, err = run(src, "-o", tmp_path / "woven.mp4", "--no-deinterlace")
    assert code == 0 and "the output keeps its two fields woven in each frame, coded and tagged interlaced" in err, err
    code, err = run(src, "-o", tmp_path / "fields.mp4", "--field-rate")  # (50i gave 25p: half its instants lost)
    assert code == 0 and "each field was made a frame" in err, err
    from streamrestore.video.reader import probe

    assert probe(tmp_path / "fields.mp4").frame_rate == 50
    code, err = run(src, "-o", tmp_path / "both.mp4", "--field-rate", "--no-deinterlace")
    assert code == 2 and "--field-rate and --no-deinterlace: choose one" in err


def test_a_video_of_the_person_serves_as_references(run, tmp_path):
    from media_utils import make_face_clip

    talk, other = tmp_path / "talk.mp4", tmp_path / "holiday.mov"
    make_face_clip(talk, frames=6)
    make_face_clip(other, frames=12)
    code, err = run(talk, "--refs", other, "-o", tmp_path / "o.mp4")
    assert code == 0, err
    assert "references: holiday (every face)" in err and "  track 1: holiday, frames 0-5" in err


def test_several_inputs_point_to_batch(capsys, tmp_path):
    """`streamrestore *.jpg`: the shell gives several inputs; the command names the one that takes them."""
    assert main(["a.jpg", "b.jpg", "--refs", "x", "c.png", "d.png"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "streamrestore: error: 4 inputs given; this command restores one: `streamrestore batch a.jpg b.jpg c.png "
        "... -o OUTDIR` restores several")


def test_an_input_named_like_an_option_is_given_after_a_double_dash(synthetic_faces, tmp_path, capsys, monkeypatch):
    """``streamrestore -o out.mp4 -- -take1.mp4``: after "--" a name is the input, as with any tool
    (argparse's intermixed parsing refused it, naming an argument the user never saw)."""
    src = tmp_path / "-take1.mp4"
    make_clip(src, width=96, height=64, frames=3)
    code = main(["--model", "identity", "--no-progress", "-o", str(tmp_path / "out.mp4"), "--", str(src)])
    assert code == 0, capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # a relative name, the usual case
    code = main(["--model", "identity", "--no-progress", "--", "-take1.mp4"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "-take1.restored.mp4").is_file()
    # options still go anywhere before "--", and a second input after it is said as before
    make_clip(tmp_path / "take2.mp4", width=96, height=64, frames=3)
    assert main(["take2.mp4", "--model", "identity", "--no-progress", "-o", "o.mp4", "--"]) == 0
    assert main(["take2.mp4", "-o", "o2.mp4", "--", "b.mp4"]) == 2
    assert "2 inputs given" in capsys.readouterr().err
    # the hints: the name alone, said required; an option after "--", offered as the file "./--refs"
    with pytest.raises(SystemExit):
        main(["-take1.mp4", "--model", "identity"])
    assert ("required: input (-take1.mp4 is read as an option: give it as ./-take1.mp4, or after the options and --"
            in capsys.readouterr().err)
    assert main(["--", "-take1.mp4", "--refs", "refs"]) == 2
    assert "--refs comes after --, where everything is an input file; put the options before --" in \
        capsys.readouterr().err
    from streamrestore.batch import count_frames

    assert count_frames(tmp_path / "out.mp4") == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == "streamrestore: error: the following arguments are required: input"


def test_not_a_video(run, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    code, err = run(text, "-o", tmp_path / "o.mp4")
    assert code == 2
    _one_error_line(err)
    assert not (tmp_path / "o.mp4").exists()


def test_audio_only(run, tmp_path):
    audio = tmp_path / "song.m4a"
    make_audio_only(audio)
    code, err = run(audio, "-o", tmp_path / "o.mp4")
    assert code == 2 and "video" in _one_error_line(err).lower()


def test_zero_length(run, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    code, err = run(empty, "-o", tmp_path / "o.mp4")
    assert code == 2
    _one_error_line(err)


def test_truncated_file_restores_what_decodes(run, tmp_path):
    full = tmp_path / "full.mkv"
    make_clip(full, width=96, height=64, frames=60, codec="libx264")
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.mkv"
    code, err = run(cut, "-o", out)
    assert code == 0, err
    assert out.exists()
    assert err.count("input is truncated") == 1, err  # said once, in the summary


def test_video_without_faces_says_so(run, clip, tmp_path):
    code, err = run(clip, "-o", tmp_path / "o.mp4")
    assert code == 0 and "no faces" in err
    assert (tmp_path / "o.mp4").exists()


def test_empty_refs_folder(run, clip, tmp_path):
    empty = tmp_path / "empty_refs"
    empty.mkdir()
    code, err = run(clip, "--refs", empty, "-o", tmp_path / "o.mp4")
    assert code == 2 and "empty_refs" in _one_error_line(err)
    assert not (tmp_path / "o.mp4").exists()


def test_refs_with_non_images_are_skipped(run, clip, synthetic_refs, tmp_path):
    refs = synthetic_refs
    (refs / "readme.txt").write_text("not a photo")
    code, err = run(clip, "--refs", refs, "-o", tmp_path / "o.mp4")
    assert code == 0, err
    assert "readme.txt" in err  # the warning names the skipped file


def test_refs_without_face(run, clip, tmp_path):
    import cv2
    import numpy as np

    folder = tmp_path / "refs"
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    code, err = run(clip, "--refs", folder, "-o", tmp_path / "o.mp4")
    assert code == 2 and "wall.png" in _one_error_line(err)  # no usable photo left: stop


def test_one_ref_without_face_is_skipped(run, clip, synthetic_refs, tmp_path):
    import cv2
    import numpy as np

    refs = synthetic_refs
    cv2.imwrite(str(refs / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    code, err = run(clip, "--refs", refs, "-o", tmp_path / "o.mp4")
    assert code == 0, err
    assert any("wall.png" in line and line.startswith("warning: ") for line in err.splitlines()), err
    assert (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_summary_names_each_tracks_identity_and_verbose_adds_similarities(request, tmp_path, media):
    """Two people as a 6-frame video, two reference sets: drawn (Ann left, Ben right, the drawn-face
    detector) or two_people.jpg (Obama left, Biden right, the shared SCRFD pack)."""
    import av
    import cv2
    import numpy as np

    if media == "synthetic":
        import synthetic_faces as sf

        run = request.getfixturevalue("run")
        image = sf.two_people(640, 360)[0]
        names = {name: sf.write_portraits(tmp_path / name, name) for name in ("ann", "ben")}
    else:
        run = request.getfixturevalue("run_scrfd")
        root = request.getfixturevalue("shared_data") / "face_recognition"
        image = cv2.imread(str(root / "two_people.jpg"))[:660, :1126, ::-1]
        names = {name: root / "knn_train" / name for name in ("obama", "biden")}
    src = tmp_path / "two.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "10"})
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for i in range(6):
            shift = np.float32([[1, 0, 2 * i], [0, 1, -i]])
            frame = cv2.warpAffine(np.ascontiguousarray(image), shift, image.shape[1::-1],
                                   borderMode=cv2.BORDER_REPLICATE)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    refs = [arg for name, folder in names.items() for arg in ("--refs", f"{name}={folder}")]
    code, err = run(src, *refs, "-o", tmp_path / "o.mp4", "-v", "--json", tmp_path / "run.json")
    assert code == 0, err
    assert f"2 tracks, identities matched: {', '.join(sorted(names))}" in err
    # the same figures for a program to read (--json)
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["output"], record["frames"], record["faces"], record["references"]) == (
        str(tmp_path / "o.mp4"), 6, 12, list(names))
    assert record["faces_restored"] + record["faces_left_clean"] + record["faces_left_dim"] == 12
    assert sorted(track["identity"] for track in record["tracks"]) == sorted(names)
    assert all(track["faces"] == 6 and set(track["similarity"]) == set(names) for track in record["tracks"])
    assert len({track["place"] for track in record["tracks"]}) == 2
    # how it was made, for a record that must show it: the tool, the model, every setting, the reference files
    # and the input and output, with their sha256, and when (it said none of these)
    from streamrestore import __version__
    from streamrestore.output_file import sha256_of

    assert record["version"] == __version__ and record["model"] == "identity" and record["model_sha256"] is None
    assert record["input_sha256"] == sha256_of(src) and record["output_sha256"] == sha256_of(tmp_path / "o.mp4")
    assert record["settings"]["pipeline"]["detect_every"] == 3 and record["settings"]["encoder"]["crf"] is None
    assert record["settings"]["adapt"] is None and record["started"] <= record["finished"]
    encoded = record["settings"]["encoded_with"]  # (as resolved for this input: the defaults named)
    assert encoded["codec"] == "libx264" and encoded["crf"] == "16" and encoded["preset"] == "veryfast", encoded
    assert [(r["name"], r["path"], r["files"]) for r in record["reference_files"]] == [
        (name, str(Path(folder).resolve()), {p.name: sha256_of(p) for p in sorted(Path(folder).iterdir())})
        for name, folder in names.items()]
    # what ran for the faces, the command and the environment (support F4, F3: the folder as typed alone)
    ran = record["faces_ran"]
    assert set(ran) == {"detector", "detector_file", "detector_sha256", "embedder", "embedder_file",
                        "embedder_sha256", "identity_gate"} and isinstance(ran["identity_gate"], bool)
    assert ran["detector"] and ran["embedder"]
    assert record["command"][0] == "streamrestore" and "--json" in record["command"]
    environment = record["environment"]
    assert environment["streamrestore"].startswith(__version__) and environment["libraries"]["torch"]
    assert environment["ffmpeg"]["encoders"]["libx264"] is True
    track_lines = [line for line in err.splitlines() if line.startswith("  track ")]
    assert len(track_lines) == 2, err
    for name in names:
        (line,) = [line for line in track_lines if f": {name}, " in line]
        assert "frames 0-5, 6 faces, at the " in line, line
        # (the photos' fit where some face was changed; a track the quality gate left as it was says that)
        changed = [track["faces_changed"] for track in record["tracks"] if track["identity"] == name][0]
        assert ("; reference detail fit " in line) == (changed > 0), line
        assert ("; left as they were by the quality gate" in line) == (changed == 0), line
        assert "; similarity " + name in line, line
    # the two people side by side: each line says where its face was
    assert len({re.search(r", (at the [a-z ]+|in the middle);", line).group(1) for line in track_lines}) == 2
    assert "unmatched faces: 0 (similarity below" in err and "skipped faces: 0" in err


def test_the_record_names_the_backend_and_device_that_ran(run, clip, tmp_path):
    """--json said "backend": "auto", "device": "auto" (what was asked) where the run had logged onnxruntime on
    the CPU: a record of how an output was made names what ran, and what was asked beside it."""
    try:
        import onnxruntime  # noqa: F401
        auto = "onnxruntime"
    except ImportError:  # pragma: no cover - the dev extra has it
        auto = "eager"
    for asked, ran in (("auto", auto), ("eager", "eager")):
        code, err = run(clip, "-o", tmp_path / f"{asked}.mp4", "--backend", asked, "--json", tmp_path / f"{asked}.json",
                        model="lite")
        assert code == 0, err
        record = json.loads((tmp_path / f"{asked}.json").read_text())
        assert (record["backend"], record["device"]) == (ran, "cpu"), record
        assert record["asked"] == {"device": "auto", "backend": asked}


def test_unmatched_skip_without_references_is_refused(run, clip, tmp_path):
    """``--unmatched skip`` asks that only the faces of the people given be restored; without ``--refs`` it
    restored every face (everyone's: those who did not consent too) with a warning and exit 0."""
    from streamrestore import batch
    from streamrestore.errors import ReferencesError, UserError
    from streamrestore.pipeline import FaceRestorer, PipelineConfig

    code, err = run(clip, "-o", tmp_path / "o.mp4", "--unmatched", "skip")
    assert code == 2 and "--unmatched skip restores only the faces that match" in _one_error_line(err)
    assert not (tmp_path / "o.mp4").exists()
    with pytest.raises(ReferencesError, match="none were given"):
        FaceRestorer.from_options(None, config=PipelineConfig(unmatched="skip"), model="identity")
    with pytest.raises(UserError, match="none were given"):
        batch.run([clip], out_dir=tmp_path / "out", unmatched="skip", model="identity")
    assert not (tmp_path / "out").exists()


def test_a_mistake_in_the_options_is_said_first_and_a_decimal_comma_named(capsys):
    """The usage block (20-50 lines at 40 columns) came before the one line that mattered, which a screen reader
    reaches last; a German user's ``--strength 0,5`` got no hint, and ``--start 1_5`` was read as 15 s."""
    for argv, said in ((["clip.mp4", "--strength", "0,5"],
                        "streamrestore: error: argument --strength: not a number: '0,5' (decimals take a point: 0.5)"),
                       (["clip.mp4", "--strength", "1_5"],  # Python's float read 15
                        "streamrestore: error: argument --strength: not a number: '1_5' (digits, with a point for "
                        "decimals)"),
                       (["clip.mp4", "--start", "1_5"],
                        "streamrestore: error: argument --start: not a time: '1_5' (use seconds or HH:MM:SS)"),
                       (["clip.mp4", "--end", "1:30,5"],
                        "streamrestore: error: argument --end: not a time: '1:30,5' (use seconds or HH:MM:SS)"),
                       (["clip.mp4", "--start", "1,5"],
                        "streamrestore: error: argument --start: not a time: '1,5' (decimals take a point: 1.5)"),
                       (["batch", "x", "-o", "y", "--chunk-seconds", "nan"],
                        "streamrestore batch: error: argument --chunk-seconds: not a number: 'nan' (digits, with a "
                        "point for decimals)"),
                       (["batch", "x", "-o", "y", "--workers", "two"],
                        "streamrestore batch: error: argument --workers: not a whole number: 'two' (digits only, "
                        "without separators)"),
                       (["batch", "x", "-o", "y", "--workers", "1,000"],
                        "streamrestore batch: error: argument --workers: not a whole number: '1,000' (digits only, "
                        "without separators)"),
                       (["batch", "x", "-o", "y", "--workers", "1_5"],  # (Python's int read 15)
                        "streamrestore batch: error: argument --workers: not a whole number: '1_5' (digits only, "
                        "without separators)"),
                       (["clip.mp4", "--strength", "1e400"],  # (float: inf)
                        "streamrestore: error: argument --strength: not a number: '1e400' (digits, with a point for "
                        "decimals)"),
                       (["cache", "--clear"], "streamrestore cache: error: argument --clear: expected one argument"),
                       # a typo names the option meant; an unknown option alone is the mistake, not a missing input
                       (["clip.mp4", "--detect-sise", "1280"],
                        "streamrestore: error: unrecognized arguments: --detect-sise 1280 (--detect-sise: did you "
                        "mean --detect-size?)"),
                       (["batch", "x", "-o", "y", "--unmached", "skip"],
                        "streamrestore batch: error: unrecognized arguments: --unmached skip (--unmached: did you "
                        "mean --unmatched?)"),
                       (["--bogus"], "streamrestore: error: unrecognized arguments: --bogus"),
                       (["card", "--recursive"], "streamrestore: error: unrecognized arguments: --recursive (--recursive "
                        "is streamrestore batch's, which restores many files: streamrestore batch INPUT... -o OUTDIR "
                        "--recursive)"),
                       ([], "streamrestore: error: the following arguments are required: input")):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == said and lines[1:] == [f"(the options: {said.partition(': error')[0]} --help)"], lines


def test_progress_lines_on_a_terminal(synthetic_faces, clip, tmp_path, capsys, monkeypatch):
    """``--progress lines`` gives the plain lines on a terminal too: a screen reader read a redrawn bar ten
    times a second (only ``TERM=dumb`` gave the lines, and the library's ``progress="lines"`` had no option)."""
    import streamrestore.run as run_module

    monkeypatch.setattr(run_module, "_terminal_draws_a_bar", lambda: True)  # (standard error a terminal)
    monkeypatch.setattr(run_module, "PROGRESS_INTERVAL", 0.0)
    said = {}
    for mode in ("lines", "auto", "none"):
        assert main([str(clip), "-o", str(tmp_path / f"{mode}.mp4"), "--model", "identity", "--progress", mode]) == 0
        said[mode] = capsys.readouterr().err
    assert "progress: 1/6 frames" in said["lines"] and "frame/s" not in said["lines"]
    assert "frame/s" in said["auto"] and "progress: " not in said["auto"]  # (tqdm's bar)
    assert "progress: " not in said["none"] and "frame/s" not in said["none"]


def test_the_default_output_is_not_written_into_a_read_only_folder(synthetic_faces, tmp_path, capsys):
    """A class's shared data folder, marked read-only (r-x for all): as root (many containers) the default output
    was written into it all the same, beside the data. It is refused, naming -o; -o elsewhere works."""
    import os

    shared = tmp_path / "shared"
    shared.mkdir()
    src = shared / "talk.mp4"
    make_clip(src, width=96, height=64, frames=3)
    os.chmod(shared, 0o555)
    try:
        assert main([str(src), "--model", "identity", "--no-progress"]) == 2
        assert (f"error: the input's folder {shared} is read-only (no one may write there), where the output would "
                "go by default; name it with -o") in capsys.readouterr().err
        assert sorted(p.name for p in shared.iterdir()) == ["talk.mp4"]
        assert main([str(src), "-o", str(tmp_path / "o.mp4"), "--model", "identity", "--no-progress"]) == 0
    finally:
        os.chmod(shared, 0o755)


def test_unwritable_output_folder(run, clip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, err = run(clip, "-o", blocker / "out.mp4")
    assert code == 2
    _one_error_line(err)


def test_existing_output_needs_force(run, clip, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    code, err = run(clip, "-o", out)
    assert code == 2 and "--force" in _one_error_line(err)
    assert out.read_bytes() == b"precious"
    code, err = run(clip, "-o", out, "--force")
    assert code == 0 and out.read_bytes() != b"precious"


def test_a_folder_as_the_output_gets_the_default_name_inside(run, clip, tmp_path):
    """``-o outdir`` was refused ("is a folder; give a file name"); ``cp`` and ``mv`` write into it. A
    missing folder written with its slash was "cannot write extension-less files"."""
    (tmp_path / "outdir").mkdir()
    code, err = run(clip, "-o", tmp_path / "outdir")
    assert code == 0, err
    assert (tmp_path / "outdir" / "clip.restored.mp4").is_file()
    assert f"wrote {tmp_path / 'outdir' / 'clip.restored.mp4'}" in err
    code, err = run(clip, "-o", f"{tmp_path / 'missing'}/")
    assert code == 2 and f"output folder {tmp_path / 'missing'}/ does not exist; create it first" in _one_error_line(err)


def test_json_to_standard_output_is_the_programs_only_output(run, clip, tmp_path, capsys):
    """``--json -``: the run's figures on standard output, alone (messages stay on standard error),
    so ``streamrestore IN --json - | jq`` works; a --json path that cannot be written fails first."""
    code = main([str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "identity", "--no-progress", "--json", "-"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert record["frames"] == 6 and record["tracks"] == [] and record["input"] == str(clip)
    assert "wrote " in err
    code, err = run(clip, "-o", tmp_path / "p.mp4", "--json", tmp_path)
    assert code == 2 and "--json" in _one_error_line(err) and not (tmp_path / "p.mp4").exists()
    # the input, the output or an existing file as --json: refused before any work (a slip replaced the video)
    before = clip.read_bytes()
    for given, said in ((clip, "is the input file"), (tmp_path / "q.mp4", "is the output file"),
                        (tmp_path / "o.mp4", "already exists; replace it with --force")):
        code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", given)
        assert code == 2 and said in _one_error_line(err), err
    assert clip.read_bytes() == before and not (tmp_path / "q.mp4").exists()
    fifo = tmp_path / "figures.json"
    os.mkfifo(fifo)  # (with --force it became a regular file, its reader never served)
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", fifo, "--force")
    assert code == 2 and "is not a regular file" in _one_error_line(err)
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", loop)
    assert code == 2 and "--json" in _one_error_line(err)
    # -o's rules: a link to nothing needs --force (a planted one wrote the figures where it pointed), a missing
    # folder is refused (a typo made a folder tree)
    planted = tmp_path / "planted.json"
    planted.symlink_to(tmp_path / "elsewhere.json")
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", planted)
    assert code == 2 and "is a symbolic link to" in _one_error_line(err) and not (tmp_path / "q.mp4").exists()
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", tmp_path / "typo" / "run.json")
    assert code == 2 and "--json folder" in _one_error_line(err) and not (tmp_path / "typo").exists()
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", planted, "--force")
    assert code == 0 and json.loads((tmp_path / "elsewhere.json").read_text())["frames"] == 6
    (tmp_path / "q.mp4").unlink()
    into_nothing = tmp_path / "into-nothing.json"
    into_nothing.symlink_to(tmp_path / "gone" / "x.json")  # (its own folder exists: the one it points into not)
    code, err = run(clip, "-o", tmp_path / "q.mp4", "--json", into_nothing, "--force")
    assert code == 2 and f"--json folder {tmp_path / 'gone'} does not exist" in _one_error_line(err)


def test_a_failed_run_still_writes_its_json_record_which_a_rerun_replaces(run, clip, tmp_path, monkeypatch, capsys):
    """A scheduler's monitor reads --json: a run that failed wrote nothing (or the monitor read the last run's).
    Now a run that fails once its options are accepted writes the error and the exit code it ends with, to a
    file or to standard output; its rerun replaces that record without --force (a record of figures still
    needs it)."""
    import streamrestore.api

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    record_path = tmp_path / "run.json"
    code, err = run(broken, "-o", tmp_path / "o.mp4", "--json", record_path)
    record = json.loads(record_path.read_text())
    assert code == 2 and record["failed"] is True and record["exit_code"] == 2
    assert record["error"] in _one_error_line(err) and "cannot read" in record["error"]
    assert record["input"] == str(broken) and record["command"][0] == "streamrestore" and record["finished"]
    assert not (tmp_path / "o.mp4").exists()

    code, err = run(clip, "-o", tmp_path / "o.mp4", "--json", record_path)  # the rerun: no --force needed
    assert code == 0, err
    assert "failed" not in json.loads(record_path.read_text()) and json.loads(record_path.read_text())["frames"] == 6
    code, err = run(clip, "-o", tmp_path / "o2.mp4", "--json", record_path)  # a record of figures: kept
    assert code == 2 and "already exists; replace it with --force" in _one_error_line(err)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("could not allocate 3 GB")

    monkeypatch.setattr(streamrestore.api, "restore_video", out_of_memory)
    code = main([str(clip), "-o", str(tmp_path / "o3.mp4"), "--model", "identity", "--no-progress", "--json", "-"])
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert code == 1 and "out of memory" in err
    assert record["exit_code"] == 1 and record["error"] == "out of memory: MemoryError: could not allocate 3 GB"
    # a stop signal that surfaced as another error: the record says what the command ends with (review 53)
    import signal

    from streamrestore.cli.options import log
    from streamrestore.cli.restore import main as restore_main
    from streamrestore.errors import InputError, UserError
    from streamrestore.stop_signals import StopState

    # (the command's own main configures the package's logger, which app.main puts back: so here)
    for name in ("handlers", "level", "propagate"):
        monkeypatch.setattr(log, name, list(log.handlers) if name == "handlers" else getattr(log, name))

    stop = StopState()
    stop.signum = signal.SIGTERM
    with pytest.raises(MemoryError):
        restore_main([str(clip), "-o", str(tmp_path / "o4.mp4"), "--model", "identity", "--no-progress", "--json",
                      str(tmp_path / "stopped.json")], stop=stop)
    record = json.loads((tmp_path / "stopped.json").read_text())
    assert (record["exit_code"], record["error"]) == (143, "interrupted by SIGTERM")
    def unreadable(*args, **kwargs):
        raise InputError("cannot read it")

    monkeypatch.setattr(streamrestore.api, "restore_video", unreadable)
    with pytest.raises(UserError):  # (a UserError ends the command with its own code, signal or not: so the record)
        restore_main([str(clip), "-o", str(tmp_path / "o5.mp4"), "--model", "identity", "--no-progress", "--json",
                      str(tmp_path / "stopped2.json")], stop=stop)
    assert json.loads((tmp_path / "stopped2.json").read_text())["exit_code"] == 2


def test_a_reader_that_leaves_early_does_not_fail_a_finished_run(run, clip, tmp_path, monkeypatch):
    """``streamrestore ... 2>&1 | head -1``: the summary printed after the output was written raised
    BrokenPipeError, and a finished run exited 1. What is said after the reader left is dropped."""
    class LeftReader:
        said = 0

        def write(self, text):
            self.said += 1
            if self.said > 1:  # the first line reached the reader; then it left
                raise BrokenPipeError(32, "Broken pipe")
            return len(text)

        def flush(self):
            pass

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stderr", LeftReader())
    code, _ = run(clip, "-o", tmp_path / "o.mp4")
    assert code == 0 and (tmp_path / "o.mp4").is_file()


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(tmp_path):
    """A Latin-1 name (``caf\\xe9.mp4``) was printed as "caf\\udce9.mp4", a path no file has: a script
    that took the name from a message found nothing there."""
    child = subprocess.run([sys.executable, "-m", "streamrestore", b"caf\xe9.mp4"], cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=120)
    assert child.returncode == 2
    assert child.stderr == b"streamrestore: error: input not found: caf\xe9.mp4\n"


def test_a_file_name_cannot_start_a_line_or_drive_the_terminal(tmp_path, capsys):
    """A newline in a file name printed raw made a line of the name's own ("error: ..." after a good run),
    and an escape sequence in one reached the terminal (``\\x1b[2J`` clears it): both are written as
    escapes; printable names, non-English ones included, are kept."""
    from streamrestore.errors import one_line

    assert one_line("caf\u00e9 \u0645\u0631\u062c\u0639 \u2713.mp4") == "caf\u00e9 \u0645\u0631\u062c\u0639 \u2713.mp4"
    assert one_line("a\nb\rc\td\x1b[2Je\u2028f") == "a\\nb\\rc\\td\\x1b[2Je\\u2028f"
    # (U+202E shows what follows backwards; U+200F, a mark of direction in Hebrew or Arabic text, stays)
    assert one_line("x\u202e4pm.exe \u05e2\u200f") == "x\\u202e4pm.exe \u05e2\u200f"
    name = "x\nstreamrestore: error: fake\x1b[2J.mp4"
    clip = tmp_path / name
    make_clip(clip, width=96, height=64, frames=4)
    assert main([str(tmp_path / ("gone" + name))]) == 2
    assert main([str(clip), "-o", str(tmp_path / ("o" + name)), "--model", "identity", "--detector", "dlib",
                 "--no-progress"]) == 0
    said = capsys.readouterr().err
    lines = said.splitlines()
    assert "\x1b" not in said and [line for line in lines if line.startswith("streamrestore: error:")] == [
        f"streamrestore: error: input not found: {tmp_path}/gonex\\nstreamrestore: error: fake\\x1b[2J.mp4"]
    assert lines[-1] == f"wrote {tmp_path}/ox\\nstreamrestore: error: fake\\x1b[2J.mp4"
    import logging

    from streamrestore.cli.options import CliHandler
    record = logging.LogRecord("streamrestore", logging.WARNING, __file__, 1, "skipped %s", (name,), None)
    assert CliHandler().format(record) == "warning: skipped x\\nstreamrestore: error: fake\\x1b[2J.mp4"
    assert (tmp_path / ("o" + name)).is_file()


def test_closed_standard_streams_and_odd_surrogates_do_not_fail_a_run(tmp_path, monkeypatch):
    """Descriptors closed at start-up (``>&- 2>&-``: sys.stderr is None) made the summary's print an
    AttributeError; a surrogate that stands for no byte (a Windows name) must still print, escaped."""
    import io

    from streamrestore.cli.app import _ReaderMayLeave

    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["cache"]) == 0
    clip = tmp_path / "clip.mp4"
    make_clip(clip, width=96, height=64, frames=6)
    # a video run asks stderr whether it is a terminal (the progress bar) and prints its summary
    assert main([str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "identity", "--detector", "dlib"]) == 0
    assert sys.stderr is None and (tmp_path / "o.mp4").is_file()
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    wrapped = _ReaderMayLeave(stream)
    wrapped.write("caf\udce9 and \ud800\n")
    wrapped.write("caf\udce9\n")
    wrapped.flush()
    wrapped.restore()
    assert raw.getvalue() == b"caf\\udce9 and \\ud800\ncaf\xe9\n" and stream.errors == "strict"
    # a stream of another encoding (PYTHONIOENCODING=ascii; Windows' cp1252 into a file) writes what it cannot hold
    # as escapes: eval's table arrows, a name's accents, live's help ended eval, bench, cache in a traceback
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp1252", errors="strict")
    wrapped = _ReaderMayLeave(stream)
    wrapped.write("PSNR \u2191 caf\u00e9 \u65e5\n")
    wrapped.flush()
    wrapped.restore()
    assert raw.getvalue() == b"PSNR \\u2191 caf\xe9 \\u65e5\n" and stream.errors == "strict"
    child = subprocess.run([sys.executable, "-m", "streamrestore", "live", "--help"], capture_output=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONIOENCODING="ascii"))
    assert child.returncode == 0 and b"\\u2192" in child.stdout, child.stderr


def test_a_full_disk_under_standard_output_does_not_skip_the_clean_up(tmp_path, monkeypatch):
    """A flush error other than a gone reader (``> /dev/full``) escaped the clean-up: the caller of
    main() was left with wrapped streams."""
    class Full:
        def write(self, text):
            return len(text)

        def flush(self):
            raise OSError(28, "No space left on device")

        def isatty(self):
            return False

    full = Full()
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "stdout", full)
    assert main(["cache"]) == 0
    assert sys.stdout is full


def test_a_closed_pipe_on_the_programs_output_exits_with_the_works_code(tmp_path):
    """The same with a real pipe whose reader is gone before the program writes (``| head -0``)."""
    env = dict(os.environ, STREAMRESTORE_CACHE=str(tmp_path), PYTHONPATH=str(REPO))
    env.pop("PYTHONUNBUFFERED", None)  # (a pipe's output is then block-buffered: flushed at the end, into no reader)
    child = subprocess.Popen([sys.executable, "-m", "streamrestore", "cache"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # long before the child's first line (its start-up takes a second)
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_bad_options(run, clip, tmp_path):
    code, err = run(clip, "--start", "5", "--end", "2", "-o", tmp_path / "o.mp4")
    assert code == 2 and "--end" in _one_error_line(err)
    code, err = run(clip, "--codec", "nonsense", "-o", tmp_path / "o.mp4")
    assert code == 2
    _one_error_line(err)


def test_default_output_name(run, clip):
    code, err = run(clip)
    assert code == 0, err
    assert (clip.parent / "clip.restored.mp4").exists()


def _ctrl_c_as_in_a_terminal():
    """A job started in the background by a script (``cmd &``) inherits SIGINT ignored, and then
    Python, rightly, leaves it ignored: give the child Ctrl-C as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_leaves_no_output(long_face_clip, tmp_path):
    out = tmp_path / "o.mp4"
    env = _slow_synthetic_env(PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*SYNTHETIC_CLI, str(long_face_clip), "-o", str(out), "--model", "identity", "--no-progress"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(1.0)  # well into the frame loop
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_default_model_restores_a_clip(request, tmp_path, media):
    """The main job with the shipped default model (lite): `streamrestore input --refs DIR`, on a
    drawn-face clip (drawn-face detector) and on a real interview clip (shared SCRFD pack)."""
    import av
    import numpy as np
    from media_utils import read_audio_packets, read_video_timing

    from streamrestore.eval.video import VideoDegradation, degrade_video

    # a soft copy (blurred, smaller, back up: the face is still found on every frame); a clean
    # face would pass the quality gate unchanged
    if media == "synthetic":
        from media_utils import make_face_clip

        run, refs = request.getfixturevalue("run"), request.getfixturevalue("synthetic_refs")
        clean = tmp_path / "clean.mp4"
        kps = make_face_clip(clean, width=224, height=224, frames=16, audio="aac")[0]
        (x0, y0), (x1, y1) = kps.min(axis=0).astype(int) - 10, kps.max(axis=0).astype(int) + 10
        face = (slice(y0, y1), slice(x0, x1))  # eyes to mouth of the first frame
        degradation = VideoDegradation("soft", scale=2.0, blur=1.0, crf=24)  # the irises stay visible
    else:
        run, refs = request.getfixturevalue("run_scrfd"), request.getfixturevalue("refs")
        clean = request.getfixturevalue("shared_data") / "pcavs/Input/00010.mp4"
        face = (slice(60, 160), slice(60, 160))  # the face of this 224x224 interview clip
        degradation = VideoDegradation("soft", scale=3.0, blur=1.5, crf=24)
    src = tmp_path / "degraded.mp4"
    degrade_video(clean, src, degradation)
    out = tmp_path / "out.mp4"
    code, err = run(src, "--refs", refs, "-o", out, model="lite")
    assert code == 0, err
    assert "faces restored" in err and "references: refs (every face)" in err
    if media == "synthetic":
        assert "16 faces restored in 16 frames, 1 track" in err, err
    assert read_video_timing(out)[0] == read_video_timing(src)[0]
    assert read_audio_packets(out) == read_audio_packets(src)
    lossy = tmp_path / "clean_out.mp4"
    assert run(clean, "--refs", refs, "-o", lossy, model="lite")[0] == 0
    assert read_audio_packets(lossy) == read_audio_packets(clean)
    untouched = tmp_path / "identity.mp4"
    assert run(src, "--refs", refs, "-o", untouched)[0] == 0  # same pipeline, identity restorer

    def first_frame(path):
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)

    original = first_frame(src)[face]
    # encoding alone moves the identity run ~0.9 levels (drawn: ~0.8); the model changes the
    # degraded face well beyond that (drawn: ~4.3), and leaves the clean one as the identity run
    # does (the quality gate; drawn: ~1.0)
    encoding = np.abs(first_frame(untouched)[face] - original).mean()
    assert np.abs(first_frame(out)[face] - original).mean() > 2 * encoding
    clean_original = first_frame(clean)[face]
    assert np.abs(first_frame(lossy)[face] - clean_original).mean() < 2.5


# -- what a new user hits ---------------------------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if the restorer, a face detector or an embedder starts loading."""
    import streamrestore.faces.detect as detect
    import streamrestore.faces.identity as identity
    import streamrestore.model.registry as registry
    import streamrestore.pipeline as pipeline

    def loaded(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the cheap checks ran")

    monkeypatch.setattr(pipeline, "load_restorer", loaded)
    monkeypatch.setattr(registry, "load_model", loaded)
    monkeypatch.setattr(detect, "create_detector", loaded)
    monkeypatch.setattr(identity, "create_embedder", loaded)


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _refs_folder(path: Path) -> Path:
    path.mkdir()
    (path / "a.jpg").write_bytes(b"not read by the cheap checks")
    return path


@pytest.mark.parametrize("case", ["output_exists", "refs_missing", "refs_empty", "refs_name_twice", "webm_with_aac",
                                  "codec_container", "unknown_extension", "start_past_end", "device_cuda",
                                  "detect_size"])
def test_cheap_checks_fail_before_any_model_loads(run, tmp_path, no_model_loading, no_cuda, case):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=6, audio="aac")  # 0.24 s, H.264 + AAC
    out = tmp_path / "out.mp4"
    args, expect = {
        "output_exists": (["-o", out], "--force"),
        "refs_missing": (["--refs", tmp_path / "nobody", "-o", out], "nobody"),
        "refs_empty": (["--refs", (tmp_path / "empty").mkdir() or tmp_path / "empty", "-o", out], "empty"),
        "refs_name_twice": (["--refs", f"ann={_refs_folder(tmp_path / 'a')}", "--refs",
                             f"ann={_refs_folder(tmp_path / 'b')}", "-o", out], "more than once"),
        "webm_with_aac": (["-o", tmp_path / "out.webm"], "aac audio"),
        "codec_container": (["--codec", "vp9", "-o", tmp_path / "out.mov"], "vp9"),
        "unknown_extension": (["-o", tmp_path / "out.xyz"], ".xyz"),
        "start_past_end": (["--start", "10", "-o", out], "lies from 10 s"),
        "device_cuda": (["--device", "cuda", "-o", out], "CUDA"),
        "detect_size": (["--detect-size", "1000", "-o", out],
                        "--detect-size must be a multiple of 32 from 160 to 4096 (640, 960, 1280, ...), got 1000"),
    }[case]
    if case == "output_exists":
        out.write_bytes(b"keep")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(src, *args, model="lite")
    assert code == 2, err
    assert expect in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp file
    if case == "output_exists":
        assert out.read_bytes() == b"keep"


def test_live_device_cuda_without_cuda_is_one_line(tmp_path, capsys, no_model_loading, no_cuda, clip):
    code = main(["live", "--source", str(clip), "--no-window", "--max-frames", "1", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA" in _one_error_line(err)


def test_device_cuda_without_cuda_library_error(no_cuda):
    from streamrestore.errors import DeviceError
    from streamrestore.model.restorer import pick_device

    with pytest.raises(DeviceError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


@pytest.mark.parametrize("spelling", ["relative", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused(run, clip, tmp_path, monkeypatch, no_model_loading, spelling):
    original = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    if spelling == "relative":
        out = Path("./sub/../clip.mp4")
        (tmp_path / "sub").mkdir()
    elif spelling == "symlink":
        out = tmp_path / "link.mp4"
        out.symlink_to(clip)
    else:
        out = tmp_path / "hard.mp4"
        os.link(clip, out)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(clip, "-o", out, "--force", model="lite")
    assert code == 2 and "is the input file" in _one_error_line(err)
    assert clip.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _stop_mid_run(tmp_path, clip, signum, *, existing: bytes | None = None, written: int = 32 * 1024):
    """Starts a restore in a subprocess, sends ``signum`` once its temp file holds ``written``
    bytes: 32 KB, the first flush of encoded frames, is mid-run; 0 is while models load (the
    output is opened, and checked, before)."""
    out = tmp_path / "o.mp4"
    if existing is not None:
        out.write_bytes(existing)
    env = _slow_synthetic_env(PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*SYNTHETIC_CLI, str(clip), "-o", str(out), "--model", "identity", "--no-progress", "--force"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )

    def partial_size():
        sizes = [p.stat().st_size for p in tmp_path.iterdir() if p.name.endswith(".partial.mp4")]
        return max(sizes) if sizes else -1

    deadline = time.time() + 180
    # The temp file holds just the header until the first 32 KB of encoded frames: then mid-run.
    while time.time() < deadline and partial_size() < written and proc.poll() is None:
        time.sleep(0.05)
    assert partial_size() >= written, "the run never got there"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, out


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_mid_run_cleans_up_like_ctrl_c(long_face_clip, tmp_path, signum, code):
    returncode, err, out = _stop_mid_run(tmp_path, long_face_clip, signum, existing=b"previous result")
    assert returncode == code, err
    assert "Traceback" not in err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]  # no hidden .partial file
    assert out.read_bytes() == b"previous result"  # the existing output is untouched
    from streamrestore.batch import count_frames

    # what was lost is said: the frames restored by then (the output is written only when complete)
    done, total = map(int, re.search(r"the output was not written \((\d+) of (\d+) frames had been restored\)",
                                     err).groups())
    assert 0 < done < total == count_frames(long_face_clip)


def test_a_stopped_long_run_points_to_batch_which_keeps_finished_chunks():
    from streamrestore.api import LOST_WORK_HINT_SECONDS, _work_lost

    assert _work_lost(120, 900, 5.0) == "the output was not written (120 of 900 frames had been restored)"
    assert _work_lost(0, None, 1.0) == "the output was not written (0 frames had been restored)"
    assert _work_lost(5000, 90000, LOST_WORK_HINT_SECONDS).endswith(
        "frames had been restored); streamrestore batch restores a long video in chunks, keeps the finished ones "
        "through a stop and resumes with them")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_raise_keyboard_interrupt_with_the_exit_code(signum, code):
    from streamrestore.stop_signals import stop_signals_interrupt

    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # a background job: see _ctrl_c_as_in_a_terminal
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(KeyboardInterrupt) as caught:
        with stop_signals_interrupt() as stop:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
    assert getattr(caught.value, "exit_code", 130) == code and stop.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigterm_while_models_load_leaves_nothing(long_face_clip, tmp_path):
    returncode, err, out = _stop_mid_run(tmp_path, long_face_clip, signal.SIGTERM, written=0,
                                         existing=b"previous result")
    assert returncode == 143, err
    assert "Traceback" not in err and "interrupted by SIGTERM" in err
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]
    assert out.read_bytes() == b"previous result"


@pytest.mark.parametrize("when", ["mid_run", "at_close"])
def test_file_size_limit_is_one_line_and_leaves_nothing(run, tmp_path, when):
    """A write that fails (file-size limit here; disk full takes the same path) ends the run
    with exit 2 and one line; no partial file, and the existing output is kept. The limit
    hits while frames are muxed, or only when the file is finished (its last bytes)."""
    import resource

    import av
    import numpy as np

    src = tmp_path / "noise.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(src), "w") as c:  # random pictures do not compress: ~1 MB of output
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (120, 160, 3), np.uint8), format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    options = ["--crf", "0", "--preset", "ultrafast"]
    if when == "mid_run":
        limit = 128 * 1024  # far below the output's size (~700 KB), far above anything else the run writes
    else:
        full = tmp_path / "full" / "out.mkv"
        full.parent.mkdir()
        assert run(src, "-o", full, *options)[0] == 0
        limit = full.stat().st_size - 50
        shutil.rmtree(full.parent)
    out = tmp_path / "out.mkv"
    out.write_bytes(b"previous result")

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [*SYNTHETIC_CLI, str(src), "-o", str(out), "--force", *options, "--model", "identity", "--no-progress"],
        capture_output=True, text=True, cwd=REPO, env=env, preexec_fn=limited, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "File too large" in line and "out.mkv" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.mkv", "out.mkv"]
    assert out.read_bytes() == b"previous result"


def test_damaged_input_is_restored_with_every_frame_and_one_warning(run, tmp_path):
    from media_utils import read_video_timing
    from test_video_io import _damage_packets

    clean = tmp_path / "clean.mp4"
    make_clip(clean, width=160, height=120, frames=40, options={"preset": "ultrafast", "g": "10"})
    bad = tmp_path / "bad.mp4"
    _damage_packets(clean, bad, [15, 26])
    out = tmp_path / "out.mp4"
    code, err = run(bad, "-o", out)
    assert code == 0, err
    assert read_video_timing(out)[0] == read_video_timing(clean)[0]
    warnings = [line for line in err.splitlines() if "damaged data" in line]
    assert len(warnings) == 1 and "2 frame(s)" in warnings[0], err


def _synopsis(readme: str, heading: str) -> str:
    section = readme.split(heading, 1)[1]
    return section.split("```", 2)[1]


@pytest.mark.parametrize("heading,command", [("## Command line", None), ("## Live: webcam", "live")])
def test_readme_synopsis_lists_every_option(heading, command):
    """Every option of the parser appears in the README's synopsis; none is shown as required
    that is optional (--refs was)."""
    from streamrestore.cli import build_parser, live

    parser = build_parser() if command is None else live.build_parser()
    synopsis = _synopsis((REPO / "README.md").read_text(), heading)
    for action in parser._actions:
        if not action.option_strings or "--help" in action.option_strings:
            continue
        assert any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", synopsis) for o in action.option_strings), \
            action.option_strings
    assert "[--refs" in synopsis and " --refs DIR [" not in synopsis


def test_every_option_has_help():
    from streamrestore.cli import bench, build_parser, live

    for parser in (build_parser(), live.build_parser(), bench.build_parser()):
        for action in parser._actions:
            assert action.help, (parser.prog, action.option_strings or action.dest)


def test_stop_signals_are_held_while_loading_and_delivered_after():
    from streamrestore.stop_signals import Interrupted, stop_signals_held, stop_signals_interrupt

    reached_end_of_block = False
    with pytest.raises(Interrupted) as caught:
        with stop_signals_interrupt():
            with stop_signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # held: no exception inside the block
                reached_end_of_block = True
            time.sleep(5)  # delivered as the block ends
    assert reached_end_of_block and caught.value.exit_code == 143


@pytest.mark.parametrize("command", [[], ["live", "--no-window", "--source"], ["bench"], ["eval", "--video"]])
def test_every_command_refuses_torch_threads_under_one_at_once(tmp_path, capsys, command):
    src = tmp_path / "x.mp4"
    src.write_bytes(b"")  # (not read: the option is checked first)
    assert main([*command, str(src), "--torch-threads", "0"]) == 2
    assert "--torch-threads must be at least 1, got 0" in capsys.readouterr().err


def test_memory_running_out_is_one_line_and_other_errors_stay_tracebacks(monkeypatch, capsys):
    """Under an address-space limit (ulimit -v, a container's) torch and onnxruntime raise from deep inside: a
    traceback whose last line varied from run to run."""
    from streamrestore.cli import app

    def allocator(argv, stop=None):
        try:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 36864 bytes. Error code 12 (Cannot allocate memory)")
        except RuntimeError as exc:
            raise ValueError("while restoring frame 12") from exc

    monkeypatch.setattr(app, "restore_main", allocator)
    assert app.main(["in.mp4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamrestore: error: out of memory ([enforce fail at alloc_cpu.cpp:127] data. "
                          "DefaultCPUAllocator: can't allocate memory: you tried to allocate 36864 bytes. Error code 12 "
                          "(Cannot allocate memory)); free memory, raise the process's limit") and "Traceback" not in err
    monkeypatch.setattr(app, "restore_main", lambda argv, stop=None: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        app.main(["in.mp4"])

    def gpu(argv, stop=None):  # (torch.cuda.OutOfMemoryError's words): the advice is the GPU's, not ulimit's
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(app, "restore_main", gpu)
    assert app.main(["in.mp4"]) == 1
    err = capsys.readouterr().err
    assert "error: GPU out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); free the GPU" in err
    assert "ulimit" not in err

    # the advice leaves out what the command already gave (it said "--torch-threads 1" to a command that had it)
    monkeypatch.setattr(app, "restore_main", allocator)
    assert app.main(["in.mp4", "--torch-threads", "1", "--backend=eager"]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().endswith("; free memory or raise the process's limit (ulimit -v, a container's)"), err
    # on a CPU eager is what holds less (it ran under limits where ONNX Runtime's sessions did not); smaller crops
    # changed nothing there
    assert app.main(["in.mp4", "--torch-threads", "2", "--crop-resolution", "256"]) == 1
    assert capsys.readouterr().err.rstrip().endswith("give it less to hold at once: --backend eager, "
                                                     "--torch-threads 1")


def test_a_thread_that_cannot_start_is_said_as_memory_running_out(monkeypatch, capsys):
    """Under ulimit -v 2.5 GB FFmpeg's scaler could not start its threads and PyAV raised EAGAIN: a 50-line
    traceback ending "Resource temporarily unavailable", read as a busy file (support F1)."""
    import av

    from streamrestore.cli import app

    def scaler(argv, stop=None):
        raise av.error.BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(app, "restore_main", scaler)
    assert app.main(["in.mp4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamrestore: error: could not start a thread (") and "Resource temporarily" in err
    assert "Traceback" not in err and "ulimit -v, ulimit -u" in err  # (memory, or the thread limit: review 52)

    def handled(argv, stop=None):  # an error raised with its context suppressed is not that context's
        try:
            raise av.error.BlockingIOError(11, "Resource temporarily unavailable")
        except av.error.BlockingIOError:
            raise ZeroDivisionError("a bug") from None

    monkeypatch.setattr(app, "restore_main", handled)
    with pytest.raises(ZeroDivisionError):
        app.main(["in.mp4"])

    def threads(argv, stop=None):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(app, "restore_main", threads)
    assert app.main(["in.mp4"]) == 1
    assert "could not start a thread (can't start new thread)" in capsys.readouterr().err


def test_openblas_gets_one_thread_only_under_an_address_space_limit(tmp_path):
    """scipy's OpenBLAS spun forever at import under ulimit -v 1.8 GB, deaf to Ctrl-C and SIGTERM (support F2):
    the console script gives it one thread there, unless the user chose a count; without a limit, nothing."""
    import subprocess

    resource = pytest.importorskip("resource")
    script = ("import os, resource, sys\n"
              "if sys.argv[1] != 'none':\n"
              "    size = (4 << 30) if sys.argv[1] == 'limit' else (64 << 30)\n"
              "    resource.setrlimit(resource.RLIMIT_AS, (size, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
              "from streamrestore.cli.app import one_blas_thread_under_an_address_limit\n"
              "one_blas_thread_under_an_address_limit()\n"
              "print(os.environ.get('OPENBLAS_NUM_THREADS'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        pytest.skip("this process already runs under an address-space limit")

    def run(case, **extra):
        return subprocess.run([sys.executable, "-c", script, case], env={**env, **extra}, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert run("limit") == "1"
    assert run("none") == "None" and run("large") == "None"  # (a job's tens of GB: numpy keeps its threads)
    assert run("limit", OPENBLAS_NUM_THREADS="3") == "3"


def test_strength_is_an_option_of_every_restoring_command_and_checked():
    import argparse

    from streamrestore.cli import batch, live, restore
    from streamrestore.cli import eval as eval_cli
    from streamrestore.cli.options import quality_gate_from_args
    from streamrestore.errors import UserError

    for command, argv in ((restore, ["in.mp4"]), (live, []), (batch, ["in.mp4", "-o", "out"]),
                          (eval_cli, ["--video", "clean.mp4"])):
        args = command.build_parser().parse_args([*argv, "--strength", "0.5"])
        assert quality_gate_from_args(args).strength == 0.5, command.__name__
    assert quality_gate_from_args(argparse.Namespace(no_quality_gate=False, strength=None)) is None
    with pytest.raises(UserError, match=r"--strength: strength must be in \[0, 1\], got 1.5"):
        quality_gate_from_args(argparse.Namespace(no_quality_gate=True, strength=1.5))


def test_a_stop_signal_after_the_work_is_done_does_not_change_its_exit_code():
    """`live` said it wrote its file, and a SIGTERM while the interpreter shut down (~2 s) made the exit 143."""
    script = ("import os, signal, sys, threading, time\n"
              "from streamrestore.cli import app\n"
              "app.main = lambda argv=None: 0\n"
              # a thread the interpreter joins at exit (as the live session's are): the signal lands meanwhile
              "threading.Thread(target=lambda: (time.sleep(1), os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5))).start()\n"
              "app.entry()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
