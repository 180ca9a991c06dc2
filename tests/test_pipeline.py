"""The frame loop end to end, with the identity restorer (proves geometry, timing and audio
without a model): on drawn faces (tests/synthetic_faces.py, always) and on real media with SCRFD
(the shared folder)."""
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import cv2
import numpy as np
import pytest
import synthetic_faces as sf
from media_utils import make_clip, read_audio_packets, read_video_timing

from streamrestore.api import restore_video
from streamrestore.blend import PasteBack
from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.quality import QualityGateConfig
from streamrestore.temporal import TemporalConfig
from streamrestore.video.writer import EncoderSettings


@pytest.fixture(scope="module")
def scrfd(shared_models):
    from streamrestore.faces.detect import create_detector

    return create_detector("scrfd", models_dir=shared_models / "insightface")


def _frames(path: Path, count: int, step: int = 1):
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return out


@dataclass
class Media:
    """Pictures with faces, and a detector that finds them."""

    detector: Any
    talking: Callable[..., list]  # (count, step=1) -> RGB frames of one face, in order
    portrait_bgr: Callable[[], np.ndarray]  # one face, BGR
    two_people: Callable[[], np.ndarray]  # two faces, RGB: left, right
    two_sets: Callable[[], tuple]  # (reference folders of the left and the right person, their names)
    embedder: Callable[[], Any]  # tells the two people apart


@pytest.fixture(scope="module")
def drawn_talking(tmp_path_factory):
    """A 120-frame drawn-face clip at 320x240 (encoded and decoded, like a real one)."""
    from media_utils import make_face_clip

    path = tmp_path_factory.mktemp("drawn") / "talking.mp4"
    make_face_clip(path, width=320, height=240, frames=120, options={"preset": "ultrafast", "crf": "18"})
    return path


@pytest.fixture(params=["synthetic", "real"])
def media(request, tmp_path):
    if request.param == "synthetic":
        clip = request.getfixturevalue("drawn_talking")
        folders = (sf.write_portraits(tmp_path / "ann", "ann"), sf.write_portraits(tmp_path / "ben", "ben"))
        return Media(
            sf.SyntheticFaceDetector(),
            lambda count, step=1: _frames(clip, count, step),
            lambda: np.ascontiguousarray(sf.portrait("ann", size=240)[:, :, ::-1]),
            lambda: sf.two_people(640, 360)[0],
            lambda: (folders, ("ann", "ben")),
            sf.SyntheticFaceEmbedder,
        )
    data = request.getfixturevalue("shared_data")
    root = data / "face_recognition"
    return Media(
        request.getfixturevalue("scrfd"),
        lambda count, step=1: _frames(data / "liveportrait/driving/d19.mp4", count, step),
        lambda: cv2.imread(str(root / "obama_small.jpg")),
        lambda: np.ascontiguousarray(cv2.imread(str(root / "two_people.jpg"))[:, :, ::-1]),  # Obama left, Biden right
        lambda: ((root / "knn_train/obama", root / "knn_train/biden"), ("obama", "biden")),
        lambda: _shared_embedder(request.getfixturevalue("shared_models")),
    )


def _shared_embedder(models):
    from streamrestore.faces.identity import create_embedder

    return create_embedder("auto", models_dir=models / "insightface")


def _mask_union(shape, faces, resolution):
    paste = PasteBack(resolution)
    union = np.zeros(shape[:2], np.float32)
    for f in faces:
        w = paste.crop_mask(shape[:2], f.matrix)
        union = np.maximum(union, cv2.warpAffine(w, cv2.invertAffineTransform(f.matrix), (shape[1], shape[0])))
    return union


@pytest.mark.parametrize("resolution", [512, 128])
def test_identity_restorer_round_trip(media, resolution):
    frames = media.talking(6, step=20)
    frames.append(media.two_people())
    assert len(frames) == 7
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off())
    fr = FaceRestorer(IdentityRestorer(resolution), media.detector, config=config)
    worst_inside = 0
    for rgb in frames:
        out = fr.process(rgb.copy())
        assert fr.last_faces, "a face should have been restored"
        union = _mask_union(rgb.shape, fr.last_faces, resolution)
        outside = union == 0
        assert outside.mean() > 0.05
        assert np.array_equal(out[outside], rgb[outside])  # bit-exact outside the masks
        inside = union > 0
        err = np.abs(out[inside].astype(int) - rgb[inside].astype(int))
        worst_inside = max(worst_inside, int(err.max()))
        assert err.mean() < 1.0
        assert np.percentile(err, 99) <= 8
    # At 512 the crop is an upscale of these faces: two cubic resamplings (frame → crop → frame),
    # measured max 25 levels, at eyelashes. At 128 the crop is a 2-3x downscale and the paste adds
    # back the frame's detail the crop could not hold, which for an unchanged face is exact.
    assert worst_inside <= (32 if resolution == 512 else 1), worst_inside


def test_process_keeps_type_and_channel_order(media):
    from streamrestore.blend import PasteConfig

    bgr = media.portrait_bgr()
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                            paste=PasteConfig(color_match=False))

    class Redden(IdentityRestorer):
        """Raises the RED channel of the (RGB) crops the pipeline hands over."""

        def restore(self, faces, caches, noise_seeds=None):
            out = faces.clone()
            out[:, 0] = (out[:, 0] + 0.3).clamp(0, 1)
            return out

    fr = FaceRestorer(Redden(128), media.detector, config=config, channel_order="bgr")
    out = fr.process(bgr.copy())
    assert isinstance(out, np.ndarray) and out.shape == bgr.shape and out.dtype == np.uint8
    face = fr.last_faces[0]
    assert face.track_id >= 0 and face.identity is None
    # last_faces holds the face as cut (the restorer's input) and, since it was said "the faces restored" and
    # held only the input, the face as pasted back (RGB, on the same template) and the gate's share
    assert face.change_kept == 1.0 and face.restored is not None and face.restored.shape == face.pixels.shape
    redder = face.restored.astype(int) - face.pixels.astype(int)
    assert redder[..., 0].mean() > 50 and np.abs(redder[..., 1:]).mean() < 2
    warped = cv2.warpAffine(np.ascontiguousarray(bgr[..., ::-1]), face.matrix, face.pixels.shape[1::-1],
                            flags=cv2.INTER_CUBIC)
    assert np.abs(warped.astype(int) - face.pixels)[32:96, 32:96].mean() < 3  # (the input's face)
    # a clean face the quality gate leaves: it says so, and the face pasted is the one cut
    gated = FaceRestorer(Redden(128), media.detector, config=PipelineConfig(lookahead=0, temporal=TemporalConfig.off()),
                         channel_order="bgr")
    gated.process(bgr.copy())
    (left,) = gated.last_faces
    assert left.change_kept == 0.0 and np.array_equal(left.restored, left.pixels)
    assert left.restored is not left.pixels  # (drawing on one, a preview's box, left the other as it was)
    # in BGR order red is the LAST channel: only it went up (by ~0.3 * 255 inside the face)
    gain = (out.astype(float) - bgr.astype(float)).reshape(-1, 3)
    changed = np.abs(gain).max(axis=1) > 2
    blue, green, red = gain[changed].mean(axis=0)
    assert red > 20 and abs(blue) < 3 and abs(green) < 3
    with pytest.raises(ValueError, match="lookahead"):
        FaceRestorer(IdentityRestorer(64), media.detector).process(bgr)


def test_stream_yields_every_frame_in_order(media):
    frames = media.talking(12)
    assert len(frames) == 12
    fr = FaceRestorer(IdentityRestorer(128), media.detector, config=PipelineConfig(lookahead=3))
    out = list(fr.stream(f.copy() for f in frames))
    assert len(out) == len(frames)
    for a, b in zip(out, frames):
        assert a.shape == b.shape
        # identity restorer: each output is its own input up to resampling error
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3
    assert fr.stats.frames == 12 and fr.stats.tracks == 1


def test_frames_prepared_on_another_thread_restore_the_same(media):
    """``prepare(track=True)`` detects and tracks (the reader thread's share of the work); frames
    prepared so on another thread, then streamed with lookahead, come out the same as frames
    streamed as they are; a prepared frame given again is not tracked twice, and one tracked by
    another FaceRestorer is refused. Plain ``prepare`` tracks nothing."""
    import threading

    from streamrestore.pipeline import DecodedFrame

    frames = media.talking(10)
    config = PipelineConfig(lookahead=2, temporal=TemporalConfig.off())
    plain = FaceRestorer(IdentityRestorer(128), media.detector, config=config)
    expected = list(plain.stream(f.copy() for f in frames))

    fr = FaceRestorer(IdentityRestorer(128), media.detector, config=config)
    pushed_on = []
    real_push = fr._tracker.push
    fr._tracker.push = lambda *a, **k: pushed_on.append(threading.current_thread()) or real_push(*a, **k)
    detected = fr.prepare(frames[0].copy())
    assert detected.faces and detected.ready is None and pushed_on == [] and fr.frames_in == 0
    prepared: list = []
    reader = threading.Thread(target=lambda: prepared.extend(fr.prepare(f.copy(), track=True) for f in frames))
    reader.start()
    reader.join()
    assert all(isinstance(p, DecodedFrame) and p.ready is not None for p in prepared)
    assert fr.prepare(prepared[0], track=True) is prepared[0] and fr.frames_in == len(frames)
    from streamrestore.api import _face_restorer

    assert _face_restorer(fr, fr.fps) is not fr  # a run of its own would not see these frames: a fresh copy
    assert len(pushed_on) == len(frames) and threading.main_thread() not in pushed_on
    with pytest.raises(ValueError, match="another FaceRestorer"):
        plain.prepare(prepared[0])
    out = list(fr.stream(prepared))
    assert len(pushed_on) == len(frames)  # streaming tracked nothing again
    assert len(out) == len(expected) == len(frames)
    for a, b in zip(out, expected):
        assert np.array_equal(a, b)
    assert fr.stats.frames == plain.stats.frames == len(frames) and fr.stats.tracks == plain.stats.tracks == 1


CLIPS = [
    "face_recognition/short_hamilton_clip.mp4",
    "liveportrait/driving/d19.mp4",
    "facenet_pytorch/video.mp4",
]


@pytest.mark.parametrize("clip", ["synthetic", *(pytest.param(c, marks=pytest.mark.slow) for c in CLIPS)])
def test_clip_keeps_frames_timestamps_audio(request, tmp_path, clip):
    """The drawn-face clip (synthetic detector) and real clips (SCRFD) restored whole."""
    if clip == "synthetic":
        request.getfixturevalue("synthetic_faces")
        src, face_models = request.getfixturevalue("face_clip").path, None
    else:
        src = request.getfixturevalue("shared_data") / clip
        face_models = request.getfixturevalue("shared_models") / "insightface"
    dst = tmp_path / f"out{src.suffix}"
    fr = FaceRestorer.from_options(model="identity", face_models=face_models)
    stats = restore_video(src, dst, fr, encoder=EncoderSettings(preset="ultrafast"))
    pts_in, dur_in = read_video_timing(src)
    pts_out, dur_out = read_video_timing(dst)
    assert len(pts_out) == len(pts_in) == stats.frames
    assert pts_out == pts_in
    audio_in = read_audio_packets(src)
    assert audio_in and audio_in[0], "these clips have audio"
    assert read_audio_packets(dst) == audio_in  # packet-identical
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert abs(a.duration - b.duration) <= 1000  # microseconds
    assert stats.faces_restored > 0
    if clip == "synthetic":
        assert stats.faces_restored == stats.frames == 16 and len(stats.per_track) == 1, stats.summary()


