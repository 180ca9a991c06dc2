"""``streamrestore batch`` on a real local Ray (2 CPUs): every frame, timestamp and audio packet of
each input in its output, chunks joined, resume, retry, failed inputs, the in-process fallback."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from media_utils import (
    make_clip,
    make_raw_stream,
    make_zero_pts_clip,
    read_audio_packets,
    read_video_timing,
    remux_with_tags,
)

from streamrestore.batch import DIE_ENV, FAIL_ENV, MANIFEST_NAME, PARTS_DIR, count_frames, plan_input, run
from streamrestore.cli import main

ray = pytest.importorskip("ray")

# keyframe every 10 frames, B-frames (frames reordered): 60 frames at 25 fps = 2.4 s
LONG_OPTIONS = {"preset": "medium", "crf": "18", "g": "10", "bf": "2"}
CHUNK_SECONDS = "0.8"  # -> chunks [0, 20), [20, 40), [40, 60)


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder / "a.mp4", frames=8, audio="aac")
    make_clip(folder / "b.mkv", frames=7, fps=30, audio="libopus")
    make_clip(folder / "c.mp4", pts=[0, 300, 900, 1000, 1700, 2000], time_base=__import__("fractions").Fraction(1, 1000),
              fps=10)  # variable frame rate, no audio
    make_clip(folder / "long.mp4", frames=60, audio="aac", options=LONG_OPTIONS)
    return folder


@pytest.fixture(scope="module")
def faces(maybe_shared):
    """How the workers find faces: the shared SCRFD pack when the shared folder is there, else
    dlib (installed with the package; these clips have no faces, and Ray's worker processes would
    not see a detector swapped in this one)."""
    if maybe_shared is not None:
        return {"face_models": maybe_shared / "models" / "insightface"}
    return {"detector": "dlib"}


def _face_args(faces) -> list[str]:
    return [arg for key, value in faces.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture
def batch(faces, capsys):
    """Runs ``streamrestore batch`` in-process with the identity model (and ``faces``)."""

    def _batch(*args):
        argv = ["batch", *map(str, args), "--model", "identity", *_face_args(faces), "--workers", "2"]
        code = main(argv)
        return code, capsys.readouterr().err

    return _batch


def _records(out_dir):
    last = {}
    for line in (out_dir / MANIFEST_NAME).read_text().splitlines():
        rec = json.loads(line)
        last[rec["key"]] = rec
    return last


def _decoded(path):
    """(picture type, RGB) of every frame of a file."""
    with av.open(str(path)) as c:
        return [(f.pict_type, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def _same_media(src, out):
    """Same frames at the same pts, same durations (but for the last frame of a variable-rate
    input: its packet durations are a muxer's guess, which the main command does not copy either),
    same audio packets."""
    (pts_out, dur_out), (pts_in, dur_in) = read_video_timing(out), read_video_timing(src)
    assert pts_out == pts_in, out
    if src.name != "c.mp4":
        assert dur_out == dur_in, out
    assert read_audio_packets(out) == read_audio_packets(src), out


def test_plan_cuts_at_keyframes(clips):
    plan = plan_input(clips / "long.mp4", 0.8)
    assert plan.chunks == [(0, 20), (20, 40), (40, 60)]
    with av.open(str(clips / "long.mp4")) as c:
        keys = {p.pts for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe}
    assert all(plan.pts[a] in keys for a, _ in plan.chunks)
    assert len(plan_input(clips / "long.mp4", 60).chunks) == 1


def test_batch_outputs_match_inputs_and_rerun_does_no_work(local_ray, clips, tmp_path, batch, faces):
    out = tmp_path / "out"
    code, err = batch(clips, "-o", out, "--chunk-seconds", CHUNK_SECONDS)
    assert code == 0, err
    names = {"a.mp4": "a.restored.mp4", "b.mkv": "b.restored.mkv", "c.mp4": "c.restored.mp4",
             "long.mp4": "long.restored.mp4"}
    for src, dst in names.items():
        _same_media(clips / src, out / dst)
    assert "long.mp4 chunk 3/3 done (20 frames, " in err and "long.mp4 joined (3 chunks) -> " in err
    assert "a.mp4 done (8 frames, no face found, " in err
    records = _records(out)
    chunks = [r for r in records.values() if r["key"].startswith("chunk:")]
    assert len(chunks) == 3 and all(r["state"] == "done" and r["sha256"] for r in chunks)
    inputs = [r for r in records.values() if r["key"].startswith("input:")]
    assert len(inputs) == 4 and all(r["state"] == "done" and r["attempts"] == 1 for r in inputs)
    assert not (out / PARTS_DIR).exists()  # parts removed once joined, and their folder with the last

    # The chunks, joined, are what the main command writes (same encoder input, pts, frame types).
    main_out = tmp_path / "main.mp4"
    assert main([str(clips / "long.mp4"), "-o", str(main_out), "--model", "identity", *_face_args(faces),
                 "--no-progress"]) == 0
    # x264 with its default threads is not bit-exact from run to run on a busy machine (frames can
    # differ by a level): same frame count and types, decoded pictures within 1 level on average
    joined, single = _decoded(out / "long.restored.mp4"), _decoded(main_out)
    assert [t for t, _ in joined] == [t for t, _ in single]
    assert all(np.abs(a.astype(int) - b).mean() < 1.0 for (_, a), (_, b) in zip(joined, single))

    before = {p: p.stat().st_mtime_ns for p in out.glob("*.restored.*")}
    lines = len((out / MANIFEST_NAME).read_text().splitlines())
    code, err = batch(clips, "-o", out, "--chunk-seconds", CHUNK_SECONDS)
    assert code == 0, err
    assert err.count(": already done (") == 4 and "(4 already done)" in err and "0 frames restored" in err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.restored.*")} == before
    assert len((out / MANIFEST_NAME).read_text().splitlines()) == lines


def test_failed_chunk_is_retried(local_ray, clips, tmp_path, monkeypatch, faces, caplog):
    import shutil

    monkeypatch.setenv(FAIL_ENV, "long.mp4:1")  # the second chunk's first attempt raises
    # (and a disk too small for the chunk parts: said before the work starts, which still goes on)
    monkeypatch.setattr("streamrestore.batch.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    out = tmp_path / "out"
    result = run([clips / "long.mp4", clips / "a.mp4"], out_dir=out, model="identity", **faces,
                 chunk_seconds=0.8, retries=1, workers=2)
    assert result.exit_code == 0 and not result.failed
    (said,) = [r.getMessage() for r in caplog.records if "chunk parts" in r.getMessage()]
    assert said.startswith("the long videos' chunk parts (lossless, each video's kept until it is joined) may need up "
                           "to ") and f" MB in {out / PARTS_DIR}, and its disk has 0 MB free" in said
    _same_media(clips / "long.mp4", out / "long.restored.mp4")
    _same_media(clips / "a.mp4", out / "a.restored.mp4")
    chunk = next(r for r in _records(out).values() if r["key"].startswith("chunk:") and r["chunk"] == 1)
    assert chunk["state"] == "done" and chunk["attempts"] == 2
    states = [json.loads(line)["state"] for line in (out / MANIFEST_NAME).read_text().splitlines()
              if '"chunk": 1' in line]
    assert "retrying" in states


def test_worker_killed_mid_chunk_is_replaced_and_retried(local_ray, clips, tmp_path, monkeypatch, faces, capsys,
                                                          caplog):
    monkeypatch.setenv(DIE_ENV, "long.mp4:1")  # the worker on the second chunk exits mid-chunk, once
    out = tmp_path / "out"
    result = run([clips / "long.mp4"], out_dir=out, model="identity", **faces, chunk_seconds=0.8, retries=1,
                 workers=2)
    err = capsys.readouterr().err
    assert result.exit_code == 0 and not result.failed, err
    assert not [r for r in caplog.records if "chunk parts" in r.getMessage()]  # (room enough: nothing said)
    assert "a worker died while on long.mp4 chunk 2; started a new one" in err
    _same_media(clips / "long.mp4", out / "long.restored.mp4")
    records = _records(out)
    chunks = sorted((r for r in records.values() if r["key"].startswith("chunk:")), key=lambda r: r["chunk"])
    assert [r["chunk"] for r in chunks] == [0, 1, 2] and all(r["state"] == "done" for r in chunks)
    assert [r["attempts"] for r in chunks] == [1, 2, 1]
    lines = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines() if '"chunk": 1' in line]
    retry = next(r for r in lines if r["state"] == "retrying")
    assert "Actor" in retry["error"]  # ray's ActorDiedError
    assert count_frames(out / "long.restored.mp4") == 60


def test_not_a_video_fails_others_succeed(local_ray, clips, tmp_path, batch):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# inputs\n{clips / 'a.mp4'}\n\nnotes.mp4\n")
    out = tmp_path / "out"
    code, err = batch("--list", listing, "-o", out)
    assert code == 1, err
    assert "1 succeeded" in err and "1 failed" in err and f"failed: {bad.resolve()}" in err
    _same_media(clips / "a.mp4", out / "a.restored.mp4")
    rec = _records(out)[f"input:{bad.resolve()}"]
    assert rec["state"] == "failed" and "video" in rec["error"]
    assert not (out / "notes.restored.mp4").exists()


def test_without_ray_runs_in_process(clips, tmp_path, batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "out"
    code, err = batch(clips / "a.mp4", clips / "long.mp4", "-o", out, "--chunk-seconds", CHUNK_SECONDS)
    assert code == 0, err
    assert 'pip install "streamrestore[batch]"' in err and "(in-process)" in err
    for name in ("a", "long"):
        _same_media(clips / f"{name}.mp4", out / f"{name}.restored.mp4")
    assert not any(r["key"].startswith("chunk:") for r in _records(out).values())


def test_strip_metadata_reaches_every_output_of_a_batch(tmp_path, batch, monkeypatch):
    """``batch --strip-metadata``: a video's tags and a photo's EXIF are left out, as the main command's."""
    from PIL import Image

    monkeypatch.setitem(sys.modules, "ray", None)  # in-process: the same workers' code, faster
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "base.mp4", frames=4)
    remux_with_tags(folder / "base.mp4", folder / "v.mp4", {"title": "Interview with J.",
                                                            "location": "+48.8584+002.2945/"})
    (folder / "base.mp4").unlink()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.new("RGB", (64, 48), (90, 60, 40)).save(folder / "p.jpg", exif=exif.tobytes())
    code, err = batch(folder, "-o", tmp_path / "out")
    assert code == 0, err
    with av.open(str(tmp_path / "out" / "v.restored.mp4")) as c:
        assert "Interview" in str(c.metadata)
    # a rerun that strips them makes again the outputs that kept them (it took them for "already done": the
    # usual way to use the option is after noticing the tags)
    for rerun in range(2):
        code, err = batch(folder, "-o", tmp_path / "out", "--strip-metadata")
        assert code == 0, err
        assert (": already done (" in err) == bool(rerun), err
        with av.open(str(tmp_path / "out" / "v.restored.mp4")) as c:
            assert "Interview" not in str(c.metadata) and "location" not in c.metadata
        with Image.open(tmp_path / "out" / "p.restored.jpg") as photo:
            assert not photo.getexif()


def test_ray_none_runs_in_process_with_ray_installed(clips, tmp_path, batch):
    """On a small machine Ray's own processes took ~0.9 GB beside the one worker: ``--ray none`` runs the inputs in
    this process, which happened only where Ray was not installed."""
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--ray", "none")
    assert code == 0, err
    assert "(in-process)" in err and "not installed" not in err  # (chosen, not fallen back to)
    _same_media(clips / "a.mp4", tmp_path / "out" / "a.restored.mp4")


