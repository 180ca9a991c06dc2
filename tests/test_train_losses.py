import numpy as np
import pytest
import torch
from media_utils import read_rgb

from streamrestore.errors import ModelError
from streamrestore.faces.mobilefacenet import MobileFaceNet, ffhq_to_arcface_matrix, load_mobilefacenet
from streamrestore.train.losses import (
    IdentityLoss,
    arcface_crop_tensor,
    ffhq_landmarks,
    landmark_attention_loss,
    landmark_attention_targets,
    pixel_loss,
    ssim_loss,
)

IDS = ("00001", "00027", "00049", "00052")


def _tensor(images):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float() / 255.0


@pytest.fixture(scope="module")
def weights(shared_models):
    return shared_models / "recog" / "mobilefacenet_foamliu.pt"


@pytest.fixture(scope="module")
def faces(shared_data):
    """gt and first conditioning photo of a few demo identities, 256 px (FFHQ-aligned)."""
    root = shared_data / "instantrestore"
    gts = [read_rgb(root / i / "gt.png", 256) for i in IDS]
    refs = [read_rgb(sorted((root / i / "conditioning").glob("*.png"))[0], 256) for i in IDS]
    return gts, refs


@pytest.fixture(scope="module", params=["synthetic", "real"])
def any_faces(request):
    """(gts, refs) like ``faces``, for tests that need aligned faces, not particular people: drawn
    faces (always) or the shared demo photos."""
    if request.param == "real":
        return request.getfixturevalue("faces")
    from synthetic_faces import aligned_face

    people = ("ann", "ben", "cal", "ann")
    return ([aligned_face(p, 256, variant=0) for p in people], [aligned_face(p, 256, variant=1) for p in people])


# -- landmark attention loss ---------------------------------------------------------------


def _target_attention(query_landmarks, ref_landmarks, grid, shift=(0.0, 0.0)):
    """Softmax-like attention (rows sum to 1) whose landmark rows are the target Gaussians
    moved by ``shift`` tokens; other rows uniform."""
    b, n_land, _ = ref_landmarks.shape
    attn = torch.full((b, grid * grid, grid * grid), 1.0 / (grid * grid))
    moved = ref_landmarks + torch.tensor(shift) / grid
    g = landmark_attention_targets(moved, grid)
    g = g / g.sum(-1, keepdim=True)
    col = (query_landmarks[..., 0] * grid).floor().long()
    row = (query_landmarks[..., 1] * grid).floor().long()
    for bi in range(b):
        for li in range(n_land):
            attn[bi, row[bi, li] * grid + col[bi, li]] = g[bi, li]
    return attn


def test_landmark_attention_loss_is_zero_for_target_and_grows_with_distance():
    grid = 32
    q = ffhq_landmarks(2)
    r = q + torch.tensor([0.03, -0.02])  # reference landmarks sit elsewhere than the input's
    losses = [landmark_attention_loss(_target_attention(q, r, grid, (s, 0.0)), q, r, grid).item() for s in (0, 0.5, 1, 2, 4)]
    assert losses[0] < 1e-10
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    # heads are averaged: identical heads give the same loss
    attn = _target_attention(q, r, grid, (1.0, 1.0))
    four = attn[:, None].expand(2, 4, grid * grid, grid * grid)
    assert landmark_attention_loss(four, q, r, grid).item() == pytest.approx(landmark_attention_loss(attn, q, r, grid).item())


def test_landmark_attention_loss_sigma_and_mask_and_gradient():
    grid = 16
    t = landmark_attention_targets(torch.tensor([[[0.5, 0.5]]]), grid)
    assert t.shape == (1, 1, grid * grid)
    # the Gaussian's width is grid/32 tokens: half a token here
    assert t.max().item() == pytest.approx(np.exp(-(0.5**2 * 2) / (2 * 0.5**2)), rel=1e-5)
    q = ffhq_landmarks(1)
    r = q.clone()
    logits = torch.randn(1, grid * grid, grid * grid, requires_grad=True)
    loss = landmark_attention_loss(logits.softmax(-1), q, r, grid)
    loss.backward()
    assert loss.item() > 0 and logits.grad.abs().sum() > 0
    none_valid = landmark_attention_loss(logits.softmax(-1), q, r, grid, valid=torch.zeros(1, 5, dtype=torch.bool))
    assert none_valid.item() == 0.0
    with pytest.raises(ValueError, match="grid"):
        landmark_attention_loss(logits.softmax(-1), q, r, grid=8)


# -- MobileFaceNet and identity loss ---------------------------------------------------------


