"""Identity tests.

Measured same/different-person cosine on 81 shared photos of 22 people (largest SCRFD face of
each deepface/, face_recognition/, facenet_pytorch/, liveportrait/ and dlib/ portrait):
    mobilefacenet_128d: same mean 0.76 (min 0.48), different mean 0.03 (99th pct 0.28, max 0.50,
        a look-alike pair) -> threshold 0.40
    dlib ResNet (normalised): same mean 0.97 (min 0.93), different mean 0.83 (99th pct 0.90,
        max 0.93) -> threshold 0.925
"""
import cv2
import numpy as np
import pytest

from streamrestore.errors import ModelError
from streamrestore.faces import detect as detect_module
from streamrestore.faces.detect import create_detector
from streamrestore.faces.identity import (
    DlibEmbedder,
    IdentityMatcher,
    InsightfaceEmbedder,
    ReferenceSet,
    create_embedder,
    default_threshold,
)


def _rgb(path):
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def scrfd(shared_models):
    return create_detector("scrfd", models_dir=shared_models / "insightface")


@pytest.fixture(scope="module")
def people(shared_data, scrfd):
    """(image, largest face) of Obama (2 photos), Biden and Alex Lacamoire."""
    root = shared_data / "face_recognition"
    result = {}
    for key, path in [("obama", "knn_train/obama/obama.jpg"), ("obama2", "knn_train/obama/obama2.jpg"),
                      ("biden", "knn_train/biden/biden2.jpg"), ("alex", "knn_train/alex_lacamoire/img1.jpg")]:
        rgb = _rgb(root / path)
        faces = scrfd.detect(rgb)
        result[key] = (rgb, max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    return result


def _embed_all(embedder, people):
    return {key: embedder.embed(rgb, [face])[0] for key, (rgb, face) in people.items()}


@pytest.mark.parametrize("kind", ["insightface", "dlib"])
def test_embedders_separate_people(kind, shared_models, people):
    embedder = create_embedder(kind, models_dir=shared_models / "insightface")
    assert isinstance(embedder, InsightfaceEmbedder if kind == "insightface" else DlibEmbedder)
    vectors = _embed_all(embedder, people)
    for vector in vectors.values():
        assert vector.dtype == np.float32 and vector.ndim == 1
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    threshold = default_threshold(embedder.name)
    assert float(vectors["obama"] @ vectors["obama2"]) > threshold
    for other in ("biden", "alex"):
        assert float(vectors["obama"] @ vectors[other]) < threshold
        assert float(vectors["obama2"] @ vectors[other]) < threshold


def test_insightface_embedder_batches_and_names(shared_models, people):
    embedder = create_embedder("auto", models_dir=shared_models / "insightface")
    assert embedder.name == "insightface:mobilefacenet_128d"
    rgb, face = people["obama"]
    both = embedder.embed(rgb, [face, face])
    assert both.shape == (2, 128)
    np.testing.assert_allclose(both[0], both[1], atol=1e-6)
    assert embedder.embed(rgb, []).shape == (0, 128)
    crop = embedder.crop(rgb, face)
    assert crop.shape == (112, 112, 3)


def test_insightface_embeds_aligned_crops_like_the_frame(shared_models, people):
    """The identity gate embeds the restorer's 128-px aligned crops: the same person as from the
    photo itself, and still told apart from other people."""
    from streamrestore.faces.align import alignment_matrix, crop_face
    from streamrestore.pixels import RgbPixels

    embedder = create_embedder("insightface", models_dir=shared_models / "insightface")
    crops = {key: crop_face(RgbPixels(rgb), alignment_matrix(face.kps, 128), 128) for key, (rgb, face) in people.items()}
    aligned = embedder.embed_aligned(np.stack(list(crops.values())))
    assert aligned.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), 1.0, atol=1e-4)
    from_frame = _embed_all(embedder, people)
    for row, key in zip(aligned, crops):
        assert float(row @ from_frame[key]) > 0.93  # 0.97-0.98 measured
    by_key = dict(zip(crops, aligned))
    assert float(by_key["obama"] @ by_key["obama2"]) > float(by_key["obama"] @ by_key["biden"]) + 0.3
    assert embedder.embed_aligned(np.zeros((0, 128, 128, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="aligned crops"):
        embedder.embed_aligned(np.zeros((2, 128, 96, 3), np.uint8))


def test_embedder_factory_fallbacks(tmp_path, monkeypatch):
    monkeypatch.setattr(detect_module, "_INSIGHTFACE_HOME", tmp_path)
    assert isinstance(create_embedder("auto"), DlibEmbedder)
    with pytest.raises(ModelError, match="--face-models"):
        create_embedder("insightface")
    with pytest.raises(ValueError, match="kind"):
        create_embedder("facenet")
    assert default_threshold("insightface:w600k_r50") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="threshold"):
        default_threshold("unknown")


def test_a_damaged_recognition_model_is_named_not_taken_for_a_missing_one(shared_models, tmp_path):
    """A pack whose recognition model was cut short said "no insightface recognition model found" and went on
    with dlib's descriptors and the identity gate off (support F5): the file is named, with why."""
    source = shared_models / "insightface" / "models" / "mini_sc"
    pack = tmp_path / "models" / "mini_sc"
    pack.mkdir(parents=True)
    for path in source.glob("det_*.onnx"):
        (pack / path.name).symlink_to(path)
    recognition = next(p for p in source.glob("*.onnx") if not p.name.startswith("det_"))
    (pack / recognition.name).write_bytes(recognition.read_bytes()[:300_000])
    with pytest.raises(ModelError, match="cannot load the face models' recognition model: .*"
                       + recognition.name + r".*the file may be damaged"):
        create_embedder("auto", models_dir=tmp_path)
    (pack / recognition.name).unlink()  # missing altogether: dlib, as before
    assert isinstance(create_embedder("auto", models_dir=tmp_path), DlibEmbedder)


def _orthonormal(count, dim=16, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q[:, :count].T.astype(np.float32)


def _set(name, vectors):
    return ReferenceSet(name=name, crops=np.zeros((len(vectors), 8, 8, 3), np.uint8),
                        embeddings=np.asarray(vectors, np.float32), files=[f"{name}{i}.png" for i in range(len(vectors))],
                        embedder="insightface:mobilefacenet_128d")


def test_matcher_assigns_tracks_and_freezes_the_decision():
    a, b, stranger = _orthonormal(3)
    rng = np.random.default_rng(3)

    def near(v, noise=0.2):
        w = v + rng.normal(0, noise / 4, v.shape)
        return (w / np.linalg.norm(w)).astype(np.float32)

    matcher = IdentityMatcher([_set("anna", [near(a), near(a)]), _set("ben", [near(b)])], samples_per_track=3)
    assert matcher.threshold == pytest.approx(default_threshold("insightface:mobilefacenet_128d"))
    assert matcher.identity_of(7) is None and matcher.needs_embedding(7)
    for _ in range(3):
        assert matcher.needs_embedding(1)
        matcher.observe(1, near(a))
        matcher.observe(2, near(b))
        matcher.observe(3, near(stranger))
    assert not matcher.needs_embedding(1) and matcher.is_decided(1)
    assert (matcher.identity_of(1), matcher.identity_of(2), matcher.identity_of(3)) == ("anna", "ben", None)
    for _ in range(10):  # decided: later evidence does not flip a restored face's identity
        matcher.observe(1, near(b))
    assert matcher.identity_of(1) == "anna"
    matcher.forget(1)
    assert matcher.identity_of(1) is None


def test_matcher_is_provisional_before_enough_samples():
    a, b = _orthonormal(2)
    matcher = IdentityMatcher([_set("anna", [a]), _set("ben", [b])], samples_per_track=4)
    matcher.observe("t", a)
    assert matcher.identity_of("t") == "anna" and not matcher.is_decided("t")
    matcher.observe("t", b)
    matcher.observe("t", b)
    assert matcher.identity_of("t") == "ben"  # mean of samples now closer to ben
    scores = matcher.scores([a, b, b])
    assert scores["ben"] > scores["anna"]


def test_matcher_validation_and_empty_sets():
    a, b = _orthonormal(2)
    assert not IdentityMatcher([]).needs_embedding(1)
    with pytest.raises(ValueError, match="unique"):
        IdentityMatcher([_set("x", [a]), _set("x", [b])])
    with pytest.raises(ValueError, match="samples_per_track"):
        IdentityMatcher([_set("x", [a])], samples_per_track=0)
    with pytest.raises(ValueError, match="threshold"):
        IdentityMatcher([_set("x", [a])], threshold=2.0)
    with pytest.raises(ValueError, match="sizes"):
        IdentityMatcher([_set("x", [a]), _set("y", [np.ones(8, np.float32)])])
    strict = IdentityMatcher([_set("x", [a])], threshold=0.99, samples_per_track=1)
    strict.observe(1, (a + 0.3 * b) / np.linalg.norm(a + 0.3 * b))
    assert strict.identity_of(1) is None


def test_a_face_is_said_to_look_like_someone_else_below_its_embedders_own_bar():
    """dlib scores video frames and restored faces of the person in the photos 0.87-0.90 against them,
    under its 0.925 same-person threshold for photos: a phone user was told on every run that their
    own face may be someone else's. It is said below 0.85 (different people's mean is 0.83); the
    insightface embedders' bar stays their threshold."""
    from streamrestore.run import RunStats, TrackStats

    (a,) = _orthonormal(1)
    dlib_set = ReferenceSet(name="me", crops=np.zeros((1, 8, 8, 3), np.uint8), embeddings=a[None],
                            files=["me0.png"], embedder="dlib")
    matcher = IdentityMatcher([dlib_set])
    assert (matcher.threshold, matcher.unlike_below) == (0.925, 0.85)
    assert IdentityMatcher([_set("x", [a])]).unlike_below == 0.40
    assert IdentityMatcher([dlib_set], threshold=0.5).unlike_below == 0.5  # (a threshold given: the bar too)

    def stats(score):
        run = RunStats(photo=True, match_threshold=matcher.threshold, unlike_threshold=matcher.unlike_below)
        run.per_track[1] = TrackStats(identity="me", faces=1, scores={"me": score})
        return run

    assert stats(0.90).unlike_their_references() == [] and "someone else" not in stats(0.90).summary()
    assert stats(0.80).unlike_their_references() == [1]
    assert "scored below the 0.85 of the same person against them (face 1: 0.80)" in stats(0.80).summary()


def test_a_reference_set_no_face_matched_is_said_with_its_closest_score():
    """Two people's photos, and one set matched by no face (its person's face scored 0.33, under the
    0.40 a match needs): the summary had no warning, so the user's photos went unused unnoticed."""
    from streamrestore.run import RunStats, TrackStats

    run = RunStats(matching=True, references=True, reference_names=["lin", "obama"], match_threshold=0.40)
    run.per_track[1] = TrackStats(identity="lin", faces=40, scores={"lin": 0.61, "obama": 0.02})
    run.per_track[2] = TrackStats(identity=None, faces=30, scores={"lin": 0.05, "obama": 0.33})
    run.identities = {1: "lin", 2: None}
    (said,) = [w for w in run.warnings() if "no face matched" in w]
    assert said.startswith("no face matched obama's photos (the closest track scored 0.33, a match needs 0.40")
    assert "lin's" not in said and f"warning: {said}" in run.summary()
    run.identities[2] = run.per_track[2].identity = "obama"  # matched: nothing said
    assert not [w for w in run.warnings() if "no face matched" in w]
    one = RunStats(references=True, reference_names=["me"], match_threshold=0.40)  # one set, every face gets it
    one.per_track[1] = TrackStats(identity="me", faces=40, scores={"me": 0.1})
    assert not [w for w in one.warnings() if "no face matched" in w]


def test_faces_whose_photos_fit_poorly_are_one_warning():
    """A grid of faces restored toward one person's photos gave a warning per face track."""
    from streamrestore.run import POOR_MATCH_MIN_FACES, RunStats

    run = RunStats(references=True)
    for tid in (3, 5, 8):
        for frame in range(POOR_MATCH_MIN_FACES):
            run.add_face(tid, frame, "obama", restored=True)
            run.add_reference_match(tid, 0.05 + tid / 100)
    (said,) = run.warnings()
    assert said.startswith("3 face tracks: their reference photos' detail fits them poorly (of 1: track 3 (obama) "
                           "0.08, track 5 (obama) 0.10, track 8 (obama) 0.13; photos from the same footage fit ~0.8)")


def test_a_reference_set_pickled_by_an_older_version_loads_with_the_fields_added_since():
    """Sets pickle (README: a service keeps them); one pickled before ``skipped`` and ``crops_at`` were added
    ended a later version's run with "'ReferenceSet' object has no attribute 'skipped'"."""
    import pickle

    made = ReferenceSet("anna", np.zeros((1, 8, 8, 3), np.uint8), np.ones((1, 4), np.float32), ["a.jpg"], "paddle",
                        skipped=["wall.png (no face)"])
    again = pickle.loads(pickle.dumps(made))
    assert again.skipped == ["wall.png (no face)"] and again.files == ["a.jpg"] and again.embedder == "paddle"
    for added in ("skipped", "crops_at"):  # (what an older version's pickle holds: the fields of its day)
        del made.__dict__[added]
    older = pickle.loads(pickle.dumps(made))
    assert older.skipped == [] and older.crops_at == {} and older.name == "anna"
    assert np.array_equal(older.crops, made.crops)


def test_a_decided_track_is_found_another_persons_after_two_unlike_faces_in_a_row():
    from streamrestore.faces.identity import ANOTHER_PERSON_CHECKS, IdentityMatcher, ReferenceSet

    ann, ben = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    matcher = IdentityMatcher([ReferenceSet("ann", np.zeros((1, 8, 8, 3), np.uint8), ann[None], [], "x")],
                              threshold=0.4, samples_per_track=2)
    assert not matcher.another_person(1, ben)  # (not decided: nothing to compare with)
    matcher.observe(1, ann)
    matcher.observe(1, ann)
    assert matcher.identity_of(1) == "ann" and matcher.is_decided(1)
    assert ANOTHER_PERSON_CHECKS == 2
    # one face unlike (turned, blurred) is not another person; two in a row are
    assert [matcher.another_person(1, face) for face in (ben, ann, ben, ben)] == [False, False, False, True]
    # dlib's descriptors score different people ~0.83: the level was measured for ArcFace-like embedders only
    dlib = IdentityMatcher([ReferenceSet("ann", np.zeros((1, 8, 8, 3), np.uint8), ann[None], [], "dlib")],
                           samples_per_track=1)
    dlib.observe(1, ann)
    assert not dlib.checks_another_person and not any(dlib.another_person(1, ben) for _ in range(3))
