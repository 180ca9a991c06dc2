import cv2
import numpy as np
import pytest

from streamrestore.blend import PasteBack, PasteConfig, feather_mask


def _similarity(scale, angle, center_frame, resolution):
    """frame -> crop affine putting ``center_frame`` at the crop centre."""
    a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    t = np.array([resolution / 2, resolution / 2]) - a @ np.asarray(center_frame, float)
    return np.hstack([a, t[:, None]])


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 0)


def test_feather_mask_is_one_inside_zero_at_border():
    m = feather_mask(128, 0.1)
    assert m.shape == (128, 128)
    assert m[64, 64] == pytest.approx(1.0)
    assert m[0, 64] < 0.01 and m[64, 0] < 0.01
    assert np.all(np.diff(m[64, :64]) >= 0)  # monotone ramp, no ring


@pytest.mark.parametrize("resolution,corner", [(128, (15, 340)), (512, (15, 340)), (512, (625, 10))])
def test_crop_mask_fades_where_the_crop_saw_outside_the_frame(resolution, corner):
    """A crop partly outside the frame: its weight is the feathered mask times how much of each
    crop pixel's bilinear footprint lies in the frame (OpenCV warping an all-ones frame with a
    zero border), eroded and faded; the crop wholly inside gets the plain mask."""
    r, shape = resolution, (360, 640)
    paste = PasteBack(r)
    inside = paste.crop_mask(shape, _similarity(r / 150, 0.1, (320, 180), r))
    assert inside is paste._mask
    m = _similarity(r / 150, 0.25, corner, r)  # at a corner: the crop hangs out on two sides
    weight = paste.crop_mask(shape, m)
    seen = cv2.warpAffine(np.ones(shape, np.float32), m, (r, r), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    k = int(paste.config.feather * r) | 1
    eroded = cv2.erode(seen, np.ones((3, 3), np.uint8), iterations=2)
    expected = paste._mask * cv2.GaussianBlur(eroded, (k, k), 0) * eroded
    assert weight.dtype == np.float32 and weight.shape == (r, r)
    assert (seen == 0).mean() > 0.2 and np.all(weight[seen == 0] == 0)
    # OpenCV's bilinear weights come in steps of 1/32; ours are exact
    assert np.abs(weight - expected).max() < 0.04


@pytest.mark.parametrize("center,angle", [((320, 180), 0.2), ((20, 30), -0.3), ((630, 350), 0.0)])
def test_identity_paste_round_trip(frame, center, angle):
    r = 256
    m = _similarity(r / 150, angle, center, r)
    crop = cv2.warpAffine(frame, m, (r, r), flags=cv2.INTER_LINEAR)
    paste = PasteBack(r)
    out = frame.copy()
    paste.paste(out, crop, crop, m)
    weight = cv2.warpAffine(paste.crop_mask(frame.shape[:2], m), cv2.invertAffineTransform(m), (640, 360))
    outside = weight == 0
    assert outside.any()
    assert np.array_equal(out[outside], frame[outside])
    err = np.abs(out.astype(int) - frame.astype(int))
    assert err.max() <= 4, err.max()


def test_paste_replaces_face_and_feathers(frame):
    r = 128
    m = _similarity(r / 120, 0.0, (320, 180), r)
    restored = np.full((r, r, 3), 200, np.uint8)
    crop = cv2.warpAffine(frame, m, (r, r), flags=cv2.INTER_CUBIC)  # what the model was given
    out = frame.copy()
    PasteBack(r, PasteConfig(color_match=False)).paste(out, restored, crop, m)
    assert np.all(np.abs(out[180, 320].astype(int) - 200) <= 1)  # centre replaced
    row = out[180, 250:330, 0].astype(int)
    assert np.abs(np.diff(row)).max() < 40  # no hard edge between frame and crop
    assert np.array_equal(out[:50], frame[:50])


def test_crop_outside_frame_is_ignored(frame):
    r = 64
    m = _similarity(1.0, 0.0, (-500, -500), r)
    out = frame.copy()
    PasteBack(r).paste(out, np.zeros((r, r, 3), np.uint8), np.zeros((r, r, 3), np.uint8), m)
    assert np.array_equal(out, frame)


def test_color_match_moves_mean_to_original():
    r = 64
    rng = np.random.default_rng(1)
    original = rng.integers(90, 110, (r, r, 3)).astype(np.uint8)
    restored = (original.astype(int) + 40).clip(0, 255).astype(np.uint8)
    pb = PasteBack(r)
    matched = pb.match_color(restored, original, np.ones((r, r), np.float32))
    assert np.abs(matched.mean((0, 1)) - original.mean((0, 1))).max() < 0.5


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="feather"):
        PasteConfig(feather=0.0)
    with pytest.raises(ValueError, match="max_std_ratio"):
        PasteConfig(max_std_ratio=0.5)


def test_detail_transfer_keeps_detail_a_small_crop_cannot_hold(frame):
    """A face 3x larger in the frame than the crop: a model that brightens its 64 px crop by 20
    levels must come back as the frame's face, 20 levels brighter, with the frame's own fine
    detail (which no 64 px crop holds) rather than an upscaled, softened copy."""
    r = 64
    m = _similarity(r / 200, 0.1, (320, 180), r)
    crop = cv2.warpAffine(frame, m, (r, r), flags=cv2.INTER_CUBIC)
    restored = (crop.astype(int) + 20).clip(0, 255).astype(np.uint8)
    region = (slice(150, 210), slice(290, 350))  # well inside the face, full mask weight
    spread = {}
    for transfer in (True, False):
        out = frame.copy()
        PasteBack(r, PasteConfig(color_match=False, detail_transfer=transfer)).paste(out, restored, crop, m)
        change = out[region].astype(int) - frame[region].astype(int)
        assert abs(change.mean() - 20) < 3  # the model's change arrives either way
        spread[transfer] = change.std()
    assert spread[True] < 2.0 < spread[False], spread  # only with transfer is the rest the frame's own


def test_a_face_smaller_than_the_crop_comes_back_exactly_where_nothing_changed(frame):
    """A 100 px face through a 256 px crop (``--crop-resolution``, or a small face in a wide shot):
    with the change pasted, the frame keeps its own pixels where the model changed nothing, and
    the model's change still arrives where it did; pasted whole, the face was resampled twice."""
    r = 256
    m = _similarity(r / 100, 0.1, (320, 180), r)
    crop = cv2.warpAffine(frame, m, (r, r), flags=cv2.INTER_CUBIC)
    region = (slice(160, 200), slice(300, 340))  # inside the face, full mask weight
    for transfer, exact in ((True, True), (False, False)):
        out = frame.copy()
        PasteBack(r, PasteConfig(color_match=False, detail_transfer=transfer)).paste(out, crop.copy(), crop, m)
        assert np.array_equal(out, frame) is exact
    restored = (crop.astype(int) + 20).clip(0, 255).astype(np.uint8)
    out = frame.copy()
    PasteBack(r, PasteConfig(color_match=False)).paste(out, restored, crop, m)
    assert abs((out[region].astype(int) - frame[region].astype(int)).mean() - 20) < 1
