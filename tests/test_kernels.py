"""kernels/: Triton crop warp and paste-back against their PyTorch references.

The Triton kernels run on CPU under ``TRITON_INTERPRET=1`` (skipped without the ``triton``
package). Tolerances:

- crop warp: float32 output in [0, 1]; kernel vs reference within 1e-4 (0.03 of a grey level:
  only float summation order and coordinate rounding differ).
- paste-back: uint8 frames; kernel vs reference differ by at most 1 level, on at most 0.5 % of
  the pixels (the float blend can land on the other side of a .5 rounding boundary).
- references vs the CPU pipeline's OpenCV functions (same conventions, different arithmetic:
  OpenCV quantises coordinates to 1/32 px and rounds to uint8): stated per test.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrestore.blend import PasteBack, PasteConfig, feather_mask
from streamrestore.faces.align import alignment_matrix, template, warp_to_template
from streamrestore.kernels import (
    color_transform,
    crop_warp_reference,
    paste_back_reference,
    paste_weights,
    triton_available,
)

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

H, W, R = 48, 64, 32


REPO = Path(__file__).resolve().parents[1]


def _kernel_outputs(path: str) -> None:
    """Run every Triton case and save the outputs (called in a subprocess, see ``interpreted``)."""
    from streamrestore.kernels import crop_warp_triton, paste_back_triton

    out = {}
    mats, index = _all_faces()
    for mode in ("bilinear", "bicubic"):
        for as_float in (False, True):
            frames = _frames()
            if as_float:
                frames = frames.float() / 255.0
            out[f"crop_{mode}_{as_float}"] = crop_warp_triton(frames, mats, R, index, mode=mode,
                                                              border_value=0.25).numpy()
    frames, restored, mats, index, gain, offset = _paste_inputs()
    out["paste"] = paste_back_triton(frames.clone(), restored, mats, index, gain, offset).numpy()
    frames, restored, mats, _, _, _ = _paste_inputs(3)
    sel = [0, 1, 2]
    out["paste_plain"] = paste_back_triton(frames[:1].clone(), restored[sel], mats[sel]).numpy()
    frames, restored, mats, index, _, _ = _paste_inputs()
    change = restored - crop_warp_reference(frames, mats, R, index)
    out["paste_additive"] = paste_back_triton(frames.clone(), change, mats, index, additive=True).numpy()
    np.savez(path, **out)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Triton kernel outputs under TRITON_INTERPRET=1 on CPU.

    Triton reads TRITON_INTERPRET when it is imported (its library functions are wrapped then),
    and other tests may have imported it already: the kernels run in a fresh interpreter.
    """
    if not triton_available():
        pytest.skip("triton is not installed")
    path = tmp_path_factory.mktemp("kernels") / "triton_outputs.npz"
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); import test_kernels; "
            f"test_kernels._kernel_outputs({str(path)!r})")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(path) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def _matrix(center, size, angle):
    """Frame → crop matrix of a face whose template is scaled to ``size`` px, centred at ``center``."""
    pts = template(R) * (size / R)
    pts = pts - pts.mean(0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return alignment_matrix(pts @ rot.T + np.asarray(center, float), R)


# interior, cut by the left/top edge, cut by the bottom-right corner, shrunk, enlarged, outside
FACES = [
    ((32, 24), 30, 0.2),
    ((2, 3), 36, -0.4),
    ((60, 45), 28, 1.0),
    ((20, 30), 70, 0.0),
    ((40, 20), 14, 2.5),
    ((400, -300), 30, 0.0),
]


def _frames(seed=0, n=2):
    g = np.random.default_rng(seed)
    # smooth + noise, so both interpolation and edges matter
    yy, xx = np.mgrid[0:H, 0:W]
    base = (127 + 80 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]).astype(np.float64)
    frames = base[None] + g.normal(0, 30, (n, H, W, 3))
    return torch.from_numpy(np.clip(frames, 0, 255).astype(np.uint8))


def _all_faces():
    mats = np.stack([_matrix(*f) for f in FACES])
    index = [i % 2 for i in range(len(FACES))]
    return mats, index


