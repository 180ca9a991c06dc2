"""The quality gate: clean faces pass through, degraded faces get the restorer's change."""
import av
import cv2
import numpy as np
import pytest

from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.pixels import RgbPixels
from streamrestore.quality import (
    IdentityGate,
    IdentityGateConfig,
    QualityGate,
    QualityGateConfig,
    detail_ratio,
    inner_face,
)
from streamrestore.reference_detail import ReferenceDetailConfig
from streamrestore.temporal import TemporalConfig


def _texture(side: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = rng.integers(60, 200, (side, side), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def test_detail_ratio_falls_with_blur_and_ignores_contrast():
    sharp = _texture()
    soft = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    assert detail_ratio(sharp) > detail_ratio(soft) + 0.1
    low_contrast = (sharp.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    assert detail_ratio(low_contrast) == pytest.approx(detail_ratio(sharp), abs=0.02)
    assert detail_ratio(np.full((128, 128, 3), 90, np.uint8)) == 1.0  # nothing to restore
    assert detail_ratio(np.zeros((2, 2, 3), np.uint8)) == 1.0


def test_a_large_face_is_measured_at_the_measure_side():
    big = cv2.resize(_texture(160), (480, 480), interpolation=cv2.INTER_CUBIC)
    # 3x upscaled texture: soft at its own size, as sharp as the original once shrunk back
    assert detail_ratio(big, None) < detail_ratio(_texture(160), None) - 0.1
    assert detail_ratio(big, 160) == pytest.approx(detail_ratio(_texture(160), None), abs=0.05)


def test_inner_face_is_the_crop_centre_in_frame_pixels():
    frame = RgbPixels(np.arange(200 * 300 * 3, dtype=np.uint8).reshape(200, 300, 3))
    # the crop (side 100) shows the frame at half size, starting at frame pixel (40, 20)
    m = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])
    inner = inner_face(frame, m, 100)
    assert inner.shape == (120, 120, 3)  # 60 crop px = 120 frame px
    assert np.array_equal(inner, frame.full()[60:180, 80:200])
    off = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]])  # the face lies outside the frame
    assert inner_face(frame, off, 100).size == 0


def test_gate_weights_blend_and_state():
    gate = QualityGate(QualityGateConfig(smoothing=0.5))
    # the whole 128 px texture is the inner face of a 213 px crop
    eye = np.array([[1.0, 0.0, 0.2 * 213], [0.0, 1.0, 0.2 * 213]])
    sharp = RgbPixels(_texture())
    soft = RgbPixels(cv2.resize(_texture(16), (128, 128), interpolation=cv2.INTER_LINEAR))  # 8x upscaled
    assert gate.weight(1, sharp, eye, 213) == 0.0
    assert gate.weight(2, soft, eye, 213) == 1.0
    # a track that turns sharp lets go of the change over a few frames, not at once
    assert gate.weight(2, sharp, eye, 213) == pytest.approx(0.5)
    assert gate.weight(2, sharp, eye, 213) == pytest.approx(0.25)
    gate.forget([1])
    assert gate.weight(2, sharp, eye, 213) == 0.0  # state dropped: the first frame is taken as is
    crop = _texture()
    restored = np.full_like(crop, 255)
    assert gate.blend(crop, restored, 0.0) is crop
    assert gate.blend(crop, restored, 1.0) is restored
    half = gate.blend(np.zeros_like(crop), restored, 0.5)
    assert np.all(np.abs(half.astype(int) - 128) <= 1)
    assert QualityGate(QualityGateConfig(enabled=False)).weight(3, sharp, eye, 213) == 1.0
    # under off_below a weight is 0, but what it adds up from is kept: a steady small weight still shows
    small = QualityGate(QualityGateConfig(smoothing=0.8, off_below=0.01))
    assert small.smoothed(4, 0.0) == 0.0
    assert [round(small.smoothed(4, 0.03), 4) for _ in range(3)] == [0.0, 0.0108, 0.0146]