class _Redden(IdentityRestorer):
    """Reddens every face: each restored frame is a new picture."""

    def restore(self, faces, caches, noise_seeds=None):
        out = faces.clone()
        out[:, 0] = (out[:, 0] + 0.3).clamp(0, 1)
        return out


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "yuv420p10le"])
def test_closed_captions_stay_on_frames_whose_faces_are_restored(tmp_path, pix_fmt):
    """A broadcast's captions (CEA-608 in each picture's SEI) reach the output on every frame, restored
    ones too: the restored frame is a new picture, made so that it carries the decoded frame's side
    data (it had none: captions were kept only where no face was restored). 4:2:0, other formats
    (restored in RGB) and 10-bit (restored through an 8-bit copy) alike."""
    from media_utils import add_captions, make_face_clip, read_captions

    plain, src, dst = tmp_path / "plain.ts", tmp_path / "captioned.ts", tmp_path / "out.mp4"
    make_face_clip(plain, frames=10, pix_fmt=pix_fmt, options={"preset": "ultrafast", "crf": "10", "bf": "2"})
    add_captions(plain, src)
    captions = read_captions(src)
    assert len(captions) == 10 and None not in captions and len(set(captions)) == 10
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    stats = restore_video(src, dst, FaceRestorer(_Redden(128), sf.SyntheticFaceDetector(), config=config),
                          encoder=EncoderSettings(preset="ultrafast"))
    assert stats.faces_restored == stats.frames == 10, stats.summary()
    assert read_captions(dst) == captions


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_faces_of_a_phone_video_stored_turned_are_found_and_restored_in_place(tmp_path, rotation):
    """A phone stores portrait video sideways with a display rotation. A detector that finds
    only upright faces finds every face of such a clip (the frame says how it is shown) and
    the change lands on the face, where it is in the stored picture; the output keeps the tag."""
    from streamrestore.video.reader import probe, quarter_turns

    frames, size = 8, (160, 224) if rotation in (90, -90) else (224, 160)
    truth = []

    def picture(i):  # the face drifts; drawn turned by the rotation, so that it is shown upright
        centre = (size[0] / 2 + 2 * i, size[1] / 2 - i)
        rgb, (kps,) = sf.scene(*size, [("ann", sf.face_matrix(centre, 26, rotation))], i)
        truth.append(kps)
        return rgb

    src, dst = tmp_path / "phone.mp4", tmp_path / "out.mp4"
    make_clip(src, width=size[0], height=size[1], frames=frames, rotation=rotation, picture=picture)
    detector = sf.UprightFaceDetector()
    with av.open(str(src)) as c:
        first = next(c.decode(video=0))
        assert detector.detect(first.to_ndarray(format="rgb24")) == []  # stored turned: missed as it is
        shown = np.rot90(first.to_ndarray(format="rgb24"), quarter_turns(first.rotation))
        assert len(detector.detect(np.ascontiguousarray(shown))) == 1

    class Redden(IdentityRestorer):
        def restore(self, faces, caches, noise_seeds=None):
            out = faces.clone()
            out[:, 0] = (out[:, 0] + 0.3).clamp(0, 1)
            return out

    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    stats = restore_video(src, dst, FaceRestorer(Redden(128), detector, config=config),
                          encoder=EncoderSettings(preset="ultrafast"))
    assert stats.faces_restored == stats.frames == frames, stats.summary()
    assert probe(dst).rotation == rotation
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        for index, (before, after) in enumerate(zip(a.decode(video=0), b.decode(video=0))):
            gain = after.to_ndarray(format="rgb24").astype(float) - before.to_ndarray(format="rgb24").astype(float)
            x, y = np.rint(truth[index][2]).astype(int)  # the nose tip, in stored coordinates
            assert gain[y, x, 0] > 40, index  # reddened where the face is
            assert np.abs(gain[:12, :12]).mean() < 2 and np.abs(gain[-12:, -12:]).mean() < 2  # corners: the codec's noise


@pytest.mark.parametrize("rotation", [0, 90, -90, 180])
def test_the_summary_says_where_each_face_was_as_the_picture_is_shown(tmp_path, rotation):
    """With several faces the summary says which track is which by where it was in the picture as
    it is shown: a phone's sideways-stored clip gives the places of its upright picture."""
    from streamrestore.video.reader import quarter_turns

    size = (160, 224) if rotation in (90, -90) else (224, 160)
    first_centre, second_centre = (40.0, 40.0), (size[0] - 40.0, size[1] - 40.0)  # opposite corners, stored

    def picture(i):
        return sf.scene(*size, [("ann", sf.face_matrix(first_centre, 26, rotation)),
                                ("ben", sf.face_matrix(second_centre, 26, rotation))], i)[0]

    def shown_place(centre):  # where a pixel at ``centre`` lands once the picture is turned as shown
        marker = np.zeros(size[::-1], dtype=np.uint8)
        marker[int(centre[1]), int(centre[0])] = 1
        shown = np.rot90(marker, quarter_turns(rotation))
        down, across = (np.argwhere(shown)[0] + 0.5) / shown.shape
        column = "left" if across < 1 / 3 else "right" if across > 2 / 3 else "centre"
        return f"at the {'top' if down < 1 / 3 else 'bottom'} {column}"

    src = tmp_path / "two.mp4"
    make_clip(src, width=size[0], height=size[1], frames=4, rotation=rotation, picture=picture)
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    stats = restore_video(src, tmp_path / "out.mp4", FaceRestorer(IdentityRestorer(128), sf.UprightFaceDetector(),
                                                                   config=config),
                          encoder=EncoderSettings(preset="ultrafast"))
    lines = [line for line in stats.summary().splitlines() if line.startswith("  track ")]
    assert len(lines) == 2, stats.summary()
    places = sorted(line.rsplit(", ", 1)[1] for line in lines)
    assert places == sorted([shown_place(first_centre), shown_place(second_centre)])
    assert len(set(places)) == 2


def test_the_summary_says_nothing_of_places_for_one_face():
    one = _summary_of([], frames=2)
    for frame in range(2):
        one.add_face(3, frame, None, True, centre=(0.1, 0.9))
    assert one.summary().splitlines()[1] == "  track 3: no references, frames 0-1, 2 faces"
    assert one.per_track[3].place == "at the bottom left"
    one.add_face(4, 1, None, True, centre=(0.5, 0.5))
    assert one.per_track[4].place == "in the middle"
    assert one.summary().splitlines()[1:3] == ["  track 3: no references, frames 0-1, 2 faces, at the bottom left",
                                               "  track 4: no references, frame 1, 1 face, in the middle"]


@pytest.mark.slow
def test_hamilton_tracks_restart_at_cuts(shared_data, scrfd):
    """Hard cuts at ~1.52 s, ~3.59 s and ~7.89 s (the manifest lists the last two; the first is
    a cut too, measured): no track may be seen on both sides of a cut."""
    with av.open(str(shared_data / "face_recognition/short_hamilton_clip.mp4")) as c:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    times = [t for t, _ in decoded]  # the clip's own clock (its first frame is not at 0)
    fr = FaceRestorer(IdentityRestorer(64), scrfd, config=PipelineConfig(lookahead=5), fps=29.97)
    seen: dict[int, set] = {}
    for i, _ in enumerate(fr.stream(rgb for _, rgb in decoded)):
        t = times[i]
        segment = sum(t >= c - 0.5 / 29.97 for c in (1.52, 3.59, 7.89))  # cut times rounded to 10 ms
        for f in fr.last_faces:
            seen.setdefault(f.track_id, set()).add(segment)
    assert all(len(s) == 1 for s in seen.values()), seen
    assert {next(iter(s)) for s in seen.values()} >= {0, 2, 3}


def test_video_without_faces_passes_through(tmp_path, synthetic_faces):
    src = tmp_path / "pattern.mp4"
    make_clip(src, width=96, height=64, frames=10)
    dst = tmp_path / "out.mp4"
    fr = FaceRestorer.from_options(model="identity")
    stats = restore_video(src, dst, fr)
    assert fr.detector.calls > 0  # looked, found nothing
    assert stats.frames == 10 and stats.frames_with_faces == 0
    assert "no faces" in stats.summary()
    assert read_video_timing(dst)[0] == read_video_timing(src)[0]