# -- crop warp ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("as_float", [False, True])
def test_crop_warp_kernel_matches_reference(interpreted, mode, as_float):
    frames = _frames()
    if as_float:
        frames = frames.float() / 255.0
    mats, index = _all_faces()
    ref = crop_warp_reference(frames, mats, R, index, mode=mode, border_value=0.25)
    got = interpreted[f"crop_{mode}_{as_float}"]
    assert got.shape == (len(FACES), 3, R, R) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    # the face wholly outside the frame is pure border; the cut faces have some border and some picture
    assert torch.all(ref[5] == 0.25)
    for i in (1, 2):
        assert (ref[i] == 0.25).all(0).float().mean() > 0.05
        assert (ref[i] != 0.25).any(0).float().mean() > 0.15


def test_crop_warp_reference_matches_opencv_warp():
    """Same geometry and border as warp_to_template (OpenCV, the CPU pipeline): within a grey
    level per pixel (OpenCV rounds coordinates to 1/32 px and values to uint8)."""
    frames = _frames()
    for center, size, angle in FACES[:3] + FACES[4:5]:  # not the 2x shrink: OpenCV pre-blurs there
        m = _matrix(center, size, angle)
        ours = crop_warp_reference(frames[:1], m[None], R)[0].permute(1, 2, 0).numpy() * 255
        cv = warp_to_template(frames[0].numpy(), m, R).astype(np.float64)
        diff = np.abs(ours - cv)
        assert diff.max() <= 1.5, (center, diff.max())
        assert diff.mean() <= 0.5


class _CudaFrames:
    """Stands in for a CUDA tensor: the dispatchers only ask ``is_cuda`` before handing it over."""

    is_cuda = True


@pytest.mark.parametrize("module_name, dispatcher, kernel", [
    ("streamrestore.kernels.crop_warp", "crop_warp", "crop_warp_triton"),
    ("streamrestore.kernels.paste_back", "paste_back", "paste_back_triton"),
])
def test_dispatch_picks_triton_only_for_cuda_frames_with_triton(monkeypatch, module_name, dispatcher, kernel):
    import importlib

    module = importlib.import_module(module_name)
    calls = []
    monkeypatch.setattr(module, kernel, lambda frames, *args, **kwargs: calls.append(frames) or "triton")
    reference = getattr(module, kernel.replace("_triton", "_reference"))
    monkeypatch.setattr(module, kernel.replace("_triton", "_reference"),
                        lambda frames, *args, **kwargs: "reference")
    run = getattr(module, dispatcher)
    cuda = _CudaFrames()
    monkeypatch.setattr(module, "triton_available", lambda: True)
    assert run(cuda, None, None, None) == "triton" and calls == [cuda]
    # CPU frames take the reference even where Triton is installed
    assert run(torch.zeros(1, 4, 4, 3, dtype=torch.uint8), None, None, None) == "reference" and len(calls) == 1
    # no Triton: CUDA frames take the reference too
    monkeypatch.setattr(module, "triton_available", lambda: False)
    assert run(cuda, None, None, None) == "reference" and len(calls) == 1
    assert callable(reference)


def test_crop_warp_rejects_bad_arguments():
    frames = _frames()
    m = _matrix((32, 24), 30, 0.0)[None]
    with pytest.raises(ValueError, match="frames"):
        crop_warp_reference(frames.permute(0, 3, 1, 2), m, R, [0])
    with pytest.raises(ValueError, match="mode"):
        crop_warp_reference(frames, m, R, [0], mode="nearest")
    with pytest.raises(ValueError, match="frame_index"):
        crop_warp_reference(frames, m, R)  # 2 frames, no index
    with pytest.raises(ValueError, match="frame_index"):
        crop_warp_reference(frames, m, R, [2])
    with pytest.raises(ValueError, match="invertible"):
        crop_warp_reference(frames, np.zeros((1, 2, 3)), R, [0])


# -- paste-back -----------------------------------------------------------------------------

