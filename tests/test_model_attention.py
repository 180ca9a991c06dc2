"""Shared-image attention processor vs a naive per-face implementation (explicit softmax)."""
import pytest
import torch
from diffusers.models.attention_processor import Attention

from streamrestore.model.attention import (
    AttentionMap,
    LayerReferences,
    ReferenceBatch,
    SharedImageAttnProcessor,
    value_statistics,
)

C, HEADS, L_IN, L_REF = 32, 4, 12, 10
EPS = 1e-5


def make_attention(seed=0):
    torch.manual_seed(seed)
    attn = Attention(query_dim=C, heads=HEADS, dim_head=C // HEADS, bias=True)
    return attn.eval()


def naive(attn, h, ref_k, ref_v, n_refs, use_input, adain):
    """One face: explicit softmax over [own K/V if used] + its first n_refs references (no masks)."""
    q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)  # (L, C)
    keys, values = [], []
    if use_input:
        keys.append(k)
        values.append(v)
    for r in range(n_refs):
        rv = ref_v[r]
        if adain:
            mu_r = rv.mean(0)
            sd_r = (((rv - mu_r) ** 2).sum(0) / (rv.shape[0] - 1) + EPS).sqrt()
            mu_i = v.mean(0)
            sd_i = (((v - mu_i) ** 2).sum(0) / (v.shape[0] - 1) + EPS).sqrt()
            rv = (rv - mu_r) / sd_r * sd_i + mu_i
        keys.append(ref_k[r])
        values.append(rv)
    K, V = torch.cat(keys), torch.cat(values)
    d = C // HEADS
    outs = []
    for head in range(HEADS):
        sl = slice(head * d, (head + 1) * d)
        scores = q[:, sl] @ K[:, sl].T / d**0.5
        w = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        w = w / w.sum(dim=1, keepdim=True)
        outs.append(w @ V[:, sl])
    return attn.to_out[0](torch.cat(outs, dim=1))


def make_batch(counts, include_input, n_slots=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    keys = torch.randn(b, n_slots, L_REF, C, generator=g)
    values = torch.randn(b, n_slots, L_REF, C, generator=g) * 2 + 0.5
    mean, std = value_statistics(values, EPS)
    ref_mask = torch.arange(n_slots)[None] < torch.tensor(counts)[:, None]
    if bool(ref_mask.all()):
        ref_mask = None
    flags = [include_input or n == 0 for n in counts]
    input_mask = torch.tensor(flags) if any(flags) else None
    batch = ReferenceBatch({"layer": LayerReferences(keys, values, mean, std)}, ref_mask, input_mask, all(flags))
    return batch, keys, values


@pytest.mark.parametrize("adain", [False, True])
@pytest.mark.parametrize("include_input", [False, True])
@pytest.mark.parametrize("counts", [[3, 3], [3, 1, 2], [2, 0, 3]])
def test_shared_attention_matches_naive(adain, include_input, counts):
    attn = make_attention()
    torch.manual_seed(2)
    h = torch.randn(len(counts), L_IN, C)
    batch, keys, values = make_batch(counts, include_input)
    proc = SharedImageAttnProcessor("layer", shared=True, adain=adain, adain_eps=EPS)
    with torch.no_grad():
        got = proc(attn, h, shared_kv=batch)
        for i, n in enumerate(counts):
            want = naive(attn, h[i], keys[i], values[i], n, include_input or n == 0, adain)
            rel = (got[i] - want).norm() / want.norm()
            assert rel < 1e-5, (i, n, float(rel))


def test_attention_maps_path_equals_sdpa_and_masks_padding():
    attn = make_attention()
    h = torch.randn(3, L_IN, C)
    batch, *_ = make_batch([3, 1, 2], include_input=True)
    proc = SharedImageAttnProcessor("layer", shared=True, adain=True, adain_eps=EPS)
    maps = {"layer": None}
    with torch.no_grad():
        fast = proc(attn, h, shared_kv=batch)
        slow = proc(attn, h, shared_kv=batch, attention_maps=maps)
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-6)
    amap = maps["layer"]
    assert isinstance(amap, AttentionMap)
    assert amap.probs.shape == (3, HEADS, L_IN, L_IN + 3 * L_REF)
    torch.testing.assert_close(amap.probs.sum(-1), torch.ones(3, HEADS, L_IN))
    # face 1 has one reference: slots 1 and 2 get exactly zero weight
    assert amap.for_reference(1)[1].abs().max() == 0
    assert amap.for_reference(2)[1].abs().max() == 0
    assert amap.for_reference(0)[1].sum() > 0
    with pytest.raises(ValueError):
        amap.for_reference(3)


def test_attention_maps_have_gradients():
    attn = make_attention()
    h = torch.randn(1, L_IN, C, requires_grad=True)
    batch, *_ = make_batch([2], include_input=False)
    maps = {"layer": None}
    SharedImageAttnProcessor("layer", shared=True)(attn, h, shared_kv=batch, attention_maps=maps)
    maps["layer"].for_reference(0).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_no_references_is_plain_self_attention_and_records_kv():
    attn = make_attention()
    h = torch.randn(2, L_IN, C)
    record = {}
    proc = SharedImageAttnProcessor("layer", shared=True)
    with torch.no_grad():
        got = proc(attn, h, record_kv=record)
        want = torch.stack([naive(attn, h[i], None, None, 0, True, False) for i in range(2)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    k, v = record["layer"]
    torch.testing.assert_close(k, attn.to_k(h).detach())
    torch.testing.assert_close(v, attn.to_v(h).detach())


def test_non_shared_layer_ignores_references():
    attn = make_attention()
    h = torch.randn(2, L_IN, C)
    batch, *_ = make_batch([3, 3], include_input=False)
    with torch.no_grad():
        plain = SharedImageAttnProcessor("other", shared=False)(attn, h)
        with_refs = SharedImageAttnProcessor("other", shared=False)(attn, h, shared_kv=batch, record_kv={})
    assert torch.equal(plain, with_refs)


def test_processor_rejects_bad_eps():
    with pytest.raises(ValueError, match="adain_eps"):
        SharedImageAttnProcessor("x", shared=True, adain_eps=0)