def test_interrupt_leaves_no_output(tmp_path, media):
    class Interrupting(IdentityRestorer):
        calls = 0

        def restore(self, faces, caches, noise_seeds=None):
            Interrupting.calls += 1
            if Interrupting.calls == 3:
                raise KeyboardInterrupt
            return faces

    # (the gate off: a clean drawn face is not given to the restorer at all)
    fr = FaceRestorer(Interrupting(64), media.detector, config=PipelineConfig(gate=QualityGateConfig(enabled=False)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    src = tmp_path / "in.mp4"
    with av.open(str(src), "w") as c:  # the first 12 frames of the media's clip
        stream = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        frames = media.talking(12)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(stream.encode(None))
    with pytest.raises(KeyboardInterrupt):
        restore_video(src, out_dir / "out.mp4", fr)
    assert Interrupting.calls == 3
    assert list(out_dir.iterdir()) == []


def test_each_face_gets_its_own_identity_cache(media):
    """Two people (drawn: Ann left, Ben right; two_people.jpg: Obama left, Biden right). With two
    reference sets, the restorer receives, in one batch, each face with the cache of its own
    person (encoded once per identity)."""
    from streamrestore.faces.references import load_reference_sets

    (left_refs, right_refs), (left, right) = media.two_sets()
    embedder = media.embedder()
    detector = media.detector

    class Recording(IdentityRestorer):
        encoded = 0
        batches = []

        def encode_references(self, faces):
            Recording.encoded += 1
            return super().encode_references(faces)

        def restore(self, faces, caches, noise_seeds=None):
            Recording.batches.append(list(caches))
            return faces

    restorer = Recording(128)
    sets = load_reference_sets([str(left_refs), str(right_refs)], detector, embedder, 128)
    # one crop side, so that both faces share a batch (with "auto" each side is its own batch)
    # (the gate off: the drawn faces are clean, and a clean face is not given to the restorer)
    fr = FaceRestorer(restorer, detector, sets, embedder=embedder,
                      config=PipelineConfig(lookahead=0, crop_resolution=None, gate=QualityGateConfig(enabled=False)))
    image = media.two_people()
    for i in range(6):
        shift = np.float32([[1, 0, 2 * i], [0, 1, -i]])
        fr.process(cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))
    assert Recording.encoded == 2  # once per identity, not per frame
    assert all(len(b) == 2 for b in Recording.batches)  # both faces in one call
    by_side = {}
    for f in fr.last_faces:
        centre_x = cv2.invertAffineTransform(f.matrix) @ np.array([64, 64, 1.0])
        by_side["left" if centre_x[0] < image.shape[1] / 2 else "right"] = f.identity
    assert by_side == {"left": left, "right": right}
    last = Recording.batches[-1]
    assert {id(c) for c in last} == {id(fr.caches[left]), id(fr.caches[right])}

    # The run summary, frame by frame: per track whom it matched, its span and face count.
    stats = fr.stats
    assert {t.identity for t in stats.per_track.values()} == {left, right}
    assert all((t.first_frame, t.last_frame, t.faces) == (0, 5, 6) for t in stats.per_track.values())
    text = stats.summary()
    # timed by its own calls: a rate above zero ("70.0 fps" contains "0.0 fps": match the number)
    rate = re.search(r"6 frames \((\d+\.\d) fps over", text)
    assert rate is not None and float(rate.group(1)) > 0, text
    matched = ", ".join(sorted((left, right)))
    # ("restored" unless the quality gate left some clean faces as they were: then a line says how many)
    done = "" if stats.faces_left_clean else " restored"
    assert f"12 faces{done} in 6 frames, 2 tracks, identities matched: {matched}" in text
    assert f": {left}, frames 0-5, 6 faces" in text and f": {right}, frames 0-5, 6 faces" in text
    assert "unmatched faces: 0, skipped faces: 0" in text
    assert "similarity" not in text
    verbose = stats.summary(verbose=True)
    (left_line,) = [line for line in verbose.splitlines() if line.startswith("  track") and f": {left}," in line]
    assert re.search(rf"; similarity {left} [01]\.\d\d, {right} -?[01]\.\d\d$", left_line), left_line  # best first
    if left == "obama":
        assert "; similarity obama 0." in left_line
    assert "(similarity below" in verbose  # the threshold, said once

    # fresh(): a new stream (empty tracker and stats) sharing the models and encoded references.
    again = fr.fresh(fps=25.0)
    assert again.restorer is fr.restorer and again.detector is fr.detector and again.embedder is fr.embedder
    assert {k: id(v) for k, v in again.caches.items()} == {k: id(v) for k, v in fr.caches.items()}
    assert again.stats.frames == 0 and Recording.encoded == 2  # nothing encoded again
    again.process(image)
    assert {f.identity for f in again.last_faces} == {left, right}


def test_one_reference_set_serves_every_face_and_reports_the_face_that_does_not_match_it(media, caplog):
    """With one set and unmatched="restore" every face gets that set (the user named the person), but
    each track is still scored against it: the other person's track gets a warning, ``-v`` shows
    the scores, and the summary does not call the set "matched". The warning comes as soon as that
    track is judged too, once, not only at the end of a long run."""
    import logging

    from streamrestore.faces.references import load_reference_sets

    (left_refs, _), (left, _) = media.two_sets()
    embedder = media.embedder()
    sets = load_reference_sets([str(left_refs)], media.detector, embedder, 128)
    def restorer(gate: bool) -> FaceRestorer:
        return FaceRestorer(IdentityRestorer(128), media.detector, sets, embedder=embedder,
                            config=PipelineConfig(lookahead=0, crop_resolution=None,
                                                  gate=QualityGateConfig(enabled=gate)))

    # the drawn faces are sharp: the quality gate leaves them as they were, so nothing of the photos reaches
    # them, and "restored toward someone else's photos" (early, at the end) would be untrue (unusual U1)
    fr = restorer(gate=True)
    with caplog.at_level(logging.WARNING, logger="streamrestore.pipeline"):
        for frame in range(20):
            fr.process(media.two_people())
    assert fr.stats.faces_left_clean == 40 and fr.stats.unlike_their_references() == []
    assert "someone else" not in caplog.text and "someone else" not in fr.stats.summary()
    (odd,) = [tid for tid in fr.stats.per_track if fr.stats.unlike(tid)]  # (still scored, and said on its line)
    assert "(unlike these photos: " in [line for line in fr.stats.summary().splitlines() if f"track {odd}:" in line][0]
    record = fr.stats.as_dict()
    assert record["frames_restored"] == 0 and {t["faces_changed"] for t in record["tracks"]} == {0}
    caplog.clear()

    fr = restorer(gate=False)  # every face changed
    said_at = []
    with caplog.at_level(logging.WARNING, logger="streamrestore.pipeline"):
        for frame in range(20):  # POOR_MATCH_MIN_FACES: a shorter track is not reported
            fr.process(media.two_people())
            said_at += [frame] * sum("restored toward someone else's photos, perhaps" in r.getMessage()
                                     for r in caplog.records)
            caplog.clear()
    assert {f.identity for f in fr.last_faces} == {left}  # both faces restored toward the one set
    stats = fr.stats
    (stranger,) = stats.unlike_their_references()
    assert len(said_at) == 1 and said_at[0] < 19  # once, mid-run
    (own,) = set(stats.per_track) - {stranger}
    assert stats.per_track[own].scores[left] >= stats.match_threshold > stats.per_track[stranger].scores[left]
    text = stats.summary()
    assert f"2 tracks, references: {left} (every face)" in text and "identities matched" not in text
    score = stats.per_track[stranger].scores[left]
    assert (f"warning: 1 face track restored toward {left}'s photos scored below the {stats.match_threshold:.2f} "
            f"of the same person against them (track {stranger}: {score:.2f}): someone else") in text
    assert f"(track {own}: " not in text and f", track {own}: " not in text
    assert f"track {stranger}: {left} (unlike these photos: {score:.2f})" in text
    assert f"track {own}: {left}, frames" in text
    assert stats.summary(verbose=True).count(f"; similarity {left} ") == 2


def _summary_of(stats_calls, **fields):
    from streamrestore.run import RunStats

    stats = RunStats(**fields)
    for track_id, frame, identity, restored in stats_calls:
        stats.add_face(track_id, frame, identity, restored)
    return stats


def test_summary_counts_unmatched_and_skipped_faces_per_track():
    calls = [(1, f, "anna", True) for f in range(3, 10)] + [(2, f, None, False) for f in range(5, 7)]
    stats = _summary_of(calls, frames=10, frames_with_faces=7, frames_restored=7, faces_restored=7,
                        unmatched_faces=2, matching=True, references=True, match_threshold=0.4, seconds=2.0,
                        startup_seconds=1.0)
    stats.per_track[1].scores = {"anna": 0.61, "ben": 0.12}
    stats.per_track[2].scores = {"anna": 0.2, "ben": 0.31}
    lines = stats.summary().splitlines()
    assert lines[0] == ("10 frames (10.0 fps; 2.0 s with 1.0 s start-up), 7 faces restored in 7 frames, "
                        "2 tracks, identities matched: anna")
    assert lines[1:] == [
        "  track 1: anna, frames 3-9, 7 faces",
        "  track 2: no match, frames 5-6, 2 faces (2 left alone)",
        "unmatched faces: 2, skipped faces: 2",
    ]
    verbose = stats.summary(verbose=True).splitlines()
    assert verbose[1] == "  track 1: anna, frames 3-9, 7 faces; similarity anna 0.61, ben 0.12"
    assert verbose[2].endswith("; similarity ben 0.31, anna 0.20")
    assert verbose[3] == "unmatched faces: 2 (similarity below 0.40 to every set), skipped faces: 2"
    # a set's name (a folder's, NAME=DIR) with a newline or an escape sequence cannot start a line or drive the
    # terminal, wherever the summary names it
    odd = "an\nna\x1b[2J"
    stats = _summary_of([(1, f, odd, True) for f in range(3)], frames=3, frames_with_faces=3, frames_restored=3,
                        faces_restored=3, matching=True, references=True, match_threshold=0.4, seconds=1.0)
    stats.per_track[1].scores = {odd: 0.61}
    # every face left as it was by the quality gate: said plainly ("0 restored" mid-line read as done)
    from streamrestore.run import RunStats

    gated = RunStats(frames=5, frames_with_faces=5, frames_restored=5, faces_restored=5, faces_left_clean=5,
                     encoded=True)
    assert gated.summary().splitlines()[-1] == ("no face was changed: the frames are as they were, but the video "
                                                "was encoded again (not copied)")
    gated.encoded = False  # frame by frame (process): no video was encoded, and none is said
    assert gated.summary().splitlines()[-1] == "no face was changed: the frames are as they were"
    gated.encoded = gated.deinterlaced = True  # (the fields made one: not "as they were")
    assert gated.summary().splitlines()[-1] == ("no face was changed: the faces are as they were, the frames "
                                                "deinterlaced, but the video was encoded again (not copied)")
    faceless = RunStats(frames=5, encoded=True, deinterlaced=True)
    assert faceless.summary().splitlines()[-2] == ("no faces were found: the frames were deinterlaced, not otherwise "
                                                   "changed, but the video was encoded again (not copied)")
    assert "no face was changed" not in RunStats(frames=5, frames_with_faces=5, frames_restored=5, faces_restored=5,
                                                 faces_left_clean=4).summary()
    for verbose, named in ((False, 2), (True, 3)):  # (the line of sets, the track's; and its similarity)
        text = stats.summary(verbose=verbose)
        assert "\x1b" not in text and len(text.splitlines()) == 3, text
        assert text.count("an\\nna\\x1b[2J") == named, text


def test_summary_is_singular_for_one_and_lists_at_most_twenty_tracks():
    from streamrestore.run import SUMMARY_TRACKS

    one = _summary_of([(7, 0, None, True)], frames=1, frames_with_faces=1, frames_restored=1, faces_restored=1)
    assert one.summary().splitlines() == [
        "1 frame (not timed), 1 face restored in 1 frame, 1 track, no references given",
        "  track 7: no references, frame 0, 1 face",
    ]
    # a video with no face is encoded again: "passed through unchanged" read as a copy of the file
    none = _summary_of([], frames=5)
    assert none.summary().splitlines()[-2] == "no faces were found: the frames were not changed"  # (process())
    assert "the detector misses a face under ~30 px across" in none.summary().splitlines()[-1]  # (why, perhaps)
    none.face_models = {"detector": "dlib"}  # (its own limits, and where to find smaller faces)
    assert "dlib's detector misses a face under ~80 px" in none.summary() and "--face-models DIR" in none.summary()
    none.face_models = {}
    # a track left as it was by --strength 0, not by the quality gate (review 53)
    from streamrestore.run import RunStats

    still = RunStats(frames=2, frames_with_faces=2, frames_restored=2, faces_restored=2, strength=0.0)
    still.add_face(1, 0, None, True)
    still.add_face(1, 1, None, True)
    still.add_changes([1], [False])
    still.add_changes([1], [False])
    assert "track 1: no references, frames 0-1, 2 faces; left as they were (--strength 0)" in still.summary()
    still.strength = 1.0
    assert "; left as they were by the quality gate" in still.summary()
    none.encoded = True
    assert none.summary().splitlines()[-2] == ("no faces were found: the frames were not changed, but the video was "
                                               "encoded again (not copied)")
    calls = [(t, f, None, True) for t in range(30) for f in range(t + 1)]  # track t has t+1 faces
    many = _summary_of(calls, frames=30, frames_with_faces=30).summary().splitlines()
    assert sum(line.startswith("  track ") for line in many) == SUMMARY_TRACKS == 20
    assert many[-1] == "  ... 10 more tracks with 55 faces (the shortest ones; --json lists every track)"
    assert "  track 29: no references, frames 0-29, 30 faces" in many


def test_a_tracks_line_says_what_the_identity_gate_kept_of_the_quality_gates_share():
    """-v gives the identity gate's share after the quality gate's; without -v it is said only where it held
    back most of the change (family F7: "restored", "adapted" and "1.00 of the model's change kept" while
    none of it was)."""
    from streamrestore.run import RunStats

    stats = RunStats(frames=2, frames_with_faces=2, frames_restored=2, faces_restored=4, references=True)
    for track_id, identity_kept in ((1, 0.9), (2, 0.1)):
        for frame in range(2):
            stats.add_face(track_id, frame, "ann", True)
            stats.add_gate_weight(track_id, 0.5)
            stats.add_identity_gate_weight(track_id, identity_kept)
    brief, verbose = stats.summary().splitlines(), stats.summary(verbose=True).splitlines()
    assert "identity gate" not in brief[1] and verbose[1].endswith(
        "; 0.50 of the model's change kept (the quality gate's mean), 0.90 of that by the identity gate")
    said = ("; the identity gate held back 0.90 of the change (it made the face less like its photos; "
            "--identity-tolerance 0 keeps it)")
    assert brief[2].endswith(said) and verbose[2].endswith("(the quality gate's mean)" + said)
    assert [t["identity_gate_weight"] for t in stats.as_dict()["tracks"]] == [0.9, 0.1]


def test_a_set_that_lost_to_another_is_not_said_to_score_below_the_threshold():
    """Two sets of the same photos: "no face matched b's photos (the closest track scored 0.81, a match needs
    0.40 ...)" read as if 0.81 were too low (support F8): it lost to a's."""
    from streamrestore.run import RunStats

    stats = RunStats(frames=1, frames_with_faces=1, frames_restored=1, faces_restored=1, matching=True,
                     references=True, reference_names=["a", "b"], match_threshold=0.4)
    stats.add_face(1, 0, "a", True)
    stats.per_track[1].scores = {"a": 0.82, "b": 0.81}
    said = [w for w in stats.warnings() if w.startswith("no face matched b's photos")]
    assert said == ["no face matched b's photos: the closest track scored 0.81 against them, and higher against a's, "
                    "which it matched (-v shows each track's scores); if these are one person's photos, give them as "
                    "one set"]
    stats.per_track[1].scores = {"a": 0.82, "b": 0.21}  # (below the threshold: as before)
    assert any(w.startswith("no face matched b's photos (the closest track scored 0.21, a match needs 0.40")
               for w in stats.warnings())


class _Broken(IdentityRestorer):
    """Gives NaN for every face (a damaged model file or cached program)."""

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        return torch.full_like(faces, float("nan"))


class _Scaled(IdentityRestorer):
    """A new restorer's slips (support F11): 0-255 floats, uint8, the wrong size."""

    def __init__(self, resolution, slip):
        super().__init__(resolution)
        self.slip = slip

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        if self.slip == "0-255":
            return faces * 255.0
        if self.slip == "uint8":
            return (faces * 255).to(torch.uint8)
        return faces[:, :, :64, :64]


@pytest.mark.parametrize("slip,said", [("0-255", r"_Scaled.restore returned values from 0 to 2\d\d; faces are in \[0, 1\]"),
                                       ("uint8", r"_Scaled.restore returned torch.uint8 faces; they must be float"),
                                       ("size", r"_Scaled.restore returned shape \(1, 3, 64, 64\) for faces of shape "
                                                r"\(1, 3, 128, 128\)")])
def test_a_restorer_that_breaks_its_contract_is_named_on_its_first_faces(slip, said):
    """Faces blown out with exit 0 (hidden by the quality gate in a first smoke test), or an error deep inside
    OpenCV: the seam says which restorer and what (support F11)."""
    frame = sf.face_frames(frames=1, width=320, height=240)[0][0]
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False), lookahead=0)
    fr = FaceRestorer(_Scaled(128, slip), sf.SyntheticFaceDetector(), config=config)
    with pytest.raises(ValueError, match=said):
        fr.process(frame.copy())


