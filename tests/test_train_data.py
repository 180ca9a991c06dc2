import numpy as np
import pytest
import torch

from streamrestore.data.pack import PackedFaces, pack_dataset, split_identities
from streamrestore.data.samples import RestorationDataset
from streamrestore.data.sources import (
    EVAL_ONLY,
    TRAIN_OK,
    EvalOnlyDataError,
    discover_sources,
    licence_class,
    read_train_ok_folders,
    shared_sources,
)
from streamrestore.errors import InputError
from streamrestore.faces.align import template

TWO_PEOPLE = ("deepface:id02", "Joe Biden")
CLIP = "Alexandria Ocasio-Cortez"  # sadtalker clip, 512x512, 8 s


@pytest.fixture(scope="module")
def detector(shared_models):
    from streamrestore.faces.detect import ScrfdDetector

    return ScrfdDetector(shared_models / "scrfd/det_500m.onnx")


@pytest.fixture(scope="module")
def two_people_pack(shared_data, train_ok_folders, detector, tmp_path_factory):
    sources = shared_sources(shared_data, train_ok_folders=train_ok_folders, identities=TWO_PEOPLE)
    path = tmp_path_factory.mktemp("pack") / "two.npz"
    report = pack_dataset(sources, path, 128, detector=detector)
    return sources, report, PackedFaces(path)


@pytest.fixture(scope="module")
def mixed_pack(shared_data, train_ok_folders, detector, tmp_path_factory):
    """Photos of two people plus frames of one clip (frames reference each other)."""
    sources = shared_sources(shared_data, train_ok_folders=train_ok_folders, identities=TWO_PEOPLE + (CLIP,))
    path = tmp_path_factory.mktemp("pack") / "mixed.npz"
    pack_dataset(sources, path, 64, detector=detector, frames_per_video=4, min_frame_gap_s=1.5)
    return PackedFaces(path)


def test_licence_classes_follow_the_readme(train_ok_folders):
    ok = train_ok_folders
    assert licence_class("deepface/img1.jpg", "MIT", ok) == TRAIN_OK
    assert licence_class("pcavs/Input/00002.mp4", "CC BY 4.0", ok) == TRAIN_OK
    assert licence_class("instantrestore/00001/gt.png", None, ok) == EVAL_ONLY
    assert licence_class("keep/real_1.mp4", "S-Lab License 1.0 (non-commercial)", ok) == EVAL_ONLY
    assert licence_class("dmdnet/x.png", "CC BY-NC-SA 4.0 (README)", ok) == EVAL_ONLY
    # a train-ok folder does not launder a non-commercial file
    assert licence_class("deepface/new.jpg", "CC BY-NC 4.0", ok) == EVAL_ONLY
    # no folder is train-ok unless the caller says so
    assert licence_class("deepface/img1.jpg", "MIT") == EVAL_ONLY


def test_train_ok_folder_list_is_read_and_checked(train_ok_folders, tmp_path):
    assert {"deepface", "face_recognition", "liveportrait"} <= train_ok_folders
    assert not train_ok_folders & {"instantrestore", "keep", "dmdnet", "asffnet", "codeformer", "pgtformer", "gpen"}
    bad = tmp_path / "bad.toml"
    bad.write_text('train_ok_folders = "deepface"\n')
    with pytest.raises(InputError, match="train_ok_folders"):
        read_train_ok_folders(bad)
    with pytest.raises(InputError, match="not found"):
        read_train_ok_folders(tmp_path / "missing.toml")


def test_shared_train_ok_sources(shared_data, train_ok_folders):
    sources = shared_sources(shared_data, train_ok_folders=train_ok_folders)
    assert len(sources) > 100
    assert {s.licence for s in sources} == {TRAIN_OK}
    tops = {s.name.split("/")[0] for s in sources}
    assert not tops & {"instantrestore", "keep", "dmdnet", "asffnet", "codeformer", "pgtformer", "gpen"}
    names = {s.name for s in sources}
    assert "face_recognition/two_people.jpg" not in names  # group photos: who is who is unknown
    assert "face_recognition/short_hamilton_clip.mp4" not in names
    by_id = {}
    for s in sources:
        by_id.setdefault(s.identity, []).append(s)
    assert len(by_id["deepface:id02"]) >= 5
    assert {s.kind for s in sources} == {"image", "video"}


