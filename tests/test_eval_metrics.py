import numpy as np
import pytest
from media_utils import read_rgb

from streamrestore.data.degrade import degrade
from streamrestore.errors import ModelError
from streamrestore.eval.judges import (
    DlibCropEmbedder,
    LandmarkDetector,
    OnnxEmbedder,
    arcface_crop,
    cosine_similarity,
    identity_similarity,
    load_judges,
    load_landmark_detector,
)
from streamrestore.eval.metrics import PSNR_CAP_DB, landmark_distance, lmd, psnr, ssim

IDS = ("00001", "00027", "00049", "00052", "00062")


@pytest.fixture(scope="module")
def demo(shared_data):
    root = shared_data / "instantrestore"
    gts = [read_rgb(root / i / "gt.png", 256) for i in IDS]
    refs = [read_rgb(sorted((root / i / "conditioning").glob("*.png"))[0], 256) for i in IDS]
    return gts, refs


@pytest.fixture(scope="module", params=["synthetic", "real"])
def any_demo(request):
    """(gts, refs) like ``demo``, for tests that need aligned faces, not particular people: drawn
    faces (always) or the shared demo photos."""
    if request.param == "real":
        return request.getfixturevalue("demo")
    from synthetic_faces import aligned_face

    people = ("ann", "ben", "cal", "ann", "ben")
    return ([aligned_face(p, 256, variant=0) for p in people], [aligned_face(p, 256, variant=1) for p in people])


def test_psnr_and_ssim_sanity(any_demo):
    demo = any_demo
    gt = demo[0][0]
    assert psnr(gt, gt) == PSNR_CAP_DB
    assert ssim(gt, gt) == pytest.approx(1.0)
    mild, severe = degrade(gt, "mild", 1), degrade(gt, "severe", 1)
    assert psnr(gt, severe) < psnr(gt, mild) < PSNR_CAP_DB
    assert ssim(gt, severe) < ssim(gt, mild) < 1.0
    # uint8 and float [0, 1] inputs are the same measurement
    assert psnr(gt / 255.0, mild / 255.0) == pytest.approx(psnr(gt, mild))
    assert ssim(gt / 255.0, mild / 255.0) == pytest.approx(ssim(gt, mild))
    # a known error: every pixel off by 5 levels -> 20 log10(255 / 5)
    flat = np.full((32, 32, 3), 100, np.uint8)
    assert psnr(flat, flat + 5) == pytest.approx(20 * np.log10(255 / 5))
    with pytest.raises(ValueError, match="shape"):
        psnr(gt, gt[:-1])


def test_ssim_agrees_with_pytorch_msssim(any_demo):
    demo = any_demo
    import torch
    from pytorch_msssim import ssim as torch_ssim

    gt = demo[0][0]
    bad = degrade(gt, "moderate", 3)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double()  # noqa: E731
    assert ssim(gt, bad) == pytest.approx(torch_ssim(t(gt), t(bad), data_range=255).item(), abs=1e-4)


@pytest.fixture(scope="module")
def judges(shared_models):
    return load_judges(shared_models)


def _same_vs_other(embedder, gts, refs):
    g, r = embedder.embed(gts), embedder.embed(refs)
    sims = cosine_similarity(g[:, None], r[None])
    same = np.diag(sims)
    other = sims[~np.eye(len(gts), dtype=bool)]
    return same, other


@pytest.mark.parametrize("name", ["paddle", "mobilefacenet", "dlib"])
def test_judges_rank_same_person_above_others(judges, demo, name):
    gts, refs = demo
    same, other = _same_vs_other(judges[name], gts, refs)
    assert same.mean() > other.mean() + (0.3 if name != "dlib" else 0.05)
    # every identity is closer to its own photo than to the average stranger
    assert np.all(same > other.mean())


def test_identity_similarity_drops_with_degradation(judges, demo):
    gts, _ = demo
    assert judges["paddle"].channel_order == "bgr" and judges["mobilefacenet"].channel_order == "rgb"
    mild = [degrade(g, "mild", i) for i, g in enumerate(gts)]
    severe = [degrade(g, "severe", i) for i, g in enumerate(gts)]
    judge = judges["paddle"]
    assert np.allclose(identity_similarity(judge, gts, gts), 1.0, atol=1e-5)
    assert identity_similarity(judge, severe, gts).mean() < identity_similarity(judge, mild, gts).mean()


def test_dlib_distance_threshold(judges, demo):
    gts, refs = demo
    d = judges["dlib"]
    g, r = d.embed(gts[:2]), d.embed(refs[:2])
    assert np.all(DlibCropEmbedder.distance(g, r) < 0.6)  # dlib's own "same person" rule
    assert DlibCropEmbedder.distance(g[0], r[1]) > DlibCropEmbedder.distance(g[0], r[0])


def test_landmark_distance_measures_a_known_shift(shared_models, demo):
    import cv2

    det = load_landmark_detector(shared_models)
    gt = demo[0][0]  # 256 px: landmarks are reported in pixels of a 512 crop
    assert lmd(det, gt, gt) == pytest.approx(0.0, abs=1e-6)
    shifted = cv2.warpAffine(gt, np.float32([[1, 0, 6], [0, 1, 0]]), (256, 256), borderMode=cv2.BORDER_REPLICATE)
    assert lmd(det, shifted, gt) == pytest.approx(12.0, abs=3.0)  # 6 px at 256 = 12 px at 512
    assert np.isnan(landmark_distance(np.full((5, 2), np.nan), np.zeros((5, 2))))
    flat = np.full((256, 256, 3), 128, np.uint8)
    assert np.isnan(det.landmarks(flat)).all()


def test_missing_models_say_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="--models"):
        load_judges(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="--models"):
        OnnxEmbedder(tmp_path / "x.onnx")
    with pytest.raises(ModelError):
        LandmarkDetector(tmp_path / "det.onnx")
    with pytest.raises(ValueError, match="channel_order"):
        OnnxEmbedder(tmp_path / "x.onnx", channel_order="yuv")


def test_arcface_crop_shape_and_input_checks(any_demo):
    demo = any_demo
    crop = arcface_crop(demo[0][0])
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    with pytest.raises(ValueError, match="square"):
        arcface_crop(np.zeros((10, 12, 3), np.uint8))
