import collections
import math

import av
import cv2
import numpy as np
import pytest

from streamrestore.faces.align import template
from streamrestore.faces.detect import create_detector
from streamrestore.faces.track import FaceTracker, OneEuroFilter, TrackerConfig, frame_signature, signature_distance
from streamrestore.types import Face

FACE_SIZE = 100.0
BASE_KPS = template(512) * (FACE_SIZE / 512)  # a 100-pixel face layout at the origin


def _face(x, y, score=0.9, kps_noise=None):
    kps = BASE_KPS + np.array([x, y])
    if kps_noise is not None:
        kps = kps + kps_noise
    return Face(box=np.array([x, y, x + FACE_SIZE, y + FACE_SIZE], np.float32), kps=kps.astype(np.float32),
                score=score)


def _run(tracker, per_frame, frames=None):
    out = []
    for index, faces in enumerate(per_frame):
        out += tracker.push(index, faces, None if frames is None else frames[index])
    return out + tracker.flush()


def test_config_validates_and_documents_defaults():
    config = TrackerConfig()
    assert config.max_gap >= 1
    for bad in (dict(max_gap=0), dict(distance_threshold=0), dict(min_cutoff=0),
                dict(beta=-1), dict(scene_cut_threshold=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrackerConfig(**bad)
    with pytest.raises(ValueError, match="fps"):
        FaceTracker(fps=0)
    for bad_lookahead in (-1, 1.5):
        with pytest.raises(ValueError, match="lookahead"):
            FaceTracker(lookahead=bad_lookahead)
    tracker = FaceTracker()
    assert tracker.lookahead == 0
    tracker.push(3, [], None)
    with pytest.raises(ValueError, match="increase"):
        tracker.push(3, [], None)


def test_static_noisy_landmarks_are_smoothed():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 2.0, (90, 5, 2))
    out = _run(FaceTracker(TrackerConfig(), fps=30), [[_face(200, 100, kps_noise=n)] for n in noise])
    assert [index for index, _ in out] == list(range(90))
    raw = np.array([faces[0].face.kps for _, faces in out])[30:]
    smooth = np.array([faces[0].kps for _, faces in out])[30:]
    truth = BASE_KPS + [200, 100]
    raw_jitter = np.sqrt(np.mean((raw - truth) ** 2))
    smooth_jitter = np.sqrt(np.mean((smooth - truth) ** 2))
    frame_to_frame = np.abs(np.diff(smooth, axis=0)).mean() / np.abs(np.diff(raw, axis=0)).mean()
    assert smooth_jitter < 0.5 * raw_jitter
    assert frame_to_frame < 0.25


def test_moving_face_is_followed_with_small_lag():
    speed = 3.0  # pixels per frame: ~0.9 face sizes per second at 30 fps
    rng = np.random.default_rng(2)
    frames = [[_face(100 + speed * i, 80, kps_noise=rng.normal(0, 0.5, (5, 2)))] for i in range(60)]
    out = _run(FaceTracker(TrackerConfig(), fps=30), frames)
    lag = [np.mean(BASE_KPS[:, 0] + 100 + speed * i - faces[0].kps[:, 0]) for i, (_, faces) in enumerate(out)]
    assert abs(np.mean(lag[20:])) < speed  # less than one frame behind once moving
    assert len({faces[0].track_id for _, faces in out}) == 1


def test_lookahead_interpolates_short_gaps():
    lookahead = 3
    positions = [(100 + 4 * i, 50 + 2 * i) for i in range(20)]
    per_frame = [[] if i in (8, 9, 10) else [_face(*positions[i])] for i in range(20)]
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=lookahead)
    out = []
    for index, faces in enumerate(per_frame):
        ready = tracker.push(index, faces, None)
        # frame i becomes final when frame i + L was pushed, not before
        assert [i for i, _ in ready] == ([index - lookahead] if index >= lookahead else [])
        out += ready
    out += tracker.flush()
    assert [i for i, _ in out] == list(range(20))
    assert len({f.track_id for _, faces in out for f in faces}) == 1
    for index, faces in out:
        assert len(faces) == 1
        assert faces[0].interpolated == (index in (8, 9, 10))
        np.testing.assert_allclose(faces[0].face.kps, BASE_KPS + positions[index], atol=1e-3)