def test_pack_two_identities_and_load(two_people_pack):
    sources, report, pack = two_people_pack
    assert report.bytes == pack.path.stat().st_size < 40 * 2**20
    assert sorted(pack.identities) == sorted(TWO_PEOPLE)
    assert len(pack) == report.crops >= 6
    assert pack.licence_classes == {TRAIN_OK}
    pack.require_train_ok()
    assert pack.resolution == 128
    counts = pack.counts()
    assert counts["deepface:id02"] >= 4 and counts["Joe Biden"] >= 1
    assert set(pack.source_names) <= {s.name for s in sources}
    for i in range(len(pack)):
        crop = pack.image(i)
        assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
        assert crop.std() > 10  # a face, not an empty border
    # the detector's landmarks land near the template after alignment (fractions of the crop)
    err = np.abs(pack.landmarks - template(128) / 128).max(axis=(1, 2))
    assert (err < 0.06).all(), err


def test_eval_only_sets_are_refused(shared_data, train_ok_folders, detector, tmp_path):
    sources = discover_sources(shared_data / "instantrestore", licence=TRAIN_OK, train_ok_folders=train_ok_folders)
    # files inside the shared folder keep the README's class whatever the caller claims
    assert {s.licence for s in sources} == {EVAL_ONLY}
    # and a train-ok folder found without the folder list is eval-only too: nothing trains by default
    knn = shared_data / "face_recognition/knn_train"
    assert {s.licence for s in discover_sources(knn, licence=TRAIN_OK)} == {EVAL_ONLY}
    assert {s.licence for s in discover_sources(knn, train_ok_folders=train_ok_folders)} == {TRAIN_OK}
    layout = [s for s in sources if s.identity == "00001"]
    assert any(s.name.endswith("gt.png") for s in layout)
    assert not any(s.name.endswith("degraded.png") for s in layout)
    assert sum("conditioning" in s.name for s in layout) >= 6
    with pytest.raises(EvalOnlyDataError, match="eval-only"):
        pack_dataset(sources, tmp_path / "x.npz", 64, detector=detector)
    assert not (tmp_path / "x.npz").exists()
    # explicitly allowed for an evaluation pack, and the pack says what it holds
    pack_dataset(layout[:3], tmp_path / "eval.npz", 64, detector=detector, allow_eval_only=True)
    pack = PackedFaces(tmp_path / "eval.npz")
    assert pack.licence_classes == {EVAL_ONLY}
    with pytest.raises(EvalOnlyDataError):
        pack.require_train_ok()
    # require_train_ok = false is for data of unknown licence (your own): eval-only data is still refused
    from streamrestore.train.config import TrainConfig, open_training_pack

    with pytest.raises(EvalOnlyDataError, match="eval-only source.*never trained on"):
        open_training_pack(TrainConfig(data=str(tmp_path / "eval.npz"), require_train_ok=False))


def test_a_missing_pack_names_the_command_that_builds_it(tmp_path):
    from streamrestore.errors import InputError

    missing = tmp_path / "pack.npz"
    with pytest.raises(InputError, match=f"build it with `python -m streamrestore.data --out {missing}`"):
        PackedFaces(missing)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a pack\n")
    with pytest.raises(InputError, match=r"is not a packed face dataset \(the .npz `python -m streamrestore.data` "
                                         r"writes\)$"):
        PackedFaces(notes)