def test_ray_that_cannot_start_for_an_unwritable_home_is_one_line(clips, tmp_path, batch, monkeypatch):
    """Ray keeps a token and its logs under the home folder: with HOME unwritable (a container's user) ray.init's
    PermissionError ended the batch in a 40-line traceback. A local Ray is given the cores this process may use."""
    import types

    asked = {}

    def init(**kwargs):
        asked.update(kwargs)
        raise PermissionError(13, "Permission denied", "/nonexistent")

    def init_writing_its_token(**kwargs):  # (as Ray 2.60 does: readable by all, in a folder it makes 0755)
        token = Path.home() / ".ray" / "auth_token"
        asked["folder_mode"] = stat.S_IMODE(token.parent.stat().st_mode)  # (made before Ray starts)
        token.write_text("secret")
        os.chmod(token, 0o644)

    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False  # type: ignore[attr-defined]
    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    from streamrestore import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 1)  # (taskset -c 0)
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    assert ("Ray could not start: cannot write /nonexistent (Permission denied); Ray keeps files in the home folder: "
            "set HOME to a writable one") in err
    assert asked["num_cpus"] == 1
    # its sessions (logs naming the inputs and photos) under a folder of this user's alone, not the shared /tmp/ray
    import stat

    sessions = Path(asked["_temp_dir"])
    assert sessions.name == "sessions" and sessions.parent.name == f"streamrestore-ray-{os.getuid()}"
    assert stat.S_IMODE(sessions.parent.stat().st_mode) == 0o700 and sessions.parent.stat().st_uid == os.getuid()
    # Ray's token, which it writes readable by all, is this user's alone (any user could join and run code): its
    # folder is made 0700 before Ray starts, the token 0600 after
    from streamrestore.batch import run as run_batch

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    fake.init = init_writing_its_token  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):  # (the fake has no more of Ray than init: the batch stops there)
        run_batch([clips / "a.mp4"], out_dir=tmp_path / "out2", model="identity", progress=False)
    token = tmp_path / "home" / ".ray" / "auth_token"
    assert asked["folder_mode"] == 0o700 and stat.S_IMODE(token.stat().st_mode) == 0o600
    # a long temporary folder (macOS's, a pam_tmpdir's): Ray's own place, as its socket paths would not fit
    import tempfile

    from streamrestore.batch import _private_ray_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("t" * 40)))
    assert _private_ray_folder() is None

    # no home at all (a container's user id without a passwd entry, HOME unset): our own look at ~/.ray raised
    # RuntimeError outside its guard, then Ray's did (farm F3): one line, naming --ray none
    def no_home(cls=None):
        raise RuntimeError("Could not determine home directory.")

    def init_without_a_home(**kwargs):
        return Path.home()

    fake.init = init_without_a_home  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        patch.setattr(Path, "home", classmethod(no_home))
        code, err = batch(clips / "a.mp4", "-o", tmp_path / "out")
    assert code == 2 and "Traceback" not in err, err
    assert "Ray could not start: this user has no home folder (HOME is unset" in err and "--ray none" in err

    # a cluster that is not there (Ray's ConnectionError is an OSError too): not said to be the home folder
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec

    def unreachable(**kwargs):
        raise ConnectionError("Could not find any running Ray instance")

    fake.init = unreachable  # type: ignore[attr-defined]
    fake.__spec__ = importlib.machinery.ModuleSpec("ray", None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--ray", "auto")
    assert code == 75 and ("cannot reach a running Ray cluster (Could not find any running Ray instance); start it "
                          "(ray start --head)") in err
    # a cluster made with token authentication refuses a client without RAY_AUTH_MODE=token: said (farm F4)
    assert "set RAY_AUTH_MODE=token, with its head's ~/.ray/auth_token here too" in err
    # under `ray job submit` (RAY_ADDRESS set) the batch joins that cluster, not a private Ray (farm F9)
    asked.clear()

    def unreachable_asked(**kwargs):
        asked.update(kwargs)
        raise ConnectionError("Could not find any running Ray instance")

    fake.init = unreachable_asked  # type: ignore[attr-defined]
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "-v")
    assert code == 75 and asked["address"] == "auto" and "joining the Ray cluster of RAY_ADDRESS=10.0.0.5:6379" in err
    assert "give --ray local (or unset RAY_ADDRESS) to start Ray here" in err  # (not "leave out --ray": it was)
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--ray", "local")
    assert asked["address"] == "local"
    # without Ray installed, a shell's RAY_ADDRESS does not turn a plain batch into a refused cluster join
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "ray" else spec(name, *args))
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out3")
    assert code == 0 and "(in-process)" in err, err


def test_a_cluster_asked_for_without_ray_is_refused(clips, tmp_path, batch, monkeypatch):
    """`--ray HEAD:6379` without Ray installed ran every input here, one after another, after a warning."""
    monkeypatch.setitem(sys.modules, "ray", None)
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--ray", "10.0.0.5:6379")
    assert code == 2 and ('--ray 10.0.0.5:6379: joining a Ray cluster needs Ray on this machine: pip install '
                          '"streamrestore[batch]"') in err
    assert not (tmp_path / "out" / "a.restored.mp4").exists()


