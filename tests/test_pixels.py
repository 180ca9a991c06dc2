"""Frame pixels in RGB and 4:2:0: conversions agree with swscale's, changes land only where made,
and the frame loop gives the same faces whether it works on RGB or on YUV planes."""
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import synthetic_faces as sf

from streamrestore.blend import PasteBack, PastePlan, yuv420_weights
from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.pixels import RgbPixels, Yuv420Pixels, pixels_of, yuv_matrices
from streamrestore.quality import QualityGateConfig
from streamrestore.temporal import TemporalConfig
from streamrestore.video.reader import frame_to_rgb


def _planes(frame):
    w, h = frame.width, frame.height
    sizes = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, (w + 1) // 2)]
    return [
        np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:rows, :cols].copy()
        for p, (rows, cols) in zip(frame.planes, sizes)
    ]


def _video_frames(path, count, step=1):
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f)
            if len(out) == count:
                break
    return out


def _random_yuv_frame(width, height, seed, colorspace=1, color_range=1):
    rng = np.random.default_rng(seed)
    # smooth content, as video has: noise blurred, so chroma upsampling differences stay small
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=colorspace, dst_color_range=color_range)
    frame.colorspace, frame.color_range = colorspace, color_range
    frame.pts, frame.time_base = 7, Fraction(1, 25)
    return frame


@pytest.mark.parametrize("space,rng", [(1, 1), (5, 1), (1, 2), (9, 1), (2, 0)])
def test_matrices_are_inverse_and_map_black_and_white(space, rng):
    to_rgb, from_rgb = yuv_matrices(space, rng)
    full = np.vstack([from_rgb, [0, 0, 0, 1]]) @ np.vstack([to_rgb, [0, 0, 0, 1]])
    assert np.allclose(full, np.eye(4), atol=1e-5)
    low, high = (16, 235) if rng != 2 else (0, 255)
    assert np.allclose(from_rgb @ [0, 0, 0, 1], [low, 128, 128], atol=1e-4)
    assert np.allclose(from_rgb @ [255, 255, 255, 1], [high, 128, 128], atol=1e-3)


def _clip_path(request, clip):
    """A shared clip, or ``"drawn WxH"`` / ``"drawn WxH SIZE"``: the drawn-face clip of that
    size (and eye distance, see the ``soft_face_clips`` fixture)."""
    if clip.startswith("drawn "):
        _, dims, *size = clip.split()
        width, height = map(int, dims.split("x"))
        return request.getfixturevalue("soft_face_clips")(width, height, *map(float, size))
    return request.getfixturevalue("shared_data") / clip


@pytest.mark.parametrize("clip", ["drawn 640x360", "liveportrait/source/s32.mp4",
                                  "face_recognition/short_hamilton_clip.mp4"])
