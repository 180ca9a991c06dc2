"""The reference position prior of the shared attention (RestorerConfig.reference_position_sigma)."""
import dataclasses

import pytest
import torch
from diffusers.models.attention_processor import Attention

from streamrestore.model.attention import (
    WINDOW_CUTOFF,
    LayerReferences,
    ReferenceBatch,
    SharedImageAttnProcessor,
    position_bias,
    window_margin,
)
from streamrestore.model.config import tiny_config

C, HEADS, GRID = 16, 2, 6
L = GRID * GRID


def test_position_bias_is_a_gaussian_of_token_distance():
    bias = position_bias(L, L, sigma=4.0)  # s = 4/32 of the side
    assert bias.shape == (L, L)
    assert torch.all(bias.diagonal() == 0)
    # neighbour one token to the right: d = 1/GRID of the side
    expected = -((1 / GRID) ** 2) / (2 * (4 / 32) ** 2)
    assert bias[0, 1].item() == pytest.approx(expected, rel=1e-5)
    assert bias[0, 2] < bias[0, 1] < 0
    # a coarser query grid over the same image: its token 0 is nearest to the fine grid's corner
    coarse = position_bias(4, L, sigma=4.0)
    assert coarse.shape == (4, L)
    with pytest.raises(ValueError, match="square"):
        position_bias(L, 10, sigma=1.0)