def test_progress_names_an_input_as_given_not_its_links_target(clips, tmp_path, batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # in-process: the same progress lines, faster
    link = tmp_path / "talk.mp4"
    link.symlink_to(clips / "a.mp4")
    code, err = batch(link, "-o", tmp_path / "out")
    assert code == 0, err
    assert "talk.mp4 done" in err and "a.mp4 done" not in err
    assert (tmp_path / "out" / "talk.restored.mp4").is_file()


def test_a_folder_gives_its_videos_and_photos_and_says_what_it_leaves_out(clips, tmp_path, caplog):
    """A folder copied from a Mac holds ``._name`` twins (every one failed, so the batch exited 1);
    a folder batched into itself held the last run's outputs (restored again); subfolders and
    files of other kinds were left out without a word."""
    import shutil

    from streamrestore.batch import expand_inputs

    folder = tmp_path / "archive"
    (folder / "2019").mkdir(parents=True)
    for name in ("a.mp4", "clip.gif", "tape.dv"):
        shutil.copy(clips / "a.mp4", folder / name)
    (folder / "._a.mp4").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    (folder / "a.restored.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    (folder / MANIFEST_NAME).write_text("")  # (batched into itself before: its record is not "another file")
    (folder / "IMG_0002.CR2").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="streamrestore"):
        assert [p.name for p in expand_inputs([folder])] == ["a.mp4", "clip.gif", "tape.dv"]
    assert (f"batch: {folder}: leaving out 1 subfolder (2019/: batch does not look inside; name it as inputs too, or "
            "give --recursive); "
            "2 files neither a video nor a photo (IMG_0002.CR2, notes.txt); 1 restored output (a.restored.mp4)"
            in caplog.text)


def test_camera_cards_are_batched_recursively_into_the_same_subfolders(clips, tmp_path, batch):
    """A card's clips lie 2-3 folders deep (DCIM/100CANON, PRIVATE/M4ROOT/CLIP), and two cameras both name
    theirs C0001.MP4: batch did not look into subfolders, and refused the same names from two folders
    (leaving an empty manifest behind). ``--recursive`` keeps each input's subfolder under OUTDIR, under each
    card's name where there are several; hidden folders and a batch's own output folder are left out."""
    import shutil

    cards = {"card_a": ["DCIM/100CANON/C0001.mp4", "DCIM/101CANON/C0001.mp4"], "card_b": ["PRIVATE/CLIP/C0001.mp4"]}
    for card, names in cards.items():
        for name in names:
            (tmp_path / card / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clips / "a.mp4", tmp_path / card / name)
    (tmp_path / "card_a" / ".Trashes").mkdir()
    shutil.copy(clips / "a.mp4", tmp_path / "card_a" / ".Trashes" / "x.mp4")
    (tmp_path / "card_a" / "linked").symlink_to(tmp_path / "card_b", target_is_directory=True)
    (tmp_path / "card_a" / "old_out").mkdir()
    (tmp_path / "card_a" / "old_out" / MANIFEST_NAME).write_text("")
    shutil.copy(clips / "a.mp4", tmp_path / "card_a" / "old_out" / "y.mp4")
    flat = tmp_path / "flat"
    code, err = batch(tmp_path / "card_a" / "DCIM" / "100CANON", tmp_path / "card_b" / "PRIVATE" / "CLIP", "-o", flat,
                      "--ray", "none")
    assert code == 2 and "would both be written to" in err and "or give their folders with --recursive" in err
    assert not flat.exists()  # (refused before the output folder and its record were made)
    out = tmp_path / "out"
    code, err = batch(tmp_path / "card_a", tmp_path / "card_b", "-o", out, "--ray", "none", "--recursive")
    assert code == 0, err
    assert "leaving out 1 linked folder(s) (linked): links are not followed; name them as inputs too" in err
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*.mp4"))
    assert made == ["card_a/DCIM/100CANON/C0001.restored.mp4", "card_a/DCIM/101CANON/C0001.restored.mp4",
                    "card_b/PRIVATE/CLIP/C0001.restored.mp4"]
    one = tmp_path / "one"  # one folder given: its subfolders straight under OUTDIR
    code, err = batch(tmp_path / "card_b", "-o", one, "--ray", "none", "--recursive")
    assert code == 0, err
    assert [str(p.relative_to(one)) for p in one.rglob("*.mp4")] == ["PRIVATE/CLIP/C0001.restored.mp4"]


def test_an_empty_folder_or_list_is_named(tmp_path, batch):
    """`batch emptyfolder` said "no input files given (INPUT..., --list FILE or a folder of videos or photos)" of a
    folder given."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing yet\n")
    code, err = batch(tmp_path / "empty", "--list", tmp_path / "list.txt", "-o", tmp_path / "out")
    assert code == 2
    assert f"folder {tmp_path / 'empty'} holds no videos or photos; --list {tmp_path / 'list.txt'} names no files" in err


def test_a_list_made_on_windows_is_read_and_one_in_another_encoding_is_said(tmp_path):
    """A list saved by Notepad (a byte-order mark, CRLF) failed on its first name ("input not found: \ufeffa.mp4");
    a Latin-1 one gave a UnicodeDecodeError traceback."""
    from streamrestore.batch import expand_inputs
    from streamrestore.errors import UserError

    listed = tmp_path / "list.txt"
    listed.write_bytes(b"\xef\xbb\xbfa.mp4\r\nb.mp4\r\n")
    assert [p.name for p in expand_inputs(list_file=listed)] == ["a.mp4", "b.mp4"]
    listed.write_bytes("caf\u00e9.mp4\r\nb.mp4\r\n".encode("utf-16"))
    assert [p.name for p in expand_inputs(list_file=listed)] == ["caf\u00e9.mp4", "b.mp4"]
    listed.write_bytes(b"a.mp4\ncaf\xe9.mp4\n")
    with pytest.raises(UserError, match=r"list.txt is not UTF-8 text \(byte 0xe9 on line 2\); save it as UTF-8"):
        expand_inputs(list_file=listed)


def test_a_file_the_batch_did_not_write_is_never_replaced(clips, tmp_path, batch, monkeypatch):
    """An output's path taken by a file this batch did not write, or by another input's output from
    an earlier batch into the folder (the same name in another folder, batched separately as the
    name-collision error advises): that input fails, the file stays; the others are done."""
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.restored.mp4").write_bytes(b"someone's file")
    code, err = batch(clips / "a.mp4", clips / "c.mp4", "-o", out)
    assert code == 1 and "1 succeeded" in err
    assert f"{out / 'a.restored.mp4'} exists and this batch did not write it: move it away or give another -o" in err
    assert (out / "a.restored.mp4").read_bytes() == b"someone's file" and (out / "c.restored.mp4").is_file()

    other = tmp_path / "sub"
    other.mkdir()
    (other / "c.mp4").symlink_to(clips / "a.mp4")
    before = (out / "c.restored.mp4").read_bytes()
    code, err = batch(other / "c.mp4", "-o", out)
    assert code == 1 and (out / "c.restored.mp4").read_bytes() == before
    assert f"exists and is {(clips / 'c.mp4').resolve()}'s output, from an earlier batch into this folder" in err
    code, err = batch(clips / "c.mp4", "-o", out)  # its own output: a rerun as before
    assert code == 0 and ": already done (" in err

    from streamrestore.batch import Manifest

    records = Manifest(tmp_path / "m.jsonl")  # an output deleted and written again for another input: the latest's
    records.update("input:/a/x.mp4", output="/out/x.restored.mp4")
    time.sleep(0.01)
    records.update("input:/b/x.mp4", output="/out/x.restored.mp4")
    assert records.output_of(Path("/out/x.restored.mp4"), "input:/c/x.mp4") == "input:/b/x.mp4"
    assert records.output_of(Path("/out/x.restored.mp4"), "input:/a/x.mp4") == "input:/a/x.mp4"
    assert records.output_of(Path("/out/y.restored.mp4"), "input:/a/x.mp4") is None


def test_the_batch_record_survives_a_torn_line_and_a_folder_it_cannot_write(clips, tmp_path, batch, monkeypatch):
    from streamrestore.batch import Manifest

    monkeypatch.setitem(sys.modules, "ray", None)
    path = tmp_path / MANIFEST_NAME
    path.write_text('{"key": "input:x", "state": "done"}\n{"attempts":')  # a crash cut the last line
    Manifest(path).update("input:y", state="pending")
    assert set(Manifest(path).records) == {"input:x", "input:y"}  # (the new record was glued to the torn one)

    out = tmp_path / "out"
    (out / MANIFEST_NAME).mkdir(parents=True)  # (a folder it cannot write its record in; root ignores modes)
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 2 and f"cannot write to output folder {out}: " in err and "Traceback" not in err


def test_a_full_disk_names_what_fills_it(tmp_path, monkeypatch):
    """The batch's record is the first write to fail on a full disk, but the long videos' chunk parts
    are what fill it: the error says how much they take, and where."""
    import builtins
    import errno

    from streamrestore.batch import Manifest, parts_bytes
    from streamrestore.errors import OutputError

    (tmp_path / PARTS_DIR / "clip-1234").mkdir(parents=True)
    (tmp_path / PARTS_DIR / "clip-1234" / "chunk-0000.mkv").write_bytes(bytes(3_000_000))
    manifest = Manifest(tmp_path / MANIFEST_NAME)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OutputError) as raised:
        manifest.update("input:x", state="pending")
    monkeypatch.undo()
    assert str(raised.value) == (f"cannot write the batch's record {tmp_path / MANIFEST_NAME}: No space left on device "
                                 f"(the long videos' chunk parts in {tmp_path / PARTS_DIR} take 3 MB); the outputs "
                                 "finished are kept, and a rerun resumes")
    (tmp_path / MANIFEST_NAME).mkdir()  # another cause (a folder in its place): no word of the parts
    with pytest.raises(OutputError) as raised:
        manifest.update("input:x", state="pending")
    assert "chunk parts" not in str(raised.value)
    # a part's size: a fifth of the raw 4:2:0 picture a frame, twice that at 10 bits
    assert parts_bytes(1920, 1080, "yuv420p", 100) == int(0.2 * 1920 * 1080 * 1.5 * 100)
    assert parts_bytes(1920, 1080, "yuv420p10le", 100) == 2 * parts_bytes(1920, 1080, "yuv420p", 100)


def test_a_full_disk_is_not_tried_again(clips, tmp_path, batch, monkeypatch):
    """A piece that failed for a full disk was tried --retries times more, each filling the disk again (farm
    F11): it fails at once, named, as does a UserError (cctv 9); another error is still tried again."""
    import errno

    import streamrestore.api
    from streamrestore.errors import OutputError

    monkeypatch.setitem(sys.modules, "ray", None)

    def tries(error: Exception, out: str) -> tuple[int, str]:
        """How many times a piece failing with ``error`` was tried, and what the batch said."""
        calls = []

        def failing(src, dst, face_restorer, **kwargs):
            calls.append(src)
            raise error

        monkeypatch.setattr(streamrestore.api, "restore_video", failing)
        code, err = batch(clips / "a.mp4", "-o", tmp_path / out, "--retries", "2")
        assert code == 1
        return len(calls), err

    count, err = tries(OSError(errno.ENOSPC, "No space left on device"), "out")
    assert count == 1 and "failed after 1 attempt(s): OSError: [Errno 28] No space left" in err
    assert tries(RuntimeError("decoder hiccup"), "out2")[0] == 3
    # (comes again: a DVR's audio the output cannot hold)
    assert tries(OutputError("a .mkv file cannot hold the input's pcm_mulaw audio without re-encoding it"), "out3")[0] == 1
    # as it comes: the writer's message, a quota, wrapped by Ray's task error (its cause)
    from streamrestore.batch import _disk_full

    class RayTaskError(Exception):
        def __init__(self, cause):
            super().__init__("ray::BatchWorker.restore_chunk() failed")
            self.cause = cause

    writer = OutputError("writing out.mp4 failed: No space left on device; free space and run again")
    assert _disk_full(writer) and _disk_full(RayTaskError(OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert _disk_full(RayTaskError(writer)) and not _disk_full(RayTaskError(RuntimeError("decoder hiccup")))


def test_a_ten_bit_inputs_record_names_the_encoder_that_writes_it(tmp_path, batch, monkeypatch):
    """A 10-bit 4:2:0 input is written by libx265; the manifest recorded libx264 and its options
    (the default encoder was asked for without the input's format)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    src = tmp_path / "ten.mkv"
    make_clip(src, frames=3, width=64, height=64, codec="libx265", pix_fmt="yuv420p10le")
    out = tmp_path / "out"
    assert batch(src, "-o", out)[0] == 0
    rec = _records(out)[f"input:{src.resolve()}"]
    assert rec["input_pix_fmt"] == "yuv420p10le"
    assert rec["settings"]["codec"] == "libx265" and "libx265 crf" in rec["settings"], rec["settings"]
    with av.open(str(out / "ten.restored.mkv")) as written:
        assert written.streams.video[0].codec_context.name == "hevc"
    code, err = batch(src, "-o", out, "--crf", "30")
    assert code == 0 and f"(libx265 crf: {rec['settings']['libx265 crf']}, now 30)" in err, err
    assert "other settings" not in batch(src, "-o", out)[1]


def test_the_face_choice_and_format_options_reach_the_workers(clips, tmp_path, batch, monkeypatch):
    """--match-threshold, --no-quality-gate and --pix-fmt reach each worker's pipeline and encoder."""
    from streamrestore.batch import BatchWorker

    monkeypatch.setitem(sys.modules, "ray", None)
    configs = []
    init = BatchWorker.__init__

    def spy(self, *args, **kwargs):
        configs.append(dict(kwargs["options"]["config"]))
        init(self, *args, **kwargs)

    monkeypatch.setattr(BatchWorker, "__init__", spy)
    out = tmp_path / "out"
    code, err = batch(clips / "a.mp4", "-o", out, "--match-threshold", "0.55", "--no-quality-gate", "--pix-fmt",
                      "yuv444p")
    assert code == 0, err
    assert configs and all(c["match_threshold"] == 0.55 and not c["gate"].enabled for c in configs), configs
    with av.open(str(out / "a.restored.mp4")) as written:
        assert written.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_a_whole_files_worker_leaves_the_unlike_warning_to_the_summary(clips, tmp_path, batch, monkeypatch):
    """A worker's mid-run "track 1 scores 0.12 against ..." line named no input; the input's done
    line counts the warning and the summary says it with the input's name."""
    import streamrestore.api

    monkeypatch.setitem(sys.modules, "ray", None)
    said_early = []
    restore_video = streamrestore.api.restore_video

    def spy(src, dst, face_restorer, **kwargs):
        said_early.append(face_restorer.say_unlike_early)
        return restore_video(src, dst, face_restorer, **kwargs)

    monkeypatch.setattr(streamrestore.api, "restore_video", spy)
    assert batch(clips / "a.mp4", "-o", tmp_path / "out")[0] == 0
    assert said_early == [False]


def test_the_summary_names_the_inputs_whose_faces_all_stayed_as_they_were(clips, tmp_path, batch, monkeypatch):
    """"3 succeeded; 120 frames and 1 photo restored" where no face was found in one, the gate left every face
    of another (too dark) and a photo's face was clean: the main command says "no faces were found" and "no
    face was changed"; the batch's summary now names such inputs, each with why (unusual U3)."""
    from streamrestore.batch import BatchResult, _unchanged_because

    monkeypatch.setitem(sys.modules, "ray", None)
    code, err = batch(clips / "a.mp4", clips / "b.mkv", "-o", tmp_path / "out")
    assert code == 0, err
    assert "no face was changed in 2 of the inputs done (their faces as they were; videos encoded again):" in err
    assert f"    {clips / 'a.mp4'}: no face found" in err and f"    {clips / 'b.mkv'}: no face found" in err

    dark = {"faces": 60, "clean": 60, "dim": 60, "tinted": 0, "grainy": 0, "seen": 60, "strength": 1.0}
    assert _unchanged_because(dark) == "0 faces restored and 60 too dark or flat to judge left as they were"
    assert _unchanged_because({**dark, "tinted": 60}) == \
        "0 faces restored and 60 under one strong colour of light left as they were"
    assert _unchanged_because({**dark, "clean": 59, "dim": 59}) == ""  # one face changed
    assert _unchanged_because({**dark, "clean": 0, "dim": 0, "strength": 0.0}).startswith("60 faces left as they were")
    assert _unchanged_because({}) == ""  # (a chunked input's counts are not known)
    result = BatchResult(succeeded={"x.mp4": "o/x.mp4", "y.mp4": "o/y.mp4"}, unchanged={"y.mp4": "no face found"})
    assert "no face was changed in 1 of the inputs done" in result.summary() and "x.mp4" not in result.summary()


def test_a_rerun_says_why_it_restores_a_finished_input_again(clips, tmp_path, batch, monkeypatch):
    """A farm's copy or touch of the inputs had a rerun restore them again, unsaid (farm F12): each such input
    says why."""
    import shutil

    monkeypatch.setitem(sys.modules, "ray", None)
    src = tmp_path / "a.mp4"
    shutil.copy(clips / "a.mp4", src)
    out = tmp_path / "out"
    assert batch(src, "-o", out)[0] == 0
    code, err = batch(src, "-o", out)
    assert code == 0 and "a.mp4: already done" in err and "restored again" not in err
    stat = src.stat()
    os.utime(src, (stat.st_atime, stat.st_mtime + 60))  # (touched)
    code, err = batch(src, "-o", out)
    assert code == 0 and ("a.mp4: done by an earlier batch, restored again: the input changed since (its size or "
                          "modification time") in err
    (out / "a.restored.mp4").unlink()
    code, err = batch(src, "-o", out)
    assert code == 0 and "restored again: its output a.restored.mp4 is gone" in err
    from streamrestore.batch import _why_done_again

    assert _why_done_again({"state": "done"}, {}, out / "a.restored.mp4", False) == "the input is gone"
    assert "of an older version" in _why_done_again({"state": "done"}, {"size": 1, "mtime": 2.0},
                                                    out / "a.restored.mp4", False)


def test_a_rerun_removes_the_temporary_files_a_killed_worker_left(clips, tmp_path, batch, monkeypatch):
    from streamrestore.batch import PARTS_DIR

    monkeypatch.setitem(sys.modules, "ray", None)
    import hashlib

    out = tmp_path / "out"
    src = str((clips / "a.mp4").resolve())
    parts = out / PARTS_DIR / f"a-{hashlib.sha1(src.encode()).hexdigest()[:8]}"  # (a's own parts folder)
    (out / PARTS_DIR / "b-0123abcd").mkdir(parents=True)
    parts.mkdir()
    left = [out / ".a.restored.0123abcd.partial.mp4", parts / ".chunk-0000-0-20.mkv.partial.mkv"]
    # not this batch's (b is not an input: another batch into the folder may be writing them)
    kept = [out / "notes.txt", out / ".b.restored.0123abcd.partial.mp4",
            out / PARTS_DIR / "b-0123abcd" / ".chunk-0000-0-20.mkv.partial.mkv"]
    for path in left + kept:
        path.write_bytes(b"x")
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 0, err
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)


def test_the_temporary_files_of_a_worker_killed_during_the_batch_go_with_its_end(clips, tmp_path, batch, monkeypatch):
    """A worker killed mid-file (the OOM killer, on a small machine) left its half-written output hidden in the
    output folder after the batch had ended, one per attempt, until a rerun."""
    import streamrestore.batch as batch_module

    monkeypatch.setitem(sys.modules, "ray", None)
    restore_whole = batch_module.BatchWorker.restore_whole

    def killed_once_before(self, src, dst, *args, **kwargs):  # (what a killed attempt at it left)
        Path(dst).with_name(f".{Path(dst).stem}.0badf00d.partial{Path(dst).suffix}").write_bytes(b"\0" * 48)
        return restore_whole(self, src, dst, *args, **kwargs)

    monkeypatch.setattr(batch_module.BatchWorker, "restore_whole", killed_once_before)
    out = tmp_path / "out"
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 0, err
    assert (out / "a.restored.mp4").is_file() and not list(out.glob(".*partial*"))


def test_a_rerun_with_other_photos_in_the_reference_folder_says_so(clips, tmp_path, batch, monkeypatch, refs):
    """The batch recorded the references by their folder's name only: other photos put in the same folder (another
    person's) made a rerun take the old output for "already done", unsaid."""
    from PIL import Image

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    assert batch(clips / "a.mp4", "-o", out, "--refs", refs)[0] == 0
    code, err = batch(clips / "a.mp4", "-o", out, "--refs", refs)
    assert code == 0 and ": already done (" in err and "other settings" not in err
    photo = sorted(refs.iterdir())[0]
    with Image.open(photo) as picture:  # (the same face, other bytes: a photo edited or replaced)
        picture.convert("RGB").save(photo, format="JPEG", quality=60)
    code, err = batch(clips / "a.mp4", "-o", out, "--refs", refs)
    assert code == 0 and "kept from an earlier batch made with other settings (reference files: " in err, err


def test_a_rerun_with_other_settings_says_it_keeps_the_output_made_with_the_old(clips, tmp_path, batch, monkeypatch):
    """It said "already done" as if the new settings had been used."""
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    assert batch(clips / "a.mp4", "-o", out)[0] == 0
    code, err = batch(clips / "a.mp4", "-o", out, "--crf", "30")
    assert code == 0 and ": already done (" in err
    assert (f"warning: {(clips / 'a.mp4').resolve()}: kept from an earlier batch made with other settings (libx264 crf: "
            "16, now 30); delete a.restored.mp4 to have it made with these") in err
    code, err = batch(clips / "a.mp4", "-o", out, "--crf", "16", "--preset", "veryfast")  # (x264's defaults: the same)
    assert code == 0 and "other settings" not in err
    # a format (or crf) the outputs' codec refuses is said before anything runs (it was a traceback in planning)
    code, err = batch(clips / "a.mp4", "-o", out, "--pix-fmt", "yuv420p12le")
    assert code == 2 and "bad encoder option: libx264 cannot write yuv420p12le video" in err, err
    code, err = batch(clips / "a.mp4", "-o", out, "--crf", "55")
    assert code == 2 and "bad encoder option: libx264 takes crf 0-51, got 55" in err, err
    # a pixel format asked for is a setting too, and the batch writes it
    code, err = batch(clips / "a.mp4", "-o", out, "--pix-fmt", "yuv444p")
    assert code == 0 and "(pix_fmt: the input's, now yuv444p)" in err, err
    (out / "a.restored.mp4").unlink()
    assert batch(clips / "a.mp4", "-o", out, "--pix-fmt", "yuv444p")[0] == 0
    from streamrestore.video.reader import probe

    assert probe(out / "a.restored.mp4").pix_fmt == "yuv444p"
    # an output of a version that recorded no settings: kept, and said once (it was kept unsaid whatever changed)
    (key, record), = [(k, r) for k, r in _records(out).items() if k.startswith("input:")]
    assert record["settings"]["model file"] == "none"  # (identity: no file; lite's is its sha256's start)
    with open(out / MANIFEST_NAME, "a") as manifest:
        manifest.write(json.dumps({k: v for k, v in record.items() if k != "settings"}) + "\n")
    code, err = batch(clips / "a.mp4", "-o", out, "--pix-fmt", "yuv444p", "--crf", "30")
    assert code == 0 and ": already done (" in err and "other settings" not in err
    assert ("warning: 1 output kept as already done (a.restored.mp4) was made by an older streamrestore that did not "
            "record its settings (model, references, options): delete an output to have it made with these") in err


def test_a_resumed_batchs_rate_counts_only_the_frames_it_restores(capsys):
    """The chunks an earlier run finished were counted as restored in no time: "2049.3 fps, ETA 0:00"."""
    from streamrestore.batch import _Progress

    bar = _Progress(True)
    bar.total = 60  # (the planning: another input's 40 frames are not counted yet)
    bar.line("long.mp4 chunk 1/2: already done", 40, earlier=True)
    bar.total, bar.counting = 100, True  # (the planning done)
    bar.start -= 10  # (ten seconds later)
    bar.line("long.mp4 chunk 2/2 done", 10)
    lines = capsys.readouterr().err.splitlines()
    # (planning's lines carry no count: it said "40/60", then "/100")
    assert lines[0] == "batch: long.mp4 chunk 1/2: already done"
    assert lines[1].startswith("batch: 50/100 frames (50%), 1.0 fps, ETA 0:5")  # 50 frames left at 1 a second


def test_the_count_said_never_goes_back(capsys):
    """A piece that failed and is tried again starts at 0: its frames left the count ("44/180", "29/180", "0/180")."""
    from streamrestore.batch import _Progress

    bar = _Progress(True)
    bar.total, bar.counting = 180, True
    bar.under_way["a"] = 44
    bar.line("under way: a")
    bar.under_way["a"] = 0  # (tried again)
    bar.line("a failed (attempt 1 of 3), trying again")
    bar.under_way["a"] = 50
    bar.line("under way: a")
    del bar.under_way["a"]  # (failed for good: its 60 frames will not be restored)
    bar.drop(60)
    bar.line("a failed after 3 attempt(s)")
    lines = capsys.readouterr().err.splitlines()
    counts = [line.split(" frames")[0] for line in lines]
    # (held while redone; a piece given up leaves the total and the count, which would else stand above the work)
    assert counts == ["batch: 44/180", "batch: 44/180", "batch: 50/180", "batch: 0/120"]
    # the rate and the time left are the frames actually done's, not the held count's
    bar = _Progress(True)
    bar.total, bar.counting, bar.start = 100, True, bar.start - 10.0  # (10 s in)
    bar.under_way["a"] = 40
    bar.line("under way: a")
    bar.under_way["a"] = 10  # (tried again: 10 frames done of it now)
    bar.line("under way: a")
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.startswith("batch: 40/100 frames (40%), 1.0 fps, ETA 1:30"), said


def test_rays_own_lines_are_plain_and_its_secure_default_not_announced(monkeypatch):
    """Every batch began with Ray's WARNING that token authentication is enabled (its secure default);
    into a log file the workers' lines came behind colour codes ("\\x1b[36m(BatchWorker pid=...)")."""
    import io
    import logging

    from streamrestore.batch import _plain_worker_prefixes, _without_token_enabled_notice

    class Said(logging.Handler):
        lines: list = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    notices = logging.getLogger("ray._private.authentication.authentication_token_setup")
    said = Said()
    notices.addHandler(said)  # (Ray's loggers do not propagate to pytest's)
    try:
        with _without_token_enabled_notice():
            notices.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled ...")
            notices.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
        notices.warning("Token authentication is enabled (after the batch: Ray's own again)")
    finally:
        notices.removeHandler(said)
    assert [line[:33] for line in said.lines] == ["Token authentication is disabled ", "Token authentication is enabled ("]

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # (a file or a pipe: not a terminal)
    with _plain_worker_prefixes():
        assert os.environ["RAY_COLOR_PREFIX"] == "0"
    assert "RAY_COLOR_PREFIX" not in os.environ
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")  # the user's own choice stays
    with _plain_worker_prefixes():
        assert os.environ["RAY_COLOR_PREFIX"] == "1"


def test_an_output_a_worker_finished_after_the_batch_stopped_counts_as_done(clips, tmp_path, batch, monkeypatch):
    """A stop signal lands while workers write; Ray ends them seconds later, and one finished its
    output meanwhile, its record left "running": a rerun restored it again, and the interrupt's count
    left it out."""
    import streamrestore.batch as batch_module
    from streamrestore.batch import Manifest

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    assert batch(clips / "a.mp4", "-o", out)[0] == 0
    key = f"input:{(clips / 'a.mp4').resolve()}"
    Manifest(out / MANIFEST_NAME).update(key, state="running")  # (as the stopped batch left it)
    written = (out / "a.restored.mp4").stat().st_mtime_ns
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 0 and ": already done (" in err and (out / "a.restored.mp4").stat().st_mtime_ns == written
    assert Manifest(out / MANIFEST_NAME).get(key)["state"] == "done"

    Manifest(out / MANIFEST_NAME).update(key, state="running")

    def stopped(self):  # the planning found it running, then the batch was interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module._Batch, "plan_all", stopped)
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 130 and "interrupted; 1 output finished in " in err


def test_an_interrupted_batch_says_what_it_kept(clips, tmp_path, batch, monkeypatch):
    import streamrestore.batch as batch_module

    monkeypatch.setitem(sys.modules, "ray", None)

    def interrupted(self, worker_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module._Batch, "run_here", interrupted)
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out")
    assert code == 130
    assert "interrupted; 0 outputs finished in " in err and "a rerun resumes there" in err
    assert "the output was not written" not in err
    # finished chunks of a long video are named with where they are (a hidden folder of lossless video)
    parts = tmp_path / "out" / ".streamrestore-parts" / "long-1234abcd"
    parts.mkdir(parents=True)
    (parts / "chunk-0000-0-250.mkv").write_bytes(b"x" * 2_500_000)
    (parts / "chunk-0000-0-250.types.json").write_text("[]")
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out")
    assert code == 130 and (f"kept, and 1 finished chunk of long videos: 2.5 MB of lossless video in "
                            f"{tmp_path / 'out' / '.streamrestore-parts'}, which a rerun joins (or delete that "
                            "folder); a rerun resumes there") in err


def test_a_stop_signal_ends_a_batch_as_ctrl_c_does(tmp_path, faces):
    """SIGTERM (a scheduler's stop, ``timeout``): ``ray.init`` had put its own handler in, and the batch
    ended with a native stack dump (exit 134), the local Ray's worker restoring on and its temporary
    file left beside the output. Now as after Ctrl-C: exit 143, what was kept said, nothing left."""
    make_clip(tmp_path / "long.mp4", width=320, height=240, frames=400, fps=25)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "streamrestore.cli", "batch", str(tmp_path / "long.mp4"), "-o", str(out),
            "--model", "identity", "--workers", "1", "--no-progress", *_face_args(faces)]
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob(".long.restored.*.partial.mp4")):
        time.sleep(0.1)  # (the worker opened its output: restoring)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM; 0 outputs finished in " in err and "SIGTERM received" not in err
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