@pytest.mark.parametrize("bad", [dict(clean_at=0.2, degraded_at=0.3), dict(degraded_at=0.0), dict(smoothing=1.0),
                                 dict(measure_side=8), dict(off_below=1.0), dict(off_below=-0.1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        QualityGateConfig(**bad)


class _Stripes(IdentityRestorer):
    """A large change that the paste's colour matching cannot take back."""

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        stripes = 0.2 * torch.sin(torch.arange(faces.shape[-1], dtype=faces.dtype) / 3.0)
        return (faces + stripes).clamp(0, 1)


@pytest.fixture(params=["synthetic", "real"])
def frame_and_detector(request):
    """A clean frame of a face and a detector for it: drawn at 640x360 (the drawn-face detector;
    detail ratio 0.32 clean, 0.20 degraded as below; at 720p a drawn face, all edges and no skin
    texture, still measures 0.29 degraded) or the first frame of s18.mp4, 720p (shared SCRFD pack)."""
    if request.param == "synthetic":
        import synthetic_faces as sf

        pictures, _ = sf.face_frames(1, 640, 360)
        return pictures[0], sf.SyntheticFaceDetector()
    from streamrestore.faces.detect import create_detector

    with av.open(str(request.getfixturevalue("shared_data") / "liveportrait/source/s18.mp4")) as c:
        frame = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    return frame, create_detector("scrfd", models_dir=request.getfixturevalue("shared_models") / "insightface")


def _degraded(frame: np.ndarray) -> np.ndarray:
    """``frame`` degraded as the video benchmark does it (blur, 4x smaller, back up)."""
    h, w = frame.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(frame, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


class _CountedStripes(_Stripes):
    """Stripes, counting the faces it is given."""

    def __init__(self, resolution: int):
        super().__init__(resolution)
        self.faces_seen = 0

    def restore(self, faces, caches, noise_seeds=None):
        self.faces_seen += int(faces.shape[0])
        return super().restore(faces, caches, noise_seeds)


@pytest.mark.parametrize("frame_path", ["host", "device"])
def test_the_restorer_is_not_run_for_faces_the_gate_leaves_alone(frame_and_detector, frame_path):
    """A face whose gate weight is 0 keeps its input crop to the bit, so the model is not run for it
    (a clean talking head cost the whole restore time for nothing). After a degraded frame the
    weight fades over the next frames, and under ``off_below`` it is 0 again: the model stops."""
    frame, detector = frame_and_detector
    restorer = _CountedStripes(128)
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), frame_path=frame_path)
    fr = FaceRestorer(restorer, detector, config=config)
    gate = QualityGateConfig()
    fading = 0  # frames after the degraded one whose weight is still at least off_below
    while (1.0 - gate.smoothing) * gate.smoothing ** (fading + 1) >= gate.off_below:
        fading += 1
    frames = [frame, frame, _degraded(frame)] + [frame] * (fading + 5)
    outs = [fr.process(f.copy()) for f in frames]
    assert len({t.track_id for t in fr.last_faces}) == 1 and fr.stats.faces_restored == len(frames)
    assert restorer.faces_seen == 1 + fading  # the degraded frame and those its weight fades over
    assert all(np.abs(out.astype(int) - frame).max() <= 1 for out in outs[:2] + outs[3 + fading:])
    assert np.abs(outs[3].astype(int) - frame).max() > 5  # (a share of the change, fading)
    assert fr.stats.faces_left_clean == 2 + 5
    no_skip = _CountedStripes(128)
    fr = FaceRestorer(no_skip, detector, config=PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), frame_path=frame_path,
                                                                gate=QualityGateConfig(skip_clean_faces=False)))
    assert all(np.array_equal(fr.process(f.copy()), out) for f, out in zip(frames, outs))  # the same output
    assert no_skip.faces_seen == len(frames)