def test_a_detector_object_goes_through_the_front_door_as_a_restorer_does():
    """detector= took only a name: a contributor's detector meant copying build_face_restorer's internals
    (support F10). An object with detect(image) is used as given; one without is refused by name."""
    from streamrestore.pipeline import build_face_restorer

    mine = sf.SyntheticFaceDetector()
    fr = build_face_restorer(model=IdentityRestorer(128), detector=mine,
                             config=PipelineConfig(temporal=TemporalConfig.off(), lookahead=0))
    assert fr.detector is mine
    frame = sf.face_frames(frames=1, width=320, height=240)[0][0]
    fr.process(frame.copy())
    assert fr.stats.faces_restored == 1
    with pytest.raises(ValueError, match="object has no detect"):
        build_face_restorer(model=IdentityRestorer(128), detector=object())


def test_an_object_that_is_no_restorer_is_refused_where_it_is_taken():
    """A restorer missing `resolution` failed with an AttributeError deep in the pipeline (support F11)."""
    from streamrestore.pipeline import load_restorer

    class Half:
        def restore(self, faces, caches, noise_seeds=None):
            return faces

    with pytest.raises(ValueError, match="Half has no resolution, encode_references"):
        load_restorer(Half())
    restorer = IdentityRestorer(128)
    assert load_restorer(restorer) is restorer


def test_faces_the_restorer_gives_nan_for_are_left_as_they_were_and_said(recwarn):
    """NaN was cast to uint8 (noise in the face) with a raw numpy RuntimeWarning naming an internal line
    (support F6)."""
    frame = sf.face_frames(frames=1, width=320, height=240)[0][0]
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False), lookahead=0)
    fr = FaceRestorer(_Broken(128), sf.SyntheticFaceDetector(), config=config)
    out = fr.process(frame.copy())
    unchanged = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), config=config).process(frame.copy())
    assert np.array_equal(out, unchanged)
    assert fr.stats.faces_invalid == 1
    assert any("the restorer gave invalid values (NaN or infinity) for 1 face, left as they were" in w
               for w in fr.stats.warnings())
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_photos_faces_are_listed_in_numeric_order_with_their_centres():
    """A group photo's 29 faces were listed 1, 10, 11, ... 19, 2, 20 (sorted as text), faces 3-9 hidden as
    "the shortest ones" (family F6); --json gave no way to find a face in the picture."""
    from streamrestore.run import RunStats

    stats = RunStats(photo=True, frames=1, frames_with_faces=1, frames_restored=1, faces_restored=29)
    for track_id in range(1, 30):
        stats.add_face(track_id, 0, None, True, centre=(track_id / 30, 0.5))
    lines = stats.summary().splitlines()
    assert [line.split(":")[0] for line in lines[1:21]] == [f"  face {n}" for n in range(1, 21)]
    assert lines[21] == "  ... 9 more faces (--json lists every face, with its centre)"
    tracks = stats.as_dict()["tracks"]
    assert [t["id"] for t in tracks] == list(range(1, 30))
    assert tracks[2]["centre"] == [0.1, 0.5]


class _Flickering(IdentityRestorer):
    """Adds a pattern to each face whose strength changes from call to call (a restorer that
    flickers, so the fusions' states matter), the same sequence for every instance."""

    def __init__(self, resolution):
        super().__init__(resolution)
        self._rng = np.random.default_rng(0)

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        side = faces.shape[-1]
        stripes = (torch.arange(side) % 6 < 3).float() * 0.2
        return (faces + float(self._rng.uniform(0.3, 1.7)) * stripes).clamp(0, 1)


@pytest.mark.parametrize("frame_path", ["host", "device"])
def test_stream_finishes_frames_beside_the_restore_as_process_would(drawn_talking, tmp_path, frame_path):
    """stream() finishes each frame (host path: gates, reference detail, fusions, paste; device
    path: the frame fusion) on a thread of its own while the next frame's faces are restored
    (the reference detail and the identity checks share the worker thread meanwhile); its
    frames, faces and per-stage times are those of process(), frame for frame. A stream given up
    half-way leaves nothing half-done behind, and one whose input fails hands out the frames
    finished before the failure first."""
    import threading

    from streamrestore.faces.references import load_reference_sets

    frames = _frames(drawn_talking, 16)
    detector, embedder = sf.SyntheticFaceDetector(), sf.SyntheticFaceEmbedder()
    sets = load_reference_sets([str(sf.write_portraits(tmp_path / "ann", "ann"))], detector, embedder, 128)

    def restorer(temporal=TemporalConfig()):
        config = PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False), frame_path=frame_path,
                                temporal=temporal)
        return FaceRestorer(_Flickering(128), detector, sets, embedder=embedder, config=config)

    def faces_of(fr):
        return [(a.track_id, a.identity, a.matrix.tobytes()) for a in fr.last_faces]

    inline = restorer()
    expected = [(inline.process(f.copy()), faces_of(inline)) for f in frames]
    fr = restorer()
    fused_on = []
    real_fuse = fr._frame_fusion.fuse
    fr._frame_fusion.fuse = lambda *a, **k: fused_on.append(threading.current_thread()) or real_fuse(*a, **k)
    got = [(out, faces_of(fr)) for out in fr.stream(f.copy() for f in frames)]
    assert len(got) == len(frames) and fused_on and threading.current_thread() not in fused_on
    off = restorer(TemporalConfig.off())
    changed = 0
    for (out, faces), (ref, ref_faces), f in zip(got, expected, frames):
        assert np.array_equal(out, ref) and faces == ref_faces and faces and faces[0][1] == "ann"
        changed += not np.array_equal(out, off.process(f.copy()))
    assert changed >= len(frames) - 1  # the fusions acted (all but the first frame)
    assert set(fr.stats.stage_seconds) == set(inline.stats.stage_seconds)
    assert {"temporal", "paste", "reference_detail", "identity_gate"} <= set(fr.stats.stage_seconds)
    assert fr.stats.stage_seconds["temporal"] > 0 and fr.stats.stage_seconds["paste"] > 0

    # given up after three frames (the fourth's faces were restored by then): the next process()
    # waits for the step still running and goes on from the state every earlier frame left, as
    # a run that never streamed
    again = restorer()
    stream = again.stream(f.copy() for f in frames)
    head = [next(stream) for _ in range(3)]
    del stream
    rest = [again.process(f.copy()) for f in frames[4:]]
    plain = restorer()
    for f in frames[:4]:
        plain.process(f.copy())
    assert all(np.array_equal(a, b[0]) for a, b in zip(head, expected))
    assert rest and all(np.array_equal(a, plain.process(f.copy())) for a, f in zip(rest, frames[4:]))

    # the input fails at its sixth frame: the five before it come out, then the error
    def failing():
        yield from (f.copy() for f in frames[:5])
        raise OSError("the source broke")

    out = []
    with pytest.raises(OSError, match="source broke"):
        for frame in restorer().stream(failing()):
            out.append(frame)
    assert len(out) == 5 and all(np.array_equal(a, b[0]) for a, b in zip(out, expected))