@pytest.mark.parametrize("args, words", [
    ((), "no input"),
    (("{clip}", "--chunk-seconds", "0"), "--chunk-seconds"),
    (("{clip}", "--retries", "-1"), "--retries"),
    (("{clip}", "--list", "{missing}"), "--list"),
    (("{clip}", "--crop-resolution", "8"), "--crop-resolution"),
    (("{clip}", "--end", "3"), "batch restores whole files; a window (--start/--end) is the main command's"),
    (("{clip}", "--force"), "batch takes no --force: it writes over only the outputs it wrote itself"),
    (("{missing}",), "no such file: "),
])
def test_usage_errors_exit_2(clips, tmp_path, batch, args, words):
    args = [a.format(clip=clips / "a.mp4", missing=tmp_path / "nope.txt") for a in args]
    code, err = batch(*args, "-o", tmp_path / "out")
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()  # nothing started


def test_a_bad_pipeline_option_is_a_usage_error_before_any_worker(clips, tmp_path, monkeypatch):
    """In a worker a ValueError would only read as "the actor died", again for each of them."""
    from streamrestore.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)
    for options in ({"detect_every": 2.0}, {"max_faces": 0}, {"unmatched": "drop"}, {"detect_size": 1000}):
        with pytest.raises(UserError, match="bad pipeline option: "):
            run([clips / "a.mp4"], out_dir=tmp_path / "out", model="identity", ray="local", progress=False, **options)
    # restore_video's deinterlace="fields" doubles the frames, which a batch's chunks (counted from packets) do not
    with pytest.raises(UserError, match="a frame per field is the main command's --field-rate"):
        run([clips / "a.mp4"], out_dir=tmp_path / "out", model="identity", ray="local", progress=False,
            deinterlace="fields")
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_is_a_usage_error_before_ray_starts(clips, tmp_path, faces, capsys):
    code = main(["batch", str(clips / "a.mp4"), "-o", str(tmp_path / "out"), "--model", "nope", *_face_args(faces)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'nope'" in err and "Traceback" not in err and "worker" not in err


def test_a_mistake_the_workers_find_ends_the_batch_once_with_its_message(local_ray, clips, tmp_path, faces):
    """On a cluster the driver does not load the model (it may have no GPU): a model every worker
    fails to load is one usage error, not a worker death retried for every input."""
    from streamrestore.errors import ModelError

    out = tmp_path / "out"
    with pytest.raises(ModelError, match="the workers could not start: unknown model 'nope'"):
        run([clips / "a.mp4", clips / "b.mkv"], out_dir=out, model="nope", ray="auto", workers=2, retries=3,
            progress=False, **faces)
    assert not list(out.glob("*.restored.*"))


def test_more_workers_than_ray_has_room_for_are_cut_to_what_fits_not_waited_for(local_ray, clips, tmp_path, faces,
                                                                                 caplog):
    """An actor Ray cannot place waits for CPUs that never come: the batch hung, silently, for ever
    (``--workers 4`` or ``--torch-threads 3`` on 2 cores)."""
    from streamrestore.errors import UserError

    with caplog.at_level("WARNING", logger="streamrestore"):
        result = run([clips / "a.mp4", clips / "b.mkv", clips / "c.mp4"], out_dir=tmp_path / "out", model="identity",
                     ray="auto", workers=4, retries=0, progress=False, **faces)
    assert len(result.succeeded) == 3 and not result.failed
    assert "--workers 4: Ray has room for 2 (2 CPUs, 1 CPU each); 2 work" in caplog.text
    with pytest.raises(UserError, match=r"--torch-threads 3 gives each worker 3 CPUs; Ray has 2: give --torch-threads 2 "
                                        r"or less"):
        run([clips / "a.mp4"], out_dir=tmp_path / "out3", model="identity", ray="auto", torch_threads=3, progress=False,
            **faces)
    # a cluster: what one node has, not the sum (two 4-CPU nodes give no actor 6 CPUs)
    from streamrestore.batch import _workers_that_fit

    nodes = [{"CPU": 4.0}, {"CPU": 4.0, "GPU": 1.0}]
    with pytest.raises(UserError, match="--torch-threads 6 gives each worker 6 CPUs; Ray's largest node has 4"):
        _workers_that_fit(2, nodes, 6, 0.0)
    assert _workers_that_fit(4, nodes, 3, 0.0) == 2 and _workers_that_fit(3, nodes, 2, 0.0) == 3
    assert _workers_that_fit(2, nodes, 1, 1.0) == 1
    with pytest.raises(UserError, match="each worker asks for 2 GPU; no node of Ray's has that"):
        _workers_that_fit(1, nodes, 1, 2.0)


def test_the_main_commands_pipeline_options_reach_the_workers(clips, tmp_path, faces, monkeypatch):
    """--reference-detail and --identity-tolerance as in the main command: into each worker's PipelineConfig;
    --no-deinterlace into run()."""
    import streamrestore.batch as batch_module
    from streamrestore.batch import BatchWorker
    from streamrestore.quality import IdentityGateConfig
    from streamrestore.reference_detail import ReferenceDetailConfig

    given = {}
    monkeypatch.setattr(batch_module, "run", lambda inputs, **kw: given.update(kw) or batch_module.BatchResult())
    argv = ["batch", str(clips / "a.mp4"), "-o", str(tmp_path / "out"), "--model", "identity",
            "--reference-detail", "0.3", "--identity-tolerance", "0", "--no-deinterlace", *_face_args(faces),
            "--fast-vae", str(tmp_path / "taesd")]
    assert main(argv) == 0
    assert given["deinterlace"] is False and given["fast_vae"] == str(tmp_path / "taesd")
    assert given["reference_detail"] == ReferenceDetailConfig(strength=0.3)
    assert given["identity_gate"] == IdentityGateConfig(enabled=False)
    config = {"reference_detail": given["reference_detail"], "identity_gate": given["identity_gate"]}
    worker = BatchWorker([], options={"model": "identity", "config": config, **faces})
    assert worker.template.config.reference_detail.strength == 0.3
    assert not worker.template.config.identity_gate.enabled


def test_a_chunk_the_disk_cannot_hold_leaves_no_half_part(clips, tmp_path, monkeypatch, faces):
    """A chunk that failed on a full disk at its part's close left its 2 MB half part for every attempt: the
    disk stayed full for the retries and for the next job on the host."""
    from streamrestore.batch import BatchWorker, _PartSink, plan_input

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_PartSink, "close", full)
    plan = plan_input(clips / "long.mp4", chunk_seconds=0.8)
    worker = BatchWorker([], options={"model": "identity", **faces})
    part = tmp_path / "parts" / ".chunk-0000.mkv"
    part.parent.mkdir()
    with pytest.raises(OSError, match="No space left"):
        worker.restore_chunk(plan, 0, str(part), str(tmp_path / "out.mp4"))
    assert list(part.parent.iterdir()) == []


def test_a_batch_ended_by_an_error_leaves_no_half_output(clips, tmp_path, monkeypatch, faces):
    """A batch ended by an error (its record could not be written on a full disk) left the half output a worker
    was writing: the disk stayed full until a rerun."""
    from streamrestore import batch as batch_module

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    half = out / ".a.restored.0123abcd.partial.mp4"

    def full(self, worker_args):
        half.write_bytes(b"x" * 1000)  # (as a writer ended mid-file leaves it)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_module._Batch, "run_here", full)
    with pytest.raises(OSError, match="No space left"):
        run([clips / "a.mp4"], out_dir=out, model="identity", **faces, progress=False)
    assert not half.exists()


def test_a_second_batch_into_a_folder_being_written_is_refused(clips, tmp_path, faces, batch, monkeypatch):
    """Two batches into one folder at once (a cron job that overran) both did all the work, each writing over the
    other's outputs. The second is refused while the first runs; once it has ended, a run goes ahead."""
    from streamrestore.output_file import hold_record, release_temp

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).touch()
    first = hold_record(out / MANIFEST_NAME)  # (a run under way)
    try:
        code, err = batch(clips / "a.mp4", "-o", out)
        assert code == 75 and f"another streamrestore batch is writing to {out}; wait for it" in err
        assert not (out / "a.restored.mp4").exists()
    finally:
        release_temp(first)
    code, err = batch(clips / "a.mp4", "-o", out)
    assert code == 0, err
    code, err = batch(clips / "a.mp4", "-o", out)  # (a run ended releases the folder: a rerun finds its work done)
    assert code == 0 and "already done" in err


