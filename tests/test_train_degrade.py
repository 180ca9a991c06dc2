import numpy as np
import pytest

from streamrestore.data.degrade import (
    PRESETS,
    DegradationPreset,
    anisotropic_gaussian_kernel,
    apply_degradation,
    degrade,
    get_preset,
    motion_blur_kernel,
    sample_degradation,
)


@pytest.fixture(scope="module", params=["synthetic", "real"])
def face(request):
    """A 96x96 RGB aligned face: a drawn one, or a shared FFHQ-aligned photo (gt.png)."""
    import cv2

    if request.param == "synthetic":
        from synthetic_faces import aligned_face

        return aligned_face("ann", 96)
    bgr = cv2.imread(str(request.getfixturevalue("shared_data") / "instantrestore" / "00001" / "gt.png"))
    assert bgr is not None
    return np.ascontiguousarray(cv2.resize(bgr, (96, 96), interpolation=cv2.INTER_AREA)[..., ::-1])


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"clean"}))
def test_same_seed_same_bytes_different_seed_differs(face, preset):
    a = degrade(face, preset, seed=7)
    b = degrade(face.copy(), preset, seed=7)
    c = degrade(face, preset, seed=8)
    assert a.dtype == np.uint8 and a.shape == face.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, face)


def test_severe_draws_stay_in_the_paper_ranges():
    for seed in range(200):
        d = sample_degradation("severe", seed, (512, 512))
        assert 0.1 <= d.blur_sigma[0] <= 12 and 0.1 <= d.blur_sigma[1] <= 12
        assert d.blur_kernel_size == 41
        assert 1 <= d.downsample <= 12
        assert 10 <= d.noise_sigma <= 20
        assert 10 <= d.jpeg_quality <= 19
        assert d.h264_crf is None


def test_blur_scales_with_image_size():
    big = sample_degradation("severe", 3, (512, 512))
    small = sample_degradation("severe", 3, (128, 128))
    assert small.blur_sigma[0] == pytest.approx(big.blur_sigma[0] / 4)
    assert small.downsample == big.downsample and small.jpeg_quality == big.jpeg_quality
    assert small.blur_kernel_size == 11


def test_severity_orders_presets(face):
    def err(preset):
        return np.mean([np.abs(degrade(face, preset, s).astype(float) - face).mean() for s in range(12)])

    assert err("mild") < err("moderate") < err("severe")


def test_video_preset_uses_h264_and_motion_blur(face):
    d = sample_degradation("video", 1, face.shape[:2])
    assert d.h264_crf is not None and d.jpeg_quality is None
    assert any(sample_degradation("video", s, (512, 512)).motion_length > 5 for s in range(10))
    # one draw applied to two frames of a clip gives the same damage to the same content
    assert np.array_equal(apply_degradation(face, d), apply_degradation(face.copy(), d))


def test_kernels_are_normalised_and_oriented():
    k = anisotropic_gaussian_kernel(21, 6.0, 1.0, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert k[10, :].sum() > k[:, 10].sum()  # wide along x when the angle is 0
    k90 = anisotropic_gaussian_kernel(21, 6.0, 1.0, np.pi / 2)
    assert np.allclose(k90, k.T, atol=1e-6)
    m = motion_blur_kernel(9.0, 0.0)
    assert m.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.count_nonzero(m.sum(axis=1) > 1e-6) == 1  # a horizontal streak lies on one row


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="blur_kernel_size"):
        DegradationPreset(blur_kernel_size=40)
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradationPreset(jpeg_quality=(50, 10))
    with pytest.raises(ValueError, match="unknown degradation preset"):
        get_preset("awful")
    with pytest.raises(ValueError, match="seed"):
        sample_degradation("severe", -1, (64, 64))


def test_clean_preset_is_the_identity(face):
    assert np.array_equal(degrade(face, "clean", seed=3), face)


def test_mix_draws_each_preset_by_weight():
    from streamrestore.data.degrade import CLEAN, SEVERE, DegradationMix

    mix = DegradationMix((SEVERE, CLEAN), (3.0, 1.0))
    rng = np.random.default_rng(0)
    names = [mix.choose(rng).name for _ in range(2000)]
    assert abs(names.count("clean") / 2000 - 0.25) < 0.04
    assert mix.name == "severe:3+clean:1"
    with pytest.raises(ValueError):
        DegradationMix((SEVERE,), (1.0, 2.0))
    with pytest.raises(ValueError):
        DegradationMix((SEVERE, CLEAN), (0.0, 0.0))