def _paste_inputs(seed=1):
    frames = _frames(seed)
    mats, index = _all_faces()
    crops = crop_warp_reference(frames, mats, R, index)
    g = torch.Generator().manual_seed(seed)
    restored = (crops * 0.8 + 0.15 + 0.05 * torch.rand(crops.shape, generator=g)).clamp(0, 1)
    weights = paste_weights(mats, (H, W), R)
    gain, offset = color_transform(restored, crops, weights)
    return frames, restored, mats, index, gain, offset


def test_paste_back_kernel_matches_reference(interpreted):
    frames, restored, mats, index, gain, offset = _paste_inputs()
    ref = paste_back_reference(frames.clone(), restored, mats, index, gain, offset)
    got = interpreted["paste"]
    diff = (ref.int() - got.int()).abs()
    assert diff.max() <= 1
    assert (diff > 0).float().mean() <= 0.005
    # it did paste something, in both frames, and the far-away face changed nothing
    for f in range(2):
        assert (ref[f] != frames[f]).any(-1).float().mean() > 0.2


def test_paste_back_kernel_without_colour_and_single_frame(interpreted):
    frames, restored, mats, _, _, _ = _paste_inputs(3)
    sel = [0, 1, 2]  # interior, left/top border, bottom-right corner, all into frame 0, overlapping
    ref = paste_back_reference(frames[:1].clone(), restored[sel], mats[sel])
    got = interpreted["paste_plain"]
    diff = (ref.int() - got.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005


def test_paste_back_kernel_adds_the_change_like_the_reference(interpreted):
    frames, restored, mats, index, _, _ = _paste_inputs()
    change = restored - crop_warp_reference(frames, mats, R, index)
    ref = paste_back_reference(frames.clone(), change, mats, index, additive=True)
    got = interpreted["paste_additive"]
    diff = (ref.int() - got.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005
    assert (ref.int() - frames.int()).abs().float().mean() > 1  # the change arrived


def test_an_additive_paste_of_no_change_leaves_the_frames_exactly():
    """``PasteConfig.detail_transfer`` on the device path: where the model changed nothing, every
    pixel keeps its exact value (a whole-crop paste resamples the face twice)."""
    frames, restored, mats, index, _, _ = _paste_inputs()
    crops = crop_warp_reference(frames, mats, R, index)
    assert torch.equal(paste_back_reference(frames.clone(), torch.zeros_like(crops), mats, index, additive=True),
                       frames)
    assert not torch.equal(paste_back_reference(frames.clone(), crops, mats, index), frames)
    with pytest.raises(ValueError, match="additive"):
        paste_back_reference(frames.clone(), crops, mats, index, torch.ones(len(FACES), 3), None, additive=True)


def test_paste_back_leaves_pixels_outside_the_faces_exactly():
    frames, restored, mats, index, gain, offset = _paste_inputs()
    sel = [0]
    out = paste_back_reference(frames[:1].clone(), restored[sel], mats[sel], None, gain[sel], offset[sel])
    # frame pixels whose crop position lies outside the crop square have weight 0
    ys, xs = np.mgrid[0:H, 0:W]
    m = mats[0]
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    outside = (u < -0.5) | (u > R - 0.5) | (v < -0.5) | (v > R - 0.5)
    assert outside.any()
    assert torch.equal(out[0][torch.from_numpy(outside)], frames[0][torch.from_numpy(outside)])


def test_paste_weights_are_the_feather_mask_inside_and_zero_beyond_the_frame():
    mats, _ = _all_faces()
    w = paste_weights(mats, (H, W), R, feather=0.1)
    np.testing.assert_allclose(w[0].numpy(), feather_mask(R, 0.1), atol=1e-6)  # interior face
    # the face cut by the left/top edge: crop pixels that saw outside the frame get no weight
    inv = np.linalg.inv(np.vstack([mats[1], [0, 0, 1]]))[:2]
    vv, uu = np.mgrid[0:R, 0:R]
    x = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2]
    y = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2]
    beyond = (x < -0.5) | (y < -0.5)
    assert beyond.any()
    assert torch.all(w[1][torch.from_numpy(beyond)] == 0)
    assert float(w[1].max()) > 0.9
    assert torch.all(w[5] == 0)  # wholly outside