def test_same_output_name_twice_is_a_usage_error(clips, tmp_path, batch):
    other = tmp_path / "x"
    other.mkdir()
    make_clip(other / "a.mp4", frames=3)
    code, err = batch(clips / "a.mp4", other / "a.mp4", "-o", tmp_path / "out")
    assert code == 2 and "both be written" in err


def test_retries_exhausted_is_a_failure(local_ray, clips, tmp_path, monkeypatch, faces):
    monkeypatch.setenv(FAIL_ENV, "a.mp4:*")
    out = tmp_path / "out"
    result = run([clips / "a.mp4"], out_dir=out, model="identity", **faces, retries=0, workers=1, progress=False)
    src = str((clips / "a.mp4").resolve())
    assert result.exit_code == 1 and "injected failure" in result.failed[src]
    rec = _records(out)[f"input:{src}"]
    assert rec["state"] == "failed" and rec["attempts"] == 1 and "injected failure" in rec["error"]
    assert not (out / "a.restored.mp4").exists()


def test_rerun_after_a_failed_chunk_redoes_only_that_chunk(local_ray, clips, tmp_path, monkeypatch, faces):
    out = tmp_path / "out"
    options = dict(out_dir=out, model="identity", **faces, chunk_seconds=0.8, retries=0, workers=2, progress=False)
    monkeypatch.setenv(FAIL_ENV, "long.mp4:2")
    first = run([clips / "long.mp4"], **options)
    assert first.exit_code == 1 and "chunk 2" in next(iter(first.failed.values()))
    assert len(list((out / PARTS_DIR).glob("*/*.mkv"))) == 2  # the two good chunks are kept
    done = {k: r["time"] for k, r in _records(out).items() if k.startswith("chunk:") and r["state"] == "done"}
    assert len(done) == 2

    monkeypatch.delenv(FAIL_ENV)
    second = run([clips / "long.mp4"], **options)
    assert second.exit_code == 0 and second.frames == 20  # only the failed chunk was restored
    records = _records(out)
    assert all(records[k]["time"] == t for k, t in done.items())  # untouched
    _same_media(clips / "long.mp4", out / "long.restored.mp4")