def test_discover_identity_folder_layouts(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    import cv2

    (tmp_path / "ann").mkdir()
    (tmp_path / "bob" / "cropped_images").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ann" / "a.jpg"), image)
    cv2.imwrite(str(tmp_path / "ann" / "b.png"), image)
    (tmp_path / "ann" / "notes.txt").write_text("not a photo")
    cv2.imwrite(str(tmp_path / "bob" / "cropped_images" / "1.png"), image)
    (tmp_path / "clip.mp4").write_bytes(b"")
    sources = discover_sources(tmp_path)
    got = sorted((s.identity, s.name, s.kind) for s in sources)
    assert got == [("ann", "ann/a.jpg", "image"), ("ann", "ann/b.png", "image"),
                   ("bob", "bob/cropped_images/1.png", "image"), ("clip", "clip.mp4", "video")]


def test_dataset_never_uses_the_target_as_its_own_reference(mixed_pack):
    pack = mixed_pack
    assert CLIP in pack.identities
    ds = RestorationDataset(pack, preset="severe", seed=3, min_refs=1, max_refs=4, min_time_gap_s=1.0)
    seen_counts = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            target = int(s["index"])
            count = int(s["ref_count"])
            refs = s["ref_indices"][:count].tolist()
            seen_counts.add(count)
            assert 1 <= count <= 4
            assert target not in refs
            assert (s["ref_indices"][count:] == -1).all()
            assert s["ref_mask"].tolist() == [k < count for k in range(4)]
            assert len(set(refs)) == count
            for r in refs:
                assert pack.identity[r] == pack.identity[target]
                if pack.source[r] == pack.source[target]:  # frames of one clip: far apart only
                    assert abs(pack.time_s[r] - pack.time_s[target]) >= 1.0
            assert (s["references"][count:] == 0).all()
            assert s["degraded"].shape == s["target"].shape == (3, 64, 64)
            assert s["degraded"].is_contiguous() and s["target"].is_contiguous()
            assert 0.0 <= float(s["degraded"].min()) and float(s["degraded"].max()) <= 1.0
            assert s["landmarks"].shape == (5, 2) and s["ref_landmarks"].shape == (4, 5, 2)
    assert len(seen_counts) > 1  # the number of references varies
    # every target of the clip has only frames >= 1 s away as candidates
    clip = pack.indices_of(CLIP)
    assert len(clip) >= 3
    for t in clip:
        for r in ds.references_of(int(t)):
            assert r != t


def test_dataset_is_reproducible_per_seed_and_epoch(two_people_pack):
    pack = two_people_pack[2]
    a = RestorationDataset(pack, seed=1)
    b = RestorationDataset(pack, seed=1)
    s1, s2 = a[0], b[0]
    for key in ("degraded", "target", "references", "ref_indices"):
        assert torch.equal(s1[key], s2[key])
    assert not torch.equal(s1["degraded"], s1["target"])  # it is degraded
    a.set_epoch(1)
    assert not torch.equal(a[0]["degraded"], s1["degraded"])


def test_identity_split_is_disjoint_and_deterministic(mixed_pack):
    train, val = mixed_pack.split(val_fraction=0.4, seed=0, min_crops=3)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(mixed_pack.identities)
    assert len(val) >= 1
    counts = mixed_pack.counts()
    assert all(counts[name] >= 3 for name in val)
    assert (train, val) == mixed_pack.split(val_fraction=0.4, seed=0, min_crops=3)
    names = [f"id{i}" for i in range(20)]
    t1, v1 = split_identities(names, 0.25, seed=7)
    t2, v2 = split_identities(list(reversed(names)), 0.25, seed=7)
    assert (t1, v1) == (t2, v2) and len(v1) == 5
    # a dataset over the train half never draws a held-out person
    ds = RestorationDataset(mixed_pack, train)
    held_out = {mixed_pack.identities.index(n) for n in val}
    assert all(int(mixed_pack.identity[t]) not in held_out for t in ds.targets)


def test_copies_of_one_photo_are_packed_once(shared_data, train_ok_folders, detector, tmp_path):
    wanted = {"face_recognition/obama-240p.jpg", "face_recognition/obama-1080p.jpg",
              "face_recognition/knn_train/obama/obama2.jpg"}
    sources = [s for s in shared_sources(shared_data, train_ok_folders=train_ok_folders, identities=["Barack Obama"]) if s.name in wanted]
    assert len(sources) == 3
    report = pack_dataset(sources, tmp_path / "obama.npz", 64, detector=detector)
    assert report.skipped.get("near-duplicate") == 1  # 240p and 1080p are the same photo
    pack = PackedFaces(tmp_path / "obama.npz")
    assert len(pack) == 2 and "face_recognition/knn_train/obama/obama2.jpg" in pack.source_names


def test_reference_jitter_moves_the_landmarks_with_the_face():
    from streamrestore.data.samples import jitter_reference

    side = 64
    points = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)
    yy, xx = np.mgrid[0:side, 0:side]
    image = np.zeros((side, side, 3), np.float32)
    for x, y in points * side:
        image += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)[..., None]
    for seed in range(5):
        moved, where = jitter_reference(image, np.random.default_rng(seed), 2.0, points)
        assert not np.allclose(where, points, atol=1 / side)  # amount 2: several pixels
        for x, y in where * side:  # each dot's brightest pixel is where its landmark went
            y0, x0 = int(round(y)) - 4, int(round(x)) - 4
            window = moved[y0:y0 + 9, x0:x0 + 9].sum(2)
            dy, dx = np.unravel_index(np.argmax(window), window.shape)
            assert abs(x0 + dx - x) <= 1.0 and abs(y0 + dy - y) <= 1.0
    still, same = jitter_reference(image, np.random.default_rng(0), 0.0, points)
    np.testing.assert_allclose(same, points, atol=1e-6)


