"""The quality gate: clean faces pass through, degraded faces get the restorer's change."""
import av
import cv2
import numpy as np
import pytest

from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.pixels import RgbPixels
from streamrestore.quality import QualityGate, QualityGateConfig, detail_ratio, inner_face
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


@pytest.mark.parametrize("bad", [dict(clean_at=0.2, degraded_at=0.3), dict(degraded_at=0.0), dict(smoothing=1.0),
                                 dict(measure_side=8)])
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


def test_a_clean_face_passes_through_and_a_degraded_one_is_restored(frame_and_detector):
    frame, scrfd = frame_and_detector
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off())
    # a clean talking head: the restorer's (large) change is not applied at all
    fr = FaceRestorer(_Stripes(128), scrfd, config=config)
    out = fr.process(frame.copy())
    assert fr.last_faces
    assert np.abs(out.astype(int) - frame).max() <= 1
    # the same frame degraded as the video benchmark does it (blur, 4x smaller, back up)
    h, w = frame.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(frame, (0, 0), 1.2), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    degraded = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    fr = FaceRestorer(_Stripes(128), scrfd, config=config)
    out = fr.process(degraded.copy())
    assert fr.last_faces
    changed = np.abs(out.astype(int) - degraded)
    assert changed.max() > 20 and (changed > 5).mean() > 0.02