def test_yuv_region_matches_swscale_and_any_box(request, clip):
    frame = _video_frames(_clip_path(request, clip), 1)[0]
    pixels = Yuv420Pixels(frame)
    ours = pixels.full().astype(int)
    swscale = frame_to_rgb(frame).astype(int)
    diff = np.abs(ours - swscale)
    # Same matrix and range; only chroma upsampling at colour edges differs slightly.
    assert diff.mean() < 0.3 and np.percentile(diff, 99) <= 4, (diff.mean(), np.percentile(diff, 99))
    for x0, y0, x1, y1 in [(0, 0, 17, 9), (101, 55, 402, 333), (frame.width - 31, frame.height - 13, frame.width, frame.height)]:
        assert np.array_equal(pixels.region(x0, y0, x1, y1), ours[y0:y1, x0:x1])
    small = pixels.resized(frame.width // 4, frame.height // 4).astype(int)
    expected = cv2.resize(swscale.astype(np.uint8), (frame.width // 4, frame.height // 4), interpolation=cv2.INTER_AREA)
    assert np.abs(small - expected).mean() < 2.0
    assert np.array_equal(pixels.gray(frame.width, frame.height), _planes(frame)[0])


@pytest.mark.parametrize("size", [(64, 48), (33, 21)])
@pytest.mark.parametrize("additive", [True, False], ids=["change", "blend"])
def test_paste_touches_only_its_box(size, additive):
    width, height = size
    frame = _random_yuv_frame(width, height, seed=width)
    before = _planes(frame)
    rgb_before = Yuv420Pixels(frame).full().astype(int)
    canvas = Yuv420Pixels(frame).output()
    assert canvas.frame.pts == frame.pts and canvas.frame.time_base == frame.time_base
    assert int(canvas.frame.colorspace) == 1 and int(canvas.frame.color_range) == 1
    # A 10x10 crop pasted 1:1 touching the right and bottom edges (at odd and even offsets); its
    # weight is 1 on a 6x6 square, 0 elsewhere.
    r = 10
    x0, y0 = width - 9, height - 9
    weight = np.zeros((r, r), np.float32)
    weight[2:8, 2:8] = 1.0
    target = np.array([20.0, -10.0, 5.0], np.float32)
    if additive:
        content = np.broadcast_to(target, (r, r, 3)).astype(np.float32)
    else:
        content = np.full((r, r, 3), (200, 40, 90), np.uint8)
    to_frame = np.array([[1.0, 0, x0], [0, 1.0, y0]])
    plan = PastePlan((x0, y0, width, height), to_frame, weight, content, additive=additive)
    canvas.paste(plan)
    after = _planes(canvas.frame)
    assert np.array_equal(_planes(frame)[0], before[0]), "the source frame must not change"
    changed = np.argwhere(after[0] != before[0])
    # bilinear weights reach one pixel beyond the square
    assert len(changed) and changed.min(0).tolist() >= [y0 + 1, x0 + 1] and changed.max(0).tolist() <= [y0 + 8, x0 + 8]
    for k in (1, 2):
        changed = np.argwhere(after[k] != before[k])
        assert len(changed)
        assert changed.min(0).tolist() >= [(y0 + 1) // 2, (x0 + 1) // 2]
        assert changed.max(0).tolist() <= [(y0 + 8) // 2, (x0 + 8) // 2]
    # Inside the square the RGB picture shows what was pasted (within rounding and 4:2:0).
    rgb_after = Yuv420Pixels(canvas.frame).full().astype(int)
    got = rgb_after[y0 + 4 : y0 + 6, x0 + 4 : x0 + 6].reshape(-1, 3)
    if additive:
        got = got - rgb_before[y0 + 4 : y0 + 6, x0 + 4 : x0 + 6].reshape(-1, 3)
        expected = target
    else:
        expected = np.array([200, 40, 90])
    assert np.abs(got.mean(0) - expected).max() < 4, (got.mean(0), expected)


def test_pixels_of_picks_the_representation():
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 2] = 200
    assert isinstance(pixels_of(rgb), RgbPixels)
    assert pixels_of(rgb, "bgr").full()[0, 0, 0] == 200
    yuv = _random_yuv_frame(16, 8, seed=1)
    assert isinstance(pixels_of(yuv), Yuv420Pixels)
    other = yuv.reformat(format="yuv444p")
    assert isinstance(pixels_of(other), RgbPixels)
    with pytest.raises(TypeError):
        pixels_of("not a frame")


@pytest.fixture(scope="module")
def scrfd(shared_models):
    from streamrestore.faces.detect import create_detector

    return create_detector("scrfd", models_dir=shared_models / "insightface")


class _Stripes(IdentityRestorer):
    """Adds coloured stripes: a change colour matching cannot take back."""

    def restore(self, faces, caches, noise_seeds=None):
        import torch

        x = torch.arange(faces.shape[-1], dtype=faces.dtype)
        stripes = 0.15 * torch.sin(x / 3.0)
        return (faces + stripes * torch.tensor([1.0, -0.5, 0.3])[:, None, None]).clamp(0, 1)


def _yuv_weights(shape, faces, resolution):
    """Union of the luma and chroma weights the 4:2:0 paste used for ``faces``."""
    paste = PasteBack(resolution)
    h, w = shape
    luma = np.zeros((h, w), np.float32)
    chroma = np.zeros(((h + 1) // 2, (w + 1) // 2), np.float32)
    crop = np.zeros((resolution, resolution, 3), np.uint8)
    scales = []
    for f in faces:
        plan = paste.plan(shape, crop, crop, f.matrix)
        scales.append(plan.scale)
        (x0, y0), wl, (cx0, cy0), wc = yuv420_weights(plan, shape)
        region = luma[y0 : y0 + wl.shape[0], x0 : x0 + wl.shape[1]]
        np.maximum(region, wl, out=region)
        region = chroma[cy0 : cy0 + wc.shape[0], cx0 : cx0 + wc.shape[1]]
        np.maximum(region, wc, out=region)
    return luma, chroma, scales


# Faces in d19 are ~1.7x a 256 px crop (change pasted at full resolution) and ~0.85x a 512 px
# one (crop blended over the frame); in s18 ~3.4x a 128 px crop (paste on the chroma grid). The
# drawn faces at 480x480 (eye distance 110 px +-10 %): 1.6-1.9x a 256 px crop, 0.8-0.95x a 512 px
# one, 3.1-3.8x a 128 px one.
PASTE_CASES = [
    ("liveportrait/driving/d19.mp4", 256, (1.05, 2.5)),
    ("liveportrait/driving/d19.mp4", 512, (0.0, 1.05)),
    ("liveportrait/source/s18.mp4", 128, (2.5, 10.0)),
]
DRAWN_PASTE_CASES = [
    ("drawn 480x480", 256, (1.05, 2.5)),
    ("drawn 480x480", 512, (0.0, 1.05)),
    ("drawn 480x480", 128, (2.5, 10.0)),
]


@pytest.mark.parametrize("clip,resolution,scales_in", DRAWN_PASTE_CASES + PASTE_CASES,
                         ids=["drawn-change", "drawn-blend", "drawn-change-half-res",
                              "change", "blend", "change-half-res"])
@pytest.mark.parametrize("kind", [IdentityRestorer, _Stripes], ids=["identity", "stripes"])
def test_yuv_frames_restore_like_rgb_frames(request, kind, clip, resolution, scales_in):
    restorer = kind(resolution)
    frames = _video_frames(_clip_path(request, clip), 3, step=25)
    assert len(frames) == 3
    scrfd = sf.SyntheticFaceDetector() if clip.startswith("drawn ") else request.getfixturevalue("scrfd")
    # the restorer's own crop side: these cases are about the paste at each ratio of face to crop
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                            crop_resolution=None)
    on_yuv = FaceRestorer(restorer, scrfd, config=config)
    on_rgb = FaceRestorer(restorer, scrfd, config=config)
    worst = 0
    for frame in frames:
        assert frame.format.name == "yuv420p"
        out = on_yuv.process(frame)
        assert isinstance(out, av.VideoFrame) and out.format.name == "yuv420p"
        assert out.pts == frame.pts and out.time_base == frame.time_base
        assert on_yuv.last_faces
        luma, chroma, scales = _yuv_weights((frame.height, frame.width), on_yuv.last_faces, resolution)
        assert all(scales_in[0] < x < scales_in[1] for x in scales), scales
        before, after = _planes(frame), _planes(out)
        outside = luma == 0
        assert outside.mean() > 0.05
        assert np.array_equal(after[0][outside], before[0][outside])  # bit-exact outside the weights
        for k in (1, 2):
            assert np.array_equal(after[k][chroma == 0], before[k][chroma == 0])
        # Inside: the same picture as restoring the frame's RGB (the YUV path converts the face
        # region itself, pastes chroma per 2x2 block and, for large faces, upsamples luma).
        rgb_in = Yuv420Pixels(frame).full()
        reference = on_rgb.process(rgb_in.copy())
        inside = luma > 0.05
        if kind is _Stripes:  # the comparison below must be about a real change
            assert np.abs(reference[inside].astype(int) - rgb_in[inside]).mean() > 3
        err = np.abs(Yuv420Pixels(out).full()[inside].astype(int) - reference[inside].astype(int))
        assert err.mean() < 1.2 and np.percentile(err, 99) <= 4, (err.mean(), np.percentile(err, 99))
        worst = max(worst, int(err.max()))
    # Measured: identity 0 (blend path: mean 0.17, max 5, from 4:2:0 chroma); stripes mean
    # 0.64-0.95, 99th percentile 2-3, max 4-10 (fine coloured stripes lose chroma detail in 4:2:0).
    assert worst <= 12, worst


@pytest.mark.parametrize("clip", ["drawn 1280x720", "liveportrait/source/s18.mp4"])
@pytest.mark.parametrize("scale,resolution", [(0.295, 128), (0.6, 256), (1.2, 512)])
@pytest.mark.parametrize("where", ["centre", "corner"])
def test_face_crops_from_yuv_match_rgb(request, clip, scale, resolution, where):
    from streamrestore.faces.align import crop_face

    frame = _video_frames(_clip_path(request, clip), 1)[0]
    yuv = Yuv420Pixels(frame)
    rgb = RgbPixels(yuv.full())
    angle = 0.2
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 0], [scale * np.sin(angle), scale * np.cos(angle), 0]])
    centre = np.array([frame.width / 2, frame.height / 2]) if where == "centre" else np.array([20.0, 15.0])
    m[:, 2] = resolution / 2 - m[:, :2] @ centre
    a = crop_face(yuv, m, resolution, border_value=0).astype(int)
    b = crop_face(rgb, m, resolution, border_value=0).astype(int)
    diff = np.abs(a - b)
    # measured: mean 0.2-0.4, 99th percentile 2, max 4-7 (4:2:0 chroma interpolated differently)
    assert diff.mean() < 0.6 and np.percentile(diff, 99) <= 3 and diff.max() <= 10, (diff.mean(), diff.max())
    if where == "corner":  # outside the frame both give the border colour
        assert (a[:5, :5] == 0).all() and (b[:5, :5] == 0).all()


# (drawn faces at 128: the paste's weights fade to exactly 0 a few pixels before a frame edge
# that cuts the crop, so the last row and column are never reached; two_people.jpg's face reaches
# the last row with a weight of 5e-4)
@pytest.mark.parametrize("media,resolution", [("synthetic", 512), ("real", 128), ("real", 512)])
def test_odd_sized_frames_with_faces_cut_by_the_border(request, media, resolution):
    """4:2:0 frames of odd width and height, the face's crop cut by the right and bottom edges
    (two drawn people, or two_people.jpg)."""
    if media == "synthetic":
        image, scrfd = sf.two_people(640, 360)[0], sf.SyntheticFaceDetector()
        margin = -10  # its box is SCRFD's on FFHQ faces, wider than the drawing: cut inside it
    else:
        margin = 6
        shared_data, scrfd = request.getfixturevalue("shared_data"), request.getfixturevalue("scrfd")
        image = cv2.cvtColor(cv2.imread(str(shared_data / "face_recognition/two_people.jpg")), cv2.COLOR_BGR2RGB)
    faces = scrfd.detect(image)
    x1, y1, x2, y2 = faces[0].box.astype(int)
    # just past the face box, at odd coordinates: the crop (about twice the box) leaves the frame
    right, bottom = (x2 + margin) | 1, (y2 + margin) | 1
    rgb = np.ascontiguousarray(image[: bottom, : right])
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 25)
    assert frame.width % 2 and frame.height % 2
    fr = FaceRestorer(_Stripes(resolution), scrfd, config=PipelineConfig(lookahead=0, min_face=8, crop_resolution=None,
                                                                           gate=QualityGateConfig(enabled=False)))
    out = fr.process(frame)
    assert (out.width, out.height, out.format.name) == (frame.width, frame.height, "yuv420p")
    assert fr.last_faces, "the face at the border should be restored"
    luma, chroma, _ = _yuv_weights((frame.height, frame.width), fr.last_faces, resolution)
    before, after = _planes(frame), _planes(out)
    assert np.array_equal(after[0][luma == 0], before[0][luma == 0])
    for k in (1, 2):
        assert np.array_equal(after[k][chroma == 0], before[k][chroma == 0])
    assert not np.array_equal(after[0], before[0])  # the stripes were pasted
    # the last row and column (odd edge, half a chroma block) are reached without error
    assert (luma[-1].max() > 0) or (luma[:, -1].max() > 0)


@pytest.mark.parametrize("pix_fmt, bits", [("yuv420p10le", 10), ("yuv420p12le", 12)])
def test_a_deep_frame_is_served_through_its_8_bit_copy_and_given_back_at_its_depth(pix_fmt, bits):
    from streamrestore.pixels import plane_view

    rng = np.random.default_rng(bits)
    width, height = 34, 22
    sizes = [(height, width), (height // 2, width // 2), (height // 2, width // 2)]
    samples = [rng.integers(0, 1 << bits, size).astype(np.uint16) for size in sizes]
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, samples):
        plane_view(plane, *data.shape, np.uint16)[...] = data
    frame.pts, frame.time_base, frame.colorspace, frame.color_range = 9, Fraction(1, 30), 9, 1
    pixels = pixels_of(frame)
    assert isinstance(pixels, Yuv420Pixels) and pixels.deep is frame and pixels.frame.format.name == "yuv420p"
    shift = bits - 8
    eight = [p.astype(int) for p in _planes(pixels.frame)]
    for data, copy in zip(samples, eight):
        assert np.array_equal(copy, np.minimum((data.astype(int) + (1 << (shift - 1))) >> shift, 255))
    assert pixels.deepen(pixels.frame) is frame and pixels.deepen(frame) is frame  # nothing changed: the frame itself
    canvas = pixels.output()
    y = plane_view(canvas.frame.planes[0], height, width)
    y[3, 5] = min(int(y[3, 5]) + 10, 255)  # one luma sample raised by up to 10 levels, another set to white
    y[4, 6] = 255
    out = pixels.deepen(canvas.frame)
    assert out.format.name == pix_fmt and out.pts == 9 and int(out.colorspace) == 9
    got = [plane_view(plane, *size, np.uint16).astype(int) for plane, size in zip(out.planes, sizes)]
    want = [data.astype(int) for data in samples]
    want[0][3, 5] += (int(y[3, 5]) - eight[0][3, 5]) << shift
    want[0][4, 6] += (255 - eight[0][4, 6]) << shift
    for g, w in zip(got, want):
        assert np.array_equal(g, np.clip(w, 0, (1 << bits) - 1))


def test_a_new_frame_takes_planes_of_any_integer_type():
    """``yuv420_frame`` casts the planes it is given to the format's samples (numpy maths gives int64)."""
    from streamrestore.pixels import yuv420_frame

    frame = _random_yuv_frame(34, 22, seed=5)
    planes = Yuv420Pixels(frame).planes
    made, _ = yuv420_frame(frame, [p.astype(np.int64) for p in planes])
    assert all(np.array_equal(a, b) for a, b in zip(_planes(made), _planes(frame)))