def test_reference_jitter_changes_only_the_references(two_people_pack):
    pack = two_people_pack[2]
    plain = RestorationDataset(pack, preset="severe", min_refs=2, max_refs=2, seed=4)
    moved = RestorationDataset(pack, preset="severe", min_refs=2, max_refs=2, seed=4, reference_jitter=1.0)
    a, b = plain[3], moved[3]
    for key in ("degraded", "target", "landmarks", "ref_indices"):
        assert torch.equal(a[key], b[key]), key  # the jitter's draws come after everything else
    assert not torch.equal(a["references"], b["references"])
    assert not torch.allclose(a["ref_landmarks"], b["ref_landmarks"])
    assert (b["ref_landmarks"] - a["ref_landmarks"]).abs().max() < 0.1  # a few pixels, not another face
    with pytest.raises(ValueError, match="reference_jitter"):
        RestorationDataset(pack, reference_jitter=-1.0)


def test_uint8_samples_are_the_float_samples(two_people_pack):
    from streamrestore.data.samples import IMAGE_KEYS, images_to_float

    pack = two_people_pack[2]
    floats = RestorationDataset(pack, preset="severe", min_refs=1, max_refs=3, seed=6, reference_jitter=1.0)
    bytes_ = floats.with_uint8_images()
    assert not floats.uint8_images  # the view leaves the dataset as it was
    for i in range(6):
        a, b = floats[i], bytes_[i]
        for key in IMAGE_KEYS:
            assert a[key].dtype == torch.float32 and b[key].dtype == torch.uint8, key
            assert a[key].shape == b[key].shape and b[key].is_contiguous(), key
        converted = images_to_float(b)
        assert converted.keys() == a.keys()
        for key, value in a.items():
            assert torch.equal(converted[key], value), key  # the same draws, the same values
    assert images_to_float(a) == a  # float images pass as they are


def test_the_pack_command_says_a_users_mistake_in_one_line(tmp_path, capsys):
    """``python -m streamrestore.data``: exit 2 and one line, before any face is packed; an existing
    pack is replaced only with --force."""
    from streamrestore.data.__main__ import main as pack_main

    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    existing = tmp_path / "old.npz"
    existing.write_bytes(b"a pack")
    for argv, words in (
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(existing)], "already exists; replace it with --force"),
        (["--out", str(tmp_path / "x.npz"), "--resolution", "16"], "--resolution must be at least 32"),
        (["--out", str(tmp_path / "x.npz"), "--frames-per-video", "0"], "--frames-per-video must be at least 1"),
        (["--out", str(tmp_path / "x.npz"), "--shared", str(tmp_path / "nowhere")], "has no data/ folder"),
        (["--out", str(tmp_path / "x.npz"), "--detector", str(tmp_path / "no.onnx")], "--detector"),
    ):
        assert pack_main(["--shared", str(shared), *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert existing.read_bytes() == b"a pack" and not (tmp_path / "x.npz").exists()


def test_frames_sampled_from_a_phone_clip_are_upright(tmp_path):
    """A clip stored sideways with a display rotation gives its frames as shown, so packing finds
    its faces upright (as the pipeline's detector does)."""
    import av
    from media_utils import make_clip

    from streamrestore.data.pack import sample_video_frames

    for rotation, turns in ((0, 0), (90, 1), (-90, 3), (180, 2)):
        path = tmp_path / f"r{rotation}.mp4"
        make_clip(path, width=96, height=64, frames=10, rotation=rotation)
        with av.open(str(path)) as c:
            stored = {round(float(f.time), 3): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
        sampled = list(sample_video_frames(path, 2, 0.1))
        assert len(sampled) == 2
        for when, rgb in sampled:
            assert np.array_equal(rgb, np.rot90(stored[round(when, 3)], turns)), rotation
