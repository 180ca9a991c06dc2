import collections
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from streamrestore.errors import ReferencesError
from streamrestore.faces.align import template
from streamrestore.faces.detect import create_detector, detect_padded
from streamrestore.faces.identity import IdentityMatcher, create_embedder
from streamrestore.faces.references import check_reference_specs, load_reference_sets, parse_reference_specs
from streamrestore.faces.track import FaceTracker, TrackerConfig

R = 128  # small crops keep the tests fast; geometry is resolution independent


@dataclass
class Kit:
    """A detector and an embedder, and photos they know: drawn people (Ann, Ben; the drawn-face
    detector and embedder) or shared photos (Obama, Biden; SCRFD and the pack's embedder)."""

    detector: Any
    embedder: Any
    dim: int  # embedding size
    photos: dict  # person -> list of photo paths (at least two of the first, one of the second)
    two_people: Path  # a photo of both: the first person left, the second right and larger
    aligned: Path  # a folder of four FFHQ-aligned 512 px crops of one person

    @property
    def people(self) -> list:
        return list(self.photos)


def _drawn_kit(folder: Path) -> Kit:
    import synthetic_faces as sf

    photos = {name: sorted(sf.write_portraits(folder / name, name).iterdir()) for name in ("ann", "ben")}
    two = folder / "two_people.png"
    cv2.imwrite(str(two), sf.two_people(640, 360)[0][:, :, ::-1])
    aligned = folder / "aligned"
    aligned.mkdir()
    for i in range(4):
        cv2.imwrite(str(aligned / f"{i}.png"), sf.aligned_face("cal", 512, variant=i % 2)[:, :, ::-1])
    return Kit(sf.SyntheticFaceDetector(), sf.SyntheticFaceEmbedder(), 3, photos, two, aligned)


@pytest.fixture(scope="module", params=["synthetic", "real"])
def kit(request, tmp_path_factory):
    if request.param == "synthetic":
        return _drawn_kit(tmp_path_factory.mktemp("drawn_people"))
    shared_data, shared_models = request.getfixturevalue("shared_data"), request.getfixturevalue("shared_models")
    root = shared_data / "face_recognition"
    return Kit(create_detector("scrfd", models_dir=shared_models / "insightface"),
               create_embedder("insightface", models_dir=shared_models / "insightface"), 128,
               {"obama": [root / "knn_train/obama/obama.jpg", root / "knn_train/obama/obama2.jpg"],
                "biden": [root / "knn_train/biden/biden2.jpg"]},
               root / "two_people.jpg", shared_data / "instantrestore/00082/conditioning")


def _template_error(detector, crop):
    """Largest distance of re-detected landmarks from the template, in crop sizes."""
    faces = detect_padded(detector, crop)
    assert faces
    return np.abs(faces[0].kps - template(crop.shape[0])).max() / crop.shape[0]


def _link_folder(tmp_path, name, files):
    folder = tmp_path / name
    folder.mkdir()
    for file in files:
        (folder / file.name).symlink_to(file)
    return folder


def test_parse_reference_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x=y").mkdir()  # a folder named so is that folder (it was read as set x in folder y)
    assert parse_reference_specs(["x=y"]) == [("x=y", Path("x=y"))]
    assert parse_reference_specs(["x=z"]) == [("x", Path("z"))]
    assert parse_reference_specs(["refs/anna", "ben=/data/b"]) == [("anna", Path("refs/anna")), ("ben", Path("/data/b"))]
    (name, path), = parse_reference_specs(["photos/a=b"])  # '=' inside a path is not a name
    assert name == "a=b" and str(path) == "photos/a=b"
    (name, _), = parse_reference_specs(["faces/lin.png"])
    assert name == "lin"
    (name, _), = parse_reference_specs(["refs/anna/"])
    assert name == "anna"
    with pytest.raises(ReferencesError, match="more than once"):
        parse_reference_specs(["x/anna", "y/anna"])
    with pytest.raises(ReferencesError, match="NAME=DIR"):
        parse_reference_specs(["anna="])
    # names that read the same are one: macOS's folder names are decomposed, a typed name is not; a trailing space
    # or another case is not seen on the screen (the summary showed "José" twice, two people)
    for first, second in (("Jose\u0301", "Jos\u00e9"), ("anna ", "anna"), ("Anna", "anna")):
        with pytest.raises(ReferencesError, match=f"{first!r} and {second!r} given more than once"):
            parse_reference_specs([f"x/{first}", f"{second}=y"])
    assert [n for n, _ in parse_reference_specs(["x/Jose", "x/José"])] == ["Jose", "José"]  # not alike: two people