def _attend(sigma, adain=False):
    """Attention probabilities of one face over one reference whose keys carry no content."""
    torch.manual_seed(0)
    attn = Attention(query_dim=C, heads=HEADS, dim_head=C // HEADS).eval()
    proc = SharedImageAttnProcessor("x.attn1", shared=True, adain=adain, position_sigma=sigma)
    attn.set_processor(proc)
    with torch.no_grad():
        attn.to_k.weight.zero_()  # content says nothing: every score is equal without the prior
    h = torch.randn(1, L, C)
    k = torch.zeros(1, 1, L, C)
    v = torch.randn(1, 1, L, C)
    mean, std = v.mean(2, keepdim=True), v.std(2, keepdim=True)
    refs = ReferenceBatch({"x.attn1": LayerReferences(k, v, mean, std)})
    maps = {"x.attn1": None}
    with torch.no_grad():
        out_sdpa = attn(h, shared_kv=refs)
        out_explicit = attn(h, shared_kv=refs, attention_maps=maps)
    return maps["x.attn1"].probs, out_sdpa, out_explicit


def test_prior_puts_attention_on_the_same_place_and_both_paths_agree():
    flat, _, _ = _attend(0.0)
    assert torch.allclose(flat, torch.full_like(flat, 1 / L), atol=1e-6)  # no prior: uniform
    probs, out_sdpa, out_explicit = _attend(2.0)
    rows = probs[0].mean(0)  # (queries, keys), heads agree here
    assert torch.equal(rows.argmax(-1), torch.arange(L))
    assert rows.diagonal().min() > 0.85
    # content scores are all equal, so the rows are exactly the softmax of the prior
    assert torch.allclose(rows, position_bias(L, L, 2.0).softmax(-1), atol=1e-5)
    assert torch.allclose(out_sdpa, out_explicit, atol=1e-5)


def test_padded_references_stay_masked_with_the_prior():
    torch.manual_seed(1)
    attn = Attention(query_dim=C, heads=HEADS, dim_head=C // HEADS).eval()
    attn.set_processor(SharedImageAttnProcessor("x.attn1", shared=True, adain=False, position_sigma=1.0))
    k, v = torch.randn(2, 2, L, C), torch.randn(2, 2, L, C)
    mean, std = v.mean(2, keepdim=True), v.std(2, keepdim=True)
    mask = torch.tensor([[True, True], [True, False]])
    refs = ReferenceBatch({"x.attn1": LayerReferences(k, v, mean, std)}, ref_mask=mask)
    maps = {"x.attn1": None}
    with torch.no_grad():
        attn(torch.randn(2, L, C), shared_kv=refs, attention_maps=maps)
    probs = maps["x.attn1"].probs
    assert probs[1, :, :, L:].abs().max() == 0  # face 1's padded slot gets no weight
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)


def test_config_checks_and_network_uses_the_setting():
    with pytest.raises(ValueError, match="reference_position_sigma"):
        dataclasses.replace(tiny_config("pixel"), reference_position_sigma=-1.0)
    with pytest.raises(ValueError, match="position_sigma"):
        SharedImageAttnProcessor("x", shared=True, position_sigma=-0.5)
    from streamrestore.model.restorer import InstantRestoreNet

    net = InstantRestoreNet(dataclasses.replace(tiny_config("pixel"), reference_position_sigma=0.75))
    sigmas = {net.unet.attn_processors[n + ".processor"].position_sigma for n in net.shared_layers}
    assert sigmas == {0.75}


@pytest.mark.parametrize("side", [16, 32])
@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_window_margin_leaves_out_only_keys_under_the_cutoff(side, sigma):
    """The first token outside the window is under -WINDOW_CUTOFF; the last one inside is not."""
    margin = window_margin(side, sigma)
    prior = position_bias(side * side, side * side, sigma)[0].reshape(side, side)  # query token (0, 0)
    assert prior[0, margin + 1] <= -WINDOW_CUTOFF
    assert margin == 0 or prior[0, margin] > -WINDOW_CUTOFF
    with pytest.raises(ValueError, match="position prior"):
        window_margin(side, 0.0)


def _shared_attention(seed, batch, refs, grid, sigma=0.5):
    torch.manual_seed(seed)
    attn = Attention(query_dim=C, heads=HEADS, dim_head=C // HEADS).eval()
    proc = SharedImageAttnProcessor("x.attn1", shared=True, adain=False, position_sigma=sigma)
    attn.set_processor(proc)
    tokens = grid * grid
    k, v = torch.randn(batch, refs, tokens, C) * 2, torch.randn(batch, refs, tokens, C)
    mean, std = v.mean(2, keepdim=True), v.std(2, keepdim=True)
    return attn, proc, torch.randn(batch, tokens, C), LayerReferences(k, v, mean, std)


def _count_windowed(monkeypatch):
    import streamrestore.model.attention as attention

    calls = []
    real = attention.local_reference_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "local_reference_attention", counted)
    return calls


@pytest.mark.parametrize("grid,tile", [(16, 4), (32, 4), (32, 8)])
def test_windowed_attention_gives_what_full_attention_gives(monkeypatch, grid, tile):
    """Tiles of queries on the reference windows around them: the same output as attention over
    every reference token, padded reference slots still masked, in a batch of two faces."""
    calls = _count_windowed(monkeypatch)
    attn, proc, h, layer = _shared_attention(2, batch=2, refs=3, grid=grid)
    proc.window_tile = tile
    mask = torch.tensor([[True, True, True], [True, False, False]])
    refs = ReferenceBatch({"x.attn1": layer}, ref_mask=mask)
    with torch.no_grad():
        windowed = attn(h, shared_kv=refs)
        assert len(calls) == 1
        proc.windowed = False
        full = attn(h, shared_kv=refs)
        assert len(calls) == 1
        # face 1 with its first reference only is face 1 alone with that one reference
        alone = attn(h[1:], shared_kv=ReferenceBatch({"x.attn1": LayerReferences(
            layer.keys[1:, :1], layer.values[1:, :1], layer.value_mean[1:, :1], layer.value_std[1:, :1])}))
    torch.testing.assert_close(windowed, full, rtol=0, atol=2e-6)
    torch.testing.assert_close(windowed[1:], alone, rtol=0, atol=2e-6)
    assert (windowed - h).abs().mean() > 0.01  # the layer does something


def test_windowed_attention_is_used_only_where_it_saves_work(monkeypatch):
    """Not on a grid the window nearly covers (16x16 with tiles of 8: the window is 10 of 16
    tokens wide), not when the explicit attention map is asked for (training), not when faces
    also attend to their own tokens."""
    calls = _count_windowed(monkeypatch)
    with torch.no_grad():
        attn, proc, h, layer = _shared_attention(3, batch=1, refs=2, grid=16)
        proc.window_tile = 8
        attn(h, shared_kv=ReferenceBatch({"x.attn1": layer}))
        attn, _, h, layer = _shared_attention(3, batch=1, refs=2, grid=32)
        maps = {"x.attn1": None}
        out_maps = attn(h, shared_kv=ReferenceBatch({"x.attn1": layer}), attention_maps=maps)
        own = ReferenceBatch({"x.attn1": layer}, input_mask=torch.tensor([True]), input_mask_all=True)
        attn(h, shared_kv=own)
        assert calls == []
        out = attn(h, shared_kv=ReferenceBatch({"x.attn1": layer}))
    assert len(calls) == 1
    torch.testing.assert_close(out, out_maps, rtol=0, atol=2e-6)


def test_the_shipped_model_restores_the_same_with_windowed_attention():
    """lite's shared layers take the windowed path; its output stays within a quarter of an 8-bit
    level of full attention's (the keys left out weigh under e^-18 of the nearest one's)."""
    from streamrestore.pipeline import load_restorer

    lite = load_restorer("lite", device="cpu", backend=None)
    g = torch.Generator().manual_seed(4)
    cache = lite.encode_references(torch.rand(4, 3, 128, 128, generator=g) * 2 - 1)
    faces = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    processors = [p for p in lite.net.unet.attn_processors.values() if getattr(p, "shared", False)]
    windowed = lite.restore(faces, [cache, cache])
    for p in processors:
        p.windowed = False
    full = lite.restore(faces, [cache, cache])
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-3)
    assert (windowed - faces).abs().mean() > 1e-3