@pytest.mark.parametrize("frame_path", ["host", "device"])
def test_a_10_bit_frame_keeps_its_depth_and_gets_the_faces_change(drawn_talking, frame_path):
    """A 10-bit 4:2:0 frame is restored through an 8-bit copy (``Yuv420Pixels.of_deep``) and given
    back at 10 bits: samples nothing changed keep every bit, changed ones get 4x the 8-bit copy's
    change on top of their own (so their two low bits are kept too), with fusions on."""
    from streamrestore.pixels import Yuv420Pixels

    rng = np.random.default_rng(3)
    deep_frames = []
    for i, rgb in enumerate(_frames(drawn_talking, 6)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p10le", dst_colorspace=1,
                                                                         dst_color_range=1)
        deep = np.clip(frame.to_ndarray().astype(np.int32) + rng.integers(-2, 3, frame.to_ndarray().shape), 0, 1023)
        frame = av.VideoFrame.from_ndarray(deep.astype(np.uint16), format="yuv420p10le")
        frame.pts, frame.time_base, frame.colorspace, frame.color_range = i, Fraction(1, 25), 1, 1
        deep_frames.append(frame)
    eight_frames = [Yuv420Pixels.of_deep(f).frame for f in deep_frames]

    def restored(frames):
        config = PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False), frame_path=frame_path)
        fr = FaceRestorer(_Flickering(128), sf.SyntheticFaceDetector(), config=config)
        return [fr.process(f) for f in frames]

    changed = 0
    for deep_in, deep_out, eight_in, eight_out in zip(deep_frames, restored(deep_frames), eight_frames,
                                                      restored(eight_frames)):
        assert deep_out.format.name == "yuv420p10le" and deep_out.pts == deep_in.pts
        assert int(deep_out.colorspace) == 1 and int(deep_out.color_range) == 1
        a, b = deep_in.to_ndarray().astype(int), deep_out.to_ndarray().astype(int)
        change = eight_out.to_ndarray().astype(int) - eight_in.to_ndarray().astype(int)
        assert np.array_equal(b, np.clip(a + 4 * change, 0, 1023))
        assert (change == 0).mean() > 0.3 and (change != 0).any()  # (where nothing changed: the input, exactly)
        changed += int((change != 0).sum())
        assert (b[change != 0] % 4 != 0).mean() > 0.5  # changed samples keep their low bits
    assert changed > 0


def _hdr_frame(rgb: np.ndarray, transfer, index: int):
    """``rgb`` (SDR) coded as ``transfer`` says, BT.2020: a 10-bit 4:2:0 frame tagged as HDR video is."""
    from av.video.reformatter import ColorRange, Colorspace

    from streamrestore.hdr import TRC_HLG, TRC_PQ

    coded = np.clip(np.rint(transfer.to_coded(rgb) * 257.0), 0, 65535).astype(np.uint16)
    frame = av.VideoFrame.from_ndarray(coded, format="rgb48le").reformat(
        format="yuv420p10le", dst_colorspace=Colorspace.BT2020, dst_color_range=ColorRange.MPEG)
    frame.pts, frame.time_base, frame.colorspace, frame.color_range = index, Fraction(1, 25), 9, 1
    frame.color_primaries, frame.color_trc = 9, TRC_PQ if transfer.curve == "pq" else TRC_HLG
    return frame


def _hdr_to_sdr(frame, transfer) -> np.ndarray:
    from av.video.reformatter import ColorRange, Colorspace

    rgb = frame.to_ndarray(format="rgb48le", src_colorspace=Colorspace.BT2020, src_color_range=ColorRange.MPEG)
    return transfer.to_sdr(np.float32(rgb) / 257)


@pytest.mark.parametrize("curve", ["pq", "hlg"])
def test_an_hdr_frames_faces_are_restored_as_sdr_faces_and_their_change_coded_back(drawn_talking, curve):
    """An HDR frame (PQ or HLG, 10-bit, BT.2020) is seen in SDR by what reads faces: the detector
    finds the face, the restorer gets it as the SDR frame shows it (not its pale coded values), and
    its change is coded back: mapped to SDR again, the output is the SDR run's output; samples
    nothing changed keep every bit."""
    from streamrestore.hdr import HdrTransfer

    transfer = HdrTransfer(curve)

    class Reddening(IdentityRestorer):
        def __init__(self, resolution):
            super().__init__(resolution)
            self.seen: list[np.ndarray] = []

        def restore(self, faces, caches, noise_seeds=None):
            self.seen.append(faces.mul(255).round().byte().permute(0, 2, 3, 1).numpy().copy())
            out = faces.clone()
            out[:, 0] = (out[:, 0] + 0.15).clamp(0, 1)
            return out

    def run(frames):
        config = PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False), temporal=TemporalConfig.off())
        restorer = Reddening(128)
        fr = FaceRestorer(restorer, sf.SyntheticFaceDetector(), config=config)
        return [fr.process(f) for f in frames], restorer.seen

    sdr = _frames(drawn_talking, 3)
    hdr = [_hdr_frame(rgb, transfer, i) for i, rgb in enumerate(sdr)]
    sdr_out, sdr_seen = run(sdr)
    hdr_out, hdr_seen = run(hdr)
    assert len(hdr_seen) == len(sdr_seen) == 3  # found in every frame
    for seen_sdr, seen_hdr in zip(sdr_seen, hdr_seen):
        assert np.abs(seen_hdr.astype(int) - seen_sdr).mean() < 4  # (4:2:0 subsampled anew, in other colours)
    coded_face = transfer.to_coded(sdr_seen[0][0]) - sdr_seen[0][0]
    assert np.abs(coded_face).mean() > 15  # (what the restorer saw before: another picture)
    for rgb, restored_sdr, frame_in, frame_out in zip(sdr, sdr_out, hdr, hdr_out):
        assert frame_out.format.name == "yuv420p10le" and int(frame_out.color_trc) == int(frame_in.color_trc)
        gain = restored_sdr.astype(int) - rgb
        face = np.abs(gain).sum(axis=2) > 6
        assert face.mean() > 0.02
        shown = _hdr_to_sdr(frame_out, transfer).astype(int)
        assert np.abs(shown[face] - restored_sdr[face]).mean() < 3
        assert (shown[face][:, 0] - rgb[face][:, 0]).mean() > 0.6 * gain[face][:, 0].mean()
        untouched = cv2.dilate(np.uint8(np.abs(gain).sum(axis=2) > 0), np.ones((9, 9), np.uint8)) == 0
        assert untouched.mean() > 0.2
        luma_in, luma_out = (f.to_ndarray()[: f.height] for f in (frame_in, frame_out))
        assert np.array_equal(luma_in[untouched], luma_out[untouched])  # away from the face: every bit


def test_a_stream_given_up_or_failed_leaves_no_frame_to_the_next_stream():
    """The frames a stream held back for lookahead go with it: the next stream() on the same object
    gives its own frames, all of them, and nothing else."""
    first, _ = sf.face_frames(10, 160, 120)
    second, _ = sf.face_frames(6, 200, 150)

    class Failing(IdentityRestorer):
        calls_left: float = float("inf")  # restores before it fails

        def restore(self, faces, caches, noise_seeds=None):
            self.calls_left -= 1
            if self.calls_left < 0:
                raise RuntimeError("restorer failed")
            return faces

    restorer = Failing(64)
    # (the gate off: the drawn faces are clean, and a clean face is not given to the restorer)
    fr = FaceRestorer(restorer, sf.SyntheticFaceDetector(),
                      config=PipelineConfig(lookahead=5, gate=QualityGateConfig(enabled=False)))
    for i, _ in enumerate(fr.stream(iter(first))):
        if i == 1:
            break  # given up with frames held back
    assert [out.shape for out in fr.stream(iter(second))] == [s.shape for s in second]
    restorer.calls_left = 4
    with pytest.raises(RuntimeError, match="restorer failed"):
        list(fr.stream(iter(first)))
    restorer.calls_left = float("inf")
    outs = list(fr.stream(iter(second)))
    assert len(outs) == len(second) and all(out.shape == (150, 200, 3) for out in outs)


@pytest.mark.parametrize("frame_path", ["host", "device"])
@pytest.mark.parametrize("pix_fmt", ["rgb24", "bgr24", "yuv420p", "yuv420p10le"])
def test_a_video_frame_made_by_hand_without_a_time_base_is_restored(pix_fmt, frame_path):
    """``av.VideoFrame.from_ndarray`` gives no time base; the restored frame keeps its pts without one."""
    frames, _ = sf.face_frames(2, 160, 120)
    config = PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False), frame_path=frame_path)
    fr = FaceRestorer(_Flickering(64), sf.SyntheticFaceDetector(), config=config)
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        frame.pts = i
        assert frame.time_base is None
        out = fr.process(frame)
        assert out.pts == i and fr.last_faces


def test_frames_of_another_size_start_a_new_shot():
    """Frames that change size on one object (another source) end every track and are detected
    afresh: no face of the old picture is restored at its old place in the new one."""
    small, _ = sf.face_frames(6, 160, 120)
    large, _ = sf.face_frames(4, 240, 180)
    fr = FaceRestorer(IdentityRestorer(64), sf.SyntheticFaceDetector(), config=PipelineConfig(lookahead=0))
    for frame in small:
        fr.process(frame)
    (before,) = fr.last_faces
    for frame in large:
        fr.process(frame)
        (face,) = fr.last_faces  # the new picture's face only (the old track ended at the change)
        assert face.track_id != before.track_id
    assert fr._tracker.cuts == [len(small)]


@pytest.mark.parametrize("frame", [np.zeros((0, 0, 3), np.uint8), np.zeros((4, 0, 3), np.uint8),
                                   np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)],
                         ids=["empty", "no-columns", "grey", "float"])
def test_a_frame_that_is_not_a_picture_is_a_value_error_naming_it(frame):
    fr = FaceRestorer(IdentityRestorer(64), sf.SyntheticFaceDetector(), config=PipelineConfig(lookahead=0))
    with pytest.raises(ValueError, match="frames must be HxWx3 uint8 arrays"):
        fr.process(frame)


def test_a_window_given_as_text_is_a_value_error(tmp_path):
    from streamrestore.video.reader import VideoReader

    src = tmp_path / "a.mp4"
    make_clip(src, frames=3)
    with pytest.raises(ValueError, match="start must be a number of seconds, got '0:01'"):
        VideoReader(src, start="0:01")
    with pytest.raises(ValueError, match="end must be a number of seconds"):
        restore_video(src, tmp_path / "o.mp4", FaceRestorer(IdentityRestorer(64), sf.SyntheticFaceDetector()), end="2")