def test_mobilefacenet_loads_and_matches_onnx(weights, shared_models, faces):
    import cv2
    import onnxruntime as ort

    net = load_mobilefacenet(weights)
    assert sum(p.numel() for p in net.parameters()) < 1.1e6
    session = ort.InferenceSession(str(shared_models / "recog" / "mobilefacenet_128d.onnx"), providers=["CPUExecutionProvider"])
    gts, _ = faces
    for img in gts[:3]:
        crop = cv2.warpAffine(img, ffhq_to_arcface_matrix(img.shape[0]), (112, 112))
        x = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        ref = session.run(None, {session.get_inputs()[0].name: x})[0][0]
        with torch.no_grad():
            out = net(torch.from_numpy(x))[0].numpy()
        cos = float(ref @ out / np.linalg.norm(ref) / np.linalg.norm(out))
        assert cos > 0.999


def test_mobilefacenet_rejects_wrong_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_mobilefacenet(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="foamliu"):
        load_mobilefacenet(bad)
    with pytest.raises(ValueError, match="112"):
        MobileFaceNet()(torch.zeros(1, 3, 64, 64))


def test_identity_loss_prefers_the_same_person(weights, faces):
    loss = IdentityLoss(weights)
    gts, refs = faces
    gt, ref = _tensor(gts), _tensor(refs)
    same = [loss(ref[i : i + 1], gt[i : i + 1]).item() for i in range(len(IDS))]
    other = [loss(ref[(i + 1) % len(IDS)][None], gt[i : i + 1]).item() for i in range(len(IDS))]
    assert loss(gt, gt).item() < 1e-5
    assert max(same) < min(other), (same, other)
    assert np.mean(same) + 0.3 < np.mean(other)


def test_identity_loss_is_differentiable_and_stays_frozen(weights, faces):
    loss = IdentityLoss(weights)
    loss.train()
    assert not loss.net.training  # BatchNorm must keep running statistics
    gts, _ = faces
    gt = _tensor(gts[:2])
    x = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_(True)
    value = loss(x, gt)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.net.parameters())
    # one gradient step on the input lowers the loss
    with torch.no_grad():
        stepped = x - 0.003 * x.grad.sign()
    assert loss(stepped, gt).item() < value.item()


def test_differentiable_crop_matches_the_judges_crop(any_faces):
    from streamrestore.eval.judges import arcface_crop

    gts, _ = any_faces
    torch_crop = arcface_crop_tensor(_tensor(gts[:1]))[0].permute(1, 2, 0).numpy() * 255
    cv_crop = arcface_crop(gts[0]).astype(np.float32)
    assert torch_crop.shape == (112, 112, 3)
    assert np.abs(torch_crop - cv_crop)[8:-8, 8:-8].mean() < 4.0


def test_pixel_and_ssim_losses(any_faces):
    gts, _ = any_faces
    gt = _tensor(gts[:2])
    noisy = (gt + 0.05 * torch.randn_like(gt)).clamp(0, 1)
    noisier = (gt + 0.2 * torch.randn_like(gt)).clamp(0, 1)
    for kind in ("l1", "l2"):
        assert pixel_loss(gt, gt, kind).item() == 0.0
        assert pixel_loss(noisy, gt, kind) < pixel_loss(noisier, gt, kind)
    for ms in (False, True):
        assert ssim_loss(gt, gt, multiscale=ms).item() < 1e-5
        assert 0 < ssim_loss(noisy, gt, multiscale=ms) < ssim_loss(noisier, gt, multiscale=ms)
    small = torch.nn.functional.interpolate(gt, size=(128, 128), mode="area")
    assert ssim_loss(small, small, multiscale=True).item() < 1e-5  # 128 px works with a smaller window
    with pytest.raises(ValueError, match="l1"):
        pixel_loss(gt, gt, "huber")


def test_kl_landmark_loss_needs_the_mass_on_the_landmark():
    grid = 16
    q = ffhq_landmarks(2)
    r = q + torch.tensor([0.02, 0.03])
    exact = _target_attention(q, r, grid)
    losses = [landmark_attention_loss(_target_attention(q, r, grid, (s, 0.0)), q, r, grid, kind="kl").item()
              for s in (0, 1, 2, 4)]
    assert losses[0] < 1e-6
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    # a flat row with a faint bump on the landmark: min-max MSE calls it perfect, KL does not
    faint = torch.full_like(exact, 1.0 / grid**2) + 1e-4 * exact
    faint = faint / faint.sum(-1, keepdim=True)
    assert landmark_attention_loss(faint, q, r, grid).item() < 1e-3
    assert landmark_attention_loss(faint, q, r, grid, kind="kl").item() > 1.0
    with pytest.raises(ValueError, match="kind"):
        landmark_attention_loss(exact, q, r, grid, kind="mse")