def test_loads_whole_photos(kit, tmp_path):
    person = kit.people[0]
    folder = _link_folder(tmp_path, person, kit.photos[person])
    (refs,) = load_reference_sets([str(folder)], kit.detector, kit.embedder, R)
    assert refs.name == person and refs.embedder == kit.embedder.name
    assert refs.crops.shape == (2, R, R, 3) and refs.crops.dtype == np.uint8
    assert refs.embeddings.shape == (2, kit.dim)
    assert [f.split("/")[-1] for f in refs.files] == [p.name for p in kit.photos[person]]
    # The crop is an aligned face: detecting in it again lands on the template.
    assert _template_error(kit.detector, refs.crops[0]) < 0.06
    assert refs.crops_at == {}  # one side asked for


def test_loads_several_sides_each_aligned_from_the_photo(kit, tmp_path):
    """For a pipeline that cuts faces at several sides: ``crops`` at the largest, and each side
    aligned from the photo itself (sharper than the largest shrunk), the same face on each."""
    import cv2

    person = kit.people[0]
    folder = _link_folder(tmp_path, person, kit.photos[person])
    (one,) = load_reference_sets([str(folder)], kit.detector, kit.embedder, 64)
    (refs,) = load_reference_sets([str(folder)], kit.detector, kit.embedder, (256, 64, 128))
    assert sorted(refs.crops_at) == [64, 128, 256] and refs.crops is refs.crops_at[256]
    assert np.array_equal(refs.crops_at[64], one.crops)  # as if loaded at that side alone
    shrunk = cv2.resize(refs.crops[0], (64, 64), interpolation=cv2.INTER_AREA)
    difference = np.abs(shrunk.astype(int) - refs.crops_at[64][0].astype(int)).mean()
    assert 0 < difference < 12  # the same aligned face, not a resized copy


def test_loads_aligned_crops_and_caps_the_count(kit, caplog):
    scrfd, embedder, folder = kit.detector, kit.embedder, kit.aligned
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (refs,) = load_reference_sets([f"p82={folder}"], scrfd, embedder, 512, max_images=3)
    assert refs.name == "p82" and refs.crops.shape == (3, 512, 512, 3) and len(refs.files) == 3
    assert not [r for r in caplog.records if "does not look like" in r.getMessage()]
    assert all(_template_error(scrfd, crop) < 0.06 for crop in refs.crops)