def test_color_transform_matches_pasteback_statistics():
    frames, restored, mats, index, _, _ = _paste_inputs()
    crops = crop_warp_reference(frames, mats, R, index)
    w = paste_weights(mats, (H, W), R)
    gain, offset = color_transform(restored, crops, w)
    pb = PasteBack(R, PasteConfig())
    for i in range(3):
        res = restored[i].permute(1, 2, 0).numpy() * 255
        org = crops[i].permute(1, 2, 0).numpy() * 255
        g_cpu, o_cpu = pb.color_transform(res, org, w[i].numpy())
        np.testing.assert_allclose(gain[i].numpy(), g_cpu, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(offset[i].numpy() * 255, o_cpu, atol=0.05)
    assert torch.all(gain[5] == 1) and torch.all(offset[5] == 0)  # no weight: no change


def test_paste_back_reference_agrees_with_cpu_pasteback():
    """Same operation as blend.PasteBack for an interior face (no colour matching): within a few
    levels (PasteBack warps a uint8 crop and a bilinear mask; here both are exact floats)."""
    frames, restored, mats, _, _, _ = _paste_inputs(5)
    frame = frames[0].numpy().copy()
    crop_u8 = (restored[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    PasteBack(R, PasteConfig(color_match=False, detail_transfer=False)).paste(frame, crop_u8, crop_u8, mats[0])
    ours = paste_back_reference(frames[:1].clone(), torch.from_numpy(crop_u8).permute(2, 0, 1)[None].float() / 255,
                                mats[:1])[0].numpy()
    diff = np.abs(ours.astype(int) - frame.astype(int))
    assert diff.mean() < 1.0
    assert np.percentile(diff, 99) <= 6


def test_additive_paste_agrees_with_cpu_pasteback():
    """The change pasted (``detail_transfer``, the default) on both paths, an interior face."""
    frames, restored, mats, index, _, _ = _paste_inputs(5)
    crop = crop_warp_reference(frames[:1], mats[:1], R)[0]
    u8 = lambda t: (t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    crop_u8, restored_u8 = u8(crop), u8(restored[0])
    frame = frames[0].numpy().copy()
    PasteBack(R, PasteConfig(color_match=False)).paste(frame, restored_u8, crop_u8, mats[0])
    change = torch.from_numpy(restored_u8.astype(np.float32) - crop_u8).permute(2, 0, 1)[None] / 255
    ours = paste_back_reference(frames[:1].clone(), change, mats[:1], additive=True)[0].numpy()
    diff = np.abs(ours.astype(int) - frame.astype(int))
    assert (frame.astype(int) - frames[0].numpy()).__abs__().mean() > 1  # something was pasted
    assert diff.mean() < 0.5 and diff.max() <= 3, (diff.mean(), diff.max())


def test_paste_back_rejects_bad_arguments():
    frames, restored, mats, index, gain, offset = _paste_inputs()
    with pytest.raises(ValueError, match="uint8"):
        paste_back_reference(frames.float(), restored, mats, index)
    with pytest.raises(ValueError, match="matrices"):
        paste_back_reference(frames, restored, mats[:2], index)
    with pytest.raises(ValueError, match="gain"):
        paste_back_reference(frames, restored, mats, index, gain[:2], offset)
    with pytest.raises(ValueError, match="feather"):
        paste_back_reference(frames, restored, mats, index, feather=0.0)


# -- on a GPU ---------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_kernels_on_cuda_match_references():
    from streamrestore.kernels import crop_warp_triton, paste_back_triton

    frames, restored, mats, index, gain, offset = _paste_inputs()
    dev = torch.device("cuda")
    crops_gpu = crop_warp_triton(frames.to(dev), mats, R, index)
    torch.testing.assert_close(crops_gpu.cpu(), crop_warp_reference(frames, mats, R, index), rtol=0, atol=1e-4)
    got = paste_back_triton(frames.to(dev), restored.to(dev), mats, index, gain.to(dev), offset.to(dev)).cpu()
    ref = paste_back_reference(frames.clone(), restored, mats, index, gain, offset)
    diff = (got.int() - ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005