def test_gaps_longer_than_lookahead_are_left_empty_but_keep_the_id():
    per_frame = [[] if 8 <= i < 14 else [_face(100, 100)] for i in range(20)]
    out = _run(FaceTracker(TrackerConfig(max_gap=8), fps=30, lookahead=2), per_frame)
    assert all(not faces for i, faces in out if 8 <= i < 14)
    assert len({f.track_id for _, faces in out for f in faces}) == 1


def test_live_mode_holds_last_landmarks_up_to_max_gap():
    per_frame = [[_face(100, 100)] for _ in range(10)] + [[] for _ in range(6)] + [[_face(100, 100)]]
    out = _run(FaceTracker(TrackerConfig(max_gap=3), fps=30, lookahead=0), per_frame)
    last_smoothed = out[9][1][0].kps
    for index in (10, 11, 12):
        (held,) = out[index][1]
        assert held.interpolated and held.track_id == out[9][1][0].track_id
        np.testing.assert_array_equal(held.kps, last_smoothed)
    assert all(not out[index][1] for index in (13, 14, 15))
    # gone for longer than max_gap: a new person as far as the tracker knows
    assert out[16][1][0].track_id != out[9][1][0].track_id


def test_two_faces_keep_two_ids_and_far_jumps_start_new_tracks():
    per_frame = [[_face(100 + i, 100), _face(400 - i, 120)] for i in range(15)]
    out = _run(FaceTracker(TrackerConfig(), fps=30), per_frame)
    ids = [[f.track_id for f in faces] for _, faces in out]
    assert all(len(set(i)) == 2 for i in ids) and len({t for i in ids for t in i}) == 2
    left = {f.track_id for _, faces in out for f in faces if f.face.box[0] < 250}
    assert len(left) == 1


def test_scene_cut_ends_all_tracks():
    dark = np.full((90, 160, 3), (30, 20, 10), np.uint8)
    bright = np.full((90, 160, 3), (20, 200, 240), np.uint8)
    assert signature_distance(frame_signature(dark), frame_signature(dark.copy())) < 0.01
    assert signature_distance(frame_signature(dark), frame_signature(bright)) > 0.9
    frames = [dark] * 5 + [bright] * 5
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=2)
    out = _run(tracker, [[_face(50, 50)]] * 10, frames)
    assert tracker.cuts == [5]
    before = {f.track_id for i, faces in out if i < 5 for f in faces}
    after = {f.track_id for i, faces in out if i >= 5 for f in faces}
    assert len(before) == len(after) == 1 and before != after


@pytest.mark.parametrize("lookahead", [0, 1, 3])
@pytest.mark.parametrize("flash", [1, 2])
def test_a_flash_is_no_scene_cut(lookahead, flash):
    """A guest's camera flash (a picture or two as unlike the one before as a cut's) ended every track: one
    person became 7 tracks over 3 flashes, each matched again and its smoothing begun again. A picture that
    is back as it was within FLASH_FRAMES keeps the tracks (a flash of two pictures unlike each other too);
    where the lookahead holds the flash's frames, their faces are the track's (filled in as a gap), else (live,
    or a shorter lookahead) a track of their own for the flash, never none. A picture that stays changed is a cut."""
    from streamrestore.faces.track import FLASH_FRAMES

    assert flash <= FLASH_FRAMES
    dark = np.full((90, 160, 3), (30, 20, 10), np.uint8)
    bright = [np.full((90, 160, 3), (20, 200, 240), np.uint8), np.full((90, 160, 3), (240, 240, 30), np.uint8)]
    frames = [dark] * 5 + bright[:flash] + [dark] * 5 + [bright[0]] * 5
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=lookahead)
    out = _run(tracker, [[_face(50 + i, 50)] for i in range(len(frames))], frames)
    assert tracker.flashes == [5] and tracker.cuts == [10 + flash]
    ids = {index: {f.track_id for f in faces} for index, faces in out}
    assert all(len(faces) == 1 for faces in ids.values())  # (never the flash's face twice, never none)
    held = lookahead >= flash  # (the flash's frames were still held when it was known a flash)
    before_cut = set().union(*(ids[i] for i in range(10 + flash) if held or not 5 <= i < 5 + flash))
    assert len(before_cut) == 1 and not before_cut & set().union(*(ids[i] for i in range(10 + flash, len(frames))))
    assert held or not set().union(*(ids[i] for i in range(5, 5 + flash))) & before_cut


