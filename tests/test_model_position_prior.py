"""The reference position prior of the shared attention (RestorerConfig.reference_position_sigma)."""
import dataclasses

import pytest
import torch
from diffusers.models.attention_processor import Attention

from streamrestore.model.attention import LayerReferences, ReferenceBatch, SharedImageAttnProcessor, position_bias
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