def test_a_resumed_batch_makes_again_the_chunks_made_otherwise(local_ray, clips, tmp_path, monkeypatch, faces, capsys):
    """A stopped batch resumed with another model (or by a newer version, after an upgrade) joined the chunks
    made before with the new ones: one output of two models' pictures, unsaid. A part made with other settings,
    or whose record holds none (an older version's), is made again, said; one made with these is kept."""
    out = tmp_path / "out"
    options = dict(out_dir=out, model="identity", **faces, chunk_seconds=0.8, retries=0, workers=2)
    monkeypatch.setenv(FAIL_ENV, "long.mp4:2")
    assert run([clips / "long.mp4"], progress=False, **options).exit_code == 1  # chunks 0 and 1 kept
    monkeypatch.delenv(FAIL_ENV)
    records = _records(out)
    old = {k: r for k, r in records.items() if k.startswith("chunk:") and r["state"] == "done"}
    assert len(old) == 2 and all(r["settings"]["model"] == "identity" for r in old.values())
    first, second = sorted(old)
    with open(out / MANIFEST_NAME, "a") as manifest:  # (as a version that recorded none wrote it)
        manifest.write(json.dumps({k: v for k, v in records[first].items() if k != "settings"}) + "\n")
    capsys.readouterr()
    again = run([clips / "long.mp4"], progress=True, **options)
    err = capsys.readouterr().err
    assert again.exit_code == 0 and again.frames == 40, err  # chunk 0 and the failed one
    assert "long.mp4 chunk 1/3: made again: an older streamrestore made it, which did not record its settings" in err
    assert "long.mp4 chunk 2/3: already done" in err
    _same_media(clips / "long.mp4", out / "long.restored.mp4")
    # another model on resume: the parts made with the first are made again
    monkeypatch.setenv(FAIL_ENV, "long.mp4:2")
    assert run([clips / "long.mp4"], progress=False, **{**options, "out_dir": tmp_path / "o2"}).exit_code == 1
    monkeypatch.delenv(FAIL_ENV)
    capsys.readouterr()
    again = run([clips / "long.mp4"], progress=True, **{**options, "out_dir": tmp_path / "o2", "model": "lite"})
    err = capsys.readouterr().err
    assert again.exit_code == 0 and again.frames == 60, err
    assert "long.mp4 chunk 2/3: made again: it was made with other settings (model file: none, now " in err
    # what only the join uses (--strip-metadata, the encoder's options) keeps the parts: hours of them
    monkeypatch.setenv(FAIL_ENV, "long.mp4:2")
    assert run([clips / "long.mp4"], progress=False, **{**options, "out_dir": tmp_path / "o3"}).exit_code == 1
    monkeypatch.delenv(FAIL_ENV)
    capsys.readouterr()
    again = run([clips / "long.mp4"], progress=True, strip_metadata=True, crf=20,
                **{**options, "out_dir": tmp_path / "o3"})
    err = capsys.readouterr().err
    assert again.exit_code == 0 and again.frames == 20 and "made again" not in err, err


def test_adapt_runs_on_one_worker_and_the_others_load_its_fine_tune(local_ray, clips, tmp_path, refs, faces, capsys):
    """--adapt in batch: the first worker adapts while the others wait, they load its weights (the
    summary names the person and the seconds); a rerun loads them from the cache."""
    from streamrestore.model.adapt import AdaptConfig

    # two photos, two steps: the mechanism, not a useful fine-tune (lite's head adapts on a CPU in seconds)
    adapt = AdaptConfig(steps=2, pairs=2, min_photos=2, cache_dir=str(tmp_path / "adapted"))
    result = run([clips / "a.mp4", clips / "b.mkv"], refs=refs, out_dir=tmp_path / "out", ray="auto", workers=2,
                 adapt=adapt, **faces)
    err = capsys.readouterr().err
    assert result.exit_code == 0, result.summary()
    assert list(result.adapted) == ["refs"] and result.adapted["refs"] > 0
    assert "adapted the model to refs in" in err and "the other workers load it" in err
    assert "adapted: refs (" in result.summary() and " s)" in result.summary()
    assert len(list((tmp_path / "adapted").iterdir())) == 1  # one fine-tune, no temporary left
    again = run([clips / "a.mp4"], refs=refs, out_dir=tmp_path / "again", ray="auto", workers=2, adapt=adapt,
                progress=False, **faces)
    assert again.adapted == {"refs": 0.0} and "adapted: refs (from the cache)" in again.summary()


def test_a_worker_given_the_first_workers_fine_tune_does_not_adapt(tmp_path, refs, faces):
    """How workers on other machines (their own cache folders) get the fine-tune: ``adapted``."""
    from streamrestore.batch import BatchWorker
    from streamrestore.model.adapt import AdaptConfig

    def worker(folder, adapted=None):
        adapt = AdaptConfig(steps=2, pairs=2, min_photos=2, cache_dir=str(tmp_path / folder))
        return BatchWorker([str(refs)], options={"model": "lite", "adapt": adapt, **faces}, adapted=adapted)

    first = worker("first").adaptation()
    assert first["people"]["refs"] > 0 and len(first["weights"]) == 1
    other = worker("other", adapted=first["weights"]).adaptation()
    assert other["people"] == {"refs": 0.0}
    key = next(iter(first["weights"]))
    for name, tensor in first["weights"][key].items():
        assert torch.equal(other["weights"][key][name], tensor), name
    assert worker("third").adaptation()["people"]["refs"] > 0  # without them it adapts itself


def test_batch_takes_adapt_and_warns_without_refs(clips, tmp_path, batch, monkeypatch):
    import streamrestore.batch as batch_module
    from streamrestore.model.adapt import AdaptConfig

    given = {}
    monkeypatch.setattr(batch_module, "run", lambda inputs, **kw: given.update(kw) or batch_module.BatchResult())
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--refs", tmp_path, "--adapt", "--adapt-steps", "7")
    assert code == 0 and given["adapt"] == AdaptConfig(steps=7) and "ignored" not in err
    code, err = batch(clips / "a.mp4", "-o", tmp_path / "out", "--adapt")
    assert code == 0 and "--adapt ignored" in err


def test_a_file_without_usable_timestamps_is_one_piece_and_keeps_every_frame(clips, tmp_path, batch, monkeypatch):
    """A raw .h264 stream (no pts) and a broken mux (every pts 0) cannot be cut and joined by their
    timestamps: each is one piece, restored by the main command's path, every frame kept."""
    raw, zero = tmp_path / "raw.h264", tmp_path / "zero.mov"
    make_raw_stream(clips / "long.mp4", raw)
    make_zero_pts_clip(zero, 40, keyframe_every=5)
    for src, frames in ((raw, 60), (zero, 40)):
        plan = plan_input(src, 0.5)
        assert plan.chunks == [(0, frames)] and plan.frames == frames
    monkeypatch.setitem(sys.modules, "ray", None)
    out_dir = tmp_path / "out"
    code, err = batch(raw, zero, "-o", out_dir, "--chunk-seconds", "0.5")
    assert code == 0, err
    assert count_frames(out_dir / "raw.restored.mkv") == 60  # (a raw stream is written to Matroska)
    assert count_frames(out_dir / "zero.restored.mov") == 40
    said = [line for line in err.splitlines() if line.startswith("  warning: ")]  # as the main command says
    assert f"  warning: {raw.resolve()}: 60 frame(s) had no timestamp (a raw stream?): each was placed one frame " \
           "after the frame before at 25 fps" in said, said
    assert any(line.startswith(f"  warning: {zero.resolve()}: ") and "had a timestamp not after" in line
               for line in said), said


def test_a_folder_of_photos_and_videos_is_restored_and_a_rerun_skips_it(local_ray, clips, tmp_path, batch):
    """Photos in a batch folder are restored as the main command restores them (a photo nothing
    changed in: its own bytes); one that cannot be read fails alone; a rerun does nothing again."""
    import shutil

    import cv2

    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(clips / "a.mp4", folder / "a.mp4")
    picture = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    cv2.imwrite(str(folder / "p.jpg"), picture)
    cv2.imwrite(str(folder / "q.png"), picture)
    (folder / "broken.webp").write_bytes(b"not a photo")
    (folder / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    code, err = batch(folder, "-o", out)
    assert code == 1, err
    assert "3 succeeded" in err and "1 failed" in err and f"failed: {(folder / 'broken.webp').resolve()}" in err
    assert "p.jpg done (a photo, " in err and "a.mp4 done (8 frames, " in err
    assert "; 8 frames and 2 photos restored in " in err, err
    assert (out / "p.restored.jpg").read_bytes() == (folder / "p.jpg").read_bytes()
    assert np.array_equal(cv2.imread(str(out / "q.restored.png")), picture)
    _same_media(folder / "a.mp4", out / "a.restored.mp4")
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "a.restored.mp4", "p.restored.jpg",
                                                            "q.restored.png"])
    assert count_frames(out / "p.restored.jpg") == 1 and count_frames(folder / "broken.webp") == -1

    code, err = batch(folder, "-o", out)
    assert code == 1 and err.count(": already done (") == 3, err


def test_a_batch_of_photos_counts_photos(tmp_path, batch, monkeypatch):
    """Progress of a folder of photos counts photos, not frames."""
    import cv2

    monkeypatch.setitem(sys.modules, "ray", None)
    folder = tmp_path / "album"
    folder.mkdir()
    picture = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(folder / name), picture)
    code, err = batch(folder, "-o", tmp_path / "out")
    assert code == 0, err
    assert "batch: 2/2 photos (100%), " in err and " a minute: " in err and " frames (" not in err, err
    assert "; 2 photos restored in " in err, err


def test_an_interlaced_video_in_chunks_is_deinterlaced_as_the_main_command_does(local_ray, tmp_path, batch, faces):
    """Each chunk is read deinterlaced (its warm-up frame before gives bwdif the frame it looks back
    at), and the join describes progressive frames: the same pictures as the main command's."""
    from media_utils import combing, make_interlaced_clip

    src = tmp_path / "camcorder.mp4"
    make_interlaced_clip(src, frames=30, options={"g": "10", "preset": "medium", "crf": "18"})
    out = tmp_path / "out"
    code, err = batch(src, "-o", out, "--chunk-seconds", "0.4")
    assert code == 0, err
    assert "camcorder.mp4 joined (" in err  # in chunks
    said = [line for line in err.splitlines() if line.startswith("  warning: ")]
    assert said == [f"  warning: {src.resolve()}: the input is interlaced: each frame was deinterlaced (bwdif: one "
                    "frame at its first field's instant, timestamps kept); --no-deinterlace (library: "
                    "deinterlace=False) keeps the fields woven as they are"]  # every chunk's: said once
    main_out = tmp_path / "main.mp4"
    assert main([str(src), "-o", str(main_out), "--model", "identity", *_face_args(faces), "--no-progress"]) == 0
    joined, single = _decoded(out / "camcorder.restored.mp4"), _decoded(main_out)
    assert len(joined) == len(single) == 30
    assert all(combing(a) < 1.5 for _, a in joined)
    assert all(np.abs(a.astype(int) - b).mean() < 1.0 for (_, a), (_, b) in zip(joined, single))
    assert read_video_timing(out / "camcorder.restored.mp4") == read_video_timing(src)
    with av.open(str(out / "camcorder.restored.mp4")) as joined_file:  # (the join says what made its faces)
        assert joined_file.metadata.get("comment", "").startswith("faces restored by streamrestore ")