def test_a_flash_longer_than_the_tracks_may_miss_is_a_cut():
    """The tracks before a flash did not see its frames: a flash longer than ``max_gap`` is a cut, as a miss
    that long would end them."""
    dark = np.full((90, 160, 3), (30, 20, 10), np.uint8)
    bright = np.full((90, 160, 3), (20, 200, 240), np.uint8)
    tracker = FaceTracker(TrackerConfig(max_gap=1), fps=30, lookahead=3)
    _run(tracker, [[_face(50, 50)]] * 10, [dark] * 5 + [bright] * 2 + [dark] * 3)
    assert tracker.flashes == [] and tracker.cuts[0] == 5


# ------------------------------------------------------------------------------------------
# Real media


@pytest.fixture(scope="module")
def scrfd(shared_models):
    return create_detector("scrfd", models_dir=shared_models / "insightface")


def _track_clip(path, detector, lookahead, max_frames=None, fps=30.0):
    tracker = FaceTracker(TrackerConfig(), fps=fps, lookahead=lookahead)
    times, out = [], []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and index >= max_frames:
                break
            rgb = frame.to_ndarray(format="rgb24")
            times.append(frame.time)
            out += tracker.push(index, detector.detect(rgb), rgb)
    return tracker, times, out + tracker.flush()


def test_talking_head_is_one_track(shared_data, scrfd):
    tracker, _, out = _track_clip(shared_data / "liveportrait/driving/d19.mp4", scrfd,
                                  lookahead=5, max_frames=60)
    assert len(out) == 60 and tracker.cuts == []
    ids = {f.track_id for _, faces in out for f in faces}
    assert len(ids) == 1
    assert sum(len(faces) == 1 for _, faces in out) >= 57


def test_hamilton_clip_starts_new_tracks_at_its_cuts(shared_data, scrfd):
    """The manifest lists cuts at ~3.59 s and ~7.89 s (there is a third, at 1.52 s)."""
    tracker, times, out = _track_clip(shared_data / "face_recognition/short_hamilton_clip.mp4", scrfd,
                                      lookahead=3, fps=29.97)
    cut_times = [times[i] for i in tracker.cuts]
    for expected in (3.59, 7.89):
        assert min(abs(t - expected) for t in cut_times) < 0.05
    assert len(tracker.cuts) <= 4
    spans = collections.defaultdict(list)
    for index, faces in out:
        for face in faces:
            spans[face.track_id].append(index)
    for track_id, indices in spans.items():
        assert not any(min(indices) < cut <= max(indices) for cut in tracker.cuts), track_id
    for cut in tracker.cuts:
        assert any(min(indices) == cut for indices in spans.values())  # the new shot's faces are new tracks


def _two_people_tracks(image, detector):
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=2)
    out = []
    for index in range(16):
        shift = np.float32([[1, 0, 4 * np.sin(index / 3)], [0, 1, 3 * np.cos(index / 4)]])
        frame = cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
        out += tracker.push(index, detector.detect(frame), frame)
    out += tracker.flush()
    assert len(out) == 16
    assert all(len(faces) == 2 for _, faces in out)
    assert len({f.track_id for _, faces in out for f in faces}) == 2


def test_two_people_are_two_tracks(shared_data, scrfd):
    image = cv2.imread(str(shared_data / "face_recognition/two_people.jpg"))[:, :, ::-1]
    _two_people_tracks(np.ascontiguousarray(cv2.resize(image, None, fx=0.5, fy=0.5)), scrfd)


# -- drawn faces (no shared media) ----------------------------------------------------------

def test_drawn_talking_head_is_one_track(face_clip):
    import synthetic_faces as sf

    tracker, _, out = _track_clip(face_clip.path, sf.SyntheticFaceDetector(), lookahead=5, fps=25.0)
    assert len(out) == 16 and tracker.cuts == []
    assert all(len(faces) == 1 for _, faces in out)
    assert len({f.track_id for _, faces in out for f in faces}) == 1


def test_drawn_two_people_are_two_tracks():
    import synthetic_faces as sf

    _two_people_tracks(sf.two_people(640, 360)[0], sf.SyntheticFaceDetector())


# -- the One-Euro filter itself -------------------------------------------------------------

def _alpha(cutoff: float, dt: float) -> float:
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