def _captioned(frame: np.ndarray, box, style: str) -> np.ndarray:
    """Caption letters over the mouth, as social clips burn them in: white with a black outline,
    or yellow in a black box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    out, scale = frame.copy(), (x1 - x0) / 180.0
    origin = (x0 + (x1 - x0) // 8, int(y0 + 0.8 * (y1 - y0)))
    font, thin = cv2.FONT_HERSHEY_DUPLEX, max(1, int(3 * scale))
    if style == "outlined":
        cv2.putText(out, "SO THIS IS", origin, font, scale, (0, 0, 0), max(2, int(8 * scale)), cv2.LINE_AA)
        cv2.putText(out, "SO THIS IS", origin, font, scale, (255, 255, 255), thin, cv2.LINE_AA)
    else:
        (w, h), _ = cv2.getTextSize("SO THIS IS", font, scale, thin)
        cv2.rectangle(out, (origin[0] - 6, origin[1] - h - 6), (origin[0] + w + 6, origin[1] + 8), (0, 0, 0), -1)
        cv2.putText(out, "SO THIS IS", origin, font, scale, (255, 230, 0), thin, cv2.LINE_AA)
    return out


@pytest.mark.parametrize("style", ["outlined", "boxed"])
def test_a_blurred_face_under_a_caption_is_still_restored(frame_and_detector, style):
    """A caption's letters over the mouth are sharp whatever the video: they read as a clean face's
    detail, and a blurred face under one was left unrestored. Caption pixels are left out of the
    measure, which leaves a face without them as it was measured."""
    from streamrestore.faces.align import alignment_matrix

    frame, detector = frame_and_detector
    degraded = _degraded(frame)
    (face,) = [max(detector.detect(degraded), key=lambda f: f.size)]
    captioned = _captioned(degraded, face.box, style)
    matrix = alignment_matrix(face.kps, 128)
    inner = [inner_face(RgbPixels(p), matrix, 128) for p in (degraded, captioned)]
    assert (inner[1].max(axis=2) >= 250).any()  # the letters are inside the measured box
    assert abs(detail_ratio(inner[1]) - detail_ratio(inner[0])) < 0.02
    gate = QualityGate()
    assert gate.weight(1, RgbPixels(captioned), matrix, 128) == pytest.approx(gate.weight(2, RgbPixels(degraded), matrix,
                                                                                           128), abs=0.3)
    assert gate.weight(3, RgbPixels(captioned), matrix, 128) > 0.5


def test_a_clean_face_passes_through_and_a_degraded_one_is_restored(frame_and_detector):
    frame, scrfd = frame_and_detector
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off())
    # a clean talking head: the restorer's (large) change is not applied at all
    fr = FaceRestorer(_Stripes(128), scrfd, config=config)
    out = fr.process(frame.copy())
    assert fr.last_faces
    assert np.abs(out.astype(int) - frame).max() <= 1
    assert fr.stats.faces_left_clean == fr.stats.faces_restored == 1  # and the summary says so
    summary = fr.stats.summary()
    assert "1 face in 1 frame, " in summary and "restored in" not in summary  # not called restored
    assert "of these, 0 restored and 1 clean face left as it was (the quality gate" in summary
    degraded = _degraded(frame)
    fr = FaceRestorer(_Stripes(128), scrfd, config=config)
    out = fr.process(degraded.copy())
    assert fr.last_faces
    changed = np.abs(out.astype(int) - degraded)
    assert changed.max() > 20 and (changed > 5).mean() > 0.02
    assert fr.stats.faces_left_clean == 0 and "clean face" not in fr.stats.summary()
    # -v says how much of the model's change the faces kept ("restored" may be a small share of it)
    assert "; 1.00 of the model's change kept (the quality gate's mean)" in fr.stats.summary(verbose=True)
    fr.process(frame.copy())  # the clean face: its own weight 0, smoothed with the degraded one's
    assert f"; {(1 + 0.8) / 2:.2f} of the model's change kept" in fr.stats.summary(verbose=True)
    assert "of the model's change" not in fr.stats.summary()


def _through_h264(picture: np.ndarray, crf: int = 32) -> np.ndarray:
    """``picture`` encoded with H.264 at ``crf`` (three frames of it) and decoded back."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "yuv420p"
        stream.options = {"crf": str(crf)}
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as c:
        return next(iter(c.decode(video=0))).to_ndarray(format="rgb24")


