"""The drawn faces that stand in for real media (tests/synthetic_faces.py): the detector finds
them where they were drawn, in encoded video too, and nowhere else; the embedder tells the
drawn people apart; both reach the pipeline through its factories."""
import av
import numpy as np
import pytest
import synthetic_faces as sf
from media_utils import make_clip, pattern


def _decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_detector_finds_the_drawn_landmarks():
    detector = sf.SyntheticFaceDetector()
    assert isinstance(detector, __import__("streamrestore.faces.detect", fromlist=["Detector"]).Detector)
    pictures, truth = sf.face_frames(8, 160, 120)
    for rgb, kps in zip(pictures, truth):
        (face,) = detector.detect(rgb)
        assert np.abs(face.kps - kps).max() < 0.5
        assert face.box[0] < kps[:, 0].min() and face.box[2] > kps[:, 0].max()
        assert face.box[1] < kps[:, 1].min() and face.box[3] > kps[:, 1].max()
    assert detector.calls == 8


def test_detector_finds_the_face_in_the_encoded_clip(face_clip):
    frames = _decoded(face_clip.path)
    assert len(frames) == face_clip.frames == 16 and frames[0].shape == (120, 160, 3)
    detector = sf.SyntheticFaceDetector()
    for rgb, kps in zip(frames, face_clip.landmarks):
        (face,) = detector.detect(rgb)
        assert np.abs(face.kps - kps).max() < 1.0  # a codec moves them by a fraction of a pixel
    # the face moves: left to right, and its size changes
    assert face_clip.landmarks[-1][2, 0] - face_clip.landmarks[0][2, 0] > 20
    eye = [np.hypot(*(k[1] - k[0])) for k in face_clip.landmarks]
    assert max(eye) / min(eye) > 1.15


def test_detector_finds_nothing_without_a_drawn_face(tmp_path):
    detector = sf.SyntheticFaceDetector()
    src = tmp_path / "pattern.mp4"
    make_clip(src, width=160, height=120, frames=6)
    pictures = _decoded(src) + [pattern(640, 480, i) for i in range(4)] + [sf.background(320, 240)]
    assert len(pictures) == 11 and all(detector.detect(p) == [] for p in pictures)
    with pytest.raises(ValueError):
        detector.detect(np.zeros((4, 4), np.uint8))


def test_two_people_and_the_embedder_tells_them_apart():
    detector, embedder = sf.SyntheticFaceDetector(), sf.SyntheticFaceEmbedder()
    rgb, truth = sf.two_people()
    faces = detector.detect(rgb)
    assert len(faces) == 2
    left, right = sorted(faces, key=lambda f: f.box[0])
    assert np.abs(left.kps - truth[0]).max() < 0.5 and np.abs(right.kps - truth[1]).max() < 0.5
    vectors = embedder.embed(rgb, [left, right])
    assert vectors.shape == (2, 3) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] < 0
    # each person's reference photos embed like that person in the two-person picture
    for person, row in (("ann", vectors[0]), ("ben", vectors[1])):
        for variant in (0, 1):
            photo = sf.portrait(person, variant=variant)
            (face,) = detector.detect(photo)
            assert embedder.embed(photo, [face])[0] @ row > 0.95
    everyone = [sf.portrait(p) for p in sf.PEOPLE]
    rows = np.concatenate([embedder.embed(p, detector.detect(p)) for p in everyone])
    similarity = rows @ rows.T
    assert (similarity[~np.eye(3, dtype=bool)] < embedder.threshold).all()


def test_install_reaches_build_face_restorer(synthetic_faces, synthetic_refs):
    from streamrestore.pipeline import build_face_restorer

    fr = build_face_restorer(synthetic_refs, model="identity", face_models="/nowhere")
    assert isinstance(fr.detector, sf.SyntheticFaceDetector)
    (refs,) = fr.reference_sets
    assert refs.name == "refs" and refs.crops.shape[0] == 2 and refs.embedder == "insightface:synthetic"
    two = build_face_restorer([f"ann={synthetic_refs}", f"ben={sf.write_portraits(synthetic_refs.parent / 'b', 'ben')}"],
                              model="identity")
    assert isinstance(two.embedder, sf.SyntheticFaceEmbedder)