def test_video_upload_draws_one_blur_width_and_a_float_scale():
    for seed in range(20):
        d = sample_degradation("video_upload", seed, (128, 128))
        assert d.blur_sigma[0] == d.blur_sigma[1] and 0.3 <= d.blur_sigma[0] <= 1.2
        assert d.downsample == 1 and 1.5 <= d.scale <= 3.5
        assert 26 <= d.h264_crf <= 38 and 14 <= d.final_h264_crf <= 20
    # presets without the new steps keep them off
    d = sample_degradation("severe", 3, (128, 128))
    assert d.scale == 1.0 and d.final_h264_crf is None
    with pytest.raises(ValueError, match="downsample or by scale"):
        DegradationPreset(downsample=(1, 2), scale=(1.5, 2.0))


def test_video_upload_is_the_players_chain(face):
    """Area downscale, H.264, bicubic upscale, H.264 again: what the shared degrade_video.py does to a frame."""
    import cv2

    from streamrestore.data.degrade import Degradation, h264_roundtrip

    d = Degradation(size=face.shape[:2], scale=2.4, h264_crf=32, final_h264_crf=16)
    small = cv2.resize(face, (40, 40), interpolation=cv2.INTER_AREA)
    expected = h264_roundtrip(cv2.resize(h264_roundtrip(small, 32), (96, 96), interpolation=cv2.INTER_CUBIC), 16)
    assert np.array_equal(apply_degradation(face, d), expected)


def test_a_face_scale_brings_the_frames_damage_to_the_crop():
    """``video_upload_any_size`` draws its blur and shrink in frame pixels and scales both by one drawn
    face size, drawn after every other value: the same draws as without it, times that size."""
    from dataclasses import replace

    from streamrestore.data.degrade import VIDEO_UPLOAD_ANY_SIZE as preset

    draws = [sample_degradation(preset, seed, (128, 128)) for seed in range(200)]
    frame = [sample_degradation(replace(preset, face_scale=None), seed, (128, 128)) for seed in range(200)]
    for d, f in zip(draws, frame):
        assert d.blur_sigma[0] == d.blur_sigma[1] and d.downsample == 1
        face = d.scale / f.scale
        assert 0.15 - 1e-9 <= face <= 1.0 + 1e-9
        assert d.blur_sigma[0] == pytest.approx(f.blur_sigma[0] * face)
        assert 2.5 <= f.scale <= 5.5 and 0.6 <= f.blur_sigma[0] <= 1.8
        assert (d.h264_crf, d.final_h264_crf, d.noise_seed) == (f.h264_crf, f.final_h264_crf, f.noise_seed)
    assert min(d.scale for d in draws) < 1 < max(d.scale for d in draws)  # large faces: the crop coded enlarged
    with pytest.raises(ValueError, match="face_scale"):
        DegradationPreset(face_scale=(0.2, 0.5))  # the paper's preset: integer downsampling at 512 px
    with pytest.raises(ValueError, match="face_scale"):
        replace(preset, face_scale=(0.0, 0.5))


def test_a_face_larger_than_its_crop_is_coded_enlarged(face):
    """A shrink under 1 at the crop: bicubic enlargement, H.264 at that size, area shrink back, H.264 again
    (the frame's chain where the frame held the face at more pixels than the crop)."""
    import cv2

    from streamrestore.data.degrade import Degradation, h264_roundtrip

    d = Degradation(size=face.shape[:2], scale=0.5, h264_crf=32, final_h264_crf=16)
    large = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
    expected = h264_roundtrip(cv2.resize(h264_roundtrip(large, 32), (96, 96), interpolation=cv2.INTER_AREA), 16)
    assert np.array_equal(apply_degradation(face, d), expected)


def test_a_larger_face_gets_milder_damage_at_its_crop(face):
    from dataclasses import replace

    from streamrestore.data.degrade import VIDEO_UPLOAD_ANY_SIZE

    def err(face_scale):
        preset = replace(VIDEO_UPLOAD_ANY_SIZE, face_scale=(face_scale, face_scale))
        return np.mean([np.abs(degrade(face, preset, s).astype(float) - face).mean() for s in range(8)])

    assert err(0.15) < err(0.4) < err(1.0)