@pytest.mark.parametrize("pix_fmt", ["yuv422p10le", "yuv444p12le", "gbrp10le"])
def test_a_deep_frame_of_another_layout_keeps_every_bit_away_from_the_faces(drawn_talking, pix_fmt):
    """4:2:2, 4:4:4 and planar RGB at 10/12 bits (ProRes, DNxHR) are restored through 8-bit RGB and
    given back in their own format: samples away from what the stages changed are the input's."""
    from streamrestore.pixels import plane_view

    rng = np.random.default_rng(4)
    config = PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False))
    deep_run = FaceRestorer(_Flickering(128), sf.SyntheticFaceDetector(), config=config)
    eight_run = FaceRestorer(_Flickering(128), sf.SyntheticFaceDetector(), config=config)
    for i, rgb in enumerate(_frames(drawn_talking, 4)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt, dst_colorspace=1,
                                                                         dst_color_range=1)
        for plane in frame.planes:  # low bits an 8-bit picture cannot hold
            view = plane_view(plane, plane.height, plane.width, np.uint16)
            view[...] = np.clip(view.astype(int) + rng.integers(-2, 3, view.shape), 0, (1 << int(pix_fmt[-4:-2])) - 1)
        frame.pts = i
        out = deep_run.process(frame)
        assert out.format.name == pix_fmt and out.pts == i and int(out.colorspace) == int(frame.colorspace)
        rgb_in = _rgb_of(frame)
        changed = np.abs(eight_run.process(rgb_in).astype(int) - rgb_in).max(axis=2) > 0
        near = cv2.dilate(changed.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # chroma filters reach a few px
        assert changed.any() and not near.all()
        for before, after in zip(frame.planes, out.planes):
            a = plane_view(before, before.height, before.width, np.uint16)
            b = plane_view(after, after.height, after.width, np.uint16)
            away = cv2.resize((~near).astype(np.uint8), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
            assert np.array_equal(a[away], b[away]) and (a[~away] != b[~away]).any()


def _rgb_of(frame):
    """The 8-bit RGB picture the deep path serves for ``frame``."""
    from streamrestore.video.reader import frame_to_rgb

    return frame_to_rgb(frame)


def test_an_interlaced_video_is_restored_deinterlaced_unless_asked_not_to(tmp_path):
    """restore_video deinterlaces an interlaced input by default (the faces are restored whole, the
    output plays without combing); deinterlace=False writes the woven fields and says so."""
    from media_utils import combing, make_interlaced_clip

    src = tmp_path / "camcorder.mp4"
    make_interlaced_clip(src, frames=6)
    restorer = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), config=PipelineConfig())
    for deinterlace, most_combing, said in ((True, 1.0, "each frame was deinterlaced"),
                                            (False, None, "keeps its two fields woven in each frame")):
        dst = tmp_path / f"out_{deinterlace}.mp4"
        stats = restore_video(src, dst, restorer, encoder=EncoderSettings(preset="ultrafast"), deinterlace=deinterlace)
        assert stats.frames == 6 and read_video_timing(dst) == read_video_timing(src)
        assert any(said in problem for problem in stats.problems), stats.problems
        with av.open(str(dst)) as c:
            combs = [combing(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
        assert (max(combs) < most_combing) if most_combing else min(combs) > 8, combs
        # tagged as it is: progressive once deinterlaced (ProRes said "unknown"), else interlaced and coded as
        # fields (it was tagged progressive, and a player showed the combing)
        with av.open(str(dst)) as c:
            order, first = c.streams.video[0].codec_context.field_order, next(c.decode(video=0))
        assert (order, first.interlaced_frame) == ((1, False) if deinterlace else (order, True)), order
        assert deinterlace or order in (2, 3, 4, 5)


def test_faces_of_a_video_of_wide_pixels_are_restored_as_shown(tmp_path):
    """A 16:9 DVD stores its picture squeezed, in pixels of aspect 32:27 (the file says so): the
    restorer is given each face as it is shown (its skin as wide for its height as in an upright
    crop of the picture shown), not squeezed."""
    from streamrestore.faces.align import alignment_matrix, warp_to_template

    par = Fraction(32, 27)
    shown = [sf.scene(256, 160, [("ann", sf.face_matrix((128 + 2 * i, 80), 44))], i) for i in range(4)]
    width = round(256 / par)  # 216

    def stored(i):
        return cv2.resize(shown[i][0], (width, 160), interpolation=cv2.INTER_AREA)

    def aspect(crop):  # the drawn skin's width over its height
        ys, xs = np.nonzero(np.abs(crop.astype(float) - sf.PEOPLE["ann"].skin).max(axis=2) < 30)
        return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)

    class Recording(IdentityRestorer):
        def restore(self, faces, caches, noise_seeds=None):
            crops.append((faces[0].permute(1, 2, 0).numpy() * 255).round())
            return faces

    expected = aspect(warp_to_template(shown[0][0], alignment_matrix(shown[0][1][0], 128), 128))
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False), crop_resolution=None)
    for tagged, proportion in ((True, 1.0), (False, 27 / 32)):
        src = tmp_path / f"dvd_{tagged}.mp4"
        make_clip(src, width=width, height=160, frames=4, picture=stored,
                  color={"sample_aspect_ratio": par} if tagged else None)
        crops: list = []
        restore_video(src, tmp_path / f"out_{tagged}.mp4", FaceRestorer(Recording(128), sf.SyntheticFaceDetector(),
                                                                         config=config),
                      encoder=EncoderSettings(preset="ultrafast"))
        assert len(crops) == 4
        assert [aspect(c) for c in crops] == pytest.approx([expected * proportion] * 4, rel=0.04), tagged


def test_max_faces_keeps_the_faces_it_chose_while_sizes_jitter():
    """Two faces of about one size (the tiles of a video call): with ``max_faces=1`` the one chosen
    first stays chosen while each frame's sizes jitter by a few per cent (it was restored, then not,
    then again); a face clearly larger takes its place. The summary says why a face was left alone."""
    def frame(ann: float, ben: float) -> np.ndarray:
        faces = [("ann", sf.face_matrix((90, 90), 40 * ann, 0.0)), ("ben", sf.face_matrix((270, 90), 40 * ben, 0.0))]
        return sf.scene(360, 180, faces)[0]

    config = PipelineConfig(max_faces=1, lookahead=0, detect_every=1, temporal=TemporalConfig.off())
    fr = FaceRestorer(IdentityRestorer(64), sf.SyntheticFaceDetector(), config=config)
    jitter = [(1.02, 1.0), (1.0, 1.04), (1.03, 1.0), (0.98, 1.03), (1.0, 1.04), (1.01, 1.0)]
    for ann, ben in jitter:
        fr.process(frame(ann, ben))
    tracks = fr.stats.per_track
    assert len(tracks) == 2
    assert sorted(t.left_alone for t in tracks.values()) == [0, len(jitter)]  # one face restored throughout
    for _ in range(2):
        fr.process(frame(1.0, 1.4))  # Ben now clearly larger: he is restored instead
    assert sorted(t.left_alone for t in tracks.values()) == [2, len(jitter)]
    summary = fr.stats.summary()
    assert f"({len(jitter)} left alone: beyond --max-faces)" in summary and "(2 left alone: beyond --max-faces)" in summary


def test_a_face_after_frames_without_faces_is_restored_from_its_first_frame():
    """With the detector on every third frame, the faces after a slide (a video call's screen share,
    a title) were found up to two frames late: those frames went out unrestored. With no face held,
    a frame unlike the last one the detector saw (a cut) is looked at at once; faceless footage
    that changes little keeps the cadence, and with faces held the flow follows them."""
    detector = sf.SyntheticFaceDetector()
    fr = FaceRestorer(IdentityRestorer(64), detector,
                      config=PipelineConfig(lookahead=0, detect_every=3, temporal=TemporalConfig.off()))
    face = sf.scene(240, 160, [("ann", sf.face_matrix((120, 80), 40, 0.0))])[0]
    slide = np.full((160, 240, 3), 245, np.uint8)
    cv2.putText(slide, "Q3 results", (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2)
    room = [sf.background(240, 160, i) for i in range(5)]  # an empty shot, its stripes drifting
    frames = [face, face, face, slide, slide, slide, slide, face, face, face, face, face, *room]
    looked_at = []
    for index, picture in enumerate(frames):
        calls = detector.calls
        fr.process(picture.copy())
        if detector.calls > calls:
            looked_at.append(index)
    tracks = sorted(fr.stats.per_track.values(), key=lambda t: t.first_frame)
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 2), (7, 11)]
    # 3: the cadence (and a cut); 4-6: the same slide; 7: the cut back; 12: a cut to the room, then its cadence
    assert looked_at == [0, 3, 6, 7, 10, 12, 15]


def test_two_runs_at_once_on_one_new_restorer_each_get_their_own_stream(drawn_talking, tmp_path):
    """A service gave one new FaceRestorer to two requests at once: both failed from deep inside
    (KeyError, "frame pts 0 is not after the previous"), one request's frames in the other's writer.
    A run that finds the object held by another run gets a fresh() copy of it."""
    import threading

    class HeldDetector(sf.SyntheticFaceDetector):
        """Holds the first run inside its first detection, before it has given the tracker a frame."""

        def __init__(self):
            super().__init__()
            self.entered, self.go, self.first = threading.Event(), threading.Event(), True

        def detect(self, image):
            if self.first:
                self.first = False
                self.entered.set()
                self.go.wait(60)
            return super().detect(image)

    config = PipelineConfig(crop_resolution=None, gate=QualityGateConfig(enabled=False))
    shared = FaceRestorer(_Redden(128), HeldDetector(), config=config, fps=25.0)  # (the clip's: not a copy for its rate)
    results: dict = {}

    def first_run():
        try:
            results["first"] = restore_video(drawn_talking, tmp_path / "first.mp4", shared, end=1.0)
        except BaseException as exc:  # (said in the assertion below)
            results["first"] = exc

    worker = threading.Thread(target=first_run)
    worker.start()
    assert shared.detector.entered.wait(60)
    try:
        second = restore_video(drawn_talking, tmp_path / "second.mp4", shared, end=1.0)
    finally:
        shared.detector.go.set()
        worker.join(120)
    first = results["first"]
    assert not isinstance(first, BaseException), first
    assert first is shared.stats and second is not shared.stats
    assert first.frames == second.frames == 25 and first.faces_restored == second.faces_restored == 25
    for name in ("first", "second"):
        assert len(read_video_timing(tmp_path / f"{name}.mp4")[0]) == 25
    # once its run is over, the object serves the next run (a fresh copy: it has restored frames)
    assert restore_video(drawn_talking, tmp_path / "third.mp4", shared, end=0.2).frames == 5


def test_a_restorer_used_in_a_forked_process_says_so_instead_of_hanging(tmp_path):
    """A fork-based process pool given a restorer built in the parent hung for ever in its first
    detection (ONNX Runtime's threads do not survive a fork); a copy made there (fresh) shares them."""
    import os

    fr = FaceRestorer(IdentityRestorer(64), sf.SyntheticFaceDetector(), config=PipelineConfig(lookahead=0))
    said = tmp_path / "said.txt"
    pid = os.fork()
    if pid == 0:  # the child: only the pid check runs, no model work
        try:
            text = []
            for use in (lambda: fr.process(np.zeros((64, 64, 3), np.uint8)), lambda: fr.fresh(),
                        lambda: next(iter(fr.stream([np.zeros((64, 64, 3), np.uint8)])))):
                try:
                    use()
                    text.append("ran")
                except RuntimeError as exc:
                    text.append(str(exc))
            said.write_text("\n".join(text))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    lines = said.read_text().splitlines()
    assert len(lines) == 3 and all("forked from it" in line and "build the FaceRestorer in each worker" in line
                                   for line in lines), lines
    assert fr.process(np.zeros((64, 64, 3), np.uint8)).shape == (64, 64, 3)  # the parent's own still works