def test_a_video_that_changes_size_is_restored_in_chunks_as_a_whole_and_its_warnings_are_said(local_ray, tmp_path,
                                                                                              batch, faces):
    """A capture that switches to a smaller picture mid-way: every chunk is read at the first size (one
    after the switch too), so the joined output is the main command's, and what the main command warns
    of reaches the batch's summary and manifest, counted in the frames each chunk keeps (not its warm-up
    frames): 30 frames scaled in all."""
    import re

    from media_utils import make_size_switch_clip

    src = tmp_path / "capture.ts"
    make_size_switch_clip(src, frames=30, options={"g": "10", "preset": "medium", "crf": "18"})
    plan = plan_input(src, 0.4)
    assert len(plan.chunks) >= 3 and plan.chunks[-1][0] >= 30 + 8  # a chunk read after the switch alone
    out = tmp_path / "out"
    code, err = batch(src, "-o", out, "--chunk-seconds", "0.4")
    assert code == 0, err
    assert "capture.ts joined (" in err and "warnings (in the summary)" in err
    said = [line for line in err.splitlines() if line.startswith(f"  warning: {src.resolve()}: ")]
    scaled = [re.search(r"chunk (\d+) of \d+: the video changes size mid-stream: (\d+) frame\(s\) from", line)
              for line in said]
    assert all(scaled) and sum(int(m.group(2)) for m in scaled) == 30, said
    record = _records(out)[f"input:{src.resolve()}"]
    assert record["warnings"] == [line.split(": ", 2)[2] for line in said]
    main_out = tmp_path / "main.ts"
    assert main([str(src), "-o", str(main_out), "--model", "identity", *_face_args(faces), "--no-progress"]) == 0
    joined, single = _decoded(out / "capture.restored.ts"), _decoded(main_out)
    assert len(joined) == len(single) == 60
    # (x264 with its default threads is not bit-exact from run to run on a busy machine: a CI run beside
    # a benchmark differed; as in the test above, the decoded pictures within a level on average)
    assert all(np.abs(a.astype(int) - b).mean() < 1.0 for (_, a), (_, b) in zip(joined, single))

    code, err = batch(src, "-o", out, "--chunk-seconds", "0.4")  # done before: its warnings are said again
    assert code == 0 and ": already done (" in err
    assert [line for line in err.splitlines() if line.startswith(f"  warning: {src.resolve()}: ")] == said