def test_one_euro_starts_at_the_first_sample_and_keeps_a_constant():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    first = np.array([[10.0, 20.0], [30.0, 40.0]])
    np.testing.assert_array_equal(f(first, 1 / 30, 100.0), first)
    for _ in range(20):
        np.testing.assert_allclose(f(first, 1 / 30, 100.0), first, atol=1e-12)


def test_one_euro_without_beta_is_a_first_order_low_pass():
    dt, cutoff = 1 / 25, 2.0
    f = OneEuroFilter(min_cutoff=cutoff, beta=0.0, d_cutoff=1.0)
    f(np.zeros((1, 2)), dt, 1.0)
    out = f(np.ones((1, 2)), dt, 1.0)
    np.testing.assert_allclose(out, _alpha(cutoff, dt))  # one step of the exponential smoother
    out = f(np.ones((1, 2)), dt, 1.0)
    a = _alpha(cutoff, dt)
    np.testing.assert_allclose(out, 1 - (1 - a) ** 2)


def test_one_euro_beta_trades_lag_for_smoothing_and_is_scale_free():
    dt = 1 / 30
    ramp = [np.array([[4.0 * k, 0.0]]) for k in range(30)]  # 120 px/s

    def lag(beta, scale=50.0, factor=1.0):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta, d_cutoff=1.0)
        out = [f(p * factor, dt, scale * factor) for p in ramp]
        return float(ramp[-1][0, 0] * factor - out[-1][0, 0])

    assert lag(0.0) > lag(0.5) > lag(5.0) > 0  # a faster cutoff follows motion sooner
    # the speed is measured in face sizes: the same motion of a twice larger face gives twice the lag in pixels
    assert lag(0.5, factor=2.0) == pytest.approx(2 * lag(0.5), rel=1e-9)


def test_one_euro_reduces_jitter_more_at_higher_frame_rates():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2.0, (300, 5, 2))

    def residual_std(dt):
        f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
        return float(np.std([f(p, dt, 100.0) for p in noise][50:]))

    assert residual_std(1 / 60) < residual_std(1 / 15) < 2.0


def test_a_flash_keeps_every_face_it_holds_and_follows_a_cut():
    """A flash's faces were all taken off its frames for the tracks before to fill in: a face new at the flash,
    or found again too late for its gap to be filled, came out unrestored. A flash just after a cut was two
    more cuts. A miss before the flash and the flash together are a gap like any other (max_gap)."""
    dark = np.full((90, 160, 3), (30, 20, 10), np.uint8)
    bright = np.full((90, 160, 3), (20, 200, 240), np.uint8)
    other = np.full((90, 160, 3), (200, 40, 200), np.uint8)
    face = [_face(50, 50)]

    def ids_of(tracker, per_frame, frames):
        out = dict(_run(tracker, per_frame, frames))
        return [sorted(f.track_id for f in out[i]) for i in range(len(frames))]

    frames = [dark] * 5 + [bright] * 2 + [dark] * 5
    # a face first seen in the flash: kept on its own track
    ids = ids_of(FaceTracker(TrackerConfig(), fps=30, lookahead=3), [[]] * 5 + [face] * 7, frames)
    assert all(ids[i] for i in range(5, 12)), ids
    # found again only after 3 more frames (lookahead 3 cannot fill 5 frames): the flash's faces stay
    per_frame = [face] * 5 + [face] * 2 + [[]] * 3 + [face] * 2
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=3)
    ids = ids_of(tracker, per_frame, frames)
    assert tracker.flashes == [5] and ids[5] and ids[6], ids
    # a flash just after a cut: the cut stays one, the flash a flash
    tracker = FaceTracker(TrackerConfig(), fps=30, lookahead=3)
    ids = ids_of(tracker, [face] * 10, [dark] * 5 + [other] + [bright] + [other] * 3)
    assert tracker.cuts == [5] and tracker.flashes == [6]
    assert len({i for frame in ids[5:] for i in frame}) == 1 and ids[4] != ids[5]
    # missed for 2 frames before a 2-frame flash, max_gap 2: a 4-frame gap, not bridged
    tracker = FaceTracker(TrackerConfig(max_gap=2), fps=30, lookahead=5)
    ids = ids_of(tracker, [face] * 3 + [[]] * 4 + [face] * 5, [dark] * 5 + [bright] * 2 + [dark] * 5)
    assert tracker.flashes == [5] and ids[0] != ids[7], ids