def test_the_match_threshold_is_the_users_to_set(tmp_path, capsys):
    """facefusion's reference face distance has a setting; ours was fixed at the embedder's 0.40 (Lin's
    photo scored 0.35 against his own face in the Hamilton clip, and nothing could let it match)."""
    from streamrestore.faces.references import load_reference_sets

    folders = (sf.write_portraits(tmp_path / "ann", "ann"), sf.write_portraits(tmp_path / "ben", "ben"))
    embedder = sf.SyntheticFaceEmbedder()
    sets = load_reference_sets([str(f) for f in folders], sf.SyntheticFaceDetector(), embedder, 128)
    default = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), sets, embedder=embedder)
    lowered = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), sets, embedder=embedder,
                           config=PipelineConfig(match_threshold=0.2))
    assert lowered.stats.match_threshold == 0.2 != default.stats.match_threshold
    with pytest.raises(ValueError, match="match_threshold is a cosine similarity in \\[-1, 1\\], got 1.5"):
        PipelineConfig(match_threshold=1.5)
    from streamrestore.cli import main

    assert main([str(tmp_path / "x.mp4"), "--match-threshold", "2"]) == 2
    assert "--match-threshold is a cosine similarity in [-1, 1], got 2.0" in capsys.readouterr().err


def test_a_face_models_folder_without_a_pack_is_said_before_the_model_loads(tmp_path, monkeypatch):
    """`--face-models /nope` was said 16.7 s in, after the model had loaded."""
    from streamrestore import pipeline
    from streamrestore.errors import ModelError

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(pipeline, "load_restorer", never)
    with pytest.raises(ModelError, match=r"--face-models .*nope: no such file or folder"):
        pipeline.build_face_restorer(model="lite", face_models=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"--face-models .*empty: no insightface detector \(det_\*\.onnx\) found there"):
        pipeline.build_face_restorer(model="lite", face_models=tmp_path / "empty")


def test_strength_scales_every_faces_change_and_zero_leaves_them_as_they_are():
    """A fidelity control (CodeFormer's -w, GFPGAN's weight): how much of the restorer's change a face gets.
    There was none; a user wanting more of the original look could only turn restoration off."""
    from streamrestore.reference_detail import ReferenceDetailConfig

    frame = sf.face_frames(frames=1, width=320, height=240)[0][0]
    changes, summaries = {}, {}
    for strength in (1.0, 0.5, 0.0):
        config = PipelineConfig(temporal=TemporalConfig.off(), reference_detail=ReferenceDetailConfig.off(),
                                gate=QualityGateConfig(enabled=False, strength=strength), lookahead=0)
        restorer = FaceRestorer(_Redden(128), sf.SyntheticFaceDetector(), config=config)
        changes[strength] = restorer.process(frame).astype(np.int32) - frame.astype(np.int32)
        assert restorer.stats.faces_restored == 1 and restorer.stats.faces_left_clean == 0
        summaries[strength] = restorer.stats.summary().splitlines()[0]
        assert restorer.stats.as_dict()["strength"] == strength
        assert restorer.stats.as_dict()["faces_restored"] == (strength > 0)
    # the summary said "1 face restored" of a face left as it was at --strength 0
    assert summaries[1.0].endswith("1 face restored in 1 frame, 1 track, no references given")
    assert summaries[0.5].endswith("1 face restored at strength 0.5 in 1 frame, 1 track, no references given")
    assert summaries[0.0].endswith("1 face in 1 frame left as it was (--strength 0), 1 track, no references given")
    red = changes[1.0][..., 0]
    assert red.max() > 60  # (the face reddened by 0.3 of the range)
    face = (red > 20) & (frame[..., 0].astype(np.int32) + red < 255)  # (not where the whole change hit white)
    assert np.abs(changes[0.5][..., 0][face] - 0.5 * red[face]).max() <= 1
    assert not changes[0.0].any()
    with pytest.raises(ValueError, match="strength must be in"):
        QualityGateConfig(strength=1.5)


class _TintAndBrighten(IdentityRestorer):
    """Tints every face pink and brightens it: what the restorer did to black-and-white film, plus a change
    of brightness that must come through."""

    def restore(self, faces, caches, noise_seeds=None):
        out = faces.clone() + 0.06
        out[:, 0] += 0.08
        out[:, 2] += 0.04
        return out.clamp(0, 1)


@pytest.mark.parametrize("frame_path", ["host", "device"])
def test_black_and_white_film_stays_grey_and_colour_faces_take_the_restorers_colour(frame_path):
    """Black-and-white film came out with pink lips and blue eyes (chroma up to 11 levels off grey): the
    restorer has seen colour faces only. A monochrome face now takes only the change of brightness, and a
    toned print scanned in colour keeps its tone (it was taken for a colour face and tinted)."""
    from streamrestore.reference_detail import ReferenceDetailConfig

    colour = sf.face_frames(frames=1, width=320, height=240)[0][0]
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    config = PipelineConfig(temporal=TemporalConfig.off(), reference_detail=ReferenceDetailConfig.off(),
                            gate=QualityGateConfig(enabled=False), lookahead=0, frame_path=frame_path)

    class SameFaces(sf.SyntheticFaceDetector):  # (the drawn faces are found by their colours: the colour frame's)
        def detect(self, image):
            return super().detect(colour)

    def restored(frame):
        return FaceRestorer(_TintAndBrighten(128), SameFaces(), config=config).process(frame.copy())

    out = restored(grey).astype(np.int32)
    assert (out != grey).any(axis=2).sum() > 2000  # (the face was restored)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 2] - out[..., 1]).max() <= 1
    face = (out[..., 1] - grey[..., 1]) > 5
    assert face.sum() > 2000  # brighter: the brightness change came through
    toned = _sepia_print_scanned_in_colour(grey)  # a sepia print scanned in colour keeps its tone (family F1)
    out = restored(toned)
    assert (out != toned).any(axis=2).sum() > 2000
    # (its own noise lies ~1.5 levels off the tone; the restorer alone put it ~20 levels off)
    assert _off_tone(toned, out, face) < _off_tone(toned, toned, face) + 0.5
    out = restored(colour).astype(np.int32)  # a colour face keeps the restorer's colour
    tinted = out[..., 0] - colour[..., 0].astype(np.int32) - (out[..., 1] - colour[..., 1].astype(np.int32))
    assert (tinted > 5).sum() > 2000


def _sepia_print_scanned_in_colour(grey: np.ndarray, seed: int = 0) -> np.ndarray:
    """``grey`` as a sepia-toned print (the tint grows with density, warm in the mid-tones) scanned in a
    flatbed's colour mode: ~1.2 levels of noise per channel and a slight cast (family F1)."""
    level = grey[..., :1].astype(np.float64) / 255.0
    toned = 255.0 * np.concatenate([level ** 0.9, level, level ** 1.25], axis=2)
    noise = np.random.default_rng(seed).normal(0.0, 1.2, grey.shape)
    return np.clip(toned + noise + [3, 1, -3], 0, 255).round().astype(np.uint8)


def _off_tone(reference: np.ndarray, picture: np.ndarray, mask: np.ndarray) -> float:
    """How far ``picture``'s red and blue lie from ``reference``'s tone (a cubic of green fitted on
    ``reference`` under ``mask``): the mean absolute distance, in levels."""
    ref = reference[mask].astype(np.float64)
    pic = picture[mask].astype(np.float64)
    off = []
    for channel in (0, 2):
        curve = np.polyfit(ref[:, 1], ref[:, channel], 3)
        off.append(np.abs(pic[:, channel] - np.polyval(curve, pic[:, 1])).mean())
    return max(off)


def test_the_host_and_device_judge_a_face_monochrome_alike():
    """The device path's version (tensors in [0, 1]) takes the same faces for monochrome as the host's (uint8
    crops), and gives them the same change; a coloured face (its colour not a function of its brightness)
    keeps the restorer's colour."""
    import torch

    from streamrestore.blend import is_monochrome, keep_monochrome_tone, keep_monochrome_tone_tensor

    rng = np.random.default_rng(0)
    luma = rng.integers(40, 200, (128, 128, 1)).astype(np.float32)
    grey = np.repeat(luma, 3, axis=2).astype(np.uint8)
    toned = _sepia_print_scanned_in_colour(grey)
    coloured = grey.copy()
    coloured[40:90, 30:100] = np.clip(coloured[40:90, 30:100].astype(np.int32) + [12, -6, 4], 0, 255)  # lips, say
    restored = np.clip(grey.astype(np.int32) + [30, 10, 20], 0, 255).astype(np.uint8)
    assert is_monochrome(grey) and is_monochrome(toned) and not is_monochrome(coloured)

    def tensor(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0

    for crop in (grey, toned, coloured):
        on_device = keep_monochrome_tone_tensor(tensor(crop), tensor(restored))[0].permute(1, 2, 0).numpy() * 255
        on_host = keep_monochrome_tone(crop, restored)
        assert np.abs(on_device - on_host.astype(np.float32)).max() <= 1.0
    assert (keep_monochrome_tone(coloured, restored) == restored).all()
    # a dim warm face (a stage's audience: its tint grows with its light, as a sepia print's) and a face of two
    # flat colours (a cubic fits any colours of a few tones) are colour faces (review 52)
    level = np.linspace(5.0, 50.0, 128)[None, :, None].repeat(128, axis=0)
    dim_warm = np.clip(np.concatenate([level * 1.4, level, level * 0.7], axis=2), 0, 255).round().astype(np.uint8)
    two_flat = np.zeros((128, 128, 3), np.uint8)
    two_flat[:, :64], two_flat[:, 64:] = (200, 60, 60), (40, 90, 200)
    for face in (dim_warm, two_flat):
        assert not is_monochrome(face)
    # one batch of every kind: each face judged and toned as on the host
    faces = [grey, toned, coloured, dim_warm, two_flat]
    batch = keep_monochrome_tone_tensor(torch.cat([tensor(f) for f in faces]), torch.cat([tensor(restored)] * 5))
    for face, on_device in zip(faces, batch.permute(0, 2, 3, 1).numpy() * 255):
        assert np.abs(on_device - keep_monochrome_tone(face, restored).astype(np.float32)).max() <= 1.0
    everywhere = np.ones(grey.shape[:2], bool)
    assert _off_tone(toned, keep_monochrome_tone(toned, restored), everywhere) < 1.5
    assert _off_tone(toned, restored, everywhere) > 5  # (what the restorer alone gave)


def test_a_face_at_a_bound_of_the_monochrome_rule_changes_its_colour_a_little_at_a_time():
    """A sepia face whose exposure flickers across the rule's luma bound flipped between its tone and the
    restorer's colour from frame to frame (review 52): the bounds are ramps, and its tone is kept by that share."""
    from streamrestore.blend import MONOCHROME_MIN_LUMA, keep_monochrome_tone, monochrome_tone

    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 1.7, (128, 128, 1))

    def sepia_at(mean_luma):
        level = np.clip(base * mean_luma, 0, 255)
        return np.clip(np.concatenate([level * 1.25, level * 0.95, level * 0.6], axis=2), 0, 255).round().astype(np.uint8)

    restored = lambda face: np.clip(face.astype(np.int32) + [12, 4, 8], 0, 255).astype(np.uint8)  # noqa: E731
    weights, outputs = [], []
    for mean in np.arange(MONOCHROME_MIN_LUMA - 8, MONOCHROME_MIN_LUMA + 9, 2.0):
        face = sepia_at(mean)
        tone = monochrome_tone(face)
        weights.append(0.0 if tone is None else tone.weight)
        outputs.append(keep_monochrome_tone(face, restored(face)).astype(np.float32) - face)
    assert weights[0] == 0.0 and weights[-1] == 1.0 and all(b >= a for a, b in zip(weights, weights[1:]))
    assert any(0.0 < w < 1.0 for w in weights)
    steps = [np.abs(b - a).mean() for a, b in zip(outputs, outputs[1:])]
    jump = np.abs(outputs[-1] - outputs[0]).mean()
    assert max(steps) < 0.6 * jump, (steps, jump)  # (no single step makes the whole change)