def test_a_missing_fast_vae_is_a_usage_error_before_any_worker(clips, tmp_path, faces, capsys):
    """--fast-vae as in the main command: a path that is not there is said before Ray starts."""
    code = main(["batch", str(clips / "a.mp4"), "-o", str(tmp_path / "out"), *_face_args(faces),
                 "--fast-vae", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def _under_way(err: str) -> list[tuple[int, int, str]]:
    """(frames done in all, their total, what was under way) of each "under way" progress line."""
    lines = re.findall(r"batch: (\d+)/(\d+) frames \(\d+%\), [\d.]+ fps(?:, ETA \d+:\d\d)?: under way: (.*)", err)
    return [(int(done), int(total), what) for done, total, what in lines]


def test_a_long_piece_says_how_far_it_has_come_in_process(clips, tmp_path, batch, monkeypatch):
    """Without Ray a whole video is one piece: a long one said nothing for many minutes. Now a line
    an interval after the last says its frames so far, counted in the batch's total."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr("streamrestore.batch.UNDER_WAY_LINE_SECONDS", 0.0)  # (a line after every frame)
    code, err = batch(clips / "a.mp4", clips / "long.mp4", "-o", tmp_path / "out")
    assert code == 0, err
    lines = _under_way(err)
    assert [what for *_, what in lines] == ([f"a.mp4 ({k}/8 frames)" for k in range(1, 9)]
                                            + [f"long.mp4 ({k}/60 frames)" for k in range(1, 61)])
    assert [done for done, *_ in lines] == [*range(1, 9), *range(9, 69)]  # a's 8 frames done, then long's
    assert all(total == 68 for _, total, _ in lines)


def test_a_long_piece_on_ray_says_how_far_it_has_come(local_ray, clips, tmp_path, batch, monkeypatch):
    """On Ray the driver asks the workers (a second thread of each actor answers while the first
    restores) how far their pieces are: chunks, and the join of the chunks."""
    monkeypatch.setattr("streamrestore.batch.UNDER_WAY_LINE_SECONDS", 0.05)
    code, err = batch(clips / "long.mp4", "-o", tmp_path / "out", "--chunk-seconds", CHUNK_SECONDS)
    assert code == 0, err
    lines = _under_way(err)
    chunks = [what for *_, what in lines if "chunk" in what]
    assert chunks and all(re.fullmatch(r"(long\.mp4 chunk [123]/3 \((\d+/20 frames|starting)\)(, )?)+", what)
                          for what in chunks)
    counts = [int(n) for what in chunks for n in re.findall(r"\((\d+)/20", what)]
    assert max(counts) > 0 and all(n <= 20 for n in counts)
    assert all(total == 60 and done <= 60 for done, total, _ in lines)
    # every line counts the frames under way as last said: the count never goes back
    every = [int(n) for n in re.findall(r"batch: (\d+)/60 frames", err)]
    assert every == sorted(every) and every[-1] == 60


def test_each_finished_input_says_what_it_did_to_faces(tmp_path, shared_data, shared_models, monkeypatch, capsys):
    """A batch user could not tell an input whose faces were all left alone (clean, or none found)
    from one restored: each finished piece says its faces, and the record keeps the counts."""
    monkeypatch.setitem(sys.modules, "ray", None)
    clean, soft = tmp_path / "clean.mp4", tmp_path / "soft.mp4"
    with av.open(str(shared_data / "liveportrait/source/s18.mp4")) as c:
        pictures = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), c.decode(video=0))]
    h, w = pictures[0].shape[:2]
    blurred = [cv2.resize(cv2.resize(p, (w // 4, h // 4), interpolation=cv2.INTER_AREA), (w, h)) for p in pictures]
    for path, frames in ((clean, pictures), (soft, blurred)):
        with av.open(str(path), "w") as c:
            stream = c.add_stream("libx264", rate=25, options={"crf": "12"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for rgb in frames:
                c.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            c.mux(stream.encode(None))
    out = tmp_path / "out"
    assert main(["batch", str(clean), str(soft), "-o", str(out), "--model", "identity",
                 "--face-models", str(shared_models / "insightface")]) == 0
    err = capsys.readouterr().err
    assert "clean.mp4 done (4 frames, 0 faces restored and 4 clean left as they were, " in err, err
    assert "soft.mp4 done (4 frames, 4 faces restored, " in err, err
    records = _records(out)
    assert [(records[f"input:{p.resolve()}"]["faces"], records[f"input:{p.resolve()}"]["clean"]) for p in (clean, soft)] \
        == [(4, 4), (4, 0)]


def test_what_a_chunked_input_and_its_faces_are_said_to_be():
    """A person seen only in some chunks is in the input: the other chunks' "no face matched" is not
    the input's warning. An input whose faces were all left alone (--unmatched skip, --max-faces)
    was said to have none."""
    from streamrestore.batch import _chunks_warnings, _faces_said
    from streamrestore.run import NO_FACE_MATCHED

    lin = NO_FACE_MATCHED.format(name="lin") + " (the closest track scored 0.05, ...)"
    ann = NO_FACE_MATCHED.format(name="ann") + " (the closest track scored 0.10, ...)"
    assert _chunks_warnings([[], [lin, ann], ["interlaced"], ["interlaced"]], {"lin"}) == [ann, "interlaced"]
    # a set no chunk matched is the input's warning, once, with the best score of any chunk (each chunk said it
    # with its own score, prefixed, but one, whose score happened to repeat, without)
    ann_later = NO_FACE_MATCHED.format(name="ann") + " (the closest track scored 0.21, ...)"
    assert _chunks_warnings([[ann], [ann_later], [ann]]) == [ann_later]
    # a chunk's own warning (its track numbers) is said for three chunks, the rest counted
    poor = [[f"track {i}: its reference photos' detail fits the face poorly (0.0{i} of 1; ...)"] for i in range(1, 7)]
    said = _chunks_warnings(poor)
    assert said[:3] == [f"chunk {i} of 6: {poor[i - 1][0]}" for i in (1, 2, 3)]
    assert said[3:] == ["... and the same of 3 more chunks of 6 (each with its own figures)"]
    # chunks are counted, not lines; sets whose names differ by a digit are not one kind
    two = [[f"track {i}: actor1's photos fit poorly (0.0{i})", f"track {i + 1}: actor1's photos fit poorly (0.1{i})"]
           for i in range(1, 5)]
    said = _chunks_warnings(two + [["track 3: actor2's photos fit poorly (0.05)"]])
    assert said[-2:] == ["... and the same of 1 more chunk of 5 (each with its own figures)",
                         "chunk 5 of 5: track 3: actor2's photos fit poorly (0.05)"]
    assert len(said) == 3 * 2 + 2
    # a count that differs from chunk to chunk is a figure too (each chunk's damaged packets)
    damaged = [[f"damaged data in the file: {n} packet(s) could not be decoded"] for n in (3, 12, 7, 1, 9)]
    said = _chunks_warnings(damaged)
    assert len(said) == 4 and said[-1] == "... and the same of 2 more chunks of 5 (each with its own figures)"
    assert _faces_said({"faces": 0, "clean": 0, "seen": 12}) == "0 faces restored and 12 left alone, "
    assert _faces_said({"faces": 5, "clean": 2, "seen": 6}) == \
        "3 faces restored, 2 clean left as they were and 1 left alone, "
    assert _faces_said({"faces": 0, "clean": 0, "seen": 0}) == "no face found, "
    assert _faces_said({"faces": 9, "clean": 5, "dim": 3, "seen": 10}) == \
        "4 faces restored, 2 clean left as they were, 3 too dark or flat to judge left as they were and 1 left alone, "
    assert _faces_said({"faces": 3, "clean": 3, "dim": 3, "seen": 3}) == \
        "0 faces restored and 3 too dark or flat to judge left as they were, "
    assert _faces_said({"faces": 9, "clean": 6, "dim": 1, "grainy": 4, "seen": 9}) == \
        "3 faces restored, 1 clean left as it was, 1 too dark or flat to judge left as it was and 4 too grainy to " \
        "judge left as they were, "
    assert _faces_said({"frames": 20}) == ""  # a chunk's: not said
    # --strength: 0 changes no face ("5 faces restored" of faces left as they were), under 1 is said
    assert _faces_said({"faces": 5, "clean": 2, "seen": 6, "strength": 0.0}) == \
        "5 faces left as they were (--strength 0) and 1 left alone, "
    assert _faces_said({"faces": 5, "clean": 2, "seen": 5, "strength": 0.4}) == \
        "3 faces restored at strength 0.4 and 2 clean left as they were, "


def test_a_parts_settings_leave_out_what_only_the_join_uses_and_paths_as_typed(tmp_path, monkeypatch):
    """A resume with --strip-metadata, another crf, or --face-models spelled otherwise (an older record's relative
    path against this run's) made every finished part again: hours."""
    from streamrestore.batch import part_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    then = {"model": "lite", "model file": "0123abcd", "refs": "anna/", "reference files": "ffee", "metadata": "kept",
            "face models": "models", "fast vae": "None", "pipeline": "p", "codec": "libx264", "pix_fmt": "the input's",
            "libx264 crf": "16"}
    now = {**then, "model": str(tmp_path / "lite.safetensors"), "refs": "./anna", "metadata": "stripped",
           "face models": str(tmp_path / "models"), "libx264 crf": "20"}
    assert part_settings(then) == part_settings(now) == {
        "model file": "0123abcd", "reference files": "ffee", "face models": str(tmp_path / "models"),
        "fast vae": "None", "pipeline": "p", "codec": "libx264", "pix_fmt": "the input's"}
    assert part_settings({**now, "pipeline": "q"}) != part_settings(then)  # (what a part depends on still counts)
    identity = {**then, "model": "identity", "model file": "none"}
    assert part_settings(identity)["model"] == "identity"  # (no file: its name is what says it)


class _FakeRay:
    """Just enough of Ray for ``_Batch._drain``: refs are made ready by the test (``ready``; ``later``: ready
    after that many waits), actors are names."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayActorError(RayError):
            pass

    def __init__(self):
        self.ready: dict = {}  # ref -> value, or an exception to raise
        self.later: dict = {}  # ref -> [waits left, value]
        self.killed: list = []
        self.waits = 0

    def wait(self, refs, num_returns=1, timeout=None):
        self.waits += 1
        assert self.waits < 100, "the drain waits in a loop"
        for ref in [r for r in refs if r in self.later]:
            self.later[ref][0] -= 1
            if self.later[ref][0] <= 0:
                self.ready[ref] = self.later.pop(ref)[1]
        done = [ref for ref in refs if ref in self.ready][:num_returns]
        return done, [ref for ref in refs if ref not in done]

    def get(self, ref):
        value = self.ready[ref]
        if isinstance(value, self.exceptions.RayError):  # (a worker's set-up mistake is returned, not raised)
            raise value
        return value

    def kill(self, actor, no_restart=False):
        self.killed.append(actor)

    def available_resources(self):
        return {"CPU": 0.0}

    def cluster_resources(self):
        return {"CPU": 2.0}


def _draining_batch(fake, pieces):
    """A ``_Batch`` holding ``pieces`` to give out; what it gives, finishes and fails is recorded, and its lines."""
    import collections

    from streamrestore.batch import _Batch, _Progress

    batch = _Batch.__new__(_Batch)
    batch.queue = collections.deque(pieces)
    batch.bar = _Progress(False)
    batch.given, batch.done, batch.failed, batch.said = [], [], [], []
    batch.bar.line = lambda text, frames=0, **kwargs: batch.said.append(text)  # type: ignore[method-assign]

    def call(actor, piece, remote):
        ref = ("result", actor, piece)
        batch.given.append((actor, piece))
        fake.ready[ref] = {"piece": piece}  # (finished at once)
        return ref

    batch.started = lambda piece: None
    batch.call = call
    batch.finished = lambda piece, info: batch.done.append(piece)
    batch.failed_piece = lambda piece, exc: batch.failed.append(piece)
    batch.name_of = lambda src: src
    return batch


def _pool(fake, *, idle=(), placed=(), unplaced=(), loaded=False):
    """A worker pool of named actors: ``idle`` loaded, ``placed`` loading, ``unplaced`` not placed by Ray yet."""
    from streamrestore.batch import _WorkerPool

    made = iter(f"new{i}" for i in range(10))
    pool = _WorkerPool(fake, lambda: next(made))
    pool.idle.extend(idle)
    for actor in [*placed, *unplaced]:
        pool.loading[("load", actor)] = actor
    for actor in unplaced:
        pool.placing[("placed", actor)] = actor
    pool.any_loaded = loaded or bool(idle)
    return pool


PIECES = [("whole", "a.mp4"), ("whole", "b.mp4"), ("whole", "c.mp4")]


def test_a_worker_ray_cannot_place_is_given_no_piece_and_the_ready_ones_finish():
    """A lost node's worker was replaced by one Ray could not place (no CPU free), and the next piece was given
    to it: the batch waited for ever while a loaded worker stood idle (farm F1). A piece now goes only to a
    worker that has loaded; one that never does is ended with the batch."""
    fake = _FakeRay()
    batch = _draining_batch(fake, PIECES)
    batch._drain(fake, _pool(fake, idle=["ready"], unplaced=["unplaced"]), {})
    assert [actor for actor, _ in batch.given] == ["ready"] * 3 and len(batch.done) == 3
    assert "unplaced" in fake.killed and "ready" in fake.killed


def test_a_worker_placed_and_loading_for_long_is_waited_for_and_one_never_placed_ends_the_batch(monkeypatch):
    """The wait for Ray to place a worker has a limit (WORKER_PLACE_SECONDS); a worker placed and loading (a
    download, --adapt) has none (review 53: a 10-minute load ended the batch as "could not start")."""
    import streamrestore.batch as batch_module
    from streamrestore.errors import TemporaryError

    monkeypatch.setattr(batch_module, "WORKER_PLACE_SECONDS", 0.0)
    fake = _FakeRay()
    fake.later[("load", "slow")] = [5, None]  # (placed; loaded after five waits)
    batch = _draining_batch(fake, PIECES[:1])
    batch._drain(fake, _pool(fake, placed=["slow"]), {})
    assert batch.given == [("slow", PIECES[0])] and "1 worker(s) loading the models" in batch.said

    batch = _draining_batch(fake, PIECES[:1])
    with pytest.raises(TemporaryError, match=r"Ray placed no worker in 0 min: 0 of 2 CPUs free") as raised:
        batch._drain(fake, _pool(fake, unplaced=["never"]), {})
    assert raised.value.exit_code == 75 and batch.given == []


def test_workers_that_die_or_fail_while_loading_leave_the_rest_or_end_the_batch_in_one_line():
    """A worker that died while loading (out of memory, a lost node) ended the batch in a traceback (farm F2):
    the others go on; where none is left, one line, exit 1. A set-up mistake of the first worker to load ends
    the batch (every worker makes it); one worker's, once another has loaded, ends that worker alone, not the
    ones at work (review 53)."""
    from streamrestore.batch import WorkersLostError
    from streamrestore.errors import ModelError

    fake = _FakeRay()
    fake.ready[("load", "w1")] = fake.exceptions.RayActorError("The actor died: out of memory")
    fake.ready[("load", "w2")] = None  # (loaded)
    batch = _draining_batch(fake, PIECES[:2])
    batch._drain(fake, _pool(fake, placed=["w1", "w2"]), {})
    assert [actor for actor, _ in batch.given] == ["w2", "w2"] and "w1" in fake.killed
    assert "a worker died while loading the models (RayActorError: The actor died: out of memory); going on with " \
        "1" in batch.said

    fake.ready[("load", "w3")] = fake.exceptions.RayActorError("The actor died: out of memory")
    batch = _draining_batch(fake, PIECES[:1])
    with pytest.raises(WorkersLostError, match=r"no worker is left: each died or failed while loading the models "
                                               r"\(2x RayActorError: The actor died: out of memory\)") as raised:
        batch._drain(fake, _pool(fake, placed=["w1", "w3"]), {})
    assert raised.value.exit_code == 1 and batch.given == []
    assert not any("going on with 0" in line for line in batch.said)

    # a worker whose load raised (a GPU out of memory: Ray's task error, not its actor's death): ended, the rest
    # go on; where none is left, no "out of memory, perhaps" of set-up failures (review 53b)
    fake.ready[("load", "raised")] = fake.exceptions.RayError("RuntimeError: CUDA out of memory")
    batch = _draining_batch(fake, PIECES[:1])
    batch._drain(fake, _pool(fake, placed=["raised", "w2"]), {})
    assert batch.given == [("w2", PIECES[0])] and "raised" in fake.killed
    assert any(line.startswith("a worker failed while loading the models (RayError: RuntimeError") for line in batch.said)
    batch = _draining_batch(fake, PIECES[:1])
    with pytest.raises(WorkersLostError) as raised:
        batch._drain(fake, _pool(fake, placed=["raised"]), {})
    assert "out of memory, perhaps" not in str(raised.value)

    fake.ready[("load", "bad")] = ModelError("model 'x' download failed")
    batch = _draining_batch(fake, PIECES[:2])
    batch._drain(fake, _pool(fake, idle=["good"], placed=["bad"]), {})
    assert {actor for actor, _ in batch.given} == {"good"} and len(batch.done) == 2
    batch = _draining_batch(fake, PIECES[:1])
    with pytest.raises(ModelError, match="the workers could not start: model 'x' download failed"):
        batch._drain(fake, _pool(fake, placed=["bad"]), {})
    assert batch.given == []


def test_the_adapting_worker_is_waited_for_until_it_has_loaded_and_given_no_piece():
    """--adapt: the first worker's loading is waited for (placement limit and all), and no piece is given."""
    fake = _FakeRay()
    fake.later[("placed", "first")] = [2, True]
    fake.later[("load", "first")] = [3, None]
    batch = _draining_batch(fake, PIECES)
    pool = _pool(fake, unplaced=["first"])
    batch._drain(fake, pool, {}, until_loaded=True)
    assert pool.idle == ["first"] and batch.given == [] and not pool.placing and not pool.loading


def test_the_rate_and_eta_count_from_the_first_piece_not_the_start_up():
    """The rate and ETA counted Ray's start and the models' loading as restoring time: "ETA 3:05" at 12 % of a
    batch done in 40 s (farm F13). They count from the first piece given."""
    import time

    from streamrestore.batch import _Batch, _Progress

    batch = _Batch.__new__(_Batch)
    batch.bar, batch.attempts = _Progress(False), {}
    batch.manifest = type("Manifest", (), {"update": lambda self, key, **fields: None})()
    batch.key_of = lambda piece: str(piece)
    batch.bar.start = time.monotonic() - 30.0  # (30 s of start-up)
    batch.started(("whole", "a.mp4"))
    first = batch.bar.start
    assert time.monotonic() - first < 5.0
    batch.started(("whole", "b.mp4"))
    assert batch.bar.start == first  # (from the first piece only)


def test_a_person_missing_from_many_inputs_is_said_once():
    """A wedding card of clips with the bride's and the groom's photos: each clip without one of them gave a
    300-character "no face matched" warning of its own (8 lines for 3 clips). One line a person now: the
    inputs not showing them, named; every input's words where none did; the one input's as it was."""
    from streamrestore.batch import BatchResult
    from streamrestore.run import NO_FACE_MATCHED

    def unmatched(name: str, score: float = 0.12) -> str:
        return NO_FACE_MATCHED.format(name=name) + f" (the closest track scored {score:.2f}, a match needs 0.40)"

    inputs = [f"clip{i}.mp4" for i in range(6)]
    result = BatchResult(succeeded={src: f"out/{src}" for src in inputs})
    for src in inputs[:5]:
        result.warnings[src] = [unmatched("bride"), unmatched("speaker", 0.31 if src == "clip3.mp4" else 0.12)]
    result.warnings["clip5.mp4"] = [unmatched("speaker"), "the input's chapters are not kept"]
    result.warnings["clip0.mp4"].append(unmatched("groom"))
    lines = result.summary().splitlines()[1:]
    assert lines == [
        "  warning: clip5.mp4: the input's chapters are not kept",
        "  no face matched bride's photos in 5 of the 6 inputs (clip0.mp4, clip1.mp4, clip2.mp4 and 2 more): not in "
        "them, or not recognised there (each input's record in batch-manifest.jsonl gives its scores)",
        f"  warning: none of the 6 inputs (the closest face in clip3.mp4): {unmatched('speaker', 0.31)}",
        f"  warning: clip0.mp4: {unmatched('groom')}",
    ]
