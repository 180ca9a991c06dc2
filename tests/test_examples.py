"""Each example runs on shared media (identity model: the examples pass their options through)."""
import runpy
import sys

import cv2
import pytest


def _run(monkeypatch, script, *args):
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    runpy.run_path(f"examples/{script}", run_name="__main__")


@pytest.fixture
def identity_default(monkeypatch, shared_models):
    """Examples use the defaults (lite model, auto detector); tests swap in the identity restorer
    and the shared SCRFD pack so they run fast and offline."""
    import streamrestore.pipeline as pipeline

    original = pipeline.build_face_restorer

    def build(*a, **kw):
        kw["model"] = "identity"
        kw["face_models"] = shared_models / "insightface"
        return original(*a, **kw)

    monkeypatch.setattr(pipeline, "build_face_restorer", build)
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])


def test_process_frame_example(monkeypatch, identity_default, shared_data, tmp_path, capsys):
    out = tmp_path / "out.jpg"
    _run(monkeypatch, "process_frame.py", shared_data / "face_recognition/obama_small.jpg",
         shared_data / "face_recognition/knn_train/obama", out)
    assert cv2.imread(str(out)) is not None
    assert "as obama" in capsys.readouterr().out


def test_filter_frames_example(monkeypatch, identity_default, shared_data, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    _run(monkeypatch, "filter_frames.py", shared_data / "pcavs/Input/00010.mp4",
         shared_data / "face_recognition/knn_train/obama", out)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 106
    assert "106 frames" in capsys.readouterr().out


def test_restore_file_example(monkeypatch, identity_default, shared_data, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    _run(monkeypatch, "restore_file.py", shared_data / "pcavs/Input/00010.mp4",
         shared_data / "face_recognition/knn_train/obama", out)
    assert out.exists() and "106 frames" in capsys.readouterr().out