def test_missing_and_empty_folders(tmp_path, kit, caplog, monkeypatch):
    scrfd, embedder = kit.detector, kit.embedder
    with pytest.raises(ReferencesError, match="does not exist"):
        load_reference_sets([str(tmp_path / "nobody")], scrfd, embedder, R)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReferencesError, match="no images"):
        load_reference_sets([str(tmp_path / "empty")], scrfd, embedder, R)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        with pytest.raises(ReferencesError, match="no images"):
            load_reference_sets([str(notes)], scrfd, embedder, R)
    assert any("readme.txt" in r.getMessage() for r in caplog.records)
    walls = tmp_path / "walls"  # photos, none with a face: the set is named once (as its folder)
    walls.mkdir()
    cv2.imwrite(str(walls / "wall.png"), np.full((64, 64, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReferencesError, match=r"^reference set walls has no usable photo: wall\.png"):
        load_reference_sets(["walls"], scrfd, embedder, R)
    with pytest.raises(ReferencesError, match=r"^reference set ann \(.*walls\) has no usable photo"):
        load_reference_sets([f"ann={walls}"], scrfd, embedder, R)


def test_non_image_files_are_skipped_with_a_warning(tmp_path, kit, caplog):
    scrfd, embedder = kit.detector, kit.embedder
    folder = _link_folder(tmp_path, kit.people[0], kit.photos[kit.people[0]][:1])
    (folder / "Thumbs.db").write_bytes(b"\0\1")
    (folder / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (refs,) = load_reference_sets([str(folder)], scrfd, embedder, R)
    assert len(refs.files) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("Thumbs.db" in m for m in messages)
    assert not any(".DS_Store" in m for m in messages)


def test_photo_without_face_is_skipped_with_a_warning_naming_it(tmp_path, kit, caplog):
    scrfd, embedder = kit.detector, kit.embedder
    photo = kit.photos[kit.people[0]][0]
    folder = _link_folder(tmp_path, "anna", [photo])
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 300, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (refs,) = load_reference_sets([str(folder)], scrfd, embedder, R)
    assert [Path(f).name for f in refs.files] == [photo.name]
    assert len(refs.crops) == len(refs.embeddings) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("wall.png" in m and "no face" in m for m in messages), messages
    assert any("broken.jpg" in m for m in messages), messages
    # and as data, for a program (a service answering "2 of your photos were not used")
    assert sorted(refs.skipped) == ["broken.jpg (not readable)", "wall.png (no face)"]
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer

    stats = FaceRestorer(IdentityRestorer(R), scrfd, [refs]).stats
    assert {name: sorted(files) for name, files in stats.as_dict()["references_skipped"].items()} == \
        {"anna": ["broken.jpg (not readable)", "wall.png (no face)"]}


def test_a_photo_of_too_many_pixels_is_skipped_from_its_header(tmp_path, kit, caplog, monkeypatch):
    """A "decompression bomb" among the photos (a 1.2 MB PNG of 20000 x 20000) was decoded whole: 6.4 GB
    and 28 s for a reference that had no face. Pillow's limit is lowered here so that a small file
    stands for it."""
    from PIL import Image

    photo = kit.photos[kit.people[0]][0]
    folder = _link_folder(tmp_path, "anna", [photo])
    height, width = cv2.imread(str(photo)).shape[:2]
    cv2.imwrite(str(folder / "flat.png"), np.full((2 * height, 2 * width, 3), 128, np.uint8))  # 4x its pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", height * width)  # refused above twice that
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags, _real=cv2.imdecode: decoded.append(1) or _real(data, flags))
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (refs,) = load_reference_sets([str(folder)], kit.detector, kit.embedder, R)
    assert [Path(f).name for f in refs.files] == [photo.name] and len(decoded) == 1  # the bomb never decoded
    assert refs.skipped == ["flat.png (too large)"]
    (said,) = [r.getMessage() for r in caplog.records if "flat.png" in r.getMessage()]
    assert "million pixels, more than is read" in said and said.endswith("scale it down first; skipping it")


def test_set_without_any_usable_photo_stops(tmp_path, kit):
    scrfd, embedder = kit.detector, kit.embedder
    folder = tmp_path / "anna"
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 300, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ReferencesError, match="no usable photo") as error:
        load_reference_sets([str(folder)], scrfd, embedder, R)
    assert "wall.png (no face)" in str(error.value) and "broken.jpg (not readable)" in str(error.value)


def test_several_faces_use_the_largest(tmp_path, kit, caplog):
    scrfd, embedder, photo = kit.detector, kit.embedder, kit.two_people
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (refs,) = load_reference_sets([f"pair={photo}"], scrfd, embedder, R)
    assert any(photo.name in r.getMessage() and "largest" in r.getMessage() for r in caplog.records)
    rgb = np.ascontiguousarray(cv2.imread(str(photo))[:, :, ::-1])
    faces = scrfd.detect(rgb)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    largest, smallest = faces[int(np.argmax(areas))], faces[int(np.argmin(areas))]
    embedded = refs.embeddings[0]
    # (the reference may come from the padded pass, so not bit-identical to the plain one)
    assert embedded @ embedder.embed(rgb, [largest])[0] > 0.8
    assert embedded @ embedder.embed(rgb, [smallest])[0] < 0.4


def test_stranger_in_a_set_is_named_and_left_out_where_the_others_agree(tmp_path, kit, caplog):
    """A set's one stranger (a group photo among the bride's) was said "remove it if it shows someone else" and
    given to the model all the same: where two photos or more agree, it is left out (said, and recorded as
    skipped); two photos unlike each other are both kept, said (which one is the person cannot be told)."""
    scrfd, embedder = kit.detector, kit.embedder
    first, second = kit.people
    stranger = kit.photos[second][0]
    folder = _link_folder(tmp_path, first, [*kit.photos[first][:2], stranger])
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (loaded,) = load_reference_sets([str(folder)], scrfd, embedder, R)
    flagged = [r.getMessage() for r in caplog.records if "does not look like" in r.getMessage()]
    assert len(flagged) == 1 and stranger.name in flagged[0] and "left out" in flagged[0]
    assert stranger.name not in [Path(f).name for f in loaded.files] and len(loaded.files) == 2
    assert len(loaded.crops) == len(loaded.embeddings) == 2
    assert loaded.skipped == [f"{stranger.name} (unlike the other photos)"]
    pair = _link_folder(tmp_path, "pair", [kit.photos[first][0], stranger])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (both,) = load_reference_sets([str(pair)], scrfd, embedder, R)
    assert any("same person" in r.getMessage() for r in caplog.records) and len(both.files) == 2


def test_tracks_of_two_people_get_their_own_reference_sets(tmp_path, kit):
    """The two-person photo shows the first person (left) and the second (right); their reference
    folders hold other photos of each."""
    scrfd, embedder = kit.detector, kit.embedder
    left, right = kit.people
    folders = [_link_folder(tmp_path, name, kit.photos[name]) for name in (right, left)]
    sets = load_reference_sets([str(f) for f in folders], scrfd, embedder, R)
    matcher = IdentityMatcher(sets)
    image = np.ascontiguousarray(cv2.imread(str(kit.two_people))[:, :, ::-1])
    tracker = FaceTracker(TrackerConfig(), fps=30)
    names = {}
    for index in range(6):
        shift = np.float32([[1, 0, 3 * index], [0, 1, -2 * index]])
        frame = cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
        for _, tracked in tracker.push(index, scrfd.detect(frame), frame):
            for face in tracked:
                if matcher.needs_embedding(face.track_id):
                    matcher.observe(face.track_id, embedder.embed(frame, [face.face])[0])
                names[face.track_id] = (face.face.box[0] < image.shape[1] / 2, matcher.identity_of(face.track_id))
    assert sorted(names.values()) == [(False, right), (True, left)]
    assert all(matcher.is_decided(track_id) for track_id in names)


def test_hamilton_clip_tracks_match_the_right_reference(shared_data, shared_models):
    """short_hamilton_clip.mp4, by looking at it: 0-19 wide stage shot (Lin-Manuel Miranda
    singing on the right, Alex Lacamoire at the piano on the left), 20-81 Lacamoire in profile
    close-up with the audience behind, 82-210 Miranda frontal, 211- the audience (neither)."""
    scrfd = create_detector("scrfd", models_dir=shared_models / "insightface")
    embedder = create_embedder("insightface", models_dir=shared_models / "insightface")
    root = shared_data / "face_recognition"
    sets = load_reference_sets([f"lin={root / 'lin-manuel-miranda.png'}", f"alex={root / 'alex-lacamoire.png'}"],
                               scrfd, embedder, R)
    matcher = IdentityMatcher(sets)
    tracker = FaceTracker(TrackerConfig(), fps=29.97)
    seen = collections.defaultdict(list)
    with av.open(str(root / "short_hamilton_clip.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            for frame_index, tracked in tracker.push(index, scrfd.detect(rgb), rgb):
                for face in tracked:
                    seen[face.track_id].append((frame_index, face.face.box))
                    if not face.interpolated and matcher.needs_embedding(face.track_id):
                        matcher.observe(face.track_id, embedder.embed(rgb, [face.face])[0])

    def truth(track_id):
        first, box = seen[track_id][0]
        width = box[2] - box[0]
        if first < 20:
            return "lin" if box[0] > 320 else "alex"
        if first < 82:
            return "alex" if width > 120 else None
        return "lin" if first < 211 else None

    decided = {track_id: matcher.identity_of(track_id) for track_id in seen}
    # Every assignment made is right (a wrong identity is worse than none) ...
    for track_id, name in decided.items():
        assert name is None or name == truth(track_id), (track_id, seen[track_id][0], name)
    # ... and Miranda's frontal shot, the longest track, is matched.
    main = max((t for t in seen if 82 <= seen[t][0][0] < 211), key=lambda t: len(seen[t]))
    assert decided[main] == "lin"
    assert all(decided[t] is None for t in seen if seen[t][0][0] >= 211)


def test_loaded_sets_and_folders_mix_in_refs(tmp_path, synthetic_faces):
    """``refs`` takes ``ReferenceSet`` objects and folder specs together (the folders are loaded, the
    sets kept, in the order given), a single set without a list, and refuses a name given twice."""
    from streamrestore.api import build_face_restorer
    from streamrestore.errors import ReferencesError

    ann = build_face_restorer(str(synthetic_faces.write_portraits(tmp_path / "ann", "ann")), model="identity")
    (ann_set,) = ann.reference_sets
    ben_folder = synthetic_faces.write_portraits(tmp_path / "ben", "ben")
    both = build_face_restorer([ann_set, f"ben={ben_folder}"], model="identity")
    assert [s.name for s in both.reference_sets] == ["ann", "ben"] and both.reference_sets[0] is ann_set
    assert build_face_restorer(ann_set, model="identity").reference_sets == [ann_set]
    with pytest.raises(ReferencesError, match="ann given more than once"):
        build_face_restorer([ann_set, f"ann={ben_folder}"], model="identity")


def test_a_video_of_the_person_gives_frames_spread_over_it(tmp_path, caplog):
    """Another clip of the person is what fits a face best: a video given as references (alone or in
    a folder) gives FRAMES_PER_REFERENCE_VIDEO frames at evenly spaced instants, upright (a phone's
    portrait clip is stored sideways), each named by its instant in the warnings."""
    import synthetic_faces as sf
    from media_utils import make_clip

    from streamrestore.faces.references import FRAMES_PER_REFERENCE_VIDEO, list_reference_files, reference_pictures

    def picture(i):  # drawn turned by the tag below, so that it is shown upright; no face in frame 6
        rgb, _ = sf.scene(96, 128, [("ann", sf.face_matrix((48, 64 + i / 2), 30, 90))], i)
        return sf.background(96, 128, i) if i == 6 else rgb

    clip = tmp_path / "ann" / "holiday.mp4"
    clip.parent.mkdir()
    make_clip(clip, width=96, height=128, frames=16, fps=8, rotation=90, picture=picture)  # 2 s
    assert list_reference_files(clip) == list_reference_files(clip.parent) == [clip]
    pictures = list(reference_pictures(clip))
    assert [label for label, _ in pictures] == [f"holiday.mp4 at {t} s" for t in ("0.2", "0.8", "1.2", "1.8")]
    assert len(pictures) == FRAMES_PER_REFERENCE_VIDEO and all(rgb.shape == (96, 128, 3) for _, rgb in pictures)

    detector, embedder = sf.UprightFaceDetector(), sf.SyntheticFaceEmbedder()
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        (by_file,) = load_reference_sets([str(clip)], detector, embedder, R)
        (by_folder,) = load_reference_sets([str(clip.parent)], detector, embedder, R)
    assert by_file.name == "holiday" and by_folder.name == "ann"
    assert len(by_file.crops) == 3 and np.array_equal(by_file.crops, by_folder.crops)  # frame 6 (0.75 s): none
    assert by_file.files == [f"{clip} at {t} s" for t in ("0.2", "1.2", "1.8")]
    assert f"no face found in reference video frame {clip} at 0.8 s" in caplog.text


def test_a_damaged_reference_video_gives_whole_frames_each_once_and_says_so(tmp_path, caplog, kit):
    """A stretch of damaged data gave the frame before it, repeated at each lost instant: the pick there took
    it, and the next pick took it again, labelled with instants it was not from, unsaid. A pick in damaged
    data now takes the first whole frame after it (a frame beside a damaged one counts as damaged: bwdif
    builds each from its neighbours) and says so; a video whose every frame is damaged is named."""
    from media_utils import make_clip
    from test_video_io import _damage_packets

    from streamrestore.faces.references import reference_pictures

    def picture(i):  # each frame its own grey, so that a picture tells which frame it is
        return np.full((64, 96, 3), 6 * i, np.uint8)

    clean, bad = tmp_path / "clean.mp4", tmp_path / "bad.mp4"
    make_clip(clean, frames=40, fps=8, picture=picture, options={"preset": "ultrafast", "crf": "0", "g": "10"})
    _damage_packets(clean, bad, range(14, 20))  # frames 14-19 (1.75-2.375 s); keyframes at 0, 10, 20, 30
    assert [label for label, _ in reference_pictures(clean)] == [f"clean.mp4 at {t} s" for t in ("0.6", "1.9",
                                                                                                    "3.1", "4.4")]
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        pictures = list(reference_pictures(bad))
    # the pick at 1.875 s (frame 15, lost) takes frame 21: frame 20 is beside the last lost one
    assert [label for label, _ in pictures] == [f"bad.mp4 at {t} s" for t in ("0.6", "2.6", "3.1", "4.4")]
    assert [round(float(rgb.mean()) / 6) for _, rgb in pictures] == [5, 21, 25, 35]
    assert f"reference video {bad}: damaged data at 1.9 s; its frame at 2.6 s is used instead" in caplog.text

    ruined = tmp_path / "ruined" / "all.mp4"
    ruined.parent.mkdir()
    _damage_packets(clean, ruined, range(1, 40))  # (frame 0 alone whole: no pick finds one)
    with pytest.raises(ReferencesError, match=r"no usable photo: all.mp4 \(damaged where read\)"):
        load_reference_sets([str(ruined.parent)], kit.detector, kit.embedder, R)


def test_a_reference_video_of_fewer_frames_than_picks_gives_each_frame_once(tmp_path, monkeypatch):
    """One photo exported as a one-frame video had no frame at or after the first pick's instant: the set
    stopped with "no usable photo: ; add photos". Such a clip now gives its frames from the first, each once."""
    from media_utils import make_clip

    from streamrestore.faces.references import reference_pictures

    for frames in (1, 2, 3, 4):
        clip = tmp_path / f"short{frames}.mp4"
        make_clip(clip, frames=frames, fps=25, picture=lambda i: np.full((64, 96, 3), 60 * i, np.uint8),
                  options={"preset": "ultrafast", "crf": "0"})
        pictures = list(reference_pictures(clip))
        assert [label for label, _ in pictures] == [f"{clip.name} at {0.04 * i:.2f} s" for i in range(frames)]
        assert [round(float(rgb.mean()) / 60) for _, rgb in pictures] == list(range(frames))  # (each, in order)
    # one that cannot be read after all is that file's problem (skipped, said), not the run's (review 53b)
    import streamrestore.faces.references as references
    from streamrestore.errors import InputError

    def unreadable(*args, **kwargs):
        raise InputError("cannot decode it")

    monkeypatch.setattr(references, "VideoReader", unreadable)
    with pytest.raises(ReferencesError, match=r"reference video .*short1.mp4: cannot decode it"):
        list(reference_pictures(tmp_path / "short1.mp4"))


def test_a_reference_video_that_cannot_be_read_is_named(tmp_path, kit):
    folder = tmp_path / "anna"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ReferencesError, match=r"no usable photo: broken.mp4 \(not readable\)"):
        load_reference_sets([str(folder)], kit.detector, kit.embedder, R)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ReferencesError, match=r"notes.txt is neither a photo \(.*\) nor a video; give a folder of "
                                              "photos, or a video of the person"):
        check_reference_specs([str(tmp_path / "notes.txt")])


def test_two_sets_of_one_person_are_said(tmp_path, kit, caplog):
    """The same photos under two names (or two folders of one person) tied silently: each face went
    to either by a hair. Two people's sets are not flagged."""
    scrfd, embedder = kit.detector, kit.embedder
    first, second = kit.people
    folder = _link_folder(tmp_path, first, kit.photos[first][:2])
    other = _link_folder(tmp_path, second, kit.photos[second][:2])
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        load_reference_sets([f"aoc={folder}", f"katie={folder}", f"{second}={other}"], scrfd, embedder, R)
    said = [r.getMessage() for r in caplog.records if "look like the same person" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("reference sets aoc and katie look like the same person")


def test_a_folder_of_hundreds_of_photos_is_read_in_part_and_a_few_alike_are_encoded(tmp_path, synthetic_faces,
                                                                                      caplog):
    """300 reference photos: 93 s of start-up in silence, then 0.4 fps (every photo in every frame's attention)."""
    import shutil

    from streamrestore.api import build_face_restorer
    from streamrestore.faces.references import READ_AT_MOST
    from streamrestore.pipeline import ENCODED_AT_MOST, typical_references

    one = synthetic_faces.write_portraits(tmp_path / "one", "ann", count=2)
    many = tmp_path / "many"
    many.mkdir()
    photos = sorted(one.iterdir())
    for i in range(30):
        shutil.copy(photos[i % 2], many / f"ann_{i:03d}{photos[i % 2].suffix}")

    for blank in ("ann_000.png", "ann_005.png"):  # (among those read first: others are read in their place)
        cv2.imwrite(str(many / blank), np.full((96, 96, 3), 128, np.uint8))
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        restorer = build_face_restorer(str(many), model="identity")
    (refs,) = restorer.reference_sets
    names = [Path(f).name for f in refs.files]
    assert len(names) == READ_AT_MOST == 24 and "ann_000.png" not in names and "ann_005.png" not in names
    assert names[0] == "ann_001.png" and names[-2:] == ["ann_004.png", "ann_009.png"], names
    assert f"reference set many holds more photos or video frames than are read: the first {READ_AT_MOST} with a " \
        "face, spread over it by name, are used" in caplog.text
    assert f"reference set many: the {ENCODED_AT_MOST} photos of its 24 most alike to the rest are used" in caplog.text
    # the photos nearest the set's mean, in their order: an odd one out is left out first
    rows = np.array([[1, 0], [0.9, 0.436], [0, 1], [0.95, 0.312], [0.98, -0.199]], np.float32)
    assert typical_references(rows, 3).tolist() == [0, 1, 3] and typical_references(rows, 9).tolist() == [0, 1, 2, 3, 4]


def test_the_record_of_the_reference_files_names_one_that_cannot_be_read(tmp_path):
    """A reference photo the run skipped (unreadable) ended the --json record, after the output was written, in a
    traceback: it is recorded as unreadable."""
    from streamrestore.faces.references import reference_files_record
    from streamrestore.output_file import sha256_of

    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8 not much of a photo")
    (folder / "b.jpg").symlink_to(tmp_path / "gone.jpg")
    (record,) = reference_files_record([f"Ann={folder}"])
    assert record["name"] == "Ann" and record["path"] == str(folder.resolve())
    assert record["files"]["a.jpg"] == sha256_of(folder / "a.jpg") and record["files"]["b.jpg"].startswith("unreadable (")



def test_a_sets_outliers_are_left_out_only_where_most_of_it_agrees(caplog):
    """Two burst shots alike beside three other photos were taken for the person and the three left out."""
    from streamrestore.faces.references import _outliers

    def unit(*rows):
        vectors = np.asarray(rows, np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    pair_and_three = unit([1, 0, 0, 0], [1, 0, 0, 0], [0.3, 1, 0, 0], [0.3, 0, 1, 0], [0.3, 0, 0, 1])
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        assert _outliers("s", list("abcde"), pair_and_three, 0.4) == []
    assert caplog.text.count("remove it if it shows someone else") == 3
    three_and_one = unit([1, 0, 0], [1, 0.1, 0], [1, 0, 0.1], [0, 1, 0])
    assert _outliers("s", list("abcd"), three_and_one, 0.4) == [3]