def test_tracks_say_their_times_on_the_inputs_clock(synthetic_faces, face_clip, tmp_path):
    """--json gives each track's first and last frame's time on the input's clock: with --start its frames
    are counted from the window's start, and an investigator had no way back to the recording's time."""
    fr = FaceRestorer.from_options(model="identity")
    stats = restore_video(face_clip.path, tmp_path / "o.mp4", fr, start=0.2, encoder=EncoderSettings(preset="ultrafast"))
    with av.open(str(face_clip.path)) as container:
        times = [frame.time for frame in container.decode(video=0)]
    kept = [t for t in times if t >= 0.2 - 1e-6]
    (track,) = stats.as_dict()["tracks"]
    assert (track["first_frame"], track["last_frame"]) == (0, len(kept) - 1)
    assert track["first_time"] == pytest.approx(kept[0], abs=1e-6) and track["first_time"] >= 0.2 - 1e-6
    assert track["last_time"] == pytest.approx(times[-1], abs=1e-6)
    # numpy frames have no time: said as unknown, not as 0
    fr = FaceRestorer.from_options(model="identity", config=PipelineConfig(lookahead=0))
    for frame in _frames(face_clip.path, 2):
        fr.process(frame)
    (track,) = fr.stats.as_dict()["tracks"]
    assert track["first_time"] is None and track["last_time"] is None


def _small_face_frame(portrait_bgr: np.ndarray, face_px: int, size=(1920, 1080)) -> np.ndarray:
    """``portrait_bgr`` shrunk so that its face is about ``face_px`` wide, in the middle of a grey frame of ``size``
    (an overview camera's wide shot)."""
    small = cv2.resize(portrait_bgr, None, fx=face_px / 130.0, fy=face_px / 130.0, interpolation=cv2.INTER_AREA)
    frame = np.full((size[1], size[0], 3), 110, np.uint8)
    y, x = (size[1] - small.shape[0]) // 2, (size[0] - small.shape[1]) // 2
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    return np.ascontiguousarray(frame[:, :, ::-1])


def test_small_faces_at_the_detectors_size_are_said_and_detect_size_finds_them(shared_models, shared_data):
    """A 1080p overview camera's faces (~40 px) are ~13 px where SCRFD looks at 640: found in some frames
    only, silently (a track "frames 54-89" read as if the person had come then). The run now says so and
    names --detect-size, which finds them."""
    portrait = cv2.imread(str(shared_data / "face_recognition" / "obama_small.jpg"))
    frames = [_small_face_frame(np.roll(portrait, shift, axis=1), 46) for shift in (0, 2, 4)]
    found = {}
    for size in (640, 1280):
        config = PipelineConfig(detect_size=size, detect_every=1, lookahead=0, temporal=TemporalConfig.off())
        fr = FaceRestorer.from_options(model="identity", face_models=shared_models / "insightface", config=config)
        assert fr.detector.det_size == size
        for frame in frames:
            fr.process(frame)
        found[size] = fr.stats
    at_640, at_1280 = found[640], found[1280]
    assert (at_640.faces_detected, at_640.faces_detected_small) == (3, 3), at_640.summary()
    (said,) = [w for w in at_640.warnings() if "--detect-size" in w]
    assert said.startswith("all 3 faces found were under 20 px wide where the face detector looked for them "
                           "(1920x1080 frames are looked at 640x360)") and "--detect-size 1280" in said
    assert (at_1280.faces_detected, at_1280.faces_detected_small) == (3, 0), at_1280.summary()
    assert not [w for w in at_1280.warnings() if "--detect-size" in w]
    # a frame smaller than the size is enlarged by SCRFD itself: its faces are counted at that size
    small = FaceRestorer.from_options(model="identity", face_models=shared_models / "insightface",
                                      config=PipelineConfig(lookahead=0, temporal=TemporalConfig.off()))
    small.process(cv2.resize(frames[0], (480, 270), interpolation=cv2.INTER_AREA))
    assert small.stats.detected_at == ((480, 270), (640, 360))


def test_small_faces_warning_needs_a_quarter_and_a_shrunk_frame():
    from streamrestore.run import RunStats

    stats = RunStats(frames=8)
    for _ in range(4):
        stats.add_detections([14.0, 60.0, 61.0], (1920, 1080), (640, 360), smallest=5.0)
    (said,) = [w for w in stats.warnings() if "--detect-size" in w]
    assert said.startswith("4 of the 12 faces found were under 20 px wide where the face detector looked for them "
                           "(1920x1080 frames are looked at 640x360): faces that small are missed in some frames")
    assert said.endswith("; --detect-size 1280 looks at them larger (slower)")
    assert stats.as_dict()["warnings"] == stats.warnings()
    few = RunStats(frames=8)  # under a quarter of the faces found
    few.add_detections([14.0, 60.0, 61.0, 62.0, 63.0], (1920, 1080), (640, 360), smallest=5.0)
    few.add_detections([14.0, 60.0, 61.0, 62.0, 63.0], (1920, 1080), (640, 360), smallest=5.0)
    assert not [w for w in few.warnings() if "--detect-size" in w]
    full = RunStats(frames=8)  # looked at full size already: a larger input shows the face no larger
    full.add_detections([14.0, 15.0, 16.0], (640, 360), (640, 360), smallest=5.0)
    assert not [w for w in full.warnings() if "--detect-size" in w]
    tiny = RunStats(frames=8)  # faces under min_face in the frame are not restored: not counted
    tiny.add_detections([3.0, 4.0, 4.5], (1920, 1080), (640, 360), smallest=5.3)
    assert tiny.faces_detected == 0 and not tiny.warnings()
    # where none was found, the hint names the size looked at, and the option where a larger one would help
    nothing = RunStats(frames=8, encoded=True)
    nothing.add_detections([], (1920, 1080), (640, 360), smallest=5.3)
    assert ("\n  (the detector misses a face under ~30 px across in the picture scaled to 640 px (--detect-size "
            "1280 looks at it larger), one upside down") in nothing.summary()
    nothing.add_detections([], (480, 270), (640, 360), smallest=5.3)
    assert "scaled to 640 px, one upside down" in nothing.summary()
    huge = RunStats(frames=8)  # (8K looked at 2560: the largest size taken, not twice it)
    huge.add_detections([14.0] * 4, (7680, 4320), (2560, 1440), smallest=5.3)
    assert [w for w in huge.warnings() if "--detect-size 4096 looks at them larger" in w]
    huge.add_detections([14.0] * 4, (7680, 4320), (4096, 2304), smallest=5.3)
    assert not [w for w in huge.warnings() if "--detect-size" in w]
    photo = RunStats(frames=1, photo=True)
    photo.add_detections([12.0] * 5, (6000, 4000), (640, 427), smallest=1.7)
    (said,) = photo.warnings()
    assert said == ("all 5 faces found were under 20 px wide where the face detector looked for them (the photo is "
                    "looked at 640x427): faces that small are missed; --detect-size 1280 looks at it larger (slower)")


def test_detect_size_is_checked():
    with pytest.raises(ValueError, match="detect_size must be a multiple of 32 from 160 to 4096, got 1000"):
        PipelineConfig(detect_size=1000)
    with pytest.raises(ValueError, match="got 128"):
        PipelineConfig(detect_size=128)
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import pipeline_config

    # --detect-size: SCRFD's input; its default is PipelineConfig's
    assert pipeline_config(build_parser().parse_args(["in.mp4"])).detect_size == PipelineConfig().detect_size == 640
    assert pipeline_config(build_parser().parse_args(["in.mp4", "--detect-size", "1280"])).detect_size == 1280


def test_detect_size_with_dlib_is_said_unused(caplog):
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        fr = FaceRestorer.from_options(model="identity", detector="dlib", config=PipelineConfig(detect_size=1280))
    assert fr.detector.name == "dlib"
    assert ("--detect-size 1280 is not used: dlib's face detector searches the whole frame at its own size"
            in caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        FaceRestorer.from_options(model="identity", detector="dlib")
    assert "--detect-size" not in caplog.text


def test_a_track_whose_person_changes_under_it_goes_on_a_new_track(tmp_path):
    """The tracker follows a place: a dissolve between two people's close-ups kept one track, and the second
    person was restored toward the first one's photos; with only the first one's photos and ``--unmatched
    skip`` the bystander's face was changed in 30 of 33 frames. A decided track's face is checked every few
    faces against its first ones; another person's goes on a new track, matched to the photos afresh."""
    from streamrestore.faces.references import load_reference_sets
    from streamrestore.pipeline import RECHECK_EVERY

    detector, embedder = sf.SyntheticFaceDetector(), sf.SyntheticFaceEmbedder()
    sets = load_reference_sets([str(sf.write_portraits(tmp_path / "ann", "ann"))], detector, embedder, 128)
    config = PipelineConfig(lookahead=0, crop_resolution=None, unmatched="skip", temporal=TemporalConfig.off(),
                            gate=QualityGateConfig(enabled=False))
    fr = FaceRestorer(_Redden(128), detector, sets, embedder=embedder, config=config)
    place = sf.face_matrix((160, 120), 30)  # (small in the picture: the dissolve is no scene cut to the tracker)
    ann, ben = (sf.scene(320, 240, [(person, place)])[0].astype(np.float32) for person in ("ann", "ben"))
    mix = [0.0] * 16 + [(k + 1) / 17 for k in range(16)] + [1.0] * 16  # ann, a dissolve of 16 frames, ben
    frames = [np.rint((1 - w) * ann + w * ben).astype(np.uint8) for w in mix]
    outputs = [fr.process(frame) for frame in frames]
    changed = [not np.array_equal(out, frame) for out, frame in zip(outputs, frames)]
    assert all(changed[:16])  # ann's: restored toward her photos
    # ben's: left as they were once the check found him someone else (within two checks of the dissolve's end)
    first_left = changed.index(False, 16)
    assert first_left <= 32 + 2 * RECHECK_EVERY and not any(changed[first_left:]), changed
    tracks = fr.stats.as_dict()["tracks"]
    assert [t["identity"] for t in tracks] == ["ann", None] and tracks[1]["first_frame"] == first_left
    assert tracks[1]["last_frame"] == 47 and tracks[1]["id"] > tracks[0]["id"]
