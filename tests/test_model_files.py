"""The evaluation models folder's layout has one owner: streamrestore.model_files."""
import pytest

from streamrestore.model_files import EvalModelFiles


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_layout_and_what_is_missing(tmp_path):
    files = EvalModelFiles.from_dir(tmp_path)
    assert files.root == tmp_path
    assert files.missing("paddle", "mobilefacenet", "detector", "landmark_detector") == [
        files.paddle, files.mobilefacenet, files.detector, files.landmark_detector]
    for path in (files.paddle, files.mobilefacenet, files.detector, files.landmark_detector):
        assert path.is_relative_to(tmp_path)
        _touch(path)
    assert EvalModelFiles.from_dir(tmp_path).missing("paddle", "mobilefacenet", "detector", "landmark_detector") == []
    with pytest.raises(ValueError, match="unknown"):
        files.missing("judge")


def test_landmark_detector_falls_back_to_the_scrfd_copy(tmp_path):
    preferred = EvalModelFiles.from_dir(tmp_path).landmark_detector
    _touch(tmp_path / "scrfd/det_500m.onnx")
    assert EvalModelFiles.from_dir(tmp_path).landmark_detector == tmp_path / "scrfd/det_500m.onnx"
    _touch(preferred)
    assert EvalModelFiles.from_dir(tmp_path).landmark_detector == preferred


def test_the_shared_models_folder_has_the_layout(shared_models):
    files = EvalModelFiles.from_dir(shared_models)
    assert files.missing("paddle", "mobilefacenet", "detector", "landmark_detector") == []
    assert files.face_models.is_dir()