def _s18_face(shared_data, shared_models):
    """The first frame of the shared s18 clip, its face (SCRFD) and the face's 128 px alignment."""
    from streamrestore.faces.align import alignment_matrix
    from streamrestore.faces.detect import create_detector

    with av.open(str(shared_data / "liveportrait/source/s18.mp4")) as c:
        frame = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    detector = create_detector("scrfd", models_dir=shared_models / "insightface")
    (face,) = [max(detector.detect(frame), key=lambda f: f.size)]
    return frame, face, alignment_matrix(face.kps, 128)


def test_a_dark_face_the_gate_leaves_alone_is_said_too_dim_to_judge_not_clean(shared_data, shared_models):
    """In a dim face the frame's rounding and the codec's noise make much of the finest scale, so the
    measure reads a dark, blurred face as detailed and the gate leaves it alone. The summary said
    "clean" of such faces; it says they were too dark or flat to judge (and says clean of clean ones)."""
    frame, face, matrix = _s18_face(shared_data, shared_models)
    h, w = frame.shape[:2]

    def degraded(picture):  # as the video benchmark degrades, its H.264 included
        small = cv2.resize(cv2.GaussianBlur(picture, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        return cv2.resize(_through_h264(small), (w, h), interpolation=cv2.INTER_CUBIC)

    dark = np.clip(np.rint(255 * (frame / 255.0) ** 1.6 * 0.3), 0, 255).astype(np.uint8)  # a dim room
    blurred, dark_blurred = degraded(frame), degraded(dark)
    gate = QualityGate()
    for track, (picture, dim) in enumerate([(frame, False), (blurred, False), (dark_blurred, True)]):
        gate.weight(track, RgbPixels(picture), matrix, 128)
        assert gate.dim(track) is dim, track
    # the dark face reads as more detailed than the same face in its own light
    assert detail_ratio(inner_face(RgbPixels(dark_blurred), matrix, 128)) > \
        detail_ratio(inner_face(RgbPixels(blurred), matrix, 128)) + 0.02
    # (one frame through the codec measures 0.255; a clip's later frames carry more of its noise and
    # measure above the default 0.27: the gate's band is moved under it here)
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(clean_at=0.25,
                                                                                               degraded_at=0.2))
    fixed = [face]

    class Fixed:
        def detect(self, image):
            return list(fixed)

    fr = FaceRestorer(_Stripes(128), Fixed(), config=config)
    out = fr.process(dark_blurred.copy())
    assert np.array_equal(out, dark_blurred)  # left alone
    fr.process(frame.copy())  # and a clean face in its own light
    assert (fr.stats.faces_left_clean, fr.stats.faces_left_dim) == (2, 1)
    streamed = FaceRestorer(_Stripes(128), Fixed(), config=config)  # (frames finished on another thread)
    assert len(list(streamed.stream([dark_blurred.copy(), frame.copy(), dark_blurred.copy()]))) == 3
    assert (streamed.stats.faces_left_clean, streamed.stats.faces_left_dim) == (3, 2)
    assert ("of these, 0 restored, 1 clean face left as it was (the quality gate: nothing to restore; --no-quality-gate restores them anyway) and 1 face "
            "too dark or flat to judge left as it was (in so little contrast") in fr.stats.summary()
    with pytest.raises(ValueError, match="dim_below"):
        QualityGateConfig(dim_below=-1.0)


def test_a_face_under_one_strong_colour_of_light_is_said_so_not_too_dark(shared_data, shared_models):
    """The gate reads brightness, and a blue stage light leaves a bright face little of it (RGB 9, 42, 170:
    luma 47): such a face was left alone as "too dark or flat to judge" (unusual U2). It is still left alone
    (the model, trained in white light, paled its eyes and teeth), and the summary says why."""
    from streamrestore.quality import under_one_colour

    frame, face, matrix = _s18_face(shared_data, shared_models)
    blue = np.clip(frame * np.array([0.05, 0.25, 1.2]), 0, 255).astype(np.uint8)
    red = np.clip(frame * np.array([1.2, 0.2, 0.15]), 0, 255).astype(np.uint8)
    dark = np.clip(np.rint(255 * (frame / 255.0) ** 1.6 * 0.3), 0, 255).astype(np.uint8)
    crop = {name: inner_face(RgbPixels(picture), matrix, 128)
            for name, picture in (("white", frame), ("blue", blue), ("red", red), ("dark", dark))}
    assert [under_one_colour(crop[name]) for name in ("white", "blue", "red", "dark")] == [False, True, True, False]
    # a dark-skinned face in warm light (the shared photos' lowest green for its red) and a bluish grey print
    assert not under_one_colour(np.full((8, 8, 3), (105, 40, 30), np.uint8))
    assert not under_one_colour(np.full((8, 8, 3), (120, 125, 140), np.uint8))

    h, w = frame.shape[:2]

    def degraded(picture):  # as the video benchmark degrades, its H.264 included
        small = cv2.resize(cv2.GaussianBlur(picture, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        return cv2.resize(_through_h264(small), (w, h), interpolation=cv2.INTER_CUBIC)

    gate = QualityGate()
    for track, (picture, tinted) in enumerate([(degraded(blue), True), (degraded(dark), False),
                                               (degraded(frame), False)]):
        assert gate.weight(track, RgbPixels(picture), matrix, 128) == 0.0 or not tinted
        assert gate.tinted(track) is tinted and (gate.dim(track) or not tinted), track

    fixed = [face]

    class Fixed:
        def detect(self, image):
            return list(fixed)

    fr = FaceRestorer(_Stripes(128), Fixed(), config=PipelineConfig(lookahead=0, temporal=TemporalConfig.off()))
    picture = degraded(blue)
    assert np.array_equal(fr.process(picture.copy()), picture)  # left alone
    assert (fr.stats.faces_left_dim, fr.stats.faces_left_tinted) == (1, 1)
    text = fr.stats.summary()
    assert "1 face under one strong colour of light left as it was" in text and "too dark" not in text
    assert fr.stats.as_dict()["faces_left_tinted"] == 1


def test_a_grainy_face_the_gate_leaves_alone_is_said_too_grainy_to_judge_not_clean(shared_data, shared_models):
    """Film grain and tape noise live at the finest scale: the measure read a blurred face under
    grain as a sharp one and the summary called it clean (an archivist's VHS interview: 0 of 90
    faces restored, "clean"). It says they were too grainy to judge, and how to restore them."""
    from streamrestore.quality import noise_level

    frame, face, matrix = _s18_face(shared_data, shared_models)
    h, w = frame.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(frame, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(_through_h264(small), (w, h), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    grainy = np.clip(blurred + rng.normal(0, 6, (h, w, 1)), 0, 255).astype(np.uint8)  # luma grain, std 6
    gate = QualityGate()
    for track, (picture, said) in enumerate([(frame, False), (blurred, False), (grainy, True)]):
        gate.weight(track, RgbPixels(picture), matrix, 128)
        assert gate.grainy(track) is said, track
    assert gate.measure(RgbPixels(blurred), matrix, 128) == 1.0  # the blurred face: the whole change
    assert gate.measure(RgbPixels(grainy), matrix, 128) == 0.0  # under grain: read as sharp
    fixed = [face]

    class Fixed:
        def detect(self, image):
            return list(fixed)

    fr = FaceRestorer(_Stripes(128), Fixed(), config=PipelineConfig(lookahead=0, temporal=TemporalConfig.off()))
    out = fr.process(grainy.copy())
    assert np.array_equal(out, grainy)  # left alone (the weight is not changed)
    fr.process(frame.copy())
    assert (fr.stats.faces_left_clean, fr.stats.faces_left_grainy, fr.stats.faces_left_dim) == (2, 1, 0)
    assert fr.stats.as_dict()["faces_left_clean"] == 1 and fr.stats.as_dict()["faces_left_grainy"] == 1
    assert ("1 face too grainy to judge left as it was (film grain or tape noise reads as detail to the quality gate, "
            "so blurred faces may be among them; --no-quality-gate restores them") in fr.stats.summary()
    # the estimate: white noise of std 4 on a smooth gradient reads as 4
    ramp = np.tile(np.linspace(40, 200, 160, dtype=np.float32), (120, 1))
    assert noise_level(ramp) < 0.05
    assert noise_level(ramp + rng.normal(0, 4, ramp.shape).astype(np.float32)) == pytest.approx(4.0, rel=0.08)
    with pytest.raises(ValueError, match="grainy_above"):
        QualityGateConfig(grainy_above=-1.0)


# --- the identity gate ------------------------------------------------------------------------

def _colour_embedding(crops):
    """A stand-in embedder: the crop's mean colour about grey, unit length."""
    vectors = np.asarray(crops, np.float64).reshape(len(crops), -1, 3).mean(axis=1) - 128.0
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _flat(colour, side=16):
    return np.full((side, side, 3), colour, np.uint8)


def test_identity_gate_keeps_the_share_of_the_change_that_identity_allows():
    config = IdentityGateConfig(tolerance=0.05, every=1, smoothing=0.0)
    gate = IdentityGate(config, _colour_embedding)
    gate.set_references("ann", np.stack([_flat((200, 60, 60)), _flat((190, 70, 60))]))
    reference = _colour_embedding(np.stack([_flat((200, 60, 60)), _flat((190, 70, 60))])).mean(axis=0)
    reference /= np.linalg.norm(reference)
    original = _flat((180, 80, 90))
    for changed in (_flat((205, 60, 60)), _flat((150, 100, 140)), _flat((60, 90, 200))):
        assert gate.due(1, "ann")
        gate.update(1, "ann", original, changed)
        drop = _colour_embedding(np.stack([original]))[0] @ reference - _colour_embedding(np.stack([changed]))[0] @ reference
        assert gate.weight(1) == pytest.approx(float(np.clip(1 - drop / 0.05, 0, 1)))
    assert gate.weight(1) == 0.0  # the last change turned the face blue: none of it is kept
    # a change towards the references passes whole; so does a face without references or an unknown person
    gate.update(1, "ann", original, _flat((205, 60, 60)))
    assert gate.weight(1) == 1.0
    assert not gate.due(2, None) and not gate.due(2, "bob") and gate.weight(2) == 1.0
    # a face unlike the references before the change (another person's photos): identity to them says nothing
    stranger = _flat((60, 200, 60))
    assert float(_colour_embedding(np.stack([stranger]))[0] @ reference) < config.min_similarity
    gate.update(3, "ann", stranger, _flat((60, 90, 200)))
    assert gate.weight(3) == 1.0


def test_identity_gate_checks_every_few_frames_and_smooths():
    calls = []

    def embed(crops):
        calls.append(len(crops))
        return _colour_embedding(crops)

    gate = IdentityGate(IdentityGateConfig(tolerance=0.02, every=3, smoothing=0.5), embed)
    gate.set_references("ann", np.stack([_flat((200, 60, 60))]))
    original, blue = _flat((200, 60, 60)), _flat((60, 60, 200))
    weights = []
    for _ in range(7):
        if gate.due(5, "ann"):
            gate.update(5, "ann", original, blue)
        weights.append(gate.weight(5))
    assert calls == [1, 2, 2, 2]  # the references once, then frames 0, 3 and 6
    assert weights == [0.0] * 7  # the first check has no earlier value to smooth with
    gate.forget([])
    assert gate.due(5, "ann") and gate.weight(5) == 1.0  # an ended track starts again
    gate.update(5, "ann", original, original)
    assert gate.weight(5) == 1.0
    gate.update(5, "ann", original, blue)
    assert gate.weight(5) == 0.5  # half of the previous value and half of this check's


def test_identity_gate_is_off_without_an_embedder_or_when_disabled():
    assert not IdentityGate(IdentityGateConfig(), None).due(1, "ann")
    off = IdentityGate(IdentityGateConfig(enabled=False), _colour_embedding)
    off.set_references("ann", np.stack([_flat((200, 60, 60))]))
    assert not off.active and not off.due(1, "ann") and off.weight(1) == 1.0
    on = IdentityGate(IdentityGateConfig(), _colour_embedding)
    assert not on.active
    on.set_references("ann", np.stack([_flat((200, 60, 60))]))
    assert on.active


@pytest.mark.parametrize("bad", [{"tolerance": 0.0}, {"every": 0}, {"smoothing": 1.0}, {"smoothing": -0.1}])
def test_identity_gate_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        IdentityGateConfig(**bad)


class _Recolour(IdentityRestorer):
    """Changes one band of rows of the aligned face: the top (where the drawn faces' hair, their
    identity to the synthetic embedder, is read) or the bottom (the mouth)."""

    def __init__(self, resolution, rows):
        super().__init__(resolution)
        self.rows = rows

    def restore(self, faces, caches, noise_seeds=None):
        out = faces.clone()
        band = out[:, :, self.rows[0]:self.rows[1], :]
        band[:, 0] = 0.9  # red hair / a red chin
        band[:, 2] = 0.1
        return out


@pytest.mark.parametrize("frame_path", ["host", "device"])
@pytest.mark.parametrize("rows,held_back", [((0, 48), True), ((100, 128), False)])
def test_the_pipeline_holds_back_a_change_that_loses_identity(rows, held_back, frame_path):
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    frame = sf.face_frames(1, 320, 240, person="ann")[0][0]
    crops = np.stack([sf.aligned_face("ann", 128, variant=v) for v in range(2)])
    embedder = sf.SyntheticFaceEmbedder()
    people = [ReferenceSet("ann", crops, embedder.embed_aligned(crops), ["a", "b"])]
    # what the frame path gives a face left as it is (the device path's colour round trip is not exact)
    unchanged = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), config=PipelineConfig(
        lookahead=0, temporal=TemporalConfig.off(), frame_path=frame_path)).process(frame.copy()).astype(int)
    changed = {}
    for enabled in (True, False):
        config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                                identity_gate=IdentityGateConfig(enabled=enabled), frame_path=frame_path,
                                reference_detail=ReferenceDetailConfig.off())
        fr = FaceRestorer(_Recolour(128, rows), sf.SyntheticFaceDetector(), people, embedder=embedder, config=config)
        # a track's first check weights its first face; later ones run beside the next frame's restore
        changed[enabled] = [np.abs(fr.process(frame.copy()).astype(int) - unchanged).max() for _ in range(6)]
        assert fr.last_faces
        assert ("identity_gate" in fr.stats.stage_seconds) == enabled
        # what the gate kept is said per face, per track and in the summary (family F7: "restored" and
        # "1.00 of the model's change kept" read as if the faces had changed)
        kept, track = fr.last_faces[0].identity_kept, fr.stats.as_dict()["tracks"][0]
        line = fr.stats.summary().splitlines()[1]
        if not enabled:
            assert kept is None and track["identity_gate_weight"] is None and "identity gate" not in line
        elif held_back:
            assert kept == 0.0 and track["identity_gate_weight"] < 0.5
            assert "; the identity gate held back 1.00 of the change (it made the face less like its photos" in line, line
        else:
            assert kept == 1.0 and track["identity_gate_weight"] == 1.0 and "identity gate" not in line
            assert "; 1.00 of the model's change kept by the identity gate" in fr.stats.summary(verbose=True)
    assert min(changed[False]) > 50  # the restorer's change, applied whole without the gate
    if held_back:
        assert max(changed[True]) <= 1
    else:
        assert changed[True] == changed[False]


@pytest.mark.parametrize("frame_path", ["host", "device"])
def test_the_reference_detail_is_added_after_the_identity_gate(frame_path):
    """The gate judges the restorer's own change: a held-back change leaves the references'
    registered detail (the person's own) on the face, as the identity restorer gets it."""
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    frame = sf.face_frames(1, 320, 240, person="ann")[0][0]
    crops = np.stack([sf.aligned_face("ann", 128, variant=v) for v in range(2)])
    embedder = sf.SyntheticFaceEmbedder()
    people = [ReferenceSet("ann", crops, embedder.embed_aligned(crops), ["a", "b"])]
    outs = {}
    for name, restorer, detail in (("held back", _Recolour(128, (0, 48)), ReferenceDetailConfig()),
                                   ("unchanged", IdentityRestorer(128), ReferenceDetailConfig()),
                                   ("no detail", IdentityRestorer(128), ReferenceDetailConfig.off())):
        config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                                frame_path=frame_path, reference_detail=detail)
        fr = FaceRestorer(restorer, sf.SyntheticFaceDetector(), people, embedder=embedder, config=config)
        outs[name] = [fr.process(frame.copy()).astype(int) for _ in range(3)]
    for held, unchanged, bare in zip(outs["held back"], outs["unchanged"], outs["no detail"]):
        assert np.abs(unchanged - bare).max() > 5  # the detail is there
        assert np.abs(held - unchanged).max() <= 1  # the recoloured hair is not; the detail is


def test_identity_tolerance_option_builds_the_config():
    from streamrestore.cli import build_parser
    from streamrestore.cli.eval import build_parser as eval_parser
    from streamrestore.cli.options import identity_gate_from_args, pipeline_config
    from streamrestore.errors import UserError

    parse = lambda *extra: pipeline_config(build_parser().parse_args(["in.mp4", *extra])).identity_gate  # noqa: E731
    assert parse() == IdentityGateConfig()
    assert parse("--identity-tolerance", "0") == IdentityGateConfig(enabled=False)
    assert parse("--identity-tolerance", "0.05").tolerance == 0.05
    with pytest.raises(UserError, match=r"--identity-tolerance must be 0 \(off\) or more, got -0.1"):
        parse("--identity-tolerance", "-0.1")
    args = eval_parser().parse_args(["--video", "clean.mp4", "--identity-tolerance", "0"])
    assert identity_gate_from_args(args) == IdentityGateConfig(enabled=False)


class _RecolourFrom(_Recolour):
    """Recolours the hair from its ``start``-th call on (before: no change)."""

    def __init__(self, resolution, start):
        super().__init__(resolution, (0, 48))
        self.start, self.calls = start, 0

    def restore(self, faces, caches, noise_seeds=None):
        self.calls += 1
        return super().restore(faces, caches, noise_seeds) if self.calls > self.start else faces.clone()


def test_later_identity_checks_weight_the_next_frame():
    """Checks after a track's first run beside the next frame's restore: a change that starts
    losing identity shows on one frame, the same one on every run, and is held back after."""
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    frame = sf.face_frames(1, 320, 240, person="ann")[0][0]
    crops = np.stack([sf.aligned_face("ann", 128, variant=v) for v in range(2)])
    embedder = sf.SyntheticFaceEmbedder()
    people = [ReferenceSet("ann", crops, embedder.embed_aligned(crops), ["a", "b"])]
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                            identity_gate=IdentityGateConfig(every=1, smoothing=0.0),
                            reference_detail=ReferenceDetailConfig.off())
    for _ in range(2):
        fr = FaceRestorer(_RecolourFrom(128, 3), sf.SyntheticFaceDetector(), people, embedder=embedder, config=config)
        changed = [np.abs(fr.process(frame.copy()).astype(int) - frame).max() for _ in range(6)]
        assert max(changed[:3]) == 0 and changed[3] > 50 and max(changed[4:]) <= 1
