import cv2
import numpy as np
import pytest

from streamrestore.faces.propagate import FacePropagator, PropagationConfig


@pytest.fixture(scope="module", params=["synthetic", "real"])
def photo_and_faces(request):
    """Two faces in a picture: two drawn people (the drawn-face detector) or two_people.jpg (SCRFD)."""
    if request.param == "synthetic":
        import synthetic_faces as sf

        rgb = sf.two_people(640, 360)[0]
        return rgb, sf.SyntheticFaceDetector().detect(rgb)
    from streamrestore.faces.detect import create_detector

    shared_data, shared_models = request.getfixturevalue("shared_data"), request.getfixturevalue("shared_models")
    detector = create_detector("scrfd", models_dir=shared_models / "insightface")
    rgb = np.ascontiguousarray(cv2.imread(str(shared_data / "face_recognition/two_people.jpg"))[:, :, ::-1])
    return rgb, detector.detect(rgb)


def _shift(img, dx, dy):
    return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def test_landmarks_follow_a_moving_picture(photo_and_faces):
    rgb, faces = photo_and_faces
    assert len(faces) == 2
    prop = FacePropagator()
    prop.observe(rgb, faces)
    moved = prop.propagate(_shift(rgb, 7, -4))
    assert len(moved) == 2
    for before, after in zip(faces, moved):
        np.testing.assert_allclose(after.kps - before.kps, np.broadcast_to([7, -4], (5, 2)), atol=1.0)
        np.testing.assert_allclose(after.box - before.box, [7, -4, 7, -4], atol=1.5)
    # chained: the propagated faces are the new reference
    again = prop.propagate(_shift(rgb, 10, -4))
    np.testing.assert_allclose(again[0].kps - faces[0].kps, np.broadcast_to([10, -4], (5, 2)), atol=1.0)


def test_faces_are_dropped_after_a_cut(photo_and_faces):
    rgb, faces = photo_and_faces
    prop = FacePropagator()
    prop.observe(rgb, faces)
    other = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint8)
    assert prop.propagate(other) == []
    assert prop.held == 0


def test_config_validation():
    with pytest.raises(ValueError, match="window"):
        PropagationConfig(window=3)
    with pytest.raises(ValueError, match="max_error"):
        PropagationConfig(max_error=0)
