"""Each example runs on a drawn face (drawn-face detector) and on shared media (SCRFD pack), with
the identity model (the examples pass their options through)."""
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest


def _run(monkeypatch, script, *args):
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    runpy.run_path(f"examples/{script}", run_name="__main__")


@dataclass
class Media:
    photo: Path  # one face
    clip: Path  # one face, ``frames`` frames
    frames: int
    refs: Path  # photos of that person, in a folder named after them
    name: str


@pytest.fixture(params=["synthetic", "real"])
def identity_default(request, monkeypatch, tmp_path):
    """Examples use the defaults (lite model, auto detector); tests swap in the identity restorer
    and the drawn-face detector (drawn media) or the shared SCRFD pack (shared media), so they run
    fast and offline. Gives the media."""
    import streamrestore.pipeline as pipeline

    if request.param == "synthetic":
        import synthetic_faces as sf

        request.getfixturevalue("synthetic_faces")
        face_models = None
        photo = tmp_path / "ann.jpg"
        cv2.imwrite(str(photo), sf.portrait("ann", size=240)[:, :, ::-1])
        clip = request.getfixturevalue("face_clip")
        media = Media(photo, clip.path, clip.frames, sf.write_portraits(tmp_path / "ann", "ann"), "ann")
    else:
        shared_data = request.getfixturevalue("shared_data")
        face_models = request.getfixturevalue("shared_models") / "insightface"
        media = Media(shared_data / "face_recognition/obama_small.jpg", shared_data / "pcavs/Input/00010.mp4", 106,
                      shared_data / "face_recognition/knn_train/obama", "obama")
    original = pipeline.build_face_restorer

    def build(*a, **kw):
        kw["model"] = "identity"
        kw["face_models"] = face_models
        return original(*a, **kw)

    monkeypatch.setattr(pipeline, "build_face_restorer", build)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    return media


def test_process_frame_example(monkeypatch, identity_default, tmp_path, capsys):
    media = identity_default
    out = tmp_path / "out.jpg"
    _run(monkeypatch, "process_frame.py", media.photo, media.refs, out)
    assert cv2.imread(str(out)) is not None
    said = capsys.readouterr().out
    assert f"({media.name}): restored (" in said or f"({media.name}): left as it was (clean)" in said, said


def test_filter_frames_example(monkeypatch, identity_default, tmp_path, capsys):
    media = identity_default
    out = tmp_path / "out.mp4"
    _run(monkeypatch, "filter_frames.py", media.clip, media.refs, out)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == media.frames
    assert f"{media.frames} frames" in capsys.readouterr().out


def test_restore_file_example(monkeypatch, identity_default, tmp_path, capsys):
    media = identity_default
    out = tmp_path / "out.mp4"
    _run(monkeypatch, "restore_file.py", media.clip, media.refs, out)
    assert out.exists() and f"{media.frames} frames" in capsys.readouterr().out
    # run again (a class's second try): one line naming --force, not a traceback; with it, done again
    with pytest.raises(SystemExit, match=f"error: output {out} already exists; replace it with --force"):
        _run(monkeypatch, "restore_file.py", media.clip, media.refs, out)
    _run(monkeypatch, "restore_file.py", media.clip, media.refs, out, "--force")
    assert f"{media.frames} frames" in capsys.readouterr().out


def test_restore_photos_example(monkeypatch, identity_default, tmp_path, capsys):
    import shutil

    media = identity_default
    photos = [shutil.copy(media.photo, tmp_path / f"p{i}{media.photo.suffix}") for i in range(2)]
    _run(monkeypatch, "restore_photos.py", media.refs, *photos)
    for photo in photos:
        assert cv2.imread(str(tmp_path / f"{Path(photo).stem}.restored{media.photo.suffix}")) is not None
    assert capsys.readouterr().out.count(": 1 face(s), ") == 2


@pytest.mark.parametrize("script", ["restore_file.py", "process_frame.py", "filter_frames.py", "restore_photos.py",
                                    "webcam.py"])
def test_each_example_says_how_it_is_called(monkeypatch, capsys, script):
    """--help prints the usage, --face-models included (it ended in an IndexError or a ValueError)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as done:
        _run(monkeypatch, script, "--help")
    assert done.value.code == 0 and "--face-models" in capsys.readouterr().out
