"""FreeU as matrix products (model/freeu.py) against diffusers' FFT FreeU."""
import copy

import pytest
import torch
from diffusers.utils.torch_utils import fourier_filter
from model_utils import export_frame_core, randomise_lora

from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config
from streamrestore.model.config import FreeU
from streamrestore.model.freeu import FreeUSkipFilter, axis_filter, fourier_filter_matmul, install_freeu

R = 32
#: max |ours - diffusers| seen on the tiny restorer (fp32): ~1e-6; the bound leaves rounding room
TOL = 1e-5


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 2), (5, 7), (8, 8), (16, 16), (64, 64)])
@pytest.mark.parametrize("threshold", [1, 2])
def test_filter_matches_fft(size, threshold):
    g = torch.Generator().manual_seed(size[0] * 100 + size[1])
    x = torch.randn(2, 3, *size, generator=g)
    ref = fourier_filter(x, threshold=threshold, scale=0.2)
    rows = tuple(m.float() for m in axis_filter(size[0], threshold))
    cols = tuple(m.float() for m in axis_filter(size[1], threshold))
    got = fourier_filter_matmul(x, 0.2, rows, cols)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-6)


def test_filter_is_not_the_identity():
    # a constant map is pure zero frequency: the filter scales it by exactly `scale`
    x = torch.full((1, 1, 8, 8), 2.0)
    filt = FreeUSkipFilter(backbone_channels=2, backbone_scale=1.5, skip_scale=0.2, size=(8, 8))
    out = filt(torch.cat([x, x, x], dim=1))
    torch.testing.assert_close(out[:, 0], 3.0 * torch.ones(1, 8, 8))  # half the backbone scaled
    torch.testing.assert_close(out[:, 1], x[:, 0])  # the other half untouched
    torch.testing.assert_close(out[:, 2], 0.4 * torch.ones(1, 8, 8), rtol=0, atol=1e-6)


def test_filter_other_size_builds_operators_on_the_fly():
    filt = FreeUSkipFilter(backbone_channels=2, backbone_scale=1.0, skip_scale=0.5, size=(8, 8))
    x = torch.randn(1, 3, 6, 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(filt.filter_skip(x), fourier_filter(x, threshold=1, scale=0.5), rtol=0, atol=2e-6)


@pytest.fixture(scope="module")
def twins_vae():
    return _twins("vae")


def _twins(latent="vae"):
    """The same weights twice: ours (matmul FreeU) and diffusers' enable_freeu."""
    torch.manual_seed(0)
    cfg = tiny_config(latent, freeu=FreeU(s1=0.6, s2=0.3, b1=1.3, b2=1.5))
    ours = InstantRestoreNet(cfg)
    if cfg.unet_lora is not None:
        randomise_lora(ours)
    plain = InstantRestoreNet(cfg.replace(freeu=None))
    plain.load_state_dict(ours.state_dict(), strict=True)
    theirs = copy.deepcopy(plain)
    f = cfg.freeu
    for unet in (theirs.unet, theirs.ref_unet):
        if unet is not None:
            unet.enable_freeu(f.s1, f.s2, f.b1, f.b2)
    return ours, theirs, plain


@pytest.mark.parametrize("latent", ["vae", "pixel"])
def test_restore_matches_diffusers_freeu(latent, twins_vae):
    ours, theirs, plain = twins_vae if latent == "vae" else _twins(latent)
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(2, 3, R, R, generator=g)
    refs = torch.rand(3, 3, R, R, generator=g)
    outs = {}
    for name, net in (("ours", ours), ("theirs", theirs), ("plain", plain)):
        r = InstantRestorer(net, device="cpu", dtype=torch.float32)
        cache = r.encode_references(refs)
        outs[name] = r.restore(faces, [cache, None])
    err = (outs["ours"] - outs["theirs"]).abs().max().item()
    effect = (outs["plain"] - outs["theirs"]).abs().max().item()
    assert err < TOL, f"matmul FreeU differs from diffusers' by {err}"
    assert effect > 100 * TOL, f"FreeU changed the output by only {effect}: the test would not see a bug"


def test_unet_output_matches_diffusers_freeu(twins_vae):
    ours, theirs, _ = twins_vae
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([249, 249])
    emb = torch.randn(2, 5, 16, generator=g)
    with torch.no_grad():
        a = ours.reference_unet(x, t, encoder_hidden_states=emb, cross_attention_kwargs={"record_kv": {}}).sample
        b = theirs.reference_unet(x, t, encoder_hidden_states=emb, cross_attention_kwargs={"record_kv": {}}).sample
        # a size the filters were not built for (8x8 latent): operators built on the fly
        a8 = ours.reference_unet(x[..., :8, :8], t, encoder_hidden_states=emb,
                                 cross_attention_kwargs={"record_kv": {}}).sample
        b8 = theirs.reference_unet(x[..., :8, :8], t, encoder_hidden_states=emb,
                                   cross_attention_kwargs={"record_kv": {}}).sample
    torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    torch.testing.assert_close(a8, b8, rtol=0, atol=TOL)


def test_filters_are_not_weights_and_survive_copies(twins_vae):
    ours, theirs, _ = twins_vae
    assert not any("freeu" in k for k in ours.state_dict())
    assert not any("freeu" in k for k in ours.weights_state_dict())
    filters = [m for m in ours.unet.modules() if isinstance(m, FreeUSkipFilter)]
    # tiny UNet: up blocks 0 and 1 have 2 ResNets each (layers_per_block + 1)
    assert len(filters) == 4
    assert sorted({f.size for f in filters}) == [(4, 4), (8, 8)]
    dup = copy.deepcopy(ours)
    dup_filters = [m for m in dup.unet.modules() if isinstance(m, FreeUSkipFilter)]
    with torch.no_grad():
        dup_filters[0].skip_scale = 0.95  # the copy's hook must use the copy's own filter
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([249])
    emb = torch.zeros(1, 5, 16)
    kw = {"cross_attention_kwargs": {"record_kv": {}}}
    with torch.no_grad():
        a = ours.unet(x, t, encoder_hidden_states=emb, **kw).sample
        b = dup.unet(x, t, encoder_hidden_states=emb, **kw).sample
    assert (a - b).abs().max() > 1e-4


def test_install_twice_or_over_diffusers_freeu_raises(twins_vae):
    ours, theirs, _ = twins_vae
    with pytest.raises(ValueError, match="already installed"):
        install_freeu(ours.unet, FreeU(), 16)
    with pytest.raises(ValueError, match="disable_freeu"):
        install_freeu(theirs.unet, FreeU(), 16)


def _fft_nodes(exported) -> list[str]:
    return [str(n.target) for n in exported.graph.nodes if n.op == "call_function" and "fft" in str(n.target)]


def test_exported_core_has_no_fft(twins_vae):
    ours, theirs, _ = twins_vae
    g = torch.Generator().manual_seed(5)
    faces = torch.rand(1, 3, R, R, generator=g)
    refs = torch.rand(2, 3, R, R, generator=g)
    r = InstantRestorer(ours, device="cpu", dtype=torch.float32)
    exported, core, inputs, kwargs = export_frame_core(r, faces, [r.encode_references(refs)])
    assert _fft_nodes(exported) == []
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(*inputs, **kwargs), core(*inputs, **kwargs), rtol=0, atol=TOL)
    # control: the same export with diffusers' FreeU does contain FFTs (so the check can fail)
    rt = InstantRestorer(theirs, device="cpu", dtype=torch.float32)
    exported_fft, _, _, _ = export_frame_core(rt, faces, [rt.encode_references(refs)])
    assert _fft_nodes(exported_fft)
